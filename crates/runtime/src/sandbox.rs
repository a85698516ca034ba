//! The platform code of process isolation: what this host allows, probed once at start, and
//! how an environment's process is started under it. With `init.rs`, `sys.rs`, `cgroup.rs` and
//! `seccomp.rs`, the only modules with `unsafe`, each block explained. The system-call helpers
//! it shares with the sandbox init (rlimits, id maps, the user switch) are in `sys.rs`.
//!
//! Every process environment gets its own process group and group kill (see `process.rs`), a
//! private temporary directory, resource limits (address space from the function's memory
//! setting, open files, processes, no core dumps), no new privileges, and — when gust runs as
//! root — an unprivileged user (`nobody`), provided the task root is reachable by it.
//!
//! Where the kernel allows, each environment also runs in new pid, mount, network, ipc and uts
//! namespaces (plus a user namespace when gust is not root, in which gust's own uid is the
//! namespace's root and the function runs as gust's uid in a nested one). gust does not enter
//! them itself: the forked child unshares them between fork and exec and executes the sandbox
//! init (`gust __sandbox-init`, see `init.rs`), which bridges the Runtime API into the network
//! namespace, makes the mount namespace, and starts the function.
//!
//! [`Isolation`] says what is required: `strict` refuses to start without namespaces,
//! `best-effort` (the default) uses what works and warns loudly about the rest, `none` is the
//! old behaviour (no namespaces) for debugging.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::resource::{setrlimit, Resource};

use crate::cgroup::{CgroupJoiner, Cgroups, EnvCgroup};
use crate::init::InitSpec;
use crate::sys::{c_string, errno, IdMaps};
pub use crate::sys::{
    Limits, ADDRESS_SPACE_HEADROOM_MB, MAX_OPEN_FILES, MAX_PROCESSES, SANDBOX_GID, SANDBOX_UID,
};
/// The Runtime API's port inside an environment's network namespace (Lambda's own).
pub const RUNTIME_API_PORT: u16 = 9001;
/// The hostname inside an environment's uts namespace.
pub const SANDBOX_HOSTNAME: &str = "gust";
/// How long the start-up probe of the sandbox init may take before it counts as failed.
const PROBE_PATIENCE: Duration = Duration::from_secs(10);

/// How much isolation environments must have (`--isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Namespaces and a non-root user are required: gust refuses to start without them, and an
    /// environment whose task root the sandbox user cannot reach is not started.
    Strict,
    /// Use what the host allows; warn loudly at start about what is missing.
    #[default]
    BestEffort,
    /// No namespaces (process group, temp dir, rlimits and user only): for debugging.
    None,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Isolation::Strict),
            "best-effort" => Ok(Isolation::BestEffort),
            "none" => Ok(Isolation::None),
            other => Err(format!("unknown isolation {other:?}: expected strict, best-effort or none")),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Strict => "strict",
            Isolation::BestEffort => "best-effort",
            Isolation::None => "none",
        })
    }
}

/// What the operator asked for, and what the sandbox needs to know about this host.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    pub isolation: Isolation,
    /// The sandbox init: a program that runs `init::main` when its first argument is
    /// [`crate::init::SUBCOMMAND`] (the gust binary). Without it there are no namespaces.
    pub init_program: Option<PathBuf>,
    /// Directories covered by an empty tmpfs in every environment (gust's data directory: the
    /// database and every function's code); the environment's own task root is bound back.
    pub hidden_dirs: Vec<PathBuf>,
    /// Directories the runtimes themselves need (a Python venv, the Node.js runtime interface
    /// client): bound back read-only where /tmp or a hidden directory would cover them.
    pub runtime_dirs: Vec<PathBuf>,
}

/// Which namespaces environments get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Namespaces {
    user: bool,
    pid: bool,
    mount: bool,
    net: bool,
    ipc: bool,
    uts: bool,
}

