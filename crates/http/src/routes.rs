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
use serde_json::json;

use crate::auth::{self, Access, Caller, Denied, Revocation};
use crate::body::{Body, EventBody};
use crate::client::TrustedProxies;
use crate::limits::{ClientIp, RateLimit};
use crate::report::{RequestReport, RouteReport};
use crate::statics;
use crate::trace;

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
    /// Where each answer is reported, and what `/metrics` serves.
    reports: Arc<Reports>,
    /// Per client on the order-bearing routes (`RATE_LIMIT`).
    rate_limit: Option<Arc<RateLimit>>,
    /// The proxies whose forwarding headers name the client
    /// (`TRUSTED_PROXIES`); empty, the client is the peer.
    trusted: TrustedProxies,
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
    /// Where the answers that gave out orders are noted (`AUDIT_READS`);
    /// `None` costs a request one branch.
    audit: Option<Audit>,
}

/// Where the router reports its requests, and each route's report,
/// resolved at the route's first request (so routes never asked for show
/// nothing); after that, reporting an answer resolves nothing: no lock, no
/// label hashed.
struct Reports {
    to: Arc<dyn RequestReport>,
    routes: [OnceLock<Box<dyn RouteReport>>; LABELS.len()],
}

impl Reports {
    /// The report of the route labelled `LABELS[label]`.
    fn route(&self, label: usize) -> &dyn RouteReport {
        self.routes[label]
            .get_or_init(|| self.to.route(LABELS[label]))
            .as_ref()
    }
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reports")
    }
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

