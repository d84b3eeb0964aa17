use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

/// Where orders are published: what publishers and consumers share.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Subject the orders are published on.
    pub subject: String,
    /// Stream that captures `subject`; created if missing.
    pub name: String,
    /// Replicas of the stream when it is created here (3 on a cluster).
    pub replicas: usize,
    /// How long the stream keeps a message when it is created here
    /// (`NATS_STREAM_MAX_AGE`); `None`: until deleted by hand. Orders
    /// carry personal data, and the stream keeps every message, acked or
    /// not, until then.
    pub max_age: Option<Duration>,
}

/// How long a stream created here keeps its messages, unless told
/// otherwise: long enough to re-ingest after restoring last night's
/// backup, or after a week-end's outage of the database (docs/operations.md).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);

impl StreamSettings {
    /// One replica, as on a single server, keeping messages for
    /// [`DEFAULT_MAX_AGE`].
    pub fn new(subject: &str, name: &str) -> Self {
        Self {
            subject: subject.to_owned(),
            name: name.to_owned(),
            replicas: 1,
            max_age: Some(DEFAULT_MAX_AGE),
        }
    }
}

/// Where orders are published and how the service consumes them.
#[derive(Debug, Clone)]
pub struct JetStreamSettings {
    pub stream: StreamSettings,
    /// Durable consumer name, shared by every replica so JetStream spreads
    /// the messages across them.
    pub durable: String,
    /// How long the broker waits for an ack before it first redelivers.
    pub ack_wait: Duration,
    /// Most deliveries of one message; then the broker gives up on it and
    /// says so in an advisory (`MAX_DELIVERIES`), which the service turns
    /// into a `rejected_messages` row. `-1`: no limit.
    pub max_deliver: i64,
    /// Most messages handed out and not yet acked, across all replicas.
    pub max_ack_pending: i64,
}

impl JetStreamSettings {
    /// The durable consumer `durable` on `stream`.
    pub fn new(stream: StreamSettings, durable: &str) -> Self {
        Self {
            stream,
            durable: durable.to_owned(),
            // Long enough for a commit under load, short enough that a
            // crashed replica's messages move on soon.
            ack_wait: Duration::from_secs(30),
            // A message no replica ever settles (one that breaks the
            // client's parser, say) ends after ten tries, about half an
            // hour with the backoff below, instead of coming back forever.
            max_deliver: 10,
            // Bounds the work one slow replica can sit on.
            max_ack_pending: 10_000,
        }
    }
}

/// Talking to NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {0}")]
    Connect(String, #[source] async_nats::ConnectError),
    #[error("cannot create or read stream {0:?}")]
    Stream(String, #[source] async_nats::Error),
    /// The stream exists but does not capture the subject: a configuration
    /// error that retrying cannot fix.
    #[error(
        "stream {stream:?} captures {captures:?}, not {subject:?}: set NATS_STREAM to a stream that captures NATS_SUBJECT, or NATS_SUBJECT to a subject it captures"
    )]
    NotCaptured {
        stream: String,
        subject: String,
        captures: Vec<String>,
    },
    #[error("cannot create or update consumer {0:?}")]
    Consumer(String, #[source] async_nats::Error),
}

/// Checks a comma-separated list of server addresses without connecting.
pub fn check_urls(urls: &str) -> Result<(), String> {
    for url in urls.split(',').map(str::trim) {
        url.parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("invalid NATS server address {url:?}: {e}"))?;
    }
    Ok(())
}

/// Connects to one or more servers (comma-separated, `nats://host:port`);
/// the client fails over between them and reconnects by itself. Fails if no
/// server answers now.
pub async fn connect(urls: &str, name: &str) -> Result<async_nats::Client, NatsError> {
    options(name)
        .connect(servers(urls))
        .await
        .map_err(|e| NatsError::Connect(urls.to_owned(), e))
}

/// A client that connects in the background, retrying until a server
/// answers: for a service that must start (and answer `/healthz`) before
/// the broker is up. Fails only on a malformed address.
pub async fn connect_in_background(
    urls: &str,
    name: &str,
) -> Result<async_nats::Client, NatsError> {
    options(name)
        .retry_on_initial_connect()
        .connect(servers(urls))
        .await
        .map_err(|e| NatsError::Connect(urls.to_owned(), e))
}

fn servers(urls: &str) -> Vec<&str> {
    urls.split(',').map(str::trim).collect()
}

fn options(name: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                other => tracing::info!(event = %other, "NATS event"),
            }
        })
}

/// The stream, created if missing: the one place that says how (the
/// service and `order-publisher` both create it here). An existing stream
/// is used as it is, its limits included ([`age_warning`] says when it
/// keeps messages forever); a stream that does not capture our subject is
/// an error worth knowing.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Stream, NatsError> {
    let config = stream::Config {
        name: settings.name.clone(),
        subjects: vec![settings.subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        // The window in which a repeated Nats-Msg-Id is dropped by the broker.
        duplicate_window: Duration::from_secs(120),
        // Zero is JetStream's "no limit". Limits retention (the default)
        // keeps a message until it is this old, acked or not.
        max_age: settings.max_age.unwrap_or(Duration::ZERO),
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| NatsError::Stream(settings.name.clone(), e.into()))?;
    let info = stream
        .info()
        .await
        .map_err(|e| NatsError::Stream(settings.name.clone(), e.into()))?;
    if !info
        .config
        .subjects
        .iter()
        .any(|s| covers(s, &settings.subject))
    {
        return Err(NatsError::NotCaptured {
            stream: settings.name.clone(),
            subject: settings.subject.clone(),
            captures: info.config.subjects.clone(),
        });
    }
    Ok(stream)
}

