//! How long personal data is kept, and the background purge that holds the
//! tables to it: [`Retention`] read once at the edge, the [`Purger`] and
//! [`PurgePass`] ports, and [`purge_once`], one pass over every table that
//! has a limit.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Serialize, Serializer};

use crate::ports::RepositoryError;

/// The shortest retention: anything shorter is a typo (`500ms` meant for a
/// timeout), not a policy.
const SHORTEST: Duration = Duration::from_secs(1);

/// The longest retention: a hundred years. Longer is "forever", which `0`
/// says plainly; and a limit must fit the database's interval and
/// JetStream's nanoseconds (292 years) alike.
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

/// How long rows (or messages) are kept: a duration from one second to a
/// hundred years, or forever. Read once at the edge
/// (`REJECTED_RETENTION=30d`); written back the same compact way (`30d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Retention(Option<Duration>);

/// Why a string is not a [`Retention`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRetention {
    #[error("invalid duration {raw:?} ({why}); e.g. 30d, 12h, or 0 to keep forever")]
    Unreadable { raw: String, why: String },
    #[error("{0:?} is shorter than 1s; use 0 to keep forever")]
    TooShort(String),
    #[error("{0:?} is longer than 100 years; use 0 to keep forever")]
    TooLong(String),
}

impl Retention {
    /// Kept forever: no limit.
    pub const FOREVER: Retention = Retention(None);

    /// `0` (or any zero: `0s`, `0d`) for forever, else a duration as
    /// humantime reads it (`30d`, `12h 30m`, `1y`), from 1s to 100 years.
    pub fn parse(raw: &str) -> Result<Self, InvalidRetention> {
        let text = raw.trim();
        if text == "0" {
            return Ok(Self::FOREVER);
        }
        let limit = humantime::parse_duration(text).map_err(|e| InvalidRetention::Unreadable {
            raw: raw.to_owned(),
            why: e.to_string(),
        })?;
        Self::limit(limit).map_err(|e| match e {
            InvalidRetention::TooShort(_) => InvalidRetention::TooShort(raw.to_owned()),
            InvalidRetention::TooLong(_) => InvalidRetention::TooLong(raw.to_owned()),
            other => other,
        })
    }

    /// Kept for `limit` (zero: forever), checked as [`Retention::parse`]
    /// checks it.
    pub fn limit(limit: Duration) -> Result<Self, InvalidRetention> {
        if limit.is_zero() {
            Ok(Self::FOREVER)
        } else if limit < SHORTEST {
            Err(InvalidRetention::TooShort(format!("{limit:?}")))
        } else if limit > LONGEST {
            Err(InvalidRetention::TooLong(format!("{limit:?}")))
        } else {
            Ok(Self(Some(limit)))
        }
    }

    /// How long, or `None` for forever.
    pub fn get(self) -> Option<Duration> {
        self.0
    }
}

/// The compact form: the largest of `d`, `h`, `m`, `s` that divides the
/// limit exactly (`30d`, `36h`, `90s`; `1500ms` as `1500ms`); `0` for
/// forever. `Retention::parse` reads it back to the same value.
impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(limit) = self.0 else {
            return f.write_str("0");
        };
        if limit.subsec_nanos() != 0 {
            let millis = limit.as_nanos() / 1_000_000;
            if limit.as_nanos() % 1_000_000 == 0 {
                return write!(f, "{millis}ms");
            }
            return write!(f, "{}ns", limit.as_nanos());
        }
        let secs = limit.as_secs();
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs % size == 0 {
                return write!(f, "{}{unit}", secs / size);
            }
        }
        write!(f, "{secs}s")
    }
}

/// As JSON: the compact form (`"30d"`), or `null` for forever.
impl Serialize for Retention {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(_) => serializer.collect_str(self),
            None => serializer.serialize_none(),
        }
    }
}

/// A table whose old rows the background purge deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurgeTarget {
    /// `rejected_messages`, by when each was received
    /// (`REJECTED_RETENTION`).
    RejectedMessages,
    /// `order_reads`, by when each read was answered (`AUDIT_RETENTION`).
    OrderReads,
}

impl PurgeTarget {
    pub const ALL: [PurgeTarget; 2] = [PurgeTarget::RejectedMessages, PurgeTarget::OrderReads];

    /// The table's name (also the metrics label).
    pub fn table(self) -> &'static str {
        match self {
            PurgeTarget::RejectedMessages => "rejected_messages",
            PurgeTarget::OrderReads => "order_reads",
        }
    }
}

