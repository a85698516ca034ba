//! The WebAssembly runtime: WASI preview 1 command modules on wasmtime.
//!
//! A function is a command module: the event arrives on stdin, the result is what it writes on
//! stdout, stderr is its log, and exit code 0 means success. Each invocation gets a fresh
//! instance (a command's `_start` runs once) from a pre-linked `InstancePre`, in a slot of the
//! pooling allocator, so a "warm environment" for wasm is a compiled, linked module.
//!
//! Isolation: no preopened directories (no host filesystem), no sockets, only the function's
//! environment variables. Limits: memory by a `ResourceLimiter` from the function's memory
//! setting; time by a wall-clock deadline on the whole invocation, host calls included;
//! compilation of an untrusted module by [`CompileLimits`], in a child process of its own
//! ([`Compiler::ChildProcess`], see `wasm/compile.rs`).
//!
//! Execution is async: a guest runs on a fiber on the caller's tokio worker thread (no thread
//! hand-off on the hot path) and yields back to the scheduler every epoch tick (a ticker
//! thread advances the engine's epoch), so a long-running function never holds a worker
//! thread for more than one tick; past its timeout the same callback interrupts it.
//! The epoch check only runs in wasm code, so a guest blocked in a host call (`poll_oneoff`
//! sleeping) is stopped by a tokio timer instead, registered the first time the guest yields
//! to tokio: an invocation that finishes without yielding (the common, short one) never is.
//! Every WASI host call either returns at once (stdin and stdout are memory pipes, stderr a
//! tail buffer) or waits as a tokio future; none blocks the thread, since blocking the thread
//! (`allow_blocking_current_thread`) would put a sleep out of the timer's reach.

mod compile;
mod http;
mod outbound;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gust_core::limits::{MAX_CODE_BYTES, MAX_LOG_BYTES, MAX_MEMORY_MB, MAX_RESULT_BYTES};
use gust_core::ErrorKind;
use parking_lot::{Condvar, Mutex};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::{PrepareError, RunOutcome, RunRequest, Status, TailBuffer};

/// How often the engine's epoch advances: the longest a guest runs before yielding to the
/// scheduler.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Concurrent wasm instances the pooling allocator has slots for.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;
/// Bytes of each pooled memory, table and stack reset in place (memset) when a slot is freed.
const POOL_KEEP_RESIDENT: usize = 64 * 1024;
/// Freed slots whose pages are decommitted together (one madvise round instead of many).
const POOL_DECOMMIT_BATCH: usize = 16;
/// Wasm stack size: ample for compiled C, Zig and Rust guests.
const WASM_STACK_BYTES: usize = 1024 * 1024;
/// Largest module compiled: the code upload limit. A lower wasm-specific figure would refuse
/// real toolchain output (Go and .NET modules run to tens of MB); the function body and time
/// bounds below are what stop a module built to be expensive.
pub const DEFAULT_MAX_MODULE_BYTES: usize = MAX_CODE_BYTES;
/// Largest function body compiled. The validator alone allows 7.6 MB, and Cranelift's time
/// and memory grow faster than linearly with one function's size when the function is built
/// for it (thousands of locals live across thousands of blocks: a 355 KB body took 30 s and
/// 1.6 GB, a 1.4 MB one 400 s and 6 GB); ordinary code compiles at MBs per second, and
/// compilers' largest functions (an interpreter's dispatch loop) are a few hundred KB.
pub const DEFAULT_MAX_FUNCTION_BODY_BYTES: usize = 512 * 1024;
/// Longest a module may take to compile before it is refused. Ordinary code compiles at
/// several MB per second on one core, so a module of the largest size fits.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Compilations running at once: each holds a core (and, in process, compilations that
/// overran their time count until they end).
pub const DEFAULT_MAX_CONCURRENT_COMPILES: usize = 2;
/// Address space of the compiler child. It holds the module, one function's compiler state at
/// a time and the compiled code so far: about 35 MB per MB of dense code plus 50 MB (a 1 MB
/// module fits in 96 MB, a 10 MB one in 384 MB; the largest allowed, 50 MB, peaked at 1.6 GB
/// resident and compiled within 2 GiB in 47 s). Modules built to make the compiler allocate
/// need GBs for a few KB (see `DEFAULT_MAX_FUNCTION_BODY_BYTES`).
pub const DEFAULT_COMPILE_MEMORY_BYTES: u64 = 2 << 30;

