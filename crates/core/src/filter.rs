//! Lambda's event filtering (an event source mapping's `FilterCriteria`): patterns in
//! EventBridge's syntax, matched against each record before the function sees it.
//!
//! A pattern is a JSON object shaped like the record: an object value descends into the
//! record's object at that key; an array value lists matchers, any of which may match (an
//! array in the record matches if any of its elements does). Matchers: a literal (string,
//! number, `true`/`false`, `null`), `{"prefix": s}`, `{"suffix": s}`, `{"equals-ignore-case":
//! s}`, `{"anything-but": literal | [literals] | {"prefix": s}}`, `{"numeric": [op, n, ...]}`
//! with `=`, `<`, `<=`, `>`, `>=`, and `{"exists": bool}`; `"$or": [pattern, ...]` at any
//! level. An SQS record's `body` is matched as JSON when it is JSON, else as a string.

use serde_json::{Map, Value};

/// Most filters on one mapping (Lambda's default quota).
pub const MAX_FILTERS: usize = 5;
/// Most characters in one pattern.
pub const MAX_PATTERN_CHARS: usize = 4096;
/// Deepest nesting a pattern may have.
const MAX_DEPTH: usize = 16;

/// A parsed, checked pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Map<String, Value>);

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.chars().count() > MAX_PATTERN_CHARS {
            return Err(format!("a filter pattern is longer than {MAX_PATTERN_CHARS} characters"));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("a filter pattern is not JSON: {e}"))?;
        match value {
            Value::Object(map) => {
                check_object(&map, 0)?;
                Ok(Pattern(map))
            }
            _ => Err("a filter pattern must be a JSON object".into()),
        }
    }

    pub fn matches(&self, event: &Value) -> bool {
        object_matches(&self.0, Some(event))
    }
}

fn check_object(map: &Map<String, Value>, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("a filter pattern nests deeper than {MAX_DEPTH}"));
    }
    if map.is_empty() {
        return Err("a filter pattern may not have an empty object".into());
    }
    for (key, value) in map {
        match (key.as_str(), value) {
            ("$or", Value::Array(alternatives)) if alternatives.len() >= 2 => {
                for a in alternatives {
                    match a {
                        Value::Object(m) => check_object(m, depth + 1)?,
                        _ => return Err("each of $or's alternatives is a pattern object".into()),
                    }
                }
            }
            ("$or", _) => return Err("$or takes an array of at least two patterns".into()),
            (_, Value::Object(m)) => check_object(m, depth + 1)?,
            (_, Value::Array(matchers)) if !matchers.is_empty() => {
                for m in matchers {
                    check_matcher(key, m)?;
                }
            }
            _ => {
                return Err(format!(
                    "the value of {key:?} must be an object or a non-empty array of matchers"
                ))
            }
        }
    }
    Ok(())
}

fn check_matcher(key: &str, m: &Value) -> Result<(), String> {
    let bad = |why: &str| Err(format!("matcher of {key:?}: {why}"));
    let Value::Object(op) = m else { return Ok(()) };
    if op.len() != 1 {
        return bad("an operator object has exactly one operator");
    }
    let (name, arg) = op.iter().next().expect("one entry");
    match (name.as_str(), arg) {
        ("prefix" | "suffix" | "equals-ignore-case", Value::String(_)) => Ok(()),
        ("exists", Value::Bool(_)) => Ok(()),
        ("anything-but", Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null) => Ok(()),
        ("anything-but", Value::Array(list)) if list.iter().all(|v| !v.is_object() && !v.is_array()) => {
            Ok(())
        }
        ("anything-but", Value::Object(inner))
            if inner.len() == 1 && inner.get("prefix").is_some_and(Value::is_string) =>
        {
            Ok(())
        }
        ("numeric", Value::Array(terms)) => {
            let ok = !terms.is_empty()
                && terms.len() <= 4
                && terms.chunks(2).all(|pair| {
                    matches!(pair, [Value::String(op), Value::Number(_)] if matches!(op.as_str(), "=" | "<" | "<=" | ">" | ">="))
                });
            if ok {
                Ok(())
            } else {
                bad("numeric takes one or two [operator, number] pairs")
            }
        }
        (other, _) => bad(&format!("unknown or malformed operator {other:?}")),
    }
}

fn object_matches(pattern: &Map<String, Value>, event: Option<&Value>) -> bool {
    pattern.iter().all(|(key, want)| {
        if key == "$or" {
            let alternatives = want.as_array().map(Vec::as_slice).unwrap_or_default();
            return alternatives.iter().any(|a| a.as_object().is_some_and(|m| object_matches(m, event)));
        }
        let field = event.and_then(Value::as_object).and_then(|o| o.get(key));
        match want {
            Value::Object(inner) => object_matches(inner, field),
            Value::Array(matchers) => field_matches(matchers, field),
            _ => false,
        }
    })
}

