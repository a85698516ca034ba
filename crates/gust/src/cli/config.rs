//! The CLI's config file and its profiles: which server to talk to, with which credentials.
//!
//! ```toml
//! # ~/.config/gust/config.toml ($XDG_CONFIG_HOME/gust/config.toml; GUST_CONFIG names another)
//! [profiles.default]              # used when no --profile / GUST_PROFILE is given
//! server = "http://127.0.0.1:8080"
//!
//! [profiles.prod]
//! server = "https://gust.example.com:8443"
//! token_file = "~/.config/gust/prod.token"   # relative paths are from this file's directory
//! ca = "/etc/gust/ca.pem"
//! ```
//!
//! Each setting is taken from the first of: the command line flag, its environment variable
//! (`GUST_SERVER`, `GUST_TOKEN` / `GUST_TOKEN_FILE`, `GUST_CA`), the profile, the built-in
//! default. A profile may hold a `token` itself only if the file is readable by its owner
//! alone (mode 0600): a token other users can read is refused, not used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::api::Failure;

/// The server a client command talks to when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The profile used when none is named, if the file has it.
const DEFAULT_PROFILE: &str = "default";

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Profile {
    server: Option<String>,
    token_file: Option<String>,
    token: Option<String>,
    ca: Option<String>,
}

/// The command line's (and environment's) say, before the profile.
#[derive(Debug, Default)]
pub struct Given {
    pub server: Option<String>,
    /// `--token` or `GUST_TOKEN`, and whether it came from the command line.
    pub token: Option<(String, bool)>,
    /// `--token-file` or `GUST_TOKEN_FILE`, and whether it came from the command line.
    pub token_file: Option<(PathBuf, bool)>,
    pub ca: Option<PathBuf>,
    pub profile: Option<String>,
}

/// What a client command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub server: String,
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
}

