//! Function URLs on the real binary: Lambda's HTTP event and response mapping, path- and
//! host-based addressing, auth types, CORS at the edge, aliases, and the attacks a URL invites
//! (a page a function serves calling the API as its operator; a function's answer smuggling
//! headers). A Starlette app on its Mangum adapter, unmodified, runs behind a URL.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::{create_url, error_code, json_of, url_client, wasm_config, Server};
use gust_testkit::{fixture, python, zip};
use serde_json::{json, Value};

#[test]
fn a_url_runs_its_function_with_lambdas_http_event_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(10_000), fixture("echo"));
    let url = create_url(&s.url, "echo", json!({ "auth_type": "NONE" }), None);
    let id = url["url_id"].as_str().unwrap().to_string();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
    let shown = url["function_url"].as_str().unwrap();
    assert_eq!(shown, format!("{}/url/{id}/", s.url));

    let r = url_client()
        .post(format!("{shown}a/b%20c?x=1&x=2&name=J%C3%BCrgen"))
        .header("content-type", "application/json")
        .header("x-many", "one")
        .header("cookie", "a=1; b=2")
        .body(r#"{"hello":"world"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-amzn-requestid"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["x-amz-executed-version"], "$LATEST");
    assert_eq!(r.headers()["content-type"], "application/json", "an echoed event is not a structured answer");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.starts_with("sandbox") && !csp.contains("allow-same-origin"), "{csp}");
    let event = json_of(r);
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["rawPath"], "/a/b%20c");
    assert_eq!(event["rawQueryString"], "x=1&x=2&name=J%C3%BCrgen");
    assert_eq!(event["queryStringParameters"], json!({ "x": "1,2", "name": "Jürgen" }));
    assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(event["headers"]["x-many"], "one");
    assert_eq!(event["body"], r#"{"hello":"world"}"#);
    assert_eq!(event["isBase64Encoded"], false);
    let ctx = &event["requestContext"];
    assert_eq!(
        (ctx["http"]["method"].as_str(), ctx["http"]["sourceIp"].as_str()),
        (Some("POST"), Some("127.0.0.1"))
    );
    assert_eq!((ctx["apiId"].as_str(), ctx["stage"].as_str()), (Some(id.as_str()), Some("$default")));

    // A binary body arrives base64, byte for byte.
    let png = vec![0x89, b'P', b'N', b'G', 0, 0xff, 0xfe];
    let r = url_client().put(shown).header("content-type", "image/png").body(png.clone()).send().unwrap();
    let event = json_of(r);
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(event["body"].as_str().unwrap()).unwrap(),
        png
    );

    // The invocation is an invocation like any other: recorded, with its id.
    let record =
        s.wait_record(&request_id, std::time::Duration::from_secs(10), |r| r["state"] == "SUCCEEDED");
    assert_eq!(record["function"], "echo");

    // An unknown id, a malformed one, and a deleted URL are all 404.
    for path in [format!("/url/{}/", "z".repeat(32)), "/url/NOT-AN-ID/".to_string()] {
        assert_eq!(url_client().get(format!("{}{path}", s.url)).send().unwrap().status(), 404, "{path}");
    }
    assert_eq!(url_client().delete(format!("{}/v1/functions/echo/url", s.url)).send().unwrap().status(), 204);
    assert_eq!(url_client().get(shown).send().unwrap().status(), 404);
}

/// A Python handler that answers what its event asks for (Lambda's structured response).
const RESPONDER: &[u8] = br#"
import base64, json

