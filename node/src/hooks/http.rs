//! The webhooks' HTTP/1.1 client: one `POST` of a JSON body per call on a fresh connection,
//! signed, bounded in time and in the size of the answer.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full, Limited};
use sha2::Sha256;

/// Largest answer read from an app's endpoint.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// An `http://host:port/path` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUrl {
    host: String,
    port: u16,
    /// `/path?query`, `/` when the URL has none.
    target: String,
}

impl HookUrl {
    /// Parses a plain-HTTP URL: `http://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<HookUrl, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "{url:?} is not an http:// URL (an https endpoint is reached through a local TLS-originating \
                 proxy; see docs/webhooks.md)"
            )
        })?;
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes().get(i) == Some(&b'?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty()
            || authority.contains('@')
            || target.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("{url:?}: name a host (no user info) and a path without spaces"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port.parse::<u16>().map_err(|_| format!("{url:?}: the port {port:?} is not a number"))?;
                (host.to_owned(), port)
            }
            _ => (authority.to_owned(), 80),
        };
        if host.is_empty() || port == 0 {
            return Err(format!("{url:?}: name a host and a port above 0"));
        }
        Ok(HookUrl { host, port, target })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for HookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.target)
    }
}

/// Why a call to an app's endpoint did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
}

/// One endpoint of the app, with its signing key and timeout.
#[derive(Debug, Clone)]
pub struct HookClient {
    url: HookUrl,
    secret: Option<String>,
    timeout: Duration,
}

impl HookClient {
    pub fn new(url: HookUrl, secret: Option<String>, timeout: Duration) -> HookClient {
        HookClient { url, secret, timeout }
    }

    pub fn url(&self) -> &HookUrl {
        &self.url
    }

    /// Posts `body` as `command` and returns the JSON answer (`null` for an empty one).
    pub async fn post(&self, command: &str, body: &serde_json::Value) -> Result<serde_json::Value, HookError> {
        let bytes = serde_json::to_vec(body).map_err(|e| HookError::Http(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.exchange(command, bytes)).await {
            Ok(answer) => answer,
            Err(_) => Err(HookError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, command: &str, body: Vec<u8>) -> Result<serde_json::Value, HookError> {
        let authority = self.url.authority();
        let tcp =
            tokio::net::TcpStream::connect(&authority).await.map_err(|e| HookError::Connect(authority.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| HookError::Http(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let time_ms = chrono::Utc::now().timestamp_millis();
        let mut request = hyper::Request::post(self.url.target.as_str())
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::CONNECTION, "close")
            .header("x-meridian-command", command)
            .header("x-meridian-time", time_ms.to_string());
        if let Some(secret) = &self.secret {
            request = request.header("x-meridian-signature", sign(secret, time_ms, &body));
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| HookError::Http(e.to_string()))?;
        let answer = sender.send_request(request).await.map_err(|e| HookError::Http(e.to_string()));
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                driver.abort();
                return Err(e);
            }
        };
        let status = answer.status().as_u16();
        let collected = Limited::new(answer.into_body(), MAX_ANSWER_BYTES).collect().await;
        driver.abort();
        let bytes = collected.map_err(|e| HookError::Http(e.to_string()))?.to_bytes();
        if !(200..300).contains(&status) {
            return Err(HookError::Status(status));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| HookError::NotJson(e.to_string()))
    }
}

/// `t=TIME,v1=HEX`: HMAC-SHA256 over `TIME.BODY`, so a receiver can refuse replays by time.
pub fn sign(secret: &str, time_ms: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(time_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={time_ms},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_host_port_and_target() {
        let u = HookUrl::parse("http://127.0.0.1:9000/im/callback?app=1").expect("parses");
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("127.0.0.1", 9000, "/im/callback?app=1"));
        let u = HookUrl::parse("http://hooks.example").expect("parses");
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("hooks.example", 80, "/"));
        let u = HookUrl::parse("http://h:81?x=1").expect("parses");
        assert_eq!(u.target, "/?x=1");
        assert_eq!(u.to_string(), "http://h:81/?x=1");
        for bad in ["https://h/x", "ftp://h", "http://", "http://h:x/", "http://u@h/", "http://h/a b", "http://h:0/"] {
            assert!(HookUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn the_signature_covers_time_and_body() {
        let a = sign("k", 1, b"{}");
        assert!(a.starts_with("t=1,v1=") && a.len() == "t=1,v1=".len() + 64, "{a}");
        assert_ne!(a, sign("k", 2, b"{}"));
        assert_ne!(a, sign("k", 1, b"{ }"));
        assert_ne!(a, sign("j", 1, b"{}"));
    }
}
