//! The web page in a real browser: headless Chromium, driven over WebDriver
//! (chromedriver), against the real app on real PostgreSQL and NATS.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`just browser` installs
//! them). Without them the tests fail and say so; they never skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::error::NewSessionError;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use orders_testkit::servers::free_port;
use orders_testkit::{SAMPLE, order_value, unique_name};
use serde_json::{Value, json};
use support::{TestApp, spawn_app};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const SAMPLE_UID: &str = "b563feb7b2b84b6test";

/// How long the page may take to reach a state. Generous: the tests run in
/// parallel with the rest of the suite on small machines.
const PATIENCE: Duration = Duration::from_secs(15);

/// A WebDriver session on a headless Chromium of its own.
struct Browser {
    client: Client,
    _driver: Driver,
}

/// A running chromedriver and its Chromium profile. Dropping it ends both:
/// chromedriver runs in a process group of its own (with the Chromium it
/// starts), and the whole group is killed; then the profile is removed.
struct Driver {
    child: Child,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session with a
    /// window of `width` x `height`.
    async fn start(width: u32, height: u32) -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: run `just browser` (or install the Debian packages \
                 `chromium` and `chromium-driver`) to run the browser tests"
            );
        }
        let profile = std::env::temp_dir().join(unique_name("chromium_profile"));
        std::fs::create_dir_all(&profile).expect("a temporary Chromium profile directory");

        let port = free_port();
        let mut driver = {
            use std::os::unix::process::CommandExt as _;
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so Drop can end Chromium with it.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}; try `just browser`"));
            Driver { child, profile }
        };

        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Needed as root (CI containers), harmless otherwise.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    // The machine has no internet: keep Chromium from
                    // calling home (updates, sync, field trials, QUIC probes).
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--disable-default-apps",
                    "--hide-scrollbars",
                    "--force-color-profile=srgb",
                    "--lang=en-US",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", driver.profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };

        let client = connect_when_up(port, capabilities, &mut driver).await;
        let browser = Browser {
            client,
            _driver: driver,
        };
        browser.set_viewport(width, height).await;
        browser
    }

    /// Sizes the window so the page itself (the viewport) is `width` x
    /// `height`: the window's size includes the browser's own frame.
    async fn set_viewport(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("window size");
        let inner = self
            .js("return [window.innerWidth, window.innerHeight];", vec![])
            .await;
        let frame = |i: usize, want: u32| {
            let got = inner[i].as_u64().expect("a size in px");
            u32::try_from(got).map_or(0, |got| want.saturating_sub(got))
        };
        let (extra_w, extra_h) = (frame(0, width), frame(1, height));
        if extra_w > 0 || extra_h > 0 {
            self.client
                .set_window_size(width + extra_w, height + extra_h)
                .await
                .expect("window size");
        }
    }

    /// Opens `path` on the app.
    async fn open(&self, app: &TestApp, path: &str) {
        self.client
            .goto(&format!("http://{}{path}", app.addr))
            .await
            .expect("the page opens");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Types into the search box (replacing what is there) and presses Enter.
    async fn search(&self, uid: &str) {
        self.type_and_enter("order_uid", uid).await;
    }

    /// Types into the input with this id (replacing what is there) and presses Enter.
    async fn type_and_enter(&self, id: &str, text: &str) {
        let input = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"));
        input.clear().await.expect("clear the input");
        input
            .send_keys(&format!("{text}{}", char::from(Key::Enter)))
            .await
            .expect("type into the input");
    }

    /// Waits until the status line is in `state`, and returns its text.
    async fn wait_state(&self, state: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self
                .js(
                    "return [document.getElementById('status').dataset.state,
                             document.getElementById('status-text').textContent];",
                    vec![],
                )
                .await;
            if now[0] == state {
                return now[1].as_str().unwrap_or_default().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the page did not reach state {state:?} in {PATIENCE:?}; it shows {now}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `script` returns something for which `done` holds, and returns it.
    async fn wait_for(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.js(script, vec![]).await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {what}; last saw {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the element with this CSS selector.
    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .expect("element text")
    }

    async fn address(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .to_string()
    }

    /// The items table, one row per item: name, brand, size, price, sale, total, status.
    async fn item_rows(&self) -> Vec<Vec<String>> {
        let rows = self
            .js(
                "return [...document.querySelectorAll('#items tbody tr')].map(r =>
                   [r.cells[0].firstChild.textContent,
                    ...[...r.cells].slice(1).map(c => c.textContent)]);",
                vec![],
            )
            .await;
        serde_json::from_value(rows).expect("rows of strings")
    }

    /// Clicks the element with this CSS selector.
    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Picks the option of this value in the `<select>` with this id.
    async fn pick(&self, select: &str, value: &str) {
        self.client
            .find(Locator::Id(select))
            .await
            .unwrap_or_else(|e| panic!("no select #{select}: {e}"))
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("picking {value} in #{select}: {e}"));
    }

    /// Clicks the copy button `button` and checks that `status` confirms
    /// the copy (or, without a clipboard, the selection).
    async fn copy_and_confirm(&self, button: &str, status: &str) {
        self.click(&format!("#{button}")).await;
        let copied = self
            .wait_for(
                "the copy to be confirmed",
                &format!("return document.getElementById('{status}').textContent;"),
                |v| v.as_str().is_some_and(|s| !s.is_empty()),
            )
            .await;
        assert!(
            copied == "Copied." || copied == "Selected: press Ctrl+C to copy.",
            "{copied}"
        );
    }

    /// Ends the session (Chromium quits), then chromedriver (on drop).
    async fn close(self) {
        self.client.clone().close().await.expect("the session ends");
    }
}

