//! The load generator: N keep-alive HTTP/1.1 connections (plain or TLS), each sending requests
//! back to back, recording every request's latency. The same generator drives gust and the bare
//! baseline. A TLS handshake happens once per connection, before any request is timed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// What one request looks like.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Status every response must have; others count as errors.
    pub expect_status: u16,
    /// Speak TLS (https) to `addr`.
    pub tls: Option<crate::tls::BenchTls>,
}

/// When a run stops.
#[derive(Clone, Copy)]
pub enum Stop {
    After(Duration),
    /// After this many requests in all (shared among connections).
    Count(u64),
}

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted latencies in microseconds.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[idx] as f64
    }
}

async fn connection(
    target: Target, stop: Stop, started: Instant, issued: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<(Vec<u32>, u64)> {
    match target.tls.clone() {
        Some(tls) => drive(tls.connect(target.addr).await?, target, stop, started, issued).await,
        None => {
            let stream = tokio::net::TcpStream::connect(target.addr).await?;
            stream.set_nodelay(true)?;
            drive(stream, target, stop, started, issued).await
        }
    }
}

async fn drive<I>(
    io: I, target: Target, stop: Stop, started: Instant, issued: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<(Vec<u32>, u64)>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    let host = target.addr.to_string();
    loop {
        match stop {
            Stop::After(d) if started.elapsed() >= d => break,
            Stop::Count(n) if issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= n => break,
            _ => {}
        }
        let mut req = Request::post(target.path.as_str()).header("host", host.as_str());
        for (k, v) in &target.headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(target.body.clone()))?;
        let t = Instant::now();
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if status != target.expect_status {
            errors += 1;
        }
    }
    Ok((latencies, errors))
}

/// Runs `connections` connections against `target` until `stop`.
pub async fn run(target: &Target, connections: usize, stop: Stop) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(target.clone(), stop, started, issued.clone())))
        .collect();
    let mut result = LoadResult::default();
    for t in tasks {
        let (lat, errors) = t.await??;
        result.requests += lat.len() as u64;
        result.errors += errors;
        result.latencies_us.extend(lat);
    }
    result.elapsed = started.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
}
