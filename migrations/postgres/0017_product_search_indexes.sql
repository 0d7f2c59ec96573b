-- GET /api/products sorted by name, available or on-hand, or filtered by
-- category: each order has an index to walk, so a page is read in index
-- order and stops at its limit instead of sorting the whole catalog.
CREATE INDEX products_by_name ON products (name, id);
CREATE INDEX products_by_category ON products (category_name, id);
CREATE INDEX inventory_by_available ON inventory ((on_hand - reserved), product_id);
CREATE INDEX inventory_by_on_hand ON inventory (on_hand, product_id);