/// Where the config file is: `GUST_CONFIG`, else `$XDG_CONFIG_HOME/gust/config.toml`, else
/// `~/.config/gust/config.toml`; and whether it was named explicitly (then it must exist).
fn location(env: &dyn Fn(&str) -> Option<String>) -> Option<(PathBuf, bool)> {
    if let Some(p) = env("GUST_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    // The XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored.
    if let Some(x) = env("XDG_CONFIG_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Some((Path::new(&x).join("gust/config.toml"), false));
    }
    env("HOME").filter(|h| !h.is_empty()).map(|h| (Path::new(&h).join(".config/gust/config.toml"), false))
}

/// Resolves the options of a client command against the config file of the environment.
pub fn resolve(given: Given) -> Result<Resolved, Failure> {
    resolve_with(given, &|k| std::env::var(k).ok())
}

pub fn resolve_with(given: Given, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, Failure> {
    let file = match location(env) {
        Some((path, named)) => load(&path, named)?.map(|f| (path, f)),
        None => None,
    };
    let profile = match (&given.profile, &file) {
        (Some(name), None) => {
            let path =
                location(env).map(|(p, _)| p.display().to_string()).unwrap_or_else(|| "(no HOME)".into());
            return Err(Failure::usage(format!(
                "profile {name:?} is not defined: there is no config file {path}"
            )));
        }
        (Some(name), Some((path, f))) => match f.profiles.get(name) {
            Some(p) => Some((path.as_path(), name.as_str(), p)),
            None => {
                let known: Vec<&str> = f.profiles.keys().map(String::as_str).collect();
                return Err(Failure::usage(format!(
                    "profile {name:?} is not defined in {} (it has: {})",
                    path.display(),
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            }
        },
        (None, Some((path, f))) => {
            f.profiles.get(DEFAULT_PROFILE).map(|p| (path.as_path(), DEFAULT_PROFILE, p))
        }
        (None, None) => None,
    };

    let server = given
        .server
        .or_else(|| profile.and_then(|(_, _, p)| p.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let ca = given
        .ca
        .or_else(|| profile.and_then(|(path, _, p)| p.ca.as_deref().map(|c| relative_to(path, c, env))));

    // A token in the profile is refused when others can read the file, whether or not a flag
    // overrides it: the secret is exposed either way, and saying so is the point.
    if let Some((path, name, p)) = profile {
        if p.token.is_some() {
            check_private(path, name)?;
        }
    }
    let token = match (given.token, given.token_file) {
        (Some((_, true)), Some((_, true))) => {
            return Err(Failure::usage("give --token or --token-file, not both"));
        }
        // The command line before the environment.
        (_, Some((file, true))) => read_token_file(&file, "--token-file")?,
        (Some((t, _)), _) => Some(t),
        (None, Some((file, false))) => read_token_file(&file, "GUST_TOKEN_FILE")?,
        (None, None) => match profile {
            Some((_, _, Profile { token: Some(t), .. })) => {
                Some(t.trim().to_string()).filter(|t| !t.is_empty())
            }
            Some((path, name, Profile { token_file: Some(f), .. })) => {
                read_token_file(&relative_to(path, f, env), &format!("token_file of profile {name:?}"))?
            }
            _ => None,
        },
    };
    Ok(Resolved { server, token, ca })
}

fn load(path: &Path, named: bool) -> Result<Option<File>, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => {
            return Err(Failure::usage(format!(
                "cannot read the config file {}{}: {e}",
                path.display(),
                if named { " (GUST_CONFIG)" } else { "" }
            )))
        }
    };
    // The line and what is wrong, never the line itself: it may hold a token.
    toml::from_str(&text).map(Some).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        Failure::usage(format!(
            "the config file {} is not valid{at}: {}",
            path.display(),
            redacted(e.message().trim())
        ))
    })
}

/// `message` with every double-quoted part (a value, as serde quotes strings) elided.
fn redacted(message: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// `~/x` from HOME, a relative path from the config file's directory, an absolute one as is.
fn relative_to(config: &Path, p: &str, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let (Some(rest), Some(home)) = (p.strip_prefix("~/"), env("HOME")) {
        return Path::new(&home).join(rest);
    }
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    config.parent().unwrap_or(Path::new(".")).join(p)
}

fn check_private(path: &Path, profile: &str) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Failure::usage(format!(
            "refusing the token in profile {profile:?} of {}: the file is mode {:04o}, so other users can read the token; \
             make it private (chmod 600 {}) or put the token in a file of its own named by token_file",
            path.display(),
            mode & 0o7777,
            path.display()
        )));
    }
    Ok(())
}

fn read_token_file(path: &Path, what: &str) -> Result<Option<String>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {what} {}: {e}", path.display())))?;
    Ok(Some(text.lines().next().unwrap_or("").trim().to_string()).filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn flags_then_env_then_profile_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("xdg/gust/config.toml");
        write(&dir.path().join("xdg/gust/t"), "from-profile-file\n", 0o600);
        write(
            &cfg,
            "[profiles.default]\nserver = \"http://default:1\"\n[profiles.p]\nserver = \"http://p:2\"\ntoken_file = \"t\"\nca = \"ca.pem\"\n",
            0o644,
        );
        let env = env_of(vec![("XDG_CONFIG_HOME", dir.path().join("xdg").display().to_string())]);
        let r = resolve_with(Given::default(), &env).unwrap();
        assert_eq!(r.server, "http://default:1", "the default profile is used when present");
        let p = || Given { profile: Some("p".into()), ..Given::default() };
        let r = resolve_with(p(), &env).unwrap();
        assert_eq!(r.server, "http://p:2");
        assert_eq!(r.token.as_deref(), Some("from-profile-file"), "token_file relative to the config file");
        assert_eq!(r.ca, Some(dir.path().join("xdg/gust/ca.pem")));
        let r = resolve_with(
            Given { server: Some("http://flag:3".into()), token: Some(("tok".into(), false)), ..p() },
            &env,
        )
        .unwrap();
        assert_eq!((r.server.as_str(), r.token.as_deref()), ("http://flag:3", Some("tok")));
        let missing =
            resolve_with(Given { profile: Some("nope".into()), ..Given::default() }, &env).unwrap_err();
        assert!(
            missing.message.contains("\"nope\" is not defined") && missing.message.contains("default, p"),
            "{}",
            missing.message
        );
        let none = resolve_with(
            Given::default(),
            &env_of(vec![("HOME", dir.path().join("empty").display().to_string())]),
        );
        assert_eq!(none.unwrap().server, DEFAULT_SERVER, "no file, no profile: the built-in default");
    }

    #[test]
    fn a_token_in_a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        write(&cfg, "[profiles.default]\ntoken = \"s3cret\"\n", 0o644);
        let env = env_of(vec![("GUST_CONFIG", cfg.display().to_string())]);
        let e = resolve_with(Given::default(), &env).unwrap_err();
        assert!(e.message.contains("mode 0644") && e.message.contains("chmod 600"), "{}", e.message);
        assert!(!e.message.contains("s3cret"), "the message never shows the token");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(resolve_with(Given::default(), &env).unwrap().token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn a_named_config_must_exist_and_be_valid() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        let env = env_of(vec![("GUST_CONFIG", cfg.display().to_string())]);
        assert!(resolve_with(Given::default(), &env).unwrap_err().message.contains("GUST_CONFIG"));
        write(&cfg, "[profiles.default]\nsevrer = \"typo\"\n", 0o600);
        let e = resolve_with(Given::default(), &env).unwrap_err();
        assert!(e.message.contains("not valid") && e.message.contains("sevrer"), "{}", e.message);
    }

    #[test]
    fn command_line_token_flags_beat_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        write(&file, "from-file\n", 0o600);
        let env = env_of(vec![]);
        let r = resolve_with(
            Given {
                token: Some(("env".into(), false)),
                token_file: Some((file.clone(), true)),
                ..Given::default()
            },
            &env,
        );
        assert_eq!(r.unwrap().token.as_deref(), Some("from-file"));
        let r = resolve_with(
            Given {
                token: Some(("flag".into(), true)),
                token_file: Some((file.clone(), false)),
                ..Given::default()
            },
            &env,
        );
        assert_eq!(r.unwrap().token.as_deref(), Some("flag"));
        let both = resolve_with(
            Given { token: Some(("flag".into(), true)), token_file: Some((file, true)), ..Given::default() },
            &env,
        );
        assert!(both.is_err());
    }
}
