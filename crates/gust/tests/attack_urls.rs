//! Attacks on function URLs, each test asserting the safe behaviour: a caller's credential
//! handed to the (untrusted) function and stored in its record; AWS_IAM URLs served without
//! authentication on a `--url-listen` beyond loopback; a function's answer choosing statuses
//! that break HTTP framing; cookies shared between the path-based URLs of different tenants;
//! `--url-domain` host spellings that miss the URL and reach the API instead; a wasi:http
//! component sending requests where its function does not allow them, or through an allowed
//! name to gust's own host (loopback); a streaming function whose prelude never ends or whose
//! stream never stops; a component that imports the host's files.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::{create_url, json_of, url_client, wasm_config, Server, GUST};
use gust_testkit::{fixture, zip};
use serde_json::{json, Value};

/// A `provided` bootstrap (Python, standard library only) that answers, as its whole result,
/// the bytes base64url-encoded in the query parameter `b`: any structured answer a malicious
/// function could give.
const ANSWERER: &[u8] = br#"#!/usr/bin/env python3
import base64, http.client, json, os
host = os.environ["AWS_LAMBDA_RUNTIME_API"]
base = "/2018-06-01/runtime"
while True:
    c = http.client.HTTPConnection(host)
    c.request("GET", base + "/invocation/next")
    r = c.getresponse()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(r.read() or b"{}")
    c.close()
    q = event.get("queryStringParameters") or {}
    body = base64.urlsafe_b64decode(q["b"] + "==") if "b" in q else json.dumps(event).encode()
    c = http.client.HTTPConnection(host)
    c.request("POST", base + "/invocation/" + rid + "/response", body=body)
    c.getresponse().read()
    c.close()
"#;

fn deploy_answerer(s: &Server, name: &str) {
    let config = json!({ "runtime": "provided.al2023", "timeout_ms": 10_000 });
    s.deploy_zip(name, config, zip(&[("bootstrap", ANSWERER, 0o755)]));
}

