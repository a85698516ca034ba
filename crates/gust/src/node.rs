//! What every long-running role of this binary (`gust server`, `gust worker`) sets up the same
//! way: logging, the shutdown signals and their grace, the isolation probe, the local
//! `gust_worker::Worker`'s configuration and its cache collection. The roles depend on this
//! module and never on each other.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gust_runtime::sandbox::{Isolation, Sandbox, SandboxConfig};
use gust_worker::{CacheCollected, Worker, WorkerConfig};

use crate::host::HostRuntimes;

/// Seconds a SIGTERM (or SIGINT) waits for running work to finish before handing back the rest
/// (`--shutdown-grace` of both roles).
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 30;

/// After a second signal, how long each remaining shutdown step (handing back attempts,
/// writing queued records, deregistering) may take.
pub const FORCED_SHUTDOWN_PATIENCE: Duration = Duration::from_secs(1);

/// How logs are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message, fields, and the spans it
    /// was written in: each API request's has its `request_id`).
    Json,
}

/// Logs go to stderr, filtered by `GUST_LOG` (default `info`), as text or JSON lines.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GUST_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            builder.json().with_current_span(true).with_span_list(false).init();
            gust_api::REQUEST_SPANS.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
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
    capacity: usize, idle_ttl: Duration, data_dir: &Path, host: &HostRuntimes, sandbox: Arc<Sandbox>,
) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(capacity, idle_ttl, data_dir);
    cfg.wasm.compiler = wasm_compiler();
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

/// Untrusted modules compile in a child of this binary (`__compile`, which `main` runs), under
/// hard limits of memory and time.
fn wasm_compiler() -> gust_runtime::wasm::Compiler {
    use gust_runtime::wasm::Compiler;
    match std::env::current_exe() {
        Ok(program) => Compiler::ChildProcess { program },
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this program to compile wasm modules in a child process; compiling in process, without a memory bound");
            Compiler::InProcess
        }
    }
}

/// Collects the worker's cached code that `keep` does not name and nothing used within
/// `grace`, on a blocking thread (it walks and removes directories). A failed collection
/// collects nothing.
pub async fn collect_cache(worker: Arc<Worker>, keep: HashSet<String>, grace: Duration) -> CacheCollected {
    match tokio::task::spawn_blocking(move || worker.collect_cache(&keep, grace)).await {
        Ok(collected) => collected,
        Err(e) => {
            tracing::warn!(error = %e, "the cache collection task failed");
            CacheCollected::default()
        }
    }
}

/// Background tasks that end with their owner.
pub struct AbortOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// SIGTERM and SIGINT, counted: the first starts a graceful shutdown, a second cuts it short.
/// Installed once at start, so no signal is lost between the two.
pub struct ShutdownSignals(tokio::sync::watch::Receiver<u32>);

impl ShutdownSignals {
    pub fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let (count, received) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                count.send_modify(|n| *n += 1);
            }
        });
        Ok(ShutdownSignals(received))
    }

    /// Resolves once `n` signals have arrived.
    pub fn received(&self, n: u32) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|count| *count >= n).await;
        }
    }

    /// The grace of a graceful shutdown: waits until `drained` resolves, `grace` passes or a
    /// second signal arrives; true for the second signal (the rest of the shutdown hurries).
    pub async fn grace(&self, drained: impl std::future::Future<Output = ()>, grace: Duration) -> bool {
        let forced = tokio::select! {
            () = drained => false,
            () = tokio::time::sleep(grace) => false,
            () = self.received(2) => true,
        };
        if forced {
            tracing::warn!("second signal: exiting now");
        }
        forced
    }
}
