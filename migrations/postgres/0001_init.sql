-- StreamStock read model, worker state and event archive (PostgreSQL).
-- Ids are UUID strings, money integer cents, times Unix milliseconds: the
-- same representation as the SQLite schema, so one set of queries serves both.

-- The gateway claims a sku before appending product.created, so a duplicate
-- is refused synchronously with 409 instead of surfacing later in a worker.
CREATE TABLE sku_claims (
    sku TEXT PRIMARY KEY,
    product_id TEXT NOT NULL UNIQUE,
    claimed_at BIGINT NOT NULL
);

CREATE TABLE products (
    id TEXT PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    category_name TEXT NOT NULL,
    low_stock_threshold BIGINT NOT NULL,
    reorder_quantity BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Stock per product. received_total and shipped_total make the invariant
-- on_hand = received - shipped checkable at any quiescent moment.
CREATE TABLE inventory (
    product_id TEXT PRIMARY KEY,
    on_hand BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    received_total BIGINT NOT NULL DEFAULT 0,
    shipped_total BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    CONSTRAINT no_oversell CHECK (reserved >= 0 AND reserved <= on_hand)
);

CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_email TEXT NOT NULL,
    status TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    reason TEXT,
    placed_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX orders_by_status ON orders (status, id);
CREATE INDEX orders_by_placed_at ON orders (placed_at);

CREATE TABLE order_items (
    order_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- Every event a worker consumed, with its envelope: audit trail and the
-- source for rebuilding the projections.
CREATE TABLE event_archive (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    event_key TEXT NOT NULL,
    version BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    partition_no BIGINT NOT NULL,
    entry_id TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    error TEXT
);
CREATE INDEX event_archive_by_key ON event_archive (event_key, occurred_at);
CREATE INDEX event_archive_by_type ON event_archive (event_type, occurred_at);

-- Inbox: an event id recorded here, in the same transaction as its effects,
-- is never applied again when the log redelivers it.
CREATE TABLE processed_events (
    group_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (group_name, event_id)
);

-- Outbox: follow-up events written with the effects that caused them, and
-- published to the log after commit. A crash in between republishes them.
CREATE TABLE outbox (
    event_id TEXT PRIMARY KEY,
    envelope TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
