//! PgOrderRepository across servers: a URL naming several hosts, a primary
//! that turns read-only under the pool, a standby. Each test runs
//! throwaway clusters of its own (`PgServer`), so it may reconfigure them.

use orders_domain::{DatabaseProbe, Order, OrderReads, OrderStore, SaveOutcome};
use orders_postgres::{
    PgOrderRepository, PoolSettings, connect_pool, connect_read_pool, ensure_database, migrate,
};
use orders_testkit::servers::PgServer;
use orders_testkit::{SAMPLE, order_json};

/// Every order `load_recent` yields, as it yields them.
async fn load(repo: &PgOrderRepository, limit: usize) -> Vec<Order> {
    orders_testkit::load_documents(repo.load_recent(limit)).await
}

/// The warm-up promises the newest orders in any order; sorted here by uid.
async fn load_sorted(repo: &PgOrderRepository, limit: usize) -> Vec<Order> {
    let mut orders = load(repo, limit).await;
    orders.sort_by(|a, b| a.order_uid.as_str().cmp(b.order_uid.as_str()));
    orders
}

/// The uids of the first page of the list.
async fn listed(repo: &PgOrderRepository) -> Vec<String> {
    repo.list_recent(&orders_domain::OrderQuery::all(), 10, None)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.order_uid.as_str().to_owned())
        .collect()
}

async fn client_of(server: &PgServer, database: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&server.url(database), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
}

fn sample() -> Order {
    Order::parse(SAMPLE).expect("sample is valid")
}

fn numbered(uid: &str, n: u64) -> Order {
    Order::parse(&order_json(uid, n)).expect("valid")
}

/// `postgres://postgres@127.0.0.1:P1,127.0.0.1:P2/orders`: the hosts in
/// this order, and nothing said about which may take writes.
fn url_naming(servers: &[&PgServer]) -> String {
    let hosts: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    format!("postgres://postgres@{}/orders", hosts.join(","))
}

