//! Signed access tokens (DLV-07): who is calling, for which app, until when.
//!
//! A token is `v1.` + base64url(payload) + `.` + base64url(mac), both without padding, where
//! the payload is `{kind}\n{app_id}\n{subject}\n{expires_at_unix}` (kind `user` or `admin`)
//! and the mac is HMAC-SHA256 over `v1.` + base64url(payload) with the region's secret. Like
//! Tencent's UserSig, tokens are minted by whoever holds the secret (the app's server, or the
//! `Admin/IssueUserToken` RPC) and checked by every node without any shared state.
//!
//! A user token lets its holder act as that user only. An admin token names an operator and
//! may act as any user, which it must say explicitly (`x-meridian-as` metadata), so that no
//! request ever runs as "nobody in particular".

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The version prefix of every token this module issues.
const VERSION_PREFIX: &str = "v1.";
/// Longest user id or admin subject, in bytes (REL-01).
pub const MAX_SUBJECT_BYTES: usize = 32;
/// How long a token lives when nobody says otherwise: 180 days, in seconds.
pub const DEFAULT_TOKEN_TTL_SECONDS: u64 = 180 * 24 * 60 * 60;

type HmacSha256 = Hmac<Sha256>;

/// Why a request could not be authenticated or authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send `authorization: Bearer <token>` metadata")]
    Missing,
    #[error("malformed token ({detail}): send the token exactly as it was issued")]
    Malformed { detail: &'static str },
    #[error("token signature does not match: it was altered or signed with another secret")]
    BadSignature,
    #[error("token expired at unix time {expired_at}: issue a new one")]
    Expired { expired_at: i64 },
    #[error("token was issued for app {token_app:?}, this region serves {expected_app:?}")]
    WrongApp { token_app: String, expected_app: String },
    #[error("{principal} may not act as user {requested:?}: a user acts only as themself")]
    Forbidden { principal: String, requested: String },
    #[error("an admin token must name the user it acts as (`x-meridian-as` metadata)")]
    ActAsRequired,
}

impl AuthError {
    /// The stable machine-readable reason code sent to clients.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "TOKEN_MISSING",
            AuthError::Malformed { .. } => "TOKEN_MALFORMED",
            AuthError::BadSignature => "TOKEN_BAD_SIGNATURE",
            AuthError::Expired { .. } => "TOKEN_EXPIRED",
            AuthError::WrongApp { .. } => "TOKEN_WRONG_APP",
            AuthError::Forbidden { .. } => "FORBIDDEN",
            AuthError::ActAsRequired => "ACT_AS_REQUIRED",
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An end user, by user id.
    User(String),
    /// An operator or the app's server, by a free-form subject (e.g. `ops`, `dev`).
    Admin(String),
}

impl Principal {
    /// The user a request runs as, given the user it asked to act as (if any).
    ///
    /// A user may act only as themself (naming themself is allowed); an admin may act as any
    /// user but must name one. An empty `requested` counts as absent, since metadata values
    /// cannot be "unset" in every client.
    pub fn act_as(&self, requested: Option<&str>) -> Result<String, AuthError> {
        let requested = requested.filter(|r| !r.is_empty());
        match (self, requested) {
            (Principal::User(me), None) => Ok(me.clone()),
            (Principal::User(me), Some(r)) if r == me => Ok(me.clone()),
            (Principal::User(_), Some(r)) => {
                Err(AuthError::Forbidden { principal: self.to_string(), requested: r.to_owned() })
            }
            (Principal::Admin(_), Some(r)) => Ok(r.to_owned()),
            (Principal::Admin(_), None) => Err(AuthError::ActAsRequired),
        }
    }

    /// Whether this principal may call the operator API.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin(_))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(u) => write!(f, "user {u:?}"),
            Principal::Admin(s) => write!(f, "admin {s:?}"),
        }
    }
}

/// The token kinds, as spelled in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Admin,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Admin => "admin",
        }
    }
}

/// Issues and verifies the tokens of one app with one secret.
#[derive(Clone)]
pub struct TokenSigner {
    app_id: String,
    secret: Vec<u8>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("TokenSigner").field("app_id", &self.app_id).field("secret", &"<redacted>").finish()
    }
}

impl TokenSigner {
    /// A signer for `app_id` with `secret` (the config validates its length).
    pub fn new(app_id: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        Self { app_id: app_id.into(), secret: secret.as_ref().to_vec() }
    }

    /// A signer from the node's `[auth]` config section.
    pub fn from_config(auth: &crate::config::AuthConfig) -> Self {
        Self::new(auth.app_id.clone(), auth.secret.as_bytes())
    }

    /// The app this signer issues tokens for.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// A token that lets its holder act as `user_id` until `expires_at_unix` (seconds).
    ///
    /// `user_id` must already be a valid user id (1..=32 bytes); a token for anything else
    /// will not verify.
    pub fn issue_user(&self, user_id: &str, expires_at_unix: i64) -> String {
        self.issue(Kind::User, user_id, expires_at_unix)
    }

