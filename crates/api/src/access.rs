//! Authorization: which caller may take which route, for which function.
//!
//! Authentication (the `/v1` bearer middleware, the AWS API's SigV4 check) puts the caller's
//! [`Access`] into the request. [`authorize`] then runs as a route layer, after routing and
//! before the handler, so before any body is read and before any side effect: it looks the
//! matched route up in a table ([`native_rule`], [`aws_rule`]) that says which
//! [`Action`] it is and whether the function it is about is in the path. A route missing
//! from the tables is for unscoped admins only, so a route added without a rule fails closed.
//! Where the function is not in the path, the handler scopes with [`Access`]: listings show
//! only covered functions, a body that names a function (create, destinations) and an
//! invocation record are checked before anything is done.

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gust_core::access::{Action, Denied, Grant};

use crate::aws::AwsError;
use crate::{ApiError, AppState};

/// The caller of a request, as authentication established it.
#[derive(Clone, Debug)]
pub(crate) struct Access(pub(crate) Arc<Grant>);

impl Access {
    /// Where an API has no authentication (loopback without a token), anyone is an admin.
    fn unauthenticated() -> Access {
        Access(Arc::new(Grant::admin("anyone (authentication is off)")))
    }

    pub(crate) fn check(&self, action: Action, function: Option<&str>) -> Result<(), Denied> {
        self.0.check(action, function)
    }

    /// Whether a listing shows `function`.
    pub(crate) fn covers(&self, function: &str) -> bool {
        self.0.covers(function)
    }

    /// A configuration's destinations are functions it invokes: they must be covered too.
    /// A page of at most `limit` functions after `after` that this key covers, and the marker
    /// of the next page: the last function returned, never one the key does not cover (a
    /// marker taken from the unfiltered page would name other tenants' functions).
    pub(crate) async fn functions_page(
        &self, service: &gust_service::Service, after: Option<&str>, limit: usize,
    ) -> Result<(Vec<gust_core::FunctionConfig>, Option<String>), gust_service::ServiceError> {
        let limit = limit.clamp(1, gust_core::limits::MAX_PAGE_SIZE);
        if self.0.functions.is_none() {
            let page = service.list_functions(after, limit).await?;
            let next = (page.len() == limit).then(|| page.last().map(|f| f.name.clone())).flatten();
            return Ok((page, next));
        }
        // Scoped: read on past functions it does not cover until the page is full.
        const SCAN: usize = 256;
        let (mut covered, mut cursor) = (Vec::new(), after.map(str::to_string));
        loop {
            let page = service.list_functions(cursor.as_deref(), SCAN).await?;
            let exhausted = page.len() < SCAN;
            cursor = page.last().map(|f| f.name.clone());
            for f in page.into_iter().filter(|f| self.covers(&f.name)) {
                covered.push(f);
                if covered.len() == limit {
                    let next = covered.last().map(|f| f.name.clone());
                    return Ok((covered, next));
                }
            }
            if exhausted {
                return Ok((covered, None));
            }
        }
    }

    /// A configuration's destinations are functions it invokes, or queues it sends to (as is
    /// its dead-letter queue): the caller must be able to do the same.
    pub(crate) fn check_destinations(&self, retry: &gust_core::RetryPolicy) -> Result<(), Denied> {
        use gust_core::function::Destination;
        let queue = |name: &str| {
            self.check(Action::Invoke, None)?;
            match &self.0.functions {
                Some(_) => Err(Denied(format!(
                    "{} is limited to some functions and has no queues (queue {name})",
                    self.0.principal
                ))),
                None => Ok(()),
            }
        };
        for d in [&retry.on_success, &retry.on_failure].into_iter().flatten() {
            match Destination::of(d) {
                Some(Destination::Queue(q)) => queue(q)?,
                _ => self.check(Action::Invoke, Some(d))?,
            }
        }
        if let Some(q) = &retry.dead_letter_queue {
            queue(q)?;
        }
        Ok(())
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        ApiError { status: StatusCode::FORBIDDEN, code: "AccessDenied", message: d.0 }
    }
}

