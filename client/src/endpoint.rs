//! [`NodeEndpoint`]: one node's address and its lazily opened connection.

use std::time::Duration;

use tokio::sync::Mutex;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::ClientError;

/// One node the client may call. The connection is opened on first use and dropped after a
/// transport failure, so the next use reconnects within the connect timeout instead of
/// waiting on a dead connection.
pub(crate) struct NodeEndpoint {
    uri: String,
    endpoint: Endpoint,
    channel: Mutex<Option<Channel>>,
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
        Ok(NodeEndpoint { uri, endpoint, channel: Mutex::new(None) })
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
}
