import type { OrderRow, Pipeline, ProductRow, Snapshot } from "../src/types";

let n = 0;
const id = () => `00000000-0000-7000-8000-${String(++n).padStart(12, "0")}`;

export function product(over: Partial<ProductRow> = {}): ProductRow {
  return {
    id: id(),
    sku: `SKU-${n}`,
    name: `Product ${n}`,
    price: 9.99,
    category_name: "General",
    created_at: "2026-11-27T10:00:00Z",
    low_stock_threshold: 2,
    reorder_quantity: 10,
    on_hand: 10,
    reserved: 0,
    available: 10,
    ...over,
  } as ProductRow;
}

export function order(over: Partial<OrderRow> = {}): OrderRow {
  return {
    order_id: id(),
    customer_email: "a@example.com",
    status: "PENDING",
    total: 19.98,
    created_at: "2026-11-27T10:00:00Z",
    updated_at: "2026-11-27T10:00:00Z",
    ...over,
  } as OrderRow;
}

export function pipeline(over: Partial<Pipeline> = {}): Pipeline {
  return {
    version: "0.1.0",
    started_at: "2026-11-27T10:00:00Z",
    event_log: "Valkey streams at redis://127.0.0.1:6379 (strict durability)",
    database: "PostgreSQL at 127.0.0.1/streamstock",
    partitions: 4,
    workers: [{ name: "host-1-abc", partitions: [0, 1] }, { name: "host-2-def", partitions: [2, 3] }],
    unowned_partitions: [],
    appended: 0,
    processed: 0,
    lag: 0,
    dead_letters: 0,
    ...over,
  } as Pipeline;
}

export function snapshot(): Snapshot {
  return {
    generated_at: "2026-11-27T10:00:00Z",
    pipeline: pipeline(),
    stats: {} as Snapshot["stats"],
    products: [product()],
    recent_orders: [order(), order()],
    alerts: [],
    open_purchase_orders: [],
  } as Snapshot;
}
