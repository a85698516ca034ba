//! Child processes for black-box tests and the bench: a program (gust, given by its path, or
//! the bench re-executing itself) started with its stdout piped, whose first line (the banner,
//! e.g. `gust listening on http://127.0.0.1:PORT`) is read before anything talks to it, and that
//! is killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing running.
//!
//! It knows no gust flags or banners: the callers build the command and read the banner.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running child process, killed (SIGKILL) and reaped when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Spawns `cmd` as it is configured.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Process> {
        Ok(Process { child: cmd.spawn()? })
    }

    /// Spawns `cmd` with its stdout piped and reads its first line (without the line end): the
    /// banner a server prints once it listens. A process that exits first gives an empty line.
    pub fn start(cmd: &mut Command) -> std::io::Result<(Process, String)> {
        let mut process = Process::spawn(cmd.stdout(Stdio::piped()))?;
        let stdout = process.child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        Ok((process, line.trim().to_string()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, e.g. to take a piped stderr.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `sig` (as `kill` takes it: "-TERM", "-STOP", …); panics if `kill` fails.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let ok = Command::new("kill").args([sig, pid.as_str()]).status().expect("run kill").success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// kill -9, and wait for the process to be gone (what dropping it does, said at the call).
    pub fn kill9(self) {
        drop(self);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
