//! The worker protocol's version, end to end: a real `gust worker` joins a server that speaks
//! a version it does not know, and refuses it before running anything, saying why.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gust_core::protocol::{self, HeartbeatReply};

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