impl From<Denied> for AwsError {
    fn from(d: Denied) -> Self {
        AwsError::new(StatusCode::FORBIDDEN, "AccessDeniedException", d.0)
    }
}

fn is_native(path: &str) -> bool {
    path.starts_with("/v1/")
}

impl FromRequestParts<AppState> for Access {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if let Some(access) = parts.extensions.get::<Access>() {
            return Ok(access.clone());
        }
        let native = is_native(parts.uri.path());
        let authenticated = if native { state.cfg.token.is_some() } else { state.cfg.aws_auth() };
        if !authenticated {
            return Ok(Access::unauthenticated());
        }
        // Authentication is on but did not run: a routing mistake; refuse rather than guess.
        let message = "the request reached a handler without authentication";
        tracing::error!(path = parts.uri.path(), "{message}");
        Err(if native {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", message).into_response()
        } else {
            AwsError::new(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", message).into_response()
        })
    }
}

/// What a route does, and where its function is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    action: Action,
    /// The function is the `{name}` path parameter, checked here; otherwise the handler
    /// scopes (a listing, a body naming the function, an invocation record) or the route is
    /// about no function.
    function_in_path: bool,
}

const fn on_path(action: Action) -> Option<Rule> {
    Some(Rule { action, function_in_path: true })
}

const fn in_handler(action: Action) -> Option<Rule> {
    Some(Rule { action, function_in_path: false })
}

/// The rule of each `/v1` route (as `native::routes` registers it).
pub(crate) fn native_rule(method: &Method, route: &str) -> Option<Rule> {
    use Action::*;
    let (get, write) = (method == Method::GET, method != Method::GET);
    match route {
        "/v1/functions" if get => in_handler(Read),
        "/v1/functions" => in_handler(Deploy),
        "/v1/functions/{name}"
        | "/v1/functions/{name}/versions"
        | "/v1/functions/{name}/aliases"
        | "/v1/functions/{name}/aliases/{alias}"
        | "/v1/functions/{name}/invocations"
        | "/v1/functions/{name}/logs"
        | "/v1/functions/{name}/stats"
        | "/v1/functions/{name}/url"
        | "/v1/functions/{name}/urls"
        | "/v1/functions/{name}/concurrency"
            if get =>
        {
            on_path(Read)
        }
        "/v1/functions/{name}" if write => on_path(Deploy),
        "/v1/functions/{name}/code"
        | "/v1/functions/{name}/deploy"
        | "/v1/functions/{name}/concurrency"
        | "/v1/functions/{name}/versions"
        | "/v1/functions/{name}/aliases/{alias}"
        | "/v1/functions/{name}/url" => on_path(Deploy),
        "/v1/functions/{name}/invoke" => on_path(Invoke),
        "/v1/invocations/{id}" if get => in_handler(Read),
        "/v1/tokens" | "/v1/tokens/{name}" => in_handler(Admin),
        // Queues: each operation's role is checked by the SQS implementation they share.
        "/v1/queues"
        | "/v1/queues/{name}"
        | "/v1/queues/{name}/messages"
        | "/v1/queues/{name}/messages/{receipt}"
        | "/v1/queues/{name}/receive"
        | "/v1/queues/{name}/purge" => in_handler(Read),
        // Schedules: the handler checks the action and the target function.
        "/v1/schedules"
        | "/v1/schedules/{name}"
        | "/v1/schedules/{name}/history"
        | "/v1/schedule-groups"
        | "/v1/schedule-groups/{name}" => in_handler(Read),
        _ => None,
    }
}

