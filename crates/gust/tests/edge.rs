//! The edge, attacked from outside: web pages (foreign Origin, CORS-simple content types, DNS
//! rebinding), slow and half-open clients, and unauthenticated requests carrying huge bodies.
//! Raw TCP where the attack needs bytes a polite client would not send.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{error_code, Server, GUST};
use gust_testkit::fixture;
use serde_json::{json, Value};

/// A response as read off the wire.
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The native API's `error.code`.
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body`, and reads one
/// response within `timeout`.
fn raw(addr: &str, head: &str, body: &[u8], timeout: Duration) -> Raw {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(timeout)).unwrap();
    let mut req = head.replace('\n', "\r\n");
    if !req.ends_with("\r\n") {
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).unwrap();
    tcp.write_all(body).unwrap();
    read_response(&mut tcp)
}

fn read_response(tcp: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return Raw { status, body: buf[end + 4..end + 4 + len].to_vec(), head };
            }
        }
        match tcp.read(&mut chunk) {
            Ok(0) => panic!("connection closed before a full response: {:?}", String::from_utf8_lossy(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no response in time ({e}); got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

/// A GET with the given Host (and more header lines).
fn get_as(s: &Server, path: &str, host: &str, more: &str) -> Raw {
    let head = format!("GET {path} HTTP/1.1\nHost: {host}\nConnection: close\n{more}");
    raw(s.addr(), head.trim_end(), b"", Duration::from_secs(10))
}

/// A POST of `body` with the given extra header lines (Host is the server's own).
fn post_as(s: &Server, path: &str, more: &str, body: &[u8]) -> Raw {
    let head = format!(
        "POST {path} HTTP/1.1\nHost: {}\nConnection: close\nContent-Length: {}\n{more}",
        s.addr(),
        body.len()
    );
    raw(s.addr(), head.trim_end(), body, Duration::from_secs(30))
}

fn create_function_body(name: &str) -> Vec<u8> {
    let code = base64::engine::general_purpose::STANDARD.encode(fixture("echo"));
    serde_json::to_vec(&json!({
        "FunctionName": name,
        "Runtime": "wasm",
        "Role": "arn:aws:iam::000000000000:role/gust",
        "Code": { "ZipFile": code },
    }))
    .unwrap()
}

fn function_names(s: &Server) -> Vec<String> {
    let r = s.get("/v1/functions");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    v["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_web_page_can_neither_deploy_nor_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    // The attack: an HTML form or no-cors fetch from any site, posting text/plain JSON.
    let evil = "Origin: http://evil.example\nContent-Type: text/plain;charset=UTF-8";
    let r = post_as(&s, "/2015-03-31/functions", evil, &create_function_body("pwned"));
    assert_eq!(r.status, 403, "{}", r.head);
    assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));
    assert!(r.header("x-amzn-requestid").is_some());
    assert!(r.header("access-control-allow-origin").is_none());
    // Same without the Origin (a browser that strips it): the content type alone is refused.
    let r = post_as(&s, "/2015-03-31/functions", "Content-Type: text/plain", &create_function_body("pwned"));
    assert_eq!(r.status, 415, "{}", r.head);
    assert_eq!(r.header("x-amzn-errortype"), Some("UnsupportedMediaTypeException"));
    let native = json!({ "name": "pwned", "code_b64": "AA==" }).to_string();
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let r = post_as(&s, "/v1/functions", &format!("Content-Type: {ct}"), native.as_bytes());
        assert_eq!((r.status, r.code().as_str()), (415, "UnsupportedMediaType"), "{ct}");
    }
    // A foreign Origin is refused whatever the content type, on reads and on invoke too.
    let r = post_as(
        &s,
        "/v1/functions",
        "Origin: http://evil.example\nContent-Type: application/json",
        native.as_bytes(),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "ForbiddenOrigin"));
    let r = get_as(&s, "/v1/functions", s.addr(), "Origin: http://evil.example");
    assert_eq!((r.status, r.code().as_str()), (403, "ForbiddenOrigin"));
    let r = get_as(&s, "/v1/functions", s.addr(), "Origin: null");
    assert_eq!((r.status, r.code().as_str()), (403, "ForbiddenOrigin"));
    let r = get_as(&s, "/v1/functions", s.addr(), "Sec-Fetch-Site: cross-site");
    assert_eq!((r.status, r.code().as_str()), (403, "ForbiddenOrigin"));
    let r = post_as(
        &s,
        "/v1/functions/pwned/invoke",
        "Origin: http://evil.example\nContent-Type: text/plain",
        b"{}",
    );
    assert_eq!((r.status, r.code().as_str()), (403, "ForbiddenOrigin"));
    let r = post_as(&s, "/2015-03-31/functions/pwned/invocations", "Origin: http://evil.example", b"{}");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));
    assert!(function_names(&s).is_empty(), "nothing was created");

    // CLI-style requests (no Origin) and the server's own origin still work; invoke takes any
    // content type.
    let own = format!("Origin: http://{}\nContent-Type: application/json", s.addr());
    let r = post_as(&s, "/2015-03-31/functions", &own, &create_function_body("mine"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = post_as(&s, "/v1/functions/mine/invoke", "Content-Type: text/plain", b"{\"a\":1}");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(function_names(&s), ["mine"]);
}

#[test]
fn dns_rebinding_is_refused_but_health_answers_any_host() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let port = s.addr().rsplit_once(':').unwrap().1.to_string();
    // evil.example resolves to 127.0.0.1: the browser sends the attacker's name as Host.
    let r = get_as(&s, "/v1/functions", &format!("evil.example:{port}"), "");
    assert_eq!((r.status, r.code().as_str()), (403, "ForbiddenHost"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("--public-host"));
    let r = get_as(&s, "/2015-03-31/functions", &format!("evil.example:{port}"), "");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));
    for bad in
        ["127.0.0.1".to_string(), format!("localhost:{}", port.parse::<u16>().unwrap() ^ 1), String::new()]
    {
        assert_eq!(get_as(&s, "/v1/functions", &bad, "").status, 403, "Host {bad:?}");
    }
    for own in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
        assert_eq!(get_as(&s, "/v1/functions", &own, "").status, 200, "Host {own}");
    }
    // Load balancers probe with their own Host (and scrapers with any Origin).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = get_as(&s, path, "lb.internal", "Origin: http://elsewhere.example");
        assert_eq!(r.status, 200, "{path}");
    }
}

#[test]
fn the_operator_allows_origins_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--allow-origin",
            "http://console.example:3000",
            "--public-host",
            "gust.example",
            "--public-host",
            "proxy.example:9000",
        ],
    );
    let r = raw(
        s.addr(),
        "GET /v1/functions HTTP/1.1\nHost: gust.example\nOrigin: http://console.example:3000\nConnection: close",
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get_as(&s, "/v1/functions", "GUST.example:8443", "").status, 200);
    assert_eq!(get_as(&s, "/v1/functions", "proxy.example:9000", "").status, 200);
    assert_eq!(get_as(&s, "/v1/functions", "proxy.example:9001", "").code(), "ForbiddenHost");
    assert_eq!(
        get_as(&s, "/v1/functions", "gust.example", "Origin: http://console.example:3001").code(),
        "ForbiddenOrigin"
    );
    let body = json!({ "name": "fromconsole", "code_b64": base64::engine::general_purpose::STANDARD.encode(fixture("echo")), "config": { "runtime": "wasm" } });
    let r = post_as(
        &s,
        "/v1/functions",
        "Origin: http://console.example:3000\nContent-Type: application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // A malformed list refuses to start.
    let out = Command::new(GUST)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .args(["--allow-origin", "https://*.example.com"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-origin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_a_token_authentication_replaces_the_host_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", "T"]);
    let r = get_as(&s, "/v1/functions", "gust.internal:8080", "Authorization: Bearer T");
    assert_eq!(r.status, 200);
    assert_eq!(get_as(&s, "/v1/functions", "gust.internal:8080", "").status, 401);
    let r = get_as(
        &s,
        "/v1/functions",
        "gust.internal:8080",
        "Authorization: Bearer T\nOrigin: http://evil.example",
    );
    assert_eq!((r.status, r.code().as_str()), (403, "ForbiddenOrigin"));
    let r = s
        .client()
        .get(format!("{}/v1/functions", s.url))
        .bearer_auth("T")
        .header("origin", "http://x.example")
        .send()
        .unwrap();
    assert_eq!(error_code(r, 403), "ForbiddenOrigin");
}

/// `YYYYMMDDTHHMMSSZ` of now (SigV4's X-Amz-Date).
fn amz_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    gust_core::lambda::amz_date(secs)
}

/// Sends only the headers of a request that declares a 60 MB body and asserts its refusal
/// arrives within 2 s, without the body.
fn refused_before_body(s: &Server, head: &str, status: u16) -> Raw {
    let head =
        format!("{head}\nHost: {}\nContent-Length: 60000000\nContent-Type: application/json", s.addr());
    let t = Instant::now();
    let r = raw(s.addr(), &head, b"", Duration::from_secs(2));
    assert_eq!(r.status, status, "{head}\n{}", String::from_utf8_lossy(&r.body));
    assert!(t.elapsed() < Duration::from_secs(2), "{head}: answered after {:?}", t.elapsed());
    r
}

#[test]
fn unauthenticated_requests_are_refused_before_their_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", "T"]);
    let r = refused_before_body(&s, "POST /v1/functions HTTP/1.1", 401);
    assert_eq!(r.code(), "Unauthorized");
    refused_before_body(&s, "POST /v1/functions/f/invoke HTTP/1.1\nAuthorization: Bearer wrong", 401);

    let aws_error = |r: &Raw| r.header("x-amzn-errortype").unwrap_or_default().to_string();
    for path in
        ["/2015-03-31/functions", "/2015-03-31/functions/f/invocations", "/2015-03-31/functions/f/code"]
    {
        let method = if path.ends_with("/code") { "PUT" } else { "POST" };
        let r = refused_before_body(&s, &format!("{method} {path} HTTP/1.1"), 403);
        assert_eq!(aws_error(&r), "MissingAuthenticationTokenException", "{path}");
    }
    let date = amz_now();
    let day = &date[..8];
    let auth = |key: &str| {
        format!(
            "Authorization: AWS4-HMAC-SHA256 Credential={key}/{day}/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}\nX-Amz-Date: {date}",
            "0".repeat(64)
        )
    };
    let r =
        refused_before_body(&s, &format!("POST /2015-03-31/functions HTTP/1.1\n{}", auth("AKIDNOBODY")), 403);
    assert_eq!(aws_error(&r), "UnrecognizedClientException");
    // The well-known key id of --token, a declared payload hash, a wrong signature.
    let declared = format!("x-amz-content-sha256: {}", "ab".repeat(32));
    let r = refused_before_body(
        &s,
        &format!("POST /2015-03-31/functions HTTP/1.1\n{}\n{declared}", auth("gust")),
        403,
    );
    assert_eq!(aws_error(&r), "InvalidSignatureException");
    let r = refused_before_body(
        &s,
        &format!(
            "POST /2015-03-31/functions HTTP/1.1\n{}\nx-amz-content-sha256: UNSIGNED-PAYLOAD",
            auth("gust")
        ),
        403,
    );
    assert_eq!(aws_error(&r), "InvalidSignatureException");
    let stale = auth("gust").replace(&date, "20200101T000000Z").replace(day, "20200101");
    let r = refused_before_body(&s, &format!("POST /2015-03-31/functions HTTP/1.1\n{stale}"), 403);
    assert_eq!(aws_error(&r), "InvalidSignatureException");
    // A browser's foreign Origin is refused before the body as well.
    refused_before_body(
        &s,
        "POST /v1/functions HTTP/1.1\nAuthorization: Bearer T\nOrigin: http://evil.example",
        403,
    );
}

/// Attack (found by an attacker's review; failed before its fix): an AWS request that declares
/// no payload hash (botocore's way) is signed over its body, so the body is read before the
/// signature can be checked. Bodies held that way under the documented key id `gust` with a
/// wrong signature took the process's whole body budget, and every authenticated request with
/// a body (the admin's invoke too) got 503 `Busy`. Such reads now have a budget of their own.
/// And a function URL read up to the AWS API's 70 MB of such a body (its payload limit is 6 MB).
#[test]
fn bodies_read_before_their_signature_cannot_starve_authenticated_requests() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", "T"]);
    let c = s.client();
    let send = |method: reqwest::Method, path: &str, ct: &str, body: Vec<u8>| {
        let r = c
            .request(method, format!("{}{path}", s.url))
            .bearer_auth("T")
            .header("content-type", ct)
            .body(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().unwrap())
    };
    let (status, text) = send(reqwest::Method::PUT, "/v1/functions/echo", "application/json", b"{}".to_vec());
    assert!(status < 300, "{text}");
    let (status, text) =
        send(reqwest::Method::PUT, "/v1/functions/echo/code", "application/wasm", fixture("echo"));
    assert!(status < 300, "{text}");
    let (status, text) = send(
        reqwest::Method::POST,
        "/v1/functions/echo/url",
        "application/json",
        br#"{"auth_type":"AWS_IAM"}"#.to_vec(),
    );
    assert!(status < 300, "{text}");
    let url_id = serde_json::from_str::<Value>(&text).unwrap()["url_id"].as_str().unwrap().to_string();
    let date = amz_now();
    let day = &date[..8];
    let forged = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=gust/{day}/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature={}\nX-Amz-Date: {date}",
        "0".repeat(64)
    );
    // The URL refuses a forged request's 40 MB body as over its payload limit.
    let head = format!(
        "POST /url/{url_id}/ HTTP/1.1\nHost: {}\nConnection: close\nContent-Length: 40000000\n{forged}",
        s.addr()
    );
    let r = raw(s.addr(), &head, &vec![b'x'; 40_000_000], Duration::from_secs(60));
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));

    // Forged CreateFunction requests (declaring 20 MB) that each send part of their body and
    // stall, in waves of smaller parts until the bodies' budget is full: a read takes its share
    // in doubling steps, and one that finds no room is answered (and let go) after 2 s.
    let mut held: Vec<TcpStream> = Vec::new();
    for (part, n) in [(8_600_000, 40), (1_100_000, 40), (70_000, 100), (5_000, 100), (1_000, 20)] {
        let wave: Vec<_> = (0..n)
            .map(|_| {
                let (addr, forged) = (s.addr().to_string(), forged.clone());
                std::thread::spawn(move || {
                    let mut tcp = TcpStream::connect(&addr).unwrap();
                    tcp.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                    let head = format!(
                        "POST /2015-03-31/functions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n{}\r\n\r\n",
                        forged.replace('\n', "\r\n")
                    );
                    let _ = tcp.write_all(head.as_bytes()).and_then(|()| tcp.write_all(&vec![b'x'; part]));
                    tcp
                })
            })
            .collect();
        let wave: Vec<TcpStream> = wave.into_iter().map(|t| t.join().unwrap()).collect();
        std::thread::sleep(Duration::from_millis(2500));
        // Those answered already (no room for them) are let go.
        held.extend(wave.into_iter().filter(|tcp| {
            tcp.set_nonblocking(true).unwrap();
            matches!(tcp.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
        }));
    }
    assert!(held.len() >= 30, "only {} forged requests are held", held.len());
    std::thread::sleep(Duration::from_millis(500));
    // The admin's invoke with a body is served while those bodies are held.
    let t = Instant::now();
    let (status, text) =
        send(reqwest::Method::POST, "/v1/functions/echo/invoke", "application/json", br#"{"a":1}"#.to_vec());
    assert_eq!(status, 200, "after {:?}: {text}", t.elapsed());
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({ "a": 1 }));
    drop(held);
}

/// Opens `n` connections that each send the start of a request and stall.
fn half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            tcp.write_all(b"POST /v1/functions HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
            tcp
        })
        .collect()
}

/// Whether the server has closed `tcp` (EOF or reset), waiting up to `wait`.
fn closed_by_server(tcp: &mut TcpStream, wait: Duration) -> bool {
    tcp.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

fn healthz_within(s: &Server, limit: Duration) -> Duration {
    let t = Instant::now();
    let r = get_as(s, "/healthz", s.addr(), "");
    assert_eq!(r.status, 200);
    let took = t.elapsed();
    assert!(took < limit, "/healthz took {took:?}");
    took
}

#[test]
fn half_open_connections_do_not_starve_the_server_and_are_closed() {
    gust_api::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--header-read-timeout-ms", "4000"]);
    let opened = Instant::now();
    let mut stalled = half_open(s.addr(), 1000);
    healthz_within(&s, Duration::from_secs(3));
    // They were all still held while /healthz answered (unless opening them took that long).
    if opened.elapsed() < Duration::from_secs(3) {
        let last = stalled.last_mut().unwrap();
        assert!(!closed_by_server(last, Duration::from_millis(10)), "closed before the header-read timeout");
    }
    // Then the server closes each of them at its header-read timeout.
    let deadline = opened + Duration::from_secs(4 + 15);
    for (i, tcp) in stalled.iter_mut().enumerate() {
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        assert!(
            closed_by_server(tcp, wait),
            "half-open connection {i} still open {:?} after opening",
            opened.elapsed()
        );
    }
    healthz_within(&s, Duration::from_secs(3));
}

#[test]
fn running_out_of_file_descriptors_does_not_stop_the_server() {
    gust_api::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--header-read-timeout-ms", "2000"]);
    // Serving (so its connection cap is set from the start's limit), and only then...
    healthz_within(&s, Duration::from_secs(5));
    // ...the attacker's setting: 256 file descriptors, 300 stalled connections (opened well
    // within the header-read timeout, so they are all held at once).
    let prlimit = Command::new("prlimit").args(["--nofile=256:256", "--pid", &s.pid().to_string()]).status();
    match prlimit {
        Ok(st) => assert!(st.success(), "prlimit failed"),
        Err(e) => panic!("this test needs util-linux's prlimit: {e}"),
    }
    let mut stalled = half_open(s.addr(), 300);
    // Accept fails with EMFILE until stalled connections time out; the server backs off,
    // keeps accepting, and answers.
    healthz_within(&s, Duration::from_secs(15));
    for tcp in stalled.iter_mut().take(50) {
        assert!(closed_by_server(tcp, Duration::from_secs(15)));
    }
    drop(stalled);
    healthz_within(&s, Duration::from_secs(5));
    let metrics = get_as(&s, "/metrics", s.addr(), "");
    let accept_errors =
        gust_testkit::metric(&String::from_utf8_lossy(&metrics.body), "gust_http_accept_errors_total");
    // EMFILE did happen (so the test tested something), and the loop backed off rather than
    // spinning: about one failed accept per 50 ms while it lasted, not millions.
    assert!(accept_errors.is_some_and(|n| (1..10_000).contains(&n)), "{accept_errors:?}");
}

#[test]
fn connections_past_the_cap_wait_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-connections", "50", "--header-read-timeout-ms", "1500"]);
    let opened = Instant::now();
    let mut stalled = half_open(s.addr(), 100);
    // Queued behind two waves of stalled connections, each cut off at the header-read timeout.
    let took = healthz_within(&s, Duration::from_secs(15));
    assert!(opened.elapsed() >= Duration::from_millis(1400), "answered past a full cap after {took:?}");
    for tcp in &mut stalled {
        assert!(closed_by_server(tcp, Duration::from_secs(15)));
    }
    let metrics = get_as(&s, "/metrics", s.addr(), "");
    let waits =
        gust_testkit::metric(&String::from_utf8_lossy(&metrics.body), "gust_http_connection_cap_waits_total");
    assert!(waits.is_some_and(|n| n > 0), "{waits:?}");
}

/// The native invoke's happy path is taken before the router (`gateway.rs`): it may accept
/// only what the router's guard, authentication and access rule accept, and everything else
/// must be answered as the router answers it. Each request here is one a shortcut that skipped
/// a check, or read the path its own way, would get wrong.
#[test]
fn the_invoke_shortcut_refuses_what_the_router_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let token = "shortcut-admin-token";
    let s = Server::start(dir.path(), &["--token", token, "--url-domain", "fn.example.test"]);
    let client = reqwest::blocking::Client::new();
    let deploy = |name: &str| {
        let r = client
            .put(format!("{}/v1/functions/{name}", s.url))
            .bearer_auth(token)
            .json(&common::wasm_config(10_000))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
        let r = client
            .put(format!("{}/v1/functions/{name}/code", s.url))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(fixture("echo"))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    };
    deploy("mine");
    deploy("theirs");
    let key = |role: &str, functions: Value| -> String {
        let r = client
            .post(format!("{}/v1/tokens", s.url))
            .bearer_auth(token)
            .json(&json!({ "name": format!("{role}-key"), "role": role, "functions": functions }))
            .send()
            .unwrap();
        assert!(r.status().is_success());
        r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string()
    };
    let scoped = key("invoker", json!("mine"));
    let reader = key("reader", Value::Null);
    let invoke = |path: &str, bearer: Option<&str>, headers: &[(&str, &str)]| {
        let mut rb = client.post(format!("{}{path}", s.url)).body(r#"{"a":1}"#);
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().unwrap();
        let status = r.status().as_u16();
        (status, r.text().unwrap())
    };

    // What it takes: the admin, and a key on its own function.
    assert_eq!(invoke("/v1/functions/mine/invoke", Some(token), &[]), (200, r#"{"a":1}"#.into()));
    assert_eq!(invoke("/v1/functions/mine/invoke", Some(&scoped), &[]).0, 200);
    // What it must not: no token, a wrong one, a key on another function, a reader.
    let refused = [
        (None, "mine", 401),
        (Some("gust_nope_nope"), "mine", 401),
        (Some("shortcut-admin-tokex"), "mine", 401),
        (Some(scoped.as_str()), "theirs", 403),
        (Some(reader.as_str()), "mine", 403),
    ];
    for (bearer, function, status) in refused {
        let (got, body) = invoke(&format!("/v1/functions/{function}/invoke"), bearer, &[]);
        assert_eq!(got, status, "{bearer:?} invoking {function}: {body}");
        assert!(!body.contains(r#""a":1"#), "it ran: {body}");
    }
    // A foreign page, even with the admin's token (a browser sending a stolen cookie would).
    let (got, body) = invoke("/v1/functions/mine/invoke", Some(token), &[("origin", "http://evil.example")]);
    assert_eq!(got, 403, "{body}");
    // A URL's host is the URL's whole request, even on the invoke path: never the API's.
    let (got, body) = invoke(
        "/v1/functions/mine/invoke",
        Some(token),
        &[("host", "0123456789abcdef0123456789abcdef.fn.example.test")],
    );
    assert_eq!(got, 404, "{body}");
    // Paths and queries the router reads its own way: decoded names, qualifiers, unknown fields.
    assert_eq!(invoke("/v1/functions/%6Dine/invoke", Some(&scoped), &[]).0, 200);
    assert_eq!(invoke("/v1/functions/%74heirs/invoke", Some(&scoped), &[]).0, 403);
    assert_eq!(invoke("/v1/functions/mine/invoke?qualifier=%24LATEST", Some(&scoped), &[]).0, 200);
    assert_eq!(invoke("/v1/functions/mine/invoke?bogus=1", Some(token), &[]).0, 400);
    assert_eq!(invoke("/v1/functions/mine/invoke/", Some(token), &[]).0, 404);
    assert_eq!(invoke("/v1/functions/no-such/invoke", Some(token), &[]).0, 404);
}
