//! Functions, their aliases and reserved concurrency: `gust deploy`, `gust function
//! get|update-config|delete`, `gust alias ...`, `gust concurrency`.
//!
//! A change merges: the flags given change what they name and nothing else. The function is
//! read, the flags are applied to its configuration, and the result is written back (with the
//! code, if any) in one request guarded by the revision read (`If-Match`), so a setting made
//! meanwhile by someone else (the AWS API's reserved concurrency, destinations, description)
//! is never overwritten with what this command did not mean to change. When another writer
//! got in between, the read and merge are done again, a few times, then the command fails with
//! the conflict exit code having written nothing.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::api::{Api, Failure, Kind};
use super::durations::{self, show_ms};
use super::{enc, kv, print, printable, Global, Output};

/// How many times a merge is read and written again when another writer moved the function
/// between its read and its write.
pub const MERGE_ATTEMPTS: u32 = 5;

/// What a function's view shows but its configuration does not hold: never written back.
const READ_ONLY: [&str; 8] =
    ["name", "code_sha256", "code_size", "size", "revision", "created_at", "updated_at", "aliases"];

// The settings `gust deploy` and `gust function update-config` change: each flag given changes
// what it names, and nothing else. (Flattened Args take no doc comment: clap would make it the
// command's about text.)
#[derive(Args, Debug, Default, Clone)]
pub struct ConfigFlags {
    /// wasm (the default of a new function), provided, provided.al2023, python3.x or nodejsN.x.
    #[arg(long)]
    pub runtime: Option<String>,
    /// The handler of a managed runtime, e.g. app.handler for python3.x.
    #[arg(long)]
    pub handler: Option<String>,
    /// Memory limit in MB.
    #[arg(long, value_name = "MB")]
    pub memory: Option<u32>,
    /// Timeout: 30s, 500ms, 2m, 1m30s; a bare number is seconds, as in AWS (up to 15m).
    #[arg(long, value_name = "DURATION", value_parser = durations::parse)]
    pub timeout: Option<Duration>,
    /// The size of a process function's /tmp in MB (512-10240).
    #[arg(long, value_name = "MB")]
    pub ephemeral_storage: Option<u32>,
    /// Free text shown back to users.
    #[arg(long)]
    pub description: Option<String>,
    /// Set an environment variable, KEY=VALUE (repeatable); the others stay.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Remove an environment variable (repeatable).
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
    /// Async retries after a function error (0-2).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Maximum age of an async event, in whole seconds: 6h, 90m, 3600 (a bare number is
    /// seconds).
    #[arg(long, value_name = "DURATION", value_parser = durations::parse)]
    pub max_event_age: Option<Duration>,
    /// Delay before the first async retry, doubled for each further one: 1s, 500ms (a bare
    /// number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = durations::parse)]
    pub retry_delay: Option<Duration>,
    /// Allow a wasi:http component to send requests to a host, `[http(s)://]HOST[:PORT]`,
    /// `*.NAME` for the names under NAME (repeatable); the hosts allowed already stay.
    #[arg(long = "allow-outbound", value_name = "HOST")]
    pub allow_outbound: Vec<String>,
    /// Stop allowing a host given with --allow-outbound (repeatable).
    #[arg(long = "remove-outbound", value_name = "HOST")]
    pub remove_outbound: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    pub name: String,
    /// The code: a WASI command module (wasm) or a zip package (provided, python3.x,
    /// nodejsN.x). Needed for a new function; without it an existing one keeps its code.
    #[arg(long)]
    pub code: Option<PathBuf>,
    /// Replace the whole configuration with the flags given (what is not given returns to its
    /// default, reserved concurrency and destinations are removed) instead of merging them.
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// `gust function ...`
#[derive(Subcommand, Debug)]
pub enum FunctionAction {
    /// Show a function: configuration, code sha256 and size, revision, aliases, concurrency.
    Get { name: String },
    /// Change the configuration of an existing function, keeping its code: each flag given
    /// changes what it names, and nothing else.
    UpdateConfig {
        name: String,
        #[command(flatten)]
        config: Box<ConfigFlags>,
    },
    /// Delete a function, its versions and aliases (its pending invocations fail).
    Delete { name: String },
}

// `gust alias ...`; `gust alias NAME ALIAS --version N` is `gust alias set`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AliasCommand {
    #[command(subcommand)]
    pub action: Option<AliasAction>,
    #[command(flatten)]
    pub set: Option<AliasSetArgs>,
}

