-- Each order's compact JSON, exactly as lookups answer it (the domain's
-- Order::to_json), written with its rows in the same statement. The rows stay
-- the source of truth for search and listing; the document is what the cache
-- holds, so the warm-up reads this one column instead of joining the four
-- tables and serializing every order again (3x less work for 1,000,000
-- orders: docs/benchmarks.md).
--
-- NULL for orders stored before this version: adding a nullable column
-- without a default rewrites nothing, so the migration is instant on a large
-- table. The service writes the missing documents itself (exact bytes need
-- the service's own serializer) the first time the warm-up meets them.
ALTER TABLE order_info ADD COLUMN document bytea;

-- A document is 1-2 KB for a typical order, which would put many rows over
-- the 2 KB at which PostgreSQL starts compressing values (pglz, on every
-- insert). Rows stay whole, uncompressed, up to the largest a page can hold.
ALTER TABLE order_info SET (toast_tuple_target = 8160);
