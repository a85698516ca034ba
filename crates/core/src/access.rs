//! Who may do what: roles, the actions they allow, function globs, and named API keys.
//!
//! A caller is one [`Grant`]: a role and, optionally, a glob of the function names it covers.
//! The bootstrap `--token` and every `--aws-credential` are unscoped admins; a named key
//! ([`ApiKey`]) carries its own role and glob. Deciding is pure ([`Grant::check`]); finding
//! out who is calling is the API's and the service's business.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::is_name_char;
use crate::Millis;

/// What a request does, from least to most powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read functions, versions, aliases, configurations and invocation records.
    Read,
    /// Invoke, sync or async.
    Invoke,
    /// Create, update and delete functions, code, versions, aliases, concurrency and
    /// event-invoke configuration.
    Deploy,
    /// Manage API keys and see the workers of the cluster.
    Admin,
}

/// A key's role: each role allows what the one before it does, and more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Invoker,
    Deployer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Invoker, Role::Deployer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Invoker => "invoker",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role allows `action` (on functions its glob covers).
    pub fn allows(self, action: Action) -> bool {
        let least = match action {
            Action::Read => Role::Reader,
            Action::Invoke => Role::Invoker,
            Action::Deploy => Role::Deployer,
            Action::Admin => Role::Admin,
        };
        self >= least
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest glob accepted (a function name is at most 64 characters).
pub const MAX_GLOB_LEN: usize = 128;

/// A pattern over function names: `*` is any run of characters (also none), `?` exactly one;
/// every other character is a function-name character and matches itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionGlob(String);

impl FunctionGlob {
    pub fn parse(pattern: &str) -> Result<FunctionGlob, String> {
        if pattern.is_empty() || pattern.len() > MAX_GLOB_LEN {
            return Err(format!("a function glob has 1 to {MAX_GLOB_LEN} characters"));
        }
        match pattern.chars().find(|&c| !(is_name_char(c) || c == '*' || c == '?')) {
            Some(c) => Err(format!(
                "function glob {pattern:?} has {c:?}: use function-name characters (letters, digits, - and _), * and ?"
            )),
            None => Ok(FunctionGlob(pattern.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches, by the classic two-pointer walk (linear in practice, never
    /// exponential: a `*` only ever backtracks to the latest star).
    pub fn matches(&self, name: &str) -> bool {
        let (p, s): (Vec<char>, Vec<char>) = (self.0.chars().collect(), name.chars().collect());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

impl TryFrom<String> for FunctionGlob {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        FunctionGlob::parse(&s)
    }
}

impl From<FunctionGlob> for String {
    fn from(g: FunctionGlob) -> String {
        g.0
    }
}

/// What one caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who, for messages: a key's name, `--token` or the AWS access key id.
    pub principal: String,
    pub role: Role,
    /// `None`: every function.
    pub functions: Option<FunctionGlob>,
}

/// Why a request is refused; the message names the caller, the action and the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Grant {
    /// An unscoped admin: the bootstrap token, an `--aws-credential`, or no authentication.
    pub fn admin(principal: &str) -> Grant {
        Grant { principal: principal.to_string(), role: Role::Admin, functions: None }
    }

    /// Whether the grant covers the function `name` (its glob matches, or it has none).
    pub fn covers(&self, name: &str) -> bool {
        self.functions.as_ref().is_none_or(|g| g.matches(name))
    }

    /// Allows `action`, on `function` when the action is about one.
    pub fn check(&self, action: Action, function: Option<&str>) -> Result<(), Denied> {
        if !self.role.allows(action) {
            return Err(Denied(format!(
                "{} (role {}) may not {}",
                self.principal,
                self.role,
                match action {
                    Action::Read => "read",
                    Action::Invoke => "invoke functions",
                    Action::Deploy => "change functions",
                    Action::Admin => "manage API keys or workers",
                }
            )));
        }
        match (function, &self.functions) {
            (Some(name), Some(glob)) if !glob.matches(name) => {
                Err(Denied(format!("{} covers functions {} only, not {name}", self.principal, glob.as_str())))
            }
            _ => Ok(()),
        }
    }
}

/// A named API key as the store keeps it. The bearer secret is kept only as its SHA-256; the
/// SigV4 secret is needed to check signatures, so the store keeps it sealed (see
/// `gust_store::secrets`). `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Unique among live keys; a revoked name may be used again.
    pub name: String,
    /// Random, public: the middle of the bearer token (`gust_<id>_<secret>`) and, after `GK`,
    /// the SigV4 access key id. Lookups are by id, never a scan.
    pub id: String,
    pub role: Role,
    pub functions: Option<FunctionGlob>,
    /// SHA-256 (lowercase hex) of the bearer token's secret part.
    pub bearer_sha256: String,
    /// The SigV4 secret access key.
    pub sigv4_secret: String,
    pub created_at: Millis,
    /// When the key last authenticated a request (updated at most once a minute per server).
    pub last_used_at: Option<Millis>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("role", &self.role)
            .field("functions", &self.functions)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

/// The prefix of every SigV4 access key id of a named key.
pub const ACCESS_KEY_PREFIX: &str = "GK";
/// The prefix of every bearer token of a named key.
pub const BEARER_PREFIX: &str = "gust_";

impl ApiKey {
    pub fn access_key_id(&self) -> String {
        format!("{ACCESS_KEY_PREFIX}{}", self.id)
    }

    pub fn grant(&self) -> Grant {
        Grant { principal: format!("key {}", self.name), role: self.role, functions: self.functions.clone() }
    }
}

/// Splits a bearer token `gust_<id>_<secret>` into id and secret; `None` for anything else.
pub fn split_bearer(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(BEARER_PREFIX)?.split_once('_')?;
    (is_key_id(id) && !secret.is_empty()).then_some((id, secret))
}

/// The key id of a SigV4 access key id `GK<id>`; `None` for anything else.
pub fn key_id_of_access_key(access_key_id: &str) -> Option<&str> {
    access_key_id.strip_prefix(ACCESS_KEY_PREFIX).filter(|id| is_key_id(id))
}

/// A key's name: 1 to 64 letters, digits, `-` and `_` (what a function name may hold).
pub fn validate_key_name(name: &str) -> Result<(), String> {
    if (1..=64).contains(&name.len()) && name.chars().all(is_name_char) {
        Ok(())
    } else {
        Err(format!(
            "invalid key name {:?}: use 1 to 64 letters, digits, - and _",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// Characters of a key id: 20 of uppercase letters and digits.
pub const KEY_ID_LEN: usize = 20;

pub fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest() {
        use Action::*;
        let table = [
            (Role::Reader, [true, false, false, false]),
            (Role::Invoker, [true, true, false, false]),
            (Role::Deployer, [true, true, true, false]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, expect) in table {
            let got = [Read, Invoke, Deploy, Admin].map(|a| role.allows(a));
            assert_eq!(got, expect, "{role}");
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn globs_match_like_a_shell() {
        let g = |p: &str| FunctionGlob::parse(p).unwrap();
        assert!(g("team-a-*").matches("team-a-x"));
        assert!(g("team-a-*").matches("team-a-"));
        assert!(!g("team-a-*").matches("team-b-x"));
        assert!(!g("team-a-*").matches("xteam-a-y"));
        assert!(g("f?").matches("f1") && !g("f?").matches("f") && !g("f?").matches("f12"));
        assert!(g("*").matches("anything"));
        assert!(g("a*b*c").matches("abc") && g("a*b*c").matches("a-b-b-c") && !g("a*b*c").matches("a-b-b"));
        assert!(g("exact").matches("exact") && !g("exact").matches("exact2"));
        assert!(g("**x").matches("x") && g("*x*").matches("axb"));
        // No exponential blow-up on adversarial patterns.
        let long = "a".repeat(64);
        assert!(!g(&("a*".repeat(30) + "c")).matches(&(long.clone() + "b")));
        assert!(g(&"a*".repeat(30)).matches(&(long + "b")));
        for bad in ["", "a/b", "a b", "f:1", "x,y", &"a".repeat(MAX_GLOB_LEN + 1)] {
            assert!(FunctionGlob::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_grant_checks_role_then_function() {
        let scoped = Grant {
            principal: "key ci".into(),
            role: Role::Deployer,
            functions: Some(FunctionGlob::parse("app-*").unwrap()),
        };
        assert!(scoped.check(Action::Deploy, Some("app-1")).is_ok());
        assert!(scoped.check(Action::Read, Some("other")).is_err());
        assert!(scoped.check(Action::Admin, None).is_err());
        assert!(scoped.check(Action::Read, None).is_ok(), "a listing is filtered, not refused");
        assert!(scoped.covers("app-x") && !scoped.covers("db"));
        assert!(Grant::admin("--token").check(Action::Admin, Some("x")).is_ok());
    }

    #[test]
    fn tokens_and_access_key_ids_are_recognised_by_shape() {
        let id = "ABCDEFGHIJ0123456789";
        assert_eq!(split_bearer(&format!("gust_{id}_s3cr_et")), Some((id, "s3cr_et")));
        assert_eq!(split_bearer(&format!("gust_{id}_")), None);
        assert_eq!(split_bearer("gust_short_secret"), None);
        assert_eq!(split_bearer("plain-token"), None);
        assert_eq!(key_id_of_access_key(&format!("GK{id}")), Some(id));
        assert_eq!(key_id_of_access_key("AKIDEXAMPLE"), None);
        let key = ApiKey {
            name: "n".into(),
            id: id.into(),
            role: Role::Reader,
            functions: None,
            bearer_sha256: "hash-value".into(),
            sigv4_secret: "sigv4-secret-value".into(),
            created_at: 0,
            last_used_at: None,
        };
        let shown = format!("{key:?}");
        assert!(!shown.contains("hash-value") && !shown.contains("sigv4-secret-value"), "{shown}");
    }
}
