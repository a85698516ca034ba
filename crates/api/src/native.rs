//! The native `/v1` API.

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use gust_core::limits::{DEFAULT_PAGE_SIZE, MAX_CODE_BYTES, MAX_CONFIG_BODY_BYTES, MAX_SYNC_PAYLOAD_BYTES};
use gust_core::{FunctionSpec, InvocationId, Mode, Routing, StateName};
use gust_service::{InvokeInput, Invoked, SyncOutcome};
use gust_store::InvocationFilter;
use serde::Deserialize;
use serde_json::json;

use crate::access::Access;
use crate::body::{header_str, if_match, parse_json, read_bounded, require_content_type};
use crate::{views, ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/functions", get(list_functions).post(create_function))
        .route("/v1/functions/{name}", put(put_function).get(get_function).delete(delete_function))
        .route("/v1/functions/{name}/code", put(put_code))
        .route("/v1/functions/{name}/deploy", post(deploy_function))
        .route(
            "/v1/functions/{name}/concurrency",
            get(get_concurrency).put(put_concurrency).delete(delete_concurrency),
        )
        .route("/v1/functions/{name}/versions", post(publish).get(list_versions))
        .route("/v1/functions/{name}/aliases", get(list_aliases))
        .route("/v1/functions/{name}/aliases/{alias}", put(put_alias).get(get_alias).delete(delete_alias))
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/functions/{name}/invocations", get(list_invocations))
        .route("/v1/functions/{name}/url", post(create_url).get(get_url).patch(update_url).delete(delete_url))
        .route("/v1/functions/{name}/urls", get(list_urls))
        .route("/v1/invocations/{id}", get(get_invocation))
        .route("/v1/workers", get(list_workers))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{name}", delete(revoke_token))
}

const JSON: &[&str] = &["application/json"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
    after: Option<String>,
}

/// A key limited to some functions sees only those, and markers name only those.
async fn list_functions(State(s): State<AppState>, access: Access, Query(page): Query<Page>) -> ApiResult {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    let (functions, next) = access.functions_page(&s.service, page.after.as_deref(), limit).await?;
    let items: Vec<_> = functions.iter().map(views::function).collect();
    Ok(Json(json!({ "functions": items, "next": next })).into_response())
}

/// `POST /v1/functions`: a new function with its code in one atomic step (one revision); 409
/// if the name exists. What `gust deploy` sends first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFunction {
    name: String,
    #[serde(default)]
    config: FunctionSpec,
    code_b64: String,
}

async fn create_function(
    State(s): State<AppState>, access: Access, headers: HeaderMap, body: Body,
) -> ApiResult {
    use base64::Engine as _;
    require_content_type(&headers, JSON)?;
    let limit = MAX_CODE_BYTES.div_ceil(3) * 4 + MAX_CONFIG_BODY_BYTES;
    let bytes = read_bounded(body, limit, "the function").await?;
    let new: NewFunction = parse_json(&bytes)?;
    access.check(gust_core::Action::Deploy, Some(&new.name))?;
    access.check_destinations(&new.config.retry)?;
    let code = base64::engine::general_purpose::STANDARD
        .decode(new.code_b64.as_bytes())
        .map_err(|_| ApiError::bad_request("InvalidCode", "code_b64 is not valid base64"))?;
    let up = s.service.create_function(&new.name, new.config, code.into()).await?;
    let mut v = views::function(&up.config);
    v["size"] = json!(up.size);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `POST /v1/functions/{name}/deploy`: the whole configuration and, optionally, new code,
/// written in one CAS-guarded step (`If-Match: <revision>`; `If-Match: 0` creates). What
/// `gust deploy` sends after reading the function and merging its flags into its configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deployment {
    #[serde(default)]
    config: FunctionSpec,
    code_b64: Option<String>,
}

