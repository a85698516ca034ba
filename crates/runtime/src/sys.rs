//! The system-call helpers the isolation modules share (`sandbox.rs`, `init.rs`, `cgroup.rs`,
//! `seccomp.rs`), written once: an errno as an `io::Error`, writing a file without allocating,
//! the user namespace's id maps, rlimits, becoming the sandbox user, NUL-terminated strings, and
//! running a check in a forked child.
//!
//! Everything here but [`c_string`] and [`IdMaps`]'s constructors allocates nothing and takes
//! no lock, so it may run between fork and exec in a multi-threaded process; each `unsafe`
//! block says why it is sound. This module depends on no other module of the crate.

use std::ffi::{CStr, CString};
use std::io;

use nix::errno::Errno;
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

/// A failed system call's errno as an `io::Error` (no allocation).
pub(crate) fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Writes `data` to the existing file at `path` (a `/proc/self` or cgroup file). No allocation,
/// three system calls.
#[allow(unsafe_code)]
pub(crate) fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    use nix::libc;
    // SAFETY: `path` is a NUL-terminated C string and `data` a live buffer of `data.len()`
    // bytes; the descriptor is closed on every path. No allocation or lock is involved, so this
    // is safe between fork and exec.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

/// A new user namespace's id maps, formatted ahead (nothing may allocate after a fork).
pub(crate) struct IdMaps {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

impl IdMaps {
    /// Maps this process's own uid and gid to root inside the new user namespace.
    pub(crate) fn own_ids_as_root() -> IdMaps {
        IdMaps::one(0, nix::unistd::geteuid().as_raw(), 0, nix::unistd::getegid().as_raw())
    }

    /// Maps the namespace's root back to `uid` and `gid` (the ids root stands for outside) in a
    /// user namespace nested inside it.
    pub(crate) fn nested(uid: u32, gid: u32) -> IdMaps {
        IdMaps::one(uid, 0, gid, 0)
    }

    fn one(inner_uid: u32, outer_uid: u32, inner_gid: u32, outer_gid: u32) -> IdMaps {
        IdMaps {
            uid_map: format!("{inner_uid} {outer_uid} 1\n").into_bytes(),
            gid_map: format!("{inner_gid} {outer_gid} 1\n").into_bytes(),
        }
    }

    /// Writes the maps of the user namespace this process just unshared (and denies
    /// setgroups, which an unprivileged map requires). No allocation.
    pub(crate) fn write(&self) -> io::Result<()> {
        write_file(c"/proc/self/setgroups", b"deny")?;
        write_file(c"/proc/self/uid_map", &self.uid_map)?;
        write_file(c"/proc/self/gid_map", &self.gid_map)
    }
}

/// Limits for one environment's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub address_space_bytes: u64,
    pub open_files: u64,
    /// RLIMIT_NPROC, which counts every process of the (shared) sandbox user: unlimited where
    /// each environment has a pids cgroup of its own, so one tenant's processes cannot use up
    /// another's.
    pub processes: u64,
}

impl Limits {
    pub fn for_memory_mb(memory_mb: u32) -> Self {
        Limits {
            address_space_bytes: (u64::from(memory_mb) + ADDRESS_SPACE_HEADROOM_MB) << 20,
            open_files: MAX_OPEN_FILES,
            processes: MAX_PROCESSES,
        }
    }

    /// Sets the limits (soft and hard) on the current process, and no core dumps. No
    /// allocation.
    pub(crate) fn apply(self) -> io::Result<()> {
        let set = |r, v| setrlimit(r, v, v).map_err(errno);
        set(Resource::RLIMIT_AS, self.address_space_bytes)?;
        set(Resource::RLIMIT_NOFILE, self.open_files)?;
        set(Resource::RLIMIT_CORE, 0)?;
        set(Resource::RLIMIT_NPROC, self.processes)?;
        Ok(())
    }
}

/// Becomes `uid` and `gid` for good (real, effective and saved ids), with no supplementary
/// groups. No allocation.
pub(crate) fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setgroups(&[]).map_err(errno)?;
    setresgid(gid, gid, gid).map_err(errno)?;
    setresuid(uid, uid, uid).map_err(errno)
}

/// Marks every descriptor from 3 up close-on-exec, so the coming exec closes them: only the
/// standard three (which the caller set) reach what runs next. Marked, not closed: the standard
/// library's own exec-error pipe must survive until the exec. No allocation.
#[allow(unsafe_code)]
pub(crate) fn cloexec_inherited() {
    use nix::libc;
    // SAFETY: close_range(2) with constant arguments changes descriptor flags only.
    let done =
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0;
    if done {
        return;
    }
    // Kernels before 5.11: each descriptor up to the limit.
    // SAFETY: sysconf(3) and fcntl(2) on integers; a descriptor that is not open fails EBADF.
    unsafe {
        let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(3, 1 << 20) as i32;
        for fd in 3..max {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// A NUL-terminated copy of `s` for system calls made after fork.
pub(crate) fn c_string(s: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path or argument"))
}

/// Forks a child that runs `check` and exits with its errno (0 for success), and waits for it:
/// whether the kernel lets this process do what `check` does, without this process doing it.
/// `check` runs in the child of a possibly multi-threaded process, so it must allocate nothing
/// and take no lock.
#[allow(unsafe_code)]
pub(crate) fn in_child(check: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    // SAFETY: the child only runs `check`, which the caller guarantees is async-signal-safe,
    // and leaves with `_exit`, so it is safe even though this process has other threads.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match check() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(nix::libc::EIO).clamp(1, 255),
            };
            // SAFETY: `_exit` ends the child without running destructors or atexit handlers
            // that belong to the parent's state.
            unsafe { nix::libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(WaitStatus::Exited(_, errno)) => return Err(io::Error::from_raw_os_error(errno)),
                Ok(other) => return Err(io::Error::other(format!("the test child ended as {other:?}"))),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(errno(e)),
            }
        },
        Err(e) => Err(errno(e)),
    }
}
