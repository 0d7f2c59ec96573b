-- Stock in several locations. Every deployment has the `default`
-- location (id 00000000-0000-0000-0000-000000000001), which holds the
-- stock of the releases before locations, and where events that name no
-- location put it.
CREATE TABLE locations (
    id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    name TEXT NOT NULL,
    priority BIGINT NOT NULL,
    active BIGINT NOT NULL
);
CREATE UNIQUE INDEX locations_by_code ON locations (code);
INSERT INTO locations (id, code, name, priority, active)
VALUES ('00000000-0000-0000-0000-000000000001', 'default', 'Default location', 0, 1);

-- A gateway claims a code before it appends location.created, as a sku
-- is claimed (a duplicate code answers 409 at once).
CREATE TABLE location_claims (
    code TEXT PRIMARY KEY,
    location_id TEXT NOT NULL,
    claimed_at BIGINT NOT NULL
);
INSERT INTO location_claims (code, location_id, claimed_at)
VALUES ('default', '00000000-0000-0000-0000-000000000001', 0);

-- A product's stock per location; inventory keeps the totals (the sums).
-- Written as deltas under the lock of the product's inventory row, so no
-- CHECK here: SQLite would check an upsert's delta row before adding it.
-- The worker checks 0 <= reserved <= on_hand per location before writing.
CREATE TABLE inventory_locations (
    product_id TEXT NOT NULL,
    location_id TEXT NOT NULL,
    on_hand BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    in_transit BIGINT NOT NULL,
    PRIMARY KEY (product_id, location_id)
);
INSERT INTO inventory_locations (product_id, location_id, on_hand, reserved, in_transit)
SELECT product_id, '00000000-0000-0000-0000-000000000001', on_hand, reserved, 0 FROM inventory;

-- Where each confirmed order's units are reserved: one row per (product,
-- location), numbered in the order the worker chose them. Orders of the
-- releases before locations hold every unit at the default location, a
-- product's lines together, in the order the product first appears (as
-- an order.confirmed of v1 is replayed).
CREATE TABLE order_allocations (
    order_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    product_id TEXT NOT NULL,
    location_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    shipped BIGINT NOT NULL,
    PRIMARY KEY (order_id, seq)
);
INSERT INTO order_allocations (order_id, seq, product_id, location_id, quantity, shipped)
SELECT i.order_id,
       ROW_NUMBER() OVER (PARTITION BY i.order_id ORDER BY MIN(i.line_no)) - 1,
       i.product_id, '00000000-0000-0000-0000-000000000001', SUM(i.quantity), SUM(i.shipped)
FROM order_items i JOIN orders o ON o.id = i.order_id
WHERE o.status IN ('CONFIRMED', 'PARTIALLY_SHIPPED', 'SHIPPED', 'CANCELLED')
GROUP BY i.order_id, i.product_id;
-- Who holds a product's stock at a location (a refused adjustment names them).
CREATE INDEX order_allocations_by_stock ON order_allocations (product_id, location_id);

-- Where an adjustment or count was made, and where a return's restocked
-- units went (NULL: the default location).
ALTER TABLE stock_adjustments ADD COLUMN location_id TEXT;
ALTER TABLE fulfilments ADD COLUMN location_id TEXT;

-- The ledger names where each movement happened.
ALTER TABLE stock_ledger ADD COLUMN location_id TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001';
