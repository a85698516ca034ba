//! The web console (`/console/`), black-box: how it is served (every file of
//! `crates/api/src/console/` with its content type and the security headers, the redirect,
//! 404s, nothing referenced outside the server, reachable with and without `--token` while
//! the API stays closed to other sites), then its journeys in a real browser: the pytest +
//! Selenium suite `tests/browser` driving headless Chromium against two real servers, when
//! `GUST_TEST_BROWSER` is set (`./scripts/test` installs Chromium and Selenium and sets it).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use gust_testkit::{fixture, python, repo_root};
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;

const TOKEN: &str = "gust-console-test-token";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Every file of the console's source folder: (name, bytes).
fn console_files() -> Vec<(String, Vec<u8>)> {
    let dir = repo_root().join("crates/api/src/console");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
}

fn type_of(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        other => panic!("{name}: a console file of an unexpected kind ({other:?})"),
    }
}

/// A client that does not follow redirects (to see them).
fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn assert_secured(headers: &HeaderMap, what: &str) {
    let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!(h("content-security-policy"), CSP, "{what}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(h("cache-control"), "no-cache", "{what}");
}

#[test]
fn every_console_file_is_served_with_its_type_and_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", TOKEN]);
    let c = client();
    for (name, bytes) in console_files() {
        // No Authorization: the files are public; what they call is not.
        let r = c.get(format!("{}/console/{name}", s.url)).send().unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(r.headers()["content-type"], type_of(&name), "{name}");
        assert_secured(r.headers(), &name);
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(r.bytes().unwrap().as_ref(), bytes.as_slice(), "{name}: served as embedded");
        // Unchanged: revalidation answers 304 without the body.
        let again = c.get(format!("{}/console/{name}", s.url)).header("if-none-match", &etag).send().unwrap();
        assert_eq!(again.status(), 304, "{name}");
        assert_secured(again.headers(), &format!("{name} (304)"));
    }
    let index = c.get(format!("{}/console/", s.url)).send().unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    assert_secured(index.headers(), "/console/");
    assert_eq!(
        index.bytes().unwrap().as_ref(),
        std::fs::read(repo_root().join("crates/api/src/console/index.html")).unwrap()
    );
    let head = c.head(format!("{}/console/app.js", s.url)).send().unwrap();
    assert_eq!(head.status(), 200);
    // The API itself still wants the token.
    assert_eq!(c.get(format!("{}/v1/functions", s.url)).send().unwrap().status(), 401);
}

#[test]
fn console_redirects_to_its_folder_and_serves_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let r = c.get(format!("{}/console", s.url)).send().unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/console/");
    assert_secured(r.headers(), "the redirect");
    for path in [
        "/console/nope.js",
        "/console/app.js/more",
        "/console/..%2fCargo.toml",
        "/console/%2e%2e%2f%2e%2e%2fCargo.toml",
        "/console/console.rs",
        "/console/.hidden",
        "/console/index.html%00.js",
        "/console/APP.JS",
    ] {
        let r = c.get(format!("{}{path}", s.url)).send().unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().unwrap();
        assert!(!body.contains("<html") && !body.contains("import "), "{path}: {body}");
    }
    let r = c.get(format!("{}/console/nope.js", s.url)).send().unwrap();
    assert_secured(r.headers(), "a 404");
    // Writes are not a thing here.
    assert_eq!(c.post(format!("{}/console/", s.url)).body("x").send().unwrap().status(), 405);
}

#[test]
fn the_console_references_nothing_outside_the_server_and_runs_no_inline_code() {
    // The one absolute URL allowed is the SVG namespace, an identifier that is never fetched.
    const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";
    for (name, bytes) in console_files() {
        let text = String::from_utf8(bytes).unwrap_or_else(|_| panic!("{name} is not UTF-8"));
        let scrubbed = text.replace(SVG_NAMESPACE, "");
        let lower = scrubbed.to_ascii_lowercase();
        for external in [
            "http://",
            "https://",
            "ws://",
            "wss://",
            "ftp://",
            "//cdn",
            "@import",
            "url(",
            "src=\"//",
            "href=\"//",
        ] {
            assert!(
                !lower.contains(external),
                "{name} references {external:?}: nothing may be fetched from elsewhere"
            );
        }
        if name.ends_with(".html") {
            // Every script is a file of ours; no inline script, style or handler (the CSP
            // would block them anyway: this keeps the page working under it).
            for tag in
                lower.match_indices("<script").map(|(i, _)| &lower[i..lower[i..].find('>').unwrap() + i])
            {
                assert!(tag.contains(" src=\""), "{name}: inline script {tag}");
            }
            assert!(!lower.contains("<style"), "{name}: inline <style>");
            assert!(!lower.contains(" style="), "{name}: a style attribute");
            assert!(!lower.contains(" onclick=") && !lower.contains(" onload="), "{name}: an inline handler");
        }
        if name.ends_with(".js") {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setAttribute(\"style\"",
            ] {
                assert!(!scrubbed.contains(sink), "{name} uses {sink}: pages are built with DOM calls only");
            }
            assert!(
                !scrubbed.contains("localStorage"),
                "{name}: the token is kept per tab (sessionStorage) only"
            );
            assert!(!scrubbed.contains("console.log"), "{name}: nothing is logged (the token must never be)");
        }
    }
}

