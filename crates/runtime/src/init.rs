//! The sandbox init (`gust __sandbox-init ...`): the small program that starts a function
//! inside its environment's namespaces. With `sandbox.rs`, `sys.rs`, `cgroup.rs` and
//! `seccomp.rs`, the only modules with `unsafe`. It knows nothing of `sandbox.rs` (which starts
//! it): what both need of the system (rlimits, id maps, the user switch) is in `sys.rs`.
//!
//! gust runs it (its own binary, under a hidden subcommand) in the pid, net, ipc and uts
//! namespaces (and user namespace) that the forked child unshared before exec. It
//! 1. brings up the loopback interface of the new network namespace, listens on
//!    127.0.0.1:PORT there, and forwards every connection byte for byte to the Runtime API's
//!    Unix socket on the host (keep-alive and chunked bodies pass untouched): the function's
//!    only way out of the namespace;
//! 2. forks the pid namespace's pid 1, which dies with this process (parent-death signal),
//!    makes a private mount namespace (private propagation, the environment's temp dir at
//!    /tmp, gust's data dir under an empty tmpfs with the task root bound back, a fresh /proc),
//!    and forks the function: rlimits, no new privileges, the unprivileged user (or gust's uid
//!    in a nested user namespace), the task root as working directory, then exec;
//! 3. pid 1 reaps every orphan and exits with the function's status (the kernel then kills what
//!    is left in the pid namespace); this process exits with pid 1's status.
//!
//! This process stays in the host's mount namespace, so it reaches the Runtime API's socket by
//! path. It is single-threaded (after unshare(CLONE_NEWPID) the kernel refuses new threads; the
//! bridge runs on a current-thread runtime), so its forked children may allocate.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::sys::{c_string, errno, IdMaps, Limits};

/// The first argument that makes the gust binary run [`main`] instead of its CLI.
pub const SUBCOMMAND: &str = "__sandbox-init";

/// Exit status when the init cannot set the environment up (its reason is on stderr, which
/// is the function's log).
const SETUP_FAILED: i32 = 126;
/// Connections a function may hold open to the Runtime API at once (its runtime client needs
/// one or two).
const MAX_API_CONNECTIONS: usize = 16;
/// How often the init checks that gust, its parent, is still there.
const PARENT_CHECK: std::time::Duration = std::time::Duration::from_millis(500);
/// Exit status when the function's program cannot be executed.
const EXEC_FAILED: i32 = 127;

/// Largest spec the init reads from its stdin (the function's variables, limited at deploy to
/// a few KB, Lambda's own, paths and arguments).
const MAX_SPEC_BYTES: u64 = 1024 * 1024;

