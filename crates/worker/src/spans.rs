//! The spans of an attempt, for OpenTelemetry: made where the attempt ran (from its figures and
//! the invocation's trace), and handed to a [`SpanSink`] that exports them (the binary's OTLP
//! exporter, off by default).
//!
//! Per attempt, in the invocation's trace (under the caller's span when it gave one):
//! - `gust.invocation` (kind SERVER): from ingest to this attempt's end; an invocation retried
//!   has one per attempt, each saying its attempt;
//! - `gust.queue`: from ingest to the attempt's start (admission, the queue, placement and the
//!   claim: the store records no finer times);
//! - `gust.init`: a cold start's init (starting the runtime or loading the module);
//! - `gust.run`: the function's run, with its outcome.
//!
//! Only traces marked sampled are exported: the server marks the traces it starts sampled when
//! it exports traces itself, and a caller's `traceparent` / `X-Amzn-Trace-Id` decides for its
//! own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gust_core::trace::Trace;

pub use gust_core::trace::{Span, SpanKind, SpanSink, Value};

/// What is known of an attempt when it ends.
pub struct Attempt<'a> {
    pub function: &'a str,
    pub version: &'a str,
    pub invocation_id: &'a str,
    pub is_async: bool,
    pub received_at_ms: Option<gust_core::Millis>,
    pub init: Option<Duration>,
    pub duration: Duration,
    pub error: Option<&'a str>,
}

/// The spans of an attempt that just ended, if its trace is sampled.
pub fn of_attempt(trace: &Trace, a: &Attempt<'_>, ids: impl FnMut() -> [u8; 8]) -> Vec<Span> {
    if !trace.sampled {
        return Vec::new();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    build(trace, a, now, ids)
}

fn build(trace: &Trace, a: &Attempt<'_>, end: u64, mut ids: impl FnMut() -> [u8; 8]) -> Vec<Span> {
    let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
    let run_start = end.saturating_sub(ns(a.duration));
    let init_start = run_start.saturating_sub(a.init.map_or(0, ns));
    // The ingest time comes from the server's clock (milliseconds): never after the start.
    let received = a
        .received_at_ms
        .map_or(init_start, |ms| (ms.max(0) as u64).saturating_mul(1_000_000))
        .min(init_start);
    let root = ids();
    let span = |name, kind, parent, start, end, attributes, error| Span {
        trace_id: trace.trace_id,
        span_id: root,
        parent,
        name,
        kind,
        start_unix_ns: start,
        end_unix_ns: end,
        attributes,
        error,
    };
    let error = a.error.map(str::to_string);
    let mut out = vec![span(
        "gust.invocation",
        SpanKind::Server,
        trace.parent,
        received,
        end,
        vec![
            ("faas.invoked_name", Value::Text(a.function.to_string())),
            ("faas.version", Value::Text(a.version.to_string())),
            ("faas.invocation_id", Value::Text(a.invocation_id.to_string())),
            ("faas.trigger", Value::Text(if a.is_async { "other" } else { "http" }.to_string())),
            ("faas.coldstart", Value::Bool(a.init.is_some())),
            ("gust.mode", Value::Text(if a.is_async { "async" } else { "sync" }.to_string())),
        ],
        error.clone(),
    )];
    out.push(span("gust.queue", SpanKind::Internal, Some(root), received, init_start, Vec::new(), None));
    if a.init.is_some() {
        out.push(span("gust.init", SpanKind::Internal, Some(root), init_start, run_start, Vec::new(), None));
    }
    out.push(span("gust.run", SpanKind::Internal, Some(root), run_start, end, Vec::new(), error));
    // The children's own ids (each was made with the root's).
    for s in out.iter_mut().skip(1) {
        s.span_id = ids();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(init: Option<Duration>, error: Option<&str>) -> Attempt<'_> {
        Attempt {
            function: "f",
            version: "$LATEST",
            invocation_id: "id-1",
            is_async: false,
            received_at_ms: Some(1_000),
            init,
            duration: Duration::from_millis(5),
            error,
        }
    }

    fn counter() -> impl FnMut() -> [u8; 8] {
        let mut n = 0u8;
        move || {
            n += 1;
            [n; 8]
        }
    }

    #[test]
    fn an_attempt_is_a_root_under_the_caller_with_queue_init_and_run() {
        let trace = Trace::parse_w3c("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01").unwrap();
        let spans = build(&trace, &attempt(Some(Duration::from_millis(20)), None), 1_100_000_000, counter());
        let names: Vec<_> = spans.iter().map(|s| s.name).collect();
        assert_eq!(names, ["gust.invocation", "gust.queue", "gust.init", "gust.run"]);
        let root = &spans[0];
        assert_eq!(root.parent, trace.parent, "under the caller's span");
        assert!(spans.iter().all(|s| s.trace_id == trace.trace_id));
        assert!(spans[1..].iter().all(|s| s.parent == Some(root.span_id)));
        let mut ids: Vec<_> = spans.iter().map(|s| s.span_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 4, "distinct span ids");
        assert_eq!((root.start_unix_ns, root.end_unix_ns), (1_000_000_000, 1_100_000_000));
        assert_eq!((spans[1].start_unix_ns, spans[1].end_unix_ns), (1_000_000_000, 1_075_000_000));
        assert_eq!((spans[2].start_unix_ns, spans[2].end_unix_ns), (1_075_000_000, 1_095_000_000));
        assert_eq!((spans[3].start_unix_ns, spans[3].end_unix_ns), (1_095_000_000, 1_100_000_000));
    }

    #[test]
    fn errors_mark_the_run_and_the_invocation_and_unsampled_traces_export_nothing() {
        let trace = Trace { sampled: true, ..Trace::new(0, [3; 20]) };
        let spans = build(&trace, &attempt(None, Some("boom")), 2_000_000_000, counter());
        assert_eq!(spans.len(), 3, "no init span when warm");
        assert_eq!(spans[0].error.as_deref(), Some("boom"));
        assert_eq!(spans[2].error.as_deref(), Some("boom"));
        assert_eq!(spans[1].error, None);
        let unsampled = Trace { sampled: false, ..trace };
        assert!(of_attempt(&unsampled, &attempt(None, None), counter()).is_empty());
    }
}
