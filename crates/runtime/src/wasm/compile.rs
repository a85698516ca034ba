//! Compiling an untrusted module in a child process: `gust __compile MAX_MODULE_BYTES` reads the
//! module on stdin, compiles it with the engine settings of [`super::compile_config`] and writes
//! the compiled module (what `Engine::precompile_module` returns) on stdout.
//!
//! The child is what makes compilation bounded in every resource: it starts with an empty
//! environment, in a session of its own, with an address-space limit (so the compiler's own
//! allocations are capped), a CPU-time limit, no core dumps, no file writes, no new privileges,
//! the seccomp filter of function processes, and it dies with the thread that started it
//! (`sandbox::confine_compiler_on_exec`). Past the wall-time deadline the parent kills it, and
//! every path reaps it before returning, so a refused module leaves nothing running.
//!
//! The child must not touch the data directory or anything else on disk: it writes nothing but
//! its stdout and stderr. The parent caches what it answers. Started by gust as root, it first
//! becomes the sandbox user, before it reads a byte of the module: a compiler bug that the
//! module exploits then runs as `nobody`, under the same seccomp filter.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

use wasmtime::Engine;

use super::CompileLimits;
use crate::PrepareError;

/// The first argument that makes the gust binary run [`main`] instead of its CLI.
pub const SUBCOMMAND: &str = "__compile";

/// The child's exit codes. A child that ends otherwise (a signal, a panic) is classified by
/// [`outcome`].
mod exit {
    /// The compiled module is on stdout.
    pub const COMPILED: i32 = 0;
    /// The module does not compile; why is on stderr.
    pub const INVALID: i32 = 1;
    /// The child was used wrongly or could not set up (bad arguments, no engine); why is on
    /// stderr.
    pub const USAGE: i32 = 2;
    /// The compiler reported an allocation failure as an error rather than aborting.
    pub const OUT_OF_MEMORY: i32 = 3;
}

/// Most of the child's stderr the parent keeps: enough for a compile error.
const MAX_MESSAGE_BYTES: usize = 4096;

/// The child: compiles the module on stdin, answers on stdout, returns its exit code. `args`
/// are the arguments after [`SUBCOMMAND`].
pub fn main(mut args: impl Iterator<Item = OsString>) -> i32 {
    if nix::unistd::geteuid().is_root() {
        // Its stdin and stdout are already open: nothing it needs is lost with root.
        if let Err(e) = crate::sys::become_user(crate::sys::SANDBOX_UID, crate::sys::SANDBOX_GID) {
            return fail(exit::USAGE, &format!("cannot become the sandbox user: {e}"));
        }
    }
    let max_module_bytes = match args.next().and_then(|a| a.to_str()?.parse::<usize>().ok()) {
        Some(max) if args.next().is_none() => max,
        _ => return fail(exit::USAGE, "usage: gust __compile MAX_MODULE_BYTES < module.wasm > module.cwasm"),
    };
    let mut code = Vec::new();
    let read = std::io::stdin().lock().take(max_module_bytes as u64 + 1).read_to_end(&mut code);
    if let Err(e) = read {
        return fail(exit::USAGE, &format!("read the module: {e}"));
    }
    if code.len() > max_module_bytes {
        return fail(exit::USAGE, &format!("the module is over {max_module_bytes} bytes"));
    }
    let engine = match Engine::new(&super::compile_config()) {
        Ok(engine) => engine,
        Err(e) => return fail(exit::USAGE, &format!("build the engine: {e:#}")),
    };
    // Precompiling validates first: invalid code fails fast.
    let compiled = match super::is_component(&code) {
        true => engine.precompile_component(&code),
        false => engine.precompile_module(&code),
    };
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(e) => {
            let message = format!("{e:#}");
            let code = if is_out_of_memory(&message) { exit::OUT_OF_MEMORY } else { exit::INVALID };
            return fail(code, &message);
        }
    };
    drop(code);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&compiled).and_then(|()| stdout.flush()) {
        Ok(()) => exit::COMPILED,
        // The parent went away (it gave up): nobody to tell.
        Err(e) => fail(exit::USAGE, &format!("write the compiled module: {e}")),
    }
}

/// Writes `message` (at most [`MAX_MESSAGE_BYTES`]) on stderr and returns `code`.
fn fail(code: i32, message: &str) -> i32 {
    let _ = std::io::stderr().lock().write_all(truncated(message, MAX_MESSAGE_BYTES).as_bytes());
    code
}

fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether a compile error is the address-space limit showing through (an `mmap` refused
/// inside the compiler, as opposed to an allocation, which aborts).
fn is_out_of_memory(message: &str) -> bool {
    message.contains("Cannot allocate memory") || message.contains("os error 12")
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildEnd {
    Exited(i32),
    Signaled(i32),
    /// Killed by the parent at the wall-time deadline.
    TimedOut,
}

/// The parent: compiles `code` in `program __compile` within `limits` (size and function body
/// checks are the caller's). Blocks until the child has ended and been reaped: at most
/// `limits.timeout` and the moment a kill takes.
pub(super) fn in_child(program: &Path, code: &[u8], limits: &CompileLimits) -> Result<Vec<u8>, PrepareError> {
    let deadline = Instant::now() + limits.timeout;
    let mut cmd = Command::new(program);
    cmd.arg(SUBCOMMAND)
        .arg(limits.max_module_bytes.to_string())
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Architectures without a filter (other than x86_64 and aarch64) compile without one; the
    // rlimits still hold.
    let filter = crate::seccomp::Filter::new().ok();
    crate::sandbox::confine_compiler_on_exec(
        &mut cmd,
        crate::sandbox::CompilerLimits {
            address_space_bytes: limits.max_memory_bytes,
            cpu_seconds: cpu_seconds(limits),
        },
        filter,
    );
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        // The limit is below what the compiler needs to start at all.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOMEM) => return Err(out_of_memory(limits)),
        Err(e) => {
            return Err(PrepareError::Internal(format!("start the compiler {}: {e}", program.display())))
        }
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        unreachable!("all three are piped");
    };
    // The child cannot write more than it can hold.
    let max_output = limits.max_memory_bytes;
    let (end, compiled, message) = std::thread::scope(|scope| {
        let (done, output) = std::sync::mpsc::sync_channel(1);
        // A write fails with EPIPE if the child dies reading; its status then says why.
        let io =
            std::thread::Builder::new().name("gust-wasm-compile".into()).spawn_scoped(scope, move || {
                let _ = stdin.write_all(code);
                drop(stdin);
                let mut compiled = Vec::new();
                let _ = stdout.take(max_output).read_to_end(&mut compiled);
                let _ = done.send(compiled);
            });
        let errors =
            std::thread::Builder::new().name("gust-wasm-compile-err".into()).spawn_scoped(scope, move || {
                let mut message = Vec::new();
                let mut stderr = stderr;
                let _ = (&mut stderr).take(MAX_MESSAGE_BYTES as u64).read_to_end(&mut message);
                // Drain the rest so the child never blocks on a full pipe.
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                String::from_utf8_lossy(&message).into_owned()
            });
        let answered = match (&io, &errors) {
            (Ok(_), Ok(_)) => output.recv_timeout(deadline.saturating_duration_since(Instant::now())),
            // No thread to read its answer: stop the child (the scope then joins what started).
            _ => Err(RecvTimeoutError::Disconnected),
        };
        let timed_out = matches!(answered, Err(RecvTimeoutError::Timeout));
        if answered.is_err() {
            // SIGKILL: the child cannot outlive its deadline, whatever it is doing.
            let _ = child.kill();
        }
        let status = child.wait();
        let message = errors.ok().and_then(|e| e.join().ok()).unwrap_or_default();
        if io.is_err() {
            return Err(PrepareError::Internal("spawn a thread for the compiler's pipes".into()));
        }
        let end = match status {
            _ if timed_out => ChildEnd::TimedOut,
            Ok(status) => end_of(status),
            Err(e) => return Err(PrepareError::Internal(format!("wait for the compiler: {e}"))),
        };
        Ok((end, answered.unwrap_or_default(), message))
    })?;
    outcome(end, compiled, &message, limits)
}

fn end_of(status: ExitStatus) -> ChildEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ChildEnd::Exited(code),
        (None, Some(signal)) => ChildEnd::Signaled(signal),
        (None, None) => ChildEnd::Signaled(0),
    }
}

/// RLIMIT_CPU of the child: a backstop behind the wall-time deadline (one thread cannot use
/// more CPU time than wall time), in whole seconds, rounded up, plus one.
fn cpu_seconds(limits: &CompileLimits) -> u64 {
    limits.timeout.as_secs() + u64::from(limits.timeout.subsec_nanos() > 0) + 1
}

fn out_of_memory(limits: &CompileLimits) -> PrepareError {
    PrepareError::TooComplex(format!(
        "it needs more than {} MB of memory to compile",
        limits.max_memory_bytes >> 20
    ))
}