/// Everything the init needs. It arrives on the init's stdin (a pipe from gust), not in its
/// arguments or environment: the function's variables are untrusted configuration and may be
/// secrets, so they are neither visible in the process list nor applied to the init (whose
/// own environment is empty); they reach only the function's execve, after the privilege drop.
/// Because the spec is read only when it arrives, gust can start an init (exec, cgroup,
/// namespaces) before it knows which function it will run: a pre-started environment.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct InitSpec {
    /// The Runtime API's Unix socket: bridged to 127.0.0.1:`api_port` in the namespace.
    pub api_socket: Option<PathBuf>,
    pub api_port: u16,
    /// Make a private mount namespace.
    pub mount: bool,
    /// Mount a fresh /proc (needs the pid namespace).
    pub proc: bool,
    /// An empty directory only gust can enter, where the environment's root is built (a
    /// tmpfs) before the init's pid 1 pivots into it.
    pub root: Option<PathBuf>,
    /// The size of the tmpfs at /tmp, in MB (the function's ephemeral storage).
    pub tmp_mb: u64,
    /// Directories the function must not see (checked by the start-up probe; the new root
    /// holds nothing it was not given).
    pub hide: Vec<PathBuf>,
    /// Bound read-only at their own paths in the new root (the task root, the runtimes' own
    /// directories).
    pub bind: Vec<PathBuf>,
    pub hostname: Option<String>,
    /// Switch to this uid and gid (gust runs as root).
    pub user: Option<(u32, u32)>,
    /// Run in a nested user namespace as this (outer) uid and gid (gust is not root).
    pub map_user: Option<(u32, u32)>,
    pub limits: Limits,
    pub cwd: PathBuf,
    /// The function's environment, `KEY=VALUE` each.
    pub env: Vec<std::ffi::CString>,
    /// Check the set-up instead of executing the program (the start-up probe).
    pub probe: bool,
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl std::fmt::Debug for InitSpec {
    /// Everything but the values of the function's variables (which may be secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitSpec")
            .field("api_socket", &self.api_socket)
            .field("root", &self.root)
            .field("bind", &self.bind)
            .field("user", &self.user)
            .field("map_user", &self.map_user)
            .field("cwd", &self.cwd)
            .field("env", &format_args!("{} variables", self.env.len()))
            .field("program", &self.program)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl InitSpec {
    /// The spec as gust writes it to the init's stdin: the number of arguments, then the
    /// arguments, each ended by a NUL byte (the count tells a whole spec from a cut one).
    pub fn encode(&self) -> Vec<u8> {
        let args = self.to_args();
        let mut out = format!("{}\0", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(a.as_bytes());
            out.push(0);
        }
        out
    }

    /// Reads what [`InitSpec::encode`] wrote (bounded).
    pub fn decode(bytes: &[u8]) -> Result<InitSpec, String> {
        if bytes.len() as u64 > MAX_SPEC_BYTES {
            return Err("the spec is too large".into());
        }
        let incomplete = || "the spec is incomplete (gust went away while writing it?)".to_string();
        let body = bytes.strip_suffix(&[0]).ok_or_else(incomplete)?;
        let mut tokens = body.split(|b| *b == 0);
        let count: usize =
            tokens.next().and_then(|c| std::str::from_utf8(c).ok()?.parse().ok()).ok_or_else(incomplete)?;
        let args: Vec<OsString> = tokens.map(|a| OsStr::from_bytes(a).to_os_string()).collect();
        if args.len() != count {
            return Err(incomplete());
        }
        InitSpec::parse(args)
    }

    fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut kv = |k: &str, v: &OsStr| {
            a.push(k.into());
            a.push(v.to_os_string());
        };
        if let Some(s) = &self.api_socket {
            kv("--api-socket", s.as_os_str());
        }
        kv("--api-port", OsStr::new(&self.api_port.to_string()));
        if let Some(r) = &self.root {
            kv("--root", r.as_os_str());
        }
        kv("--tmp-mb", OsStr::new(&self.tmp_mb.to_string()));
        for h in &self.hide {
            kv("--hide", h.as_os_str());
        }
        for b in &self.bind {
            kv("--bind", b.as_os_str());
        }
        if let Some(h) = &self.hostname {
            kv("--hostname", OsStr::new(h));
        }
        if let Some((u, g)) = self.user {
            kv("--user", OsStr::new(&format!("{u}:{g}")));
        }
        if let Some((u, g)) = self.map_user {
            kv("--map-user", OsStr::new(&format!("{u}:{g}")));
        }
        kv("--as", OsStr::new(&self.limits.address_space_bytes.to_string()));
        kv("--nofile", OsStr::new(&self.limits.open_files.to_string()));
        kv("--nproc", OsStr::new(&self.limits.processes.to_string()));
        kv("--cwd", self.cwd.as_os_str());
        for e in &self.env {
            kv("--env", OsStr::from_bytes(e.as_bytes()));
        }
        for (on, flag) in [(self.mount, "--mount"), (self.proc, "--proc"), (self.probe, "--probe")] {
            if on {
                a.push(flag.into());
            }
        }
        a.push("--".into());
        a.push(self.program.clone());
        a.extend(self.args.iter().cloned());
        a
    }

    fn parse(args: impl IntoIterator<Item = OsString>) -> Result<InitSpec, String> {
        let mut spec = InitSpec {
            api_socket: None,
            api_port: 0,
            mount: false,
            proc: false,
            root: None,
            tmp_mb: 0,
            hide: Vec::new(),
            bind: Vec::new(),
            hostname: None,
            user: None,
            map_user: None,
            limits: Limits::for_memory_mb(0),
            cwd: PathBuf::from("/"),
            env: Vec::new(),
            probe: false,
            program: OsString::new(),
            args: Vec::new(),
        };
        let mut it = args.into_iter();
        let text = |v: Option<OsString>, k: &str| -> Result<String, String> {
            v.and_then(|v| v.into_string().ok()).ok_or_else(|| format!("{k} needs a value"))
        };
        let ids = |s: String, k: &str| -> Result<(u32, u32), String> {
            s.split_once(':')
                .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
                .ok_or_else(|| format!("{k} wants UID:GID"))
        };
        let num = |s: String, k: &str| s.parse::<u64>().map_err(|_| format!("{k} wants a number"));
        while let Some(arg) = it.next() {
            let k = arg.to_string_lossy().into_owned();
            let path = |v: Option<OsString>| v.map(PathBuf::from).ok_or_else(|| format!("{k} needs a value"));
            match k.as_str() {
                "--api-socket" => spec.api_socket = Some(path(it.next())?),
                "--api-port" => {
                    spec.api_port = text(it.next(), &k)?.parse().map_err(|_| "--api-port wants a port")?
                }
                "--root" => spec.root = Some(path(it.next())?),
                "--tmp-mb" => spec.tmp_mb = num(text(it.next(), &k)?, &k)?,
                "--hide" => spec.hide.push(path(it.next())?),
                "--bind" => spec.bind.push(path(it.next())?),
                "--hostname" => spec.hostname = Some(text(it.next(), &k)?),
                "--user" => spec.user = Some(ids(text(it.next(), &k)?, &k)?),
                "--map-user" => spec.map_user = Some(ids(text(it.next(), &k)?, &k)?),
                "--as" => spec.limits.address_space_bytes = num(text(it.next(), &k)?, &k)?,
                "--nofile" => spec.limits.open_files = num(text(it.next(), &k)?, &k)?,
                "--nproc" => spec.limits.processes = num(text(it.next(), &k)?, &k)?,
                "--cwd" => spec.cwd = path(it.next())?,
                "--env" => {
                    let entry = it.next().ok_or("--env needs a value")?.into_vec();
                    if !entry.contains(&b'=') {
                        return Err("an environment entry without =".into());
                    }
                    spec.env.push(std::ffi::CString::new(entry).map_err(|_| "a NUL byte in --env")?);
                }
                "--mount" => spec.mount = true,
                "--proc" => spec.proc = true,
                "--probe" => spec.probe = true,
                "--" => {
                    spec.program = it.next().ok_or("no program after --")?;
                    spec.args = it.collect();
                    return Ok(spec);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Err("no program (expected -- PROGRAM ARGS...)".into())
    }
}

fn context(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The init's entry point: `args` are the arguments after [`SUBCOMMAND`] (there are none: the
/// spec arrives on stdin, see [`InitSpec`]). Returns the exit status (the function's, or
/// [`SETUP_FAILED`] with the reason on stderr).
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    if let Some(a) = args.into_iter().next() {
        eprintln!("gust sandbox init: unexpected argument {a:?} (the spec is read from stdin)");
        return SETUP_FAILED;
    }
    let spec = match read_spec() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gust sandbox init: {e}");
            return SETUP_FAILED;
        }
    };
    match run(&spec) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gust sandbox init: {e}");
            SETUP_FAILED
        }
    }
}