async fn deploy_function(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, headers: HeaderMap, body: Body,
) -> ApiResult {
    use base64::Engine as _;
    require_content_type(&headers, JSON)?;
    let expect = if_match(&headers)?;
    let limit = MAX_CODE_BYTES.div_ceil(3) * 4 + MAX_CONFIG_BODY_BYTES;
    let bytes = read_bounded(body, limit, "the deployment").await?;
    let deployment: Deployment = parse_json(&bytes)?;
    access.check_destinations(&deployment.config.retry)?;
    let code = deployment
        .code_b64
        .map(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| ApiError::bad_request("InvalidCode", "code_b64 is not valid base64"))
        })
        .transpose()?;
    let up = s.service.deploy_function(&name, deployment.config, code.map(Into::into), expect).await?;
    let mut v = views::function(&up.config);
    if let Some(size) = up.code_size {
        v["size"] = json!(size);
    }
    Ok(Json(v).into_response())
}

/// A function's reserved concurrency (`null`: none reserved, it shares the unreserved pool).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcurrencyBody {
    reserved_concurrency: u32,
}

fn concurrency_view(f: &gust_core::FunctionConfig) -> Response {
    Json(json!({
        "function": f.name,
        "reserved_concurrency": f.spec.reserved_concurrency,
        "revision": f.revision,
    }))
    .into_response()
}

