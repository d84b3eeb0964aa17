use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing::Instrument as _;

use bytes::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use orders_domain::{
    DEFAULT_PAGE, EventId, InvalidRejectedId, LookupError, MAX_PAGE, MAX_REJECTED_PAGE,
    OrderCursor, OrderQuery, OrderRead, OrderService, OrderUid, ReadAudit, Readiness, RejectReason,
    RejectedId, RepositoryError, SEARCH_KEYS, SubscribeError,
};
use orders_metrics::{Metrics, RouteRecorder};
use serde_json::json;

use crate::auth::{Access, Denied};
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
    /// The bearer tokens the order-bearing routes need (`API_TOKENS_FILE`);
    /// `None` lets everyone in.
    access: Option<Arc<Access>>,
    /// Whether `/metrics` is served here (not when `METRICS_ADDR` puts it
    /// on a listener of its own).
    serves_metrics: bool,
    /// Whether only `/metrics` is served here (the `METRICS_ADDR` listener).
    only_metrics: bool,
    /// A quiet event stream gets a comment this often.
    keep_alive: Duration,
    recorders: Arc<Recorders>,
    /// Where the answers that gave out orders are noted (`AUDIT_READS`);
    /// `None` costs a request one branch.
    audit: Option<Audit>,
}

/// The read audit the router notes to.
#[derive(Clone)]
struct Audit(Arc<dyn ReadAudit>);

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

/// The order uids an answer gave out, gathered only while the read audit
/// is on (`None` otherwise).
type GivenOut = Option<Vec<String>>;

/// What a path names.
enum Route {
    Order,
    Orders,
    Rejected,
    /// `/rejected/{id}`, the id parsed (or why it is none).
    RejectedMessage(Result<RejectedId, InvalidRejectedId>),
    /// `/orders/events`: orders as they are stored (Server-Sent Events).
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
            "/rejected" => Route::Rejected,
            _ => match path.strip_prefix("/rejected/") {
                Some(id) => Route::RejectedMessage(RejectedId::parse(id)),
                None => Route::Static(statics::lookup(path)?),
            },
        })
    }

    /// Whether the route gives out orders (personal data): rate-limited,
    /// and (with tokens) behind sign-in.
    fn bears_orders(&self) -> bool {
        matches!(
            self,
            Route::Order
                | Route::Orders
                | Route::Rejected
                | Route::RejectedMessage(_)
                | Route::Events
        )
    }

    /// The metrics label's place in [`LABELS`]: a fixed set, so a client
    /// cannot create label values at will.
    fn label_index(route: Option<&Route>) -> usize {
        match route {
            Some(Route::Order) => 0,
            Some(Route::Orders) => 1,
            Some(Route::Rejected) => 2,
            Some(Route::RejectedMessage(_)) => 3,
            Some(Route::Events) => 4,
            Some(Route::Healthz) => 5,
            Some(Route::Readyz) => 6,
            Some(Route::Metrics) => 7,
            Some(Route::Static(_)) => 8,
            None => 9,
        }
    }
}

/// The routes' metrics labels, by [`Route::label_index`].
const LABELS: [&str; 10] = [
    "/order",
    "/orders",
    "/rejected",
    "/rejected/{id}",
    "/orders/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "static",
    "other",
];