/// Bounds on compiling an untrusted module at prepare; a module beyond them is refused with
/// [`PrepareError::TooComplex`].
///
/// With [`Compiler::ChildProcess`] every bound is hard: the child is killed at its deadline,
/// its allocations fail past `max_memory_bytes`, and every path reaps it before `prepare`
/// returns, so a refused module leaves nothing running. With [`Compiler::InProcess`] only
/// the caller's wait is bounded: a thread cannot be stopped, so one that overruns its time is
/// abandoned, its result discarded, and keeps its core, its slot and its memory (no cap at
/// all) until it ends, which for a module built to be slow can be minutes or more.
#[derive(Debug, Clone)]
pub struct CompileLimits {
    pub max_module_bytes: usize,
    pub max_function_body_bytes: usize,
    /// Wall time of one compilation, not counting the wait for a free compilation slot (which
    /// is bounded by the same duration, then refused with [`PrepareError::Busy`]).
    pub timeout: Duration,
    pub max_concurrent: usize,
    /// Address space of the compiler child (RLIMIT_AS; not enforced in process).
    pub max_memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            max_function_body_bytes: DEFAULT_MAX_FUNCTION_BODY_BYTES,
            timeout: DEFAULT_COMPILE_TIMEOUT,
            max_concurrent: DEFAULT_MAX_CONCURRENT_COMPILES,
            max_memory_bytes: DEFAULT_COMPILE_MEMORY_BYTES,
        }
    }
}

/// Where modules are compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiler {
    /// In a child process, `PROGRAM __compile` (the gust binary, whose `main` runs
    /// [`compile_main`] for it), under hard limits of memory, CPU and wall time: for untrusted
    /// modules, and so what servers and workers use.
    ChildProcess { program: PathBuf },
    /// On a thread of this process, bounded only in the caller's wait (see
    /// [`CompileLimits`]): for trusted modules (tests of this crate, examples) and programs
    /// that have no `__compile` entry point.
    InProcess,
}

#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Where compiled modules are cached (`<sha256>-<engine hash>.cwasm`).
    pub cache_dir: PathBuf,
    /// Slots in the pooling allocator: the most wasm invocations running at once.
    pub max_instances: u32,
    pub compile_limits: CompileLimits,
    pub compiler: Compiler,
    /// Whether components' outgoing requests may reach loopback and private addresses
    /// (`--allow-private-outbound`; see [`outbound`]).
    pub allow_private_outbound: bool,
}

/// The first argument that makes a program run [`compile_main`] (see [`Compiler`]).
pub const COMPILE_SUBCOMMAND: &str = compile::SUBCOMMAND;

/// The compiler child, `PROGRAM __compile MAX_MODULE_BYTES`: reads a module on stdin, writes
/// the compiled module on stdout, returns the process's exit code. `args` are the arguments
/// after [`COMPILE_SUBCOMMAND`]. A program that names itself in [`Compiler::ChildProcess`]
/// calls this from `main` before parsing its own arguments.
pub fn compile_main(args: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    compile::main(args)
}

/// The engine settings that shape compiled code, shared by the runtime's engine and the
/// compiler child: a compiled module loads only into an engine that agrees with the one that
/// compiled it (wasmtime checks). The allocation strategy is not among them (wasmtime leaves
/// it out of its compatibility check), so the child does without the pooling allocator and
/// its address-space reservations.
fn compile_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        // One function at a time per compilation: an untrusted module then holds one core
        // and one function's compiler state, whatever the machine (see `CompileLimits`).
        .parallel_compilation(false);
    config
}

