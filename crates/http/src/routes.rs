use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument as _;

use bytes::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use orders_domain::{
    DEFAULT_PAGE, EventId, LookupError, MAX_PAGE, OrderCursor, OrderService, OrderUid, Readiness,
    RepositoryError, SubscribeError,
};
use orders_metrics::Metrics;
use serde_json::json;

use crate::body::{Body, EventBody};
use crate::limits::{ClientIp, RateLimit};
use crate::statics;

/// The page may load only its own files and talk only to its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// How often a quiet event stream gets a comment, by default: well within
/// `HTTP_IDLE_TIMEOUT` (60 s) and common proxy timeouts.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// When a client refused for too many open event streams may try again.
const EVENTS_RETRY: Duration = Duration::from_secs(5);

static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Turns requests into answers. Cheap to clone: one per connection.
#[derive(Clone, Debug)]
pub struct Router {
    service: Arc<OrderService>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    /// Per client address on the order-bearing routes (`RATE_LIMIT`).
    rate_limit: Option<Arc<RateLimit>>,
    /// Whether `/metrics` is served here (not when `METRICS_ADDR` puts it
    /// on a listener of its own).
    serves_metrics: bool,
    /// Whether only `/metrics` is served here (the `METRICS_ADDR` listener).
    only_metrics: bool,
    /// A quiet event stream gets a comment this often.
    keep_alive: Duration,
}

/// What a path names.
enum Route {
    Order,
    Orders,
    Events,
    Healthz,
    Readyz,
    Metrics,
    Static(statics::StaticFile),
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path {
            "/order" => Route::Order,
            "/orders" => Route::Orders,
            "/orders/events" => Route::Events,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            _ => Route::Static(statics::lookup(path)?),
        })
    }

    /// Whether the route gives out orders (personal data): rate-limited,
    /// and (with tokens) behind sign-in.
    fn bears_orders(&self) -> bool {
        matches!(self, Route::Order | Route::Orders | Route::Events)
    }

    /// The metrics label: a fixed set, so a client cannot create label
    /// values at will.
    fn label(route: Option<&Route>) -> &'static str {
        match route {
            Some(Route::Order) => "/order",
            Some(Route::Orders) => "/orders",
            Some(Route::Events) => "/orders/events",
            Some(Route::Healthz) => "/healthz",
            Some(Route::Readyz) => "/readyz",
            Some(Route::Metrics) => "/metrics",
            Some(Route::Static(_)) => "static",
            None => "other",
        }
    }
}

