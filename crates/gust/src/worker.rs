//! `gust worker`: a remote worker. It speaks only to a gust server (the worker protocol under
//! `/internal/v1`), never to the database: heartbeats its state, polls for invocations placed
//! on it, runs each with the deployment it came with (pulling code it lacks, verified by
//! sha256), renews their leases while they run, and completes with the attempt epoch. A
//! completion the server refuses as fenced is dropped; one it had already taken (the report
//! sent again after a lost reply: `already_completed`) is done, like an accepted one.
//!
//! Identity: it acts as one worker id with its own secret. With `--worker-token` (the
//! server's enrollment token) it enrolls at start and gets a fresh id `NAME-RANDOM` and a
//! secret it keeps in memory only (a restart enrolls anew); with `--secret-file` it runs as the
//! provisioned worker `--name`. A credential the server stops accepting (revoked, expired)
//! ends the worker with an error.
//!
//! On SIGTERM (or SIGINT) it stops polling and reports no free capacity, lets its attempts
//! finish within `--shutdown-grace` (completing them as usual), then stops renewing and
//! releases (hands back) the ones still running, whose results it then drops: the server
//! queues them again at once. A second signal cuts the grace short.
//!
//! Every message is a type of `gust_core::protocol`, the one definition the server uses too.
//! The first heartbeat's reply says which protocol version the server speaks: a version this
//! worker does not know ends it with an error before it runs anything (and later, if the
//! server is replaced by one of another release).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use gust_core::limits::DEFAULT_LEASE_MS;
use gust_core::protocol::{
    self, Assignment, Attempt, AttemptsReply, AttemptsRequest, CompleteReply, CompleteRequest,
    CompletionsReply, CompletionsRequest, EnrollRequest, ErrorReply, Heartbeat, HeartbeatReply,
    IssuedCredential, PollReply, PollRequest, ReplyError, SnapshotReply, Verdict, WorkerCall,
};
use gust_core::{ErrorKind, Runtime, WorkerId};
use gust_runtime::sandbox::Isolation;
use gust_runtime::Status;
use gust_worker::{ArtifactSource, Worker, WorkerConfig, DEFAULT_IDLE_TTL, DEFAULT_MAX_CONCURRENCY};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::host::{HostRuntimes, RuntimeOpts};
use crate::node::{ShutdownSignals, DEFAULT_SHUTDOWN_GRACE_S, FORCED_SHUTDOWN_PATIENCE};

#[derive(clap::Args, Debug)]
pub struct WorkerOpts {
    /// The gust server to join.
    #[arg(long, env = "GUST_SERVER")]
    pub server: String,
    /// The server's enrollment token (`gust server --worker-token`): the worker enrolls with
    /// it and gets its own id (NAME-RANDOM) and secret.
    #[arg(
        long,
        env = "GUST_WORKER_TOKEN",
        hide_env_values = true,
        required_unless_present = "secret_file",
        conflicts_with = "secret_file"
    )]
    pub worker_token: Option<String>,
    /// A file holding a provisioned worker secret (`gust workers create NAME`, its first
    /// line): the worker runs as worker NAME (`--name`) without the enrollment token.
    #[arg(long, env = "GUST_WORKER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Invocations this worker runs at once (1 to 10,000).
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENCY, value_parser = parse_capacity)]
    pub capacity: usize,
    /// Where compiled modules are cached.
    #[arg(long, default_value = "./.gust-worker")]
    pub data_dir: PathBuf,
    /// The worker's name: an enrolled worker's id is NAME-RANDOM; with `--secret-file`, the
    /// id is NAME itself.
    #[arg(long, default_value = "worker")]
    pub name: String,
    #[command(flatten)]
    pub runtimes: RuntimeOpts,
    /// Append one line per attempt event to this file (start, accepted, fenced): an audit
    /// trail for operators and for the chaos test.
    #[arg(long)]
    pub attempt_log: Option<PathBuf>,
    /// Isolation of process functions: strict (namespaces and a non-root user, or refuse to
    /// start), best-effort (what this host allows, warning about the rest) or none.
    #[arg(long, env = "GUST_ISOLATION", default_value = "best-effort")]
    pub isolation: Isolation,
    /// Let wasi:http components' outgoing requests (to hosts their function allows) reach
    /// loopback and private addresses too; by default public addresses only.
    #[arg(long, env = "GUST_ALLOW_PRIVATE_OUTBOUND")]
    pub allow_private_outbound: bool,
    /// Seconds a SIGTERM (or SIGINT) waits for running attempts to finish before handing
    /// back the rest; a second signal cuts it short.
    #[arg(long, env = "GUST_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE_S)]
    pub shutdown_grace: u64,
    /// A CA certificate (PEM) to trust for an https:// server, besides the system's roots.
    #[arg(long, env = "GUST_CA")]
    pub ca: Option<PathBuf>,
    /// How often cached code the server no longer names is collected, in milliseconds (for
    /// tests).
    #[arg(long, hide = true, default_value_t = gust_service::gc::DEFAULT_GC_INTERVAL.as_millis() as u64)]
    pub gc_interval_ms: u64,
    /// How long unused cached code survives before it is collected, in milliseconds (for tests).
    #[arg(long, hide = true, default_value_t = gust_service::gc::DEFAULT_GC_GRACE.as_millis() as u64)]
    pub gc_grace_ms: u64,
    /// Serve `/healthz`, `/readyz` and `/metrics` (Prometheus) on this address, e.g.
    /// `127.0.0.1:9464` (off by default; the figures hold no payloads or secrets, but bind it
    /// where only the monitoring can reach it).
    #[arg(long, env = "GUST_WORKER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Export traces (OpenTelemetry, OTLP over HTTP with JSON) to this collector, e.g.
    /// `http://127.0.0.1:4318`: spans of each attempt (invocation, queue, init, run), in the
    /// caller's trace when it sent `traceparent` or `X-Amzn-Trace-Id`. Off by default.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "gust")]
    pub otlp_service_name: String,
    /// How logs are written to stderr: text, or one JSON object per line.
    #[arg(long, env = "GUST_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: crate::node::LogFormat,
}

