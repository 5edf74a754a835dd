//! TLS (rustls) of the node's gRPC listeners and of its calls to its peers, from the PEM
//! files named in the configuration.

use std::path::Path;

use anyhow::Context as _;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{PeerTlsConfig, TlsConfig};

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read the {what} {}", path.display()))
}

fn identity(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    Ok(Identity::from_pem(read(cert, "certificate")?, read(key, "private key")?))
}

/// The client listener's TLS: its certificate and key.
pub fn server_config(tls: &TlsConfig) -> anyhow::Result<ServerTlsConfig> {
    Ok(ServerTlsConfig::new().identity(identity(&tls.cert, &tls.key)?))
}

/// The peer listener's TLS: its certificate and key, and, when required, client
/// certificates that chain to the region's CA.
pub fn peer_server_config(tls: &PeerTlsConfig) -> anyhow::Result<ServerTlsConfig> {
    let mut config = ServerTlsConfig::new().identity(identity(&tls.cert, &tls.key)?);
    if tls.require_client_cert {
        config = config.client_ca_root(Certificate::from_pem(read(&tls.ca, "CA certificate")?));
    }
    Ok(config)
}

/// How this node calls its peers: it trusts the region's CA and shows its own certificate
/// (which peers that require client certificates check).
pub fn peer_client_config(tls: &PeerTlsConfig) -> anyhow::Result<ClientTlsConfig> {
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&tls.ca, "CA certificate")?))
        .identity(identity(&tls.cert, &tls.key)?))
}
