//! The worker protocol end to end: a real `gust worker` joins a server that speaks a version
//! it does not know, and refuses it before running anything, saying why; and a server tells a
//! worker what became of each completion (accepted, already completed, fenced) in the
//! protocol's own types.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{accepted_id, enroll, metric, wasm_config, Server, REMOTE_ONLY};
use gust_core::protocol::{
    self, Assignment, AttemptsReply, AttemptsRequest, CompleteReply, CompleteRequest, CompletionVerdict,
    CompletionsReply, CompletionsRequest, ErrorReply, Heartbeat, HeartbeatReply, PollReply, PollRequest,
    Verdict, WorkerCall,
};
use gust_core::{Runtime, StateName, WorkerId};
use reqwest::blocking::Response;
use serde::Serialize;

/// A server of another release: answers every request with a heartbeat reply of protocol
/// `version`, and reports each request line it got.
fn fake_server(version: u32) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (seen, requests) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let _ = reader.by_ref().take(length).read_to_end(&mut Vec::new());
            let _ = seen.send(request_line.trim().to_string());
            let reply =
                HeartbeatReply { protocol: version, snapshot_version: 0, lease_ms: 5_000, heartbeat_ms: 500 };
            let body = serde_json::to_vec(&reply).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let mut conn = conn;
            let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(&body));
        }
    });
    (url, requests)
}

#[test]
fn a_worker_refuses_a_server_speaking_an_unknown_protocol_version() {
    let newer = protocol::VERSION + 1;
    let (url, requests) = fake_server(newer);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "gustw_provisioned\n").unwrap();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_gust"))
        .args(["worker", "--server", &url, "--name", "w1", "--isolation", "none", "--data-dir"])
        .arg(dir.path().join("worker"))
        .arg("--secret-file")
        .arg(&secret)
        .env("GUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gust worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!("the worker kept running against a server of protocol version {newer}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    worker.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let mut stdout = String::new();
    worker.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let said = format!(
        "the server speaks worker protocol version {newer}, and this worker only version {}",
        protocol::VERSION
    );
    assert!(stderr.contains(&said), "a clear reason: {stderr}");
    assert!(!stdout.contains("joined"), "it never joined: {stdout}");
    // It asked nothing but its first heartbeat: no poll, so nothing ran.
    let asked: Vec<String> = requests.try_iter().collect();
    assert!(!asked.is_empty(), "the worker reached the server");
    assert!(asked.iter().all(|r| r.starts_with(&format!("POST {} ", protocol::HEARTBEAT_PATH))), "{asked:?}");
}

/// A worker written against the protocol's types by hand, so a test chooses exactly what it
/// sends and when (a real worker never repeats a completion unless a reply is lost).
struct RawWorker<'s> {
    server: &'s Server,
    id: String,
    secret: String,
}

impl<'s> RawWorker<'s> {
    /// Enrolls worker `name` and reports it live at snapshot `snapshot`.
    fn join(server: &'s Server, name: &str, snapshot: u64) -> RawWorker<'s> {
        let (id, secret) = enroll(server, name);
        let w = RawWorker { server, id, secret };
        w.heartbeat(snapshot);
        w
    }

    fn post(&self, path: &str, body: &impl Serialize) -> Response {
        let url = format!("{}{path}", self.server.url);
        self.server.client().post(url).bearer_auth(&self.secret).json(body).send().unwrap()
    }

    /// Reports itself live, able to run wasm, at snapshot `snapshot`.
    fn heartbeat(&self, snapshot: u64) {
        self.heartbeat_running(snapshot, 0);
    }

    /// Reports itself live with `running` of its 4 slots taken.
    fn heartbeat_running(&self, snapshot: u64, running: u32) {
        let revision = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let heartbeat = Heartbeat {
            id: WorkerId(self.id.clone()),
            revision: revision as u64,
            runtimes: vec![Runtime::Wasm],
            capacity: 4,
            running,
            warm: Vec::new(),
            snapshot_version: snapshot,
        };
        assert_eq!(self.post(protocol::HEARTBEAT_PATH, &heartbeat).status(), 200);
    }

    /// Polls (heartbeating, so it stays live) until invocation `id` is handed to it.
    fn claim(&self, snapshot: u64, id: &str) -> Assignment {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.heartbeat(snapshot);
            let poll = PollRequest { max: 1, wait_ms: 500 };
            let reply: PollReply = self.post(&WorkerCall::Poll.path(&self.id), &poll).json().unwrap();
            if let Some(a) = reply.assignments.into_iter().find(|a| a.invocation_id.0 == id) {
                return a;
            }
            assert!(Instant::now() < deadline, "invocation {id} was never handed to the worker");
        }
    }

    /// Reports attempt `epoch` of invocation `id` as succeeded: the verdict, and the state after
    /// it for a completion the server took.
    fn complete(&self, id: &str, epoch: u64) -> (Verdict, Option<StateName>) {
        let r = self.post(&WorkerCall::Complete.path(&self.id), &success(id, epoch));
        if r.status().is_success() {
            let reply: CompleteReply = r.json().unwrap();
            (reply.verdict, Some(reply.state))
        } else {
            assert!(r.status().is_client_error(), "{}", r.status());
            (Verdict::of_refusal(r.json::<ErrorReply>().unwrap().error.code), None)
        }
    }

    /// Reports several attempts in one call: the server's status and, for a 200, its reply.
    fn complete_all(&self, reports: Vec<CompleteRequest>) -> (u16, Option<CompletionsReply>) {
        let r =
            self.post(&WorkerCall::Completions.path(&self.id), &CompletionsRequest { completions: reports });
        let status = r.status().as_u16();
        (status, (status == 200).then(|| r.json().unwrap()))
    }
}

