//! The edge: everything between a TCP socket and a handler.
//!
//! Two jobs, both done before any request body is read:
//! - **Connections** ([`serve`]): a cap on open connections (below the open-file limit, which
//!   is raised to its hard limit at start; past it, new ones wait in the listen backlog), a header-read timeout (which also closes idle
//!   keep-alive connections), a write-stall timeout for clients that stop reading, and an
//!   accept loop that backs off on `EMFILE` instead of spinning or dying. Slow bodies are the
//!   bounded body reader's job ([`crate::body`]). With TLS ([`crate::tls`]) the handshake
//!   runs inside the connection's slot and within the header-read timeout, so a client that
//!   never finishes it (or never starts it) is closed like one that never sends headers; a
//!   plain-HTTP request to the TLS port gets a plain 400 that says to use `https://`.
//! - **Browsers** ([`guard`]): a web page the user happens to visit can reach a loopback server
//!   (a form post, `fetch` in no-cors mode, DNS rebinding). Every API request is refused when
//!   its `Origin` is another site's (unless `--allow-origin` names it), when a mutating request
//!   carries a content type a browser sends cross-site without a preflight, and, on an API
//!   without authentication, when its `Host` is not one of this server's names (DNS
//!   rebinding: the attacker's name resolving to 127.0.0.1). An API with authentication skips
//!   the Host check: a foreign page cannot present the token, and the auth layer refuses it.
//!   `/healthz`, `/readyz` and `/metrics` answer everyone (load balancers use any Host).
//!
//! No CORS headers are ever emitted: the API has no cross-origin readers.
//! Must not: read a body, look at the store, or allocate on the guard's path beyond what the
//! checks need (it runs on every request, the invoke hot path included).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::aws::AwsError;
use crate::{ApiConfig, ApiError, AppState};

/// Connections served at once unless `--max-connections` says otherwise. The open-file limit
/// bounds it further (see [`FD_SHARE_FOR_CONNECTIONS`]). Past it, new connections wait in the
/// listen backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// A client has this long to send a request's headers, counted from the connection's start or
/// the end of its previous response; so it is also how long an idle keep-alive connection
/// stays open. With TLS, the handshake gets as long again before it. Long enough for any real client on a slow link, short enough that stalled
/// connections cannot pile up (`--header-read-timeout-ms`, hidden, for tests).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A response write that makes no progress for this long (the client stopped reading) closes
/// the connection.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections may take this share of the open-file limit (numerator, denominator); the rest
/// is for the store, artifacts, compiled modules and the environments' pipes.
const FD_SHARE_FOR_CONNECTIONS: (u64, u64) = (3, 4);

