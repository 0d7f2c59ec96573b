-- Stock adjustments and cycle counts. A request is a row from the moment a
-- worker applies it (pending); its decision (applied or refused, with the
-- figures the worker found) completes the row in the same transaction.
-- adjusted_total makes on_hand = received - shipped + adjusted checkable
-- at any quiescent moment.
ALTER TABLE inventory ADD COLUMN adjusted_total BIGINT NOT NULL DEFAULT 0;

CREATE TABLE stock_adjustments (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL,
    -- NULL while a count waits for the worker to decide its delta.
    delta BIGINT,
    reason TEXT NOT NULL,
    reference TEXT,
    note TEXT,
    expected_on_hand BIGINT,
    -- A cycle count: the units counted and when; its delta is decided by
    -- the worker (the count against the book as of counted_at).
    counted BIGINT,
    counted_at BIGINT,
    status TEXT NOT NULL,
    refusal TEXT,
    message TEXT,
    -- The figures a refusal found (on-hand, reserved, the orders holding
    -- the stock as a JSON array of ids); NULL for an applied adjustment.
    on_hand BIGINT,
    reserved BIGINT,
    held_by TEXT,
    requested_by TEXT,
    requested_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX stock_adjustments_by_product ON stock_adjustments (product_id, id);
