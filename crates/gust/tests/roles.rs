//! Named API keys and roles, attacked from outside: the real binary, its native `/v1` API and
//! its AWS Lambda API driven by boto3 (the venv of `GUST_TEST_PYTHON`, as `./scripts/test`
//! prepares it). Each role is tried on what it may and may not do; a key limited to some
//! functions tries the others; revoked keys are tried at once, also on a second server of a
//! cluster; and the secrets are looked for where they must not be.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wasm_config, Server};
use gust_testkit::{fixture, python, unique_schema};
use reqwest::blocking::Response;
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN: &str = "roles-bootstrap-admin-token";
/// The longest a revoked key still works on another server (`gust_service::keys::KEY_CACHE_TTL`).
const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// A key as `POST /v1/tokens` answers it, secrets included.
#[derive(Clone, Debug)]
struct Key {
    token: String,
    access_key_id: String,
    secret: String,
}

fn call(s: &Server, token: &str, method: Method, path: &str, body: Option<&Value>) -> Response {
    let mut rb = s.client().request(method, format!("{}{path}", s.url)).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    rb.send().unwrap()
}

fn invoke(s: &Server, token: &str, function: &str, mode: &str) -> Response {
    s.client()
        .post(format!("{}/v1/functions/{function}/invoke", s.url))
        .bearer_auth(token)
        .header("invocation-type", mode)
        .header("content-type", "application/json")
        .body("{\"hello\":1}")
        .send()
        .unwrap()
}