fn field_matches(matchers: &[Value], field: Option<&Value>) -> bool {
    match field {
        None => matchers.iter().any(|m| m.get("exists") == Some(&Value::Bool(false))),
        Some(Value::Array(items)) => {
            items.iter().any(|item| matchers.iter().any(|m| matcher_matches(m, item)))
        }
        Some(value) => matchers.iter().any(|m| matcher_matches(m, value)),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn matcher_matches(m: &Value, value: &Value) -> bool {
    let Value::Object(op) = m else { return same(m, value) };
    let Some((name, arg)) = op.iter().next() else { return false };
    let text = value.as_str();
    match name.as_str() {
        "prefix" => text.zip(arg.as_str()).is_some_and(|(t, p)| t.starts_with(p)),
        "suffix" => text.zip(arg.as_str()).is_some_and(|(t, s)| t.ends_with(s)),
        "equals-ignore-case" => {
            text.zip(arg.as_str()).is_some_and(|(t, s)| t.to_lowercase() == s.to_lowercase())
        }
        "exists" => arg == &Value::Bool(true),
        "anything-but" => match arg {
            Value::Array(list) => !list.iter().any(|v| same(v, value)),
            Value::Object(inner) => {
                let prefix = inner.get("prefix").and_then(Value::as_str).unwrap_or_default();
                text.is_some_and(|t| !t.starts_with(prefix))
            }
            other => !same(other, value),
        },
        "numeric" => {
            let Some(n) = value.as_f64() else { return false };
            let terms = arg.as_array().map(Vec::as_slice).unwrap_or_default();
            terms.chunks(2).all(|pair| match pair {
                [Value::String(op), bound] => {
                    let Some(b) = bound.as_f64() else { return false };
                    match op.as_str() {
                        "=" => n == b,
                        "<" => n < b,
                        "<=" => n <= b,
                        ">" => n > b,
                        ">=" => n >= b,
                        _ => false,
                    }
                }
                _ => false,
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(body: &str) -> Value {
        let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()));
        json!({ "messageId": "m", "body": body, "attributes": { "ApproximateReceiveCount": "1" } })
    }

    fn matches(pattern: &str, body: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(&record(body))
    }

    #[test]
    fn patterns_match_as_lambda_documents() {
        assert!(matches(r#"{"body": {"kind": ["order"]}}"#, r#"{"kind": "order", "n": 3}"#));
        assert!(!matches(r#"{"body": {"kind": ["order"]}}"#, r#"{"kind": "refund"}"#));
        assert!(!matches(r#"{"body": {"kind": ["order"]}}"#, "kind order"), "a text body has no fields");
        assert!(matches(r#"{"body": ["plain"]}"#, "plain"));
        assert!(matches(r#"{"body": {"n": [{"numeric": [">", 2, "<=", 3]}]}}"#, r#"{"n": 3}"#));
        assert!(!matches(r#"{"body": {"n": [{"numeric": [">", 3]}]}}"#, r#"{"n": 3}"#));
        assert!(matches(r#"{"body": {"n": [3]}}"#, r#"{"n": 3.0}"#), "numbers compare as numbers");
        assert!(matches(r#"{"body": {"id": [{"prefix": "ord-"}]}}"#, r#"{"id": "ord-7"}"#));
        assert!(matches(r#"{"body": {"id": [{"suffix": ".png"}]}}"#, r#"{"id": "a.png"}"#));
        assert!(matches(r#"{"body": {"c": [{"equals-ignore-case": "EU"}]}}"#, r#"{"c": "eu"}"#));
        assert!(matches(r#"{"body": {"c": [{"anything-but": ["us", "ca"]}]}}"#, r#"{"c": "eu"}"#));
        assert!(!matches(r#"{"body": {"c": [{"anything-but": "eu"}]}}"#, r#"{"c": "eu"}"#));
        assert!(
            !matches(r#"{"body": {"c": [{"anything-but": "eu"}]}}"#, r#"{}"#),
            "anything-but needs the field"
        );
        assert!(matches(r#"{"body": {"c": [{"anything-but": {"prefix": "test-"}}]}}"#, r#"{"c": "prod"}"#));
        assert!(matches(r#"{"body": {"gone": [{"exists": false}]}}"#, r#"{"c": 1}"#));
        assert!(!matches(r#"{"body": {"c": [{"exists": false}]}}"#, r#"{"c": 1}"#));
        assert!(matches(r#"{"body": {"c": [{"exists": true}]}}"#, r#"{"c": null}"#));
        assert!(matches(r#"{"body": {"tags": ["red"]}}"#, r#"{"tags": ["blue", "red"]}"#));
        assert!(matches(r#"{"body": {"v": [null]}}"#, r#"{"v": null}"#));
        assert!(matches(r#"{"attributes": {"ApproximateReceiveCount": ["1"]}}"#, "x"));
        let either = r#"{"body": {"$or": [{"a": [1]}, {"b": [2]}]}}"#;
        assert!(matches(either, r#"{"b": 2}"#) && !matches(either, r#"{"a": 2}"#));
        // Fields are ANDed.
        assert!(!matches(r#"{"body": {"a": [1], "b": [2]}}"#, r#"{"a": 1}"#));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        for (bad, says) in [
            ("[]", "object"),
            ("{", "not JSON"),
            (r#"{"body": "x"}"#, "non-empty array"),
            (r#"{"body": []}"#, "non-empty array"),
            (r#"{"body": {}}"#, "empty object"),
            (r#"{"n": [{"numeric": [">", "3"]}]}"#, "numeric"),
            (r#"{"n": [{"numeric": ["!=", 3]}]}"#, "numeric"),
            (r#"{"n": [{"wildcard": "*"}]}"#, "unknown"),
            (r#"{"n": [{"prefix": "a", "suffix": "b"}]}"#, "exactly one"),
            (r#"{"$or": [{"a": [1]}]}"#, "at least two"),
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let deep = format!("{}[1]{}", r#"{"a":"#.repeat(40), "}".repeat(40));
        assert!(Pattern::parse(&deep).unwrap_err().contains("deeper"));
        assert!(Pattern::parse(&format!(r#"{{"a": ["{}"]}}"#, "x".repeat(5000)))
            .unwrap_err()
            .contains("longer"));
    }
}
