//! The sync token of a `Subscribe` stream, as the server and the SDK both read and write it:
//! URL-safe base64 (no padding) of [`crate::api::SyncToken`] — per conversation, the newest
//! seq a device has.

use std::collections::BTreeMap;

use base64::Engine as _;
use prost::Message as _;

/// Per conversation id, the newest seq a device has.
pub type Known = BTreeMap<String, u64>;

/// Encodes per-conversation seqs as a token.
pub fn encode(known: &Known) -> String {
    let token = crate::api::SyncToken {
        entries: known
            .iter()
            .map(|(conversation_id, seq)| crate::api::SyncTokenEntry {
                conversation_id: conversation_id.clone(),
                seq: *seq,
            })
            .collect(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.encode_to_vec())
}

/// Decodes a token (empty: nothing known); the error says why it does not decode. The
/// conversation ids are not checked here.
pub fn decode(token: &str) -> Result<Known, String> {
    if token.is_empty() {
        return Ok(Known::new());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|e| e.to_string())?;
    let decoded = crate::api::SyncToken::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    Ok(decoded.entries.into_iter().map(|e| (e.conversation_id, e.seq)).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_round_trips() {
        let known = [("c2c:ann:bob".to_owned(), 7), ("grp:club".to_owned(), 2)].into_iter().collect();
        assert_eq!(super::decode(&super::encode(&known)), Ok(known));
        assert_eq!(super::decode(""), Ok(super::Known::new()));
        assert!(super::decode("not base64!").is_err());
    }
}