struct Conn {
    http: reqwest::Client,
    base: String,
    /// This worker's own secret (never the enrollment token).
    token: String,
}

impl Conn {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// The control-plane functions named for this worker whose `$LATEST` changed after
    /// snapshot version `since` (0: all of them).
    async fn snapshot(&self, since: u64) -> reqwest::Result<SnapshotReply> {
        let path = format!("{}?since={since}", protocol::SNAPSHOT_PATH);
        self.get(&path).send().await?.error_for_status()?.json().await
    }
}

/// Exponentially growing pauses between tries of a call the server did not answer.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first, max }
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

/// The first and longest pause between tries of enrolling or the first heartbeat while the
/// server is unreachable, and of a completion while it is.
const STARTUP_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
const COMPLETION_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));
/// The same for fetching code, within [`ARTIFACT_FETCH_PATIENCE`].
const ARTIFACT_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));
/// Longest a request to the server may take (a poll waits at most [`protocol::MAX_POLL_WAIT`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the poll loop waits for a free slot before it looks again.
const FULL_PAUSE: Duration = Duration::from_millis(5);
/// How long the poll loop waits after a failed or refused poll.
const POLL_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Code from the server, verified against its sha256 before use.
struct ServerArtifacts(Arc<Conn>);

/// How long a worker keeps trying to fetch code while its server is unreachable, before the
/// attempt fails with an init error.
const ARTIFACT_FETCH_PATIENCE: Duration = Duration::from_secs(10);

#[async_trait]
impl ArtifactSource for ServerArtifacts {
    async fn artifact(&self, sha256: &str) -> Result<Bytes, String> {
        let deadline = tokio::time::Instant::now() + ARTIFACT_FETCH_PATIENCE;
        let mut backoff = Backoff::new(ARTIFACT_BACKOFF.0, ARTIFACT_BACKOFF.1);
        loop {
            match self.fetch(sha256).await {
                Ok(bytes) => return Ok(bytes),
                Err((retryable, e)) if !retryable || tokio::time::Instant::now() >= deadline => {
                    return Err(e)
                }
                Err((_, e)) => {
                    tracing::warn!(%sha256, error = %e, "fetching code failed; retrying");
                    backoff.pause().await;
                }
            }
        }
    }
}

impl ServerArtifacts {
    /// One fetch; the error says whether trying again could help.
    async fn fetch(&self, sha256: &str) -> Result<Bytes, (bool, String)> {
        let path = format!("{}/{sha256}", protocol::ARTIFACTS_PATH);
        let resp = self.0.get(&path).send().await.map_err(|e| (true, e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err((status.is_server_error(), format!("artifact {sha256}: HTTP {status}")));
        }
        let bytes = resp.bytes().await.map_err(|e| (true, e.to_string()))?;
        verify(sha256, bytes).map_err(|e| (false, e))
    }
}

fn verify(sha256: &str, bytes: Bytes) -> Result<Bytes, String> {
    if hex::encode(Sha256::digest(&bytes)) != sha256 {
        return Err(format!("artifact {sha256} failed verification"));
    }
    Ok(bytes)
}

struct State {
    conn: Arc<Conn>,
    worker: Arc<Worker>,
    id: String,
    capacity: usize,
    /// The runtime families this worker can run (reported in every heartbeat).
    runtimes: Vec<Runtime>,
    active: AtomicUsize,
    /// Attempts running.
    running: Mutex<HashSet<Attempt>>,
    /// Attempts released at shutdown while still executing: their results are dropped. Lock
    /// order: `running`, then this.
    handed_back: Mutex<HashSet<Attempt>>,
    /// Held by the renew loop across one renewal, so a renewal never races a release.
    renewing: tokio::sync::Mutex<()>,
    /// Set once shutdown begins: no more polls, no free capacity reported.
    draining: AtomicBool,
    /// Sends a heartbeat at once (shutdown begins).
    heartbeat_now: tokio::sync::Notify,
    /// Woken whenever an attempt ends.
    attempt_ended: tokio::sync::Notify,
    /// Notified when the worker cannot go on (the server refuses its credential, or speaks
    /// a protocol version it does not know): it stops, with the reason in `fatal_reason`.
    fatal: tokio::sync::Notify,
    fatal_reason: Mutex<Option<String>>,
    /// Completions the server had already taken (a reply lost, the report sent again).
    repeated_completions: AtomicU64,
    /// Completions to report, sent together by [`completion_loop`].
    outbox: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    /// Set when the server answers the batched call with 404 (a server older than it):
    /// completions are then sent one by one.
    single_completions: AtomicBool,
    revision: AtomicU64,
    snapshot: AtomicU64,
    lease_ms: AtomicU64,
    attempt_log: Option<Mutex<std::fs::File>>,
    /// When the server last answered a heartbeat (ms since the epoch; 0: never).
    last_heartbeat_ok: AtomicU64,
}

impl State {
    fn log_attempt(&self, event: &str, (id, epoch): &Attempt) {
        if let Some(f) = &self.attempt_log {
            // One write per line, so concurrent appends never interleave.
            let line = format!("{event} {id} {epoch} {}\n", self.id);
            let _ = f.lock().write_all(line.as_bytes());
        }
    }

    fn path(&self, call: WorkerCall) -> String {
        call.path(&self.id)
    }

