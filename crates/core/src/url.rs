//! Function URLs: an HTTP address for a function or one of its aliases, with Lambda's
//! semantics (`AuthType`, `Cors`, `InvokeMode`), and the CORS rules the edge answers with.
//!
//! A URL config belongs to `$LATEST` (the unqualified function) or to an alias, never to a
//! numbered version, as in Lambda. Its id is 32 lowercase alphanumerics and never changes.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Millis;

/// Characters of a URL id.
pub const URL_ID_LEN: usize = 32;
/// Lambda's CORS bounds: items per list, bytes per origin and per header name.
pub const MAX_CORS_ITEMS: usize = 100;
pub const MAX_CORS_ORIGIN_BYTES: usize = 253;
pub const MAX_CORS_HEADER_BYTES: usize = 1024;
pub const MAX_CORS_METHODS: usize = 6;
pub const MAX_CORS_MAX_AGE_S: u32 = 86_400;

/// Who may call a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AuthType {
    /// Anyone who can reach the server.
    #[serde(rename = "NONE")]
    #[default]
    None,
    /// Callers gust authenticates (a bearer token or SigV4, as on its APIs) and allows to
    /// invoke the function; Lambda's `AWS_IAM`.
    #[serde(rename = "AWS_IAM")]
    Iam,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::None => "NONE",
            AuthType::Iam => "AWS_IAM",
        }
    }

    pub fn parse(s: &str) -> Result<AuthType, UrlError> {
        match s {
            "NONE" => Ok(AuthType::None),
            "AWS_IAM" => Ok(AuthType::Iam),
            other => Err(UrlError(format!("AuthType must be NONE or AWS_IAM, not {other:?}"))),
        }
    }
}

/// How a URL answers: the whole response at once, or streamed as the function writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum InvokeMode {
    #[serde(rename = "BUFFERED")]
    #[default]
    Buffered,
    #[serde(rename = "RESPONSE_STREAM")]
    ResponseStream,
}

impl InvokeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InvokeMode::Buffered => "BUFFERED",
            InvokeMode::ResponseStream => "RESPONSE_STREAM",
        }
    }

    pub fn parse(s: &str) -> Result<InvokeMode, UrlError> {
        match s {
            "BUFFERED" => Ok(InvokeMode::Buffered),
            "RESPONSE_STREAM" => Ok(InvokeMode::ResponseStream),
            other => Err(UrlError(format!("InvokeMode must be BUFFERED or RESPONSE_STREAM, not {other:?}"))),
        }
    }
}

/// Lambda's `Cors` of a URL config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cors {
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub max_age: Option<u32>,
}

/// What a user sets on a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UrlConfig {
    pub auth_type: AuthType,
    #[serde(default)]
    pub cors: Option<Cors>,
    #[serde(default)]
    pub invoke_mode: InvokeMode,
}

/// A stored URL config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionUrl {
    pub url_id: String,
    pub function: String,
    /// `$LATEST` or an alias name.
    pub qualifier: String,
    pub config: UrlConfig,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// Whether `s` looks like a URL id (so a request for anything else is refused before a lookup).