#[derive(Subcommand, Debug)]
pub enum AliasAction {
    /// Point an alias at a version, optionally routing a share of traffic to another (the
    /// description stays unless --description is given).
    Set(AliasSetArgs),
    /// List a function's aliases.
    List { name: String },
    /// Show one alias.
    Get { name: String, alias: String },
    /// Delete an alias (the versions stay).
    Delete { name: String, alias: String },
}

#[derive(Args, Debug)]
pub struct AliasSetArgs {
    pub name: String,
    pub alias: String,
    /// The primary version.
    #[arg(long)]
    pub version: u64,
    /// Extra version and its share of traffic, VERSION=WEIGHT (repeatable).
    #[arg(long = "weight", value_name = "VERSION=WEIGHT")]
    pub weights: Vec<String>,
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConcurrencyArgs {
    pub name: String,
    /// Reserve this many concurrent executions for the function (0 throttles every
    /// invocation); without it, show the reservation.
    pub reserved: Option<u32>,
    /// Remove the reservation (the function shares the unreserved pool).
    #[arg(long, conflicts_with = "reserved")]
    pub clear: bool,
}

fn function_path(name: &str) -> String {
    format!("/v1/functions/{}", enc(name))
}

/// The configuration a function's view holds (what can be written back).
pub fn config_of_view(view: &Value) -> Map<String, Value> {
    let mut config = view.as_object().cloned().unwrap_or_default();
    for k in READ_ONLY {
        config.remove(k);
    }
    config
}

/// `base` with the flags applied.
pub fn apply(flags: &ConfigFlags, mut base: Map<String, Value>) -> Result<Map<String, Value>, Failure> {
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            base.insert(k.to_string(), v);
        }
    };
    set("runtime", flags.runtime.clone().map(Value::from));
    set("handler", flags.handler.clone().map(Value::from));
    set("memory_mb", flags.memory.map(Value::from));
    set("timeout_ms", flags.timeout.map(|d| json!(d.as_millis() as u64)));
    set("ephemeral_storage_mb", flags.ephemeral_storage.map(Value::from));
    set("description", flags.description.clone().map(Value::from));

    if !flags.env.is_empty() || !flags.unset_env.is_empty() {
        let env = object_at(&mut base, "env");
        for key in &flags.unset_env {
            env.remove(key);
        }
        for e in &flags.env {
            let (k, v) = kv(e, "--env")?;
            if flags.unset_env.contains(&k) {
                return Err(Failure::usage(format!(
                    "--env {k}=... and --unset-env {k} contradict each other"
                )));
            }
            env.insert(k, Value::from(v));
        }
    }

    if flags.max_retries.is_some() || flags.max_event_age.is_some() || flags.retry_delay.is_some() {
        let max_event_age_s = flags
            .max_event_age
            .map(|d| {
                if d.subsec_nanos() != 0 {
                    Err(Failure::usage(format!(
                        "--max-event-age is in whole seconds, not {}",
                        show_ms(d.as_millis() as u64)
                    )))
                } else {
                    Ok(d.as_secs())
                }
            })
            .transpose()?;
        let retry = object_at(&mut base, "retry");
        if let Some(n) = flags.max_retries {
            retry.insert("max_retries".into(), json!(n));
        }
        if let Some(s) = max_event_age_s {
            retry.insert("max_event_age_s".into(), json!(s));
        }
        if let Some(d) = flags.retry_delay {
            retry.insert("base_delay_ms".into(), json!(d.as_millis() as u64));
        }
    }

    if !flags.allow_outbound.is_empty() || !flags.remove_outbound.is_empty() {
        let hosts = base.entry("allowed_outbound_hosts").or_insert_with(|| json!([]));
        if !hosts.is_array() {
            *hosts = json!([]);
        }
        let list = hosts.as_array_mut().expect("made an array");
        list.retain(|h| !flags.remove_outbound.iter().any(|r| h.as_str() == Some(r)));
        for h in &flags.allow_outbound {
            if !list.iter().any(|x| x.as_str() == Some(h)) {
                list.push(json!(h));
            }
        }
    }
    Ok(base)
}