/// What a wasm instance's store holds.
struct Host {
    wasi: WasiP1Ctx,
    limits: MemoryLimit,
}

/// Caps linear memory at the function's memory setting and remembers when it refused.
struct MemoryLimit {
    max_bytes: usize,
    exceeded: bool,
    /// The largest linear memory granted (the initial one included: wasmtime asks for it too).
    peak: usize,
}

impl MemoryLimit {
    fn new(memory_mb: u32) -> Self {
        MemoryLimit { max_bytes: (memory_mb as usize) << 20, exceeded: false, peak: 0 }
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self, _current: usize, desired: usize, _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            // Trap rather than return -1: a guest allocator that ignores failure would corrupt
            // itself, and the user deserves "out of memory" rather than a confusing crash.
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} MB exceeded (wanted {} bytes)",
                self.max_bytes >> 20,
                desired
            )));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self, _current: usize, desired: usize, _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Counts compilations in flight against [`CompileLimits::max_concurrent`].
struct CompileSlots {
    running: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl CompileSlots {
    /// Waits until `until` for a free slot.
    fn acquire(self: &Arc<Self>, until: Instant) -> Option<CompileSlot> {
        let mut running = self.running.lock();
        while *running >= self.max {
            if self.freed.wait_until(&mut running, until).timed_out() && *running >= self.max {
                return None;
            }
        }
        *running += 1;
        Some(CompileSlot(self.clone()))
    }
}

/// One compilation's slot, given back when the compilation ends (not when its caller stops
/// waiting for it).
struct CompileSlot(Arc<CompileSlots>);

impl Drop for CompileSlot {
    fn drop(&mut self) {
        *self.0.running.lock() -= 1;
        self.0.freed.notify_one();
    }
}

/// The size of the largest function body in a module, read from its code section without
/// validating anything else; `None` if the bytes are not laid out as a module (the validator
/// then says why). Cheap: it skips from section to section and body to body.
fn largest_function_body(bytes: &[u8]) -> Option<usize> {
    const CODE_SECTION: u8 = 10;
    let mut rest = bytes.strip_prefix(b"\0asm\x01\0\0\0")?;
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, after_size) = leb128_u32(after_id)?;
        let (section, after_section) = after_size.split_at_checked(size)?;
        if id == CODE_SECTION {
            let (count, mut bodies) = leb128_u32(section)?;
            let mut largest = 0;
            for _ in 0..count {
                let (len, body) = leb128_u32(bodies)?;
                largest = largest.max(len);
                bodies = body.get(len..)?;
            }
            return Some(largest);
        }
        rest = after_section;
    }
    Some(0)
}

/// An unsigned LEB128 number of at most 5 bytes (a wasm `u32`) and the bytes after it.
fn leb128_u32(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(5).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, &bytes[i + 1..]));
        }
    }
    None
}

/// Code compiled and linked, ready to instantiate: a WASI command module, or a wasi:http
/// component ([`http`]).
pub struct Prepared {
    kind: PreparedKind,
}

impl Prepared {
    /// Whether this is a wasi:http component, which serves a request as it came.
    pub fn serves_http(&self) -> bool {
        matches!(self.kind, PreparedKind::Http(_))
    }
}

enum PreparedKind {
    Command(InstancePre<Host>),
    Http(wasmtime_wasi_http::p2::bindings::ProxyPre<http::HttpHost>),
}

/// Whether `bytes` are a WebAssembly component (layer 1) rather than a core module.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<Host>,
    http_linker: wasmtime::component::Linker<http::HttpHost>,
    cache_dir: PathBuf,
    engine_hash: String,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    compile_limits: CompileLimits,
    compiler: Compiler,
    compile_slots: Arc<CompileSlots>,
    allow_private_outbound: bool,
}