impl Router {
    pub fn new(
        service: Arc<OrderService>,
        readiness: Arc<Readiness>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            service,
            readiness,
            metrics,
            rate_limit: None,
            serves_metrics: true,
            only_metrics: false,
            keep_alive: KEEP_ALIVE,
        }
    }

    /// A quiet event stream gets a comment every `period` (keep it below
    /// `HTTP_IDLE_TIMEOUT`).
    pub fn with_keep_alive(mut self, period: Duration) -> Self {
        self.keep_alive = period;
        self
    }

    /// This router, serving `/metrics` alone (for `METRICS_ADDR`).
    pub fn metrics_only(&self) -> Self {
        Self {
            serves_metrics: true,
            only_metrics: true,
            ..self.clone()
        }
    }

    /// Limits each client address on the order-bearing routes.
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit.map(Arc::new);
        self
    }

    /// Leaves `/metrics` to another listener (`METRICS_ADDR`).
    pub fn without_metrics(mut self) -> Self {
        self.serves_metrics = false;
        self
    }

    /// Answers one request. Never fails: every error is an HTTP answer.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        let started = Instant::now();
        let route = Route::of(req.uri().path());
        let label = Route::label(route.as_ref());
        let span = tracing::debug_span!("request", method = %req.method(), path = req.uri().path());
        let response = self.route(&req, route).instrument(span).await;
        let elapsed = started.elapsed();
        self.metrics
            .record_request(label, response.status().as_u16(), elapsed);
        tracing::debug!(
            method = %req.method(),
            path = req.uri().path(),
            status = response.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "request"
        );
        response
    }

    async fn route<B>(&self, req: &Request<B>, route: Option<Route>) -> Response<Body> {
        let route = match route {
            Some(Route::Metrics) if !self.serves_metrics => None,
            Some(Route::Metrics) => Some(Route::Metrics),
            _ if self.only_metrics => None,
            route => route,
        };
        let Some(route) = route else {
            return error(StatusCode::NOT_FOUND, "no such page");
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if route.bears_orders()
            && let Some(limit) = &self.rate_limit
            && let Some(ClientIp(Some(client))) = req.extensions().get::<ClientIp>()
            && let Err(wait) = limit.check(*client)
        {
            return retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this address; slow down",
                wait,
            );
        }
        match route {
            Route::Order => self.order(req.uri().query()).await,
            Route::Orders => self.orders(req.uri().query()).await,
            Route::Events => self.events(req.headers().get(&LAST_EVENT_ID)).await,
            Route::Healthz => json_response(StatusCode::OK, &json!({"status": "ok"})),
            Route::Readyz => self.readyz(),
            Route::Metrics => {
                self.metrics.set_cache_entries(self.service.cached_orders());
                self.metrics.set_event_streams(self.service.event_streams());
                let mut response = Response::new(Body::full(self.metrics.encode()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Route::Static(file) => {
                let mut response = Response::new(Body::full(Bytes::from_static(file.body)));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(file.content_type),
                );
                headers.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CSP),
                );
                headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                response
            }
        }
    }

    async fn order(&self, query: Option<&str>) -> Response<Body> {
        let uid = match order_uid_from_query(query.unwrap_or("")) {
            Ok(uid) => uid,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        match self.service.lookup(&uid).await {
            Ok(found) => {
                self.metrics.record_lookup(found.from_cache);
                json_bytes(StatusCode::OK, found.json)
            }
            Err(LookupError::NotFound) => {
                self.metrics.record_lookup(false);
                json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "order not found", "order_uid": uid.as_str()}),
                )
            }
            Err(LookupError::Busy) => retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many lookups of orders not in memory right now; try again",
                Duration::from_secs(1),
            ),
            Err(LookupError::Repository(err)) => {
                self.metrics.record_lookup(false);
                repository_error(&err, "lookup failed")
            }
        }
    }

    async fn orders(&self, query: Option<&str>) -> Response<Body> {
        let (limit, before) = match page_from_query(query.unwrap_or("")) {
            Ok(page) => page,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        match self.service.recent(limit, before).await {
            Ok(page) => match serde_json::to_vec(&page) {
                Ok(body) => json_bytes(StatusCode::OK, Bytes::from(body)),
                Err(err) => {
                    tracing::error!(error = %err, "serializing a page of orders");
                    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
            },
            Err(err) => repository_error(&err, "listing orders failed"),
        }
    }

    /// An event stream of the orders stored from now on, first those after
    /// `Last-Event-ID` when the client resumes.
    async fn events(&self, last_event_id: Option<&HeaderValue>) -> Response<Body> {
        let after = match last_event_id.map(|v| v.to_str().map(str::trim)) {
            None | Some(Ok("")) => None,
            Some(raw) => match raw.ok().map(EventId::parse) {
                Some(Ok(id)) => Some(id),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &orders_domain::InvalidEventId.to_string(),
                    );
                }
            },
        };
        match self.service.subscribe(after).await {
            Ok(stream) => {
                let mut response =
                    Response::new(Body::Events(EventBody::new(stream, self.keep_alive)));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                // nginx would otherwise hold events back in its buffer.
                headers.insert(
                    HeaderName::from_static("x-accel-buffering"),
                    HeaderValue::from_static("no"),
                );
                response
            }
            Err(SubscribeError::Full) => retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many open event streams; try again",
                EVENTS_RETRY,
            ),
            Err(SubscribeError::Repository(err)) => {
                repository_error(&err, "reading the missed orders failed")
            }
        }
    }

    fn readyz(&self) -> Response<Body> {
        let report = self.readiness.report();
        let status = if report.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(
            status,
            &json!({
                "ready": report.is_ready(),
                "cache_warm": report.cache_warm,
                "database": report.database,
                "broker": report.broker,
                "sync_standby": report.sync_standby,
                "sync_standby_required": report.sync_standby_required,
            }),
        )
    }
}

/// The one `order_uid` in a query string, percent-decoded and proved valid,
/// or a message saying what is wrong with it.
fn order_uid_from_query(query: &str) -> Result<OrderUid, String> {
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "order_uid" {
            if found.is_some() {
                return Err("order_uid is given more than once".to_owned());
            }
            found = Some(value);
        }
    }
    let raw = found.ok_or_else(|| "order_uid is missing: use /order?order_uid=UID".to_owned())?;
    OrderUid::parse(&raw).map_err(|e| format!("order_uid: {e}"))
}