/// The rule of each AWS Lambda API route (as `aws::routes` registers it).
pub(crate) fn aws_rule(method: &Method, route: &str) -> Option<Rule> {
    use Action::*;
    let get = method == Method::GET;
    let read_or_deploy = if get { on_path(Read) } else { on_path(Deploy) };
    match route {
        "/2015-03-31/functions" | "/2015-03-31/functions/" if get => in_handler(Read),
        "/2015-03-31/functions" => in_handler(Deploy),
        "/2015-03-31/functions/{name}/invocations"
        | "/2021-11-15/functions/{name}/response-streaming-invocations" => on_path(Invoke),
        "/2015-03-31/functions/{name}"
        | "/2015-03-31/functions/{name}/configuration"
        | "/2015-03-31/functions/{name}/code"
        | "/2015-03-31/functions/{name}/versions"
        | "/2015-03-31/functions/{name}/aliases"
        | "/2015-03-31/functions/{name}/aliases/{alias}"
        | "/2017-10-31/functions/{name}/concurrency"
        | "/2019-09-30/functions/{name}/concurrency"
        | "/2019-09-25/functions/{name}/event-invoke-config"
        | "/2019-09-25/functions/{name}/event-invoke-config/list"
        | "/2021-10-31/functions/{name}/url"
        | "/2021-10-31/functions/{name}/urls" => read_or_deploy,
        // Event source mappings name their function in the body or the stored mapping.
        "/2015-03-31/event-source-mappings"
        | "/2015-03-31/event-source-mappings/"
        | "/2015-03-31/event-source-mappings/{uuid}" => in_handler(Read),
        // EventBridge Scheduler: the handler checks the action and the target function.
        "/schedules"
        | "/schedules/{name}"
        | "/schedule-groups"
        | "/schedule-groups/{name}"
        | "/tags/{*arn}" => in_handler(Read),
        // SQS (`X-Amz-Target`): the handler checks each operation's action.
        "/" if method == Method::POST => in_handler(Read),
        // Counts of the functions the caller covers.
        "/2016-08-19/account-settings" | "/2016-08-19/account-settings/" if get => in_handler(Read),
        _ => None,
    }
}

/// The route layer of both APIs: the caller's role must allow the route's action, and, when
/// the route names its function in the path, the caller's glob must cover it.
pub(crate) async fn authorize(
    params: Result<RawPathParams, RawPathParamsRejection>, req: Request, next: Next,
) -> Response {
    let params = params.ok();
    let native = is_native(req.uri().path());
    let verdict = match req.extensions().get::<Access>() {
        // No authentication on this API: nothing to decide.
        None => Ok(()),
        Some(access) => decide(access, &req, params.as_ref(), native),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(denied) if native => ApiError::from(denied).into_response(),
        Err(denied) => AwsError::from(denied).into_response(),
    }
}

/// Whether [`authorize`] lets `access` take native `route` (one naming its function in the
/// path) by `method` for function `name`.
pub(crate) fn allows(access: &Access, method: &Method, route: &str, name: &str) -> bool {
    match native_rule(method, route) {
        Some(rule) if rule.function_in_path => access.check(rule.action, Some(name)).is_ok(),
        _ => false,
    }
}

fn decide(
    access: &Access, req: &Request, params: Option<&RawPathParams>, native: bool,
) -> Result<(), Denied> {
    let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("");
    let rule = if native { native_rule(req.method(), route) } else { aws_rule(req.method(), route) };
    let Some(rule) = rule else {
        // Routes about no function (API keys, workers): unscoped admins only.
        access.check(Action::Admin, None)?;
        return match &access.0.functions {
            Some(_) => Err(Denied(format!("{} is limited to some functions", access.0.principal))),
            None => Ok(()),
        };
    };
    if !rule.function_in_path {
        return access.check(rule.action, None);
    }
    let raw = params.and_then(|p| p.iter().find(|(k, _)| *k == "name").map(|(_, v)| v));
    let function = match raw {
        Some(raw) if native => Some(raw),
        // The AWS API names a function by name, partial or full ARN, maybe with a qualifier.
        Some(raw) => gust_core::lambda::split_function_name(raw).map(|(name, _)| name),
        None => None,
    };
    match function {
        Some(name) => access.check(rule.action, Some(name)),
        // Not a function name at all: the handler refuses it; a scoped caller may not even ask.
        None if access.0.functions.is_none() => access.check(rule.action, None),
        None => Err(Denied(format!("{} may not use this function name", access.0.principal))),
    }
}