impl WasmRuntime {
    /// Node start: builds the engine with the pooling allocator and starts the epoch ticker.
    pub fn new(cfg: WasmConfig) -> Result<Arc<Self>, PrepareError> {
        let internal = |e: wasmtime::Error| PrepareError::Internal(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(cfg.max_instances)
            .total_memories(cfg.max_instances)
            .total_tables(cfg.max_instances)
            .total_stacks(cfg.max_instances)
            .max_memory_size((MAX_MEMORY_MB as usize) << 20)
            .table_elements(100_000)
            // Resetting a small slot with memset is cheaper than madvise, which costs a TLB
            // shoot-down on every core; bigger slots are decommitted in batches.
            .linear_memory_keep_resident(POOL_KEEP_RESIDENT)
            .table_keep_resident(POOL_KEEP_RESIDENT)
            .async_stack_keep_resident(POOL_KEEP_RESIDENT)
            // Where the kernel offers PAGEMAP_SCAN (Linux 6.7+), only the pages a guest made
            // resident are reset, so a guest that touched little of its memory costs little
            // (a no-op's reset was a 64 KiB memset, 6% of a warm invocation's time).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(POOL_DECOMMIT_BATCH);
        let mut config = compile_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(internal)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi).map_err(internal)?;
        // Components get the proxy world only: clocks, random, stdio, io and http.
        let mut http_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi_http::p2::add_to_linker_async(&mut http_linker).map_err(internal)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());
        std::fs::create_dir_all(&cfg.cache_dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                // Compiled tenants' code: only gust reads it.
                std::fs::set_permissions(&cfg.cache_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| PrepareError::Internal(format!("create {}: {e}", cfg.cache_dir.display())))?;
        let rt = Arc::new(WasmRuntime {
            engine,
            linker,
            http_linker,
            cache_dir: cfg.cache_dir,
            engine_hash,
            prepared: Mutex::new(HashMap::new()),
            compile_slots: Arc::new(CompileSlots {
                running: Mutex::new(0),
                freed: Condvar::new(),
                max: cfg.compile_limits.max_concurrent.max(1),
            }),
            compile_limits: cfg.compile_limits,
            compiler: cfg.compiler,
            allow_private_outbound: cfg.allow_private_outbound,
        });
        let weak = Arc::downgrade(&rt);
        std::thread::Builder::new()
            .name("gust-wasm-epoch".into())
            .spawn(move || {
                while let Some(rt) = weak.upgrade() {
                    rt.engine.increment_epoch();
                    drop(rt);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| PrepareError::Internal(format!("spawn epoch ticker: {e}")))?;
        Ok(rt)
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir.join(format!("{sha256}-{}.cwasm", self.engine_hash))
    }

    /// Validates bytes as a WASI command module without keeping anything.
    pub fn validate(&self, bytes: &[u8]) -> Result<(), PrepareError> {
        if is_component(bytes) {
            // Validated as it compiles (in the compiler child, within its limits).
            return Ok(());
        }
        Module::validate(&self.engine, bytes).map_err(|e| PrepareError::Invalid(format!("{e:#}")))
    }

    /// The prepared module for a code hash if it is in memory (cheap: the hot path).
    pub fn prepared_in_memory(&self, sha256: &str) -> Option<Arc<Prepared>> {
        self.prepared.lock().get(sha256).cloned()
    }

    /// The prepared module for a code hash if it is in memory or in the disk cache. May read
    /// and map a compiled module: call it from a blocking thread.
    pub fn prepared(&self, sha256: &str) -> Option<Arc<Prepared>> {
        if let Some(p) = self.prepared_in_memory(sha256) {
            return Some(p);
        }
        let path = self.cache_path(sha256);
        if !path.exists() {
            return None;
        }
        match self.load_cached(&path) {
            Ok(code) => self.link(sha256, code).ok(),
            Err(e) => {
                tracing::warn!(%sha256, error = %e, "discarding unreadable compiled module cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    #[allow(unsafe_code)]
    fn load_cached(&self, path: &Path) -> wasmtime::Result<Compiled> {
        // SAFETY: the file was produced by `Engine::precompile_module` of an engine built from
        // `compile_config` (in gust's own compiler child, `gust __compile`, or in process),
        // with the same compatibility hash (it is in the file name), and written by `prepare`
        // with an atomic rename, inside gust's data directory, which gust trusts as much as
        // its own binary. The child only ever returns what `precompile_module` gave it; a
        // child that failed is never read from. (The child bounds resources, it is not a trust
        // boundary: a compiler subverted by its input could answer anything, as it could
        // have done anything in process before.) wasmtime additionally checks the header and
        // engine settings.
        unsafe {
            match Engine::detect_precompiled_file(path)? {
                Some(wasmtime::Precompiled::Component) => {
                    wasmtime::component::Component::deserialize_file(&self.engine, path)
                        .map(Compiled::Component)
                }
                _ => Module::deserialize_file(&self.engine, path).map(Compiled::Module),
            }
        }
    }

    /// Prepare phase: compiles `bytes` (whose sha256 is `sha256`) once within the
    /// [`CompileLimits`], caches the compiled code on disk and the linked module in memory.
    /// Refuses modules that are not commands. Blocks for up to twice the compile timeout (a
    /// free slot, then the compilation): call it from a blocking thread.
    pub fn prepare(&self, sha256: &str, bytes: &[u8]) -> Result<Arc<Prepared>, PrepareError> {
        if let Some(p) = self.prepared(sha256) {
            return Ok(p);
        }
        let compiled = self.compile(bytes)?;
        let path = self.cache_path(sha256);
        // Unique per call: a deploy and a cold start may prepare the same code at once.
        static TMP_SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self.cache_dir.join(format!(".tmp-{sha256}-{}-{seq}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&compiled)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            // A full disk (or any failure) leaves no partial module behind.
            let _ = std::fs::remove_file(&tmp);
            let what = format!("write compiled module: {e}");
            if crate::is_out_of_space(&e) {
                PrepareError::NoSpace(what)
            } else {
                PrepareError::Internal(what)
            }
        })?;
        let code = self.load_cached(&path).map_err(|e| PrepareError::Internal(format!("{e:#}")))?;
        self.link(sha256, code)
    }

    /// Validates and compiles an untrusted module within the [`CompileLimits`], where the
    /// [`Compiler`] says.
    fn compile(&self, bytes: &[u8]) -> Result<Vec<u8>, PrepareError> {
        let limits = &self.compile_limits;
        if bytes.len() > limits.max_module_bytes {
            return Err(PrepareError::TooComplex(format!(
                "it is {} bytes, over the limit of {} bytes",
                bytes.len(),
                limits.max_module_bytes
            )));
        }
        if let Some(largest) = largest_function_body(bytes) {
            if largest > limits.max_function_body_bytes {
                return Err(PrepareError::TooComplex(format!(
                    "a function body is {largest} bytes, over the limit of {} bytes",
                    limits.max_function_body_bytes
                )));
            }
        }
        let Some(slot) = self.compile_slots.acquire(Instant::now() + limits.timeout) else {
            return Err(PrepareError::Busy(format!(
                "{} compilations are already running; try again later",
                self.compile_slots.max
            )));
        };
        match &self.compiler {
            Compiler::ChildProcess { program } => {
                let compiled = compile::in_child(program, bytes, limits);
                // Given back only now: the child has been reaped.
                drop(slot);
                compiled
            }
            Compiler::InProcess => self.compile_in_process(slot, bytes),
        }
    }

    /// Compiles on a thread of its own, so that the caller can give up on it; a thread cannot
    /// be stopped, so one that overruns finishes in the background, its result discarded, and
    /// keeps its compilation slot until then.
    fn compile_in_process(&self, slot: CompileSlot, bytes: &[u8]) -> Result<Vec<u8>, PrepareError> {
        let limits = &self.compile_limits;
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let (engine, code) = (self.engine.clone(), bytes.to_vec());
        std::thread::Builder::new()
            .name("gust-wasm-compile".into())
            .spawn(move || {
                let _slot = slot;
                // Precompiling validates first: invalid code fails fast.
                let compiled = match is_component(&code) {
                    true => engine.precompile_component(&code),
                    false => engine.precompile_module(&code),
                };
                let compiled = compiled.map_err(|e| format!("{e:#}"));
                // The caller may have given up and gone: nothing to do then.
                let _ = done.send(compiled);
            })
            .map_err(|e| PrepareError::Internal(format!("spawn a compiler thread: {e}")))?;
        match result.recv_timeout(limits.timeout) {
            Ok(compiled) => compiled.map_err(PrepareError::Invalid),
            Err(RecvTimeoutError::Timeout) => {
                Err(PrepareError::TooComplex(format!("it did not compile within {:?}", limits.timeout)))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(PrepareError::Internal("the compiler thread panicked".into()))
            }
        }
    }

    fn link(&self, sha256: &str, code: Compiled) -> Result<Arc<Prepared>, PrepareError> {
        let module = match code {
            Compiled::Module(m) => m,
            Compiled::Component(c) => {
                let refused = |e: wasmtime::Error| {
                    PrepareError::NotACommand(format!(
                        "a wasm component must target the wasi:http/proxy world (export wasi:http/incoming-handler@0.2; import nothing else): {e:#}"
                    ))
                };
                let pre = self.http_linker.instantiate_pre(&c).map_err(refused)?;
                let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(refused)?;
                let prepared = Arc::new(Prepared { kind: PreparedKind::Http(pre) });
                self.prepared.lock().insert(sha256.to_string(), prepared.clone());
                return Ok(prepared);
            }
        };
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
            _ => return Err(PrepareError::NotACommand("it must export a `_start` function".into())),
        }
        let pre =
            self.linker.instantiate_pre(&module).map_err(|e| PrepareError::NotACommand(format!("{e:#}")))?;
        let prepared = Arc::new(Prepared { kind: PreparedKind::Command(pre) });
        self.prepared.lock().insert(sha256.to_string(), prepared.clone());
        Ok(prepared)
    }

    /// Forgets an in-memory prepared module (the disk cache stays).
    pub fn evict(&self, sha256: &str) {
        self.prepared.lock().remove(sha256);
    }

    /// Run phase: runs one invocation on the calling task.
    ///
    /// Cost: one store and WASI context (a few small allocations), one instantiation from the
    /// pool (copy-on-write memory init, a few µs), one fiber switch in and out, the guest's own
    /// work. No thread hand-off, no store round trips; the payload is shared (`Bytes`), not
    /// copied, until the guest reads it. A tokio timer is registered only if the guest yields
    /// (it ran past an epoch tick or waits in a host call). Needs a tokio runtime with time.
    pub async fn run(&self, prepared: &Prepared, req: RunRequest<'_>) -> RunOutcome {
        let pre = match &prepared.kind {
            PreparedKind::Command(pre) => pre,
            PreparedKind::Http(pre) => return self.serve_http(pre, req).await,
        };
        let started = Instant::now();
        let stdout = MemoryOutputPipe::new(MAX_RESULT_BYTES);
        let log = LogPipe(Arc::new(Mutex::new(TailBuffer::new(MAX_LOG_BYTES))));
        let mut wasi = WasiCtxBuilder::new();
        // Already the default; stated because the timeout depends on it (module doc).
        wasi.allow_blocking_current_thread(false)
            .stdin(MemoryInputPipe::new(req.payload))
            .stdout(stdout.clone())
            .stderr(log.clone())
            .args(&[req.function])
            .envs(&[
                ("GUST_FUNCTION_NAME", req.function),
                ("GUST_FUNCTION_VERSION", req.version_label),
                ("GUST_INVOCATION_ID", req.invocation_id),
            ]);
        for (k, v) in req.env {
            wasi.env(k, v);
        }
        if let Some(t) = req.trace_id {
            wasi.env("_X_AMZN_TRACE_ID", t);
        }
        let host = Host { wasi: wasi.build_p1(), limits: MemoryLimit::new(req.memory_mb) };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limits);
        let deadline = started + Duration::from_millis(req.timeout_ms);
        interrupt_at(&mut store, deadline);

        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        };
        // The deadline of a guest blocked in a host call. `Timeout` polls the call first and
        // registers its timer only once the call is pending, so a call that ends in one poll
        // (the common, short invocation) costs no timer registration. Past the deadline the
        // call is dropped, which unwinds the guest's fiber, and the invocation ends as the
        // same interrupt a runaway loop gets.
        let result = match tokio::time::timeout_at(deadline.into(), call).await {
            Ok(result) => result,
            Err(_elapsed) => Err(wasmtime::Error::new(Trap::Interrupt)),
        };
        let duration = started.elapsed();
        let status = match result {
            Ok(()) => Status::Succeeded,
            Err(e) => classify(&e, store.data().limits.exceeded, req.memory_mb, req.timeout_ms),
        };
        let peak = store.data().limits.peak as u64;
        drop(store);
        let overflowed = matches!(&status, Status::Failed { kind: ErrorKind::ResultTooLarge, .. });
        let stdout = if overflowed { Bytes::new() } else { stdout.contents() };
        let log = log.0.lock().to_text();
        RunOutcome { max_memory_bytes: Some(peak), ..RunOutcome::new(status, stdout, log, duration) }
    }
}

/// Every epoch tick the guest yields to the scheduler, and past `deadline` it is interrupted
/// (a trap), so a runaway guest costs at most one tick per turn.
fn interrupt_at<T>(store: &mut Store<T>, deadline: Instant) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
    });
}