/// Waits for the spec on stdin (until gust closes it; bounded), then puts /dev/null in its
/// place, which the function inherits.
fn read_spec() -> io::Result<InitSpec> {
    use std::io::Read;
    let mut bytes = Vec::new();
    io::stdin().lock().take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes)?;
    let spec = InitSpec::decode(&bytes).map_err(io::Error::other)?;
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0).map_err(errno)?;
    Ok(spec)
}

#[allow(unsafe_code)]
fn run(spec: &InitSpec) -> io::Result<i32> {
    let listener = match &spec.api_socket {
        Some(_) => {
            loopback_up().map_err(context("cannot bring up the loopback interface"))?;
            let l = std::net::TcpListener::bind(("127.0.0.1", spec.api_port))
                .map_err(context(format!("cannot listen on 127.0.0.1:{}", spec.api_port)))?;
            Some(l)
        }
        None => None,
    };
    // Pid 1 learns that this process is gone from the end of this pipe (its parent is outside
    // its pid namespace, so getppid() says nothing).
    let (alive_r, alive_w) = io::pipe()?;
    // SAFETY: this process has a single thread (and must: after unshare(CLONE_NEWPID) the
    // kernel refuses new threads), so the child is an ordinary process that may allocate.
    match unsafe { fork() }.map_err(errno)? {
        ForkResult::Child => {
            drop((listener, alive_w));
            let code = match pid1(spec, alive_r) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("gust sandbox init: {e}");
                    SETUP_FAILED
                }
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(alive_r);
            let code = serve(listener, spec.api_socket.clone(), child);
            drop(alive_w);
            code
        }
    }
}

