//! The cluster's servers hand keyless sync invocations to each other over HTTP (the protocol in
//! `gust_core::peer`, the rules in `gust_service`'s peers module): this is the client side,
//! and how a server finds the URL it advertises to its peers.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use gust_core::limits::{MAX_LOG_BYTES, MAX_RESULT_BYTES};
use gust_core::peer::{self, Answer};
use gust_core::InvocationRequest;
use gust_service::{Handover, Peers};

/// Longest answer a peer may send (a result, its log and error, framed).
const MAX_ANSWER_BYTES: usize = 4 + peer::MAX_META_BYTES + MAX_RESULT_BYTES + 2 * MAX_LOG_BYTES;

/// The URL this server's peers reach it at: `--advertise-url`, or its listening address when
/// that is one address (not 0.0.0.0 or ::, which names no host a peer could dial).
pub fn advertised(given: Option<&str>, scheme: &str, addr: SocketAddr) -> anyhow::Result<Option<String>> {
    let Some(url) = given else {
        return Ok((!addr.ip().is_unspecified()).then(|| format!("{scheme}://{addr}")));
    };
    let url = url.trim_end_matches('/');
    let rest = match url.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        _ => anyhow::bail!("--advertise-url must be an http:// or https:// URL, got {url:?}"),
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
        anyhow::bail!("--advertise-url must be a scheme and host[:port] only (no path, query or credentials), got {url:?}");
    }
    Ok(Some(url.to_string()))
}

/// Hands invocations over with reqwest (kept-alive connections to each peer).
pub struct HttpPeers {
    client: reqwest::Client,
    secret: String,
}

impl HttpPeers {
    /// `extra_roots`: CA certificates to trust for `https://` peers besides the system's.
    pub fn new(secret: String, extra_roots: Vec<reqwest::Certificate>) -> anyhow::Result<HttpPeers> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // A peer's answer never redirects; a redirect is refused, never followed.
            .redirect(reqwest::redirect::Policy::none());
        for root in extra_roots {
            builder = builder.add_root_certificate(root);
        }
        Ok(HttpPeers { client: builder.build()?, secret })
    }
}

#[async_trait]
impl Peers for HttpPeers {
    async fn hand_over(&self, url: &str, request: &InvocationRequest, wait: Duration) -> Handover {
        let sent = self
            .client
            .post(format!("{url}{}", peer::INVOKE_PATH))
            .bearer_auth(&self.secret)
            .header(reqwest::header::CONTENT_TYPE, peer::CONTENT_TYPE)
            .body(peer::request_frame(request))
            .timeout(wait)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            // Nothing was sent: the peer cannot have run it.
            Err(e) if e.is_connect() || e.is_builder() => {
                return Handover::NotStarted(gust_core::error_chain(&e));
            }
            Err(e) => return Handover::Lost(gust_core::error_chain(&e)),
        };
        if !response.status().is_success() {
            // Every refusal is made before anything runs (authentication, limits, a peer
            // that takes no handovers).
            return Handover::NotStarted(format!("the peer refused it with {}", response.status()));
        }
        let mut body = BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    return Handover::Lost(format!("its answer is longer than {MAX_ANSWER_BYTES} bytes"))
                }
                Ok(None) => break,
                Err(e) => return Handover::Lost(gust_core::error_chain(&e)),
            }
        }
        match peer::unframe::<Answer>(&body.freeze()) {
            Ok((answer, result)) => Handover::Answered(answer, result),
            Err(e) => Handover::Lost(format!("its answer is unreadable: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_url_is_a_dialable_origin() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let one: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(advertised(None, "http", any).unwrap(), None, "0.0.0.0 names no host to dial");
        assert_eq!(advertised(None, "https", one).unwrap().as_deref(), Some("https://10.0.0.5:8080"));
        assert_eq!(
            advertised(Some("https://gust-a.internal:8443/"), "http", any).unwrap().as_deref(),
            Some("https://gust-a.internal:8443")
        );
        for bad in
            ["gust-a:8080", "ftp://a", "http://", "http://a/path", "http://u:p@a", "http://a?x", "http://a b"]
        {
            assert!(advertised(Some(bad), "http", any).is_err(), "{bad} is refused");
        }
    }
}