/// `?b=` making the answerer answer `answer`.
fn answering(answer: &Value) -> String {
    let raw = serde_json::to_vec(answer).unwrap();
    format!("b={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Sends `request` on a fresh connection and reads what comes back within `wait`.
fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(wait)).unwrap();
    tcp.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

#[test]
fn aws_iam_url_does_not_hand_the_callers_bearer_token_to_the_function() {
    // A tenant deploys `app` behind an AWS_IAM URL; the operator calls it with the --token.
    // The function (tenant code) and anyone who can read its invocation records (a reader key
    // for `app*`) must not get the operator's bearer token out of the event.
    let dir = tempfile::tempdir().unwrap();
    let token = "operator-admin-token-do-not-leak";
    let s = Server::start(dir.path(), &["--token", token]);
    let admin = |rb: reqwest::blocking::RequestBuilder| rb.bearer_auth(token).send().unwrap();
    let r = admin(s.client().put(format!("{}/v1/functions/app", s.url)).json(&wasm_config(10_000)));
    assert_eq!(r.status(), 200);
    let code =
        s.client().put(format!("{}/v1/functions/app/code", s.url)).header("content-type", "application/wasm");
    assert_eq!(admin(code.body(fixture("echo"))).status(), 200);
    let url = create_url(&s.url, "app", json!({ "auth_type": "AWS_IAM" }), Some(token));

    let r = url_client().get(url["function_url"].as_str().unwrap()).bearer_auth(token).send().unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-amzn-requestid"].to_str().unwrap().to_string();
    let event = json_of(r);
    assert!(
        !event.to_string().contains(token),
        "the function received the caller's bearer token: {}",
        event["headers"]
    );

    // Nor is it kept in the invocation record a reader of the tenant's functions can fetch.
    let r = admin(s.client().post(format!("{}/v1/tokens", s.url)).json(&json!({
        "name": "tenant-reader", "role": "reader", "functions": "app*",
    })));
    assert_eq!(r.status(), 201);
    let reader = r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let record = loop {
        let r = s
            .client()
            .get(format!("{}/v1/invocations/{request_id}", s.url))
            .bearer_auth(&reader)
            .send()
            .unwrap();
        if r.status() == 200 {
            break r.text().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no record for {request_id}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!record.contains(token), "a reader key finds the admin token in the record: {record}");
}

/// SIGKILLs a process when dropped.
/// A child killed and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn aws_iam_urls_on_a_url_listener_beyond_loopback_require_authentication() {
    // No --token is accepted because the API listens on loopback; but --url-listen 0.0.0.0
    // puts the URLs on the network, where an AWS_IAM URL must not answer anyone.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(GUST);
    cmd.args(["server", "--listen", "127.0.0.1:0", "--url-listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("GUST_LOG", "warn")
        .stderr(Stdio::inherit());
    // Its stdout stays open (read to its end by a thread): the URL listener's line follows.
    let mut child = KillOnDrop(cmd.stdout(Stdio::piped()).spawn().expect("spawn gust server"));
    let mut stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut banner).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let Some(base) = banner.trim().strip_prefix("gust listening on ") else {
        // Refusing to start (the listener would be open to the network) is safe too.
        return;
    };
    let base = base.to_string();
    let r =
        url_client().put(format!("{base}/v1/functions/private")).json(&wasm_config(10_000)).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = url_client()
        .put(format!("{base}/v1/functions/private/code"))
        .header("content-type", "application/wasm")
        .body(fixture("echo"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = create_url(&base, "private", json!({ "auth_type": "AWS_IAM" }), None);
    let id = url["url_id"].as_str().unwrap();
    let port =
        url["function_url"].as_str().unwrap().rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    // Any client that reaches the port (here over loopback, the listener is on every address).
    let r = url_client()
        .get(format!("http://127.0.0.1:{port}/"))
        .header("host", format!("{id}.example.com"))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "an AWS_IAM URL answered an unauthenticated caller on 0.0.0.0: {}",
        r.text().unwrap()
    );
}

#[test]
fn a_function_cannot_answer_switching_protocols_or_a_bodyless_status_with_a_length() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    deploy_answerer(&s, "evil");
    let url = create_url(&s.url, "evil", json!({ "auth_type": "NONE" }), None);
    let id = url["url_id"].as_str().unwrap();
    let host = s.addr().to_string();

    // 101 without any upgrade: a proxy in front that sees it switches the client's connection
    // to a tunnel; gust then drops the connection. A final status must be 200-599.
    let answer = json!({ "statusCode": 101, "headers": { "x-a": "1" }, "body": "after the switch" });
    let request = format!(
        "GET /url/{id}/?{} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        answering(&answer)
    );
    let out = raw_exchange(&host, request.as_bytes(), Duration::from_secs(5));
    let head = String::from_utf8_lossy(&out).into_owned();
    assert!(!head.starts_with("HTTP/1.1 101"), "the function's 101 went out as is:\n{head}");
    assert!(head.starts_with("HTTP/1.1 502"), "a 1xx is not a final answer (502 as for 700):\n{head}");

    // 204 with a body: hyper keeps the body's Content-Length on a 204 (RFC 9110 forbids it),
    // so a lenient proxy reads the next response as this one's body.
    let answer = json!({ "statusCode": 204, "body": "x".repeat(40) });
    let request = format!("GET /url/{id}/?{} HTTP/1.1\r\nHost: {host}\r\n\r\n", answering(&answer));
    let out = raw_exchange(&host, request.as_bytes(), Duration::from_secs(5));
    let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let head = head.split("\r\n\r\n").next().unwrap_or("").to_string();
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(!head.contains("\r\ncontent-length:"), "a 204 carries a Content-Length:\n{head}");
}

#[test]
fn path_based_urls_keep_a_functions_cookies_to_its_own_path() {
    // All path-based URLs share one origin (the API's). A cookie a function sets with
    // `Path=/` (what Express, Starlette, ... do by default) is sent by browsers to every other
    // tenant's path-based URL, whose function reads it in `event.cookies`; a cookie a function
    // sets for `/url/<another id>/` plants a session in another tenant's app.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    deploy_answerer(&s, "shop");
    let url = create_url(&s.url, "shop", json!({ "auth_type": "NONE" }), None);
    let at = url["function_url"].as_str().unwrap().to_string();
    let own = format!("/url/{}/", url["url_id"].as_str().unwrap());
    let answer = json!({
        "statusCode": 200,
        "cookies": ["session=s3cr3t; Path=/; HttpOnly", format!("planted=1; Path=/url/{}/", "v".repeat(32))],
        "multiValueHeaders": { "set-cookie": ["theme=dark"] },
        "body": "welcome",
    });
    let r = url_client().get(format!("{at}login?{}", answering(&answer))).send().unwrap();
    assert_eq!(r.status(), 200);
    for c in r.headers().get_all("set-cookie") {
        let c = c.to_str().unwrap();
        let path = c
            .split(';')
            .map(str::trim)
            .find_map(|a| a.get(..5).filter(|p| p.eq_ignore_ascii_case("path=")).map(|_| &a[5..]))
            .unwrap_or("(none: the request's directory, /url/<id>/…)");
        assert!(
            path.starts_with(&own) || path.starts_with("(none"),
            "a path-based URL set a cookie for {path:?}, beyond its own {own}: {c}"
        );
    }
}

#[test]
fn url_domain_hosts_in_every_dns_spelling_reach_the_url_not_the_api() {
    // `<id>.fn.example.test.` (fully qualified, as browsers send it when the user types it)
    // and an upper-case id name the same host as `<id>.fn.example.test`: they must not fall
    // through to the API.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--url-domain", "fn.example.test"]);
    s.deploy("echo", wasm_config(10_000), fixture("echo"));
    let url = create_url(&s.url, "echo", json!({ "auth_type": "NONE" }), None);
    let id = url["url_id"].as_str().unwrap().to_string();
    for host in [format!("{id}.fn.example.test."), format!("{}.fn.example.test", id.to_ascii_uppercase())] {
        let r = url_client().get(format!("{}/v1/functions", s.url)).header("host", &host).send().unwrap();
        let status = r.status();
        let text = r.text().unwrap();
        assert_eq!(status, 200, "{host}: {text}");
        let event: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{host}: {e}: {text}"));
        assert_eq!(event["rawPath"], "/v1/functions", "{host}: {text}");
    }
}

/// A server on loopback answering every request `203` and counting its connections.
fn upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 203 Non-Authoritative Information\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

/// Deploys the outgoing-request component (`tests/fixtures/wasi-http/fetch.wat`: a request to
/// `/HOST:PORT` sends `GET http://HOST:PORT/` and answers its status, or 500 plus the
/// wasi:http error-code case) allowed `allowed`, with a URL; the URL.
fn deploy_fetcher(s: &Server, name: &str, allowed: &[String]) -> String {
    let component =
        std::fs::read(gust_testkit::repo_root().join("tests/fixtures/wasi-http/fetch.wasm")).unwrap();
    let mut config = wasm_config(10_000);
    config["allowed_outbound_hosts"] = json!(allowed);
    s.deploy(name, config, component);
    create_url(&s.url, name, json!({ "auth_type": "NONE" }), None)["function_url"]
        .as_str()
        .unwrap()
        .to_string()
}

/// wasi:http error-code cases, as the fetcher answers them.
const DENIED: u16 = 500 + 15; // HTTP-request-denied
const PROHIBITED: u16 = 500 + 4; // destination-IP-prohibited

#[test]
fn a_component_sends_requests_only_where_its_function_allows_and_never_to_loopback_unless_told() {
    use std::sync::atomic::Ordering;
    let (port, seen) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);

    // Attack 1: a function that lists no hosts sends its request anyway.
    let url = deploy_fetcher(&s, "nothing", &[]);
    let r = url_client().get(format!("{url}127.0.0.1:{port}")).send().unwrap();
    assert_eq!(r.status(), DENIED, "nothing is allowed by default");
    // Attack 2: a listed host on another port, and a name that merely ends like a listed one.
    let url = deploy_fetcher(&s, "elsewhere", &[format!("127.0.0.1:{}", port ^ 1), "*.example.test".into()]);
    let r = url_client().get(format!("{url}127.0.0.1:{port}")).send().unwrap();
    assert_eq!(r.status(), DENIED);
    let r = url_client().get(format!("{url}evilexample.test:{port}")).send().unwrap();
    assert_eq!(r.status(), DENIED);
    // Attack 3: the host is allowed, but it is this machine's loopback (as a name that resolves
    // to 127.0.0.1 would be: gust's own API, the host's services).
    let url = deploy_fetcher(&s, "loopback", &[format!("127.0.0.1:{port}"), format!("localhost:{port}")]);
    for host in ["127.0.0.1", "localhost"] {
        let r = url_client().get(format!("{url}{host}:{port}")).send().unwrap();
        assert_eq!(r.status(), PROHIBITED, "{host}: private addresses need --allow-private-outbound");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "no request reached the other server");
    drop(s);

    // An operator who allows private networks: the allowed host is reached, others are not.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--allow-private-outbound"]);
    let url = deploy_fetcher(&s, "fetcher", &[format!("localhost:{port}")]);
    let r = url_client().get(format!("{url}localhost:{port}")).send().unwrap();
    assert_eq!(r.status(), 203, "the other server's answer");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let r = url_client().get(format!("{url}127.0.0.1:{port}")).send().unwrap();
    assert_eq!(r.status(), DENIED, "127.0.0.1 is not the name that was allowed");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn outbound_hosts_are_checked_at_write_and_wasm_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let client = url_client();
    for bad in [json!(["ftp://a.test"]), json!(["A.test"]), json!(["a.test/path"]), json!(vec!["a.test"; 33])]
    {
        let mut config = wasm_config(1000);
        config["allowed_outbound_hosts"] = bad.clone();
        let r = client.put(format!("{}/v1/functions/f", s.url)).json(&config).send().unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(json_of(r)["error"]["message"].as_str().unwrap().contains("outbound"), "{bad}");
    }
    let config =
        json!({ "runtime": "python3.11", "handler": "app.handler", "allowed_outbound_hosts": ["a.test"] });
    let r = client.put(format!("{}/v1/functions/p", s.url)).json(&config).send().unwrap();
    assert_eq!(r.status(), 400);
}

/// A Node.js streaming handler that misbehaves: `?mode=prelude` declares Lambda's HTTP prelude
/// and never ends it; `?mode=huge` streams 25 MB (more than the 20 MB a stream may carry).
const MISSTREAMER: &[u8] = br#"
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const mode = (event.queryStringParameters || {}).mode;
  if (mode === "prelude") {
    responseStream.setContentType("application/vnd.awslambda.http-integration-response");
    responseStream.write('{"statusCode":200,"headers":{"x":"');
    for (let i = 0; i < 200; i++) responseStream.write("y".repeat(1024));
    await new Promise((r) => setTimeout(r, 8000));
  } else {
    responseStream.setContentType("application/octet-stream");
    const mb = Buffer.alloc(1024 * 1024, 120);
    for (let i = 0; i < 25; i++) {
      if (!responseStream.write(mb)) await new Promise((r) => responseStream.once("drain", r));
    }
  }
  responseStream.end();
});
"#;

