//! The `order-service` application: reads the config, builds the adapters,
//! hands them to the core as trait objects, and owns shutdown.
//!
//! [`App::build`] connects everything; [`App::run_until_stopped`] serves until
//! the shutdown token is cancelled. Tests start the real app the same way
//! `main` does, on port 0.

mod access;
mod audit;
pub mod cli;
pub mod config;
mod health;
mod http_report;
mod ingest;
mod limits;
mod purge;
mod retry;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use orders_cache::MemoryCache;
use orders_domain::trace::Consumer;
use orders_domain::{AuditLog, DatabaseProbe, OrderService, Ports, Purger, ReadAudit};
use orders_http::{Access, HttpSettings, RateLimit, Router};
use orders_metrics::{Gauges, Metrics};
use orders_nats::{
    JetStreamSettings, JetStreamSource, NatsError, StreamSettings, UndeliverableSource,
};
use orders_postgres::{PgAuditLog, PgOrderEvents, PgOrderRepository, PgPurger, PoolSettings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cli::{Cli, Command};
pub use config::Config;
pub use health::Health;
pub use ingest::{Feed, IngestSettings, Unsettled, run_ingest};

/// The newest orders loaded before the service says it is ready; the rest
/// of `CACHE_CAPACITY` is loaded in the background meanwhile, and a lookup
/// of an order not yet loaded reads through to the database.
const READY_WITH_NEWEST: usize = 10_000;

/// How often the gauges (cache, event streams, pool, readiness, consumer)
/// are refreshed: a scrape, however often, sees them at most about a
/// second old (plus the broker's answer about the consumer, at most as long).
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// The pool for `DATABASE_READ_URL`: a standby that does not hand out a
/// connection within a second sends the read to the primary rather than
/// keep a lookup waiting the primary pool's five.
/// A quiet event stream's keep-alive comment, at most this far apart (and
/// at most half `HTTP_IDLE_TIMEOUT`, so the idle timeout never cuts it).
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

const READ_POOL: PoolSettings = PoolSettings {
    max_size: 16,
    timeout: Duration::from_secs(1),
};

/// The wired service, bound to its port and connected, not yet running.
pub struct App {
    config: Config,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// `METRICS_ADDR`'s listener, if metrics have one of their own.
    metrics_listener: Option<TcpListener>,
    /// HTTP connections allowed: `MAX_CONNECTIONS` within the open-file limit.
    max_connections: usize,
    service: Arc<OrderService>,
    repo: Arc<PgOrderRepository>,
    /// Announcements of the orders every replica stores.
    events: PgOrderEvents,
    nats: async_nats::Client,
    jetstream: JetStreamSettings,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// The bearer tokens in force and the file they come from, if any.
    access: Option<(Arc<Access>, std::path::PathBuf)>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Binds the HTTP port and builds the adapters without waiting for any
    /// of them: the pool connects on first use and the NATS client in the
    /// background. Fails only on what retrying cannot fix (the port is taken,
    /// a URL is malformed).
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<App> {
        let access = match &config.api_tokens_file.0 {
            Some(path) => Some((
                Arc::new(Access::new(access::read_tokens(path)?)),
                path.clone(),
            )),
            None => None,
        };
        access::check_exposure(config.http_addr, access.is_some(), config.allow_anonymous)?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("HTTP_ADDR: cannot listen on {}", config.http_addr))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        let metrics_listener = match config.metrics_addr.0 {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("METRICS_ADDR: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let open_files = limits::raise_open_files();
        let (max_connections, warning) =
            limits::connections_allowed(config.max_connections, open_files);
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }

        // This replica's name on its connections: the announcements of the
        // orders it stores carry it, so it knows them for its own.
        let replica = replica_name();
        let pool = orders_postgres::connect_pool_as(
            &config.database_url,
            PoolSettings::default(),
            &replica,
        )
        .context("DATABASE_URL: building the connection pool")?;
        let events = PgOrderEvents::new(&config.database_url, &replica)
            .context("DATABASE_URL: building the listener")?;
        let mut repo = PgOrderRepository::new(pool);
        if let Some(url) = config.database_read_url.get() {
            let reads = orders_postgres::connect_read_pool(url, READ_POOL)
                .context("DATABASE_READ_URL: building the connection pool")?;
            repo = repo.with_reads(reads);
        }
        let repo = Arc::new(repo);
        let nats = orders_nats::connect_in_background(&config.nats_url, "order-service")
            .await
            .context("NATS_URL")?;
        let stream = StreamSettings {
            replicas: config.nats_stream_replicas,
            max_age: config.nats_stream_max_age.get(),
            ..StreamSettings::new(&config.nats_subject, &config.nats_stream)
        };
        let jetstream = JetStreamSettings {
            ack_wait: config.nats_ack_wait,
            max_deliver: i64::try_from(config.nats_max_deliver).unwrap_or(i64::MAX),
            ..JetStreamSettings::new(stream, &config.nats_durable)
        };

        let health = Arc::new(Health::new(config.require_sync_standby));
        let cache = Arc::new(MemoryCache::new(config.cache_capacity));
        let service = Arc::new(
            OrderService::new(Ports::of(Arc::clone(&repo), cache), config.max_order_bytes)
                .with_read_through_limit(config.read_through_limit)
                .with_max_event_streams(config.sse_max_clients)
                // Three reports per ack wait: one may be late or lost and the
                // delivery still does not expire.
                .with_progress_every(config.nats_ack_wait / 3)
                .with_consumer(Consumer {
                    system: orders_nats::MESSAGING_SYSTEM,
                    group: Arc::from(config.nats_durable.as_str()),
                })
                .with_rejected_retention(config.rejected_retention),
        );
        Ok(App {
            config,
            listener,
            local_addr,
            metrics_listener,
            max_connections,
            service,
            repo,
            events,
            nats,
            jetstream,
            health,
            metrics: Arc::new(Metrics::new()),
            access,
            shutdown,
        })
    }

    /// Records into `metrics` (the ones the trace export counts its
    /// losses in) rather than a set of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Where the HTTP server listens (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` has a listener of its own (`METRICS_ADDR`), if it has.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves HTTP at once (`/healthz` answers, `/readyz` says what is not
    /// ready yet), then, retrying each step with backoff until it succeeds or
    /// shutdown: creates the database if missing, migrates it, opens the
    /// JetStream stream and consumer, warms the cache, and starts ingesting.
    ///
    /// Serves until the shutdown token is cancelled, then drains: stops
    /// pulling, finishes and acks the message in hand, lets HTTP requests
    /// finish, flushes NATS and closes the pool, all within
    /// `SHUTDOWN_TIMEOUT`. A task that dies early cancels the rest, and the
    /// error is returned.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let App {
            config,
            listener,
            local_addr,
            metrics_listener,
            max_connections,
            service,
            repo,
            mut events,
            nats,
            jetstream,
            health,
            metrics,
            access,
            shutdown,
        } = self;
        tracing::info!(%local_addr, "serving HTTP");
        let tasks = TaskTracker::new();
        let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let spawn_critical =
            |name: &'static str, task: tokio::task::JoinHandle<anyhow::Result<()>>| {
                let shutdown = shutdown.clone();
                let failure = Arc::clone(&failure);
                tasks.spawn(async move {
                    let result = task.await;
                    if !shutdown.is_cancelled() {
                        let why = match result {
                            Ok(Ok(())) => format!("{name} stopped unexpectedly"),
                            Ok(Err(err)) => format!("{name} failed: {err:#}"),
                            Err(err) => format!("{name} failed: {err}"),
                        };
                        tracing::error!("{why}; shutting down");
                        if let Ok(mut slot) = failure.lock() {
                            slot.get_or_insert(why);
                        }
                        shutdown.cancel();
                    }
                });
            };

        let http_settings = HttpSettings {
            max_connections,
            write_timeout: config.http_write_timeout,
            idle_timeout: config.http_idle_timeout,
            shutdown_timeout: config.shutdown_timeout,
            ..HttpSettings::default()
        };
        // The read audit: a queue the router hands reads to, and its writer.
        let audit = if config.audit_reads {
            let (queue, reads) = audit::audit_queue(config.audit_queue, Arc::clone(&metrics));
            let log = Arc::new(PgAuditLog::new(repo.pool().clone())) as Arc<dyn AuditLog>;
            let writer =
                audit::write_reads(log, reads, Arc::clone(&metrics), shutdown.child_token());
            spawn_critical(
                "read audit writer",
                tokio::spawn(async move {
                    writer.await;
                    Ok(())
                }),
            );
            Some(Arc::new(queue) as Arc<dyn ReadAudit>)
        } else {
            None
        };
        let targets = purge::purge_targets(config.rejected_retention, config.audit_retention);
        if !targets.is_empty() {
            let purger = Arc::new(PgPurger::new(repo.pool().clone())) as Arc<dyn Purger>;
            let purging = purge::purge_periodically(
                purger,
                targets,
                config.purge_every,
                Arc::clone(&metrics),
                shutdown.child_token(),
            );
            spawn_critical(
                "purge",
                tokio::spawn(async move {
                    purging.await;
                    Ok(())
                }),
            );
        }
        let router = Router::new(
            Arc::clone(&service),
            Arc::clone(health.readiness()),
            Arc::new(http_report::HttpMetrics(Arc::clone(&metrics))),
        )
        .with_audit(audit)
        .with_rate_limit(RateLimit::per_second(config.rate_limit))
        .with_trusted_proxies(config.trusted_proxies.clone())
        .with_access(access.as_ref().map(|(access, _)| Arc::clone(access)))
        .with_keep_alive(SSE_KEEP_ALIVE.min(config.http_idle_timeout / 2));
        if let Some((access, path)) = access {
            tasks.spawn(access::reload_on_hangup(
                access,
                path,
                shutdown.child_token(),
            ));
        }
        if let Some(metrics_listener) = metrics_listener {
            let only_metrics = router.metrics_only();
            let settings = HttpSettings {
                max_connections: 64,
                ..http_settings
            };
            let shutdown = shutdown.child_token();
            spawn_critical(
                "metrics server",
                tokio::spawn(async move {
                    orders_http::serve(metrics_listener, only_metrics, settings, shutdown).await;
                    Ok(())
                }),
            );
        }
        let router = match config.metrics_addr.0 {
            Some(_) => router.without_metrics(),
            None => router,
        };
        spawn_critical("HTTP server", {
            let shutdown = shutdown.child_token();
            tokio::spawn(async move {
                orders_http::serve(listener, router, http_settings, shutdown).await;
                Ok(())
            })
        });
        spawn_critical("stored-order announcements", {
            let service = Arc::clone(&service);
            let shutdown = shutdown.child_token();
            tokio::spawn(async move {
                tokio::select! {
                    () = service.follow(&mut events) => {}
                    () = shutdown.cancelled() => {}
                }
                Ok(())
            })
        });
        spawn_critical("health checks", {
            let health = Arc::clone(&health);
            let repo = Arc::clone(&repo) as Arc<dyn DatabaseProbe>;
            let nats = nats.clone();
            let shutdown = shutdown.child_token();
            tokio::spawn(async move {
                let connected = || {
                    matches!(
                        nats.connection_state(),
                        async_nats::connection::State::Connected
                    )
                };
                health.watch(repo, connected, shutdown).await;
                Ok(())
            })
        });
        spawn_critical("gauges", {
            let gauges = refresh_gauges(
                Arc::clone(&service),
                Arc::clone(&repo),
                Arc::clone(&health),
                nats.clone(),
                jetstream.clone(),
                Arc::clone(&metrics),
                shutdown.child_token(),
            );
            tokio::spawn(async move {
                gauges.await;
                Ok(())
            })
        });
        spawn_critical(
            "ingest",
            tokio::spawn(prepare_then_ingest(
                Arc::clone(&service),
                config.clone(),
                nats.clone(),
                jetstream.clone(),
                Arc::clone(&health),
                Arc::clone(&metrics),
                shutdown.child_token(),
            )),
        );
        tasks.close();

        shutdown.cancelled().await;
        tracing::info!(timeout = ?config.shutdown_timeout, "shutting down");
        let drained = tokio::time::timeout(config.shutdown_timeout, tasks.wait()).await;
        if drained.is_err() {
            tracing::warn!(
                "tasks still running at SHUTDOWN_TIMEOUT; exiting anyway (unacked messages are redelivered)"
            );
        }
        if let Err(err) = nats.flush().await {
            tracing::warn!(error = %err, "flushing NATS failed");
        }
        drop(nats);
        repo.close();
        tracing::info!("stopped");
        let failure = failure.lock().ok().and_then(|mut slot| slot.take());
        match failure {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }
}

