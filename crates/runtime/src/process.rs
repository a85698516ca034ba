//! The process runtime: any executable that speaks the AWS Lambda Runtime API
//! (`/2018-06-01/runtime/...`), as AWS's own runtime clients expect.
//!
//! An environment is one process (in its own process group, working directory = the read-only
//! task root, Lambda's environment variables, isolated as `sandbox.rs` decides) plus a Runtime
//! API server that only it talks to: on 127.0.0.1 on the host, or, when the environment has its
//! own network namespace, on a Unix socket that the sandbox init bridges to 127.0.0.1 inside. It runs one invocation at a time and stays warm for the next invocation of the
//! same function version, so module-level state survives; it is discarded after a timeout
//! (the whole process group is killed), an exit, or an init error. stdout and stderr are the
//! log, bounded to their tail per invocation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes as Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use gust_core::lambda::ResponseStream;
use gust_core::limits::{MAX_LOG_BYTES, MAX_RESULT_BYTES, MAX_STREAMED_BYTES};
use gust_core::ErrorKind;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::sandbox::{Sandbox, Start, RUNTIME_API_PORT};
use crate::{RunOutcome, Status, TailBuffer};

/// Request bodies (answers, errors) one environment may have gust read at once.
const MAX_BODIES_IN_FLIGHT: usize = 2;

/// Environments kept started ahead of need, when environments start through the sandbox init:
/// the init already executed, in its cgroup and namespaces, waiting to learn its function.
/// Joining a cgroup (an RCU grace period on cgroup v1) and executing the init cost more than
/// everything else a sandboxed cold start does, so they happen here, off the invocation's path.
const PRESTARTED: usize = 2;

/// `PATH` inside environments.
const ENV_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How the environment's process is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// `provided`: the package's own `bootstrap` executable.
    Bootstrap,
    /// A managed runtime: a program and its arguments (e.g. `python3 -m awslambdaric HANDLER`).
    Command { program: String, args: Vec<String> },
}

/// One function version as the process runtime runs it.
#[derive(Debug, Clone)]
pub struct ProcessFunction<'a> {
    /// Environments are reused only for the same key (function, version, code).
    pub key: String,
    pub task_root: PathBuf,
    pub launch: Launch,
    pub function: &'a str,
    pub version: &'a str,
    pub handler: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub memory_mb: u32,
    /// The size of the environment's /tmp (Lambda's ephemeral storage).
    pub ephemeral_storage_mb: u32,
    /// Address space allowed beyond `memory_mb` plus the usual headroom: runtimes such as
    /// V8 reserve far more than they use (Node needs ~700 MB just to start).
    pub extra_address_space_mb: u64,
    pub timeout_ms: u64,
}

/// What the Runtime API hands the process and what it answers.
struct Offered {
    id: String,
    payload: Bytes,
    deadline_ms: i64,
    function_arn: String,
    client_context: Option<String>,
    trace_id: Option<String>,
    reply: oneshot::Sender<Reply>,
    stream: Option<Arc<dyn ResponseStream>>,
}

/// An invocation the runtime took and has not answered yet.
struct InFlight {
    reply: oneshot::Sender<Reply>,
    stream: Option<Arc<dyn ResponseStream>>,
}

enum Reply {
    Response(Bytes),
    Error { error_type: String, message: String, body: Bytes },
    TooLarge,
    InitError(String),
}

struct ApiState {
    next: tokio::sync::Mutex<mpsc::Receiver<Offered>>,
    inflight: Mutex<HashMap<String, InFlight>>,
    init_error: Mutex<Option<String>>,
}

/// How the process runtime runs environments.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// A warm environment unused for this long is reaped.
    pub idle_ttl: Duration,
    /// The isolation environments get, decided at start ([`Sandbox::detect`]).
    pub sandbox: Arc<Sandbox>,
}

impl ProcessConfig {
    /// Environments without namespaces (rlimits, temp dir, process group and user only).
    pub fn unconfined(idle_ttl: Duration) -> Self {
        ProcessConfig { idle_ttl, sandbox: Arc::new(Sandbox::unconfined()) }
    }
}