def handler(event, context):
    q = event.get("queryStringParameters") or {}
    mode = q.get("mode", "")
    if mode == "fail":
        raise RuntimeError("boom")
    if mode == "binary":
        return {"statusCode": 200, "headers": {"content-type": "image/png"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if mode == "smuggle":
        return {"statusCode": 200, "headers": {"x-a": "1\r\nset-cookie: stolen=1"}, "body": "no"}
    if mode == "plain":
        return {"message": "not structured"}
    return {"statusCode": int(q.get("status", "201")),
            "headers": {"x-fn": "yes", "access-control-allow-origin": "*", "content-length": "99999"},
            "multiValueHeaders": {"x-multi": ["p", "q"]},
            "cookies": ["s=1; Path=/; HttpOnly", "t=2"],
            "body": json.dumps({"path": event["rawPath"], "method": event["requestContext"]["http"]["method"]})}
"#;

fn python_server(dir: &Path, extra: &[&str]) -> Server {
    let python = python();
    Server::start(dir, &[&["--python", python.as_str()][..], extra].concat())
}

fn python_config(handler: &str) -> Value {
    json!({ "runtime": "python3.11", "handler": handler, "timeout_ms": 20_000, "memory_mb": 256 })
}

fn deploy_python(s: &Server, name: &str, files: &[(&str, &[u8], u32)], handler: &str) {
    s.deploy_zip(name, python_config(handler), zip(files));
}

#[test]
fn structured_answers_errors_and_throttles_map_as_lambda_maps_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = python_server(dir.path(), &[]);
    deploy_python(&s, "web", &[("app.py", RESPONDER, 0o644)], "app.handler");
    let url = create_url(&s.url, "web", json!({ "auth_type": "NONE" }), None);
    let base = url["function_url"].as_str().unwrap().to_string();

    let r = url_client().get(format!("{base}hello?status=201")).send().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-fn"], "yes");
    assert_eq!(r.headers().get_all("x-multi").iter().collect::<Vec<_>>(), ["p", "q"]);
    let own = format!("/url/{}/", url["url_id"].as_str().unwrap());
    assert_eq!(
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>(),
        [format!("s=1; HttpOnly; Path={own}"), format!("t=2; Path={own}")]
    );
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "*",
        "without a CORS config the function's own pass"
    );
    assert_eq!(json_of(r), json!({ "path": "/hello", "method": "GET" }));

    let r = url_client().get(format!("{base}?mode=binary")).send().unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, "image/png"));
    assert_eq!(r.bytes().unwrap().to_vec(), (0..=255u8).collect::<Vec<_>>());

    let r = url_client().get(format!("{base}?mode=plain")).send().unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()),
        (200, "application/json")
    );
    assert_eq!(json_of(r), json!({ "message": "not structured" }));

    for status in ["404", "503"] {
        assert_eq!(
            url_client().get(format!("{base}?status={status}")).send().unwrap().status().as_str(),
            status
        );
    }
    let r = url_client().get(format!("{base}?mode=fail")).send().unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-amz-function-error"], "Unhandled");
    assert_eq!(json_of(r), json!({ "Message": "Internal Server Error" }));

    // A header value that would split the response is the function's fault: 502, nothing smuggled.
    let r = url_client().get(format!("{base}?mode=smuggle")).send().unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("set-cookie").is_none());

    // Over 6 MB of body is refused before the function runs.
    let r = url_client().post(&base).body(vec![b'a'; 6 * 1024 * 1024 + 1]).send().unwrap();
    assert_eq!(r.status(), 413);

    // Reserved concurrency 0 throttles every call: 429, as Lambda.
    let r = s
        .client()
        .put(format!("{}/2017-10-31/functions/web/concurrency", s.url))
        .json(&json!({ "ReservedConcurrentExecutions": 0 }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = url_client().get(&base).send().unwrap();
    assert_eq!(r.status(), 429);
}

#[test]
fn cors_is_answered_at_the_edge_and_replaces_the_functions_own() {
    let dir = tempfile::tempdir().unwrap();
    let s = python_server(dir.path(), &[]);
    deploy_python(&s, "web", &[("app.py", RESPONDER, 0o644)], "app.handler");
    let cors = json!({
        "allow_origins": ["https://app.example.com"],
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["content-type", "x-api-key"],
        "expose_headers": ["x-fn"],
        "max_age": 600,
        "allow_credentials": true,
    });
    let url = create_url(&s.url, "web", json!({ "auth_type": "NONE", "cors": cors }), None);
    let base = url["function_url"].as_str().unwrap().to_string();
    let preflight = |origin: &str, method: &str, headers: &str| {
        url_client()
            .request(reqwest::Method::OPTIONS, format!("{base}items"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
            .unwrap()
    };
    let r = preflight("https://app.example.com", "POST", "content-type");
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "content-type,x-api-key");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h.get("x-amz-executed-version").is_none(), "answered at the edge: the function did not run");
    for (origin, method, headers) in [
        ("https://evil.example.com", "POST", "content-type"),
        ("https://app.example.com", "DELETE", ""),
        ("https://app.example.com", "POST", "x-secret"),
    ] {
        let r = preflight(origin, method, headers);
        assert!(r.headers().get("access-control-allow-origin").is_none(), "{origin} {method} {headers}");
    }
    let r = url_client().get(&base).header("origin", "https://app.example.com").send().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com",
        "the function's * is replaced"
    );
    assert_eq!(r.headers()["access-control-expose-headers"], "x-fn");
    let r = url_client().get(&base).header("origin", "https://evil.example.com").send().unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "no allowance for another origin");
}

