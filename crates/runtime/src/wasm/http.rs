//! wasi:http components: a `wasm` function whose code is a component exporting
//! `wasi:http/incoming-handler` (the `wasi:http/proxy` world) is served as HTTP.
//!
//! It runs from the same invocation as any function: its event is Lambda's HTTP event (payload
//! format 2.0, what a function URL sends, on any worker, embedded or remote), rebuilt here into
//! the HTTP request the component handles, and its HTTP response is answered as Lambda's
//! structured response (`statusCode`, `multiValueHeaders`, `cookies`, base64 `body`), which the
//! URL maps back to HTTP. So a component is recorded, counted, routed by alias weights and
//! limited (timeout as a wall-clock deadline, memory) like every invocation.
//!
//! At a function URL on the worker of the server that took the request, the request is
//! served as it came, with no event ([`request_of`]), and the response goes back as the prelude
//! and body of a streamed response ([`forward`]), streamed to the client in RESPONSE_STREAM
//! mode.
//!
//! Outgoing requests (`wasi:http/outgoing-handler`) are refused unless the function's
//! `allowed_outbound_hosts` lists them, and then reach public addresses only
//! ([`super::outbound`]). Only the proxy world's interfaces are linked (clocks, random, stdio,
//! io, http): a component that imports files or sockets is refused at upload.

use std::collections::BTreeMap;

use std::sync::Arc;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use gust_core::invocation::ErrorKind;
use gust_core::lambda::{HttpCall, ResponseStream, HTTP_INTEGRATION_RESPONSE};
use gust_core::limits::{MAX_RESULT_BYTES, MAX_STREAMED_BYTES};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::{json, Value};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::MemoryLimit;

/// Most bytes one `fields` resource (a set of headers or trailers a component builds) may
/// hold in the host's memory, counted as wasmtime counts them (names, values and the map's
/// own overhead): eight times the 8 KiB most proxies take on the wire.
const FIELD_BYTES: usize = 64 * 1024;
/// Resources (fields, streams, pollables, requests, ...) a component holds at once, at least.
const MIN_RESOURCES: usize = 1_024;

/// The HTTP context and resource table of one component instance, bounded by its memory
/// limit. What a component keeps in resources lives in the server's memory, outside its
/// linear memory and so outside `memory_mb`; wasmtime bounds one `fields` and the count of
/// resources (a million), not their product (~120 GB of headers). Here the product is at
/// most the function's memory, or 64 MiB for a smaller one.
pub(super) fn host_resources(memory_mb: u32) -> (WasiHttpCtx, ResourceTable) {
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(FIELD_BYTES);
    let mut table = ResourceTable::new();
    table.set_max_capacity(max_resources(memory_mb));
    (http, table)
}

fn max_resources(memory_mb: u32) -> usize {
    ((memory_mb as usize) << 20).div_ceil(FIELD_BYTES).max(MIN_RESOURCES)
}

/// What a component instance's store holds.
pub(super) struct HttpHost {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: MemoryLimit,
    pub(super) hooks: super::outbound::Outbound,
}

impl WasiView for HttpHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HttpHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// The HTTP request a Lambda HTTP event (2.0) stands for.
pub(super) fn request_from_event(payload: &[u8]) -> Result<hyper::Request<Full<Bytes>>, String> {
    let not_http = || {
        "a wasi:http component takes Lambda's HTTP event (payload format 2.0): call it at its function URL"
            .to_string()
    };
    let event: Value = serde_json::from_slice(payload).map_err(|_| not_http())?;
    let method = event.pointer("/requestContext/http/method").and_then(Value::as_str).ok_or_else(not_http)?;
    let path = event.get("rawPath").and_then(Value::as_str).unwrap_or("/");
    let query = event.get("rawQueryString").and_then(Value::as_str).unwrap_or("");
    let host = event
        .pointer("/headers/host")
        .or_else(|| event.pointer("/requestContext/domainName"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    let uri = match query {
        "" => format!("http://{host}{path}"),
        q => format!("http://{host}{path}?{q}"),
    };
    let mut req = hyper::Request::builder().method(method).uri(&uri);
    if let Some(Value::Object(headers)) = event.get("headers") {
        for (name, value) in headers {
            if let Some(v) = value.as_str() {
                req = req.header(name.as_str(), v);
            }
        }
    }
    if let Some(Value::Array(cookies)) = event.get("cookies") {
        let joined: Vec<&str> = cookies.iter().filter_map(Value::as_str).collect();
        if !joined.is_empty() {
            req = req.header("cookie", joined.join("; "));
        }
    }
    let body = match event.get("body").and_then(Value::as_str) {
        None => Bytes::new(),
        Some(b) if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) => {
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(b).map_err(|_| not_http())?)
        }
        Some(b) => Bytes::copy_from_slice(b.as_bytes()),
    };
    req.body(Full::new(body)).map_err(|e| format!("the event is not a valid HTTP request: {e}"))
}

