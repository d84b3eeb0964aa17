//! Finding orders and reading rejected messages over HTTP, end to end: the
//! real app, orders and bad messages published on the broker.

mod support;

use orders_testkit::{get, order_value};
use serde_json::{Value, json};
use support::{TestApp, spawn_app};

/// GETs `path` and returns the status and the JSON body.
async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let (status, body) = get(app.addr, path).await;
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, json)
}

fn uids(page: &Value) -> Vec<&str> {
    page["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["order_uid"].as_str().expect("uid"))
        .collect()
}

#[tokio::test]
async fn orders_are_found_by_what_the_customer_has_and_only_by_exact_values() {
    // setup: Ann has three orders, Bob one
    let app = spawn_app().await;
    for n in 1..=4u64 {
        let mut order = order_value(&format!("cust-{n}"), n);
        let (customer, phone, email) = if n < 4 {
            ("ann", "+7 (900) 111-22-33", "Ann@Example.com")
        } else {
            ("bob", "+7 900 444 55 66", "bob@example.com")
        };
        order["customer_id"] = json!(customer);
        order["delivery"]["phone"] = json!(phone);
        order["delivery"]["email"] = json!(email);
        order["track_number"] = json!(format!("WBTRACK{n}"));
        app.publish(serde_json::to_vec(&order).expect("json"), None)
            .await;
    }
    app.wait_stored(4).await;

    // exec and check: each key, newest first, paginated
    let (status, page) = get_json(&app, "/orders?phone=%2B79001112233&limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(uids(&page), ["cust-3", "cust-2"]);
    let next = page["next"].as_str().expect("a next page");
    let (_, rest) = get_json(
        &app,
        &format!("/orders?phone=%2B79001112233&limit=2&before={next}"),
    )
    .await;
    assert_eq!(uids(&rest), ["cust-1"]);
    assert_eq!(rest["next"], Value::Null);
    for (query, want) in [
        (
            "email=ann%40EXAMPLE.com",
            vec!["cust-3", "cust-2", "cust-1"],
        ),
        ("customer_id=bob", vec!["cust-4"]),
        ("track_number=WBTRACK2", vec!["cust-2"]),
        ("transaction=cust-3", vec!["cust-3"]),
        (
            "customer_id=ann&from=2020-09-13T12:26:42Z&to=2020-09-13T12:26:43Z",
            vec!["cust-2"],
        ),
        // never a part of a value
        ("track_number=WBTRACK", vec![]),
        ("email=ann%40example", vec![]),
        ("customer_id=an", vec![]),
    ] {
        let (status, page) = get_json(&app, &format!("/orders?{query}")).await;
        assert_eq!((status, uids(&page)), (200, want), "{query}");
    }

    // bad searches are 400 and name the parameter
    for (query, reason) in [
        ("phone=", "phone: empty"),
        ("phone=1&email=a%40b", "phone and email given together"),
        ("from=2021-11-26", "from: expected an RFC 3339 time"),
        ("name=Ann", "unknown parameter \"name\""),
    ] {
        let (status, body) = get_json(&app, &format!("/orders?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            body["error"].as_str().expect("error").starts_with(reason),
            "{query}: {body}"
        );
    }
    app.shutdown.cancel();
}

#[tokio::test]
async fn rejected_messages_are_listed_by_reason_and_read_with_their_bytes() {
    // setup: a message that is not JSON (replayed), one that is not UTF-8, and a conflict
    let app = spawn_app().await;
    app.publish_rejections(b"{not json").await;

    // exec
    let (status, all) = get_json(&app, "/rejected").await;
    let (_, conflicts) = get_json(&app, "/rejected?reason=conflict").await;
    let (_, first_page) = get_json(&app, "/rejected?limit=2").await;
    let next = first_page["next"].as_i64().expect("a next page");
    let (_, last_page) = get_json(&app, &format!("/rejected?limit=2&before={next}")).await;

    // check: the list, newest first
    assert_eq!(status, 200);
    let rows = all["rejected"].as_array().expect("rows");
    let reasons: Vec<&str> = rows
        .iter()
        .map(|r| r["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(reasons, ["conflict", "invalid_json", "invalid_json"]);
    assert_eq!(rows[0]["order_uid"], "taken");
    assert_eq!(rows[0]["replayed_at"], Value::Null);
    assert_eq!(conflicts["rejected"].as_array().expect("rows").len(), 1);
    assert_eq!(last_page["rejected"].as_array().expect("rows").len(), 1);
    assert_eq!(last_page["next"], Value::Null);

    // check: each message whole, as text or as base64 (the two invalid
    // ones may have been recorded in either order)
    let mut read = Vec::new();
    for row in &rows[1..] {
        let (status, message) = get_json(&app, &format!("/rejected/{}", row["id"])).await;
        assert_eq!(status, 200);
        assert_eq!(message["replayed_at"], row["replayed_at"]);
        read.push(message);
    }
    read.sort_by_key(|m| m["payload_encoding"].as_str().map(str::to_owned));
    let [binary, text] = [&read[0], &read[1]];
    assert_eq!(text["payload"], "{not json");
    assert_eq!(text["size"], 9);
    assert_eq!(text["payload_encoding"], "utf-8");
    assert!(text["replayed_at"].is_string(), "{text}");
    assert!(
        text["detail"]
            .as_str()
            .expect("detail")
            .starts_with("invalid JSON"),
        "{text}"
    );
    assert_eq!(text["stream"], app.stream.stream);
    assert_eq!(text["subject"], app.stream.subject);
    assert_eq!(binary["payload"], "//5iaW5hcnk=");
    assert_eq!(binary["size"], 8);
    assert_eq!(binary["payload_encoding"], "base64");
    assert_eq!(binary["replayed_at"], Value::Null);

    // and the errors
    assert_eq!(get(app.addr, "/rejected/999999").await.0, 404);
    for path in ["/rejected/x", "/rejected?reason=bad", "/rejected?before=-1"] {
        assert_eq!(get(app.addr, path).await.0, 400, "{path}");
    }
    app.shutdown.cancel();
}
