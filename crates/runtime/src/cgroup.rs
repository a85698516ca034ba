//! Per-environment cgroups: the kernel enforces a function's memory size, its share of CPU and a
//! bound on its processes for everything an environment runs, not only its first process, and
//! gust can tell afterwards whether the kernel OOM-killed something in it.
//!
//! [`Cgroups::detect`] finds, once at start, where this host's controllers are and whether gust
//! may use them:
//!
//! - **v2** (one unified hierarchy, usually at /sys/fs/cgroup): environments are children of a
//!   `gust-envs` cgroup with `memory`, `pids` and `cpu` enabled in its `cgroup.subtree_control`.
//!   v2 forbids a cgroup that holds processes from enabling controllers for its children ("no
//!   internal processes"), so `gust-envs` is made under gust's own cgroup when that cgroup may
//!   enable them (the root, or one that already does), else beside it (its parent enables them,
//!   since gust's cgroup has them). When neither works the controllers are reported unavailable.
//! - **v1** (a hierarchy per controller: /sys/fs/cgroup/memory, /pids, /cpu or /cpu,cpuacct):
//!   environments are `gust/<name>` under gust's own cgroup (from /proc/self/cgroup) in each.
//! - **hybrid** (the v1 controllers plus a v2 hierarchy without them, e.g. at
//!   /sys/fs/cgroup/unified): as v1, and each environment also gets a v2 cgroup
//!   (`gust-envs/<name>`), used only for `cgroup.kill`.
//!
//! Each controller is then tried for real: a test cgroup is made with its limit written, a forked
//! child joins it, and it is removed. What fails is named by [`Cgroups::describe`] and not used;
//! nothing here stops gust from starting.
//!
//! Per environment, [`Cgroups::create`] makes the cgroups and writes the limits:
//!
//! - **memory**: the function's memory size is the hard limit of all its processes together,
//!   with no swap on top (v2 `memory.max` and `memory.swap.max` = 0; v1 `memory.limit_in_bytes`
//!   and `memory.memsw.limit_in_bytes`, where swap accounting exists). Beyond it the kernel
//!   OOM-kills inside the cgroup; [`EnvCgroup::oom_killed`] tells afterwards, and
//!   [`EnvCgroup::peak_memory_bytes`] is the "Max Memory Used".
//! - **cpu**: Lambda's ratio, [`MB_PER_VCPU`] MB = one vCPU, as a CFS quota per
//!   [`CPU_PERIOD_US`] period; at least [`MIN_CPU_QUOTA_US`], at most every CPU gust may use.
//! - **pids**: at most [`PIDS_MAX`] processes and threads, so one function's fork bomb cannot stop
//!   another function from starting.
//!
//! The environment's process joins between fork and exec ([`EnvCgroup::join_self`], only
//! open/write/close on paths prepared beforehand); what it starts inherits the cgroup. Dropping
//! the [`EnvCgroup`] kills what is left (`cgroup.kill` where the kernel has it, else SIGKILL to
//! every listed process until none is left) and removes the cgroups.

use std::ffi::CString;
use std::fmt;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Processes and threads one environment may have at once (`pids.max`): plenty for a runtime
/// and the tools it starts, few enough that a fork bomb in one function leaves the host's pid
/// space (32,768 by default) to the others.
pub const PIDS_MAX: u64 = 1024;
/// Memory that buys one vCPU, as Lambda allocates CPU (MB).
pub const MB_PER_VCPU: u64 = 1769;
/// The CFS period of every environment (µs).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CPU quota per period (µs): one CPU. Lambda gives a 128 MB function 1/14 of a
/// vCPU; gust caps functions at one CPU until their memory buys more, so a small function's
/// cold start (an interpreter's init) is not throttled, while no function takes more CPUs than
/// its memory pays for beyond the first.
pub const MIN_CPU_QUOTA_US: u64 = CPU_PERIOD_US;
/// The longest environment name [`Cgroups::create`] accepts (bytes).
pub const MAX_NAME_LEN: usize = 64;
/// The cgroup under gust's own in each v1 hierarchy that holds environments.
const V1_PARENT: &str = "gust";
/// The v2 cgroup that holds environments (with the controllers enabled for its children).
const V2_PARENT: &str = "gust-envs";
/// How long killing by signals (without `cgroup.kill`) keeps going until the cgroup is empty.
const KILL_PATIENCE: Duration = Duration::from_secs(1);
/// How long removal retries `rmdir` while killed processes exit (it fails with EBUSY meanwhile).
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

/// How this host's cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One unified hierarchy.
    V2,
    /// A hierarchy per controller.
    V1,
    /// v1 controllers plus a v2 hierarchy without them.
    Hybrid,
    /// No cgroup hierarchy is mounted.
    None,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::V2 => "v2",
            Layout::V1 => "v1",
            Layout::Hybrid => "v1, hybrid",
            Layout::None => "none",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// Where the cgroups of environments are made for one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    version: Version,
    /// The cgroup whose children environments are.
    parent: PathBuf,
}

