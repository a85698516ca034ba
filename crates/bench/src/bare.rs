//! The baseline: a bare hyper server that answers every request with the bytes gust answers a
//! no-op invocation with (status, headers, empty body), doing no platform work at all; over TLS
//! (rustls, as gust) when given a certificate and key.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

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

/// The TLS acceptor for a certificate and key in PEM files.
fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves forever on 127.0.0.1:0, over TLS with `tls` (certificate, key); prints the address
/// like `gust server` does.
pub fn serve(tls: Option<(&Path, &Path)>) -> anyhow::Result<()> {
    let acceptor = tls.map(|(cert, key)| acceptor(cert, key)).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        println!("bare listening on {scheme}://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                let service = hyper::service::service_fn(answer);
                let _ = match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => http.serve_connection(TokioIo::new(tls), service).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                };
            });
        }
    })
}
