//! TLS for the TLS rows: a CA and a server certificate for 127.0.0.1 made at bench start
//! (rcgen; nothing outlives the run), the files gust and the bare baseline serve, and the
//! client side the load generator connects with (tokio-rustls, the ring provider, trusting only
//! that CA). Both servers and the client use the same rustls, so the rows price gust's work
//! over TLS, not one TLS stack against another.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The server's certificate and key files, and a client that trusts them.
#[derive(Clone)]
pub struct BenchTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    connector: TlsConnector,
}

impl BenchTls {
    /// Makes a CA and a certificate for 127.0.0.1 signed by it; writes the certificate and key
    /// into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<BenchTls> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "gust-bench CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf.signed_by(&key, &ca)?;
        let (cert_path, key_path) = (dir.join("bench-cert.pem"), dir.join("bench-key.pem"));
        std::fs::write(&cert_path, leaf.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone())?;
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(BenchTls { cert: cert_path, key: key_path, connector: TlsConnector::from(Arc::new(config)) })
    }

    /// A TCP connection to `addr` (TCP_NODELAY, as the plain rows) with the handshake done.
    pub async fn connect(&self, addr: SocketAddr) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(self.connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?)
    }
}
