//! Property tests of the client API's way in: arbitrary bytes decoded as each request type,
//! then converted and validated as the services do. Nothing panics, and whatever passes the
//! request-only rules also passes the ingress check of its shard, so a client request the
//! API accepts is never one that a forwarded-proposal check would refuse.

#![allow(clippy::unwrap_used)]

use meridian_domain::element::validate_body;
use meridian_domain::ingress::{check, Destination, IngressLimits};
use meridian_domain::shard::shard_for;
use meridian_domain::{Command, ConversationId, RequestId, UserId};
use meridian_node::api::wire::element_from_wire;
use meridian_proto::api;
use meridian_storage::codec::encoded_body_len;
use proptest::prelude::*;
use prost::Message as _;

const LIMITS: IngressLimits = IngressLimits { max_message_bytes: 12 * 1024 };

fn send_request() -> impl Strategy<Value = api::SendMessageRequest> {
    let text = prop_oneof![Just(String::new()), "[a-z ]{0,20}", any::<String>()];
    let element = prop_oneof![
        Just(api::MessageElement { kind: None }),
        text.prop_map(|text| api::MessageElement {
            kind: Some(api::message_element::Kind::Text(api::TextElement { text }))
        }),
    ];
    (
        prop_oneof![Just("bob".to_owned()), Just(String::new()), any::<String>()],
        prop::collection::vec(element, 0..4),
        prop_oneof![Just(String::new()), "[a-z0-9-]{1,8}", any::<String>()],
    )
        .prop_map(|(to, elements, request_id)| api::SendMessageRequest {
            to,
            elements,
            request_id,
            ..Default::default()
        })
}

/// The send path of `Chat/SendMessage` after authentication, as far as it is pure.
fn admit_send(sender: &UserId, request: api::SendMessageRequest) -> Option<Command> {
    let recipient = UserId::parse(&request.to).ok()?;
    if &recipient == sender {
        return None;
    }
    let elements = request.elements.into_iter().map(element_from_wire).collect::<Result<Vec<_>, _>>().ok()?;
    validate_body(&elements, encoded_body_len(&elements), LIMITS.max_message_bytes).ok()?;
    let request_id =
        if request.request_id.is_empty() { None } else { Some(RequestId::parse(&request.request_id).ok()?) };
    Some(Command::SendMessage {
        sender: sender.clone(),
        recipient,
        elements,
        request_id,
        sender_home: None,
        recipient_home: None,
        friends_only: false,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_request_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let alice = UserId::parse("alice").unwrap();
        if let Ok(request) = api::SendMessageRequest::decode(bytes.as_slice()) {
            let _ = admit_send(&alice, request);
        }
        if let Ok(request) = api::CreateUserRequest::decode(bytes.as_slice()) {
            let _ = UserId::parse(&request.user_id);
        }
        if let Ok(request) = api::GetHistoryRequest::decode(bytes.as_slice()) {
            let _ = UserId::parse(&request.peer);
        }
        for request in [api::MarkReadRequest::decode(bytes.as_slice()).ok().map(|r| r.peer),
                        api::RecallMessageRequest::decode(bytes.as_slice()).ok().map(|r| r.peer)].into_iter().flatten() {
            if let Ok(peer) = UserId::parse(&request) {
                let _ = ConversationId::c2c(&alice, &peer);
            }
        }
    }

    #[test]
    fn a_send_the_api_admits_passes_the_ingress_check_of_its_shard(request in send_request()) {
        let alice = UserId::parse("alice").unwrap();
        if let Some(command) = admit_send(&alice, request) {
            let Command::SendMessage { recipient, .. } = &command else { unreachable!() };
            let shard = shard_for(ConversationId::c2c(&alice, recipient).as_str(), 8);
            let region = meridian_domain::RegionCode::parse("sg").unwrap();
            let to = Destination { region: &region, shard, shards: 8 };
            prop_assert_eq!(check(&command, to, LIMITS, encoded_body_len), Ok(()));
        }
    }
}
