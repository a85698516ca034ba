//! Functions, their immutable versions and aliases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::limits::*;
use crate::names::LATEST;
use crate::routing::Routing;
use crate::Millis;

/// Which execution environment runs a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Runtime {
    /// A WASI preview 1 command module run by wasmtime.
    Wasm,
    /// A zip with an executable `bootstrap` speaking the Lambda Runtime API
    /// (`provided`, `provided.al2`, `provided.al2023`: `al` is 0, 2 or 2023, kept so the
    /// name reads back as it was given).
    Provided { al: u16 },
    /// Python 3 handlers run by AWS's runtime interface client (`python3.x`; `python3` means
    /// any minor version when a worker reports what it can run).
    Python { minor: u8 },
    /// Node.js handlers run by AWS's runtime interface client (`nodejs20.x`; `nodejs` means
    /// any major version when a worker reports what it can run).
    Node { major: u8 },
}

impl Runtime {
    pub fn name(self) -> String {
        match self {
            Runtime::Wasm => "wasm".into(),
            Runtime::Provided { al: 0 } => "provided".into(),
            Runtime::Provided { al } => format!("provided.al{al}"),
            Runtime::Python { minor: 0 } => "python3".into(),
            Runtime::Python { minor } => format!("python3.{minor}"),
            Runtime::Node { major: 0 } => "nodejs".into(),
            Runtime::Node { major } => format!("nodejs{major}.x"),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "wasm" => Some(Runtime::Wasm),
            "provided" => Some(Runtime::Provided { al: 0 }),
            "provided.al2" => Some(Runtime::Provided { al: 2 }),
            "provided.al2023" => Some(Runtime::Provided { al: 2023 }),
            "python3" => Some(Runtime::Python { minor: 0 }),
            "nodejs" => Some(Runtime::Node { major: 0 }),
            _ if s.starts_with("nodejs") => s
                .strip_prefix("nodejs")
                .and_then(|m| m.strip_suffix(".x"))
                .filter(|m| canonical_number(m))
                .and_then(|m| m.parse::<u8>().ok())
                .filter(|m| (16..=40).contains(m))
                .map(|major| Runtime::Node { major }),
            _ => s
                .strip_prefix("python3.")
                .filter(|m| canonical_number(m))
                .and_then(|m| m.parse::<u8>().ok())
                .filter(|m| (8..=30).contains(m))
                .map(|minor| Runtime::Python { minor }),
        }
    }

    /// Runtimes of one family run on the same workers.
    pub fn same_family(self, other: Runtime) -> bool {
        std::mem::discriminant(&self) == std::mem::discriminant(&other)
    }

    /// Whether code for this runtime is a zip package (rather than a wasm module).
    pub fn is_process(self) -> bool {
        !matches!(self, Runtime::Wasm)
    }
}

/// Digits only, no leading zero: the one spelling of a version number in a runtime name.
fn canonical_number(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit())
}

impl TryFrom<String> for Runtime {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Runtime::parse(&s).ok_or_else(|| {
            format!(
                "unknown runtime {:?}: use wasm, provided, provided.al2023, python3.x or nodejsN.x",
                s.chars().take(40).collect::<String>()
            )
        })
    }
}

impl From<Runtime> for String {
    fn from(r: Runtime) -> String {
        r.name()
    }
}

/// What happens to an async invocation whose function failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Re-runs after a function error (0-2, default 2).
    pub max_retries: u32,
    /// Events older than this are dropped as EXPIRED instead of run.
    pub max_event_age_s: u64,
    /// Delay before the first retry; doubled for each further retry.
    pub base_delay_ms: u64,
    /// A function that receives Lambda's invocation record (an async invocation of it, in the
    /// same transaction) when an async invocation succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,
    /// The same when an async invocation fails for good (retries exhausted or event too old).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// The function's dead-letter queue (Lambda's `DeadLetterConfig`, a gust queue's name):
    /// an async invocation that fails for good sends its event there, in the same transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue: Option<String>,
    /// When the AWS API's event-invoke config was last set; `None` when it never was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured_at: Option<Millis>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            max_event_age_s: DEFAULT_MAX_EVENT_AGE_S,
            base_delay_ms: DEFAULT_RETRY_BASE_DELAY_MS,
            on_success: None,
            on_failure: None,
            dead_letter_queue: None,
            configured_at: None,
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based), doubling and capped.
    pub fn delay_ms(&self, retry: u32) -> u64 {
        let factor = 1u64 << retry.saturating_sub(1).min(20);
        self.base_delay_ms.saturating_mul(factor).min(MAX_RETRY_DELAY_MS)
    }
}

