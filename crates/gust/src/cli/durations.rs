//! Durations on the command line: `30s`, `500ms`, `2m`, `1h30m`; a bare number is seconds, as
//! in AWS's CLI and console (`--timeout 30` is thirty seconds, never thirty milliseconds).
//!
//! Parsed by clap (a `value_parser`), so junk is a usage error (exit code 2) naming the flag.

use std::time::Duration;

/// The units a duration may be written in, longest name first so `ms` is not read as `m`.
const UNITS: [(&str, u64); 4] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Longer than anything gust accepts anywhere (a day): a typo such as `30000h` is refused here
/// with a clear message instead of overflowing or reaching the server.
const MAX: Duration = Duration::from_secs(24 * 3600);

/// Parses `30`, `30s`, `500ms`, `2m`, `1h`, or a sum of them written together (`1m30s`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let junk = || {
        format!("{text:?} is not a duration: write a whole number with a unit, such as 30s, 500ms, 2m or 1h (a bare number is seconds)")
    };
    if s.is_empty() {
        return Err(junk());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| junk())?;
        return checked(secs.checked_mul(1_000), text);
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(junk());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| junk())?;
        rest = &rest[digits..];
        let (unit, factor) = UNITS.iter().find(|(u, _)| rest.starts_with(u)).ok_or_else(junk)?;
        rest = &rest[unit.len()..];
        let ms = n.checked_mul(*factor).ok_or_else(|| too_long(text))?;
        total_ms = total_ms.checked_add(ms).ok_or_else(|| too_long(text))?;
    }
    checked(Some(total_ms), text)
}

fn checked(ms: Option<u64>, text: &str) -> Result<Duration, String> {
    let d = Duration::from_millis(ms.ok_or_else(|| too_long(text))?);
    if d > MAX {
        return Err(too_long(text));
    }
    Ok(d)
}

fn too_long(text: &str) -> String {
    format!("{text:?} is longer than any duration gust takes (at most 24h)")
}

/// A duration as a person writes it: `3s`, `500ms`, `15m`, `1m30s`.
pub fn show_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, factor) in UNITS.iter().rev() {
        if rest >= *factor {
            out.push_str(&format!("{}{unit}", rest / factor));
            rest %= factor;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        let ms = |s: &str| parse(s).map(|d| d.as_millis() as u64);
        assert_eq!(ms("30"), Ok(30_000), "a bare number is seconds, as in AWS");
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("2m"), Ok(120_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms(" 15m "), Ok(900_000));
        assert_eq!(ms("0"), Ok(0));
    }

    #[test]
    fn junk_is_refused_with_a_clear_message() {
        for bad in [
            "",
            "30x",
            "s",
            "ms",
            "-5",
            "1.5s",
            "30 s",
            "3e2",
            "٣s",
            "30sms",
            "m30",
            "9999999999999999999999",
            "25h",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("duration") || e.contains("at most"), "{bad}: {e}");
        }
        assert!(parse("18446744073709551615h").is_err(), "overflow is refused, not wrapped");
    }

    #[test]
    fn shown_as_written() {
        assert_eq!(show_ms(3_000), "3s");
        assert_eq!(show_ms(500), "500ms");
        assert_eq!(show_ms(90_000), "1m30s");
        assert_eq!(show_ms(900_000), "15m");
        assert_eq!(show_ms(1_500), "1s500ms");
        for ms in [1, 999, 1_000, 61_001, 3_600_000, 86_400_000] {
            assert_eq!(parse(&show_ms(ms)).unwrap().as_millis() as u64, ms, "round trip");
        }
    }
}
