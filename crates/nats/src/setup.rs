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
}

impl StreamSettings {
    /// One replica, as on a single server.
    pub fn new(subject: &str, name: &str) -> Self {
        Self {
            subject: subject.to_owned(),
            name: name.to_owned(),
            replicas: 1,
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
    /// How long the broker waits for an ack before it redelivers.
    pub ack_wait: Duration,
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

/// The stream, created if missing. An existing stream is used as it is; a
/// stream that does not capture our subject is an error worth knowing.
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
        .any(|s| subject_matches(s, &settings.subject))
    {
        return Err(NatsError::Stream(
            settings.name.clone(),
            format!(
                "the stream captures {:?}, not {:?}",
                info.config.subjects, settings.subject
            )
            .into(),
        ));
    }
    Ok(stream)
}

/// Whether a stream subject (possibly with `*` / `>` wildcards) captures `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut sub = subject.split('.');
    loop {
        match (pat.next(), sub.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
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
            // Unlimited: a transient fault must never use up a message's
            // deliveries; only a message known to be bad is terminated. The
            // redelivery delay is ours to choose (nak with a delay), since a
            // server-side backoff list needs a finite max_deliver.
            max_deliver: -1,
            max_ack_pending: settings.max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::Consumer(settings.durable.clone(), e.into()))
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards_capture_as_nats_does() {
        assert!(subject_matches("orders", "orders"));
        assert!(subject_matches("orders.*", "orders.eu"));
        assert!(subject_matches(">", "orders"));
        assert!(subject_matches("orders.>", "orders.eu.x"));
        assert!(!subject_matches("orders", "orders.eu"));
        assert!(!subject_matches("orders.*", "orders"));
        assert!(!subject_matches("other", "orders"));
    }
}