/// The object at `key` of `base`, made one if it is missing or null.
fn object_at<'a>(base: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = base.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("made an object")
}

/// What a merge writes, how.
pub struct Change<'a> {
    pub name: &'a str,
    pub flags: &'a ConfigFlags,
    /// The code file's bytes, base64 (sent as they are with every try).
    pub code_b64: Option<String>,
    /// The code file, for the progress line.
    pub code_name: Option<String>,
    /// Start from defaults instead of the current configuration.
    pub replace: bool,
    /// A function that does not exist may be created (deploy with code).
    pub may_create: bool,
    pub show_progress: bool,
}

/// Reads, merges and writes back under the revision read, trying again when another writer
/// got in between; the function as written.
pub fn merge_and_write(api: &Api, change: &Change) -> Result<Value, Failure> {
    let path = function_path(change.name);
    // Flags that cannot apply (`--env NOEQUALS`) are refused before anything is sent.
    apply(change.flags, Map::new())?;
    for _ in 0..MERGE_ATTEMPTS {
        let current = api.json_or_missing(api.req(Method::GET, &path))?;
        let (base, expect) = match &current {
            Some(view) => {
                let revision = view["revision"].as_u64().ok_or_else(|| {
                    Failure::new(Kind::Server, "the server's view of the function has no revision")
                })?;
                (if change.replace { Map::new() } else { config_of_view(view) }, revision)
            }
            None if change.may_create && change.code_b64.is_some() => (Map::new(), 0),
            None => {
                let hint = if change.may_create { ": a new function needs --code" } else { "" };
                return Err(Failure::new(
                    Kind::NotFound,
                    format!("function {} does not exist{hint}", change.name),
                ));
            }
        };
        let config = serde_json::to_vec(&Value::Object(apply(change.flags, base)?))
            .map_err(|e| Failure::usage(e.to_string()))?;
        // Built by hand: the code's base64 (up to 67 MB) is not copied through a Value.
        let mut body =
            Vec::with_capacity(config.len() + change.code_b64.as_ref().map_or(0, String::len) + 32);
        body.extend_from_slice(b"{\"config\":");
        body.extend_from_slice(&config);
        if let Some(b64) = &change.code_b64 {
            body.extend_from_slice(b",\"code_b64\":\"");
            body.extend_from_slice(b64.as_bytes());
            body.push(b'"');
        }
        body.push(b'}');
        let what = change.code_name.clone().unwrap_or_else(|| change.name.to_string());
        let rb = api
            .req(Method::POST, &format!("{path}/deploy"))
            .header("content-type", "application/json")
            .header("if-match", expect.to_string())
            .body(super::progress::body(body, &what, change.show_progress));
        let resp = api.transmit(rb)?;
        if resp.status() == StatusCode::PRECONDITION_FAILED {
            continue;
        }
        return Ok(api.check(resp)?.json()?);
    }
    Err(Failure::new(
        Kind::Conflict,
        format!(
            "function {} kept changing while this command merged its flags ({MERGE_ATTEMPTS} tries); nothing was written: run it again",
            change.name
        ),
    ))
}