#[test]
fn aws_iam_urls_admit_only_callers_allowed_to_invoke() {
    let dir = tempfile::tempdir().unwrap();
    let token = "url-admin-token";
    let s = Server::start(dir.path(), &["--token", token]);
    let admin = |rb: reqwest::blocking::RequestBuilder| rb.bearer_auth(token).send().unwrap();
    for name in ["private", "public"] {
        let r = admin(s.client().put(format!("{}/v1/functions/{name}", s.url)).json(&wasm_config(10_000)));
        assert_eq!(r.status(), 200);
        let code = s
            .client()
            .put(format!("{}/v1/functions/{name}/code", s.url))
            .header("content-type", "application/wasm");
        assert_eq!(admin(code.body(fixture("echo"))).status(), 200);
    }
    let private = create_url(&s.url, "private", json!({ "auth_type": "AWS_IAM" }), Some(token));
    let public = create_url(&s.url, "public", json!({ "auth_type": "NONE" }), Some(token));
    let key = |role: &str, functions: &str| -> String {
        let r = admin(s.client().post(format!("{}/v1/tokens", s.url)).json(&json!({
            "name": format!("{role}-{}", functions.replace('*', "all")), "role": role, "functions": functions,
        })));
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
        r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string()
    };
    let invoker = key("invoker", "priv*");
    let reader = key("reader", "*");
    let other = key("invoker", "public");
    let at = private["function_url"].as_str().unwrap();
    let call = |bearer: Option<&str>| {
        let mut rb = url_client().post(at).body("{}");
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        rb.send().unwrap()
    };
    assert_eq!(call(None).status(), 403);
    assert_eq!(call(Some("gust_nope_nope")).status(), 403);
    assert_eq!(call(Some(&reader)).status(), 403, "reading is not invoking");
    assert_eq!(call(Some(&other)).status(), 403, "a key for another function");
    let r = call(Some(&invoker));
    assert_eq!(r.status(), 200);
    let event = json_of(r);
    assert!(event["requestContext"]["authorizer"]["iam"]["callerId"].is_string(), "{event}");
    assert_eq!(call(Some(token)).status(), 200);
    // A NONE URL needs nothing, on a server whose APIs need a token.
    let r = url_client().post(public["function_url"].as_str().unwrap()).body("{}").send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r)["requestContext"]["accountId"], "anonymous");
    // The URL config itself is the API's: a token is needed to read it.
    assert_eq!(url_client().get(format!("{}/v1/functions/private/url", s.url)).send().unwrap().status(), 401);
}

#[test]
fn a_page_a_function_serves_cannot_call_the_api_as_its_operator() {
    // The attack: a tenant's function answers HTML at a path-based URL, which shares the API's
    // origin; the operator opens it; its script calls the (token-less, loopback) API to deploy.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(10_000), fixture("echo"));
    let url = create_url(&s.url, "echo", json!({ "auth_type": "NONE" }), None);
    let r = url_client().get(url["function_url"].as_str().unwrap()).send().unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.split_whitespace().next() == Some("sandbox") && !csp.contains("allow-same-origin"), "{csp}");
    // Sandboxed, the page's origin is opaque: its requests say `Origin: null`, which the
    // browser guard refuses before anything runs.
    let r = url_client()
        .put(format!("{}/v1/functions/evil", s.url))
        .header("origin", "null")
        .header("content-type", "application/json")
        .body(r#"{"runtime":"wasm"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().unwrap());
    assert_eq!(s.get("/v1/functions/evil").status(), 404);
    // A URL never belongs to a numbered version, and a second URL for one target is refused.
    s.publish("echo");
    let r = url_client()
        .post(format!("{}/v1/functions/echo/url?qualifier=1", s.url))
        .json(&json!({ "auth_type": "NONE" }))
        .send()
        .unwrap();
    assert_eq!(error_code(r, 400), "InvalidRequest");
    let r = url_client()
        .post(format!("{}/v1/functions/echo/url", s.url))
        .json(&json!({ "auth_type": "NONE" }))
        .send()
        .unwrap();
    assert_eq!(error_code(r, 409), "Conflict");
    let r = url_client()
        .post(format!("{}/v1/functions/echo/url?qualifier=live", s.url))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(error_code(r, 400), "InvalidRequest", "auth_type must be chosen");
}