/// What this host's cgroups can enforce, found once at start.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    memory: Option<Hierarchy>,
    pids: Option<Hierarchy>,
    cpu: Option<Hierarchy>,
    /// The v2 cgroup whose children have `cgroup.kill` (in a hybrid layout the only use of v2).
    kill: Option<PathBuf>,
    /// Why controllers are not used, one sentence each.
    problems: Vec<String>,
    /// The CPUs gust may use: the cap of the CPU quota.
    cpus: u64,
    pids_max: u64,
}

impl Cgroups {
    /// Probes the layout and tries to create and remove a test cgroup with each controller;
    /// never fails (unavailable controllers are reported).
    pub fn detect() -> Cgroups {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let cgroups = Self::set_up(&discover(&mountinfo, &own));
        cgroups.remove_orphans();
        cgroups
    }

    /// Removes the environment cgroups that a gust process killed with -9 left behind (nothing
    /// ran their destructors): those named `gust-KIND-PID-...` whose process is gone. A cgroup
    /// that still holds processes is left alone (removing it fails).
    fn remove_orphans(&self) {
        let mut removed = 0;
        for parent in self.parents() {
            let Ok(entries) = std::fs::read_dir(parent) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = orphan_owner(&name) else { continue };
                let gone = pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
                if gone && std::fs::remove_dir(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed the cgroups of environments of gust processes that are gone");
        }
    }

    /// No cgroups at all: [`Cgroups::create`] makes inert environment cgroups. For hosts where
    /// the operator turns cgroups off.
    pub fn disabled() -> Cgroups {
        Cgroups {
            layout: Layout::None,
            memory: None,
            pids: None,
            cpu: None,
            kill: None,
            problems: Vec::new(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            pids_max: PIDS_MAX,
        }
    }

    /// The same, with another bound on each environment's processes and threads.
    pub fn with_pids_max(mut self, pids_max: u64) -> Cgroups {
        self.pids_max = pids_max.max(1);
        self
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn memory(&self) -> bool {
        self.memory.is_some()
    }

    pub fn pids(&self) -> bool {
        self.pids.is_some()
    }

    pub fn cpu(&self) -> bool {
        self.cpu.is_some()
    }

    /// Whether the kernel kills an environment's processes at once (`cgroup.kill`), rather than
    /// gust signalling each listed process until none is left.
    pub fn group_kill(&self) -> bool {
        self.kill.is_some()
    }

    /// One line for the start-up log, e.g. "cgroups (v1, hybrid): memory, pids, cpu enforced".
    pub fn describe(&self) -> String {
        if self.layout == Layout::None {
            return "cgroups: none mounted or disabled; memory, processes and cpu are not limited by cgroups"
                .to_string();
        }
        let enforced: Vec<&str> = Controller::ALL
            .into_iter()
            .filter(|&c| self.hierarchy(c).is_some())
            .map(Controller::name)
            .collect();
        let mut line = format!("cgroups ({}): ", self.layout);
        if enforced.is_empty() {
            line.push_str("nothing enforced");
        } else {
            line.push_str(&enforced.join(", "));
            line.push_str(" enforced");
        }
        if enforced.is_empty() && self.kill.is_none() {
            // Nothing to kill with either.
        } else if self.kill.is_some() {
            line.push_str("; group kill by cgroup.kill");
        } else {
            line.push_str("; group kill by signals");
        }
        for problem in &self.problems {
            line.push_str("; ");
            line.push_str(problem);
        }
        line
    }

    /// Creates the cgroup(s) of one environment named `name` (unique per environment:
    /// `[A-Za-z0-9._-]`, at most [`MAX_NAME_LEN`] bytes) with these limits. Where no controller
    /// is available the result is inert (joining and killing do nothing).
    pub fn create(&self, name: &str, memory_mb: u32) -> io::Result<EnvCgroup> {
        let mut env = self.create_unlimited(name)?;
        env.limit(memory_mb)?;
        Ok(env)
    }

    /// Creates the cgroup(s) of one environment with its pids bound but no memory or CPU
    /// limit yet ([`EnvCgroup::limit`] sets them): a pre-started environment joins its cgroup
    /// before it knows which function it will run.
    pub fn create_unlimited(&self, name: &str) -> io::Result<EnvCgroup> {
        validate_name(name)?;
        let mut env = EnvCgroup {
            name: name.to_string(),
            dirs: Vec::new(),
            joiner: CgroupJoiner { procs: Vec::new() },
            kill_file: None,
            memory: None,
            memory_dir: self.memory.as_ref().map(|h| (h.version, h.parent.join(name))),
            cpu_dir: self.cpu.as_ref().map(|h| (h.version, h.parent.join(name))),
            cpus: self.cpus,
        };
        // On an error below, dropping `env` removes what was made.
        for parent in self.parents() {
            let dir = parent.join(name);
            make_cgroup(&dir)?;
            let procs = dir.join("cgroup.procs");
            env.dirs.push(dir);
            env.joiner.procs.push(CString::new(procs.as_os_str().as_bytes())?);
        }
        if let Some(h) = &self.pids {
            write_file(&h.parent.join(name).join("pids.max"), &self.pids_max.to_string())?;
        }
        if let Some(parent) = &self.kill {
            let file = parent.join(name).join("cgroup.kill");
            if file.exists() {
                env.kill_file = Some(file);
            }
        }
        Ok(env)
    }

    fn hierarchy(&self, c: Controller) -> Option<&Hierarchy> {
        match c {
            Controller::Memory => self.memory.as_ref(),
            Controller::Pids => self.pids.as_ref(),
            Controller::Cpu => self.cpu.as_ref(),
        }
    }

    fn set_hierarchy(&mut self, c: Controller, h: Option<Hierarchy>) {
        match c {
            Controller::Memory => self.memory = h,
            Controller::Pids => self.pids = h,
            Controller::Cpu => self.cpu = h,
        }
    }

    /// The distinct cgroups under which each environment gets a cgroup.
    fn parents(&self) -> Vec<&Path> {
        let mut parents: Vec<&Path> = Vec::new();
        let controllers = Controller::ALL.into_iter().filter_map(|c| self.hierarchy(c));
        for parent in controllers.map(|h| h.parent.as_path()).chain(self.kill.as_deref()) {
            if !parents.contains(&parent) {
                parents.push(parent);
            }
        }
        parents
    }

    /// Makes the parent cgroups of what `found` shows and tries each controller.
    fn set_up(found: &Found) -> Cgroups {
        let mut cgroups = Cgroups::disabled();
        cgroups.layout = found.layout();
        let mut problems = Vec::new();
        let mut for_v2 = Vec::new();
        for (c, v1) in Controller::ALL.into_iter().zip(&found.v1) {
            match v1 {
                Some(Ok(own)) => {
                    let parent = own.join(V1_PARENT);
                    match ensure_dir(&parent) {
                        Ok(()) => cgroups.set_hierarchy(c, Some(Hierarchy { version: Version::V1, parent })),
                        Err(e) => problems.push(format!("{} unavailable: {e}", c.name())),
                    }
                }
                Some(Err(why)) => problems.push(format!("{} unavailable: {why}", c.name())),
                None => for_v2.push(c),
            }
        }
        match &found.v2 {
            Some(Ok(own)) => match prepare_v2(&own.dir, own.at_mount_root, &for_v2) {
                Ok(v2) => {
                    for c in v2.enabled {
                        let parent = v2.dir.clone();
                        cgroups.set_hierarchy(c, Some(Hierarchy { version: Version::V2, parent }));
                    }
                    problems.extend(v2.problems);
                    cgroups.kill = Some(v2.dir);
                }
                Err(why) => {
                    problems.extend(for_v2.iter().map(|c| format!("{} unavailable: {why}", c.name())));
                }
            },
            Some(Err(why)) => {
                problems.extend(for_v2.iter().map(|c| format!("{} unavailable: {why}", c.name())));
            }
            None if found.layout() != Layout::None => {
                problems.extend(for_v2.iter().map(|c| format!("{} unavailable: not mounted", c.name())));
            }
            None => {}
        }

        // Try each for real, alone.
        let nothing = Cgroups { layout: cgroups.layout, ..Cgroups::disabled() };
        for c in Controller::ALL {
            let Some(h) = cgroups.hierarchy(c).cloned() else { continue };
            let mut alone = nothing.clone();
            alone.set_hierarchy(c, Some(h));
            if let Err(e) = alone.try_out(&format!("gust-probe-{}-{}", std::process::id(), c.name())) {
                problems.push(format!("{} unavailable: the test cgroup failed: {e}", c.name()));
                cgroups.set_hierarchy(c, None);
            }
        }
        if let Some(dir) = cgroups.kill.clone() {
            let alone = Cgroups { kill: Some(dir), ..nothing.clone() };
            let name = format!("gust-probe-{}-kill", std::process::id());
            let works = alone.create(&name, 128).and_then(|env| {
                if env.kill_file.is_none() {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, "no cgroup.kill (kernel < 5.14)"));
                }
                join_in_child(&env.joiner)
            });
            if let Err(e) = works {
                tracing::debug!("cgroup v2 group kill unavailable: {e}");
                cgroups.kill = None;
            }
        }
        cgroups.problems = problems;
        cgroups
    }

    /// Creates a cgroup named `name`, has a forked child join it, and removes it.
    fn try_out(&self, name: &str) -> io::Result<()> {
        let env = self.create(name, 128)?;
        join_in_child(&env.joiner)
    }
}

/// The gust process an environment cgroup named `gust-KIND-PID-...` belongs to.
fn orphan_owner(name: &str) -> Option<u32> {
    name.strip_prefix("gust-")?.split('-').nth(1)?.parse().ok()
}

/// The CPU quota per [`CPU_PERIOD_US`] of a function with `memory_mb`: Lambda's share
/// ([`MB_PER_VCPU`] MB = one CPU), at least [`MIN_CPU_QUOTA_US`], at most `cpus` CPUs.
pub fn cpu_quota_us(memory_mb: u32, cpus: u64) -> u64 {
    let share = u64::from(memory_mb) * CPU_PERIOD_US / MB_PER_VCPU;
    share.min(cpus.max(1) * CPU_PERIOD_US).max(MIN_CPU_QUOTA_US)
}

/// The calling process's way into an environment's cgroups: owned, so it can move into a
/// `pre_exec` closure.
#[derive(Debug, Clone)]
pub struct CgroupJoiner {
    /// `cgroup.procs` of each hierarchy, NUL-terminated.
    procs: Vec<CString>,
}

impl CgroupJoiner {
    /// Adds the calling process to every hierarchy. Async-signal-safe: only open/write/close of
    /// "0" (the writer) to each prepared `cgroup.procs`, no allocation; for use between fork and
    /// exec.
    pub fn join_self(&self) -> io::Result<()> {
        for procs in &self.procs {
            crate::sys::write_file(procs, b"0")?;
        }
        Ok(())
    }
}

/// Files of one environment's memory cgroup.
#[derive(Debug)]
struct MemoryFiles {
    version: Version,
    dir: PathBuf,
    limit: u64,
}

/// One environment's cgroup(s); removed (processes killed) when dropped.
#[derive(Debug)]
pub struct EnvCgroup {
    name: String,
    /// Its cgroup in each hierarchy, in the order made.
    dirs: Vec<PathBuf>,
    joiner: CgroupJoiner,
    kill_file: Option<PathBuf>,
    /// Set once [`EnvCgroup::limit`] has written the memory limit.
    memory: Option<MemoryFiles>,
    /// This cgroup in the memory and cpu hierarchies, where those controllers are enforced.
    memory_dir: Option<(Version, PathBuf)>,
    cpu_dir: Option<(Version, PathBuf)>,
    /// The CPUs gust may use: the cap of the CPU quota.
    cpus: u64,
}

impl EnvCgroup {
    /// Sets the memory limit (the hard limit of all the cgroup's processes, no swap) and the
    /// CPU quota that follows from it. Each is one small write, so a pre-started environment
    /// takes its function's limits just before it starts the function.
    pub fn limit(&mut self, memory_mb: u32) -> io::Result<()> {
        if memory_mb == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "memory size 0 MB"));
        }
        if let Some((version, dir)) = &self.memory_dir {
            let limit = u64::from(memory_mb) << 20;
            match version {
                Version::V2 => {
                    write_file(&dir.join("memory.max"), &limit.to_string())?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write_file(&swap, "0")?;
                    }
                }
                Version::V1 => {
                    // The kernel keeps memsw >= memory: lowering, memory goes first; raising,
                    // memsw does.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    let (memsw, memory) =
                        (memsw.exists().then_some(memsw), dir.join("memory.limit_in_bytes"));
                    let raising = read_u64(&memory).is_some_and(|now| now < limit);
                    let mut files = vec![memory];
                    files.extend(memsw);
                    if raising {
                        files.reverse();
                    }
                    for f in &files {
                        write_file(f, &limit.to_string())?;
                    }
                }
            }
            self.memory = Some(MemoryFiles { version: *version, dir: dir.clone(), limit });
        }
        if let Some((version, dir)) = &self.cpu_dir {
            let quota = cpu_quota_us(memory_mb, self.cpus);
            match version {
                Version::V2 => write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?,
                Version::V1 => {
                    write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let file = dir.join("cpu.cfs_quota_us");
                    if let Err(e) = write_file(&file, &quota.to_string()) {
                        // v1 refuses a quota above an ancestor's; unlimited is allowed, and
                        // the ancestor's quota still bounds the environment.
                        if e.kind() != io::ErrorKind::InvalidInput {
                            return Err(e);
                        }
                        tracing::debug!("{e}; leaving the cpu quota to the parent cgroup");
                        write_file(&file, "-1")?;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds the CALLING process to every hierarchy of this cgroup. Async-signal-safe: only
    /// open/write/close on paths prepared in `create` ("0" to each `cgroup.procs`, which means
    /// "the writer"). For use between fork and exec.
    pub fn join_self(&self) -> io::Result<()> {
        self.joiner.join_self()
    }

    /// What [`EnvCgroup::join_self`] does, as an owned value for a `pre_exec` closure.
    pub fn joiner(&self) -> CgroupJoiner {
        self.joiner.clone()
    }

    /// Adds process `pid` (for a process already running).
    pub fn add(&self, pid: u32) -> io::Result<()> {
        for dir in &self.dirs {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup (in any of its hierarchies), as gust's pid namespace sees them.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<_>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether the kernel OOM-killed a process of this cgroup since it was created.
    pub fn oom_killed(&self) -> bool {
        let Some(m) = &self.memory else { return false };
        match m.version {
            Version::V2 => read_key(&m.dir.join("memory.events"), "oom_kill").is_some_and(|n| n > 0),
            Version::V1 => match read_key(&m.dir.join("memory.oom_control"), "oom_kill") {
                Some(n) => n > 0,
                // Kernels before 4.13 do not count kills: the limit was hit and usage reached it.
                None => {
                    let failed = ["memory.failcnt", "memory.memsw.failcnt"]
                        .iter()
                        .any(|f| read_u64(&m.dir.join(f)).is_some_and(|n| n > 0));
                    failed && read_u64(&m.dir.join("memory.max_usage_in_bytes")).is_some_and(|n| n >= m.limit)
                }
            },
        }
    }

    /// Peak memory use in bytes, if the kernel reports it (v2 `memory.peak` needs Linux 5.19).
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        let m = self.memory.as_ref()?;
        read_u64(&m.dir.join(match m.version {
            Version::V2 => "memory.peak",
            Version::V1 => "memory.max_usage_in_bytes",
        }))
    }

    /// Kills every process in the cgroup (used on timeout and when discarding the environment).
    /// With `cgroup.kill` the kernel kills them all at once, forks in flight included; otherwise
    /// every listed process gets SIGKILL until none is left (for up to a second).
    pub fn kill_all(&self) {
        if let Some(file) = &self.kill_file {
            match write_file(file, "1") {
                Ok(()) => return,
                Err(e) => tracing::debug!("cgroup {}: {e}; killing by signals", self.name),
            }
        }
        let deadline = Instant::now() + KILL_PATIENCE;
        let mut pause = Duration::from_millis(1);
        loop {
            let pids = self.processes();
            if pids.is_empty() {
                return;
            }
            self.signal(&pids);
            if Instant::now() >= deadline {
                tracing::debug!("cgroup {}: {} processes left after SIGKILL", self.name, pids.len());
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn signal(&self, pids: &[u32]) {
        use nix::sys::signal::{kill, Signal};
        for &pid in pids {
            if let Ok(pid) = i32::try_from(pid) {
                // A process that exited meanwhile is fine (ESRCH).
                let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for EnvCgroup {
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        self.kill_all();
        let deadline = Instant::now() + REMOVE_PATIENCE;
        let mut pause = Duration::from_millis(1);
        for dir in self.dirs.iter().rev() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline => {
                        // Killed processes are still exiting (or one was added late).
                        self.signal(&self.processes());
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::debug!("cannot remove cgroup {}: {e}", dir.display());
                        break;
                    }
                }
            }
        }
    }
}

/// Checks an environment name: one path component of `[A-Za-z0-9._-]`, at most
/// [`MAX_NAME_LEN`] bytes.
fn validate_name(name: &str) -> io::Result<()> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name == "."
        || name == ".."
        || !name.bytes().all(allowed)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid cgroup name {name:?}: [A-Za-z0-9._-], 1 to {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Makes the cgroup `dir`. One left empty by an earlier run is made again; one with processes
/// is not touched.
fn make_cgroup(dir: &Path) -> io::Result<()> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("creating cgroup {}: {e}", dir.display()));
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).map_err(context)?;
            if !procs.trim().is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("cgroup {} exists and holds processes", dir.display()),
                ));
            }
            std::fs::remove_dir(dir).map_err(context)?;
            std::fs::create_dir(dir).map_err(context)
        }
        Err(e) => Err(context(e)),
    }
}

