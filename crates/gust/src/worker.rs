//! `gust worker`: a remote worker. It speaks only to a gust server (the worker protocol under
//! `/internal/v1`), never to the database: heartbeats its state, polls for invocations placed
//! on it, runs each with the deployment it came with (pulling code it lacks, verified by
//! sha256), renews their leases while they run, and completes with the attempt epoch. A
//! completion the server refuses as fenced is dropped.
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

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use gust_core::{Deployment, ErrorKind, Runtime};
use gust_runtime::sandbox::{Isolation, Sandbox, SandboxConfig};
use gust_runtime::Status;
use gust_worker::{ArtifactSource, Worker, WorkerConfig, DEFAULT_IDLE_TTL, DEFAULT_MAX_CONCURRENCY};

use crate::host::{HostRuntimes, RuntimeOpts};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

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
    /// Invocations this worker runs at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENCY)]
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
    /// Seconds a SIGTERM (or SIGINT) waits for running attempts to finish before handing
    /// back the rest; a second signal cuts it short.
    #[arg(long, env = "GUST_SHUTDOWN_GRACE", default_value_t = 30)]
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
}

/// Probes what isolation this host gives process functions and applies `--isolation` (an
/// error for strict isolation the host cannot give). Environments start through this binary's
/// hidden sandbox init, and gust's data directory (`data_dir`, absolute) is hidden from them.
pub fn sandbox(isolation: Isolation, data_dir: &Path, host: &HostRuntimes) -> anyhow::Result<Arc<Sandbox>> {
    // An interpreter inside the data directory must stay visible to python3.x functions.
    let python = host.python.clone().unwrap_or_default();
    let hidden_dirs = if host.python.is_some() && python.starts_with(data_dir) {
        tracing::warn!(python = %python.display(), "the Python interpreter is inside the data directory, which therefore stays visible to functions");
        Vec::new()
    } else {
        vec![data_dir.to_path_buf()]
    };
    // The runtimes' own files are bound into every environment, read-only.
    let runtime_dirs = host.runtime_dirs.clone();
    let init_program = std::env::current_exe().ok();
    Ok(Arc::new(Sandbox::detect(SandboxConfig { isolation, init_program, hidden_dirs, runtime_dirs })?))
}

/// A worker configuration for this host's resolved runtimes.
pub fn worker_config(
    capacity: usize,
    idle_ttl: Duration,
    data_dir: &Path,
    host: &HostRuntimes,
    sandbox: Arc<Sandbox>,
) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(capacity, idle_ttl, data_dir);
    if let Some(python) = &host.python {
        cfg.python = python.to_string_lossy().into_owned();
    }
    if let Some(node) = &host.node {
        cfg.node = node.to_string_lossy().into_owned();
    }
    cfg.node_ric = host.node_ric.clone();
    cfg.runtimes = host.available();
    cfg.sandbox = sandbox;
    cfg
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
}

/// Code from the server, verified against its sha256 before use.
struct ServerArtifacts(Arc<Conn>);

/// How long a worker keeps trying to fetch code while its server is unreachable, before the
/// attempt fails with an init error.
const ARTIFACT_FETCH_PATIENCE: Duration = Duration::from_secs(10);

