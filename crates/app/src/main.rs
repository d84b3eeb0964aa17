use std::sync::Arc;

use anyhow::Context as _;
use orders_app::cli::Run;
use orders_app::{App, Cli, Command, Config, cli, telemetry};
use orders_metrics::Metrics;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's allocator: the warm-up allocates on one
/// thread and frees on another, where glibc's arenas contend on a lock
/// and keep freed memory; mimalloc's thread-local heaps do neither.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::run_from_env() {
        Run::Tool(Command::Audit(args)) => cli::audit(&args).await,
        Run::Tool(Command::Erase(args)) => cli::erase(&args).await,
        Run::Serve(config) => serve(*config).await,
    }
}

/// Serves until SIGINT or SIGTERM, then sends the spans still queued.
async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let telemetry = telemetry::init(&config.rust_log, config.log_format, Arc::clone(&metrics))?;
    let served = serve_with(config, metrics).await;
    telemetry.shutdown().await;
    served
}

async fn serve_with(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
        on_signal.cancel();
    });

    let app = match App::build(config, shutdown.clone()).await {
        Ok(app) => app.with_metrics(metrics),
        // A signal during start-up is a clean stop, not a failure.
        Err(_) if shutdown.is_cancelled() => return Ok(()),
        Err(err) => return Err(err),
    };
    app.run_until_stopped().await
}
