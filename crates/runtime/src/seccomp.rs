//! The seccomp-BPF filter of function processes: "default-deny-the-dangerous", modelled on
//! Docker's default seccomp profile. Everything is allowed except the system calls that
//! administer the machine or escape the sandbox; a denied call fails with `EPERM` (and
//! `clone3` with `ENOSYS`, see below), so a runtime that probes for a feature sees an ordinary
//! permission error instead of dying.
//!
//! The filter is installed as the very last step before `execve` in the function's process
//! (after the user switch and `no_new_privs`, which an unprivileged process needs to install a
//! filter), so `execve` and everything an ordinary runtime does (Python, Node.js with its
//! threads, a shell script running curl) stay allowed. [`Filter::new`] builds the program
//! before fork (it allocates); [`Filter::install`] only makes one or two system calls, so it is
//! async-signal-safe between fork and exec.
//!
//! What is denied (see [`denied`] for the names on this architecture):
//! - mounting: `mount`, `umount2`, `pivot_root` and the new mount API (`fsopen`, `fsconfig`,
//!   `fsmount`, `fspick`, `move_mount`, `open_tree`, `open_tree_attr`, `mount_setattr`);
//! - inspecting or changing other processes: `ptrace`, `process_vm_readv`,
//!   `process_vm_writev`, `kcmp`, `pidfd_getfd`, `process_madvise`;
//! - the kernel itself: `kexec_load`, `kexec_file_load`, `reboot`, `bpf`, `perf_event_open`,
//!   `userfaultfd`, the keyring (`keyctl`, `add_key`, `request_key`), modules (`init_module`,
//!   `finit_module`, `delete_module` and the obsolete `create_module`, `get_kernel_syms`,
//!   `query_module`), the clock (`clock_settime`, `clock_adjtime`, `settimeofday`,
//!   `adjtimex`), `swapon`, `swapoff`, `acct`, `quotactl`, `quotactl_fd`, `syslog`, `vhangup`,
//!   port I/O (`iopl`, `ioperm`), file handles (`open_by_handle_at`, `name_to_handle_at`) and
//!   obsolete calls (`lookup_dcookie`, `nfsservctl`, `uselib`, `ustat`, `sysfs`, `_sysctl`);
//! - namespaces: `setns`, `unshare` (entirely), `clone` when its flags (argument 0) ask for a
//!   new namespace (`CLONE_NEWUSER`, `NEWNS`, `NEWPID`, `NEWNET`, `NEWIPC`, `NEWUTS`,
//!   `NEWCGROUP`; `CLONE_NEWTIME` cannot be passed to `clone`, whose low byte is the exit
//!   signal) — plain `clone`, which `fork` and `pthread_create` use, stays allowed;
//! - `clone3` fails with `ENOSYS`: its flags are in a structure in memory that BPF cannot read,
//!   and on `ENOSYS` glibc (and every other libc) falls back to `clone`, whose flags the filter
//!   checks. This is what Docker does;
//! - `personality` with anything but Docker's allowed values (the default `PER_LINUX`,
//!   `PER_LINUX32`, `UNAME26` and the query `0xffffffff`);
//! - `io_uring_setup`, `io_uring_enter`, `io_uring_register`: the operations of a ring are
//!   performed by the kernel without passing through seccomp. Runtimes (libuv) fall back to
//!   ordinary calls.
//!
//! The architecture is checked first: a call made with another architecture's convention
//! (`int 0x80` for i386 on x86_64), whose numbers mean other calls, kills the process. x32 calls
//! (on x86_64, numbers with bit 30 set) fail with `EPERM`. Architectures other than x86_64 and
//! aarch64 (little-endian) are not supported: [`Filter::new`] returns an `Unsupported` error.
//!
//! Cost: allowed calls only look at the architecture and the number, and never at the
//! arguments, so the kernel (5.11+) caches them as "always allowed" when the filter is
//! installed and does not run the filter for them at all. The program is a linear list of
//! comparisons (about 150 instructions), short enough not to matter on older kernels either.
//!
//! With `init.rs` and `sandbox.rs`, a module with `unsafe`: the system call that installs the
//! filter.

use std::io;

use nix::libc;

/// Offsets in `struct seccomp_data` (little-endian: the low half of an argument comes first).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = 16;

/// `AUDIT_ARCH_*` of `<linux/audit.h>`: the ELF machine, 64-bit and little-endian bits.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// The bit that marks an x32 system call on x86_64 (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The `clone` flags that make new namespaces. `CLONE_NEWTIME` (0x80) is not among them: only
/// `clone3` and `unshare` take it, and in `clone`'s flags that bit is part of the exit signal.
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// The `personality` values allowed (Docker's list): `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32 | UNAME26` and the query `0xffffffff`. Its argument is an `unsigned int`, so
/// only the low half of the register counts (the kernel ignores the high half).
const ALLOWED_PERSONALITIES: [u32; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// One architecture's system call numbers.
struct Arch {
    /// `std::env::consts::ARCH` of the architecture.
    rust_name: &'static str,
    audit: u32,
    /// Whether numbers with [`X32_SYSCALL_BIT`] are x32 calls to deny.
    x32: bool,
    clone: u32,
    clone3: u32,
    personality: u32,
    socket: u32,
    /// Denied outright, in the order of `names`.
    denied: &'static [u32],
    /// The names of `denied`, then the calls denied conditionally.
    names: &'static [&'static str],
}

macro_rules! arch {
    (
        $const:ident: $rust:literal, audit = $audit:expr, x32 = $x32:literal,
        clone = $clone:literal, clone3 = $clone3:literal, personality = $personality:literal,
        socket = $socket:literal,
        denied { $($name:ident = $nr:literal,)* }
    ) => {
        const $const: Arch = Arch {
            rust_name: $rust,
            audit: $audit,
            x32: $x32,
            clone: $clone,
            clone3: $clone3,
            personality: $personality,
            socket: $socket,
            denied: &[$($nr),*],
            names: &[
                $(stringify!($name),)*
                "clone (namespace flags)",
                "clone3 (ENOSYS)",
                "personality (changes)",
                "socket (AF_VSOCK)",
            ],
        };
    };
}

