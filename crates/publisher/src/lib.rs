//! Realistic orders for demos and load: valid, with unique uids, 1 to 5
//! items and totals that add up, repeatable from a seed; and malformed ones
//! of many kinds, to watch the service reject them.

pub mod replay;
pub mod trace;

use std::sync::LazyLock;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// SplitMix64: a tiny, fast generator whose output for a seed never changes
/// between versions, so `--seed` gives the same orders forever.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.range(0, from.len() as u64 - 1) as usize]
    }

    fn code(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.range(0, alphabet.len() as u64 - 1) as usize] as char)
            .collect()
    }
}

const FIRST: &[&str] = &[
    "Anna", "Boris", "Dana", "Eli", "Maya", "Noam", "Olga", "Yuri", "Lena", "Ivan",
];
const LAST: &[&str] = &[
    "Levi", "Petrova", "Cohen", "Smirnov", "Katz", "Orlova", "Mizrahi", "Volkov",
];
const CITIES: &[(&str, &str)] = &[
    ("Kiryat Mozkin", "Kraiot"),
    ("Haifa", "Haifa"),
    ("Tel Aviv", "Center"),
    ("Moscow", "Moscow"),
    ("Kazan", "Tatarstan"),
    ("Berlin", "Berlin"),
];
const STREETS: &[&str] = &[
    "Ploshad Mira",
    "Herzl",
    "Lenina",
    "Ha-Atzmaut",
    "Unter den Linden",
];
const BRANDS: &[&str] = &["Vivienne Sabo", "Nivea", "Levis", "Xiaomi", "Bosch", "Lego"];
const GOODS: &[&str] = &[
    "Mascaras",
    "Cream",
    "Jeans",
    "Phone case",
    "Drill",
    "Bricks",
    "Lamp",
];
const BANKS: &[&str] = &["alpha", "sber", "tinkoff", "leumi"];
const CURRENCIES: &[&str] = &["USD", "EUR", "RUB", "ILS"];
const SERVICES: &[&str] = &["meest", "dhl", "cdek", "boxberry"];
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// The sample order (`fixtures/model.json`): every generated order starts
/// as a copy of it, so the generator names only the fields it varies.
static SAMPLE: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_slice(include_bytes!("../../../fixtures/model.json"))
        .expect("fixtures/model.json is JSON")
});