/// A name for this replica, unique among those sharing the database: the
/// process id and the moment it started.
fn replica_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("order-service-{}-{:x}", std::process::id(), nanos)
}

/// Everything that needs PostgreSQL and NATS to answer, in order, each step
/// retried with backoff; then the two ingest loops: the orders, and the
/// messages the broker gave up on. Returns early on shutdown, or with an
/// error that retrying cannot fix (a stream that does not capture the
/// subject).
async fn prepare_then_ingest(
    service: Arc<OrderService>,
    config: Config,
    nats: async_nats::Client,
    jetstream: JetStreamSettings,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let url = config.database_url.as_str();
    let capacity = config.cache_capacity;
    let not_captured = |e: &NatsError| matches!(e, NatsError::NotCaptured { .. });
    let prepared = async {
        retry::until_ok("create the database", &shutdown, || {
            orders_postgres::ensure_database(url)
        })
        .await?;
        retry::until_ok("migrate the database", &shutdown, || {
            orders_postgres::migrate(url)
        })
        .await?;
        let source = retry::until_ok_or_fatal(
            "open the JetStream consumer",
            &shutdown,
            not_captured,
            || JetStreamSource::open(nats.clone(), jetstream.clone()),
        )
        .await?;
        let undeliverable = retry::until_ok(
            "open the consumer of max-deliveries advisories",
            &shutdown,
            || UndeliverableSource::open(nats.clone(), &jetstream),
        )
        .await?;
        // Ready once the newest orders are in memory: a lookup of any other
        // reads through to the database until the rest arrive.
        let started = std::time::Instant::now();
        let newest = capacity.min(READY_WITH_NEWEST);
        let loaded =
            retry::until_ok("warm the cache", &shutdown, || service.warm_up(newest)).await?;
        tracing::info!(loaded, elapsed = ?started.elapsed(), "the newest orders are in memory: ready");
        health.readiness().set_cache_warm(true);
        anyhow::Ok((source, undeliverable))
    };
    let (source, undeliverable) = match prepared.await {
        Ok(sources) => sources,
        // Stopped while preparing: not a failure.
        Err(_) if shutdown.is_cancelled() => return Ok(()),
        Err(err) => return Err(err),
    };
    let (warming, stop_warming) = (Arc::clone(&service), shutdown.clone());
    let rest = async move {
        let (service, shutdown) = (warming, stop_warming);
        if capacity <= READY_WITH_NEWEST {
            return;
        }
        let started = std::time::Instant::now();
        let warmed = retry::until_ok("warm the rest of the cache", &shutdown, || {
            service.warm_up(capacity)
        })
        .await;
        if let Ok(loaded) = warmed {
            tracing::info!(loaded, elapsed = ?started.elapsed(), "cache warm");
        }
    };
    let orders = run_ingest(
        Feed::Orders,
        Arc::clone(&service),
        Box::new(source),
        Arc::clone(&health),
        Arc::clone(&metrics),
        IngestSettings {
            batch_size: config.ingest_batch_size,
            linger: config.ingest_linger,
            in_flight: config.ingest_in_flight,
        },
        shutdown.clone(),
    );
    let given_up = run_ingest(
        Feed::Undeliverable,
        service,
        Box::new(undeliverable),
        health,
        metrics,
        IngestSettings {
            batch_size: 100,
            linger: Duration::ZERO,
            in_flight: 1,
        },
        shutdown,
    );
    tokio::join!(orders, given_up, rest);
    Ok(())
}

