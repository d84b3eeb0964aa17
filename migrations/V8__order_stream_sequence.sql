-- Each order keeps the stream sequence of the message it came in, so
-- erasing an order (`order-service erase`) can delete its message from the
-- stream too. NULL for orders stored before this column, and for orders
-- stored other than from the stream. Adding a nullable column rewrites
-- nothing: instant on a large table.
ALTER TABLE order_info ADD COLUMN stream_sequence bigint;
