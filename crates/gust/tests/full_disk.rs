//! A full disk under the embedded store, on a small tmpfs: new work (deploys, code, async
//! invocations, idempotency keys) is refused with 507 and a clear error; a write that does not
//! fit leaves nothing half written; everything acknowledged before is kept; the server keeps
//! answering and does not log at the rate it is asked; once space is freed it takes new work
//! again by itself, and every acknowledged invocation completes.
//!
//! Needs root (to mount the tmpfs); skipped with a message otherwise.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{accepted_id, wasm_config, Server};
use gust_testkit::{fixture, is_root, wait_until, zip};
use reqwest::blocking::Response;
use serde_json::{json, Value};

/// Size of the tmpfs the store lives on.
const DISK: &str = "24m";

/// A tmpfs mounted on a temp dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            _ => None,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes an unprivileged writer may still use (`stat -f`: available blocks × block size).
    fn available(&self) -> u64 {
        let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(self.path()).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        it.next().unwrap() * it.next().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, so a server still holding files there cannot keep the mount.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Writes `filler` until the disk is full (ENOSPC), or until only `leave` bytes are left.
fn fill(disk: &Tmpfs, filler: &Path, leave: u64) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(filler).unwrap();
    let chunk = vec![0x5a_u8; 64 << 10];
    loop {
        let room = disk.available().saturating_sub(leave);
        if room == 0 {
            return;
        }
        let n = room.min(chunk.len() as u64) as usize;
        match f.write_all(&chunk[..n]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

/// An async invocation of `name` with `payload`.
fn invoke_async(s: &Server, name: &str, payload: &str) -> Response {
    s.invoke(name, None, payload.as_bytes(), &[("invocation-type", "async")])
}

/// The invocation's record (`Null` while there is none): reads answer 200 or 404 whatever the
/// disk, so anything else fails the test at once.
fn record(s: &Server, id: &str) -> Value {
    let r = s.get(&format!("/v1/invocations/{id}"));
    match r.status().as_u16() {
        200 => r.json().unwrap(),
        404 => Value::Null,
        other => panic!("GET invocation {id}: {other} {}", r.text().unwrap()),
    }
}

/// Asserts a native-API 507 naming the full disk.
fn insufficient_storage(r: Response, what: &str) {
    assert_eq!(r.status().as_u16(), 507, "{what}: expected 507, got {} {}", r.status(), r.text().unwrap());
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "InsufficientStorage", "{what}: {v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk is full") || message.contains("no space left"), "{what}: {message}");
}

/// Files left half written: temporary names in the store's and the worker's directories.
fn temporaries(data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for sub in ["artifacts", "modules", "tasks"] {
        for entry in std::fs::read_dir(data_dir.join(sub)).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp") {
                found.push(format!("{sub}/{name}"));
            }
        }
    }
    found
}