struct Environment {
    child: tokio::process::Child,
    pgid: i32,
    offer: mpsc::Sender<Offered>,
    api: Arc<ApiState>,
    server: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<TailBuffer>>,
    /// stdout and stderr (one pipe), read into `log` as output arrives and drained when an
    /// answer comes.
    output: Arc<OutputPipe>,
    dirs: EnvDirs,
    /// Its cgroup: the memory limit of all its processes, and how an OOM kill is told apart.
    cgroup: Option<crate::cgroup::EnvCgroup>,
    last_used: Instant,
}

/// An environment's output pipe. A task moves output into the log as it arrives (so a
/// chatty function never blocks on a full pipe); `drain` moves what is buffered right now, so
/// everything written before the runtime answered is in the invocation's log.
struct OutputPipe {
    rx: tokio::net::unix::pipe::Receiver,
    log: Arc<Mutex<TailBuffer>>,
    /// Held across a read and its append, so a drain never overtakes bytes already read.
    reading: Mutex<()>,
}

impl OutputPipe {
    /// Moves what the pipe holds now into the log; `false` at end of file or on an error.
    fn drain(&self) -> bool {
        let _reading = self.reading.lock();
        let mut buf = [0u8; 8192];
        loop {
            match self.rx.try_read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.log.lock().write(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }
}

/// An environment's directories on the host: its temp dir and, with a private network, the
/// directory of its Runtime API socket (0700, gust's user only). Removed when dropped.
struct EnvDirs {
    /// The environment's TMPDIR on the host, when it has no mount namespace (else /tmp is a
    /// tmpfs of its own).
    tmp: Option<PathBuf>,
    /// Only gust can enter it (0700): the Runtime API's socket, the environment handed to the
    /// sandbox init.
    private: PathBuf,
}

impl Drop for EnvDirs {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_dir_all(tmp);
        }
        let _ = std::fs::remove_dir_all(&self.private);
    }
}

impl Environment {
    fn kill(mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.start_kill();
        self.server.abort();
        drop(self.dirs);
        // Removing a cgroup waits for its processes to go: off the async threads.
        if let Some(cg) = self.cgroup.take() {
            tokio::task::spawn_blocking(move || drop(cg));
        }
    }
}

/// A fresh private temporary directory for one environment (`kind` names it: the function, or
/// `api` for the Runtime API's socket).
fn tempdir_for(kind: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "gust-{}-{}-{:x}-{}",
        kind,
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = std::env::temp_dir().join(unique);
    std::fs::DirBuilder::new().mode(0o700).create(&path)?;
    Ok(path)
}

/// Removes the environment directories (`gust-KIND-PID-NANOS-N`, see [`tempdir_for`]) that a
/// gust process killed with -9 left behind: those whose process is gone.
fn remove_orphaned_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('-').collect();
        let pid = match parts.as_slice() {
            ["gust", .., pid, _nanos, _n] if parts.len() >= 5 => pid.parse::<u32>().ok(),
            _ => None,
        };
        let orphaned =
            pid.is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists());
        if orphaned && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

pub struct ProcessRuntime {
    idle: Mutex<HashMap<String, Vec<Environment>>>,
    idle_ttl: Duration,
    sandbox: Arc<Sandbox>,
    prestarted: Arc<Prestarted>,
}

/// An environment started before its function is known: the sandbox init, in its own cgroup
/// (no memory or CPU limit yet) and namespaces, blocked reading its spec from stdin. Nothing
/// of any function is in it.
struct Blank {
    child: tokio::process::Child,
    spec: tokio::process::ChildStdin,
    output: std::io::PipeReader,
    /// Its private directory (the future root, the Runtime API's socket), removed on drop.
    dirs: EnvDirs,
    cgroup: Option<crate::cgroup::EnvCgroup>,
}