/// Opens a WebDriver session once chromedriver listens (connection refused
/// until then).
async fn connect_when_up(
    port: u16,
    capabilities: serde_json::Map<String, Value>,
    driver: &mut Driver,
) -> Client {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities.clone());
        let error = match builder.connect(&url).await {
            Ok(client) => return client,
            // Not listening yet: try again.
            Err(e @ (NewSessionError::Failed(_) | NewSessionError::FailedC(_))) => e,
            Err(e) => panic!(
                "{CHROMEDRIVER} could not start {CHROMIUM}: {e}; \
                 run `just browser` if either is missing"
            ),
        };
        if let Ok(Some(status)) = driver.child.try_wait() {
            panic!("{CHROMEDRIVER} exited with {status} before a session opened: {error}");
        }
        assert!(
            Instant::now() < deadline,
            "no WebDriver session from {CHROMEDRIVER} on port {port} with Chromium at \
             {CHROMIUM} in {PATIENCE:?}: {error}; run `just browser` if they are missing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(app: &TestApp, order: &Value) {
    let uid = order["order_uid"].as_str().expect("uid").to_owned();
    app.publish(serde_json::to_vec(order).expect("json"), Some(&uid))
        .await;
}

#[tokio::test]
async fn searching_a_uid_shows_the_order_its_items_and_total() {
    // setup: an order with two items
    let app = spawn_app().await;
    let mut wanted = order_value("two_items", 7);
    wanted["track_number"] = json!("TRACK-TWO-ITEMS");
    let mut second = wanted["items"][0].clone();
    second["name"] = json!("Lipstick");
    second["brand"] = json!("Essence");
    second["price"] = json!(200);
    second["sale"] = json!(10);
    second["total_price"] = json!(180);
    second["status"] = json!(200);
    wanted["items"].as_array_mut().expect("items").push(second);
    wanted["payment"]["goods_total"] = json!(497);
    wanted["payment"]["amount"] = json!(1997);
    publish(&app, &wanted).await;
    app.wait_stored(1).await;
    let browser = Browser::start(1280, 900).await;
    browser.open(&app, "/").await;

    // the search box has a label and the focus
    let focus = browser
        .js(
            "const a = document.activeElement;
             return [a.id, a.labels ? a.labels.length : 0];",
            vec![],
        )
        .await;
    assert_eq!(focus, json!(["order_uid", 1]), "the search box is focused");

    // exec
    browser.search("two_items").await;

    // check
    browser.wait_state("found").await;
    assert_eq!(browser.text("#order-uid").await, "two_items");
    assert_eq!(browser.text("#track-number").await, "TRACK-TWO-ITEMS");
    assert_eq!(
        browser.item_rows().await,
        vec![
            vec!["Mascaras", "Vivienne Sabo", "0", "453", "30%", "317", "202"],
            vec!["Lipstick", "Essence", "0", "200", "10%", "180", "200"],
        ]
    );
    assert_eq!(browser.text("#items-total").await, "497 USD");
    assert_eq!(browser.text("#payment-amount").await, "1997 USD");
    let payment = browser.text("#payment").await;
    for part in ["497 USD", "1500 USD", "alpha", "wbpay"] {
        assert!(payment.contains(part), "{part} missing in {payment:?}");
    }
    assert!(
        browser.address().await.ends_with("/?order_uid=two_items"),
        "the uid is in the address: {}",
        browser.address().await
    );
    assert_eq!(
        browser.client.title().await.expect("title"),
        "two_items · Order lookup"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_deep_link_shows_its_order_and_back_returns_to_it() {
    // setup
    let app = spawn_app().await;
    let mut first = order_value("first_order", 1);
    first["track_number"] = json!("TRACK-FIRST");
    let mut second = order_value("second_order", 2);
    second["track_number"] = json!("TRACK-SECOND");
    publish(&app, &first).await;
    publish(&app, &second).await;
    app.wait_stored(2).await;
    let browser = Browser::start(1280, 900).await;

    // exec: open a shared link
    browser.open(&app, "/?order_uid=first_order").await;

    // check: the order is there at once, and the box holds its uid
    browser.wait_state("found").await;
    assert_eq!(browser.text("#track-number").await, "TRACK-FIRST");
    assert_eq!(
        browser
            .js("return document.getElementById('order_uid').value;", vec![])
            .await,
        "first_order"
    );

    // exec: look another one up, then go back
    browser.search("second_order").await;
    browser
        .wait_for(
            "the second order",
            "return document.getElementById('track-number').textContent;",
            |v| v == "TRACK-SECOND",
        )
        .await;
    browser.wait_state("found").await;
    browser.client.back().await.expect("back");

    // check: the first order again
    browser
        .wait_for(
            "the first order after going back",
            "return document.getElementById('track-number').textContent;",
            |v| v == "TRACK-FIRST",
        )
        .await;
    browser.wait_state("found").await;
    assert!(
        browser.address().await.ends_with("/?order_uid=first_order"),
        "{}",
        browser.address().await
    );
    browser.close().await;
}

#[tokio::test]
async fn unknown_and_malformed_uids_say_what_is_wrong() {
    // setup
    let app = spawn_app().await;
    let browser = Browser::start(1280, 900).await;
    browser.open(&app, "/").await;

    // an unknown uid
    browser.search("nobody_here").await;
    let text = browser.wait_state("not-found").await;
    assert_eq!(text, "No order with uid nobody_here.");
    assert_eq!(
        browser
            .js("return document.getElementById('order').hidden;", vec![])
            .await,
        true,
        "no order is drawn"
    );

    // a uid breaking the character rule: the server's reason is shown
    browser.search("bad uid!").await;
    let text = browser.wait_state("invalid").await;
    assert!(
        text.contains("not a valid order UID: may hold only letters, digits, '_' and '-'"),
        "{text}"
    );

    // a uid breaking the length rule
    browser.search(&"x".repeat(65)).await;
    let text = browser.wait_state("invalid").await;
    assert!(
        text.contains("not a valid order UID: longer than 64 characters"),
        "{text}"
    );

    // never an alert box
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no alert is open"
    );
    browser.close().await;
}

#[tokio::test]
async fn markup_in_an_order_is_shown_as_text_and_never_runs() {
    // setup: an order whose strings are HTML
    let app = spawn_app().await;
    let mut hostile = order_value("hostile_order", 3);
    hostile["delivery"]["name"] = json!("<script>window.__pwned=1</script>");
    hostile["delivery"]["city"] = json!("\"><svg onload=window.__pwned=3>");
    hostile["items"][0]["name"] = json!("<img src=x onerror=window.__pwned=2>");
    hostile["track_number"] = json!("<b>bold</b>");
    hostile["customer_id"] = json!("<iframe src=/></iframe>");
    publish(&app, &hostile).await;
    app.wait_stored(1).await;
    let browser = Browser::start(1280, 900).await;

    // exec
    browser.open(&app, "/?order_uid=hostile_order").await;
    browser.wait_state("found").await;
    // Let anything that could run (an image error, a frame) have its turn.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // check: the text is there literally
    let delivery = browser.text("#delivery").await;
    assert!(
        delivery.contains("<script>window.__pwned=1</script>"),
        "{delivery}"
    );
    assert!(
        delivery.contains("\"><svg onload=window.__pwned=3>"),
        "{delivery}"
    );
    assert_eq!(
        browser.item_rows().await[0][0],
        "<img src=x onerror=window.__pwned=2>"
    );
    assert_eq!(browser.text("#track-number").await, "<b>bold</b>");
    assert_eq!(browser.text("#customer").await, "<iframe src=/></iframe>");
    // check: no element was made from it and nothing ran
    let made = browser
        .js(
            "return document.querySelectorAll(
               'main script, main img, main svg, main iframe, main b').length;",
            vec![],
        )
        .await;
    assert_eq!(made, json!(0), "elements parsed from order data");
    let pwned = browser
        .js(
            "return window.__pwned === undefined ? null : window.__pwned;",
            vec![],
        )
        .await;
    assert_eq!(pwned, Value::Null, "a script from the order ran");
    // and the recent list shows the same uid as text
    browser
        .wait_for(
            "the recent list",
            "return document.querySelectorAll('#recent-list a').length;",
            |v| v == 1,
        )
        .await;
    browser.close().await;
}

