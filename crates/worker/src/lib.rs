//! gust's worker: runs invocations of deployments on the local runtimes.
//!
//! It keeps environments warm (a prepared module per code hash), reaps the idle ones, bounds
//! how many invocations run at once, and fetches code it does not have from an
//! [`ArtifactSource`] (pull on miss; every artifact is verified by the source).
//!
//! Architecture invariant: the worker never opens the database. In the embedded shape its
//! artifact source is the server's store; a remote worker's is the server's API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use gust_core::{Deployment, ErrorKind, Runtime};
use gust_runtime::process::{Launch, ProcessConfig, ProcessFunction, ProcessRuntime};
use gust_runtime::sandbox::Sandbox;
use gust_runtime::wasm::{CompileLimits, Compiler, WasmConfig, WasmRuntime};
use gust_runtime::{PrepareError, RunOutcome, RunRequest, Status};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

mod cache;
pub mod metrics;
pub mod spans;
pub use cache::CacheCollected;

/// Invocations that may run at once on one worker.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// Extra address space for Node.js environments (V8 reserves ~700 MB before running anything).
pub const NODE_ADDRESS_SPACE_MB: u64 = 1024;
/// A warm environment unused for this long is reaped.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub max_concurrency: usize,
    pub idle_ttl: Duration,
    pub wasm: WasmConfig,
    /// Where zip packages of the process runtime are unpacked (one task root per sha256).
    pub tasks_dir: std::path::PathBuf,
    /// The Python interpreter that runs `python3.x` functions (`-m awslambdaric HANDLER`).
    pub python: String,
    /// The Node.js binary and the `aws-lambda-ric` package directory that run `nodejsN.x`
    /// functions (`node RIC/bin/index.mjs HANDLER`); without the package they fail to start.
    pub node: String,
    pub node_ric: Option<std::path::PathBuf>,
    /// The runtime families this worker can run (what start-up detection found; a deploy no
    /// worker can run is refused).
    pub runtimes: Vec<Runtime>,
    /// The isolation process environments get ([`Sandbox::detect`] at start; unconfined by
    /// default).
    pub sandbox: Arc<Sandbox>,
}

impl WorkerConfig {
    /// A worker running `capacity` invocations at once, caching compiled code in `data_dir`.
    pub fn new(capacity: usize, idle_ttl: Duration, data_dir: &std::path::Path) -> Self {
        WorkerConfig {
            max_concurrency: capacity,
            idle_ttl,
            wasm: WasmConfig {
                cache_dir: data_dir.join("modules"),
                max_instances: gust_runtime::wasm::DEFAULT_MAX_INSTANCES.max(capacity as u32),
                compile_limits: CompileLimits::default(),
                // Trusted code only; gust's roles compile in a child of the gust binary
                // (`gust::worker::worker_config`).
                compiler: Compiler::InProcess,
                allow_private_outbound: false,
            },
            tasks_dir: data_dir.join("tasks"),
            python: "python3".into(),
            node: "node".into(),
            node_ric: None,
            runtimes: vec![Runtime::Wasm, Runtime::Provided { al: 0 }],
            sandbox: Arc::new(Sandbox::unconfined()),
        }
    }
}

/// A short random id for this process's boot, so a restarted worker is a new worker.
pub fn boot_id() -> String {
    let id = format!("{:016x}", rand_u64());
    id[4..].to_string()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Where a worker gets code it does not have yet.
#[async_trait]
pub trait ArtifactSource: Send + Sync + 'static {
    /// The artifact's bytes, already verified against `sha256`.
    async fn artifact(&self, sha256: &str) -> Result<Bytes, String>;
}

/// Point-in-time view of the worker, for status endpoints and heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLoad {
    pub capacity: usize,
    pub running: usize,
    pub warm_environments: usize,
}