    /// An admin token for the operator `subject` (1..=32 bytes), valid until `expires_at_unix`.
    pub fn issue_admin(&self, subject: &str, expires_at_unix: i64) -> String {
        self.issue(Kind::Admin, subject, expires_at_unix)
    }

    fn issue(&self, kind: Kind, subject: &str, expires_at_unix: i64) -> String {
        let payload = format!("{}\n{}\n{subject}\n{expires_at_unix}", kind.as_str(), self.app_id);
        let signed = format!("{VERSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
        let mac = self.mac(signed.as_bytes()).finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// Checks a token's form, app, signature and expiry at `now_unix` (seconds), in that
    /// order, and returns whom it speaks for.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let malformed = |detail| AuthError::Malformed { detail };
        let rest = token.strip_prefix(VERSION_PREFIX).ok_or(malformed("unknown version, expected a `v1.` prefix"))?;
        let (payload_b64, mac_b64) = rest.split_once('.').ok_or(malformed("expected three `.`-separated parts"))?;
        let signed = &token[..VERSION_PREFIX.len() + payload_b64.len()];
        let mac = URL_SAFE_NO_PAD.decode(mac_b64).map_err(|_| malformed("signature is not base64url"))?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| malformed("payload is not base64url"))?;
        let claims = Claims::parse(&payload)?;

        // The app id is public, so naming the mismatch before checking the signature leaks
        // nothing and tells an operator who mixed up deployments what happened.
        if claims.app_id != self.app_id {
            return Err(AuthError::WrongApp { token_app: claims.app_id.to_owned(), expected_app: self.app_id.clone() });
        }
        // Constant-time comparison.
        self.mac(signed.as_bytes()).verify_slice(&mac).map_err(|_| AuthError::BadSignature)?;
        if now_unix >= claims.expires_at {
            return Err(AuthError::Expired { expired_at: claims.expires_at });
        }
        let subject = claims.subject.to_owned();
        Ok(match claims.kind {
            Kind::User => Principal::User(subject),
            Kind::Admin => Principal::Admin(subject),
        })
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        #[allow(clippy::expect_used)]
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(data);
        mac
    }
}

/// The decoded (not yet trusted) payload of a token.
struct Claims<'a> {
    kind: Kind,
    app_id: &'a str,
    subject: &'a str,
    expires_at: i64,
}

impl<'a> Claims<'a> {
    fn parse(payload: &'a [u8]) -> Result<Self, AuthError> {
        let malformed = |detail| AuthError::Malformed { detail };
        let text = std::str::from_utf8(payload).map_err(|_| malformed("payload is not UTF-8"))?;
        let mut fields = text.split('\n');
        let (Some(kind), Some(app_id), Some(subject), Some(expires_at), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed("payload must have exactly four lines"));
        };
        let kind = match kind {
            "user" => Kind::User,
            "admin" => Kind::Admin,
            _ => return Err(malformed("unknown token kind")),
        };
        if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES || subject.chars().any(char::is_control) {
            return Err(malformed("subject must be 1..=32 bytes without control characters"));
        }
        let expires_at = expires_at.parse::<i64>().map_err(|_| malformed("expiry is not a unix time"))?;
        Ok(Self { kind, app_id, subject, expires_at })
    }
}

