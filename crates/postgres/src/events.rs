//! [`OrderEvents`] over PostgreSQL `LISTEN`: the trigger of
//! `migrations/V4__order_events.sql` announces each committed batch on
//! the channel `orders_stored`, and each batch of an erasure announces its
//! uids on `orders_erased` (`erasure.rs`), to every session that listens,
//! and only if the batch commits.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use orders_domain::{EventId, Notice, OrderEvents, OrderUid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Config, NoTls, Notification};

use crate::connect::{ConnectError, primary_config};

/// The channel the trigger notifies.
const CHANNEL: &str = "orders_stored";

/// The channel erasures notify.
pub(crate) const ERASED_CHANNEL: &str = "orders_erased";

/// Announcements read off the socket ahead of the core. When the core is
/// behind, the rest wait in PostgreSQL's notification queue.
const NOTICES_AHEAD: usize = 256;

/// The first wait before connecting again, doubled after each failure
/// up to [`MOST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// TCP keepalives on the listening connection: it only reads, so without
/// them a silently vanished server would leave it waiting forever.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

/// Listens for stored orders on a connection of its own (not from the
/// pool: a pooled connection would be handed to others, and `LISTEN` is
/// per session), made to the primary, where the commits happen. After a
/// lost connection it connects again with backoff and says so
/// ([`Notice::Reconnected`]).
pub struct PgOrderEvents {
    config: Config,
    /// This replica's `application_name`: announcements naming it are its
    /// own orders.
    replica: String,
    listening: Option<Listening>,
    listened_before: bool,
    backoff: Duration,
}

impl std::fmt::Debug for PgOrderEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOrderEvents")
            .field("replica", &self.replica)
            .field("listening", &self.listening.is_some())
            .finish()
    }
}

/// One listening connection.
struct Listening {
    /// Dropping the client closes the connection.
    _client: tokio_postgres::Client,
    notifications: mpsc::Receiver<Notification>,
    /// Reads the socket and forwards the notifications.
    reader: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl PgOrderEvents {
    /// Listens on the primary at `url` for the announcements of every
    /// replica; those made by connections named `replica` (see
    /// [`connect_pool_as`](crate::connect_pool_as)) are this replica's own.
    /// Does not connect yet: the first [`next`](OrderEvents::next) does.
    pub fn new(url: &str, replica: &str) -> Result<Self, ConnectError> {
        let mut config = primary_config(url)?;
        config
            .application_name(format!("{replica} listener"))
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE);
        Ok(Self {
            config,
            replica: replica.to_owned(),
            listening: None,
            listened_before: false,
            backoff: FIRST_BACKOFF,
        })
    }

    async fn listen(&self) -> Result<Listening, tokio_postgres::Error> {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let (sender, notifications) = mpsc::channel(NOTICES_AHEAD);
        let reader = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if sender.send(n).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "the LISTEN connection failed");
                        return;
                    }
                }
            }
        });
        let listening = Listening {
            _client: client,
            notifications,
            reader,
        };
        listening
            ._client
            .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {ERASED_CHANNEL}"))
            .await?;
        Ok(listening)
    }

    /// `FIRST LAST APPLICATION_NAME`, as the trigger writes it.
    fn read(&self, payload: &str) -> Option<Notice> {
        let mut parts = payload.splitn(3, ' ');
        let first = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        let origin = parts.next().unwrap_or("");
        Some(Notice::Stored {
            first: EventId::new(first),
            last: EventId::new(last),
            own: origin == self.replica,
        })
    }
}

/// `UID UID ...`, as an erasure's batch writes it; `None` if any is not a
/// uid.
fn read_erased(payload: &str) -> Option<Notice> {
    let uids: Result<Vec<OrderUid>, _> = payload.split_whitespace().map(OrderUid::parse).collect();
    uids.ok().map(Notice::Erased)
}

#[async_trait]
impl OrderEvents for PgOrderEvents {
    /// Never `None`: it keeps trying to listen until dropped.
    async fn next(&mut self) -> Option<Notice> {
        loop {
            let Some(listening) = &mut self.listening else {
                match self.listen().await {
                    Ok(listening) => {
                        self.listening = Some(listening);
                        self.backoff = FIRST_BACKOFF;
                        if std::mem::replace(&mut self.listened_before, true) {
                            tracing::info!("listening for stored orders again");
                            return Some(Notice::Reconnected);
                        }
                        tracing::debug!("listening for stored orders");
                    }
                    Err(err) => {
                        tracing::warn!(
                            error = %orders_domain::error_chain(&err),
                            retry_in = ?self.backoff,
                            "cannot LISTEN for stored orders"
                        );
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(MOST_BACKOFF);
                    }
                }
                continue;
            };
            match listening.notifications.recv().await {
                Some(n) if n.channel() == CHANNEL => match self.read(n.payload()) {
                    Some(notice) => return Some(notice),
                    None => tracing::warn!(payload = n.payload(), "unreadable announcement"),
                },
                Some(n) if n.channel() == ERASED_CHANNEL => match read_erased(n.payload()) {
                    Some(notice) => return Some(notice),
                    None => {
                        // Which orders is unknown: as after a gap, the
                        // core drops every erased order.
                        tracing::error!(
                            payload = n.payload(),
                            "unreadable announcement of erased orders"
                        );
                        return Some(Notice::Reconnected);
                    }
                },
                Some(_) => {}
                None => {
                    tracing::warn!("lost the LISTEN connection; connecting again");
                    self.listening = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_read_and_own_ones_known() {
        let events =
            PgOrderEvents::new("postgres://u@localhost/orders", "order-service-1").expect("url");

        assert_eq!(
            events.read("5 9 order-service-1"),
            Some(Notice::Stored {
                first: EventId::new(5),
                last: EventId::new(9),
                own: true
            })
        );
        assert_eq!(
            events.read("5 9 order-service-2"),
            Some(Notice::Stored {
                first: EventId::new(5),
                last: EventId::new(9),
                own: false
            })
        );
        assert_eq!(
            events.read("7 7 "),
            Some(Notice::Stored {
                first: EventId::new(7),
                last: EventId::new(7),
                own: false
            })
        );
        assert_eq!(events.read("x 9 a"), None);
        assert_eq!(events.read("5"), None);
    }

    #[test]
    fn erased_uids_are_read_and_a_payload_with_a_non_uid_is_not() {
        let uids = |list: &[&str]| {
            list.iter()
                .map(|u| OrderUid::parse(u).expect("uid"))
                .collect()
        };

        assert_eq!(
            read_erased("a-1 b_2"),
            Some(Notice::Erased(uids(&["a-1", "b_2"])))
        );
        assert_eq!(read_erased("a b;c"), None);
    }
}
