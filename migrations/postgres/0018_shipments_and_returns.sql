-- Partial shipments and returns. Each order line counts the units shipped
-- and returned (a SHIPPED order of an earlier release shipped every line
-- whole). restocked_total makes on_hand = received - shipped + adjusted +
-- restocked checkable at any quiescent moment. order_totals.sold_cents is
-- the value of the units sold (ordered, less released by a cancel, less
-- returned): revenue is its sum.
ALTER TABLE order_items ADD COLUMN shipped BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_items ADD COLUMN returned BIGINT NOT NULL DEFAULT 0;
UPDATE order_items SET shipped = quantity
WHERE order_id IN (SELECT id FROM orders WHERE status = 'SHIPPED');

ALTER TABLE inventory ADD COLUMN restocked_total BIGINT NOT NULL DEFAULT 0;

ALTER TABLE order_totals ADD COLUMN sold_cents BIGINT NOT NULL DEFAULT 0;
UPDATE order_totals SET sold_cents = amount_cents WHERE status IN ('CONFIRMED', 'SHIPPED');

-- Shipments and returns as requested (pending), then shipped / returned
-- or refused by a worker, which completes the row in the same transaction.
-- `lines` is what was asked for, `allocated` what the worker decided per
-- order line (both JSON arrays).
CREATE TABLE fulfilments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    lines TEXT NOT NULL,
    allocated TEXT,
    reason TEXT,
    message TEXT,
    refund_cents BIGINT,
    requested_by TEXT,
    requested_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX fulfilments_by_order ON fulfilments (order_id, requested_at, id);
