//! The CLI's client of the `/v1` API and its failures, each with the exit code scripts branch
//! on ([`Kind`]).

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::Value;

use super::config::Resolved;

/// Why a command failed, as its exit code says (documented in `gust --help` and the README).
/// 0 is success and 1 a function error (an invoke that ran and failed): neither is a failure
/// of the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 2: the command line, or a file or setting it names, is wrong; nothing was sent (clap's
    /// own errors exit 2 too).
    Usage,
    /// 3: the function, alias, invocation (or other thing named) does not exist (404).
    NotFound,
    /// 4: the thing changed or exists already (409, 412): read it again and retry.
    Conflict,
    /// 5: the server refused the credentials (401) or the role of the key (403).
    Auth,
    /// 6: no answer from the server: it could not be reached, TLS failed, or it timed out.
    Unreachable,
    /// 7: any other refusal or failure of the server (400 and other 4xx, 5xx).
    Server,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Conflict => 4,
            Kind::Auth => 5,
            Kind::Unreachable => 6,
            Kind::Server => 7,
        }
    }

    fn of_status(status: StatusCode) -> Kind {
        match status.as_u16() {
            404 => Kind::NotFound,
            409 | 412 => Kind::Conflict,
            401 | 403 => Kind::Auth,
            _ => Kind::Server,
        }
    }
}

/// The exit codes as `gust --help` and the README state them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  function error: the invocation ran and the function failed
  2  usage: a bad command line, flag value, file or config profile (nothing was sent)
  3  not found (HTTP 404)
  4  conflict or precondition failed (HTTP 409, 412): it changed or exists; read and retry
  5  authentication or authorization refused (HTTP 401, 403)
  6  server unreachable: connection refused, TLS failure or timeout
  7  any other server error (HTTP 400 and other 4xx, 5xx)";

/// A CLI failure: what to tell the user, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Usage, message)
    }
}

impl From<std::io::Error> for Failure {
    /// A local read or write (a payload file, stdin, stdout).
    fn from(e: std::io::Error) -> Self {
        Failure::usage(e.to_string())
    }
}

impl From<reqwest::Error> for Failure {
    /// A request that got no usable answer: unreachable, or an answer that is not what the
    /// API sends.
    fn from(e: reqwest::Error) -> Self {
        let kind =
            if e.is_connect() || e.is_timeout() || e.is_request() { Kind::Unreachable } else { Kind::Server };
        Failure::new(kind, e.to_string())
    }
}

/// The client of one server, with the credentials and CA the options resolved to.
pub struct Api {
    client: Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(r: &Resolved) -> Result<Self, Failure> {
        let mut builder = Client::builder().timeout(Duration::from_secs(16 * 60));
        if let Some(ca) = &r.ca {
            for cert in crate::client_tls::load_ca(ca).map_err(Failure::usage)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| Failure::usage(e.to_string()))?;
        Ok(Api { client, base: r.server.trim_end_matches('/').to_string(), token: r.token.clone() })
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends and turns a non-2xx answer into the server's error message.
    pub fn send(&self, rb: RequestBuilder) -> Result<Response, Failure> {
        self.check(self.transmit(rb)?)
    }

    /// Sends; only a transport failure is an error.
    pub fn transmit(&self, rb: RequestBuilder) -> Result<Response, Failure> {
        rb.send()
            .map_err(|e| Failure::new(Kind::Unreachable, crate::client_tls::transport_error(&self.base, &e)))
    }

    /// A 2xx answer, or the server's error message with the kind its status says.
    pub fn check(&self, resp: Response) -> Result<Response, Failure> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("Error");
        let message = body["error"]["message"].as_str().unwrap_or("(no message)");
        Err(Failure::new(
            Kind::of_status(status),
            format!("{} ({}, HTTP {})", super::printable(message), super::printable(code), status.as_u16()),
        ))
    }

    pub fn json(&self, rb: RequestBuilder) -> Result<Value, Failure> {
        Ok(self.send(rb)?.json()?)
    }

    /// The JSON answer, or `None` on 404.
    pub fn json_or_missing(&self, rb: RequestBuilder) -> Result<Option<Value>, Failure> {
        let resp = self.transmit(rb)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(self.check(resp)?.json()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_distinct_exit_codes() {
        let code = |s: u16| Kind::of_status(StatusCode::from_u16(s).unwrap()).exit_code();
        assert_eq!([code(404), code(409), code(412), code(401), code(403)], [3, 4, 4, 5, 5]);
        assert_eq!([code(400), code(429), code(500), code(503), code(507)], [7, 7, 7, 7, 7]);
        assert_eq!(Kind::Usage.exit_code(), 2);
        assert_eq!(Kind::Unreachable.exit_code(), 6);
    }
}
