//! TLS for PostgreSQL connections, with libpq's meanings of the URL's `sslmode` and
//! `sslrootcert`. tokio-postgres parses only `sslmode=disable|prefer|require` and knows no root
//! certificate, so both are taken out of the URL here, the rest is handed to tokio-postgres,
//! and every connection (migrations, the pool, the NOTIFY listener) gets the connector made here.
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | no |
//! | `allow` | refused: libpq tries plain text first; say `prefer` or `disable` |
//! | `prefer` (the default) | if the server offers it | the chain, if a root certificate file exists |
//! | `require` | always | the chain, if a root certificate file exists |
//! | `verify-ca` | always | the chain, against the root certificate (required) |
//! | `verify-full` | always | the chain and that the certificate names the host |
//!
//! The root certificate file is `sslrootcert`, else `~/.postgresql/root.crt` as in libpq.
//! Two deliberate differences from libpq, both stricter: a `sslrootcert` that is named but
//! missing or without a certificate is an error in every mode (libpq ignores it outside the
//! verify modes), and `sslcert`/`sslkey` (client certificates) are refused rather than ignored.
//! `sslrootcert=system` trusts the system's roots and, as in libpq 16, makes `verify-full` the
//! default and any weaker mode an error. `PGSSLMODE` and the other libpq environment
//! variables are not read: the URL says everything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use gust_store::StoreError;

/// The connector every PostgreSQL connection of a store uses.
pub(crate) type PgTls = MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslModeParam {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslModeParam {
    fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "disable" => SslModeParam::Disable,
            "prefer" => SslModeParam::Prefer,
            "require" => SslModeParam::Require,
            "verify-ca" => SslModeParam::VerifyCa,
            "verify-full" => SslModeParam::VerifyFull,
            "allow" => {
                return Err(invalid(
                    "sslmode=allow is not supported (it tries an unencrypted connection first): use sslmode=prefer, require or disable",
                ))
            }
            other => {
                return Err(invalid(&format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            SslModeParam::Disable => "disable",
            SslModeParam::Prefer => "prefer",
            SslModeParam::Require => "require",
            SslModeParam::VerifyCa => "verify-ca",
            SslModeParam::VerifyFull => "verify-full",
        }
    }
}

/// Where trust comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Roots {
    /// No root certificate: the server's certificate is not checked (encryption only).
    None,
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// The system's trusted roots (`sslrootcert=system`).
    System,
}

/// What the URL asked for, once understood.
#[derive(Debug)]
pub(crate) struct PgTlsPlan {
    pub(crate) mode: SslModeParam,
    roots: Roots,
}

impl PgTlsPlan {
    /// One line for logs and errors: what is encrypted and what is checked.
    pub(crate) fn describe(&self) -> String {
        let trust = match &self.roots {
            Roots::None => "the server's certificate is not checked".to_string(),
            Roots::File(p) => format!("certificates must chain to {}", p.display()),
            Roots::System => "certificates must chain to the system's roots".to_string(),
        };
        match self.mode {
            SslModeParam::Disable => "sslmode=disable: unencrypted".to_string(),
            SslModeParam::VerifyFull => format!("sslmode=verify-full: {trust} and name the host"),
            m => format!("sslmode={}: {trust}", m.as_str()),
        }
    }
}

fn invalid(message: &str) -> StoreError {
    StoreError::Backend(format!("invalid PostgreSQL URL: {message}"))
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL, and decides what they mean;
/// returns the URL tokio-postgres may parse and the plan.
pub(crate) fn plan(url: &str) -> Result<(String, PgTlsPlan), StoreError> {
    plan_with_home(url, std::env::var_os("HOME").map(PathBuf::from).as_deref())
}

fn plan_with_home(url: &str, home: Option<&Path>) -> Result<(String, PgTlsPlan), StoreError> {
    // The query starts at the first '?' after the credentials, as tokio-postgres reads it.
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let after_creds = url[after_scheme..].find('@').map_or(after_scheme, |i| after_scheme + i + 1);
    let (base, query) = match url[after_creds..].find('?') {
        Some(i) => (&url[..after_creds + i], Some(&url[after_creds + i + 1..])),
        None => (url, None),
    };
    let mut mode = None;
    let mut rootcert = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key)?.as_str() {
            "sslmode" => mode = Some(SslModeParam::parse(&percent_decode(value)?)?),
            "sslrootcert" => rootcert = Some(percent_decode(value)?),
            k @ ("sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir") => {
                return Err(invalid(&format!("{k} is not supported (client certificates and CRLs)")))
            }
            _ => kept.push(pair),
        }
    }
    let system = rootcert.as_deref() == Some("system");
    let mode = match mode {
        Some(m) if system && m != SslModeParam::VerifyFull => {
            return Err(invalid(&format!(
                "sslrootcert=system needs sslmode=verify-full (got sslmode={})",
                m.as_str()
            )))
        }
        Some(m) => m,
        None if system => SslModeParam::VerifyFull,
        None => SslModeParam::Prefer,
    };
    let roots = match (mode, rootcert) {
        (SslModeParam::Disable, _) => Roots::None,
        (_, Some(r)) if r == "system" => Roots::System,
        (_, Some(r)) if r.is_empty() => return Err(invalid("sslrootcert is empty")),
        (_, Some(r)) => {
            let path = PathBuf::from(r);
            if !path.is_file() {
                return Err(invalid(&format!("sslrootcert {}: no such file", path.display())));
            }
            Roots::File(path)
        }
        (m, None) => match home.map(|h| h.join(".postgresql/root.crt")).filter(|p| p.is_file()) {
            Some(default) => Roots::File(default),
            None if matches!(m, SslModeParam::VerifyCa | SslModeParam::VerifyFull) => {
                return Err(invalid(&format!(
                    "sslmode={} needs a root certificate: give sslrootcert=FILE (PEM), sslrootcert=system, or put one at ~/.postgresql/root.crt",
                    m.as_str()
                )))
            }
            None => Roots::None,
        },
    };
    let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, PgTlsPlan { mode, roots }))
}

