//! The main listener's service: the router, with the two hot paths taken before it. A native
//! invoke (`POST /v1/functions/{name}/invoke`) that every check of the router's way would let
//! through, and a request to a path-based function URL (`/url/<id>/...`, public), are answered
//! here by the same handlers, without axum's routing, layers and extractors (measured in
//! BENCHMARKS.md).
//!
//! Only acceptance is decided here, and by the router's own checks: the browser guard
//! (`edge::admits`), authentication (`caller_by_bearer`) and the route's access rule
//! (`access::allows`). Anything they would refuse, and any request whose shape this
//! path does not take exactly (a query, a name that would need decoding, a URL's host, request
//! spans), goes through the router, which answers it as it always did.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::future::Either;
use tower::{Service, ServiceExt as _};

use crate::{access, edge, AppState};

/// The route whose happy path is taken here.
const INVOKE_ROUTE: &str = "/v1/functions/{name}/invoke";

/// [`crate::router`]'s service; see the module's documentation.
#[derive(Clone)]
pub struct Gateway {
    router: Router,
    /// `None`: every request goes through the router (request spans are on).
    state: Option<AppState>,
}

impl Gateway {
    pub(crate) fn new(router: Router, state: Option<AppState>) -> Self {
        Gateway { router, state }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Answer, <Router as Service<Request>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let url = is_path_based_url(&req);
        let name = if url { None } else { invoked_function(&req) };
        let state = self.state.as_ref().filter(|state| (url || name.is_some()) && edge::admits(state, &req));
        let Some(state) = state.cloned() else { return Either::Right(self.router.call(req)) };
        let Some(name) = name.map(str::to_string) else {
            // A URL is public: its own auth type and CORS config apply in its handler.
            return Either::Left(Box::pin(
                async move { Ok(crate::url::serve_path(State(state), req).await) },
            ));
        };
        let router = self.router.clone();
        let presented = crate::bearer(req.headers()).map(str::to_string);
        Either::Left(Box::pin(async move {
            if !authorized(&state, &name, presented.as_deref()).await {
                return router.oneshot(req).await;
            }
            Ok(match crate::native::invoke_function(&state, name, None, req).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            })
        }))
    }
}

/// `/url/<id>[/...]` with an id, which the router's `/url/{id}` routes take (any method).
fn is_path_based_url(req: &Request) -> bool {
    let Some(rest) = req.uri().path().strip_prefix(crate::url::PATH_PREFIX) else { return false };
    !rest.is_empty() && !rest.starts_with('/')
}

/// The function a native invoke of the exact shape this path takes names: no query, and a
/// name of the characters a function name may have (so it reads the same percent-decoded).
fn invoked_function(req: &Request) -> Option<&str> {
    if req.method() != Method::POST || req.uri().query().is_some() {
        return None;
    }
    let name = req.uri().path().strip_prefix("/v1/functions/")?.strip_suffix("/invoke")?;
    gust_core::names::validate_function_name(name).ok().map(|()| name)
}

/// Whether the router's authentication and access rule let the caller presenting bearer
/// token `presented` invoke function `name` (the guard has admitted the request).
async fn authorized(state: &AppState, name: &str, presented: Option<&str>) -> bool {
    if state.cfg.token.is_none() {
        // No authentication on this API (loopback only): nothing more to decide.
        return true;
    }
    let Some(presented) = presented else { return false };
    match crate::caller_by_bearer(state, presented).await {
        Ok(Some(caller)) => access::allows(&caller, &Method::POST, INVOKE_ROUTE, name),
        _ => false,
    }
}