#[test]
fn urls_follow_their_alias_and_go_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(10_000), fixture("echo"));
    let v = s.publish("echo");
    let r = s.put_json("/v1/functions/echo/aliases/live", &json!({ "version": v }));
    assert_eq!(r.status(), 200);
    let url = create_url(&s.url, "echo?qualifier=live", json!({ "auth_type": "NONE" }), None);
    assert_eq!(url["qualifier"], "live");
    let at = url["function_url"].as_str().unwrap().to_string();
    let r = url_client().get(&at).send().unwrap();
    assert_eq!(r.headers()["x-amz-executed-version"], v.to_string().as_str());
    let listed: Value = s.get("/v1/functions/echo/urls").json().unwrap();
    assert_eq!(listed["urls"].as_array().unwrap().len(), 1);
    let r = url_client()
        .patch(format!("{}/v1/functions/echo/url?qualifier=live", s.url))
        .json(&json!({ "cors": { "allow_origins": ["*"] } }))
        .send()
        .unwrap();
    let updated = json_of(r);
    assert_eq!(
        (updated["url_id"].clone(), updated["auth_type"].clone()),
        (url["url_id"].clone(), json!("NONE"))
    );
    assert_eq!(updated["cors"]["allow_origins"], json!(["*"]));
    assert_eq!(s.delete("/v1/functions/echo/aliases/live").status(), 204);
    assert_eq!(url_client().get(&at).send().unwrap().status(), 404, "the alias's URL went with it");
}

#[test]
fn urls_are_served_by_host_on_the_url_listener_and_under_the_url_domain() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--url-listen", "127.0.0.1:0"]);
    s.deploy("echo", wasm_config(10_000), fixture("echo"));
    let url = create_url(&s.url, "echo", json!({ "auth_type": "NONE" }), None);
    let id = url["url_id"].as_str().unwrap().to_string();
    let shown = url["function_url"].as_str().unwrap().to_string();
    let port = shown.rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    assert_eq!(shown, format!("http://{id}.localhost:{port}/"));
    // *.localhost is loopback to browsers; here the Host header says the same.
    let on_listener = |path: &str, host: &str| {
        url_client().get(format!("http://127.0.0.1:{port}{path}")).header("host", host).send().unwrap()
    };
    let r = on_listener("/v1/functions", &format!("{id}.localhost:{port}"));
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-security-policy").is_none(), "an origin of its own needs no sandbox");
    let event = json_of(r);
    assert_eq!(event["rawPath"], "/v1/functions", "the whole path is the function's: no API here");
    assert_eq!(on_listener("/", &format!("localhost:{port}")).status(), 404);

    // --url-domain: `<id>.DOMAIN` on the main listener is the URL's too.
    drop(s);
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--url-domain", "fn.example.test"]);
    s.deploy("echo", wasm_config(10_000), fixture("echo"));
    let url = create_url(&s.url, "echo", json!({ "auth_type": "NONE" }), None);
    let id = url["url_id"].as_str().unwrap().to_string();
    assert_eq!(url["function_url"], format!("http://{id}.fn.example.test/"));
    let r = url_client()
        .get(format!("{}/healthz?x=1", s.url))
        .header("host", format!("{id}.FN.example.test:8443"))
        .send()
        .unwrap();
    let event = json_of(r);
    assert_eq!(
        (event["rawPath"].as_str(), event["requestContext"]["domainName"].as_str()),
        (Some("/healthz"), Some(&*format!("{id}.FN.example.test")))
    );
    assert_eq!(s.get("/healthz").text().unwrap(), "ok", "the API's own names still reach the API");
}

/// A real web framework on its Lambda adapter, unmodified: Starlette on Mangum.
const STARLETTE_APP: &[u8] = br#"
from mangum import Mangum
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