/// The configuration a user sets on a function. Frozen into every version published from it.
/// Every field is optional on input; a missing field takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionSpec {
    pub runtime: Runtime,
    pub memory_mb: u32,
    pub timeout_ms: u64,
    pub env: BTreeMap<String, String>,
    pub retry: RetryPolicy,
    /// The handler of a managed runtime (`module.function` for Python); unused by wasm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// Free text shown back to users.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The execution role the AWS API was given (kept and echoed; gust has no IAM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Most invocations of the function (all versions) running at once; `Some(0)` throttles
    /// everything. Enforced by each server for what it admits and runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_concurrency: Option<u32>,
    /// The size of a process function's /tmp in MB (Lambda's `EphemeralStorage.Size`); a
    /// write past it fails with ENOSPC.
    pub ephemeral_storage_mb: u32,
    /// Where a wasi:http component may send requests ([`crate::outbound`]); nothing when
    /// empty. wasm functions only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
}

impl Default for FunctionSpec {
    fn default() -> Self {
        FunctionSpec {
            runtime: Runtime::Wasm,
            memory_mb: DEFAULT_MEMORY_MB,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            env: BTreeMap::new(),
            retry: RetryPolicy::default(),
            handler: None,
            description: String::new(),
            role: None,
            reserved_concurrency: None,
            ephemeral_storage_mb: DEFAULT_EPHEMERAL_STORAGE_MB,
            allowed_outbound_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("memory_mb must be within [{MIN_MEMORY_MB}, {MAX_MEMORY_MB}], got {0}")]
    Memory(u32),
    #[error("timeout_ms must be within [{MIN_TIMEOUT_MS}, {MAX_TIMEOUT_MS}], got {0}")]
    Timeout(u64),
    #[error("ephemeral_storage_mb must be within [{MIN_EPHEMERAL_STORAGE_MB}, {MAX_EPHEMERAL_STORAGE_MB}], got {0}")]
    EphemeralStorage(u32),
    #[error("at most {MAX_ENV_VARS} environment variables and {MAX_ENV_BYTES} bytes in all")]
    EnvTooLarge,
    #[error("environment variable name {0:?} must match [A-Za-z_][A-Za-z0-9_]*")]
    EnvName(String),
    /// Lambda's own message, so tools that match on it keep working.
    #[error("Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}", .0.join(", "))]
    EnvReserved(Vec<String>),
    #[error("environment variable {0:?} has a NUL character in its value")]
    EnvValue(String),
    #[error("retry.max_retries must be within [0, {MAX_RETRIES}], got {0}")]
    Retries(u32),
    #[error("retry.max_event_age_s must be within [{MIN_MAX_EVENT_AGE_S}, {MAX_MAX_EVENT_AGE_S}], got {0}")]
    EventAge(u64),
    #[error("retry.base_delay_ms must be at most {MAX_RETRY_DELAY_MS}, got {0}")]
    RetryDelay(u64),
    #[error("runtime {0} needs a handler such as app.handler (1-128 characters)")]
    Handler(String),
    #[error("description must be at most {MAX_DESCRIPTION_BYTES} bytes")]
    Description,
    #[error("role must be 1-256 printable characters")]
    Role,
    #[error("reserved concurrency must be at most {MAX_RESERVED_CONCURRENCY}, got {0}")]
    ReservedConcurrency(u32),
    #[error("{0}")]
    OutboundHost(String),
    #[error("allowed_outbound_hosts is for wasm functions (wasi:http components) only")]
    OutboundRuntime,
    #[error("destination {0:?} must be a function name or a gust queue's SQS ARN (a dead-letter queue: a queue name)")]
    Destination(String),
}

/// Environment variables the platform sets for every function, which Lambda refuses in a
/// function's configuration (and so does gust: the runtime must be able to trust them).
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Whether Lambda reserves this environment variable name (the list above, and every
/// `AWS_LAMBDA_*`).
pub fn is_reserved_env(name: &str) -> bool {
    RESERVED_ENV.contains(&name) || name.starts_with("AWS_LAMBDA_")
}

impl FunctionSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(SpecError::Memory(self.memory_mb));
        }
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(SpecError::Timeout(self.timeout_ms));
        }
        if !(MIN_EPHEMERAL_STORAGE_MB..=MAX_EPHEMERAL_STORAGE_MB).contains(&self.ephemeral_storage_mb) {
            return Err(SpecError::EphemeralStorage(self.ephemeral_storage_mb));
        }
        let env_bytes: usize = self.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if self.env.len() > MAX_ENV_VARS || env_bytes > MAX_ENV_BYTES {
            return Err(SpecError::EnvTooLarge);
        }
        for (key, value) in &self.env {
            let mut chars = key.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(SpecError::EnvName(key.chars().take(80).collect()));
            }
            if value.contains('\0') {
                return Err(SpecError::EnvValue(key.clone()));
            }
        }
        let reserved: Vec<String> = self.env.keys().filter(|k| is_reserved_env(k)).cloned().collect();
        if !reserved.is_empty() {
            return Err(SpecError::EnvReserved(reserved));
        }
        if self.retry.max_retries > MAX_RETRIES {
            return Err(SpecError::Retries(self.retry.max_retries));
        }
        if !(MIN_MAX_EVENT_AGE_S..=MAX_MAX_EVENT_AGE_S).contains(&self.retry.max_event_age_s) {
            return Err(SpecError::EventAge(self.retry.max_event_age_s));
        }
        if self.retry.base_delay_ms > MAX_RETRY_DELAY_MS {
            return Err(SpecError::RetryDelay(self.retry.base_delay_ms));
        }
        let handler_ok = |h: &Option<String>| {
            h.as_deref()
                .is_some_and(|h| (1..=128).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_graphic()))
        };
        if let Runtime::Python { .. } | Runtime::Node { .. } = self.runtime {
            if !handler_ok(&self.handler) {
                return Err(SpecError::Handler(self.runtime.name()));
            }
        }
        if self.handler.is_some() && !handler_ok(&self.handler) {
            return Err(SpecError::Handler(self.runtime.name()));
        }
        crate::outbound::validate(&self.allowed_outbound_hosts).map_err(SpecError::OutboundHost)?;
        if !self.allowed_outbound_hosts.is_empty() && self.runtime != Runtime::Wasm {
            return Err(SpecError::OutboundRuntime);
        }
        if self.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(SpecError::Description);
        }
        let role_ok = |r: &str| (1..=256).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_graphic());
        if self.role.as_deref().is_some_and(|r| !role_ok(r)) {
            return Err(SpecError::Role);
        }
        if let Some(n) = self.reserved_concurrency.filter(|n| *n > MAX_RESERVED_CONCURRENCY) {
            return Err(SpecError::ReservedConcurrency(n));
        }
        for d in [&self.retry.on_success, &self.retry.on_failure].into_iter().flatten() {
            if Destination::of(d).is_none() {
                return Err(SpecError::Destination(d.chars().take(80).collect()));
            }
        }
        if let Some(q) = &self.retry.dead_letter_queue {
            if crate::queue::validate_queue_name(q).is_err() {
                return Err(SpecError::Destination(q.chars().take(80).collect()));
            }
        }
        Ok(())
    }
}

