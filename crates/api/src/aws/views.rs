//! The AWS shapes: FunctionConfiguration, AliasConfiguration, FunctionEventInvokeConfig, and
//! the RevisionIds and CodeSha256 that go in them.

use base64::Engine as _;
use gust_core::lambda::{function_arn, timestamp};
use gust_core::{Alias, FunctionConfig, FunctionSpec, Millis, Version};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// A UUID-shaped id derived from what identifies one state of a resource: it changes on every
/// mutation (the revision moves) and is the same on every server.
pub(crate) fn revision_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = hex::encode(&h.finalize()[..16]);
    format!("{}-{}-{}-{}-{}", &d[0..8], &d[8..12], &d[12..16], &d[16..20], &d[20..32])
}

pub(crate) fn function_revision_id(f: &FunctionConfig) -> String {
    revision_id(&["function", &f.name, &f.created_at.to_string(), &f.revision.to_string()])
}

pub(crate) fn version_revision_id(v: &Version) -> String {
    revision_id(&["version", &v.function, &v.number.to_string(), &v.created_at.to_string()])
}

pub(crate) fn alias_revision_id(a: &Alias) -> String {
    revision_id(&["alias", &a.function, &a.name, &a.revision.to_string()])
}

/// Lambda's CodeSha256: base64 of the digest (gust keeps it as hex).
pub(crate) fn code_sha256_b64(hex_sha: &str) -> String {
    hex::decode(hex_sha).map(|b| base64::engine::general_purpose::STANDARD.encode(b)).unwrap_or_default()
}

/// One configuration as FunctionConfiguration shows it: `$LATEST` or a published version.
pub(crate) struct Shown<'a> {
    pub(crate) name: &'a str,
    pub(crate) spec: &'a FunctionSpec,
    pub(crate) code_sha256: Option<&'a str>,
    pub(crate) code_size: u64,
    /// `None` for `$LATEST`.
    pub(crate) version: Option<u64>,
    pub(crate) revision_id: String,
    pub(crate) last_modified: Millis,
    /// Create answers `Pending` (as Lambda does); every later read answers `Active`.
    pub(crate) pending: bool,
}

impl<'a> Shown<'a> {
    pub(crate) fn latest(f: &'a FunctionConfig, code_size: u64) -> Self {
        Shown {
            name: &f.name,
            spec: &f.spec,
            code_sha256: f.code_sha256.as_deref(),
            code_size,
            version: None,
            revision_id: function_revision_id(f),
            last_modified: f.updated_at,
            pending: false,
        }
    }

    pub(crate) fn version(v: &'a Version, code_size: u64) -> Self {
        Shown {
            name: &v.function,
            spec: &v.spec,
            code_sha256: Some(&v.code_sha256),
            code_size,
            version: Some(v.number),
            revision_id: version_revision_id(v),
            last_modified: v.created_at,
            pending: false,
        }
    }
}

pub(crate) fn configuration(s: &Shown<'_>) -> Value {
    let version = s.version.map_or_else(|| "$LATEST".to_string(), |n| n.to_string());
    let arn = match s.version {
        Some(n) => function_arn(s.name, Some(&n.to_string())),
        None => function_arn(s.name, None),
    };
    let mut v = json!({
        "FunctionName": s.name,
        "FunctionArn": arn,
        "Runtime": s.spec.runtime.name(),
        "Role": s.spec.role.clone().unwrap_or_else(|| format!("arn:aws:iam::{}:role/gust", gust_core::lambda::ACCOUNT)),
        "CodeSize": s.code_size,
        "Description": s.spec.description,
        "Timeout": s.spec.timeout_ms.div_ceil(1000),
        "MemorySize": s.spec.memory_mb,
        "LastModified": timestamp(s.last_modified),
        "CodeSha256": s.code_sha256.map(code_sha256_b64).unwrap_or_default(),
        "Version": version,
        "Environment": { "Variables": s.spec.env },
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": s.revision_id,
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": { "Size": s.spec.ephemeral_storage_mb },
        "LoggingConfig": { "LogFormat": "Text", "LogGroup": format!("/aws/lambda/{}", s.name) },
        "LastUpdateStatus": "Successful",
    });
    let obj = v.as_object_mut().expect("an object");
    if let Some(h) = &s.spec.handler {
        obj.insert("Handler".into(), json!(h));
    }
    if let Some(q) = &s.spec.retry.dead_letter_queue {
        obj.insert("DeadLetterConfig".into(), json!({ "TargetArn": gust_core::queue::queue_arn(q) }));
    }
    if s.pending {
        obj.insert("State".into(), json!("Pending"));
        obj.insert("StateReason".into(), json!("The function is being created."));
        obj.insert("StateReasonCode".into(), json!("Creating"));
    } else {
        obj.insert("State".into(), json!("Active"));
    }
    v
}

pub(crate) fn alias(a: &Alias) -> Value {
    let weights: Map<String, Value> =
        a.routing.weights.iter().map(|(v, w)| (v.to_string(), json!(w))).collect();
    let mut v = json!({
        "AliasArn": function_arn(&a.function, Some(&a.name)),
        "Name": a.name,
        "FunctionVersion": a.routing.version.to_string(),
        "Description": a.description,
        "RevisionId": alias_revision_id(a),
    });
    if !weights.is_empty() {
        v["RoutingConfig"] = json!({ "AdditionalVersionWeights": weights });
    }
    v
}

/// FunctionEventInvokeConfig of `$LATEST`. `LastModified` is epoch seconds (a number: the JS
/// SDK refuses a string there).
pub(crate) fn event_invoke_config(f: &FunctionConfig) -> Value {
    let r = &f.spec.retry;
    let destination = |d: &Option<String>| match d.as_deref().and_then(gust_core::function::Destination::of) {
        Some(gust_core::function::Destination::Function(name)) => {
            json!({ "Destination": function_arn(name, None) })
        }
        Some(gust_core::function::Destination::Queue(q)) => {
            json!({ "Destination": gust_core::queue::queue_arn(q) })
        }
        None => json!({}),
    };
    json!({
        "LastModified": r.configured_at.unwrap_or(f.updated_at) as f64 / 1000.0,
        "FunctionArn": function_arn(&f.name, Some("$LATEST")),
        "MaximumRetryAttempts": r.max_retries,
        "MaximumEventAgeInSeconds": r.max_event_age_s,
        "DestinationConfig": { "OnSuccess": destination(&r.on_success), "OnFailure": destination(&r.on_failure) },
    })
}