async def hello(request):
    return JSONResponse({"hello": request.path_params["name"], "q": dict(request.query_params),
                         "agent": request.headers.get("user-agent"), "cookie": request.cookies.get("session")})

async def upload(request):
    body = await request.body()
    return Response(body[::-1], media_type="application/octet-stream", headers={"x-size": str(len(body))})

async def login(request):
    resp = PlainTextResponse("welcome", status_code=201)
    resp.set_cookie("session", "abc123", httponly=True)
    resp.set_cookie("theme", "dark")
    return resp

async def teapot(request):
    return PlainTextResponse("short and stout", status_code=418)

app = Starlette(routes=[
    Route("/hello/{name}", hello),
    Route("/upload", upload, methods=["POST"]),
    Route("/login", login, methods=["POST"]),
    Route("/teapot", teapot),
])
handler = Mangum(app, lifespan="off")
"#;

/// A function's package: its app file beside the libraries vendored under `root` (each under
/// `prefix` + its path relative to `root`).
fn vendored_zip(root: &Path, prefix: &str, app: (&str, &[u8])) -> Vec<u8> {
    let libs: Vec<(String, Vec<u8>)> =
        files_under(root).into_iter().map(|(n, b)| (format!("{prefix}{n}"), b)).collect();
    let mut files: Vec<(&str, &[u8], u32)> =
        libs.iter().map(|(n, b)| (n.as_str(), b.as_slice(), 0o644)).collect();
    files.push((app.0, app.1, 0o644));
    zip(&files)
}

/// The files of a directory, for a zip (`prefix/` + relative path).
fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if name.contains("__pycache__")
                || name == "bin"
                || name.starts_with("bin/")
                || name.starts_with(".bin")
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

#[test]
fn a_starlette_app_on_mangum_is_served_unmodified() {
    let vendored = std::env::var("GUST_TEST_URL_APPS_PYTHON").unwrap_or_else(|_| {
        gust_testkit::repo_root().join("target/url-apps/python").to_string_lossy().into_owned()
    });
    assert!(
        Path::new(&vendored).join("mangum").is_dir(),
        "{vendored} lacks mangum and starlette: run ./scripts/test (it installs them with pip --target)"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = python_server(dir.path(), &[]);
    s.deploy_zip(
        "site",
        python_config("app.handler"),
        vendored_zip(Path::new(&vendored), "", ("app.py", STARLETTE_APP)),
    );
    let url = create_url(&s.url, "site", json!({ "auth_type": "NONE" }), None);
    let base = url["function_url"].as_str().unwrap().to_string();

    let r = url_client()
        .get(format!("{base}hello/ada?lang=en&x=1"))
        .header("user-agent", "gust-test/1")
        .header("cookie", "session=s1; other=o")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json_of(r),
        json!({ "hello": "ada", "q": { "lang": "en", "x": "1" }, "agent": "gust-test/1", "cookie": "s1" })
    );
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let r = url_client()
        .post(format!("{base}upload"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-size"].to_str().unwrap()), (200, "3000"));
    assert_eq!(r.bytes().unwrap().to_vec(), bytes.iter().rev().copied().collect::<Vec<_>>());
    let r = url_client().post(format!("{base}login")).send().unwrap();
    assert_eq!(r.status(), 201);
    let cookies: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert!(cookies.iter().any(|c| c.starts_with("session=abc123") && c.contains("HttpOnly")), "{cookies:?}");
    assert!(cookies.iter().any(|c| c.starts_with("theme=dark")), "{cookies:?}");
    assert_eq!(url_client().get(format!("{base}teapot")).send().unwrap().status(), 418);
    assert_eq!(url_client().get(format!("{base}nowhere")).send().unwrap().status(), 404);
    assert_eq!(url_client().put(format!("{base}upload")).send().unwrap().status(), 405);
}

#[test]
fn the_cli_creates_shows_changes_and_deletes_urls() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(10_000), fixture("echo"));
    let run = |args: &[&str]| {
        let out = common::cli(&s.url).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) =
        run(&["url", "create", "echo", "--auth-type", "NONE", "--allow-origin", "https://a.test"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("/url/") && text.contains("https://a.test"), "{text}");
    let (code, text) = run(&["url", "get", "echo", "--output", "json"]);
    assert_eq!(code, Some(0), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let at = v["function_url"].as_str().unwrap().to_string();
    assert_eq!(url_client().get(&at).send().unwrap().status(), 200);
    let (code, text) = run(&["url", "update", "echo", "--auth-type", "AWS_IAM", "--no-cors"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("AWS_IAM") && text.contains("cors      none"), "{text}");
    let (code, text) = run(&["url", "list", "echo"]);
    assert!(code == Some(0) && text.contains(&at), "{text}");
    let (code, text) = run(&["url", "create", "echo:1", "--auth-type", "NONE"]);
    assert_ne!(code, Some(0), "a numbered version has no URL: {text}");
    assert!(text.contains("not to version 1"), "{text}");
    let (code, text) = run(&["url", "delete", "echo"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["url", "get", "echo"]);
    assert_ne!(code, Some(0));
    assert!(text.contains("not found"), "{text}");
}

/// A Node.js handler streaming through `awslambda.streamifyResponse` and
/// `HttpResponseStream.from`, unmodified: status and headers first, then the body as written.
const STREAMER: &[u8] = br#"
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const q = event.queryStringParameters || {};
  responseStream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 206,
    headers: { "content-type": "text/plain", "x-streamed": "yes" },
    cookies: ["s=1"],
  });
  responseStream.write("first chunk\n");
  await sleep(Number(q.pause || 0));
  if (q.fail) throw new Error("failed mid-stream");
  responseStream.write("second chunk\n");
  responseStream.end();
});
"#;

