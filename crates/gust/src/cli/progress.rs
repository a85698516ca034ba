//! Upload progress on stderr: a body over [`PROGRESS_THRESHOLD`] sent to a terminal shows how
//! much of it has gone, on one line rewritten in place. Never when stderr is a file or a pipe
//! (scripts and logs get no carriage returns), never in `--output json`.

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// Bodies smaller than this go without a progress line: they take a moment at most.
pub const PROGRESS_THRESHOLD: usize = 4 << 20;

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(200);

/// The body of an upload of `bytes`, with a progress line on stderr if `show` and stderr is
/// a terminal and the body is large enough to be worth one.
pub fn body(bytes: Vec<u8>, what: &str, show: bool) -> reqwest::blocking::Body {
    let len = bytes.len() as u64;
    if show && bytes.len() >= PROGRESS_THRESHOLD && std::io::stderr().is_terminal() {
        let reader = Progress {
            inner: std::io::Cursor::new(bytes),
            sent: 0,
            total: len,
            what: what.to_string(),
            last: None,
        };
        reqwest::blocking::Body::sized(reader, len)
    } else {
        reqwest::blocking::Body::from(bytes)
    }
}

/// A reader that reports how much of it was read.
struct Progress<R> {
    inner: R,
    sent: u64,
    total: u64,
    what: String,
    last: Option<Instant>,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        let done = self.sent >= self.total;
        if done || self.last.is_none_or(|t| t.elapsed() >= REDRAW) {
            self.last = Some(Instant::now());
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}", line(&self.what, self.sent, self.total));
            if done {
                let _ = writeln!(err);
            }
            let _ = err.flush();
        }
        Ok(n)
    }
}

/// `uploading app.zip: 12.0 of 48.0 MB (25%)`
fn line(what: &str, sent: u64, total: u64) -> String {
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let pct = sent.saturating_mul(100).checked_div(total).unwrap_or(100);
    format!("uploading {what}: {:.1} of {:.1} MB ({pct}%)", mb(sent), mb(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_passes_every_byte_through_and_counts_them() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut p = Progress {
            inner: std::io::Cursor::new(data.clone()),
            sent: 0,
            total: data.len() as u64,
            what: "x".into(),
            last: None,
        };
        let mut out = Vec::new();
        p.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(p.sent, data.len() as u64);
        assert_eq!(line("app.zip", 12 << 20, 48 << 20), "uploading app.zip: 12.0 of 48.0 MB (25%)");
    }
}
