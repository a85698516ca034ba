//! Function URLs at the edge: an HTTP request becomes a Lambda HTTP event (payload format 2.0),
//! runs as a sync invocation like any other (counted, recorded, routed by alias weights), and
//! the function's answer becomes the HTTP response, exactly as Lambda's function URLs do.
//!
//! Addressing: host-based (`<url-id>.<--url-domain>`, on every listener; or `<url-id>.<any
//! name>` on the `--url-listen` listener, e.g. `<url-id>.localhost:PORT`, which browsers
//! resolve to loopback), where the whole path is the function's; and path-based on the main
//! listener (`/url/<url-id>/...`) for local use. A path-based URL shares the API's origin, so
//! its responses carry `Content-Security-Policy: sandbox` (without `allow-same-origin`): a
//! page a function serves there runs in an opaque origin and cannot call the API as its
//! operator's browser (the browser guard refuses its `Origin: null`).
//!
//! Never trusted: the request (bounded: 6 MB of body, hyper's header limits), and the
//! function's answer (a status that is not final (200-599), a header that is not a header, a
//! body that is not the base64 it claims: 502; hop-by-hop headers and Content-Length are the server's own).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use gust_core::access::Action;
use gust_core::lambda::{clf_time, HttpCall, ACCOUNT};
use gust_core::limits::MAX_SYNC_PAYLOAD_BYTES;
use gust_core::url::is_url_id;
use gust_core::{AuthType, Cors, FunctionUrl, InvokeMode, Millis, Mode};
use gust_service::{HttpInvoke, InvokeInput, Invoked, ServiceError, SyncOutcome};
use serde_json::{json, Map, Value};

use crate::access::Access;
use crate::edge::ConnInfo;
use crate::stream::{Ended, Piece};
use crate::AppState;

/// Where path-based URLs live on the main listener.
pub(crate) const PATH_PREFIX: &str = "/url/";

/// What a page served path-based may do: script, forms, popups, but not share the API's origin.
const SANDBOX_CSP: &str = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// How function URLs are addressed, and how they are shown (`FunctionUrl`).
#[derive(Clone, Debug)]
pub struct UrlAddressing {
    /// `--url-domain`: a request whose Host is `<url-id>.<domain>` is that URL's, on every
    /// listener.
    pub domain: Option<String>,
    /// How a URL is shown, `{id}` standing for its id: `http://127.0.0.1:8080/url/{id}/`.
    pub template: String,
}

impl Default for UrlAddressing {
    fn default() -> Self {
        UrlAddressing { domain: None, template: format!("{PATH_PREFIX}{{id}}/") }
    }
}

impl UrlAddressing {
    pub(crate) fn show(&self, url_id: &str) -> String {
        self.template.replace("{id}", url_id)
    }

    /// The URL id a Host names under `--url-domain`, if it does.
    fn id_in_domain(&self, host: &str) -> Option<String> {
        let domain = self.domain.as_deref()?;
        let (id, rest) = dns_name(host).split_once('.')?;
        let id = id.to_ascii_lowercase();
        (rest.eq_ignore_ascii_case(domain) && is_url_id(&id)).then_some(id)
    }
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || name.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }
        _ => host,
    }
}

/// A Host's name as DNS compares it: without its port or a final dot.
fn dns_name(host: &str) -> &str {
    let name = strip_port(host);
    name.strip_suffix('.').unwrap_or(name)
}

fn host_of(req: &Request) -> Option<&str> {
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host())
}

/// The URL id of a host-based request on the main listener (`--url-domain`), if it is one.
pub(crate) fn host_based_id(state: &AppState, req: &Request) -> Option<String> {
    state.cfg.urls.domain.as_ref()?;
    state.cfg.urls.id_in_domain(host_of(req)?)
}