pub fn is_url_id(s: &str) -> bool {
    s.len() == URL_ID_LEN && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A URL id from 32 random bytes (each mapped onto the 36 characters; the bias of `% 36` over
/// 256 values costs well under a bit of the id's ~165).
pub fn url_id_from(random: &[u8; URL_ID_LEN]) -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    random.iter().map(|b| ALPHABET[(*b % 36) as usize] as char).collect()
}

fn token_ok(s: &str) -> bool {
    // RFC 9110 token characters (header names, methods), or `*`.
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Cors {
    /// Lambda's bounds, plus what makes a header value safe to answer with.
    pub fn validate(&self) -> Result<(), UrlError> {
        let lists = [
            ("AllowHeaders", &self.allow_headers, MAX_CORS_HEADER_BYTES),
            ("ExposeHeaders", &self.expose_headers, MAX_CORS_HEADER_BYTES),
            ("AllowOrigins", &self.allow_origins, MAX_CORS_ORIGIN_BYTES),
        ];
        for (name, list, max) in lists {
            if list.len() > MAX_CORS_ITEMS {
                return Err(UrlError(format!(
                    "Cors.{name} has {} items (at most {MAX_CORS_ITEMS})",
                    list.len()
                )));
            }
            for item in list.iter() {
                if item.is_empty() || item.len() > max {
                    return Err(UrlError(format!("Cors.{name} items must be 1-{max} characters")));
                }
            }
        }
        for h in self.allow_headers.iter().chain(&self.expose_headers) {
            if !token_ok(h) {
                return Err(UrlError(format!("Cors header {h:?} is not a header name")));
            }
        }
        for o in &self.allow_origins {
            let visible = o.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',');
            if !visible || (o != "*" && !o.contains("://")) {
                return Err(UrlError(format!(
                    "Cors.AllowOrigins item {o:?} is not an origin (scheme://host[:port]) or *"
                )));
            }
        }
        if self.allow_methods.len() > MAX_CORS_METHODS {
            return Err(UrlError(format!("Cors.AllowMethods has at most {MAX_CORS_METHODS} items")));
        }
        for m in &self.allow_methods {
            if m.len() > 6 || !token_ok(m) {
                return Err(UrlError(format!(
                    "Cors.AllowMethods item {m:?} is not a method (at most 6 characters) or *"
                )));
            }
        }
        if self.max_age.is_some_and(|a| a > MAX_CORS_MAX_AGE_S) {
            return Err(UrlError(format!("Cors.MaxAge must be 0-{MAX_CORS_MAX_AGE_S} seconds")));
        }
        if self.allow_credentials && self.allow_origins.iter().any(|o| o == "*") {
            // Browsers refuse credentials with a wildcard origin; saying so now beats a
            // mysterious failure in the browser.
            return Err(UrlError("Cors.AllowCredentials cannot be true with AllowOrigins *".into()));
        }
        Ok(())
    }

    /// The origin to allow for a request from `origin`, if any (`*` or the origin itself).
    pub fn allowed_origin(&self, origin: &str) -> Option<String> {
        if self.allow_origins.iter().any(|o| o == "*") {
            return Some("*".into());
        }
        self.allow_origins.iter().find(|o| o.eq_ignore_ascii_case(origin)).map(|_| origin.to_string())
    }

    /// Whether a preflight for `method` is allowed.
    pub fn allows_method(&self, method: &str) -> bool {
        self.allow_methods.iter().any(|m| m == "*" || m.eq_ignore_ascii_case(method))
    }

    /// Whether every header a preflight asked for (`Access-Control-Request-Headers`) is allowed.
    pub fn allows_headers(&self, requested: &str) -> bool {
        requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| self.allow_headers.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(h)))
    }
}

impl UrlConfig {
    pub fn validate(&self) -> Result<(), UrlError> {
        match &self.cors {
            Some(c) => c.validate(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ids_are_32_lowercase_alphanumerics() {
        let id = url_id_from(&[255u8; 32]);
        assert!(is_url_id(&id), "{id}");
        assert!(!is_url_id("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"));
        assert!(!is_url_id("short"));
        assert!(!is_url_id("abcdefghijklmnopqrstuvwxyz01234/"));
    }

    #[test]
    fn cors_refuses_what_would_break_or_inject_headers() {
        let ok = Cors {
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["content-type".into(), "x-api-key".into()],
            max_age: Some(600),
            ..Cors::default()
        };
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut Cors)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert!(bad(|c| c.allow_headers.push("x-a\r\nset-cookie: a=b".into())).contains("header name"));
        assert!(bad(|c| c.allow_origins.push("https://a.com\r\nx: y".into())).contains("not an origin"));
        assert!(
            bad(|c| c.allow_origins.push("https://a.com, https://b.com".into())).contains("not an origin")
        );
        assert!(bad(|c| c.allow_methods.push("GETTING".into())).contains("method"));
        assert!(bad(|c| c.max_age = Some(86_401)).contains("MaxAge"));
        assert!(bad(|c| c.allow_headers = vec!["h".into(); 101]).contains("101 items"));
        assert!(bad(|c| {
            c.allow_credentials = true;
            c.allow_origins = vec!["*".into()];
        })
        .contains("AllowCredentials"));
    }

    #[test]
    fn cors_matches_origins_methods_and_headers() {
        let c = Cors {
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: vec!["POST".into()],
            allow_headers: vec!["Content-Type".into()],
            ..Cors::default()
        };
        assert_eq!(c.allowed_origin("https://app.example.com").as_deref(), Some("https://app.example.com"));
        assert_eq!(c.allowed_origin("https://evil.example.com"), None);
        assert!(c.allows_method("post") && !c.allows_method("DELETE"));
        assert!(c.allows_headers("content-type") && !c.allows_headers("content-type, x-secret"));
        let any = Cors { allow_origins: vec!["*".into()], ..Cors::default() };
        assert_eq!(any.allowed_origin("https://x.test").as_deref(), Some("*"));
    }

    #[test]
    fn modes_and_auth_types_parse_lambdas_spellings() {
        assert_eq!(AuthType::parse("AWS_IAM").unwrap(), AuthType::Iam);
        assert!(AuthType::parse("aws_iam").is_err());
        assert_eq!(InvokeMode::parse("RESPONSE_STREAM").unwrap(), InvokeMode::ResponseStream);
        assert!(InvokeMode::parse("STREAM").is_err());
    }
}