/// `limit` (1 or more; capped by the core) and `before` (a cursor).
fn page_from_query(query: &str) -> Result<(usize, Option<OrderCursor>), String> {
    let mut limit = None;
    let mut before = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "limit" if limit.is_some() => return Err("limit is given more than once".into()),
            "limit" => {
                let n: usize = value.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("limit: expected a whole number from 1 to {MAX_PAGE}")
                })?;
                limit = Some(n);
            }
            "before" if before.is_some() => return Err("before is given more than once".into()),
            "before" => before = Some(OrderCursor::parse(&value).map_err(|e| e.to_string())?),
            _ => {}
        }
    }
    Ok((limit.unwrap_or(DEFAULT_PAGE), before))
}

/// An answer whose body is JSON already.
fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    json_bytes(status, Bytes::from(body.to_string()))
}

/// A database error as an answer: the request's own data refused by the
/// database (a data exception, SQLSTATE class 22, say) is the client's
/// fault, 400, and never looks like an outage; anything else is 503.
fn repository_error(err: &RepositoryError, what: &str) -> Response<Body> {
    match err {
        RepositoryError::Refused(why) => {
            tracing::info!(%why, "{what}: the database refused the request's values");
            error(
                StatusCode::BAD_REQUEST,
                "the request's values are out of range",
            )
        }
        RepositoryError::Unavailable(_) => {
            tracing::warn!(error = %orders_domain::error_chain(err), "{what}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable, try again",
            )
        }
    }
}

