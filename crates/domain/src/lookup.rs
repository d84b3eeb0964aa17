//! The lookup use cases: one order by uid, a page of the newest, and the
//! warm-up that fills the cache lookups read.

use bytes::Bytes;
use futures::StreamExt;

use crate::listing::{MAX_PAGE, OrderCursor, OrderPage};
use crate::ports::RepositoryError;
use crate::search::OrderQuery;
use crate::service::OrderService;
use crate::uid::OrderUid;

/// An order's JSON, and whether memory answered (for the hit-rate metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub json: Bytes,
    pub from_cache: bool,
}

/// Why a lookup found no order.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("order not found")]
    NotFound,
    /// As many lookups as allowed are reading through to the database; try
    /// again in a moment.
    #[error("too many lookups of orders not in memory")]
    Busy,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl OrderService {
    /// The order's JSON: from the cache, else read through to the database
    /// (and then cached), else [`LookupError::NotFound`]. A uid found
    /// missing a moment ago is not found again without asking; when as
    /// many lookups as allowed read through already, [`LookupError::Busy`].
    pub async fn lookup(&self, uid: &OrderUid) -> Result<Lookup, LookupError> {
        if let Some(json) = self.cache.get(uid) {
            return Ok(Lookup {
                json,
                from_cache: true,
            });
        }
        if self.misses.known(uid) {
            return Err(LookupError::NotFound);
        }
        let Ok(_permit) = self.read_through.try_acquire() else {
            return Err(LookupError::Busy);
        };
        let since = self.erased.epoch();
        let Some(json) = self.reads.find_json(uid).await? else {
            self.misses.remember(uid);
            return Err(LookupError::NotFound);
        };
        self.cache_unless_erased(since, [(uid.clone(), json.clone())]);
        Ok(Lookup {
            json,
            from_cache: false,
        })
    }

    /// How many orders the cache holds.
    pub fn cached_orders(&self) -> usize {
        self.cache.len()
    }

    /// One page of the newest orders matching `query` (all of them when
    /// it has no key and no span), `limit` capped at [`MAX_PAGE`].
    pub async fn recent(
        &self,
        query: &OrderQuery,
        limit: usize,
        before: Option<OrderCursor>,
    ) -> Result<OrderPage, RepositoryError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let orders = self.reads.list_recent(query, limit, before).await?;
        Ok(OrderPage::new(orders, limit))
    }

    /// Fills the cache with the newest `capacity` orders from the database.
    /// Returns how many orders were loaded.
    ///
    /// Each chunk is cached while the repository reads the next one, so a
    /// large warm-up never holds all the orders at once. The repository
    /// hands over each order's JSON as stored: nothing is serialized here.
    /// An order erased while the warm-up runs is left out (its snapshot may
    /// predate the erasure).
    pub async fn warm_up(&self, capacity: usize) -> Result<usize, RepositoryError> {
        let since = self.erased.epoch();
        let mut chunks = self.reads.load_recent(capacity);
        let mut loaded = 0;
        while let Some(chunk) = chunks.next().await {
            loaded += self.cache_unless_erased(since, chunk?.into_iter().map(|o| (o.uid, o.json)));
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt as _;
    use mockall::predicate::eq;

    use super::*;
    use crate::order::Order;
    use crate::ports::{MockOrderCache, MockOrderReads, OrderChunks, OrderJson};
    use crate::service::testing::{sample, unavailable};

    fn service(reads: MockOrderReads, cache: MockOrderCache) -> OrderService {
        OrderService::new(
            crate::service::Ports {
                reads: Arc::new(reads),
                cache: Arc::new(cache),
                ..crate::service::Ports::mocks()
            },
            1024 * 1024,
        )
    }

    fn chunks(items: Vec<Result<Vec<Order>, RepositoryError>>) -> OrderChunks {
        let items: Vec<_> = items
            .into_iter()
            .map(|chunk| chunk.map(|orders| orders.iter().map(OrderJson::of).collect()))
            .collect();
        futures::stream::iter(items).boxed()
    }

    #[tokio::test]
    async fn lookup_hit_is_answered_from_the_cache_alone() {
        let mut repo = MockOrderReads::new();
        repo.expect_find_json().never();
        let mut cache = MockOrderCache::new();
        cache
            .expect_get()
            .returning(|_| Some(Bytes::from_static(b"{\"cached\":true}")));

        let found = service(repo, cache)
            .lookup(&sample().order_uid)
            .await
            .expect("hit");

        assert_eq!(found.json, Bytes::from_static(b"{\"cached\":true}"));
        assert!(found.from_cache);
    }

    #[tokio::test]
    async fn lookup_miss_reads_through_and_caches() {
        let mut repo = MockOrderReads::new();
        repo.expect_find_json()
            .with(eq(sample().order_uid))
            .times(1)
            .returning(|_| Ok(Some(Bytes::from(sample().to_json()))));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);
        cache
            .expect_insert()
            .with(eq(sample().order_uid), eq(Bytes::from(sample().to_json())))
            .times(1)
            .return_const(());

        let found = service(repo, cache)
            .lookup(&sample().order_uid)
            .await
            .expect("found");

        assert_eq!(found.json, Bytes::from(sample().to_json()));
        assert!(!found.from_cache);
    }

    /// A slot for the service under test, so a mock can act on it
    /// mid-call; emptied at the end, so the mocks are dropped and checked.
    type Slot = Arc<std::sync::Mutex<Option<Arc<OrderService>>>>;

    fn erase_in(slot: &Slot, uid: &OrderUid) {
        let service = slot.lock().expect("lock").clone().expect("the service");
        service.drop_erased(std::slice::from_ref(uid));
    }

    #[tokio::test]
    async fn an_order_erased_while_it_is_read_through_is_answered_but_not_cached() {
        // setup: the erasure is announced while the old JSON is on its way
        let slot: Slot = Arc::default();
        let during = Arc::clone(&slot);
        let mut repo = MockOrderReads::new();
        repo.expect_find_json().times(1).returning(move |uid| {
            erase_in(&during, uid);
            Ok(Some(Bytes::from(sample().to_json())))
        });
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_remove().times(1).return_const(());
        cache.expect_insert().never();
        let svc = Arc::new(service(repo, cache));
        *slot.lock().expect("lock") = Some(Arc::clone(&svc));

        // exec
        let found = svc.lookup(&sample().order_uid).await.expect("found");

        // check
        assert!(!found.from_cache);
        slot.lock().expect("lock").take();
    }

    #[tokio::test]
    async fn a_warm_up_leaves_out_an_order_erased_while_it_runs() {
        // setup: two chunks; the second's order is erased after the
        // snapshot, before its chunk arrives
        let slot: Slot = Arc::default();
        let during = Arc::clone(&slot);
        let mut repo = MockOrderReads::new();
        repo.expect_load_recent().times(1).returning(move |_| {
            let during = Arc::clone(&during);
            let first = Order::parse(&crate::service::testing::order_bytes("kept")).expect("order");
            let second =
                Order::parse(&crate::service::testing::order_bytes("gone")).expect("order");
            let chunks = vec![vec![first], vec![second]];
            futures::stream::iter(chunks)
                .map(move |chunk| {
                    if chunk[0].order_uid.as_str() == "gone" {
                        erase_in(&during, &chunk[0].order_uid);
                    }
                    Ok(chunk.iter().map(OrderJson::of).collect())
                })
                .boxed()
        });
        let mut cache = MockOrderCache::new();
        cache.expect_remove().times(1).return_const(());
        cache
            .expect_insert()
            .withf(|uid, _| uid.as_str() == "kept")
            .times(1)
            .return_const(());
        let svc = Arc::new(service(repo, cache));
        *slot.lock().expect("lock") = Some(Arc::clone(&svc));

        // exec
        let loaded = svc.warm_up(10).await.expect("warm");

        // check
        assert_eq!(loaded, 1);
        slot.lock().expect("lock").take();
    }

    #[tokio::test]
    async fn lookup_of_an_unknown_uid_is_not_found() {
        let mut repo = MockOrderReads::new();
        repo.expect_find_json().returning(|_| Ok(None));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_insert().never();

        let result = service(repo, cache)
            .lookup(&OrderUid::parse("nope").expect("uid"))
            .await;

        assert!(matches!(result, Err(LookupError::NotFound)));
    }

    #[tokio::test]
    async fn a_uid_found_missing_is_not_asked_for_again_at_once() {
        let mut repo = MockOrderReads::new();
        repo.expect_find_json().times(1).returning(|_| Ok(None));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);
        let svc = service(repo, cache);
        let uid = OrderUid::parse("nope").expect("uid");

        for _ in 0..100 {
            assert!(matches!(svc.lookup(&uid).await, Err(LookupError::NotFound)));
        }
    }

    #[tokio::test]
    async fn lookups_past_the_read_through_limit_are_busy_at_once() {
        let started = Arc::new(tokio::sync::Barrier::new(3));
        let mut repo = MockOrderReads::new();
        repo.expect_find_json()
            .times(2)
            .returning(|_| Ok(Some(Bytes::from(sample().to_json()))));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_insert().return_const(());
        let svc = Arc::new(service(repo, cache).with_read_through_limit(2));
        // Hold both permits, as two slow reads would.
        let first = svc.read_through.try_acquire().expect("a permit");
        let second = svc.read_through.try_acquire().expect("a permit");

        let busy = svc.lookup(&sample().order_uid).await;

        assert!(matches!(busy, Err(LookupError::Busy)), "{busy:?}");
        drop((first, second));
        drop(started);
        assert!(svc.lookup(&sample().order_uid).await.is_ok());
        assert!(svc.lookup(&sample().order_uid).await.is_ok());
    }

    #[tokio::test]
    async fn lookup_reports_a_database_fault() {
        let mut repo = MockOrderReads::new();
        repo.expect_find_json().returning(|_| Err(unavailable()));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);

        let result = service(repo, cache).lookup(&sample().order_uid).await;

        assert!(matches!(result, Err(LookupError::Repository(_))));
    }

    #[tokio::test]
    async fn recent_caps_the_limit_and_offers_a_next_page_only_when_full() {
        let summary = |n: i64| crate::listing::OrderSummary {
            order_uid: OrderUid::parse(&format!("o{n}")).expect("uid"),
            date_created: "2021-11-26T06:22:19Z".into(),
            amount: n,
            currency: "USD".into(),
            cursor: OrderCursor {
                created_micros: n,
                order_uid: OrderUid::parse(&format!("o{n}")).expect("uid"),
            },
        };
        let mut repo = MockOrderReads::new();
        repo.expect_list_recent()
            .withf(|query, limit, before| {
                *query == OrderQuery::all() && *limit == MAX_PAGE && before.is_none()
            })
            .times(1)
            .returning(move |_, limit, _| Ok((0..limit as i64).map(summary).collect()));
        let phone = OrderQuery::by(crate::search::SearchKey::Phone("+7900".into()));
        let wanted = phone.clone();
        repo.expect_list_recent()
            .withf(move |query, limit, before| *query == wanted && *limit == 5 && before.is_some())
            .times(1)
            .returning(move |_, _, _| Ok(vec![summary(1)]));
        let svc = service(repo, MockOrderCache::new());

        let full = svc
            .recent(&OrderQuery::all(), 10_000, None)
            .await
            .expect("page");
        assert_eq!(full.orders.len(), MAX_PAGE);
        assert_eq!(full.next.as_deref(), Some("99.o99"));

        let cursor = OrderCursor::parse("99.o99").expect("cursor");
        let last = svc.recent(&phone, 5, Some(cursor)).await.expect("page");
        assert_eq!(last.next, None);
    }

    #[tokio::test]
    async fn warm_up_fills_the_cache() {
        let mut repo = MockOrderReads::new();
        repo.expect_load_recent()
            .with(eq(500))
            .times(1)
            .returning(|_| chunks(vec![Ok(vec![sample()])]));
        let mut cache = MockOrderCache::new();
        cache
            .expect_insert()
            .with(eq(sample().order_uid), eq(Bytes::from(sample().to_json())))
            .times(1)
            .return_const(());

        let loaded = service(repo, cache).warm_up(500).await.expect("warm-up");

        assert_eq!(loaded, 1);
    }

    #[tokio::test]
    async fn warm_up_caches_every_chunk_and_fails_on_an_error_after_some() {
        let order = |uid: &str| Order {
            order_uid: OrderUid::try_from(uid.to_owned()).expect("uid"),
            ..sample()
        };
        let mut repo = MockOrderReads::new();
        repo.expect_load_recent().times(1).returning(move |_| {
            chunks(vec![Ok(vec![order("a"), order("b")]), Ok(vec![order("c")])])
        });
        let mut cache = MockOrderCache::new();
        cache.expect_insert().times(3).return_const(());
        assert_eq!(service(repo, cache).warm_up(10).await.expect("warm-up"), 3);

        let mut repo = MockOrderReads::new();
        repo.expect_load_recent()
            .returning(move |_| chunks(vec![Ok(vec![order("a")]), Err(unavailable())]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().times(1).return_const(());
        assert!(service(repo, cache).warm_up(10).await.is_err());
    }
}
