use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::routes::Router;

/// Limits that keep one client from taking the server down.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Most connections served at once; further clients wait in the
    /// kernel's accept queue. Each costs a task and two small buffers.
    pub max_connections: usize,
    /// A client must send its whole request head within this time, or it is
    /// cut off (slow-header attacks).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted; a larger
    /// one is refused with 431. hyper's smallest allowed value is 8 KiB.
    pub max_head_bytes: usize,
    /// Longest wait for requests in flight once shutdown starts.
    pub shutdown_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets requests in flight finish (at most
/// `settings.shutdown_timeout`) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let mut accept_errors = 0u32;
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    accept_errors = 0;
                    stream
                }
                Err(err) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    accept_errors = accept_errors.saturating_add(1);
                    let pause = Duration::from_millis(10 * u64::from(accept_errors.min(100)));
                    tracing::warn!(error = %err, ?pause, "accept failed");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = service_fn(move |req| {
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.handle(req).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_head_bytes.max(8192))
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("HTTP connections closed"),
        () = tokio::time::sleep(settings.shutdown_timeout) => {
            tracing::warn!("HTTP requests still running at the shutdown timeout; closing anyway");
        }
    }
}
