//! One-off HTTP calls for setting up functions (not measured), plain or over TLS.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::tls::BenchTls;

pub async fn call(
    addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>,
) -> anyhow::Result<(u16, Bytes)> {
    call_with(addr, None, method, path, headers, body).await
}

/// [`call`], over TLS when `tls` is given.
pub async fn call_with(
    addr: SocketAddr, tls: Option<&BenchTls>, method: &str, path: &str, headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<(u16, Bytes)> {
    let mut sender = match tls {
        Some(tls) => {
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls.connect(addr).await?)).await?;
            tokio::spawn(conn);
            sender
        }
        None => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        }
    };
    let mut req = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Full::new(body.into()))?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Calls and insists on a 2xx.
pub async fn ok(
    addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>,
) -> anyhow::Result<Bytes> {
    ok_with(addr, None, method, path, headers, body).await
}

/// [`ok`], over TLS when `tls` is given.
pub async fn ok_with(
    addr: SocketAddr, tls: Option<&BenchTls>, method: &str, path: &str, headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<Bytes> {
    let (status, body) = call_with(addr, tls, method, path, headers, body).await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "{method} {path}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(body)
}

pub async fn deploy(addr: SocketAddr, name: &str, config: &str, code: Vec<u8>) -> anyhow::Result<()> {
    deploy_with(addr, None, name, config, code).await
}

/// [`deploy`], over TLS when `tls` is given.
pub async fn deploy_with(
    addr: SocketAddr, tls: Option<&BenchTls>, name: &str, config: &str, code: Vec<u8>,
) -> anyhow::Result<()> {
    let json = [("content-type", "application/json")];
    ok_with(addr, tls, "PUT", &format!("/v1/functions/{name}"), &json, config.to_string()).await?;
    let wasm = [("content-type", "application/wasm")];
    ok_with(addr, tls, "PUT", &format!("/v1/functions/{name}/code"), &wasm, code).await?;
    Ok(())
}

/// Reads one counter from `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let text = ok(addr, "GET", "/metrics", &[], Bytes::new()).await?;
    gust_testkit::metric(&String::from_utf8_lossy(&text), name)
        .ok_or_else(|| anyhow::anyhow!("metric {name} missing"))
}