/// The end of `child` as an exit status (128 + signal when killed), or None while it runs.
fn ended(child: Pid) -> Option<i32> {
    use nix::sys::wait::WaitPidFlag;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => return Some(SETUP_FAILED),
        }
    }
}

/// Runs the Runtime API bridge (if any) on this thread until pid 1 ends; returns its status.
/// One thread only: a process that unshared its pid namespace cannot start threads.
fn serve(listener: Option<std::net::TcpListener>, socket: Option<PathBuf>, pid1: Pid) -> io::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    // gust, which started this init; if it dies (kill -9), the environment goes with it rather
    // than spinning on a Runtime API that is gone (pid 1 dies with this process).
    let gust = nix::unistd::getppid();
    rt.block_on(async move {
        let mut children = signal(SignalKind::child())?;
        if let (Some(listener), Some(socket)) = (listener, socket) {
            tokio::spawn(bridge(listener, socket));
        }
        let mut watch = tokio::time::interval(PARENT_CHECK);
        loop {
            // Checked after registering for SIGCHLD, so an early end is not missed.
            if let Some(code) = ended(pid1) {
                return Ok(code);
            }
            if nix::unistd::getppid() != gust {
                return Ok(SETUP_FAILED);
            }
            tokio::select! {
                _ = children.recv() => {}
                _ = watch.tick() => {}
            }
        }
    })
}

/// Sets the `IFF_UP` flag of `lo` (a new network namespace starts with it down).
#[allow(unsafe_code)]
fn loopback_up() -> io::Result<()> {
    use nix::libc;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the descriptor is owned (closed on drop).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value (empty name, no flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the `ifreq` passed by pointer,
    // which lives across both calls; reading `ifru_flags` after SIOCGIFFLAGS filled it is
    // reading the union member the kernel wrote.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Forwards each connection to 127.0.0.1:PORT (inside the namespace) to the Runtime API's
/// Unix socket: a byte pipe in both directions, half-closes included.
async fn bridge(listener: std::net::TcpListener, socket: PathBuf) {
    let listener =
        match listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(listener)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("gust sandbox init: Runtime API bridge: {e}");
                return;
            }
        };
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_API_CONNECTIONS));
    while let Ok((mut tcp, _)) = listener.accept().await {
        // A function may hold only so many connections to gust (each costs gust descriptors
        // and memory); past that a new one is closed at once.
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        // Runtime clients write headers and body separately: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let socket = socket.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(mut unix) => {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
                Err(e) => eprintln!("gust sandbox init: cannot reach the Runtime API: {e}"),
            }
        });
    }
}

/// Pid 1 of the new pid namespace (or, without one, the function's reaping parent).
#[allow(unsafe_code)]
fn pid1(spec: &InitSpec, alive: io::PipeReader) -> io::Result<i32> {
    use nix::sys::prctl;
    use std::io::Read;
    prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(errno)?;
    // If the init died before the line above, its end of the pipe is closed: end of file.
    let mut alive = alive;
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&alive),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(errno)?;
    if alive.read(&mut [0u8; 1]).is_ok() {
        return Err(io::Error::other("the sandbox init exited during start-up"));
    }
    drop(alive);
    // Orphans of the function come to this process when there is no pid namespace.
    prctl::set_child_subreaper(true).map_err(errno)?;
    if let Some(name) = &spec.hostname {
        nix::unistd::sethostname(name).map_err(errno).map_err(context("cannot set the hostname"))?;
    }
    if spec.mount {
        mounts(spec)?;
    }
    // Built here (it allocates); installed by the function's process as its last step.
    let filter = crate::seccomp::Filter::new().map_err(context("cannot build the seccomp filter"))?;
    // SAFETY: this process is single-threaded (forked from the single-threaded init).
    match unsafe { fork() }.map_err(errno)? {
        ForkResult::Child => {
            let e = function(spec, &filter);
            eprintln!("gust sandbox init: cannot start {}: {e}", spec.program.to_string_lossy());
            std::process::exit(EXEC_FAILED)
        }
        ForkResult::Parent { child } => Ok(reap_until(child)),
    }
}

