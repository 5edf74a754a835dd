//! [`ClientConfig`]: where to connect, as whom, and how patiently.

use std::fmt;
use std::time::Duration;

use crate::ClientError;

/// Comma-separated `host:port` list of a region's nodes.
pub const ENDPOINT_ENV: &str = "MERIDIAN_ENDPOINT";
/// A user token.
pub const TOKEN_ENV: &str = "MERIDIAN_TOKEN";
/// An admin token (may act as any user).
pub const ADMIN_TOKEN_ENV: &str = "MERIDIAN_ADMIN_TOKEN";
/// Path of a PEM file with the CA certificate(s) of a region whose client listeners use TLS.
pub const CA_ENV: &str = "MERIDIAN_CA";

const ENDPOINT_HINT: &str = "a comma-separated list of node addresses, e.g. 127.0.0.1:7001";

/// Which token [`ClientConfig::from_env`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `MERIDIAN_TOKEN`: acts as the user it was issued to.
    User,
    /// `MERIDIAN_ADMIN_TOKEN`: admin calls, and any user with `act_as`.
    Admin,
}

impl TokenKind {
    /// The environment variable that holds this kind of token.
    pub fn env_var(self) -> &'static str {
        match self {
            TokenKind::User => TOKEN_ENV,
            TokenKind::Admin => ADMIN_TOKEN_ENV,
        }
    }

    fn hint(self) -> &'static str {
        match self {
            TokenKind::User => "a user token (mint one with `meridian token USER`)",
            TokenKind::Admin => "the region's admin token",
        }
    }
}

/// How a [`Client`](crate::Client) connects and retries.
#[derive(Clone)]
pub struct ClientConfig {
    /// Nodes to call, in order of preference: `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// Sent as `authorization: Bearer <token>` on every call: a user or an admin token.
    pub token: String,
    /// With an admin token, the user to act as (`x-meridian-as` metadata).
    pub act_as: Option<String>,
    /// Time allowed to open a connection to one endpoint. Default 2 s.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt of a call on one endpoint. Default 10 s.
    pub request_timeout: Duration,
    /// No new attempt of a call starts once this much time has passed since its first one
    /// (an attempt already under way may finish later). Default 15 s.
    pub retry_budget: Duration,
    /// Pause after a retryable refusal or a failed round over every endpoint; doubles each
    /// time up to `max_backoff`, with jitter. Default 50 ms.
    pub initial_backoff: Duration,
    /// Longest pause between attempts. Default 1 s.
    pub max_backoff: Duration,
    /// After an endpoint gave no answer (an attempt timed out, a connect failed, a connection
    /// broke mid-call), calls try it only after every other endpoint for this long; then a
    /// single call probes it while the others keep away, and any answer from it ends the
    /// wait. A stopped or stalled node (a frozen VM, SIGSTOP) still accepts connections: without
    /// this, every call routed to it — by the routing table, which may still name it leader
    /// for a while — would wait out `request_timeout` first. Default 30 s; zero: off.
    pub avoid_silent_for: Duration,
    /// CA certificate(s), PEM, of a region whose client listeners use TLS: set, the client
    /// connects with TLS (`host:port` endpoints mean `https://host:port`) and trusts only
    /// these. Unset: plaintext HTTP/2.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl ClientConfig {
    /// A configuration with the default timeouts.
    pub fn new<S: AsRef<str>>(endpoints: impl IntoIterator<Item = S>, token: impl Into<String>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(|e| e.as_ref().to_owned()).collect(),
            token: token.into(),
            act_as: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            retry_budget: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            avoid_silent_for: Duration::from_secs(30),
            tls_ca_pem: None,
        }
    }

    /// Connects with TLS, trusting the CA certificate(s) in `pem`.
    pub fn with_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Reads `MERIDIAN_ENDPOINT` and the token of the given kind from the environment.
    pub fn from_env(kind: TokenKind) -> Result<Self, ClientError> {
        Self::from_lookup(kind, |var| std::env::var(var).ok())
    }

    /// [`ClientConfig::from_env`] over any variable lookup (tests pass a map).
    pub fn from_lookup(kind: TokenKind, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ClientError> {
        let endpoints = endpoints_from_lookup(&lookup)?;
        let token = non_empty(lookup(kind.env_var()))
            .ok_or(ClientError::MissingEnv { var: kind.env_var(), hint: kind.hint() })?;
        ca_from_lookup(ClientConfig::new(endpoints, token), &lookup)
    }

    /// Sets the user an admin token acts as.
    pub fn with_act_as(mut self, user: impl Into<String>) -> Self {
        self.act_as = Some(user.into());
        self
    }

    /// Checks that the configuration can work; returns the endpoints as URIs.
    pub fn validate(&self) -> Result<Vec<String>, ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::InvalidConfig { detail: format!("no endpoints given: expected {ENDPOINT_HINT}") });
        }
        if self.token.is_empty() {
            return Err(ClientError::InvalidConfig { detail: "the token is empty".into() });
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ClientError::InvalidConfig {
                detail: "connect and request timeouts must be longer than zero".into(),
            });
        }
        if self.initial_backoff > self.max_backoff {
            return Err(ClientError::InvalidConfig {
                detail: format!(
                    "initial backoff {:?} is longer than the max backoff {:?}",
                    self.initial_backoff, self.max_backoff
                ),
            });
        }
        let tls = self.tls_ca_pem.is_some();
        self.endpoints.iter().map(|e| normalize_endpoint_with(e, tls)).collect()
    }
}

