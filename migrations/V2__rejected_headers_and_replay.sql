-- A rejected message keeps its NATS headers as they arrived (the status
-- line included, so a forged one can be seen), and `order-publisher replay`
-- marks the rows it re-published instead of deleting them.
ALTER TABLE rejected_messages
    ADD COLUMN headers text,
    ADD COLUMN replayed_at timestamptz;

-- Listing by reason, newest first.
CREATE INDEX rejected_messages_reason ON rejected_messages (reason, id DESC);