/// After an accept error that is not about one connection (`EMFILE`, `ENFILE`, `ENOBUFS`), the
/// loop waits this long before accepting again: the condition lasts until connections close,
/// and retrying at once would spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Repeated warnings (accept errors, connections over the cap) are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Limits of [`serve`]; [`Default`] is the `DEFAULT_*` constants.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`DEFAULT_WRITE_STALL_TIMEOUT`].
    pub write_stall_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`]; [`serve`] lowers it to its share of the open-file limit.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            write_stall_timeout: DEFAULT_WRITE_STALL_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Connection counters for `/metrics` (process-wide: one process serves one listener).
pub(crate) static OPEN_CONNECTIONS: AtomicU64 = AtomicU64::new(0);
pub(crate) static CAP_WAITS: AtomicU64 = AtomicU64::new(0);
pub(crate) static ACCEPT_ERRORS: AtomicU64 = AtomicU64::new(0);
pub(crate) static TLS_HANDSHAKE_FAILURES: AtomicU64 = AtomicU64::new(0);
pub(crate) static TLS_PLAIN_HTTP: AtomicU64 = AtomicU64::new(0);
pub(crate) static TLS_RELOADS: AtomicU64 = AtomicU64::new(0);

/// Raises this process's soft limit on open files to its hard limit (every connection holds
/// one) and returns the soft limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    // An unlimited hard limit is not a valid soft limit for open files on Linux (nr_open caps it).
    const UNLIMITED_TARGET: u64 = 1 << 20;
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            let target = if hard == RLIM_INFINITY { UNLIMITED_TARGET.max(soft) } else { hard };
            match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
                Ok(()) => target,
                Err(_) => soft,
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, within `limits`, over TLS when
/// `tls` is given (its certificate may change while serving); then stops accepting, lets every
/// connection finish its request in flight, and returns once all are closed. Sets TCP_NODELAY
/// on every connection (headers and body are separate writes; Nagle would add ~40 ms).
pub async fn serve<S>(
    listener: TcpListener, router: S, limits: ServeLimits, tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: App,
{
    let fd_limit = raise_fd_limit();
    let by_fds = fd_limit.saturating_mul(FD_SHARE_FOR_CONNECTIONS.0) / FD_SHARE_FOR_CONNECTIONS.1;
    let max_connections =
        limits.max_connections.min(usize::try_from(by_fds).unwrap_or(usize::MAX)).clamp(1, u32::MAX as usize);
    tracing::info!(
        max_connections,
        fd_limit,
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        tls = tls.is_some(),
        "edge: connections capped, slow clients timed out"
    );
    let acceptor = tls.as_ref().map(|t| t.acceptor());
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut accept_warning = Every::new(WARN_EVERY);
    let mut cap_warning = Every::new(WARN_EVERY);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first, then the connection: at the cap, new connections wait in the kernel's
        // backlog (costing no descriptor) until one closes, as the header-read timeout makes
        // sure one does, instead of being reset.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                CAP_WAITS.fetch_add(1, Ordering::Relaxed);
                if cap_warning.due() {
                    tracing::warn!(
                        max_connections,
                        "at the connection cap: new connections wait for one to close"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // Never closed; if it were, there would be nothing left to serve.
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            // The peer gave up before we got to it: nothing to do for this one.
            Err(e) if is_about_one_connection(&e) => continue,
            Err(e) => {
                ACCEPT_ERRORS.fetch_add(1, Ordering::Relaxed);
                if accept_warning.due() {
                    tracing::warn!(error = %e, "accept failed; backing off (raise the open-file limit or lower --max-connections)");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
        };
        tokio::spawn(connection(
            tcp,
            router.clone(),
            http.clone(),
            acceptor.clone(),
            limits,
            slot,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Each connection holds a slot until it closes: all slots back means all are closed.
    let _ = slots.acquire_many(max_connections as u32).await;
    Ok(())
}

/// Accept errors that concern only the connection being accepted.
fn is_about_one_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}

/// The address a connection arrived at, for the Host check (a request extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnInfo {
    pub(crate) local: SocketAddr,
    /// The client's address (a function URL's `sourceIp`).
    pub(crate) peer: Option<SocketAddr>,
}

/// What [`serve`] serves: a router, or the [`crate::Gateway`] in front of one; always ready
/// (each request is served by a clone).
pub trait App:
    tower::Service<Request, Response = Response, Error = std::convert::Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

async fn connection(
    tcp: TcpStream, router: impl App, http: hyper::server::conn::http1::Builder,
    tls: Option<tokio_rustls::TlsAcceptor>, limits: ServeLimits, _slot: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let _open = scopeguard(|| {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    });
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().ok();
    let peer = tcp.peer_addr().ok();
    let io = StallGuard::new(tcp, limits.write_stall_timeout);
    let Some(acceptor) = tls else {
        return serve_http(io, local, peer, router, http, stop).await;
    };
    // The handshake (and the ClientHello before it) gets the header-read timeout: a client
    // that connects and stays silent, or stalls mid-handshake, holds its slot no longer than
    // one that never sends headers. Shutting down abandons handshakes in progress.
    let handshake = tokio::time::timeout(limits.header_read_timeout, tls_handshake(io, acceptor));
    let tls_stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(Some(stream))) => stream,
            // A plain-HTTP request, already answered.
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                TLS_HANDSHAKE_FAILURES.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                TLS_HANDSHAKE_FAILURES.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|stopping| *stopping) => return,
    };
    serve_http(tls_stream, local, peer, router, http, stop).await
}

/// The first byte of a TLS handshake record; a plain HTTP request starts with a method's
/// uppercase letter instead.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How much of a plain-HTTP request on the TLS port is read (and dropped) before answering
/// it, so the answer is not lost to a reset: closing a socket with unread bytes resets it.
const PLAIN_HTTP_DRAIN: usize = 64 * 1024;

/// Runs the TLS handshake; a plain-HTTP request instead gets a plain 400 that says to use
/// `https://` (answered here, `None`), so a mistyped URL fails with a clear message rather
/// than a garbled connection.
async fn tls_handshake(
    mut io: StallGuard, acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<Option<tokio_rustls::server::TlsStream<StallGuard>>> {
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut first = [0u8; 1];
    if io.tcp.peek(&mut first).await? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a ClientHello"));
    }
    if first[0] == TLS_HANDSHAKE_RECORD || !first[0].is_ascii_uppercase() {
        return acceptor.accept(io).await.map(Some);
    }
    TLS_PLAIN_HTTP.fetch_add(1, Ordering::Relaxed);
    let mut request = vec![0u8; PLAIN_HTTP_DRAIN];
    let mut read = 0;
    // Up to the end of the headers, which is all a client sends before it reads an answer
    // (a body after them is a reset risk the client takes).
    while read < request.len() && !request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut request[read..]).await? {
            0 => break,
            n => read += n,
        }
    }
    let body =
        r#"{"error":{"code":"TlsRequired","message":"this server speaks HTTPS only: use an https:// URL"}}"#;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    io.write_all(answer.as_bytes()).await?;
    io.shutdown().await?;
    Ok(None)
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends or the server stops.
async fn serve_http<I>(
    io: I, local: Option<SocketAddr>, peer: Option<SocketAddr>, router: impl App,
    http: hyper::server::conn::http1::Builder, mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        if let Some(local) = local {
            req.extensions_mut().insert(ConnInfo { local, peer });
        }
        // Router is always ready, and a clone is one reference count.
        router.clone().call(req)
    });
    let conn = http.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    // Shutting down: finish the request in flight (if any), then close.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// True at most once per period (log rate limiting).
