//! AWS Signature Version 4 verification for the AWS API, as boto3, the AWS CLI and the
//! JavaScript SDK sign (`AWS4-HMAC-SHA256`, header-based, service `lambda`).
//!
//! The canonical request is rebuilt from what arrived: method, the path as sent URI-encoded
//! once more (non-S3 services double-encode), the query re-encoded and sorted, the signed
//! headers, and the payload hash (`x-amz-content-sha256` when sent, verified against the body).

use std::collections::HashMap;

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

/// Verifies `headers`' SigV4 signature against the secret of its key id. `now_s` is Unix
/// seconds (the clock-skew check).
pub(crate) fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &HashMap<String, String>,
    now_s: i64,
) -> Result<(), SigError> {
    let value = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(SigError::Missing)?;
    let auth = parse_authorization(value).ok_or(SigError::Missing)?;
    let secret = secrets.get(auth.key_id).ok_or(SigError::UnknownKey)?;
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
    let body_hash = hex::encode(Sha256::digest(body));
    let payload_hash = match headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()) {
        Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD".to_string(),
        Some(claimed) if claimed.eq_ignore_ascii_case(&body_hash) => body_hash,
        Some(_) => return Err(SigError::Invalid("x-amz-content-sha256 does not match the body".into())),
        None => body_hash,
    };
    let signed: Vec<&str> = auth.signed_headers.split(';').collect();
    if !signed.contains(&"host") {
        return Err(SigError::Invalid("the Host header must be signed".into()));
    }
    let mut canonical_headers = String::new();
    for name in &signed {
        let values: Vec<String> = headers
            .get_all(*name)
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

fn percent_decode(s: &str) -> String {
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
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k), true), uri_encode(&percent_decode(v), true))
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
}