/// Reaps every child (as an init must) until `function` ends; returns its exit status.
fn reap_until(function: Pid) -> i32 {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == function => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == function => return 128 + sig as i32,
            Err(nix::errno::Errno::ECHILD) => return SETUP_FAILED,
            _ => continue,
        }
    }
}

/// Host directories every environment sees read-only (programs, libraries, configuration);
/// a link (a merged /usr's /bin) is recreated as the same link. Not /sys: it shows the host's
/// interfaces and every cgroup, and its submounts would stay writable.
const SYSTEM_DIRS: &[&str] =
    &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];
/// Device nodes an environment gets (Lambda's minimal /dev).
/// No tty: a function has no terminal (its session has none), and the host's must stay out of
/// reach.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// Size of an environment's /dev/shm.
const SHM_SIZE: &str = "size=64m";

/// The environment's filesystem: a new root (a tmpfs, read-only once built) holding the host's
/// system directories read-only, the task root and the runtimes' directories read-only at
/// their own paths, a size-limited tmpfs at /tmp, a minimal /dev and a /proc of its own; then
/// pivot_root into it, so nothing else of the host (gust's data dir, /home, /root, /run and its
/// sockets, /var) exists for the function.
fn mounts(spec: &InitSpec) -> io::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(errno)
        .map_err(context("cannot make a mount namespace"))?;
    // Nothing done here propagates back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(errno)
        .map_err(context("cannot make mounts private"))?;
    let Some(root) = &spec.root else { return Ok(()) };
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let tmpfs = |at: &Path, flags: MsFlags, opts: &str| {
        mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some(opts))
            .map_err(errno)
            .map_err(context(format!("cannot mount a tmpfs at {}", at.display())))
    };
    let bind = |source: &Path, target: &Path| {
        mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(errno)
            .map_err(context(format!("cannot bind {} at {}", source.display(), target.display())))
    };
    // What is bound in is opened first: the new root's tmpfs may cover its path.
    let sources = spec
        .bind
        .iter()
        .map(|p| {
            std::fs::File::open(p).map(|f| (f, p)).map_err(context(format!("cannot open {}", p.display())))
        })
        .collect::<io::Result<Vec<_>>>()?;
    // Mount points made in the new root must be traversable by the function's user.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    tmpfs(root, nosuid, "mode=0755,size=1m")?;
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for dir in SYSTEM_DIRS.iter().map(Path::new) {
        let Ok(meta) = std::fs::symlink_metadata(dir) else { continue };
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(dir)?, inside(dir))?;
        } else if meta.is_dir() {
            std::fs::create_dir_all(inside(dir))?;
            bind(dir, &inside(dir))?;
            read_only(&inside(dir))?;
        }
    }
    // First, so that what is bound below /tmp (a task root in a data dir there) stays visible.
    let tmp = inside(Path::new("/tmp"));
    std::fs::create_dir_all(&tmp)?;
    tmpfs(&tmp, nosuid, &format!("mode=1777,size={}m", spec.tmp_mb.max(1)))?;
    for (source, dir) in &sources {
        use std::os::fd::AsRawFd;
        let at = inside(dir);
        // A runtime directory below a system directory is already there, read-only.
        if at.exists() && SYSTEM_DIRS.iter().any(|s| dir.starts_with(s)) {
            continue;
        }
        std::fs::create_dir_all(&at).map_err(context(format!("cannot make {}", at.display())))?;
        bind(Path::new(&format!("/proc/self/fd/{}", source.as_raw_fd())), &at)?;
        read_only(&at)?;
    }
    drop(sources);
    let dev = inside(Path::new("/dev"));
    std::fs::create_dir_all(&dev)?;
    tmpfs(&dev, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, "mode=0755,size=64k")?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if host.exists() {
            std::fs::File::create(dev.join(name))?;
            bind(&host, &dev.join(name))?;
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    std::fs::create_dir(dev.join("shm"))?;
    tmpfs(&dev.join("shm"), nosuid | MsFlags::MS_NOEXEC, &format!("mode=1777,{SHM_SIZE}"))?;
    let proc = inside(Path::new("/proc"));
    std::fs::create_dir_all(&proc)?;
    if spec.proc {
        mount(Some("proc"), &proc, Some("proc"), nosuid | MsFlags::MS_NOEXEC, None::<&str>)
            .map_err(errno)
            .map_err(context("cannot mount /proc"))?;
    } else {
        bind(Path::new("/proc"), &proc)?;
    }
    // Into the new root; the old one is detached, so nothing of it stays reachable.
    std::fs::create_dir(inside(Path::new("/.old")))?;
    nix::unistd::chdir(root).map_err(errno)?;
    nix::unistd::pivot_root(".", ".old").map_err(errno).map_err(context("cannot pivot into the new root"))?;
    nix::unistd::chdir("/").map_err(errno)?;
    nix::mount::umount2("/.old", nix::mount::MntFlags::MNT_DETACH)
        .map_err(errno)
        .map_err(context("cannot detach the host's root"))?;
    std::fs::remove_dir("/.old")?;
    // The root itself becomes read-only: only /tmp and /dev/shm are writable.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | nosuid,
        None::<&str>,
    )
    .map_err(errno)
    .map_err(context("cannot make the root read-only"))?;
    Ok(())
}

