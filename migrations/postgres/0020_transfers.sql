-- Transfers between locations. inventory.in_transit is the sum of the
-- product's units in transit (inventory_locations.in_transit, per
-- destination): on_hand + in_transit = received - shipped + adjusted +
-- restocked.
ALTER TABLE inventory ADD COLUMN in_transit BIGINT NOT NULL DEFAULT 0;

-- A transfer as requested, then shipped (or refused) and received by
-- workers; written whole whenever it changes.
CREATE TABLE transfers (
    id TEXT PRIMARY KEY,
    from_location TEXT NOT NULL,
    to_location TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    discrepancy_reason TEXT,
    requested_at BIGINT NOT NULL,
    shipped_at BIGINT,
    received_at BIGINT
);
CREATE INDEX transfers_by_status ON transfers (status, id);

CREATE TABLE transfer_lines (
    transfer_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    received BIGINT,
    PRIMARY KEY (transfer_id, line_no)
);

-- A location's stock, product by product (`GET /api/locations/{id}/stock`).
CREATE INDEX inventory_locations_by_location ON inventory_locations (location_id, product_id);

-- Where a purchase order is to be received (NULL: the default location).
ALTER TABLE purchase_orders ADD COLUMN location_id TEXT;
