//! Trace ids in the two forms clients and runtimes use: AWS X-Ray's header
//! (`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0`, what Lambda
//! hands a runtime as `Lambda-Runtime-Trace-Id` and `_X_AMZN_TRACE_ID`) and W3C Trace Context's
//! `traceparent` (`00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00`). Both name the same
//! 128-bit trace id and 64-bit parent span id, so one converts into the other losslessly.
//!
//! A caller's header is never passed on as it came: it is parsed, and a trace id gust writes is
//! rebuilt from the parsed parts, so nothing but hex digits reaches a runtime's headers or
//! environment.

use std::fmt;

/// A trace context: a 128-bit trace id, the caller's span (if any) and the sampling decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: [u8; 16],
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
}

impl Trace {
    /// A new trace started at `now_ms`: X-Ray's ids begin with the start time in seconds
    /// (`random` fills the rest and the parent span id).
    pub fn new(now_ms: crate::Millis, random: [u8; 20]) -> Trace {
        let mut trace_id = [0u8; 16];
        let secs = (now_ms.max(0) / 1000) as u32;
        trace_id[..4].copy_from_slice(&secs.to_be_bytes());
        trace_id[4..].copy_from_slice(&random[..12]);
        let mut parent = [0u8; 8];
        parent.copy_from_slice(&random[12..]);
        Trace { trace_id, parent: Some(parent), sampled: false }
    }

    /// The trace a request carries: `X-Amzn-Trace-Id` first (what AWS SDKs and Lambda send),
    /// then W3C `traceparent`. `None` when neither is present and valid.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Trace> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        text("x-amzn-trace-id")
            .and_then(Trace::parse_xray)
            .or_else(|| text("traceparent").and_then(Trace::parse_w3c))
    }

    /// Parses X-Ray's header. `Root` is required; `Parent` and `Sampled` are optional; other
    /// keys (`Lineage`, `Self`) are dropped.
    pub fn parse_xray(s: &str) -> Option<Trace> {
        if s.len() > 512 {
            return None;
        }
        let (mut root, mut parent, mut sampled) = (None, None, false);
        for part in s.split(';') {
            let Some((k, v)) = part.trim().split_once('=') else { continue };
            match k {
                "Root" => {
                    let rest = v.strip_prefix("1-")?;
                    let (time, id) = rest.split_once('-')?;
                    if time.len() != 8 || id.len() != 24 {
                        return None;
                    }
                    root = Some(hex_array::<16>(&format!("{time}{id}"))?);
                }
                "Parent" => parent = Some(hex_array::<8>(v)?),
                "Sampled" => sampled = v == "1",
                _ => {}
            }
        }
        let trace_id = root.filter(|r| r.iter().any(|b| *b != 0))?;
        Some(Trace { trace_id, parent: parent.filter(|p| p.iter().any(|b| *b != 0)), sampled })
    }

    /// Parses W3C `traceparent` (version 00; later versions by its first four fields).
    pub fn parse_w3c(s: &str) -> Option<Trace> {
        let mut fields = s.trim().split('-');
        let version = fields.next()?;
        let (trace, parent, flags) = (fields.next()?, fields.next()?, fields.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && fields.next().is_some()) {
            return None;
        }
        hex_array::<1>(version)?;
        let trace_id = hex_array::<16>(trace).filter(|t| t.iter().any(|b| *b != 0))?;
        let parent = hex_array::<8>(parent).filter(|p| p.iter().any(|b| *b != 0))?;
        let flags = hex_array::<1>(flags)?;
        Some(Trace { trace_id, parent: Some(parent), sampled: flags[0] & 1 == 1 })
    }

    /// X-Ray's header value.
    pub fn xray(&self) -> String {
        // Written into one buffer of the right size (one per invocation: on the hot path).
        fn push_hex(out: &mut String, bytes: &[u8]) {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            for b in bytes {
                out.push(DIGITS[usize::from(b >> 4)] as char);
                out.push(DIGITS[usize::from(b & 15)] as char);
            }
        }
        let mut out = String::with_capacity(74);
        out.push_str("Root=1-");
        push_hex(&mut out, &self.trace_id[..4]);
        out.push('-');
        push_hex(&mut out, &self.trace_id[4..]);
        if let Some(p) = self.parent {
            out.push_str(";Parent=");
            push_hex(&mut out, &p);
        }
        out.push_str(if self.sampled { ";Sampled=1" } else { ";Sampled=0" });
        out
    }

    /// W3C `traceparent` (a trace without a parent gets an all-zero-free stand-in built from
    /// its id, as the format requires one).
    pub fn w3c(&self) -> String {
        let parent = self.parent.unwrap_or_else(|| {
            let mut p = [0u8; 8];
            p.copy_from_slice(&self.trace_id[8..]);
            p[7] |= 1;
            p
        });
        format!("00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(parent), u8::from(self.sampled))
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.xray())
    }
}

