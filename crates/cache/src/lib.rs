//! [`OrderCache`] in memory: bounded, concurrent, and cheap to read.
//!
//! Built on `quick_cache`, a sharded cache whose reads take a shard's read
//! lock only briefly and whose eviction (CLOCK-PRO) keeps frequently read
//! orders over ones read once. Values are the orders' JSON as [`Bytes`], so a
//! hit is a reference-count increment, never a copy or a serialization.

use bytes::Bytes;
use orders_domain::{OrderCache, OrderUid};

/// The in-memory order cache.
pub struct MemoryCache {
    inner: quick_cache::sync::Cache<OrderUid, Bytes>,
    capacity: usize,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("len", &self.inner.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl MemoryCache {
    /// A cache holding at most `capacity` orders (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: quick_cache::sync::Cache::new(capacity),
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl OrderCache for MemoryCache {
    fn get(&self, uid: &OrderUid) -> Option<Bytes> {
        self.inner.get(uid)
    }

    fn insert(&self, uid: OrderUid, json: Bytes) {
        self.inner.insert(uid, json);
    }

    fn remove(&self, uid: &OrderUid) {
        self.inner.remove(uid);
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn uid(n: usize) -> OrderUid {
        OrderUid::parse(&format!("uid-{n}")).expect("valid uid")
    }

    #[test]
    fn holds_what_was_inserted() {
        let cache = MemoryCache::new(10);
        assert!(cache.is_empty());

        cache.insert(uid(1), Bytes::from_static(b"{\"a\":1}"));

        assert_eq!(cache.get(&uid(1)), Some(Bytes::from_static(b"{\"a\":1}")));
        assert_eq!(cache.get(&uid(2)), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_later_insert_replaces_the_value() {
        let cache = MemoryCache::new(10);
        cache.insert(uid(1), Bytes::from_static(b"old"));
        cache.insert(uid(1), Bytes::from_static(b"new"));
        assert_eq!(cache.get(&uid(1)), Some(Bytes::from_static(b"new")));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_removed_order_is_gone_and_the_rest_stay() {
        let cache = MemoryCache::new(10);
        cache.insert(uid(1), Bytes::from_static(b"erased"));
        cache.insert(uid(2), Bytes::from_static(b"kept"));

        cache.remove(&uid(1));
        cache.remove(&uid(3));

        assert_eq!(cache.get(&uid(1)), None);
        assert_eq!(cache.get(&uid(2)), Some(Bytes::from_static(b"kept")));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let cache = MemoryCache::new(100);
        for n in 0..1_000 {
            cache.insert(uid(n), Bytes::from(format!("{n}")));
        }
        assert!(cache.len() <= 100, "len {}", cache.len());
        assert!(cache.len() >= 50, "len {}", cache.len());
    }

    #[test]
    fn concurrent_readers_and_a_writer_see_whole_values() {
        let cache = Arc::new(MemoryCache::new(10_000));
        let writer = {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                for n in 0..5_000 {
                    cache.insert(uid(n), Bytes::from(format!("order {n}")));
                }
            })
        };
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    for n in 0..5_000 {
                        if let Some(v) = cache.get(&uid(n)) {
                            assert_eq!(v, Bytes::from(format!("order {n}")));
                        }
                    }
                })
            })
            .collect();
        writer.join().expect("writer");
        for r in readers {
            r.join().expect("reader");
        }
        assert_eq!(cache.len(), 5_000);
    }
}
