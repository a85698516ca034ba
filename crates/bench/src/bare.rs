//! The baseline: a bare hyper server that answers every request with the bytes gust answers a
//! no-op invocation with (status, headers, empty body), doing no platform work at all.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as gust does.
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/octet-stream")
        .header("gust-invocation-id", "01a21acd-9b96-741e-b36b-c4a4acaf59b5")
        .header("gust-executed-version", "$LATEST")
        .body(Full::new(Bytes::new()))
        .expect("a valid response"))
}

/// Serves forever on 127.0.0.1:0; prints the address like `gust server` does.
pub fn serve() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("bare listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    })
}
