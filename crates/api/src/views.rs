//! The JSON shapes of the native API.

use gust_core::{Alias, FunctionConfig, InvocationRecord, State, Version};
use serde_json::{json, Value};

pub(crate) fn function(f: &FunctionConfig) -> Value {
    json!({
        "name": f.name,
        "runtime": f.spec.runtime,
        "handler": f.spec.handler,
        "memory_mb": f.spec.memory_mb,
        "ephemeral_storage_mb": f.spec.ephemeral_storage_mb,
        "timeout_ms": f.spec.timeout_ms,
        "env": f.spec.env,
        "retry": f.spec.retry,
        "description": f.spec.description,
        "role": f.spec.role,
        "reserved_concurrency": f.spec.reserved_concurrency,
        "allowed_outbound_hosts": f.spec.allowed_outbound_hosts,
        "code_sha256": f.code_sha256,
        "revision": f.revision,
        "created_at": f.created_at,
        "updated_at": f.updated_at,
    })
}

pub(crate) fn version(v: &Version) -> Value {
    json!({
        "function": v.function,
        "version": v.number,
        "runtime": v.spec.runtime,
        "handler": v.spec.handler,
        "memory_mb": v.spec.memory_mb,
        "ephemeral_storage_mb": v.spec.ephemeral_storage_mb,
        "timeout_ms": v.spec.timeout_ms,
        "env": v.spec.env,
        "retry": v.spec.retry,
        "code_sha256": v.code_sha256,
        "from_revision": v.from_revision,
        "created_at": v.created_at,
    })
}

pub(crate) fn url(u: &gust_core::FunctionUrl, addressing: &crate::UrlAddressing) -> Value {
    json!({
        "function": u.function,
        "qualifier": u.qualifier,
        "url_id": u.url_id,
        "function_url": addressing.show(&u.url_id),
        "auth_type": u.config.auth_type,
        "cors": u.config.cors,
        "invoke_mode": u.config.invoke_mode,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

pub(crate) fn alias(a: &Alias) -> Value {
    let weights: serde_json::Map<String, Value> =
        a.routing.weights.iter().map(|(v, w)| (v.to_string(), json!(w))).collect();
    json!({
        "function": a.function,
        "name": a.name,
        "version": a.routing.version,
        "weights": weights,
        "description": a.description,
        "revision": a.revision,
        "updated_at": a.updated_at,
    })
}

/// An invocation with its lifecycle, outcome and log. The result is shown as text when it is
/// UTF-8 and as base64 otherwise.
pub(crate) fn invocation(r: &InvocationRecord, with_payload: bool) -> Value {
    let req = &r.request;
    let lc = &r.lifecycle;
    let (worker, lease_expires_at, not_before) = match &lc.state {
        State::Running { worker, lease_expires_at } => {
            (Some(worker.0.as_str()), Some(*lease_expires_at), None)
        }
        State::Placed { worker, .. } => (Some(worker.0.as_str()), None, None),
        State::RetryWait { not_before } => (None, None, Some(*not_before)),
        State::Queued | State::Succeeded | State::Failed | State::Expired => (None, None, None),
    };
    let mut v = json!({
        "invocation_id": req.id,
        "function": req.function,
        // `null` for an unqualified invocation (it ran `$LATEST`, see executed_version).
        "qualifier": (!req.qualifier.is_empty()).then_some(&req.qualifier),
        "executed_version": req.resolved.label(),
        "mode": req.mode,
        "idempotency_key": req.idempotency_key,
        "state": lc.state.name(),
        "attempts": lc.attempt_epoch,
        "function_errors": lc.function_errors,
        "lost_attempts": lc.lost_attempts,
        "worker": worker,
        "lease_expires_at": lease_expires_at,
        "not_before": not_before,
        "received_at": req.received_at,
        "updated_at": r.updated_at,
        "finished_at": r.finished_at,
        "error": r.error,
        "log": r.log,
        "trace_id": req.trace_id,
        "report": r.report,
        "report_line": r.report.map(|rep| rep.line(&req.id.0)),
        "timeline": timeline(r),
    });
    let obj = v.as_object_mut().expect("an object");
    put_bytes(obj, "result", r.result.as_deref());
    if with_payload {
        put_bytes(obj, "payload", Some(&req.payload));
    }
    v
}

/// The invocation's lifecycle as it happened: received, then its history (placements,
/// attempts with their epochs and workers, completions, lease expiries, retries), or, for a
/// sync invocation recorded after it was answered (it has none), its run from its figures.
fn timeline(r: &InvocationRecord) -> Vec<Value> {
    let mut out = vec![json!({ "at": r.request.received_at, "event": "received", "mode": r.request.mode })];
    out.extend(r.history.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()));
    if out.len() == 1 {
        if let (Some(rep), Some(finished)) = (&r.report, r.finished_at) {
            out.push(json!({ "at": rep.started_at, "event": "started", "epoch": r.lifecycle.attempt_epoch.max(1) }));
            out.push(json!({
                "at": finished,
                "event": "completed",
                "epoch": r.lifecycle.attempt_epoch.max(1),
                "state": r.lifecycle.state.name(),
            }));
        }
    }
    out
}

fn put_bytes(obj: &mut serde_json::Map<String, Value>, key: &str, bytes: Option<&[u8]>) {
    match bytes.map(std::str::from_utf8) {
        None => {
            obj.insert(key.to_string(), Value::Null);
        }
        Some(Ok(text)) => {
            obj.insert(key.to_string(), Value::String(text.to_string()));
        }
        Some(Err(_)) => {
            obj.insert(key.to_string(), Value::Null);
            obj.insert(format!("{key}_base64"), Value::String(base64(bytes.unwrap_or_default())));
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An API key as `GET /v1/tokens` lists it: never a secret (not even the stored hash).
pub fn api_key(k: &gust_core::ApiKey) -> Value {
    serde_json::json!({
        "name": k.name,
        "role": k.role.as_str(),
        "functions": k.functions.as_ref().map(|g| g.as_str()),
        "access_key_id": k.access_key_id(),
        "created_at": k.created_at,
        "last_used_at": k.last_used_at,
    })
}
