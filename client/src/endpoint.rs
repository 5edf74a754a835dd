//! [`NodeEndpoint`]: one node's address, its lazily opened connection, and whether calls
//! should keep away from it for a while.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::ClientError;

/// One node the client may call. The connection is opened on first use and dropped after a
/// transport failure, so the next use reconnects within the connect timeout instead of
/// waiting on a dead connection.
///
/// An endpoint that gave no answer (see [`NodeEndpoint::note_silence`]) is *avoided*: calls
/// try it only after every other endpoint until the hold ends; then one call probes it while
/// the others keep away, and any answer from it ends the hold.
pub(crate) struct NodeEndpoint {
    uri: String,
    endpoint: Endpoint,
    channel: Mutex<Option<Channel>>,
    /// Until when calls keep away from this endpoint; `None`: they do not.
    avoid_until: std::sync::Mutex<Option<Instant>>,
    /// Attempts that got no answer from this endpoint, since the client was made.
    silences: AtomicU64,
}

impl NodeEndpoint {
    /// `uri` comes from [`crate::config::normalize_endpoint`].
    pub(crate) fn new(
        uri: String,
        connect_timeout: Duration,
        tls: Option<&ClientTlsConfig>,
    ) -> Result<Self, ClientError> {
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| ClientError::InvalidEndpoint { endpoint: uri.clone(), detail: e.to_string() })?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            // Notices a node that vanished (power loss, partition) without waiting for TCP.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| ClientError::InvalidEndpoint { endpoint: uri.clone(), detail: e.to_string() })?;
        }
        Ok(NodeEndpoint {
            uri,
            endpoint,
            channel: Mutex::new(None),
            avoid_until: std::sync::Mutex::new(None),
            silences: AtomicU64::new(0),
        })
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// The open connection, opening it if there is none.
    pub(crate) async fn channel(&self) -> Result<Channel, ClientError> {
        // Held across the connect so that concurrent callers share one attempt.
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref() {
            return Ok(channel.clone());
        }
        let channel = self.endpoint.connect().await.map_err(|source| ClientError::Connect {
            endpoint: self.uri.clone(),
            detail: crate::error::error_chain(&source),
            source,
        })?;
        tracing::debug!(endpoint = %self.uri, "connected");
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Drops the connection after a transport failure.
    pub(crate) async fn forget(&self) {
        self.channel.lock().await.take();
    }

    /// Whether a call may try this endpoint now, in its turn: true when it is not avoided,
    /// and true for exactly one caller once a hold has ended — that caller probes it, and
    /// the others keep away for `probe` longer (the probe's own time allowance), until the
    /// probe's answer or silence decides.
    pub(crate) fn take_turn(&self, now: Instant, probe: Duration) -> bool {
        let mut until = self.avoid_until.lock().unwrap_or_else(|p| p.into_inner());
        match *until {
            None => true,
            Some(t) if now < t => false,
            Some(_) => {
                *until = Some(now + probe);
                true
            }
        }
    }

    /// Whether calls keep away from this endpoint at `now`.
    pub(crate) fn avoided(&self, now: Instant) -> bool {
        self.avoid_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| now < t)
    }

    /// The endpoint gave no answer to an attempt (the request timed out, the connect failed,
    /// the connection broke): calls keep away from it for `hold` (zero: they do not).
    pub(crate) fn note_silence(&self, hold: Duration) {
        self.silences.fetch_add(1, Ordering::Relaxed);
        if !hold.is_zero() {
            *self.avoid_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + hold);
        }
    }

    /// The endpoint answered (a response or a status from the node): the hold, if any, ends.
    pub(crate) fn note_answer(&self) {
        let mut until = self.avoid_until.lock().unwrap_or_else(|p| p.into_inner());
        if until.is_some() {
            *until = None;
        }
    }

    /// Attempts that got no answer from this endpoint.
    pub(crate) fn silences(&self) -> u64 {
        self.silences.load(Ordering::Relaxed)
    }
}
