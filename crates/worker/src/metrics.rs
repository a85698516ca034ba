//! Per-function figures of the attempts this process ran, exported in Prometheus's text format:
//! invocation counts by mode and outcome, duration, init, queue wait (ingest to start) and
//! end-to-end (ingest to answer) histograms, and the attempts running now.
//!
//! Each attempt is observed once, by the process that ran it (a server's local worker, or a
//! remote worker on its own `--metrics-listen`), so sums over every instance of a cluster are
//! right. Labels are bounded: past [`MAX_FUNCTION_LABELS`] functions, the rest are counted
//! under `function="(other)"`, so a tenant creating functions cannot grow the exposition
//! without bound.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

/// The most functions with labels of their own.
pub const MAX_FUNCTION_LABELS: usize = 1_000;
/// The label of the functions past [`MAX_FUNCTION_LABELS`] (no function can be named so).
pub const OTHER: &str = "(other)";

/// Upper bounds (seconds) of the latency buckets: 0.5 ms to 15 minutes (Lambda's longest
/// timeout), about 2.5× apart.
pub const BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 900.0,
];

/// A Prometheus histogram: cumulative only when exported.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// How an attempt was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync = 0,
    Async = 1,
}

const MODES: [&str; 2] = ["sync", "async"];
const OUTCOMES: [&str; 2] = ["success", "error"];

/// One function's figures.
#[derive(Debug, Default)]
pub struct FunctionFigures {
    /// `[mode][outcome]`.
    invocations: [[AtomicU64; 2]; 2],
    duration: Histogram,
    init: Histogram,
    /// `[mode]`.
    queue_wait: [Histogram; 2],
    /// `[mode]`.
    end_to_end: [Histogram; 2],
    running: AtomicI64,
}

impl FunctionFigures {
    pub fn observe(&self, o: &Observation) {
        self.invocations[o.mode as usize][usize::from(!o.succeeded)].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(o.duration);
        if let Some(i) = o.init {
            self.init.observe(i);
        }
        if let Some(w) = o.queue_wait {
            self.queue_wait[o.mode as usize].observe(w);
        }
        if let Some(e) = o.end_to_end {
            self.end_to_end[o.mode as usize].observe(e);
        }
    }
}

/// What one attempt measured, for [`Metrics::observe`].
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub mode: Mode,
    pub succeeded: bool,
    pub duration: Duration,
    pub init: Option<Duration>,
    /// From ingest to the function's start; `None` when not known.
    pub queue_wait: Option<Duration>,
    /// From ingest to the answer; `None` when not known.
    pub end_to_end: Option<Duration>,
}

/// The figures of every function this process ran.
#[derive(Debug, Default)]
pub struct Metrics {
    functions: RwLock<HashMap<String, Arc<FunctionFigures>>>,
}

/// Marks an attempt running for as long as it is held.
pub struct Running(Arc<FunctionFigures>);

impl Running {
    /// The attempt ended: observed, and no longer running.
    pub fn finish(self, o: &Observation) {
        self.0.observe(o);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// The figures of `function` (or of [`OTHER`] once the label budget is spent).
    pub fn function(&self, function: &str) -> Arc<FunctionFigures> {
        if let Some(f) = self.functions.read().get(function) {
            return f.clone();
        }
        let mut all = self.functions.write();
        let key =
            if all.len() >= MAX_FUNCTION_LABELS && !all.contains_key(function) { OTHER } else { function };
        all.entry(key.to_string()).or_default().clone()
    }

    /// Drops `function`'s figures (it was deleted): its label is free again.
    pub fn forget(&self, function: &str) {
        self.functions.write().remove(function);
    }

    /// An attempt of `function` starts; it counts as running until the guard drops.
    pub fn start(&self, function: &str) -> Running {
        let f = self.function(function);
        f.running.fetch_add(1, Ordering::Relaxed);
        Running(f)
    }

    pub fn observe(&self, function: &str, o: &Observation) {
        self.function(function).observe(o);
    }

    /// The exposition of every function's figures.
    pub fn write(&self, out: &mut String) {
        let mut all: Vec<(String, Arc<FunctionFigures>)> =
            self.functions.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let label = |name: &str| format!("function=\"{}\"", escape(name));
        header(
            out,
            "gust_function_invocations_total",
            "counter",
            "Attempts run here, by function, mode and outcome",
        );
        for (name, f) in &all {
            for (m, mode) in MODES.iter().enumerate() {
                for (o, outcome) in OUTCOMES.iter().enumerate() {
                    let n = f.invocations[m][o].load(Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "gust_function_invocations_total{{{},mode=\"{mode}\",outcome=\"{outcome}\"}} {n}",
                            label(name)
                        );
                    }
                }
            }
        }
        header(out, "gust_function_running", "gauge", "Attempts running here now, by function");
        for (name, f) in &all {
            let _ = writeln!(
                out,
                "gust_function_running{{{}}} {}",
                label(name),
                f.running.load(Ordering::Relaxed)
            );
        }
        let histograms: [(&str, &str, Pick); 4] = [
            (
                "gust_invocation_duration_seconds",
                "The function's run, from the event handed over to its answer",
                |f| vec![(None, &f.duration)],
            ),
            (
                "gust_init_duration_seconds",
                "Cold starts' init: starting the runtime or loading the module",
                |f| vec![(None, &f.init)],
            ),
            ("gust_queue_wait_seconds", "From an invocation's ingest to its attempt's start", |f| {
                vec![(Some("sync"), &f.queue_wait[0]), (Some("async"), &f.queue_wait[1])]
            }),
            ("gust_end_to_end_seconds", "From an invocation's ingest to its last attempt's answer", |f| {
                vec![(Some("sync"), &f.end_to_end[0]), (Some("async"), &f.end_to_end[1])]
            }),
        ];
        for (metric, help, pick) in histograms {
            header(out, metric, "histogram", help);
            for (name, f) in &all {
                for (mode, h) in pick(f) {
                    if h.count() == 0 {
                        continue;
                    }
                    let labels = match mode {
                        Some(m) => format!("{},mode=\"{m}\"", label(name)),
                        None => label(name),
                    };
                    h.write(out, metric, &labels);
                }
            }
        }
    }
}

