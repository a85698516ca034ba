//! Worker credentials, tried as an attacker would: a client holding a valid credential of its
//! own (or only the enrollment token) tries to act as another worker, to renew, release or
//! complete another worker's attempt, and to fetch code never placed on it; every attempt is
//! refused and the victim's invocation completes normally. Revoked and expired credentials
//! stop working; a provisioned credential runs a real worker and survives silence.

mod common;

use std::time::Duration;

use common::{
    accepted_id, deploy_to_workers, enroll, error_code, heartbeat_as, wait_for_workers, wasm_config, Server,
    Worker, GUST, REMOTE_ONLY,
};
use gust_testkit::fixture;
use reqwest::blocking::Response;
use serde_json::{json, Value};

fn post_as(s: &Server, secret: &str, path: &str, body: Value) -> Response {
    s.client().post(format!("{}{path}", s.url)).bearer_auth(secret).json(&body).send().unwrap()
}

fn get_as(s: &Server, secret: &str, path: &str) -> Response {
    s.client().get(format!("{}{path}", s.url)).bearer_auth(secret).send().unwrap()
}

#[test]
fn a_worker_cannot_act_as_another_or_touch_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let victim = Worker::start(&s.url, dir.path(), "victim", &["--capacity", "1"]);
    deploy_to_workers(&s, 1, "slow", wasm_config(10_000), fixture("burn"));

    // The attacker holds a valid credential of its own, enrolled under the victim's very id
    // as its name: enrollment always mints a fresh id, never an existing worker's.
    let (mallory, secret) = enroll(&s, &victim.id);
    assert_ne!(mallory, victim.id);
    assert!(mallory.starts_with(&format!("{}-", victim.id)), "{mallory}");
    // Capacity 0: nothing is ever placed on it.
    assert_eq!(heartbeat_as(&s, &secret, &mallory, &["wasm"], 0).status(), 200);

    let id = accepted_id(s.invoke("slow", None, b"3000", &[("invocation-type", "async")]));
    let running = s.wait_record(&id, Duration::from_secs(10), |v| v["state"] == "RUNNING");
    assert_eq!(running["worker"], victim.id.as_str(), "{running}");
    let epoch = running["attempts"].as_u64().unwrap();
    let attempt = json!({ "attempts": [[id, epoch]] });
    let forged = json!({
        "invocation_id": id, "epoch": epoch, "succeeded": true, "result_b64": "Zm9yZ2Vk", "error": null, "log": "",
    });
    let victim_path = |call: &str| format!("/internal/v1/workers/{}/{call}", victim.id);
    let own_path = |call: &str| format!("/internal/v1/workers/{mallory}/{call}");

    // Acting as the victim: every call about another worker id is refused before anything.
    for call in ["poll", "renew", "release", "complete", "deregister"] {
        let body = match call {
            "poll" => json!({ "max": 1, "wait_ms": 0 }),
            "complete" => forged.clone(),
            _ => attempt.clone(),
        };
        let r = post_as(&s, &secret, &victim_path(call), body);
        assert_eq!(error_code(r, 403), "Forbidden", "{call} as the victim");
    }
    let hb = json!({
        "id": victim.id, "revision": u64::MAX, "runtimes": ["wasm"], "capacity": 0, "running": 0,
        "warm": [], "snapshot_version": 0,
    });
    let r = post_as(&s, &secret, "/internal/v1/workers/heartbeat", hb);
    assert_eq!(error_code(r, 403), "Forbidden", "heartbeat as the victim");

    // Under its own id, the store refuses what is not its attempt.
    let r = post_as(&s, &secret, &own_path("complete"), forged.clone());
    assert_eq!(error_code(r, 403), "Forbidden", "completing the victim's attempt");
    for call in ["renew", "release"] {
        let r = post_as(&s, &secret, &own_path(call), attempt.clone());
        assert_eq!(r.status(), 200, "{call}");
        let v: Value = r.json().unwrap();
        assert!(v["results"][0].as_str().is_some_and(|why| why.contains("another worker")), "{call}: {v}");
    }
    let r = post_as(&s, &secret, &own_path("poll"), json!({ "max": 8, "wait_ms": 0 }));
    assert_eq!(r.json::<Value>().unwrap()["assignments"], json!([]), "nothing of the victim's is handed out");

    // The enrollment token alone is no worker at all.
    for (call, body) in
        [("complete", forged.clone()), ("renew", attempt.clone()), ("release", attempt.clone())]
    {
        let r = post_as(&s, "test-worker-token", &victim_path(call), body);
        assert_eq!(error_code(r, 401), "Unauthorized", "{call} with the enrollment token");
    }

    // The victim's invocation was untouched and completes normally, once.
    let state = s.invocation(&id);
    assert_eq!(
        (state["state"].as_str(), state["attempts"].as_u64()),
        (Some("RUNNING"), Some(epoch)),
        "{state}"
    );
    let done = s.wait_terminal(&id, Duration::from_secs(15));
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["result"], "3000", "the victim's result, not the forged one: {done}");
    assert_eq!(done["attempts"], epoch, "never re-run: {done}");

    // After it completed, a late forged report is still not the attacker's to make.
    let r = post_as(&s, &secret, &own_path("complete"), forged);
    assert_eq!(error_code(r, 403), "Forbidden", "a completed attempt of another worker");
    assert_eq!(s.invocation(&id)["result"], "3000");
}