/// An error answer that says when to try again (`Retry-After`, whole
/// seconds, at least 1).
fn retry_after(status: StatusCode, message: &str, wait: Duration) -> Response<Body> {
    let mut response = error(status, message);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use orders_domain::{MockOrderCache, MockOrderRepository, Order, RepositoryError};

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

    fn router(repo: MockOrderRepository, cache: MockOrderCache) -> Router {
        Router::new(
            Arc::new(OrderService::new(Arc::new(repo), Arc::new(cache), 1 << 20)),
            Arc::new(Readiness::default()),
            Arc::new(Metrics::new()),
        )
    }

    fn empty_cache() -> MockOrderCache {
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_insert().return_const(());
        cache
    }

    async fn call(
        router: &Router,
        method: Method,
        uri: &str,
    ) -> (StatusCode, String, Response<Body>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request");
        let response = router.handle(req).await;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("utf8");
        (
            status,
            text,
            Response::from_parts(parts, Body::full(Bytes::new())),
        )
    }

    #[tokio::test]
    async fn cached_order_is_answered_as_json() {
        let mut cache = MockOrderCache::new();
        cache
            .expect_get()
            .returning(|_| Some(Bytes::from_static(SAMPLE)));
        let router = router(MockOrderRepository::new(), cache);

        let (status, body, response) =
            call(&router, Method::GET, "/order?order_uid=b563feb7b2b84b6test").await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_bytes(), SAMPLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn unknown_order_is_404_with_the_uid() {
        let mut repo = MockOrderRepository::new();
        repo.expect_find().returning(|_| Ok(None));
        let router = router(repo, empty_cache());

        let (status, body, _) = call(&router, Method::GET, "/order?order_uid=nope").await;

        assert_eq!(status, StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            body,
            json!({"error": "order not found", "order_uid": "nope"})
        );
    }

    #[tokio::test]
    async fn read_through_answers_a_miss() {
        let mut repo = MockOrderRepository::new();
        repo.expect_find()
            .returning(|_| Ok(Some(Order::parse(SAMPLE).expect("valid"))));
        let router = router(repo, empty_cache());

        let (status, body, _) =
            call(&router, Method::GET, "/order?order_uid=b563feb7b2b84b6test").await;

        assert_eq!(status, StatusCode::OK);
        let got: serde_json::Value = serde_json::from_str(&body).expect("json");
        let want: serde_json::Value = serde_json::from_slice(SAMPLE).expect("json");
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn bad_uids_are_400_with_a_reason() {
        let router = router(MockOrderRepository::new(), MockOrderCache::new());
        let cases = [
            ("/order", "order_uid is missing"),
            ("/order?other=1", "order_uid is missing"),
            ("/order?order_uid=", "order_uid: empty"),
            ("/order?order_uid=a&order_uid=b", "more than once"),
            ("/order?order_uid=%ff%fe", "may hold only"),
            ("/order?order_uid=..%2F..%2Fetc", "may hold only"),
            ("/order?order_uid=%27%3B%20DROP", "may hold only"),
        ];
        for (uri, reason) in cases {
            let (status, body, _) = call(&router, Method::GET, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let body: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert!(
                body["error"].as_str().expect("error").contains(reason),
                "{uri}: {body}"
            );
        }
        let long = format!("/order?order_uid={}", "a".repeat(65));
        let (status, _, _) = call(&router, Method::GET, &long).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn database_fault_is_503_and_says_nothing_internal() {
        let mut repo = MockOrderRepository::new();
        repo.expect_find().returning(|_| {
            Err(RepositoryError::Unavailable(
                "password=secret host=db".into(),
            ))
        });
        let router = router(repo, empty_cache());

        let (status, body, _) = call(&router, Method::GET, "/order?order_uid=x").await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!body.contains("secret"), "{body}");
    }

    #[tokio::test]
    async fn other_methods_are_405_with_allow() {
        let router = router(MockOrderRepository::new(), MockOrderCache::new());
        for (method, path) in [
            (Method::POST, "/order"),
            (Method::DELETE, "/"),
            (Method::PUT, "/readyz"),
        ] {
            let (status, _, response) = call(&router, method, path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        }
    }

    #[tokio::test]
    async fn page_is_served_with_a_content_security_policy() {
        let router = router(MockOrderRepository::new(), MockOrderCache::new());

        let (status, body, response) = call(&router, Method::GET, "/").await;

        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("order_uid"));
        assert!(
            response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii")
                .contains("script-src 'self'")
        );
        for path in ["/app.js", "/style.css"] {
            assert_eq!(call(&router, Method::GET, path).await.0, StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn traversal_finds_nothing() {
        let router = router(MockOrderRepository::new(), MockOrderCache::new());
        for path in [
            "/../Cargo.toml",
            "/static/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "/index.html/..",
        ] {
            let (status, _, _) = call(&router, Method::GET, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn orders_lists_a_page_and_refuses_bad_parameters() {
        let mut repo = MockOrderRepository::new();
        repo.expect_list_recent()
            .withf(|limit, before| {
                *limit == 2 && before.as_ref().map(|c| c.to_string()).as_deref() == Some("5.abc")
            })
            .times(1)
            .returning(|_, _| Ok(Vec::new()));
        let router = router(repo, MockOrderCache::new());

        let (status, body, _) = call(&router, Method::GET, "/orders?limit=2&before=5.abc").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).expect("json"),
            json!({"orders": [], "next": null})
        );

        for uri in [
            "/orders?limit=0",
            "/orders?limit=x",
            "/orders?before=nope",
            "/orders?limit=1&limit=2",
        ] {
            let (status, body, _) = call(&router, Method::GET, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains("error"), "{uri}");
        }
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route_and_lookups_by_source() {
        let mut cache = MockOrderCache::new();
        cache
            .expect_get()
            .returning(|_| Some(Bytes::from_static(SAMPLE)));
        cache.expect_len().return_const(42usize);
        let router = router(MockOrderRepository::new(), cache);
        call(&router, Method::GET, "/order?order_uid=b563feb7b2b84b6test").await;
        call(&router, Method::GET, "/no/such/page").await;

        let (status, body, response) = call(&router, Method::GET, "/metrics").await;

        assert_eq!(status, StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("text/plain")
        );
        for line in [
            "orders_http_requests_total{route=\"/order\",status=\"200\"} 1",
            "orders_http_requests_total{route=\"other\",status=\"404\"} 1",
            "orders_cache_hits_total 1",
            "orders_cache_entries 42",
        ] {
            assert!(body.contains(line), "missing {line} in {body}");
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_dependencies() {
        let readiness = Arc::new(Readiness::default());
        let router = Router::new(
            Arc::new(OrderService::new(
                Arc::new(MockOrderRepository::new()),
                Arc::new(MockOrderCache::new()),
                1 << 20,
            )),
            Arc::clone(&readiness),
            Arc::new(Metrics::new()),
        );
        readiness.set_database(true);
        readiness.set_broker(true);

        let (status, body, _) = call(&router, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"cache_warm\":false"), "{body}");

        readiness.set_cache_warm(true);
        assert_eq!(
            call(&router, Method::GET, "/readyz").await.0,
            StatusCode::OK
        );

        // With REQUIRE_SYNC_STANDBY, no synchronous standby means not ready.
        readiness.set_sync_standby_required(true);
        let (status, body, _) = call(&router, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("\"sync_standby\":false")
                && body.contains("\"sync_standby_required\":true"),
            "{body}"
        );
        readiness.set_sync_standby(true);
        assert_eq!(
            call(&router, Method::GET, "/readyz").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&router, Method::GET, "/healthz").await.0,
            StatusCode::OK
        );
    }
}
