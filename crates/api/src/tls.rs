//! The server's TLS identity: a certificate chain and its private key, read from PEM files at
//! start and reloaded while the server runs (on request, as the binary does on SIGHUP, and when
//! either file changes), so a renewed certificate takes effect without a restart.
//!
//! New connections get the pair in force when their ClientHello arrives; open connections keep
//! the one they started with. A pair that does not load (a file unreadable or without PEM, a key
//! that does not match the certificate) is refused: at start that is an error, on a reload it is
//! logged and the pair in force stays.
//!
//! rustls with the `ring` provider; TLS 1.2 and 1.3; ALPN offers `http/1.1` only (the edge
//! serves HTTP/1.1).
//! Must not: do file I/O on the handshake path (the resolver clones one `Arc` under a read lock).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// How often [`ServerTls::keep_current`] looks at the files' modification times. Renewals are
/// rare; two seconds keeps the cost at two `stat`s per period and a renewal visible at once.
pub const DEFAULT_TLS_POLL: Duration = Duration::from_secs(2);

/// Where the server's certificate chain and private key live (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`--tls-key`).
    pub key: PathBuf,
}

/// Why a certificate and key could not be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read { path: PathBuf, error: std::io::Error },
    /// The certificate file holds no PEM certificate (or a malformed one).
    NoCertificate { path: PathBuf, detail: String },
    /// The key file holds no PEM private key (or a malformed one).
    NoKey { path: PathBuf, detail: String },
    /// The key is not usable, or is not the certificate's.
    Pair { cert: PathBuf, key: PathBuf, error: rustls::Error },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::NoCertificate { path, detail } => {
                write!(f, "{}: no PEM certificate (BEGIN CERTIFICATE) in it: {detail}", path.display())
            }
            TlsError::NoKey { path, detail } => write!(
                f,
                "{}: no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in it: {detail}",
                path.display()
            ),
            TlsError::Pair { cert, key, error } => write!(
                f,
                "the key {} is not usable with the certificate {}: {error}",
                key.display(),
                cert.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// The crypto provider of every TLS endpoint gust builds (server, bench client, PostgreSQL).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration with a certificate that can be replaced while it runs.
pub struct ServerTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    acceptor: TlsAcceptor,
    /// The files' stamps when last looked at (loaded or not), so a bad pair is reported once
    /// per change rather than on every poll.
    seen: Mutex<Stamps>,
}

/// What identifies a file's content cheaply: modification time, size and inode (a file
/// replaced by a rename, as certificate tools and Kubernetes secret mounts do, gets a new one).
type Stamp = Option<(SystemTime, u64, u64)>;
type Stamps = (Stamp, Stamp);

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

impl ServerTls {
    /// Loads the pair; an error says which file is wrong and why.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let provider = crypto_provider();
        let seen = (stamp(&files.cert), stamp(&files.key));
        let certified = load_pair(&files, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Pair { cert: files.cert.clone(), key: files.key.clone(), error })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Ok(Arc::new(ServerTls { files, provider, current, acceptor, seen: Mutex::new(seen) }))
    }

    /// Accepts TLS connections with the current certificate (a reference count).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// The files this configuration is loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Loads the files again and, if they form a usable pair, serves it to new connections;
    /// otherwise keeps the pair in force and returns why.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.seen.lock() = (stamp(&self.files.cert), stamp(&self.files.key));
        let certified = load_pair(&self.files, &self.provider)?;
        *self.current.0.write() = Arc::new(certified);
        Ok(())
    }

    /// Reloads if either file changed since it was last looked at; `None` if neither did.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        if *self.seen.lock() == now {
            return None;
        }
        Some(self.reload())
    }

    /// Keeps the certificate current until dropped: reloads when `reload_now` is notified (the
    /// binary does on SIGHUP) and when the files change (looked at every `poll`). Each reload
    /// is logged; a failed one keeps the pair in force.
    pub async fn keep_current(self: Arc<Self>, reload_now: Arc<tokio::sync::Notify>, poll: Duration) {
        loop {
            let (why, outcome) = tokio::select! {
                () = reload_now.notified() => ("requested", Some(self.reload())),
                () = tokio::time::sleep(poll) => ("files changed", self.reload_if_changed()),
            };
            match outcome {
                None => {}
                Some(Ok(())) => {
                    crate::edge::TLS_RELOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(why, cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Some(Err(e)) => {
                    tracing::error!(why, error = %e, "TLS certificate NOT reloaded: keeping the one in force")
                }
            }
        }
    }
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_path_buf(), error });
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate { path: files.cert.clone(), detail: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.clone(), detail: "none found".into() });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::NoKey { path: files.key.clone(), detail: e.to_string() })?;
    // Parses the private key and checks that it is the leaf certificate's.
    CertifiedKey::from_der(chain, key, provider).map_err(|error| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_say_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("gust-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let files = TlsFiles { cert: cert.clone(), key: key.clone() };
        let e = ServerTls::load(files.clone()).err().unwrap().to_string();
        assert!(e.contains("cannot read") && e.contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let e = ServerTls::load(files.clone()).err().unwrap().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        // A certificate-shaped PEM block whose content is not a certificate.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = ServerTls::load(files.clone()).err().unwrap().to_string();
        assert!(e.contains("no PEM private key"), "{e}");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let e = ServerTls::load(files).err().unwrap().to_string();
        assert!(e.contains("not usable with the certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