async fn get_concurrency(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult {
    Ok(concurrency_view(&s.service.get_function(&name).await?.config))
}

async fn put_concurrency(
    State(s): State<AppState>, Path(name): Path<String>, headers: HeaderMap, body: Body,
) -> ApiResult {
    require_content_type(&headers, JSON)?;
    let expect = if_match(&headers)?;
    let bytes = read_bounded(body, MAX_CONFIG_BODY_BYTES, "the concurrency").await?;
    let parsed: ConcurrencyBody = parse_json(&bytes)?;
    let f = s.service.set_reserved_concurrency(&name, Some(parsed.reserved_concurrency), expect).await?;
    Ok(concurrency_view(&f))
}

async fn delete_concurrency(
    State(s): State<AppState>, Path(name): Path<String>, headers: HeaderMap,
) -> ApiResult {
    let f = s.service.set_reserved_concurrency(&name, None, if_match(&headers)?).await?;
    Ok(concurrency_view(&f))
}

async fn put_function(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, headers: HeaderMap, body: Body,
) -> ApiResult {
    require_content_type(&headers, JSON)?;
    let expect = if_match(&headers)?;
    let bytes = read_bounded(body, MAX_CONFIG_BODY_BYTES, "the configuration").await?;
    let spec: FunctionSpec = if bytes.is_empty() { FunctionSpec::default() } else { parse_json(&bytes)? };
    access.check_destinations(&spec.retry)?;
    let f = s.service.put_function(&name, spec, expect).await?;
    Ok(Json(views::function(&f)).into_response())
}

async fn get_function(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let view = s.service.get_function(&name).await?;
    let mut v = views::function(&view.config);
    v["aliases"] = view.aliases.iter().map(views::alias).collect();
    if let Some(sha) = view.config.code_sha256.as_deref() {
        v["code_size"] = json!(crate::aws::functions::code_size(&s, Some(sha)).await);
    }
    Ok(Json(v).into_response())
}

async fn delete_function(
    State(s): State<AppState>, Path(name): Path<String>, headers: HeaderMap,
) -> ApiResult {
    let cancelled = s.service.delete_function(&name, if_match(&headers)?).await?;
    Ok(Json(json!({ "deleted": name, "cancelled_invocations": cancelled })).into_response())
}

async fn put_code(
    State(s): State<AppState>, Path(name): Path<String>, headers: HeaderMap, body: Body,
) -> ApiResult {
    require_content_type(&headers, &["application/wasm", "application/octet-stream", "application/zip"])?;
    let expect = if_match(&headers)?;
    let code = read_bounded(body, MAX_CODE_BYTES, "the code").await?;
    let up = s.service.put_code(&name, code, expect).await?;
    let mut v = views::function(&up.config);
    v["size"] = json!(up.size);
    Ok(Json(v).into_response())
}

async fn publish(State(s): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> ApiResult {
    let v = s.service.publish(&name, if_match(&headers)?, None).await?;
    Ok((StatusCode::CREATED, Json(views::version(&v))).into_response())
}

async fn list_versions(
    State(s): State<AppState>, Path(name): Path<String>, Query(page): Query<Page>,
) -> ApiResult {
    let after = page
        .after
        .map(|a| a.parse::<u64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("InvalidRequest", "after must be a version number"))?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    let versions = s.service.list_versions(&name, after, limit).await?;
    let next = (versions.len() == limit).then(|| versions.last().map(|v| v.number.to_string())).flatten();
    let items: Vec<_> = versions.iter().map(views::version).collect();
    Ok(Json(json!({ "versions": items, "next": next })).into_response())
}

async fn list_aliases(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let aliases = s.service.list_aliases(&name).await?;
    let items: Vec<_> = aliases.iter().map(views::alias).collect();
    Ok(Json(json!({ "aliases": items })).into_response())
}

/// `{"version": N, "weights": {"M": 0.2}}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    version: u64,
    #[serde(default)]
    weights: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    description: String,
}

async fn put_alias(
    State(s): State<AppState>, Path((name, alias)): Path<(String, String)>, headers: HeaderMap, body: Body,
) -> ApiResult {
    require_content_type(&headers, JSON)?;
    let expect = if_match(&headers)?;
    let bytes = read_bounded(body, MAX_CONFIG_BODY_BYTES, "the alias").await?;
    let parsed: AliasBody = parse_json(&bytes)?;
    let mut routing = Routing::single(parsed.version);
    for (v, w) in parsed.weights {
        let v = v.parse::<u64>().map_err(|_| {
            ApiError::bad_request("InvalidRouting", format!("weight key {v:?} is not a version number"))
        })?;
        routing.weights.insert(v, w);
    }
    let a = s.service.put_alias(&name, &alias, routing, &parsed.description, expect).await?;
    Ok(Json(views::alias(&a)).into_response())
}

async fn get_alias(State(s): State<AppState>, Path((name, alias)): Path<(String, String)>) -> ApiResult {
    Ok(Json(views::alias(&s.service.get_alias(&name, &alias).await?)).into_response())
}

async fn delete_alias(
    State(s): State<AppState>, Path((name, alias)): Path<(String, String)>, headers: HeaderMap,
) -> ApiResult {
    s.service.delete_alias(&name, &alias, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeQuery {
    qualifier: Option<String>,
}

async fn invoke(
    State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<InvokeQuery>, req: Request,
) -> ApiResult {
    invoke_function(&s, name, q.qualifier, req).await
}

/// The invoke handler once its path and query are read (also the gateway's, which reads them
/// itself).
pub(crate) async fn invoke_function(
    s: &AppState, name: String, qualifier: Option<String>, req: Request,
) -> ApiResult {
    // The request's own headers, not a copy (a `HeaderMap` extractor clones them).
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let mode = match header_str(headers, "invocation-type")? {
        None => Mode::Sync,
        Some(t) => Mode::parse(&t.to_ascii_lowercase()).ok_or_else(|| {
            ApiError::bad_request("InvalidRequest", "Invocation-Type must be sync or async")
        })?,
    };
    let idempotency_key = header_str(headers, "idempotency-key")?.map(str::to_string);
    // Read up to the sync limit; the service applies the (smaller) async limit with a message.
    let payload = read_bounded(body, MAX_SYNC_PAYLOAD_BYTES, "the payload").await?;
    let input = InvokeInput {
        function: name,
        qualifier,
        payload,
        mode,
        idempotency_key,
        client_context: None,
        stream: None,
        http: None,
        trace: gust_core::trace::Trace::from_headers(headers),
    };
    match s.service.invoke(input).await? {
        Invoked::Accepted { id, existing: _ } => {
            let mut resp = (StatusCode::ACCEPTED, Json(json!({ "invocation_id": id }))).into_response();
            resp.headers_mut().insert("gust-invocation-id", header_value(&id.0));
            Ok(resp)
        }
        Invoked::Completed { id, executed_version, outcome, .. } => {
            let mut resp = match outcome {
                SyncOutcome::Succeeded(out) => {
                    ([(header::CONTENT_TYPE, "application/octet-stream")], out).into_response()
                }
                SyncOutcome::Failed(err) => {
                    let mut r = Json(&err).into_response();
                    r.headers_mut().insert("gust-function-error", header_value(err.error_type.as_str()));
                    r
                }
            };
            resp.headers_mut().insert("gust-invocation-id", header_value(&id.0));
            resp.headers_mut().insert("gust-executed-version", header_value(&executed_version));
            Ok(resp)
        }
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvocationQuery {
    state: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
    /// Only invocations received before this time (ms since the epoch).
    received_before: Option<i64>,
}

/// The id cursor of "received before `ms`": invocation ids are UUIDv7, whose text begins with
/// the time they were made in milliseconds, so every id made before `ms` sorts below it.
fn id_before(ms: i64) -> String {
    let h = format!("{:012x}", ms.clamp(0, (1 << 48) - 1));
    format!("{}-{}-0000-0000-000000000000", &h[..8], &h[8..])
}

async fn list_invocations(
    State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<InvocationQuery>,
) -> ApiResult {
    let state = q
        .state
        .map(|st| {
            StateName::parse(&st).ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidRequest",
                    format!("unknown state {st:?}; use one of {:?}", StateName::ALL),
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    let before = match (q.before, q.received_before.map(id_before)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let filter = InvocationFilter { state, before: before.map(InvocationId), limit, ..Default::default() };
    let records = s.service.list_invocations(&name, filter).await?;
    let next = (records.len() == limit).then(|| records.last().map(|r| r.request.id.0.clone())).flatten();
    let items: Vec<_> = records.iter().map(|r| views::invocation(r, false)).collect();
    Ok(Json(json!({ "invocations": items, "next": next })).into_response())
}

async fn get_invocation(State(s): State<AppState>, access: Access, Path(id): Path<String>) -> ApiResult {
    let rec = s.service.get_invocation(&id).await?;
    access.check(gust_core::Action::Read, Some(&rec.request.function))?;
    Ok(Json(views::invocation(&rec, true)).into_response())
}

async fn list_workers(State(s): State<AppState>) -> ApiResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let liveness = gust_service::LIVENESS_BOUND.as_millis() as i64;
    let workers = s.service.workers().await?;
    let items: Vec<_> = workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "live": w.is_live(now, liveness),
                "last_heartbeat": w.last_heartbeat,
                "revision": w.revision,
                "runtimes": w.runtimes,
                "capacity": w.capacity,
                "running": w.running,
                "warm_environments": w.warm.len(),
                "snapshot_version": w.snapshot_version,
                "server": w.server,
            })
        })
        .collect();
    Ok(Json(json!({ "workers": items })).into_response())
}

/// `POST /v1/tokens`: `{"name", "role", "functions"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    #[serde(default)]
    functions: Option<String>,
}

/// Creates a named key and answers, once, its bearer token and SigV4 key pair. Refused
/// without a `--token`: such a server checks no credentials at all, so a key would protect
/// nothing and its holder could do everything.
async fn create_token(State(s): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    if s.cfg.token.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "AuthenticationOff",
            "this server has no --token, so it checks no credentials and API keys would protect nothing: restart it with --token (or GUST_TOKEN) to use named keys",
        ));
    }
    require_content_type(&headers, JSON)?;
    let bytes = read_bounded(body, MAX_CONFIG_BODY_BYTES, "the key").await?;
    let new: NewToken = parse_json(&bytes)?;
    let role = gust_core::Role::parse(&new.role).ok_or_else(|| {
        ApiError::bad_request(
            "InvalidRequest",
            format!("unknown role {:?}: use admin, deployer, invoker or reader", views_truncate(&new.role)),
        )
    })?;
    let issued = s.keys.create(&new.name, role, new.functions.as_deref(), s.service.now()).await?;
    let mut v = views::api_key(&issued.key);
    v["token"] = json!(issued.bearer_token);
    v["secret_access_key"] = json!(issued.secret_access_key);
    tracing::info!(name = %issued.key.name, role = %issued.key.role, "API key created");
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

