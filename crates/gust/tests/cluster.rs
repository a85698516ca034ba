//! The cluster shape: several gust servers on one PostgreSQL database, workers attached to
//! different servers. Needs the throwaway PostgreSQL that `./scripts/test` starts.

mod common;

use std::time::{Duration, Instant};

use common::{accepted_id, wasm_config, Server, Worker, REMOTE_ONLY};
use gust_testkit::{fixture, unique_schema};
use serde_json::Value;

/// Server flags for one cluster member whose work runs on remote workers: the shared
/// database, in a schema of this test's own.
fn cluster_args(schema: &str) -> Vec<String> {
    let mut args: Vec<String> = REMOTE_ONLY.iter().map(|s| s.to_string()).collect();
    args.extend(store_args(schema));
    args
}

fn store_args(schema: &str) -> Vec<String> {
    vec!["--store".into(), gust_testkit::postgres(), "--store-schema".into(), schema.into()]
}

/// Two servers started with `args`, and their data dirs (bound first, so they outlive them).
fn two_servers(args: &[String]) -> ([tempfile::TempDir; 2], Server, Server) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = Server::start(dirs[0].path(), &args);
    let b = Server::start(dirs[1].path(), &args);
    (dirs, a, b)
}

#[test]
fn any_server_answers_and_sync_results_cross_servers() {
    let (_dirs, a, b) = two_servers(&cluster_args(&unique_schema("c")));
    // The only worker is attached to server B.
    let _w = Worker::start(&b.url, &b.data_dir, "wb", &["--capacity", "4"]);

    // Deploy through A, read and invoke through B and A.
    let deployed = a.deploy("echo", wasm_config(3000), fixture("echo"));
    let f: Value = b.get("/v1/functions/echo").json().unwrap();
    assert_eq!(f["code_sha256"], deployed["code_sha256"], "any server answers any API call");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a.invoke("echo", None, b"from A", &[]);
        if r.status() == 200 && r.headers().get("gust-function-error").is_none() {
            assert_eq!(r.text().unwrap(), "from A", "a sync call at A ran on B's worker");
            break;
        }
        assert!(Instant::now() < deadline, "sync invocation through A never ran: {}", r.text().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The placement B commits wakes the worker's poll at once (announced across servers), not
    // on the poll's next look at the store: the median call is far under a poll period. Loose
    // on purpose (the figure itself is gust-bench's); a polling path takes 100 ms or more.
    let mut took: Vec<Duration> = (0..15)
        .map(|_| {
            let t = Instant::now();
            let r = a.invoke("echo", None, b"again", &[]);
            assert_eq!(r.text().unwrap(), "again");
            t.elapsed()
        })
        .collect();
    took.sort();
    assert!(took[7] < Duration::from_millis(50), "a sync call at A waited for B's worker: {took:?}");
    // A handed those calls to B, the server the worker is attached to, rather than through
    // the store; B answered them; the worker's listing names B as its server.
    assert!(a.metric("gust_peer_handovers_total") >= 15, "A handed its keyless calls to B");
    assert!(b.metric("gust_peer_handovers_served_total") >= 15, "B ran what A handed over");
    assert_eq!(a.metric("gust_peer_handovers_lost_total"), 0);
    // Work with an idempotency key goes through the store as before, from any server, and
    // its announced placement still wakes the worker's poll at B at once, although that poll
    // no longer asks the store each time it is woken (loose: a missed wake-up waits for the
    // poll's once-a-second safety net).
    let mut took: Vec<Duration> = (0..7)
        .map(|i| {
            let t = Instant::now();
            let keyed = a.invoke("echo", None, b"keyed at A", &[("idempotency-key", &format!("k-{i}"))]);
            assert_eq!(keyed.text().unwrap(), "keyed at A");
            t.elapsed()
        })
        .collect();
    took.sort();
    assert!(
        took[3] < Duration::from_millis(250),
        "a keyed call at A waited for a poll's safety net: {took:?}"
    );
    let id = accepted_id(b.invoke("echo", None, b"queued at B", &[("invocation-type", "async")]));
    let rec = a.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["result"], "queued at B", "status is visible from any server");
    let workers: Value = a.get("/v1/workers").json().unwrap();
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "worker state is shared: {workers}");
    assert_eq!(workers["workers"][0]["server"], b.url.as_str(), "stamped by the server it heartbeats to");
}