// From arch/x86/entry/syscalls/syscall_64.tbl. x86_64 has no `umount` and no `stime`.
arch! {
    X86_64: "x86_64", audit = AUDIT_ARCH_X86_64, x32 = true,
    clone = 56, clone3 = 435, personality = 135, socket = 41,
    denied {
        mount = 165,
        umount2 = 166,
        pivot_root = 155,
        open_tree = 428,
        move_mount = 429,
        fsopen = 430,
        fsconfig = 431,
        fsmount = 432,
        fspick = 433,
        mount_setattr = 442,
        open_tree_attr = 467,
        ptrace = 101,
        process_vm_readv = 310,
        process_vm_writev = 311,
        kcmp = 312,
        pidfd_getfd = 438,
        process_madvise = 440,
        kexec_load = 246,
        kexec_file_load = 320,
        reboot = 169,
        bpf = 321,
        perf_event_open = 298,
        userfaultfd = 323,
        keyctl = 250,
        add_key = 248,
        request_key = 249,
        init_module = 175,
        finit_module = 313,
        delete_module = 176,
        create_module = 174,
        get_kernel_syms = 177,
        query_module = 178,
        clock_settime = 227,
        clock_adjtime = 305,
        settimeofday = 164,
        adjtimex = 159,
        swapon = 167,
        swapoff = 168,
        acct = 163,
        quotactl = 179,
        quotactl_fd = 443,
        setns = 308,
        unshare = 272,
        iopl = 172,
        ioperm = 173,
        lookup_dcookie = 212,
        nfsservctl = 180,
        open_by_handle_at = 304,
        name_to_handle_at = 303,
        vhangup = 153,
        syslog = 103,
        uselib = 134,
        ustat = 136,
        sysfs = 139,
        _sysctl = 156,
        io_uring_setup = 425,
        io_uring_enter = 426,
        io_uring_register = 427,
    }
}

// From include/uapi/asm-generic/unistd.h. aarch64 has no `umount`, `stime`, port I/O, the
// obsolete module calls, `uselib`, `ustat`, `sysfs` nor `_sysctl`.
arch! {
    AARCH64: "aarch64", audit = AUDIT_ARCH_AARCH64, x32 = false,
    clone = 220, clone3 = 435, personality = 92, socket = 198,
    denied {
        mount = 40,
        umount2 = 39,
        pivot_root = 41,
        open_tree = 428,
        move_mount = 429,
        fsopen = 430,
        fsconfig = 431,
        fsmount = 432,
        fspick = 433,
        mount_setattr = 442,
        open_tree_attr = 467,
        ptrace = 117,
        process_vm_readv = 270,
        process_vm_writev = 271,
        kcmp = 272,
        pidfd_getfd = 438,
        process_madvise = 440,
        kexec_load = 104,
        kexec_file_load = 294,
        reboot = 142,
        bpf = 280,
        perf_event_open = 241,
        userfaultfd = 282,
        keyctl = 219,
        add_key = 217,
        request_key = 218,
        init_module = 105,
        finit_module = 273,
        delete_module = 106,
        clock_settime = 112,
        clock_adjtime = 266,
        settimeofday = 170,
        adjtimex = 171,
        swapon = 224,
        swapoff = 225,
        acct = 89,
        quotactl = 60,
        quotactl_fd = 443,
        setns = 268,
        unshare = 97,
        lookup_dcookie = 18,
        nfsservctl = 42,
        open_by_handle_at = 265,
        name_to_handle_at = 264,
        vhangup = 58,
        syslog = 116,
        io_uring_setup = 425,
        io_uring_enter = 426,
        io_uring_register = 427,
    }
}

const ARCHES: [&Arch; 2] = [&X86_64, &AARCH64];

/// The architecture this process runs on, if the filter supports it.
fn native() -> Option<&'static Arch> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    ARCHES.into_iter().find(|a| a.rust_name == std::env::consts::ARCH)
}

/// The system calls the filter denies, by name, for the start-up log and the docs. Calls
/// denied only with some arguments, or with another error, say so in parentheses. Empty on an
/// unsupported architecture.
pub fn denied() -> &'static [&'static str] {
    native().map_or(&[], |a| a.names)
}

/// A compiled filter, built before fork.
pub struct Filter {
    program: Box<[libc::sock_filter]>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("instructions", &self.program.len()).finish()
    }
}

impl Filter {
    /// Builds the filter for this architecture (allocates: call it before fork). An
    /// `Unsupported` error on an architecture other than x86_64 and aarch64.
    pub fn new() -> io::Result<Filter> {
        Self::build(libc::EPERM as u32)
    }

    /// The filter with `errno` as the error of denied calls (tests use an unusual one to tell
    /// the filter's denials from the kernel's own permission checks).
    fn build(errno: u32) -> io::Result<Filter> {
        let arch = native().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "no seccomp filter for the {} architecture (x86_64 and aarch64 only)",
                    std::env::consts::ARCH
                ),
            )
        })?;
        Ok(Filter { program: program(arch, errno).into_boxed_slice() })
    }

    /// Installs the filter on the calling thread (and the programs it executes).
    /// Async-signal-safe: no allocation, one or two system calls. The caller has set
    /// `no_new_privs` already (required for an unprivileged process; without it the kernel
    /// answers `EACCES`).
    #[allow(unsafe_code)]
    pub fn install(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            // `program` checks the length against BPF_MAXINSNS (4096).
            len: self.program.len() as u16,
            filter: self.program.as_ptr().cast_mut(),
        };
        let prog_ptr: *const libc::sock_fprog = &prog;
        // SAFETY: seccomp(2) reads the `sock_fprog` and the instructions it points to (both
        // live for the call; the kernel copies them and never writes through the pointer). No
        // allocation or lock is involved, so this is safe between fork and exec.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                0 as libc::c_ulong,
                prog_ptr,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(err);
        }
        // Kernels before 3.17 have no seccomp(2); prctl installs the same filter.
        // SAFETY: as above; prctl(PR_SET_SECCOMP) reads the same structure.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                prog_ptr,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// The most instructions the kernel accepts in one program (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// A small builder of classic BPF instructions.
