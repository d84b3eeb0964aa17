//! The debug access log names the client the rate limit goes by: behind a
//! trusted proxy, the address it forwarded for. A test binary of its own:
//! tracing caches whether a log line is wanted once for every thread, so
//! a subscriber set for one test races with the other tests' threads.

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Request;
use orders_domain::{OrderService, Ports, Readiness};
use orders_http::{RequestReport, RouteReport, Router, TrustedProxies};

/// What the subscriber writes.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reports kept nowhere: this test reads the log.
struct Unreported;

impl RouteReport for Unreported {
    fn answered(&self, _: u16, _: Duration) {}
}

impl RequestReport for Unreported {
    fn route(&self, _: &'static str) -> Box<dyn RouteReport> {
        Box::new(Unreported)
    }
    fn caller(&self, _: &str) {}
    fn denied(&self, _: &'static str) {}
    fn lookup(&self, _: bool) {}
    fn panicked(&self) {}
    fn exposition(&self) -> String {
        String::new()
    }
}

#[tokio::test]
async fn the_access_log_names_the_forwarded_client() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let service = OrderService::new(Ports::mocks(), 1 << 20);
    let router = Router::new(
        Arc::new(service),
        Arc::new(Readiness::default()),
        Arc::new(Unreported),
    )
    .with_trusted_proxies(TrustedProxies::parse("10.0.0.0/8").expect("valid"));
    let from = async |peer: &str, forwarded: &str| {
        let req = Request::builder()
            .uri("/healthz")
            .header("x-forwarded-for", forwarded)
            .body(())
            .expect("request");
        let peer: IpAddr = peer.parse().expect("an address");
        router.handle_from(req, Some(peer)).await.status()
    };

    from("10.0.0.1", "203.0.113.5").await;
    from("192.0.2.1", "203.0.113.6").await;

    let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf8");
    let requests: Vec<&str> = text.lines().filter(|l| l.contains(" request ")).collect();
    assert_eq!(requests.len(), 2, "{text}");
    assert!(requests[0].contains("client=203.0.113.5"), "{text}");
    assert!(requests[1].contains("client=192.0.2.1"), "{text}");
}