pub fn deploy(g: &Global, api: &Api, a: DeployArgs) -> Result<(), Failure> {
    use base64::Engine as _;
    let code = match &a.code {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let change = Change {
        name: &a.name,
        flags: &a.config,
        code_b64: code.map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
        code_name: a.code.as_ref().map(|p| p.display().to_string()),
        replace: a.replace,
        may_create: true,
        show_progress: g.output == Output::Text,
    };
    let v = merge_and_write(api, &change)?;
    print(g, &v, |v| {
        format!(
            "deployed {} (revision {}, code sha256 {})",
            v["name"].as_str().unwrap_or("?"),
            v["revision"],
            v["code_sha256"].as_str().unwrap_or("none")
        )
    });
    Ok(())
}

pub fn function_action(g: &Global, api: &Api, action: FunctionAction) -> Result<(), Failure> {
    match action {
        FunctionAction::Get { name } => {
            let v = api.json(api.req(Method::GET, &function_path(&name)))?;
            print(g, &v, function_text);
        }
        FunctionAction::UpdateConfig { name, config } => {
            let change = Change {
                name: &name,
                flags: &config,
                code_b64: None,
                code_name: None,
                replace: false,
                may_create: false,
                show_progress: false,
            };
            let v = merge_and_write(api, &change)?;
            print(g, &v, |v| {
                format!("updated {} (revision {})", v["name"].as_str().unwrap_or("?"), v["revision"])
            });
        }
        FunctionAction::Delete { name } => delete(g, api, &name)?,
    }
    Ok(())
}

pub fn delete(g: &Global, api: &Api, name: &str) -> Result<(), Failure> {
    let v = api.json(api.req(Method::DELETE, &function_path(name)))?;
    print(g, &v, |v| {
        format!("deleted {name} ({} pending invocations cancelled)", v["cancelled_invocations"])
    });
    Ok(())
}

/// A function as `gust function get` shows it.
fn function_text(v: &Value) -> String {
    let s = |x: &Value| printable(x.as_str().unwrap_or("-"));
    let mut out = format!("{}\n", s(&v["name"]));
    let mut row = |k: &str, val: String| out.push_str(&format!("  {k:<14} {val}\n"));
    row("runtime", s(&v["runtime"]));
    if v["handler"].is_string() {
        row("handler", s(&v["handler"]));
    }
    row("memory", format!("{} MB", v["memory_mb"]));
    row("timeout", v["timeout_ms"].as_u64().map(show_ms).unwrap_or_else(|| "?".into()));
    row("ephemeral", format!("{} MB", v["ephemeral_storage_mb"]));
    let env: Vec<String> = v["env"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, val)| format!("{}={}", printable(k), printable(val.as_str().unwrap_or(""))))
        .collect();
    row("env", if env.is_empty() { "-".into() } else { env.join(" ") });
    let r = &v["retry"];
    row(
        "async retries",
        format!(
            "{}, first after {}, events up to {} old",
            r["max_retries"],
            r["base_delay_ms"].as_u64().map(show_ms).unwrap_or_else(|| "?".into()),
            r["max_event_age_s"].as_u64().map(|s| show_ms(s * 1000)).unwrap_or_else(|| "?".into())
        ),
    );
    for (key, label) in
        [("on_success", "on success"), ("on_failure", "on failure"), ("dead_letter_queue", "dead letters")]
    {
        if r[key].is_string() {
            row(label, s(&r[key]));
        }
    }
    row(
        "concurrency",
        match v["reserved_concurrency"].as_u64() {
            Some(n) => format!("{n} reserved"),
            None => "unreserved".into(),
        },
    );
    if let Some(hosts) = v["allowed_outbound_hosts"].as_array().filter(|h| !h.is_empty()) {
        row("outbound", hosts.iter().map(s).collect::<Vec<_>>().join(" "));
    }
    if v["description"].as_str().is_some_and(|d| !d.is_empty()) {
        row("description", s(&v["description"]));
    }
    row(
        "code",
        match v["code_sha256"].as_str() {
            Some(sha) => format!("sha256 {sha}, {} bytes", v["code_size"]),
            None => "none".into(),
        },
    );
    row("revision", v["revision"].to_string());
    let aliases: Vec<String> = v["aliases"].as_array().into_iter().flatten().map(alias_line).collect();
    row("aliases", if aliases.is_empty() { "-".into() } else { aliases.join(", ") });
    out.trim_end().to_string()
}

