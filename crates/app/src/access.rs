//! Who may read orders: the bearer tokens of `API_TOKENS_FILE`, re-read on
//! SIGHUP, and the rule that a listener other than loopback needs them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use orders_http::{Access, Tokens};
use tokio_util::sync::CancellationToken;

/// Reads and checks the tokens file; its errors name the file and the line.
pub fn read_tokens(path: &Path) -> anyhow::Result<Tokens> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("API_TOKENS_FILE: cannot read {}", path.display()))?;
    Tokens::parse(&text).with_context(|| format!("API_TOKENS_FILE {}", path.display()))
}

/// Refuses to serve orders to anyone who reaches a listener other than
/// loopback, unless tokens guard them or the operator said so.
pub fn check_exposure(
    http_addr: SocketAddr,
    has_tokens: bool,
    allow_anonymous: bool,
) -> anyhow::Result<()> {
    if has_tokens || allow_anonymous || http_addr.ip().is_loopback() {
        return Ok(());
    }
    anyhow::bail!(
        "HTTP_ADDR {http_addr} is reachable from other machines, and without tokens anyone \
         who reaches it reads every order's name, phone, email and address. Set \
         API_TOKENS_FILE to a file of callers, one name:token a line (e.g. \
         `echo \"desk:$(openssl rand -hex 32)\" > tokens`), or ALLOW_ANONYMOUS=true if only \
         trusted clients can reach this address."
    )
}

/// Re-reads the tokens file on every SIGHUP until shutdown. A file that no
/// longer reads or parses leaves the tokens in force as they were, with an
/// error in the log: a typo must not lock everyone out, nor let everyone in.
pub async fn reload_on_hangup(access: Arc<Access>, path: PathBuf, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP: API_TOKENS_FILE is read once");
            return;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = hangups.recv() => {
                if received.is_none() {
                    return;
                }
            }
        }
        match read_tokens(&path) {
            Ok(tokens) => {
                tracing::info!(callers = tokens.len(), "SIGHUP: API_TOKENS_FILE re-read");
                access.replace(tokens);
            }
            Err(err) => {
                tracing::error!("SIGHUP: {err:#}; the tokens in force stay as they were");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_go_without_tokens_unless_allowed() {
        let public: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let err = check_exposure(public, false, false).expect_err("refused");
        let message = err.to_string();
        assert!(
            message.contains("HTTP_ADDR 0.0.0.0:8080")
                && message.contains("API_TOKENS_FILE")
                && message.contains("ALLOW_ANONYMOUS=true"),
            "{message}"
        );
        assert!(check_exposure(public, true, false).is_ok());
        assert!(check_exposure(public, false, true).is_ok());
        for local in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:80"] {
            let addr: SocketAddr = local.parse().expect("addr");
            assert!(check_exposure(addr, false, false).is_ok(), "{local}");
        }
        let v6: SocketAddr = "[::]:8080".parse().expect("addr");
        assert!(check_exposure(v6, false, false).is_err());
    }

    #[test]
    fn an_unreadable_or_bad_file_is_named_in_the_error() {
        let missing = Path::new("/nonexistent/tokens");
        let err = format!("{:#}", read_tokens(missing).expect_err("missing"));
        assert!(
            err.contains("API_TOKENS_FILE: cannot read /nonexistent/tokens"),
            "{err}"
        );

        let dir = std::env::temp_dir().join(format!("tokens-{}", std::process::id()));
        std::fs::write(&dir, "desk:short\n").expect("write");
        let err = format!("{:#}", read_tokens(&dir).expect_err("bad"));
        std::fs::remove_file(&dir).ok();
        assert!(err.contains("line 1: a token must be 16"), "{err}");
    }
}