/// The `--url-listen` listener: every request is a URL's, named by its Host's first label.
pub(crate) async fn serve_any_host(State(state): State<AppState>, req: Request) -> Response {
    let id = host_of(&req)
        .and_then(|h| dns_name(h).split('.').next())
        .map(str::to_ascii_lowercase)
        .filter(|id| is_url_id(id));
    match id {
        Some(id) => {
            let raw_path = req.uri().path().to_string();
            answer(state, id, raw_path, false, req).await
        }
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// A host-based request on the main listener (`--url-domain`).
pub(crate) async fn serve_host(state: AppState, id: String, req: Request) -> Response {
    let raw_path = req.uri().path().to_string();
    answer(state, id, raw_path, false, req).await
}

/// `/url/<url-id>[/...]` on the main listener.
pub(crate) async fn serve_path(State(state): State<AppState>, req: Request) -> Response {
    let rest = req.uri().path().strip_prefix(PATH_PREFIX).unwrap_or_default();
    let (id, path) = match rest.split_once('/') {
        Some((id, path)) => (id.to_string(), format!("/{path}")),
        None => (rest.to_string(), "/".to_string()),
    };
    answer(state, id, path, true, req).await
}

/// Lambda's error bodies for function URLs.
fn message(status: StatusCode, text: &str) -> Response {
    let mut resp = (status, axum::Json(json!({ "Message": text }))).into_response();
    set_request_id(&mut resp, &uuid::Uuid::new_v4().to_string());
    resp
}

/// Lambda's answer to a request over the payload limit.
fn too_large() -> Response {
    let text = format!(
        "Request must be smaller than {MAX_SYNC_PAYLOAD_BYTES} bytes for the InvokeFunction operation"
    );
    message(StatusCode::PAYLOAD_TOO_LARGE, &text)
}

fn set_request_id(resp: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
}

async fn answer(state: AppState, id: String, raw_path: String, sandboxed: bool, req: Request) -> Response {
    let mut resp = serve(&state, &id, raw_path, req).await;
    if sandboxed {
        let h = resp.headers_mut();
        h.append(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SANDBOX_CSP));
        // Every path-based URL shares the API's origin: a function's cookies stay under its
        // own path, or they would reach (and could be planted in) every other tenant's URL.
        let own = format!("{PATH_PREFIX}{id}");
        let cookies: Vec<HeaderValue> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|c| {
                HeaderValue::from_str(&confine_cookie(&String::from_utf8_lossy(c.as_bytes()), &own)).ok()
            })
            .collect();
        h.remove(header::SET_COOKIE);
        for c in cookies {
            h.append(header::SET_COOKIE, c);
        }
        for name in ORIGIN_WIDE_HEADERS {
            h.remove(*name);
        }
    }
    resp
}

/// Response headers that act on the whole origin, not the path they came from: on the origin
/// every path-based URL shares with the API and the console, one tenant's function could wipe
/// everyone's cookies and storage (`Clear-Site-Data`), widen a service worker's scope, pin
/// HTTPS or send browsers to another server for the whole host. Dropped there (a function at
/// its own host, `--url-domain`, has an origin of its own and keeps them).
const ORIGIN_WIDE_HEADERS: &[&str] =
    &["clear-site-data", "service-worker-allowed", "strict-transport-security", "alt-svc"];

/// A `Set-Cookie` value confined under `prefix` (`/url/<id>`): its `Path` is taken as
/// relative to the URL (as the function sees its paths), a missing one becomes the URL's root,
/// and a `Domain` is dropped (a host-only cookie).
fn confine_cookie(cookie: &str, prefix: &str) -> String {
    let mut parts = cookie.split(';').map(str::trim);
    let mut out = parts.next().unwrap_or("").to_string();
    let mut path = None;
    for attr in parts.filter(|a| !a.is_empty()) {
        let name = attr.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("domain") {
            continue;
        }
        if name.eq_ignore_ascii_case("path") {
            let value = attr.split_once('=').map_or("", |(_, v)| v.trim());
            path = Some(if value.starts_with('/') { value.to_string() } else { "/".to_string() });
            continue;
        }
        out.push_str("; ");
        out.push_str(attr);
    }
    out.push_str(&format!("; Path={prefix}{}", path.as_deref().unwrap_or("/")));
    out
}