fn status_of(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Asserts the native API's refusal: 403 `{"error":{"code":"AccessDenied","message":...}}`.
fn assert_denied(r: Response, what: &str) {
    let (status, v) = status_of(r);
    assert_eq!(status, 403, "{what}: {v}");
    assert_eq!(v["error"]["code"], "AccessDenied", "{what}: {v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
}

fn assert_ok(r: Response, what: &str) -> Value {
    let (status, v) = status_of(r);
    assert!((200..300).contains(&status), "{what}: {status} {v}");
    v
}

fn create_key(s: &Server, name: &str, role: &str, functions: Option<&str>) -> Key {
    let body = json!({ "name": name, "role": role, "functions": functions });
    let v = assert_ok(call(s, ADMIN, Method::POST, "/v1/tokens", Some(&body)), "create a key");
    Key {
        token: v["token"].as_str().unwrap().to_string(),
        access_key_id: v["access_key_id"].as_str().unwrap().to_string(),
        secret: v["secret_access_key"].as_str().unwrap().to_string(),
    }
}

fn deploy(s: &Server, name: &str) {
    use base64::Engine as _;
    let body = json!({
        "name": name,
        "config": wasm_config(3000),
        "code_b64": base64::engine::general_purpose::STANDARD.encode(fixture("echo")),
    });
    assert_ok(call(s, ADMIN, Method::POST, "/v1/functions", Some(&body)), "deploy");
}

fn revision(s: &Server, name: &str) -> u64 {
    assert_ok(call(s, ADMIN, Method::GET, &format!("/v1/functions/{name}"), None), "read")["revision"]
        .as_u64()
        .unwrap()
}

fn function_names(v: &Value) -> Vec<String> {
    v["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect()
}

/// Runs AWS API operations through boto3 with one key pair: `[[operation, kwargs], ...]`;
/// per operation `{"ok": true, "result": ...}` or `{"ok": false, "code", "status", "message"}`.
/// `ZipFile_b64` in `Code` is sent as the raw bytes.
fn boto3(endpoint: &str, access_key_id: &str, secret: &str, ops: Value) -> Vec<Value> {
    const SCRIPT: &str = r#"
import base64, json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
endpoint, key_id, secret, ops = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
lam = boto3.session.Session(
    aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
).client("lambda", endpoint_url=endpoint, config=Config(retries={"total_max_attempts": 1}))
out = []
for name, kwargs in ops:
    if "Code" in kwargs and "ZipFile_b64" in kwargs["Code"]:
        kwargs["Code"] = {"ZipFile": base64.b64decode(kwargs["Code"]["ZipFile_b64"])}
    if "Payload" in kwargs:
        kwargs["Payload"] = kwargs["Payload"].encode()
    try:
        r = getattr(lam, name)(**kwargs)
        r.pop("ResponseMetadata", None)
        if "Payload" in r:
            r["Payload"] = r["Payload"].read().decode()
        out.append({"ok": True, "result": r})
    except ClientError as e:
        out.append({
            "ok": False,
            "code": e.response["Error"]["Code"],
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "message": e.response["Error"].get("Message", ""),
        })
print(json.dumps(out, default=str))
"#;
    let out = Command::new(python())
        .args(["-c", SCRIPT, endpoint, access_key_id, secret, &ops.to_string()])
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "boto3 failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn aws_denied(r: &Value, what: &str) {
    assert_eq!(r["ok"], false, "{what}: {r}");
    assert_eq!(r["code"], "AccessDeniedException", "{what}: {r}");
    assert_eq!(r["status"], 403, "{what}: {r}");
}

fn aws_ok(r: &Value, what: &str) {
    assert_eq!(r["ok"], true, "{what}: {r}");
}

/// The function names a `list_functions` result of [`boto3`] lists.
fn aws_function_names(r: &Value) -> Vec<&str> {
    r["result"]["Functions"].as_array().unwrap().iter().map(|f| f["FunctionName"].as_str().unwrap()).collect()
}

#[test]
fn each_role_may_do_what_it_allows_and_nothing_more_on_the_native_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    deploy(&s, "app");
    let published = assert_ok(call(&s, ADMIN, Method::POST, "/v1/functions/app/versions", None), "publish");
    assert_eq!(published["version"], 1);
    let admin_run = assert_ok(invoke(&s, ADMIN, "app", "async"), "async invoke")["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let roles = ["reader", "invoker", "deployer", "admin"];
    let keys: Vec<Key> = roles.iter().map(|r| create_key(&s, &format!("k-{r}"), r, None)).collect();

    for (level, (role, key)) in roles.iter().zip(&keys).enumerate() {
        let t = key.token.as_str();
        let what = |op: &str| format!("{role}: {op}");
        // Reading: everyone.
        let listed = assert_ok(call(&s, t, Method::GET, "/v1/functions", None), &what("list"));
        assert_eq!(function_names(&listed), ["app"]);
        for path in [
            "/v1/functions/app",
            "/v1/functions/app/versions",
            "/v1/functions/app/aliases",
            "/v1/functions/app/invocations",
        ] {
            assert_ok(call(&s, t, Method::GET, path, None), &what(path));
        }
        assert_ok(call(&s, t, Method::GET, &format!("/v1/invocations/{admin_run}"), None), &what("record"));

        // Invoking: invoker and up.
        for mode in ["sync", "async"] {
            let r = invoke(&s, t, "app", mode);
            if level >= 1 {
                assert_ok(r, &what(mode));
            } else {
                assert_denied(r, &what(mode));
            }
        }

        // Deploying: deployer and up. A refused write changes nothing.
        let before = revision(&s, "app");
        let config = json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": 2000 + level as u64 });
        let put = call(&s, t, Method::PUT, "/v1/functions/app", Some(&config));
        let publish = call(&s, t, Method::POST, "/v1/functions/app/versions", None);
        let alias = call(&s, t, Method::PUT, "/v1/functions/app/aliases/live", Some(&json!({"version": 1})));
        let code = s
            .client()
            .put(format!("{}/v1/functions/app/code", s.url))
            .bearer_auth(t)
            .header("content-type", "application/wasm")
            .body(fixture("echo"))
            .send()
            .unwrap();
        let new_name = format!("made-by-{role}");
        let create = {
            use base64::Engine as _;
            let body = json!({
                "name": new_name,
                "config": wasm_config(1000),
                "code_b64": base64::engine::general_purpose::STANDARD.encode(fixture("echo")),
            });
            call(&s, t, Method::POST, "/v1/functions", Some(&body))
        };
        if level >= 2 {
            for (r, op) in
                [(put, "put"), (publish, "publish"), (alias, "alias"), (code, "code"), (create, "create")]
            {
                assert_ok(r, &what(op));
            }
            assert_ok(call(&s, t, Method::DELETE, "/v1/functions/app/aliases/live", None), &what("unalias"));
            assert_ok(
                call(&s, t, Method::DELETE, &format!("/v1/functions/{new_name}"), None),
                &what("delete"),
            );
        } else {
            for (r, op) in
                [(put, "put"), (publish, "publish"), (alias, "alias"), (code, "code"), (create, "create")]
            {
                assert_denied(r, &what(op));
            }
            assert_denied(call(&s, t, Method::DELETE, "/v1/functions/app", None), &what("delete"));
            assert_eq!(revision(&s, "app"), before, "{role}: a refused write changed the function");
            let gone = call(&s, ADMIN, Method::GET, &format!("/v1/functions/{new_name}"), None);
            assert_eq!(gone.status(), 404, "{role}: a refused create made the function");
        }

        // Keys and workers: admins only.
        let tokens = call(&s, t, Method::GET, "/v1/tokens", None);
        let workers = call(&s, t, Method::GET, "/v1/workers", None);
        let mint = call(
            &s,
            t,
            Method::POST,
            "/v1/tokens",
            Some(&json!({"name": format!("by-{role}"), "role": "admin"})),
        );
        let revoke = call(&s, t, Method::DELETE, "/v1/tokens/k-reader-spare", None);
        if level == 3 {
            assert_ok(tokens, &what("list keys"));
            assert_ok(workers, &what("workers"));
            assert_ok(mint, &what("create key"));
            assert_eq!(revoke.status(), 404, "{role}: revoking a key that does not exist");
        } else {
            for (r, op) in
                [(tokens, "list keys"), (workers, "workers"), (mint, "create key"), (revoke, "revoke")]
            {
                assert_denied(r, &what(op));
            }
        }
    }

    // Still 401 for what is no key at all, before and after the shape check.
    for bad in [
        "nope",
        "gust_AAAAAAAAAAAAAAAAAAAA_wrong",
        &keys[0].token.replace("_", "_x"),
        &(keys[0].token.clone() + "0"),
    ] {
        let r = call(&s, bad, Method::GET, "/v1/functions", None);
        assert_eq!(r.status(), 401, "{bad}");
    }
}

#[test]
fn each_role_on_the_aws_api_through_boto3() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    deploy(&s, "app");
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(fixture("echo"));
    for (level, role) in ["reader", "invoker", "deployer", "admin"].iter().enumerate() {
        let k = create_key(&s, &format!("aws-{role}"), role, None);
        let created = format!("aws-made-by-{role}");
        let ops = json!([
            ["get_function", {"FunctionName": "app"}],
            ["list_functions", {}],
            ["list_versions_by_function", {"FunctionName": "app"}],
            ["get_account_settings", {}],
            ["invoke", {"FunctionName": "app", "Payload": "{\"n\":1}"}],
            ["invoke", {"FunctionName": "app", "Payload": "{\"n\":2}", "InvocationType": "Event"}],
            ["update_function_configuration", {"FunctionName": "app", "Timeout": 3 + level}],
            ["create_function", {
                "FunctionName": created, "Runtime": "wasm", "Role": "arn:aws:iam::000000000000:role/x",
                "Handler": "x", "Code": {"ZipFile_b64": zip_b64}
            }],
            ["put_function_concurrency", {"FunctionName": "app", "ReservedConcurrentExecutions": 5}],
            ["publish_version", {"FunctionName": "app"}],
        ]);
        let r = boto3(&s.url, &k.access_key_id, &k.secret, ops);
        for (i, op) in ["get", "list", "versions", "account"].iter().enumerate() {
            aws_ok(&r[i], &format!("{role} {op}"));
        }
        let names = aws_function_names(&r[1]);
        assert!(names.contains(&"app"), "{role}: {names:?}");
        for (i, op) in [(4, "invoke"), (5, "invoke Event")] {
            if level >= 1 {
                aws_ok(&r[i], &format!("{role} {op}"));
            } else {
                aws_denied(&r[i], &format!("{role} {op}"));
            }
        }
        for (i, op) in [(6, "update configuration"), (7, "create"), (8, "concurrency"), (9, "publish")] {
            if level >= 2 {
                aws_ok(&r[i], &format!("{role} {op}"));
            } else {
                aws_denied(&r[i], &format!("{role} {op}"));
            }
        }
        if level < 2 {
            let gone = call(&s, ADMIN, Method::GET, &format!("/v1/functions/{created}"), None);
            assert_eq!(gone.status(), 404, "{role}: a refused CreateFunction made the function");
        }
    }
    // The bootstrap token signs as key id `gust`, an admin.
    let r = boto3(&s.url, "gust", ADMIN, json!([["delete_function", {"FunctionName": "aws-made-by-admin"}]]));
    aws_ok(&r[0], "the --token as SigV4 key `gust`");
}

#[test]
fn a_key_limited_to_some_functions_cannot_touch_list_or_read_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    // `aaa-secret` sorts first: a marker taken from an unfiltered page would name it.
    for f in ["app-1", "other", "apple", "aaa-secret"] {
        deploy(&s, f);
    }
    let theirs = assert_ok(invoke(&s, ADMIN, "other", "async"), "admin invokes other")["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let k = create_key(&s, "team-app", "deployer", Some("app-*"));
    let t = k.token.as_str();

    let listed = assert_ok(call(&s, t, Method::GET, "/v1/functions", None), "list");
    assert_eq!(function_names(&listed), ["app-1"], "only covered functions are listed");
    let paged = assert_ok(call(&s, t, Method::GET, "/v1/functions?limit=1", None), "a short page");
    assert_eq!(function_names(&paged), ["app-1"]);
    assert!(paged["next"].is_string(), "the page still leads on: {paged}");
    // Walking every page one function at a time names nothing it does not cover, markers
    // included, and finds everything it does.
    let (mut after, mut seen) = (None::<String>, Vec::new());
    loop {
        let path = match &after {
            Some(a) => format!("/v1/functions?limit=1&after={a}"),
            None => "/v1/functions?limit=1".to_string(),
        };
        let text = call(&s, t, Method::GET, &path, None).text().unwrap();
        for hidden in ["aaa-secret", "apple", "other"] {
            assert!(!text.contains(hidden), "a page names {hidden}: {text}");
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        seen.extend(function_names(&v));
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["app-1"]);

    let before = revision(&s, "other");
    assert_denied(call(&s, t, Method::GET, "/v1/functions/other", None), "get other");
    assert_denied(call(&s, t, Method::GET, "/v1/functions/apple", None), "get apple (no dash)");
    assert_denied(call(&s, t, Method::GET, "/v1/functions/other/invocations", None), "list other's runs");
    assert_denied(
        call(&s, t, Method::GET, &format!("/v1/invocations/{theirs}"), None),
        "read other's record",
    );
    assert_denied(invoke(&s, t, "other", "sync"), "invoke other");
    assert_denied(invoke(&s, t, "other", "async"), "invoke other async");
    let config = json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": 1234 });
    assert_denied(call(&s, t, Method::PUT, "/v1/functions/other", Some(&config)), "configure other");
    assert_denied(call(&s, t, Method::DELETE, "/v1/functions/other", None), "delete other");
    assert_denied(call(&s, t, Method::POST, "/v1/functions/other/versions", None), "publish other");
    // A destination is an invocation of another function by proxy.
    let sneaky =
        json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": 1000, "retry": {"on_success": "other"} });
    assert_denied(call(&s, t, Method::PUT, "/v1/functions/app-1", Some(&sneaky)), "destination outside");
    {
        use base64::Engine as _;
        let code_b64 = base64::engine::general_purpose::STANDARD.encode(fixture("echo"));
        let outside = json!({ "name": "not-app", "config": wasm_config(1000), "code_b64": code_b64 });
        assert_denied(call(&s, t, Method::POST, "/v1/functions", Some(&outside)), "create outside");
        assert_eq!(call(&s, ADMIN, Method::GET, "/v1/functions/not-app", None).status(), 404);
        let inside = json!({ "name": "app-2", "config": wasm_config(1000), "code_b64": code_b64 });
        assert_ok(call(&s, t, Method::POST, "/v1/functions", Some(&inside)), "create inside");
    }
    assert_eq!(revision(&s, "other"), before, "nothing reached the other function");

    // Its own functions: everything a deployer may.
    let own =
        json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": 1000, "retry": {"on_success": "app-2"} });
    assert_ok(call(&s, t, Method::PUT, "/v1/functions/app-1", Some(&own)), "configure own");
    let mine = assert_ok(invoke(&s, t, "app-1", "async"), "invoke own")["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ok(call(&s, t, Method::GET, &format!("/v1/invocations/{mine}"), None), "read own record");

    // The same on the AWS API.
    let r = boto3(
        &s.url,
        &k.access_key_id,
        &k.secret,
        json!([
            ["list_functions", {}],
            ["get_function", {"FunctionName": "other"}],
            ["get_function", {"FunctionName": "arn:aws:lambda:us-east-1:000000000000:function:other:1"}],
            ["invoke", {"FunctionName": "other", "Payload": "{}"}],
            ["delete_function", {"FunctionName": "other"}],
            ["put_function_event_invoke_config", {
                "FunctionName": "app-1",
                "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:lambda:us-east-1:000000000000:function:other"}}
            }],
            ["get_account_settings", {}],
            ["invoke", {"FunctionName": "arn:aws:lambda:us-east-1:000000000000:function:app-1", "Payload": "{}"}],
        ]),
    );
    aws_ok(&r[0], "list");
    let names = aws_function_names(&r[0]);
    assert_eq!(names, ["app-1", "app-2"], "only covered functions are listed");
    for (i, op) in [(1, "get"), (2, "get by ARN"), (3, "invoke"), (4, "delete"), (5, "destination outside")] {
        aws_denied(&r[i], op);
    }
    aws_ok(&r[6], "account settings");
    assert_eq!(r[6]["result"]["AccountUsage"]["FunctionCount"], 2, "usage counts covered functions only");
    aws_ok(&r[7], "invoke own by ARN");
    assert_eq!(call(&s, ADMIN, Method::GET, "/v1/functions/other", None).status(), 200);
}

#[test]
fn a_revoked_key_is_refused_at_once_as_bearer_and_as_sigv4() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    deploy(&s, "app");
    let k = create_key(&s, "ci", "invoker", None);
    assert_ok(call(&s, &k.token, Method::GET, "/v1/functions", None), "before");
    aws_ok(
        &boto3(&s.url, &k.access_key_id, &k.secret, json!([["get_function", {"FunctionName": "app"}]]))[0],
        "before",
    );

    assert_ok(call(&s, ADMIN, Method::DELETE, "/v1/tokens/ci", None), "revoke");
    assert_eq!(call(&s, &k.token, Method::GET, "/v1/functions", None).status(), 401, "bearer after revoke");
    let r = boto3(&s.url, &k.access_key_id, &k.secret, json!([["get_function", {"FunctionName": "app"}]]));
    assert_eq!(r[0]["code"], "UnrecognizedClientException", "SigV4 after revoke: {}", r[0]);
    assert_eq!(r[0]["status"], 403);
    let again = call(&s, ADMIN, Method::DELETE, "/v1/tokens/ci", None);
    assert_eq!(status_of(again).1["error"]["code"], "TokenNotFound");

    // The name is free again; the new key works, the old one stays dead.
    let k2 = create_key(&s, "ci", "reader", None);
    assert_ok(call(&s, &k2.token, Method::GET, "/v1/functions", None), "the re-created key");
    assert_eq!(call(&s, &k.token, Method::GET, "/v1/functions", None).status(), 401, "the old key");
    assert_ne!(k.access_key_id, k2.access_key_id);
}

/// Two servers on one PostgreSQL store: a key made on one works on the other, and revoking it
/// on one is refused by the other within the key cache's bound.
#[test]
fn revocation_reaches_every_server_of_a_cluster() {
    let Some(url) = gust_testkit::postgres_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secrets.key");
    std::fs::write(&key_file, "ab".repeat(32)).unwrap();
    let schema = unique_schema("roles");
    let args = [
        "--token",
        ADMIN,
        "--store",
        &url,
        "--store-schema",
        &schema,
        "--secrets-key-file",
        key_file.to_str().unwrap(),
    ];
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = Server::start(&da, &args);
    let b = Server::start(&db, &args);
    deploy(&a, "app");
    let k = create_key(&a, "shared", "reader", None);
    let sigv4_b =
        || boto3(&b.url, &k.access_key_id, &k.secret, json!([["get_function", {"FunctionName": "app"}]]));
    // Used on B: B has it cached when A revokes it.
    assert_ok(call(&b, &k.token, Method::GET, "/v1/functions/app", None), "bearer on B");
    aws_ok(&sigv4_b()[0], "SigV4 on B");
    assert_ok(call(&b, &k.token, Method::GET, "/v1/functions/app", None), "bearer on B, cached");

    assert_ok(call(&a, ADMIN, Method::DELETE, "/v1/tokens/shared", None), "revoke on A");
    assert_eq!(call(&a, &k.token, Method::GET, "/v1/functions", None).status(), 401, "at once on A");
    std::thread::sleep(KEY_CACHE_TTL + Duration::from_millis(100));
    assert_eq!(call(&b, &k.token, Method::GET, "/v1/functions", None).status(), 401, "on B after the bound");
    assert_eq!(sigv4_b()[0]["code"], "UnrecognizedClientException", "SigV4 on B after the bound");
}

fn gust_cli(url: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = common::cli(url);
    cmd.args(args).env_remove("GUST_TOKEN").env_remove("GUST_TOKEN_FILE");
    if let Some(t) = token {
        cmd.env("GUST_TOKEN", t);
    }
    cmd.output().unwrap()
}

#[test]
fn secrets_are_shown_once_and_never_appear_in_listings_logs_or_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");
    let s = Server::start_logged(&data, &log, "debug", &["--token", ADMIN]);
    // Through the CLI, as an operator would; options after the nested subcommand.
    let out = gust_cli(
        &s.url,
        Some(ADMIN),
        &["token", "create", "ci", "--role", "deployer", "--functions", "app-*", "--output", "json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (token, secret) =
        (created["token"].as_str().unwrap(), created["secret_access_key"].as_str().unwrap());
    let bearer_secret = token.rsplit('_').next().unwrap();
    assert!(token.starts_with("gust_") && bearer_secret.len() >= 64, "{token}");
    assert_eq!(created["role"], "deployer");
    assert_eq!(created["functions"], "app-*");

    // Used both ways, so the server has had every reason to log them.
    let client = reqwest::blocking::Client::new();
    let r = client.get(format!("{}/v1/functions", s.url)).bearer_auth(token).send().unwrap();
    assert_eq!(r.status(), 200);
    let r =
        boto3(&s.url, created["access_key_id"].as_str().unwrap(), secret, json!([["list_functions", {}]]));
    aws_ok(&r[0], "SigV4 with the new key");
    let wrong =
        client.get(format!("{}/v1/functions", s.url)).bearer_auth(format!("{token}x")).send().unwrap();
    assert_eq!(wrong.status(), 401);

    // Last use is written behind: it shows up shortly.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let listed = gust_cli(&s.url, Some(ADMIN), &["token", "list", "--output", "json"]);
        assert!(listed.status.success());
        let v: Value = serde_json::from_slice(&listed.stdout).unwrap();
        if v["tokens"][0]["last_used_at"].is_i64() || std::time::Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = gust_cli(&s.url, Some(ADMIN), &["token", "list"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("ci"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let one = &listed["tokens"][0];
    assert_eq!(one["name"], "ci");
    assert_eq!(one["access_key_id"], created["access_key_id"]);
    assert!(one["last_used_at"].as_i64().unwrap() >= one["created_at"].as_i64().unwrap(), "{one}");
    for shown in [String::from_utf8_lossy(&text.stdout).to_string(), listed.to_string()] {
        assert!(
            !shown.contains(bearer_secret) && !shown.contains(secret),
            "a listing shows a secret: {shown}"
        );
    }

    // The store holds the bearer secret only hashed and the SigV4 secret only sealed.
    let mut stored = Vec::new();
    for name in ["gust.db", "gust.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.join(name)) {
            stored.extend(bytes);
        }
    }
    assert!(!stored.is_empty());
    let contains = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains(&stored, created["access_key_id"].as_str().unwrap().trim_start_matches("GK")),
        "the key id is stored in clear (a lookup by id)"
    );
    assert!(!contains(&stored, bearer_secret), "the bearer secret is in the database in clear");
    assert!(!contains(&stored, secret), "the SigV4 secret is in the database in clear");

    // Revoked through the CLI; refused at once.
    let out = gust_cli(&s.url, Some(ADMIN), &["token", "revoke", "ci"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = client.get(format!("{}/v1/functions", s.url)).bearer_auth(token).send().unwrap();
    assert_eq!(r.status(), 401);
    let out = gust_cli(&s.url, Some(ADMIN), &["token", "revoke", "ci"]);
    assert_eq!(out.status.code(), Some(3), "revoking twice fails: not found");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("API key created"), "the log is captured: {log}");
    assert!(!log.contains(bearer_secret) && !log.contains(secret), "a secret is in the log");
}

#[test]
fn bad_requests_for_keys_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    create_key(&s, "taken", "reader", None);
    for (body, code, status) in [
        (json!({"name": "taken", "role": "reader"}), "Conflict", 409),
        (json!({"name": "x", "role": "root"}), "InvalidRequest", 400),
        (json!({"name": "bad name", "role": "reader"}), "InvalidRequest", 400),
        (json!({"name": "x", "role": "deployer", "functions": "a/b"}), "InvalidRequest", 400),
        (json!({"name": "x", "role": "admin", "functions": "app-*"}), "InvalidRequest", 400),
        (json!({"name": "x", "role": "reader", "extra": 1}), "InvalidJson", 400),
    ] {
        let (st, v) = status_of(call(&s, ADMIN, Method::POST, "/v1/tokens", Some(&body)));
        assert_eq!((st, v["error"]["code"].as_str().unwrap_or("?")), (status, code), "{body}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let out = gust_cli(&s.url, Some(ADMIN), &["token", "create", "y", "--role", "superuser"]);
    assert_eq!(out.status.code(), Some(2));
    let listed = assert_ok(call(&s, ADMIN, Method::GET, "/v1/tokens", None), "list");
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1, "no refused key was stored: {listed}");
}

/// Without `--token` the server checks no credentials at all (loopback only): a key would
/// protect nothing, so none can be made.
#[test]
fn keys_cannot_be_created_on_a_server_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let out = gust_cli(&s.url, None, &["token", "create", "ci", "--role", "reader"]);
    assert_eq!(out.status.code(), Some(4), "a conflict with how the server runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token") && err.contains("AuthenticationOff"), "{err}");
    let listed: Value = s.get("/v1/tokens").json().unwrap();
    assert_eq!(listed["tokens"], json!([]), "nothing was stored");
}
