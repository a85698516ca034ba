//! Black-box test harness: starts the real `gust` binary on 127.0.0.1:0 and talks HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/fixtures/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../examples/{name}/{name}.wasm", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A zip package of `(name, contents, unix mode)` entries.
pub fn zip(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default().unix_permissions(*mode)).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A running `gust server`, killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    client: Client,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts on a given address (a restart that workers must find again).
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gust"))
            .args(["server", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("GUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gust server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("gust listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let client = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Server { child, url, data_dir: data_dir.to_path_buf(), client }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9, and wait for the process to be gone.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn get(&self, path: &str) -> Response {
        self.client.get(format!("{}{path}", self.url)).send().unwrap()
    }

    pub fn put_json(&self, path: &str, body: &Value) -> Response {
        self.client.put(format!("{}{path}", self.url)).json(body).send().unwrap()
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> Response {
        self.client
            .put(format!("{}{path}", self.url))
            .header("content-type", "application/wasm")
            .body(body)
            .send()
            .unwrap()
    }

    pub fn post(&self, path: &str) -> Response {
        self.client.post(format!("{}{path}", self.url)).send().unwrap()
    }

    pub fn delete(&self, path: &str) -> Response {
        self.client.delete(format!("{}{path}", self.url)).send().unwrap()
    }

    /// Creates (or replaces) a function with `config` and uploads `code`.
    pub fn deploy(&self, name: &str, config: Value, code: Vec<u8>) -> Value {
        let r = self.put_json(&format!("/v1/functions/{name}"), &config);
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        let r = self.put_bytes(&format!("/v1/functions/{name}/code"), code);
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        r.json().unwrap()
    }

    pub fn publish(&self, name: &str) -> u64 {
        let r = self.post(&format!("/v1/functions/{name}/versions"));
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
        r.json::<Value>().unwrap()["version"].as_u64().unwrap()
    }

    /// Invokes; `headers` adds e.g. ("invocation-type", "async").
    pub fn invoke(
        &self, name: &str, qualifier: Option<&str>, payload: &[u8], headers: &[(&str, &str)],
    ) -> Response {
        let mut url = format!("{}/v1/functions/{name}/invoke", self.url);
        if let Some(q) = qualifier {
            url.push_str(&format!("?qualifier={q}"));
        }
        let mut rb = self.client.post(url).body(payload.to_vec());
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().unwrap()
    }

    pub fn invocation(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/invocations/{id}"));
        assert_eq!(r.status(), 200);
        r.json().unwrap()
    }

    /// Polls an invocation until it reaches a terminal state or `timeout` passes.
    pub fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            // A keyless sync invocation's record is written behind: 404 until it lands.
            let r = self.get(&format!("/v1/invocations/{id}"));
            let v: Value = if r.status() == 404 { Value::Null } else { r.json().unwrap() };
            if matches!(v["state"].as_str(), Some("SUCCEEDED" | "FAILED" | "EXPIRED")) {
                return v;
            }
            assert!(Instant::now() < deadline, "invocation {id} did not finish: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `{"error":{"code":..}}` of a response, asserting its status.
pub fn error_code(r: Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let v: Value = r.json().expect("error body is JSON");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["error"]["code"].as_str().unwrap().to_string()
}

pub fn wasm_config(timeout_ms: u64) -> Value {
    json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": timeout_ms })
}

/// A running `gust worker`, killed (SIGKILL) when dropped.
pub struct Worker {
    child: Child,
    /// The worker id it acts as (an enrolled worker's is NAME-RANDOM).
    pub id: String,
}

impl Worker {
    /// Starts a worker that enrolls with the test servers' enrollment token.
    pub fn start(server_url: &str, data_dir: &Path, name: &str, extra: &[&str]) -> Worker {
        Worker::start_with(server_url, data_dir, name, &["--worker-token", "test-worker-token"], extra)
    }

    /// Starts a worker that proves itself with `credential` (its flags: an enrollment token or
    /// a provisioned secret file).
    pub fn start_with(
        server_url: &str, data_dir: &Path, name: &str, credential: &[&str], extra: &[&str],
    ) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gust"))
            .args(["worker", "--server", server_url, "--name", name])
            .args(credential)
            .arg("--data-dir")
            .arg(data_dir.join(name))
            .arg("--attempt-log")
            .arg(data_dir.join(format!("attempts-{name}.log")))
            .args(extra)
            .env("GUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gust worker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("worker banner");
        let id = line
            .strip_prefix("gust worker ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected worker banner {line:?}"))
            .to_string();
        Worker { child, id }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} failed");
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server flags for a server whose work runs only on remote workers.
pub const REMOTE_ONLY: [&str; 5] =
    ["--no-local-worker", "--worker-token", "test-worker-token", "--lease-ms", "1000"];

/// Sends `sig` (e.g. "-TERM") to a child process.
fn send_signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
}

/// Waits up to `timeout` for a child to exit; `None` if it is still running.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Server {
    /// Sends a signal (e.g. "-TERM") to the server process.
    pub fn signal(&self, sig: &str) {
        send_signal(&self.child, sig);
    }

    /// Waits up to `timeout` for the server to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

impl Worker {
    /// Waits up to `timeout` for the worker to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

/// Waits until `n` live workers have applied at least snapshot `snapshot`.
pub fn wait_for_workers(s: &Server, n: usize, snapshot: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = s.get("/v1/workers").json().unwrap();
        let ready = v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["live"] == true && w["snapshot_version"].as_u64().unwrap() >= snapshot)
            .count();
        if ready >= n {
            return;
        }
        assert!(Instant::now() < deadline, "workers not ready: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Enrolls a worker named `name` with the test servers' enrollment token, as a raw client:
/// its `(id, secret)`.
pub fn enroll(s: &Server, name: &str) -> (String, String) {
    let r = s
        .client()
        .post(format!("{}/internal/v1/workers/enroll", s.url))
        .bearer_auth("test-worker-token")
        .json(&json!({ "name": name }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "enrolling {name}");
    let v: Value = r.json().unwrap();
    (v["id"].as_str().unwrap().to_string(), v["secret"].as_str().unwrap().to_string())
}

/// One heartbeat as worker `id` with `secret`, reporting `runtimes` and `capacity` (0: nothing
/// is ever placed on it). Revisions are the clock in ms, as a real worker's start from.
pub fn heartbeat_as(s: &Server, secret: &str, id: &str, runtimes: &[&str], capacity: u32) -> Response {
    let revision =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    s.client()
        .post(format!("{}/internal/v1/workers/heartbeat", s.url))
        .bearer_auth(secret)
        .json(&json!({
            "id": id, "revision": revision, "runtimes": runtimes, "capacity": capacity,
            "running": 0, "warm": [], "snapshot_version": 0,
        }))
        .send()
        .unwrap()
}