    /// Stops the worker with `reason`.
    fn fail(&self, reason: String) {
        tracing::error!("{reason}");
        *self.fatal_reason.lock() = Some(reason);
        self.fatal.notify_one();
    }
}

pub fn run(opts: WorkerOpts) -> anyhow::Result<()> {
    crate::node::init_tracing(opts.log_format);
    if opts.capacity == 0 {
        bail!("--capacity must be at least 1");
    }
    let data_dir = crate::host::resolve_dir(&opts.data_dir, "--data-dir")?;
    let host = HostRuntimes::detect(&opts.runtimes)?;
    host.log();
    let sandbox = crate::node::sandbox(opts.isolation, &data_dir, &host)?;
    let mut cfg = crate::node::worker_config(opts.capacity, DEFAULT_IDLE_TTL, &data_dir, &host, sandbox);
    cfg.wasm.allow_private_outbound = opts.allow_private_outbound;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let served = rt.block_on(serve(opts, cfg));
    // Attempts handed back at shutdown may still be executing: they are dropped, not awaited.
    rt.shutdown_timeout(FORCED_SHUTDOWN_PATIENCE);
    served
}

/// The client of the worker protocol: trusts `--ca` besides the system's roots, and warns when
/// the worker token and code would cross a network in clear text.
fn http_client(opts: &WorkerOpts) -> anyhow::Result<reqwest::Client> {
    if crate::client_tls::is_plain_http_beyond_loopback(&opts.server) {
        tracing::warn!(server = %opts.server, "the server is reached over plain HTTP beyond loopback: the worker token, code and payloads cross the network unencrypted; use an https:// URL");
    }
    let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
    if let Some(ca) = &opts.ca {
        for cert in crate::client_tls::load_ca(ca).map_err(anyhow::Error::msg)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Why the server refused a call: the message of its error reply.
async fn refusal(r: reqwest::Response) -> String {
    match r.json::<ErrorReply>().await {
        Ok(reply) => reply.error.message,
        Err(_) => "no reason given".to_string(),
    }
}

/// Sends a call until the server answers it (waiting for an unreachable or failing server):
/// its successful reply, or an error naming `refused` for a refusal (a 4xx).
async fn until_answered<F, Fut>(
    base: &str, what: &str, refused: &str, send: F,
) -> anyhow::Result<reqwest::Response>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let mut backoff = Backoff::new(STARTUP_BACKOFF.0, STARTUP_BACKOFF.1);
    loop {
        match send().await {
            Ok(r) if r.status().is_success() => return Ok(r),
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                bail!("{refused}: HTTP {status}: {}", refusal(r).await);
            }
            Ok(r) => tracing::warn!(status = %r.status(), "{what} failed; retrying"),
            Err(e) => {
                let error = crate::client_tls::transport_error(base, &e);
                tracing::warn!(%error, "{what} failed; retrying")
            }
        }
        backoff.pause().await;
    }
}

/// The worker id and secret this worker acts with: enrolled now with the enrollment token
/// (waiting for an unreachable server), or provisioned (`--secret-file`, id `--name`).
async fn credential(
    opts: &WorkerOpts, http: &reqwest::Client, base: &str,
) -> anyhow::Result<(String, String)> {
    if let Some(path) = &opts.secret_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the worker secret from {}", path.display()))?;
        let secret = text.lines().next().unwrap_or("").trim().to_string();
        if secret.is_empty() {
            bail!("{} holds no worker secret", path.display());
        }
        return Ok((opts.name.clone(), secret));
    }
    let Some(token) = &opts.worker_token else { bail!("give --worker-token or --secret-file") };
    let request = EnrollRequest { name: opts.name.clone() };
    let url = format!("{base}{}", protocol::ENROLL_PATH);
    let send = || http.post(&url).bearer_auth(token).json(&request).send();
    let r = until_answered(base, "enrolling", "the server refused to enroll this worker", send).await?;
    let issued: IssuedCredential = r.json().await.context("reading the enrollment reply")?;
    Ok((issued.id, issued.secret))
}

