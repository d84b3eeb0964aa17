-- Erasure on request (`order-service erase`): an erased order keeps its
-- row, its amounts and its items, with its personal fields replaced by a
-- fixed marker in the rows and in the document (orders_domain::ERASED);
-- erased_at says when. Its uid stays taken, so a message that brings the
-- order back later (a redelivery, a replay, a producer resending) is
-- rejected as `erased` instead of stored again. NULL for every order that
-- was not erased. Adding a nullable column rewrites nothing: instant on a
-- large table.
ALTER TABLE order_info ADD COLUMN erased_at timestamptz;

-- After a lost LISTEN connection a replica drops every erased order from
-- its cache (the announcements on `orders_erased` it missed cannot be told
-- apart): a partial index holds only those, a few per request.
CREATE INDEX order_info_erased ON order_info (order_uid) WHERE erased_at IS NOT NULL;

-- One row per erasure that was not a dry run: when, why, how the orders
-- were matched, and which orders it erased, by uid. Never the erased
-- values, nor a hash of them (a phone number's hash is brute-forced in
-- seconds). Inserted when the run starts and brought up to date in each
-- batch's transaction, so it always says what was erased, also of a run
-- that stopped halfway (finished_at NULL).
CREATE TABLE erasures (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    -- the operator's --reason (a ticket number, say)
    reason            text        NOT NULL,
    matched_by        text        NOT NULL
        CONSTRAINT erasure_match CHECK (matched_by IN ('order_uid', 'customer_id', 'email', 'phone')),
    orders            integer     NOT NULL DEFAULT 0,
    order_uids        text[]      NOT NULL DEFAULT '{}',
    -- rows of rejected_messages deleted, and messages deleted from the stream
    rejected_messages integer     NOT NULL DEFAULT 0,
    stream_messages   integer     NOT NULL DEFAULT 0
);

-- Announcements: each batch's transaction sends `NOTIFY orders_erased` with
-- its uids (space-separated; at most 100 of at most 64 characters, within
-- NOTIFY's 8000 bytes), delivered only if it commits. Every replica drops
-- them from its cache.
