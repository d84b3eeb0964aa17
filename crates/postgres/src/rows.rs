//! Rows to domain types. The SELECT lists and the readers below go together:
//! each reader takes its columns by position, in the order listed.

use orders_domain::{
    DateCreated, DeliveryInfo, Item, Order, OrderCursor, OrderSummary, OrderUid, Payment,
    RepositoryError,
};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::errors::corrupt;

/// The columns [`order_from_row`] reads, over `order_info o`, `delivery d`
/// and `payment p`.
pub(crate) const ORDER_COLUMNS: &str = "\
    o.order_uid, o.track_number, o.entry, o.locale, o.internal_signature, o.customer_id, \
    o.delivery_service, o.shardkey, o.sm_id, o.date_created, o.oof_shard, \
    d.name, d.phone, d.zip, d.city, d.address, d.region, d.email, \
    p.transaction, p.request_id, p.currency, p.provider, p.amount, p.payment_dt, p.bank, \
    p.delivery_cost, p.goods_total, p.custom_fee";

/// The columns [`item_from_row`] reads, over `items i`.
pub(crate) const ITEM_COLUMNS: &str = "\
    i.order_uid, i.chrt_id, i.track_number, i.price, i.rid, i.name, i.sale, i.size, \
    i.total_price, i.nm_id, i.brand, i.status";

/// Reads columns in turn, so a reader lists fields in SELECT order without
/// numbering them by hand.
struct Columns<'r> {
    row: &'r Row,
    next: usize,
}

impl<'r> Columns<'r> {
    fn new(row: &'r Row) -> Self {
        Self { row, next: 0 }
    }

    fn take<T: FromSql<'r>>(&mut self) -> Result<T, RepositoryError> {
        let index = self.next;
        self.next += 1;
        self.row
            .try_get(index)
            .map_err(|e| corrupt("row", format!("column {index}: {e}")))
    }
}

pub(crate) fn order_from_row(row: &Row, items: Vec<Item>) -> Result<Order, RepositoryError> {
    let mut c = Columns::new(row);
    let uid: String = c.take()?;
    let order_uid = OrderUid::try_from(uid).map_err(|e| corrupt("order_uid", e))?;
    let track_number = c.take()?;
    let entry = c.take()?;
    let locale = c.take()?;
    let internal_signature = c.take()?;
    let customer_id = c.take()?;
    let delivery_service = c.take()?;
    let shardkey = c.take()?;
    let sm_id = c.take()?;
    let date_text: String = c.take()?;
    let date_created = DateCreated::parse(&date_text).map_err(|e| corrupt("date_created", e))?;
    let oof_shard = c.take()?;
    let delivery = DeliveryInfo {
        name: c.take()?,
        phone: c.take()?,
        zip: c.take()?,
        city: c.take()?,
        address: c.take()?,
        region: c.take()?,
        email: c.take()?,
    };
    let payment = Payment {
        transaction: c.take()?,
        request_id: c.take()?,
        currency: c.take()?,
        provider: c.take()?,
        amount: c.take()?,
        payment_dt: c.take()?,
        bank: c.take()?,
        delivery_cost: c.take()?,
        goods_total: c.take()?,
        custom_fee: c.take()?,
    };
    Ok(Order {
        order_uid,
        track_number,
        entry,
        delivery,
        payment,
        items,
        locale,
        internal_signature,
        customer_id,
        delivery_service,
        shardkey,
        sm_id,
        date_created,
        oof_shard,
    })
}

/// The item and the uid of the order it belongs to.
pub(crate) fn item_from_row(row: &Row) -> Result<(String, Item), RepositoryError> {
    let mut c = Columns::new(row);
    let uid: String = c.take()?;
    let item = Item {
        chrt_id: c.take()?,
        track_number: c.take()?,
        price: c.take()?,
        rid: c.take()?,
        name: c.take()?,
        sale: c.take()?,
        size: c.take()?,
        total_price: c.take()?,
        nm_id: c.take()?,
        brand: c.take()?,
        status: c.take()?,
    };
    Ok((uid, item))
}

/// A line of the list: uid, date_created, micros, amount, currency.
pub(crate) fn summary_from_row(row: &Row) -> Result<OrderSummary, RepositoryError> {
    let mut c = Columns::new(row);
    let uid: String = c.take()?;
    let order_uid = OrderUid::try_from(uid).map_err(|e| corrupt("order_uid", e))?;
    let date_created = c.take()?;
    let created_micros = c.take()?;
    Ok(OrderSummary {
        cursor: OrderCursor {
            created_micros,
            order_uid: order_uid.clone(),
        },
        order_uid,
        date_created,
        amount: c.take()?,
        currency: c.take()?,
    })
}