/// Each route's request metrics, resolved at its first request (so routes
/// never asked for show no series).
type Recorders = [OnceLock<RouteRecorder>; LABELS.len()];

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
            access: None,
            serves_metrics: true,
            only_metrics: false,
            keep_alive: KEEP_ALIVE,
            recorders: Arc::default(),
            audit: None,
        }
    }

    /// Notes each 2xx answer of an order-bearing route (and each opening
    /// of the event stream) to `audit`: who, when, the route's label and
    /// the uids given out. `audit` MUST NOT block (it runs here, on the
    /// request path).
    pub fn with_audit(mut self, audit: Option<Arc<dyn ReadAudit>>) -> Self {
        self.audit = audit.map(Audit);
        self
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

    /// Lets only holders of a listed bearer token reach the order-bearing
    /// routes.
    pub fn with_access(mut self, access: Option<Arc<Access>>) -> Self {
        self.access = access;
        self
    }

    /// Leaves `/metrics` to another listener (`METRICS_ADDR`).
    pub fn without_metrics(mut self) -> Self {
        self.serves_metrics = false;
        self
    }

    /// Answers one request. Never fails: every error is an HTTP answer.
    /// The client's address, for the rate limit, is the request's
    /// [`ClientIp`] extension.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        let client = req.extensions().get::<ClientIp>().and_then(|c| c.0);
        self.handle_from(req, client).await
    }

    /// [`Router::handle`] for a request from `client` (the server knows
    /// it per connection: an extension would cost a map per request).
    pub async fn handle_from<B>(&self, req: Request<B>, client: Option<IpAddr>) -> Response<Body> {
        let started = Instant::now();
        let route = Route::of(req.uri().path());
        let label = Route::label_index(route.as_ref());
        let span = tracing::debug_span!("request", method = %req.method(), path = req.uri().path());
        let mut given_out: GivenOut = match &self.audit {
            Some(_) if route.as_ref().is_some_and(Route::bears_orders) => Some(Vec::new()),
            _ => None,
        };
        let (response, caller) = self
            .route(&req, route, client, &mut given_out)
            .instrument(span)
            .await;
        if let (Some(audit), Some(order_uids)) = (&self.audit, given_out)
            && response.status().is_success()
        {
            let who = match (&caller, client) {
                (Some(name), _) => name.to_string(),
                (None, Some(address)) => address.to_string(),
                (None, None) => "unknown".to_owned(),
            };
            audit.0.record(OrderRead {
                who,
                at: time::OffsetDateTime::now_utc(),
                route: LABELS[label],
                order_uids,
            });
        }
        let elapsed = started.elapsed();
        let recorder =
            self.recorders[label].get_or_init(|| self.metrics.route_recorder(LABELS[label]));
        self.metrics
            .record_on(recorder, response.status().as_u16(), elapsed);
        if let Some(caller) = &caller {
            self.metrics.record_caller(caller);
        }
        tracing::debug!(
            method = %req.method(),
            path = req.uri().path(),
            token = caller.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "request"
        );
        response
    }

    /// The answer, and the name of the token that let the request in; the
    /// order uids it gives out go into `given_out`, when that gathers them.
    async fn route<B>(
        &self,
        req: &Request<B>,
        route: Option<Route>,
        client: Option<IpAddr>,
        given_out: &mut GivenOut,
    ) -> (Response<Body>, Option<Arc<str>>) {
        let route = match route {
            Some(Route::Metrics) if !self.serves_metrics => None,
            Some(Route::Metrics) => Some(Route::Metrics),
            _ if self.only_metrics => None,
            route => route,
        };
        let Some(route) = route else {
            return (error(StatusCode::NOT_FOUND, "no such page"), None);
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return (response, None);
        }
        if route.bears_orders()
            && let Some(limit) = &self.rate_limit
            && let Some(client) = client
            && let Err(wait) = limit.check(client)
        {
            let response = retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this address; slow down",
                wait,
            );
            return (response, None);
        }
        // After the rate limit, so guessing tokens is as slow as any request.
        let caller = match &self.access {
            Some(access) if route.bears_orders() => match access.authorize(req.headers()) {
                Ok(caller) => Some(caller),
                Err(denied) => {
                    self.metrics.record_denied(denied.label());
                    return (unauthorized(denied), None);
                }
            },
            _ => None,
        };
        let response = match route {
            Route::Order => self.order(req.uri().query(), given_out).await,
            Route::Orders => self.orders(req.uri().query(), given_out).await,
            Route::Rejected => self.rejected(req.uri().query(), given_out).await,
            Route::RejectedMessage(id) => self.rejected_message(id, given_out).await,
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
        };
        (response, caller)
    }

    async fn order(&self, query: Option<&str>, given_out: &mut GivenOut) -> Response<Body> {
        let uid = match order_uid_from_query(query.unwrap_or("")) {
            Ok(uid) => uid,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        match self.service.lookup(&uid).await {
            Ok(found) => {
                self.metrics.record_lookup(found.from_cache);
                if let Some(uids) = given_out {
                    uids.push(uid.to_string());
                }
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

    async fn orders(&self, query: Option<&str>, given_out: &mut GivenOut) -> Response<Body> {
        let (search, limit, before) = match search_from_query(query.unwrap_or("")) {
            Ok(page) => page,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        match self.service.recent(&search, limit, before).await {
            Ok(page) => {
                if let Some(uids) = given_out {
                    uids.extend(page.orders.iter().map(|o| o.order_uid.to_string()));
                }
                serialized(&page, "a page of orders")
            }
            Err(err) => repository_error(&err, "listing orders failed"),
        }
    }

    async fn rejected(&self, query: Option<&str>, given_out: &mut GivenOut) -> Response<Body> {
        let (reason, limit, before) = match rejected_from_query(query.unwrap_or("")) {
            Ok(page) => page,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        match self.service.rejected(reason, limit, before).await {
            Ok(page) => {
                if let Some(uids) = given_out {
                    uids.extend(page.rejected.iter().filter_map(|r| r.order_uid.clone()));
                }
                serialized(&page, "a page of rejected messages")
            }
            Err(err) => repository_error(&err, "listing rejected messages failed"),
        }
    }

    async fn rejected_message(
        &self,
        id: Result<RejectedId, InvalidRejectedId>,
        given_out: &mut GivenOut,
    ) -> Response<Body> {
        let id = match id {
            Ok(id) => id,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("id: {e}")),
        };
        match self.service.rejected_message(id).await {
            Ok(Some(message)) => {
                if let Some(uids) = given_out {
                    uids.extend(message.summary.order_uid.clone());
                }
                serialized(&message, "a rejected message")
            }
            Ok(None) => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "rejected message not found", "id": id.get()}),
            ),
            Err(err) => repository_error(&err, "reading a rejected message failed"),
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
    // The common form, `order_uid=UID` with nothing to decode, without
    // the decoder's allocations (a sixth of a cache hit's instructions).
    if let Some(raw) = query.strip_prefix("order_uid=")
        && !raw.contains(['&', '%', '+', ';'])
    {
        return OrderUid::parse(raw).map_err(|e| format!("order_uid: {e}"));
    }
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

/// `limit`: a whole number from 1 (the core caps it at `max`).
fn limit_from(value: &str, max: usize) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("limit: expected a whole number from 1 to {max}"))
}

/// Walks a query string once, refusing a parameter given twice and
/// handing each other one to `take`, which returns `Ok(false)` for a name
/// it does not know (then refused, naming `known`).
fn each_parameter(
    query: &str,
    known: &str,
    mut take: impl FnMut(&str, &str) -> Result<bool, String>,
) -> Result<(), String> {
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if seen.iter().any(|k| *k == key) {
            return Err(format!("{key} is given more than once"));
        }
        if !take(&key, &value)? {
            return Err(format!("unknown parameter {key:?}: expected {known}"));
        }
        seen.push(key.into_owned());
    }
    Ok(())
}

/// `GET /orders`: at most one search key (exact value), `from` and `to`
/// (RFC 3339), `limit` and `before`. Any other parameter is refused, so a
/// misspelt key never lists every order.
fn search_from_query(query: &str) -> Result<(OrderQuery, usize, Option<OrderCursor>), String> {
    let mut search = OrderQuery::all();
    let mut limit = DEFAULT_PAGE;
    let mut before = None;
    let known = format!("{}, from, to, limit or before", SEARCH_KEYS.join(", "));
    each_parameter(query, &known, |key, value| {
        match key {
            "limit" => limit = limit_from(value, MAX_PAGE)?,
            "before" => before = Some(OrderCursor::parse(value).map_err(|e| e.to_string())?),
            _ => match search.take(key, value) {
                Some(taken) => taken.map_err(|e| e.to_string())?,
                None => return Ok(false),
            },
        }
        Ok(true)
    })?;
    let search = search.finish().map_err(|e| e.to_string())?;
    Ok((search, limit, before))
}

/// `GET /rejected`: `reason` (one of the known reasons), `limit`, `before` (an id).
fn rejected_from_query(
    query: &str,
) -> Result<(Option<RejectReason>, usize, Option<RejectedId>), String> {
    let mut reason = None;
    let mut limit = DEFAULT_PAGE;
    let mut before = None;
    each_parameter(query, "reason, limit or before", |key, value| {
        match key {
            "reason" => {
                reason = Some(RejectReason::from_name(value).ok_or_else(|| {
                    let names: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
                    format!("reason: expected one of {}", names.join(", "))
                })?);
            }
            "limit" => limit = limit_from(value, MAX_REJECTED_PAGE)?,
            "before" => {
                before = Some(RejectedId::parse(value).map_err(|e| format!("before: {e}"))?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((reason, limit, before))
}

/// `value` as a 200 JSON answer.
fn serialized(value: &impl serde::Serialize, what: &str) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(StatusCode::OK, Bytes::from(body)),
        Err(err) => {
            tracing::error!(error = %err, "serializing {what}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// RFC 6750's answers to a request the tokens do not let in: without
/// credentials, a bare challenge (the client has to sign in); with a token
/// not in the file, `invalid_token`; with a malformed header,
/// `invalid_request`.
fn unauthorized(denied: Denied) -> Response<Body> {
    let (status, challenge, message) = match denied {
        Denied::Missing => (
            StatusCode::UNAUTHORIZED,
            r#"Bearer realm="orders""#,
            "sign in: send Authorization: Bearer <token>",
        ),
        Denied::Unknown => (
            StatusCode::UNAUTHORIZED,
            r#"Bearer realm="orders", error="invalid_token", error_description="the token is not known""#,
            "token rejected",
        ),
        Denied::Malformed => (
            StatusCode::BAD_REQUEST,
            r#"Bearer realm="orders", error="invalid_request", error_description="expected one Authorization: Bearer <token> header""#,
            "expected one Authorization: Bearer <token> header",
        ),
    };
    let mut response = error(status, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
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
        repo.expect_find_json().returning(|_| Ok(None));
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
        repo.expect_find_json()
            .returning(|_| Ok(Some(Order::parse(SAMPLE).expect("valid").to_json().into())));
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
        repo.expect_find_json().returning(|_| {
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
            .withf(|_, limit, before| {
                *limit == 2 && before.as_ref().map(|c| c.to_string()).as_deref() == Some("5.abc")
            })
            .times(1)
            .returning(|_, _, _| Ok(Vec::new()));
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
    async fn orders_take_one_search_key_and_name_the_bad_parameter() {
        let mut repo = MockOrderRepository::new();
        repo.expect_list_recent()
            .withf(|query, limit, before| {
                query.key == Some(orders_domain::SearchKey::Phone("+7900".into()))
                    && query.from.is_some()
                    && query.to.is_none()
                    && *limit == DEFAULT_PAGE
                    && before.is_none()
            })
            .times(1)
            .returning(|_, _, _| Ok(Vec::new()));
        let router = router(repo, MockOrderCache::new());

        let (status, _, _) = call(
            &router,
            Method::GET,
            "/orders?phone=%2B7%20(900)&from=2021-11-26T00:00:00Z",
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        for (uri, reason) in [
            ("/orders?phone=", "phone: empty"),
            (
                "/orders?phone=1&email=a@b",
                "phone and email given together",
            ),
            (
                "/orders?email=a@b&email=c@d",
                "email is given more than once",
            ),
            ("/orders?from=yesterday", "from: expected an RFC 3339 time"),
            (
                "/orders?phon=1",
                "unknown parameter \"phon\": expected track_number",
            ),
            ("/orders?order_uid=x", "unknown parameter \"order_uid\""),
        ] {
            let (status, body, _) = call(&router, Method::GET, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let body: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert!(
                body["error"].as_str().expect("error").starts_with(reason),
                "{uri}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn rejected_messages_are_listed_and_read_by_id() {
        let mut repo = MockOrderRepository::new();
        repo.expect_list_rejected()
            .withf(|reason, limit, before| {
                *reason == Some(orders_domain::RejectReason::Conflict)
                    && *limit == 2
                    && before.map(RejectedId::get) == Some(5)
            })
            .times(1)
            .returning(|_, _, _| Ok(Vec::new()));
        repo.expect_find_rejected().times(1).returning(|_| Ok(None));
        let mut cache = MockOrderCache::new();
        cache.expect_len().return_const(0usize);
        let router = router(repo, cache);

        let (status, body, _) = call(
            &router,
            Method::GET,
            "/rejected?reason=conflict&limit=2&before=5",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).expect("json"),
            json!({"rejected": [], "next": null, "retention": null})
        );
        let (status, body, _) = call(&router, Method::GET, "/rejected/7").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).expect("json"),
            json!({"error": "rejected message not found", "id": 7})
        );

        for (uri, reason) in [
            (
                "/rejected?reason=nope",
                "reason: expected one of too_large, ",
            ),
            ("/rejected?before=0", "before: expected a whole number"),
            ("/rejected?limit=0", "limit: expected"),
            ("/rejected?phone=1", "unknown parameter"),
            ("/rejected/abc", "id: expected a whole number from 1"),
            ("/rejected/", "id: expected"),
            ("/rejected/1/2", "id: expected"),
        ] {
            let (status, body, _) = call(&router, Method::GET, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains(reason), "{uri}: {body}");
        }
        let (_, metrics, _) = call(&router, Method::GET, "/metrics").await;
        for line in [
            "orders_http_requests_total{route=\"/rejected\",status=\"200\"} 1",
            "orders_http_requests_total{route=\"/rejected/{id}\",status=\"404\"} 1",
            "orders_http_requests_total{route=\"/rejected/{id}\",status=\"400\"} 3",
        ] {
            assert!(metrics.contains(line), "missing {line} in {metrics}");
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

    const TOKEN: &str = "desk-token-0123456789";

    /// A router whose order routes need the token `desk:TOKEN`.
    fn signed_router() -> (Router, Arc<Metrics>) {
        let mut cache = MockOrderCache::new();
        cache
            .expect_get()
            .returning(|_| Some(Bytes::from_static(SAMPLE)));
        cache.expect_len().return_const(1usize);
        let metrics = Arc::new(Metrics::new());
        let tokens = crate::Tokens::parse(&format!("desk:{TOKEN}")).expect("tokens");
        let router = Router::new(
            Arc::new(OrderService::new(
                Arc::new(MockOrderRepository::new()),
                Arc::new(cache),
                1 << 20,
            )),
            Arc::new(Readiness::default()),
            Arc::clone(&metrics),
        )
        .with_access(Some(Arc::new(Access::new(tokens))));
        (router, metrics)
    }

    async fn call_as(router: &Router, uri: &str, authorization: Option<&str>) -> Response<Body> {
        let mut req = Request::builder().uri(uri);
        if let Some(value) = authorization {
            req = req.header(header::AUTHORIZATION, value);
        }
        router.handle(req.body(()).expect("request")).await
    }

    #[tokio::test]
    async fn with_tokens_orders_need_a_listed_bearer_token() {
        let (router, metrics) = signed_router();
        let uri = "/order?order_uid=b563feb7b2b84b6test";

        let none = call_as(&router, uri, None).await;
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            none.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="orders""#
        );
        let listing = call_as(&router, "/orders", None).await;
        assert_eq!(listing.status(), StatusCode::UNAUTHORIZED);

        let wrong = call_as(&router, uri, Some("Bearer desk-token-0123456780")).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let challenge = wrong.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii");
        assert!(
            challenge.starts_with(r#"Bearer realm="orders", error="invalid_token""#),
            "{challenge}"
        );
        let malformed = call_as(&router, uri, Some("Bearer two words")).await;
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

        let right = call_as(&router, uri, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(right.status(), StatusCode::OK);

        let text = metrics.encode();
        for line in [
            r#"orders_http_token_requests_total{token="desk"} 1"#,
            r#"orders_http_auth_denied_total{reason="missing"} 2"#,
            r#"orders_http_auth_denied_total{reason="invalid_token"} 1"#,
            r#"orders_http_auth_denied_total{reason="invalid_request"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    /// A read audit that keeps what it is given.
    fn audit_keeping(seen: &Arc<std::sync::Mutex<Vec<OrderRead>>>) -> Arc<dyn ReadAudit> {
        let seen = Arc::clone(seen);
        let mut audit = orders_domain::MockReadAudit::new();
        audit
            .expect_record()
            .returning(move |read| seen.lock().expect("lock").push(read));
        Arc::new(audit)
    }

    #[tokio::test]
    async fn with_the_read_audit_each_2xx_answer_for_orders_is_noted_by_route_label_and_uids() {
        // setup: one cached order, one unknown; a listing of two orders
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|uid| {
            (uid.as_str() == "b563feb7b2b84b6test").then(|| Bytes::from_static(SAMPLE))
        });
        cache.expect_insert().return_const(());
        let mut repo = MockOrderRepository::new();
        repo.expect_find_json().returning(|_| Ok(None));
        repo.expect_list_recent().returning(|_, _, _| {
            let order = |uid: &str| {
                let mut value: serde_json::Value = serde_json::from_slice(SAMPLE).expect("json");
                value["order_uid"] = json!(uid);
                orders_domain::OrderSummary::of(
                    &Order::parse(&serde_json::to_vec(&value).expect("json")).expect("order"),
                )
            };
            Ok(vec![order("first"), order("second")])
        });
        let seen = Arc::default();
        let router = router(repo, cache).with_audit(Some(audit_keeping(&seen)));
        let client = Some(IpAddr::from([192, 0, 2, 7]));
        let get = |uri: &str| Request::builder().uri(uri).body(()).expect("request");

        // exec
        let statuses = [
            router
                .handle_from(get("/order?order_uid=b563feb7b2b84b6test"), client)
                .await,
            router
                .handle_from(get("/order?order_uid=unknown"), client)
                .await,
            router
                .handle_from(get("/order?order_uid=bad%20uid"), client)
                .await,
            router
                .handle_from(get("/orders?email=Someone%40example.com"), client)
                .await,
            router.handle_from(get("/healthz"), client).await,
        ]
        .map(|r| r.status().as_u16());

        // check: the 200s of /order and /orders only, by label, from the client
        assert_eq!(statuses, [200, 404, 400, 200, 200]);
        let seen = seen.lock().expect("lock");
        let noted: Vec<(&str, &str, Vec<String>)> = seen
            .iter()
            .map(|r| (r.who.as_str(), r.route, r.order_uids.clone()))
            .collect();
        assert_eq!(
            noted,
            [
                (
                    "192.0.2.7",
                    "/order",
                    vec!["b563feb7b2b84b6test".to_owned()]
                ),
                (
                    "192.0.2.7",
                    "/orders",
                    vec!["first".to_owned(), "second".to_owned()]
                ),
            ]
        );
        assert!(
            seen.iter()
                .all(|r| !format!("{r:?}").contains("example.com")),
            "never the query string: {seen:?}"
        );
    }

    #[tokio::test]
    async fn with_tokens_the_read_audit_names_the_token_not_the_address() {
        let (router, _) = signed_router();
        let seen = Arc::default();
        let router = router.with_audit(Some(audit_keeping(&seen)));
        let req = Request::builder()
            .uri("/order?order_uid=b563feb7b2b84b6test")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(())
            .expect("request");

        let response = router
            .handle_from(req, Some(IpAddr::from([192, 0, 2, 7])))
            .await;

        assert_eq!(response.status(), StatusCode::OK);
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].who, "desk");
    }

    #[tokio::test]
    async fn with_tokens_health_metrics_and_the_page_stay_open() {
        let (router, _) = signed_router();
        for uri in ["/healthz", "/readyz", "/metrics", "/", "/app.js"] {
            let status = call_as(&router, uri, None).await.status();
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri}");
        }
    }
}
