//! Queues on the real binary, through the SQS API as clients send it (AWS JSON 1.0): a sent
//! message survives kill -9 of the server that acknowledged it; across two servers on
//! PostgreSQL a message sent at one reaches a long poll waiting at the other, and concurrent
//! receivers at both never get the same message within its visibility timeout.

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
