//! Names and qualifiers: what a function, alias and qualifier may look like.

use thiserror::Error;

/// The qualifier naming the unpublished, mutable configuration of a function.
pub const LATEST: &str = "$LATEST";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("function name must be 1-64 characters of letters, digits, '-' and '_', got {0:?}")]
    Function(String),
    #[error(
        "alias name must be 1-128 characters of letters, digits, '-' and '_', not all digits, got {0:?}"
    )]
    Alias(String),
    #[error("qualifier must be $LATEST, a version number or an alias name, got {0:?}")]
    Qualifier(String),
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

pub fn validate_function_name(name: &str) -> Result<(), NameError> {
    if (1..=64).contains(&name.len()) && name.chars().all(is_name_char) {
        Ok(())
    } else {
        Err(NameError::Function(truncate(name)))
    }
}

pub fn validate_alias_name(name: &str) -> Result<(), NameError> {
    let all_digits = name.chars().all(|c| c.is_ascii_digit());
    if (1..=128).contains(&name.len()) && name.chars().all(is_name_char) && !all_digits {
        Ok(())
    } else {
        Err(NameError::Alias(truncate(name)))
    }
}

/// What an invocation names: the mutable head, a published version, or an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualifier {
    Latest,
    Version(u64),
    Alias(String),
}

impl Qualifier {
    pub fn parse(q: Option<&str>) -> Result<Self, NameError> {
        match q {
            None | Some("") | Some(LATEST) => Ok(Qualifier::Latest),
            Some(s) if s.chars().all(|c| c.is_ascii_digit()) => s
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Qualifier::Version)
                .ok_or_else(|| NameError::Qualifier(truncate(s))),
            Some(s) => validate_alias_name(s)
                .map(|()| Qualifier::Alias(s.to_string()))
                .map_err(|_| NameError::Qualifier(truncate(s))),
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Qualifier::Latest => LATEST.to_string(),
            Qualifier::Version(n) => n.to_string(),
            Qualifier::Alias(a) => a.clone(),
        }
    }
}

/// Names quoted back in error messages are cut short: a client may send megabytes.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        assert!(validate_function_name("hello-world_1").is_ok());
        assert!(validate_function_name("").is_err());
        assert!(validate_function_name("a/b").is_err());
        assert!(validate_function_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn qualifiers() {
        assert_eq!(Qualifier::parse(None).unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse(Some("$LATEST")).unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse(Some("7")).unwrap(), Qualifier::Version(7));
        assert_eq!(Qualifier::parse(Some("live")).unwrap(), Qualifier::Alias("live".into()));
        assert!(Qualifier::parse(Some("0")).is_err());
        assert!(Qualifier::parse(Some("a b")).is_err());
        assert!(validate_alias_name("123").is_err());
    }
}
