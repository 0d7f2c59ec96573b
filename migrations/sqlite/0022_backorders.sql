-- Backorders: selling past zero on purpose. inventory.backorder_limit is a
-- product's policy (how many units may wait for stock; 0, the default, is
-- the behaviour before it); inventory.backordered is the units backordered
-- orders wait for (written as deltas, with the stock). order_items.backordered
-- is a line's units not reserved yet.
ALTER TABLE inventory ADD COLUMN backorder_limit BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inventory ADD COLUMN backordered BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_items ADD COLUMN backordered BIGINT NOT NULL DEFAULT 0;

-- A product's queue of waiting lines, for the fill: only lines that wait
-- are in the index.
CREATE INDEX order_items_waiting ON order_items (product_id, order_id) WHERE backordered > 0;

-- The products orders wait for, for the sweep that takes up queues longer
-- than one batch fills.
CREATE INDEX inventory_waiting ON inventory (product_id) WHERE backordered > 0;