async fn count_on(server: &PgServer, uid: &str) -> i64 {
    let (client, connection) =
        tokio_postgres::connect(&server.url("orders"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT count(*) FROM order_info WHERE order_uid = $1",
            &[&uid],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_naming_the_standby_first_writes_to_the_primary() {
    let primary = PgServer::start();
    let standby = PgServer::standby_of(&primary, "standby1");
    primary.wait_for_standby("standby1", false).await;
    let url = url_naming(&[&standby, &primary]);

    ensure_database(&url).await.expect("database created");
    migrate(&url).await.expect("migrations");
    let repo = PgOrderRepository::new(connect_pool(&url, PoolSettings::default()).expect("pool"));
    let outcome = repo
        .save(&orders_testkit::new_orders(&[sample()]))
        .await
        .expect("save");

    assert_eq!(outcome, vec![SaveOutcome::Stored]);
    assert_eq!(count_on(&primary, "b563feb7b2b84b6test").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_turned_read_only_under_the_pool_is_left_for_the_writable_host() {
    // Two primaries stand for the old and the new one of a fail-over.
    let old = PgServer::start();
    let new = PgServer::start();
    for server in [&old, &new] {
        ensure_database(&server.url("orders"))
            .await
            .expect("database");
        migrate(&server.url("orders")).await.expect("migrations");
    }
    // One connection, so the second save must reuse or replace it.
    let settings = PoolSettings {
        max_size: 1,
        ..PoolSettings::default()
    };
    let repo =
        PgOrderRepository::new(connect_pool(&url_naming(&[&old, &new]), settings).expect("pool"));
    let first = numbered("before_fencing", 1);
    assert_eq!(
        repo.save(&orders_testkit::new_orders(std::slice::from_ref(&first)))
            .await
            .expect("save"),
        vec![SaveOutcome::Stored]
    );
    assert_eq!(count_on(&old, "before_fencing").await, 1);

    // As pg_auto_failover fences a primary it is about to demote: the
    // pooled connection stays open, and would now fail every write with
    // SQLSTATE 25006.
    old.set("default_transaction_read_only", "on").await;
    let second = numbered("after_fencing", 2);
    let outcome = repo
        .save(&orders_testkit::new_orders(std::slice::from_ref(&second)))
        .await;

    assert_eq!(outcome.expect("save"), vec![SaveOutcome::Stored]);
    assert_eq!(count_on(&new, "after_fencing").await, 1);
    assert_eq!(count_on(&old, "after_fencing").await, 0);
    let status = repo.pool().status();
    assert_eq!(
        status.size, 1,
        "the connection to the fenced server was dropped, not kept beside the new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_standby_is_reported_only_while_one_streams_and_commits_wait_for_it() {
    let primary = PgServer::start();
    let admin = primary.admin_url();
    let repo = PgOrderRepository::new(connect_pool(&admin, PoolSettings::default()).expect("pool"));
    let has = || async { repo.has_sync_standby().await.expect("the database answers") };
    assert!(!has().await, "no standby at all");

    let standby = PgServer::standby_of(&primary, "standby1");
    primary.wait_for_standby("standby1", false).await;
    assert!(
        !has().await,
        "an asynchronous standby holds no commit we wait for"
    );

    primary.set("synchronous_standby_names", "standby1").await;
    primary.wait_for_standby("standby1", true).await;
    assert!(has().await);

    // A role without pg_read_all_stats sees no sync_state: it cannot
    // know, so it counts no standby (and logs why).
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE ROLE plain LOGIN")
        .await
        .expect("a role");
    let plain_url = admin.replace("postgres@", "plain@");
    let plain =
        PgOrderRepository::new(connect_pool(&plain_url, PoolSettings::default()).expect("pool"));
    assert!(!plain.has_sync_standby().await.expect("answers"));

    // Gone: commits would wait for it forever, and none is held by two.
    standby.stop();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while has().await {
        assert!(
            std::time::Instant::now() < deadline,
            "a stopped standby is still reported after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_standby_and_what_it_lacks_is_found_on_the_primary() {
    let primary = PgServer::start();
    ensure_database(&primary.url("orders"))
        .await
        .expect("database");
    migrate(&primary.url("orders")).await.expect("migrations");
    let standby = PgServer::standby_of(&primary, "standby1");
    primary.wait_for_standby("standby1", false).await;
    let repo = PgOrderRepository::new(
        connect_pool(&primary.url("orders"), PoolSettings::default()).expect("pool"),
    )
    .with_reads(connect_read_pool(&standby.url("orders"), PoolSettings::default()).expect("pool"));
    let older = numbered("on_both", 1);
    repo.save(&orders_testkit::new_orders(std::slice::from_ref(&older)))
        .await
        .expect("save");
    while count_on(&standby, "on_both").await == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The standby stops replaying: from now on it lags behind the primary.
    let on_standby = client_of(&standby, "orders").await;
    on_standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause");
    while on_standby
        .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
        .await
        .expect("state")
        .get::<_, String>(0)
        != "paused"
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let newer = numbered("on_primary_only", 2);
    repo.save(&orders_testkit::new_orders(std::slice::from_ref(&newer)))
        .await
        .expect("save");

    // The listing and the warm-up come from the standby: no newest order.
    assert_eq!(listed(&repo).await, ["on_both"]);
    assert_eq!(load(&repo, 10).await, std::slice::from_ref(&older));
    // A lookup the standby misses is answered by the primary.
    let found = repo.find(&newer.order_uid).await.expect("find");
    assert_eq!(found.as_ref(), Some(&newer));
    assert_eq!(
        repo.find(&older.order_uid).await.expect("find"),
        Some(older.clone())
    );
    let unknown = orders_domain::OrderUid::try_from("nowhere".to_owned()).expect("uid");
    assert_eq!(repo.find(&unknown).await.expect("find"), None);

    // The standby gone, every read goes to the primary.
    standby.stop();
    assert_eq!(listed(&repo).await, ["on_primary_only", "on_both"]);
    assert_eq!(load_sorted(&repo, 10).await, [older.clone(), newer.clone()]);
    assert_eq!(
        repo.find(&newer.order_uid).await.expect("find"),
        Some(newer)
    );
}