/// A request as a browser sends it, on a raw connection (so Host and Origin are exactly ours).
fn browser_get(addr: &str, path: &str, host: &str, extra: &str) -> u16 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra = if extra.is_empty() { String::new() } else { format!("{}\r\n", extra.replace('\n', "\r\n")) };
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {answer:?}"))
}

#[test]
fn a_browser_on_loopback_reaches_the_console_with_and_without_a_token_and_other_sites_do_not_reach_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let open = Server::start(&dir.path().join("open"), &[]);
    let closed = Server::start(&dir.path().join("closed"), &["--token", TOKEN]);
    for s in [&open, &closed] {
        let addr = s.addr();
        let port = addr.rsplit(':').next().unwrap();
        // Typed into the address bar (Sec-Fetch-Site: none), by the address or by localhost.
        for host in [addr.to_string(), format!("localhost:{port}")] {
            assert_eq!(
                browser_get(addr, "/console/", &host, "Sec-Fetch-Site: none\nSec-Fetch-Mode: navigate"),
                200
            );
        }
        // The app's own module and API requests: same origin.
        let same = format!("Origin: http://{addr}\nSec-Fetch-Site: same-origin");
        assert_eq!(browser_get(addr, "/console/app.js", addr, &same), 200);
        // A link from another site opens the console (its files hold no data)...
        let linked = "Sec-Fetch-Site: cross-site\nSec-Fetch-Mode: navigate";
        assert_eq!(browser_get(addr, "/console/", addr, linked), 200);
        // ...but a page of another site still cannot read the API.
        assert_eq!(browser_get(addr, "/v1/functions", addr, "Origin: http://evil.example"), 403);
        assert_eq!(browser_get(addr, "/v1/functions", addr, "Sec-Fetch-Site: cross-site"), 403);
    }
    // Without a token, a rebound name (evil.example resolving to 127.0.0.1) gets neither.
    let port = open.addr().rsplit(':').next().unwrap();
    assert_eq!(browser_get(open.addr(), "/console/", &format!("evil.example:{port}"), ""), 403);
    assert_eq!(browser_get(open.addr(), "/v1/functions", &format!("evil.example:{port}"), ""), 403);
    // With a token, the API answers the console only with it.
    let c = client();
    let r = c.get(format!("{}/v1/functions?limit=1", closed.url)).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(r.status(), 200);
}

/// The compiled guests the browser suite deploys, written to `dir`.
fn write_guests(dir: &std::path::Path) {
    std::fs::write(dir.join("echo.wasm"), fixture("echo")).unwrap();
    std::fs::write(dir.join("fail.wasm"), fixture("fail")).unwrap();
    let markup = repo_root().join("tests/browser/markup.wat");
    std::fs::write(dir.join("markup.wasm"), wat::parse_file(&markup).unwrap()).unwrap();
}

#[test]
fn the_console_s_journeys_in_a_headless_browser() {
    if std::env::var_os("GUST_TEST_BROWSER").is_none() {
        eprintln!(
            "skipped: GUST_TEST_BROWSER is not set, so the browser suite (tests/browser: headless Chromium \
             through Selenium) did not run; ./scripts/test installs chromium, chromium-driver and selenium \
             and sets it"
        );
        return;
    }
    let chromium = std::env::var("GUST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = std::env::var("GUST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    for exe in [&chromium, &driver] {
        assert!(PathBuf::from(exe).is_file(), "{exe} is missing: apt-get install chromium chromium-driver");
    }
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let guests = dir.path().join("guests");
    std::fs::create_dir(&guests).unwrap();
    write_guests(&guests);
    let closed = Server::start(&dir.path().join("closed"), &["--token", TOKEN]);
    let open = Server::start(&dir.path().join("open"), &[]);

    let started = Instant::now();
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pytest", "tests/browser", "-q", "-p", "no:cacheprovider", "-rs"])
        .current_dir(repo_root())
        .env("GUST_CONSOLE_URL", &closed.url)
        .env("GUST_CONSOLE_TOKEN", TOKEN)
        .env("GUST_CONSOLE_OPEN_URL", &open.url)
        .env("GUST_CONSOLE_WASM", &guests)
        .env("GUST_CHROMIUM", &chromium)
        .env("GUST_CHROMEDRIVER", &driver)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HOME", dir.path());
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser suite (tests/browser) failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("browser suite: {:.1}s\n{stdout}", started.elapsed().as_secs_f64());
}
