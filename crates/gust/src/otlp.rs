//! OpenTelemetry trace export over OTLP/HTTP with JSON bodies (`--otlp-endpoint`, or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT`), off by default. Spans are queued without blocking
//! the attempt that made them ([`QUEUE`] at most; past it they are dropped and counted) and
//! sent in batches of up to [`BATCH`] every [`EVERY`] by one task. A collector that is down
//! costs a failed request per batch, logged once in a while, and nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gust_worker::spans::{Span, SpanSink, Value};
use serde_json::json;

/// Spans waiting to be sent, at most.
pub const QUEUE: usize = 8_192;
/// Spans per request, at most.
pub const BATCH: usize = 512;
/// How often queued spans are sent.
pub const EVERY: Duration = Duration::from_millis(500);

/// The exporter's handle: what attempts hand their spans to.
pub struct Otlp {
    tx: tokio::sync::mpsc::Sender<Span>,
    /// Spans dropped because the queue was full or the collector refused them.
    pub dropped: AtomicU64,
    /// Spans the collector accepted.
    pub sent: AtomicU64,
}

impl SpanSink for Otlp {
    fn export(&self, spans: Vec<Span>) {
        for s in spans {
            if self.tx.try_send(s).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Where OTLP/HTTP takes traces: `ENDPOINT/v1/traces`, unless the endpoint names that path.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Starts the exporter's task (on the current tokio runtime) for `service_name`.
pub fn start(endpoint: &str, service_name: &str, client: reqwest::Client) -> Arc<Otlp> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(QUEUE);
    let otlp = Arc::new(Otlp { tx, dropped: AtomicU64::new(0), sent: AtomicU64::new(0) });
    let (url, service, this) = (traces_url(endpoint), service_name.to_string(), otlp.clone());
    tokio::spawn(async move {
        let failures = gust_store::space::LogEvery::new(Duration::from_secs(60));
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let Some(first) = rx.recv().await else { return };
            batch.push(first);
            let deadline = tokio::time::sleep(EVERY);
            tokio::pin!(deadline);
            while batch.len() < BATCH {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(s) => batch.push(s),
                        None => break,
                    },
                    () = &mut deadline => break,
                }
            }
            let n = batch.len() as u64;
            let body = encode(&service, &batch);
            batch.clear();
            let sent = client.post(&url).timeout(Duration::from_secs(10)).json(&body).send().await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    this.sent.fetch_add(n, Ordering::Relaxed);
                }
                other => {
                    this.dropped.fetch_add(n, Ordering::Relaxed);
                    if let Some(held) = failures.allow() {
                        let why = match other {
                            Ok(r) => format!("HTTP {}", r.status()),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(url = %url, error = %why, repeated = held, "the OTLP collector did not take spans");
                    }
                }
            }
        }
    });
    otlp
}

/// An `ExportTraceServiceRequest` in OTLP's JSON encoding (ids in hex, times as strings).
pub fn encode(service_name: &str, spans: &[Span]) -> serde_json::Value {
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let attributes: Vec<serde_json::Value> = s
                .attributes
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::Text(t) => json!({ "stringValue": t }),
                        Value::Int(i) => json!({ "intValue": i.to_string() }),
                        Value::Bool(b) => json!({ "boolValue": b }),
                    };
                    json!({ "key": k, "value": value })
                })
                .collect();
            let mut span = json!({
                "traceId": hex::encode(s.trace_id),
                "spanId": hex::encode(s.span_id),
                "name": s.name,
                "kind": s.kind as i32,
                "startTimeUnixNano": s.start_unix_ns.to_string(),
                "endTimeUnixNano": s.end_unix_ns.to_string(),
                "attributes": attributes,
                "status": match &s.error {
                    Some(message) => json!({ "code": 2, "message": message }),
                    None => json!({ "code": 0 }),
                },
            });
            if let Some(p) = s.parent {
                span["parentSpanId"] = json!(hex::encode(p));
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": service_name } },
                { "key": "telemetry.sdk.name", "value": { "stringValue": "gust" } },
            ] },
            "scopeSpans": [{ "scope": { "name": "gust", "version": env!("CARGO_PKG_VERSION") }, "spans": spans }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}
