-- The read audit (AUDIT_READS=true): one row per answer that gave out orders
-- (/order, /orders, /rejected, /rejected/{id}) and per opening of
-- /orders/events. Written in batches off the request path; purged after
-- AUDIT_RETENTION.
CREATE TABLE order_reads (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- when the answer was given
    at         timestamptz NOT NULL,
    -- the token's name with API_TOKENS_FILE, else the client's address
    who        text        NOT NULL,
    -- the route's fixed label, never the path or query string
    route      text        NOT NULL,
    -- the order uids the answer gave out, in its order; empty for the event
    -- stream's opening and for rejected messages that named none
    order_uids text[]      NOT NULL
);

-- `order-service audit` asks "which reads gave out any of these uids"
-- (`order_uids && $1`): a GIN index on the array answers that for one order
-- or for all of a customer's at once, with one row per answer. A table of
-- (order_uid, at) pairs would answer it too, but a page of 100 orders
-- would then be 100 rows and 100 index entries to write, and a second
-- table to purge. GIN's pending list (fastupdate, on by default) takes
-- inserts without reorganizing the index each time.
CREATE INDEX order_reads_uids ON order_reads USING gin (order_uids);

-- The purge deletes the oldest first (`at < now() - AUDIT_RETENTION`).
CREATE INDEX order_reads_at ON order_reads (at);

-- rejected_messages already has its index on received_at
-- (rejected_messages_received, V1), which the purge of REJECTED_RETENTION
-- reads.
