//! The rejected messages as an operator reads them: newest first, by
//! reason, each with its raw bytes on request.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::retention::Retention;
use crate::validation::RejectReason;

/// The most rows one page of rejected messages holds.
pub const MAX_REJECTED_PAGE: usize = 100;

/// A rejected message's row id: a whole number from 1, also the cursor of
/// the list (the next page holds the ids below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RejectedId(i64);

/// Why a string is not a [`RejectedId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a whole number from 1")]
pub struct InvalidRejectedId;

impl RejectedId {
    pub fn parse(raw: &str) -> Result<Self, InvalidRejectedId> {
        // `parse` alone would take a leading '+'.
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidRejectedId);
        }
        Self::new(raw.parse().map_err(|_| InvalidRejectedId)?)
    }

    pub fn new(id: i64) -> Result<Self, InvalidRejectedId> {
        if id >= 1 {
            Ok(Self(id))
        } else {
            Err(InvalidRejectedId)
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// RFC 3339 in UTC, for JSON. The database gives UTC already; the checked
/// conversion keeps any other instant from panicking.
pub(crate) fn rfc3339<S: Serializer>(
    at: &OffsetDateTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let text = at
        .checked_to_offset(time::UtcOffset::UTC)
        .ok_or_else(|| serde::ser::Error::custom("a time beyond the year 9999 in UTC"))?
        .format(&Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

fn rfc3339_opt<S: Serializer>(
    at: &Option<OffsetDateTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

fn reason_name<S: Serializer>(reason: &RejectReason, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(reason.as_str())
}

/// One line of the list of rejected messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedSummary {
    pub id: RejectedId,
    #[serde(serialize_with = "rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(serialize_with = "reason_name")]
    pub reason: RejectReason,
    pub detail: String,
    /// The uid the message named, when it had a readable one: a hint, not
    /// a stored order.
    pub order_uid: Option<String>,
    /// The message's size in bytes.
    pub size: i64,
    /// When `order-publisher replay` published it again, if it did.
    #[serde(serialize_with = "rfc3339_opt")]
    pub replayed_at: Option<OffsetDateTime>,
}

/// One page of rejected messages, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedPage {
    pub rejected: Vec<RejectedSummary>,
    /// Pass as `before` for the next page; `None` on the last.
    pub next: Option<RejectedId>,
    /// How long a rejected message is kept (`REJECTED_RETENTION`), so
    /// whoever reads the list knows the rows will not stay.
    pub retention: Retention,
}

impl RejectedPage {
    /// A page from the rows returned for a request of `limit`: a full page
    /// may have more after it.
    pub fn new(rejected: Vec<RejectedSummary>, limit: usize, retention: Retention) -> Self {
        let next = crate::listing::next_cursor(&rejected, limit, |last| last.id);
        Self {
            rejected,
            next,
            retention,
        }
    }
}

/// A rejected message whole: its line, where it came from and its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedMessage {
    #[serde(flatten)]
    pub summary: RejectedSummary,
    pub subject: String,
    pub stream: String,
    pub stream_sequence: Option<i64>,
    /// The NATS headers as they arrived, if any.
    pub headers: Option<String>,
    #[serde(flatten)]
    pub payload: Payload,
}

/// A message's bytes for JSON: as text when they are UTF-8, else base64
/// (standard alphabet, padded), and which of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(pub Bytes);

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        match std::str::from_utf8(&self.0) {
            Ok(text) => {
                map.serialize_entry("payload", text)?;
                map.serialize_entry("payload_encoding", "utf-8")?;
            }
            Err(_) => {
                map.serialize_entry("payload", &STANDARD.encode(&self.0))?;
                map.serialize_entry("payload_encoding", "base64")?;
            }
        }
        map.end()
    }
}

impl crate::service::OrderService {
    /// One page of rejected messages, newest first, of `reason` when
    /// given; `limit` capped at [`MAX_REJECTED_PAGE`].
    pub async fn rejected(
        &self,
        reason: Option<RejectReason>,
        limit: usize,
        before: Option<RejectedId>,
    ) -> Result<RejectedPage, crate::ports::RepositoryError> {
        let limit = limit.clamp(1, MAX_REJECTED_PAGE);
        let rows = self.rejected.list_rejected(reason, limit, before).await?;
        Ok(RejectedPage::new(rows, limit, self.rejected_retention))
    }

    /// One rejected message with its bytes, or `None`.
    pub async fn rejected_message(
        &self,
        id: RejectedId,
    ) -> Result<Option<RejectedMessage>, crate::ports::RepositoryError> {
        self.rejected.find_rejected(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_text_when_utf8_else_base64() {
        let json = |bytes: &'static [u8]| {
            serde_json::to_value(Payload(Bytes::from_static(bytes))).expect("json")
        };
        assert_eq!(
            json(b"{\"a\":1}"),
            serde_json::json!({"payload": "{\"a\":1}", "payload_encoding": "utf-8"})
        );
        assert_eq!(
            json(b"\xff\xfe{"),
            serde_json::json!({"payload": "//57", "payload_encoding": "base64"})
        );
    }

    #[test]
    fn ids_are_whole_numbers_from_one() {
        assert_eq!(RejectedId::parse("42").map(RejectedId::get), Ok(42));
        for bad in ["", "0", "-1", "+1", "1.5", "x", "99999999999999999999"] {
            assert_eq!(RejectedId::parse(bad), Err(InvalidRejectedId), "{bad:?}");
        }
    }

    fn summary(id: i64) -> RejectedSummary {
        RejectedSummary {
            id: RejectedId(id),
            received_at: OffsetDateTime::UNIX_EPOCH,
            reason: RejectReason::InvalidJson,
            detail: "invalid JSON: EOF".into(),
            order_uid: None,
            size: 3,
            replayed_at: None,
        }
    }

    #[tokio::test]
    async fn rejected_caps_the_limit_and_offers_a_next_page_only_when_full() {
        use std::sync::Arc;

        use crate::ports::MockRejectedReads;
        use crate::service::Ports;

        let mut repo = MockRejectedReads::new();
        repo.expect_list_rejected()
            .withf(|reason, limit, before| {
                *reason == Some(RejectReason::Conflict)
                    && *limit == MAX_REJECTED_PAGE
                    && *before == Some(RejectedId(500))
            })
            .times(1)
            .returning(|_, limit, _| Ok((1..=limit as i64).rev().map(summary).collect()));
        repo.expect_list_rejected()
            .withf(|reason, limit, before| reason.is_none() && *limit == 10 && before.is_none())
            .times(1)
            .returning(|_, _, _| Ok(vec![summary(1)]));
        let svc = crate::service::OrderService::new(
            Ports {
                rejected: Arc::new(repo),
                ..Ports::mocks()
            },
            1 << 20,
        )
        .with_rejected_retention(Retention::parse("30d").expect("30d"));

        let full = svc
            .rejected(Some(RejectReason::Conflict), 1_000, Some(RejectedId(500)))
            .await
            .expect("page");
        assert_eq!(full.rejected.len(), MAX_REJECTED_PAGE);
        assert_eq!(full.next, Some(RejectedId(1)));
        let last = svc.rejected(None, 10, None).await.expect("page");
        assert_eq!(last.next, None);
        let json = serde_json::to_value(&last).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"rejected": [{
                "id": 1, "received_at": "1970-01-01T00:00:00Z", "reason": "invalid_json",
                "detail": "invalid JSON: EOF", "order_uid": null, "size": 3, "replayed_at": null
            }], "next": null, "retention": "30d"})
        );
    }
}
