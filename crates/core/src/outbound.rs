//! The hosts a wasi:http component may send requests to (a function's
//! `allowed_outbound_hosts`): nothing unless listed.
//!
//! An entry is `[SCHEME://]HOST[:PORT]`:
//! - SCHEME is `http` or `https`; without one, either;
//! - HOST is a DNS name (lower case), `*.` and a DNS name for any name under it, an IPv4
//!   address, or `*` for any host;
//! - PORT is a port or `*`; without one, the scheme's own port (80 for http, 443 for https).
//!
//! Which addresses a listed name may reach is the runtime's business: names that resolve to
//! loopback, private or link-local addresses are refused there unless the operator allows
//! private networks.

use crate::limits::{MAX_OUTBOUND_HOSTS, MAX_OUTBOUND_HOST_BYTES};

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<'a> {
    scheme: Option<&'a str>,
    host: &'a str,
    /// `None`: any port.
    port: Option<u16>,
    /// The entry named no port: the scheme's own.
    default_port: bool,
}

fn parse(entry: &str) -> Result<Entry<'_>, String> {
    let bad = |why: &str| format!("allowed outbound host {entry:?}: {why}");
    if entry.is_empty() || entry.len() > MAX_OUTBOUND_HOST_BYTES {
        return Err(bad(&format!("must be 1-{MAX_OUTBOUND_HOST_BYTES} characters")));
    }
    let (scheme, rest) = match entry.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (Some(s), rest),
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => (None, entry),
    };
    let (host, port, default_port) = match rest.rsplit_once(':') {
        Some((host, "*")) => (host, None, false),
        Some((host, port)) => {
            let port: u16 =
                port.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port must be 1-65535 or *"))?;
            (host, Some(port), false)
        }
        None => (rest, None, true),
    };
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    let host_ok = host == "*" || host.strip_prefix("*.").map_or_else(|| name_ok(host), name_ok);
    if !host_ok {
        return Err(bad("the host must be a lower-case DNS name, *.NAME, an IPv4 address or *"));
    }
    Ok(Entry { scheme, host, port, default_port })
}

/// Checks a function's list: at most [`MAX_OUTBOUND_HOSTS`] well-formed entries.
pub fn validate(list: &[String]) -> Result<(), String> {
    if list.len() > MAX_OUTBOUND_HOSTS {
        return Err(format!("at most {MAX_OUTBOUND_HOSTS} allowed outbound hosts"));
    }
    list.iter().try_for_each(|e| parse(e).map(|_| ()))
}

/// Whether `list` allows a request to `scheme://host:port` (`host` as the request names it;
/// compared case-insensitively, a trailing dot ignored).
pub fn allows(list: &[String], scheme: &str, host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let own_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    list.iter().filter_map(|e| parse(e).ok()).any(|e| {
        let scheme_ok = e.scheme.is_none_or(|s| s == scheme);
        let port_ok = match (e.port, e.default_port) {
            (Some(p), _) => p == port,
            (None, true) => port == own_port,
            (None, false) => true,
        };
        let host_ok = match e.host {
            "*" => true,
            pattern => match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    host.strip_suffix(suffix).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
                }
                None => host == pattern,
            },
        };
        scheme_ok && port_ok && host_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn nothing_is_allowed_unless_listed() {
        assert!(!allows(&[], "https", "example.com", 443));
        let l = list(&["https://api.example.com", "*.internal.test:8080", "10.0.0.1:*"]);
        assert!(allows(&l, "https", "api.example.com", 443));
        assert!(allows(&l, "https", "API.Example.com.", 443));
        assert!(!allows(&l, "http", "api.example.com", 80), "the scheme is part of the entry");
        assert!(!allows(&l, "https", "api.example.com", 8443), "no port means the scheme's own");
        assert!(!allows(&l, "https", "evil-api.example.com", 443));
        assert!(!allows(&l, "https", "api.example.com.evil.test", 443));
        assert!(allows(&l, "http", "a.internal.test", 8080));
        assert!(allows(&l, "https", "a.b.internal.test", 8080));
        assert!(!allows(&l, "http", "internal.test", 8080), "*. names what is under it");
        assert!(!allows(&l, "http", "xinternal.test", 8080));
        assert!(allows(&l, "http", "10.0.0.1", 1));
        assert!(!allows(&l, "ftp", "10.0.0.1", 1));
        assert!(allows(&list(&["*:*"]), "http", "anything.test", 9));
        assert!(!allows(&list(&["*"]), "http", "anything.test", 9));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "",
            "ftp://a.test",
            "A.test",
            "a.test:0",
            "a.test:99999",
            "a..test",
            "*a.test",
            "a.test/path",
            "-a.test",
            "[::1]",
        ] {
            assert!(validate(&list(&[bad])).is_err(), "{bad:?}");
        }
        assert!(validate(&list(&["https://a.test", "*.b.test:*", "*", "127.0.0.1:8080"])).is_ok());
        assert!(validate(&vec!["a.test".to_string(); MAX_OUTBOUND_HOSTS + 1]).is_err());
    }
}