fn ensure_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

/// Writes `value` to a cgroup file (which must exist), naming the file in the error.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", path.display())))
}

/// Whether this process may join the cgroups of `joiner`: a forked child joins them and exits.
fn join_in_child(joiner: &CgroupJoiner) -> io::Result<()> {
    crate::sys::in_child(|| joiner.join_self())
}

/// The number after `key` in a flat-keyed cgroup file ("oom_kill 3").
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key)).then(|| words.next()?.parse().ok()).flatten()
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The v2 cgroup that holds environments, and what it enables for them.
struct V2Parent {
    dir: PathBuf,
    enabled: Vec<Controller>,
    problems: Vec<String>,
}

/// Makes the v2 `gust-envs` cgroup and enables `wanted` in its `cgroup.subtree_control`: under
/// gust's own cgroup `own` if that may enable them for its children, else beside it.
fn prepare_v2(own: &Path, at_mount_root: bool, wanted: &[Controller]) -> Result<V2Parent, String> {
    let delegated = std::fs::read_to_string(own.join("cgroup.controllers"))
        .map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", own.display()))?;
    let mut problems = Vec::new();
    let mut want = Vec::new();
    for &c in wanted {
        if delegated.split_whitespace().any(|d| d == c.name()) {
            want.push(c);
        } else {
            problems.push(format!(
                "{} unavailable: not enabled for gust's cgroup {}",
                c.name(),
                own.display()
            ));
        }
    }
    // gust's own cgroup holds processes, so (unless it is the root) v2 lets it enable nothing
    // for children; its parent enables everything in its `cgroup.controllers`.
    let mut base = own;
    let mut own_refused = None;
    for &c in &want {
        if let Err(e) = enable(own, c) {
            own_refused.get_or_insert(e);
        }
    }
    if own_refused.is_some() && !at_mount_root {
        base = own.parent().unwrap_or(own);
    }
    let dir = base.join(V2_PARENT);
    ensure_dir(&dir)?;
    let mut enabled = Vec::new();
    for c in want {
        match enable(&dir, c) {
            Ok(()) => enabled.push(c),
            Err(e) => {
                let mut why = format!("{} unavailable: {e}", c.name());
                if let Some(refused) = &own_refused {
                    why.push_str(&format!(
                        " (gust's cgroup holds processes, so it cannot enable controllers for \
                         others: {refused}; run gust in a cgroup of its own whose parent \
                         delegates memory, pids and cpu)"
                    ));
                }
                problems.push(why);
            }
        }
    }
    Ok(V2Parent { dir, enabled, problems })
}