pub struct Worker {
    wasm: Arc<WasmRuntime>,
    source: Arc<dyn ArtifactSource>,
    permits: Arc<Semaphore>,
    capacity: usize,
    idle_ttl: Duration,
    /// Code hashes with a prepared environment, and when each was last used.
    warm: Mutex<HashMap<String, Instant>>,
    /// Serialises preparation per code hash so a burst of cold starts compiles once.
    preparing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    process: Arc<ProcessRuntime>,
    tasks_dir: std::path::PathBuf,
    python: String,
    node: String,
    node_ric: Option<std::path::PathBuf>,
    runtimes: Vec<Runtime>,
    /// Where compiled modules are cached (the wasm runtime's cache directory).
    modules_dir: std::path::PathBuf,
    /// Code in use and when it was last used, for the cache collection ([`cache`]).
    code_use: cache::CodeUses,
    metrics: metrics::Metrics,
    /// Where the spans of sampled attempts go (OTLP), once set.
    span_sink: std::sync::OnceLock<Arc<dyn spans::SpanSink>>,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, source: Arc<dyn ArtifactSource>) -> Result<Arc<Self>, PrepareError> {
        let modules_dir = cfg.wasm.cache_dir.clone();
        Ok(Arc::new(Worker {
            wasm: WasmRuntime::new(cfg.wasm)?,
            source,
            permits: Arc::new(Semaphore::new(cfg.max_concurrency)),
            capacity: cfg.max_concurrency,
            idle_ttl: cfg.idle_ttl,
            warm: Mutex::new(HashMap::new()),
            preparing: Mutex::new(HashMap::new()),
            process: ProcessRuntime::new(ProcessConfig { idle_ttl: cfg.idle_ttl, sandbox: cfg.sandbox }),
            tasks_dir: cfg.tasks_dir,
            python: cfg.python,
            node: cfg.node,
            node_ric: cfg.node_ric,
            runtimes: cfg.runtimes,
            modules_dir,
            code_use: Default::default(),
            metrics: Default::default(),
            span_sink: std::sync::OnceLock::new(),
        }))
    }

    /// Validates and compiles code at upload time, so the first invocation is a warm-cache
    /// start. Blocking work runs off the async runtime.
    pub async fn prepare_code(
        &self, runtime: Runtime, sha256: &str, code: Bytes,
    ) -> Result<(), PrepareError> {
        // Just prepared: kept by cache collections for their grace, as the config write that
        // will reference it follows.
        let _in_use = cache::hold(&self.code_use, sha256);
        match runtime {
            Runtime::Wasm => {
                let wasm = self.wasm.clone();
                let sha = sha256.to_string();
                tokio::task::spawn_blocking(move || wasm.prepare(&sha, &code).map(|_| ()))
                    .await
                    .map_err(|e| PrepareError::Internal(format!("prepare task failed: {e}")))?
            }
            Runtime::Provided { .. } | Runtime::Python { .. } | Runtime::Node { .. } => {
                self.unpack(runtime, sha256, code).await.map(|_| ())
            }
        }
    }

    /// Unpacks a zip package once per code hash (blocking work off the async runtime).
    async fn unpack(
        &self, runtime: Runtime, sha256: &str, code: Bytes,
    ) -> Result<std::path::PathBuf, PrepareError> {
        let (root, sha) = (self.tasks_dir.clone(), sha256.to_string());
        let need_bootstrap = matches!(runtime, Runtime::Provided { .. });
        tokio::task::spawn_blocking(move || {
            gust_runtime::package::unpack(
                &code,
                &sha,
                &root,
                gust_runtime::package::PackageLimits::default(),
                need_bootstrap,
            )
        })
        .await
        .map_err(|e| PrepareError::Internal(format!("unpack task failed: {e}")))?
        .map_err(|e| match e {
            gust_runtime::package::PackageError::NoSpace(m) => {
                PrepareError::NoSpace(format!("unpacking: {m}"))
            }
            e => PrepareError::Package(e.to_string()),
        })
    }

    /// The task root of a package, unpacking it (pulling the code) on a miss.
    async fn task_root(&self, runtime: Runtime, sha256: &str) -> Result<std::path::PathBuf, String> {
        let root = self.tasks_dir.join(sha256);
        if root.is_dir() {
            return Ok(root);
        }
        let code = self.source.artifact(sha256).await.map_err(|e| format!("cannot fetch code: {e}"))?;
        self.unpack(runtime, sha256, code).await.map_err(|e| e.to_string())
    }

    /// Whether this worker can run functions of `runtime`'s family.
    pub fn runs(&self, runtime: Runtime) -> bool {
        self.runtimes.iter().any(|r| r.same_family(runtime))
    }

    /// The runtime families this worker can run.
    pub fn runtimes(&self) -> &[Runtime] {
        &self.runtimes
    }

    pub fn load(&self) -> WorkerLoad {
        WorkerLoad {
            capacity: self.capacity,
            running: self.capacity - self.permits.available_permits(),
            warm_environments: self.warm.lock().len() + self.process.warm(),
        }
    }

    /// Slots free right now: how much queued work the dispatcher may claim.
    pub fn free_slots(&self) -> usize {
        self.permits.available_permits()
    }

    /// Code hashes with a warm environment (reported in heartbeats).
    pub fn warm_code(&self) -> Vec<String> {
        self.warm.lock().keys().cloned().collect()
    }

    /// Whether an environment for this code is warm (placement prefers warm workers).
    pub fn is_warm(&self, sha256: &str) -> bool {
        self.warm.lock().contains_key(sha256)
    }

    /// Reaps environments idle for longer than the idle TTL (scale to zero). Returns how many.
    pub fn reap_idle(&self) -> usize {
        let now = Instant::now();
        let mut warm = self.warm.lock();
        let idle: Vec<String> = warm
            .iter()
            .filter(|(_, used)| now.duration_since(**used) > self.idle_ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for sha in &idle {
            warm.remove(sha);
            self.wasm.evict(sha);
        }
        idle.len() + self.process.reap_idle()
    }

    async fn ensure_prepared(
        &self, runtime: Runtime, sha256: &str,
    ) -> Result<Arc<gust_runtime::wasm::Prepared>, String> {
        debug_assert_eq!(runtime, Runtime::Wasm);
        if let Some(p) = self.wasm.prepared_in_memory(sha256) {
            return Ok(p);
        }
        let lock = self.preparing.lock().entry(sha256.to_string()).or_default().clone();
        let _guard = lock.lock().await;
        // Cold start: the compiled module may be in the disk cache.
        let (wasm, sha) = (self.wasm.clone(), sha256.to_string());
        let cached = tokio::task::spawn_blocking(move || wasm.prepared(&sha))
            .await
            .map_err(|e| format!("prepare task failed: {e}"))?;
        if let Some(p) = cached {
            self.preparing.lock().remove(sha256);
            return Ok(p);
        }
        let code = self.source.artifact(sha256).await.map_err(|e| format!("cannot fetch code: {e}"))?;
        let wasm = self.wasm.clone();
        let sha = sha256.to_string();
        let prepared = tokio::task::spawn_blocking(move || wasm.prepare(&sha, &code))
            .await
            .map_err(|e| format!("prepare task failed: {e}"))?
            .map_err(|e| e.to_string());
        self.preparing.lock().remove(sha256);
        prepared
    }

    /// Runs one invocation of `deployment` and returns its outcome. Waits for a free slot.
    /// Never fails: every problem is an outcome the caller records. Observed in
    /// [`Worker::metrics`].
    pub async fn execute(
        &self, deployment: &Deployment, invocation_id: &str, payload: Bytes,
        call: &gust_core::lambda::CallContext<'_>,
    ) -> RunOutcome {
        let running = self.metrics.start(&deployment.function);
        let outcome = self.run(deployment, invocation_id, payload, call).await;
        let now = now_ms();
        let since = |t: gust_core::Millis| Duration::from_millis(now.saturating_sub(t).max(0) as u64);
        let mode = if call.is_async { metrics::Mode::Async } else { metrics::Mode::Sync };
        running.finish(&metrics::Observation {
            mode,
            succeeded: outcome.status == Status::Succeeded,
            duration: outcome.duration,
            init: outcome.init,
            queue_wait: call.received_at.map(|r| since(r).saturating_sub(outcome.duration)),
            end_to_end: call.received_at.map(since),
        });
        if let Some(sink) = self.span_sink.get() {
            export_spans(sink.as_ref(), deployment, invocation_id, call, &outcome);
        }
        outcome
    }

    /// Sends the spans of every sampled attempt from now on to `sink` (set once).
    pub fn export_spans_to(&self, sink: Arc<dyn spans::SpanSink>) {
        let _ = self.span_sink.set(sink);
    }

    /// The figures of the attempts this worker ran.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    async fn run(
        &self, deployment: &Deployment, invocation_id: &str, payload: Bytes,
        call: &gust_core::lambda::CallContext<'_>,
    ) -> RunOutcome {
        let started = Instant::now();
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return failed(ErrorKind::InitError, "the worker is shutting down".into(), started);
        };
        // Before anything looks for the code on disk: a cache collection leaves it alone now.
        let _in_use = cache::hold(&self.code_use, &deployment.code_sha256);
        if deployment.spec.runtime.is_process() {
            return self.execute_process(deployment, invocation_id, payload, call, started).await;
        }
        // A cold start: the first run of this code here since it was last reaped (its init
        // loads the module, from memory when the upload prepared it, else from the disk cache,
        // or compiles it).
        let cold = !self.warm.lock().contains_key(deployment.code_sha256.as_str());
        let loading = Instant::now();
        let prepared = match self.ensure_prepared(deployment.spec.runtime, &deployment.code_sha256).await {
            Ok(p) => p,
            Err(message) => return failed(ErrorKind::InitError, message, started),
        };
        let init = cold.then(|| loading.elapsed());
        {
            let mut warm = self.warm.lock();
            match warm.get_mut(deployment.code_sha256.as_str()) {
                Some(used) => *used = Instant::now(),
                None => {
                    warm.insert(deployment.code_sha256.clone(), Instant::now());
                }
            }
        }
        let spec = &deployment.spec;
        let label = deployment.resolved.label();
        let outcome = self
            .wasm
            .run(
                &prepared,
                RunRequest {
                    function: &deployment.function,
                    version_label: &label,
                    invocation_id,
                    payload,
                    env: &spec.env,
                    memory_mb: spec.memory_mb,
                    timeout_ms: spec.timeout_ms,
                    http: call.http,
                    allowed_outbound_hosts: &spec.allowed_outbound_hosts,
                    stream: call.stream,
                    trace_id: call.trace_id,
                },
            )
            .await;
        RunOutcome { init, ..outcome }
    }

    /// Whether `deployment` serves HTTP itself (a wasi:http component), as far as this worker
    /// knows without preparing anything: its code is compiled and in memory here.
    pub fn serves_http(&self, deployment: &Deployment) -> bool {
        deployment.spec.runtime == Runtime::Wasm
            && self.wasm.prepared_in_memory(&deployment.code_sha256).is_some_and(|p| p.serves_http())
    }

    async fn execute_process(
        &self, deployment: &Deployment, invocation_id: &str, payload: Bytes,
        call: &gust_core::lambda::CallContext<'_>, started: Instant,
    ) -> RunOutcome {
        let spec = &deployment.spec;
        let task_root = match self.task_root(spec.runtime, &deployment.code_sha256).await {
            Ok(r) => r,
            Err(message) => return failed(ErrorKind::InitError, message, started),
        };
        let handler = spec.handler.clone().unwrap_or_default();
        let launch = match spec.runtime {
            Runtime::Python { .. } => Launch::Command {
                program: self.python.clone(),
                args: vec!["-m".into(), "awslambdaric".into(), handler.clone()],
            },
            Runtime::Node { .. } => match &self.node_ric {
                // The heap is capped at the function's memory; V8's reservations get room.
                Some(ric) => Launch::Command {
                    program: self.node.clone(),
                    args: vec![
                        format!("--max-old-space-size={}", spec.memory_mb),
                        ric.join("bin/index.mjs").to_string_lossy().into_owned(),
                        handler.clone(),
                    ],
                },
                None => {
                    return failed(
                        ErrorKind::InitError,
                        "nodejs runtimes need the aws-lambda-ric package: start gust with --node-ric DIR"
                            .into(),
                        started,
                    )
                }
            },
            Runtime::Provided { .. } | Runtime::Wasm => Launch::Bootstrap,
        };
        let label = deployment.resolved.label();
        let f = ProcessFunction {
            key: format!(
                "{}:{}:{}",
                deployment.function,
                deployment.resolved.encode(),
                deployment.code_sha256
            ),
            task_root,
            launch,
            function: &deployment.function,
            version: &label,
            handler: &handler,
            env: &spec.env,
            memory_mb: spec.memory_mb,
            ephemeral_storage_mb: spec.ephemeral_storage_mb,
            extra_address_space_mb: if matches!(spec.runtime, Runtime::Node { .. }) {
                NODE_ADDRESS_SPACE_MB
            } else {
                0
            },
            timeout_ms: spec.timeout_ms,
        };
        self.process.run(&f, invocation_id, payload, call).await
    }
}

