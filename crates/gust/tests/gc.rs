//! Bounded disk, black box: code nothing references any more is collected in the background
//! (artifacts in the store, task roots and compiled modules in every node's data dir), while
//! `$LATEST`, every published version and code that queued or retrying work will run stay.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{accepted_id, wait_for_workers, wasm_config, Server, Worker, REMOTE_ONLY};
use gust_testkit::{fixture, fixture_file, unique_schema, wait_until, with_custom_section, zip};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Collect every 200 ms what has been unreferenced for a second.
const GC: [&str; 4] = ["--gc-interval-ms", "200", "--gc-grace-ms", "1000"];

/// `wasm` with a custom section making it code of its own (another sha256, same behaviour).
fn variant(wasm: Vec<u8>, n: u32) -> Vec<u8> {
    with_custom_section(&wasm, "gust-gc-test", &n.to_le_bytes())
}

/// A `provided` package of its own (the bootstrap and a file that tells it apart).
fn package(n: u32) -> Vec<u8> {
    zip(&[
        ("bootstrap", &fixture_file("bootstrap.py"), 0o755),
        ("variant.txt", n.to_string().as_bytes(), 0o644),
    ])
}

/// Deploys `code` as `name`'s code: its sha256.
fn upload(s: &Server, name: &str, config: Value, code: Vec<u8>, content_type: &str) -> String {
    let sha = hex::encode(Sha256::digest(&code));
    s.deploy_as(name, config, content_type, code);
    sha
}

/// The code hashes cached or stored under `dir` (`<sha>` or `<sha>-<engine>.cwasm`).
fn shas_in(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.get(..64).map(str::to_string))
        .filter(|n| n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

fn output(r: reqwest::blocking::Response) -> Vec<u8> {
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("gust-function-error").is_none(), "{:?}", r.headers());
    r.bytes().unwrap().to_vec()
}

fn set(shas: &[&String]) -> BTreeSet<String> {
    shas.iter().map(|s| s.to_string()).collect()
}