/// Enables `c` for the children of the v2 cgroup `dir`.
fn enable(dir: &Path, c: Controller) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&file)?;
    if current.split_whitespace().any(|d| d == c.name()) {
        return Ok(());
    }
    write_file(&file, &format!("+{}", c.name()))
}

/// gust's own cgroup in a hierarchy, or why it cannot be used.
type Own = Option<Result<PathBuf, String>>;

/// gust's own v2 cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnV2 {
    dir: PathBuf,
    /// Whether it is the root of what is mounted (a cgroup namespace's root, say): no parent.
    at_mount_root: bool,
}

/// What the mount table and /proc/self/cgroup show.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// For each of [`Controller::ALL`]: gust's cgroup in its v1 hierarchy, if one is mounted.
    v1: [Own; 3],
    /// gust's cgroup in the v2 hierarchy, if one is mounted.
    v2: Option<Result<OwnV2, String>>,
}

impl Found {
    fn layout(&self) -> Layout {
        match (self.v1.iter().any(Option::is_some), self.v2.is_some()) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::V1,
            (false, true) => Layout::V2,
            (false, false) => Layout::None,
        }
    }
}

/// A cgroup mount in /proc/self/mountinfo.
#[derive(Debug)]
struct Mount {
    /// The cgroup mounted (the hierarchy's root, or a cgroup below it for a bind mount).
    root: String,
    point: PathBuf,
    v2: bool,
    /// Super options: the controllers of a v1 hierarchy.
    options: String,
}