/// The `SslMode` tokio-postgres is told: whether to ask for TLS and whether to insist.
pub(crate) fn tokio_ssl_mode(mode: SslModeParam) -> SslMode {
    match mode {
        SslModeParam::Disable => SslMode::Disable,
        SslModeParam::Prefer => SslMode::Prefer,
        SslModeParam::Require | SslModeParam::VerifyCa | SslModeParam::VerifyFull => SslMode::Require,
    }
}

/// The connector for the plan; reads the root certificates now, so a bad file is an error at
/// start rather than at the first connection.
pub(crate) fn connector(plan: &PgTlsPlan) -> Result<PgTls, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &plan.roots {
        Roots::None => None,
        Roots::File(path) => Some(load_roots(path)?),
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(invalid("sslrootcert=system: no trusted root certificate found on this system"));
            }
            Some(roots)
        }
    };
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(EncryptOnly(provider.clone())),
        Some(roots) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| invalid(&format!("root certificates: {e}")))?;
            match plan.mode {
                SslModeParam::VerifyFull => webpki,
                _ => Arc::new(ChainOnly(webpki)),
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn load_roots(path: &Path) -> Result<RootCertStore, StoreError> {
    let pem = std::fs::read(path).map_err(|e| invalid(&format!("sslrootcert {}: {e}", path.display())))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(&format!("sslrootcert {}: {e}", path.display())))?;
        roots.add(cert).map_err(|e| {
            invalid(&format!("sslrootcert {}: a certificate does not parse: {e}", path.display()))
        })?;
    }
    if roots.is_empty() {
        return Err(invalid(&format!("sslrootcert {}: no PEM certificate in it", path.display())));
    }
    Ok(roots)
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let byte = hex.ok_or_else(|| invalid(&format!("bad percent-encoding in {s:?}")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(&format!("{s:?} is not UTF-8 once decoded")))
}

