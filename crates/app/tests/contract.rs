//! The running server against docs/openapi.yaml: every documented route and
//! status is exercised, answers with the documented content type, and every
//! JSON body validates against the documented schema.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use orders_app::Config;
use orders_testkit::sse::open_events;
use orders_testkit::{SAMPLE, eventually, get, http};
use orders_testkit::{TestDb, TestStream};
use serde_json::{Value, json};
use support::{TokensOnDisk, spawn_with};

const SPEC: &str = include_str!("../../../docs/openapi.yaml");

fn spec() -> Value {
    serde_yaml_ng::from_str(SPEC).expect("docs/openapi.yaml parses")
}

/// Checks one answer against the spec's response for (path, status), and
/// the headers every answer carries: `nosniff`, and `no-store` on the
/// routes that give out orders (those the spec secures with a token).
fn check(spec: &Value, path: &str, status: u16, head: &str, body: &[u8]) {
    let has = |line: &str| head.lines().any(|l| l.trim().eq_ignore_ascii_case(line));
    assert!(
        has("x-content-type-options: nosniff"),
        "GET {path} {status}: no nosniff in {head}"
    );
    if spec["paths"][path]["get"]["security"].is_array() {
        assert!(
            has("cache-control: no-store"),
            "GET {path} {status}: no no-store in {head}"
        );
    }
    let mut response = &spec["paths"][path]["get"]["responses"][status.to_string()];
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/responses/")
            .expect("a reference to a shared response");
        response = &spec["components"]["responses"][name];
    }
    assert!(
        response.is_object(),
        "GET {path} answered {status}, which is not documented"
    );
    let content = response["content"].as_object().expect("content");
    let (media, doc) = content.iter().next().expect("one media type");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    assert!(
        content_type.starts_with(media.as_str()),
        "GET {path} {status}: {content_type} is not {media}"
    );
    if media == "application/json" {
        validate(spec, &doc["schema"], body, &format!("GET {path} {status}"));
    }
}

/// Checks `body` is JSON valid against `schema` (which may refer to the
/// spec's components).
fn validate(spec: &Value, schema: &Value, body: &[u8], what: &str) {
    let mut schema = schema.clone();
    schema["components"] = spec["components"].clone();
    let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
    let instance: Value = serde_json::from_slice(body).expect("a JSON body");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?} in {instance}");
}