/// A succeeded report of attempt `epoch` of invocation `id`.
fn success(id: &str, epoch: u64) -> CompleteRequest {
    CompleteRequest {
        invocation_id: gust_core::InvocationId(id.to_string()),
        epoch,
        succeeded: true,
        result_b64: Some("ImRvbmUi".into()),
        error: None,
        log: String::new(),
        report: None,
    }
}

/// A server with remote workers only and the default lease (no attempt here may expire while
/// it is held), with wasm function `f`: the server and the snapshot that has `f`.
fn remote_only_with_f(dir: &std::path::Path) -> (Server, u64) {
    let s = Server::start(dir, &REMOTE_ONLY[..3]);
    let snapshot =
        s.deploy("f", wasm_config(5_000), gust_testkit::fixture("noop"))["revision"].as_u64().unwrap();
    (s, snapshot)
}

fn enqueue(s: &Server, function: &str) -> String {
    accepted_id(s.invoke(function, None, b"{}", &[("invocation-type", "async")]))
}

#[test]
fn a_completion_is_told_whether_it_was_accepted_repeated_or_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let (s, snapshot) = remote_only_with_f(dir.path());
    let w = RawWorker::join(&s, "raw", snapshot);

    // Accepted; then the same report again, as a worker sends it when the reply was lost: taken
    // again as a repeat, never as a second outcome, and never as fenced.
    let first = enqueue(&s, "f");
    let a = w.claim(snapshot, &first);
    assert_eq!(w.complete(&first, a.epoch), (Verdict::Accepted, Some(StateName::Succeeded)));
    assert_eq!(w.complete(&first, a.epoch), (Verdict::AlreadyCompleted, Some(StateName::Succeeded)));
    assert_eq!(s.invocation(&first)["attempts"], a.epoch, "one attempt, completed once");

    // Fenced: an attempt the worker handed back was delivered again as a new epoch, so the
    // old epoch's report is refused, and the new one's is accepted.
    let second = enqueue(&s, "f");
    let stale = w.claim(snapshot, &second);
    let release = AttemptsRequest { attempts: vec![stale.attempt()] };
    let released: AttemptsReply = w.post(&WorkerCall::Release.path(&w.id), &release).json().unwrap();
    assert_eq!(released.verdicts, [Verdict::Accepted]);
    let current = w.claim(snapshot, &second);
    assert_eq!(current.epoch, stale.epoch + 1);
    assert_eq!(w.complete(&second, stale.epoch), (Verdict::Fenced, None));
    assert_eq!(w.complete(&second, current.epoch), (Verdict::Accepted, Some(StateName::Succeeded)));

    assert_eq!(metric(s.client(), &s.url, "gust_repeated_completions_total"), 1);
    assert_eq!(metric(s.client(), &s.url, "gust_fenced_completions_total"), 1);
}

#[test]
fn completions_sent_together_are_each_told_their_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (s, snapshot) = remote_only_with_f(dir.path());
    let raw = |name: &str| RawWorker::join(&s, name, snapshot);
    let w = raw("batch");
    let first = enqueue(&s, "f");
    let a = w.claim(snapshot, &first);
    let second = enqueue(&s, "f");
    let stale = w.claim(snapshot, &second);
    let release = AttemptsRequest { attempts: vec![stale.attempt()] };
    let _: AttemptsReply = w.post(&WorkerCall::Release.path(&w.id), &release).json().unwrap();
    let current = w.claim(snapshot, &second);
    // From here `w` stays live and full (so nothing more is placed on it) while another
    // worker claims a third invocation.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                w.heartbeat_running(snapshot, 4);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        // Stops the heartbeats however this scope ends (a failed assertion too).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = Stop(&done);
        let other = raw("other");
        let third = enqueue(&s, "f");
        let others = other.claim(snapshot, &third);

        // A malformed entry refuses the whole call, and nothing in it is taken.
        let mut broken = success(&first, a.epoch);
        broken.result_b64 = Some("not base64!".into());
        assert_eq!(w.complete_all(vec![success(&second, current.epoch), broken]), (400, None));
        let rec = s.invocation(&second);
        assert_eq!(rec["state"], "RUNNING", "nothing of a refused call is taken: {rec}");
        // So does one over the limit.
        let too_many = vec![success(&first, a.epoch); protocol::MAX_COMPLETIONS_PER_CALL + 1];
        assert_eq!(w.complete_all(too_many).0, 400);

        // Each entry answered as a call of its own would be: taken, fenced, another worker's.
        let (status, reply) = w.complete_all(vec![
            success(&first, a.epoch),
            success(&second, stale.epoch),
            success(&second, current.epoch),
            success(&third, others.epoch),
        ]);
        assert_eq!(status, 200);
        let taken = |verdict| CompletionVerdict { verdict, state: Some(StateName::Succeeded) };
        let refused = |verdict| CompletionVerdict { verdict, state: None };
        assert_eq!(
            reply.unwrap().replies,
            [
                taken(Verdict::Accepted),
                refused(Verdict::Fenced),
                taken(Verdict::Accepted),
                refused(Verdict::Forbidden)
            ]
        );
        assert_eq!(s.invocation(&third)["state"], "RUNNING", "another worker's attempt is untouched");
        // A repeat (the reply was lost) is the acceptance it repeats, never a second outcome.
        let (_, reply) = w.complete_all(vec![success(&first, a.epoch)]);
        assert_eq!(reply.unwrap().replies, [taken(Verdict::AlreadyCompleted)]);
        assert_eq!(other.complete(&third, others.epoch), (Verdict::Accepted, Some(StateName::Succeeded)));
        assert_eq!(s.invocation(&first)["result"], "\"done\"");
    });
}