/// Rows deleted in one batch, at most: each batch is a transaction of its
/// own, so this bounds how long one holds its row locks and how much WAL
/// it writes at once. A thousand rows of either table (a rejected message
/// is usually a few KB, a read a few hundred bytes) take milliseconds to
/// delete (see docs/operations.md), so a batch never holds anything long,
/// while a pass still deletes a day of reads at thousands a second in a
/// few hundred batches.
pub const PURGE_BATCH: usize = 1_000;

/// Starts purge passes: one replica at a time.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Purger: Send + Sync {
    /// MUST try to take the purge lock, shared by every replica on the
    /// database, without waiting: `Ok(None)` at once when another pass
    /// holds it. The returned pass MUST hold the lock until
    /// [`PurgePass::finish`] or until it is dropped, and no longer
    /// (dropping an unfinished pass MUST release the lock, even in the
    /// middle of a batch).
    async fn begin(&self) -> Result<Option<Box<dyn PurgePass>>, RepositoryError>;
}

/// One purge pass, holding the purge lock.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PurgePass: Send {
    /// MUST delete, in one transaction of its own, at most `limit` rows of
    /// `target` older than `age` by the database's clock, oldest first,
    /// skipping rows another transaction has locked rather than waiting
    /// for them, and return how many it deleted. MUST NOT delete a row
    /// younger than `age`. MUST NOT hold a lock on the table that blocks
    /// inserts.
    async fn delete_older(
        &mut self,
        target: PurgeTarget,
        age: Duration,
        limit: usize,
    ) -> Result<u64, RepositoryError>;

    /// MUST release the purge lock.
    async fn finish(&mut self) -> Result<(), RepositoryError>;
}

/// What one call of [`purge_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// Another replica's pass held the lock: nothing was done.
    Skipped,
    /// The pass ran: every table's rows older than its limit are gone
    /// (but for those locked by others), this many in all.
    Done { deleted: u64 },
}

