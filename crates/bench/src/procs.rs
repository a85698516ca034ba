//! The processes under test: gust (this binary re-executed as a real `gust server`) and the
//! bare baseline, each in its own process, as a user would run them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
}

impl Proc {
    fn spawn(args: &[&str], prefix: &str) -> anyhow::Result<Proc> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .env("GUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix(prefix)
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(Proc { child, addr })
    }

    /// A gust server (embedded, durable defaults) on loopback with its data in `data_dir`.
    pub fn gust(data_dir: &Path) -> anyhow::Result<Proc> {
        let dir = data_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 temp dir"))?;
        Proc::spawn(
            &["__serve", "server", "--listen", "127.0.0.1:0", "--data-dir", dir],
            "gust listening on http://",
        )
    }

    pub fn bare() -> anyhow::Result<Proc> {
        Proc::spawn(&["__bare"], "bare listening on http://")
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