/// `live -> 1 (2: 20%)`
fn alias_line(a: &Value) -> String {
    let weights: Vec<String> = a["weights"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(v, w)| format!("{v}: {}%", (w.as_f64().unwrap_or(0.0) * 100.0).round()))
        .collect();
    let mut line = format!("{} -> {}", printable(a["name"].as_str().unwrap_or("?")), a["version"]);
    if !weights.is_empty() {
        line.push_str(&format!(" ({})", weights.join(", ")));
    }
    line
}

pub fn alias(g: &Global, api: &Api, a: AliasCommand) -> Result<(), Failure> {
    let path = |name: &str, alias: &str| format!("{}/aliases/{}", function_path(name), enc(alias));
    let action = match (a.action, a.set) {
        (Some(action), _) => action,
        (None, Some(set)) => AliasAction::Set(set),
        (None, None) => {
            return Err(Failure::usage("gust alias needs NAME ALIAS --version N, or set|list|get|delete"))
        }
    };
    match action {
        AliasAction::Set(s) => {
            let mut weights = Map::new();
            for w in &s.weights {
                let (v, w) = kv(w, "--weight")?;
                let w: f64 =
                    w.parse().map_err(|_| Failure::usage(format!("weight {w:?} is not a number")))?;
                weights.insert(v, json!(w));
            }
            let at = path(&s.name, &s.alias);
            let mut written = None;
            for _ in 0..MERGE_ATTEMPTS {
                let current = api.json_or_missing(api.req(Method::GET, &at))?;
                let expect = current.as_ref().and_then(|c| c["revision"].as_u64()).unwrap_or(0);
                let description = match (&s.description, &current) {
                    (Some(d), _) => d.clone(),
                    (None, Some(c)) => c["description"].as_str().unwrap_or("").to_string(),
                    (None, None) => String::new(),
                };
                let body = json!({ "version": s.version, "weights": weights, "description": description });
                let resp = api
                    .transmit(api.req(Method::PUT, &at).header("if-match", expect.to_string()).json(&body))?;
                if resp.status() != StatusCode::PRECONDITION_FAILED {
                    written = Some(api.check(resp)?.json::<Value>()?);
                    break;
                }
            }
            let v = written.ok_or_else(|| {
                Failure::new(
                    Kind::Conflict,
                    format!("alias {}:{} kept changing; nothing was written: run it again", s.name, s.alias),
                )
            })?;
            print(g, &v, |v| {
                format!("alias {}:{} -> version {} {}", s.name, s.alias, v["version"], v["weights"])
            });
        }
        AliasAction::List { name } => {
            let v = api.json(api.req(Method::GET, &format!("{}/aliases", function_path(&name))))?;
            print(g, &v, |v| {
                let lines: Vec<String> =
                    v["aliases"].as_array().into_iter().flatten().map(alias_line).collect();
                if lines.is_empty() {
                    format!("{name} has no aliases")
                } else {
                    lines.join("\n")
                }
            });
        }
        AliasAction::Get { name, alias } => {
            let v = api.json(api.req(Method::GET, &path(&name, &alias)))?;
            print(g, &v, |v| {
                let mut out = format!("{}:{}", name, alias_line(v));
                if let Some(d) = v["description"].as_str().filter(|d| !d.is_empty()) {
                    out.push_str(&format!("\n  description {}", printable(d)));
                }
                out.push_str(&format!("\n  revision    {}", v["revision"]));
                out
            });
        }
        AliasAction::Delete { name, alias } => {
            api.send(api.req(Method::DELETE, &path(&name, &alias)))?;
            print(g, &json!({ "deleted": alias, "function": name }), |_| {
                format!("deleted alias {name}:{alias}")
            });
        }
    }
    Ok(())
}