impl Blank {
    /// Starts one (blocking: joining the cgroup waits for the kernel).
    fn start(sandbox: &Sandbox) -> std::io::Result<Blank> {
        let dirs = EnvDirs { tmp: None, private: tempdir_for("api")? };
        // Named after the private directory: unique, and short enough (`gust-api-PID-HEX-N`).
        let name = dirs.private.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let cgroup = sandbox
            .cgroup_unlimited(&name)
            .map_err(|e| std::io::Error::other(format!("cannot make the environment's cgroup: {e}")))?;
        let cmd = sandbox.init_command(Some(cgroup.joiner()));
        let mut cmd =
            tokio::process::Command::from(cmd.ok_or_else(|| std::io::Error::other("no sandbox init"))?);
        cmd.kill_on_drop(true);
        // stdout and stderr share one pipe, as Lambda's one log stream: what the function wrote
        // stays in the order it wrote it (two pipes are read in whatever order they wake).
        let (output, log_tx) = std::io::pipe()?;
        cmd.stdout(log_tx.try_clone()?).stderr(log_tx);
        let mut child = cmd.spawn()?;
        // The write ends went to the child with `cmd` (dropped here with it, so the read end
        // sees end of file when the environment's processes are gone).
        drop(cmd);
        let spec = child.stdin.take().ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
        Ok(Blank { child, spec, output, dirs, cgroup: Some(cgroup) })
    }

    /// Ends it (the cgroup is removed off the async threads: that waits for its processes).
    fn discard(mut self) {
        let _ = self.child.start_kill();
        if let Some(cg) = self.cgroup.take() {
            tokio::task::spawn_blocking(move || drop(cg));
        }
    }
}

/// Refills the pre-started environments when dropped.
struct RefillOnDrop(Arc<Prestarted>);

impl Drop for RefillOnDrop {
    fn drop(&mut self) {
        self.0.refill();
    }
}

/// The pre-started environments ([`PRESTARTED`] of them, refilled after a cold start).
struct Prestarted {
    sandbox: Arc<Sandbox>,
    ready: Mutex<Vec<Blank>>,
    /// Being started right now.
    starting: std::sync::atomic::AtomicUsize,
}

impl Prestarted {
    /// A pre-started environment, or one started now (the slow path of a burst).
    async fn take(self: &Arc<Self>) -> std::io::Result<Blank> {
        let ready = loop {
            let Some(mut b) = self.ready.lock().pop() else { break None };
            // One that died while waiting (killed from outside) is of no use.
            match b.child.try_wait() {
                Ok(None) => break Some(b),
                _ => b.discard(),
            }
        };
        match ready {
            Some(b) => Ok(b),
            None => {
                let sandbox = self.sandbox.clone();
                tokio::task::spawn_blocking(move || Blank::start(&sandbox))
                    .await
                    .map_err(std::io::Error::other)?
            }
        }
    }

    /// Starts environments in the background until [`PRESTARTED`] are ready or starting.
    fn refill(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        while self.ready.lock().len() + self.starting.load(Ordering::SeqCst) < PRESTARTED {
            self.starting.fetch_add(1, Ordering::SeqCst);
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                let started = Blank::start(&this.sandbox);
                this.starting.fetch_sub(1, Ordering::SeqCst);
                match started {
                    Ok(b) => this.ready.lock().push(b),
                    Err(e) => tracing::warn!("cannot pre-start an environment: {e}"),
                }
            });
        }
    }
}

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

async fn next(State(api): State<Arc<ApiState>>) -> Response {
    let offered = {
        let mut rx = api.next.lock().await;
        rx.recv().await
    };
    let Some(o) = offered else { return StatusCode::GONE.into_response() };
    api.inflight.lock().insert(o.id.clone(), InFlight { reply: o.reply, stream: o.stream });
    let mut resp = o.payload.into_response();
    let h = resp.headers_mut();
    h.insert("lambda-runtime-aws-request-id", header(&o.id));
    h.insert("lambda-runtime-deadline-ms", header(&o.deadline_ms.to_string()));
    h.insert("lambda-runtime-invoked-function-arn", header(&o.function_arn));
    if let Some(t) = o.trace_id.as_deref() {
        h.insert("lambda-runtime-trace-id", header(t));
    }
    if let Some(cc) = o.client_context.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("lambda-runtime-client-context", cc);
    }
    h.insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, "{\"status\":\"OK\"}").into_response()
}