#[derive(Default)]
struct Builder(Vec<libc::sock_filter>);

impl Builder {
    fn push(&mut self, code: u32, jt: u8, jf: u8, k: u32) {
        self.0.push(libc::sock_filter { code: code as u16, jt, jf, k });
    }

    /// A = the 32-bit word at `offset` of `struct seccomp_data`.
    fn load(&mut self, offset: u32) {
        self.push(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, offset);
    }

    /// Skips `jt` instructions if A == k, else `jf`.
    fn jeq(&mut self, k: u32, jt: u8, jf: u8) {
        self.push(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, jt, jf, k);
    }

    /// Skips `jt` instructions if A >= k, else `jf`.
    fn jge(&mut self, k: u32, jt: u8, jf: u8) {
        self.push(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, jt, jf, k);
    }

    /// Skips `jt` instructions if A & k != 0, else `jf`.
    fn jset(&mut self, k: u32, jt: u8, jf: u8) {
        self.push(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, jt, jf, k);
    }

    fn ret(&mut self, action: u32) {
        self.push(libc::BPF_RET | libc::BPF_K, 0, 0, action);
    }
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

fn errno_action(errno: u32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA)
}

/// The program. Every comparison either falls through to the next one or jumps over a single
/// `ret`, so no jump is long; the arguments are loaded only on the `clone` and `personality`
/// paths, which end in a `ret` (the accumulator never holds an argument where a number is
/// expected).
fn program(arch: &Arch, errno: u32) -> Vec<libc::sock_filter> {
    let deny = errno_action(errno);
    let mut b = Builder::default();

    // Another architecture's calling convention: its numbers mean other calls.
    b.load(DATA_ARCH);
    b.jeq(arch.audit, 1, 0);
    b.ret(KILL_PROCESS);

    b.load(DATA_NR);
    if arch.x32 {
        b.jge(X32_SYSCALL_BIT, 0, 1);
        b.ret(deny);
    }

    // clone: deny when the flags ask for a namespace. The kernel reads the low half only.
    b.jeq(arch.clone, 0, 4);
    b.load(DATA_ARG0_LOW);
    b.jset(CLONE_NAMESPACE_FLAGS, 0, 1);
    b.ret(deny);
    b.ret(ALLOW);

    // personality: allow the listed values only.
    let n = ALLOWED_PERSONALITIES.len() as u8;
    b.jeq(arch.personality, 0, n + 3);
    b.load(DATA_ARG0_LOW);
    for (i, value) in (0u8..).zip(ALLOWED_PERSONALITIES) {
        // Over the remaining comparisons and the deny, to the allow.
        b.jeq(value, n - i, 0);
    }
    b.ret(deny);
    b.ret(ALLOW);

    // socket: no AF_VSOCK, which a network namespace does not confine (it reaches the
    // hypervisor and other VMs' host).
    b.jeq(arch.socket, 0, 4);
    b.load(DATA_ARG0_LOW);
    b.jeq(libc::AF_VSOCK as u32, 0, 1);
    b.ret(deny);
    b.ret(ALLOW);

    // clone3: the flags are out of reach; ENOSYS makes the libc fall back to clone.
    b.jeq(arch.clone3, 0, 1);
    b.ret(errno_action(libc::ENOSYS as u32));

    for &nr in arch.denied {
        b.jeq(nr, 0, 1);
        b.ret(deny);
    }
    b.ret(ALLOW);

    assert!(b.0.len() <= MAX_INSTRUCTIONS, "seccomp program too long");
    b.0
}

#[cfg(test)]
mod tests {
    use std::ffi::c_char;

    use nix::libc::{c_long, c_ulong};
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    use super::*;

    // ---- The program, run by a small BPF interpreter (every architecture) ----

