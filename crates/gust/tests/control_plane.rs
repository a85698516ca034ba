//! The control plane over HTTP: deploy, CAS, publish, aliases, listing, and bad input that
//! must be refused with a clear 4xx and leave nothing behind.

mod common;

use common::{error_code, wasm_config, Server};
use gust_testkit::fixture;
use reqwest::blocking::Response;
use serde_json::{json, Value};

/// A PUT of `body` with `If-Match: if_match` (compare-and-set on the revision).
fn put_if_match(s: &Server, path: &str, if_match: &str, body: &Value) -> Response {
    s.client().put(format!("{}{path}", s.url)).header("if-match", if_match).json(body).send().unwrap()
}

#[test]
fn deploy_publish_alias_and_cas() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);

    let created = s.put_json("/v1/functions/echo", &wasm_config(3000));
    assert_eq!(created.status(), 200);
    let r1 = created.json::<Value>().unwrap()["revision"].as_u64().unwrap();

    // Publishing before any code exists is refused.
    assert_eq!(error_code(s.post("/v1/functions/echo/versions"), 409), "Conflict");

    let code = fixture("echo");
    let up: Value = s.put_bytes("/v1/functions/echo/code", code.clone()).json().unwrap();
    assert_eq!(up["code_sha256"].as_str().unwrap().len(), 64);
    let r2 = up["revision"].as_u64().unwrap();
    assert!(r2 > r1);

    // CAS: a stale If-Match is 412 and changes nothing.
    let stale = put_if_match(&s, "/v1/functions/echo", &r1.to_string(), &json!({ "memory_mb": 512 }));
    assert_eq!(error_code(stale, 412), "RevisionMismatch");
    let f: Value = s.get("/v1/functions/echo").json().unwrap();
    assert_eq!((f["memory_mb"].as_u64(), f["revision"].as_u64()), (Some(64), Some(r2)));
    let config = json!({ "memory_mb": 512, "timeout_ms": 1000, "env": { "MODE": "test" } });
    let ok = put_if_match(&s, "/v1/functions/echo", &format!("\"{r2}\""), &config);
    assert_eq!(ok.status(), 200);
    let f: Value = ok.json().unwrap();
    assert_eq!(f["memory_mb"], 512);
    assert_eq!(f["code_sha256"], up["code_sha256"], "a config change keeps the code");

    assert_eq!(s.publish("echo"), 1);
    assert_eq!(s.publish("echo"), 1, "publishing an unchanged function returns the newest version");
    s.put_json("/v1/functions/echo", &json!({ "memory_mb": 256 }));
    assert_eq!(s.publish("echo"), 2);
    let versions: Value = s.get("/v1/functions/echo/versions").json().unwrap();
    let v: Vec<u64> =
        versions["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(v, vec![1, 2]);
    assert_eq!(versions["versions"][0]["memory_mb"], 512, "version 1 kept its frozen config");

    let alias =
        s.put_json("/v1/functions/echo/aliases/live", &json!({ "version": 1, "weights": { "2": 0.2 } }));
    assert_eq!(alias.status(), 200);
    let alias: Value = alias.json().unwrap();
    assert_eq!(alias["weights"]["2"], 0.2);
    let a_rev = alias["revision"].as_u64().unwrap();
    let stale = put_if_match(
        &s,
        "/v1/functions/echo/aliases/live",
        &(a_rev - 1).to_string(),
        &json!({ "version": 2 }),
    );
    assert_eq!(error_code(stale, 412), "RevisionMismatch");
    assert_eq!(s.get("/v1/functions/echo/aliases/live").json::<Value>().unwrap()["version"], 1);
    let f: Value = s.get("/v1/functions/echo").json().unwrap();
    assert_eq!(f["aliases"][0]["name"], "live");

    // Listing is paged by name.
    s.put_json("/v1/functions/another", &wasm_config(1000));
    let page: Value = s.get("/v1/functions?limit=1").json().unwrap();
    assert_eq!(page["functions"][0]["name"], "another");
    assert_eq!(page["next"], "another");
    let page2: Value = s.get("/v1/functions?limit=1&after=another").json().unwrap();
    assert_eq!(page2["functions"][0]["name"], "echo");

    // Delete removes the function, its versions and aliases.
    assert_eq!(s.delete("/v1/functions/echo/aliases/live").status(), 204);
    assert_eq!(error_code(s.get("/v1/functions/echo/aliases/live"), 404), "AliasNotFound");
    assert_eq!(s.delete("/v1/functions/echo").status(), 200);
    assert_eq!(error_code(s.get("/v1/functions/echo"), 404), "FunctionNotFound");
    assert_eq!(error_code(s.get("/v1/functions/echo/versions"), 404), "FunctionNotFound");
}