#[test]
fn a_worker_fetches_only_code_it_may_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let victim = Worker::start(&s.url, dir.path(), "victim", &["--capacity", "1"]);
    // Version 1 runs slow code; $LATEST then moves on to other code, so version 1's code is
    // named by no snapshot: only a worker given an invocation of version 1 may fetch it.
    let v1 = s.deploy("f", wasm_config(10_000), fixture("burn"));
    s.publish("f");
    let latest = s.deploy("f", wasm_config(10_000), fixture("echo"));
    let other =
        s.deploy("g", json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": 3000 }), fixture("echo"));
    wait_for_workers(&s, 1, latest["revision"].as_u64().unwrap().max(other["revision"].as_u64().unwrap()));
    let old_code = v1["code_sha256"].as_str().unwrap();
    assert_ne!(old_code, latest["code_sha256"].as_str().unwrap());

    let (mallory, secret) = enroll(&s, "mallory");
    assert_eq!(heartbeat_as(&s, &secret, &mallory, &["wasm"], 0).status(), 200);
    let artifact = |sha: &str| get_as(&s, &secret, &format!("/internal/v1/artifacts/{sha}"));
    let r = artifact(old_code);
    assert_eq!(error_code(r, 403), "Forbidden", "a version never placed on it");
    let r = artifact(&"0".repeat(64));
    assert_eq!(error_code(r, 403), "Forbidden", "unknown code: refused, not reported missing");
    // What its snapshot names ($LATEST of a runtime it runs) it may fetch, verified by hash.
    let r = artifact(latest["code_sha256"].as_str().unwrap());
    assert_eq!(r.status(), 200);
    assert_eq!(gust_store::sha256_hex(&r.bytes().unwrap()), latest["code_sha256"].as_str().unwrap());

    // A worker that does not run wasm is named no wasm function and fetches none of their code.
    let (python_only, py_secret) = enroll(&s, "python-only");
    assert_eq!(heartbeat_as(&s, &py_secret, &python_only, &["python3"], 0).status(), 200);
    let snapshot: Value = get_as(&s, &py_secret, "/internal/v1/snapshot?since=0").json().unwrap();
    assert_eq!(snapshot["functions"], json!([]), "{snapshot}");
    let r = get_as(
        &s,
        &py_secret,
        &format!("/internal/v1/artifacts/{}", latest["code_sha256"].as_str().unwrap()),
    );
    assert_eq!(error_code(r, 403), "Forbidden");
    let full: Value = get_as(&s, &secret, "/internal/v1/snapshot?since=0").json().unwrap();
    assert_eq!(full["functions"].as_array().unwrap().len(), 2, "{full}");

    // The worker given an invocation of version 1 fetches its code (pull on miss) and runs it.
    let r = s.invoke("f", Some("1"), b"10", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "10");
    drop(victim);
}

