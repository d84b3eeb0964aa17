-- Finding orders by what a customer has at hand (GET /orders?track_number=,
-- customer_id=, transaction=, phone=, email=), exact values only, newest
-- first. Each search reads an index, never the whole table.
--
-- The keys held in order_info carry the list's order after them, so
-- `WHERE key = $1 ORDER BY created_at DESC, order_uid DESC LIMIT n` (and
-- the keyset cursor) walks the index and stops after n rows, with no sort
-- of all the matches.
CREATE INDEX order_info_track_number ON order_info (track_number, created_at DESC, order_uid DESC);
CREATE INDEX order_info_customer_id ON order_info (customer_id, created_at DESC, order_uid DESC);

-- The keys held in payment and delivery find their orders' uids; the
-- orders are then read by primary key and the matches (one customer's
-- orders, a few) sorted.
CREATE INDEX payment_transaction ON payment (transaction);

-- A phone is compared in its normal form: '+' and the ASCII digits only.
-- orders_domain::normalize_phone is the same function in Rust; a test
-- holds the two to agreement. The query must spell the expression exactly
-- so for the index to serve it.
CREATE INDEX delivery_phone ON delivery (regexp_replace(phone, '[^0-9+]', '', 'g'));

-- An email is compared case-insensitively: lower() on both sides.
CREATE INDEX delivery_email ON delivery (lower(email));
