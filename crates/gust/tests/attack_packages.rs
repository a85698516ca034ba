//! Hostile zip packages against the real server: a package whose links climb out of the task
//! root, one link at a time, must be refused at upload without writing anything outside the data
//! directory, and the server must keep serving.

mod common;

use std::path::Path;

use common::Server;
use gust_testkit::zip_with_links;
use reqwest::blocking::Response;
use serde_json::{json, Value};

fn upload(s: &Server, name: &str, code: Vec<u8>) -> Response {
    s.put_zip(&format!("/v1/functions/{name}/code"), code)
}

/// Every path under `dir`, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            paths.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
    }
    paths.sort();
    paths
}

#[test]
fn a_symlink_chain_cannot_write_outside_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let s = Server::start(&data, &[]);
    let r = s.put_json("/v1/functions/lam", &json!({ "runtime": "provided" }));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());

    // The task root is data/tasks/<temporary>: `a/up` is that root, x1 is data/tasks, x2 is data,
    // x3 is tmp, so the file entry would land on tmp/escaped.
    let chain = [("a/up", ".."), ("x1", "a/up/.."), ("x2", "x1/.."), ("x3", "x2/..")];
    let escaped = tmp.path().join("escaped");
    let bootstrap: (&str, &[u8], u32) = ("bootstrap", b"#!/bin/sh\n", 0o755);
    let attacks = [
        (zip_with_links(&[bootstrap, ("x3/escaped", b"pwned", 0o644)], &chain, true), "\"x1\""),
        // Files first: the file is refused for lying under a link before the links are judged.
        (zip_with_links(&[bootstrap, ("x3/escaped", b"pwned", 0o644)], &chain, false), "\"x3/escaped\""),
        (zip_with_links(&[bootstrap, ("etc/escaped", b"pwned", 0o644)], &[("etc", "/tmp")], true), "\"etc\""),
    ];
    let tasks = data.join("tasks");
    let before = tree(&tasks);
    for (i, (code, entry)) in attacks.into_iter().enumerate() {
        let r = upload(&s, "lam", code);
        assert_eq!(r.status(), 400, "attack {i}");
        let body: Value = r.json().expect("the error body is JSON");
        assert_eq!(body["error"]["code"], "InvalidCode", "attack {i}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(entry), "attack {i}: the message names the entry: {message}");
        assert!(!escaped.exists(), "attack {i} wrote outside the data dir");
        assert_eq!(tree(&tasks), before, "attack {i} left something under tasks/");
    }
    let mut outside: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside.sort();
    assert_eq!(outside, ["data"], "nothing appeared next to the data dir");
    let f: Value = s.get("/v1/functions/lam").json().unwrap();
    assert!(f["code_sha256"].is_null(), "no code was stored: {f}");

    // Still serving, and a legitimate package (with a link inside it) unpacks.
    assert_eq!(s.get("/healthz").status(), 200);
    let good = zip_with_links(
        &[("bootstrap", b"#!/bin/sh\nexec sleep 1000\n", 0o755), ("lib/data.txt", b"hello", 0o644)],
        &[("lib/alias", "data.txt")],
        false,
    );
    let r = upload(&s, "lam", good);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let sha = r.json::<Value>().unwrap()["code_sha256"].as_str().unwrap().to_string();
    let unpacked = tree(&tasks);
    assert!(unpacked.iter().all(|p| p.starts_with(&sha)), "only the good package's task root: {unpacked:?}");
    assert_eq!(std::fs::read(tasks.join(&sha).join("lib/alias")).unwrap(), b"hello");
    assert!(!escaped.exists());
}
