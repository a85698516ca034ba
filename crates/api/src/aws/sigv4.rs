//! AWS Signature Version 4 verification for the AWS API, as boto3, the AWS CLI and the
//! JavaScript SDK sign (`AWS4-HMAC-SHA256`, header-based, service `lambda`).
//!
//! The canonical request is rebuilt from what arrived: method, the path as sent URI-encoded
//! once more (non-S3 services double-encode), the query re-encoded and sorted, the signed
//! headers, and the payload hash (`x-amz-content-sha256` when sent, verified against the body).
//!
//! Verification is split so that as much as possible is judged before the body arrives:
//! [`check_headers`] (Authorization, key, date) never needs it, and [`check_signature`] needs
//! only the payload hash, which clients that send `x-amz-content-sha256` (the JavaScript SDK)
//! declare up front. Only a signature over an undeclared hash (botocore's, for Lambda) waits
//! for the body.

use axum::http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};

/// Why a request's signature is refused; each maps to the exception AWS uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SigError {
    /// No or malformed `Authorization`, or a key id gust does not know (403
    /// `UnrecognizedClientException`, or `MissingAuthenticationTokenException` when absent).
    Missing,
    UnknownKey,
    /// The signature does not match, or the date is missing or too far off (403
    /// `InvalidSignatureException`).
    Invalid(String),
}

/// Requests signed more than this far from now are refused (AWS allows 15 minutes).
const MAX_SKEW_S: i64 = 15 * 60;

struct Authorization<'a> {
    key_id: &'a str,
    scope: &'a str,
    date: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential?;
    let (key_id, scope) = credential.split_once('/')?;
    let date = scope.split('/').next()?;
    Some(Authorization { key_id, scope, date, signed_headers: signed_headers?, signature: signature? })
}

/// A request's Authorization, its key's secret and its date, checked against the known keys
/// and the clock: everything that can be judged before the body arrives.
pub(crate) struct Presented<'a> {
    auth: Authorization<'a>,
    secret: &'a str,
    amz_date: &'a str,
}

/// The payload hash a request declares in `x-amz-content-sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeclaredPayload {
    /// `UNSIGNED-PAYLOAD`: the signature does not cover the body.
    Unsigned,
    /// A SHA-256 in lowercase hex, which the body must match.
    Sha256(String),
    /// No header: the signature covers the body's hash, known only once it is read.
    Absent,
}

pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Reads `x-amz-content-sha256`; anything but `UNSIGNED-PAYLOAD` or 64 hex digits (such as
/// S3's streaming modes) is refused.
pub(crate) fn declared_payload(headers: &HeaderMap) -> Result<DeclaredPayload, SigError> {
    match headers.get("x-amz-content-sha256").map(|v| v.as_bytes()) {
        None => Ok(DeclaredPayload::Absent),
        Some(v) if v == UNSIGNED_PAYLOAD.as_bytes() => Ok(DeclaredPayload::Unsigned),
        Some(v) if v.len() == 64 && v.iter().all(u8::is_ascii_hexdigit) => {
            Ok(DeclaredPayload::Sha256(String::from_utf8_lossy(v).to_ascii_lowercase()))
        }
        Some(_) => Err(SigError::Invalid(
            "x-amz-content-sha256 must be the payload's SHA-256 in hex or UNSIGNED-PAYLOAD".into(),
        )),
    }
}

fn authorization(headers: &HeaderMap) -> Result<Authorization<'_>, SigError> {
    let value = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(SigError::Missing)?;
    parse_authorization(value).ok_or(SigError::Missing)
}

/// The access key id a request's well-formed `Authorization` names: the caller finds its
/// secret (a static credential or a named key in the store) before [`check_headers`].
pub(crate) fn access_key_id(headers: &HeaderMap) -> Result<&str, SigError> {
    authorization(headers).map(|a| a.key_id)
}

/// Checks what needs no body, given the secret of the key the request names: a well-formed
/// `Authorization`, a signed Host, and an `X-Amz-Date` within the allowed skew of `now_s`
/// (Unix seconds).
pub(crate) fn check_headers<'a>(
    headers: &'a HeaderMap, secret: &'a str, now_s: i64,
) -> Result<Presented<'a>, SigError> {
    let auth = authorization(headers)?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SigError::Invalid("the request has no X-Amz-Date header".into()))?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| SigError::Invalid("X-Amz-Date is not of the form 20261127T011204Z".into()))?;
    if (signed_at - now_s).abs() > MAX_SKEW_S {
        return Err(SigError::Invalid(
            "Signature expired: the request time is too far from the server's".into(),
        ));
    }
    if !amz_date.starts_with(auth.date) {
        return Err(SigError::Invalid("the credential scope's date does not match X-Amz-Date".into()));
    }
    if !auth.signed_headers.split(';').any(|h| h == "host") {
        return Err(SigError::Invalid("the Host header must be signed".into()));
    }
    // X-Amz-Target chooses the operation (SQS): unsigned, a captured request could be replayed
    // as another operation.
    if headers.contains_key("x-amz-target") && !auth.signed_headers.split(';').any(|h| h == "x-amz-target") {
        return Err(SigError::Invalid("the X-Amz-Target header must be signed".into()));
    }
    Ok(Presented { auth, secret, amz_date })
}