impl fmt::Debug for ClientConfig {
    // Leaves the token out: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("token", &"<redacted>")
            .field("act_as", &self.act_as)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry_budget", &self.retry_budget)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("avoid_silent_for", &self.avoid_silent_for)
            .field("tls", &self.tls_ca_pem.is_some())
            .finish()
    }
}

/// Reads `MERIDIAN_ENDPOINT` through `lookup` and splits it on commas.
pub(crate) fn endpoints_from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Vec<String>, ClientError> {
    let raw = lookup(ENDPOINT_ENV).unwrap_or_default();
    let endpoints = split_endpoints(&raw);
    if endpoints.is_empty() {
        return Err(ClientError::MissingEnv { var: ENDPOINT_ENV, hint: ENDPOINT_HINT });
    }
    Ok(endpoints)
}

/// Adds the CA named by `MERIDIAN_CA` (read through `lookup`), if any, to `config`.
pub(crate) fn ca_from_lookup(
    config: ClientConfig,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<ClientConfig, ClientError> {
    let Some(path) = non_empty(lookup(CA_ENV)) else { return Ok(config) };
    let pem = std::fs::read(&path).map_err(|e| ClientError::InvalidConfig {
        detail: format!("{CA_ENV}={path}: cannot read the CA certificate: {e}"),
    })?;
    Ok(config.with_ca(pem))
}

/// Splits a comma-separated endpoint list, dropping blanks.
pub fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect()
}

/// Turns `host:port` or `http://host:port` into the URI tonic connects to (plaintext).
pub fn normalize_endpoint(endpoint: &str) -> Result<String, ClientError> {
    normalize_endpoint_with(endpoint, false)
}

