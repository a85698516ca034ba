//! gust's execution environments. Every runtime has three phases with different costs:
//!
//! 1. **node start** (once per process): build the engine, pools, caches.
//! 2. **prepare** (once per code hash): validate and compile the artifact; cached on disk so a
//!    restart does not compile again, and in memory while the version is in use.
//! 3. **run** (once per invocation): the hot path. Nothing expensive happens here; see the cost
//!    note at the top of [`wasm::WasmRuntime::run`].
//!
//! A failing function is an outcome value ([`Status::Failed`]), never an `Err` or a panic.
//!
//! Architecture invariant: this crate knows nothing of the store, HTTP or scheduling; wasmtime
//! is a dependency of this crate only.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use gust_core::ErrorKind;

pub mod cgroup;
pub mod init;
pub mod package;
pub mod process;
pub mod sandbox;
pub mod seccomp;
mod sys;
mod tail;
pub mod wasm;

pub use tail::TailBuffer;

/// One invocation as a runtime sees it.
#[derive(Clone)]
pub struct RunRequest<'a> {
    pub function: &'a str,
    pub version_label: &'a str,
    pub invocation_id: &'a str,
    pub payload: Bytes,
    pub env: &'a BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout_ms: u64,
    /// The HTTP request itself, for a wasi:http component at a function URL (else it is
    /// rebuilt from the event in `payload`).
    pub http: Option<&'a gust_core::lambda::HttpCall>,
    /// Where a wasi:http component may send requests (the function's config).
    pub allowed_outbound_hosts: &'a [String],
    /// Where a component's response goes as it writes it.
    pub stream: Option<&'a std::sync::Arc<dyn gust_core::lambda::ResponseStream>>,
    /// The invocation's trace in X-Ray's form, for `_X_AMZN_TRACE_ID`.
    pub trace_id: Option<&'a str>,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    Failed { kind: ErrorKind, message: String },
}

/// The outcome of running one invocation: its status, its output and its log tail.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: Status,
    /// What the function wrote on stdout (its result). Empty if the limit was exceeded.
    pub stdout: Bytes,
    /// The tail of what the function wrote on stderr.
    pub log: String,
    /// The run: from the event handed over to the answer (a cold start's init excluded).
    pub duration: Duration,
    /// A cold start's init: starting the runtime (process runtimes) or loading the module
    /// (wasm). Set by whoever did it.
    pub init: Option<Duration>,
    /// The most memory the function's environment has used, where the runtime can tell (a
    /// wasm instance's linear memory; a process environment's cgroup peak or resident high
    /// water mark).
    pub max_memory_bytes: Option<u64>,
}

impl RunOutcome {
    /// An outcome without init or memory figures.
    pub fn new(status: Status, stdout: Bytes, log: String, duration: Duration) -> Self {
        RunOutcome { status, stdout, log, duration, init: None, max_memory_bytes: None }
    }

    /// The result, or the error a caller sees. A failed function that wrote a JSON object with
    /// an `errorType` (the error body a Lambda runtime client posts; a wasm function may write
    /// one on stdout before exiting non-zero) keeps it verbatim as the runtime error.
    pub fn into_result(self) -> Result<Bytes, gust_core::FunctionErrorBody> {
        match self.status {
            Status::Succeeded => Ok(self.stdout),
            Status::Failed { kind, message } => {
                let mut body = gust_core::FunctionErrorBody::new(kind, message);
                let is_error_json = serde_json::from_slice::<serde_json::Value>(&self.stdout)
                    .is_ok_and(|v| v.get("errorType").is_some_and(|t| t.is_string()));
                if is_error_json {
                    body.runtime_error = String::from_utf8(self.stdout.to_vec()).ok();
                }
                Err(body)
            }
        }
    }
}

/// Why an artifact cannot be prepared. Reported to the deployer as a 400, except `NoSpace`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// The disk that holds prepared code (compiled modules, task roots) is full: nothing is
    /// wrong with the code, and the same code is accepted once space is freed. Nothing partly
    /// written is left behind.
    #[error("no space left on this node's disk to prepare the code: {0}")]
    NoSpace(String),
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    #[error("the module is not a WASI command: {0}")]
    NotACommand(String),
    #[error("invalid package: {0}")]
    Package(String),
    /// Beyond the bounds on compiling an untrusted module (size, function size, time).
    #[error("the module is too large or complex to compile: {0}")]
    TooComplex(String),
    /// Every compilation slot stayed taken; the same code may be accepted later.
    #[error("the compiler is busy: {0}")]
    Busy(String),
    #[error("cannot prepare the module: {0}")]
    Internal(String),
}

/// Whether an I/O error means the disk (or the user's quota on it) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::NOSPC | Errno::DQUOT))
}