// ---- spans: what exporters send (OpenTelemetry's model) ----

/// Span kinds, as OTLP numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: &'static str,
    pub kind: SpanKind,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// An error status with this message; `None`: unset (OK).
    pub error: Option<String>,
}

/// Where finished spans go. Must not block: an exporter queues them (and drops past a bound).
pub trait SpanSink: Send + Sync + 'static {
    fn export(&self, spans: Vec<Span>);
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xray_and_w3c_name_the_same_trace() {
        let x =
            Trace::parse_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
                .unwrap();
        assert_eq!(x.w3c(), "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01");
        let w = Trace::parse_w3c("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01").unwrap();
        assert_eq!(w, x);
        assert_eq!(w.xray(), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1");
    }

    #[test]
    fn a_new_trace_starts_with_its_time_in_seconds() {
        let t = Trace::new(1_700_000_000_123, [7; 20]);
        assert!(t.xray().starts_with(&format!("Root=1-{:08x}-", 1_700_000_000u32)), "{t}");
        assert_eq!(
            t.xray().len(),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0".len()
        );
        assert!(!t.sampled);
    }

    #[test]
    fn junk_and_injection_are_refused() {
        for bad in [
            "",
            "Root=1-5759e988-bd862e3fe1be46a99427279",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759E988-bd862e3fe1be46a994272793",
            "Root=1-00000000-000000000000000000000000",
            "Root=1-5759e988-bd862e3fe1be46a994272793\r\nX-Evil: 1",
            "Parent=53995c3f42cd8ad8",
        ] {
            assert_eq!(Trace::parse_xray(bad), None, "{bad:?}");
        }
        // A bad Parent refuses the whole header rather than passing part of it on.
        assert_eq!(Trace::parse_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=zz"), None);
        // Unknown keys are dropped, never echoed.
        let t = Trace::parse_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=evil;Self=x").unwrap();
        assert_eq!(t.xray(), "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0");
        for bad in [
            "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-0000000000000000-01",
            "ff-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-extra",
            "00-5759e988bd862e3fe1be46a99427279-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8",
        ] {
            assert_eq!(Trace::parse_w3c(bad), None, "{bad:?}");
        }
        // A later version with more fields is read by its first four.
        assert!(Trace::parse_w3c("01-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00-more").is_some());
    }

    #[test]
    fn x_ray_s_header_wins_over_traceparent() {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", "00-11111111111111111111111111111111-2222222222222222-00".parse().unwrap());
        assert_eq!(Trace::from_headers(&h).unwrap().trace_id, [0x11; 16]);
        h.insert("x-amzn-trace-id", "Root=1-33333333-333333333333333333333333".parse().unwrap());
        assert_eq!(Trace::from_headers(&h).unwrap().trace_id, [0x33; 16]);
        h.insert("x-amzn-trace-id", "junk".parse().unwrap());
        assert_eq!(Trace::from_headers(&h).unwrap().trace_id, [0x11; 16], "an invalid one is skipped");
    }
}
