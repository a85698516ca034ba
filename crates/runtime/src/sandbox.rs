//! The platform code of process isolation: the one module with `unsafe`, each block explained.
//!
//! Applied to every process environment: its own process group and session-less group kill
//! (see `process.rs`), a private temporary directory, and resource limits set between fork and
//! exec: address space from the function's memory setting, open files, no core dumps.
//! Not applied yet (and reported at start): a non-root user, and user/pid/mount/net
//! namespaces (a network namespace needs the Runtime API bridged into it).

use nix::sys::resource::{setrlimit, Resource};

/// Open files per environment.
pub const MAX_OPEN_FILES: u64 = 1024;
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
        "process isolation: own process group, private temp dir, rlimits (address space, open files, no core); \
         NOT applied: namespaces{}",
        if root { ", non-root user (gust runs as root: functions run as root too)" } else { "" }
    )
}

/// Sets the limits on the current process. Called between fork and exec.
fn apply(limits: Limits) -> std::io::Result<()> {
    let set = |r, v| setrlimit(r, v, v).map_err(|e| std::io::Error::from_raw_os_error(e as i32));
    set(Resource::RLIMIT_AS, limits.address_space_bytes)?;
    set(Resource::RLIMIT_NOFILE, limits.open_files)?;
    set(Resource::RLIMIT_CORE, 0)?;
    Ok(())
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