/// Why a request to an order-bearing route was not let in.
enum Refused {
    /// Over the rate limit: 429, to try again after `wait`.
    TooMany { why: &'static str, wait: Duration },
    /// No listed token: 401, or 400 for a malformed header.
    Denied(Denied),
}

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
    Static(&'static statics::StaticFile),
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

    /// The route's label's place in [`LABELS`]: a fixed set, so a client
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

/// The routes' labels in reports, by [`Route::label_index`].
pub(crate) const LABELS: [&str; 10] = [
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

impl Router {
    pub fn new(
        service: Arc<OrderService>,
        readiness: Arc<Readiness>,
        report: Arc<dyn RequestReport>,
    ) -> Self {
        Self {
            service,
            readiness,
            reports: Arc::new(Reports {
                to: report,
                routes: Default::default(),
            }),
            rate_limit: None,
            trusted: TrustedProxies::default(),
            access: None,
            serves_metrics: true,
            only_metrics: false,
            keep_alive: KEEP_ALIVE,
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

    /// Limits each client on the order-bearing routes.
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit.map(Arc::new);
        self
    }

    /// Takes the client of a request from one of these proxies to be the
    /// address it forwarded for.
    pub fn with_trusted_proxies(mut self, trusted: TrustedProxies) -> Self {
        self.trusted = trusted;
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
    /// The peer's address is the request's [`ClientIp`] extension.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        let peer = req.extensions().get::<ClientIp>().and_then(|c| c.0);
        self.handle_from(req, peer).await
    }

    /// [`Router::handle`] for a request from `peer` (the server knows it
    /// per connection: an extension would cost a map per request). The
    /// client is the peer, or, from a trusted proxy, the address it
    /// forwarded for: the rate limit and the access log go by it.
    pub async fn handle_from<B>(&self, req: Request<B>, peer: Option<IpAddr>) -> Response<Body> {
        let client = peer.map(|peer| self.trusted.client(peer, req.headers()));
        let started = Instant::now();
        let route = Route::of(req.uri().path());
        let label = Route::label_index(route.as_ref());
        let personal = route.as_ref().is_some_and(Route::bears_orders);
        let span = tracing::debug_span!("request", method = %req.method(), path = req.uri().path());
        let server = trace::server_span(&req, route.as_ref().map(|_| LABELS[label]));
        // A bug that panics answers this request 500; the connection's
        // other requests and the process carry on.
        let mut given_out: GivenOut = match &self.audit {
            Some(_) if personal => Some(Vec::new()),
            _ => None,
        };
        let answered =
            orders_domain::catch_panic_async(self.route(&req, route, client, &mut given_out))
                .instrument(span)
                .instrument(server.clone())
                .await;
        let (mut response, caller) = answered.unwrap_or_else(|panicked| {
            tracing::error!(%panicked, method = %req.method(), path = req.uri().path(), "answering a request panicked");
            self.reports.to.panicked();
            (error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"), None)
        });
        finish(&mut response, personal);
        trace::answered(&server, response.status());
        if let (Some(audit), Some(order_uids)) = (&self.audit, given_out)
            && response.status().is_success()
        {
            let who = match (&caller, client) {
                (Some(caller), _) => caller.name().to_string(),
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
        self.reports
            .route(label)
            .answered(response.status().as_u16(), elapsed);
        if let Some(caller) = &caller {
            self.reports.to.caller(caller.name());
        }
        tracing::debug!(
            method = %req.method(),
            path = req.uri().path(),
            client = client.map(tracing::field::display),
            token = caller.as_ref().map_or("-", |c| c.name()),
            status = response.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "request"
        );
        response
    }

    /// The answer, and the caller whose token let the request in; the
    /// order uids it gives out go into `given_out`, when that gathers them.
    async fn route<B>(
        &self,
        req: &Request<B>,
        route: Option<Route>,
        client: Option<IpAddr>,
        given_out: &mut GivenOut,
    ) -> (Response<Body>, Option<Caller>) {
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
        let caller = if route.bears_orders() {
            match self.admit(req, client) {
                Ok(caller) => caller,
                Err(Refused::TooMany { why, wait }) => {
                    let response = retry_after(StatusCode::TOO_MANY_REQUESTS, why, wait);
                    return (response, None);
                }
                Err(Refused::Denied(denied)) => {
                    self.reports.to.denied(denied.label());
                    return (unauthorized(denied), None);
                }
            }
        } else {
            None
        };
        let response = match route {
            Route::Order => self.order(req.uri().query(), given_out).await,
            Route::Orders => self.orders(req.uri().query(), given_out).await,
            Route::Rejected => self.rejected(req.uri().query(), given_out).await,
            Route::RejectedMessage(id) => self.rejected_message(id, given_out).await,
            Route::Events => {
                self.events(req.headers().get(&LAST_EVENT_ID), caller.as_ref())
                    .await
            }
            Route::Healthz => json_response(StatusCode::OK, &json!({"status": "ok"})),
            Route::Readyz => self.readyz(),
            Route::Metrics => {
                let mut response = Response::new(Body::full(self.reports.to.exposition()));
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
                response
            }
        };
        (response, caller)
    }

    /// Lets a request to an order-bearing route in, with its caller when
    /// tokens are in force, or answers why not. The order of the steps is
    /// what makes both limits hold:
    ///
    /// 1. A request without bearer credentials, or with malformed ones, is
    ///    charged to its client address before anything else, as every
    ///    request was before tokens.
    /// 2. A request with a token, while its address is over the limit, is
    ///    refused before its token is looked at. Looking first would tell
    ///    a guesser over its limit which guess was right (200, not 429):
    ///    guessing would not be limited at all.
    /// 3. A listed token is charged to its own bucket, the caller's name,
    ///    whatever address it comes from, and not to the address: callers
    ///    behind one proxy or NAT share no bucket, so a greedy one cannot
    ///    starve the others (only wait with them, by step 2, while someone
    ///    at their address is refused).
    /// 4. An unknown token is charged to the address, as in step 1: so
    ///    guesses count, and once over, step 2 refuses every token from
    ///    there.
    fn admit<B>(
        &self,
        req: &Request<B>,
        client: Option<IpAddr>,
    ) -> Result<Option<Caller>, Refused> {
        const FROM_ADDRESS: &str = "too many requests from this address; slow down";
        let limit = self.rate_limit.as_deref();
        let over = |why, wait| Refused::TooMany { why, wait };
        let charge_address = || match (limit, client) {
            (Some(limit), Some(client)) => limit.check(client).map_err(|w| over(FROM_ADDRESS, w)),
            _ => Ok(()),
        };
        let Some(access) = &self.access else {
            charge_address()?;
            return Ok(None);
        };
        let token = match auth::bearer(req.headers()) {
            Ok(token) => token,
            Err(denied) => {
                charge_address()?;
                return Err(Refused::Denied(denied));
            }
        };
        if let (Some(limit), Some(client)) = (limit, client) {
            limit.refused(client).map_err(|w| over(FROM_ADDRESS, w))?;
        }
        match access.caller(token) {
            Ok(caller) => {
                if let Some(limit) = limit {
                    limit
                        .check_caller(caller.name())
                        .map_err(|w| over("too many requests with this token; slow down", w))?;
                }
                Ok(Some(caller))
            }
            Err(denied) => {
                charge_address()?;
                Err(Refused::Denied(denied))
            }
        }
    }

    async fn order(&self, query: Option<&str>, given_out: &mut GivenOut) -> Response<Body> {
        let uid = match order_uid_from_query(query.unwrap_or("")) {
            Ok(uid) => uid,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        match self.service.lookup(&uid).await {
            Ok(found) => {
                self.reports.to.lookup(found.from_cache);
                if let Some(uids) = given_out {
                    uids.push(uid.to_string());
                }
                json_bytes(StatusCode::OK, found.json)
            }
            Err(LookupError::NotFound) => {
                self.reports.to.lookup(false);
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
                self.reports.to.lookup(false);
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
    /// `Last-Event-ID` when the client resumes. One opened by a caller's
    /// token ends when that token is revoked.
    async fn events(
        &self,
        last_event_id: Option<&HeaderValue>,
        caller: Option<&Caller>,
    ) -> Response<Body> {
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
                let mut body = EventBody::new(stream, self.keep_alive);
                if let (Some(access), Some(caller)) = (&self.access, caller) {
                    body = body.until_revoked(Revocation::new(Arc::clone(access), caller.clone()));
                }
                let mut response = Response::new(Body::Events(body));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
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

/// What every answer carries, set in this one place as the router
/// finishes it: `nosniff`, so that no browser takes an answer for another
/// type than it says (a rejected message holds bytes an attacker chose);
/// and on the routes that give out personal data, `no-store`, so that no
/// browser or cache in between keeps it. Their errors too: some echo the
/// request (an order uid), and none is worth keeping. Two static values:
/// no allocation, and the answer's header map has room for them.
fn finish(response: &mut Response<Body>, personal: bool) {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if personal {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
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
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use orders_domain::{
        MockOrderCache, MockOrderReads, MockRejectedReads, Order, Ports, RepositoryError,
    };

    use crate::report::recording::{EXPOSITION, Recording, Reported};

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

    fn router(reads: MockOrderReads, cache: MockOrderCache) -> Router {
        on(Ports {
            reads: Arc::new(reads),
            cache: Arc::new(cache),
            ..Ports::mocks()
        })
    }

    fn on(ports: Ports) -> Router {
        reporting(ports).0
    }

    /// A router on `ports`, and what it reports.
    fn reporting(ports: Ports) -> (Router, Recording) {
        let record = Recording::default();
        let router = Router::new(
            Arc::new(OrderService::new(ports, 1 << 20)),
            Arc::new(Readiness::default()),
            Arc::new(record.clone()),
        );
        (router, record)
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
        let router = router(MockOrderReads::new(), cache);

        let (status, body, response) =
            call(&router, Method::GET, "/order?order_uid=b563feb7b2b84b6test").await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_bytes(), SAMPLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn unknown_order_is_404_with_the_uid() {
        let mut repo = MockOrderReads::new();
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
        let mut repo = MockOrderReads::new();
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
        let router = router(MockOrderReads::new(), MockOrderCache::new());
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
        let mut repo = MockOrderReads::new();
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
        let router = router(MockOrderReads::new(), MockOrderCache::new());
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
        let router = router(MockOrderReads::new(), MockOrderCache::new());

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
        let router = router(MockOrderReads::new(), MockOrderCache::new());
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
        let mut repo = MockOrderReads::new();
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
        let mut repo = MockOrderReads::new();
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
        let mut repo = MockRejectedReads::new();
        repo.expect_list_rejected()
            .withf(|reason, limit, before| {
                *reason == Some(orders_domain::RejectReason::Conflict)
                    && *limit == 2
                    && before.map(RejectedId::get) == Some(5)
            })
            .times(1)
            .returning(|_, _, _| Ok(Vec::new()));
        repo.expect_find_rejected().times(1).returning(|_| Ok(None));
        let (router, record) = reporting(Ports {
            rejected: Arc::new(repo),
            ..Ports::mocks()
        });

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
        let answered = |route, status| record.count(&Reported::Answered { route, status });
        assert_eq!(answered("/rejected", 200), 1);
        assert_eq!(answered("/rejected", 400), 4);
        assert_eq!(answered("/rejected/{id}", 404), 1);
        assert_eq!(answered("/rejected/{id}", 400), 3);
    }

    #[tokio::test]
    async fn each_answer_is_reported_under_its_routes_label_resolved_once() {
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|uid| {
            (uid.as_str() == "b563feb7b2b84b6test").then(|| Bytes::from_static(SAMPLE))
        });
        let mut reads = MockOrderReads::new();
        reads.expect_find_json().returning(|_| Ok(None));
        let (router, record) = reporting(Ports {
            reads: Arc::new(reads),
            cache: Arc::new(cache),
            ..Ports::mocks()
        });

        for _ in 0..3 {
            call(&router, Method::GET, "/order?order_uid=b563feb7b2b84b6test").await;
        }
        call(&router, Method::GET, "/order?order_uid=unknown").await;
        call(&router, Method::GET, "/no/such/page").await;
        call(&router, Method::GET, "/healthz").await;

        let hit = Reported::Lookup { from_cache: true };
        let found = Reported::Answered {
            route: "/order",
            status: 200,
        };
        assert_eq!(
            record.reported(),
            [
                hit.clone(),
                Reported::Route("/order"),
                found.clone(),
                hit.clone(),
                found.clone(),
                hit,
                found,
                Reported::Lookup { from_cache: false },
                Reported::Answered {
                    route: "/order",
                    status: 404
                },
                Reported::Route("other"),
                Reported::Answered {
                    route: "other",
                    status: 404
                },
                Reported::Route("/healthz"),
                Reported::Answered {
                    route: "/healthz",
                    status: 200
                },
            ]
        );
    }

    #[tokio::test]
    async fn metrics_answers_the_reports_text_as_prometheus_text() {
        let router = router(MockOrderReads::new(), MockOrderCache::new());

        let (status, body, response) = call(&router, Method::GET, "/metrics").await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(body, EXPOSITION);
    }

    #[tokio::test]
    async fn readiness_follows_the_dependencies() {
        let readiness = Arc::new(Readiness::default());
        let router = Router::new(
            Arc::new(OrderService::new(Ports::mocks(), 1 << 20)),
            Arc::clone(&readiness),
            Arc::new(Recording::default()),
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

    /// Every answer, whatever its route and status, says `nosniff`; every
    /// answer of a route that gives out personal data (errors included)
    /// says `no-store`, and no other answer does.
    #[tokio::test]
    async fn every_answer_says_nosniff_and_those_of_order_routes_no_store() {
        let down = || RepositoryError::Unavailable("down".into());
        let mut repo = MockOrderReads::new();
        let mut rejected = MockRejectedReads::new();
        repo.expect_find_json()
            .returning(move |uid| match uid.as_str() {
                "down" => Err(down()),
                _ => Ok(None),
            });
        // A limit of 7 stands for a database that does not answer.
        repo.expect_list_recent().returning(move |_, limit, _| {
            if limit == 7 {
                Err(down())
            } else {
                Ok(Vec::new())
            }
        });
        rejected
            .expect_list_rejected()
            .returning(move |_, limit, _| {
                if limit == 7 {
                    Err(down())
                } else {
                    Ok(Vec::new())
                }
            });
        rejected
            .expect_find_rejected()
            .returning(move |id| match id.get() {
                1 => Ok(Some(rejected_message(id))),
                2 => Err(down()),
                _ => Ok(None),
            });
        repo.expect_stored_since()
            .returning(move |_, _, _| Err(down()));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|uid| {
            (uid.as_str() == "b563feb7b2b84b6test").then(|| Bytes::from_static(SAMPLE))
        });
        cache.expect_insert().return_const(());
        let readiness = Arc::new(Readiness::default());
        let service = OrderService::new(
            Ports {
                reads: Arc::new(repo),
                rejected: Arc::new(rejected),
                cache: Arc::new(cache),
                ..Ports::mocks()
            },
            1 << 20,
        )
        .with_max_event_streams(1);
        let tokens = crate::Tokens::parse(&format!("desk:{TOKEN}")).expect("tokens");
        let router = Router::new(
            Arc::new(service),
            Arc::clone(&readiness),
            Arc::new(Recording::default()),
        )
        .with_access(Some(Arc::new(Access::new(tokens))));
        let limited = router.clone().with_rate_limit(RateLimit::per_second(1));
        let bearer = format!("Bearer {TOKEN}");
        let mut seen = std::collections::BTreeSet::new();
        let mut ask = async |method: Method, uri: &str, authorization: Option<&str>| {
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(value) = authorization {
                req = req.header(header::AUTHORIZATION, value);
            }
            let response = router.handle(req.body(()).expect("request")).await;
            let path = uri.split('?').next().expect("a path");
            let personal = ["/order", "/orders", "/orders/events", "/rejected"].contains(&path)
                || path.starts_with("/rejected/");
            let headers = response.headers();
            let status = response.status().as_u16();
            assert_eq!(
                headers
                    .get(header::X_CONTENT_TYPE_OPTIONS)
                    .map(|v| v.as_bytes()),
                Some(&b"nosniff"[..]),
                "{uri} {status}"
            );
            assert_eq!(
                headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
                personal.then_some(&b"no-store"[..]),
                "{uri} {status}"
            );
            seen.insert((path.to_owned(), status));
            response
        };
        let token = Some(bearer.as_str());
        for uri in [
            "/order?order_uid=b563feb7b2b84b6test",
            "/order?order_uid=a%20b",
            "/order?order_uid=unknown",
            "/order?order_uid=down",
            "/orders?limit=1",
            "/orders?limit=0",
            "/orders?limit=7",
            "/rejected",
            "/rejected?limit=0",
            "/rejected?limit=7",
            "/rejected/1",
            "/rejected/x",
            "/rejected/2",
            "/rejected/3",
            "/healthz",
            "/readyz",
            "/metrics",
            "/",
            "/app.js",
            "/no/such/page",
        ] {
            ask(Method::GET, uri, token).await;
        }
        readiness.set_database(true);
        readiness.set_broker(true);
        readiness.set_cache_warm(true);
        ask(Method::GET, "/readyz", None).await;
        for uri in [
            "/order",
            "/orders",
            "/orders/events",
            "/rejected",
            "/rejected/1",
        ] {
            ask(Method::GET, uri, None).await;
            ask(Method::GET, uri, Some("Bearer two words")).await;
            ask(Method::POST, uri, token).await;
        }
        ask(Method::POST, "/healthz", None).await;
        // The event stream: one open, so the next is refused; a resumed one
        // needs the database.
        let open = ask(Method::GET, "/orders/events", token).await;
        ask(Method::GET, "/orders/events", token).await;
        drop(open);
        for last_event_id in ["x", "5"] {
            let req = Request::builder()
                .uri("/orders/events")
                .header(header::AUTHORIZATION, &bearer)
                .header(&LAST_EVENT_ID, last_event_id)
                .body(())
                .expect("request");
            let response = router.handle(req).await;
            assert_eq!(
                response.headers()[header::X_CONTENT_TYPE_OPTIONS],
                "nosniff"
            );
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
            seen.insert(("/orders/events".to_owned(), response.status().as_u16()));
        }
        // Over the rate (a burst of two): the token's bucket, then an
        // address's.
        let greedy = IpAddr::from([192, 0, 2, 250]);
        for authorization in [Some(bearer.as_str()), None] {
            let mut refused = None;
            for _ in 0..3 {
                let mut req = Request::builder().uri("/order?order_uid=b563feb7b2b84b6test");
                if let Some(value) = authorization {
                    req = req.header(header::AUTHORIZATION, value);
                }
                let req = req.body(()).expect("request");
                refused = Some(limited.handle_from(req, Some(greedy)).await);
            }
            let refused = refused.expect("answered");
            assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(refused.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(refused.headers()[header::CACHE_CONTROL], "no-store");
        }

        let expected: std::collections::BTreeSet<(String, u16)> = [
            ("/order", [200, 400, 404, 503, 401, 405].as_slice()),
            ("/orders", &[200, 400, 503, 401, 405]),
            ("/rejected", &[200, 400, 503, 401, 405]),
            ("/rejected/1", &[200, 400, 401, 405]),
            ("/rejected/x", &[400]),
            ("/rejected/2", &[503]),
            ("/rejected/3", &[404]),
            ("/orders/events", &[200, 400, 503, 401, 405]),
            ("/healthz", &[200, 405]),
            ("/readyz", &[200, 503]),
            ("/metrics", &[200]),
            ("/", &[200]),
            ("/app.js", &[200]),
            ("/no/such/page", &[404]),
        ]
        .iter()
        .flat_map(|(path, statuses)| statuses.iter().map(|s| ((*path).to_owned(), *s)))
        .collect();
        assert_eq!(seen, expected);
    }

    fn rejected_message(id: RejectedId) -> orders_domain::RejectedMessage {
        orders_domain::RejectedMessage {
            summary: orders_domain::RejectedSummary {
                id,
                received_at: time::OffsetDateTime::UNIX_EPOCH,
                reason: RejectReason::InvalidJson,
                detail: "expected value".to_owned(),
                order_uid: None,
                size: 5,
                replayed_at: None,
            },
            subject: "orders".to_owned(),
            stream: "ORDERS".to_owned(),
            stream_sequence: Some(1),
            headers: None,
            payload: orders_domain::Payload(Bytes::from_static(b"<svg>")),
        }
    }

    const TOKEN: &str = "desk-token-0123456789";

    /// A router whose order routes need the token `desk:TOKEN`.
    fn signed_router() -> (Router, Recording) {
        let mut cache = MockOrderCache::new();
        cache
            .expect_get()
            .returning(|_| Some(Bytes::from_static(SAMPLE)));
        let record = Recording::default();
        let tokens = crate::Tokens::parse(&format!("desk:{TOKEN}")).expect("tokens");
        let router = Router::new(
            Arc::new(OrderService::new(
                Ports {
                    cache: Arc::new(cache),
                    ..Ports::mocks()
                },
                1 << 20,
            )),
            Arc::new(Readiness::default()),
            Arc::new(record.clone()),
        )
        .with_access(Some(Arc::new(Access::new(tokens))));
        (router, record)
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
        let (router, record) = signed_router();
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

        for (reported, times) in [
            (Reported::Caller("desk".to_owned()), 1),
            (Reported::Denied("missing"), 2),
            (Reported::Denied("invalid_token"), 1),
            (Reported::Denied("invalid_request"), 1),
        ] {
            assert_eq!(record.count(&reported), times, "{reported:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_token_ends_the_event_streams_it_opened_and_no_other() {
        const AUDIT: &str = "audit-token-0123456789";
        let tokens = |text: &str| crate::Tokens::parse(text).expect("tokens");
        let access = Arc::new(Access::new(tokens(&format!("desk:{TOKEN}\naudit:{AUDIT}"))));
        let router = router(MockOrderReads::new(), MockOrderCache::new())
            .with_access(Some(Arc::clone(&access)));
        let open = async |token: &str| {
            let bearer = format!("Bearer {token}");
            let response = call_as(&router, "/orders/events", Some(&bearer)).await;
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body()
        };
        let mut desk = open(TOKEN).await;
        let mut audit = open(AUDIT).await;

        access.replace(tokens(&format!("audit:{AUDIT}")));

        let within = Duration::from_secs(1);
        let ended = tokio::time::timeout(within, desk.frame()).await;
        assert!(matches!(ended, Ok(None)), "desk's stream ends: {ended:?}");
        let open = tokio::time::timeout(within, audit.frame()).await;
        assert!(open.is_err(), "audit's stream stays open: {open:?}");
    }

    /// `GET uri` from `peer`, with these headers: the status and the body.
    async fn from(
        router: &Router,
        peer: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let mut req = Request::builder().uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let peer: IpAddr = peer.parse().expect("an address");
        let response = router
            .handle_from(req.body(()).expect("request"), Some(peer))
            .await;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    const UID: &str = "/order?order_uid=b563feb7b2b84b6test";

    #[tokio::test]
    async fn a_listed_token_has_a_bucket_of_its_own_whatever_its_address() {
        const AUDIT: &str = "audit-token-0123456789";
        let (router, _) = signed_router();
        let tokens = crate::Tokens::parse(&format!("desk:{TOKEN}\naudit:{AUDIT}")).expect("tokens");
        // A burst of two a client.
        let router = router
            .with_access(Some(Arc::new(Access::new(tokens))))
            .with_rate_limit(RateLimit::per_second(1));
        let desk = format!("Bearer {TOKEN}");
        let audit = format!("Bearer {AUDIT}");
        let desk = [("authorization", desk.as_str())];
        let audit = [("authorization", audit.as_str())];

        for _ in 0..2 {
            assert_eq!(
                from(&router, "192.0.2.1", UID, &desk).await.0,
                StatusCode::OK
            );
        }
        let (status, body) = from(&router, "192.0.2.1", UID, &desk).await;

        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(body.contains("with this token"), "{body}");
        // The desk's bucket is its name's, from any address.
        let (status, _) = from(&router, "198.51.100.9", UID, &desk).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        // Others at the same address are not held back by it.
        for _ in 0..2 {
            assert_eq!(
                from(&router, "192.0.2.1", UID, &audit).await.0,
                StatusCode::OK
            );
        }
        let (status, _) = from(&router, "192.0.2.1", UID, &[]).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the address's bucket is untouched"
        );
    }

    #[tokio::test]
    async fn guesses_count_against_the_address_and_once_over_a_right_guess_is_refused_alike() {
        let (router, _) = signed_router();
        let router = router.with_rate_limit(RateLimit::per_second(1));
        let guess = [("authorization", "Bearer desk-token-guess-000001")];
        let right = format!("Bearer {TOKEN}");
        let right = [("authorization", right.as_str())];

        for _ in 0..2 {
            let (status, _) = from(&router, "192.0.2.66", UID, &guess).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let wrong = from(&router, "192.0.2.66", UID, &guess).await;
        let found = from(&router, "192.0.2.66", UID, &right).await;

        assert_eq!(wrong.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            found, wrong,
            "a right guess over the limit looks like a wrong one"
        );
        let (status, _) = from(&router, "192.0.2.67", UID, &right).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the token is not held back elsewhere"
        );
    }

    #[tokio::test]
    async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
        let mut cache = MockOrderCache::new();
        cache
            .expect_get()
            .returning(|_| Some(Bytes::from_static(SAMPLE)));
        let router = router(MockOrderReads::new(), cache)
            .with_rate_limit(RateLimit::per_second(1))
            .with_trusted_proxies(crate::TrustedProxies::parse("10.0.0.0/8").expect("valid"));
        let one = [("x-forwarded-for", "203.0.113.1")];
        let two = [("x-forwarded-for", "203.0.113.2, 10.0.0.7")];

        for _ in 0..2 {
            assert_eq!(from(&router, "10.0.0.1", UID, &one).await.0, StatusCode::OK);
        }
        let over = from(&router, "10.0.0.1", UID, &one).await.0;
        let other = from(&router, "10.0.0.1", UID, &two).await.0;
        // The same headers from a peer not trusted: one bucket, the peer's.
        for _ in 0..2 {
            assert_eq!(
                from(&router, "192.0.2.1", UID, &one).await.0,
                StatusCode::OK
            );
        }
        let untrusted = from(&router, "192.0.2.1", UID, &two).await.0;

        assert_eq!(over, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(other, StatusCode::OK);
        assert_eq!(untrusted, StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn with_tokens_health_metrics_and_the_page_stay_open() {
        let (router, _) = signed_router();
        for uri in ["/healthz", "/readyz", "/metrics", "/", "/app.js"] {
            let status = call_as(&router, uri, None).await.status();
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri}");
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
        let mut repo = MockOrderReads::new();
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
}