#[async_trait]
impl ArtifactSource for ServerArtifacts {
    async fn artifact(&self, sha256: &str) -> Result<Bytes, String> {
        let deadline = tokio::time::Instant::now() + ARTIFACT_FETCH_PATIENCE;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.fetch(sha256).await {
                Ok(bytes) => return Ok(bytes),
                Err((retryable, e)) if !retryable || tokio::time::Instant::now() >= deadline => {
                    return Err(e)
                }
                Err((_, e)) => {
                    tracing::warn!(%sha256, error = %e, "fetching code failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

impl ServerArtifacts {
    /// One fetch; the error says whether trying again could help.
    async fn fetch(&self, sha256: &str) -> Result<Bytes, (bool, String)> {
        let c = &self.0;
        let resp = c
            .http
            .get(format!("{}/internal/v1/artifacts/{sha256}", c.base))
            .bearer_auth(&c.token)
            .send()
            .await
            .map_err(|e| (true, e.to_string()))?;
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

#[derive(Deserialize)]
struct HeartbeatReply {
    snapshot_version: u64,
    lease_ms: u64,
    heartbeat_ms: u64,
}

#[derive(Deserialize)]
struct Assignment {
    invocation_id: String,
    epoch: u64,
    deployment: Deployment,
    payload_b64: String,
}

#[derive(Deserialize)]
struct PollReply {
    assignments: Vec<Assignment>,
}

struct State {
    conn: Arc<Conn>,
    worker: Arc<Worker>,
    id: String,
    capacity: usize,
    /// The runtime families this worker can run (reported in every heartbeat).
    runtimes: Vec<Runtime>,
    active: AtomicUsize,
    /// Attempts running, as (invocation id, epoch).
    running: Mutex<HashSet<(String, u64)>>,
    /// Attempts released at shutdown while still executing: their results are dropped. Lock
    /// order: `running`, then this.
    handed_back: Mutex<HashSet<(String, u64)>>,
    /// Held by the renew loop across one renewal, so a renewal never races a release.
    renewing: tokio::sync::Mutex<()>,
    /// Set once shutdown begins: no more polls, no free capacity reported.
    draining: AtomicBool,
    /// Sends a heartbeat at once (shutdown begins).
    heartbeat_now: tokio::sync::Notify,
    /// Woken whenever an attempt ends.
    attempt_ended: tokio::sync::Notify,
    /// Notified when the server refuses this worker's credential (401): the worker stops.
    credential_refused: tokio::sync::Notify,
    revision: AtomicU64,
    snapshot: AtomicU64,
    lease_ms: AtomicU64,
    attempt_log: Option<Mutex<std::fs::File>>,
}

impl State {
    fn log_attempt(&self, event: &str, id: &str, epoch: u64) {
        if let Some(f) = &self.attempt_log {
            // One write per line, so concurrent appends never interleave.
            let line = format!("{event} {id} {epoch} {}\n", self.id);
            let _ = f.lock().write_all(line.as_bytes());
        }
    }
}

pub fn run(opts: WorkerOpts) -> anyhow::Result<()> {
    crate::server::init_tracing();
    if opts.capacity == 0 {
        bail!("--capacity must be at least 1");
    }
    let data_dir = crate::host::resolve_dir(&opts.data_dir, "--data-dir")?;
    let host = HostRuntimes::detect(&opts.runtimes)?;
    host.log();
    let sandbox = sandbox(opts.isolation, &data_dir, &host)?;
    let cfg = worker_config(opts.capacity, DEFAULT_IDLE_TTL, &data_dir, &host, sandbox);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let served = rt.block_on(serve(opts, cfg));
    // Attempts handed back at shutdown may still be executing: they are dropped, not awaited.
    rt.shutdown_timeout(Duration::from_secs(1));
    served
}

/// The client of the worker protocol: trusts `--ca` besides the system's roots, and warns when
/// the worker token and code would cross a network in clear text.
fn http_client(opts: &WorkerOpts) -> anyhow::Result<reqwest::Client> {
    if crate::client_tls::is_plain_http_beyond_loopback(&opts.server) {
        tracing::warn!(server = %opts.server, "the server is reached over plain HTTP beyond loopback: the worker token, code and payloads cross the network unencrypted; use an https:// URL");
    }
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
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

/// The worker id and secret this worker acts with: enrolled now with the enrollment token
/// (waiting for an unreachable server), or provisioned (`--secret-file`, id `--name`).
async fn credential(
    opts: &WorkerOpts,
    http: &reqwest::Client,
    base: &str,
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
    let request = gust_api::EnrollRequest { name: opts.name.clone() };
    let mut backoff = Duration::from_millis(100);
    loop {
        let sent = http
            .post(format!("{base}/internal/v1/workers/enroll"))
            .bearer_auth(token)
            .json(&request)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let issued: gust_api::IssuedCredential =
                    r.json().await.context("reading the enrollment reply")?;
                return Ok((issued.id, issued.secret));
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let why = r.json::<serde_json::Value>().await.unwrap_or_default()["error"]["message"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string();
                bail!("the server refused to enroll this worker: HTTP {status}: {why}");
            }
            Ok(r) => tracing::warn!(status = %r.status(), "enrolling failed; retrying"),
            Err(e) => {
                let error = crate::client_tls::transport_error(base, &e);
                tracing::warn!(%error, "enrolling failed; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Tells the server this worker stops for good (an enrolled credential ends with it). Best
/// effort: an enrolled credential also expires on its own.
async fn deregister(s: &State, patience: Duration) {
    let path = format!("/internal/v1/workers/{}/deregister", s.id);
    match tokio::time::timeout(patience, s.conn.post(&path).send()).await {
        Ok(Ok(r)) if r.status().is_success() => {}
        Ok(Ok(r)) => tracing::warn!(status = %r.status(), "deregistering refused"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot deregister"),
        Err(_) => tracing::warn!("deregistering timed out"),
    }
}

/// How long releasing the attempts still running at the end of the grace may take (the
/// server may be unreachable: then their leases expire instead).
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);
/// The same after a second signal.
const FORCED_RELEASE_PATIENCE: Duration = Duration::from_secs(1);

async fn serve(opts: WorkerOpts, cfg: WorkerConfig) -> anyhow::Result<()> {
    let http = http_client(&opts)?;
    let base = opts.server.trim_end_matches('/').to_string();
    let (id, token) = credential(&opts, &http, &base).await?;
    let conn = Arc::new(Conn { http, base, token });
    let runtimes = cfg.runtimes.clone();
    let worker = Worker::new(cfg, Arc::new(ServerArtifacts(conn.clone()))).context("starting the worker")?;
    let attempt_log = match &opts.attempt_log {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new().create(true).append(true).open(p).context("opening --attempt-log")?,
        )),
        None => None,
    };
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
        credential_refused: tokio::sync::Notify::new(),
        // Heartbeat revisions start at the wall clock (ms), so those of a restarted worker
        // with a provisioned id outrank its previous run's (the server ignores older ones).
        revision: AtomicU64::new(unix_millis()),
        snapshot: AtomicU64::new(0),
        lease_ms: AtomicU64::new(5_000),
        attempt_log,
    });
    let signals = crate::server::ShutdownSignals::install()?;
    // The first heartbeat proves the credential (a refusal ends the worker here, clearly).
    first_heartbeat(&state).await?;
    tracing::info!(worker = %state.id, server = %state.conn.base, "gust worker started");
    println!("gust worker {} joined {}", state.id, state.conn.base);
    let heartbeat = tokio::spawn(heartbeat_loop(state.clone()));
    let renew = tokio::spawn(renew_loop(state.clone()));
    let mut poll = tokio::spawn(poll_loop(state.clone()));
    let collector = tokio::spawn(collect_cache_forever(
        state.clone(),
        Duration::from_millis(opts.gc_interval_ms.max(10)),
        Duration::from_millis(opts.gc_grace_ms),
    ));
    tokio::select! {
        () = signals.received(1) => {}
        () = state.credential_refused.notified() => {
            poll.abort();
            renew.abort();
            heartbeat.abort();
            bail!(
                "the server no longer accepts worker {}'s credential (revoked, or expired after a long \
                 silence): its attempts will be recovered; start the worker again to enroll anew",
                state.id
            );
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
    let forced = tokio::select! {
        () = drained => false,
        () = tokio::time::sleep(Duration::from_secs(opts.shutdown_grace)) => false,
        () = signals.received(2) => true,
    };
    if forced {
        tracing::warn!("second signal: exiting now");
    }
    poll.abort();
    {
        // Stop renewing (never mid-renewal), then hand back what still runs.
        let _round = state.renewing.lock().await;
        renew.abort();
    }
    let patience = if forced { FORCED_RELEASE_PATIENCE } else { RELEASE_PATIENCE };
    let released = tokio::time::timeout(patience, release_running(&state)).await.unwrap_or(0);
    heartbeat.abort();
    collector.abort();
    deregister(&state, patience).await;
    tracing::info!(released, "gust worker stopped");
    Ok(())
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
    let attempts: Vec<(String, u64)> = {
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
    let path = format!("/internal/v1/workers/{}/release", s.id);
    let reply = match s.conn.post(&path).json(&json!({ "attempts": attempts })).send().await {
        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.unwrap_or_default(),
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
    for ((id, epoch), r) in attempts.iter().zip(reply["results"].as_array().into_iter().flatten()) {
        match r.as_str() {
            None => {
                released += 1;
                s.log_attempt("handed-back", id, *epoch);
            }
            Some(why) => tracing::info!(%id, epoch, why, "attempt not handed back"),
        }
    }
    released
}

async fn send_heartbeat(s: &State) -> reqwest::Result<reqwest::Response> {
    let revision = s.revision.fetch_add(1, Ordering::SeqCst) + 1;
    let body = json!({
        "id": s.id,
        "revision": revision,
        "runtimes": s.runtimes,
        // Shutting down: no free slot, so nothing more is placed here.
        "capacity": if s.draining.load(Ordering::SeqCst) { 0 } else { s.capacity },
        "running": s.active.load(Ordering::SeqCst),
        "warm": s.worker.warm_code(),
        "snapshot_version": s.snapshot.load(Ordering::SeqCst),
    });
    s.conn.post("/internal/v1/workers/heartbeat").json(&body).send().await
}

/// Heartbeats until the server answers: an unreachable server is waited for; a refusal (a
/// credential it does not accept, an id that is not the credential's) is an error. The
/// server's lease is learnt here, before any attempt runs (leases are renewed at a third of it).
async fn first_heartbeat(s: &State) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match send_heartbeat(s).await {
            Ok(r) if r.status().is_success() => {
                let reply: HeartbeatReply = r.json().await.context("reading the heartbeat reply")?;
                s.lease_ms.store(reply.lease_ms, Ordering::SeqCst);
                return Ok(());
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let why = r.json::<serde_json::Value>().await.unwrap_or_default()["error"]["message"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string();
                bail!("the server refused worker {}: HTTP {status}: {why}", s.id);
            }
            Ok(r) => tracing::warn!(status = %r.status(), "heartbeat failed; retrying"),
            Err(e) => {
                let error = crate::client_tls::transport_error(&s.conn.base, &e);
                tracing::warn!(%error, "heartbeat failed; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// How often a worker repeats that the server keeps refusing its heartbeats or polls.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(30);

async fn heartbeat_loop(s: Arc<State>) {
    // A refusal that lasts (the server's disk is full: 507) is said once in a while.
    let refused = gust_store::space::LogEvery::new(REFUSAL_LOG_EVERY);
    loop {
        let mut every = Duration::from_millis(500);
        match send_heartbeat(&s).await {
            Ok(r) if r.status().is_success() => {
                if let Ok(reply) = r.json::<HeartbeatReply>().await {
                    // Applying a snapshot is learning its version: deployments arrive with
                    // each assignment and code is pulled by sha256 on a miss. A newer version
                    // is reported back at once, so placement sees it within one round trip.
                    let before = s.snapshot.fetch_max(reply.snapshot_version, Ordering::SeqCst);
                    s.lease_ms.store(reply.lease_ms, Ordering::SeqCst);
                    every = Duration::from_millis(reply.heartbeat_ms.clamp(50, 10_000));
                    if reply.snapshot_version > before {
                        every = Duration::ZERO;
                        tokio::spawn(pull_snapshot(s.clone(), before));
                    }
                }
            }
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                tracing::error!("the server refused this worker's credential");
                s.credential_refused.notify_one();
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

async fn renew_loop(s: Arc<State>) {
    loop {
        tokio::time::sleep(Duration::from_millis(s.lease_ms.load(Ordering::SeqCst) / 3)).await;
        let _round = s.renewing.lock().await;
        let attempts: Vec<(String, u64)> = s.running.lock().iter().cloned().collect();
        if attempts.is_empty() {
            continue;
        }
        let path = format!("/internal/v1/workers/{}/renew", s.id);
        let reply = s.conn.post(&path).json(&json!({ "attempts": attempts })).send().await;
        let Ok(reply) = reply else { continue };
        let Ok(v) = reply.json::<serde_json::Value>().await else { continue };
        for ((id, epoch), r) in attempts.iter().zip(v["results"].as_array().into_iter().flatten()) {
            if let Some(reason) = r.as_str() {
                if reason.contains("no longer owns") || reason.contains("another worker") {
                    tracing::warn!(%id, epoch, "lease lost: the attempt was fenced");
                    s.running.lock().remove(&(id.clone(), *epoch));
                }
            }
        }
    }
}

async fn poll_loop(s: Arc<State>) {
    let path = format!("/internal/v1/workers/{}/poll", s.id);
    let refused = gust_store::space::LogEvery::new(REFUSAL_LOG_EVERY);
    loop {
        if s.draining.load(Ordering::SeqCst) {
            return;
        }
        let free = s.capacity.saturating_sub(s.active.load(Ordering::SeqCst));
        if free == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let reply = s.conn.post(&path).json(&json!({ "max": free, "wait_ms": 1000 })).send().await;
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
                tokio::time::sleep(Duration::from_millis(200)).await;
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "poll failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                Vec::new()
            }
        };
        for a in assignments {
            s.active.fetch_add(1, Ordering::SeqCst);
            s.running.lock().insert((a.invocation_id.clone(), a.epoch));
            tokio::spawn(run_assignment(s.clone(), a));
        }
    }
}

async fn run_assignment(s: Arc<State>, a: Assignment) {
    s.log_attempt("start", &a.invocation_id, a.epoch);
    let payload = base64::engine::general_purpose::STANDARD.decode(&a.payload_b64).map(Bytes::from);
    let mut out = match payload {
        Ok(p) => {
            let label = a.deployment.resolved.label();
            let call = gust_core::lambda::CallContext { qualifier: &label, client_context: None };
            s.worker.execute(&a.deployment, &a.invocation_id, p, &call).await
        }
        Err(_) => gust_runtime::RunOutcome {
            status: Status::Failed {
                kind: ErrorKind::InitError,
                message: "the payload was not base64".into(),
            },
            stdout: Bytes::new(),
            log: String::new(),
            duration: Duration::ZERO,
        },
    };
    let log = std::mem::take(&mut out.log);
    let (succeeded, result_b64, error) = match out.into_result() {
        Ok(stdout) => (true, Some(base64::engine::general_purpose::STANDARD.encode(&stdout)), None),
        Err(error) => (false, None, Some(error)),
    };
    let body = json!({
        "invocation_id": a.invocation_id,
        "epoch": a.epoch,
        "succeeded": succeeded,
        "result_b64": result_b64,
        "error": error,
        "log": log,
    });
    let path = format!("/internal/v1/workers/{}/complete", s.id);
    let key = (a.invocation_id.clone(), a.epoch);
    if s.handed_back.lock().remove(&key) {
        tracing::info!(id = %a.invocation_id, epoch = a.epoch, "the attempt was handed back at shutdown; result dropped");
        s.active.fetch_sub(1, Ordering::SeqCst);
        s.attempt_ended.notify_waiters();
        return;
    }
    // Retry while the server is unreachable: the completion is idempotent per epoch, and if
    // the lease expires meanwhile the server refuses it as fenced.
    let mut backoff = Duration::from_millis(50);
    let verdict = loop {
        match s.conn.post(&path).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                // Record whether this completion ended the invocation or scheduled a retry.
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                break if v["state"] == "SUCCEEDED" || v["state"] == "FAILED" {
                    "accepted"
                } else {
                    "accepted-retry"
                };
            }
            Ok(r) if r.status().as_u16() == 409 => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if v["error"]["code"] == "Fenced" {
                    tracing::warn!(id = %a.invocation_id, epoch = a.epoch, "completion refused: fenced; result dropped");
                    break "fenced";
                }
                break "refused";
            }
            Ok(r) if r.status().is_client_error() => break "refused",
            Ok(_) | Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    s.log_attempt(verdict, &a.invocation_id, a.epoch);
    {
        let mut running = s.running.lock();
        running.remove(&key);
        s.handed_back.lock().remove(&key);
    }
    s.active.fetch_sub(1, Ordering::SeqCst);
    s.attempt_ended.notify_waiters();
}

/// Collects cached code (task roots, compiled modules) that the server no longer names for
/// this worker (its whole snapshot: the `$LATEST` code of the functions of its runtimes) and
/// that nothing here used within the grace; code of work it runs is in use meanwhile. A round
/// whose snapshot cannot be read collects nothing.
async fn collect_cache_forever(s: Arc<State>, interval: Duration, grace: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let url = format!("{}/internal/v1/snapshot?since=0", s.conn.base);
        let reply =
            s.conn.http.get(url).bearer_auth(&s.conn.token).send().await.and_then(|r| r.error_for_status());
        let snapshot = match reply {
            Ok(r) => r.json::<serde_json::Value>().await,
            Err(e) => Err(e),
        };
        let named = match &snapshot {
            Ok(snapshot) => snapshot["functions"].as_array(),
            Err(_) => None,
        };
        let Some(named) = named else {
            tracing::debug!("cache collection skipped: the snapshot could not be read");
            continue;
        };
        let keep: HashSet<String> =
            named.iter().filter_map(|f| f["code_sha256"].as_str().map(str::to_string)).collect();
        let worker = s.worker.clone();
        match tokio::task::spawn_blocking(move || worker.collect_cache(&keep, grace)).await {
            Ok(c) if c == gust_worker::CacheCollected::default() => {}
            Ok(c) => tracing::info!(
                task_roots = c.task_roots,
                modules = c.modules,
                bytes = c.bytes,
                "cache collection freed unreferenced code"
            ),
            Err(e) => tracing::warn!(error = %e, "the cache collection task failed"),
        }
    }
}

/// Pulls what changed since `since` and prepares new code ahead of its first invocation.
async fn pull_snapshot(s: Arc<State>, since: u64) {
    let url = format!("{}/internal/v1/snapshot?since={since}", s.conn.base);
    let Ok(reply) = s.conn.http.get(url).bearer_auth(&s.conn.token).send().await else { return };
    let Ok(delta) = reply.json::<serde_json::Value>().await else { return };
    for f in delta["functions"].as_array().into_iter().flatten() {
        let (Some(sha), Ok(runtime)) =
            (f["code_sha256"].as_str(), serde_json::from_value::<Runtime>(f["runtime"].clone()))
        else {
            continue;
        };
        if s.worker.is_warm(sha) {
            continue;
        }
        match ServerArtifacts(s.conn.clone()).artifact(sha).await {
            Ok(code) => {
                if let Err(e) = s.worker.prepare_code(runtime, sha, code).await {
                    tracing::warn!(%sha, error = %e, "cannot prepare pulled code");
                }
            }
            Err(e) => tracing::warn!(%sha, error = %e, "cannot pull code"),
        }
    }
}
