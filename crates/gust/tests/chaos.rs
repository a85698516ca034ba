//! The chaos test of the worker protocol: one server and three workers, 2,000 async
//! invocations of a function, while workers are killed (-9) and restarted, one worker is
//! SIGSTOPped past its lease and resumed, and the server is killed (-9) and restarted once.
//!
//! Afterwards, from the store and from the attempts the workers recorded: every acknowledged
//! invocation reached exactly one terminal state, none was lost or duplicated, no invocation
//! has two accepted completions, and every accepted completion carries the invocation's latest
//! epoch. Bounded in time; stops by itself. The same scenario runs in the embedded shape (one
//! server on SQLite) and in the cluster shape (two servers on PostgreSQL; one of them killed).

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{wasm_config, Server, Worker, REMOTE_ONLY};
use gust_testkit::{fixture, metric, unique_schema};
use serde_json::Value;

const INVOCATIONS: usize = 2_000;

/// Sends one keyed async invocation until a server acknowledges it (one may be down).
fn acknowledge(client: &reqwest::blocking::Client, urls: &[String], key: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let base = &urls[(key.len() + attempt) % urls.len()];
        let r = client
            .post(format!("{base}/v1/functions/work/invoke"))
            .header("invocation-type", "async")
            .header("idempotency-key", key)
            .body("40")
            .send();
        if let Ok(r) = r {
            if r.status() == 202 {
                return r.json::<Value>().unwrap()["invocation_id"].as_str().unwrap().to_string();
            }
        }
        assert!(Instant::now() < deadline, "the server never acknowledged {key}");
        std::thread::sleep(Duration::from_millis(20));
    }
    unreachable!("the loop only ends by returning")
}

/// Waits (bounded) until worker `name` runs an attempt, by its attempt log: more `start`
/// lines than lines of attempts that ended.
fn until_running(dir: &std::path::Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(dir.join(format!("attempts-{name}.log"))).unwrap_or_default();
        let started = log.lines().filter(|l| l.starts_with("start ")).count();
        if started > log.lines().count() - started {
            return;
        }
        assert!(Instant::now() < deadline, "worker {name} never ran an attempt");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The attempts (invocation id, epoch) worker `name` started and has not reported yet.
fn unreported(dir: &std::path::Path, name: &str) -> Vec<(String, u64)> {
    let log = std::fs::read_to_string(dir.join(format!("attempts-{name}.log"))).unwrap_or_default();
    let mut open: Vec<(String, u64)> = Vec::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let attempt = (parts[1].to_string(), parts[2].parse::<u64>().unwrap());
        match parts[0] {
            "start" => open.push(attempt),
            _ => open.retain(|a| *a != attempt),
        }
    }
    open
}

/// SIGSTOPs `worker` while it has attempts it has not reported, and returns them. A stop that
/// lands just after its last attempt ended is undone and tried again (bounded).
fn pause_running(worker: &Worker, dir: &std::path::Path, name: &str) -> Vec<(String, u64)> {
    for _ in 0..20 {
        until_running(dir, name);
        worker.signal("-STOP");
        let open = unreported(dir, name);
        if !open.is_empty() {
            return open;
        }
        worker.signal("-CONT");
    }
    panic!("worker {name} was never stopped in the middle of an attempt");
}

/// Waits (bounded) until one of the paused worker's attempts has been claimed again at a later
/// epoch: its lease expired and another worker runs it, so what the paused one sends about it
/// when resumed must be fenced. False if, instead, every one of them had ended at its own epoch
/// (its report was accepted just before the stop, and logged only after it).
fn until_claimed_elsewhere(server: &Server, paused: &[(String, u64)]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records: Vec<(Value, u64)> =
            paused.iter().map(|(id, epoch)| (server.record(id), *epoch)).collect();
        if records.iter().any(|(r, epoch)| r["attempts"].as_u64().is_some_and(|latest| latest > *epoch)) {
            return true;
        }
        let ended = |r: &Value| matches!(r["state"].as_str(), Some("SUCCEEDED" | "FAILED"));
        if records.iter().all(|(r, _)| ended(r)) {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "no attempt of the paused worker was ever claimed again: {paused:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn chaos_embedded_shape() {
    chaos(&REMOTE_ONLY.map(str::to_string), false);
}

#[test]
fn chaos_cluster_shape() {
    let mut args: Vec<String> = REMOTE_ONLY.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--store".into(),
        gust_testkit::postgres(),
        "--store-schema".into(),
        unique_schema("chaos"),
    ]);
    chaos(&args, true);
}

