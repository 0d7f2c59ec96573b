-- Running totals of the orders, kept by the workers in each batch's
-- transaction, so the dashboard's figures and top products cost the same
-- on a read model of a billion orders as on an empty one (they were
-- aggregates over every order, each second). Filled here from the orders
-- already there; `rebuild` rewrites them from the archive like any
-- projection. Sold means CONFIRMED or SHIPPED (OrderStatus::SOLD).

-- Orders and their totals per status.
CREATE TABLE order_totals (
    status TEXT PRIMARY KEY,
    orders BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL
);
INSERT INTO order_totals (status, orders, amount_cents)
SELECT status, COUNT(*), COALESCE(SUM(total_cents), 0) FROM orders GROUP BY status;

-- Sold orders' totals by the UTC day they were placed on.
CREATE TABLE daily_sales (
    day_start BIGINT PRIMARY KEY,
    amount_cents BIGINT NOT NULL
);
INSERT INTO daily_sales (day_start, amount_cents)
SELECT placed_at - (placed_at % 86400000), SUM(total_cents) FROM orders
WHERE status IN ('CONFIRMED', 'SHIPPED') GROUP BY placed_at - (placed_at % 86400000);

-- Units and revenue of sold order lines per product.
CREATE TABLE product_sales (
    product_id TEXT PRIMARY KEY,
    units BIGINT NOT NULL,
    revenue_cents BIGINT NOT NULL
);
INSERT INTO product_sales (product_id, units, revenue_cents)
SELECT oi.product_id, SUM(oi.quantity), SUM(oi.quantity * oi.unit_price_cents)
FROM order_items oi JOIN orders o ON o.id = oi.order_id
WHERE o.status IN ('CONFIRMED', 'SHIPPED') GROUP BY oi.product_id;
CREATE INDEX product_sales_by_revenue ON product_sales (revenue_cents DESC, product_id);