#[tokio::test]
async fn every_documented_route_and_status_answers_as_documented() {
    let spec = spec();
    // A low rate limit, so the last step can reach it.
    // One event stream at most, so a second is refused.
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        rate_limit: 20,
        sse_max_clients: 1,
        ..c
    })
    .await;
    app.publish(SAMPLE.to_vec(), None).await;
    app.publish(b"{not json".to_vec(), None).await;
    app.wait_stored(1).await;
    app.wait_rows("rejected_messages", 1).await;
    // The same app with API_TOKENS_FILE: the order-bearing routes ask for a token.
    let tokens = TokensOnDisk::new("desk:desk-0123456789abcdef\n");
    let tokens_path = tokens.0.clone();
    let signed = spawn_with(TestDb::not_yet_created(), TestStream::new(), move |c| {
        Config {
            api_tokens_file: orders_app::config::TokensFile(Some(tokens_path)),
            ..c
        }
    })
    .await;
    // An app whose rate limit refills one request a second, for the
    // 429s: over it, a client stays over it for a whole second, however
    // slow the machine is between two requests (a limit refilling every
    // 50 ms let a request through on a busy machine, and the event
    // stream it opened never ended).
    let limited = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        rate_limit: 1,
        ..c
    })
    .await;
    let mut exercised = BTreeSet::new();
    // The event stream, resumed from the start: the stored order comes
    // first, its data an OrderSummary.
    let events = "/orders/events";
    let mut stream = open_events(app.addr, events, Some("0")).await;
    check(&spec, events, stream.status, &stream.head, b"");
    assert!(
        stream
            .head
            .to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{}",
        stream.head
    );
    let event = stream
        .next_event(Duration::from_secs(10))
        .await
        .expect("the stored order");
    assert_eq!(event.event, "order");
    assert!(event.id.is_some());
    validate(
        &spec,
        &json!({ "$ref": "#/components/schemas/OrderSummary" }),
        event.data.as_bytes(),
        "an order event's data",
    );
    exercised.insert((events.to_owned(), stream.status));
    let refused = async |last_event_id: Option<&str>, status: u16| {
        let answer = open_events(app.addr, events, last_event_id).await;
        assert_eq!(answer.status, status, "{}", answer.head);
        let head = answer.head.clone();
        check(&spec, events, status, &head, &answer.rest().await);
        head
    };
    let head = refused(None, 503).await;
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    drop(stream);
    refused(Some("x"), 400).await;
    exercised.insert((events.to_owned(), 503));
    exercised.insert((events.to_owned(), 400));
    // `rest` is the query string, or for a path with `{id}`, the id.
    let mut exchange_at = async |at, path: &str, rest: &str, status: u16| {
        let target = if path.contains("{id}") {
            path.replace("{id}", rest)
        } else {
            format!("{path}{rest}")
        };
        let (got, head, body) = http(at, "GET", &target).await;
        assert_eq!(got, status, "GET {target}");
        check(&spec, path, status, &head, &body);
        exercised.insert((path.to_owned(), status));
        body
    };
    exchange_at(signed.addr, "/order", "?order_uid=b563feb7b2b84b6test", 401).await;
    exchange_at(signed.addr, "/orders", "", 401).await;
    exchange_at(signed.addr, "/rejected", "", 401).await;
    exchange_at(signed.addr, "/rejected/{id}", "1", 401).await;
    exchange_at(signed.addr, "/orders/events", "", 401).await;
    signed.shutdown.cancel();
    let mut exchange =
        async |path: &str, rest: &str, status: u16| exchange_at(app.addr, path, rest, status).await;

    let body = exchange("/order", "?order_uid=b563feb7b2b84b6test", 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json"),
        serde_json::from_slice::<Value>(SAMPLE).expect("json")
    );
    exchange("/order", "?order_uid=a%20b", 400).await;
    exchange("/order", "", 400).await;
    exchange("/order", "?order_uid=unknown", 404).await;
    let body = exchange("/orders", "?limit=1", 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["orders"][0]["order_uid"],
        json!("b563feb7b2b84b6test")
    );
    exchange("/orders", "?limit=0", 400).await;
    let body = exchange(
        "/orders",
        "?track_number=WBILMTESTTRACK&from=2021-01-01T00:00:00Z",
        200,
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["orders"][0]["order_uid"],
        json!("b563feb7b2b84b6test")
    );
    exchange(
        "/orders",
        "?phone=%2B9720000000&email=test%40gmail.com",
        400,
    )
    .await;
    let body = exchange("/rejected", "?reason=invalid_json&limit=5", 200).await;
    let id = serde_json::from_slice::<Value>(&body).expect("json")["rejected"][0]["id"].to_string();
    exchange("/rejected", "?reason=unknown", 400).await;
    let body = exchange("/rejected/{id}", &id, 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["payload"],
        json!("{not json")
    );
    exchange("/rejected/{id}", "x", 400).await;
    exchange("/rejected/{id}", "999999", 404).await;
    exchange("/healthz", "", 200).await;
    exchange("/readyz", "", 200).await;
    exchange("/metrics", "", 200).await;
    exchange("/", "", 200).await;

    // The database goes away: what is not in memory cannot be answered.
    app.db
        .client()
        .await
        .batch_execute("SELECT 1")
        .await
        .expect("db answers before");
    drop_database(&app.db.url).await;
    let addr = app.addr;
    eventually("/readyz 503", Duration::from_secs(10), || async move {
        get(addr, "/readyz").await.0 == 503
    })
    .await;
    let body = exchange("/readyz", "", 503).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["database"],
        json!(false)
    );
    exchange("/order", "?order_uid=not-cached", 503).await;
    exchange("/orders", "", 503).await;
    exchange("/rejected", "", 503).await;
    exchange("/rejected/{id}", &id, 503).await;
    exchange("/order", "?order_uid=b563feb7b2b84b6test", 200).await;

    // Over the client's rate: every order-bearing route refuses it (on
    // the app whose limit refills once a second).
    let addr = limited.addr;
    let over_the_rate = async || {
        for _ in 0..10 {
            if get(addr, "/order?order_uid=b563feb7b2b84b6test").await.0 == 429 {
                break;
            }
        }
    };
    over_the_rate().await;
    let (status, head, _) = http(addr, "GET", "/order?order_uid=b563feb7b2b84b6test").await;
    assert_eq!(status, 429);
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    for (path, rest) in [
        ("/order", "?order_uid=b563feb7b2b84b6test"),
        ("/orders", ""),
        ("/rejected", ""),
        ("/rejected/{id}", id.as_str()),
        (events, ""),
    ] {
        over_the_rate().await;
        exchange_at(addr, path, rest, 429).await;
    }

    let documented: BTreeSet<(String, u16)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item["get"]["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|status| (path.clone(), status.parse().expect("a status")))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        documented, exercised,
        "documented routes and statuses not exercised (or the reverse)"
    );
    app.shutdown.cancel();
}

async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().expect("a database name").to_owned();
    let admin = orders_testkit::admin_database_url();
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop database");
}
