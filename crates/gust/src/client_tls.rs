//! TLS for gust's clients, the CLI and `gust worker`: `https://` servers are checked against
//! the system's trusted roots plus a private CA given with `--ca FILE` (or `GUST_CA`), a failed
//! check says what is wrong with the certificate and what to do, and plain HTTP to a server
//! beyond loopback is named for what it is.

use std::path::Path;

/// The CA certificates of a `--ca` file (PEM, one or more), to trust besides the system's.
pub fn load_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read --ca {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("--ca {}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("--ca {}: no PEM certificate (BEGIN CERTIFICATE) in it", path.display()));
    }
    Ok(certs)
}

/// What went wrong sending a request to `base`, in words an operator can act on: a certificate
/// that is not trusted, TLS spoken to a plain-HTTP server, or otherwise the whole error chain.
pub fn transport_error(base: &str, e: &reqwest::Error) -> String {
    match find_tls_error(e) {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            use rustls::CertificateError as C;
            let why = match cert {
                C::UnknownIssuer => "it is not signed by a certificate authority this client trusts".to_string(),
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "it is not issued for this host name or address".to_string()
                }
                C::Expired | C::ExpiredContext { .. } => "it has expired".to_string(),
                C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_string(),
                C::BadEncoding => "it is malformed".to_string(),
                // webpki's reason for a server certificate that is itself a CA (what a
                // one-step `openssl req -x509` makes): a common mistake worth naming.
                C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                    "it is a CA certificate used as the server's own (issue a server certificate from that CA instead)".to_string()
                }
                other => format!("{other:?}"),
            };
            format!(
                "the TLS certificate of {base} is not accepted: {why}. If the server's certificate is signed by a private CA, pass that CA's certificate with --ca FILE (or GUST_CA)"
            )
        }
        Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. }) => format!(
            "TLS with {base} failed: the server did not answer in TLS (is it serving plain HTTP? then use an http:// URL): {}",
            gust_core::error_chain(e)
        ),
        Some(other) => format!("TLS with {base} failed: {other}"),
        None => format!("cannot reach the gust server at {base}: {}", gust_core::error_chain(e)),
    }
}

/// The rustls error somewhere in `e`'s chain of causes. An `io::Error` reports its inner
/// error's source rather than the inner error (and the connector nests two of them), so each
/// one is opened explicitly.
fn find_tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// True when `url` is plain `http://` to a host that is not loopback: what crosses the
/// network (tokens, code, payloads) is then readable by anyone on the path.
pub fn is_plain_http_beyond_loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else { return false };
    if url.scheme() != "http" {
        return false;
    }
    let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => !host.is_empty() && !host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_beyond_loopback() {
        for beyond in ["http://10.0.0.5:8080", "http://gust.example.com", "http://[2001:db8::1]:80/"] {
            assert!(is_plain_http_beyond_loopback(beyond), "{beyond}");
        }
        for fine in ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:8080", "https://10.0.0.5"] {
            assert!(!is_plain_http_beyond_loopback(fine), "{fine}");
        }
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        assert!(load_ca(&path).unwrap_err().contains("cannot read --ca"));
        std::fs::write(&path, "nothing here").unwrap();
        assert!(load_ca(&path).unwrap_err().contains("no PEM certificate"));
    }
}