/// `verify-ca` (and `prefer`/`require` with a root certificate): the chain must lead to a
/// trusted root and be valid now; the host name is not compared (libpq's `verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>, ocsp: &[u8], now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name, so a name error means the chain passed.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, but any certificate is
/// taken (libpq's meaning: protection from eavesdroppers, not from an active attacker). The
/// handshake's signatures are still checked against the certificate presented.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self, _end_entity: &CertificateDer<'_>, _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>, _ocsp: &[u8], _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(url: &str, home: Option<&Path>) -> Result<(String, SslModeParam, Roots), String> {
        plan_with_home(url, home).map(|(u, p)| (u, p.mode, p.roots)).map_err(|e| e.to_string())
    }

    #[test]
    fn libpq_modes_and_root_certificates() {
        let dir = std::env::temp_dir().join(format!("gust-pgtls-unit-{}", std::process::id()));
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let ca_s = ca.display().to_string();
        // The default is prefer, unverified without a root certificate; other parameters stay.
        assert_eq!(
            plan_of("postgres://u:p?w@h:5/db?application_name=a", Some(&home)).unwrap(),
            ("postgres://u:p?w@h:5/db?application_name=a".into(), SslModeParam::Prefer, Roots::None)
        );
        assert_eq!(
            plan_of("postgres://h/db?sslmode=require&connect_timeout=3", Some(&home)).unwrap(),
            ("postgres://h/db?connect_timeout=3".into(), SslModeParam::Require, Roots::None)
        );
        assert_eq!(
            plan_of(&format!("postgres://h/db?sslmode=verify-full&sslrootcert={ca_s}"), None).unwrap(),
            ("postgres://h/db".into(), SslModeParam::VerifyFull, Roots::File(ca.clone()))
        );
        // require with a root certificate verifies the chain (libpq's rule).
        assert_eq!(
            plan_of(
                &format!("postgres://h/db?sslmode=require&sslrootcert={}", ca_s.replace('/', "%2F")),
                None
            )
            .unwrap()
            .2,
            Roots::File(ca.clone())
        );
        // verify modes need a root certificate; ~/.postgresql/root.crt is the default.
        let e = plan_of("postgres://h/db?sslmode=verify-ca", Some(&home)).unwrap_err();
        assert!(e.contains("needs a root certificate"), "{e}");
        std::fs::create_dir_all(home.join(".postgresql")).unwrap();
        std::fs::write(home.join(".postgresql/root.crt"), "x").unwrap();
        assert_eq!(
            plan_of("postgres://h/db?sslmode=verify-ca", Some(&home)).unwrap().2,
            Roots::File(home.join(".postgresql/root.crt"))
        );
        assert_eq!(plan_of("postgres://h/db?sslmode=disable", Some(&home)).unwrap().2, Roots::None);
        // system implies verify-full and refuses weaker modes.
        assert_eq!(plan_of("postgres://h/db?sslrootcert=system", None).unwrap().1, SslModeParam::VerifyFull);
        for (url, says) in [
            ("postgres://h/db?sslrootcert=system&sslmode=require", "needs sslmode=verify-full"),
            ("postgres://h/db?sslmode=allow", "sslmode=allow is not supported"),
            ("postgres://h/db?sslmode=bogus", "is not one of"),
            ("postgres://h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem", "no such file"),
            ("postgres://h/db?sslcert=/x.pem", "sslcert is not supported"),
            ("postgres://h/db?sslrootcert=%zz", "bad percent-encoding"),
        ] {
            let e = plan_of(url, None).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("gust-pgtls-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "no PEM here").unwrap();
        let (_, plan) =
            plan_with_home(&format!("postgres://h/db?sslmode=verify-ca&sslrootcert={}", ca.display()), None)
                .unwrap();
        let e = connector(&plan).err().unwrap().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
