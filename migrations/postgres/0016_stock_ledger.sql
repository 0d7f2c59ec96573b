-- The stock ledger: one row per change of a product's on-hand or reserved
-- (received, reserved, released, shipped, adjusted), numbered per product
-- in the order the workers applied them, with the figures after it and
-- its cause. Written in the transaction of the batch that applied it, so
-- a product's last row always equals its figures (inventory.movements is
-- that row's number). It grows with the history, as the archive does.
ALTER TABLE inventory ADD COLUMN movements BIGINT NOT NULL DEFAULT 0;

CREATE TABLE stock_ledger (
    product_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    on_hand_delta BIGINT NOT NULL,
    reserved_delta BIGINT NOT NULL,
    on_hand BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    event_type TEXT,
    event_id TEXT,
    order_id TEXT,
    purchase_order_id TEXT,
    adjustment_id TEXT,
    reason TEXT,
    PRIMARY KEY (product_id, seq)
);
CREATE INDEX stock_ledger_by_time ON stock_ledger (product_id, occurred_at);

-- A read model upgraded from a release without a ledger: each product's
-- figures become its opening row (`streamstock rebuild` replaces them with
-- the whole history from the archive).
INSERT INTO stock_ledger (product_id, seq, occurred_at, kind, on_hand_delta, reserved_delta, on_hand, reserved)
SELECT product_id, 1, updated_at, 'opening', on_hand, reserved, on_hand, reserved
FROM inventory WHERE on_hand <> 0 OR reserved <> 0;
UPDATE inventory SET movements = 1 WHERE on_hand <> 0 OR reserved <> 0;