/// One purge pass: takes the lock (or skips, if another replica holds it),
/// then for each `(table, age)`, deletes its rows older than `age` in
/// batches of `batch` until a batch comes back short, telling `deleted`
/// after each batch (so a long pass shows progress); then releases the
/// lock. An error ends the pass (the lock released) and is returned; the
/// next pass starts over.
pub async fn purge_once(
    purger: &dyn Purger,
    targets: &[(PurgeTarget, Duration)],
    batch: usize,
    deleted: &mut (dyn FnMut(PurgeTarget, u64) + Send),
) -> Result<PurgeOutcome, RepositoryError> {
    let Some(mut pass) = purger.begin().await? else {
        return Ok(PurgeOutcome::Skipped);
    };
    let batch = batch.max(1);
    let mut total = 0;
    let ran = async {
        for &(target, age) in targets {
            loop {
                let n = pass.delete_older(target, age, batch).await?;
                if n > 0 {
                    deleted(target, n);
                    total += n;
                }
                if n < batch as u64 {
                    break;
                }
            }
        }
        Ok::<_, RepositoryError>(())
    }
    .await;
    let finished = pass.finish().await;
    ran?;
    finished?;
    Ok(PurgeOutcome::Done { deleted: total })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mockall::Sequence;
    use mockall::predicate::eq;

    use super::*;

    #[test]
    fn retentions_read_as_people_write_them_and_zero_is_forever() {
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        assert_eq!(Retention::parse("30d").map(Retention::get), Ok(days(30)));
        assert_eq!(Retention::parse("365d").map(Retention::get), Ok(days(365)));
        assert_eq!(
            Retention::parse("1s").map(Retention::get),
            Ok(Some(Duration::from_secs(1)))
        );
        for forever in ["0", " 0 ", "0s", "0d"] {
            assert_eq!(
                Retention::parse(forever),
                Ok(Retention::FOREVER),
                "{forever}"
            );
        }
    }

    #[test]
    fn bad_retentions_say_what_is_wrong() {
        for (raw, says) in [
            ("500ms", "shorter than 1s"),
            ("-1", "invalid duration"),
            ("x", "invalid duration"),
            ("", "invalid duration"),
            ("30", "invalid duration"),
            ("200y", "longer than 100 years"),
        ] {
            let err = Retention::parse(raw).expect_err(raw).to_string();
            assert!(err.contains(says), "{raw:?}: {err}");
            assert!(err.contains(&format!("{raw:?}")), "{raw:?}: {err}");
        }
    }

    #[test]
    fn retentions_are_written_compactly_and_read_back_the_same() {
        for (raw, shown) in [
            ("30d", "30d"),
            ("7d", "7d"),
            ("36h", "36h"),
            ("1h 30m", "90m"),
            ("90s", "90s"),
            ("1500ms", "1500ms"),
            ("1y", "8766h"),
            ("0", "0"),
        ] {
            let retention = Retention::parse(raw).expect(raw);
            assert_eq!(retention.to_string(), shown, "{raw}");
            assert_eq!(Retention::parse(shown), Ok(retention), "{shown}");
        }
        assert_eq!(
            serde_json::to_value(Retention::parse("30d").expect("30d")).expect("json"),
            serde_json::json!("30d")
        );
        assert_eq!(
            serde_json::to_value(Retention::FOREVER).expect("json"),
            serde_json::Value::Null
        );
    }

    const DAY: Duration = Duration::from_secs(86_400);

    /// A pass that deletes `batches` in turn from each call.
    fn pass_deleting(batches: Vec<u64>, seq: &mut Sequence) -> MockPurgePass {
        let mut pass = MockPurgePass::new();
        for n in batches {
            pass.expect_delete_older()
                .with(eq(PurgeTarget::RejectedMessages), eq(30 * DAY), eq(10))
                .times(1)
                .in_sequence(seq)
                .returning(move |_, _, _| Ok(n));
        }
        pass
    }

    /// A purger whose one pass is `pass`, finished last in `seq`.
    fn purger_of(mut pass: MockPurgePass, seq: &mut Sequence) -> MockPurger {
        pass.expect_finish()
            .times(1)
            .in_sequence(seq)
            .returning(|| Ok(()));
        let pass = Mutex::new(Some(pass));
        let mut purger = MockPurger::new();
        purger.expect_begin().times(1).returning(move || {
            let pass = pass.lock().expect("lock").take().expect("one pass");
            Ok(Some(Box::new(pass) as Box<dyn PurgePass>))
        });
        purger
    }

    #[tokio::test]
    async fn a_pass_deletes_batch_after_batch_until_one_comes_back_short_then_releases_the_lock() {
        // setup: 25 old rejected rows in batches of 10; no old reads
        let mut seq = Sequence::new();
        let mut pass = pass_deleting(vec![10, 10, 5], &mut seq);
        pass.expect_delete_older()
            .with(eq(PurgeTarget::OrderReads), eq(365 * DAY), eq(10))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(0));
        let purger = purger_of(pass, &mut seq);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);

        // exec
        let outcome = purge_once(
            &purger,
            &[
                (PurgeTarget::RejectedMessages, 30 * DAY),
                (PurgeTarget::OrderReads, 365 * DAY),
            ],
            10,
            &mut move |target, n| record.lock().expect("lock").push((target, n)),
        )
        .await;

        // check: every batch counted as it went, none empty
        assert_eq!(outcome.expect("pass"), PurgeOutcome::Done { deleted: 25 });
        assert_eq!(
            *seen.lock().expect("lock"),
            [
                (PurgeTarget::RejectedMessages, 10),
                (PurgeTarget::RejectedMessages, 10),
                (PurgeTarget::RejectedMessages, 5),
            ]
        );
    }

    #[tokio::test]
    async fn a_pass_another_replica_holds_is_skipped_and_deletes_nothing() {
        let mut purger = MockPurger::new();
        purger.expect_begin().times(1).returning(|| Ok(None));

        let outcome = purge_once(
            &purger,
            &[(PurgeTarget::RejectedMessages, DAY)],
            10,
            &mut |_, _| panic!("nothing is deleted"),
        )
        .await;

        assert_eq!(outcome.expect("skipped"), PurgeOutcome::Skipped);
    }

    #[tokio::test]
    async fn a_failed_batch_ends_the_pass_and_still_releases_the_lock() {
        let mut seq = Sequence::new();
        let mut pass = pass_deleting(vec![10], &mut seq);
        pass.expect_delete_older()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Err(RepositoryError::Unavailable("gone".into())));
        let purger = purger_of(pass, &mut seq);

        let outcome = purge_once(
            &purger,
            &[(PurgeTarget::RejectedMessages, 30 * DAY)],
            10,
            &mut |_, _| {},
        )
        .await;

        assert!(matches!(outcome, Err(RepositoryError::Unavailable(_))));
    }
}