/// Tells the server this worker stops for good (an enrolled credential ends with it). Best
/// effort: an enrolled credential also expires on its own.
async fn deregister(s: &State, patience: Duration) {
    let path = s.path(WorkerCall::Deregister);
    match tokio::time::timeout(patience, s.conn.post(&path).send()).await {
        Ok(Ok(r)) if r.status().is_success() => {}
        Ok(Ok(r)) => tracing::warn!(status = %r.status(), "deregistering refused"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot deregister"),
        Err(_) => tracing::warn!("deregistering timed out"),
    }
}

/// How long releasing the attempts still running at the end of the grace may take (the
/// server may be unreachable: then their leases expire instead); after a second signal,
/// [`FORCED_SHUTDOWN_PATIENCE`].
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

async fn serve(opts: WorkerOpts, cfg: WorkerConfig) -> anyhow::Result<()> {
    let http = http_client(&opts)?;
    let base = opts.server.trim_end_matches('/').to_string();
    let (id, token) = credential(&opts, &http, &base).await?;
    let conn = Arc::new(Conn { http, base, token });
    let runtimes = cfg.runtimes.clone();
    let worker = Worker::new(cfg, Arc::new(ServerArtifacts(conn.clone()))).context("starting the worker")?;
    if let Some(endpoint) = &opts.otlp_endpoint {
        let client = reqwest::Client::builder().build().context("the OTLP client")?;
        worker.export_spans_to(crate::otlp::start(endpoint, &opts.otlp_service_name, client));
    }
    let attempt_log = match &opts.attempt_log {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new().create(true).append(true).open(p).context("opening --attempt-log")?,
        )),
        None => None,
    };
    let (outbox, outgoing) = tokio::sync::mpsc::unbounded_channel();
    let state = Arc::new(State {
        conn,
        worker,
        id,
        capacity: opts.capacity,
        runtimes,
        active: AtomicUsize::new(0),
        running: Mutex::new(HashSet::new()),
        handed_back: Mutex::new(HashSet::new()),
        renewing: tokio::sync::Mutex::new(()),
        draining: AtomicBool::new(false),
        heartbeat_now: tokio::sync::Notify::new(),
        attempt_ended: tokio::sync::Notify::new(),
        fatal: tokio::sync::Notify::new(),
        fatal_reason: Mutex::new(None),
        repeated_completions: AtomicU64::new(0),
        outbox,
        single_completions: AtomicBool::new(false),
        // Heartbeat revisions start at the wall clock (ms), so those of a restarted worker
        // with a provisioned id outrank its previous run's (the server ignores older ones).
        revision: AtomicU64::new(unix_millis()),
        snapshot: AtomicU64::new(0),
        // Until the first heartbeat says the server's.
        lease_ms: AtomicU64::new(DEFAULT_LEASE_MS as u64),
        attempt_log,
        last_heartbeat_ok: AtomicU64::new(0),
    });
    // Bound before joining, so a taken port fails the start rather than later.
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?,
        ),
        None => None,
    };
    let signals = ShutdownSignals::install()?;
    // The first heartbeat proves the credential and the protocol version (a refusal ends the
    // worker here, clearly).
    first_heartbeat(&state).await?;
    tracing::info!(worker = %state.id, server = %state.conn.base, "gust worker started");
    crate::announce(format_args!("gust worker {} joined {}", state.id, state.conn.base));
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr()?;
        crate::announce(format_args!("gust worker metrics on http://{addr}/metrics"));
        tokio::spawn(serve_metrics(listener, state.clone()));
    }
    let heartbeat = tokio::spawn(heartbeat_loop(state.clone()));
    let renew = tokio::spawn(renew_loop(state.clone()));
    let mut poll = tokio::spawn(poll_loop(state.clone()));
    let completer = tokio::spawn(completion_loop(state.clone(), outgoing));
    let collector = tokio::spawn(collect_cache_forever(
        state.clone(),
        Duration::from_millis(opts.gc_interval_ms.max(10)),
        Duration::from_millis(opts.gc_grace_ms),
    ));
    tokio::select! {
        () = signals.received(1) => {}
        () = state.fatal.notified() => {
            poll.abort();
            renew.abort();
            heartbeat.abort();
            collector.abort();
            completer.abort();
            let reason = state.fatal_reason.lock().take().unwrap_or_default();
            bail!("{reason}");
        }
    }

    // Graceful shutdown: no more polls; what runs may finish within the grace.
    state.draining.store(true, Ordering::SeqCst);
    state.heartbeat_now.notify_one();
    tracing::info!(
        grace_s = opts.shutdown_grace,
        running = state.active.load(Ordering::SeqCst),
        "shutting down"
    );
    let drained = async {
        // A poll in flight ends within its wait; what it brings runs like the rest.
        let _ = (&mut poll).await;
        attempts_finished(&state).await;
    };
    let forced = signals.grace(drained, Duration::from_secs(opts.shutdown_grace)).await;
    poll.abort();
    {
        // Stop renewing (never mid-renewal), then hand back what still runs.
        let _round = state.renewing.lock().await;
        renew.abort();
    }
    let patience = if forced { FORCED_SHUTDOWN_PATIENCE } else { RELEASE_PATIENCE };
    let released = tokio::time::timeout(patience, release_running(&state)).await.unwrap_or(0);
    heartbeat.abort();
    collector.abort();
    completer.abort();
    deregister(&state, patience).await;
    let repeated_completions = state.repeated_completions.load(Ordering::Relaxed);
    tracing::info!(released, repeated_completions, "gust worker stopped");
    Ok(())
}

/// Connections the metrics listener holds at once (scrapers and probes need few).
const METRICS_MAX_CONNECTIONS: usize = 64;