#[test]
fn revoked_and_expired_credentials_stop_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = REMOTE_ONLY.to_vec();
    flags.extend(["--worker-credential-ttl", "1"]);
    let s = Server::start(dir.path(), &flags);
    let hb = |secret: &str, id: &str| heartbeat_as(&s, secret, id, &["wasm"], 0);

    // Revoked by an administrator: refused at once.
    let (revoked, secret) = enroll(&s, "revoked");
    assert_eq!(hb(&secret, &revoked).status(), 200);
    assert_eq!(s.delete(&format!("/v1/workers/{revoked}")).status(), 204);
    assert_eq!(error_code(hb(&secret, &revoked), 401), "Unauthorized");
    assert_eq!(error_code(s.delete(&format!("/v1/workers/{revoked}")), 404), "WorkerNotFound");

    // Enrolled and then silent past the credential's lifetime (1 s here): expired.
    let (silent, silent_secret) = enroll(&s, "silent");
    assert_eq!(hb(&silent_secret, &silent).status(), 200);

    // Provisioned ahead of time: a real worker runs with it, and silence does not expire it.
    let r =
        s.client().post(format!("{}/v1/workers", s.url)).json(&json!({ "name": "edge-1" })).send().unwrap();
    assert_eq!(r.status(), 201);
    let provisioned: Value = r.json().unwrap();
    assert_eq!(provisioned["id"], "edge-1");
    let again =
        s.client().post(format!("{}/v1/workers", s.url)).json(&json!({ "name": "edge-1" })).send().unwrap();
    assert_eq!(error_code(again, 409), "Conflict", "one credential per worker");
    let edge_secret = provisioned["secret"].as_str().unwrap();

    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(error_code(hb(&silent_secret, &silent), 401), "Unauthorized", "expired after silence");
    assert_eq!(hb(edge_secret, "edge-1").status(), 200, "a provisioned credential does not expire");
    let listed: Value = s.get("/v1/workers/credentials").json().unwrap();
    let valid = |id: &str| {
        listed["credentials"].as_array().unwrap().iter().find(|c| c["id"] == id).map(|c| c["valid"].clone())
    };
    assert_eq!(valid("edge-1"), Some(json!(true)), "{listed}");
    assert_eq!(valid(&silent), Some(json!(false)), "{listed}");
    assert_eq!(valid(&revoked), None, "{listed}");
    assert!(!listed.to_string().contains(edge_secret), "secrets are never listed");

    // A real worker with the provisioned secret, and without the enrollment token; under
    // another name than the credential's, it is refused at start, clearly.
    let secret_file = dir.path().join("edge-1.secret");
    std::fs::write(&secret_file, format!("{edge_secret}\n")).unwrap();
    let file_flag = ["--secret-file", secret_file.to_str().unwrap()];
    let out = std::process::Command::new(GUST)
        .args(["worker", "--server", &s.url, "--name", "someone-else", "--data-dir"])
        .arg(dir.path().join("someone-else"))
        .args(file_flag)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused worker someone-else: HTTP 403"), "{stderr}");
    let mut edge = Worker::start_with(&s.url, dir.path(), "edge-1", &file_flag, &["--capacity", "1"]);
    assert_eq!(edge.id, "edge-1");
    deploy_to_workers(&s, 1, "echo", wasm_config(3000), fixture("echo"));
    let r = s.invoke("echo", None, b"provisioned", &[]);
    assert_eq!(r.text().unwrap(), "provisioned");
    // Revoked while it runs: the worker stops, with an error.
    assert_eq!(s.delete("/v1/workers/edge-1").status(), 204);
    let status = edge.wait_exit(Duration::from_secs(10)).expect("a revoked worker stops");
    assert!(!status.success(), "{status:?}");
}

#[test]
fn only_administrators_manage_worker_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = REMOTE_ONLY.to_vec();
    flags.extend(["--token", "admin-token"]);
    let s = Server::start(dir.path(), &flags);
    let call = |method: reqwest::Method, path: &str, bearer: Option<&str>| {
        let mut rb = s.client().request(method, format!("{}{path}", s.url));
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        rb.json(&json!({ "name": "edge-9" })).send().unwrap()
    };
    let r = s
        .client()
        .post(format!("{}/v1/tokens", s.url))
        .bearer_auth("admin-token")
        .json(&json!({ "name": "ci", "role": "deployer" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let deployer = r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string();
    let (worker, worker_secret) = enroll(&s, "w");

    use reqwest::Method;
    for (method, path) in [
        (Method::POST, "/v1/workers"),
        (Method::GET, "/v1/workers/credentials"),
        (Method::DELETE, "/v1/workers/w"),
    ] {
        assert_eq!(error_code(call(method.clone(), path, None), 401), "Unauthorized", "{method} {path}");
        let r = call(method.clone(), path, Some(&deployer));
        assert_eq!(error_code(r, 403), "AccessDenied", "{method} {path} as a deployer");
        // Neither a worker's secret nor the enrollment token is an API credential.
        for not_api in [worker_secret.as_str(), "test-worker-token"] {
            assert_eq!(error_code(call(method.clone(), path, Some(not_api)), 401), "Unauthorized");
        }
    }
    let r = call(Method::POST, "/v1/workers", Some("admin-token"));
    assert_eq!(r.status(), 201);
    let r = call(Method::DELETE, &format!("/v1/workers/{worker}"), Some("admin-token"));
    assert_eq!(r.status(), 204);
    assert_eq!(error_code(heartbeat_as(&s, &worker_secret, &worker, &["wasm"], 0), 401), "Unauthorized");
}