    /// Runs `program` on a `struct seccomp_data` the way the kernel does; panics on an
    /// instruction the filter should not contain or a jump out of the program.
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (ld, jeq, jge, jset, ret) = (
            (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
            (libc::BPF_RET | libc::BPF_K) as u16,
        );
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = program[pc];
            let jump = |taken: bool| pc + 1 + usize::from(if taken { ins.jt } else { ins.jf });
            pc = match ins.code {
                c if c == ld => {
                    let off = ins.k as usize;
                    assert!(off.is_multiple_of(4) && off + 4 <= data.len(), "load at {off}");
                    acc = u32::from_le_bytes(data[off..off + 4].try_into().unwrap());
                    pc + 1
                }
                c if c == jeq => jump(acc == ins.k),
                c if c == jge => jump(acc >= ins.k),
                c if c == jset => jump(acc & ins.k != 0),
                c if c == ret => return ins.k,
                c => panic!("unexpected instruction {c:#x} at {pc}"),
            };
            assert!(pc < program.len(), "jump out of the program");
        }
    }

    fn number(arch: &Arch, name: &str) -> u32 {
        let i = arch.names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("{name}"));
        arch.denied[i]
    }

    const DENY: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn seccomp_program_denies_every_listed_call_on_every_arch() {
        for arch in ARCHES {
            let p = program(arch, libc::EPERM as u32);
            assert!(p.len() <= MAX_INSTRUCTIONS);
            assert_eq!(arch.denied.len() + 4, arch.names.len());
            // No AF_VSOCK sockets; other families stay allowed.
            assert_eq!(run(&p, arch.audit, arch.socket, [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]), DENY);
            for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK] {
                assert_eq!(run(&p, arch.audit, arch.socket, [family as u64, 1, 0, 0, 0, 0]), ALLOW);
            }
            for (&nr, name) in arch.denied.iter().zip(arch.names) {
                assert_eq!(run(&p, arch.audit, nr, [0; 6]), DENY, "{} {name}", arch.rust_name);
                assert_eq!(run(&p, arch.audit, nr, [u64::MAX; 6]), DENY, "{name}");
            }
            let mut sorted = arch.denied.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), arch.denied.len(), "a number is listed twice");
        }
    }

    #[test]
    fn seccomp_program_lists_the_required_calls() {
        let everywhere = [
            "mount",
            "umount2",
            "pivot_root",
            "move_mount",
            "fsmount",
            "fsopen",
            "fsconfig",
            "fspick",
            "open_tree",
            "mount_setattr",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "kexec_load",
            "kexec_file_load",
            "reboot",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "init_module",
            "finit_module",
            "delete_module",
            "clock_settime",
            "clock_adjtime",
            "settimeofday",
            "adjtimex",
            "swapon",
            "swapoff",
            "acct",
            "quotactl",
            "setns",
            "unshare",
            "lookup_dcookie",
            "nfsservctl",
            "open_by_handle_at",
            "name_to_handle_at",
            "vhangup",
            "syslog",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ];
        let x86_only = [
            "iopl",
            "ioperm",
            "create_module",
            "get_kernel_syms",
            "query_module",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
        ];
        for arch in ARCHES {
            for name in everywhere {
                assert!(arch.names.contains(&name), "{} {name}", arch.rust_name);
            }
        }
        for name in x86_only {
            assert!(X86_64.names.contains(&name), "{name}");
        }
        assert_eq!(denied(), native().expect("supported test machine").names);
    }

    /// The hard-coded numbers agree with the libc crate's, where it has them.
    #[test]
    fn seccomp_numbers_match_libc() {
        let native = native().expect("supported test machine");
        let pairs: &[(&str, c_long)] = &[
            ("mount", libc::SYS_mount),
            ("umount2", libc::SYS_umount2),
            ("pivot_root", libc::SYS_pivot_root),
            ("open_tree", libc::SYS_open_tree),
            ("move_mount", libc::SYS_move_mount),
            ("fsopen", libc::SYS_fsopen),
            ("fsconfig", libc::SYS_fsconfig),
            ("fsmount", libc::SYS_fsmount),
            ("fspick", libc::SYS_fspick),
            ("mount_setattr", libc::SYS_mount_setattr),
            ("ptrace", libc::SYS_ptrace),
            ("process_vm_readv", libc::SYS_process_vm_readv),
            ("process_vm_writev", libc::SYS_process_vm_writev),
            ("kcmp", libc::SYS_kcmp),
            ("pidfd_getfd", libc::SYS_pidfd_getfd),
            ("process_madvise", libc::SYS_process_madvise),
            ("kexec_load", libc::SYS_kexec_load),
            ("kexec_file_load", libc::SYS_kexec_file_load),
            ("reboot", libc::SYS_reboot),
            ("bpf", libc::SYS_bpf),
            ("perf_event_open", libc::SYS_perf_event_open),
            ("userfaultfd", libc::SYS_userfaultfd),
            ("keyctl", libc::SYS_keyctl),
            ("add_key", libc::SYS_add_key),
            ("request_key", libc::SYS_request_key),
            ("init_module", libc::SYS_init_module),
            ("finit_module", libc::SYS_finit_module),
            ("delete_module", libc::SYS_delete_module),
            ("clock_settime", libc::SYS_clock_settime),
            ("clock_adjtime", libc::SYS_clock_adjtime),
            ("settimeofday", libc::SYS_settimeofday),
            ("adjtimex", libc::SYS_adjtimex),
            ("swapon", libc::SYS_swapon),
            ("swapoff", libc::SYS_swapoff),
            ("acct", libc::SYS_acct),
            ("quotactl", libc::SYS_quotactl),
            ("quotactl_fd", libc::SYS_quotactl_fd),
            ("setns", libc::SYS_setns),
            ("unshare", libc::SYS_unshare),
            ("lookup_dcookie", libc::SYS_lookup_dcookie),
            ("nfsservctl", libc::SYS_nfsservctl),
            ("open_by_handle_at", libc::SYS_open_by_handle_at),
            ("name_to_handle_at", libc::SYS_name_to_handle_at),
            ("vhangup", libc::SYS_vhangup),
            ("syslog", libc::SYS_syslog),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("io_uring_enter", libc::SYS_io_uring_enter),
            ("io_uring_register", libc::SYS_io_uring_register),
        ];
        #[cfg(target_arch = "x86_64")]
        let x86_only: &[(&str, c_long)] = &[
            ("iopl", libc::SYS_iopl),
            ("ioperm", libc::SYS_ioperm),
            ("uselib", libc::SYS_uselib),
            ("ustat", libc::SYS_ustat),
            ("sysfs", libc::SYS_sysfs),
            ("_sysctl", libc::SYS__sysctl),
        ];
        #[cfg(not(target_arch = "x86_64"))]
        let x86_only: &[(&str, c_long)] = &[];
        for &(name, nr) in pairs.iter().chain(x86_only) {
            assert_eq!(c_long::from(number(native, name)), nr, "{name}");
        }
        assert_eq!(c_long::from(native.clone), libc::SYS_clone);
        assert_eq!(c_long::from(native.clone3), libc::SYS_clone3);
        assert_eq!(c_long::from(native.personality), libc::SYS_personality);
    }

    #[test]
    fn seccomp_program_allows_ordinary_calls() {
        // read, write, close, mmap, mprotect, brk, rt_sigaction, futex, openat, execve,
        // execveat, prctl, getpid, wait4, socket, connect, exit_group, seccomp, epoll_pwait.
        let ordinary: [(&Arch, &[u32]); 2] = [
            (&X86_64, &[0, 1, 3, 9, 10, 12, 13, 202, 257, 59, 322, 157, 39, 61, 41, 42, 231, 317, 281]),
            (
                &AARCH64,
                &[63, 64, 57, 222, 226, 214, 134, 98, 56, 221, 281, 167, 172, 260, 198, 203, 94, 277, 22],
            ),
        ];
        for (arch, numbers) in ordinary {
            let p = program(arch, libc::EPERM as u32);
            for &nr in numbers {
                assert_eq!(run(&p, arch.audit, nr, [u64::MAX; 6]), ALLOW, "{} {nr}", arch.rust_name);
                assert_eq!(run(&p, arch.audit, nr, [0; 6]), ALLOW, "{} {nr}", arch.rust_name);
            }
        }
    }

    #[test]
    fn seccomp_program_checks_clone_flags_and_personality() {
        let sigchld = libc::SIGCHLD as u64;
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | sigchld;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | sigchld;
        let namespaces = [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ];
        for arch in ARCHES {
            let p = program(arch, libc::EPERM as u32);
            let clone = |flags: u64| run(&p, arch.audit, arch.clone, [flags, 0, 0, 0, 0, 0]);
            for flags in [sigchld, fork, thread, vfork] {
                assert_eq!(clone(flags), ALLOW, "{flags:#x}");
                // The kernel ignores the high half of clone's flags.
                assert_eq!(clone(flags | (u64::from(CLONE_NAMESPACE_FLAGS) << 32)), ALLOW);
            }
            for ns in namespaces {
                assert_eq!(clone(ns as u64 | sigchld), DENY, "{ns:#x}");
                assert_eq!(clone(ns as u64 | thread), DENY, "{ns:#x}");
            }
            for args in [[0; 6], [u64::MAX; 6]] {
                let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
                assert_eq!(run(&p, arch.audit, arch.clone3, args), enosys);
            }

            let personality = |v: u64| run(&p, arch.audit, arch.personality, [v, 0, 0, 0, 0, 0]);
            for v in [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff, u64::MAX] {
                assert_eq!(personality(v), ALLOW, "{v:#x}");
            }
            // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, PER_BSD, ADDR_COMPAT_LAYOUT.
            for v in [0x4_0000, 0x40_0000, 0x6, 0x20_0000, 0xffff_fffe] {
                assert_eq!(personality(v), DENY, "{v:#x}");
            }
        }
    }

    #[test]
    fn seccomp_program_checks_the_architecture() {
        const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
        let p = program(&X86_64, libc::EPERM as u32);
        // i386's getpid (20), which would be x86_64's writev.
        assert_eq!(run(&p, AUDIT_ARCH_I386, 20, [0; 6]), KILL_PROCESS);
        assert_eq!(run(&p, AUDIT_ARCH_AARCH64, 172, [0; 6]), KILL_PROCESS);
        // x32: getpid and execve with the x32 bit, and the x32-only numbers.
        for nr in [39, 59, 520, 545, 0x3fff_ffff] {
            assert_eq!(run(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | nr, [0; 6]), DENY);
        }
        let p = program(&AARCH64, libc::EPERM as u32);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 172, [0; 6]), KILL_PROCESS);
        assert_eq!(run(&p, AUDIT_ARCH_AARCH64, 172, [0; 6]), ALLOW);
    }

    // ---- The filter in the kernel: forked children ----

    /// The error of the marker filter: no call below returns it by itself, so getting it
    /// proves the filter (not the kernel's own permission checks) refused the call.
    const MARKER: i32 = 133; // EHWPOISON
    /// Exit statuses of a child whose set-up failed (an install failure is 100 + errno).
    const SETUP_FAILED: i32 = 250;
    const INSTALL_FAILED: i32 = 100;
    const EXEC_FAILED: i32 = 251;

    #[derive(Clone, Copy)]
    struct Setup<'a> {
        filter: Option<&'a Filter>,
        /// Switch to nobody first (when root).
        unprivileged: bool,
        no_new_privs: bool,
    }

    impl<'a> Setup<'a> {
        fn filtered(filter: &'a Filter) -> Self {
            Setup { filter: Some(filter), unprivileged: false, no_new_privs: true }
        }
    }

    /// A raw system call: 0 on success, else the errno. Async-signal-safe.
    ///
    /// # Safety
    /// The arguments must be valid for the call: integers, null, or pointers to memory that
    /// stays live and may be read or written as the call does.
    #[allow(unsafe_code)]
    unsafe fn sys(nr: c_long, args: &[c_long]) -> i32 {
        let mut a = [0 as c_long; 6];
        a[..args.len()].copy_from_slice(args);
        // SAFETY: the caller vouches for the arguments.
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if r < 0 {
            nix::errno::Errno::last_raw()
        } else {
            0
        }
    }

    /// Sets the child up: nobody, no_new_privs, the filter. Only raw system calls.
    #[allow(unsafe_code)]
    fn child_setup(setup: Setup<'_>) -> Result<(), i32> {
        // SAFETY: integer arguments only.
        unsafe {
            if setup.unprivileged && libc::geteuid() == 0 {
                let (uid, gid) = (crate::sys::SANDBOX_UID, crate::sys::SANDBOX_GID);
                if sys(libc::SYS_setgroups, &[0, 0]) != 0
                    || sys(libc::SYS_setgid, &[gid as c_long]) != 0
                    || sys(libc::SYS_setuid, &[uid as c_long]) != 0
                {
                    return Err(SETUP_FAILED);
                }
            }
            if setup.no_new_privs && sys(libc::SYS_prctl, &[libc::PR_SET_NO_NEW_PRIVS as c_long, 1]) != 0 {
                return Err(SETUP_FAILED);
            }
        }
        if let Some(filter) = setup.filter {
            filter.install().map_err(|e| INSTALL_FAILED + e.raw_os_error().unwrap_or(0))?;
        }
        Ok(())
    }

    /// Forks a child that sets itself up as `setup` says, runs `body` and exits with its
    /// result; how the child ended. The test binary is multi-threaded: the child only makes
    /// raw system calls on data prepared before the fork, and leaves with `_exit`.
    #[allow(unsafe_code)]
    fn in_child(setup: Setup<'_>, body: impl FnOnce() -> i32) -> WaitStatus {
        // SAFETY: see above; nothing in the child allocates or takes a lock.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = match child_setup(setup) {
                    Ok(()) => body(),
                    Err(code) => code,
                };
                // SAFETY: ends the child without running the parent's destructors or atexit
                // handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    status => return status.expect("waitpid"),
                }
            },
        }
    }

    fn exited(code: i32) -> impl Fn(WaitStatus) -> bool {
        move |s| matches!(s, WaitStatus::Exited(_, c) if c == code)
    }

    /// `attack` fails with `errno` under the filter, and with the marker under the marker
    /// filter (so the filter refused it, not the kernel).
    fn assert_denied(what: &str, errno: i32, attack: impl Fn() -> i32 + Copy) {
        let real = Filter::new().unwrap();
        let marker = Filter::build(MARKER as u32).unwrap();
        let status = in_child(Setup::filtered(&real), attack);
        assert!(exited(errno)(status), "{what}: expected errno {errno}, child ended {status:?}");
        let want = if errno == libc::EPERM { MARKER } else { errno };
        let status = in_child(Setup::filtered(&marker), attack);
        assert!(exited(want)(status), "{what}: expected errno {want}, child ended {status:?}");
    }

    fn ptr(s: &std::ffi::CStr) -> c_long {
        s.as_ptr() as c_long
    }

    /// clone with `flags` (and no new stack: the child continues here like after fork, and
    /// leaves at once); 0 if it worked.
    #[allow(unsafe_code)]
    fn raw_clone(flags: c_long) -> i32 {
        // SAFETY: a fork-like clone: no stack or thread pointers.
        let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
        match r {
            // SAFETY: the new child leaves at once.
            0 => unsafe { libc::_exit(0) },
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: `status` is a live int.
                unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
                0
            }
            _ => nix::errno::Errno::last_raw(),
        }
    }

    const NONEXISTENT: &std::ffi::CStr = c"/nonexistent/gust-seccomp-test";

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_denies_mounting() {
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("mount", libc::EPERM, || unsafe {
            sys(libc::SYS_mount, &[ptr(c"none"), ptr(NONEXISTENT), ptr(c"tmpfs"), 0, 0])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("umount2", libc::EPERM, || unsafe { sys(libc::SYS_umount2, &[ptr(NONEXISTENT), 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("pivot_root", libc::EPERM, || unsafe {
            sys(libc::SYS_pivot_root, &[ptr(NONEXISTENT), ptr(NONEXISTENT)])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("fsopen", libc::EPERM, || unsafe { sys(libc::SYS_fsopen, &[ptr(c"tmpfs"), 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("open_tree", libc::EPERM, || unsafe {
            sys(libc::SYS_open_tree, &[libc::AT_FDCWD as c_long, ptr(NONEXISTENT), 0])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("move_mount", libc::EPERM, || unsafe {
            sys(libc::SYS_move_mount, &[-1, ptr(c""), -1, ptr(c""), 0])
        });
    }

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_denies_unshare_and_setns() {
        for flags in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_FILES, 0] {
            // SAFETY: integer arguments.
            assert_denied("unshare", libc::EPERM, || unsafe { sys(libc::SYS_unshare, &[flags as c_long]) });
        }
        // SAFETY: integer arguments (an invalid descriptor).
        assert_denied("setns", libc::EPERM, || unsafe {
            sys(libc::SYS_setns, &[-1, libc::CLONE_NEWNET as c_long])
        });
    }

    #[test]
    fn seccomp_denies_clone_with_namespace_flags() {
        for ns in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ] {
            let flags = (ns | libc::SIGCHLD) as c_long;
            assert_denied(&format!("clone {ns:#x}"), libc::EPERM, || raw_clone(flags));
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_makes_clone3_unavailable() {
        for flags in [libc::CLONE_NEWUSER as u64, 0] {
            // struct clone_args (CLONE_ARGS_SIZE_VER0: flags, pidfd, child_tid, parent_tid,
            // exit_signal, stack, stack_size, tls).
            assert_denied("clone3", libc::ENOSYS, move || {
                let args: [u64; 8] = [flags, 0, 0, 0, libc::SIGCHLD as u64, 0, 0, 0];
                // SAFETY: `args` is a live clone_args of the size passed; a fork-like clone.
                let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), size_of_val(&args)) };
                match r {
                    // SAFETY: the new child leaves at once.
                    0 => unsafe { libc::_exit(0) },
                    r if r > 0 => 0,
                    _ => nix::errno::Errno::last_raw(),
                }
            });
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_denies_inspecting_other_processes() {
        assert_denied("ptrace(PTRACE_ATTACH, parent)", libc::EPERM, || {
            // SAFETY: integer arguments. Should the attach work (a broken filter), the parent
            // is detached and continued at once.
            unsafe {
                let parent = libc::getppid() as c_long;
                let r = sys(libc::SYS_ptrace, &[libc::PTRACE_ATTACH as c_long, parent, 0, 0]);
                if r == 0 {
                    let cont = libc::SIGCONT as c_long;
                    sys(libc::SYS_ptrace, &[libc::PTRACE_DETACH as c_long, parent, 0, cont]);
                    sys(libc::SYS_kill, &[parent, cont]);
                }
                r
            }
        });
        assert_denied("process_vm_readv", libc::EPERM, || {
            let mut buf = [0u8; 8];
            let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let iov_ptr = &iov as *const libc::iovec as c_long;
            // SAFETY: `iov` describes the live `buf`, written by the call; the remote iovec
            // names the same address in the parent (read only).
            unsafe {
                let parent = libc::getppid() as c_long;
                sys(libc::SYS_process_vm_readv, &[parent, iov_ptr, 1, iov_ptr, 1, 0])
            }
        });
        // SAFETY: integer arguments.
        assert_denied("kcmp", libc::EPERM, || unsafe {
            sys(libc::SYS_kcmp, &[libc::getpid() as c_long, libc::getppid() as c_long, 0, 0, 0])
        });
    }

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_denies_kernel_administration() {
        // Each call is also refused by the kernel itself with these arguments, should the
        // filter let it through.
        // kexec_load: a foreign architecture in the flags and too many segments.
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("kexec_load", libc::EPERM, || unsafe {
            sys(libc::SYS_kexec_load, &[0, 1000, 0, 0xdead_0000])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("kexec_file_load", libc::EPERM, || unsafe {
            sys(libc::SYS_kexec_file_load, &[-1, -1, 0, 0, 0xffff_ffff])
        });
        // reboot: wrong magic numbers.
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("reboot", libc::EPERM, || unsafe { sys(libc::SYS_reboot, &[0, 0, 0, 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("bpf", libc::EPERM, || unsafe { sys(libc::SYS_bpf, &[5, 0, 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("perf_event_open", libc::EPERM, || unsafe {
            sys(libc::SYS_perf_event_open, &[0, 0, -1, -1, 0])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("userfaultfd", libc::EPERM, || unsafe {
            sys(libc::SYS_userfaultfd, &[libc::O_CLOEXEC as c_long])
        });
        // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create = 0).
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("keyctl", libc::EPERM, || unsafe { sys(libc::SYS_keyctl, &[0, -3, 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("add_key", libc::EPERM, || unsafe { sys(libc::SYS_add_key, &[0, 0, 0, 0, 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("init_module", libc::EPERM, || unsafe {
            sys(libc::SYS_init_module, &[0, 0, ptr(c"")])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("finit_module", libc::EPERM, || unsafe {
            sys(libc::SYS_finit_module, &[-1, ptr(c""), 0])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("delete_module", libc::EPERM, || unsafe {
            sys(libc::SYS_delete_module, &[ptr(c"gust_nonexistent"), libc::O_NONBLOCK as c_long])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("clock_settime", libc::EPERM, || unsafe {
            sys(libc::SYS_clock_settime, &[libc::CLOCK_REALTIME as c_long, 0])
        });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("settimeofday", libc::EPERM, || unsafe { sys(libc::SYS_settimeofday, &[0, 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("adjtimex", libc::EPERM, || unsafe { sys(libc::SYS_adjtimex, &[0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("swapon", libc::EPERM, || unsafe { sys(libc::SYS_swapon, &[ptr(NONEXISTENT), 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("swapoff", libc::EPERM, || unsafe { sys(libc::SYS_swapoff, &[ptr(NONEXISTENT)]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("acct", libc::EPERM, || unsafe { sys(libc::SYS_acct, &[ptr(NONEXISTENT)]) });
        // syslog(SYSLOG_ACTION_SIZE_BUFFER).
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("syslog", libc::EPERM, || unsafe { sys(libc::SYS_syslog, &[10, 0, 0]) });
        // SAFETY: C strings that live for the call, null pointers and integers.
        assert_denied("open_by_handle_at", libc::EPERM, || unsafe {
            sys(libc::SYS_open_by_handle_at, &[-1, 0, 0])
        });
    }

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_denies_io_uring() {
        // SAFETY: integer arguments and null pointers.
        assert_denied("io_uring_setup", libc::EPERM, || unsafe { sys(libc::SYS_io_uring_setup, &[1, 0]) });
        // SAFETY: as above.
        assert_denied("io_uring_enter", libc::EPERM, || unsafe {
            sys(libc::SYS_io_uring_enter, &[-1, 0, 0, 0, 0, 0])
        });
    }

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_allows_only_default_personalities() {
        let real = Filter::new().unwrap();
        for query in [0xffff_ffff_u32, 0] {
            // SAFETY: an integer argument; a query, or the default this process has.
            let status = in_child(Setup::filtered(&real), || unsafe {
                sys(libc::SYS_personality, &[query as c_long])
            });
            assert!(exited(0)(status), "personality({query:#x}): {status:?}");
        }
        // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC.
        for change in [0x4_0000, 0x40_0000] {
            // SAFETY: an integer argument.
            assert_denied("personality", libc::EPERM, || unsafe { sys(libc::SYS_personality, &[change]) });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn seccomp_denies_x32_and_kills_i386() {
        const X32_GETPID: c_long = X32_SYSCALL_BIT as c_long | libc::SYS_getpid;
        // SAFETY: no arguments.
        assert_denied("x32 getpid", libc::EPERM, || unsafe { sys(X32_GETPID, &[]) });

        // getpid with i386's convention (number 20).
        #[allow(unsafe_code)]
        fn i386_getpid() -> i32 {
            let pid: i32;
            // SAFETY: `int 0x80` with eax = 20 (i386 getpid) takes no arguments and touches
            // no memory; r8-r11 are declared clobbered (the compat entry may clear them).
            unsafe {
                std::arch::asm!(
                    "int 0x80",
                    inlateout("eax") 20 => pid,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                );
            }
            i32::from(pid <= 0)
        }
        let unfiltered = Setup { filter: None, unprivileged: false, no_new_privs: true };
        let control = in_child(unfiltered, i386_getpid);
        if !exited(0)(control) {
            eprintln!("skipped: no i386 emulation on this kernel ({control:?})");
            return;
        }
        let real = Filter::new().unwrap();
        let status = in_child(Setup::filtered(&real), i386_getpid);
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "an i386 call must kill the process, child ended {status:?}"
        );
    }

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_allows_ordinary_calls_in_the_kernel() {
        let real = Filter::new().unwrap();
        let status = in_child(Setup::filtered(&real), || {
            // SAFETY: integers, C strings and pointers to live locals; the clone is fork-like (no
            // stack or thread pointers) and its child leaves at once.
            unsafe {
                if libc::syscall(libc::SYS_getpid) <= 0 {
                    return 10;
                }
                let fd = libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    c"/dev/null".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                );
                if fd < 0 || libc::syscall(libc::SYS_close, fd) != 0 {
                    return 11;
                }
                // fork as glibc does it: clone(CHILD_SETTID | CHILD_CLEARTID | SIGCHLD).
                let mut tid: libc::pid_t = 0;
                let flags = libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD;
                let tid_ptr: *mut libc::pid_t = &mut tid;
                #[cfg(target_arch = "x86_64")]
                let pid = libc::syscall(libc::SYS_clone, flags, 0, 0, tid_ptr, 0);
                #[cfg(not(target_arch = "x86_64"))]
                let pid = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, tid_ptr);
                if pid == 0 {
                    libc::_exit(7);
                }
                let mut status = 0;
                if pid < 0 || libc::waitpid(pid as libc::pid_t, &mut status, 0) != pid as libc::pid_t {
                    return 12;
                }
                if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 7 {
                    return 13;
                }
                if libc::syscall(libc::SYS_prctl, libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
                    return 14;
                }
                if libc::syscall(libc::SYS_personality, 0xffff_ffff_u32 as c_ulong) < 0 {
                    return 15;
                }
                let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                if libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts) != 0 {
                    return 16;
                }
            }
            0
        });
        assert!(exited(0)(status), "child ended {status:?}");
    }

    /// Executes `argv` (built before the fork) in a child set up as `setup`; how it ended.
    #[allow(unsafe_code)]
    fn exec_in_child(setup: Setup<'_>, argv: &[*const c_char]) -> WaitStatus {
        assert!(argv.last().is_some_and(|p| p.is_null()));
        let envp: [*const c_char; 3] =
            [c"PATH=/usr/bin:/bin".as_ptr(), c"HOME=/tmp".as_ptr(), std::ptr::null()];
        in_child(setup, || {
            // SAFETY: `argv` and `envp` are null-terminated arrays of C strings that live
            // until the exec.
            unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
            EXEC_FAILED
        })
    }

    #[test]
    fn seccomp_filtered_child_can_exec_a_shell() {
        let real = Filter::new().unwrap();
        let argv = [
            c"/bin/sh".as_ptr(),
            c"-c".as_ptr(),
            c"echo ok | cat >/dev/null && ls / >/dev/null && (exit 0)".as_ptr(),
            std::ptr::null(),
        ];
        let status = exec_in_child(Setup::filtered(&real), &argv);
        assert!(exited(0)(status), "sh ended {status:?}");
        // The filter is inherited: the shell's own children are refused too.
        let argv = [c"/bin/sh".as_ptr(), c"-c".as_ptr(), c"exec unshare -U true".as_ptr(), std::ptr::null()];
        let unshare_exists = std::path::Path::new("/usr/bin/unshare").exists();
        if unshare_exists {
            let status = exec_in_child(Setup::filtered(&real), &argv);
            assert!(!exited(0)(status), "unshare -U worked under the filter: {status:?}");
        }
    }

    /// Real runtimes with threads (glibc tries clone3 first, then falls back to clone) and
    /// subprocesses keep working. Skipped where the runtime is not installed.
    #[test]
    fn seccomp_filtered_runtimes_start_threads_and_processes() {
        let real = Filter::new().unwrap();
        let python = [
            c"/usr/bin/python3".as_ptr(),
            c"-c".as_ptr(),
            c"import threading, subprocess\n\
              t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
              subprocess.run(['/bin/sh', '-c', 'exit 0'], check=True)\n\
              open('/dev/null').read()"
                .as_ptr(),
            std::ptr::null(),
        ];
        let node = [
            c"/usr/bin/node".as_ptr(),
            c"-e".as_ptr(),
            c"const { Worker } = require('worker_threads');\n\
              const w = new Worker('require(\"worker_threads\").parentPort.postMessage(42)', { eval: true });\n\
              w.on('message', (m) => {\n\
                if (m !== 42) process.exit(3);\n\
                require('child_process').execFileSync('/bin/sh', ['-c', 'exit 0']);\n\
                require('fs').readFileSync('/dev/null');\n\
                process.exit(0);\n\
              });"
            .as_ptr(),
            std::ptr::null(),
        ];
        for (path, argv) in [("/usr/bin/python3", &python[..]), ("/usr/bin/node", &node[..])] {
            if !std::path::Path::new(path).exists() {
                eprintln!("skipped: no {path}");
                continue;
            }
            let status = exec_in_child(Setup::filtered(&real), argv);
            assert!(exited(0)(status), "{path} ended {status:?}");
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn seccomp_installs_in_an_unprivileged_process() {
        let marker = Filter::build(MARKER as u32).unwrap();
        let nobody = Setup { filter: Some(&marker), unprivileged: true, no_new_privs: true };
        let status = in_child(nobody, || {
            // SAFETY: no arguments, then an integer argument.
            unsafe {
                if libc::geteuid() == 0 {
                    return 20;
                }
                sys(libc::SYS_unshare, &[libc::CLONE_NEWUSER as c_long])
            }
        });
        assert!(exited(MARKER)(status), "child ended {status:?}");
        let argv = [c"/bin/sh".as_ptr(), c"-c".as_ptr(), c"echo ok >/dev/null".as_ptr(), std::ptr::null()];
        let status = exec_in_child(nobody, &argv);
        assert!(exited(0)(status), "sh ended {status:?}");
        // Without no_new_privs the kernel refuses an unprivileged process's filter.
        let without = Setup { no_new_privs: false, ..nobody };
        let status = in_child(without, || 0);
        assert!(exited(INSTALL_FAILED + libc::EACCES)(status), "child ended {status:?}");
    }

    #[test]
    fn seccomp_denied_names_are_unique() {
        let names = denied();
        assert!(!names.is_empty());
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(!names.contains(&"execve") && !names.contains(&"prctl"));
    }
}