struct Every {
    period: Duration,
    last: Option<Instant>,
}

impl Every {
    fn new(period: Duration) -> Self {
        Every { period, last: None }
    }

    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.period) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// A TCP stream whose writes fail with `TimedOut` once one has made no progress for the
/// limit: a client that stops reading its response cannot hold the connection forever.
struct StallGuard {
    tcp: TcpStream,
    limit: Duration,
    /// Armed while a write is blocked; reused across stalls.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl StallGuard {
    fn new(tcp: TcpStream, limit: Duration) -> Self {
        StallGuard { tcp, limit, timer: None, armed: false }
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        let deadline = tokio::time::Instant::now() + self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading its response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

// ---------------------------------------------------------------------------------------------
// Browsers

/// The operator's answer to "which web pages and which names?": `--allow-origin` and
/// `--public-host`. Everything foreign that is not listed is refused.
#[derive(Clone, Debug, Default)]
pub struct BrowserPolicy {
    /// Origins whose pages may call the API: `scheme://host[:port]`, lowercase, default port
    /// omitted (as browsers send them).
    allowed_origins: Vec<String>,
    /// Names this server answers to besides its own address and localhost, each with the only
    /// port it is accepted on (`None`: any).
    public_hosts: Vec<(HostName, Option<u16>)>,
}

/// A `--allow-origin` or `--public-host` value that is not of its form.
#[derive(Debug)]
pub struct InvalidPolicy(String);

impl std::fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidPolicy {}

impl BrowserPolicy {
    /// Parses `--allow-origin` values (`https://console.example.com[:port]`) and
    /// `--public-host` values (`NAME` or `NAME:PORT`; an IPv6 address in brackets).
    pub fn new(allow_origins: &[String], public_hosts: &[String]) -> Result<Self, InvalidPolicy> {
        let mut policy = BrowserPolicy::default();
        for raw in allow_origins {
            let origin = normalize_origin(raw).ok_or_else(|| {
                InvalidPolicy(format!(
                    "--allow-origin {raw:?} is not an origin: write scheme://host[:port], e.g. https://console.example.com (no path, no wildcard)"
                ))
            })?;
            policy.allowed_origins.push(origin);
        }
        for raw in public_hosts {
            let (name, port) = split_host_port(raw.trim())
                .ok_or_else(|| InvalidPolicy(format!("--public-host {raw:?} is not NAME or NAME:PORT")))?;
            policy.public_hosts.push((name, port));
        }
        Ok(policy)
    }

    fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    fn is_public_host(&self, name: HostRef<'_>, port: Option<u16>) -> bool {
        self.public_hosts.iter().any(|(n, p)| n.matches(name) && (p.is_none() || *p == port))
    }
}

/// A host as a `--public-host` names it: an IP address or a DNS name (compared
/// case-insensitively).
#[derive(Clone, Debug)]
enum HostName {
    Ip(IpAddr),
    Name(String),
}

/// A host as a request's Host header names it (borrowed: the guard parses one per request
/// without allocating).
#[derive(Clone, Copy, Debug)]
enum HostRef<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl HostName {
    fn matches(&self, other: HostRef<'_>) -> bool {
        match (self, other) {
            (HostName::Ip(a), HostRef::Ip(b)) => *a == b,
            (HostName::Name(a), HostRef::Name(b)) => a.eq_ignore_ascii_case(b),
            (HostName::Ip(_), HostRef::Name(_)) | (HostName::Name(_), HostRef::Ip(_)) => false,
        }
    }
}

/// Splits `host[:port]` (`[v6]:port` for IPv6) and checks the host is an address or a DNS
/// name. `None` when it is neither.
fn split_host_port(s: &str) -> Option<(HostName, Option<u16>)> {
    let (host, port) = split_host_port_ref(s)?;
    let name = match host {
        HostRef::Ip(ip) => HostName::Ip(ip),
        HostRef::Name(n) => HostName::Name(n.to_ascii_lowercase()),
    };
    Some((name, port))
}

fn split_host_port_ref(s: &str) -> Option<(HostRef<'_>, Option<u16>)> {
    let parse_port = |p: &str| -> Option<u16> {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip = v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':')?)?),
        };
        return Some((HostRef::Ip(IpAddr::V6(ip)), port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(parse_port(p)?)),
        None => (s, None),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some((HostRef::Ip(IpAddr::V4(ip)), port));
    }
    let is_name = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    is_name.then_some((HostRef::Name(host), port))
}