impl Namespaces {
    /// The namespaces unshared between fork and exec; the mount namespace is made by the
    /// init's pid 1, so that the init itself keeps the host's view (and the Runtime API socket).
    fn unshare_flags(self) -> CloneFlags {
        let mut f = CloneFlags::empty();
        for (on, flag) in [
            (self.user, CloneFlags::CLONE_NEWUSER),
            (self.pid, CloneFlags::CLONE_NEWPID),
            (self.net, CloneFlags::CLONE_NEWNET),
            (self.ipc, CloneFlags::CLONE_NEWIPC),
            (self.uts, CloneFlags::CLONE_NEWUTS),
        ] {
            if on {
                f |= flag;
            }
        }
        f
    }

    fn any(self) -> bool {
        self.pid || self.mount || self.net || self.ipc || self.uts
    }

    fn names(self) -> Vec<&'static str> {
        [
            (self.user, "user"),
            (self.pid, "pid"),
            (self.mount, "mount"),
            (self.net, "net"),
            (self.ipc, "ipc"),
            (self.uts, "uts"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// Strict isolation was configured and this host cannot give it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--isolation strict: this host cannot isolate functions: missing {}", .missing.join("; "))]
pub struct IsolationError {
    pub missing: Vec<String>,
}

/// The isolation environments get on this host: decided once at start from what was
/// configured and what the probe found.
#[derive(Debug, Clone)]
pub struct Sandbox {
    isolation: Isolation,
    root: bool,
    ns: Namespaces,
    init_program: Option<PathBuf>,
    hidden_dirs: Vec<PathBuf>,
    /// Runtime directories that the private /tmp or a hidden directory would cover.
    runtime_dirs: Vec<PathBuf>,
    /// What was configured but is not available here (empty when nothing is missing).
    missing: Vec<String>,
    /// Each environment's own cgroup: memory, pids and CPU limits (what this host enforces).
    cgroups: Cgroups,
}

/// Enters new namespaces (and maps ids in a new user namespace). Runs between fork and exec:
/// only system calls on prepared data, no allocation.
fn enter(flags: CloneFlags, maps: Option<&IdMaps>) -> std::io::Result<()> {
    nix::sched::unshare(flags).map_err(errno)?;
    match maps {
        Some(m) => m.write(),
        None => Ok(()),
    }
}

/// Whether the kernel lets this process make the namespaces `flags` (mapping ids when a user
/// namespace is among them): a forked child makes them and exits.
fn can_unshare(flags: CloneFlags) -> bool {
    let maps = flags.contains(CloneFlags::CLONE_NEWUSER).then(IdMaps::own_ids_as_root);
    crate::sys::in_child(|| enter(flags, maps.as_ref())).is_ok()
}

/// What one environment's process needs to start inside the sandbox.
pub(crate) struct Start<'a> {
    pub task_root: &'a Path,
    /// The size of /tmp in MB (the function's ephemeral storage).
    pub tmp_mb: u64,
    /// The Runtime API's Unix socket, bridged to 127.0.0.1:[`RUNTIME_API_PORT`] inside a
    /// network namespace.
    pub api_socket: Option<&'a Path>,
    pub program: &'a str,
    pub args: &'a [String],
    /// The function's environment (its configuration and Lambda's variables): untrusted, so
    /// it reaches only the function's own execve, never the sandbox init.
    pub env: &'a [(String, String)],
    /// A directory only gust can enter, where the environment's root is built.
    pub private_dir: &'a Path,
    pub limits: Limits,
    /// The user to run as (gust is root), or None (gust's own user).
    pub user: Option<(u32, u32)>,
    /// The environment's cgroup, joined by the child first thing after fork (before it makes
    /// namespaces), so everything it starts is inside.
    pub cgroup: Option<CgroupJoiner>,
}

impl Sandbox {
    /// No namespaces (`--isolation none`), without probing the host.
    pub fn unconfined() -> Sandbox {
        Sandbox {
            isolation: Isolation::None,
            root: nix::unistd::geteuid().is_root(),
            ns: Namespaces::default(),
            init_program: None,
            hidden_dirs: Vec::new(),
            runtime_dirs: Vec::new(),
            missing: Vec::new(),
            cgroups: Cgroups::disabled(),
        }
    }

    /// Probes what this host allows (by actually making namespaces, then by running the
    /// sandbox init once end to end), logs it, and decides what environments get. Blocks for a
    /// few milliseconds; call once at start. Refuses strict isolation that cannot be given.
    pub fn detect(cfg: SandboxConfig) -> Result<Sandbox, IsolationError> {
        let mut sandbox = Sandbox::unconfined();
        sandbox.isolation = cfg.isolation;
        if cfg.isolation == Isolation::None {
            tracing::warn!("{}", sandbox.describe());
            return Ok(sandbox);
        }
        sandbox.cgroups = Cgroups::detect();
        if let Err(e) = crate::seccomp::Filter::new() {
            return Err(IsolationError { missing: vec![format!("seccomp filter: {e}")] });
        }
        let root = sandbox.root;
        let user = if root { CloneFlags::empty() } else { CloneFlags::CLONE_NEWUSER };
        let mut missing = Vec::new();
        let user_ok = root || can_unshare(CloneFlags::CLONE_NEWUSER);
        if !user_ok {
            missing.push("user namespace (gust is not root and cannot make one)".to_string());
        }
        let try_ns = |flag: CloneFlags, name: &str, missing: &mut Vec<String>| {
            let ok = user_ok && can_unshare(user | flag);
            if !ok {
                missing.push(format!("{name} namespace"));
            }
            ok
        };
        let mut ns = Namespaces {
            user: !root && user_ok,
            pid: try_ns(CloneFlags::CLONE_NEWPID, "pid", &mut missing),
            mount: try_ns(CloneFlags::CLONE_NEWNS, "mount", &mut missing),
            net: try_ns(CloneFlags::CLONE_NEWNET, "net", &mut missing),
            ipc: try_ns(CloneFlags::CLONE_NEWIPC, "ipc", &mut missing),
            uts: try_ns(CloneFlags::CLONE_NEWUTS, "uts", &mut missing),
        };
        // The namespaces are usable only if the init runs in them end to end.
        let init_works = ns.any() && {
            sandbox.ns = ns;
            sandbox.hidden_dirs = hidden_dirs(&cfg.hidden_dirs);
            sandbox.runtime_dirs = existing_dirs(&cfg.runtime_dirs);
            sandbox.init_program = cfg.init_program.clone();
            let probed = match &sandbox.init_program {
                None => Err("no program to run it".to_string()),
                Some(_) => sandbox.probe(),
            };
            if let Err(e) = &probed {
                missing.push(format!("all namespaces: the sandbox init failed its start-up probe: {e}"));
            }
            probed.is_ok()
        };
        if !init_works {
            ns = Namespaces::default();
            sandbox.init_program = None;
            sandbox.hidden_dirs.clear();
        }
        sandbox.ns = ns;
        for (has, what) in [(sandbox.cgroups.memory(), "memory"), (sandbox.cgroups.pids(), "pids")] {
            if !has {
                missing.push(format!("cgroup {what} limits"));
            }
        }
        sandbox.missing = missing;
        if cfg.isolation == Isolation::Strict && !sandbox.missing.is_empty() {
            return Err(IsolationError { missing: sandbox.missing });
        }
        if sandbox.missing.is_empty() {
            tracing::info!("{}", sandbox.describe());
        } else {
            tracing::warn!(
                "WEAKER ISOLATION THAN CONFIGURED: functions run without: {} ({})",
                sandbox.missing.join("; "),
                sandbox.describe()
            );
        }
        Ok(sandbox)
    }

    /// What environments get here, for the start-up log.
    pub fn describe(&self) -> String {
        let mut s = format!("process isolation ({}): own process group, private temp dir", self.isolation);
        if self.ns.any() {
            s.push_str(&format!(", namespaces: {}", self.ns.names().join(", ")));
            if self.ns.net {
                s.push_str(" (no network; Runtime API bridged in)");
            }
            if self.ns.mount {
                s.push_str(", a read-only root of its own (system directories, task root and runtimes read-only; /tmp a tmpfs of the function's ephemeral storage; minimal /dev");
                if self.ns.pid {
                    s.push_str("; its own /proc");
                }
                s.push(')');
                if !self.hidden_dirs.is_empty() {
                    let dirs: Vec<String> =
                        self.hidden_dirs.iter().map(|d| d.display().to_string()).collect();
                    s.push_str(&format!(", hidden: {}", dirs.join(", ")));
                }
            }
        }
        s.push_str(", rlimits (address space, open files, processes, no core), no new privileges");
        if self.root {
            s.push_str(", user nobody (never root)");
        } else {
            s.push_str(", gust's own (non-root) user");
        }
        if !self.ns.any() {
            s.push_str("; NOT applied: namespaces (functions share the host's network, processes and files)");
        }
        s.push_str(&format!(", seccomp ({} system calls denied); ", crate::seccomp::denied().len()));
        s.push_str(&self.cgroups.describe());
        s
    }

    /// A cgroup of its own for one environment (memory is the hard limit of all its
    /// processes, CPU in proportion to memory, a bound on processes); inert where this host has
    /// no cgroups to give.
    pub fn cgroup(&self, name: &str, memory_mb: u32) -> std::io::Result<EnvCgroup> {
        self.cgroups.create(name, memory_mb)
    }

    /// A cgroup of its own for an environment started before its function is known: pids
    /// bounded, memory and CPU limited later ([`EnvCgroup::limit`]).
    pub fn cgroup_unlimited(&self, name: &str) -> std::io::Result<EnvCgroup> {
        self.cgroups.create_unlimited(name)
    }

    /// What was configured but is not available here.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Whether environments start through the sandbox init, in namespaces.
    pub fn namespaces(&self) -> bool {
        self.init_program.is_some() && self.ns.any()
    }

    /// Whether environments have their own network namespace (the Runtime API is bridged).
    pub fn private_network(&self) -> bool {
        self.namespaces() && self.ns.net
    }

    /// Whether environments have their own mount namespace (private /tmp, hidden data dir).
    pub fn private_mounts(&self) -> bool {
        self.namespaces() && self.ns.mount
    }

    /// The user an environment runs as when gust is root: always `nobody`, never root. With a
    /// mount namespace every directory the function needs is bound into a root whose mount
    /// points anyone may traverse; without one, the task root and program must be reachable by
    /// `nobody` as they are, or the environment does not start (Err says why). None when gust
    /// is not root (the function then runs as gust's uid, in a user namespace where it can
    /// write nothing of the host's).
    pub fn user_for(
        &self, task_root: &Path, program: &str, path: &str,
    ) -> Result<Option<(u32, u32)>, String> {
        if !self.root {
            return Ok(None);
        }
        let reachable = reachable_by_others(task_root) && executable_by_others(program, path);
        if !self.private_mounts() && !reachable {
            return Err(format!(
                "the sandbox user cannot reach the task root {} or the program {program}, and functions never run as root",
                task_root.display()
            ));
        }
        Ok(Some((SANDBOX_UID, SANDBOX_GID)))
    }

    /// The rlimits of an environment's processes: `start.limits`, with the process count left
    /// to the pids cgroup where there is one (RLIMIT_NPROC counts every process of the user,
    /// and all environments run as the same one).
    fn limits(&self, start: &Start<'_>) -> Limits {
        let mut limits = start.limits;
        if self.cgroups.pids() && start.cgroup.is_some() {
            // As high as this process may go (raising the hard limit needs CAP_SYS_RESOURCE).
            if let Ok((_, hard)) = nix::sys::resource::getrlimit(Resource::RLIMIT_NPROC) {
                limits.processes = hard;
            }
        }
        limits
    }

    /// The command that starts `start.program` directly, without namespaces (no sandbox init):
    /// its cgroup, rlimits, no new privileges, the user and seccomp applied between fork and
    /// exec. The caller adds stdio.
    pub(crate) fn direct_command(&self, start: &Start<'_>) -> std::io::Result<std::process::Command> {
        let mut cmd = std::process::Command::new(start.program);
        cmd.args(start.args).current_dir(start.task_root).env_clear();
        cmd.envs(start.env.iter().map(|(k, v)| (k, v)));
        let filter = crate::seccomp::Filter::new()?;
        new_session_on_exec(&mut cmd);
        confine_on_exec(&mut cmd, start.cgroup.clone(), self.limits(start), start.user, filter);
        Ok(cmd)
    }

    /// The command that starts the sandbox init in namespaces, when environments get them:
    /// joined to `cgroup` first thing after fork, in a session of its own, with an empty
    /// environment (a function's `LD_PRELOAD` must never reach a process that runs as root on
    /// the host) and its stdin piped. The init then waits for its [`InitSpec`] on stdin
    /// ([`Sandbox::init_spec`], written by the caller), so it can be started before the
    /// function is known. The caller adds stdout and stderr.
    pub(crate) fn init_command(&self, cgroup: Option<CgroupJoiner>) -> Option<std::process::Command> {
        let init = self.init_program.as_ref().filter(|_| self.ns.any())?;
        let mut cmd = std::process::Command::new(init);
        cmd.arg(crate::init::SUBCOMMAND).current_dir("/").env_clear().stdin(std::process::Stdio::piped());
        new_session_on_exec(&mut cmd);
        join_on_exec(&mut cmd, cgroup);
        self.enter_on_exec(&mut cmd);
        Some(cmd)
    }

    /// What the sandbox init needs to start `start.program` (the function's environment
    /// included; refused if a name or value cannot be passed).
    pub(crate) fn init_spec(&self, start: &Start<'_>) -> std::io::Result<InitSpec> {
        let mut env = Vec::with_capacity(start.env.len());
        for (k, v) in start.env {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("environment variable {k:?} cannot be passed"),
                ));
            }
            env.push(c_string(format!("{k}={v}"))?);
        }
        Ok(InitSpec { env, limits: self.limits(start), ..self.spec_of(start) })
    }

    fn spec_of(&self, start: &Start<'_>) -> InitSpec {
        InitSpec {
            api_socket: start.api_socket.filter(|_| self.ns.net).map(Path::to_path_buf),
            api_port: RUNTIME_API_PORT,
            mount: self.ns.mount,
            proc: self.ns.mount && self.ns.pid,
            root: self.ns.mount.then(|| start.private_dir.to_path_buf()),
            tmp_mb: start.tmp_mb,
            hide: self.hidden_dirs.clone(),
            bind: std::iter::once(start.task_root.to_path_buf())
                .chain(self.runtime_dirs.iter().cloned())
                .collect(),
            hostname: self.ns.uts.then(|| SANDBOX_HOSTNAME.to_string()),
            user: start.user,
            map_user: self
                .ns
                .user
                .then(|| (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())),
            limits: start.limits,
            cwd: start.task_root.to_path_buf(),
            env: Vec::new(),
            probe: false,
            program: OsString::from(start.program),
            args: start.args.iter().map(OsString::from).collect(),
        }
    }

    /// Arranges for the child of `cmd` to enter the namespaces before it executes.
    #[allow(unsafe_code)]
    fn enter_on_exec(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let flags = self.ns.unshare_flags();
        let maps = self.ns.user.then(IdMaps::own_ids_as_root);
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is allowed: unshare(2) and, for a user namespace, three
        // open/write/close sequences on buffers formatted before the fork. It allocates
        // nothing (errors are raw errnos) and takes no locks.
        unsafe {
            cmd.pre_exec(move || enter(flags, maps.as_ref()));
        }
    }

    /// Runs the sandbox init once end to end (namespaces, bridge, mounts, user), with a probe
    /// in place of the function: the only way to know the whole path works here.
    fn probe(&self) -> Result<(), String> {
        use std::io::{Read, Write};
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir().join(format!("gust-probe-{}-{:x}", std::process::id(), nanos()));
        let mk = |p: &Path| std::fs::DirBuilder::new().mode(0o755).create(p).map_err(|e| e.to_string());
        mk(&base)?;
        let cleanup = scopeguard(base.clone());
        let (task, private) = (base.join("task"), base.join("private"));
        mk(&task)?;
        mk(&private)?;
        let socket = private.join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let start = Start {
            task_root: &task,
            api_socket: Some(&socket),
            program: "/bin/true",
            args: &[],
            tmp_mb: 1,
            env: &[],
            private_dir: &private,
            limits: Limits::for_memory_mb(128),
            user: self.root.then_some((SANDBOX_UID, SANDBOX_GID)),
            cgroup: None,
        };
        let mut spec = self.init_spec(&start).map_err(|e| e.to_string())?;
        spec.probe = true;
        let mut cmd = self.init_command(None).ok_or("no init program")?;
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // Small (no environment), so the pipe's buffer takes it whole.
            let _ = stdin.write_all(&spec.encode());
        }
        let deadline = Instant::now() + PROBE_PATIENCE;
        let mut bridged = !self.ns.net;
        let status = loop {
            // The probe connects through the bridge and expects an answer.
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 5];
                if conn.read_exact(&mut buf).is_ok() && &buf == b"probe" {
                    bridged = conn.write_all(b"ok").is_ok();
                }
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("it did not finish in time".into());
                }
            }
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        drop(cleanup);
        if !status.success() {
            return Err(format!("{status}: {}", stderr.trim()));
        }
        if !bridged {
            return Err("the Runtime API bridge did not answer".into());
        }
        Ok(())
    }
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scopeguard(dir: PathBuf) -> RemoveOnDrop {
    RemoveOnDrop(dir)
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// The runtime directories that exist, canonical (an environment's root holds only what is
/// bound into it), without those below another.
fn existing_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        dirs.iter().filter_map(|d| d.canonicalize().ok()).filter(|d| d.is_dir()).collect();
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|d| !all.iter().any(|o| o != d && d.starts_with(o)));
    out
}

