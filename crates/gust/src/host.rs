//! What this host gives gust: every path taken from flags or defaults resolved once at start
//! (relative paths against the working directory, program names against the user's PATH), and
//! which runtimes it can run, said in one line each.
//!
//! Everything downstream (the worker, the sandbox, the Runtime API) sees only absolute paths,
//! so a relative `--data-dir` or a `python3` found on PATH means the same thing in every
//! process and inside every namespace.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use gust_core::Runtime;

/// How long a runtime probe (`python -c 'import awslambdaric'`, `node --version`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Prints the interpreter's real path, its version, then `ok` or why awslambdaric does not
/// import.
const PYTHON_PROBE: &str = "import sys\nprint(sys.executable)\nprint(sys.version.split()[0])\nprint(sys.prefix)\nprint(sys.base_prefix)\ntry:\n    import awslambdaric\n    print('ok')\nexcept Exception as e:\n    print('no: %s' % e)";

/// The programs that run the managed runtimes, as flags and environment give them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RuntimeOpts {
    /// The Python interpreter for python3.x functions (it needs `awslambdaric` installed); a
    /// program name is looked up on PATH. Default: python3.
    #[arg(long, env = "GUST_PYTHON")]
    pub python: Option<String>,
    /// The Node.js binary for nodejsN.x functions; a program name is looked up on PATH.
    /// Default: node.
    #[arg(long = "node", env = "GUST_NODE")]
    pub node: Option<String>,
    /// The aws-lambda-ric package directory (e.g. node_modules/aws-lambda-ric). Default: the
    /// first of ./node_modules/aws-lambda-ric and the global npm root of --node that has it.
    #[arg(long = "node-ric", env = "GUST_NODE_RIC")]
    pub node_ric: Option<PathBuf>,
}

/// A runtime this host can or cannot run, and why.
#[derive(Debug, Clone)]
pub struct RuntimeSupport {
    pub runtime: Runtime,
    pub available: bool,
    pub detail: String,
}

/// The resolved programs and what they can run.
#[derive(Debug, Clone)]
pub struct HostRuntimes {
    /// An absolute path, when an interpreter was found.
    pub python: Option<PathBuf>,
    pub node: Option<PathBuf>,
    pub node_ric: Option<PathBuf>,
    /// Directories the runtimes need inside every environment (a venv and its base
    /// installation, node's prefix, the runtime client's node_modules).
    pub runtime_dirs: Vec<PathBuf>,
    pub support: Vec<RuntimeSupport>,
}