#[tokio::test]
async fn recent_orders_are_listed_newest_first_page_by_page_and_open_on_click() {
    // setup: 25 orders, one second apart (recent_25 is the newest)
    let app = spawn_app().await;
    for n in 1..=25 {
        publish(&app, &order_value(&format!("recent_{n:02}"), n)).await;
    }
    app.wait_stored(25).await;
    let browser = Browser::start(1280, 900).await;
    let uids = "return [...document.querySelectorAll('#recent-list a')].map(a => a.dataset.uid);";

    // exec
    browser.open(&app, "/").await;

    // check: the first page, newest first, with dates and amounts
    let first_page = browser
        .wait_for("the first page of recent orders", uids, |v| {
            v.as_array().is_some_and(|a| a.len() == 20)
        })
        .await;
    let expected: Vec<String> = (6..=25).rev().map(|n| format!("recent_{n:02}")).collect();
    assert_eq!(first_page, json!(expected));
    let newest = browser.text("#recent-list li:first-child").await;
    assert!(newest.contains("recent_25"), "{newest}");
    assert!(newest.contains("1525 USD"), "{newest}");
    assert!(newest.contains("2020"), "the date is shown: {newest}");

    // exec: the next page
    browser
        .client
        .find(Locator::Id("more"))
        .await
        .expect("a More button")
        .click()
        .await
        .expect("click More");

    // check: all 25, and no more to load
    let all = browser
        .wait_for("the second page of recent orders", uids, |v| {
            v.as_array().is_some_and(|a| a.len() == 25)
        })
        .await;
    assert_eq!(all[24], "recent_01");
    assert_eq!(
        browser
            .js("return document.getElementById('more').hidden;", vec![])
            .await,
        true
    );

    // exec: open one from the list
    browser
        .client
        .find(Locator::Css("#recent-list a[data-uid='recent_10']"))
        .await
        .expect("recent_10 is listed")
        .click()
        .await
        .expect("click recent_10");

    // check
    browser.wait_state("found").await;
    assert_eq!(browser.text("#order-uid").await, "recent_10");
    assert_eq!(browser.text("#payment-amount").await, "1510 USD");
    assert!(
        browser.address().await.ends_with("/?order_uid=recent_10"),
        "{}",
        browser.address().await
    );
    let current = browser
        .js(
            "return [...document.querySelectorAll('#recent-list a[aria-current]')]
               .map(a => a.dataset.uid);",
            vec![],
        )
        .await;
    assert_eq!(current, json!(["recent_10"]));
    assert_eq!(
        browser
            .js("return document.activeElement.id;", vec![])
            .await,
        "order-title",
        "the focus moves to the opened order"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_newly_stored_order_appears_on_top_without_a_reload_and_pause_holds_it_back() {
    // setup: one order listed, the page live
    let app = spawn_app().await;
    publish(&app, &order_value("listed_first", 1)).await;
    app.wait_stored(1).await;
    let browser = Browser::start(1280, 900).await;
    let uids = "return [...document.querySelectorAll('#recent-list a')].map(a => a.dataset.uid);";
    let live_state = "return document.getElementById('live-state').dataset.state;";
    browser.open(&app, "/").await;
    browser
        .wait_for("the list", uids, |v| v == &json!(["listed_first"]))
        .await;
    browser
        .wait_for("live updates", live_state, |v| v == "live")
        .await;

    // exec: an order is stored
    publish(&app, &order_value("arrived_live", 0)).await;

    // check: on top (though its date is older), once, without a reload
    browser
        .wait_for("the new order on top", uids, |v| {
            v == &json!(["arrived_live", "listed_first"])
        })
        .await;
    let newest = browser.text("#recent-list li:first-child").await;
    assert!(newest.contains("1500 USD"), "{newest}");

    // exec: pause, then an order is stored
    let toggle = browser
        .client
        .find(Locator::Id("live"))
        .await
        .expect("a pause button");
    toggle.click().await.expect("click Pause");
    browser
        .wait_for("paused", live_state, |v| v == "paused")
        .await;
    assert_eq!(
        browser
            .js(
                "return document.getElementById('live').getAttribute('aria-pressed');",
                vec![]
            )
            .await,
        "true"
    );
    publish(&app, &order_value("while_paused", 2)).await;
    app.wait_stored(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // check: not shown while paused
    assert_eq!(
        browser.js(uids, vec![]).await,
        json!(["arrived_live", "listed_first"])
    );

    // exec: resume
    toggle.click().await.expect("click Resume");

    // check: caught up from the last event id, on top, nothing twice
    browser
        .wait_for("the order stored while paused", uids, |v| {
            v == &json!(["while_paused", "arrived_live", "listed_first"])
        })
        .await;
    browser.close().await;
}

#[tokio::test]
async fn an_unreachable_server_is_shown_with_a_retry() {
    // setup: the page is loaded, then the service goes away
    let app = spawn_app().await;
    let browser = Browser::start(1280, 900).await;
    browser.open(&app, "/").await;
    browser
        .wait_for(
            "the recent list to load",
            "return document.getElementById('recent-status').textContent;",
            |v| v == "No orders yet.",
        )
        .await;
    let (_db, _stream, stopped) = app.stop().await;
    stopped.expect("clean stop");

    // exec
    browser.search("anything").await;

    // check
    let text = browser.wait_state("unreachable").await;
    assert!(text.contains("The server cannot be reached"), "{text}");
    assert_eq!(
        browser
            .js("return document.getElementById('retry').hidden;", vec![])
            .await,
        false,
        "a Try again button is offered"
    );
    assert!(browser.client.get_alert_text().await.is_err(), "no alert");
    browser.close().await;
}

#[tokio::test]
async fn the_page_fits_a_phone_screen() {
    // setup
    let app = spawn_app().await;
    app.publish(SAMPLE.to_vec(), Some(SAMPLE_UID)).await;
    app.wait_stored(1).await;
    let browser = Browser::start(390, 844).await;

    // exec
    browser
        .open(&app, &format!("/?order_uid={SAMPLE_UID}"))
        .await;
    browser.wait_state("found").await;

    // check: nothing sticks out sideways, the search box is usable
    let sizes = browser
        .js(
            "const d = document.documentElement;
             const box = document.getElementById('order_uid').getBoundingClientRect();
             return [d.scrollWidth, d.clientWidth, Math.round(box.right), Math.round(box.width)];",
            vec![],
        )
        .await;
    let [scroll, client, right, width] = [0, 1, 2, 3].map(|i| sizes[i].as_i64().expect("px"));
    assert!(client <= 400, "a phone-sized viewport, got {client}px");
    assert!(scroll <= client, "the page scrolls sideways: {sizes}");
    assert!(
        right <= client && width >= 150,
        "the search box fits: {sizes}"
    );
    browser.close().await;
}

#[tokio::test]
async fn sample_order_page_is_drawn_and_screenshotted() {
    // setup
    let app = spawn_app().await;
    app.publish(SAMPLE.to_vec(), Some(SAMPLE_UID)).await;
    app.wait_stored(1).await;
    let browser = Browser::start(1280, 900).await;

    // exec
    browser
        .open(&app, &format!("/?order_uid={SAMPLE_UID}"))
        .await;
    browser.wait_state("found").await;
    browser
        .wait_for(
            "the recent list",
            "return document.querySelectorAll('#recent-list a').length;",
            |v| v == 1,
        )
        .await;

    // check: drawn as the sample says, styled by our stylesheet
    assert_eq!(browser.text("#track-number").await, "WBILMTESTTRACK");
    assert_eq!(browser.text("#customer").await, "test");
    assert_eq!(browser.text("#delivery-service").await, "meest");
    assert_eq!(browser.text("#payment-amount").await, "1817 USD");
    assert_eq!(browser.text("#items-total").await, "317 USD");
    let created = browser
        .js(
            "return document.querySelector('#date-created time').getAttribute('title');",
            vec![],
        )
        .await;
    assert_eq!(created, "2021-11-26T06:22:19Z");
    let radius = browser
        .client
        .find(Locator::Css(".card"))
        .await
        .expect("a card")
        .css_value("border-radius")
        .await
        .expect("css");
    assert_eq!(radius, "10px", "style.css applies under the CSP");

    // exec: the screenshot for the README (without a blinking caret, so
    // runs on the same machine make the same picture)
    browser.js("document.activeElement.blur();", vec![]).await;
    let png = browser.client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshot.png");
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));

    // exec: the raw JSON
    browser
        .client
        .find(Locator::Css("#raw summary"))
        .await
        .expect("the raw JSON toggle")
        .click()
        .await
        .expect("open raw JSON");
    let raw = browser.text("#raw-json").await;

    // check: the API's answer, pretty-printed
    assert!(
        raw.contains("\n  \"order_uid\": \"b563feb7b2b84b6test\""),
        "{raw}"
    );
    let shown: Value = serde_json::from_str(&raw).expect("the raw view is JSON");
    let (_, answer) =
        orders_testkit::get(app.addr, &format!("/order?order_uid={SAMPLE_UID}")).await;
    assert_eq!(
        shown,
        serde_json::from_slice::<Value>(&answer).expect("JSON")
    );

    // exec and check: copy
    browser.copy_and_confirm("copy", "copy-status").await;
    browser.close().await;
}

/// The uids of a list of orders (`#results-list` or `#recent-list`).
const RESULT_UIDS: &str =
    "return [...document.querySelectorAll('#results-list a')].map(a => a.dataset.uid);";

#[tokio::test]
async fn the_search_box_guesses_what_was_typed_and_the_selector_overrides_it() {
    // setup: Ann has two orders, Bob one
    let app = spawn_app().await;
    for (uid, n, customer, phone, email, track) in [
        (
            "ann_first",
            1,
            "ann",
            "+7 (900) 111-22-33",
            "Ann@Example.com",
            "WBANN1",
        ),
        (
            "ann_second",
            2,
            "ann",
            "+79001112233",
            "ann@example.com",
            "WBANN2",
        ),
        (
            "bob_only",
            3,
            "bob",
            "+7 900 444 55 66",
            "bob@example.com",
            "WBBOB1",
        ),
    ] {
        let mut order = order_value(uid, n);
        order["customer_id"] = json!(customer);
        order["delivery"]["phone"] = json!(phone);
        order["delivery"]["email"] = json!(email);
        order["track_number"] = json!(track);
        publish(&app, &order).await;
    }
    app.wait_stored(3).await;
    let browser = Browser::start(1280, 900).await;
    browser.open(&app, "/").await;

    // a phone, written another way: both of Ann's orders, newest first
    browser.search("+7 900 111 22 33").await;
    let text = browser.wait_state("listed").await;
    assert_eq!(text, "2 orders with the phone +7 900 111 22 33 shown.");
    assert_eq!(
        browser.js(RESULT_UIDS, vec![]).await,
        json!(["ann_second", "ann_first"])
    );
    assert!(
        browser
            .address()
            .await
            .ends_with("/?phone=%2B7%20900%20111%2022%2033"),
        "the search is in the address: {}",
        browser.address().await
    );

    // one of them opens; back returns to the list
    browser.click("#results-list a[data-uid='ann_first']").await;
    browser.wait_state("found").await;
    assert_eq!(browser.text("#order-uid").await, "ann_first");
    browser.client.back().await.expect("back");
    browser.wait_state("listed").await;
    assert_eq!(
        browser.js(RESULT_UIDS, vec![]).await,
        json!(["ann_second", "ann_first"])
    );

    // a track number: one order, opened at once
    browser.search("WBBOB1").await;
    browser
        .wait_for(
            "Bob's order",
            "return document.getElementById('order-uid').textContent;",
            |v| v == "bob_only",
        )
        .await;
    browser.wait_state("found").await;
    assert!(browser.address().await.ends_with("/?track_number=WBBOB1"));

    // an email, whatever its case
    browser.search("ANN@example.COM").await;
    browser.wait_state("listed").await;
    assert_eq!(
        browser.js(RESULT_UIDS, vec![]).await,
        json!(["ann_second", "ann_first"])
    );

    // "bob" looks like a uid; the selector says it is a customer
    browser.search("bob").await;
    assert_eq!(
        browser.wait_state("not-found").await,
        "No order with uid bob."
    );
    browser.pick("search-kind", "customer_id").await;
    browser.search("bob").await;
    browser
        .wait_for(
            "Bob's order by customer",
            "return [document.getElementById('status').dataset.state,
                     document.getElementById('order-uid').textContent];",
            |v| v == &json!(["found", "bob_only"]),
        )
        .await;
    assert!(browser.address().await.ends_with("/?customer_id=bob"));

    // nothing found, and a bad value, each said in words
    browser.search("WBNOPE").await;
    // (the selector still says customer: the value is searched as one)
    assert_eq!(
        browser.wait_state("not-found").await,
        "No orders with the customer WBNOPE."
    );
    browser.pick("search-kind", "phone").await;
    browser.search("call me").await;
    assert_eq!(
        browser.wait_state("invalid").await,
        "That is not a valid phone: no digits."
    );

    // a shared link to a search
    browser.open(&app, "/?email=ann%40example.com").await;
    browser.wait_state("listed").await;
    assert_eq!(
        browser.js(RESULT_UIDS, vec![]).await,
        json!(["ann_second", "ann_first"])
    );
    assert_eq!(
        browser
            .js("return document.getElementById('order_uid').value;", vec![])
            .await,
        "ann@example.com"
    );
    browser.close().await;
}