/// The directories to hide: absolute, existing, not `/`, not below /tmp, and not below another
/// hidden one.
fn hidden_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .filter(|d| d.is_dir() && d.parent().is_some() && !d.starts_with("/tmp"))
        .collect();
    dirs.sort();
    dirs.dedup();
    let all = dirs.clone();
    dirs.retain(|d| !all.iter().any(|o| o != d && d.starts_with(o)));
    dirs
}

/// Whether every directory from `/` down to `dir` lets others through (so `nobody` can reach
/// a task root below it).
pub fn reachable_by_others(dir: &Path) -> bool {
    reachable_by_others_except(dir, &|_| false)
}

/// Like [`reachable_by_others`], skipping ancestors for which `covered` holds (inside an
/// environment they are mount points made traversable by the sandbox init).
fn reachable_by_others_except(dir: &Path, covered: &dyn Fn(&Path) -> bool) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(dir) = dir.canonicalize() else { return false };
    let others_x = |d: &Path| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    others_x(&dir) && dir.ancestors().skip(1).all(|d| covered(d) || others_x(d))
}

/// Whether others may execute `program` (a path, or a name looked up in `path`).
pub fn executable_by_others(program: &str, path: &str) -> bool {
    executable_by_others_except(program, path, &|_| false)
}

fn executable_by_others_except(program: &str, path: &str, covered: &dyn Fn(&Path) -> bool) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![program.into()]
    } else {
        path.split(':').map(|d| Path::new(d).join(program)).collect()
    };
    candidates.into_iter().filter_map(|c| c.canonicalize().ok()).find(|c| c.is_file()).is_some_and(|c| {
        std::fs::metadata(&c).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
            && c.parent().is_some_and(|dir| reachable_by_others_except(dir, covered))
    })
}

