//! The web console: a single-page app served at `/console/` by the binary itself, from assets
//! compiled into it (`include_bytes!`), so nothing is fetched from anywhere else at run time
//! and the console always matches the API it calls (same origin, same version).
//!
//! The app is plain HTML, CSS and JavaScript modules (no build step); it talks to `/v1` with
//! the bearer token the operator signs in with (kept in `sessionStorage`, never in a URL).
//! Every answer here carries a strict Content-Security-Policy (only these files may run or
//! style, no inline script or style, no framing), and the app builds its pages with DOM calls,
//! never `innerHTML`, so a function's name, log or result can only ever show as text.
//!
//! Serving asks nothing of authentication: the files are public (they hold no data), and every
//! call the app makes goes through `/v1`'s authentication and the browser guard like any
//! other client's. What this module must not do: serve a path that is not in [`ASSETS`], or
//! build a page on the server from data.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// One embedded file of the console.
struct Asset {
    /// Its name under `/console/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The whole console, and the only paths served under `/console/` (`index.html` is also `/console/`).
const ASSETS: &[Asset] = &[
    Asset { name: "index.html", content_type: HTML, body: include_bytes!("console/index.html") },
    Asset { name: "app.css", content_type: CSS, body: include_bytes!("console/app.css") },
    Asset { name: "app.js", content_type: JS, body: include_bytes!("console/app.js") },
    Asset { name: "api.js", content_type: JS, body: include_bytes!("console/api.js") },
    Asset { name: "dom.js", content_type: JS, body: include_bytes!("console/dom.js") },
    Asset { name: "ui.js", content_type: JS, body: include_bytes!("console/ui.js") },
    Asset { name: "chart.js", content_type: JS, body: include_bytes!("console/chart.js") },
    Asset { name: "functions.js", content_type: JS, body: include_bytes!("console/functions.js") },
    Asset { name: "function.js", content_type: JS, body: include_bytes!("console/function.js") },
    Asset { name: "invocations.js", content_type: JS, body: include_bytes!("console/invocations.js") },
    Asset { name: "fleet.js", content_type: JS, body: include_bytes!("console/fleet.js") },
    Asset { name: "icon.svg", content_type: SVG, body: include_bytes!("console/icon.svg") },
];

/// Only the console's own files may load, run, style or be fetched; no inline script or
/// style (so injected markup cannot run even if some path rendered it), no framing
/// (clickjacking), no `<base>` rewriting, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The headers on every answer under `/console` (files, the redirect and the 404).
fn security_headers() -> [(HeaderName, HeaderValue); 7] {
    [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        // Names are not hashed, so every use revalidates (a 304 by ETag when unchanged): a new
        // binary's console is never mixed with an old one's cached modules.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
        (HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin")),
    ]
}

/// Each asset's strong ETag (its sha256), computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let tag = format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..16]));
            HeaderValue::from_str(&tag).expect("hex is a valid header value")
        })
        .collect()
});

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(redirect))
        .route("/console/", get(index))
        .route("/console/{file}", get(file))
}

fn secured(mut resp: Response) -> Response {
    resp.headers_mut().extend(security_headers());
    resp
}

/// `/console` → `/console/`, so the app's relative module paths resolve under it.
async fn redirect() -> Response {
    secured((StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "/console/")]).into_response())
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return secured(
            ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such console file").into_response(),
        );
    };
    let (asset, etag) = (&ASSETS[i], &ETAGS[i]);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii() == etag.as_bytes()));
    let resp = if fresh {
        (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
                (header::ETAG, etag.clone()),
            ],
            asset.body,
        )
            .into_response()
    };
    secured(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_named_once_and_typed_by_its_extension() {
        let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        for a in ASSETS {
            let want = match a.name.rsplit('.').next() {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => CSS,
                Some("svg") => SVG,
                other => panic!("{}: unexpected extension {other:?}", a.name),
            };
            assert_eq!(a.content_type, want, "{}", a.name);
        }
    }

    #[test]
    fn markup_is_never_built_from_strings() {
        // The XSS rule, checked where it is cheapest: no asset uses an HTML-parsing sink.
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).unwrap();
            for sink in
                ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"]
            {
                assert!(!text.contains(sink), "{} uses {sink}", a.name);
            }
        }
    }
}