/// Checks the signature of a request whose headers passed [`check_headers`], with
/// `payload_hash` (hex, or `UNSIGNED-PAYLOAD`) as the canonical request's last line.
pub(crate) fn check_signature(
    method: &Method, uri: &Uri, headers: &HeaderMap, presented: &Presented<'_>, payload_hash: &str,
) -> Result<(), SigError> {
    let Presented { auth, secret, amz_date } = presented;
    let mut canonical_headers = String::new();
    for name in auth.signed_headers.split(';') {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() {
            return Err(SigError::Invalid(format!("signed header {name} is missing")));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical_request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{}\n{payload_hash}",
        uri_encode(uri.path(), false),
        canonical_query(uri.query().unwrap_or("")),
        auth.signed_headers,
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        auth.scope,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in auth.scope.split('/').skip(1) {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let expected = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    if crate::constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigError::Invalid(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into(),
        ))
    }
}

/// The whole verification over a body already read: headers, then the declared payload hash
/// against `body`, then the signature.
#[cfg(test)]
pub(crate) fn verify(
    method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8],
    secrets: &std::collections::HashMap<String, String>, now_s: i64,
) -> Result<(), SigError> {
    let secret = secrets.get(access_key_id(headers)?).ok_or(SigError::UnknownKey)?;
    let presented = check_headers(headers, secret, now_s)?;
    let body_hash = hex::encode(Sha256::digest(body));
    let payload_hash = match declared_payload(headers)? {
        DeclaredPayload::Unsigned => UNSIGNED_PAYLOAD.to_string(),
        DeclaredPayload::Sha256(claimed) if claimed == body_hash => body_hash,
        DeclaredPayload::Sha256(_) => {
            return Err(SigError::Invalid("x-amz-content-sha256 does not match the body".into()))
        }
        DeclaredPayload::Absent => body_hash,
    };
    check_signature(method, uri, headers, &presented, &payload_hash)
}

fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `20261127T011204Z` to Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// A proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters stay, everything else is
/// `%XX` (uppercase); `/` stays when `encode_slash` is false.
fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&crate::percent_decode(k, false), true),
                uri_encode(&crate::percent_decode(v, false), true),
            )
        })
        .collect();
    pairs.sort();
    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// HMAC-SHA256 (RFC 2104) over `sha2`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn dates_and_encoding() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20261127T011204Z"), Some(1_795_741_924));
        assert_eq!(parse_amz_date("2026-11-27"), None);
        assert_eq!(
            uri_encode("/2015-03-31/functions/f0%3Alive/invocations", false),
            "/2015-03-31/functions/f0%253Alive/invocations"
        );
        assert_eq!(canonical_query("Qualifier=%24LATEST&MaxItems=2"), "MaxItems=2&Qualifier=%24LATEST");
    }

    /// The `get-vanilla` case of AWS's SigV4 test suite (service `service`, region us-east-1).
    #[test]
    fn verifies_the_aws_test_suite_vanilla_request() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                .parse()
                .unwrap(),
        );
        let secrets = HashMap::from([(
            "AKIDEXAMPLE".to_string(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
        )]);
        let uri: Uri = "/".parse().unwrap();
        let now = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(verify(&Method::GET, &uri, &headers, b"", &secrets, now), Ok(()));
        let wrong = HashMap::from([("AKIDEXAMPLE".to_string(), "not-the-secret".to_string())]);
        assert!(matches!(verify(&Method::GET, &uri, &headers, b"", &wrong, now), Err(SigError::Invalid(_))));
        assert_eq!(
            verify(&Method::GET, &uri, &headers, b"", &HashMap::new(), now),
            Err(SigError::UnknownKey)
        );
        assert!(matches!(
            verify(&Method::GET, &uri, &headers, b"", &secrets, now + 3600),
            Err(SigError::Invalid(_))
        ));
        assert!(matches!(
            verify(&Method::POST, &uri, &headers, b"", &secrets, now),
            Err(SigError::Invalid(_))
        ));
    }

    #[test]
    fn what_is_judged_before_the_body() {
        let secrets = HashMap::from([("gust".to_string(), "T".to_string())]);
        let now = parse_amz_date("20150830T123600Z").unwrap();
        let headers = |auth: &str, extra: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            h.insert("authorization", auth.parse().unwrap());
            h.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
            for (k, v) in extra {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let auth = |key: &str, signed: &str| {
            format!("AWS4-HMAC-SHA256 Credential={key}/20150830/us-east-1/lambda/aws4_request, SignedHeaders={signed}, Signature=00")
        };
        // As the AWS API's middleware does: the key's secret first, then the headers.
        let check = |h: &HeaderMap, now: i64| -> Result<(), SigError> {
            let secret = secrets.get(access_key_id(h)?).ok_or(SigError::UnknownKey)?;
            check_headers(h, secret, now).map(|_| ())
        };
        assert_eq!(check(&HeaderMap::new(), now), Err(SigError::Missing));
        assert_eq!(check(&headers("Bearer x", &[]), now), Err(SigError::Missing));
        assert_eq!(check(&headers(&auth("nobody", "host;x-amz-date"), &[]), now), Err(SigError::UnknownKey));
        assert!(matches!(check(&headers(&auth("gust", "x-amz-date"), &[]), now), Err(SigError::Invalid(_))));
        assert!(matches!(
            check(&headers(&auth("gust", "host;x-amz-date"), &[]), now + 3600),
            Err(SigError::Invalid(_))
        ));
        assert!(check(&headers(&auth("gust", "host;x-amz-date"), &[]), now).is_ok());

        let declared = |v: &str| declared_payload(&headers("x", &[("x-amz-content-sha256", v)]));
        assert_eq!(declared_payload(&headers("x", &[])), Ok(DeclaredPayload::Absent));
        assert_eq!(declared("UNSIGNED-PAYLOAD"), Ok(DeclaredPayload::Unsigned));
        assert_eq!(declared(&"AB".repeat(32)), Ok(DeclaredPayload::Sha256("ab".repeat(32))));
        assert!(declared("STREAMING-AWS4-HMAC-SHA256-PAYLOAD").is_err());
        assert!(declared(&"g".repeat(64)).is_err());
    }
}