/// Compiled code as it came out of the cache.
enum Compiled {
    Module(Module),
    Component(wasmtime::component::Component),
}

impl WasmRuntime {
    /// Runs one invocation of a wasi:http component: the request a function URL received as it
    /// came, answered as a streamed response's prelude and body; or the request its event
    /// (Lambda's HTTP event) stands for, answered as Lambda's structured answer (see [`http`]).
    /// The same limits as a command: memory, and the timeout as a wall-clock deadline over the
    /// instantiation, the handler and its whole response body.
    async fn serve_http(
        &self, pre: &wasmtime_wasi_http::p2::bindings::ProxyPre<http::HttpHost>, req: RunRequest<'_>,
    ) -> RunOutcome {
        let started = Instant::now();
        let failed = |kind: ErrorKind, message: String, log: String| {
            RunOutcome::new(Status::Failed { kind, message }, Bytes::new(), log, started.elapsed())
        };
        // At a function URL on this worker the request comes as it is; elsewhere (a remote
        // worker, the invoke APIs) it is rebuilt from Lambda's HTTP event.
        let request = match req.http {
            Some(call) => http::request_of(call),
            None => match http::request_from_event(&req.payload) {
                Ok(r) => r,
                Err(message) => return failed(ErrorKind::FunctionError, message, String::new()),
            },
        };
        let request = http::request_body(request);
        let log = LogPipe(Arc::new(Mutex::new(TailBuffer::new(MAX_LOG_BYTES))));
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(false).stdout(log.clone()).stderr(log.clone()).envs(&[
            ("GUST_FUNCTION_NAME", req.function),
            ("GUST_FUNCTION_VERSION", req.version_label),
            ("GUST_INVOCATION_ID", req.invocation_id),
        ]);
        for (k, v) in req.env {
            wasi.env(k, v);
        }
        if let Some(t) = req.trace_id {
            wasi.env("_X_AMZN_TRACE_ID", t);
        }
        let (http_ctx, table) = http::host_resources(req.memory_mb);
        let host = http::HttpHost {
            wasi: wasi.build(),
            http: http_ctx,
            table,
            limits: MemoryLimit::new(req.memory_mb),
            hooks: outbound::Outbound::new(req.allowed_outbound_hosts, self.allow_private_outbound),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limits);
        let deadline = started + Duration::from_millis(req.timeout_ms);
        interrupt_at(&mut store, deadline);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared_call = (|| {
            use wasmtime_wasi_http::WasiHttpView as _;
            let incoming = store.data_mut().http().new_incoming_request(http::SCHEME, request)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            wasmtime::Result::<_>::Ok((incoming, out))
        })();
        let (incoming, out) = match prepared_call {
            Ok(v) => v,
            Err(e) => return failed(ErrorKind::FunctionError, format!("{e:#}"), String::new()),
        };
        // The handler runs on, writing the body, after it has sent the response's head: both
        // are driven together on this task (no hand-off to another thread).
        let guest = async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
            }
            .await;
            let limits = &store.data().limits;
            (result, limits.exceeded, limits.peak as u64)
        };
        let (direct, stream) = (req.http.is_some(), req.stream);
        let served = async {
            let response = receiver.await;
            match response {
                // Served directly: the prelude and the body, streamed if someone reads them.
                Ok(Ok(resp)) if direct => http::forward(resp, stream).await,
                Ok(Ok(resp)) => {
                    let (parts, body) = resp.into_parts();
                    http::read_body(body, MAX_RESULT_BYTES).await.map(|body| http::answer(&parts, &body))
                }
                Ok(Err(code)) => {
                    Err((ErrorKind::FunctionError, format!("the component answered an error: {code:?}")))
                }
                Err(_) => Err((ErrorKind::FunctionError, "the component never set a response".to_string())),
            }
        };
        // Past the deadline both are dropped, which unwinds the guest's fiber.
        let both = async { tokio::join!(guest, served) };
        let mut peak = None;
        let result = match tokio::time::timeout_at(deadline.into(), both).await {
            Err(_elapsed) => {
                Err(classify(&wasmtime::Error::new(Trap::Interrupt), false, req.memory_mb, req.timeout_ms))
            }
            Ok(((result, exceeded, used), served)) => {
                peak = Some(used);
                match (result, served) {
                    (Err(e), _) => Err(classify(&e, exceeded, req.memory_mb, req.timeout_ms)),
                    (_, Err((kind, message))) => Err(Status::Failed { kind, message }),
                    (Ok(()), Ok(answer)) => Ok(answer),
                }
            }
        };
        let log = log.0.lock().to_text();
        let outcome = match result {
            Ok(answer) => RunOutcome::new(Status::Succeeded, answer, log, started.elapsed()),
            Err(status) => RunOutcome::new(status, Bytes::new(), log, started.elapsed()),
        };
        RunOutcome { max_memory_bytes: peak, ..outcome }
    }
}

