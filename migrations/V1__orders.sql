-- One order is one row in order_info, one in delivery, one in payment and one
-- or more in items, written in one transaction. Money and counts are bigint
-- (the domain checks they are non-negative; the CHECKs guard the same).

CREATE TABLE order_info (
    order_uid          text        PRIMARY KEY
        CONSTRAINT order_uid_format CHECK (order_uid ~ '^[A-Za-z0-9_-]{1,64}$'),
    track_number       text        NOT NULL,
    entry              text        NOT NULL,
    locale             text        NOT NULL,
    internal_signature text        NOT NULL,
    customer_id        text        NOT NULL,
    delivery_service   text        NOT NULL,
    shardkey           text        NOT NULL,
    sm_id              bigint      NOT NULL CHECK (sm_id >= 0),
    -- date_created exactly as sent (RFC 3339), so the order reads back unchanged;
    -- created_at is the same instant, typed, for ordering the newest first.
    date_created       text        NOT NULL,
    created_at         timestamptz NOT NULL,
    oof_shard          text        NOT NULL,
    stored_at          timestamptz NOT NULL DEFAULT now()
);

-- Newest first, with a tie-breaker: the warm-up and keyset pagination.
CREATE INDEX order_info_newest ON order_info (created_at DESC, order_uid DESC);

CREATE TABLE delivery (
    order_uid text PRIMARY KEY REFERENCES order_info (order_uid) ON DELETE CASCADE,
    name      text NOT NULL,
    phone     text NOT NULL,
    zip       text NOT NULL,
    city      text NOT NULL,
    address   text NOT NULL,
    region    text NOT NULL,
    email     text NOT NULL
);

CREATE TABLE payment (
    order_uid     text   PRIMARY KEY REFERENCES order_info (order_uid) ON DELETE CASCADE,
    transaction   text   NOT NULL,
    request_id    text   NOT NULL,
    currency      text   NOT NULL,
    provider      text   NOT NULL,
    amount        bigint NOT NULL CHECK (amount >= 0),
    payment_dt    bigint NOT NULL CHECK (payment_dt >= 0),
    bank          text   NOT NULL,
    delivery_cost bigint NOT NULL CHECK (delivery_cost >= 0),
    goods_total   bigint NOT NULL CHECK (goods_total >= 0),
    custom_fee    bigint NOT NULL CHECK (custom_fee >= 0)
);

CREATE TABLE items (
    order_uid    text    NOT NULL REFERENCES order_info (order_uid) ON DELETE CASCADE,
    -- the item's place in the message, so the order reads back in the same order
    position     integer NOT NULL CHECK (position >= 0),
    chrt_id      bigint  NOT NULL CHECK (chrt_id >= 0),
    track_number text    NOT NULL,
    price        bigint  NOT NULL CHECK (price >= 0),
    rid          text    NOT NULL,
    name         text    NOT NULL,
    sale         bigint  NOT NULL CHECK (sale BETWEEN 0 AND 100),
    size         text    NOT NULL,
    total_price  bigint  NOT NULL CHECK (total_price >= 0),
    nm_id        bigint  NOT NULL CHECK (nm_id >= 0),
    brand        text    NOT NULL,
    status       bigint  NOT NULL CHECK (status >= 0),
    PRIMARY KEY (order_uid, position)
);

-- Messages that are not orders (or conflict with a stored one), kept with
-- their reason and raw bytes. A redelivered message keeps one row.
CREATE TABLE rejected_messages (
    id              bigserial   PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    reason          text        NOT NULL,
    detail          text        NOT NULL,
    order_uid       text,
    subject         text        NOT NULL,
    stream          text        NOT NULL,
    stream_sequence bigint,
    payload         bytea       NOT NULL,
    CONSTRAINT rejected_once UNIQUE (stream, stream_sequence)
);

CREATE INDEX rejected_messages_received ON rejected_messages (received_at);