/// What the deployer is told about a child that ended as `end`, having written `compiled` on
/// stdout and `message` on stderr.
fn outcome(
    end: ChildEnd, compiled: Vec<u8>, message: &str, limits: &CompileLimits,
) -> Result<Vec<u8>, PrepareError> {
    use nix::libc::{SIGKILL, SIGXCPU};
    let message = message.trim();
    // What Rust's allocation failure handler prints before it aborts.
    let allocation_failed = message.contains("memory allocation of");
    match end {
        ChildEnd::Exited(exit::COMPILED) if !compiled.is_empty() => Ok(compiled),
        ChildEnd::Exited(exit::INVALID) => Err(PrepareError::Invalid(message.to_string())),
        ChildEnd::Exited(exit::OUT_OF_MEMORY) => Err(out_of_memory(limits)),
        ChildEnd::TimedOut => {
            Err(PrepareError::TooComplex(format!("it did not compile within {:?}", limits.timeout)))
        }
        ChildEnd::Signaled(SIGXCPU) => Err(PrepareError::TooComplex(format!(
            "it did not compile within {} s of CPU time",
            cpu_seconds(limits) - 1
        ))),
        // SIGKILL that the parent did not send: the kernel's OOM killer.
        ChildEnd::Signaled(SIGKILL) => Err(out_of_memory(limits)),
        ChildEnd::Signaled(_) | ChildEnd::Exited(_) if allocation_failed => Err(out_of_memory(limits)),
        ChildEnd::Signaled(signal) => {
            Err(PrepareError::Internal(format!("the compiler was stopped by signal {signal}: {message}")))
        }
        ChildEnd::Exited(code) => {
            Err(PrepareError::Internal(format!("the compiler exited with {code}: {message}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::libc::{SIGABRT, SIGKILL, SIGSEGV, SIGXCPU};

    use super::*;

    fn limits() -> CompileLimits {
        CompileLimits {
            max_memory_bytes: 64 << 20,
            timeout: Duration::from_millis(1500),
            ..CompileLimits::default()
        }
    }

    #[test]
    fn every_way_the_compiler_child_ends_is_a_prepare_error_that_says_why() {
        let l = limits();
        let too_complex = |s: &str| Err(PrepareError::TooComplex(s.into()));
        assert_eq!(outcome(ChildEnd::Exited(0), b"cwasm".to_vec(), "", &l), Ok(b"cwasm".to_vec()));
        assert_eq!(
            outcome(ChildEnd::Exited(0), Vec::new(), "", &l),
            Err(PrepareError::Internal("the compiler exited with 0: ".into())),
            "success without a module is not success"
        );
        assert_eq!(
            outcome(ChildEnd::Exited(1), Vec::new(), "failed to parse: magic header not detected\n", &l),
            Err(PrepareError::Invalid("failed to parse: magic header not detected".into())),
            "the compile error's own text"
        );
        let oom = too_complex("it needs more than 64 MB of memory to compile");
        assert_eq!(outcome(ChildEnd::Exited(3), Vec::new(), "Cannot allocate memory", &l), oom);
        assert_eq!(
            outcome(
                ChildEnd::Signaled(SIGABRT),
                Vec::new(),
                "memory allocation of 1048576 bytes failed\n",
                &l
            ),
            oom,
            "an allocation that failed under RLIMIT_AS aborts"
        );
        assert_eq!(outcome(ChildEnd::Signaled(SIGKILL), Vec::new(), "", &l), oom, "the OOM killer");
        assert_eq!(
            outcome(ChildEnd::TimedOut, Vec::new(), "", &l),
            too_complex("it did not compile within 1.5s")
        );
        assert_eq!(
            outcome(ChildEnd::Signaled(SIGXCPU), Vec::new(), "", &l),
            too_complex("it did not compile within 2 s of CPU time")
        );
        assert_eq!(
            outcome(ChildEnd::Signaled(SIGSEGV), Vec::new(), "", &l),
            Err(PrepareError::Internal("the compiler was stopped by signal 11: ".into()))
        );
        assert_eq!(
            outcome(ChildEnd::Exited(101), Vec::new(), "thread 'main' panicked at cranelift", &l),
            Err(PrepareError::Internal(
                "the compiler exited with 101: thread 'main' panicked at cranelift".into()
            ))
        );
        assert_eq!(
            outcome(ChildEnd::Exited(2), Vec::new(), "usage: gust __compile", &l),
            Err(PrepareError::Internal("the compiler exited with 2: usage: gust __compile".into()))
        );
    }

    #[test]
    fn the_cpu_limit_is_a_backstop_past_the_wall_time() {
        let with = |timeout| cpu_seconds(&CompileLimits { timeout, ..CompileLimits::default() });
        assert_eq!(with(Duration::from_secs(60)), 61);
        assert_eq!(with(Duration::from_millis(100)), 2);
        assert_eq!(with(Duration::from_millis(1500)), 3);
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("abc", 10), "abc");
    }
}

#[cfg(test)]
mod engine_tests {
    use std::hash::{Hash, Hasher};

    use super::super::{Compiler, WasmConfig, WasmRuntime};

    #[test]
    fn the_compiler_childs_engine_makes_modules_the_runtimes_engine_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WasmConfig {
            cache_dir: dir.path().join("modules"),
            max_instances: 4,
            compile_limits: super::CompileLimits::default(),
            compiler: Compiler::InProcess,
            allow_private_outbound: false,
        };
        let rt = WasmRuntime::new(cfg).unwrap();
        let child = wasmtime::Engine::new(&super::super::compile_config()).unwrap();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        child.precompile_compatibility_hash().hash(&mut hasher);
        assert_eq!(format!("{:016x}", hasher.finish()), rt.engine_hash, "same compatibility hash");
        let module = wat::parse_str("(module (func (export \"_start\")))").unwrap();
        let compiled = child.precompile_module(&module).unwrap();
        std::fs::write(rt.cache_path("child"), compiled).unwrap();
        assert!(rt.prepared("child").is_some(), "the runtime's engine loads what the child's compiled");
    }
}