#[tokio::test]
async fn with_tokens_the_page_signs_in_says_when_a_token_is_rejected_and_signs_out() {
    // setup: a service that asks for tokens, with one order
    const TOKEN: &str = "desk-0123456789abcdef";
    let tokens = support::TokensOnDisk::new(&format!("desk:{TOKEN}\n"));
    let path = tokens.0.clone();
    let app = support::spawn_with(
        orders_testkit::TestDb::not_yet_created(),
        orders_testkit::TestStream::new(),
        move |c| orders_app::Config {
            api_tokens_file: orders_app::config::TokensFile(Some(path)),
            ..c
        },
    )
    .await;
    publish(&app, &order_value("signed_in", 1)).await;
    app.wait_stored(1).await;
    let browser = Browser::start(1280, 900).await;
    let sign_in_state = "const box = document.getElementById('sign-in');
        return box.hidden ? 'hidden' : box.dataset.state;";
    let recent = "return [...document.querySelectorAll('#recent-list a')].map(a => a.dataset.uid);";

    // exec: a deep link, without a token
    browser.open(&app, "/?order_uid=signed_in").await;

    // check: the page asks for a token, and shows no order
    browser
        .wait_for("the sign-in form", sign_in_state, |v| v == "needed")
        .await;
    let text = browser.wait_state("signed-out").await;
    assert!(text.contains("Sign in"), "{text}");
    assert_eq!(
        browser.text("#recent-status").await,
        "Sign in to see the recent orders."
    );

    // exec: a wrong token
    browser
        .type_and_enter("token", "desk-0123456789abcdeX")
        .await;

    // check: said to be rejected, and not kept
    browser
        .wait_for("the token rejected", sign_in_state, |v| v == "rejected")
        .await;
    assert!(
        browser
            .text("#sign-in-text")
            .await
            .contains("Token rejected")
    );
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('orders-api-token');", vec![])
            .await,
        Value::Null
    );

    // exec: the right token
    browser.type_and_enter("token", TOKEN).await;

    // check: the order and the list, the token in this tab's storage only
    browser.wait_state("found").await;
    browser
        .wait_for("the recent list", recent, |v| v == &json!(["signed_in"]))
        .await;
    assert_eq!(
        browser
            .js(
                "return [sessionStorage.getItem('orders-api-token'), document.cookie,
                         localStorage.length, location.href.includes('desk')];",
                vec![]
            )
            .await,
        json!([TOKEN, "", 0, false])
    );
    assert_eq!(
        browser
            .js("return document.getElementById('sign-in').hidden;", vec![])
            .await,
        json!(true)
    );

    // exec: sign out
    browser
        .client
        .find(Locator::Id("sign-out"))
        .await
        .expect("a Sign out button")
        .click()
        .await
        .expect("click Sign out");

    // check: the token is gone, so is every order on the screen
    browser
        .wait_for("the sign-in form again", sign_in_state, |v| v == "needed")
        .await;
    assert_eq!(
        browser
            .js(
                "return [sessionStorage.getItem('orders-api-token'),
                         document.getElementById('order').hidden,
                         document.querySelectorAll('#recent-list li').length,
                         document.getElementById('sign-out').hidden];",
                vec![]
            )
            .await,
        json!([null, true, 0, true])
    );
    browser.close().await;
}