#[test]
fn bad_input_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let deployed = s.deploy("f", wasm_config(3000), fixture("echo"));
    let revision = deployed["revision"].as_u64().unwrap();
    let sha = deployed["code_sha256"].clone();

    // Code that is not wasm: 400 naming the validation error; the function keeps its code.
    let r = s.put_bytes("/v1/functions/f/code", b"\0asm\x01\0\0\0garbage".to_vec());
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "InvalidCode");
    assert!(v["error"]["message"].as_str().unwrap().contains("invalid WebAssembly"), "{v}");
    let r = s.put_bytes("/v1/functions/f/code", fixture("reactor"));
    let v: Value = r.json().unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("_start"), "{v}");
    let f: Value = s.get("/v1/functions/f").json().unwrap();
    assert_eq!((f["revision"].as_u64(), f["code_sha256"].clone()), (Some(revision), sha));
    let artifacts = std::fs::read_dir(dir.path().join("artifacts")).unwrap().count();
    assert_eq!(artifacts, 1, "invalid code is not stored");

    // Code over 50 MB.
    let r = s.put_bytes("/v1/functions/f/code", vec![0u8; 50 * 1024 * 1024 + 1]);
    assert_eq!(error_code(r, 413), "TooLarge");

    // Unknown function, malformed JSON, invalid names, wrong content type, unknown fields.
    assert_eq!(error_code(s.get("/v1/functions/nope"), 404), "FunctionNotFound");
    assert_eq!(error_code(s.put_bytes("/v1/functions/nope/code", fixture("echo")), 404), "FunctionNotFound");
    let r = s.put_body("/v1/functions/g", "application/json", b"{not json".to_vec());
    assert_eq!(error_code(r, 400), "InvalidJson");
    assert_eq!(error_code(s.put_json("/v1/functions/bad%20name", &json!({})), 400), "InvalidName");
    assert_eq!(error_code(s.put_json("/v1/functions/g", &json!({ "memory_mb": 1 })), 400), "InvalidConfig");
    assert_eq!(error_code(s.put_json("/v1/functions/g", &json!({ "memroy_mb": 128 })), 400), "InvalidJson");
    assert_eq!(error_code(s.put_json("/v1/functions/g", &json!({ "runtime": "cobol" })), 400), "InvalidJson");
    let r = s.put_body("/v1/functions/g", "text/plain", b"{}".to_vec());
    assert_eq!(error_code(r, 415), "UnsupportedMediaType");
    assert_eq!(error_code(s.get("/v1/functions/g"), 404), "FunctionNotFound", "nothing was created");

    // Routing: weights out of range, summing over 1, unpublished versions.
    assert_eq!(s.publish("f"), 1);
    let bad = [
        (json!({ "version": 1, "weights": { "2": 1.5 } }), 400, "InvalidRouting"),
        (json!({ "version": 1, "weights": { "2": -0.1 } }), 400, "InvalidRouting"),
        (json!({ "version": 1, "weights": { "x": 0.1 } }), 400, "InvalidRouting"),
        (json!({ "version": 1, "weights": { "2": 0.1 }, "extra": 1 }), 400, "InvalidJson"),
        (json!({ "version": 1, "weights": { "2": 0.5 } }), 404, "VersionNotFound"),
        (json!({ "version": 7 }), 404, "VersionNotFound"),
    ];
    for (body, status, code) in bad {
        assert_eq!(error_code(s.put_json("/v1/functions/f/aliases/live", &body), status), code, "{body}");
    }
    assert_eq!(
        error_code(s.put_json("/v1/functions/f/aliases/123", &json!({ "version": 1 })), 400),
        "InvalidName"
    );
    assert_eq!(
        error_code(s.get("/v1/functions/f/aliases/live"), 404),
        "AliasNotFound",
        "nothing was created"
    );

    // Invoking unknown things.
    assert_eq!(error_code(s.invoke("nope", None, b"{}", &[]), 404), "FunctionNotFound");
    assert_eq!(error_code(s.invoke("f", Some("9"), b"{}", &[]), 404), "VersionNotFound");
    assert_eq!(error_code(s.invoke("f", Some("ghost"), b"{}", &[]), 404), "AliasNotFound");
    assert_eq!(error_code(s.invoke("f", Some("a%20b"), b"{}", &[]), 400), "InvalidName");
    assert_eq!(
        error_code(s.invoke("f", None, b"{}", &[("invocation-type", "later")]), 400),
        "InvalidRequest"
    );
    assert_eq!(error_code(s.get("/v1/invocations/not-a-real-id"), 404), "InvocationNotFound");
    assert_eq!(error_code(s.get("/v1/functions/f/invocations?state=DONE"), 400), "InvalidRequest");

    // Payloads over the limits: 6 MB sync, 1 MB async.
    let big = vec![b'x'; 6 * 1024 * 1024 + 1];
    assert_eq!(error_code(s.invoke("f", None, &big, &[]), 413), "TooLarge");
    let mid = vec![b'x'; 1024 * 1024 + 1];
    assert_eq!(error_code(s.invoke("f", None, &mid, &[("invocation-type", "async")]), 413), "TooLarge");
    let listed: Value = s.get("/v1/functions/f/invocations").json().unwrap();
    assert_eq!(listed["invocations"].as_array().unwrap().len(), 0, "refused invocations are not recorded");

    // Unknown endpoints answer JSON too.
    assert_eq!(error_code(s.get("/v2/whatever"), 404), "NotFound");
}