/// Where an async invocation's record goes when it ends: a gust function (its name) or a gust
/// queue (its SQS ARN, the form a destination names a queue by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    Function(&'a str),
    Queue(&'a str),
}

impl<'a> Destination<'a> {
    /// What a stored destination names; `None` if it is neither.
    pub fn of(d: &'a str) -> Option<Destination<'a>> {
        if let Some(q) = crate::queue::queue_of_arn(d) {
            return Some(Destination::Queue(q));
        }
        crate::names::validate_function_name(d).ok().map(|()| Destination::Function(d))
    }
}

/// The mutable head of a function (`$LATEST`). `revision` is monotonic and never reused, even
/// across delete and re-create, so `(name, revision)` names one immutable configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub name: String,
    pub spec: FunctionSpec,
    /// sha256 (hex) of the code artifact; `None` until code is uploaded.
    pub code_sha256: Option<String>,
    pub revision: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// An immutable, published version: config and code hash frozen at publish time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub function: String,
    pub number: u64,
    pub spec: FunctionSpec,
    pub code_sha256: String,
    /// The function revision it was published from.
    pub from_revision: u64,
    pub created_at: Millis,
}

/// A named pointer to versions, with weighted routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    pub function: String,
    pub name: String,
    pub routing: Routing,
    #[serde(default)]
    pub description: String,
    pub revision: u64,
    pub updated_at: Millis,
}

/// The concrete code and config an invocation was resolved to at ingest. Every retry of the
/// invocation runs exactly this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resolved {
    /// A published version number.
    Version(u64),
    /// `$LATEST` as it was at a function revision.
    Latest { revision: u64 },
}

impl Resolved {
    /// The label clients see as the executed version (`$LATEST` or the number).
    pub fn label(&self) -> String {
        match self {
            Resolved::Version(n) => n.to_string(),
            Resolved::Latest { .. } => LATEST.to_string(),
        }
    }

