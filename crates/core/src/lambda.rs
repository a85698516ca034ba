//! What gust looks like to AWS Lambda clients: ARNs, the error payloads runtimes and SDKs
//! expect, Lambda's timestamp format, and the invocation record sent to destinations. Shared
//! by the AWS API (which shows them) and the store (which writes destination invocations in
//! the transaction that finishes the source invocation).

use serde_json::{json, Value};

use crate::invocation::{ErrorKind, FunctionErrorBody, InvocationRecord, State};
use crate::Millis;

/// The region every gust ARN names.
pub const REGION: &str = "us-east-1";
/// The account id every gust ARN names.
pub const ACCOUNT: &str = "000000000000";

/// What a runtime is told about how it was called, besides the payload.
#[derive(Clone, Copy, Default)]
pub struct CallContext<'a> {
    /// The qualifier the caller used (`$LATEST`, a version or an alias): the runtime sees the
    /// function ARN as invoked.
    pub qualifier: &'a str,
    /// The caller's Client-Context (JSON, already base64-decoded); sync invocations only.
    pub client_context: Option<&'a str>,
    /// A caller reading the response as the function writes it (a function URL in
    /// RESPONSE_STREAM mode); `None`: the response is only collected.
    pub stream: Option<&'a std::sync::Arc<dyn ResponseStream>>,
    /// The HTTP request itself, for a function that serves HTTP (a wasi:http component) at a
    /// function URL on this server's own worker; its payload is then only a summary.
    pub http: Option<&'a HttpCall>,
    /// The invocation's trace in X-Ray's form (`Lambda-Runtime-Trace-Id`, `_X_AMZN_TRACE_ID`).
    pub trace_id: Option<&'a str>,
    /// When the invocation was received (its queue wait and end-to-end time are measured
    /// from it), if known.
    pub received_at: Option<Millis>,
    /// Whether it was invoked asynchronously (the metrics' `mode`).
    pub is_async: bool,
}

/// A function URL's request as it came (method, the function's path and query, headers,
/// body), served to a function that handles HTTP itself, so that no event is made. Such a
/// function answers in the shape of a streamed response: a prelude of status and headers,
/// eight NUL bytes, then the body ([`split_prelude`]).
#[derive(Debug)]
pub struct HttpCall {
    pub request: http::Request<bytes::Bytes>,
}

impl std::fmt::Debug for CallContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("qualifier", &self.qualifier)
            .field("client_context", &self.client_context)
            .field("stream", &self.stream.is_some())
            .field("http", &self.http.is_some())
            .finish()
    }
}

/// What a [`ResponseStream`] call returns: whether the reader is still there.
pub type StreamFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;

/// Where a streamed response goes while the function writes it (Lambda's response streaming:
/// the Runtime API's `Lambda-Runtime-Function-Response-Mode: streaming`). The whole response
/// is still collected for the invocation's record and for callers that do not stream.
pub trait ResponseStream: Send + Sync {
    /// The function began streaming, with the content type its runtime declared
    /// (`application/vnd.awslambda.http-integration-response` when a prelude of status and
    /// headers comes first, ended by eight NUL bytes).
    fn begin(&self, content_type: &str) -> StreamFuture<'_>;
    /// One chunk, in order; `false` once the reader has gone.
    fn chunk(&self, bytes: bytes::Bytes) -> StreamFuture<'_>;
}

/// The content type of a streamed response that starts with Lambda's HTTP prelude.
pub const HTTP_INTEGRATION_RESPONSE: &str = "application/vnd.awslambda.http-integration-response";

/// The prelude of a streamed HTTP response (what [`split_prelude`] reads back): `statusCode`,
/// repeated headers as `multiValueHeaders`, `Set-Cookie` as `cookies`, then eight NUL bytes.
pub fn http_prelude(status: u16, headers: &http::HeaderMap) -> Vec<u8> {
    use std::borrow::Cow;
    /// Serialized as it is borrowed (no JSON value built first: this runs for every request a
    /// component serves at its URL); keys in the order a JSON object of them would have.
    #[derive(serde::Serialize)]
    struct Prelude<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        cookies: Vec<Cow<'a, str>>,
        #[serde(rename = "multiValueHeaders")]
        multi: std::collections::BTreeMap<&'a str, Vec<Cow<'a, str>>>,
        #[serde(rename = "statusCode")]
        status: u16,
    }
    let mut prelude = Prelude { cookies: Vec::new(), multi: Default::default(), status };
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        if name == http::header::SET_COOKIE {
            prelude.cookies.push(value);
        } else {
            prelude.multi.entry(name.as_str()).or_default().push(value);
        }
    }
    let mut out = serde_json::to_vec(&prelude).unwrap_or_default();
    out.extend_from_slice(&[0; 8]);
    out
}