#[test]
fn a_token_protects_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", "s3cret"]);
    assert_eq!(error_code(s.get("/v1/functions"), 401), "Unauthorized");
    let r = s.client().get(format!("{}/v1/functions", s.url)).bearer_auth("wrong").send().unwrap();
    assert_eq!(r.status(), 401);
    let r = s.client().get(format!("{}/v1/functions", s.url)).bearer_auth("s3cret").send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.get("/healthz").status(), 200, "health is public");
}

#[test]
fn creating_a_function_with_its_code_is_atomic_and_refuses_bad_input() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let post = |body: Value| s.client().post(format!("{}/v1/functions", s.url)).json(&body).send().unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let r = post(json!({ "name": "f", "config": wasm_config(1000), "code_b64": "not base64!" }));
    assert_eq!(error_code(r, 400), "InvalidCode");
    let r = post(json!({ "name": "f", "config": wasm_config(1000), "code_b64": b64(b"not wasm") }));
    assert_eq!(error_code(r, 400), "InvalidCode");
    let r = post(
        json!({ "name": "f", "config": { "runtime": "wasm", "env": { "AWS_REGION": "x" } }, "code_b64": b64(&fixture("echo")) }),
    );
    assert_eq!(error_code(r, 400), "InvalidConfig");
    let r = post(
        json!({ "name": "f", "config": wasm_config(1000), "code_b64": b64(&fixture("echo")), "extra": 1 }),
    );
    assert_eq!(error_code(r, 400), "InvalidJson", "unknown fields are refused");
    assert_eq!(s.get("/v1/functions/f").status(), 404, "nothing was half-written");
    let r = post(json!({ "name": "f", "config": wasm_config(1000), "code_b64": b64(&fixture("echo")) }));
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    assert!(v["code_sha256"].is_string());
    let r = post(json!({ "name": "f", "config": wasm_config(1000), "code_b64": b64(&fixture("echo")) }));
    assert_eq!(error_code(r, 409), "Conflict", "an existing name is not overwritten");
}