/// The cluster's peer secret, as the servers keep it in the store (what only a server, or
/// someone with the database, knows).
fn peer_secret(schema: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store =
            gust_store_postgres::PgStore::connect(&gust_testkit::postgres(), Some(schema), 1).await.unwrap();
        gust_store::Store::cluster_secret(&store, "peer", "not the first").await.unwrap()
    })
}

/// A keyless sync invocation of `echo` at `revision`, framed as a peer hands it over.
fn handover(revision: u64, payload: &[u8]) -> (String, gust_core::InvocationRequest) {
    let id = format!("0190b5f4-0000-7000-8000-{:012x}", rand_u48());
    let request = gust_core::InvocationRequest {
        id: gust_core::InvocationId(id.clone()),
        function: "echo".into(),
        qualifier: "$LATEST".into(),
        resolved: gust_core::Resolved::Latest { revision },
        payload: payload.to_vec().into(),
        mode: gust_core::Mode::Sync,
        idempotency_key: None,
        fingerprint: None,
        received_at: 0,
        retry: gust_core::RetryPolicy::default(),
        client_context: None,
        trace_id: None,
    };
    (id, request)
}

fn rand_u48() -> u64 {
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64;
    (nanos ^ (u64::from(std::process::id()) << 20)) & 0xffff_ffff_ffff
}

/// Handing an invocation to a server runs code on its workers, so only the cluster's servers
/// may: without the peer secret the store holds, every credential a client, an operator or a
/// worker has is refused before anything runs, and even with it only a keyless sync
/// invocation within the limits is taken.
#[test]
fn handing_over_takes_only_the_clusters_peer_secret() {
    let schema = unique_schema("peer");
    let args = cluster_args(&schema);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let db = tempfile::tempdir().unwrap();
    let b = Server::start(db.path(), &args);
    let _w = Worker::start(&b.url, &b.data_dir, "wb", &["--capacity", "2"]);
    let deployed = common::deploy_to_workers(&b, 1, "echo", wasm_config(3000), fixture("echo"));
    let revision = deployed["revision"].as_u64().unwrap();
    let (intruder, worker_secret) = common::enroll(&b, "intruder");
    // Where peers send a worker's calls is its server's to say: a worker naming a server of
    // its own choosing (to be sent other servers' calls, and the peer secret) is refused.
    let steer = b
        .client()
        .post(format!("{}/internal/v1/workers/heartbeat", b.url))
        .bearer_auth(&worker_secret)
        .json(&serde_json::json!({
            "id": intruder, "revision": 1, "runtimes": ["wasm"], "capacity": 4, "running": 0,
            "warm": [], "snapshot_version": 0, "server": "http://127.0.0.1:9",
        }))
        .send()
        .unwrap();
    assert_eq!(steer.status(), 400, "{}", steer.text().unwrap());
    let url = format!("{}{}", b.url, gust_core::peer::INVOKE_PATH);
    let post = |auth: Option<&str>, body: Vec<u8>| {
        let mut rb = b.client().post(&url).header("content-type", gust_core::peer::CONTENT_TYPE).body(body);
        if let Some(auth) = auth {
            rb = rb.header("authorization", auth);
        }
        rb.send().unwrap()
    };
    let (id, request) = handover(revision, b"smuggled");
    let frame = gust_core::peer::request_frame(&request);
    for auth in [
        None,
        Some("Bearer "),
        Some("Bearer 0000000000000000000000000000000000000000000000000000000000000000"),
        Some("Bearer test-worker-token"),
        Some(format!("Bearer {worker_secret}").as_str()),
        Some("Basic Z3VzdDpndXN0"),
    ]
    .map(|a| a.map(str::to_string))
    {
        let r = post(auth.as_deref(), frame.clone());
        assert_eq!(r.status(), 401, "{auth:?} is not the peer secret: {}", r.text().unwrap());
    }
    assert_eq!(b.metric("gust_peer_handovers_served_total"), 0, "nothing was taken");
    assert_eq!(b.get(&format!("/v1/invocations/{id}")).status(), 404, "nothing ran");

    let secret = format!("Bearer {}", peer_secret(&schema));
    // Even a server may hand over only a keyless sync invocation, framed, within the limits.
    let (_, mut queued) = handover(revision, b"x");
    queued.mode = gust_core::Mode::Async;
    let (_, mut keyed) = handover(revision, b"x");
    keyed.idempotency_key = Some("k".into());
    for bad in [
        gust_core::peer::request_frame(&queued),
        gust_core::peer::request_frame(&keyed),
        vec![0, 0, 9, 9, b'{'],
    ] {
        let r = post(Some(&secret), bad);
        assert_eq!(r.status(), 400, "{}", r.text().unwrap());
    }
    let (_, huge) = handover(revision, &vec![b'x'; 6 * 1024 * 1024 + 1]);
    assert_eq!(post(Some(&secret), gust_core::peer::request_frame(&huge)).status(), 413);
    assert_eq!(b.metric("gust_peer_handovers_served_total"), 0, "nothing was taken");

    // The peer secret itself is taken: the invocation runs on B's worker, and its answer and
    // record are B's.
    let r = post(Some(&secret), frame);
    assert_eq!(r.status(), 200);
    let body = r.bytes().unwrap();
    let (answer, result): (gust_core::peer::Answer, bytes::Bytes) = gust_core::peer::unframe(&body).unwrap();
    assert!(matches!(answer, gust_core::peer::Answer::Finished { error: None, .. }), "{answer:?}");
    assert_eq!(&result[..], b"smuggled");
    let rec = b.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["state"], "SUCCEEDED", "{rec}");
}