fn views_truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

async fn list_tokens(State(s): State<AppState>) -> ApiResult {
    let keys = s.keys.list().await?;
    Ok(Json(json!({ "tokens": keys.iter().map(views::api_key).collect::<Vec<_>>() })).into_response())
}

async fn revoke_token(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult {
    s.keys.revoke(&name).await?;
    tracing::info!(name = %name, "API key revoked");
    Ok(Json(json!({ "revoked": name })).into_response())
}

/// A URL config as `/v1` takes it: what is given is set (on create, `auth_type` is required,
/// so a public URL is always asked for).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlBody {
    auth_type: Option<gust_core::AuthType>,
    #[serde(default, deserialize_with = "some_even_if_null")]
    cors: Option<Option<gust_core::Cors>>,
    invoke_mode: Option<gust_core::InvokeMode>,
}

/// `"cors": null` removes the CORS config: present-but-null is `Some(None)`.
fn some_even_if_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<gust_core::Cors>>, D::Error> {
    Option::<gust_core::Cors>::deserialize(d).map(Some)
}

async fn url_body(headers: &HeaderMap, body: Body) -> Result<UrlBody, ApiError> {
    require_content_type(headers, JSON)?;
    let bytes = read_bounded(body, MAX_CONFIG_BODY_BYTES, "the URL config").await?;
    parse_json(&bytes)
}