pub fn concurrency(g: &Global, api: &Api, a: ConcurrencyArgs) -> Result<(), Failure> {
    let at = format!("{}/concurrency", function_path(&a.name));
    let v = match (a.reserved, a.clear) {
        (Some(n), _) => api.json(api.req(Method::PUT, &at).json(&json!({ "reserved_concurrency": n })))?,
        (None, true) => api.json(api.req(Method::DELETE, &at))?,
        (None, false) => api.json(api.req(Method::GET, &at))?,
    };
    print(g, &v, |v| match v["reserved_concurrency"].as_u64() {
        Some(n) => format!("{}: {n} concurrent executions reserved", a.name),
        None => format!("{}: no reserved concurrency (it shares the unreserved pool)", a.name),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> ConfigFlags {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            f: ConfigFlags,
        }
        <P as clap::Parser>::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap().f
    }

    #[test]
    fn flags_change_what_they_name_and_nothing_else() {
        let view = json!({
            "name": "f", "runtime": "python3.12", "handler": "app.handler", "memory_mb": 256,
            "timeout_ms": 3000, "ephemeral_storage_mb": 512, "env": { "A": "1", "B": "2" },
            "retry": { "max_retries": 2, "max_event_age_s": 21600, "base_delay_ms": 1000, "on_failure": "dlq-fn" },
            "description": "set through the AWS API", "role": "arn:aws:iam::1:role/r",
            "reserved_concurrency": 5, "allowed_outbound_hosts": ["a.example"],
            "code_sha256": "ab", "code_size": 10, "revision": 7, "created_at": 1, "updated_at": 2, "aliases": [],
        });
        let merged =
            apply(&flags(&["--timeout", "30", "--env", "B=3", "--env", "C=4"]), config_of_view(&view))
                .unwrap();
        assert_eq!(merged["timeout_ms"], 30_000, "a bare number is seconds");
        assert_eq!(merged["env"], json!({ "A": "1", "B": "3", "C": "4" }));
        for kept in [
            "runtime",
            "handler",
            "memory_mb",
            "ephemeral_storage_mb",
            "retry",
            "description",
            "role",
            "reserved_concurrency",
            "allowed_outbound_hosts",
        ] {
            assert_eq!(merged[kept], view[kept], "{kept} is kept");
        }
        for gone in READ_ONLY {
            assert!(!merged.contains_key(gone), "{gone} is not written back");
        }
        let merged = apply(
            &flags(&[
                "--unset-env",
                "A",
                "--max-event-age",
                "1h",
                "--retry-delay",
                "500ms",
                "--allow-outbound",
                "b.example",
                "--remove-outbound",
                "a.example",
            ]),
            config_of_view(&view),
        )
        .unwrap();
        assert_eq!(merged["env"], json!({ "B": "2" }));
        assert_eq!(
            merged["retry"],
            json!({ "max_retries": 2, "max_event_age_s": 3600, "base_delay_ms": 500, "on_failure": "dlq-fn" })
        );
        assert_eq!(merged["allowed_outbound_hosts"], json!(["b.example"]));
    }

    #[test]
    fn contradictions_and_fractions_are_usage_errors() {
        let e = apply(&flags(&["--env", "A=1", "--unset-env", "A"]), Map::new()).unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        let e = apply(&flags(&["--max-event-age", "1500ms"]), Map::new()).unwrap_err();
        assert!(e.message.contains("whole seconds"), "{}", e.message);
        let e = apply(&flags(&["--env", "NOEQUALS"]), Map::new()).unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
    }
}