async fn response(
    State(api): State<Arc<ApiState>>, UrlPath(id): UrlPath<String>, headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(inflight) = api.inflight.lock().remove(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|m| m.as_bytes().eq_ignore_ascii_case(b"streaming"));
    if streaming {
        let reply = streamed(&headers, body, inflight.stream.as_deref()).await;
        let _ = inflight.reply.send(reply);
        return accepted();
    }
    // Bodies past the result limit are read (so the client sees our answer) and refused.
    let reply = match axum::body::to_bytes(body, MAX_RESULT_BYTES + 1024 * 1024).await {
        Ok(body) if body.len() <= MAX_RESULT_BYTES => Reply::Response(body),
        _ => Reply::TooLarge,
    };
    let _ = inflight.reply.send(reply);
    accepted()
}

/// A response the function streams (`Lambda-Runtime-Function-Response-Mode: streaming`, a
/// chunked body): each chunk goes to the caller reading it as it arrives, and the whole is
/// collected (up to the result limit) for the record and for callers that do not stream. An
/// error the runtime reports in the trailers (`Lambda-Runtime-Function-Error-Type`/`-Body`)
/// fails the invocation, however much was streamed before it.
async fn streamed(
    headers: &HeaderMap, mut body: axum::body::Body, stream: Option<&dyn ResponseStream>,
) -> Reply {
    use http_body_util::BodyExt as _;
    let content_type =
        headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream");
    let mut reading = match stream {
        Some(s) => s.begin(content_type).await,
        None => false,
    };
    let (mut collected, mut total) = (bytes::BytesMut::new(), 0usize);
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                return Reply::Error {
                    error_type: "Runtime.StreamError".into(),
                    message: format!("the response stream broke: {e}"),
                    body: Bytes::new(),
                }
            }
        };
        let frame = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                let Ok(trailers) = frame.into_trailers() else { continue };
                if let Some(error) = trailers.get("lambda-runtime-function-error-type") {
                    let error_type = error.to_str().unwrap_or("Unhandled").to_string();
                    let body = trailers
                        .get("lambda-runtime-function-error-body")
                        .and_then(|b| {
                            use base64::Engine as _;
                            base64::engine::general_purpose::STANDARD.decode(b.as_bytes()).ok()
                        })
                        .map(Bytes::from)
                        .unwrap_or_default();
                    let (_, message) = error_of(&HeaderMap::new(), &body);
                    return Reply::Error { error_type, message, body };
                }
                continue;
            }
        };
        total += frame.len();
        if total > MAX_STREAMED_BYTES {
            return Reply::TooLarge;
        }
        if collected.len() + frame.len() <= MAX_RESULT_BYTES {
            collected.extend_from_slice(&frame);
        } else if !reading {
            // Nobody reads the stream and the whole no longer fits the result.
            return Reply::TooLarge;
        }
        if reading {
            if let Some(s) = stream {
                reading = s.chunk(frame).await;
            }
        }
    }
    Reply::Response(collected.freeze())
}

/// The error type comes from the JSON body (`errorType`), else the
/// `Lambda-Runtime-Function-Error-Type` header: each runtime client sends it differently.
fn error_of(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let header_type = headers.get("lambda-runtime-function-error-type").and_then(|h| h.to_str().ok());
    let error_type = v["errorType"].as_str().or(header_type).unwrap_or("Unhandled").to_string();
    let message = v["errorMessage"].as_str().unwrap_or("the function reported an error").to_string();
    (error_type, message)
}