#[test]
fn a_streamed_response_reaches_the_client_before_the_function_returns() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let ric = gust_testkit::node_ric();
    let s = Server::start(dir.path(), &["--node-ric", &ric]);
    let config = json!({ "runtime": "nodejs20.x", "handler": "index.handler", "timeout_ms": 20_000 });
    s.deploy_zip("stream", config, zip(&[("index.mjs", STREAMER, 0o644)]));
    let streamed =
        create_url(&s.url, "stream", json!({ "auth_type": "NONE", "invoke_mode": "RESPONSE_STREAM" }), None);
    let at = streamed["function_url"].as_str().unwrap().to_string();

    // The first chunk arrives while the function still sleeps: the whole pause lies between it
    // and the end of the body (asserted loosely: a buffered answer would show no gap at all).
    let pause = std::time::Duration::from_millis(3000);
    let started = std::time::Instant::now();
    let mut r = url_client().get(format!("{at}?pause={}", pause.as_millis())).send().unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["x-streamed"], "yes");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(
        r.headers()["set-cookie"],
        format!("s=1; Path=/url/{}/", streamed["url_id"].as_str().unwrap()).as_str()
    );
    let mut first = [0u8; 12];
    r.read_exact(&mut first).unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first, b"first chunk\n");
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    let end_at = started.elapsed();
    assert_eq!(rest, "second chunk\n");
    assert!(
        end_at - first_at >= pause * 2 / 3,
        "the first chunk came at {first_at:?}, the end at {end_at:?}"
    );

    // An error after the stream began cuts the body short: the client sees it incomplete.
    let mut r = url_client().get(format!("{at}?fail=1")).send().unwrap();
    assert_eq!(r.status(), 206);
    let mut all = Vec::new();
    assert!(
        r.read_to_end(&mut all).is_err(),
        "a failed stream does not end cleanly: {:?}",
        String::from_utf8_lossy(&all)
    );

    // InvokeWithResponseStream: AWS event stream messages, the first before the function ends.
    let started = std::time::Instant::now();
    let mut r = url_client()
        .post(format!("{}/2021-11-15/functions/stream/response-streaming-invocations", s.url))
        .body(r#"{"queryStringParameters":{"pause":"3000"}}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.amazon.eventstream");
    let mut events = Vec::new();
    loop {
        let mut prelude = [0u8; 12];
        if r.read_exact(&mut prelude).is_err() {
            break;
        }
        let total = u32::from_be_bytes(prelude[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(prelude[4..8].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; total - 12];
        r.read_exact(&mut rest).unwrap();
        let head = String::from_utf8_lossy(&rest[..headers]).into_owned();
        let kind = if head.contains("PayloadChunk") { "chunk" } else { "complete" };
        events.push((kind, rest[headers..rest.len() - 4].to_vec(), started.elapsed()));
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.0).collect();
    assert_eq!(kinds.last(), Some(&"complete"), "{kinds:?}");
    let payload: Vec<u8> = events.iter().filter(|e| e.0 == "chunk").flat_map(|e| e.1.clone()).collect();
    let text = String::from_utf8_lossy(&payload);
    assert!(text.ends_with("first chunk\nsecond chunk\n"), "{text:?}");
    let (first_at, end_at) = (events[0].2, events.last().unwrap().2);
    assert!(
        end_at - first_at >= pause * 2 / 3,
        "the first event came at {first_at:?}, the last at {end_at:?}"
    );

    // The same function at a BUFFERED URL: the prelude is still the status and headers, whole.
    s.publish("stream");
    let r = s.put_json("/v1/functions/stream/aliases/live", &json!({ "version": 1 }));
    assert_eq!(r.status(), 200);
    let buffered = create_url(&s.url, "stream?qualifier=live", json!({ "auth_type": "NONE" }), None);
    let r = url_client().get(buffered["function_url"].as_str().unwrap()).send().unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-streamed"].to_str().unwrap()), (206, "yes"));
    assert_eq!(r.text().unwrap(), "first chunk\nsecond chunk\n");
}

/// Express on serverless-http, unmodified (CommonJS, as most Express apps on Lambda are).
const EXPRESS_APP: &[u8] = br#"
const express = require("express");
const serverless = require("serverless-http");
const app = express();
app.use(express.json());
app.get("/items/:id", (req, res) => {
  res.cookie("seen", req.params.id, { httpOnly: true });
  res.json({ id: req.params.id, sort: req.query.sort, tag: req.get("x-tag") });
});
app.post("/items", (req, res) => res.status(201).json({ created: req.body }));
app.get("/boom", () => { throw new Error("express error"); });
app.get("/bytes", (req, res) => res.type("application/octet-stream").send(Buffer.from([0, 1, 2, 253, 254, 255])));
module.exports.handler = serverless(app, { binary: ["application/octet-stream"] });
"#;

#[test]
fn an_express_app_on_serverless_http_is_served_unmodified() {
    let modules = gust_testkit::repo_root().join("tests/url-apps/node/node_modules");
    assert!(
        modules.join("express").is_dir(),
        "{} lacks express: run ./scripts/test (it runs npm ci --prefix tests/url-apps/node)",
        modules.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let ric = gust_testkit::node_ric();
    let s = Server::start(dir.path(), &["--node-ric", &ric]);
    let config = json!({ "runtime": "nodejs20.x", "handler": "index.handler", "timeout_ms": 20_000, "memory_mb": 512 });
    s.deploy_zip("express", config, vendored_zip(&modules, "node_modules/", ("index.js", EXPRESS_APP)));
    let url = create_url(&s.url, "express", json!({ "auth_type": "NONE" }), None);
    let base = url["function_url"].as_str().unwrap().to_string();

    let r = url_client().get(format!("{base}items/42?sort=desc")).header("x-tag", "blue").send().unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("seen=42") && cookie.contains("HttpOnly"), "{cookie}");
    assert_eq!(json_of(r), json!({ "id": "42", "sort": "desc", "tag": "blue" }));
    let r = url_client().post(format!("{base}items")).json(&json!({ "name": "lamp" })).send().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(json_of(r), json!({ "created": { "name": "lamp" } }));
    assert_eq!(
        url_client().get(format!("{base}boom")).send().unwrap().status(),
        500,
        "Express's own error page"
    );
    assert_eq!(url_client().get(format!("{base}nowhere")).send().unwrap().status(), 404);
    let r = url_client().get(format!("{base}bytes")).send().unwrap();
    assert_eq!(r.bytes().unwrap().to_vec(), vec![0, 1, 2, 253, 254, 255]);
}

#[test]
fn a_rust_function_on_lambda_http_is_served_unmodified() {
    let bootstrap = gust_testkit::repo_root().join("target/url-apps/rust/debug/bootstrap");
    let binary = std::fs::read(&bootstrap).unwrap_or_else(|e| {
        panic!("{}: {e}: run ./scripts/test (it builds tests/url-apps/rust)", bootstrap.display())
    });
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let config = json!({ "runtime": "provided.al2023", "timeout_ms": 20_000 });
    s.deploy_zip("rusty", config, zip(&[("bootstrap", &binary, 0o755)]));
    let url = create_url(&s.url, "rusty", json!({ "auth_type": "NONE" }), None);
    let base = url["function_url"].as_str().unwrap().to_string();

    let r = url_client()
        .get(format!("{base}hello/ferris?lang=de"))
        .header("user-agent", "gust-test/2")
        .header("cookie", "a=1; b=2")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Path-based URLs share one origin: a cookie stays under its own URL's path.
    let own = format!("/url/{}/", url["url_id"].as_str().unwrap());
    assert_eq!(r.headers()["set-cookie"], format!("visited=yes; Path={own}").as_str());
    let v = json_of(r);
    assert_eq!(
        (v["hello"].as_str(), v["lang"].as_str(), v["agent"].as_str()),
        (Some("ferris"), Some("de"), Some("gust-test/2"))
    );
    assert!(
        v["cookie"].as_str().unwrap().contains("a=1") && v["cookie"].as_str().unwrap().contains("b=2"),
        "{v}"
    );
    let bytes: Vec<u8> = (0..=255u8).collect();
    let r = url_client()
        .post(format!("{base}reverse"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().to_vec(), bytes.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(url_client().get(format!("{base}forbidden")).send().unwrap().status(), 403);
    let r = url_client().get(format!("{base}nowhere")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().unwrap(), "no route for /nowhere");
}

#[test]
fn a_wasi_http_component_is_served_at_its_url_as_an_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let component =
        std::fs::read(gust_testkit::repo_root().join("tests/fixtures/wasi-http/hello.wasm")).unwrap();
    s.deploy("hello", wasm_config(10_000), component);
    let url = create_url(&s.url, "hello", json!({ "auth_type": "NONE" }), None);
    let r =
        url_client().get(format!("{}anything?x=1", url["function_url"].as_str().unwrap())).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    let id = r.headers()["x-amzn-requestid"].to_str().unwrap().to_string();
    assert_eq!(r.text().unwrap(), "hello from a wasi:http component\n");
    let record = s.wait_record(&id, std::time::Duration::from_secs(10), |r| r["state"] == "SUCCEEDED");
    assert_eq!(record["function"], "hello", "recorded like any invocation");
    // Served as it came: no event was made, so the record keeps what was asked, not a body.
    let asked: Value = serde_json::from_str(record["payload"].as_str().unwrap()).unwrap();
    assert_eq!(asked["rawPath"], "/anything");
    assert_eq!(asked["rawQueryString"], "x=1");
    assert_eq!(asked["requestContext"]["http"]["method"], "GET");
    assert!(asked.get("headers").is_none() && asked.get("body").is_none(), "{asked}");
    // A POST's body reaches the component (it answers the same whatever it is sent).
    let r = url_client()
        .post(format!("{}echo", url["function_url"].as_str().unwrap()))
        .body(vec![7u8; 100_000])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // In RESPONSE_STREAM mode its body is sent on as the component writes it: `slow.wasm`
    // writes a first line, waits 2 s, then writes a second.
    let component =
        std::fs::read(gust_testkit::repo_root().join("tests/fixtures/wasi-http/slow.wasm")).unwrap();
    s.deploy("slow", wasm_config(10_000), component);
    let streamed =
        create_url(&s.url, "slow", json!({ "auth_type": "NONE", "invoke_mode": "RESPONSE_STREAM" }), None);
    let started = std::time::Instant::now();
    let mut r = url_client().get(format!("{}x", streamed["function_url"].as_str().unwrap())).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["x-amzn-invoked-production-mode"], "RESPONSE_STREAM");
    let mut first = [0u8; 6];
    std::io::Read::read_exact(&mut r, &mut first).unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first, b"first\n");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
    assert_eq!(rest, "second\n");
    let end_at = started.elapsed();
    assert!(
        end_at - first_at >= std::time::Duration::from_millis(1300),
        "first at {first_at:?}, end at {end_at:?}"
    );
    // Invoked without an HTTP event, it says where to call it.
    let r = s.invoke("hello", None, b"{}", &[]);
    assert_eq!(r.headers()["gust-function-error"], "FunctionError");
    assert!(r.text().unwrap().contains("function URL"));
}
