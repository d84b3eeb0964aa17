-- Orders as events: each stored order gets an id from one sequence, and the
-- statement that stores orders announces them with NOTIFY. (V3 belongs to
-- another change; refinery applies V4 after V2 all the same.)
--
-- event_id is taken when the row is inserted, before the commit: a later id
-- can commit before an earlier one (two batches in flight, two replicas).
-- Readers of "ids after N" must allow for it (docs/reliability.md).
ALTER TABLE order_info ADD COLUMN event_id bigint GENERATED ALWAYS AS IDENTITY;

-- Resuming a stream reads "ids after N" in order.
CREATE UNIQUE INDEX order_info_event ON order_info (event_id);

-- One notification per statement (so per batch, however it was inserted:
-- the UNNEST insert, the COPY staging insert, each savepoint of a batch
-- the database refused part of), sent only if the transaction commits,
-- to every session that LISTENs. The payload is small whatever the batch
-- size (NOTIFY takes at most 8000 bytes): the lowest and highest event id
-- of the statement and the storing session's application_name, which
-- names the replica, so a replica knows its own orders. The ids in between
-- may include other transactions' rows; listeners read the range and
-- de-duplicate.
CREATE FUNCTION announce_stored_orders() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_id bigint;
    last_id  bigint;
BEGIN
    SELECT min(event_id), max(event_id) INTO first_id, last_id FROM stored;
    IF first_id IS NOT NULL THEN
        PERFORM pg_notify('orders_stored',
            first_id || ' ' || last_id || ' ' || current_setting('application_name'));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_stored
    AFTER INSERT ON order_info
    REFERENCING NEW TABLE AS stored
    FOR EACH STATEMENT EXECUTE FUNCTION announce_stored_orders();