/// What to warn about a stream [`ensure_stream`] found, if anything: it
/// keeps messages forever while `settings` asks for an age limit (a
/// stream made before `NATS_STREAM_MAX_AGE`, or by hand). The service does
/// not change a stream it did not create; the warning says how to.
pub fn age_warning(found: &stream::Config, settings: &StreamSettings) -> Option<String> {
    let wanted = settings.max_age?;
    if !found.max_age.is_zero() {
        return None;
    }
    let shown = orders_domain::Retention::limit(wanted)
        .map_or_else(|_| format!("{wanted:?}"), |r| r.to_string());
    Some(format!(
        "stream {:?} keeps every message forever (no max age), personal data included; \
         NATS_STREAM_MAX_AGE ({}) applies only to a stream this service creates: \
         set it with `nats stream edit {} --max-age {}s`",
        found.name,
        shown,
        found.name,
        wanted.as_secs()
    ))
}

/// Whether every subject `subject` matches (it may hold `*` and `>`
/// wildcards itself) is captured by the stream subject `pattern`.
pub fn covers(pattern: &str, subject: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut sub = subject.split('.');
    loop {
        match (pat.next(), sub.next()) {
            (Some(">"), Some(_)) => return true,
            // `*` takes one token, not the any-number a `>` stands for.
            (Some("*"), Some(s)) if s != ">" => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The redelivery delays after an unacked delivery: the ack wait, then
/// doubling, at most five minutes (or the ack wait, if longer); one fewer
/// than the deliveries, as the server requires.
fn backoff(ack_wait: Duration, max_deliver: i64) -> Vec<Duration> {
    let Ok(deliveries) = usize::try_from(max_deliver) else {
        return Vec::new();
    };
    let most = ack_wait.max(Duration::from_secs(300));
    let mut delay = ack_wait;
    (1..deliveries)
        .map(|_| {
            let this = delay;
            delay = (delay * 2).min(most);
            this
        })
        .collect()
}

/// The durable pull consumer, created or updated to our settings (so a
/// changed config applies on restart).
pub async fn ensure_consumer(
    stream: &stream::Stream,
    settings: &JetStreamSettings,
) -> Result<consumer::PullConsumer, NatsError> {
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(settings.durable.clone()),
            filter_subject: settings.stream.subject.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            // Finite, so every message ends (see `max_deliver`). A
            // transient fault rarely costs a delivery: the ingest loop stops
            // pulling while the database is down, and its naks choose their
            // own delay; the backoff spaces the redeliveries of messages
            // nobody settled.
            max_deliver: settings.max_deliver,
            backoff: backoff(settings.ack_wait, settings.max_deliver),
            max_ack_pending: settings.max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::Consumer(settings.durable.clone(), e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_capture_as_nats_does() {
        assert!(covers("orders", "orders"));
        assert!(covers("orders.*", "orders.eu"));
        assert!(covers(">", "orders"));
        assert!(covers("orders.>", "orders.eu.x"));
        assert!(covers("orders.>", "orders.*"));
        assert!(covers("orders.>", "orders.>"));
        assert!(covers("orders.*", "orders.*"));
        assert!(!covers("orders.*", "orders.>"));
        assert!(!covers("orders", "orders.eu"));
        assert!(!covers("orders.*", "orders"));
        assert!(!covers("orders.eu.*", "orders.*"));
        assert!(!covers("other", "orders"));
    }

    #[test]
    fn backoff_doubles_to_five_minutes_with_one_delay_fewer_than_deliveries() {
        let secs = |list: Vec<Duration>| list.iter().map(Duration::as_secs).collect::<Vec<_>>();
        assert_eq!(
            secs(backoff(Duration::from_secs(30), 10)),
            [30, 60, 120, 240, 300, 300, 300, 300, 300]
        );
        assert_eq!(secs(backoff(Duration::from_secs(2), 3)), [2, 4]);
        assert!(backoff(Duration::from_secs(30), -1).is_empty());
    }

    #[test]
    fn only_a_stream_without_an_age_limit_is_warned_about_and_only_when_one_is_wanted() {
        let week = StreamSettings::new("orders", "ORDERS");
        let forever = StreamSettings {
            max_age: None,
            ..week.clone()
        };
        let found = |max_age: Duration| stream::Config {
            name: "ORDERS".into(),
            max_age,
            ..Default::default()
        };

        let warning = age_warning(&found(Duration::ZERO), &week).expect("a warning");
        assert!(
            warning.contains("\"ORDERS\" keeps every message forever"),
            "{warning}"
        );
        assert!(warning.contains("NATS_STREAM_MAX_AGE (7d)"), "{warning}");
        assert!(warning.contains("--max-age 604800s"), "{warning}");
        assert_eq!(age_warning(&found(DEFAULT_MAX_AGE), &week), None);
        assert_eq!(age_warning(&found(Duration::from_secs(60)), &week), None);
        assert_eq!(age_warning(&found(Duration::ZERO), &forever), None);
    }
}