#[test]
fn a_stream_whose_prelude_never_ends_or_that_never_stops_is_cut_off() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let ric = gust_testkit::node_ric();
    let s = Server::start(dir.path(), &["--node-ric", &ric]);
    let config = json!({ "runtime": "nodejs20.x", "handler": "index.handler", "timeout_ms": 20_000, "memory_mb": 512 });
    s.deploy_zip("mis", config, zip(&[("index.mjs", MISSTREAMER, 0o644)]));
    let at =
        create_url(&s.url, "mis", json!({ "auth_type": "NONE", "invoke_mode": "RESPONSE_STREAM" }), None)
            ["function_url"]
            .as_str()
            .unwrap()
            .to_string();
    // 200 KB of prelude with no end: refused once it passes 64 KB, long before the function ends.
    let started = std::time::Instant::now();
    let r = url_client().get(format!("{at}?mode=prelude")).send().unwrap();
    assert_eq!(r.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(6), "answered only after {:?}", started.elapsed());
    // 25 MB streamed: the client gets at most 20 MB, and a body that does not end cleanly.
    let mut r = url_client().get(format!("{at}?mode=huge")).send().unwrap();
    assert_eq!(r.status(), 200);
    let mut got = Vec::new();
    let read = r.read_to_end(&mut got);
    assert!(read.is_err(), "a stream over the limit does not end cleanly");
    assert!(got.len() <= 20 * 1024 * 1024, "{} bytes streamed", got.len());
    assert!(got.len() >= 1024 * 1024, "the stream was sent on until the limit ({} bytes)", got.len());
}

#[test]
fn a_component_that_imports_the_hosts_files_is_refused_at_upload() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let component =
        std::fs::read(gust_testkit::repo_root().join("tests/fixtures/wasi-http/files.wasm")).unwrap();
    let r = s.client().put(format!("{}/v1/functions/files", s.url)).json(&wasm_config(1000)).send().unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let r = s
        .client()
        .put(format!("{}/v1/functions/files/code", s.url))
        .header("content-type", "application/wasm")
        .body(component)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().unwrap();
    assert!(text.contains("filesystem"), "{text}");
}