/// The `index`-th generated order of a run. Its uid is unique within the
/// run (it ends in the index) and, with a different seed, across runs.
pub fn order(rng: &mut SplitMix64, index: u64) -> Value {
    let mut order = SAMPLE.clone();
    let template_item = order["items"][0].clone();
    let uid = format!("{}{index:06}", rng.code(ALNUM, 14));
    let track = format!("WB{}", rng.code(UPPER, 12));
    let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
    let (city, region) = CITIES[rng.range(0, CITIES.len() as u64 - 1) as usize];
    let created = rng.range(1_600_000_000, 1_790_000_000) as i64;
    let items: Vec<Value> = (0..rng.range(1, 5))
        .map(|_| {
            let price = rng.range(100, 5_000);
            let sale = rng.range(0, 50);
            let mut item = template_item.clone();
            item["chrt_id"] = json!(rng.range(1_000_000, 9_999_999));
            item["track_number"] = json!(track);
            item["price"] = json!(price);
            item["rid"] = json!(format!("{}test", rng.code(ALNUM, 17)));
            item["name"] = json!(rng.pick(GOODS));
            item["sale"] = json!(sale);
            item["size"] = json!(rng.range(0, 5).to_string());
            item["total_price"] = json!(price * (100 - sale) / 100);
            item["nm_id"] = json!(rng.range(1_000_000, 9_999_999));
            item["brand"] = json!(rng.pick(BRANDS));
            item
        })
        .collect();
    let goods_total: u64 = items.iter().filter_map(|i| i["total_price"].as_u64()).sum();
    let delivery_cost = rng.range(0, 2_000);
    let custom_fee = if rng.chance(0.2) {
        rng.range(1, 300)
    } else {
        0
    };

    order["order_uid"] = json!(uid);
    order["track_number"] = json!(track);
    let delivery = &mut order["delivery"];
    delivery["name"] = json!(format!("{first} {last}"));
    delivery["phone"] = json!(format!("+972{}", rng.range(1_000_000, 9_999_999)));
    delivery["zip"] = json!(rng.range(1_000_000, 9_999_999).to_string());
    delivery["city"] = json!(city);
    delivery["address"] = json!(format!("{} {}", rng.pick(STREETS), rng.range(1, 120)));
    delivery["region"] = json!(region);
    delivery["email"] = json!(format!(
        "{}.{}@example.com",
        first.to_lowercase(),
        last.to_lowercase()
    ));
    let payment = &mut order["payment"];
    payment["transaction"] = json!(uid);
    payment["currency"] = json!(rng.pick(CURRENCIES));
    payment["amount"] = json!(goods_total + delivery_cost + custom_fee);
    payment["payment_dt"] = json!(created + rng.range(0, 600) as i64);
    payment["bank"] = json!(rng.pick(BANKS));
    payment["delivery_cost"] = json!(delivery_cost);
    payment["goods_total"] = json!(goods_total);
    payment["custom_fee"] = json!(custom_fee);
    order["items"] = Value::Array(items);
    order["locale"] = json!(if rng.chance(0.5) { "en" } else { "ru" });
    order["customer_id"] = json!(format!("customer{}", rng.range(1, 10_000)));
    order["delivery_service"] = json!(rng.pick(SERVICES));
    order["shardkey"] = json!(rng.range(0, 9).to_string());
    order["sm_id"] = json!(rng.range(1, 200));
    order["date_created"] = json!(rfc3339(created));
    order["oof_shard"] = json!(rng.range(1, 2).to_string());
    order
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "2021-11-26T06:22:19Z".to_owned())
}

/// The kinds of malformed message [`invalid`] makes.
pub const INVALID_KINDS: usize = 8;

/// A malformed message of kind `kind % INVALID_KINDS`, built from a valid
/// order: the service must record each in `rejected_messages`.
pub fn invalid(rng: &mut SplitMix64, index: u64, kind: usize) -> Vec<u8> {
    let mut order = order(rng, index);
    match kind % INVALID_KINDS {
        0 => {
            let text = order.to_string();
            return text.as_bytes()[..text.len() / 2].to_vec();
        }
        1 => order["payment"]["amount"] = json!(-1),
        2 => order["items"] = json!([]),
        3 => order["date_created"] = json!("yesterday"),
        4 => order["order_uid"] = json!("not a valid uid!"),
        5 => order["delivery"]["phone"] = json!(12345),
        6 => {
            if let Some(map) = order.as_object_mut() {
                map.remove("payment");
            }
        }
        _ => return b"null".to_vec(),
    }
    order.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orders_domain::Order;

    #[test]
    fn generated_orders_are_valid_unique_and_add_up() {
        let mut rng = SplitMix64::new(42);
        let mut uids = std::collections::HashSet::new();
        for i in 0..2_000 {
            let value = order(&mut rng, i);
            let parsed = Order::parse(value.to_string().as_bytes()).expect("valid");
            assert!(uids.insert(parsed.order_uid.to_string()), "repeated uid");
            assert!((1..=5).contains(&parsed.items.len()));
            let goods: i64 = parsed.items.iter().map(|i| i.total_price).sum();
            let p = &parsed.payment;
            assert_eq!(p.goods_total, goods);
            assert_eq!(p.amount, p.goods_total + p.delivery_cost + p.custom_fee);
        }
    }

    #[test]
    fn a_seed_gives_the_same_orders() {
        let a = order(&mut SplitMix64::new(7), 0);
        let b = order(&mut SplitMix64::new(7), 0);
        let c = order(&mut SplitMix64::new(8), 0);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_invalid_kind_is_rejected() {
        let mut rng = SplitMix64::new(1);
        for kind in 0..INVALID_KINDS {
            let bytes = invalid(&mut rng, 0, kind);
            assert!(Order::parse(&bytes).is_err(), "kind {kind} parsed");
        }
    }
}