#[tokio::test]
async fn the_rejected_view_shows_each_reason_and_detail_and_copies_the_raw_message() {
    // setup: markup that is not JSON, bytes that are not UTF-8, a conflict;
    // the first one replayed
    let app = spawn_app().await;
    app.publish_rejections(b"<img src=x onerror=window.__pwned=1>")
        .await;
    let browser = Browser::start(1280, 900).await;
    browser.open(&app, "/").await;

    // exec: open the view from the page
    browser.click("#rejected-link").await;

    // check: newest first, each with its reason and detail; the replayed one marked
    let text = browser.wait_state("listed").await;
    assert_eq!(text, "3 rejected messages shown.");
    assert!(browser.address().await.ends_with("/?view=rejected"));
    // how long they stay (REJECTED_RETENTION, 30d by default)
    assert_eq!(
        browser.text("#rejected-retention").await,
        "Rejected messages are kept for 30 days, then deleted."
    );
    let rows = browser
        .js(
            "return [...document.querySelectorAll('#rejected-list a')].map(a =>
               [a.querySelector('.recent-uid').textContent,
                a.querySelector('.rejected-detail').textContent]);",
            vec![],
        )
        .await;
    let rows: Vec<(String, String)> = serde_json::from_value(rows).expect("pairs of strings");
    assert!(rows[0].0.ends_with(" conflict"), "{rows:?}");
    assert!(
        rows[0].1.contains("taken"),
        "the detail names the uid: {rows:?}"
    );
    assert!(
        rows.iter()
            .filter(|(head, _)| head.ends_with("invalid_json"))
            .count()
            == 1
            && rows
                .iter()
                .filter(|(head, _)| head.ends_with("invalid_json replayed"))
                .count()
                == 1,
        "one invalid_json replayed, one not: {rows:?}"
    );

    // exec: open the replayed one
    let replayed = browser
        .js(
            "return [...document.querySelectorAll('#rejected-list a')]
               .find(a => a.querySelector('.badge')).dataset.id;",
            vec![],
        )
        .await;
    let replayed = replayed.as_str().expect("an id").to_owned();
    browser
        .client
        .find(Locator::Css(&format!(
            "#rejected-list a[data-id='{replayed}']"
        )))
        .await
        .expect("the replayed row")
        .click()
        .await
        .expect("open it");

    // check: the bytes as text, never as markup, with the reason and detail
    browser.wait_state("found").await;
    assert_eq!(
        browser.text("#rejected-payload").await,
        "<img src=x onerror=window.__pwned=1>"
    );
    let facts = browser.text("#rejected-facts").await;
    for part in ["invalid_json", "invalid JSON", "Replayed"] {
        assert!(facts.contains(part), "{part} missing in {facts:?}");
    }
    assert!(!facts.contains("not replayed"), "{facts}");
    assert!(
        browser
            .address()
            .await
            .ends_with(&format!("/?view=rejected&id={replayed}"))
    );
    let (made, pwned) = (
        browser
            .js(
                "return document.querySelectorAll('main img').length;",
                vec![],
            )
            .await,
        browser
            .js(
                "return window.__pwned === undefined ? null : window.__pwned;",
                vec![],
            )
            .await,
    );
    assert_eq!(
        (made, pwned),
        (json!(0), Value::Null),
        "markup in a message ran"
    );

    // exec and check: copy it
    browser
        .copy_and_confirm("copy-message", "copy-message-status")
        .await;

    // back to the list, then only the conflicts
    browser.client.back().await.expect("back");
    browser.wait_state("listed").await;
    browser.pick("rejected-reason", "conflict").await;
    assert_eq!(
        browser
            .wait_for(
                "only the conflict",
                "return document.getElementById('status-text').textContent;",
                |v| v == "1 rejected message shown.",
            )
            .await,
        "1 rejected message shown."
    );
    assert!(
        browser
            .address()
            .await
            .ends_with("/?view=rejected&reason=conflict")
    );

    // the message that is not UTF-8: base64, and said so
    let binary = browser
        .js(
            "return fetch('/rejected').then(r => r.json())
               .then(b => b.rejected.find(r => r.size === 8).id);",
            vec![],
        )
        .await;
    browser
        .open(&app, &format!("/?view=rejected&id={binary}"))
        .await;
    browser.wait_state("found").await;
    assert_eq!(browser.text("#rejected-payload").await, "//5iaW5hcnk=");
    assert!(browser.text("#rejected-facts").await.contains("not UTF-8"));
    browser.close().await;
}