async fn serve(state: &AppState, id: &str, raw_path: String, req: Request) -> Response {
    let url = match state.service.url_by_id(id).await {
        Ok(Some(url)) => url,
        Ok(None) => return message(StatusCode::NOT_FOUND, "Not Found"),
        Err(e) => return service_error(e),
    };
    let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    let cors = url.config.cors.as_ref();
    if let (Some(cors), Some(origin)) = (cors, origin.as_deref()) {
        if req.method() == Method::OPTIONS
            && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return preflight(cors, origin, req.headers());
        }
    }
    let (req, authorizer) = match url.config.auth_type {
        AuthType::None => (req, None),
        AuthType::Iam => match authenticate(state, &url, req).await {
            // gust's credential is not the function's: it never reaches the event (nor the
            // invocation's record, which readers of the function can see).
            Ok((mut req, authorizer)) => {
                req.headers_mut().remove(header::AUTHORIZATION);
                req.headers_mut().remove("x-amz-security-token");
                (req, authorizer)
            }
            Err(resp) => return resp,
        },
    };
    let (parts, body) = req.into_parts();
    let body = match crate::body::read_bounded(body, MAX_SYNC_PAYLOAD_BYTES, "the request body").await {
        Ok(b) => b,
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
        Err(e) => return e.into_response(),
    };
    let conn = parts.extensions.get::<ConnInfo>().copied();
    let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| parts.uri.host());
    let domain_name = host.map(strip_port).unwrap_or_default().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let uri = match raw_query.as_str() {
        "" => format!("http://{}{raw_path}", host.unwrap_or("localhost")),
        q => format!("http://{}{raw_path}?{q}", host.unwrap_or("localhost")),
    };
    let Ok(uri) = uri.parse::<axum::http::Uri>() else {
        return message(StatusCode::BAD_REQUEST, "Bad Request");
    };
    // The invocation's record of a request served as it came: what it asked, not its body.
    let summary = summary(&raw_path, &raw_query, &url.url_id, parts.method.as_str());
    let (method, version) = (parts.method.clone(), parts.version);
    let mut request = axum::http::Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    let (now, target) = (state.service.now(), url.clone());
    let source_ip = conn.and_then(|c| c.peer).map(|p: SocketAddr| p.ip().to_string()).unwrap_or_default();
    // Lambda's event, made only if the function takes one (see `InvokeInput::http`).
    let event = move |call: HttpCall| {
        let request = HttpRequest {
            method: method.as_str(),
            raw_path: &raw_path,
            raw_query: &raw_query,
            headers: call.request.headers(),
            body: call.request.body(),
            source_ip,
            domain_name,
            protocol: format!("{version:?}"),
        };
        let event = http_event(&target, &request, &uuid::Uuid::new_v4().to_string(), now, authorizer);
        Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
    };
    let input = InvokeInput {
        function: url.function.clone(),
        qualifier: (url.qualifier != "$LATEST").then(|| url.qualifier.clone()),
        payload: Bytes::from(summary),
        mode: Mode::Sync,
        idempotency_key: None,
        client_context: None,
        stream: None,
        // Before the request moves into `http` (fields are evaluated in this order).
        trace: gust_core::trace::Trace::from_headers(request.headers()),
        http: Some(HttpInvoke { call: HttpCall { request }, event: Box::new(event) }),
    };
    let mut resp = match url.config.invoke_mode {
        InvokeMode::ResponseStream => stream_response(state, input).await.unwrap_or_else(|whole| whole),
        InvokeMode::Buffered => answered(state.service.invoke(input).await),
    };
    if let (Some(cors), Some(origin)) = (cors, origin.as_deref()) {
        with_cors(&mut resp, cors, origin);
    }
    resp
}

/// What the record of a request served as it came keeps (what it asked, not its body): an
/// event of its path, query, URL and method, written as it is borrowed (no JSON value built
/// first: this runs for every request); keys in the order a JSON object of them would have.
fn summary(raw_path: &str, raw_query: &str, url_id: &str, method: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Summary<'a> {
        #[serde(rename = "rawPath")]
        raw_path: &'a str,
        #[serde(rename = "rawQueryString")]
        raw_query: &'a str,
        #[serde(rename = "requestContext")]
        context: Context<'a>,
        version: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Context<'a> {
        #[serde(rename = "apiId")]
        api_id: &'a str,
        http: Method<'a>,
    }
    #[derive(serde::Serialize)]
    struct Method<'a> {
        method: &'a str,
    }
    let context = Context { api_id: url_id, http: Method { method } };
    serde_json::to_vec(&Summary { raw_path, raw_query, context, version: "2.0" }).unwrap_or_default()
}

/// The response of a finished invocation: the function's answer, or the error a URL shows.
fn answered(result: Result<Invoked, ServiceError>) -> Response {
    match result {
        Ok(Invoked::Completed { id, executed_version, outcome, .. }) => {
            let mut resp = match outcome {
                SyncOutcome::Succeeded(result) => http_response(&result).unwrap_or_else(|problem| {
                    tracing::debug!(problem, "a function URL's response was malformed");
                    message(StatusCode::BAD_GATEWAY, "Internal Server Error")
                }),
                SyncOutcome::Failed(error) => {
                    let mut resp = message(StatusCode::BAD_GATEWAY, "Internal Server Error");
                    resp.headers_mut().insert("x-amz-function-error", HeaderValue::from_static("Unhandled"));
                    if let Ok(v) = HeaderValue::from_str(gust_core::lambda::error_type(error.error_type)) {
                        resp.headers_mut().insert("x-amzn-errortype", v);
                    }
                    resp
                }
            };
            set_request_id(&mut resp, &id.0);
            if let Ok(v) = HeaderValue::from_str(&executed_version) {
                resp.headers_mut().insert("x-amz-executed-version", v);
            }
            resp
        }
        Ok(Invoked::Accepted { .. }) => message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        Err(e) => service_error(e),
    }
}