impl HostRuntimes {
    /// Resolves the programs (an explicitly given one that cannot be found is an error; a
    /// default that is missing only makes its runtime unavailable) and probes each runtime.
    pub fn detect(opts: &RuntimeOpts) -> anyhow::Result<Self> {
        let python = resolve_program_opt(opts.python.as_deref(), "python3", "--python")?;
        let node = resolve_program_opt(opts.node.as_deref(), "node", "--node")?;
        let node_ric = match &opts.node_ric {
            Some(dir) => {
                let dir = canonical_ric(dir)
                    .with_context(|| format!("--node-ric {}: no such directory", dir.display()))?;
                if !dir.join("bin/index.mjs").is_file() {
                    bail!(
                        "--node-ric {}: no bin/index.mjs there (is it the aws-lambda-ric package directory?)",
                        dir.display()
                    );
                }
                Some(dir)
            }
            None => None,
        };
        let mut support = vec![
            RuntimeSupport { runtime: Runtime::Wasm, available: true, detail: "wasmtime".into() },
            RuntimeSupport {
                runtime: Runtime::Provided { al: 0 },
                available: true,
                detail: "a zip with an executable bootstrap".into(),
            },
        ];
        let mut runtime_dirs = Vec::new();
        // The interpreters say where they really are (a pyenv or asdf shim on PATH is a script
        // that finds the interpreter through the user's home; a venv's python stays itself).
        let (python, python_support) = match python {
            None => {
                (None, unavailable(Runtime::Python { minor: 0 }, "no python3 on PATH (give --python)".into()))
            }
            Some(p) => match probe(&p, &["-c", PYTHON_PROBE]) {
                Err(e) => (
                    None,
                    unavailable(Runtime::Python { minor: 0 }, format!("{} does not run: {e}", p.display())),
                ),
                Ok(out) => {
                    let mut lines = out.lines();
                    let exe = lines.next().filter(|l| l.starts_with('/')).map_or(p.clone(), PathBuf::from);
                    let version = lines.next().unwrap_or("?").to_string();
                    // A venv's prefix and the installation it was made from: both must be
                    // inside every environment.
                    runtime_dirs
                        .extend(lines.by_ref().take(2).filter(|l| l.starts_with('/')).map(PathBuf::from));
                    let verdict = lines.next().unwrap_or("");
                    let support = if verdict == "ok" {
                        RuntimeSupport {
                            runtime: Runtime::Python { minor: 0 },
                            available: true,
                            detail: format!("{} (Python {version}, awslambdaric imports)", exe.display()),
                        }
                    } else {
                        unavailable(
                            Runtime::Python { minor: 0 },
                            format!(
                                "{} (Python {version}): awslambdaric does not import ({}); `{} -m pip install awslambdaric`",
                                exe.display(),
                                verdict.trim_start_matches("no: "),
                                exe.display()
                            ),
                        )
                    };
                    (Some(exe), support)
                }
            },
        };
        let (node, node_support) = match node {
            None => (None, unavailable(Runtime::Node { major: 0 }, "no node on PATH (give --node)".into())),
            Some(n) => {
                match probe(&n, &["-e", "console.log(process.execPath); console.log(process.version)"]) {
                    Err(e) => (
                        None,
                        unavailable(Runtime::Node { major: 0 }, format!("{} does not run: {e}", n.display())),
                    ),
                    Ok(out) => {
                        let mut lines = out.lines();
                        let exe =
                            lines.next().filter(|l| l.starts_with('/')).map_or(n.clone(), PathBuf::from);
                        let version = lines.next().unwrap_or("?").to_string();
                        let node_ric = node_ric.clone().or_else(|| default_node_ric(&[&n, &exe]));
                        if let Some(prefix) =
                            exe.canonicalize().ok().as_deref().and_then(Path::parent).and_then(Path::parent)
                        {
                            runtime_dirs.push(prefix.to_path_buf());
                        }
                        let support = match &node_ric {
                        Some(ric) => RuntimeSupport {
                            runtime: Runtime::Node { major: 0 },
                            available: true,
                            detail: format!("{} ({version}), runtime client {}", exe.display(), ric.display()),
                        },
                        None => unavailable(
                            Runtime::Node { major: 0 },
                            format!("{} ({version}): no aws-lambda-ric package (`npm install -g aws-lambda-ric@3.3.0`, or give --node-ric DIR)", exe.display()),
                        ),
                    };
                        (Some(exe), support)
                    }
                }
            }
        };
        let node_ric = node_ric.or_else(|| node.as_deref().and_then(|n| default_node_ric(&[n])));
        support.push(python_support);
        support.push(node_support);
        if let Some(ric) = &node_ric {
            runtime_dirs.push(ric.parent().map_or(ric.clone(), Path::to_path_buf));
        }
        Ok(HostRuntimes { python, node, node_ric, runtime_dirs, support })
    }

    /// The runtime families this host runs (what a worker reports and deploys are checked
    /// against).
    pub fn available(&self) -> Vec<Runtime> {
        self.support.iter().filter(|s| s.available).map(|s| s.runtime).collect()
    }