/// Refreshes the gauges of `/metrics`, about every [`GAUGE_INTERVAL`]: the
/// cache, the open event streams, the pool, readiness and each of its
/// dependencies (as the health watcher last saw them), the consumer, the
/// oldest unsettled message. The one place they are set: reading
/// `/metrics` sets nothing.
async fn refresh_gauges(
    service: Arc<OrderService>,
    repo: Arc<PgOrderRepository>,
    health: Arc<Health>,
    nats: async_nats::Client,
    jetstream: JetStreamSettings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let js = async_nats::jetstream::new(nats.clone());
    loop {
        let connected = matches!(
            nats.connection_state(),
            async_nats::connection::State::Connected
        );
        let consumer = if connected {
            tokio::time::timeout(GAUGE_INTERVAL, consumer_info(&js, &jetstream))
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let pool = repo.pool().status();
        metrics.set_gauges(Gauges {
            cache_entries: service.cached_orders(),
            event_streams: service.event_streams(),
            pool_size: pool.size,
            pool_available: pool.available,
            pool_waiting: pool.waiting,
            readiness: health.readiness().report(),
            consumer_pending: consumer.map(|c| c.num_pending),
            consumer_ack_pending: consumer.map(|c| c.num_ack_pending as u64),
        });
        metrics.set_oldest_unsettled(health.unsettled().oldest_age());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(GAUGE_INTERVAL) => {}
        }
    }
}

/// The consumer's pending counts, if the broker answers.
async fn consumer_info(
    js: &async_nats::jetstream::Context,
    settings: &JetStreamSettings,
) -> Option<ConsumerCounts> {
    let stream = js.get_stream_no_info(&settings.stream.name).await.ok()?;
    let info = stream.consumer_info(&settings.durable).await.ok()?;
    Some(ConsumerCounts {
        num_pending: info.num_pending,
        num_ack_pending: info.num_ack_pending,
    })
}

#[derive(Debug, Clone, Copy)]
struct ConsumerCounts {
    num_pending: u64,
    num_ack_pending: usize,
}
