//! The lookup ceiling: a bare hyper 1.x server that answers every request
//! with the same fixed bytes (the sample order's JSON) and does nothing
//! else. Nothing built on hyper can be faster on the same machine.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, header};
use hyper_util::rt::TokioIo;

const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

/// Serves until the process is killed.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let body = Bytes::from(serde_json::to_vec(&serde_json::from_slice::<
        serde_json::Value,
    >(SAMPLE)?)?);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let mut response = Response::new(Full::new(body.clone()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
