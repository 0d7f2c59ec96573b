-- Holds for checkouts: an order placed with hold_ttl_s is confirmed as HELD
-- until hold_until (Unix milliseconds, event time), then committed or
-- expired. NULL for an order placed without a hold (every earlier one).
ALTER TABLE orders ADD COLUMN hold_until BIGINT;

-- The expiry sweep reads the due holds in order of their deadline: only
-- held orders are in the index, so it stays as small as the holds open.
CREATE INDEX orders_held_until ON orders (hold_until, id) WHERE status = 'HELD';
