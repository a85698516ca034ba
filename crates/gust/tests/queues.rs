//! Queues on the real binary, through the SQS API as clients send it (AWS JSON 1.0): a sent
//! message survives kill -9 of the server that acknowledged it; across two servers on
//! PostgreSQL a message sent at one reaches a long poll waiting at the other, and concurrent
//! receivers at both never get the same message within its visibility timeout; an event
//! source mapping feeds a Python handler in batches, and loses nothing when its server is
//! killed mid-run.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

/// One SQS call: `(status, body)`.
fn sqs(base: &str, operation: &str, input: Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!("{base}/"))
        .header("x-amz-target", format!("AmazonSQS.{operation}"))
        .header("content-type", "application/x-amz-json-1.0")
        .body(input.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().unwrap()).unwrap_or(Value::Null))
}

fn ok(base: &str, operation: &str, input: Value) -> Value {
    let (status, body) = sqs(base, operation, input);
    assert_eq!(status, 200, "{operation}: {body}");
    body
}

fn receive(base: &str, url: &str, max: u32, wait: u32) -> Vec<Value> {
    let got = ok(
        base,
        "ReceiveMessage",
        json!({ "QueueUrl": url, "MaxNumberOfMessages": max, "WaitTimeSeconds": wait, "VisibilityTimeout": 60 }),
    );
    got["Messages"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_acknowledged_send_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let url = ok(&s.url, "CreateQueue", json!({ "QueueName": "durable" }))["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..50 {
        ok(&s.url, "SendMessage", json!({ "QueueUrl": url, "MessageBody": format!("m{i}") }));
    }
    // One is in flight when the server dies: it comes back after its visibility timeout.
    let in_flight = ok(&s.url, "ReceiveMessage", json!({ "QueueUrl": url, "VisibilityTimeout": 1 }));
    assert_eq!(in_flight["Messages"].as_array().unwrap().len(), 1);
    s.kill9();
    let s = Server::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let mut bodies = HashSet::new();
    loop {
        let got = receive(&s.url, &url, 10, 1);
        if got.is_empty() {
            break;
        }
        for m in got {
            assert!(bodies.insert(m["Body"].as_str().unwrap().to_string()), "received twice: {m}");
            ok(&s.url, "DeleteMessage", json!({ "QueueUrl": url, "ReceiptHandle": m["ReceiptHandle"] }));
        }
    }
    assert_eq!(bodies.len(), 50, "every acknowledged message is there after kill -9");
}

#[test]
fn servers_sharing_postgresql_share_queues_without_double_delivery() {
    let schema = gust_testkit::unique_schema("q");
    let pg = gust_testkit::postgres();
    let args = ["--store", pg.as_str(), "--store-schema", schema.as_str()];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(da.path(), &args);
    let b = Server::start(db.path(), &args);
    let url =
        ok(&a.url, "CreateQueue", json!({ "QueueName": "shared" }))["QueueUrl"].as_str().unwrap().to_string();
    // A long poll waiting at B gets what is sent at A, well before its wait time.
    let waiting = {
        let (b, url) = (b.url.clone(), url.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let got = receive(&b, &url, 1, 10);
            (got, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    ok(&a.url, "SendMessage", json!({ "QueueUrl": url, "MessageBody": "across" }));
    let (got, took) = waiting.join().unwrap();
    assert_eq!(got[0]["Body"], "across");
    assert!(took < Duration::from_secs(5), "the long poll at B waited {took:?}");
    ok(&b.url, "DeleteMessage", json!({ "QueueUrl": url, "ReceiptHandle": got[0]["ReceiptHandle"] }));

    // 200 messages, three receivers at each server: each message is received once.
    for batch in 0..20 {
        let entries: Vec<Value> = (0..10)
            .map(|i| json!({ "Id": format!("e{i}"), "MessageBody": format!("{batch}-{i}") }))
            .collect();
        let sent = ok(&a.url, "SendMessageBatch", json!({ "QueueUrl": url, "Entries": entries }));
        assert_eq!(sent["Successful"].as_array().unwrap().len(), 10);
    }
    let receivers: Vec<_> = [&a.url, &b.url]
        .into_iter()
        .flat_map(|base| std::iter::repeat_n(base.clone(), 3))
        .map(|base| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let got = receive(&base, &url, 10, 0);
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|m| m["MessageId"].as_str().unwrap().to_string()));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for r in receivers {
        for id in r.join().unwrap() {
            assert!(seen.insert(id), "a message was delivered twice within its visibility timeout");
        }
    }
    assert_eq!(seen.len(), 200);
}

#[test]
fn the_cli_and_the_native_api_use_the_same_queues_as_the_sqs_api() {
    let dir = tempfile::tempdir().unwrap();
    let token = "queue-test-token";
    let s = Server::start(dir.path(), &["--token", token]);
    let run = |args: &[&str]| {
        let out = common::cli(&s.url).env("GUST_TOKEN", token).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = run(&["queue", "create", "jobs", "--attribute", "VisibilityTimeout=45"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("VisibilityTimeout") && text.contains("45"), "{text}");
    let (code, text) = run(&["queue", "send", "jobs", "hello from the cli"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["queue", "get", "jobs"]);
    assert!(code == Some(0) && text.contains("ApproximateNumberOfMessages"), "{text}");
    let (code, text) = run(&["queue", "receive", "jobs", "--delete", "--output", "json"]);
    assert_eq!(code, Some(0), "{text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["messages"][0]["body"], "hello from the cli");
    assert_eq!(got["messages"][0]["receive_count"], 1);
    let (_, text) = run(&["queue", "receive", "jobs"]);
    assert!(text.contains("no messages"), "deleted once received: {text}");
    // Bad input: a clear message and a non-zero exit; nothing is created.
    let (code, text) = run(&["queue", "create", "bad name!"]);
    assert_ne!(code, Some(0));
    assert!(text.contains("alphanumeric"), "{text}");
    let (code, text) = run(&["queue", "set", "jobs", "--attribute", "VisibilityTimeout=99999"]);
    assert_ne!(code, Some(0));
    assert!(text.contains("VisibilityTimeout"), "{text}");
    let (code, text) = run(&["queue", "list"]);
    assert!(code == Some(0) && text.trim() == "jobs", "{text}");
    // The native API without the token: refused.
    let r = reqwest::blocking::Client::new().get(format!("{}/v1/queues", s.url)).send().unwrap();
    assert_eq!(r.status(), 401);
    let (code, _) = run(&["queue", "delete", "jobs"]);
    assert_eq!(code, Some(0));
    let (code, text) = run(&["queue", "get", "jobs"]);
    assert_ne!(code, Some(0));
    assert!(text.contains("does not exist"), "{text}");
}

/// A Python handler (awslambdaric, unmodified Lambda code) that fails the messages whose body
/// starts with "poison" through `batchItemFailures`, and says which it processed.
const CONSUMER: &[u8] = br#"
def handler(event, context):
    failures, processed = [], []
    for r in event["Records"]:
        assert r["eventSource"] == "aws:sqs" and r["eventSourceARN"].endswith(":work"), r
        if r["body"].startswith("poison"):
            failures.append({"itemIdentifier": r["messageId"]})
        else:
            processed.append(r["body"])
    return {"batchItemFailures": failures, "processed": processed}
"#;

fn queue_count(base: &str, url: &str) -> (u64, u64) {
    let got = ok(base, "GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": ["All"] }));
    let n = |k: &str| got["Attributes"][k].as_str().unwrap().parse::<u64>().unwrap();
    (n("ApproximateNumberOfMessages"), n("ApproximateNumberOfMessagesNotVisible"))
}

/// The consumer deployed, a dead-letter queue `dead` and a queue `work` redriving to it after
/// two receives (hidden `visibility` seconds once received), and `batches` × 10 messages in
/// `work`, every tenth `poison-N`, the rest `good-N`: `(work's URL, dead's URL)`.
fn poisoned_work(s: &Server, batches: usize, visibility: &str) -> (String, String) {
    let config =
        json!({ "runtime": "python3.11", "handler": "app.handler", "timeout_ms": 20_000, "memory_mb": 256 });
    s.deploy_zip("consumer", config, gust_testkit::zip(&[("app.py", CONSUMER, 0o644)]));
    let dlq =
        ok(&s.url, "CreateQueue", json!({ "QueueName": "dead" }))["QueueUrl"].as_str().unwrap().to_string();
    let policy =
        json!({ "deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dead", "maxReceiveCount": 2 });
    let attributes = json!({ "RedrivePolicy": policy.to_string(), "VisibilityTimeout": visibility });
    let url = ok(&s.url, "CreateQueue", json!({ "QueueName": "work", "Attributes": attributes }))["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    for batch in 0..batches {
        let entries: Vec<Value> = (0..10)
            .map(|i| {
                let n = batch * 10 + i;
                let body = if i == 0 { format!("poison-{n}") } else { format!("good-{n}") };
                json!({ "Id": format!("e{i}"), "MessageBody": body })
            })
            .collect();
        ok(&s.url, "SendMessageBatch", json!({ "QueueUrl": url, "Entries": entries }));
    }
    (url, dlq)
}

/// The bodies of every message `url` holds now, received (and left in flight).
fn all_bodies(base: &str, url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let got = receive(base, url, 10, 0);
        if got.is_empty() {
            return bodies;
        }
        bodies.extend(got.into_iter().map(|m| m["Body"].as_str().unwrap().to_string()));
    }
}

#[test]
fn a_queue_triggers_a_function_in_batches_and_poison_ends_in_the_dead_letter_queue() {
    let dir = tempfile::tempdir().unwrap();
    let python = gust_testkit::python();
    let s = Server::start(dir.path(), &["--python", python.as_str()]);
    // 1,000 messages, one in ten poison.
    let (url, dlq) = poisoned_work(&s, 100, "1");
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{}/2015-03-31/event-source-mappings/", s.url))
        .json(&json!({
            "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:work",
            "FunctionName": "consumer",
            "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["State"], "Enabled", "{created}");
    let uuid = created["UUID"].as_str().unwrap().to_string();

    // Every good message processed and deleted; every poison one received twice, then moved.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (source, dead) = (queue_count(&s.url, &url), queue_count(&s.url, &dlq));
        if source == (0, 0) && dead.0 == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: source {source:?}, dead-letter {dead:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let dead = all_bodies(&s.url, &dlq);
    assert_eq!(dead.len(), 100);
    assert!(dead.iter().all(|b| b.starts_with("poison-")), "{dead:?}");

    // Each good message was processed exactly once (the records are written behind the answers).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        let mut before: Option<String> = None;
        loop {
            let page = s.get(&format!(
                "/v1/functions/consumer/invocations?limit=100{}",
                before.as_ref().map(|b| format!("&before={b}")).unwrap_or_default()
            ));
            let page: Value = page.json().unwrap();
            for inv in page["invocations"].as_array().unwrap() {
                let result: Value =
                    serde_json::from_str(inv["result"].as_str().unwrap_or("{}")).unwrap_or_default();
                for body in result["processed"].as_array().into_iter().flatten() {
                    *seen.entry(body.as_str().unwrap().to_string()).or_default() += 1;
                }
            }
            before = page["next"].as_str().map(str::to_string);
            if before.is_none() {
                break;
            }
        }
        if seen.len() == 900 {
            assert!(seen.values().all(|&n| n == 1), "a good message was processed twice: {seen:?}");
            assert!(seen.keys().all(|b| b.starts_with("good-")));
            break;
        }
        assert!(Instant::now() < deadline, "only {} good messages in the records", seen.len());
        std::thread::sleep(Duration::from_millis(200));
    }

    // The mapping through the Lambda API: get, list, disable, delete.
    let got: Value = client
        .get(format!("{}/2015-03-31/event-source-mappings/{uuid}", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(got["FunctionResponseTypes"], json!(["ReportBatchItemFailures"]));
    let listed: Value = client
        .get(format!("{}/2015-03-31/event-source-mappings/?FunctionName=consumer", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["EventSourceMappings"].as_array().unwrap().len(), 1);
    let r = client
        .put(format!("{}/2015-03-31/event-source-mappings/{uuid}", s.url))
        .json(&json!({ "Enabled": false }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().unwrap()["State"], "Disabled");
    let r = client.delete(format!("{}/2015-03-31/event-source-mappings/{uuid}", s.url)).send().unwrap();
    assert_eq!(r.status(), 202);
    let r = client.get(format!("{}/2015-03-31/event-source-mappings/{uuid}", s.url)).send().unwrap();
    assert_eq!(r.status(), 404);
    // Bad input is refused: a batch over 10 without a window, a queue that is not gust's.
    for bad in [
        json!({ "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:work", "FunctionName": "consumer", "BatchSize": 100 }),
        json!({ "EventSourceArn": "arn:aws:sqs:eu-west-1:123:work", "FunctionName": "consumer" }),
        json!({ "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:nowhere", "FunctionName": "consumer" }),
    ] {
        let r =
            client.post(format!("{}/2015-03-31/event-source-mappings/", s.url)).json(&bad).send().unwrap();
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }
}

#[test]
fn a_mapping_loses_nothing_when_its_server_is_killed_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let python = gust_testkit::python();
    let args = ["--python", python.as_str()];
    let s = Server::start(dir.path(), &args);
    // 1,000 messages, one in ten poison.
    let (url, dlq) = poisoned_work(&s, 100, "2");
    let mapping = json!({
        "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:work",
        "FunctionName": "consumer",
        "BatchSize": 10,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    });
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/2015-03-31/event-source-mappings/", s.url))
        .json(&mapping)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    // Killed while batches are in flight: what it had received comes back after its
    // visibility timeout, on the restarted server, which runs the mapping again.
    let started = Instant::now();
    while queue_count(&s.url, &url).0 > 700 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    let s = Server::start(dir.path(), &args);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (source, dead) = (queue_count(&s.url, &url), queue_count(&s.url, &dlq));
        if source == (0, 0) && dead.0 == 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained after the restart: source {source:?}, dead-letter {dead:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Exactly the poison messages are dead letters: no good message was lost on the way, and
    // every one was deleted only after the function processed it.
    let mut dead = all_bodies(&s.url, &dlq);
    dead.sort();
    let mut poison: Vec<String> = (0..100).map(|b| format!("poison-{}", b * 10)).collect();
    poison.sort();
    assert_eq!(dead, poison);
}

#[test]
fn a_mappings_maximum_concurrency_holds_across_servers() {
    // Two servers on PostgreSQL each run the mapping's pollers; at most MaximumConcurrency of
    // its batches run at once across both (each server alone would run that many).
    let schema = gust_testkit::unique_schema("esm");
    let (pg, python) = (gust_testkit::postgres(), gust_testkit::python());
    let args = ["--store", pg.as_str(), "--store-schema", schema.as_str(), "--python", python.as_str()];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(da.path(), &args);
    let b = Server::start(db.path(), &args);
    const SLOW: &[u8] = b"import time\ndef handler(event, context):\n    time.sleep(0.3)\n    return {}\n";
    let config = json!({ "runtime": "python3.11", "handler": "app.handler", "timeout_ms": 20_000 });
    a.deploy_zip("slow", config, gust_testkit::zip(&[("app.py", SLOW, 0o644)]));
    let url =
        ok(&a.url, "CreateQueue", json!({ "QueueName": "jobs" }))["QueueUrl"].as_str().unwrap().to_string();
    for batch in 0..3 {
        let entries: Vec<Value> = (0..10)
            .map(|i| json!({ "Id": format!("e{i}"), "MessageBody": format!("{batch}-{i}") }))
            .collect();
        ok(&a.url, "SendMessageBatch", json!({ "QueueUrl": url, "Entries": entries }));
    }
    let mapping = json!({
        "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:jobs",
        "FunctionName": "slow",
        "BatchSize": 1,
        "ScalingConfig": { "MaximumConcurrency": 2 },
    });
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/2015-03-31/event-source-mappings/", a.url))
        .json(&mapping)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(90);
    let invocations = loop {
        let listed: Value = b.get("/v1/functions/slow/invocations?limit=100").json().unwrap();
        let done: Vec<Value> = listed["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "SUCCEEDED")
            .cloned()
            .collect();
        if done.len() >= 30 && queue_count(&a.url, &url) == (0, 0) {
            break done;
        }
        assert!(Instant::now() < deadline, "not drained: {} invocations", done.len());
        std::thread::sleep(Duration::from_millis(250));
    };
    // The most invocations running at one moment, from their records.
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for i in &invocations {
        edges.push((i["received_at"].as_i64().unwrap(), 1));
        edges.push((i["finished_at"].as_i64().unwrap(), -1));
    }
    edges.sort();
    let (mut running, mut most) = (0, 0);
    for (_, d) in edges {
        running += d;
        most = most.max(running);
    }
    assert!(
        most <= 2,
        "{most} batches of a mapping with MaximumConcurrency 2 ran at once across two servers"
    );
}