/// A worker's own endpoints for its operators: `/healthz` (the process answers), `/readyz`
/// (it takes work: the server answered a heartbeat within two leases and it is not shutting
/// down) and `/metrics` (its load and the figures of the attempts it ran).
async fn serve_metrics(listener: tokio::net::TcpListener, s: Arc<State>) {
    use axum::response::IntoResponse;
    use axum::routing::get;
    let ready = |s: &State| {
        let last = s.last_heartbeat_ok.load(Ordering::SeqCst);
        let fresh = unix_millis().saturating_sub(last) <= 2 * s.lease_ms.load(Ordering::SeqCst);
        if s.draining.load(Ordering::SeqCst) {
            Err("shutting down")
        } else if last == 0 || !fresh {
            Err("the server has not answered a heartbeat recently")
        } else {
            Ok(())
        }
    };
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get({
                let s = s.clone();
                move || async move {
                    match ready(&s) {
                        Ok(()) => "ready".into_response(),
                        Err(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({ "error": { "code": "NotReady", "message": why } })),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                let mut out = String::new();
                let load = s.worker.load();
                let heartbeat_age = unix_millis().saturating_sub(s.last_heartbeat_ok.load(Ordering::SeqCst));
                let gauges = [
                    ("gust_worker_capacity", "Attempts this worker may run at once", s.capacity as u64),
                    ("gust_worker_running", "Attempts running on this worker", s.active.load(Ordering::SeqCst) as u64),
                    ("gust_worker_warm_environments", "Warm environments on this worker", load.warm_environments as u64),
                    ("gust_worker_snapshot_version", "The newest snapshot of the server's functions this worker knows", s.snapshot.load(Ordering::SeqCst)),
                    ("gust_worker_ready", "1 while the worker takes work (see /readyz), else 0", u64::from(ready(&s).is_ok())),
                    ("gust_worker_heartbeat_age_seconds", "Seconds since the server last answered a heartbeat", heartbeat_age / 1000),
                ];
                for (name, help, value) in gauges {
                    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"));
                }
                let name = "gust_worker_repeated_completions_total";
                out.push_str(&format!(
                    "# HELP {name} Completions the server had already taken (a reply lost, the report sent again)\n\
                     # TYPE {name} counter\n{name} {}\n",
                    s.repeated_completions.load(Ordering::Relaxed)
                ));
                s.worker.metrics().write(&mut out);
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
            }),
        );
    // Through the API's edge: slow or silent clients are timed out, connections capped.
    let limits = gust_api::ServeLimits {
        max_connections: METRICS_MAX_CONNECTIONS,
        // A scraper sends its request at once.
        header_read_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    if let Err(e) = gust_api::serve(listener, router, limits, None, std::future::pending()).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

/// Resolves once no attempt runs.
async fn attempts_finished(s: &State) {
    loop {
        let ended = s.attempt_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if s.active.load(Ordering::SeqCst) == 0 {
            return;
        }
        ended.await;
    }
}

/// Releases every attempt still running (their results will be dropped); returns how many
/// the server queued again. If the server cannot be reached, their leases expire instead.
async fn release_running(s: &State) -> usize {
    let attempts: Vec<Attempt> = {
        let mut running = s.running.lock();
        let mut handed_back = s.handed_back.lock();
        running
            .drain()
            .inspect(|a| {
                handed_back.insert(a.clone());
            })
            .collect()
    };
    if attempts.is_empty() {
        return 0;
    }
    let request = AttemptsRequest { attempts };
    let reply = match s.conn.post(&s.path(WorkerCall::Release)).json(&request).send().await {
        Ok(r) if r.status().is_success() => match r.json::<AttemptsReply>().await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "bad release reply");
                return 0;
            }
        },
        Ok(r) => {
            tracing::warn!(status = %r.status(), "the server refused the release; the leases will expire");
            return 0;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot release running attempts; their leases will expire");
            return 0;
        }
    };
    let mut released = 0;
    for ((attempt, verdict), why) in request.attempts.iter().zip(&reply.verdicts).zip(&reply.results) {
        if *verdict == Verdict::Accepted {
            released += 1;
            s.log_attempt("handed-back", attempt);
        } else {
            let (id, epoch) = attempt;
            tracing::info!(%id, epoch, ?verdict, why = why.as_deref().unwrap_or(""), "attempt not handed back");
        }
    }
    released
}

async fn send_heartbeat(s: &State) -> reqwest::Result<reqwest::Response> {
    let heartbeat = Heartbeat {
        id: WorkerId(s.id.clone()),
        revision: s.revision.fetch_add(1, Ordering::SeqCst) + 1,
        runtimes: s.runtimes.clone(),
        // Shutting down: no free slot, so nothing more is placed here.
        capacity: if s.draining.load(Ordering::SeqCst) { 0 } else { s.capacity as u32 },
        running: s.active.load(Ordering::SeqCst) as u32,
        warm: s.worker.warm_code().into_iter().take(protocol::MAX_WARM_REPORTED).collect(),
        snapshot_version: s.snapshot.load(Ordering::SeqCst),
    };
    s.conn.post(protocol::HEARTBEAT_PATH).json(&heartbeat).send().await
}

/// Heartbeats until the server answers: an unreachable server is waited for; a refusal (a
/// credential it does not accept, an id that is not the credential's) is an error, and so is
/// a protocol version this worker does not know. The server's lease is learnt here, before
/// any attempt runs (leases are renewed [`protocol::RENEWALS_PER_LEASE`] times per lease).
async fn first_heartbeat(s: &State) -> anyhow::Result<()> {
    let refused = format!("the server refused worker {}", s.id);
    let r = until_answered(&s.conn.base, "heartbeat", &refused, || send_heartbeat(s)).await?;
    let body = r.bytes().await.context("reading the heartbeat reply")?;
    let reply = HeartbeatReply::parse(&body).context("the heartbeat reply")?;
    s.lease_ms.store(reply.lease_ms, Ordering::SeqCst);
    s.last_heartbeat_ok.store(unix_millis(), Ordering::SeqCst);
    Ok(())
}

/// How often a worker repeats that the server keeps refusing its heartbeats or polls.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(30);