/// `scheme://host[:port]` lowercase with the scheme's default port dropped, or `None`.
fn normalize_origin(raw: &str) -> Option<String> {
    let raw = raw.trim().trim_end_matches('/');
    let (scheme, authority) = raw.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = split_host_port_ref(authority)?;
    let host = match host {
        HostRef::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        HostRef::Ip(IpAddr::V4(ip)) => ip.to_string(),
        HostRef::Name(n) => n.to_ascii_lowercase(),
    };
    Some(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        Some(_) | None => format!("{scheme}://{host}"),
    })
}

/// Which part of the URL space a path is in; each has its own error shape and auth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Area {
    /// `/healthz`, `/readyz`, `/metrics`: answer everyone.
    Public,
    /// `/v1/...`
    Native,
    /// The AWS Lambda API: `/2015-03-31/...` and its sibling date prefixes.
    Aws,
    /// The worker protocol, `/internal/...`.
    Internal,
    /// Function URLs, `/url/...`: they answer anyone (each URL's auth type and CORS apply).
    Url,
    /// Anything else (a 404, after the checks).
    Other,
}

impl Area {
    fn of(path: &str) -> Area {
        let first = path.strip_prefix('/').unwrap_or(path).split('/').next().unwrap_or("");
        match first {
            "healthz" | "readyz" | "metrics" if path.len() == first.len() + 1 => Area::Public,
            "v1" => Area::Native,
            "internal" => Area::Internal,
            "url" => Area::Url,
            _ if is_date(first) => Area::Aws,
            _ => Area::Other,
        }
    }
}

/// `YYYY-MM-DD`, the AWS API's version prefix.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

/// The endpoints whose body is an arbitrary event (any content type), not JSON the API parses.
fn is_invoke(area: Area, path: &str) -> bool {
    let mut segments = path.split('/');
    let shape = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    );
    match (area, shape) {
        (Area::Native, (Some(""), Some("v1"), Some("functions"), Some(name), Some("invoke"), None))
        | (Area::Aws, (Some(""), Some(_), Some("functions"), Some(name), Some("invocations"), None))
        | (
            Area::Aws,
            (Some(""), Some(_), Some("functions"), Some(name), Some("response-streaming-invocations"), None),
        ) => !name.is_empty(),
        (Area::Native | Area::Aws | Area::Public | Area::Internal | Area::Url | Area::Other, _) => false,
    }
}

/// Content types a browser sends cross-origin without a CORS preflight.
fn is_cors_simple(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
        .iter()
        .any(|simple| mime.eq_ignore_ascii_case(simple))
}

/// Why the guard refused a request.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Host(String),
    Origin(String),
    ContentType(String),
}

/// At most this much of a client's value is echoed in a message.
fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

