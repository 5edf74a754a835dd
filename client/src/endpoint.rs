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
    /// Until when calls keep away from this endpoint, as [`NodeEndpoint::tick`] gives it; 0:
    /// they do not. An atomic, not a lock: every call reads it.
    avoid_until: AtomicU64,
    /// The instant `avoid_until` counts from.
    base: Instant,
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
            avoid_until: AtomicU64::new(0),
            base: Instant::now(),
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
        let until = self.avoid_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.tick(now);
        // Of the callers that find the hold ended, the one whose exchange lands probes.
        now >= until
            && self
                .avoid_until
                .compare_exchange(until, now.saturating_add(nanos(probe)), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Whether calls keep away from this endpoint at `now`.
    pub(crate) fn avoided(&self, now: Instant) -> bool {
        let until = self.avoid_until.load(Ordering::Acquire);
        until != 0 && self.tick(now) < until
    }

    /// `at` as a point of `avoid_until`'s scale: nanoseconds since `base`, plus one so that
    /// no instant is 0.
    fn tick(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.base)).saturating_add(1)
    }

    /// The endpoint gave no answer to an attempt (the request timed out, the connect failed,
    /// the connection broke): calls keep away from it for `hold` (zero: they do not).
    pub(crate) fn note_silence(&self, hold: Duration) {
        self.silences.fetch_add(1, Ordering::Relaxed);
        if !hold.is_zero() {
            self.avoid_until.store(self.tick(Instant::now()).saturating_add(nanos(hold)), Ordering::Release);
        }
    }

    /// The endpoint answered (a response or a status from the node): the hold, if any, ends.
    pub(crate) fn note_answer(&self) {
        if self.avoid_until.load(Ordering::Acquire) != 0 {
            self.avoid_until.store(0, Ordering::Release);
        }
    }

    /// Attempts that got no answer from this endpoint.
    pub(crate) fn silences(&self) -> u64 {
        self.silences.load(Ordering::Relaxed)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