async fn heartbeat_loop(s: Arc<State>) {
    // A refusal that lasts (the server's disk is full: 507) is said once in a while.
    let refused = gust_store::space::LogEvery::new(REFUSAL_LOG_EVERY);
    loop {
        let mut every = protocol::HEARTBEAT_INTERVAL;
        match send_heartbeat(&s).await {
            Ok(r) if r.status().is_success() => {
                let reply = match r.bytes().await {
                    Ok(body) => HeartbeatReply::parse(&body),
                    Err(e) => Err(ReplyError::Malformed(e.to_string())),
                };
                match reply {
                    Ok(reply) => {
                        // Applying a snapshot is learning its version: deployments arrive with
                        // each assignment and code is pulled by sha256 on a miss. A newer
                        // version is reported back at once, so placement sees it within one
                        // round trip.
                        let before = s.snapshot.fetch_max(reply.snapshot_version, Ordering::SeqCst);
                        s.lease_ms.store(reply.lease_ms, Ordering::SeqCst);
                        s.last_heartbeat_ok.store(unix_millis(), Ordering::SeqCst);
                        every = reply.heartbeat_interval();
                        if reply.snapshot_version > before {
                            every = Duration::ZERO;
                            tokio::spawn(pull_snapshot(s.clone(), before));
                        }
                    }
                    // The server was replaced by one of another release: nothing it says can
                    // be trusted, and its leases expire the attempts running here.
                    Err(ReplyError::UnknownVersion(e)) => {
                        s.fail(e.to_string());
                        return;
                    }
                    Err(ReplyError::Malformed(e)) => tracing::warn!(error = %e, "bad heartbeat reply"),
                }
            }
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                tracing::error!("the server refused this worker's credential");
                s.fail(format!(
                    "the server no longer accepts worker {}'s credential (revoked, or expired after a long \
                     silence): its attempts will be recovered; start the worker again to enroll anew",
                    s.id
                ));
                return;
            }
            Ok(r) => {
                if let Some(held) = refused.allow() {
                    tracing::warn!(status = %r.status(), repeated = held, "heartbeat refused");
                }
            }
            Err(e) => {
                let error = crate::client_tls::transport_error(&s.conn.base, &e);
                tracing::warn!(%error, "heartbeat failed; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = s.heartbeat_now.notified() => {}
        }
    }
}

/// `--capacity`: what one worker may report (the server refuses more).
fn parse_capacity(s: &str) -> Result<usize, String> {
    let most = protocol::MAX_WORKER_CAPACITY;
    match s.parse::<usize>() {
        Ok(n) if (1..=most).contains(&n) => Ok(n),
        _ => Err(format!("the capacity is a number from 1 to {most}")),
    }
}

async fn renew_loop(s: Arc<State>) {
    loop {
        let lease = Duration::from_millis(s.lease_ms.load(Ordering::SeqCst));
        tokio::time::sleep(lease / protocol::RENEWALS_PER_LEASE).await;
        let _round = s.renewing.lock().await;
        let attempts: Vec<Attempt> = s.running.lock().iter().cloned().collect();
        if attempts.is_empty() {
            continue;
        }
        let request = AttemptsRequest { attempts };
        let reply = s.conn.post(&s.path(WorkerCall::Renew)).json(&request).send().await;
        let Ok(reply) = reply else { continue };
        let Ok(reply) = reply.json::<AttemptsReply>().await else { continue };
        for (id, epoch) in forget_lost(&mut s.running.lock(), &request, &reply) {
            tracing::warn!(%id, epoch, "lease lost: the attempt was fenced");
        }
    }
}

/// Stops renewing the attempts a renewal's reply says this worker lost (fenced, or not its
/// own): nothing it reports for them counts any more. Answers them.
fn forget_lost(
    running: &mut HashSet<Attempt>, request: &AttemptsRequest, reply: &AttemptsReply,
) -> Vec<Attempt> {
    let lost = request.attempts.iter().zip(&reply.verdicts).filter(|(_, v)| v.attempt_lost());
    lost.filter_map(|(attempt, _)| running.take(attempt)).collect()
}

async fn poll_loop(s: Arc<State>) {
    let path = s.path(WorkerCall::Poll);
    let refused = gust_store::space::LogEvery::new(REFUSAL_LOG_EVERY);
    loop {
        if s.draining.load(Ordering::SeqCst) {
            return;
        }
        let free = s.capacity.saturating_sub(s.active.load(Ordering::SeqCst));
        if free == 0 {
            tokio::time::sleep(FULL_PAUSE).await;
            continue;
        }
        let request = PollRequest { max: free, wait_ms: protocol::POLL_WAIT.as_millis() as u64 };
        let reply = s.conn.post(&path).json(&request).send().await;
        let assignments = match reply {
            Ok(r) if r.status().is_success() => match r.json::<PollReply>().await {
                Ok(p) => p.assignments,
                Err(e) => {
                    tracing::warn!(error = %e, "bad poll reply");
                    Vec::new()
                }
            },
            Ok(r) => {
                if let Some(held) = refused.allow() {
                    tracing::warn!(status = %r.status(), repeated = held, "poll refused");
                }
                tokio::time::sleep(POLL_RETRY_PAUSE).await;
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "poll failed; retrying");
                tokio::time::sleep(POLL_RETRY_PAUSE).await;
                Vec::new()
            }
        };
        for a in assignments {
            s.active.fetch_add(1, Ordering::SeqCst);
            s.running.lock().insert(a.attempt());
            tokio::spawn(run_assignment(s.clone(), a));
        }
    }
}

async fn run_assignment(s: Arc<State>, a: Assignment) {
    let attempt = a.attempt();
    s.log_attempt("start", &attempt);
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(&a.payload_b64).map(Bytes::from);
    let mut out = match payload {
        Ok(p) => {
            let qualifier = a.qualifier.clone().unwrap_or_else(|| a.deployment.resolved.label());
            let call = gust_core::lambda::CallContext {
                qualifier: &qualifier,
                client_context: a.client_context.as_deref(),
                stream: None,
                http: None,
                trace_id: a.trace_id.as_deref(),
                received_at: a.received_at,
                is_async: a.mode == gust_core::Mode::Async,
            };
            s.worker.execute(&a.deployment, &a.invocation_id.0, p, &call).await
        }
        Err(_) => gust_runtime::RunOutcome::new(
            Status::Failed { kind: ErrorKind::InitError, message: "the payload was not base64".into() },
            Bytes::new(),
            String::new(),
            Duration::ZERO,
        ),
    };
    let figures = gust_worker::report(&out, a.deployment.spec.memory_mb);
    let log = std::mem::take(&mut out.log);
    let (succeeded, result_b64, error) = match out.into_result() {
        Ok(stdout) => (true, Some(b64.encode(&stdout)), None),
        Err(error) => (false, None, Some(error)),
    };
    let report = CompleteRequest {
        invocation_id: a.invocation_id,
        epoch: a.epoch,
        succeeded,
        result_b64,
        error,
        log,
        report: Some(figures),
    };
    if s.handed_back.lock().remove(&attempt) {
        let (id, epoch) = &attempt;
        tracing::info!(%id, epoch, "the attempt was handed back at shutdown; result dropped");
        s.active.fetch_sub(1, Ordering::SeqCst);
        s.attempt_ended.notify_waiters();
        return;
    }
    let completed = report_completion(&s, report).await;
    s.log_attempt(completed.event(), &attempt);
    {
        let mut running = s.running.lock();
        running.remove(&attempt);
        s.handed_back.lock().remove(&attempt);
    }
    s.active.fetch_sub(1, Ordering::SeqCst);
    s.attempt_ended.notify_waiters();
}