/// Arranges for the child of `cmd` to start a session of its own (and so a process group whose
/// id is its pid, which a timeout kills): without a controlling terminal, a function can
/// neither write to the operator's terminal nor type into it (TIOCSTI). It also keeps every
/// descriptor gust inherited from whoever started it (a shell's redirect, a supervisor's pipe,
/// an activated socket) out of the environment: see [`crate::sys::cloexec_inherited`].
#[allow(unsafe_code)]
fn new_session_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and makes system calls only
    // (close_range(2) or fcntl(2), then setsid(2)); it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            crate::sys::cloexec_inherited();
            nix::unistd::setsid().map(drop).map_err(errno)
        });
    }
}

/// Arranges for the child of `cmd` to join `cgroup` before anything else it does.
#[allow(unsafe_code)]
fn join_on_exec(cmd: &mut std::process::Command, cgroup: Option<CgroupJoiner>) {
    use std::os::unix::process::CommandExt;
    let Some(cgroup) = cgroup else { return };
    // SAFETY: the closure runs in the forked child before exec; `join_self` only opens, writes
    // and closes files whose NUL-terminated paths were prepared before the fork: no allocation,
    // no locks.
    unsafe {
        cmd.pre_exec(move || cgroup.join_self());
    }
}

/// Arranges for the child of `cmd` (started without namespaces) to join its cgroup, take its
/// limits and no new privileges, become `user`, and install the seccomp filter, in that order,
/// before it executes. (Command's own uid switch would run before this closure, and a cgroup
/// must be joined with gust's privileges.)
#[allow(unsafe_code)]
fn confine_on_exec(
    cmd: &mut std::process::Command, cgroup: Option<CgroupJoiner>, limits: Limits, user: Option<(u32, u32)>,
    filter: crate::seccomp::Filter,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed: writes to prepared cgroup files, setrlimit(2), prctl(2), setgroups(2)
    // with an empty list, setresgid(2), setresuid(2) and installing a filter built before the
    // fork. It allocates nothing (errors are raw errnos) and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(cg) = &cgroup {
                cg.join_self()?;
            }
            limits.apply()?;
            nix::sys::prctl::set_no_new_privs().map_err(errno)?;
            if let Some((uid, gid)) = user {
                crate::sys::become_user(uid, gid)?;
            }
            filter.install()
        });
    }
}