/// An HTTP response as Lambda's structured answer: repeated headers kept
/// (`multiValueHeaders`), `Set-Cookie` as `cookies`, the body in base64.
pub(super) fn answer(parts: &hyper::http::response::Parts, body: &[u8]) -> Bytes {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == hyper::header::SET_COOKIE {
            cookies.push(value);
        } else {
            headers.entry(name.as_str().to_string()).or_default().push(value);
        }
    }
    let mut v = json!({
        "statusCode": parts.status.as_u16(),
        "multiValueHeaders": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true,
    });
    if !cookies.is_empty() {
        v["cookies"] = json!(cookies);
    }
    Bytes::from(v.to_string())
}

/// Reads a component's response body, at most `limit` bytes.
pub(super) async fn read_body(
    body: wasmtime_wasi_http::p2::body::HyperOutgoingBody, limit: usize,
) -> Result<Bytes, (ErrorKind, String)> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => {
            Err((ErrorKind::ResultTooLarge, format!("the response exceeded {limit} bytes")))
        }
        Err(e) => Err((ErrorKind::FunctionError, format!("the response body failed: {e}"))),
    }
}

/// The request a function URL received, for the component (its body shared, not copied).
pub(super) fn request_of(call: &HttpCall) -> hyper::Request<Full<Bytes>> {
    let from = &call.request;
    let mut req = hyper::Request::new(Full::new(from.body().clone()));
    *req.method_mut() = from.method().clone();
    *req.uri_mut() = from.uri().clone();
    *req.headers_mut() = from.headers().clone();
    req
}

/// A component's response served directly: its status and headers as the prelude of a
/// streamed response (see [`gust_core::lambda::http_prelude`]), then its body, sent on to
/// `stream` frame by frame while someone reads it (at most `MAX_STREAMED_BYTES`) and
/// collected for the record (at most `MAX_RESULT_BYTES`; a response past that with nobody
/// streaming it is an error, as a buffered answer too large is).
pub(super) async fn forward(
    resp: hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
    stream: Option<&Arc<dyn ResponseStream>>,
) -> Result<Bytes, (ErrorKind, String)> {
    let (parts, mut body) = resp.into_parts();
    let prelude = Bytes::from(gust_core::lambda::http_prelude(parts.status.as_u16(), &parts.headers));
    let mut collected = BytesMut::from(&prelude[..]);
    let mut reading = match stream {
        Some(s) => s.begin(HTTP_INTEGRATION_RESPONSE).await && s.chunk(prelude).await,
        None => false,
    };
    let too_large =
        |limit: usize| (ErrorKind::ResultTooLarge, format!("the response exceeded {limit} bytes"));
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| (ErrorKind::FunctionError, format!("the response body failed: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > MAX_STREAMED_BYTES {
            return Err(too_large(MAX_STREAMED_BYTES));
        }
        if collected.len() + data.len() <= MAX_RESULT_BYTES {
            collected.extend_from_slice(&data);
        } else if !reading {
            return Err(too_large(MAX_RESULT_BYTES));
        }
        if reading {
            if let Some(s) = stream {
                reading = s.chunk(data).await;
            }
        }
    }
    Ok(collected.freeze())
}

/// The request body type a component reads: ours never fails.
pub(super) fn request_body(
    req: hyper::Request<Full<Bytes>>,
) -> hyper::Request<impl hyper::body::Body<Data = Bytes, Error = ErrorCode> + Send + 'static> {
    req.map(|b| b.map_err(|never| match never {}))
}

pub(super) const SCHEME: Scheme = Scheme::Http;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_components_headers_are_bounded_by_its_memory() {
        for memory_mb in [1, 64, 128, 4096] {
            let (_, table) = host_resources(memory_mb);
            let most = table.max_capacity() * FIELD_BYTES;
            assert!(most <= ((memory_mb as usize) << 20).max(64 << 20), "{memory_mb} MB: {most}");
            assert!(table.max_capacity() >= MIN_RESOURCES);
        }
    }

    #[test]
    fn an_http_event_becomes_its_request() {
        let event = json!({
            "version": "2.0", "rawPath": "/a/b", "rawQueryString": "x=1",
            "headers": { "host": "id.example.test", "content-type": "text/plain" },
            "cookies": ["a=1", "b=2"],
            "requestContext": { "http": { "method": "POST" } },
            "body": "aGk=", "isBase64Encoded": true,
        });
        let req = request_from_event(event.to_string().as_bytes()).unwrap();
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri().to_string(), "http://id.example.test/a/b?x=1");
        assert_eq!(req.headers()["cookie"], "a=1; b=2");
        assert_eq!(req.headers()["content-type"], "text/plain");
        assert!(request_from_event(b"{\"not\":\"an event\"}").unwrap_err().contains("function URL"));
    }
}
