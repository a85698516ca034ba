//! The CLI's habits against a real server: a deploy merges (and survives a writer racing it),
//! durations take units, each failure has its exit code, lists never stop short silently,
//! completions, profiles, `gust init` templates that build, deploy and run, upload progress.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{Server, GUST};
use serde_json::{json, Value};

fn gust(url: &str, args: &[&str]) -> Output {
    common::cli(url).args(args).output().expect("run gust")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn ok(o: Output) -> Output {
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    o
}

/// `gust function get NAME --output json`.
fn view(url: &str, name: &str) -> Value {
    serde_json::from_str(&stdout(&ok(gust(url, &["function", "get", name, "--output", "json"])))).unwrap()
}

/// A JSON request to the server's AWS Lambda API (open: the server has no token).
fn aws(s: &Server, method: reqwest::Method, path: &str, body: Value) -> Value {
    let r = s
        .client()
        .request(method, format!("{}{path}", s.url))
        .header("content-type", "application/json")
        .json(&body)
        .send()
        .unwrap();
    let status = r.status();
    let text = r.text().unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

const HELLO: &str = "examples/hello/hello.wasm";

#[test]
fn a_deploy_changes_what_its_flags_name_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    ok(gust(&s.url, &["deploy", "dest", "--code", HELLO]));
    let o = ok(gust(
        &s.url,
        &["deploy", "hello", "--code", HELLO, "--env", "GREETING=Hello", "--memory", "64", "--timeout", "30"],
    ));
    assert!(stdout(&o).starts_with("deployed hello (revision"), "{o:?}");
    let first = view(&s.url, "hello");
    assert_eq!(first["timeout_ms"], 30_000, "--timeout 30 is thirty seconds, as in AWS");

    // Settings only the AWS API sets: a description, reserved concurrency, a destination.
    aws(
        &s,
        reqwest::Method::PUT,
        "/2015-03-31/functions/hello/configuration",
        json!({ "Description": "set through the AWS API" }),
    );
    aws(
        &s,
        reqwest::Method::PUT,
        "/2017-10-31/functions/hello/concurrency",
        json!({ "ReservedConcurrentExecutions": 5 }),
    );
    let dest =
        json!({ "OnFailure": { "Destination": "arn:aws:lambda:us-east-1:000000000000:function:dest" } });
    aws(
        &s,
        reqwest::Method::PUT,
        "/2019-09-25/functions/hello/event-invoke-config",
        json!({ "DestinationConfig": dest }),
    );
    let before = view(&s.url, "hello");
    assert_eq!(before["reserved_concurrency"], 5);
    assert!(before["retry"]["on_failure"].is_string(), "{before}");

    // One flag changed, code and all: everything else is as it was.
    ok(gust(&s.url, &["deploy", "hello", "--code", HELLO, "--env", "B=2"]));
    let after = view(&s.url, "hello");
    assert_eq!(after["env"], json!({ "GREETING": "Hello", "B": "2" }), "--env adds to the environment");
    let unchanged = |v: &Value| {
        let mut v = v.clone();
        for k in ["env", "revision", "updated_at"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    assert_eq!(unchanged(&after), unchanged(&before), "a deploy keeps what it was not told to change");
    assert!(after["revision"].as_u64() > before["revision"].as_u64());

    // Without --code: the configuration alone; update-config is the same without creating.
    ok(gust(&s.url, &["deploy", "hello", "--timeout", "500ms", "--unset-env", "GREETING"]));
    ok(gust(
        &s.url,
        &[
            "function",
            "update-config",
            "hello",
            "--memory",
            "96",
            "--retry-delay",
            "2s",
            "--max-event-age",
            "1h",
        ],
    ));
    let later = view(&s.url, "hello");
    assert_eq!((later["timeout_ms"].as_u64(), later["memory_mb"].as_u64()), (Some(500), Some(96)));
    assert_eq!(later["env"], json!({ "B": "2" }));
    assert_eq!(
        (later["retry"]["base_delay_ms"].as_u64(), later["retry"]["max_event_age_s"].as_u64()),
        (Some(2000), Some(3600))
    );
    assert_eq!(
        (&later["code_sha256"], &later["reserved_concurrency"], &later["description"]),
        (&before["code_sha256"], &json!(5), &before["description"])
    );
    assert_eq!(later["retry"]["on_failure"], before["retry"]["on_failure"], "the destination stays");
    let o = ok(gust(&s.url, &["invoke", "hello", "--payload", r#"{"name":"Ada"}"#]));
    assert_eq!(
        stdout(&o),
        r#"{"message":"Hello, Ada!","runtime":"gust wasm"}"#,
        "GREETING is gone, its default greets"
    );

    // Junk durations are usage errors, and change nothing.
    for junk in ["30x", "1.5s", "ms", "3 s"] {
        let o = gust(&s.url, &["deploy", "hello", "--timeout", junk]);
        assert_eq!(o.status.code(), Some(2), "{junk}: {o:?}");
        assert!(stderr(&o).contains("--timeout") && stderr(&o).contains("not a duration"), "{junk}: {o:?}");
    }
    assert_eq!(view(&s.url, "hello")["revision"], later["revision"]);

    // --replace is the old whole-config write: what is not given returns to its default.
    ok(gust(&s.url, &["deploy", "hello", "--replace", "--code", HELLO, "--timeout", "2s"]));
    let replaced = view(&s.url, "hello");
    assert_eq!((replaced["timeout_ms"].as_u64(), replaced["memory_mb"].as_u64()), (Some(2000), Some(128)));
    assert_eq!(
        (&replaced["env"], &replaced["reserved_concurrency"], &replaced["description"]),
        (&json!({}), &Value::Null, &json!(""))
    );

    // A new function needs its code; update-config never creates one.
    let o = gust(&s.url, &["deploy", "fresh", "--memory", "64"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(stderr(&o).contains("needs --code"), "{o:?}");
    assert_eq!(
        gust(&s.url, &["function", "update-config", "fresh", "--memory", "64"]).status.code(),
        Some(3)
    );
    assert_eq!(gust(&s.url, &["function", "get", "fresh"]).status.code(), Some(3), "nothing was created");
}

/// A proxy in front of `upstream` that, before passing on each of the first `times` deploy
/// writes, makes another write to the same function (its reserved concurrency, to 7): a writer
/// that gets in between the CLI's read and its write.
struct RacingWriter {
    url: String,
    deploys: Arc<AtomicUsize>,
}

impl RacingWriter {
    fn start(upstream: &str, times: usize) -> RacingWriter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let deploys = Arc::new(AtomicUsize::new(0));
        let (upstream, seen) = (upstream.to_string(), deploys.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let (upstream, seen) = (upstream.clone(), seen.clone());
                std::thread::spawn(move || relay(conn.unwrap(), &upstream, &seen, times));
            }
        });
        RacingWriter { url, deploys }
    }
}

/// One request from `conn`, passed on (after the racing write, if due), its answer sent back,
/// and the connection closed.
fn relay(conn: TcpStream, upstream: &str, seen: &AtomicUsize, times: usize) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize =
        headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let client = reqwest::blocking::Client::new();
    if method == "POST" && path.ends_with("/deploy") && seen.fetch_add(1, Ordering::SeqCst) < times {
        let function = path.trim_end_matches("/deploy");
        let r = client
            .put(format!("{upstream}{function}/concurrency"))
            .json(&json!({ "reserved_concurrency": 7 }))
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }
    let mut rb = client.request(method.parse().unwrap(), format!("{upstream}{path}")).body(body);
    for (k, v) in
        headers.iter().filter(|(k, _)| ["content-type", "if-match", "authorization"].contains(&k.as_str()))
    {
        rb = rb.header(k, v);
    }
    let r = rb.send().unwrap();
    let status = r.status();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let answer = r.bytes().unwrap();
    let mut out = conn;
    let mut response =
        format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    if let Some(ct) = content_type {
        response.push_str(&format!("content-type: {ct}\r\n"));
    }
    response.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", answer.len()));
    out.write_all(response.as_bytes()).unwrap();
    out.write_all(&answer).unwrap();
}

#[test]
fn a_writer_between_the_read_and_the_write_makes_the_merge_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    ok(gust(&s.url, &["deploy", "race", "--code", HELLO, "--memory", "64"]));

    // Once: the merge is refused (412), read again and written on top of the other write.
    let once = RacingWriter::start(&s.url, 1);
    ok(gust(&once.url, &["deploy", "race", "--env", "X=1"]));
    assert_eq!(
        once.deploys.load(Ordering::SeqCst),
        2,
        "the first write was refused and the merge done again"
    );
    let v = view(&s.url, "race");
    assert_eq!(v["env"], json!({ "X": "1" }));
    assert_eq!(v["reserved_concurrency"], 7, "the other writer's change is kept, not overwritten");
    assert_eq!(v["memory_mb"], 64);

    // Always: it gives up after a few tries with the conflict exit code, having written nothing.
    let always = RacingWriter::start(&s.url, usize::MAX);
    let before = view(&s.url, "race");
    let o = gust(&always.url, &["deploy", "race", "--code", HELLO, "--env", "Y=1"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(stderr(&o).contains("kept changing") && stderr(&o).contains("nothing was written"), "{o:?}");
    assert_eq!(always.deploys.load(Ordering::SeqCst), 5);
    let after = view(&s.url, "race");
    assert_eq!(after["env"], before["env"], "no Y: the refused writes wrote nothing");
    let o = gust(&always.url, &["function", "update-config", "race", "--memory", "256"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert_eq!(view(&s.url, "race")["memory_mb"], 64);
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", "admin-token"]);
    let as_ = |token: &str, args: &[&str]| {
        common::cli(&s.url).env("GUST_TOKEN", token).args(args).output().unwrap()
    };
    ok(as_("admin-token", &["deploy", "hello", "--code", HELLO]));

    // 0 and 1.
    assert_eq!(
        as_("admin-token", &["invoke", "hello", "--payload", r#"{"name":"A"}"#]).status.code(),
        Some(0)
    );
    assert_eq!(
        as_("admin-token", &["invoke", "hello", "--payload", "{}"]).status.code(),
        Some(1),
        "function error"
    );
    // 2: usage, clap's own included; nothing is sent.
    for args in [
        &["deploy", "hello", "--timeout", "30x"][..],
        &["deploy", "hello", "--bogus"],
        &["deploy", "hello", "--env", "NOEQUALS"],
        &["deploy", "hello", "--code", "/no/such/file"],
        &["nonsense"],
        &["completions", "tcsh"],
    ] {
        let o = as_("admin-token", args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
    }
    // 3: not found.
    for args in [
        &["function", "get", "nope"][..],
        &["invoke", "nope"],
        &["alias", "get", "hello", "live"],
        &["delete", "nope"],
    ] {
        let o = as_("admin-token", args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {o:?}");
        assert!(stderr(&o).contains("not found"), "{o:?}");
    }
    // 4: conflict (a schedule that exists).
    let sched = ["schedule", "create", "tick", "--expression", "rate(1 hour)", "--function", "hello"];
    ok(as_("admin-token", &sched));
    assert_eq!(as_("admin-token", &sched).status.code(), Some(4));
    // 5: a bad token (401), a key whose role may not (403).
    let o = as_("wrong-token", &["functions"]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let created = ok(as_("admin-token", &["token", "create", "ro", "--role", "reader", "--output", "json"]));
    let reader: Value = serde_json::from_str(&stdout(&created)).unwrap();
    let reader = reader["token"].as_str().unwrap();
    assert_eq!(as_(reader, &["functions"]).status.code(), Some(0));
    let o = as_(reader, &["deploy", "hello", "--memory", "256"]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    // 6: nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let o = as_("admin-token", &["functions", "--server", &format!("http://{closed}")]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(stderr(&o).contains("cannot reach"), "{o:?}");
    // 7: any other refusal (a 400).
    let o = as_("admin-token", &["deploy", "hello", "--memory", "5"]);
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert!(stderr(&o).contains("memory_mb"), "{o:?}");

    // The codes are documented where users look.
    let help = stdout(&ok(Command::new(GUST).arg("--help").output().unwrap()));
    for line in [
        "2  usage",
        "3  not found",
        "4  conflict",
        "5  authentication",
        "6  server unreachable",
        "7  any other",
    ] {
        assert!(help.contains(line), "{line}: {help}");
    }
}

#[test]
fn aliases_and_concurrency_have_their_commands() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    ok(gust(&s.url, &["deploy", "f", "--code", HELLO]));
    ok(gust(&s.url, &["publish", "f"]));
    ok(gust(&s.url, &["deploy", "f", "--env", "GREETING=Hi"]));
    ok(gust(&s.url, &["publish", "f"]));

    // The old form still sets an alias; `alias set` is the same; a description set once stays.
    ok(gust(&s.url, &["alias", "f", "live", "--version", "1", "--weight", "2=0.25"]));
    ok(gust(&s.url, &["alias", "set", "f", "beta", "--version", "2", "--description", "the new one"]));
    ok(gust(&s.url, &["alias", "set", "f", "beta", "--version", "1"]));
    let beta: Value =
        serde_json::from_str(&stdout(&ok(gust(&s.url, &["alias", "get", "f", "beta", "--output", "json"]))))
            .unwrap();
    assert_eq!((beta["version"].as_u64(), beta["description"].as_str()), (Some(1), Some("the new one")));
    let listed = stdout(&ok(gust(&s.url, &["alias", "list", "f"])));
    assert_eq!(listed, "beta -> 1\nlive -> 1 (2: 25%)");
    let shown = stdout(&ok(gust(&s.url, &["function", "get", "f"])));
    assert!(shown.contains("aliases        beta -> 1, live -> 1 (2: 25%)"), "{shown}");
    ok(gust(&s.url, &["alias", "delete", "f", "beta"]));
    assert_eq!(gust(&s.url, &["alias", "get", "f", "beta"]).status.code(), Some(3));
    assert_eq!(stdout(&ok(gust(&s.url, &["alias", "list", "f"]))), "live -> 1 (2: 25%)");

    // Reserved concurrency: read, set, clear; the AWS API sees the same.
    assert!(stdout(&ok(gust(&s.url, &["concurrency", "f"]))).contains("no reserved concurrency"));
    assert!(
        stdout(&ok(gust(&s.url, &["concurrency", "f", "3"]))).contains("3 concurrent executions reserved")
    );
    let aws_view: Value = s.get("/2019-09-30/functions/f/concurrency").json().unwrap();
    assert_eq!(aws_view["ReservedConcurrentExecutions"], 3);
    assert!(stdout(&ok(gust(&s.url, &["function", "get", "f"]))).contains("concurrency    3 reserved"));
    ok(gust(&s.url, &["concurrency", "f", "--clear"]));
    assert_eq!(view(&s.url, "f")["reserved_concurrency"], Value::Null);
    assert_eq!(gust(&s.url, &["concurrency", "nope", "2"]).status.code(), Some(3));
    assert_eq!(gust(&s.url, &["concurrency", "f", "2", "--clear"]).status.code(), Some(2));

    // `gust delete` is `gust function delete`.
    ok(gust(&s.url, &["deploy", "g", "--code", HELLO]));
    ok(gust(&s.url, &["delete", "g"]));
    ok(gust(&s.url, &["function", "delete", "f"]));
    assert_eq!(
        stdout(&ok(gust(&s.url, &["functions", "--output", "json"]))).parse::<Value>().unwrap()["functions"],
        json!([])
    );
}

#[test]
fn lists_say_when_there_is_more() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let hello = std::fs::read(gust_testkit::repo_root().join(HELLO)).unwrap();
    for name in ["f1", "f2", "f3"] {
        s.deploy(name, json!({ "memory_mb": 64 }), hello.clone());
    }
    let names = |o: &Output| -> Vec<String> {
        stdout(o).lines().skip(1).map(|l| l.split_whitespace().next().unwrap().to_string()).collect()
    };
    let o = ok(gust(&s.url, &["functions", "--limit", "2"]));
    assert_eq!(names(&o), ["f1", "f2"]);
    assert!(stderr(&o).starts_with("more: --after f2"), "{o:?}");
    let o = ok(gust(&s.url, &["functions", "--limit", "2", "--after", "f2"]));
    assert_eq!((names(&o), stderr(&o)), (vec!["f3".to_string()], String::new()));
    let o = ok(gust(&s.url, &["functions", "--limit", "3"]));
    assert_eq!((names(&o).len(), stderr(&o)), (3, String::new()), "a page that ends at the end says no more");
    let o = ok(gust(&s.url, &["functions", "--limit", "1", "--all"]));
    assert_eq!(names(&o), ["f1", "f2", "f3"], "--all follows every page");
    let o = ok(gust(&s.url, &["functions", "--limit", "2", "--output", "json"]));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((v["functions"].as_array().unwrap().len(), &v["next"]), (2, &json!("f2")));
    assert_eq!(stderr(&o), "", "json says it in next, not on stderr");

    for memory in [96, 128, 160] {
        s.put_json("/v1/functions/f1", &json!({ "memory_mb": memory }));
        s.publish("f1");
    }
    let o = ok(gust(&s.url, &["versions", "f1", "--limit", "2"]));
    assert_eq!(names(&o), ["1", "2"]);
    assert!(stderr(&o).starts_with("more: --after 2"), "{o:?}");
    assert_eq!(names(&ok(gust(&s.url, &["versions", "f1", "--after", "2"]))), ["3"]);
    assert_eq!(names(&ok(gust(&s.url, &["versions", "f1", "--all", "--limit", "1"]))), ["1", "2", "3"]);

    let mut ids = Vec::new();
    for n in ["a", "b", "c"] {
        let r = s.invoke("f1", None, format!(r#"{{"name":"{n}"}}"#).as_bytes(), &[("idempotency-key", n)]);
        ids.push(r.headers()["gust-invocation-id"].to_str().unwrap().to_string());
        // Ids are ordered by their millisecond: one each.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let logs = |args: &[&str]| -> (Vec<String>, String) {
        let o = ok(gust(&s.url, &[&["logs", "f1", "--output", "json"][..], args].concat()));
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        let ids = v["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["invocation_id"].as_str().unwrap().to_string())
            .collect();
        (ids, v["next"].as_str().unwrap_or("").to_string())
    };
    let (page, next) = logs(&["--limit", "2"]);
    assert_eq!(
        (page.as_slice(), next.as_str()),
        (&[ids[2].clone(), ids[1].clone()][..], ids[1].as_str()),
        "newest first"
    );
    let (page, next) = logs(&["--limit", "2", "--after", &next]);
    assert_eq!((page, next), (vec![ids[0].clone()], String::new()));
    let text = ok(gust(&s.url, &["logs", "f1", "--limit", "1"]));
    assert!(stderr(&text).starts_with(&format!("more: --after {}", ids[2])), "{text:?}");

    for name in ["a", "b"] {
        ok(gust(&s.url, &["schedule", "create", name, "--expression", "rate(1 day)", "--function", "f1"]));
    }
    let o = ok(gust(&s.url, &["schedule", "list", "--limit", "1"]));
    assert_eq!(stdout(&o), "default/a  rate(1 day)  enabled");
    assert!(stderr(&o).starts_with("more: --after default/a"), "{o:?}");
    let o = ok(gust(&s.url, &["schedule", "list", "--after", "default/a"]));
    assert_eq!((stdout(&o).as_str(), stderr(&o).as_str()), ("default/b  rate(1 day)  enabled", ""));
}

#[test]
fn completions_are_scripts_for_each_shell() {
    for (shell, mark) in
        [("bash", "complete -F _gust"), ("zsh", "#compdef gust"), ("fish", "complete -c gust")]
    {
        let o = ok(Command::new(GUST).args(["completions", shell]).output().unwrap());
        let script = stdout(&o);
        assert!(script.contains(mark), "{shell}: {}", &script[..script.len().min(300)]);
        for word in ["update-config", "concurrency", "timeout", "profile", "unset-env"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("gust.bash");
    std::fs::write(&script, ok(Command::new(GUST).args(["completions", "bash"]).output().unwrap()).stdout)
        .unwrap();
    let checked = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(checked.status.success(), "the bash script parses: {checked:?}");
    // And completes: `gust function upd<TAB>`, `gust deploy f --ti<TAB>`.
    let complete = |words: &str, cword: usize| {
        let line = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; _gust gust \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        stdout(&ok(Command::new("bash").args(["-c", &line]).output().unwrap()))
    };
    assert_eq!(complete("gust function upd", 2), "update-config");
    assert_eq!(complete("gust deploy f --ti", 3), "--timeout");
}

/// The CLI with no server, token or config in its environment but what `env` gives.
fn bare_cli(env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(GUST);
    for k in [
        "GUST_SERVER",
        "GUST_TOKEN",
        "GUST_TOKEN_FILE",
        "GUST_CA",
        "GUST_PROFILE",
        "GUST_CONFIG",
        "XDG_CONFIG_HOME",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn profiles_pick_the_server_and_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &["--token", "the-token"]);
    let closed = format!("http://{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
    let home = dir.path().join("home");
    let config_dir = home.join(".config/gust");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("prod.token"), "the-token\n").unwrap();
    let config = config_dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[profiles.default]\nserver = \"{closed}\"\n\n[profiles.prod]\nserver = \"{}\"\ntoken_file = \"prod.token\"\n\n[profiles.inline]\nserver = \"{}\"\ntoken = \"the-token\"\n",
            s.url, s.url
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let code = |cmd: &mut Command| cmd.output().unwrap().status.code();

    // ~/.config/gust/config.toml; its default profile unless another is named.
    let at_home = || bare_cli(&[("HOME", &home)]);
    assert_eq!(code(at_home().arg("functions")), Some(6), "the default profile's server");
    assert_eq!(
        code(at_home().args(["functions", "--profile", "prod"])),
        Some(0),
        "prod's server and token file"
    );
    assert_eq!(code(at_home().arg("functions").env("GUST_PROFILE", "prod")), Some(0));
    // Flags and the environment come before the profile.
    assert_eq!(code(at_home().args(["functions", "--profile", "prod", "--server", &closed])), Some(6));
    assert_eq!(code(at_home().args(["functions", "--profile", "prod"]).env("GUST_SERVER", &closed)), Some(6));
    assert_eq!(code(at_home().args(["functions", "--profile", "prod", "--token", "wrong"])), Some(5));
    let o = at_home().args(["functions", "--profile", "staging"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr(&o).contains("\"staging\" is not defined") && stderr(&o).contains("default, inline, prod"),
        "{o:?}"
    );

    // A token in the file itself only when nobody else can read the file.
    let o = at_home().args(["functions", "--profile", "inline"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("mode 0644") && stderr(&o).contains("chmod 600"), "{o:?}");
    assert!(!stderr(&o).contains("the-token"));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(code(at_home().args(["functions", "--profile", "inline"])), Some(0));

    // $XDG_CONFIG_HOME before ~/.config; GUST_CONFIG before both.
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("gust")).unwrap();
    std::fs::write(xdg.join("gust/config.toml"), format!("[profiles.default]\nserver = \"{}\"\n", s.url))
        .unwrap();
    assert_eq!(
        code(bare_cli(&[("HOME", &home), ("XDG_CONFIG_HOME", &xdg)]).args([
            "functions",
            "--token",
            "the-token"
        ])),
        Some(0)
    );
    let o = bare_cli(&[
        ("HOME", &home),
        ("XDG_CONFIG_HOME", &xdg),
        ("GUST_CONFIG", &dir.path().join("none.toml")),
    ])
    .arg("functions")
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "a named config file must exist: {o:?}");
}

/// Runs the first `sh` block of `dir/README.md` from `dir`'s parent, with this build's `gust`
/// first on PATH and pointed at `server`; its output.
fn run_readme(dir: &Path, server: &str) -> Output {
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let block = readme.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    let bin = PathBuf::from(GUST).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    Command::new("sh")
        .args(["-e", "-c", block])
        .current_dir(dir.parent().unwrap())
        .env("PATH", path)
        .env("GUST_SERVER", server)
        .output()
        .unwrap()
}

fn init_deploy_invoke(template: &str, name: &str, server: &Server) {
    let work = tempfile::tempdir().unwrap();
    let init = |cmd: &mut Command| {
        cmd.current_dir(work.path()).args(["init", name, "--template", template]).output().unwrap()
    };
    let o = ok(init(&mut Command::new(GUST)));
    assert!(stdout(&o).contains(&format!("gust deploy {name} --code")), "{o:?}");
    let o = run_readme(&work.path().join(name), &server.url);
    assert!(o.status.success(), "{template}: {o:?}");
    let out = stdout(&o);
    assert!(out.starts_with(&format!("deployed {name}")), "{template}: {out}");
    assert!(out.contains("Hello") && out.contains("Ada"), "{template}: the function ran: {out}");
    // Never over an existing directory.
    std::fs::write(work.path().join(name).join("mine"), "keep").unwrap();
    let o = init(&mut Command::new(GUST));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("exists already"), "{o:?}");
    assert_eq!(std::fs::read_to_string(work.path().join(name).join("mine")).unwrap(), "keep");
}

#[test]
fn the_provided_template_builds_deploys_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    init_deploy_invoke("provided", "from-sh", &s);
    let work = tempfile::tempdir().unwrap();
    ok(Command::new(GUST)
        .current_dir(work.path())
        .args(["init", "x", "--template", "provided"])
        .output()
        .unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(work.path().join("x/bootstrap")).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "bootstrap is executable");
}

#[test]
fn the_python_template_builds_deploys_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--python", &gust_testkit::python()]);
    init_deploy_invoke("python", "from-py", &s);
}

#[test]
fn the_node_template_builds_deploys_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--node-ric", &gust_testkit::node_ric()]);
    init_deploy_invoke("node", "from-js", &s);
}

/// No wasm32 target here: the Rust template is checked for the runtime's contract only.
#[test]
fn the_rust_wasm_template_is_a_wasi_command() {
    let work = tempfile::tempdir().unwrap();
    ok(Command::new(GUST)
        .current_dir(work.path())
        .args(["init", "2fast", "--template", "rust-wasm"])
        .output()
        .unwrap());
    let read = |f: &str| std::fs::read_to_string(work.path().join("2fast").join(f)).unwrap();
    assert!(read("Cargo.toml").contains("name = \"fn-2fast\""), "a package name may not start with a digit");
    let main = read("src/main.rs");
    assert!(
        main.contains("stdin()") && main.contains("stdout()") && main.contains("ExitCode::FAILURE"),
        "{main}"
    );
    let readme = read("README.md");
    assert!(readme.contains("cargo build --release --target wasm32-wasip1"), "{readme}");
    assert!(
        readme.contains("gust deploy 2fast --code target/wasm32-wasip1/release/fn-2fast.wasm"),
        "{readme}"
    );
    assert_eq!(read(".gitignore"), "target/\n");
}

#[test]
fn a_large_upload_shows_progress_on_a_terminal_only() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: needs script(1) (util-linux) to give gust a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    // 6 MB that do not compress, beside a bootstrap.
    let mut noise = vec![0u8; 6 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let bootstrap = gust_testkit::fixture_file("bootstrap.py");
    let package = gust_testkit::zip(&[("bootstrap", &bootstrap, 0o755), ("noise.bin", &noise, 0o644)]);
    let zip = dir.path().join("big.zip");
    std::fs::write(&zip, package).unwrap();
    let deploy = format!("{GUST} deploy big --code {} --runtime provided", zip.display());

    // On a terminal (script(1) gives the command one).
    let o = Command::new("script")
        .args(["-qec", &deploy, "/dev/null"])
        .env("GUST_SERVER", &s.url)
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(seen.contains("uploading") && seen.contains("(100%)"), "{seen}");
    // Not to a pipe, and never in JSON.
    let o = ok(gust(&s.url, &["deploy", "big", "--code", zip.to_str().unwrap()]));
    assert!(!stderr(&o).contains("uploading"), "{o:?}");
    let o = Command::new("script")
        .args(["-qec", &format!("{deploy} --output json"), "/dev/null"])
        .env("GUST_SERVER", &s.url)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("uploading"), "{o:?}");
}
