//! The processes under test: gust (this binary re-executed as a real `gust server` or `gust
//! worker`) and the bare baseline, each in its own process, as a user would run them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use gust_testkit::process::Process;

use crate::tls::BenchTls;

/// One process under test, killed when dropped.
pub struct Proc {
    process: Process,
    pub addr: SocketAddr,
}

impl Proc {
    /// This binary with `args`, once its first line has said `prefix` and its address.
    fn spawn(args: &[&str], prefix: &str) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(args).env("GUST_LOG", "error").stderr(Stdio::inherit());
        let (process, banner) = Process::start(&mut cmd)?;
        let rest =
            banner.strip_prefix(prefix).ok_or_else(|| anyhow::anyhow!("unexpected first line {banner:?}"))?;
        // Servers print their address; a worker's banner carries none.
        let addr = rest.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        Ok(Proc { process, addr })
    }

    /// A gust server (embedded, durable defaults) on loopback with its data in `data_dir`.
    pub fn gust(data_dir: &Path) -> anyhow::Result<Proc> {
        Proc::gust_with(data_dir, &[])
    }

    /// A gust server with extra flags (e.g. `--store postgres://…`).
    pub fn gust_with(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Proc> {
        let dir = data_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 temp dir"))?;
        let mut args = vec!["__serve", "server", "--listen", "127.0.0.1:0", "--data-dir", dir];
        args.extend_from_slice(extra);
        Proc::spawn(&args, "gust listening on http://")
    }

    /// A remote gust worker joined to the server at `server`.
    pub fn worker(server: SocketAddr, data_dir: &Path, token: &str) -> anyhow::Result<Proc> {
        Proc::worker_with(server, data_dir, token, 64)
    }

    /// A remote gust worker running at most `capacity` invocations at once.
    pub fn worker_with(
        server: SocketAddr, data_dir: &Path, token: &str, capacity: usize,
    ) -> anyhow::Result<Proc> {
        let capacity = capacity.to_string();
        let dir = data_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 temp dir"))?;
        let url = format!("http://{server}");
        let args = [
            "__serve",
            "worker",
            "--server",
            &url,
            "--worker-token",
            token,
            "--data-dir",
            dir,
            "--capacity",
            &capacity,
        ];
        let mut p = Proc::spawn(&args, "gust worker ")?;
        p.addr = server;
        Ok(p)
    }

    pub fn bare() -> anyhow::Result<Proc> {
        Proc::spawn(&["__bare"], "bare listening on http://")
    }

    /// The bare baseline over TLS with the bench's certificate.
    pub fn bare_tls(tls: &BenchTls) -> anyhow::Result<Proc> {
        let (cert, key) = (utf8(&tls.cert)?, utf8(&tls.key)?);
        Proc::spawn(&["__bare", cert, key], "bare listening on https://")
    }

    /// A gust server serving HTTPS with the bench's certificate.
    pub fn gust_tls(data_dir: &Path, tls: &BenchTls) -> anyhow::Result<Proc> {
        let (dir, cert, key) = (utf8(data_dir)?, utf8(&tls.cert)?, utf8(&tls.key)?);
        let args = [
            "__serve",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ];
        Proc::spawn(&args, "gust listening on https://")
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

fn utf8(path: &Path) -> anyhow::Result<&str> {
    path.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", path.display()))
}

/// `wasmtime serve` of a wasi:http component: the peer row of the function URL bench. Found as
/// `GUST_BENCH_WASMTIME`, or `wasmtime` on PATH (`cargo install wasmtime-cli --version` of
/// gust's wasmtime); killed when dropped.
pub struct WasmtimeServe {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl WasmtimeServe {
    pub fn start(component: &Path) -> Option<WasmtimeServe> {
        let program =
            std::env::var_os("GUST_BENCH_WASMTIME").map(std::path::PathBuf::from).or_else(|| {
                std::env::var_os("PATH")
                    .and_then(|p| std::env::split_paths(&p).map(|d| d.join("wasmtime")).find(|p| p.is_file()))
            })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&program)
            .args(["serve", "--addr", &addr.to_string()])
            .arg(component)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let serve = WasmtimeServe { child, addr };
        // It compiles the component before it listens.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline {
                eprintln!("wasmtime serve ({}) never listened: no peer row", program.display());
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(serve)
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
