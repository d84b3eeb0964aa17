//! The orders erased lately, so a read that raced an erasure cannot put an
//! order's old JSON back into the cache after the erasure dropped it: a
//! lookup reads the old document, the erasure commits and its announcement
//! drops the uid, then the lookup caches what it read. Each cache write of
//! something read from the database says when the read began (an
//! [`Epoch`]) and is left out if the order was erased since.

use std::collections::{HashMap, VecDeque};
use std::sync::{PoisonError, RwLock};

use crate::uid::OrderUid;

/// Erased uids remembered: far more than an erasure request touches, a few
/// MB at most. A read older than the oldest remembered is treated as
/// racing every erasure (it is not cached; a lookup reads it again).
const REMEMBERED: usize = 65_536;

/// How many erasures had been noted when a read began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch(u64);

#[derive(Debug, Default)]
struct Noted {
    epoch: u64,
    /// Each remembered uid and the epoch of its latest erasure.
    latest: HashMap<OrderUid, u64>,
    /// The same, oldest first, to forget the oldest.
    order: VecDeque<(u64, OrderUid)>,
    /// The epoch of the latest erasure forgotten.
    forgotten_through: u64,
}

impl Noted {
    /// Whether `uid` may have been erased after `since`.
    fn erased_since(&self, since: Epoch, uid: &OrderUid) -> bool {
        if self.epoch == since.0 {
            return false;
        }
        self.forgotten_through > since.0 || self.latest.get(uid).is_some_and(|e| *e > since.0)
    }
}

/// The erasures this replica has been told of.
#[derive(Debug, Default)]
pub(crate) struct RecentErasures {
    noted: RwLock<Noted>,
}

impl RecentErasures {
    /// Now: give it to [`RecentErasures::unless_erased_since`] after the
    /// read.
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(
            self.noted
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .epoch,
        )
    }

    /// Notes `uids` as erased, then runs `drop` (which drops them from the
    /// cache) before any cache write can check them.
    pub(crate) fn note(&self, uids: &[OrderUid], drop: impl FnOnce()) {
        let mut noted = self.noted.write().unwrap_or_else(PoisonError::into_inner);
        noted.epoch += 1;
        let epoch = noted.epoch;
        for uid in uids {
            noted.latest.insert(uid.clone(), epoch);
            noted.order.push_back((epoch, uid.clone()));
        }
        while noted.order.len() > REMEMBERED {
            let Some((old, uid)) = noted.order.pop_front() else {
                break;
            };
            if noted.latest.get(&uid) == Some(&old) {
                noted.latest.remove(&uid);
            }
            noted.forgotten_through = noted.forgotten_through.max(old);
        }
        drop();
    }

    /// Runs `write` with a test of whether an order may have been erased
    /// since `since`; no erasure is noted meanwhile, so what `write` caches
    /// after the test passed is dropped by any later erasure.
    pub(crate) fn unless_erased_since<R>(
        &self,
        since: Epoch,
        write: impl FnOnce(&dyn Fn(&OrderUid) -> bool) -> R,
    ) -> R {
        let noted = self.noted.read().unwrap_or_else(PoisonError::into_inner);
        write(&|uid| noted.erased_since(since, uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> OrderUid {
        OrderUid::parse(s).expect("uid")
    }

    #[test]
    fn an_order_erased_after_a_read_began_is_told_and_others_are_not() {
        let erasures = RecentErasures::default();
        let before = erasures.epoch();

        erasures.note(&[uid("gone")], || {});
        let after = erasures.epoch();

        erasures.unless_erased_since(before, |erased| {
            assert!(erased(&uid("gone")));
            assert!(!erased(&uid("kept")));
        });
        erasures.unless_erased_since(after, |erased| assert!(!erased(&uid("gone"))));
    }

    #[test]
    fn a_read_older_than_what_is_remembered_counts_as_racing_every_erasure() {
        let erasures = RecentErasures::default();
        let before = erasures.epoch();
        let many: Vec<OrderUid> = (0..=REMEMBERED).map(|n| uid(&format!("u{n}"))).collect();

        erasures.note(&many[..1], || {});
        let middle = erasures.epoch();
        erasures.note(&many[1..], || {});

        erasures.unless_erased_since(before, |erased| assert!(erased(&uid("never-erased"))));
        erasures.unless_erased_since(middle, |erased| {
            assert!(!erased(&uid("never-erased")));
            assert!(erased(&many[REMEMBERED]));
        });
    }
}