/// Reads where the hierarchies are (`mountinfo`: /proc/self/mountinfo) and where gust is in
/// them (`own`: /proc/self/cgroup).
fn discover(mountinfo: &str, own: &str) -> Found {
    let mounts = cgroup_mounts(mountinfo);
    let own_cgroup = |v1_controller: Option<&str>| {
        own.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = match v1_controller {
                Some(c) => controllers.split(',').any(|x| x == c),
                None => controllers.is_empty(),
            };
            matches.then_some(path)
        })
    };
    let v1 = Controller::ALL.map(|c| {
        let mount = mounts.iter().find(|m| !m.v2 && m.options.split(',').any(|o| o == c.name()))?;
        Some(match own_cgroup(Some(c.name())) {
            Some(path) => under_mount(mount, path),
            None => Err(format!("gust's {} cgroup is not in /proc/self/cgroup", c.name())),
        })
    });
    let v2 = mounts.iter().find(|m| m.v2).map(|mount| match own_cgroup(None) {
        Some(path) => under_mount(mount, path).map(|dir| OwnV2 { at_mount_root: dir == mount.point, dir }),
        None => Err("gust's cgroup v2 is not in /proc/self/cgroup".to_string()),
    });
    Found { v1, v2 }
}

fn cgroup_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent dev root point options [optional...] - fstype source super-options
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = *fields.get(sep + 1)?;
            if sep < 5 || !matches!(fstype, "cgroup" | "cgroup2") {
                return None;
            }
            Some(Mount {
                root: unescape(fields[3]),
                point: PathBuf::from(unescape(fields[4])),
                v2: fstype == "cgroup2",
                options: fields.get(sep + 3).copied().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` (as /proc/self/cgroup names it) where `mount` shows it.
fn under_mount(mount: &Mount, path: &str) -> Result<PathBuf, String> {
    let relative = if mount.root == "/" {
        Some(path)
    } else {
        path.strip_prefix(mount.root.as_str()).filter(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    match relative {
        Some(rest) => Ok(mount.point.join(rest.trim_start_matches('/'))),
        None => Err(format!(
            "gust's cgroup {path} is outside what {} shows ({})",
            mount.point.display(),
            mount.root
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    use std::process::{Command, Stdio};

    use super::*;

    /// A cgroup name no other test process uses.
    fn unique(what: &str) -> String {
        format!("test-{what}-{}", std::process::id())
    }

    /// Runs `script` with `/bin/sh` in `cg`.
    #[allow(unsafe_code)]
    fn spawn_in(cg: &EnvCgroup, script: &str, stderr: Stdio) -> std::process::Child {
        let joiner = cg.joiner();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        // SAFETY: the closure runs in the forked child before exec; `join_self` is
        // async-signal-safe (open/write/close on paths prepared before the fork, no allocation).
        unsafe {
            cmd.pre_exec(move || joiner.join_self());
        }
        cmd.spawn().expect("spawn /bin/sh")
    }

    fn wait_with_deadline(child: &mut std::process::Child, patience: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child did not end within {patience:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn cgroup_memory_limit_oom_kills_and_is_reported() {
        let cgroups = Cgroups::detect();
        eprintln!("{}", cgroups.describe());
        if !cgroups.memory() {
            // Root on a host with a v1 memory hierarchy (this kind of machine) must get one.
            let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
            assert!(
                !(v1 && nix::unistd::geteuid().is_root()),
                "memory controller unusable as root: {}",
                cgroups.describe()
            );
            eprintln!("skipped: no memory controller");
            return;
        }
        // As a pre-started environment gets it: made unlimited, joined, then limited (lowered
        // from unlimited, raised, lowered again).
        let mut cg = cgroups.create_unlimited(&unique("memory")).unwrap();
        for mb in [64, 256, 32] {
            cg.limit(mb).unwrap();
        }
        assert!(!cg.oom_killed());
        // `exec` so that the killed process is the child itself; bytes * n writes every page.
        let mut child = spawn_in(&cg, "exec python3 -c \"b = b'x' * (200 * 1024 * 1024)\"", Stdio::null());
        let status = wait_with_deadline(&mut child, Duration::from_secs(10));
        assert_eq!(status.signal(), Some(9), "{status:?}");
        assert!(cg.oom_killed());
        if let Some(peak) = cg.peak_memory_bytes() {
            assert!(peak > 16 << 20 && peak <= 33 << 20, "peak {peak}");
        }
    }

    #[test]
    fn cgroup_pids_bound_stops_a_fork_bomb() {
        const BOUND: u64 = 16;
        let cgroups = Cgroups::detect().with_pids_max(BOUND);
        if !cgroups.pids() {
            eprintln!("skipped: no pids controller");
            return;
        }
        let cg = cgroups.create(&unique("pids"), 128).unwrap();
        let script = "i=0; while [ $i -lt 2000 ]; do sleep 5 & i=$((i+1)); done; wait";
        let mut child = spawn_in(&cg, script, Stdio::piped());
        let mut most = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        // dash gives up at the first failed fork; a shell that retries is watched for 5 s.
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            most = most.max(cg.processes().len());
            std::thread::sleep(Duration::from_millis(5));
        }
        most = most.max(cg.processes().len());
        assert!(most as u64 <= BOUND, "{most} processes in a cgroup bounded to {BOUND}");
        assert!(most >= 2, "the shell and its children should have been seen ({most})");
        let dirs = cg.dirs.clone();
        drop(cg);
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let _ = child.wait();
        assert!(
            stderr.contains("fork") || stderr.contains("Resource temporarily unavailable"),
            "stderr: {stderr}"
        );
        assert!(dirs.iter().all(|d| !d.exists()));
    }

    #[test]
    fn cgroup_cpu_quota_follows_memory() {
        assert_eq!(cpu_quota_us(1769, 4), 100_000);
        assert_eq!(cpu_quota_us(128, 4), 100_000);
        assert_eq!(cpu_quota_us(3538, 4), 200_000);
        assert_eq!(cpu_quota_us(10_240, 2), 200_000, "capped at the host's CPUs");
        assert_eq!(cpu_quota_us(64, 2), MIN_CPU_QUOTA_US);
        let cgroups = Cgroups::detect();
        let Some(h) = cgroups.cpu.clone() else {
            eprintln!("skipped: no cpu controller");
            return;
        };
        for (mb, expected) in [(1769, cpu_quota_us(1769, cgroups.cpus)), (128, 100_000)] {
            let name = unique(&format!("cpu{mb}"));
            let cg = cgroups.create(&name, mb).unwrap();
            let dir = h.parent.join(&name);
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap().trim().to_string();
            match h.version {
                Version::V2 => assert_eq!(read("cpu.max"), format!("{expected} {CPU_PERIOD_US}")),
                Version::V1 => {
                    assert_eq!(read("cpu.cfs_quota_us"), expected.to_string());
                    assert_eq!(read("cpu.cfs_period_us"), CPU_PERIOD_US.to_string());
                }
            }
            drop(cg);
            assert!(!dir.exists());
        }
        assert_eq!(cpu_quota_us(1769, cgroups.cpus), 100_000);
    }

    /// Starts a shell with two children in a cgroup of `cgroups`, drops the cgroup, and checks
    /// that they are all gone and the directories removed.
    fn drop_kills_and_removes(cgroups: &Cgroups, what: &str) {
        let cg = cgroups.create(&unique(what), 128).unwrap();
        let mut child = spawn_in(&cg, "sleep 30 & sleep 30 & wait", Stdio::null());
        let deadline = Instant::now() + Duration::from_secs(5);
        while cg.processes().len() < 3 {
            assert!(Instant::now() < deadline, "processes: {:?}", cg.processes());
            std::thread::sleep(Duration::from_millis(5));
        }
        let pids = cg.processes();
        let dirs = cg.dirs.clone();
        assert!(!dirs.is_empty());
        let started = Instant::now();
        drop(cg);
        assert!(started.elapsed() < Duration::from_secs(2));
        let status = wait_with_deadline(&mut child, Duration::from_secs(2));
        assert_eq!(status.signal(), Some(9));
        for d in &dirs {
            assert!(!d.exists(), "{} left", d.display());
        }
        for pid in pids {
            // Gone, or a zombie waiting for its parent.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next());
            assert!(matches!(state, None | Some("Z") | Some("X")), "{pid}: {stat}");
        }
    }

    #[test]
    fn cgroup_drop_kills_leftovers_and_removes_the_directories() {
        let cgroups = Cgroups::detect();
        if cgroups.parents().is_empty() {
            eprintln!("skipped: no usable cgroup hierarchy");
            return;
        }
        drop_kills_and_removes(&cgroups, "drop");
        if cgroups.kill.is_some() && (cgroups.memory() || cgroups.pids() || cgroups.cpu()) {
            // Without cgroup.kill: signals until empty.
            let signals_only = Cgroups { kill: None, ..cgroups.clone() };
            drop_kills_and_removes(&signals_only, "drop-signals");
        }
    }

    #[test]
    fn cgroups_of_gone_gust_processes_are_removed_at_start() {
        assert_eq!(orphan_owner("gust-api-4242-18ed60d29e612fdf-0"), Some(4242));
        assert_eq!(orphan_owner("gust-probe-17-memory"), Some(17));
        assert_eq!(orphan_owner("gust-envs"), None);
        assert_eq!(orphan_owner("user.slice"), None);
        let cgroups = Cgroups::detect();
        let Some(parent) = cgroups.parents().first().map(|p| p.to_path_buf()) else {
            eprintln!("skipped: no cgroups");
            return;
        };
        // Pid 2^22 + 1 is above the kernel's pid_max: never a live process.
        let dead = parent.join("gust-api-4194305-abc-0");
        let live = parent.join(format!("gust-api-{}-abc-9", std::process::id()));
        for dir in [&dead, &live] {
            let _ = std::fs::create_dir(dir);
        }
        Cgroups::detect();
        assert!(!dead.exists(), "the cgroup of a gone gust process is removed");
        assert!(live.exists(), "a live process's cgroup is kept");
        let _ = std::fs::remove_dir(&live);
    }

    #[test]
    fn cgroup_names_are_validated() {
        let cgroups = Cgroups::disabled();
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(cgroups.create(bad, 128).is_err(), "{bad:?}");
        }
        let inert = cgroups.create("env-1.a_B", 128).unwrap();
        inert.join_self().unwrap();
        assert!(!inert.oom_killed());
        assert_eq!(inert.peak_memory_bytes(), None);
        assert!(cgroups.create(&"x".repeat(64), 128).is_ok());
    }

    #[test]
    fn cgroup_layouts_are_recognised() {
        let hybrid_mounts = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let hybrid_own = "9:name=systemd:/\n8:pids:/\n4:memory:/api/abc\n1:cpu,cpuacct:/\n0::/\n";
        let found = discover(hybrid_mounts, hybrid_own);
        assert_eq!(found.layout(), Layout::Hybrid);
        assert_eq!(found.v1[0], Some(Ok(PathBuf::from("/sys/fs/cgroup/memory/api/abc"))));
        assert_eq!(found.v1[1], Some(Ok(PathBuf::from("/sys/fs/cgroup/pids"))));
        assert_eq!(found.v1[2], Some(Ok(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))));
        let unified = OwnV2 { dir: PathBuf::from("/sys/fs/cgroup/unified"), at_mount_root: true };
        assert_eq!(found.v2, Some(Ok(unified)));

        let v2_mounts = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let found = discover(v2_mounts, "0::/system.slice/gust.service\n");
        assert_eq!(found.layout(), Layout::V2);
        let own =
            OwnV2 { dir: PathBuf::from("/sys/fs/cgroup/system.slice/gust.service"), at_mount_root: false };
        assert_eq!(found.v2, Some(Ok(own)));

        // A container's bind mount of its own cgroup (v1, no cgroup namespace).
        let v1_mounts = "50 40 0:32 /docker/c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        let found = discover(v1_mounts, "4:memory:/docker/c1/sub\n");
        assert_eq!(found.layout(), Layout::V1);
        assert_eq!(found.v1[0], Some(Ok(PathBuf::from("/sys/fs/cgroup/memory/sub"))));
        assert!(matches!(discover(v1_mounts, "4:memory:/elsewhere\n").v1[0], Some(Err(_))));

        assert_eq!(discover("", "").layout(), Layout::None);
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
    }
}