/// The token in an `authorization` metadata value (`Bearer <token>`, scheme case-insensitive).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.map(str::trim).filter(|v| !v.is_empty()).ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed { detail: "expected `Bearer <token>`" })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed { detail: "expected the `Bearer` scheme" });
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn signer() -> TokenSigner {
        TokenSigner::new("meridian", "0123456789abcdef-test-secret")
    }

    #[test]
    fn user_token_round_trips() {
        let s = signer();
        let token = s.issue_user("alice", NOW + 60);
        assert!(token.starts_with("v1."));
        assert_eq!(s.verify(&token, NOW), Ok(Principal::User("alice".into())));
    }

    #[test]
    fn admin_token_round_trips() {
        let s = signer();
        let token = s.issue_admin("ops", NOW + 60);
        assert_eq!(s.verify(&token, NOW), Ok(Principal::Admin("ops".into())));
    }

    #[test]
    fn token_is_url_safe_and_shell_safe() {
        let token = signer().issue_user("a-b_c.d@e", NOW + 60);
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{token}");
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let s = signer();
        let token = s.issue_user("alice", NOW + 60);
        // Re-sign nothing, just swap the payload for one naming another user.
        let forged_payload = URL_SAFE_NO_PAD.encode(format!("user\nmeridian\nmallory\n{}", NOW + 60));
        let mac = token.rsplit('.').next().unwrap_or_default();
        let forged = format!("v1.{forged_payload}.{mac}");
        assert_eq!(s.verify(&forged, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let s = signer();
        let token = s.issue_user("alice", NOW + 60);
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap_or_default();
        assert_eq!(s.verify(&tampered, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn upgrading_a_user_token_to_admin_breaks_the_signature() {
        let s = signer();
        let token = s.issue_user("alice", NOW + 60);
        let mac = token.rsplit('.').next().unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(format!("admin\nmeridian\nalice\n{}", NOW + 60));
        let forged = format!("v1.{payload}.{mac}");
        assert_eq!(s.verify(&forged, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let other = TokenSigner::new("meridian", "another-secret-of-16+bytes");
        let token = other.issue_user("alice", NOW + 60);
        assert_eq!(signer().verify(&token, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn expired_token_is_rejected_at_and_after_expiry() {
        let s = signer();
        let token = s.issue_user("alice", NOW);
        assert_eq!(s.verify(&token, NOW - 1), Ok(Principal::User("alice".into())));
        assert_eq!(s.verify(&token, NOW), Err(AuthError::Expired { expired_at: NOW }));
        assert_eq!(s.verify(&token, NOW + 1).map_err(|e| e.reason()), Err("TOKEN_EXPIRED"));
    }

    #[test]
    fn token_of_another_app_is_rejected() {
        let other = TokenSigner::new("other-app", "0123456789abcdef-test-secret");
        let token = other.issue_user("alice", NOW + 60);
        let err = signer().verify(&token, NOW).expect_err("must fail");
        assert_eq!(err.reason(), "TOKEN_WRONG_APP");
        assert_eq!(err, AuthError::WrongApp { token_app: "other-app".into(), expected_app: "meridian".into() });
    }

    #[test]
    fn malformed_tokens_are_named_as_such() {
        let s = signer();
        let no_kind = URL_SAFE_NO_PAD.encode("robot\nmeridian\nalice\n1");
        let too_long = URL_SAFE_NO_PAD.encode(format!("user\nmeridian\n{}\n1", "x".repeat(33)));
        let three_lines = URL_SAFE_NO_PAD.encode("user\nmeridian\nalice");
        for bad in [
            "garbage".to_owned(),
            "v2.abc.def".to_owned(),
            "v1.nodot".to_owned(),
            "v1.!!!.AAAA".to_owned(),
            format!("v1.{no_kind}.AAAA"),
            format!("v1.{too_long}.AAAA"),
            format!("v1.{three_lines}.AAAA"),
        ] {
            let err = s.verify(&bad, NOW).expect_err("must fail");
            assert_eq!(err.reason(), "TOKEN_MALFORMED", "{bad}: {err}");
        }
        assert_eq!(s.verify("  ", NOW), Err(AuthError::Missing));
    }

    #[test]
    fn a_user_acts_only_as_themself() {
        let alice = Principal::User("alice".into());
        assert_eq!(alice.act_as(None), Ok("alice".into()));
        assert_eq!(alice.act_as(Some("")), Ok("alice".into()));
        assert_eq!(alice.act_as(Some("alice")), Ok("alice".into()));
        let err = alice.act_as(Some("bob")).expect_err("must fail");
        assert_eq!(err.reason(), "FORBIDDEN");
        assert!(err.to_string().contains("\"bob\""), "{err}");
    }

    #[test]
    fn an_admin_acts_as_any_named_user() {
        let ops = Principal::Admin("ops".into());
        assert_eq!(ops.act_as(Some("bob")), Ok("bob".into()));
        assert_eq!(ops.act_as(None), Err(AuthError::ActAsRequired));
        assert_eq!(ops.act_as(Some("")).map_err(|e| e.reason()), Err("ACT_AS_REQUIRED"));
        assert!(ops.is_admin());
        assert!(!Principal::User("ops".into()).is_admin());
    }

    #[test]
    fn bearer_metadata_is_parsed() {
        assert_eq!(bearer_token(Some("Bearer v1.a.b")), Ok("v1.a.b"));
        assert_eq!(bearer_token(Some("bearer  v1.a.b ")), Ok("v1.a.b"));
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("")), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("Basic abc")).map_err(|e| e.reason()), Err("TOKEN_MALFORMED"));
        assert_eq!(bearer_token(Some("v1.a.b")).map_err(|e| e.reason()), Err("TOKEN_MALFORMED"));
    }

    #[test]
    fn reasons_are_stable() {
        let all = [
            (AuthError::Missing, "TOKEN_MISSING"),
            (AuthError::Malformed { detail: "x" }, "TOKEN_MALFORMED"),
            (AuthError::BadSignature, "TOKEN_BAD_SIGNATURE"),
            (AuthError::Expired { expired_at: 1 }, "TOKEN_EXPIRED"),
            (AuthError::WrongApp { token_app: "a".into(), expected_app: "b".into() }, "TOKEN_WRONG_APP"),
            (AuthError::Forbidden { principal: "a".into(), requested: "b".into() }, "FORBIDDEN"),
            (AuthError::ActAsRequired, "ACT_AS_REQUIRED"),
        ];
        for (err, reason) in all {
            assert_eq!(err.reason(), reason);
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!("{:?}", signer());
        assert!(!shown.contains("test-secret"), "{shown}");
    }
}