    /// Says once, one line per runtime, what this host can run.
    pub fn log(&self) {
        for s in &self.support {
            let name = match s.runtime {
                Runtime::Python { .. } => "python3.x".to_string(),
                Runtime::Node { .. } => "nodejsN.x".to_string(),
                Runtime::Provided { .. } => "provided".to_string(),
                r => r.name(),
            };
            if s.available {
                tracing::info!("runtime {name}: available: {}", s.detail);
            } else {
                tracing::warn!("runtime {name}: unavailable: {}", s.detail);
            }
        }
    }
}

fn unavailable(runtime: Runtime, detail: String) -> RuntimeSupport {
    RuntimeSupport { runtime, available: false, detail }
}

/// A directory gust owns (a data dir): created if missing, then made absolute and canonical.
/// A new one lets others only traverse it (0711: task roots below it are bound into
/// environments by path; nobody can list what is there). An existing one is left as it is.
pub fn resolve_dir(dir: &Path, flag: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .with_context(|| format!("{flag} {}: cannot create it", dir.display()))?;
    }
    dir.canonicalize().with_context(|| format!("{flag} {}: cannot resolve it", dir.display()))
}

/// A program as the user's shell would find it: a name without a slash on PATH, anything
/// else against the working directory. Must be an executable file.
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let p = std::path::absolute(program).ok()?;
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .and_then(|p| std::path::absolute(p).ok())
}

/// An explicit program must resolve; the default may be absent.
fn resolve_program_opt(given: Option<&str>, default: &str, flag: &str) -> anyhow::Result<Option<PathBuf>> {
    match given {
        Some(p) => match resolve_program(p) {
            Some(found) => Ok(Some(found)),
            None => bail!("{flag} {p:?}: no such executable (relative paths are taken from the working directory, names from PATH)"),
        },
        None => Ok(resolve_program(default)),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `./node_modules/aws-lambda-ric`, else the package in the global npm root of a `node`
/// (`PREFIX/lib/node_modules` for `PREFIX/bin/node`, where `npm install -g` puts it).
fn default_node_ric(nodes: &[&Path]) -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("node_modules/aws-lambda-ric")];
    for prefix in nodes.iter().filter_map(|n| n.parent()).filter_map(Path::parent) {
        candidates.push(prefix.join("lib/node_modules/aws-lambda-ric"));
    }
    candidates.into_iter().filter_map(|c| canonical_ric(&c).ok()).find(|c| c.join("bin/index.mjs").is_file())
}

/// The package directory with its links resolved: Node.js loads modules by their real path,
/// and a link under /tmp would not exist inside an environment's own /tmp.
fn canonical_ric(dir: &Path) -> std::io::Result<PathBuf> {
    dir.canonicalize()
}

/// Runs `program args` and returns its trimmed stdout, or why it failed.
fn probe(program: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove(OsStr::new("PYTHONPATH"))
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(_) => break,
            None if started.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    Err(format!("{}: {last}", out.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_are_found_on_path_and_relative_paths_against_the_working_directory() {
        let sh = resolve_program("sh").expect("sh on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"));
        assert_eq!(resolve_program("no-such-program-gust"), None);
        assert_eq!(resolve_program("./no/such/file"), None);
        let cwd = std::env::current_dir().unwrap();
        let dir = tempfile::tempdir_in(&cwd).unwrap();
        let prog = dir.path().join("tool");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        let relative = format!("./{}/tool", dir.path().file_name().unwrap().to_string_lossy());
        assert_eq!(resolve_program(&relative), None, "not executable");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = resolve_program(&relative).unwrap();
        assert!(found.is_absolute());
        assert_eq!(found.canonicalize().unwrap(), prog.canonicalize().unwrap());
    }

    #[test]
    fn an_explicit_program_that_does_not_exist_is_an_error_a_missing_default_is_not() {
        let e = resolve_program_opt(Some("no-such-python-gust"), "python3", "--python").unwrap_err();
        assert!(e.to_string().contains("--python"), "{e}");
        assert_eq!(resolve_program_opt(None, "no-such-default-gust", "--python").unwrap(), None);
    }
}