/// What became of a completion: the server's verdict and, for one it took, whether the
/// invocation ended (rather than a retry being scheduled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Completed {
    verdict: Verdict,
    ended: bool,
}

impl Completed {
    /// What the attempt log records: whether this attempt's report ended the invocation
    /// (`accepted`) or scheduled a retry (`accepted-retry`), or was `fenced` or `refused`. A
    /// repeat of the accepted report (`already_completed`: the first reply was lost) is that
    /// same acceptance, which nothing logged yet.
    fn event(self) -> &'static str {
        match self.verdict {
            Verdict::Accepted | Verdict::AlreadyCompleted if self.ended => "accepted",
            Verdict::Accepted | Verdict::AlreadyCompleted => "accepted-retry",
            Verdict::Fenced => "fenced",
            Verdict::Forbidden | Verdict::Refused => "refused",
        }
    }
}

/// A completion waiting to be reported, and the attempt waiting for its verdict.
type Outgoing = (CompleteRequest, tokio::sync::oneshot::Sender<Completed>);

/// Most bytes of results and logs gathered into one batched call (one larger report goes
/// alone), well under the server's 9 MiB body limit.
const COMPLETION_BATCH_BYTES: usize = 4 << 20;

/// Reports an attempt's outcome through [`completion_loop`] and waits for its verdict.
async fn report_completion(s: &State, report: CompleteRequest) -> Completed {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.outbox.send((report, tx)).is_err() {
        return Completed { verdict: Verdict::Refused, ended: false };
    }
    // The loop ends only with the worker (it answers every report it takes).
    rx.await.unwrap_or(Completed { verdict: Verdict::Refused, ended: false })
}

/// Sends completions as they come, one call at a time: what finished while a call was in
/// flight goes in the next one, so a busy worker makes one call per batch rather than one per
/// invocation, while a lone completion leaves at once.
async fn completion_loop(s: Arc<State>, mut outgoing: tokio::sync::mpsc::UnboundedReceiver<Outgoing>) {
    let mut carried: Option<Outgoing> = None;
    loop {
        let first = match carried.take() {
            Some(next) => next,
            None => match outgoing.recv().await {
                Some(next) => next,
                None => return,
            },
        };
        let mut bytes = report_bytes(&first.0);
        let mut batch = vec![first];
        while batch.len() < protocol::MAX_COMPLETIONS_PER_CALL {
            let Ok(next) = outgoing.try_recv() else { break };
            bytes += report_bytes(&next.0);
            if bytes > COMPLETION_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            batch.push(next);
        }
        let (reports, waiting): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let verdicts = complete_all(&s, reports).await;
        for (waiter, completed) in waiting.into_iter().zip(verdicts) {
            let _ = waiter.send(completed);
        }
    }
}

fn report_bytes(r: &CompleteRequest) -> usize {
    r.result_b64.as_ref().map_or(0, String::len) + r.log.len() + 256
}

/// Reports outcomes in one call, retrying while the server is unreachable or failing: a
/// completion is idempotent per epoch (a repeat of the accepted one answers
/// `already_completed`, which is just as done), and one whose lease expired meanwhile is
/// refused as fenced. Answers a verdict per report, in order.
async fn complete_all(s: &State, reports: Vec<CompleteRequest>) -> Vec<Completed> {
    if s.single_completions.load(Ordering::Relaxed) {
        let mut verdicts = Vec::with_capacity(reports.len());
        for report in &reports {
            verdicts.push(complete(s, report).await);
        }
        return verdicts;
    }
    let path = s.path(WorkerCall::Completions);
    let request = CompletionsRequest { completions: reports };
    let n = request.completions.len();
    let mut backoff = Backoff::new(COMPLETION_BACKOFF.0, COMPLETION_BACKOFF.1);
    loop {
        match s.conn.post(&path).json(&request).send().await {
            Ok(r) if r.status().is_success() => {
                let replies = match r.json::<CompletionsReply>().await {
                    Ok(reply) if reply.replies.len() == n => reply.replies,
                    // Taken (a 2xx), though what followed is unknown.
                    _ => return vec![Completed { verdict: Verdict::Accepted, ended: false }; n],
                };
                return request
                    .completions
                    .iter()
                    .zip(replies)
                    .map(|(report, reply)| {
                        let (id, epoch) = (&report.invocation_id, report.epoch);
                        match reply.verdict {
                            Verdict::AlreadyCompleted => {
                                s.repeated_completions.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(%id, epoch, "completion already taken (an earlier reply was lost)");
                            }
                            Verdict::Fenced | Verdict::Forbidden | Verdict::Refused => {
                                tracing::warn!(%id, epoch, verdict = ?reply.verdict, "completion refused; result dropped");
                            }
                            Verdict::Accepted => {}
                        }
                        let ended = reply.state.is_some_and(|state| state.is_terminal());
                        Completed { verdict: reply.verdict, ended }
                    })
                    .collect();
            }
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                tracing::info!("the server takes completions one by one (an older release)");
                s.single_completions.store(true, Ordering::Relaxed);
                return Box::pin(complete_all(s, request.completions)).await;
            }
            Ok(r) if r.status().is_client_error() => {
                let verdict = match r.json::<ErrorReply>().await {
                    Ok(refusal) => Verdict::of_refusal(refusal.error.code),
                    Err(_) => Verdict::Refused,
                };
                tracing::warn!(n, ?verdict, "completions refused; results dropped");
                return vec![Completed { verdict, ended: false }; n];
            }
            Ok(_) | Err(_) => backoff.pause().await,
        }
    }
}

