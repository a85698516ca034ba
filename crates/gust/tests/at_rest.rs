//! What gust leaves on disk is its own: a new data directory lets others only traverse it, and
//! the database, artifacts and compiled modules are readable by gust alone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{wasm_config, Server, GUST};
use gust_testkit::{example, fixture};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

#[test]
fn the_data_dir_database_and_code_are_not_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new/data");
    let s = Server::start(&data, &[]);
    let f = s.deploy("echo", wasm_config(1000), fixture("echo"));
    assert_eq!(s.invoke("echo", None, b"{}", &[]).status(), 200);
    let sha = f["code_sha256"].as_str().unwrap();
    assert_eq!(mode(&data), 0o711, "others may only traverse the data dir");
    for file in ["gust.db", "gust.db-wal"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("artifacts")), 0o700);
    assert_eq!(mode(&data.join("artifacts").join(sha)), 0o600);
    assert_eq!(mode(&data.join("modules")), 0o700);
}

#[test]
fn environment_variables_are_sealed_in_the_store_and_reach_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "Sesame-4f2a9c";
    let s = Server::start(dir.path(), &[]);
    let config = serde_json::json!({ "runtime": "wasm", "env": { "GREETING": secret } });
    s.deploy("hello", config, example("hello"));
    s.publish("hello");
    // (Not invoked yet: a result that echoes the value is the function's output, not config.)
    s.kill9();
    // Nothing on disk holds the value: not the database, its log, nor anything else.
    let mut found = Vec::new();
    for entry in walk(dir.path()) {
        if std::fs::read(&entry).is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes())) {
            found.push(entry);
        }
    }
    assert!(found.is_empty(), "the secret is stored in plain text in {found:?}");
    assert_eq!(mode(&dir.path().join("secrets.key")), 0o600);
    // The same key after a restart: the function still gets its value.
    let s = Server::start(dir.path(), &[]);
    for qualifier in [None, Some("1")] {
        let r = s.invoke("hello", qualifier, br#"{"name":"Ada"}"#, &[]).text().unwrap();
        assert!(r.contains(&format!("{secret}, Ada!")), "{r}");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_cli_takes_its_token_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &["--token", "file-token-1"]);
    let token = dir.path().join("token");
    std::fs::write(&token, "file-token-1\n").unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(GUST)
            .args(["functions", "--server", &s.url])
            .args(extra)
            .env_remove("GUST_TOKEN")
            .output()
            .unwrap()
    };
    assert!(run(&["--token-file", token.to_str().unwrap()]).status.success());
    let denied = run(&[]);
    assert_eq!(denied.status.code(), Some(5), "no token, no answer (the auth exit code)");
}