/// The browser checks, in order: Host (APIs without authentication), Origin (and
/// `Sec-Fetch-Site` when there is no Origin), then the content type of mutating requests.
fn check(cfg: &ApiConfig, area: Area, req: &Request) -> Result<(), Refusal> {
    let authenticated = match area {
        Area::Public | Area::Url => return Ok(()),
        Area::Native | Area::Other => cfg.token.is_some(),
        Area::Aws => cfg.aws_auth(),
        Area::Internal => cfg.worker_token.is_some(),
    };
    let headers = req.headers();
    // A Host that is not UTF-8 is no name of ours: "" matches nothing.
    let host = match headers.get(header::HOST) {
        Some(v) => Some(std::str::from_utf8(v.as_bytes()).unwrap_or("")),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    if !authenticated {
        // No Host at all is no browser (every browser sends one), so no rebinding.
        if let Some(host) = host {
            let local = req.extensions().get::<ConnInfo>().map(|c| c.local);
            if !is_own_host(&cfg.browser, local, host) {
                return Err(Refusal::Host(clip(host)));
            }
        }
    }
    // The console's files are public and hold no data: a link from another site may open it
    // (its own calls to the API are same-origin, checked like any other).
    let console_read = area == Area::Other
        && matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD)
        && (req.uri().path() == "/console" || req.uri().path().starts_with("/console/"));
    if !console_read {
        check_origin(&cfg.browser, headers, host)?;
    }
    if !req.method().is_safe()
        && matches!(area, Area::Native | Area::Aws)
        && !is_invoke(area, req.uri().path())
    {
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            let ct = String::from_utf8_lossy(ct.as_bytes());
            if is_cors_simple(&ct) {
                return Err(Refusal::ContentType(clip(&ct)));
            }
        }
    }
    Ok(())
}

/// Whether `host` (a Host header) names this server: the address the connection arrived at,
/// localhost, 127.0.0.1 or [::1] on the port it arrived at (or no port when that is 80), or a
/// `--public-host`. Without the connection's address only public hosts are accepted.
fn is_own_host(policy: &BrowserPolicy, local: Option<SocketAddr>, host: &str) -> bool {
    let Some((name, port)) = split_host_port_ref(host) else { return false };
    if let Some(local) = local {
        let port_matches = port == Some(local.port()) || (port.is_none() && local.port() == 80);
        let is_local_name = match name {
            HostRef::Ip(ip) => {
                ip == local.ip()
                    || ip == IpAddr::V4(Ipv4Addr::LOCALHOST)
                    || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
            HostRef::Name(n) => n.eq_ignore_ascii_case("localhost"),
        };
        if port_matches && is_local_name {
            return true;
        }
    }
    policy.is_public_host(name, port)
}

/// An `Origin` must be this server's own (its host and port are the request's Host) or an
/// allowed one; without an `Origin`, a `Sec-Fetch-Site` of another site is refused too (a
/// browser omits Origin on no-cors GETs and navigations).
fn check_origin(policy: &BrowserPolicy, headers: &HeaderMap, host: Option<&str>) -> Result<(), Refusal> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .zip(host)
            .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
        if same || policy.allows_origin(&origin) {
            return Ok(());
        }
        return Err(Refusal::Origin(clip(&origin)));
    }
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        Some(b"cross-site" | b"same-site") => Err(Refusal::Origin("a page of another site".into())),
        Some(_) | None => Ok(()),
    }
}

impl Refusal {
    fn into_response(self, area: Area) -> Response {
        let (status, code, aws_exception, message) = match self {
            Refusal::Host(host) => (
                StatusCode::FORBIDDEN,
                "ForbiddenHost",
                "AccessDeniedException",
                format!(
                    "Host {host:?} is not a name of this server: without a token it answers only to its own address and localhost (start it with --public-host NAME to answer to another name)"
                ),
            ),
            Refusal::Origin(origin) => (
                StatusCode::FORBIDDEN,
                "ForbiddenOrigin",
                "AccessDeniedException",
                format!(
                    "requests from web pages of {origin} are refused (start the server with --allow-origin ORIGIN to allow one)"
                ),
            ),
            Refusal::ContentType(ct) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "UnsupportedMediaTypeException",
                format!(
                    "content type {ct:?} is refused here: browsers send it from any site without asking; send application/json"
                ),
            ),
        };
        match area {
            Area::Aws => AwsError::new(status, aws_exception, message).into_response(),
            Area::Native | Area::Internal | Area::Other | Area::Public | Area::Url => {
                ApiError { status, code, message }.into_response()
            }
        }
    }
}

