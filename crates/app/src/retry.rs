//! Retry with backoff for the connections made at start.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Calls `attempt` until it succeeds, pausing 200 ms, doubling, at most 5 s
/// between tries and logging each failure. Fails only when `shutdown` is
/// cancelled.
pub(crate) async fn until_ok<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    until_ok_or_fatal(what, shutdown, |_| false, attempt).await
}

/// [`until_ok`], except that an error `fatal` says retrying cannot fix (a
/// configuration error) fails at once.
pub(crate) async fn until_ok_or_fatal<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    fatal: impl Fn(&E) -> bool,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut pause = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            result = attempt() => result,
            () = shutdown.cancelled() => anyhow::bail!("stopped while trying to {what}"),
        };
        match result {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(failures, "managed to {what}");
                }
                return Ok(value);
            }
            Err(err) if fatal(&err) => {
                return Err(anyhow::Error::new(err).context(format!("cannot {what}")));
            }
            Err(err) => {
                failures += 1;
                let err = anyhow::Error::new(err);
                tracing::warn!(error = format!("{err:#}"), retry_in = ?pause, "cannot {what}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => anyhow::bail!("stopped while trying to {what}"),
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