fn classify(e: &wasmtime::Error, memory_exceeded: bool, memory_mb: u32, timeout_ms: u64) -> Status {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return if exit.0 == 0 {
            Status::Succeeded
        } else {
            Status::Failed {
                kind: ErrorKind::FunctionError,
                message: format!("the function exited with code {}", exit.0),
            }
        };
    }
    if memory_exceeded {
        return Status::Failed {
            kind: ErrorKind::OutOfMemory,
            message: format!("the function exceeded its memory limit of {memory_mb} MB"),
        };
    }
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        return Status::Failed {
            kind: ErrorKind::Timeout,
            message: format!("the function timed out after {timeout_ms} ms"),
        };
    }
    let text = format!("{e:#}");
    if text.contains("write beyond capacity") {
        return Status::Failed {
            kind: ErrorKind::ResultTooLarge,
            message: format!("the function's output exceeded {MAX_RESULT_BYTES} bytes"),
        };
    }
    let first_line = text.lines().next().unwrap_or("trap").to_string();
    let message = match e.downcast_ref::<Trap>() {
        Some(trap) => format!("the function trapped: {trap}"),
        None => format!("the function crashed: {first_line}"),
    };
    Status::Failed { kind: ErrorKind::Crashed, message }
}

/// stderr of a guest: keeps the tail, never refuses a write (a chatty function must not fail).
#[derive(Clone)]
struct LogPipe(Arc<Mutex<TailBuffer>>);

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.0.lock().write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.lock().write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
