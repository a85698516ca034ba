//! SigV4 by hand, for tests that forge, replay or tamper with signatures (the SDKs sign only
//! what is right).

use sha2::{Digest, Sha256};

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
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

/// A request to sign: `method path?query` to `host` for `service`, with `headers` added, of
/// which those named in `signed` (plus `host` and `x-amz-date`) are signed. The body is left
/// for the server to hash (no `x-amz-content-sha256`, as botocore does).
pub struct Request<'a> {
    pub host: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
    pub headers: &'a [(&'a str, String)],
    pub signed: &'a [&'a str],
}

/// The headers to send (`x-amz-date`, `authorization` and the given ones; not `host`), signed
/// with `key_id`/`secret` now.
pub fn sign(r: &Request<'_>, key_id: &str, secret: &str) -> Vec<(String, String)> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let date = gust_core::lambda::amz_date(secs);
    let day = &date[..8];
    let mut all: Vec<(String, String)> =
        vec![("host".into(), r.host.to_string()), ("x-amz-date".into(), date.clone())];
    all.extend(r.headers.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let mut names: Vec<&str> = vec!["host", "x-amz-date"];
    names.extend(r.signed);
    names.sort_unstable();
    let canonical_headers: String =
        names.iter().map(|n| format!("{n}:{}\n", all.iter().find(|(k, _)| k == n).unwrap().1)).collect();
    let signed_headers = names.join(";");
    let mut pairs: Vec<&str> = r.query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    let canonical_path: String = r
        .path
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let canonical = format!(
        "{}\n{canonical_path}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        r.method,
        pairs.join("&"),
        hex::encode(Sha256::digest(r.body))
    );
    let scope = format!("{day}/us-east-1/{}/aws4_request", r.service);
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
    let mut k = hmac_sha256(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in ["us-east-1", r.service, "aws4_request"] {
        k = hmac_sha256(&k, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&k, to_sign.as_bytes()));
    all.push((
        "authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"),
    ));
    all.retain(|(k, _)| k != "host");
    all
}
