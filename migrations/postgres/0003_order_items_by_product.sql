-- Per-product queries over order lines (reservations, top products).
CREATE INDEX order_items_by_product ON order_items (product_id, order_id);