/// Makes the bind mount at `path` read-only (the task root is shared by every environment of
/// the same code, and without this a function running as gust's own uid could change it).
/// A remount must keep the flags the mount already has (the kernel locks them in a user
/// namespace).
fn read_only(path: &Path) -> io::Result<()> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let have = statvfs(path).map_err(errno)?.flags();
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for (has, keep) in [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(has) {
            flags |= keep;
        }
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(errno)
        .map_err(context(format!("cannot make {} read-only", path.display())))
}

/// Becomes the function: limits, no new privileges, its user, its working directory, then
/// exec with the function's environment (only here does it apply). Returns only on failure.
fn function(spec: &InitSpec, filter: &crate::seccomp::Filter) -> io::Error {
    let env = &spec.env;
    match become_function(spec) {
        Ok(()) if spec.probe => std::process::exit(match probe(spec) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("gust sandbox init: probe: {e}");
                1
            }
        }),
        Ok(()) => {}
        Err(e) => return e,
    }
    let program = match c_string(spec.program.as_bytes()) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let args: io::Result<Vec<_>> =
        std::iter::once(&spec.program).chain(&spec.args).map(|a| c_string(a.as_bytes())).collect();
    let args = match args {
        Ok(args) => args,
        Err(e) => return e,
    };
    // Nothing but stdin, stdout and stderr crosses the exec, whatever this process holds.
    crate::sys::cloexec_inherited();
    // The last step before exec: from here on the dangerous system calls fail with EPERM.
    if let Err(e) = filter.install() {
        return io::Error::new(e.kind(), format!("cannot install the seccomp filter: {e}"));
    }
    if spec.program.as_bytes().contains(&b'/') {
        return errno(nix::unistd::execve(&program, &args, env).unwrap_err());
    }
    // A bare name is looked up in the function's PATH, as the function's user.
    let path = env
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for dir in path.split(|b| *b == b':').filter(|d| !d.is_empty()) {
        let full = match c_string([dir, b"/", spec.program.as_bytes()].concat()) {
            Ok(f) => f,
            Err(e) => return e,
        };
        last = errno(nix::unistd::execve(&full, &args, env).unwrap_err());
    }
    last
}

