//! gust's HTTP surface: the native `/v1` JSON API, health and metrics.
//!
//! Handlers translate HTTP to [`gust_service::Service`] calls and back, nothing more: every
//! business rule lives in the service. This is the only crate that knows HTTP status codes.
//! Bodies are read through one bounded reader ([`body::read_bounded`]: a size limit, a
//! deadline and a share of a process-wide budget); no handler reads an unbounded body.
//! Every request first passes the edge ([`edge`]): connection limits and timeouts in
//! [`serve`], then the browser guard (Host, Origin, content type), then authentication (who
//! is calling: the `--token`, an `--aws-credential` or a named API key), then authorization
//! ([`access`]: may this caller take this route for this function), all before any body is
//! read.

mod access;
mod aws;
mod body;
mod console;
mod edge;
pub use edge::REQUEST_SPANS;
mod error;
mod gateway;
pub use gateway::Gateway;
mod internal;
mod logs;
mod native;
mod peer;
mod queues;
mod schedules;
mod stats;
mod stream;
pub mod tls;
mod url;
mod views;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use gust_core::access::Grant;
use gust_service::{ApiKeys, Service};

pub use edge::{
    raise_fd_limit, serve, BrowserPolicy, InvalidPolicy, ServeLimits, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITE_STALL_TIMEOUT,
};
pub use error::ApiError;
pub use gust_core::protocol::{EnrollRequest, IssuedCredential};
pub use internal::ProvisionRequest;
pub use url::UrlAddressing;

/// What the HTTP layer needs besides the service.
#[derive(Clone, Default)]
pub struct ApiConfig {
    /// Bearer token required on every `/v1` endpoint; `None` disables authentication
    /// (allowed only on loopback; the binary enforces that).
    pub token: Option<Arc<str>>,
    /// The enrollment token: a worker presenting it gets its own id and secret
    /// (`/internal/v1/workers/enroll`), and it is good for nothing else; `None` disables
    /// enrollment (provisioned worker credentials still work).
    pub worker_token: Option<Arc<str>>,
    /// SigV4 credentials of the AWS API: access key id to secret.
    pub aws_credentials: Arc<std::collections::HashMap<String, String>>,
    /// Which web pages (`--allow-origin`) and names (`--public-host`) the API answers.
    pub browser: Arc<BrowserPolicy>,
    /// How function URLs are addressed and shown.
    pub urls: Arc<UrlAddressing>,
    /// The secret peer servers hand over invocations with (shared through the store);
    /// `None`: this server takes none.
    pub peer_secret: Option<Arc<str>>,
}

impl ApiConfig {
    /// The AWS API checks signatures whenever authentication is on (a token or AWS credentials).
    pub(crate) fn aws_auth(&self) -> bool {
        self.token.is_some() || !self.aws_credentials.is_empty()
    }
}

/// What every handler shares: one reference count to clone per request (axum clones the state
/// for each layer and extractor).
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub(crate) struct Shared {
    pub(crate) service: Arc<Service>,
    pub(crate) cfg: ApiConfig,
    /// Code sizes by sha256, for the AWS API's CodeSize (artifacts never change).
    pub(crate) code_sizes: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    /// Named API keys, looked up through a short-lived cache.
    pub(crate) keys: Arc<ApiKeys>,
    /// The caller who presents the `--token`.
    pub(crate) bootstrap: access::Access,
}

/// Builds the whole router (tests call it without a socket).
fn app_state(service: Arc<Service>, cfg: ApiConfig) -> AppState {
    let keys = Arc::new(ApiKeys::new(service.store().clone()));
    let bootstrap = access::Access(Arc::new(Grant::admin("the --token")));
    AppState(Arc::new(Shared { service, cfg, code_sizes: Arc::default(), keys, bootstrap }))
}

/// The `--url-listen` listener's router: every request is a function URL's, named by the
/// first label of its Host (`<url-id>.localhost:PORT`); nothing of the API is served there.
pub fn url_router(service: Arc<Service>, cfg: ApiConfig) -> Router {
    let state = app_state(service, cfg);
    Router::new().fallback(url::serve_any_host).with_state(state)
}

