//! [`TestPki`]: a CA made for one test, and one certificate (for `127.0.0.1` and `localhost`)
//! that every node of a loopback region serves and shows to its peers.

use std::path::Path;

use meridian_node::config::{PeerTlsConfig, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A test CA and a node certificate it signed, as PEM.
pub struct TestPki {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Where [`TestPki::write`] put the files, as node configs name them.
pub struct TlsFiles {
    pub client: TlsConfig,
    pub peer: PeerTlsConfig,
}

impl TestPki {
    /// A fresh CA named `ca_name` and a node certificate signed by it.
    pub fn new(ca_name: &str) -> TestPki {
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");

        let key = KeyPair::generate().expect("generate the node key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("node parameters");
        params.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params.distinguished_name.push(DnType::CommonName, "meridian test node");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign the node certificate");
        TestPki {
            ca_pem: ca.pem().into_bytes(),
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    /// Writes the PEM files into `dir`; the configs of both listeners.
    pub fn write(&self, dir: &Path) -> TlsFiles {
        let (ca, cert, key) = (dir.join("ca.pem"), dir.join("node.pem"), dir.join("node.key"));
        std::fs::write(&ca, &self.ca_pem).expect("write the CA");
        std::fs::write(&cert, &self.cert_pem).expect("write the node certificate");
        std::fs::write(&key, &self.key_pem).expect("write the node key");
        TlsFiles {
            client: TlsConfig { cert: cert.clone(), key: key.clone() },
            peer: PeerTlsConfig { cert, key, ca, require_client_cert: true },
        }
    }
}
