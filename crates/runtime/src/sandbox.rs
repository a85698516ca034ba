//! The platform code of process isolation: the one module with `unsafe`, each block explained.
//!
//! Applied to every process environment: its own process group and group kill (see
//! `process.rs`), a private temporary directory, resource limits set between fork and exec
//! (address space from the function's memory setting, open files, processes, no core dumps),
//! and — when gust runs as root — an unprivileged user (`nobody`), provided the task root is
//! reachable by it (otherwise the environment runs as root and the server says so at start).
//! Not applied yet (and reported at start): user/pid/mount/net namespaces (a network namespace
//! needs the Runtime API bridged into it).

use nix::sys::resource::{setrlimit, Resource};

/// Open files per environment.
pub const MAX_OPEN_FILES: u64 = 1024;
/// Processes (and threads) of the sandbox user; enforced only for a non-root user.
pub const MAX_PROCESSES: u64 = 4096;
/// The unprivileged user and group environments run as when gust runs as root.
pub const SANDBOX_UID: u32 = 65534;
pub const SANDBOX_GID: u32 = 65534;
/// Headroom over the function's memory for the runtime's own mappings (interpreters map more
/// address space than they use).
pub const ADDRESS_SPACE_HEADROOM_MB: u64 = 256;

/// Limits for one environment's process.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub address_space_bytes: u64,
    pub open_files: u64,
}

impl Limits {
    pub fn for_memory_mb(memory_mb: u32) -> Self {
        Limits {
            address_space_bytes: (u64::from(memory_mb) + ADDRESS_SPACE_HEADROOM_MB) << 20,
            open_files: MAX_OPEN_FILES,
        }
    }
}

/// What isolation this host gives environments, for the start-up log.
pub fn describe() -> String {
    let root = nix::unistd::geteuid().is_root();
    format!(
        "process isolation: own process group, private temp dir, rlimits (address space, open files, processes, \
         no core){}; NOT applied: user/pid/mount/net namespaces",
        if root { ", user nobody where the task root is reachable (else root, with a warning)" } else { "" }
    )
}

/// Sets the limits on the current process. Called between fork and exec.
fn apply(limits: Limits) -> std::io::Result<()> {
    let set = |r, v| setrlimit(r, v, v).map_err(|e| std::io::Error::from_raw_os_error(e as i32));
    set(Resource::RLIMIT_AS, limits.address_space_bytes)?;
    set(Resource::RLIMIT_NOFILE, limits.open_files)?;
    set(Resource::RLIMIT_CORE, 0)?;
    set(Resource::RLIMIT_NPROC, MAX_PROCESSES)?;
    Ok(())
}

/// Whether every directory from `/` down to `dir` lets others through (so `nobody` can reach
/// a task root below it).
pub fn reachable_by_others(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(dir) = dir.canonicalize() else { return false };
    dir.ancestors().all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Whether others may execute `program` (a path, or a name looked up in `path`).
pub fn executable_by_others(program: &str, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<std::path::PathBuf> = if program.contains('/') {
        vec![program.into()]
    } else {
        path.split(':').map(|d| std::path::Path::new(d).join(program)).collect()
    };
    candidates.into_iter().filter_map(|c| c.canonicalize().ok()).find(|c| c.is_file()).is_some_and(|c| {
        std::fs::metadata(&c).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
            && c.parent().is_some_and(reachable_by_others)
    })
}

/// The user an environment should run as: `nobody` when gust runs as root and both the task
/// root and the program are reachable by it, else gust's own user.
pub fn user_for(task_root: &std::path::Path, program: &str, path: &str) -> Option<(u32, u32)> {
    let ok = nix::unistd::geteuid().is_root()
        && reachable_by_others(task_root)
        && executable_by_others(program, path);
    ok.then_some((SANDBOX_UID, SANDBOX_GID))
}

/// Arranges for `limits` to be applied to the child of `cmd` before it executes.
#[allow(unsafe_code)]
pub fn limit(cmd: &mut tokio::process::Command, limits: Limits) {
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed: it captures a `Copy` value and makes three setrlimit(2) system calls;
    // it allocates nothing (the error path converts an errno) and takes no locks.
    unsafe {
        cmd.pre_exec(move || apply(limits));
    }
}