/// A sync call handed to the server of its worker, which dies while it runs: the caller gets
/// a worker-lost failure at once (it may have run, so it is never run again), and the record
/// says so.
#[test]
fn a_call_handed_to_a_server_that_dies_fails_as_worker_lost_and_is_not_rerun() {
    let (_dirs, a, b) = two_servers(&cluster_args(&unique_schema("peerdie")));
    let _w = Worker::start(&b.url, &b.data_dir, "wb", &["--capacity", "2"]);
    common::deploy_to_workers(&b, 1, "sleep", wasm_config(20_000), fixture("sleep"));
    common::wait_for_workers(&a, 1, 0);
    let caller = {
        let url = a.url.clone();
        std::thread::spawn(move || {
            let client =
                reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
            let started = Instant::now();
            let r = client.post(format!("{url}/v1/functions/sleep/invoke")).body("{}").send().unwrap();
            let error = r.headers().get("gust-function-error").map(|v| v.to_str().unwrap().to_string());
            let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
            (error, id, r.text().unwrap(), started.elapsed())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.metric("gust_peer_handovers_served_total") == 0 {
        assert!(Instant::now() < deadline, "A never handed the call to B");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    b.kill9();
    let (error, id, body, took) = caller.join().unwrap();
    assert!(error.is_some(), "the call failed: {body}");
    assert!(body.contains("WorkerLost"), "{body}");
    assert!(took < Duration::from_secs(7), "the failure came when B died, not at the timeout: {took:?}");
    assert_eq!(a.metric("gust_peer_handovers_lost_total"), 1);
    let rec = a.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["state"], "FAILED", "{rec}");
    std::thread::sleep(Duration::from_secs(2));
    let again = a.record(&id);
    assert_eq!(again["state"], "FAILED", "never re-run: {again}");
}

/// A function URL made at one server is served by every server: B learns of it from the
/// store's snapshot version, and runs it on the cluster's only worker (attached to A).
#[test]
fn any_server_answers_any_function_url() {
    let (_dirs, a, b) = two_servers(&cluster_args(&unique_schema("u")));
    let _w = Worker::start(&a.url, &a.data_dir, "wa", &["--capacity", "4"]);
    a.deploy("echo", wasm_config(3000), fixture("echo"));
    let r = a
        .client()
        .post(format!("{}/v1/functions/echo/url", a.url))
        .json(&serde_json::json!({ "auth_type": "NONE" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().unwrap()["url_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b.client().get(format!("{}/url/{id}/from-b?x=1", b.url)).send().unwrap();
        if r.status() == 200 {
            let event: Value = r.json().unwrap();
            assert_eq!(event["rawPath"], "/from-b", "B served A's URL: {event}");
            break;
        }
        assert!(Instant::now() < deadline, "B never served the URL made at A: {}", r.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A wasi:http component through a remote worker: its request goes as Lambda's event and
    // is rebuilt there.
    let hello = std::fs::read(gust_testkit::repo_root().join("tests/fixtures/wasi-http/hello.wasm")).unwrap();
    a.deploy("hello", wasm_config(3000), hello);
    let r = a
        .client()
        .post(format!("{}/v1/functions/hello/url", a.url))
        .json(&serde_json::json!({ "auth_type": "NONE" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let hello_id = r.json::<Value>().unwrap()["url_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b.client().get(format!("{}/url/{hello_id}/x", b.url)).send().unwrap();
        if r.status() == 200 {
            assert_eq!(r.headers()["content-type"], "text/plain");
            assert_eq!(r.text().unwrap(), "hello from a wasi:http component\n");
            break;
        }
        assert!(Instant::now() < deadline, "B never served the component's URL: {}", r.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Deleted at B, it is gone at A too (within a snapshot poll).
    assert_eq!(b.delete("/v1/functions/echo/url").status(), 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.client().get(format!("{}/url/{id}/", a.url)).send().unwrap().status() != 404 {
        assert!(Instant::now() < deadline, "A still serves a URL deleted at B");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A function's reserved concurrency holds across servers: two servers (each with its own
/// worker) sharing one store admit at most the limit at once between them, and throttle the
/// rest (429). Each server alone would admit the whole limit.
#[test]
fn reserved_concurrency_holds_across_servers() {
    let (_dirs, a, b) = two_servers(&store_args(&unique_schema("rc")));
    let mut config = wasm_config(1500);
    config["reserved_concurrency"] = 5.into();
    a.deploy("slow", config, fixture("sleep"));
    // Each call holds its slot until the function times out (1.5 s): 16 at once, half at each
    // server.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..16)
            .map(|i| {
                let s = if i % 2 == 0 { &a } else { &b };
                scope.spawn(move || s.invoke("slow", None, b"{}", &[]).status().as_u16())
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + throttled, 16, "{statuses:?}");
    assert!((1..=5).contains(&admitted), "at most 5 ran at once across both servers: {statuses:?}");
}

/// Async work on remote workers counts against the same cluster-wide limit: with two servers,
/// a worker on each and room for 8 at once, a limit of 2 throttles attempts, which wait (they
/// run later, and end with the function's own outcome, never a throttle error).
#[test]
fn reserved_concurrency_holds_for_async_work_on_remote_workers() {
    let (_dirs, a, b) = two_servers(&cluster_args(&unique_schema("rca")));
    let _wa = Worker::start(&a.url, &a.data_dir, "wa", &["--capacity", "4"]);
    let _wb = Worker::start(&b.url, &b.data_dir, "wb", &["--capacity", "4"]);
    let mut config = wasm_config(600);
    config["reserved_concurrency"] = 2.into();
    config["retry"] = serde_json::json!({ "max_retries": 0, "base_delay_ms": 100, "max_event_age_s": 600 });
    common::deploy_to_workers(&a, 2, "slow", config, fixture("sleep"));
    let ids: Vec<String> = (0..6)
        .map(|i| {
            let s = if i % 2 == 0 { &a } else { &b };
            accepted_id(s.invoke("slow", None, b"{}", &[("invocation-type", "async")]))
        })
        .collect();
    for id in &ids {
        let rec = a.wait_terminal(id, Duration::from_secs(60));
        // Each ran once, to its own timeout: throttled attempts waited rather than failed.
        assert_eq!(rec["state"], "FAILED", "{rec}");
        assert!(rec["error"].to_string().contains("Timeout"), "{rec}");
    }
    let throttled = a.metric("gust_throttled_total") + b.metric("gust_throttled_total");
    assert!(throttled >= 1, "8 slots of workers, a limit of 2: some attempts must have waited");
}
