//! A real OTLP/HTTP receiver in the test's process: a small hyper server
//! that takes `POST /v1/traces`, decodes the protobuf with the protocol's
//! own types (`opentelemetry-proto`) and keeps the spans, for tests (and
//! the bench) to look at. It can also play a collector in trouble:
//! answering 503, or never answering at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the receiver answers an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200, the spans kept.
    Accept,
    /// 503 Service Unavailable, the spans not kept (a collector
    /// overloaded or restarting).
    Refuse,
    /// Never: the request is held open (a collector that hangs).
    Hang,
}

/// One span as the receiver got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: u128,
    pub span_id: u64,
    /// `None` for a root span.
    pub parent_span_id: Option<u64>,
    /// `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER` or `INTERNAL`.
    pub kind: &'static str,
    /// Every attribute, its value as text.
    pub attributes: BTreeMap<String, String>,
    /// The span events' names, in order.
    pub events: Vec<String>,
    /// The spans it links to: (trace id, span id).
    pub links: Vec<(u128, u64)>,
    /// Its resource's `service.name`.
    pub service: String,
    /// Its resource's attributes.
    pub resource: BTreeMap<String, String>,
}

impl ReceivedSpan {
    /// The attribute's value, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Kept {
    spans: Vec<ReceivedSpan>,
    /// Whether spans are kept, or only counted (the bench's hundreds of
    /// thousands).
    counting_only: bool,
    /// Spans received and decoded, kept or not.
    count: usize,
    /// Export requests received, kept or not.
    requests: usize,
}

/// The receiver; it stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    kept: Arc<Mutex<Kept>>,
    answer: watch::Sender<Answer>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Listens on a free loopback port, answering [`Answer::Accept`].
    pub async fn start() -> Self {
        Self::start_keeping(true).await
    }

    /// As [`OtlpReceiver::start`], decoding every export but keeping only
    /// the count of its spans (for loads too large to keep).
    pub async fn counting() -> Self {
        Self::start_keeping(false).await
    }

    async fn start_keeping(keep: bool) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a loopback port for the OTLP receiver");
        let addr = listener.local_addr().expect("its address");
        let kept = Arc::new(Mutex::new(Kept {
            counting_only: !keep,
            ..Kept::default()
        }));
        let (answer, answers) = watch::channel(Answer::Accept);
        let server = tokio::spawn(serve(listener, Arc::clone(&kept), answers));
        Self {
            addr,
            kept,
            answer,
            server,
        }
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should be (the exporter adds
    /// `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers exports from now on so; requests held by [`Answer::Hang`]
    /// are answered as the new answer says.
    pub fn answer(&self, answer: Answer) {
        self.answer.send_replace(answer);
    }

    /// The spans kept so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.kept.lock().expect("spans").spans.clone()
    }

    /// Spans received so far, kept or only counted.
    pub fn span_count(&self) -> usize {
        self.kept.lock().expect("spans").count
    }

    /// Export requests received so far, kept or not.
    pub fn requests(&self) -> usize {
        self.kept.lock().expect("spans").requests
    }

    /// Waits until the spans kept satisfy `done` (checking as they come,
    /// at most `timeout`), and returns them; fails the test naming `what`
    /// otherwise.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
                panic!("{what}: not within {timeout:?}; received {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, kept: Arc<Mutex<Kept>>, answers: watch::Receiver<Answer>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let kept = Arc::clone(&kept);
        let answers = answers.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                handle(req, Arc::clone(&kept), answers.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    kept: Arc<Mutex<Kept>>,
    mut answers: watch::Receiver<Answer>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path_ok = req.uri().path() == "/v1/traces";
    let body = req.into_body().collect().await?.to_bytes();
    kept.lock().expect("spans").requests += 1;
    // A hanging collector holds the request until told otherwise.
    let answer = answers
        .wait_for(|a| *a != Answer::Hang)
        .await
        .map_or(Answer::Refuse, |a| *a);
    let status = match (path_ok, answer) {
        (false, _) => StatusCode::NOT_FOUND,
        (true, Answer::Refuse) => StatusCode::SERVICE_UNAVAILABLE,
        (true, _) => match ExportTraceServiceRequest::decode(body) {
            Ok(request) => {
                let spans = spans_of(request);
                let mut kept = kept.lock().expect("spans");
                kept.count += spans.len();
                if !kept.counting_only {
                    kept.spans.extend(spans);
                }
                StatusCode::OK
            }
            Err(_) => StatusCode::BAD_REQUEST,
        },
    };
    let body = if status == StatusCode::OK {
        Bytes::from(ExportTraceServiceResponse::default().encode_to_vec())
    } else {
        Bytes::new()
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(response)
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = attributes(
            resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default(),
        );
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    kind: kind(span.kind),
                    trace_id: id128(&span.trace_id),
                    span_id: id64(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| id64(&span.parent_span_id)),
                    attributes: attributes(span.attributes),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (id128(&l.trace_id), id64(&l.span_id)))
                        .collect(),
                    name: span.name,
                    service: service.clone(),
                    resource: resource.clone(),
                });
            }
        }
    }
    spans
}

fn kind(kind: i32) -> &'static str {
    match kind {
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    }
}

fn id128(bytes: &[u8]) -> u128 {
    bytes.try_into().map(u128::from_be_bytes).unwrap_or(0)
}

fn id64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn attributes(pairs: Vec<KeyValue>) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|kv| (kv.key, text(kv.value)))
        .collect()
}

fn text(value: Option<AnyValue>) -> String {
    match value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
