//! Black-box test harness: starts the real `gust` binary on 127.0.0.1:0 and talks HTTP to it.
//! What is not about gust's HTTP API (fixtures, zip packages, child processes killed on drop,
//! the test interpreters) is shared with the other crates' tests in `gust_testkit`.
#![allow(dead_code)]

pub mod sigv4;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gust_testkit::process::Process;
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

/// The binary under test.
pub const GUST: &str = env!("CARGO_BIN_EXE_gust");

/// A running `gust server`, killed (SIGKILL) when dropped.
pub struct Server {
    process: Process,
    pub url: String,
    pub data_dir: PathBuf,
    /// Where its stderr goes, when it is captured ([`Server::start_logged`]).
    log: Option<PathBuf>,
    client: Client,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts on a given address (a restart that workers must find again).
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut cmd = server_command(data_dir, listen, extra);
        cmd.env("GUST_LOG", "warn").stderr(Stdio::inherit());
        Server::spawn(cmd, data_dir, None)
    }

    /// Starts with its log at `level` (`GUST_LOG`) written to the file `log`.
    pub fn start_logged(data_dir: &Path, log: &Path, level: &str, extra: &[&str]) -> Server {
        let mut cmd = server_command(data_dir, "127.0.0.1:0", extra);
        cmd.env("GUST_LOG", level).stderr(std::fs::File::create(log).expect("create the server log"));
        Server::spawn(cmd, data_dir, Some(log))
    }

    fn spawn(mut cmd: Command, data_dir: &Path, log: Option<&Path>) -> Server {
        let (process, banner) = Process::start(&mut cmd).expect("spawn gust server");
        let log = log.map(Path::to_path_buf);
        let url = banner
            .strip_prefix("gust listening on ")
            .unwrap_or_else(|| {
                let said = log.as_deref().map(read_log).unwrap_or_default();
                panic!("unexpected first line: {banner:?}\n{said}")
            })
            .to_string();
        let client = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Server { process, url, data_dir: data_dir.to_path_buf(), log, client }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `host:port` of the listening address (the URL without its scheme).
    pub fn addr(&self) -> &str {
        self.url.split_once("://").map_or(self.url.as_str(), |(_, addr)| addr)
    }

    /// kill -9, and wait for the process to be gone.
    pub fn kill9(self) {
        self.process.kill9();
    }

    /// Sends a signal (e.g. "-TERM") to the server process.
    pub fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    /// Waits up to `timeout` for the server to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_exit(timeout)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// What it logged so far, when started with [`Server::start_logged`].
    pub fn log(&self) -> String {
        self.log.as_deref().map(read_log).expect("a server started with start_logged")
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

    /// PUTs `body` as `content_type` (code: `application/wasm` or `application/zip`).
    pub fn put_body(&self, path: &str, content_type: &str, body: Vec<u8>) -> Response {
        self.client
            .put(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap()
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> Response {
        self.put_body(path, "application/wasm", body)
    }

    pub fn put_zip(&self, path: &str, body: Vec<u8>) -> Response {
        self.put_body(path, "application/zip", body)
    }

    pub fn post(&self, path: &str) -> Response {
        self.client.post(format!("{}{path}", self.url)).send().unwrap()
    }

    pub fn delete(&self, path: &str) -> Response {
        self.client.delete(format!("{}{path}", self.url)).send().unwrap()
    }

    /// Creates (or replaces) a function with `config` and uploads `code` (a wasm module).
    pub fn deploy(&self, name: &str, config: Value, code: Vec<u8>) -> Value {
        self.deploy_as(name, config, "application/wasm", code)
    }

    /// Creates (or replaces) a function with `config` and uploads `code`, a zip package.
    pub fn deploy_zip(&self, name: &str, config: Value, code: Vec<u8>) -> Value {
        self.deploy_as(name, config, "application/zip", code)
    }

    /// Creates (or replaces) a function with `config` and uploads `code` as `content_type`;
    /// the function as the upload answers it.
    pub fn deploy_as(&self, name: &str, config: Value, content_type: &str, code: Vec<u8>) -> Value {
        let r = self.put_json(&format!("/v1/functions/{name}"), &config);
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        let r = self.put_body(&format!("/v1/functions/{name}/code"), content_type, code);
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

    /// An async (`Event`) invocation of `name` with payload `{}` through the AWS Lambda API.
    pub fn invoke_aws_event(&self, name: &str) -> Response {
        self.client
            .post(format!("{}/2015-03-31/functions/{name}/invocations", self.url))
            .header("x-amz-invocation-type", "Event")
            .body("{}")
            .send()
            .unwrap()
    }

    pub fn invocation(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/invocations/{id}"));
        assert_eq!(r.status(), 200);
        r.json().unwrap()
    }

    /// An invocation's record, `Null` while there is none (a keyless sync invocation's record
    /// is written behind: 404 until it lands).
    pub fn record(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/invocations/{id}"));
        if r.status() == 404 {
            Value::Null
        } else {
            r.json().unwrap()
        }
    }

    /// Polls an invocation's record until `ok` holds; panics with the record after `timeout`.
    pub fn wait_record(&self, id: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.record(id);
            if ok(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "invocation {id} never got there: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls an invocation until it reaches a terminal state or `timeout` passes.
    pub fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        self.wait_record(id, timeout, |v| {
            matches!(v["state"].as_str(), Some("SUCCEEDED" | "FAILED" | "EXPIRED"))
        })
    }

    /// The counter or gauge `name` of `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        metric(&self.client, &self.url, name)
    }
}

/// `gust server --listen LISTEN --data-dir DATA_DIR EXTRA…`.
fn server_command(data_dir: &Path, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(GUST);
    cmd.args(["server", "--listen", listen, "--data-dir"]).arg(data_dir).args(extra);
    cmd
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The counter or gauge `name` of the `/metrics` of the server at `url`, read with `client`
/// (one that trusts the server's certificate, over TLS).
pub fn metric(client: &Client, url: &str, name: &str) -> u64 {
    let text = client.get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    gust_testkit::metric(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// `{"error":{"code":..}}` of a response, asserting its status.
pub fn error_code(r: Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let v: Value = r.json().expect("error body is JSON");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["error"]["code"].as_str().unwrap().to_string()
}

/// The id of an accepted async invocation, from its body, asserting 202 Accepted.
pub fn accepted_id(r: Response) -> String {
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    r.json::<Value>().unwrap()["invocation_id"].as_str().unwrap().to_string()
}

pub fn wasm_config(timeout_ms: u64) -> Value {
    json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": timeout_ms })
}

/// The CLI, pointed at the server at `url` and run from the repository root (so `examples/…`
/// paths work).
pub fn cli(url: &str) -> Command {
    let mut cmd = Command::new(GUST);
    cmd.env("GUST_SERVER", url).current_dir(gust_testkit::repo_root());
    cmd
}

/// A running `gust worker`, killed (SIGKILL) when dropped.
pub struct Worker {
    process: Process,
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
        let mut cmd = Command::new(GUST);
        cmd.args(["worker", "--server", server_url, "--name", name])
            .args(credential)
            .arg("--data-dir")
            .arg(data_dir.join(name))
            .arg("--attempt-log")
            .arg(data_dir.join(format!("attempts-{name}.log")))
            .args(extra)
            .env("GUST_LOG", "error")
            .stderr(Stdio::inherit());
        let (process, banner) = Process::start(&mut cmd).expect("spawn gust worker");
        let id = banner
            .strip_prefix("gust worker ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected worker banner {banner:?}"))
            .to_string();
        Worker { process, id }
    }

    pub fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    pub fn kill9(self) {
        self.process.kill9();
    }

    /// Waits up to `timeout` for the worker to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_exit(timeout)
    }
}

/// Server flags for a server whose work runs only on remote workers.
pub const REMOTE_ONLY: [&str; 5] =
    ["--no-local-worker", "--worker-token", "test-worker-token", "--lease-ms", "1000"];

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

/// Deploys `code` as `name` (as [`Server::deploy`]) and waits until `n` live workers have the
/// snapshot with it, so what is invoked next runs at once.
pub fn deploy_to_workers(s: &Server, n: usize, name: &str, config: Value, code: Vec<u8>) -> Value {
    let deployed = s.deploy(name, config, code);
    wait_for_workers(s, n, deployed["revision"].as_u64().unwrap());
    deployed
}

/// Enrolls a worker named `name` with the test servers' enrollment token, as a raw client:
/// its `(id, secret)`.
pub fn enroll(s: &Server, name: &str) -> (String, String) {
    let r = enroll_request(s, name);
    assert_eq!(r.status(), 201, "enrolling {name}");
    let v: Value = r.json().unwrap();
    (v["id"].as_str().unwrap().to_string(), v["secret"].as_str().unwrap().to_string())
}

/// Asks to enroll a worker named `name` with the test servers' enrollment token.
pub fn enroll_request(s: &Server, name: &str) -> Response {
    s.client()
        .post(format!("{}/internal/v1/workers/enroll", s.url))
        .bearer_auth("test-worker-token")
        .json(&json!({ "name": name }))
        .send()
        .unwrap()
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

/// A client for function URLs: it follows no redirects (a function's answer is what is asserted).
pub fn url_client() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Creates the URL of `target` (`NAME` or `NAME?qualifier=Q`) at the server `base` with
/// `body` (as `token`, if given); its view.
pub fn create_url(base: &str, target: &str, body: Value, token: Option<&str>) -> Value {
    let (name, query) = target.split_once('?').unwrap_or((target, ""));
    let mut rb = url_client().post(format!("{base}/v1/functions/{name}/url?{query}")).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    r.json().unwrap()
}

/// A response's body as JSON, or a panic that shows it.
pub fn json_of(r: Response) -> Value {
    let text = r.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A process's CPU time (user + system) so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the command's closing paren.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A process's peak resident memory so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A `gust worker NAME` that enrolls with the test servers' token, with `extra` flags, and the
/// lines of its stdout: its banners (`gust worker NAME-… joined …`, then any listener it opened).
pub fn worker_with_banners(
    server_url: &str, data_dir: &Path, name: &str, extra: &[&str],
) -> (Process, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
    use std::io::BufRead as _;
    let mut cmd = Command::new(GUST);
    cmd.args(["worker", "--server", server_url, "--name", name, "--worker-token", "test-worker-token"])
        .arg("--data-dir")
        .arg(data_dir.join(name))
        .args(extra)
        .env("GUST_LOG", "error")
        .stdout(Stdio::piped());
    let mut worker = Process::spawn(&mut cmd).expect("spawn gust worker");
    let lines = std::io::BufReader::new(worker.child_mut().stdout.take().expect("piped")).lines();
    (worker, lines)
}