#[allow(unsafe_code)]
fn become_function(spec: &InitSpec) -> io::Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restores the default action of SIGPIPE, which the Rust runtime of this binary
    // ignores and exec would keep ignored; no handler function is installed.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.map_err(errno)?;
    spec.limits.apply().map_err(context("cannot set rlimits"))?;
    nix::sys::prctl::set_no_new_privs().map_err(errno)?;
    if let Some((uid, gid)) = spec.user {
        crate::sys::become_user(uid, gid).map_err(context("cannot switch user"))?;
    }
    if let Some((uid, gid)) = spec.map_user {
        // Root of the namespace is gust's own uid outside; the function gets that uid back,
        // without capabilities, in a user namespace of its own.
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(errno)
            .map_err(context("cannot make a user namespace"))?;
        IdMaps::nested(uid, gid).write().map_err(context("cannot map the function's user"))?;
    }
    nix::unistd::chdir(&spec.cwd)
        .map_err(errno)
        .map_err(context(format!("cannot enter {}", spec.cwd.display())))?;
    Ok(())
}

/// The start-up probe, in place of the function: the bridge answers and the function's view
/// is the one configured.
fn probe(spec: &InitSpec) -> Result<(), String> {
    use std::io::{Read, Write};
    if spec.api_socket.is_some() {
        let mut c =
            std::net::TcpStream::connect(("127.0.0.1", spec.api_port)).map_err(|e| format!("bridge: {e}"))?;
        c.write_all(b"probe").map_err(|e| format!("bridge: {e}"))?;
        let mut answer = [0u8; 2];
        c.read_exact(&mut answer).map_err(|e| format!("bridge: {e}"))?;
    }
    if (spec.user.is_some() || spec.map_user.is_some()) && nix::unistd::getuid().is_root() {
        return Err("the function would run as root".into());
    }
    if spec.proc && std::process::id() > 2 {
        return Err(format!("pid {} in the new pid namespace", std::process::id()));
    }
    for dir in &spec.hide {
        // Only the environment's own task root may show below a hidden directory.
        let visible = std::fs::read_dir(dir)
            .is_ok_and(|d| d.flatten().any(|e| !spec.bind.iter().any(|b| b.starts_with(e.path()))));
        if visible {
            return Err(format!("{} is not hidden", dir.display()));
        }
    }
    if spec.root.is_some() {
        if std::fs::write("/gust-probe", b"x").is_ok() || std::fs::write("/usr/gust-probe", b"x").is_ok() {
            return Err("the root is writable".into());
        }
        std::fs::write("/tmp/gust-probe", b"x").map_err(|e| format!("/tmp is not writable: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_survives_its_command_line() {
        let spec = InitSpec {
            api_socket: Some("/tmp/gust-f.api/api.sock".into()),
            api_port: 9001,
            mount: true,
            proc: true,
            root: Some("/tmp/gust-api-1".into()),
            tmp_mb: 512,
            hide: vec!["/var/lib/gust".into()],
            bind: vec!["/var/lib/gust/tasks/abc".into()],
            hostname: Some("gust".into()),
            user: Some((65534, 65534)),
            map_user: None,
            limits: Limits::for_memory_mb(128),
            cwd: "/var/lib/gust/tasks/abc".into(),
            env: vec![c"A=1".into(), c"SECRET=x=y".into()],
            probe: false,
            program: "python3".into(),
            args: vec!["-m".into(), "--not-an-init-flag".into(), "".into()],
        };
        assert_eq!(InitSpec::decode(&spec.encode()), Ok(spec.clone()));
        assert!(!format!("{spec:?}").contains("x=y"), "no variable's value in Debug");
        let encoded = spec.encode();
        assert!(InitSpec::decode(&encoded[..encoded.len() - 1]).is_err(), "cut short");
        assert!(InitSpec::decode(b"").is_err(), "nothing");
        assert!(InitSpec::decode(b"1\0--mount\0").is_err(), "no program");
        assert!(InitSpec::decode(b"3\0--bogus\0--\0x\0").is_err());
        assert!(InitSpec::decode(b"4\0--env\0NOEQUALS\0--\0x\0").is_err());
        assert!(InitSpec::decode(b"4\0--env\0A=1\0--\0x\0").is_ok());
    }
}