fn service_error(e: ServiceError) -> Response {
    match e {
        ServiceError::Throttled { .. } => message(StatusCode::TOO_MANY_REQUESTS, "Rate Exceeded."),
        ServiceError::TooLarge { .. } => too_large(),
        ServiceError::NotFound { .. } => message(StatusCode::NOT_FOUND, "Not Found"),
        other => crate::ApiError::from(other).into_response(),
    }
}

/// A preflight answered at the edge from the URL's CORS config: the allowances only when the
/// origin, the method and every requested header are allowed (else none, and the browser
/// refuses the request).
fn preflight(cors: &Cors, origin: &str, headers: &HeaderMap) -> Response {
    let mut resp = StatusCode::OK.into_response();
    let method =
        headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|v| v.to_str().ok()).unwrap_or("");
    let requested =
        headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| v.to_str().ok()).unwrap_or("");
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    let Some(allowed) = cors.allowed_origin(origin) else { return resp };
    if !cors.allows_method(method) || !cors.allows_headers(requested) {
        return resp;
    }
    let mut set = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    set(header::ACCESS_CONTROL_ALLOW_METHODS, cors.allow_methods.join(","));
    if !cors.allow_headers.is_empty() {
        set(header::ACCESS_CONTROL_ALLOW_HEADERS, cors.allow_headers.join(","));
    }
    if let Some(age) = cors.max_age {
        set(header::ACCESS_CONTROL_MAX_AGE, age.to_string());
    }
    if cors.allow_credentials {
        set(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".into());
    }
    resp
}

/// The URL's CORS config replaces whatever CORS headers the function answered (as Lambda).
fn with_cors(resp: &mut Response, cors: &Cors, origin: &str) {
    let h = resp.headers_mut();
    let theirs: Vec<HeaderName> =
        h.keys().filter(|k| k.as_str().starts_with("access-control-")).cloned().collect();
    for k in theirs {
        h.remove(k);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(allowed) = cors.allowed_origin(origin) else { return };
    let mut set = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    if cors.allow_credentials {
        set(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".into());
    }
    if !cors.expose_headers.is_empty() {
        set(header::ACCESS_CONTROL_EXPOSE_HEADERS, cors.expose_headers.join(","));
    }
}

/// An `AWS_IAM` URL: the caller presents a bearer token (the `--token` or an API key) or a
/// SigV4 signature, and must be allowed to invoke the function. With authentication off
/// (loopback, no token, no AWS credentials) everyone is, as on the APIs.
async fn authenticate(
    state: &AppState, url: &FunctionUrl, req: Request,
) -> Result<(Request, Option<Value>), Response> {
    let forbidden = || message(StatusCode::FORBIDDEN, "Forbidden");
    if state.cfg.token.is_none() && state.cfg.aws_credentials.is_empty() {
        return Ok((req, None));
    }
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (req, access) = if authorization.starts_with("AWS4-HMAC-SHA256 ") {
        // A body is read for the signature (at most what a URL takes) only if it declares no
        // hash; refusals of the body itself keep their status.
        let req = crate::aws::check_signed(state, req, MAX_SYNC_PAYLOAD_BYTES).await.map_err(|e| match e
            .status()
        {
            StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            StatusCode::SERVICE_UNAVAILABLE => {
                message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            }
            StatusCode::REQUEST_TIMEOUT => message(StatusCode::REQUEST_TIMEOUT, "Request Timeout"),
            _ => forbidden(),
        })?;
        let access = req.extensions().get::<Access>().cloned().ok_or_else(forbidden)?;
        (req, access)
    } else if let Some(presented) = crate::bearer(req.headers()) {
        let access = crate::caller_by_bearer(state, presented)
            .await
            .map_err(|_| forbidden())?
            .ok_or_else(forbidden)?;
        (req, access)
    } else {
        return Err(forbidden());
    };
    access.check(Action::Invoke, Some(&url.function)).map_err(|_| forbidden())?;
    let caller = access.0.principal.clone();
    let authorizer = json!({ "iam": {
        "accessKey": Value::Null,
        "accountId": ACCOUNT,
        "callerId": caller,
        "cognitoIdentity": Value::Null,
        "principalOrgId": Value::Null,
        "userArn": format!("arn:aws:iam::{ACCOUNT}:user/{caller}"),
        "userId": caller,
    }});
    Ok((req, Some(authorizer)))
}

/// What the event needs of an HTTP request.
pub(crate) struct HttpRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) raw_path: &'a str,
    pub(crate) raw_query: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
    pub(crate) source_ip: String,
    pub(crate) domain_name: String,
    pub(crate) protocol: String,
}