#[test]
fn a_full_disk_refuses_new_work_keeps_what_was_accepted_and_recovers() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let Some(disk) = Tmpfs::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let data_dir = disk.path().join("gust");
    let filler = disk.path().join("filler");
    let mut s =
        Server::start_logged(&data_dir, &logs.path().join("server.log"), "info", &["--lease-ms", "1000"]);

    // Work accepted before the disk fills: quick ones, and slow ones still running (or queued)
    // when it fills.
    let r = s.put_json("/v1/functions/echo", &wasm_config(2000));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_eq!(s.put_bytes("/v1/functions/echo/code", fixture("echo")).status(), 200);
    let r = s.put_json("/v1/functions/burn", &wasm_config(10_000));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_eq!(s.put_bytes("/v1/functions/burn/code", fixture("burn")).status(), 200);
    let mut accepted: Vec<String> =
        (0..20).map(|i| accepted_id(invoke_async(&s, "echo", &format!("before-{i}")))).collect();
    accepted.extend((0..4).map(|_| accepted_id(invoke_async(&s, "burn", "1500"))));

    // A write that does not fit, while the disk is still above its reserve: a package that
    // unpacks to more than is free is refused with 507, and no partial task root is left.
    let r = s.put_json("/v1/functions/big", &json!({ "runtime": "provided.al2023", "timeout_ms": 2000 }));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    fill(&disk, &filler, 3 << 20);
    let bulk = vec![0u8; 6 << 20];
    let package = zip(&[("bootstrap", b"#!/bin/sh\nexit 0\n", 0o755), ("bulk.bin", &bulk, 0o644)]);
    assert!(package.len() < 1 << 20, "the package compresses well ({} bytes)", package.len());
    insufficient_storage(
        s.put_zip("/v1/functions/big/code", package.clone()),
        "a package too big for the disk",
    );
    assert_eq!(temporaries(&data_dir), Vec::<String>::new(), "nothing half written");
    // Still above the reserve: small new work is taken.
    accepted.push(accepted_id(invoke_async(&s, "echo", "between")));

    // Now the disk is full.
    fill(&disk, &filler, 0);
    // The server trusts a look at free space for 100 ms (`SPACE_CHECK_INTERVAL`).
    std::thread::sleep(Duration::from_millis(150));
    let full_since = Instant::now();
    assert_eq!(s.get("/healthz").status(), 200);
    let r = s.get("/readyz");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "InsufficientStorage");
    insufficient_storage(invoke_async(&s, "echo", "refused"), "an async invocation");
    insufficient_storage(
        s.invoke("echo", None, b"keyed", &[("idempotency-key", "k-1")]),
        "a sync invocation with a key",
    );
    insufficient_storage(s.put_json("/v1/functions/fresh", &wasm_config(1000)), "a new function");
    insufficient_storage(s.put_bytes("/v1/functions/echo/code", fixture("noop")), "new code");
    insufficient_storage(s.post("/v1/functions/echo/versions"), "publish");
    // The AWS API answers a retryable ServiceException (503) for the same refusal.
    let r = s.invoke_aws_event("echo");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["x-amzn-errortype"], "ServiceException");
    assert!(r.text().unwrap().contains("disk is full"));
    // A keyless sync invocation is still answered (its caller holds the result); its record
    // waits in memory until it can be written.
    let r = s.invoke("echo", None, b"sync-while-full", &[]);
    assert_eq!(r.status(), 200);
    let sync_id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
    assert_eq!(r.text().unwrap(), "sync-while-full");
    // Everything accepted is still there, readable.
    for id in &accepted {
        assert!(record(&s, id)["state"].is_string(), "invocation {id} is kept");
    }
    let metrics = s.get("/metrics").text().unwrap();
    assert!(metrics.contains("gust_store_disk_full 1"), "{metrics}");

    // Hammer it for a while: every request is refused at once, nothing crashes or spins.
    let mut refused = 0;
    while full_since.elapsed() < Duration::from_secs(4) {
        assert_eq!(invoke_async(&s, "echo", "hammer").status().as_u16(), 507);
        refused += 1;
        assert_eq!(s.get("/healthz").status(), 200);
    }
    assert!(refused > 20, "refusals are quick ({refused} in 4 s)");
    assert!(s.is_running(), "the server survived the full disk: {}", s.log());
    assert_eq!(temporaries(&data_dir), Vec::<String>::new(), "nothing half written");

    // Space is freed: the same requests succeed, without a restart.
    std::fs::remove_file(&filler).unwrap();
    wait_until("ready again", Duration::from_secs(5), || s.get("/readyz").status() == 200);
    accepted.push(accepted_id(invoke_async(&s, "echo", "after")));
    let r = s.put_json("/v1/functions/fresh", &wasm_config(1000));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = s.put_bytes("/v1/functions/fresh/code", fixture("echo"));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = s.put_zip("/v1/functions/big/code", package);
    assert_eq!(r.status(), 200, "the package fits now: {}", r.text().unwrap());
    let r = s.invoke("echo", None, b"keyed", &[("idempotency-key", "k-1")]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "keyed");

    // Every invocation accepted, before, between and after, completes; none was lost.
    for id in &accepted {
        wait_until(&format!("invocation {id} succeeds"), Duration::from_secs(30), || {
            record(&s, id)["state"] == "SUCCEEDED"
        });
    }
    // The sync invocation answered while the disk was full got its record once it could.
    wait_until("the record of the sync invocation", Duration::from_secs(10), || {
        record(&s, &sync_id)["state"] == "SUCCEEDED"
    });
    let metrics = s.get("/metrics").text().unwrap();
    assert!(metrics.contains("gust_store_disk_full 0"), "{metrics}");
    assert!(metrics.contains("gust_records_dropped_total 0"), "{metrics}");
    assert!(s.is_running());

    // The log said what happened, but not at the rate it happened.
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for line in &lines {
        // Lines differ by their timestamp; the rest is the message and its fields.
        let body = line.split_once(' ').map_or(*line, |(_, rest)| rest);
        *counts.entry(body.chars().filter(|c| !c.is_ascii_digit()).collect()).or_default() += 1;
    }
    let (most, n) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(*n <= 20, "a line repeated {n} times: {most}\n{log}");
    assert!(lines.len() < 200, "{} log lines:\n{log}", lines.len());
    assert!(log.contains("disk is full"), "the full disk was reported:\n{log}");
}