/// Splits a response streamed with an HTTP prelude (a JSON object of `statusCode`, `headers`,
/// `cookies`, then eight NUL bytes) into the prelude and the body that follows; `None` if
/// `bytes` does not start with one.
pub fn split_prelude(bytes: &[u8]) -> Option<(Value, &[u8])> {
    const SEPARATOR: [u8; 8] = [0; 8];
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let at = bytes.windows(SEPARATOR.len()).position(|w| w == SEPARATOR)?;
    let prelude: Value = serde_json::from_slice(&bytes[..at]).ok()?;
    prelude.is_object().then(|| (prelude, &bytes[at + SEPARATOR.len()..]))
}

/// `arn:aws:lambda:us-east-1:000000000000:function:NAME[:QUALIFIER]`.
pub fn function_arn(name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) if !q.is_empty() => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}:{q}"),
        _ => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"),
    }
}

/// Splits what clients pass as a FunctionName: a plain name, a partial ARN
/// (`ACCOUNT:function:NAME`) or a full ARN, each optionally ending in `:QUALIFIER`.
/// Returns `(name, qualifier)`; the name is not validated here.
pub fn split_function_name(input: &str) -> Option<(&str, Option<&str>)> {
    let parts: Vec<&str> = input.split(':').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["arn", "aws", "lambda", _region, _account, "function", rest @ ..] => rest,
        // `NAME:function` is a name and an alias named `function`, not a partial ARN.
        [_account, "function", rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    match rest {
        [name] => Some((name, None)),
        [name, qualifier] => Some((name, Some(qualifier))),
        _ => None,
    }
}

/// The `errorType` Lambda shows for a failure gust classified itself.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::FunctionError => "Unhandled",
        ErrorKind::Crashed => "Runtime.ExitError",
        ErrorKind::Timeout => "Sandbox.Timedout",
        ErrorKind::OutOfMemory => "Runtime.OutOfMemory",
        ErrorKind::InitError => "Runtime.InitError",
        ErrorKind::WorkerLost => "Runtime.WorkerLost",
        ErrorKind::Expired => "EventAgeExceeded",
        ErrorKind::FunctionDeleted => "ResourceNotFoundException",
        ErrorKind::ResultTooLarge => "Function.ResponseSizeTooLarge",
    }
}

/// The error JSON a caller receives for a failed invocation: the runtime's own body when it
/// posted one, else `{"errorMessage", "errorType"}` in Lambda's vocabulary.
pub fn error_payload(error: &FunctionErrorBody) -> Vec<u8> {
    if let Some(raw) = &error.runtime_error {
        return raw.clone().into_bytes();
    }
    serde_json::to_vec(&json!({
        "errorMessage": error.error_message,
        "errorType": error_type(error.error_type),
    }))
    .unwrap_or_default()
}

/// Lambda's `LastModified`: `2026-11-27T01:12:04.000+0000`.
pub fn timestamp(ms: Millis) -> String {
    iso8601(ms, "+0000")
}