async fn error(
    State(api): State<Arc<ApiState>>, UrlPath(id): UrlPath<String>, headers: HeaderMap, body: Body,
) -> Response {
    let Some(inflight) = api.inflight.lock().remove(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (error_type, message) = error_of(&headers, &body);
    let _ = inflight.reply.send(Reply::Error { error_type, message, body });
    accepted()
}

async fn init_error(State(api): State<Arc<ApiState>>, headers: HeaderMap, body: Body) -> Response {
    let (error_type, message) = error_of(&headers, &body);
    let text = format!("{error_type}: {message}");
    *api.init_error.lock() = Some(text.clone());
    for (_, inflight) in api.inflight.lock().drain() {
        let _ = inflight.reply.send(Reply::InitError(text.clone()));
    }
    accepted()
}

fn failed(kind: ErrorKind, message: String, log: String, started: Instant) -> RunOutcome {
    RunOutcome::new(Status::Failed { kind, message }, Bytes::new(), log, started.elapsed())
}

impl ProcessRuntime {
    pub fn new(cfg: ProcessConfig) -> Arc<Self> {
        remove_orphaned_dirs(&std::env::temp_dir());
        let prestarted = Arc::new(Prestarted {
            sandbox: cfg.sandbox.clone(),
            ready: Mutex::new(Vec::new()),
            starting: Default::default(),
        });
        if cfg.sandbox.namespaces() {
            prestarted.refill();
        }
        Arc::new(ProcessRuntime {
            idle: Mutex::new(HashMap::new()),
            idle_ttl: cfg.idle_ttl,
            sandbox: cfg.sandbox,
            prestarted,
        })
    }

    /// The isolation environments get.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Kills environments idle for longer than the idle TTL; returns how many.
    pub fn reap_idle(&self) -> usize {
        let mut reaped = Vec::new();
        {
            let mut idle = self.idle.lock();
            for envs in idle.values_mut() {
                let (old, keep): (Vec<_>, Vec<_>) =
                    envs.drain(..).partition(|e| e.last_used.elapsed() > self.idle_ttl);
                *envs = keep;
                reaped.extend(old);
            }
            idle.retain(|_, v| !v.is_empty());
        }
        let n = reaped.len();
        reaped.into_iter().for_each(Environment::kill);
        n
    }

    /// Warm environments right now.
    pub fn warm(&self) -> usize {
        self.idle.lock().values().map(Vec::len).sum()
    }

    /// The keys ([`ProcessFunction::key`]) with a warm environment: their task roots are in use.
    pub fn warm_keys(&self) -> Vec<String> {
        self.idle.lock().iter().filter(|(_, envs)| !envs.is_empty()).map(|(k, _)| k.clone()).collect()
    }

    async fn spawn(&self, f: &ProcessFunction<'_>) -> std::io::Result<Environment> {
        let (offer, rx) = mpsc::channel(1);
        let api = Arc::new(ApiState {
            next: tokio::sync::Mutex::new(rx),
            inflight: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            // Bodies past the result limit are read (so the client sees our answer) and refused.
            .layer(DefaultBodyLimit::max(MAX_RESULT_BYTES + 1024 * 1024))
            // A function buffers at most this many bodies in gust at once (the rest wait), so
            // its connections cannot make gust hold gigabytes it is not charged for.
            .layer(axum::middleware::from_fn({
                let bodies = Arc::new(tokio::sync::Semaphore::new(MAX_BODIES_IN_FLIGHT));
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let bodies = bodies.clone();
                    async move {
                        if req.method() != axum::http::Method::POST {
                            return next.run(req).await;
                        }
                        let _permit = bodies.acquire_owned().await;
                        next.run(req).await
                    }
                }
            }))
            .with_state(api.clone());
        let (program, args) = match &f.launch {
            Launch::Bootstrap => (f.task_root.join("bootstrap").to_string_lossy().into_owned(), Vec::new()),
            Launch::Command { program, args } => (program.clone(), args.clone()),
        };
        let sandbox = &self.sandbox;
        if !sandbox.missing().is_empty() {
            tracing::debug!(
                function = f.function,
                missing = %sandbox.missing().join("; "),
                "environment starts with weaker isolation than configured"
            );
        }
        let user = sandbox.user_for(&f.task_root, &program, ENV_PATH).map_err(std::io::Error::other)?;
        // Through the sandbox init: a pre-started environment (already in its cgroup and
        // namespaces) learns its function now. Without namespaces: the program directly.
        let mut blank = match sandbox.namespaces() {
            true => Some(self.prestarted.take().await?),
            false => None,
        };
        // A private, writable temporary directory, removed with the environment.
        // Named apart from the function: a Unix socket's path has at most 107 bytes.
        // With a mount namespace /tmp is a tmpfs of the environment's own: no host directory.
        let tmp = if sandbox.private_mounts() { None } else { Some(tempdir_for(f.function)?) };
        let private = match &mut blank {
            Some(b) => std::mem::take(&mut b.dirs.private),
            None => tempdir_for("api")?,
        };
        let dirs = EnvDirs { tmp, private };
        if let (Some(tmp), Some((uid, gid))) = (&dirs.tmp, user) {
            std::os::unix::fs::chown(tmp, Some(uid), Some(gid))?;
        }
        let (api_addr, api_socket, server) = if sandbox.private_network() {
            let socket = dirs.private.join("api.sock");
            let listener = tokio::net::UnixListener::bind(&socket)?;
            let server = tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            (format!("127.0.0.1:{RUNTIME_API_PORT}"), Some(socket), server)
        } else {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let server = tokio::spawn(async move {
                use axum::serve::ListenerExt;
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let _ = axum::serve(listener, router).await;
            });
            (addr.to_string(), None, server)
        };
        // From here on an error must stop the Runtime API server and end the pre-started init.
        let abandon = |server: tokio::task::JoinHandle<()>, blank: Option<Blank>| {
            server.abort();
            if let Some(b) = blank {
                b.discard();
            }
        };
        let cgroup = match &mut blank {
            Some(b) => {
                let mut cg = b.cgroup.take();
                match cg.as_mut().map(|cg| cg.limit(f.memory_mb)).transpose() {
                    Ok(_) => cg,
                    Err(e) => {
                        abandon(server, blank);
                        return Err(std::io::Error::other(format!(
                            "cannot limit the environment's cgroup: {e}"
                        )));
                    }
                }
            }
            None => {
                let name =
                    dirs.private.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                match sandbox.cgroup(&name, f.memory_mb) {
                    Ok(cg) => Some(cg),
                    Err(e) => {
                        abandon(server, None);
                        return Err(std::io::Error::other(format!(
                            "cannot make the environment's cgroup: {e}"
                        )));
                    }
                }
            }
        };
        let tmp_inside = dirs.tmp.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
        let tmp_inside = tmp_inside.to_string_lossy().into_owned();
        let task_root = f.task_root.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = f.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.extend(
            [
                ("PATH", ENV_PATH),
                ("LANG", "C.UTF-8"),
                ("AWS_LAMBDA_RUNTIME_API", &api_addr),
                ("_HANDLER", f.handler),
                ("LAMBDA_TASK_ROOT", &task_root),
                ("LAMBDA_RUNTIME_DIR", &task_root),
                ("AWS_LAMBDA_FUNCTION_NAME", f.function),
                ("AWS_LAMBDA_FUNCTION_VERSION", f.version),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", &f.memory_mb.to_string()),
                ("AWS_LAMBDA_LOG_GROUP_NAME", &format!("/aws/lambda/{}", f.function)),
                ("AWS_LAMBDA_LOG_STREAM_NAME", "gust"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
                ("AWS_EXECUTION_ENV", "gust"),
                ("TZ", ":UTC"),
                ("TMPDIR", &tmp_inside),
                ("HOME", &tmp_inside),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        // The platform's variables win over a same-named one in the configuration.
        let mut seen = std::collections::HashSet::new();
        env.reverse();
        env.retain(|(k, _)| seen.insert(k.clone()));
        let start = Start {
            task_root: &f.task_root,
            api_socket: api_socket.as_deref(),
            program: &program,
            args: &args,
            tmp_mb: u64::from(f.ephemeral_storage_mb),
            env: &env,
            private_dir: &dirs.private,
            limits: {
                let mut l = crate::sandbox::Limits::for_memory_mb(f.memory_mb);
                l.address_space_bytes += f.extra_address_space_mb << 20;
                l
            },
            user,
            cgroup: cgroup.as_ref().map(crate::cgroup::EnvCgroup::joiner),
        };
        let (child, log_rx) = match blank {
            Some(mut b) => {
                let written = match sandbox.init_spec(&start) {
                    Ok(spec) => {
                        use tokio::io::AsyncWriteExt;
                        // Closing stdin (dropping it) tells the init the spec is whole.
                        b.spec.write_all(&spec.encode()).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    abandon(server, Some(b));
                    return Err(e);
                }
                let Blank { child, spec, output, .. } = b;
                drop(spec);
                (child, output)
            }
            None => {
                let mut cmd = match sandbox.direct_command(&start) {
                    Ok(cmd) => tokio::process::Command::from(cmd),
                    Err(e) => {
                        abandon(server, None);
                        return Err(e);
                    }
                };
                cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
                // stdout and stderr share one pipe, as Lambda's one log stream: what the
                // function wrote stays in the order it wrote it.
                let (log_rx, log_tx) = std::io::pipe()?;
                cmd.stdout(log_tx.try_clone()?).stderr(log_tx);
                let child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        abandon(server, None);
                        return Err(e);
                    }
                };
                // The write ends went to the child with `cmd` (dropped here with it, so the
                // read end sees end of file when the environment's processes are gone).
                drop(cmd);
                (child, log_rx)
            }
        };
        let pgid = child.id().map_or(0, |p| p as i32);
        let log = Arc::new(Mutex::new(TailBuffer::new(MAX_LOG_BYTES)));
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(log_rx.into())?;
        let output = Arc::new(OutputPipe { rx, log: log.clone(), reading: Mutex::new(()) });
        let pipe = output.clone();
        tokio::spawn(async move { while pipe.rx.readable().await.is_ok() && pipe.drain() {} });
        Ok(Environment {
            child,
            pgid,
            offer,
            api,
            server,
            log,
            output,
            dirs,
            cgroup,
            last_used: Instant::now(),
        })
    }

    /// Runs one invocation in a warm environment of `f`, or a new one (cold start).
    pub async fn run(
        &self, f: &ProcessFunction<'_>, invocation_id: &str, payload: Bytes,
        call: &gust_core::lambda::CallContext<'_>,
    ) -> RunOutcome {
        let mut started = Instant::now();
        let warm = self.idle.lock().get_mut(&f.key).and_then(Vec::pop);
        let cold = warm.is_none();
        // A cold start that took a pre-started environment has it replaced once this
        // invocation is over: starting one joins a cgroup, which holds up every fork and
        // thread start on the host for a moment, so not while this function starts.
        let _refill = warm.is_none().then(|| RefillOnDrop(self.prestarted.clone()));
        let mut env = match warm {
            Some(env) => env,
            None => match self.spawn(f).await {
                Ok(env) => env,
                Err(e) => {
                    return failed(
                        ErrorKind::InitError,
                        format!("cannot start the runtime: {e}"),
                        String::new(),
                        started,
                    )
                }
            },
        };
        // Init is reported apart (Lambda's Init Duration); the run is timed from here.
        let init = cold.then(|| started.elapsed());
        started = Instant::now();
        *env.log.lock() = TailBuffer::new(MAX_LOG_BYTES);
        let deadline_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
            + f.timeout_ms as i64;
        let (reply, answer) = oneshot::channel();
        let offered = Offered {
            id: invocation_id.to_string(),
            payload,
            deadline_ms,
            function_arn: gust_core::lambda::function_arn(f.function, Some(call.qualifier)),
            client_context: call.client_context.map(str::to_string),
            trace_id: call.trace_id.map(str::to_string),
            reply,
            stream: call.stream.cloned(),
        };
        if env.offer.send(offered).await.is_err() {
            env.kill();
            return failed(
                ErrorKind::InitError,
                "the runtime environment is gone".into(),
                String::new(),
                started,
            );
        }
        let timeout = tokio::time::sleep(Duration::from_millis(f.timeout_ms));
        let outcome = tokio::select! {
            r = answer => r.ok(),
            _ = env.child.wait() => None,
            _ = timeout => {
                let log = env.log.lock().to_text();
                env.kill();
                return failed(ErrorKind::Timeout, format!("the function timed out after {} ms", f.timeout_ms), log, started);
            }
        };
        // What the process wrote before it answered is in its pipe by now.
        env.output.drain();
        let log = env.log.lock().to_text();
        // A process of the environment was killed for memory: the invocation fails as on
        // Lambda, whatever the runtime answered, and the environment is discarded.
        if env.cgroup.as_ref().is_some_and(crate::cgroup::EnvCgroup::oom_killed) {
            env.kill();
            let message = format!(
                "Runtime.OutOfMemory: the function's processes used more than its {} MB",
                f.memory_mb
            );
            return failed(ErrorKind::OutOfMemory, message, log, started);
        }
        let status = match outcome {
            Some(Reply::Response(body)) => {
                env.last_used = Instant::now();
                let peak = env.cgroup.as_ref().and_then(crate::cgroup::EnvCgroup::peak_memory_bytes);
                self.idle.lock().entry(f.key.clone()).or_default().push(env);
                let out = RunOutcome::new(Status::Succeeded, body, log, started.elapsed());
                return RunOutcome { init, max_memory_bytes: peak, ..out };
            }
            Some(Reply::Error { error_type, message, body }) => {
                // A handled error leaves the environment usable, as on Lambda. The runtime's
                // own error JSON goes along as the output (see `RunOutcome::into_result`).
                env.last_used = Instant::now();
                let peak = env.cgroup.as_ref().and_then(crate::cgroup::EnvCgroup::peak_memory_bytes);
                self.idle.lock().entry(f.key.clone()).or_default().push(env);
                let mut out =
                    failed(ErrorKind::FunctionError, format!("{error_type}: {message}"), log, started);
                out.stdout = body;
                return RunOutcome { init, max_memory_bytes: peak, ..out };
            }
            Some(Reply::TooLarge) => Status::Failed {
                kind: ErrorKind::ResultTooLarge,
                message: format!("the response exceeded {MAX_RESULT_BYTES} bytes"),
            },
            Some(Reply::InitError(text)) => Status::Failed { kind: ErrorKind::InitError, message: text },
            None => {
                let code = env.child.try_wait().ok().flatten().and_then(|s| s.code());
                let init = env.api.init_error.lock().clone();
                let oom = env.cgroup.as_ref().is_some_and(crate::cgroup::EnvCgroup::oom_killed);
                match init {
                    _ if oom => Status::Failed {
                        kind: ErrorKind::OutOfMemory,
                        message: format!(
                            "Runtime.OutOfMemory: the function's processes used more than its {} MB",
                            f.memory_mb
                        ),
                    },
                    Some(text) => Status::Failed { kind: ErrorKind::InitError, message: text },
                    None => Status::Failed {
                        kind: ErrorKind::Crashed,
                        message: format!(
                            "Runtime.ExitError: the runtime exited{} before answering",
                            code.map(|c| format!(" with code {c}")).unwrap_or_default()
                        ),
                    },
                }
            }
        };
        let peak = env.cgroup.as_ref().and_then(crate::cgroup::EnvCgroup::peak_memory_bytes);
        env.kill();
        RunOutcome {
            init,
            max_memory_bytes: peak,
            ..RunOutcome::new(status, Bytes::new(), log, started.elapsed())
        }
    }
}

#[cfg(test)]
mod orphan_tests {
    #[test]
    fn directories_of_dead_gust_processes_are_removed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join("gust-api-999999999-1a2b-0");
        let mine = tmp.path().join(format!("gust-my-fn-{}-1a2b-1", std::process::id()));
        let other = tmp.path().join("unrelated-999999999-1-1");
        for d in [&dead, &mine, &other] {
            std::fs::create_dir(d).unwrap();
        }
        super::remove_orphaned_dirs(tmp.path());
        assert!(!dead.exists());
        assert!(mine.exists() && other.exists());
    }
}