/// The scenario, on whichever store `args` picks. `artifacts_dir` is where the store keeps
/// artifacts on disk (the embedded store), if it does.
fn superseded_and_deleted_code_goes_and_needed_code_stays(s: &Server, artifacts_dir: Option<&Path>) {
    let data = &s.data_dir;
    // A wasm function redeployed many times, its first code published as version 1.
    let echo = fixture("echo");
    let first = upload(s, "w", wasm_config(3000), variant(echo.clone(), 0), "application/wasm");
    assert_eq!(s.publish("w"), 1);
    let mut superseded = vec![];
    for n in 1..=8 {
        superseded.push(upload(s, "w", wasm_config(3000), variant(echo.clone(), n), "application/wasm"));
    }
    let current = superseded.pop().unwrap();
    // An async invocation that failed and waits for its retry on code since replaced.
    let retry = json!({ "runtime": "wasm", "timeout_ms": 3000, "retry": { "max_retries": 1, "base_delay_ms": 15000 } });
    let retried = upload(s, "r", retry.clone(), variant(fixture("fail"), 0), "application/wasm");
    let waiting = accepted_id(s.invoke("r", None, b"x", &[("invocation-type", "async")]));
    wait_until("the failing invocation waits for its retry", Duration::from_secs(10), || {
        s.invocation(&waiting)["state"] == "RETRY_WAIT"
    });
    let r_current = upload(s, "r", retry, variant(echo.clone(), 100), "application/wasm");
    // A process function (task roots): its first package ran (warm until reaped), then replaced.
    let p_old = upload(
        s,
        "p",
        json!({ "runtime": "provided.al2023", "timeout_ms": 5000 }),
        package(0),
        "application/zip",
    );
    assert_eq!(s.invoke("p", None, b"{}", &[]).status(), 200);
    let p_current = upload(
        s,
        "p",
        json!({ "runtime": "provided.al2023", "timeout_ms": 5000 }),
        package(1),
        "application/zip",
    );
    // A function deleted outright.
    let deleted = upload(s, "gone", wasm_config(3000), variant(echo.clone(), 200), "application/wasm");
    assert!(s.delete("/v1/functions/gone").status().is_success());
    assert!(shas_in(&data.join("tasks")).contains(&p_old), "the first package was unpacked");

    let needed = set(&[&first, &current, &retried, &r_current, &p_current]);
    let mut garbage = set(&superseded.iter().collect::<Vec<_>>());
    garbage.extend([deleted.clone(), p_old.clone()]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let artifacts = artifacts_dir.map(shas_in);
        let modules = shas_in(&data.join("modules"));
        let tasks = shas_in(&data.join("tasks"));
        if artifacts.as_ref().is_none_or(|a| *a == needed)
            && modules.is_disjoint(&garbage)
            && !tasks.contains(&p_old)
        {
            eprintln!("collected after {:?}", started.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "unreferenced code was not collected within 30 s:\nneeded {needed:?}\ngarbage {garbage:?}\n\
             artifacts {artifacts:?}\nmodules {modules:?}\ntasks {tasks:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let modules = shas_in(&data.join("modules"));
    for sha in [&first, &current, &retried, &r_current] {
        assert!(modules.contains(sha), "compiled module {sha} of needed code was kept: {modules:?}");
    }
    assert!(shas_in(&data.join("tasks")).contains(&p_current), "the current package stays unpacked");

    // What is needed still runs: $LATEST, version 1, and the retry on its old code.
    assert_eq!(output(s.invoke("w", None, b"latest", &[])), b"latest");
    assert_eq!(output(s.invoke("w", Some("1"), b"version one", &[])), b"version one");
    let v: Value = serde_json::from_slice(&output(s.invoke("p", None, b"{}", &[]))).unwrap();
    assert_eq!(v["count"], 1, "a fresh environment in the current package");
    let done = s.wait_terminal(&waiting, Duration::from_secs(30));
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(done["attempts"], 2, "the retry ran: {done}");
    let error = done["error"].to_string();
    assert!(
        !error.contains("cannot fetch code") && !error.contains("InitError"),
        "the retry found its code: {done}"
    );
}

#[test]
fn the_embedded_server_collects_unreferenced_artifacts_task_roots_and_modules() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = GC.to_vec();
    args.extend(["--idle-ttl-s", "1"]);
    let s = Server::start(dir.path(), &args);
    superseded_and_deleted_code_goes_and_needed_code_stays(&s, Some(&dir.path().join("artifacts")));
}

#[test]
fn a_cluster_server_collects_unreferenced_code_in_postgresql() {
    let Some(url) = gust_testkit::postgres_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let schema = unique_schema("gc");
    let mut args = GC.to_vec();
    args.extend(["--idle-ttl-s", "1", "--store", &url, "--store-schema", &schema]);
    let s = Server::start(dir.path(), &args);
    superseded_and_deleted_code_goes_and_needed_code_stays(&s, None);
}

#[test]
fn a_remote_worker_collects_code_its_server_no_longer_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = REMOTE_ONLY.to_vec();
    args.extend(GC);
    let s = Server::start(&dir.path().join("server"), &args);
    let w = Worker::start(&s.url, dir.path(), "gcw", &GC);
    wait_for_workers(&s, 1, 0);
    let echo = fixture("echo");
    let modules = dir.path().join("gcw").join("modules");
    let mut codes = vec![];
    for n in 0..4 {
        let sha = upload(&s, "w", wasm_config(3000), variant(echo.clone(), n), "application/wasm");
        // Run on the worker, so it has compiled this code (just used: within its grace).
        assert_eq!(output(s.invoke("w", None, b"hi", &[])), b"hi");
        assert!(shas_in(&modules).contains(&sha), "the worker compiled {sha}");
        codes.push(sha);
    }
    let current = codes.pop().unwrap();
    wait_until("the worker's superseded modules are collected", Duration::from_secs(30), || {
        shas_in(&modules) == set(&[&current])
    });
    assert_eq!(output(s.invoke("w", None, b"still", &[])), b"still");
    drop(w);
}