/// The request time of an HTTP event (payload format 2.0): `02/Dec/2026:18:00:00 +0000`.
pub fn clf_time(ms: Millis) -> String {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let month = MONTHS[(m as usize).saturating_sub(1).min(11)];
    format!("{d:02}/{month}/{y:04}:{:02}:{:02}:{:02} +0000", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// SigV4's `X-Amz-Date` of Unix seconds: `20261127T011204Z`.
pub fn amz_date(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn iso8601(ms: Millis, zone: &str) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}{zone}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A payload as JSON when it is JSON, else as a string (lossy for binary payloads).
fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The destination an async invocation that just reached a terminal state is owed, and the
/// condition: `Some((function, record))` when its policy names one for how it ended.
pub fn destination(rec: &InvocationRecord, now: Millis) -> Option<(String, Vec<u8>)> {
    let req = &rec.request;
    let (target, condition) = match rec.lifecycle.state {
        State::Succeeded => (req.retry.on_success.as_ref()?, "Success"),
        State::Failed => (req.retry.on_failure.as_ref()?, "RetriesExhausted"),
        State::Expired => (req.retry.on_failure.as_ref()?, "EventAgeExceeded"),
        _ => return None,
    };
    let executed = req.resolved.label();
    let mut response = json!({ "statusCode": 200, "executedVersion": executed });
    let payload = match (&rec.lifecycle.state, &rec.error) {
        (State::Succeeded, _) => rec.result.as_deref().map(as_json).unwrap_or(Value::Null),
        (_, Some(error)) => {
            response["functionError"] = json!("Unhandled");
            as_json(&error_payload(error))
        }
        (_, None) => Value::Null,
    };
    let record = json!({
        "version": "1.0",
        "timestamp": iso8601(now, "Z"),
        "requestContext": {
            "requestId": req.id.0,
            // Lambda's records name `$LATEST` for an unqualified invocation.
            "functionArn": function_arn(&req.function, Some(if req.qualifier.is_empty() { crate::names::LATEST } else { &req.qualifier })),
            "condition": condition,
            "approximateInvokeCount": rec.lifecycle.attempt_epoch.max(1),
        },
        "requestPayload": as_json(&req.payload),
        "responseContext": response,
        "responsePayload": payload,
    });
    Some((target.clone(), serde_json::to_vec(&record).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        assert_eq!(split_function_name("f"), Some(("f", None)));
        assert_eq!(split_function_name("f:live"), Some(("f", Some("live"))));
        assert_eq!(split_function_name("123456789012:function:f"), Some(("f", None)));
        assert_eq!(split_function_name("arn:aws:lambda:us-east-1:1:function:f:3"), Some(("f", Some("3"))));
        assert_eq!(split_function_name("a:b:c"), None);
        assert_eq!(
            function_arn("f", Some("$LATEST")),
            "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST"
        );
    }

    #[test]
    fn preludes_split_at_eight_nuls() {
        let mut streamed = br#"{"statusCode":201,"headers":{"x":"1"}}"#.to_vec();
        streamed.extend([0u8; 8]);
        streamed.extend(b"body\0bytes");
        let (prelude, body) = split_prelude(&streamed).unwrap();
        assert_eq!((prelude["statusCode"].as_u64(), body), (Some(201), &b"body\0bytes"[..]));
        assert!(split_prelude(b"{\"no\":\"separator\"}").is_none());
        assert!(split_prelude(b"[1]\0\0\0\0\0\0\0\0").is_none());
    }

    #[test]
    fn a_response_head_becomes_its_prelude() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "two \"quoted\"".parse().unwrap());
        headers.append("set-cookie", "a=1; Path=/".parse().unwrap());
        headers.append("set-cookie", "b=2".parse().unwrap());
        let prelude = http_prelude(404, &headers);
        let expected = r#"{"cookies":["a=1; Path=/","b=2"],"multiValueHeaders":{"content-type":["text/plain"],"x-a":["1","two \"quoted\""]},"statusCode":404}"#;
        assert_eq!(prelude, [expected.as_bytes(), &[0; 8]].concat());
        let (read, body) = split_prelude(&prelude).unwrap();
        assert_eq!(
            (read["statusCode"].as_u64(), read["multiValueHeaders"]["x-a"][1].as_str(), body),
            (Some(404), Some("two \"quoted\""), &b""[..])
        );
        // No cookies: no `cookies` key (as before).
        let plain = http_prelude(200, &http::HeaderMap::new());
        assert_eq!(plain, [&br#"{"multiValueHeaders":{},"statusCode":200}"#[..], &[0; 8]].concat());
    }

    #[test]
    fn timestamps() {
        assert_eq!(amz_date(1_796_174_724), "20261202T012524Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(timestamp(1_795_741_924_123), "2026-11-27T01:12:04.123+0000");
        assert_eq!(iso8601(951_782_400_000, "Z"), "2000-02-29T00:00:00.000Z");
        assert_eq!(clf_time(1_795_741_924_123), "27/Nov/2026:01:12:04 +0000");
    }

    #[test]
    fn error_payload_prefers_the_runtime_body() {
        let mut e = FunctionErrorBody::new(ErrorKind::Timeout, "timed out");
        assert_eq!(
            serde_json::from_slice::<Value>(&error_payload(&e)).unwrap(),
            json!({"errorMessage": "timed out", "errorType": "Sandbox.Timedout"})
        );
        e.runtime_error = Some(r#"{"errorType":"ValueError"}"#.into());
        assert_eq!(error_payload(&e), br#"{"errorType":"ValueError"}"#);
    }
}