/// Content types whose bodies go into the event as text (if they are UTF-8); others base64.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
        || matches!(
            ct.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | "application/yaml"
        )
}

/// A value under `key`, comma-joined after any before it (repeated headers and query
/// parameters, as Lambda's 2.0 event shows them).
fn join_repeated(map: &mut BTreeMap<String, String>, key: String, value: &str) {
    map.entry(key)
        .and_modify(|joined| {
            joined.push(',');
            joined.push_str(value);
        })
        .or_insert_with(|| value.to_string());
}

/// Lambda's HTTP event, payload format 2.0.
pub(crate) fn http_event(
    url: &FunctionUrl, r: &HttpRequest<'_>, request_id: &str, now: Millis, authorizer: Option<Value>,
) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in r.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        if name == header::COOKIE {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()).map(str::to_string));
            continue;
        }
        join_repeated(&mut headers, name.as_str().to_string(), &value);
    }
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for pair in r.raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (crate::percent_decode(k, true), crate::percent_decode(v, true));
        join_repeated(&mut query, k, &v);
    }
    let user_agent = headers.get("user-agent").cloned().unwrap_or_default();
    let mut context = json!({
        "accountId": if authorizer.is_some() { ACCOUNT } else { "anonymous" },
        "apiId": url.url_id,
        "domainName": r.domain_name,
        "domainPrefix": url.url_id,
        "http": {
            "method": r.method,
            "path": r.raw_path,
            "protocol": r.protocol,
            "sourceIp": r.source_ip,
            "userAgent": user_agent,
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": clf_time(now),
        "timeEpoch": now,
    });
    if let Some(a) = authorizer {
        context["authorizer"] = a;
    }
    let content_type = headers.get("content-type").map(String::as_str);
    let mut event = Map::new();
    event.insert("version".into(), json!("2.0"));
    event.insert("routeKey".into(), json!("$default"));
    event.insert("rawPath".into(), json!(r.raw_path));
    event.insert("rawQueryString".into(), json!(r.raw_query));
    if !cookies.is_empty() {
        event.insert("cookies".into(), json!(cookies));
    }
    event.insert("headers".into(), json!(headers));
    if !query.is_empty() {
        event.insert("queryStringParameters".into(), json!(query));
    }
    event.insert("requestContext".into(), context);
    let text = if is_text(content_type) { std::str::from_utf8(r.body).ok() } else { None };
    if !r.body.is_empty() {
        match text {
            Some(t) => event.insert("body".into(), json!(t)),
            None => {
                event.insert("body".into(), json!(base64::engine::general_purpose::STANDARD.encode(r.body)))
            }
        };
    }
    event.insert("isBase64Encoded".into(), json!(!r.body.is_empty() && text.is_none()));
    Value::Object(event)
}

