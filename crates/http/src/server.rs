use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::routes::Router;

/// Limits that keep one client from taking the server down.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Most connections served at once; further clients wait in the
    /// kernel's accept queue. Each costs a task, two small buffers and a
    /// file descriptor (`MAX_CONNECTIONS`, checked against the descriptor
    /// limit at start).
    pub max_connections: usize,
    /// A client must send its whole request head within this time, or it is
    /// cut off (slow-header attacks): from the connection's start for its
    /// first request, from the head's first bytes for later ones.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted; a larger
    /// one is refused with 431. hyper's smallest allowed value is 8 KiB.
    pub max_head_bytes: usize,
    /// A write the client does not take within this time ends the
    /// connection: a client that asks for a large order and never reads
    /// the answer does not hold it forever (`HTTP_WRITE_TIMEOUT`).
    pub write_timeout: Duration,
    /// A connection on which nothing is read or written for this long is
    /// closed (`HTTP_IDLE_TIMEOUT`). An event stream writes a comment more
    /// often than this, so it stays open.
    pub idle_timeout: Duration,
    /// Longest wait for requests in flight once shutdown starts.
    pub shutdown_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` is cancelled, then stops
/// accepting, closes the connections that have no request in flight at
/// once (a half-sent request or an idle keep-alive holds nothing up), lets
/// the requests in flight finish (at most `settings.shutdown_timeout`) and
/// returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
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
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        // The router's shared handles are cloned once per connection; a
        // request clones only this connection's own Arc, whose count no
        // other core touches (a clone of the router per request moved
        // half a dozen shared reference counts between the cores).
        let requests = Arc::new(Requests::default());
        let conn = Arc::new(Connection {
            router: router.clone(),
            requests: Arc::clone(&requests),
        });
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let conn = Arc::clone(&conn);
            conn.requests.started.fetch_add(1, Ordering::Relaxed);
            async move {
                let response = conn.router.handle_from(req, peer).await;
                conn.requests.finished.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Infallible>(response)
            }
        });
        let io = TimedIo::new(stream, settings, Arc::clone(&requests));
        // The head deadline is TimedIo's, not hyper's: hyper's arms a timer
        // for every request (an allocation and a timer-wheel entry added
        // and removed: 12% of a cached lookup's instructions in callgrind,
        // docs/benchmarks.md) and, since it runs
        // while a kept-alive connection waits for its next request, closed
        // every idle connection after the header timeout instead of
        // HTTP_IDLE_TIMEOUT.
        let connection = http1::Builder::new()
            .header_read_timeout(None)
            .max_buf_size(settings.max_head_bytes.max(8192))
            .serve_connection(TokioIo::new(io), service);
        let stop = Stopped::new(shutdown.clone());
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop => {
                    if requests.all_finished().is_some() {
                        // Nothing in flight: close now.
                        Ok(())
                    } else {
                        // Finish the request in flight, then close.
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                }
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => tracing::info!("HTTP connections closed"),
        () = tokio::time::sleep(settings.shutdown_timeout) => {
            tracing::warn!("HTTP requests still running at the shutdown timeout; closing anyway");
        }
    }
}

/// One connection's share of the server.
struct Connection {
    router: Router,
    requests: Arc<Requests>,
}

/// A connection's requests so far, counted when hyper hands one to the
/// router and when its answer is ready. At shutdown a connection with
/// none in flight is closed at once; [`TimedIo`] tells from them whether
/// the bytes it reads belong to a request head.
#[derive(Debug, Default)]
struct Requests {
    started: AtomicUsize,
    finished: AtomicUsize,
}

impl Requests {
    /// How many requests have started, if every one of them has finished
    /// (`None` while one is in flight). Only the connection's own task
    /// changes and reads the counts, so no ordering is needed.
    fn all_finished(&self) -> Option<usize> {
        let finished = self.finished.load(Ordering::Relaxed);
        let started = self.started.load(Ordering::Relaxed);
        (started == finished).then_some(started)
    }
}

/// `token.cancelled()` for a connection's `select!`, which polls it at
/// every wake-up of the connection: the token's own future locks a mutex
/// that every connection shares on every poll. This one polls it only to
/// register the task's waker (again only if the waker changes) and
/// otherwise reads the token's flag. An event stream watches a reload of
/// the tokens file with it too (`auth::Revocation`), once per event.
pub(crate) struct Stopped {
    token: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: Option<Waker>,
}

impl Stopped {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self {
            cancelled: Box::pin(token.clone().cancelled_owned()),
            token,
            registered: None,
        }
    }
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        self.registered = Some(cx.waker().clone());
        self.cancelled.as_mut().poll(cx)
    }
}

/// A TCP stream whose writes must make progress within `write_timeout`,
/// whose request heads must arrive within `header_read_timeout` and which
/// ends after `idle_timeout` without any read or write.
///
/// Cheap on the hot path: a read or write only sets a flag; the clock is
/// read when the idle timer fires (once per idle period), when a write
/// has to wait for the client, or when a read has to wait in the middle of
/// a request head (a client that sends each head whole never arms it).
struct TimedIo {
    inner: TcpStream,
    write_timeout: Duration,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    requests: Arc<Requests>,
    /// Whether anything was read or written since the idle timer was set.
    used: bool,
    /// Armed while a write waits for the client.
    write_deadline: Option<Pin<Box<Sleep>>>,
    idle_deadline: Pin<Box<Sleep>>,
    /// `requests.started` when bytes were last read with no request in
    /// flight: if no request has started since, a head is half read.
    head_bytes_after: Option<usize>,
    /// Armed while a head is awaited (on a new connection) or half read:
    /// the number of requests started before it, and its deadline.
    head_deadline: Option<(usize, Pin<Box<Sleep>>)>,
}

impl TimedIo {
    fn new(inner: TcpStream, settings: HttpSettings, requests: Arc<Requests>) -> Self {
        Self {
            inner,
            write_timeout: settings.write_timeout,
            idle_timeout: settings.idle_timeout,
            header_read_timeout: settings.header_read_timeout,
            requests,
            used: false,
            write_deadline: None,
            idle_deadline: Box::pin(tokio::time::sleep(settings.idle_timeout)),
            head_bytes_after: None,
            head_deadline: None,
        }
    }

    /// Whether a request head has been awaited for a whole
    /// `header_read_timeout`: the first head of the connection, or one of
    /// which some bytes arrived while no request was in flight. A kept-alive
    /// connection waiting for its next request without a byte of it is
    /// idle, not slow: the idle timeout is its limit. (A head whose first
    /// bytes arrive while a pipelined request is answered is timed from its
    /// next bytes; the idle timeout bounds the wait for those.)
    fn head_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(started) = self
            .requests
            .all_finished()
            .filter(|&started| started == 0 || self.head_bytes_after == Some(started))
        else {
            self.head_deadline = None;
            return false;
        };
        let timeout = self.header_read_timeout;
        let deadline = match &mut self.head_deadline {
            Some((after, deadline)) if *after == started => deadline,
            slot => {
                &mut slot
                    .insert((started, Box::pin(tokio::time::sleep(timeout))))
                    .1
            }
        };
        deadline.as_mut().poll(cx).is_ready()
    }

    /// Whether the connection has been idle for a whole `idle_timeout`;
    /// otherwise the timer is armed to wake the task when it may have been.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle_deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            if !std::mem::take(&mut self.used) {
                return true;
            }
            // Used since the timer was set: a new period starts now.
            let next = Instant::now() + self.idle_timeout;
            self.idle_deadline.as_mut().reset(next);
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.used = true;
                    if let Some(started) = self.requests.all_finished() {
                        self.head_bytes_after = Some(started);
                    }
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.idle_expired(cx) => {
                Poll::Ready(Err(timed_out("connection idle too long")))
            }
            Poll::Pending if self.head_expired(cx) => Poll::Ready(Err(timed_out(
                "the request head did not arrive within the header timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl TimedIo {
    /// A write's outcome, with the write deadline kept: cleared when the
    /// client took something, armed (once) while it takes nothing.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(result) => {
                self.write_deadline = None;
                self.used = true;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let deadline = self
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Err(timed_out("the client does not read the answer")))
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.written(cx, polled)
    }

    /// Vectored, so hyper sends an answer's head from its buffer and the
    /// body (a cached order's `Bytes`) as it is, in one `writev`, instead
    /// of copying the body into its buffer first (it flattens for a stream
    /// that is not vectored).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), server.expect("accept").0)
    }

    fn timed(server: TcpStream, write: u64, idle: u64, header: u64) -> (TimedIo, Arc<Requests>) {
        let settings = HttpSettings {
            write_timeout: Duration::from_millis(write),
            idle_timeout: Duration::from_millis(idle),
            header_read_timeout: Duration::from_millis(header),
            ..HttpSettings::default()
        };
        let requests = Arc::new(Requests::default());
        (
            TimedIo::new(server, settings, Arc::clone(&requests)),
            requests,
        )
    }

    #[tokio::test]
    async fn writes_are_vectored_and_a_vectored_write_the_client_never_takes_times_out() {
        let (_client, server) = pair().await;
        let (mut io, _) = timed(server, 300, 60_000, 60_000);
        let (head, body) = (vec![1u8; 128], vec![0u8; 1 << 20]);

        let started = std::time::Instant::now();
        let err = loop {
            let bufs = [io::IoSlice::new(&head), io::IoSlice::new(&body)];
            if let Err(err) = io.write_vectored(&bufs).await {
                break err;
            }
        };

        // hyper sends the body beside its buffer only to a vectored stream.
        assert!(io.is_write_vectored());
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_write_the_client_never_takes_times_out() {
        let (_client, server) = pair().await;
        let (mut io, _) = timed(server, 300, 60_000, 60_000);
        let chunk = vec![0u8; 1 << 20];

        let started = std::time::Instant::now();
        let err = loop {
            if let Err(err) = io.write_all(&chunk).await {
                break err;
            }
        };

        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
        let (mut client, server) = pair().await;
        let (mut io, _) = timed(server, 30_000, 400, 60_000);

        // Bytes every 100 ms keep it open past the idle timeout.
        let talk = async {
            for _ in 0..8 {
                client.write_all(b"x").await.expect("write");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client
        };
        let listen = async {
            let mut got = 0;
            let mut buf = [0u8; 16];
            while got < 8 {
                got += io.read(&mut buf).await.expect("still open");
            }
        };
        let (_client, ()) = tokio::join!(talk, listen);

        let mut buf = [0u8; 16];
        let idle = io.read(&mut buf).await;
        assert_eq!(
            idle.expect_err("closed when idle").kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[tokio::test]
    async fn a_head_is_timed_from_its_first_bytes_and_a_kept_alive_wait_is_not() {
        let (mut client, server) = pair().await;
        let (mut io, requests) = timed(server, 30_000, 60_000, 400);
        let mut buf = [0u8; 64];

        // A whole head, answered: the connection then waits for the next
        // one, with no header deadline (the idle timeout is 60 s).
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let got = io.read(&mut buf).await.expect("read");
        assert!(got > 0);
        requests.started.fetch_add(1, Ordering::SeqCst);
        requests.finished.fetch_add(1, Ordering::SeqCst);
        let waited = tokio::time::timeout(Duration::from_millis(1_200), io.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "a kept-alive connection was cut: {waited:?}"
        );

        // The next head trickles in, a byte every 100 ms: bytes keep coming,
        // but the head is not whole within 400 ms.
        let started = std::time::Instant::now();
        let trickle = async {
            for byte in b"GET /slow HTTP/1.1\r\nX-Slow: 1\r\n" {
                if client.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let listen = async {
            loop {
                match io.read(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    other => break (other, started.elapsed()),
                }
            }
        };
        let ((), (ended, took)) = tokio::join!(trickle, listen);
        assert_eq!(ended.expect_err("cut off").kind(), io::ErrorKind::TimedOut);
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(1_500),
            "cut off after {took:?}"
        );
    }

    #[tokio::test]
    async fn a_new_connection_that_sends_nothing_is_cut_at_the_header_timeout() {
        let (_client, server) = pair().await;
        let (mut io, _) = timed(server, 30_000, 60_000, 300);
        let mut buf = [0u8; 16];

        let read = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
            .await
            .expect("cut off before 5 s");

        assert_eq!(read.expect_err("cut off").kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_request_that_panics_gets_500_and_the_connection_serves_the_next() {
        // A cache (a port) that panics on one chosen uid. (Not a mockall
        // mock: a panic inside its expectation poisons the mock's lock.)
        struct PanicsOnBoom;
        impl orders_domain::OrderCache for PanicsOnBoom {
            fn get(&self, uid: &orders_domain::OrderUid) -> Option<bytes::Bytes> {
                if uid.as_str() == "boom" {
                    panic!("a bug met {}", uid.as_str());
                }
                Some(bytes::Bytes::from_static(b"{\"order_uid\":\"fine\"}"))
            }
            fn insert(&self, _: orders_domain::OrderUid, _: bytes::Bytes) {}
            fn len(&self) -> usize {
                0
            }
        }
        let cache = PanicsOnBoom;
        let service = orders_domain::OrderService::new(
            orders_domain::Ports {
                cache: Arc::new(cache),
                ..orders_domain::Ports::mocks()
            },
            1 << 20,
        );
        let record = crate::report::recording::Recording::default();
        let router = Router::new(
            Arc::new(service),
            Arc::new(orders_domain::Readiness::default()),
            Arc::new(record.clone()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            HttpSettings::default(),
            shutdown.clone(),
        ));
        let mut client = TcpStream::connect(addr).await.expect("connect");

        // Both requests on one kept-alive connection.
        let mut answers = String::new();
        for uid in ["boom", "fine"] {
            let request = format!("GET /order?order_uid={uid} HTTP/1.1\r\nHost: x\r\n\r\n");
            client.write_all(request.as_bytes()).await.expect("write");
            let mut buf = vec![0; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("an answer")
                .expect("read");
            answers.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        shutdown.cancel();
        server.await.expect("the server stops");

        let (first, second) = answers.split_once("HTTP/1.1 200").expect("then a 200");
        assert!(first.starts_with("HTTP/1.1 500"), "{answers}");
        assert!(
            first.contains("{\"error\":\"internal error\"}"),
            "{answers}"
        );
        // The 500 is finished like any answer of its route.
        let head = first.to_ascii_lowercase();
        assert!(
            head.contains("x-content-type-options: nosniff")
                && head.contains("cache-control: no-store"),
            "{answers}"
        );
        assert!(second.contains("{\"order_uid\":\"fine\"}"), "{answers}");
        use crate::report::recording::Reported;
        assert_eq!(record.count(&Reported::Panicked), 1);
        let answered = |status| {
            record.count(&Reported::Answered {
                route: "/order",
                status,
            })
        };
        assert_eq!((answered(500), answered(200)), (1, 1));
    }

    #[tokio::test]
    async fn a_stop_is_seen_by_a_task_that_polled_before_it() {
        let token = CancellationToken::new();
        let stopped = tokio::spawn(Stopped::new(token.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stopped.is_finished());

        token.cancel();

        tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .expect("woken by the cancellation")
            .expect("no panic");
    }
}