/// The main listener's service: every route of both APIs, the console, function URLs and the
/// worker protocol, behind the edge's guard ([`Gateway`] takes the native invoke's happy path
/// before them).
pub fn router(service: Arc<Service>, cfg: ApiConfig) -> Gateway {
    let state = app_state(service, cfg);
    let aws = aws::routes(state.clone());
    let native = native::routes()
        .merge(logs::routes())
        .merge(stats::routes())
        .merge(queues::routes())
        .merge(schedules::routes())
        .merge(internal::admin_routes());
    let v1 = match state.cfg.token {
        Some(_) => native
            .route_layer(middleware::from_fn(access::authorize))
            .layer(middleware::from_fn_with_state(state.clone(), authenticate)),
        // No token (loopback only): no per-request middleware at all.
        None => native,
    };
    // Always mounted: workers with provisioned credentials need no enrollment token.
    let internal =
        internal::routes().layer(middleware::from_fn_with_state(state.clone(), internal::authenticate));
    // Function URLs answer anyone: the URL's own auth type and CORS config apply.
    let any = axum::routing::any(url::serve_path);
    let app = Router::new()
        .route("/url/{id}", any.clone())
        .route("/url/{id}/", any.clone())
        .route("/url/{id}/{*rest}", any)
        .route("/healthz", get(|| async { "ok" }))
        .merge(console::routes())
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .merge(internal)
        .route(gust_core::peer::INVOKE_PATH, post(peer::invoke))
        .merge(aws)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such endpoint") })
        // Outermost: browsers are refused before authentication and before any body is read.
        .layer(middleware::from_fn_with_state(state.clone(), edge::guard));
    // Each request in a span of its own only for JSON logs (chosen at start, before this):
    // a layer costs every request a boxed future and a clone of the routes behind it.
    match REQUEST_SPANS.load(std::sync::atomic::Ordering::Relaxed) {
        true => Gateway::new(app.layer(middleware::from_fn(edge::request_span)).with_state(state), None),
        false => Gateway::new(app.with_state(state.clone()), Some(state)),
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// `/v1` authentication, from the headers alone: the `--token` (an admin) or a named key's
/// bearer token (`gust_<id>_<secret>`, found by id through [`ApiKeys`]' short-lived cache).
/// The caller's [`access::Access`] goes into the request for [`access::authorize`].
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let unauthorized =
        || ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "a valid bearer token is required");
    let Some(presented) = bearer(req.headers()) else { return unauthorized().into_response() };
    let caller = match caller_by_bearer(&state, presented).await {
        Ok(Some(caller)) => caller,
        Ok(None) => return unauthorized().into_response(),
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Who presents bearer token `presented`: the `--token` (an admin) or a named key; `None` if
/// no one.
pub(crate) async fn caller_by_bearer(
    state: &AppState, presented: &str,
) -> Result<Option<access::Access>, ApiError> {
    if let Some(token) = &state.cfg.token {
        if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            return Ok(Some(state.bootstrap.clone()));
        }
    }
    Ok(state
        .keys
        .by_bearer(presented, state.service.now())
        .await?
        .map(|key| access::Access(Arc::new(key.grant()))))
}

/// `%XX` escapes decoded (an escape that is not one stays as it is), and `+` as a space where
/// the text is form-encoded (a query string a browser sends), not where it is SigV4's.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Ready when the store answers and has room for new work: a store whose disk is full answers
/// 503 `InsufficientStorage` (it still runs sync invocations and finishes accepted work, but
/// refuses new work), so a load balancer can send new work elsewhere until space is freed.
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.service.store().check_space() {
        let message = format!("{e}; new work is refused until space is freed");
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "InsufficientStorage", &message)
            .into_response();
    }
    match state.service.store().snapshot_version().await {
        Ok(_) => "ready".into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotReady", &e.to_string()).into_response(),
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // The per-function series name every tenant's functions: with authentication on, only a
    // scrape whose token reads every function gets them (the rest stays public).
    let per_function = match &state.cfg.token {
        None => true,
        Some(_) => match bearer(&headers) {
            Some(b) => matches!(
                caller_by_bearer(&state, b).await,
                Ok(Some(a)) if a.0.functions.is_none() && a.0.check(gust_core::Action::Read, None).is_ok()
            ),
            None => false,
        },
    };
    let mut out = String::new();
    let mut counter = |series: &str, help: &str, kind: &str, value: u64| {
        let name = series.split('{').next().unwrap_or(series);
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{series} {value}\n"));
    };
    for (name, help, value) in state.service.metrics().snapshot() {
        counter(name, help, "counter", value);
    }
    // Store-wide figures: every server of a cluster shows the same value, so they carry
    // `scope="cluster"` and aggregate with max (not sum) across instances.
    if let Ok(c) = state.service.store().counters().await {
        counter(
            "gust_store_fenced_completions_total{scope=\"cluster\"}",
            "Fenced completions refused by the store (cluster-wide: aggregate with max, not sum)",
            "counter",
            c.fenced_completions,
        );
        counter(
            "gust_store_fenced_renewals_total{scope=\"cluster\"}",
            "Fenced lease renewals refused by the store (cluster-wide: aggregate with max, not sum)",
            "counter",
            c.fenced_renewals,
        );
    }
    counter(
        "gust_store_disk_full",
        "1 while the store's disk is below the reserve kept for finishing accepted work (new work is refused), else 0",
        "gauge",
        u64::from(state.service.store().check_space().is_err()),
    );
    let exec = state.service.executor();
    counter(
        "gust_worker_free_slots",
        "Free execution slots on the local worker",
        "gauge",
        exec.free_slots() as u64,
    );
    counter(
        "gust_worker_warm_environments",
        "Warm environments on the local worker",
        "gauge",
        exec.warm_environments() as u64,
    );
    counter(
        "gust_running_attempts",
        "Attempts running on this process",
        "gauge",
        state.service.running_attempts() as u64,
    );
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    counter(
        "gust_http_connections_open",
        "HTTP connections open",
        "gauge",
        edge::OPEN_CONNECTIONS.load(relaxed),
    );
    counter(
        "gust_http_connection_cap_waits_total",
        "Times the accept loop waited at the connection cap for a connection to close",
        "counter",
        edge::CAP_WAITS.load(relaxed),
    );
    counter(
        "gust_http_accept_errors_total",
        "Failed accepts (such as EMFILE), each followed by a short back-off",
        "counter",
        edge::ACCEPT_ERRORS.load(relaxed),
    );
    counter(
        "gust_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out (untrusted certificate, protocol error, silent client)",
        "counter",
        edge::TLS_HANDSHAKE_FAILURES.load(relaxed),
    );
    counter(
        "gust_tls_plain_http_total",
        "Plain-HTTP requests to the TLS port, answered 400",
        "counter",
        edge::TLS_PLAIN_HTTP.load(relaxed),
    );
    counter("gust_tls_reloads_total", "TLS certificate reloads", "counter", edge::TLS_RELOADS.load(relaxed));
    if per_function {
        exec.write_metrics(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