/// Headers the server owns: a function's own are dropped.
fn is_servers_own(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "content-length"
    )
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The HTTP response a function's result stands for: Lambda's structured answer (an object
/// with `statusCode`), a streamed response's prelude and body (collected whole), or anything
/// else as a 200 JSON body. `Err` says why it is malformed.
pub(crate) fn http_response(result: &[u8]) -> Result<Response, String> {
    if let Some((prelude, body)) = gust_core::lambda::split_prelude(result) {
        return structured(&prelude, Body::from(Bytes::copy_from_slice(body)));
    }
    let parsed: Option<Value> = serde_json::from_slice(result).ok();
    let Some(obj) = parsed.filter(|v| v.get("statusCode").is_some()) else {
        let mut resp = Response::new(Body::from(Bytes::copy_from_slice(result)));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(resp);
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if obj.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) => {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| "body is not the base64 isBase64Encoded says")?
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    structured(&obj, Body::from(body))
}

/// Most headers (cookies included) a function's answer may carry, and most bytes of their
/// names and values: far above what a web app sends, far below what would hold the server's
/// memory or panic its header map (24,576 names).
const MAX_ANSWER_HEADERS: usize = 1_000;
const MAX_ANSWER_HEADER_BYTES: usize = 256 * 1024;

/// A response with the status, headers and cookies of `obj` (a structured answer or a
/// streamed response's prelude) around `body`.
fn structured(obj: &Value, body: Body) -> Result<Response, String> {
    let status = obj
        .get("statusCode")
        .map_or(Some(200), Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or("statusCode must be an integer from 200 to 599 (a final status)")?;
    // These carry no body (RFC 9110): whatever the function wrote is dropped, so nothing
    // after them can be read as the next response.
    let body = match status {
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED => Body::empty(),
        _ => body,
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let (mut count, mut bytes) = (0usize, 0usize);
    let mut add = |name: &str, value: &str| -> Result<(), String> {
        count += 1;
        bytes += name.len() + value.len();
        if count > MAX_ANSWER_HEADERS || bytes > MAX_ANSWER_HEADER_BYTES {
            return Err(format!(
                "more than {MAX_ANSWER_HEADERS} headers or {MAX_ANSWER_HEADER_BYTES} bytes of them"
            ));
        }
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("the value of {name} is not a header value"))?;
        if !is_servers_own(&name) {
            h.try_append(name, value).map_err(|_| "too many headers".to_string())?;
        }
        Ok(())
    };
    if let Some(Value::Object(headers)) = obj.get("headers") {
        for (k, v) in headers {
            add(k, &scalar(v).ok_or_else(|| format!("header {k:?} must be a string"))?)?;
        }
    }
    if let Some(Value::Object(multi)) = obj.get("multiValueHeaders") {
        for (k, vs) in multi {
            for v in vs.as_array().ok_or_else(|| format!("multiValueHeaders {k:?} must be a list"))? {
                add(k, &scalar(v).ok_or_else(|| format!("header {k:?} must be strings"))?)?;
            }
        }
    }
    if let Some(cookies) = obj.get("cookies") {
        for c in cookies.as_array().ok_or("cookies must be a list of strings")? {
            add("set-cookie", c.as_str().ok_or("cookies must be a list of strings")?)?;
        }
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(resp)
}

// ---- response streaming ----------------------------------------------------------------------

/// The most of a streamed response's prelude read before it must have ended.
const MAX_PRELUDE_BYTES: usize = 64 * 1024;
/// What ends a streamed response's prelude.
const PRELUDE_SEPARATOR: [u8; 8] = [0; 8];
/// A RESPONSE_STREAM URL: the invocation runs in its own task; the response is sent as soon as
/// the function begins streaming (after its prelude of status and headers, if it sends one),
/// and its body follows chunk by chunk. A function that does not stream, or runs on a remote
/// worker, is answered whole when it ends. An error after the stream began cuts the body short
/// (the chunked encoding never ends), as Lambda's does.
async fn stream_response(state: &AppState, input: InvokeInput) -> Result<Response, Response> {
    let mut streaming = crate::stream::start(state.service.clone(), input);
    let Some(content_type) = streaming.begin().await else { return Err(whole(streaming.end().await)) };
    let mut head = Vec::new();
    let mut status_and_headers = None;
    if content_type == gust_core::lambda::HTTP_INTEGRATION_RESPONSE {
        // The prelude first: a JSON object, then eight NUL bytes (which no JSON text holds, so
        // the first eight are its end). Each chunk's bytes are searched once: a prelude sent a
        // byte at a time costs no more than one sent whole.
        let mut searched = 0usize;
        loop {
            match streaming.next_chunk().await {
                Some(c) => head.extend_from_slice(&c),
                None => return Err(whole(streaming.end().await)),
            }
            let from = searched.saturating_sub(PRELUDE_SEPARATOR.len() - 1);
            searched = head.len();
            if head[from..].windows(PRELUDE_SEPARATOR.len()).any(|w| w == PRELUDE_SEPARATOR) {
                let Some((prelude, rest)) = gust_core::lambda::split_prelude(&head) else {
                    tracing::debug!("a streamed response's prelude was malformed");
                    return Err(message(StatusCode::BAD_GATEWAY, "Internal Server Error"));
                };
                status_and_headers = Some(prelude);
                head = rest.to_vec();
                break;
            }
            if head.len() > MAX_PRELUDE_BYTES {
                tracing::debug!("a streamed response's prelude never ended");
                return Err(message(StatusCode::BAD_GATEWAY, "Internal Server Error"));
            }
        }
    }
    use futures_util::StreamExt as _;
    let first = (!head.is_empty()).then(|| Ok(Bytes::from(head)));
    let rest = streaming.rest().filter_map(|piece| async move {
        match piece {
            Piece::Chunk(c) => Some(Ok(c)),
            Piece::End(Ok(Ok(Invoked::Completed { outcome: SyncOutcome::Succeeded(_), .. }))) => None,
            // The stream ended: a failed invocation cuts the body short.
            Piece::End(_) => Some(Err(std::io::Error::other("the function failed while streaming"))),
        }
    });
    let body = Body::from_stream(futures_util::stream::iter(first).chain(rest));
    let mut resp = match status_and_headers {
        Some(prelude) => structured(&prelude, body).map_err(|problem| {
            tracing::debug!(problem, "a streamed response's prelude was malformed");
            message(StatusCode::BAD_GATEWAY, "Internal Server Error")
        })?,
        None => {
            let mut resp = Response::new(body);
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp
        }
    };
    resp.headers_mut().insert("x-amzn-invoked-production-mode", HeaderValue::from_static("RESPONSE_STREAM"));
    Ok(resp)
}

/// The whole answer of an invocation that ended without streaming.
fn whole(done: Ended) -> Response {
    match done {
        Ok(result) => answered(result),
        Err(_) => message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> FunctionUrl {
        FunctionUrl {
            url_id: "a".repeat(32),
            function: "f".into(),
            qualifier: "$LATEST".into(),
            config: Default::default(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn event_of(method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: &[u8]) -> Value {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let r = HttpRequest {
            method,
            raw_path: path,
            raw_query: query,
            headers: &h,
            body,
            source_ip: "127.0.0.1".into(),
            domain_name: "x.test".into(),
            protocol: "HTTP/1.1".into(),
        };
        http_event(&url(), &r, "rid", 1_795_741_924_123, None)
    }

    #[test]
    fn a_served_requests_summary_is_what_it_asked() {
        let (path, query, id) = ("/a \"b\"/\u{fc}\\", "x=1&y=%22\"", "a".repeat(32));
        let written = summary(path, query, &id, "PATCH");
        let expected = json!({
            "version": "2.0",
            "rawPath": path,
            "rawQueryString": query,
            "requestContext": { "apiId": id, "http": { "method": "PATCH" } },
        });
        assert_eq!(serde_json::from_slice::<Value>(&written).unwrap(), expected);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            expected.to_string(),
            "the bytes records kept before"
        );
    }

    #[test]
    fn the_event_is_lambdas_payload_format_2() {
        let e = event_of(
            "POST",
            "/a%20b/c",
            "x=1&y=hello%20world&x=2&flag",
            &[
                ("Content-Type", "application/json"),
                ("X-Many", "one"),
                ("x-many", "two"),
                ("Cookie", "a=1; b=2"),
                ("User-Agent", "ua/1"),
            ],
            br#"{"k":1}"#,
        );
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "$default");
        assert_eq!(e["rawPath"], "/a%20b/c");
        assert_eq!(e["rawQueryString"], "x=1&y=hello%20world&x=2&flag");
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(e["headers"]["x-many"], "one,two");
        assert!(e["headers"].get("cookie").is_none(), "cookies are not headers in 2.0");
        assert_eq!(e["queryStringParameters"], json!({ "x": "1,2", "y": "hello world", "flag": "" }));
        let c = &e["requestContext"];
        assert_eq!(
            (c["apiId"].as_str(), c["domainPrefix"].as_str()),
            (Some(&*"a".repeat(32)), Some(&*"a".repeat(32)))
        );
        assert_eq!(c["http"]["method"], "POST");
        assert_eq!(c["http"]["userAgent"], "ua/1");
        assert_eq!(c["time"], "27/Nov/2026:01:12:04 +0000");
        assert_eq!(c["timeEpoch"], 1_795_741_924_123i64);
        assert_eq!(c["accountId"], "anonymous");
        assert_eq!((e["body"].as_str(), e["isBase64Encoded"].as_bool()), (Some(r#"{"k":1}"#), Some(false)));
    }

    #[test]
    fn binary_bodies_are_base64_and_empty_ones_absent() {
        let e = event_of("PUT", "/", "", &[("content-type", "image/png")], &[0x89, b'P', 0, 255]);
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], base64::engine::general_purpose::STANDARD.encode([0x89, b'P', 0, 255]));
        let invalid_text = event_of("PUT", "/", "", &[("content-type", "text/plain")], &[0xff, 0xfe]);
        assert_eq!(invalid_text["isBase64Encoded"], true, "text that is not UTF-8 is base64 too");
        let empty = event_of("GET", "/", "", &[], b"");
        assert!(empty.get("body").is_none() && empty.get("queryStringParameters").is_none());
        assert_eq!(empty["isBase64Encoded"], false);
    }

    async fn body_of(resp: Response) -> Vec<u8> {
        axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()
    }

    #[tokio::test]
    async fn structured_answers_map_to_status_headers_cookies_and_body() {
        let r = http_response(
            br#"{"statusCode":201,"headers":{"x-a":"1","content-type":"text/plain","content-length":"999"},
                "multiValueHeaders":{"x-m":["p","q"]},"cookies":["s=1; Path=/","t=2"],
                "body":"aGk=","isBase64Encoded":true}"#,
        )
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert!(r.headers().get("content-length").is_none_or(|v| v == "2"), "the server owns Content-Length");
        assert_eq!(r.headers().get_all("x-m").iter().collect::<Vec<_>>(), ["p", "q"]);
        assert_eq!(r.headers().get_all("set-cookie").iter().collect::<Vec<_>>(), ["s=1; Path=/", "t=2"]);
        assert_eq!(body_of(r).await, b"hi");
    }

    #[tokio::test]
    async fn anything_else_is_a_200_json_body() {
        for raw in [&br#"{"message":"hi"}"#[..], b"[1,2]", b"\"text\"", b"not json"] {
            let r = http_response(raw).unwrap();
            assert_eq!(
                (r.status(), r.headers()["content-type"].to_str().unwrap()),
                (StatusCode::OK, "application/json")
            );
            assert_eq!(body_of(r).await, raw);
        }
    }

    #[test]
    fn malformed_answers_are_refused_not_passed_on() {
        for bad in [
            &br#"{"statusCode":700}"#[..],
            br#"{"statusCode":"200"}"#,
            br#"{"statusCode":200,"headers":{"x-a":"1\r\nset-cookie: stolen=1"}}"#,
            br#"{"statusCode":200,"headers":{"bad name":"1"}}"#,
            br#"{"statusCode":200,"body":"%%%","isBase64Encoded":true}"#,
            br#"{"statusCode":200,"cookies":[1]}"#,
        ] {
            assert!(http_response(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_answer_has_a_bounded_number_of_headers() {
        let answer = |n: usize| {
            let headers: serde_json::Map<String, Value> =
                (0..n).map(|i| (format!("h{i}"), json!("v"))).collect();
            json!({ "statusCode": 200, "headers": headers }).to_string()
        };
        assert_eq!(http_response(answer(MAX_ANSWER_HEADERS).as_bytes()).unwrap().headers().len(), 1_001);
        // Past a header map's own capacity (24,576 names) it would panic, not refuse.
        for n in [MAX_ANSWER_HEADERS + 1, 30_000] {
            assert!(http_response(answer(n).as_bytes()).is_err(), "{n}");
        }
        let cookies = json!({ "statusCode": 200, "cookies": vec!["a=1"; MAX_ANSWER_HEADERS + 1] });
        assert!(http_response(cookies.to_string().as_bytes()).is_err());
    }

    #[test]
    fn hosts_name_urls_under_the_url_domain_only() {
        let a = UrlAddressing { domain: Some("fn.example.com".into()), template: String::new() };
        let id = "b".repeat(32);
        assert_eq!(a.id_in_domain(&format!("{id}.fn.example.com")).as_deref(), Some(&*id));
        assert_eq!(a.id_in_domain(&format!("{id}.FN.example.com:8443")).as_deref(), Some(&*id));
        assert_eq!(a.id_in_domain(&format!("{id}.fn.example.com.")).as_deref(), Some(&*id));
        assert_eq!(a.id_in_domain(&format!("{}.fn.example.com", id.to_uppercase())).as_deref(), Some(&*id));
        assert_eq!(a.id_in_domain(&format!("{id}.evil.com")), None);
        assert_eq!(a.id_in_domain("fn.example.com"), None);
        assert_eq!(a.id_in_domain(&format!("x.{id}.fn.example.com")), None);
        assert_eq!(UrlAddressing::default().id_in_domain(&format!("{id}.fn.example.com")), None);
    }
}

#[cfg(test)]
mod cookie_tests {
    use super::confine_cookie;

    #[test]
    fn cookies_of_path_based_urls_stay_under_their_url() {
        let p = "/url/abc";
        assert_eq!(confine_cookie("s=1; Path=/; HttpOnly", p), "s=1; HttpOnly; Path=/url/abc/");
        assert_eq!(confine_cookie("s=1", p), "s=1; Path=/url/abc/");
        assert_eq!(confine_cookie("s=1; Domain=evil.com; path=/cart", p), "s=1; Path=/url/abc/cart");
        assert_eq!(confine_cookie("s=1; Path=/url/other/", p), "s=1; Path=/url/abc/url/other/");
    }
}