    /// A compact, stable encoding for storage: `"7"` or `"$LATEST@12"`.
    pub fn encode(&self) -> String {
        match self {
            Resolved::Version(n) => n.to_string(),
            Resolved::Latest { revision } => format!("{LATEST}@{revision}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        match s.strip_prefix(LATEST) {
            Some(rest) => rest.strip_prefix('@')?.parse().ok().map(|revision| Resolved::Latest { revision }),
            None => s.parse().ok().map(Resolved::Version),
        }
    }
}

/// Everything a worker needs to run an invocation of one resolved version. Immutable, so it
/// may be cached forever under `(function, resolved)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub function: String,
    pub resolved: Resolved,
    pub spec: FunctionSpec,
    pub code_sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_round_trips() {
        for r in [Resolved::Version(3), Resolved::Latest { revision: 12 }] {
            assert_eq!(Resolved::decode(&r.encode()), Some(r));
        }
        assert_eq!(Resolved::Latest { revision: 1 }.label(), "$LATEST");
        assert_eq!(Resolved::decode("$LATEST"), None);
        assert_eq!(Resolved::decode("x"), None);
    }

    #[test]
    fn spec_validation() {
        let mut spec = FunctionSpec::default();
        assert!(spec.validate().is_ok());
        spec.memory_mb = 1;
        assert_eq!(spec.validate(), Err(SpecError::Memory(1)));
        spec = FunctionSpec::default();
        spec.env.insert("1BAD".into(), "x".into());
        assert!(matches!(spec.validate(), Err(SpecError::EnvName(_))));
        spec.env.clear();
        // What Lambda reserves is refused with Lambda's message, naming every key.
        for key in
            ["_HANDLER", "AWS_REGION", "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_ANYTHING", "LAMBDA_TASK_ROOT"]
        {
            spec.env.insert(key.into(), "x".into());
        }
        spec.env.insert("LD_PRELOAD".into(), "/var/task/x.so".into());
        let e = spec.validate().unwrap_err();
        assert!(matches!(&e, SpecError::EnvReserved(k) if k.len() == 5), "{e}");
        assert!(e.to_string().contains("Reserved keys used in this request: AWS_LAMBDA_ANYTHING"), "{e}");
        spec.env.clear();
        spec.env.insert("LD_PRELOAD".into(), "/var/task/x.so".into());
        assert_eq!(spec.validate(), Ok(()), "the function's own loader variables are its business");
        spec.env.insert("K".into(), "a\0b".into());
        assert_eq!(spec.validate(), Err(SpecError::EnvValue("K".into())));
        spec.env.clear();
        spec = FunctionSpec::default();
        spec.retry.max_retries = 3;
        assert_eq!(spec.validate(), Err(SpecError::Retries(3)));
    }

    #[test]
    fn runtime_names() {
        assert_eq!(Runtime::parse("provided.al2023"), Some(Runtime::Provided { al: 2023 }));
        assert_eq!(Runtime::Provided { al: 2023 }.name(), "provided.al2023");
        assert!(Runtime::Provided { al: 0 }.same_family(Runtime::Provided { al: 2 }));
        assert_eq!(Runtime::parse("python3.12"), Some(Runtime::Python { minor: 12 }));
        assert_eq!(Runtime::parse("python2.7"), None);
        assert_eq!(Runtime::Python { minor: 12 }.name(), "python3.12");
        assert!(Runtime::Python { minor: 0 }.same_family(Runtime::Python { minor: 12 }));
        assert!(!Runtime::Wasm.same_family(Runtime::Provided { al: 0 }));
        let spec: FunctionSpec =
            serde_json::from_str(r#"{"runtime":"python3.11","handler":"app.handler"}"#).unwrap();
        assert_eq!(spec.runtime, Runtime::Python { minor: 11 });
        assert!(spec.validate().is_ok());
        let no_handler = FunctionSpec { runtime: Runtime::Python { minor: 11 }, ..FunctionSpec::default() };
        assert!(matches!(no_handler.validate(), Err(SpecError::Handler(_))));
        assert!(serde_json::from_str::<FunctionSpec>(r#"{"runtime":"cobol"}"#).is_err());
        assert_eq!(Runtime::parse("nodejs20.x"), Some(Runtime::Node { major: 20 }));
        assert_eq!(Runtime::Node { major: 22 }.name(), "nodejs22.x");
        assert_eq!(Runtime::parse("nodejs20"), None);
        assert!(Runtime::Node { major: 0 }.same_family(Runtime::Node { major: 20 }));
    }

    #[test]
    fn retry_delay_doubles_and_caps() {
        let p = RetryPolicy { base_delay_ms: 1000, ..RetryPolicy::default() };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"max_retries":2,"max_event_age_s":21600,"base_delay_ms":1000}"#
        );
        assert_eq!(p.delay_ms(1), 1000);
        assert_eq!(p.delay_ms(2), 2000);
        assert_eq!(p.delay_ms(30), MAX_RETRY_DELAY_MS);
    }
}