fn export_spans(
    sink: &dyn spans::SpanSink, deployment: &Deployment, invocation_id: &str,
    call: &gust_core::lambda::CallContext<'_>, outcome: &RunOutcome,
) {
    let Some(trace) = call.trace_id.and_then(gust_core::trace::Trace::parse_xray) else { return };
    let version = deployment.resolved.label();
    // The error's kind only: a function's message may hold its payload's data.
    let error = match &outcome.status {
        Status::Succeeded => None,
        Status::Failed { kind, .. } => Some(kind.as_str()),
    };
    let attempt = spans::Attempt {
        function: &deployment.function,
        version: &version,
        invocation_id,
        is_async: call.is_async,
        received_at_ms: call.received_at,
        init: outcome.init,
        duration: outcome.duration,
        error,
    };
    let made = spans::of_attempt(&trace, &attempt, rand::random);
    if !made.is_empty() {
        sink.export(made);
    }
}

/// What an attempt that just ended with `outcome` reports (Lambda's REPORT line's figures).
pub fn report(outcome: &RunOutcome, memory_mb: u32) -> gust_core::Report {
    let us = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
    let now = now_ms();
    gust_core::Report {
        started_at: now - outcome.duration.as_millis() as i64,
        duration_us: us(outcome.duration),
        init_us: outcome.init.map(us),
        memory_mb,
        max_memory_mb: outcome.max_memory_bytes.map(|b| b.div_ceil(1 << 20) as u32),
    }
}

fn now_ms() -> gust_core::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as gust_core::Millis)
}

fn failed(kind: ErrorKind, message: String, started: Instant) -> RunOutcome {
    RunOutcome::new(Status::Failed { kind, message }, Bytes::new(), String::new(), started.elapsed())
}
