//! Outgoing requests of wasi:http components (`wasi:http/outgoing-handler`).
//!
//! Refused unless the function's `allowed_outbound_hosts` lists the request's scheme, host
//! and port ([`gust_core::outbound`]). A listed name is resolved here and connected to only at
//! an address that is public: loopback, private, link-local, shared, multicast and reserved
//! addresses are refused (so a name that resolves to 127.0.0.1 cannot reach gust's own API or
//! anything on the host's networks), unless the operator allows private networks
//! (`--allow-private-outbound`). The connection goes to the address that was checked, so the
//! name cannot be re-resolved elsewhere in between. HTTPS verifies the server against the
//! system's root certificates. At most [`MAX_OUTGOING`] requests of one invocation are open
//! at once; the invocation's deadline bounds them all.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions};

/// Requests of one invocation open at once.
pub(super) const MAX_OUTGOING: usize = 16;
/// Connecting (name resolution, TCP, TLS) when the component sets no timeout of its own.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for the response's head when the component sets no timeout of its own.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);

type WasiBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Error>;
type Sent = Result<(hyper::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>;

/// The `wasi:http` hooks of one invocation: where it may send requests.
pub(super) struct Outbound {
    allowed: Vec<String>,
    private_ok: bool,
    open: Arc<Semaphore>,
}

impl Outbound {
    pub(super) fn new(allowed: &[String], private_ok: bool) -> Self {
        Outbound { allowed: allowed.to_vec(), private_ok, open: Arc::new(Semaphore::new(MAX_OUTGOING)) }
    }
}

impl wasmtime_wasi_http::WasiHttpHooks for Outbound {
    fn send_request(
        &mut self, request: hyper::Request<WasiBody>, options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let uri = request.uri();
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") | None => false,
            Some(_) => return Box::new(std::future::ready(Err(Error::HttpRequestUriInvalid))),
        };
        let Some(host) = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        else {
            return Box::new(std::future::ready(Err(Error::HttpRequestUriInvalid)));
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let scheme = if tls { "https" } else { "http" };
        if !gust_core::outbound::allows(&self.allowed, scheme, &host, port) {
            return Box::new(std::future::ready(Err(Error::HttpRequestDenied)));
        }
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            return Box::new(std::future::ready(Err(Error::ConnectionLimitReached)));
        };
        let private_ok = self.private_ok;
        Box::new(async move { send(request, options, Target { host, port, tls, private_ok }, permit).await })
    }
}

struct Target {
    host: String,
    port: u16,
    tls: bool,
    private_ok: bool,
}

async fn send(
    mut request: hyper::Request<WasiBody>, options: Option<RequestOptions>, to: Target,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sent {
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(CONNECT_TIMEOUT);
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(FIRST_BYTE_TIMEOUT);
    let connecting = async {
        let found = tokio::net::lookup_host((to.host.as_str(), to.port))
            .await
            .map_err(|_| Error::DnsError { rcode: None, info_code: None })?;
        let addrs: Vec<SocketAddr> = found.filter(|a| to.private_ok || is_public(a.ip())).collect();
        if addrs.is_empty() {
            return Err(Error::DestinationIpProhibited);
        }
        let tcp = tokio::net::TcpStream::connect(&addrs[..]).await.map_err(Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if to.tls {
            let name = rustls::pki_types::ServerName::try_from(to.host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let tls = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(name, tcp)
                .await
                .map_err(Error::Tls)?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(io))
            .await
            .map_err(Error::from)?;
        Ok((sender, conn))
    };
    let (mut sender, conn) =
        tokio::time::timeout(connect_timeout, connecting).await.map_err(|_| Error::ConnectionTimeout)??;
    // The connection is driven apart from the guest; it ends when the response is read or
    // dropped (with the instance at the latest), and holds its place among the open requests.
    tokio::spawn(async move {
        let _ = conn.await;
        drop(permit);
    });
    // Only the path and query go on the request line (the authority is the Host header's).
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    if !request.headers().contains_key(hyper::header::HOST) {
        let host = match (to.tls, to.port) {
            (true, 443) | (false, 80) => to.host.clone(),
            (_, port) => format!("{}:{port}", to.host),
        };
        let value = hyper::header::HeaderValue::from_str(&host).map_err(|_| Error::HttpRequestUriInvalid)?;
        request.headers_mut().insert(hyper::header::HOST, value);
    }
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    Ok((response, Box::new(std::future::ready(Ok(())))))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// HTTPS clients' configuration: the system's root certificates (read once).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        })
        .clone()
        .ok_or(Error::TlsCertificateError)
}

/// Whether `ip` is an address on the public internet (not this host, its networks, or
/// reserved space).
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64: an IPv4 address inside
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..6] == [0; 6]) // IPv4-compatible and other reserved
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)) // shared (carrier-grade NAT)
        || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b))) // benchmarking
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        assert!(!is_public(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
}