/// A histogram metric's series of one function: `(mode label, histogram)`.
type Pick = fn(&FunctionFigures) -> Vec<(Option<&'static str>, &Histogram)>;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as Prometheus's text format needs it (function names are already limited to
/// `[A-Za-z0-9_-]`; this keeps the exposition valid whatever reaches it).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(m: &Metrics, function: &str, mode: Mode, ok: bool, ms: u64) {
        let d = Duration::from_millis(ms);
        m.observe(
            function,
            &Observation {
                mode,
                succeeded: ok,
                duration: d,
                init: None,
                queue_wait: Some(d),
                end_to_end: Some(d * 2),
            },
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::default();
        seen(&m, "f", Mode::Sync, true, 3);
        seen(&m, "f", Mode::Sync, false, 40);
        seen(&m, "f", Mode::Async, true, 2_000);
        let mut out = String::new();
        m.write(&mut out);
        assert!(out
            .contains("gust_function_invocations_total{function=\"f\",mode=\"sync\",outcome=\"success\"} 1"));
        assert!(
            out.contains("gust_function_invocations_total{function=\"f\",mode=\"sync\",outcome=\"error\"} 1")
        );
        assert!(
            out.contains("gust_invocation_duration_seconds_bucket{function=\"f\",le=\"0.0025\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("gust_invocation_duration_seconds_bucket{function=\"f\",le=\"0.005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("gust_invocation_duration_seconds_bucket{function=\"f\",le=\"0.05\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("gust_invocation_duration_seconds_bucket{function=\"f\",le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(out.contains("gust_invocation_duration_seconds_count{function=\"f\"} 3"), "{out}");
        assert!(out.contains("gust_invocation_duration_seconds_sum{function=\"f\"} 2.043"), "{out}");
        assert!(out.contains("gust_end_to_end_seconds_count{function=\"f\",mode=\"async\"} 1"), "{out}");
        assert!(!out.contains("gust_init_duration_seconds_count"), "no cold start, no series: {out}");
    }

    #[test]
    fn labels_are_bounded() {
        let m = Metrics::default();
        for i in 0..MAX_FUNCTION_LABELS + 50 {
            seen(&m, &format!("f{i}"), Mode::Sync, true, 1);
        }
        let mut out = String::new();
        m.write(&mut out);
        let series = out.lines().filter(|l| l.starts_with("gust_function_running{")).count();
        assert_eq!(series, MAX_FUNCTION_LABELS + 1, "the rest share one label");
        assert!(out.contains(
            "gust_function_invocations_total{function=\"(other)\",mode=\"sync\",outcome=\"success\"} 50"
        ));
    }

    #[test]
    fn running_is_held_by_a_guard() {
        let m = Metrics::default();
        let a = m.start("f");
        let _b = m.start("f");
        drop(a);
        let mut out = String::new();
        m.write(&mut out);
        assert!(out.contains("gust_function_running{function=\"f\"} 1"), "{out}");
    }
}
