//! Uids looked up a moment ago and not found: a second lookup within
//! [`MISS_TTL`] answers "not found" without asking the database, so the
//! same unknown uid asked again and again costs nothing. A uid is forgotten
//! the moment this service stores its order; another replica's store shows
//! within [`MISS_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::uid::OrderUid;

/// How long a miss is remembered: short, since another replica may store
/// the order meanwhile.
pub const MISS_TTL: Duration = Duration::from_secs(1);

/// The most misses remembered; past it the memory starts afresh (what is
/// lost is only a database read).
const MOST_MISSES: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct RecentMisses {
    seen: Mutex<HashMap<OrderUid, Instant>>,
}

impl RecentMisses {
    /// Whether `uid` was found missing less than [`MISS_TTL`] ago.
    pub(crate) fn known(&self, uid: &OrderUid) -> bool {
        let Ok(seen) = self.seen.lock() else {
            return false;
        };
        seen.get(uid).is_some_and(|at| at.elapsed() < MISS_TTL)
    }

    pub(crate) fn remember(&self, uid: &OrderUid) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= MOST_MISSES {
                seen.retain(|_, at| at.elapsed() < MISS_TTL);
                if seen.len() >= MOST_MISSES {
                    seen.clear();
                }
            }
            seen.insert(uid.clone(), Instant::now());
        }
    }

    pub(crate) fn forget(&self, uid: &OrderUid) {
        if let Ok(mut seen) = self.seen.lock()
            && !seen.is_empty()
        {
            seen.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_is_remembered_briefly_and_forgotten_when_stored() {
        let misses = RecentMisses::default();
        let uid = OrderUid::parse("gone").expect("uid");
        assert!(!misses.known(&uid));

        misses.remember(&uid);
        assert!(misses.known(&uid));
        misses.forget(&uid);
        assert!(!misses.known(&uid));

        misses.remember(&uid);
        std::thread::sleep(MISS_TTL + Duration::from_millis(50));
        assert!(!misses.known(&uid), "remembered at most MISS_TTL");
    }
}