/// The scenario. With `two_servers`, a second server shares the store (cluster shape): one
/// worker is attached to it, ingest is spread over both, and the first server is the one killed.
fn chaos(server_args: &[String], two_servers: bool) {
    let args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &args);
    let other_dir = tempfile::tempdir().unwrap();
    let second = two_servers.then(|| Server::start(other_dir.path(), &args));
    let base = first.url.clone();
    let listen = first.addr().to_string();
    let mut urls = vec![base.clone()];
    urls.extend(second.as_ref().map(|s| s.url.clone()));
    let capacity = ["--capacity", "8"];
    let worker_url = |i: usize| match (&second, i) {
        (Some(s), 2) => s.url.clone(),
        _ => base.clone(),
    };
    let mut workers: Vec<Option<Worker>> = (0..3)
        .map(|i| Some(Worker::start(&worker_url(i), dir.path(), &format!("w{i}"), &capacity)))
        .collect();
    first.deploy("work", wasm_config(5_000), fixture("burn"));
    let mut server = Some(first);

    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let acknowledged: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let fencing_due = std::thread::scope(|scope| {
        for t in 0..4 {
            let (client, urls, acknowledged) = (&client, &urls, &acknowledged);
            scope.spawn(move || {
                for i in (t..INVOCATIONS).step_by(4) {
                    let id = acknowledge(client, urls, &format!("chaos-{i}"));
                    acknowledged.lock().unwrap().push(id);
                }
            });
        }
        // The chaos, while invocations are ingested and run.
        std::thread::sleep(Duration::from_millis(800));
        workers[0].take().unwrap().kill9();
        workers[0] = Some(Worker::start(&worker_url(0), dir.path(), "w0", &capacity));
        // Paused while it runs attempts (not while it still prepares the code, on a loaded
        // machine), so their leases expire under it and what it sends when resumed is fenced.
        let paused = pause_running(workers[1].as_ref().unwrap(), dir.path(), "w1");
        std::thread::sleep(Duration::from_millis(500));
        server.take().unwrap().kill9();
        server = Some(Server::start_at(dir.path(), &listen, &args));
        // Resumed only once another worker has claimed one of its attempts (a later epoch):
        // waiting a fixed time past the lease left it to the sweeper's timing whether anything
        // the paused worker sends is fenced.
        let fencing_due = until_claimed_elsewhere(server.as_ref().unwrap(), &paused);
        workers[1].as_ref().unwrap().signal("-CONT");
        std::thread::sleep(Duration::from_millis(500));
        workers[2].take().unwrap().kill9();
        workers[2] = Some(Worker::start(&worker_url(2), dir.path(), "w2", &capacity));
        fencing_due
    });
    let server = server.unwrap();
    let acknowledged = acknowledged.into_inner().unwrap();
    assert_eq!(acknowledged.len(), INVOCATIONS);

    // Every acknowledged invocation reaches a terminal state.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut records: HashMap<String, Value> = HashMap::new();
    for id in &acknowledged {
        let rec = server.wait_terminal(id, deadline.saturating_duration_since(Instant::now()));
        records.insert(id.clone(), rec);
    }
    let mut distinct = acknowledged.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), INVOCATIONS, "one invocation per idempotency key");
    let listed: Value = server.get("/v1/functions/work/invocations?limit=1000").json().unwrap();
    let mut total = listed["invocations"].as_array().unwrap().len();
    let mut next = listed["next"].as_str().map(str::to_string);
    while let Some(before) = next {
        let page: Value =
            server.get(&format!("/v1/functions/work/invocations?limit=1000&before={before}")).json().unwrap();
        total += page["invocations"].as_array().unwrap().len();
        next = page["next"].as_str().map(str::to_string);
    }
    assert_eq!(total, INVOCATIONS, "nothing lost, nothing duplicated");

    // The workers' own records of every attempt they ran.
    let mut started: HashMap<String, Vec<u64>> = HashMap::new();
    let mut accepted: HashMap<String, Vec<u64>> = HashMap::new();
    let mut retried: HashMap<String, Vec<u64>> = HashMap::new();
    let mut fenced = 0u64;
    for i in 0..3 {
        let log = std::fs::read_to_string(dir.path().join(format!("attempts-w{i}.log"))).unwrap_or_default();
        for line in log.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let (event, id, epoch) = (parts[0], parts[1].to_string(), parts[2].parse::<u64>().unwrap());
            match event {
                "start" => started.entry(id).or_default().push(epoch),
                "accepted" => accepted.entry(id).or_default().push(epoch),
                // An accepted report of a failed attempt that scheduled a retry (not terminal).
                "accepted-retry" => retried.entry(id).or_default().push(epoch),
                "fenced" => fenced += 1,
                _ => {}
            }
        }
    }
    let (mut succeeded, mut unlogged) = (0, 0);
    for (id, rec) in &records {
        let state = rec["state"].as_str().unwrap();
        assert!(matches!(state, "SUCCEEDED" | "FAILED"), "{id} ended {state}");
        succeeded += usize::from(state == "SUCCEEDED");
        let epochs = accepted.get(id).cloned().unwrap_or_default();
        assert!(epochs.len() <= 1, "{id} has two accepted terminal completions: {epochs:?}");
        let latest = rec["attempts"].as_u64().unwrap();
        for epoch in retried.get(id).into_iter().flatten() {
            assert!(
                *epoch < latest,
                "{id}: a retry was scheduled by attempt {epoch}, yet no later attempt ran"
            );
        }
        if let Some(epoch) = epochs.first() {
            assert_eq!(*epoch, latest, "{id}: the accepted completion is not from the latest epoch");
        }
        if state == "SUCCEEDED" && epochs.is_empty() {
            // The server accepted the completion, then the worker was killed before it could
            // record the reply: the outcome must still come from a real attempt of the latest
            // epoch.
            let ran = started.get(id).is_some_and(|e| e.contains(&latest));
            assert!(ran, "{id} succeeded at epoch {latest} without any attempt of that epoch");
            unlogged += 1;
        }
    }
    let attempts: usize = started.values().map(Vec::len).sum();
    let redeliveries = attempts - started.len();
    let metrics = server.get("/metrics").text().unwrap();
    let store_fenced = metric(&metrics, "gust_store_fenced_completions_total{scope=\"cluster\"}").unwrap();
    eprintln!(
        "chaos ({}): {INVOCATIONS} invocations, {succeeded} succeeded, {attempts} attempts, {redeliveries} redeliveries, \
         {fenced} fenced completions (store counter {store_fenced}), {unlogged} accepted but unrecorded (worker killed)",
        if two_servers { "cluster: 2 servers on PostgreSQL" } else { "embedded: 1 server on SQLite" }
    );
    assert_eq!(succeeded, INVOCATIONS, "the function always succeeds when it runs to completion");
    // The paused worker comes back with an attempt that was claimed again elsewhere: whichever
    // it sends first is fenced, a completion (counted above) or a lease renewal (after which it
    // drops the attempt and reports nothing). Which one wins is timing.
    let store_fenced_renewals =
        metric(&metrics, "gust_store_fenced_renewals_total{scope=\"cluster\"}").unwrap();
    assert!(
        !fencing_due || fenced + store_fenced_renewals >= 1,
        "the paused worker's late attempts were fenced (completions {fenced}, renewals {store_fenced_renewals})"
    );
    assert!(store_fenced >= fenced, "every fenced completion is counted where the state lives");
}