async fn create_url(
    State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<InvokeQuery>, headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let b = url_body(&headers, body).await?;
    let auth_type = b.auth_type.ok_or_else(|| {
        ApiError::bad_request(
            "InvalidRequest",
            "auth_type is required: NONE (public) or AWS_IAM (gust's auth)",
        )
    })?;
    let config = gust_core::UrlConfig {
        auth_type,
        cors: b.cors.flatten(),
        invoke_mode: b.invoke_mode.unwrap_or_default(),
    };
    let url = s.service.create_url(&name, q.qualifier.as_deref(), config).await?;
    Ok((StatusCode::CREATED, Json(views::url(&url, &s.cfg.urls))).into_response())
}

async fn get_url(
    State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<InvokeQuery>,
) -> ApiResult {
    let url = s.service.get_url(&name, q.qualifier.as_deref()).await?;
    Ok(Json(views::url(&url, &s.cfg.urls)).into_response())
}

async fn update_url(
    State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<InvokeQuery>, headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let b = url_body(&headers, body).await?;
    let patch = gust_service::UrlPatch { auth_type: b.auth_type, cors: b.cors, invoke_mode: b.invoke_mode };
    let url = s.service.update_url(&name, q.qualifier.as_deref(), patch).await?;
    Ok(Json(views::url(&url, &s.cfg.urls)).into_response())
}

async fn delete_url(
    State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<InvokeQuery>,
) -> ApiResult {
    s.service.delete_url(&name, q.qualifier.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_urls(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let urls = s.service.list_urls(&name).await?;
    let items: Vec<_> = urls.iter().map(|u| views::url(u, &s.cfg.urls)).collect();
    Ok(Json(json!({ "urls": items })).into_response())
}