/// Property tests of SigV4 verification, fuzz-style but deterministic and bounded: a tiny
/// xorshift64 generator (no new dependencies) drives every property. Requests
/// are signed by an independent signer written from AWS's specification (only the
/// RFC-4231-checked `hmac_sha256` is shared), so a canonicalisation mistake on either side
/// shows up as a failed verification of a correctly signed request.
///
/// Known bugs found by these properties are kept as `#[ignore]`d regression tests at the end,
/// with the minimised literal input.
#[cfg(test)]
mod fuzz {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use std::collections::HashMap;

    /// Inputs per property. A verification costs ~100 µs unoptimised (seven HMACs), so the
    /// signed-request property, which verifies each request ten times over, takes fewer.
    const CASES: usize = 20_000;
    const SIGNED_CASES: usize = 2_500;
    const GARBAGE_CASES: usize = 20_000;
    const KEY_ID: &str = "AKIDFUZZEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFUZZKEY";

    /// xorshift64 (Marsaglia): deterministic, so a failure reproduces on every run.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn one_in(&mut self, n: usize) -> bool {
            self.below(n) == 0
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }

        /// A byte different from `old`, often one that means something to a parser.
        fn other_byte(&mut self, old: u8) -> u8 {
            const INTERESTING: &[u8] = b"\x00\t \"#%&+,./0:;=?AZaz{}\x7f\x80\xbf\xc0\xc3\xed\xef\xf0\xf4\xff";
            loop {
                let b = match self.below(3) {
                    0 => *self.pick(INTERESTING),
                    1 => old ^ 0x20,
                    _ => self.next() as u8,
                };
                if b != old {
                    return b;
                }
            }
        }
    }

    /// Values a client may put in a query parameter, decoded.
    const VALUES: &[&str] = &[
        "",
        "$LATEST",
        "live",
        "7",
        "007",
        "99999999999999999999",
        "a b",
        "a+b",
        "a=b",
        "a&b",
        "100%",
        "%41",
        "/",
        "..",
        ":",
        "arn:aws:lambda:us-east-1:000000000000:function:name:qual",
        "é",
        "日本語",
        "🦀",
        "\u{FFFD}",
        "\0",
        "~-_.",
        "?#",
    ];

    /// Characters of header values: printable ASCII, runs of blanks, and some UTF-8.
    const HEADER_PIECES: &[&str] = &[
        "a",
        "Z",
        "0",
        "-",
        "/",
        ";",
        ",",
        "=",
        "\"",
        " ",
        "  ",
        "\t",
        "aws-cli/2.15",
        "é",
        "日本",
        "\u{FFFD}",
        "%20",
    ];

    fn amz_date(t: i64) -> String {
        gust_core::lambda::amz_date(t)
    }

    fn unreserved(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-_.~".contains(&b)
    }

    /// SigV4's URI encoding: unreserved bytes stay, every other byte is `%XX`, uppercase.
    fn aws_encode(bytes: &[u8], keep_slash: bool) -> String {
        let mut out = String::new();
        for &b in bytes {
            if unreserved(b) || (keep_slash && b == b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// SigV4's header value canonicalisation: trimmed, runs of blanks made one space.
    fn trimall(v: &[u8]) -> String {
        let s = std::str::from_utf8(v).expect("the signer only sends UTF-8");
        s.split([' ', '\t']).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// What the handlers see of a query (axum's `Query`, form-urlencoded): `+` is a space,
    /// `%XX` a byte, the rest literal, as lossy UTF-8.
    fn server_query(q: &str) -> Vec<(String, String)> {
        let decode = |s: &str| {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                let hex = |c: u8| (c as char).to_digit(16);
                match b[i] {
                    b'+' => out.push(b' '),
                    b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                        out.push((hex(b[i + 1]).unwrap() * 16 + hex(b[i + 2]).unwrap()) as u8);
                        i += 2;
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    /// A request as it goes on the wire, and what its signer signed.
    #[derive(Clone)]
    struct Request {
        method: Method,
        /// Raw path and query, as sent (already percent-encoded).
        path: String,
        query: String,
        /// `(lowercase name, raw value)`, in sending order; `authorization` is added on send.
        headers: Vec<(String, Vec<u8>)>,
        /// Sorted lowercase names the signer covered.
        signed: Vec<String>,
        body: Vec<u8>,
        authorization: Vec<u8>,
        /// Whether the signature covers the body (no `UNSIGNED-PAYLOAD`).
        body_signed: bool,
        /// When it was signed, and the server's clock (Unix seconds).
        signed_at: i64,
        now: i64,
    }

    impl Request {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
        }

        fn set_header(&mut self, name: &str, value: Vec<u8>) {
            self.headers.retain(|(n, _)| n != name);
            self.headers.push((name.to_string(), value));
        }

        /// The request as the server receives it; `None` when it is not valid HTTP (the
        /// server would never see it).
        fn to_http(&self) -> Option<(Uri, HeaderMap)> {
            if !self.path.starts_with('/') {
                return None;
            }
            let target = if self.query.is_empty() {
                self.path.clone()
            } else {
                format!("{}?{}", self.path, self.query)
            };
            let uri: Uri = target.parse().ok()?;
            let mut headers = HeaderMap::new();
            let auth = ("authorization".to_string(), self.authorization.clone());
            for (name, value) in self.headers.iter().chain(std::iter::once(&auth)) {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                headers.append(name, HeaderValue::from_bytes(value).ok()?);
            }
            Some((uri, headers))
        }

        fn verify_with(&self, secrets: &HashMap<String, String>) -> Option<Result<(), SigError>> {
            let (uri, headers) = self.to_http()?;
            Some(verify(&self.method, &uri, &headers, &self.body, secrets, self.now))
        }

        fn verify(&self) -> Option<Result<(), SigError>> {
            self.verify_with(&secrets())
        }

        /// Signs as AWS specifies: canonical request, string to sign, derived key.
        fn sign(&mut self) {
            let canonical_headers: String = self
                .signed
                .iter()
                .map(|name| {
                    let values: Vec<String> =
                        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| trimall(v)).collect();
                    format!("{name}:{}\n", values.join(","))
                })
                .collect();
            let mut pairs: Vec<(String, String)> = server_query(&self.query)
                .into_iter()
                .map(|(k, v)| (aws_encode(k.as_bytes(), false), aws_encode(v.as_bytes(), false)))
                .collect();
            pairs.sort();
            let canonical_query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let payload_hash =
                if self.body_signed { sha256_hex(&self.body) } else { UNSIGNED_PAYLOAD.to_string() };
            let canonical_request = format!(
                "{}\n{}\n{}\n{canonical_headers}\n{}\n{payload_hash}",
                self.method,
                aws_encode(self.path.as_bytes(), true),
                canonical_query.join("&"),
                self.signed.join(";"),
            );
            let date = String::from_utf8(self.header("x-amz-date").unwrap().to_vec()).unwrap();
            let scope = format!("{}/us-east-1/lambda/aws4_request", &date[..8]);
            let string_to_sign =
                format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
            let mut key = format!("AWS4{SECRET}").into_bytes();
            for part in scope.split('/') {
                key = hmac_sha256(&key, part.as_bytes()).to_vec();
            }
            let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
            self.authorization = format!(
                "AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders={}, Signature={signature}",
                self.signed.join(";")
            )
            .into_bytes();
        }
    }

    fn secrets() -> HashMap<String, String> {
        HashMap::from([(KEY_ID.to_string(), SECRET.to_string())])
    }

    /// A raw path segment: literal path characters, percent-escapes of any byte (either hex
    /// case), dot segments.
    fn path_segment(rng: &mut Rng) -> String {
        match rng.below(6) {
            0 => rng
                .pick(&["2015-03-31", "functions", "invocations", "configuration", "aliases", "versions"])
                .to_string(),
            1 => rng.pick(&["", ".", "..", "f0%3Alive", "%24LATEST", "my-func_1", "%2F", "%25"]).to_string(),
            2 => {
                let name_chars = "ABCXYZabcxyz0189-_.~!$&'()*+,;=:@";
                (0..1 + rng.below(12))
                    .map(|_| name_chars.as_bytes()[rng.below(name_chars.len())] as char)
                    .collect()
            }
            3 => rng.pick(&["é", "日本語"]).to_string(),
            _ => (0..1 + rng.below(4))
                .map(|_| {
                    let b = rng.next() as u8;
                    if rng.one_in(2) {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    }
                })
                .collect(),
        }
    }

    /// A query value or key as a client may write it: some safe characters literal, the rest
    /// `%XX` in either case; never a literal `+` (which means a space to the server).
    fn encode_query_part(rng: &mut Rng, s: &str, is_value: bool) -> String {
        let mut out = String::new();
        for &b in s.as_bytes() {
            let literal_ok =
                unreserved(b) || (b"$:@!*'(),;/?".contains(&b) || (is_value && b == b'=')) && rng.one_in(2);
            if literal_ok {
                out.push(b as char);
            } else if rng.one_in(4) {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    fn header_value(rng: &mut Rng) -> Vec<u8> {
        let mut v = String::new();
        for _ in 0..1 + rng.below(8) {
            let piece = *rng.pick(HEADER_PIECES);
            v.push_str(piece);
        }
        v.into_bytes()
    }

    /// A request signed correctly, with `now` within the allowed skew.
    fn signed_request(rng: &mut Rng) -> Request {
        // 2000-01-01 .. 2099-12-31.
        let signed_at = 946_684_800 + rng.below(100 * 365 * 86_400) as i64;
        let now = signed_at + rng.below(2 * MAX_SKEW_S as usize + 1) as i64 - MAX_SKEW_S;
        let method = rng
            .pick(&[Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::HEAD, Method::PATCH])
            .clone();
        let path = if rng.one_in(10) {
            "/".to_string()
        } else {
            (0..1 + rng.below(5)).map(|_| format!("/{}", path_segment(rng))).collect()
        };
        let query = (0..rng.below(4))
            .map(|_| {
                let key = if rng.one_in(3) {
                    *rng.pick(VALUES)
                } else {
                    *rng.pick(&["Qualifier", "MaxItems", "Marker", "FunctionVersion"])
                };
                let value = *rng.pick(VALUES);
                let (k, v) = (encode_query_part(rng, key, false), encode_query_part(rng, value, true));
                if v.is_empty() && rng.one_in(2) {
                    k
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        let body: Vec<u8> = match rng.below(10) {
            0..=2 => Vec::new(),
            3 => br#"{"FunctionName":"f","Runtime":"python3.12"}"#.to_vec(),
            4 if rng.one_in(10) => (0..100_000).map(|_| rng.next() as u8).collect(),
            _ => (0..rng.below(512)).map(|_| rng.next() as u8).collect(),
        };
        let mut headers = vec![
            (
                "host".to_string(),
                rng.pick(&["localhost:9000", "127.0.0.1:8080", "lambda.us-east-1.amazonaws.com"])
                    .as_bytes()
                    .to_vec(),
            ),
            ("x-amz-date".to_string(), amz_date(signed_at).into_bytes()),
        ];
        let mut body_signed = true;
        match rng.below(4) {
            0 => {
                headers.push(("x-amz-content-sha256".into(), UNSIGNED_PAYLOAD.as_bytes().to_vec()));
                body_signed = false;
            }
            1 => headers.push(("x-amz-content-sha256".into(), sha256_hex(&body).into_bytes())),
            _ => {}
        }
        type MakeValue = fn(&mut Rng) -> Vec<u8>;
        let optional: [(&str, MakeValue); 6] = [
            ("content-type", |_| b"application/json".to_vec()),
            ("x-amz-invocation-type", |rng| {
                rng.pick(&["Event", "RequestResponse", "DryRun"]).as_bytes().to_vec()
            }),
            ("x-amz-user-agent", |_| b"  aws-cli/2.15.0 Python/3.11.6  Linux/6.1\texe/x86_64 ".to_vec()),
            ("x-amz-meta-fuzz", header_value),
            ("x-amz-meta-multi", header_value),
            ("user-agent", header_value),
        ];
        for (name, value) in optional {
            if rng.one_in(2) {
                headers.push((name.to_string(), value(rng)));
                if name == "x-amz-meta-multi" {
                    headers.push((name.to_string(), value(rng)));
                }
            }
        }
        let mut signed: Vec<String> = headers
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| {
                n == "host" || (n == "x-amz-date" && !rng.one_in(10)) || (n != "x-amz-date" && !rng.one_in(3))
            })
            .collect();
        signed.sort();
        signed.dedup();
        let mut req = Request {
            method,
            path,
            query,
            headers,
            signed,
            body,
            authorization: Vec::new(),
            body_signed,
            signed_at,
            now,
        };
        req.sign();
        req
    }

    /// Changes one byte of `bytes` in the range `range` (an insertion when it is empty).
    fn flip(rng: &mut Rng, bytes: &mut Vec<u8>, range: std::ops::Range<usize>) -> (u8, u8) {
        if range.is_empty() {
            bytes.insert(range.start, rng.other_byte(0));
            return (0, 0);
        }
        let at = range.start + rng.below(range.len());
        let old = bytes[at];
        bytes[at] = rng.other_byte(old);
        (old, bytes[at])
    }

    fn blank(b: u8) -> bool {
        b == b' ' || b == b'\t'
    }

    fn show(req: &Request) -> String {
        let body =
            if req.body.len() > 64 { format!("{} bytes", req.body.len()) } else { format!("{:?}", req.body) };
        format!(
            "{} {}?{} headers={:?} auth={:?} body={body} now={}",
            req.method,
            req.path,
            req.query,
            req.headers.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))).collect::<Vec<_>>(),
            String::from_utf8_lossy(&req.authorization),
            req.now
        )
    }

    fn refused(
        result: Option<Result<(), SigError>>, what: &str, case: usize, original: &Request, mutated: &Request,
    ) {
        if let Some(Ok(())) = result {
            panic!(
                "case {case}: {what} still verifies\noriginal: {}\nmutated:  {}",
                show(original),
                show(mutated)
            );
        }
    }

    #[test]
    fn signed_requests_verify_and_any_changed_byte_is_refused() {
        let mut rng = Rng::new(0x5157_0001);
        let mut exercised = [0usize; 8];
        let mut known_bugs = [0usize; 2];
        for i in 0..SIGNED_CASES {
            let req = signed_request(&mut rng);
            assert_eq!(
                req.verify(),
                Some(Ok(())),
                "case {i}: a correctly signed request is refused: {}",
                show(&req)
            );

            // The signature.
            let mut m = req.clone();
            let sig_at = m.authorization.windows(10).position(|w| w == b"Signature=").unwrap() + 10;
            flip(&mut rng, &mut m.authorization, sig_at..req.authorization.len());
            refused(m.verify(), "a changed signature", i, &req, &m);
            exercised[0] += 1;

            // Anywhere in Authorization, except one blank for another (both are trimmed).
            let mut m = req.clone();
            let len = m.authorization.len();
            let (old, new) = flip(&mut rng, &mut m.authorization, 0..len);
            if !(blank(old) && blank(new)) {
                refused(m.verify(), "a changed Authorization", i, &req, &m);
                exercised[1] += 1;
            }

            // The body, when the signature covers it.
            if req.body_signed {
                let mut m = req.clone();
                let len = m.body.len();
                flip(&mut rng, &mut m.body, 0..len);
                refused(m.verify(), "a changed body", i, &req, &m);
                exercised[2] += 1;
            }

            // The date.
            let mut m = req.clone();
            let mut date = m.header("x-amz-date").unwrap().to_vec();
            flip(&mut rng, &mut date, 0..16);
            m.set_header("x-amz-date", date);
            refused(m.verify(), "a changed X-Amz-Date", i, &req, &m);
            exercised[3] += 1;

            // A signed header's value (one blank for another is the same canonical value; a
            // value that stops being UTF-8 but decodes lossily to the same text is the known
            // bug at the end) or name.
            let mut m = req.clone();
            let signed_idx: Vec<usize> = (0..m.headers.len())
                .filter(|j| req.signed.contains(&m.headers[*j].0) && m.headers[*j].0 != "x-amz-date")
                .collect();
            let j = *rng.pick(&signed_idx);
            if rng.one_in(4) {
                let mut name = m.headers[j].0.clone().into_bytes();
                let len = name.len();
                flip(&mut rng, &mut name, 0..len);
                let renamed = String::from_utf8_lossy(&name).to_ascii_lowercase();
                if renamed != m.headers[j].0 {
                    m.headers[j].0 = renamed;
                    refused(m.verify(), "a renamed signed header", i, &req, &m);
                    exercised[4] += 1;
                }
            } else {
                let len = m.headers[j].1.len();
                let (old, new) = flip(&mut rng, &mut m.headers[j].1, 0..len);
                let lossy =
                    |v: &[u8]| String::from_utf8_lossy(v).split_whitespace().collect::<Vec<_>>().join(" ");
                let lossy_twin = std::str::from_utf8(&m.headers[j].1).is_err()
                    && lossy(&m.headers[j].1) == lossy(&req.headers[j].1);
                if lossy_twin {
                    // The known bug `signed_header_values_are_compared_after_lossy_utf8_decoding`.
                    known_bugs[1] += usize::from(m.verify() == Some(Ok(())));
                } else if !(blank(old) && blank(new)) {
                    refused(m.verify(), "a changed signed header", i, &req, &m);
                    exercised[4] += 1;
                }
            }

            // The path (a few tries for a change that is still a valid request target).
            for _ in 0..4 {
                let mut m = req.clone();
                let mut path = m.path.clone().into_bytes();
                let len = path.len();
                flip(&mut rng, &mut path, 0..len);
                let Ok(path) = String::from_utf8(path) else { continue };
                m.path = path;
                if m.to_http().is_some() {
                    refused(m.verify(), "a changed path", i, &req, &m);
                    exercised[5] += 1;
                    break;
                }
            }

            // The query: whatever still verifies must mean the same to the handlers. Besides
            // a changed byte, try rewrites that keep the meaning to some decoder: an escape
            // written out, a character escaped, hex digits in the other case.
            let mut m = req.clone();
            let mut query = m.query.clone().into_bytes();
            if rng.one_in(2) {
                let len = query.len();
                flip(&mut rng, &mut query, 0..len);
            } else {
                query = rewrite_query(&mut rng, &query);
            }
            if let Ok(query) = String::from_utf8(query) {
                m.query = query;
                if let Some(Ok(())) = m.verify() {
                    // What the handlers see: the query of the URI as parsed (no fragment).
                    let seen =
                        |r: &Request| r.to_http().map(|(uri, _)| server_query(uri.query().unwrap_or("")));
                    if seen(&m) != seen(&req) {
                        // Only the known bug (`a_plus_in_the_query_is_signed_as_plus_but_read_as_a_space`)
                        // may get here: a `%2B` written as `+`.
                        let plus = |q: &str| q.matches('+').count();
                        assert!(
                            plus(&m.query) > plus(&req.query),
                            "case {i}: meaning changed: {}\noriginal: {}",
                            show(&m),
                            show(&req)
                        );
                        known_bugs[0] += 1;
                    }
                }
                exercised[6] += 1;
            }

            // The method, and a clock too far off.
            let mut m = req.clone();
            m.method = if req.method == Method::POST { Method::GET } else { Method::POST };
            refused(m.verify(), "a changed method", i, &req, &m);
            let mut m = req.clone();
            let off = MAX_SKEW_S + 1 + rng.below(1_000_000) as i64;
            m.now = req.signed_at + if rng.one_in(2) { off } else { -off };
            refused(m.verify(), "a stale signature", i, &req, &m);

            // What the signature does not cover may change freely.
            let mut m = req.clone();
            m.headers.push(("x-unsigned".into(), header_value(&mut rng)));
            if !req.body_signed {
                m.body.push(b'!');
            }
            assert_eq!(m.verify(), Some(Ok(())), "case {i}: unsigned parts changed: {}", show(&m));
            exercised[7] += 1;
        }
        assert!(
            exercised.iter().all(|n| *n > SIGNED_CASES / 10),
            "every mutation must be exercised: {exercised:?}"
        );
        eprintln!(
            "mutations exercised {exercised:?}; known bugs hit (query `+`, lossy header) {known_bugs:?}"
        );
    }

    /// Rewrites one spot of a raw query: a `%XX` escape as its byte (or with the other hex
    /// case), or a literal byte as its escape.
    fn rewrite_query(rng: &mut Rng, q: &[u8]) -> Vec<u8> {
        if q.is_empty() {
            return q.to_vec();
        }
        let at = rng.below(q.len());
        let hex = |c: u8| (c as char).to_digit(16);
        let escape_at = (at..q.len())
            .find(|&j| q[j] == b'%' && j + 2 < q.len() && hex(q[j + 1]).is_some() && hex(q[j + 2]).is_some());
        let mut out = q[..at].to_vec();
        match escape_at {
            Some(j) if rng.one_in(2) || j == at => {
                out.extend_from_slice(&q[at..j]);
                let byte = (hex(q[j + 1]).unwrap() * 16 + hex(q[j + 2]).unwrap()) as u8;
                if rng.one_in(3) {
                    out.push(b'%');
                    out.push(q[j + 1] ^ if q[j + 1].is_ascii_alphabetic() { 0x20 } else { 0 });
                    out.push(q[j + 2] ^ if q[j + 2].is_ascii_alphabetic() { 0x20 } else { 0 });
                } else {
                    out.push(byte);
                }
                out.extend_from_slice(&q[j + 3..]);
            }
            _ => {
                out.extend_from_slice(format!("%{:02X}", q[at]).as_bytes());
                out.extend_from_slice(&q[at + 1..]);
            }
        }
        out
    }

    const AUTH_PIECES: &[&str] = &[
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 ",
        " ",
        "\t",
        ",",
        ", ",
        "=",
        "/",
        ";",
        ";;",
        "Credential=",
        KEY_ID,
        "AKIDEXAMPLE",
        "20261127",
        "us-east-1",
        "lambda",
        "aws4_request",
        "SignedHeaders=",
        "host",
        "x-amz-date",
        "authorization",
        "HOST",
        "Host",
        "x-amz-content-sha256",
        "Signature=",
        "0123456789abcdef",
        "é",
        "",
        "%",
        "\u{FFFD}",
    ];
    const DATE_PIECES: &[&str] = &[
        "2026",
        "1127",
        "T",
        "011204",
        "Z",
        "0",
        "9",
        "+",
        "-",
        " ",
        "é",
        "19700101T000000Z",
        "99991231T235960Z",
        "00000000T000000Z",
        "20261327T000000Z",
        "20260230T000000Z",
        "+0261127T011204Z",
        "-0011127T011204Z",
        "2026112T7011204Z",
        "2026-11-27T01:12:04Z",
        "20261127T01120éZ",
    ];
    const URI_PIECES: &[&str] = &[
        "/",
        "//",
        "..",
        ".",
        "%",
        "%%",
        "%zz",
        "%2",
        "%C3",
        "%C3%A9",
        "%FF",
        "%00",
        "a",
        "?",
        "&",
        "=",
        "+",
        "#",
        "é",
        "$LATEST",
        ":",
        "@",
        "%2F",
        "~",
        "*",
        "99999999999999999999",
        "Qualifier=",
        "%2B",
        " ",
    ];

    fn garbage(rng: &mut Rng, pieces: &[&str]) -> Vec<u8> {
        match rng.below(4) {
            0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
            _ => (0..rng.below(12)).map(|_| *rng.pick(pieces)).collect::<String>().into_bytes(),
        }
    }

    #[test]
    fn verification_never_panics_on_garbage() {
        let mut rng = Rng::new(0x5157_0002);
        // Verified, Missing, UnknownKey, Invalid, not valid HTTP.
        let mut outcomes = [0usize; 5];
        for _ in 0..GARBAGE_CASES {
            let mut req = signed_request(&mut rng);
            for _ in 0..1 + rng.below(3) {
                match rng.below(10) {
                    0 => req.authorization = garbage(&mut rng, AUTH_PIECES),
                    1 => {
                        // Keep the structure, garble one field's value.
                        let auth = String::from_utf8_lossy(&req.authorization).into_owned();
                        let field = *rng.pick(&["Credential=", "SignedHeaders=", "Signature="]);
                        if let Some(at) = auth.find(field) {
                            let start = at + field.len();
                            let end = auth[start..].find(',').map_or(auth.len(), |e| start + e);
                            let value = String::from_utf8_lossy(&garbage(&mut rng, AUTH_PIECES)).into_owned();
                            req.authorization =
                                format!("{}{value}{}", &auth[..start], &auth[end..]).into_bytes();
                        }
                    }
                    2 => req.set_header("x-amz-date", garbage(&mut rng, DATE_PIECES)),
                    3 => {
                        let tail = String::from_utf8_lossy(&garbage(&mut rng, URI_PIECES)).into_owned();
                        req.path = if rng.one_in(8) { tail } else { format!("/{tail}") };
                    }
                    4 => req.query = String::from_utf8_lossy(&garbage(&mut rng, URI_PIECES)).into_owned(),
                    5 => {
                        req.body =
                            if rng.one_in(20) { vec![b'x'; 100_000] } else { garbage(&mut rng, URI_PIECES) }
                    }
                    6 => {
                        let hash = sha256_hex(&req.body);
                        let value = match rng.below(4) {
                            0 => hash.to_ascii_uppercase().into_bytes(),
                            1 => b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_vec(),
                            2 => hash.as_bytes()[..63].to_vec(),
                            _ => garbage(&mut rng, URI_PIECES),
                        };
                        req.set_header("x-amz-content-sha256", value);
                    }
                    7 => {
                        if !req.headers.is_empty() {
                            let j = rng.below(req.headers.len());
                            req.headers.remove(j);
                        }
                    }
                    8 => req.headers.push(("authorization".into(), garbage(&mut rng, AUTH_PIECES))),
                    _ => {
                        req.now = match rng.below(3) {
                            0 => (rng.next() >> 28) as i64,
                            1 => req.now + rng.below(2_000) as i64 - 1_000,
                            _ => *rng.pick(&[0, 1, -1, 253_402_300_800]),
                        }
                    }
                }
            }
            let secrets = match rng.below(5) {
                0 => HashMap::new(),
                1 => HashMap::from([(KEY_ID.to_string(), String::new())]),
                2 => HashMap::from([(KEY_ID.to_string(), "k".repeat(200))]),
                _ => secrets(),
            };
            outcomes[match req.verify_with(&secrets) {
                Some(Ok(())) => 0,
                Some(Err(SigError::Missing)) => 1,
                Some(Err(SigError::UnknownKey)) => 2,
                Some(Err(SigError::Invalid(message))) => {
                    assert!(!message.is_empty());
                    3
                }
                None => 4,
            }] += 1;
        }
        assert!(
            outcomes.iter().all(|n| *n > GARBAGE_CASES / 100),
            "every outcome must be reached: {outcomes:?}"
        );
    }

    #[test]
    fn helpers_never_panic_and_round_trip() {
        let mut rng = Rng::new(0x5157_0003);
        for i in 0..CASES {
            // Dates: every second of years 0000-9999 reads back; garbage is refused, not a panic.
            let t = rng.below(253_402_300_800 + 62_167_219_200) as i64 - 62_167_219_200;
            assert_eq!(parse_amz_date(&amz_date(t)), Some(t), "case {i}: {}", amz_date(t));
            let s = String::from_utf8_lossy(&garbage(&mut rng, DATE_PIECES)).into_owned();
            if let Some(t) = parse_amz_date(&s) {
                assert!(
                    s.len() == 16 && (-62_200_000_000..260_000_000_000).contains(&t),
                    "case {i}: {s:?} -> {t}"
                );
            }

            // Encoding: an encoded string decodes back; canonical queries are ASCII and fixed
            // points of canonicalisation.
            let raw = String::from_utf8_lossy(&garbage(&mut rng, URI_PIECES)).into_owned();
            for keep_slash in [false, true] {
                let encoded = uri_encode(&raw, !keep_slash);
                assert!(
                    encoded.bytes().all(|b| unreserved(b) || b == b'%' || (keep_slash && b == b'/')),
                    "case {i}"
                );
                assert_eq!(crate::percent_decode(&encoded, false), raw, "case {i}");
            }
            let canonical = canonical_query(&raw);
            assert!(canonical.is_ascii(), "case {i}: {raw:?}");
            assert_eq!(canonical_query(&canonical), canonical, "case {i}: {raw:?}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Regression tests: bugs found by the properties above, with the minimised input.
    // -----------------------------------------------------------------------------------------

    /// A GET signed (by the signer above) at 2026-11-27T01:12:04Z with Host, X-Amz-Date and
    /// `headers` all signed; it verifies as sent.
    fn literal_request(query: &str, headers: &[(&str, &[u8])]) -> Request {
        let signed_at = 1_795_741_924;
        let mut all = vec![
            ("host".to_string(), b"localhost:9000".to_vec()),
            ("x-amz-date".to_string(), amz_date(signed_at).into_bytes()),
        ];
        all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_vec())));
        let mut signed: Vec<String> = all.iter().map(|(n, _)| n.clone()).collect();
        signed.sort();
        let mut req = Request {
            method: Method::GET,
            path: "/2015-03-31/functions/f/configuration".into(),
            query: query.into(),
            headers: all,
            signed,
            body: Vec::new(),
            authorization: Vec::new(),
            body_signed: true,
            signed_at,
            now: signed_at,
        };
        req.sign();
        assert_eq!(req.verify(), Some(Ok(())), "the request as signed verifies");
        req
    }

    /// `canonical_query` reads a literal `+` as a plus (it re-encodes it as `%2B`), while the
    /// handlers' `Query` (form-urlencoded) reads it as a space. So `Qualifier=a%2Bb` and
    /// `Qualifier=a+b` share a canonical query: a request signed with the first still verifies
    /// when replayed with the second, and the handler sees `a b` instead of `a+b`.
    #[test]
    #[ignore = "bug: a `+` in the query is canonicalised as a plus but read by the handlers as a space"]
    fn a_plus_in_the_query_is_signed_as_plus_but_read_as_a_space() {
        let req = literal_request("Qualifier=a%2Bb", &[]);
        let mut sent = req.clone();
        sent.query = "Qualifier=a+b".into();
        assert_ne!(server_query(&sent.query), server_query(&req.query), "the handlers read them differently");
        assert_ne!(sent.verify(), Some(Ok(())), "a query the handlers read differently verifies");
    }

    /// Signed header values are decoded with `String::from_utf8_lossy` before they are
    /// canonicalised, so distinct byte strings collide: a value signed as U+FFFD (`EF BF BD`)
    /// still verifies when its first byte is changed to `F0` (a truncated 4-byte sequence,
    /// also decoded as one U+FFFD).
    #[test]
    #[ignore = "bug: signed header values are compared after lossy UTF-8 decoding"]
    fn signed_header_values_are_compared_after_lossy_utf8_decoding() {
        let req = literal_request("", &[("x-amz-meta-note", "\u{FFFD}".as_bytes())]);
        let mut sent = req.clone();
        sent.set_header("x-amz-meta-note", b"\xF0\xBF\xBD".to_vec());
        assert_ne!(sent.verify(), Some(Ok(())), "a changed signed header verifies");
    }
}
