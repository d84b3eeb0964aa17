//! "Exactly once", checked where users would look: in PostgreSQL (rows per
//! uid in each table) and over HTTP (every uid answers with equal JSON).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::get;

/// Fails unless every order in `orders` is stored exactly once: one row per
/// uid in `order_info`, `delivery` and `payment`, as many `items` rows as it
/// has items, and no row of any other order.
pub async fn assert_stored_exactly_once(client: &tokio_postgres::Client, orders: &[Value]) {
    let expected_items: HashMap<&str, i64> = orders
        .iter()
        .map(|o| {
            let uid = o["order_uid"].as_str().expect("an order_uid");
            let items = o["items"].as_array().map_or(0, Vec::len);
            (uid, i64::try_from(items).expect("few items"))
        })
        .collect();
    assert_eq!(
        expected_items.len(),
        orders.len(),
        "the orders' uids repeat"
    );
    for table in ["order_info", "delivery", "payment", "items"] {
        let rows = client
            .query(
                &format!("SELECT order_uid, count(*) FROM {table} GROUP BY order_uid"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("counting {table}: {e}"));
        let counts: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut wrong = Vec::new();
        for (uid, items) in &expected_items {
            let want = if table == "items" { *items } else { 1 };
            let got = counts.get(*uid).copied().unwrap_or(0);
            if got != want {
                wrong.push(format!("{uid}: {got} rows, not {want}"));
            }
        }
        let strangers = counts
            .keys()
            .filter(|uid| !expected_items.contains_key(uid.as_str()))
            .count();
        assert!(
            wrong.is_empty() && strangers == 0,
            "{table}: {} orders stored other than once (first: {:?}), {strangers} unknown uids",
            wrong.len(),
            wrong.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// Fails unless `GET /order?order_uid=...` on `addr` answers 200 with JSON
/// equal to the order, for every order (eight requests at a time).
pub async fn assert_answers_equal(addr: SocketAddr, orders: &[Value]) {
    let orders: Arc<Vec<Value>> = Arc::new(orders.to_vec());
    let workers = 8;
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let orders = Arc::clone(&orders);
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                for order in orders.iter().skip(worker).step_by(workers) {
                    let uid = order["order_uid"].as_str().expect("an order_uid");
                    let (status, body) = get(addr, &format!("/order?order_uid={uid}")).await;
                    let answer: Option<Value> = serde_json::from_slice(&body).ok();
                    if status != 200 || answer.as_ref() != Some(order) {
                        wrong.push(format!(
                            "{uid}: {status} {}",
                            String::from_utf8_lossy(&body)
                                .chars()
                                .take(120)
                                .collect::<String>()
                        ));
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for task in tasks {
        wrong.extend(task.await.expect("a checker task"));
    }
    assert!(
        wrong.is_empty(),
        "{addr}: {} of {} orders not answered as stored (first: {:?})",
        wrong.len(),
        orders.len(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );
}