/// Whether every request runs in a span naming its request id (`--log-format json` turns it
/// on; off, the hot path pays nothing for it).
pub static REQUEST_SPANS: AtomicBool = AtomicBool::new(false);

/// A span per request with its request id: the caller's `X-Request-Id` when it is a sane one
/// (1-128 of `[A-Za-z0-9._:-]`), else a new one; answered back in `X-Request-Id`. Every log line
/// written while the request is served carries it.
pub(crate) async fn request_span(req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    if !REQUEST_SPANS.load(Ordering::Relaxed) {
        return next.run(req).await;
    }
    let given = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| {
        (1..=128).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    });
    let id = given.map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    let span =
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The browser guard, outermost on every route: refuses before authentication and before any
/// body is read.
/// Whether [`guard`] passes `req` on to the API's routes (not a function URL's host, and
/// every check of its area passed).
pub(crate) fn admits(state: &AppState, req: &Request) -> bool {
    crate::url::host_based_id(state, req).is_none()
        && check(&state.cfg, Area::of(req.uri().path()), req).is_ok()
}

pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // A function URL's host (`--url-domain`): the whole request is the function's.
    if let Some(id) = crate::url::host_based_id(&state, &req) {
        return crate::url::serve_host(state, id, req).await;
    }
    let area = Area::of(req.uri().path());
    match check(&state.cfg, area, &req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            let resp = refusal.into_response(area);
            if area == Area::Aws {
                crate::aws::with_request_id(resp).await
            } else {
                resp
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(token: Option<&str>, origins: &[&str], hosts: &[&str]) -> ApiConfig {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ApiConfig {
            token: token.map(Arc::from),
            browser: Arc::new(BrowserPolicy::new(&own(origins), &own(hosts)).unwrap()),
            ..ApiConfig::default()
        }
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut r = b.body(Body::empty()).unwrap();
        r.extensions_mut().insert(ConnInfo { local: "127.0.0.1:8080".parse().unwrap(), peer: None });
        r
    }

    fn verdict(cfg: &ApiConfig, r: &Request) -> Result<(), Refusal> {
        check(cfg, Area::of(r.uri().path()), r)
    }

    #[test]
    fn areas_and_invoke_endpoints() {
        assert_eq!(Area::of("/healthz"), Area::Public);
        assert_eq!(Area::of("/healthz/x"), Area::Other);
        assert_eq!(Area::of("/v1/functions"), Area::Native);
        assert_eq!(Area::of("/2015-03-31/functions"), Area::Aws);
        assert_eq!(Area::of("/2019-09-25/functions/f/event-invoke-config"), Area::Aws);
        assert_eq!(Area::of("/internal/v1/snapshot"), Area::Internal);
        assert_eq!(Area::of("/nope"), Area::Other);
        assert!(is_invoke(Area::Native, "/v1/functions/f/invoke"));
        assert!(is_invoke(Area::Aws, "/2015-03-31/functions/f/invocations"));
        assert!(!is_invoke(Area::Aws, "/2015-03-31/functions"));
        assert!(!is_invoke(Area::Native, "/v1/functions/f/invoke/x"));
        assert!(!is_invoke(Area::Native, "/v1/functions//invoke"));
    }

    #[test]
    fn hosts() {
        let p =
            BrowserPolicy::new(&[], &["gust.example.com".into(), "proxy.local:9000".into(), "[::2]".into()])
                .unwrap();
        let local = Some("127.0.0.1:8080".parse().unwrap());
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "gust.example.com",
            "GUST.example.com:443",
            "proxy.local:9000",
            "[::2]:1",
        ] {
            assert!(is_own_host(&p, local, ok), "{ok}");
        }
        for bad in [
            "evil.com:8080",
            "localhost:8081",
            "127.0.0.1",
            "127.0.0.2:8080",
            "proxy.local:9001",
            "proxy.local",
            "",
            "a b",
            "[::1",
            "localhost:99999",
            "localhost:+80",
        ] {
            assert!(!is_own_host(&p, local, bad), "{bad}");
        }
        assert!(is_own_host(&p, Some("127.0.0.1:80".parse().unwrap()), "localhost"));
        // Without the connection's address only the operator's names count.
        assert!(!is_own_host(&p, None, "127.0.0.1:8080"));
        assert!(is_own_host(&p, None, "gust.example.com:1"));
        assert!(BrowserPolicy::new(&[], &["bad host".into()]).is_err());
    }

    #[test]
    fn origins_normalize() {
        assert_eq!(
            normalize_origin("HTTPS://Console.Example.com:443/").as_deref(),
            Some("https://console.example.com")
        );
        assert_eq!(normalize_origin("http://[::1]:3000").as_deref(), Some("http://[::1]:3000"));
        for bad in ["*", "null", "console.example.com", "https://x/path", "ftp://x", "https://u@x"] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_browser_checks() {
        let open = cfg(None, &["https://console.example.com"], &[]);
        let host = ("host", "127.0.0.1:8080");
        // CLI-style requests pass.
        assert_eq!(verdict(&open, &req("GET", "/v1/functions", &[host])), Ok(()));
        assert_eq!(
            verdict(&open, &req("POST", "/v1/functions", &[host, ("content-type", "application/json")])),
            Ok(())
        );
        assert_eq!(verdict(&open, &req("GET", "/v1/functions", &[])), Ok(()));
        // DNS rebinding.
        assert!(matches!(
            verdict(&open, &req("GET", "/v1/functions", &[("host", "evil.com:8080")])),
            Err(Refusal::Host(_))
        ));
        assert!(matches!(
            verdict(&open, &req("GET", "/2015-03-31/functions", &[("host", "evil.com:8080")])),
            Err(Refusal::Host(_))
        ));
        // Public endpoints answer any Host and Origin.
        assert_eq!(
            verdict(&open, &req("GET", "/healthz", &[("host", "lb"), ("origin", "https://evil.com")])),
            Ok(())
        );
        // Foreign origins, on reads and writes; same origin and allowed origins pass.
        let evil = ("origin", "https://evil.com");
        assert!(matches!(
            verdict(&open, &req("GET", "/v1/functions", &[host, evil])),
            Err(Refusal::Origin(_))
        ));
        assert!(matches!(
            verdict(&open, &req("POST", "/v1/functions/f/invoke", &[host, evil])),
            Err(Refusal::Origin(_))
        ));
        assert!(matches!(
            verdict(&open, &req("GET", "/v1/functions", &[host, ("origin", "null")])),
            Err(Refusal::Origin(_))
        ));
        assert_eq!(
            verdict(&open, &req("POST", "/v1/functions", &[host, ("origin", "http://127.0.0.1:8080")])),
            Ok(())
        );
        assert_eq!(
            verdict(&open, &req("POST", "/v1/functions", &[host, ("origin", "https://console.example.com")])),
            Ok(())
        );
        assert!(matches!(
            verdict(&open, &req("GET", "/v1/functions", &[host, ("sec-fetch-site", "cross-site")])),
            Err(Refusal::Origin(_))
        ));
        assert_eq!(verdict(&open, &req("GET", "/v1/functions", &[host, ("sec-fetch-site", "none")])), Ok(()));
        // Simple content types on JSON endpoints, not on invoke, not on reads.
        let text = ("content-type", "text/plain;charset=UTF-8");
        assert!(matches!(
            verdict(&open, &req("POST", "/2015-03-31/functions", &[host, text])),
            Err(Refusal::ContentType(_))
        ));
        assert!(matches!(
            verdict(
                &open,
                &req("PUT", "/v1/functions/f", &[host, ("content-type", "multipart/form-data; boundary=x")])
            ),
            Err(Refusal::ContentType(_))
        ));
        assert_eq!(verdict(&open, &req("POST", "/v1/functions/f/invoke", &[host, text])), Ok(()));
        assert_eq!(
            verdict(&open, &req("POST", "/2015-03-31/functions/f/invocations", &[host, text])),
            Ok(())
        );
        assert_eq!(verdict(&open, &req("GET", "/v1/functions", &[host, text])), Ok(()));
        // With a token the Host check is the auth layer's job; Origin still applies.
        let locked = cfg(Some("T"), &[], &[]);
        assert_eq!(verdict(&locked, &req("GET", "/v1/functions", &[("host", "gust.internal:8080")])), Ok(()));
        assert!(matches!(
            verdict(&locked, &req("GET", "/v1/functions", &[("host", "gust.internal:8080"), evil])),
            Err(Refusal::Origin(_))
        ));
        assert_eq!(
            verdict(
                &locked,
                &req(
                    "GET",
                    "/v1/functions",
                    &[("host", "gust.internal:8080"), ("origin", "http://gust.internal:8080")]
                )
            ),
            Ok(())
        );
    }
}
