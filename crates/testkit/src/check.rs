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
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(answer) if status == 200 => {
                            if let Some(diff) = first_difference("", order, &answer) {
                                wrong.push(format!("{uid}: {diff}"));
                            }
                        }
                        Ok(answer) => wrong.push(format!("{uid}: {status} {answer}")),
                        Err(e) => {
                            let text = String::from_utf8_lossy(&body);
                            let tail: String = text.chars().rev().take(80).collect();
                            wrong.push(format!(
                                "{uid}: {status}, {} bytes, not JSON ({e}): ...{}",
                                body.len(),
                                tail.chars().rev().collect::<String>()
                            ));
                        }
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

/// Where `got` first differs from `want`: a JSON pointer and both values.
fn first_difference(path: &str, want: &Value, got: &Value) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (key, value) in w {
                let here = format!("{path}/{key}");
                match g.get(key) {
                    Some(other) => {
                        if let Some(diff) = first_difference(&here, value, other) {
                            return Some(diff);
                        }
                    }
                    None => return Some(format!("{here} missing")),
                }
            }
            g.keys()
                .find(|k| !w.contains_key(*k))
                .map(|k| format!("{path}/{k} not expected"))
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(&format!("{path}/{i}"), a, b)),
        _ if want == got => None,
        _ => Some(format!("{path}: expected {want}, got {got}")),
    }
}

#[cfg(test)]
mod tests {
    use super::first_difference;
    use serde_json::json;

    #[test]
    fn differences_are_located() {
        let want = json!({"a": {"b": [1, 2]}, "c": "x"});
        assert_eq!(first_difference("", &want, &want), None);
        assert_eq!(
            first_difference("", &want, &json!({"a": {"b": [1, 3]}, "c": "x"})).as_deref(),
            Some("/a/b/1: expected 2, got 3")
        );
        assert_eq!(
            first_difference("", &want, &json!({"a": {"b": [1, 2]}})).as_deref(),
            Some("/c missing")
        );
        assert_eq!(
            first_difference("", &want, &json!({"a": {"b": [1]}, "c": "x"})).as_deref(),
            Some("/a/b: expected [1,2], got [1]")
        );
    }
}