/// Reports one attempt's outcome (to a server without batched completions), retrying while
/// the server is unreachable, as [`complete_all`] does.
async fn complete(s: &State, report: &CompleteRequest) -> Completed {
    let path = s.path(WorkerCall::Complete);
    let (id, epoch) = (&report.invocation_id, report.epoch);
    let mut backoff = Backoff::new(COMPLETION_BACKOFF.0, COMPLETION_BACKOFF.1);
    loop {
        match s.conn.post(&path).json(report).send().await {
            Ok(r) if r.status().is_success() => {
                let Ok(reply) = r.json::<CompleteReply>().await else {
                    // Taken (a 2xx), though what followed is unknown.
                    return Completed { verdict: Verdict::Accepted, ended: false };
                };
                if reply.verdict == Verdict::AlreadyCompleted {
                    s.repeated_completions.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%id, epoch, "completion already taken (an earlier reply was lost)");
                }
                return Completed { verdict: reply.verdict, ended: reply.state.is_terminal() };
            }
            Ok(r) if r.status().is_client_error() => {
                let verdict = match r.json::<ErrorReply>().await {
                    Ok(refusal) => Verdict::of_refusal(refusal.error.code),
                    Err(_) => Verdict::Refused,
                };
                tracing::warn!(%id, epoch, ?verdict, "completion refused; result dropped");
                return Completed { verdict, ended: false };
            }
            Ok(_) | Err(_) => backoff.pause().await,
        }
    }
}

/// Collects cached code (task roots, compiled modules) that the server no longer names for
/// this worker (its whole snapshot: the `$LATEST` code of the functions of its runtimes) and
/// that nothing here used within the grace; code of work it runs is in use meanwhile. A round
/// whose snapshot cannot be read collects nothing.
async fn collect_cache_forever(s: Arc<State>, interval: Duration, grace: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Ok(snapshot) = s.conn.snapshot(0).await else {
            tracing::debug!("cache collection skipped: the snapshot could not be read");
            continue;
        };
        let keep: HashSet<String> = snapshot.functions.into_iter().filter_map(|f| f.code_sha256).collect();
        let c = crate::node::collect_cache(s.worker.clone(), keep, grace).await;
        if c != gust_worker::CacheCollected::default() {
            tracing::info!(
                task_roots = c.task_roots,
                modules = c.modules,
                bytes = c.bytes,
                "cache collection freed unreferenced code"
            );
        }
    }
}

/// Pulls what changed since `since` and prepares new code ahead of its first invocation.
async fn pull_snapshot(s: Arc<State>, since: u64) {
    let Ok(delta) = s.conn.snapshot(since).await else { return };
    for f in delta.functions {
        let Some(sha) = f.code_sha256 else { continue };
        if s.worker.is_warm(&sha) {
            continue;
        }
        match ServerArtifacts(s.conn.clone()).artifact(&sha).await {
            Ok(code) => {
                if let Err(e) = s.worker.prepare_code(f.runtime, &sha, code).await {
                    tracing::warn!(%sha, error = %e, "cannot prepare pulled code");
                }
            }
            Err(e) => tracing::warn!(%sha, error = %e, "cannot pull code"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: &str, epoch: u64) -> Attempt {
        (gust_core::InvocationId(id.to_string()), epoch)
    }

    #[test]
    fn a_fenced_attempt_is_renewed_no_more() {
        let mut running: HashSet<Attempt> = [attempt("a", 1), attempt("b", 1), attempt("c", 2)].into();
        let request = AttemptsRequest { attempts: vec![attempt("a", 1), attempt("b", 1), attempt("c", 2)] };
        let reply = AttemptsReply::new(&[
            Ok(()),
            Err(gust_core::Rejected::Fenced { current: 2, given: 1 }),
            Err(gust_core::Rejected::NotOwner),
        ]);
        assert_eq!(forget_lost(&mut running, &request, &reply), [attempt("b", 1), attempt("c", 2)]);
        assert_eq!(running, [attempt("a", 1)].into(), "only the accepted attempt is renewed again");
        // A refusal for another reason (the invocation just ended) is not a lost lease: the
        // attempt's completion is on its way.
        let ended =
            AttemptsReply::new(&[Err(gust_core::Rejected::Terminal(gust_core::StateName::Succeeded))]);
        let request = AttemptsRequest { attempts: vec![attempt("a", 1)] };
        assert_eq!(forget_lost(&mut running, &request, &ended), []);
        assert_eq!(running.len(), 1);
    }

    #[test]
    fn a_repeated_completion_is_logged_as_the_acceptance_it_repeats() {
        let event = |verdict, ended| Completed { verdict, ended }.event();
        assert_eq!(event(Verdict::AlreadyCompleted, true), "accepted");
        assert_eq!(event(Verdict::AlreadyCompleted, false), "accepted-retry");
        assert_eq!(event(Verdict::Accepted, true), "accepted");
        assert_eq!(event(Verdict::Fenced, false), "fenced");
        assert_eq!(event(Verdict::Forbidden, false), "refused");
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(250));
        let pauses: Vec<u128> = (0..4).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 250, 250]);
    }
}