/// Turns `host:port`, `http://host:port` or `https://host:port` into the URI tonic connects
/// to; `tls` says which scheme a bare `host:port` gets and which one is allowed.
pub fn normalize_endpoint_with(endpoint: &str, tls: bool) -> Result<String, ClientError> {
    let invalid =
        |detail: &str| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), detail: detail.to_owned() };
    let trimmed = endpoint.trim();
    let scheme = if tls { "https" } else { "http" };
    let uri = if let Some(rest) = trimmed.strip_prefix(&format!("{scheme}://")) {
        format!("{scheme}://{}", rest.trim_end_matches('/'))
    } else if trimmed.starts_with("https://") {
        return Err(invalid(&format!("an https:// endpoint needs the region's CA certificate ({CA_ENV})")));
    } else if trimmed.starts_with("http://") {
        return Err(invalid(
            "a plaintext http:// endpoint, but the client is set up for TLS: use https:// or host:port",
        ));
    } else if trimmed.contains("://") {
        return Err(invalid("expected host:port, http://host:port or https://host:port"));
    } else {
        format!("{scheme}://{}", trimmed.trim_end_matches('/'))
    };
    let parsed: tonic::codegen::http::Uri = uri.parse().map_err(|e| invalid(&format!("not an address: {e}")))?;
    if parsed.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if parsed.port_u16().is_none() {
        return Err(invalid("no port: expected host:port"));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(invalid("a node address has no path: expected host:port"));
    }
    Ok(uri)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn endpoints_with_and_without_scheme_normalize_to_http_uris() {
        assert_eq!(normalize_endpoint("127.0.0.1:7001").ok(), Some("http://127.0.0.1:7001".into()));
        assert_eq!(
            normalize_endpoint(" http://node-2.sg.internal:7001/ ").ok(),
            Some("http://node-2.sg.internal:7001".into())
        );
        assert_eq!(normalize_endpoint("[::1]:7001").ok(), Some("http://[::1]:7001".into()));
    }

    #[test]
    fn endpoints_without_port_or_with_other_schemes_are_refused() {
        for bad in ["127.0.0.1", "https://n1:7001", "grpc://n1:7001", "n1:7001/api", ":7001", ""] {
            let err = normalize_endpoint(bad);
            assert!(matches!(err, Err(ClientError::InvalidEndpoint { .. })), "{bad:?} gave {err:?}");
        }
    }

    #[test]
    fn a_ca_makes_endpoints_https_and_plaintext_ones_refused() {
        assert_eq!(normalize_endpoint_with("127.0.0.1:7001", true).ok(), Some("https://127.0.0.1:7001".into()));
        assert_eq!(normalize_endpoint_with("https://n1:7001/", true).ok(), Some("https://n1:7001".into()));
        assert!(normalize_endpoint_with("http://n1:7001", true).is_err());
        let config = ClientConfig::new(["n1:7001"], "t").with_ca(b"pem".to_vec());
        assert_eq!(config.validate().ok(), Some(vec!["https://n1:7001".to_owned()]));
    }

    #[test]
    fn endpoint_list_splits_on_commas_and_drops_blanks() {
        assert_eq!(split_endpoints("a:1, b:2,,http://c:3 ,"), vec!["a:1", "b:2", "http://c:3"]);
        assert!(split_endpoints(" , ").is_empty());
    }

    #[test]
    fn from_env_reads_endpoints_and_the_chosen_token() {
        let lookup =
            env(&[(ENDPOINT_ENV, "n1:7001,n2:7001"), (TOKEN_ENV, "user-token"), (ADMIN_TOKEN_ENV, "admin-token")]);
        let user = ClientConfig::from_lookup(TokenKind::User, &lookup).expect("user config");
        assert_eq!(user.endpoints, vec!["n1:7001", "n2:7001"]);
        assert_eq!(user.token, "user-token");
        assert_eq!(user.act_as, None);
        let admin = ClientConfig::from_lookup(TokenKind::Admin, &lookup).expect("admin config");
        assert_eq!(admin.token, "admin-token");
        assert_eq!(admin.validate().expect("valid"), vec!["http://n1:7001", "http://n2:7001"]);
    }

    #[test]
    fn from_env_names_the_missing_variable() {
        let no_endpoint = ClientConfig::from_lookup(TokenKind::User, env(&[(TOKEN_ENV, "t")]));
        assert!(matches!(no_endpoint, Err(ClientError::MissingEnv { var: ENDPOINT_ENV, .. })));
        let blank_token =
            ClientConfig::from_lookup(TokenKind::Admin, env(&[(ENDPOINT_ENV, "n1:1"), (ADMIN_TOKEN_ENV, "  ")]));
        assert!(matches!(blank_token, Err(ClientError::MissingEnv { var: ADMIN_TOKEN_ENV, .. })));
    }

    #[test]
    fn validate_refuses_configs_that_cannot_work() {
        let empty: [&str; 0] = [];
        assert!(matches!(ClientConfig::new(empty, "t").validate(), Err(ClientError::InvalidConfig { .. })));
        assert!(matches!(ClientConfig::new(["n1:1"], "").validate(), Err(ClientError::InvalidConfig { .. })));
        let mut slow = ClientConfig::new(["n1:1"], "t");
        slow.initial_backoff = Duration::from_secs(5);
        assert!(matches!(slow.validate(), Err(ClientError::InvalidConfig { .. })));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let config = ClientConfig::new(["n1:1"], "secret-token").with_act_as("alice");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }
}