/// Limits of the compiler child (`gust __compile`, see `wasm/compile.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompilerLimits {
    /// RLIMIT_AS: what bounds the compiler's own allocations.
    pub address_space_bytes: u64,
    /// RLIMIT_CPU (soft; SIGXCPU ends the child there, SIGKILL one second later).
    pub cpu_seconds: u64,
}

/// Open files of the compiler child: its three pipes and what the runtime opens at start.
const COMPILER_OPEN_FILES: u64 = 64;

/// Arranges for the child of `cmd`, which compiles an untrusted module, to start a session of
/// its own, die with the thread that started it, take its limits (address space, CPU time, no
/// core dumps, no file writes, few open files) and no new privileges, and install `filter`, in
/// that order, before it executes. It keeps gust's user: it opens no files, and reads and
/// writes only the pipes it inherits.
#[allow(unsafe_code)]
pub(crate) fn confine_compiler_on_exec(
    cmd: &mut std::process::Command, limits: CompilerLimits, filter: Option<crate::seccomp::Filter>,
) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed: setsid(2), prctl(2), getppid(2), setrlimit(2) and installing a filter
    // built before the fork. It allocates nothing (errors are raw errnos) and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(errno)?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(errno)?;
            // gust died before the line above: nobody is waiting for this compilation.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            let set = |r, soft, hard| setrlimit(r, soft, hard).map_err(errno);
            set(Resource::RLIMIT_AS, limits.address_space_bytes, limits.address_space_bytes)?;
            set(Resource::RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1)?;
            set(Resource::RLIMIT_CORE, 0, 0)?;
            set(Resource::RLIMIT_FSIZE, 0, 0)?;
            set(Resource::RLIMIT_NOFILE, COMPILER_OPEN_FILES, COMPILER_OPEN_FILES)?;
            nix::sys::prctl::set_no_new_privs().map_err(errno)?;
            match &filter {
                Some(filter) => filter.install(),
                None => Ok(()),
            }
        });
    }
}
