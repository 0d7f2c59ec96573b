import { describe, expect, it } from "vitest";
import { fieldOf } from "../src/lib/http";
import { sortAndFilter, isLow } from "../src/lib/inventory";
import { record, emptyHistory, LIMIT } from "../src/lib/history";
import { duration } from "../src/lib/format";
import { withStatusChanges } from "../src/useDashboard";
import { product, pipeline, snapshot } from "./fixtures";

describe("fieldOf", () => {
  it("names the field a server error is about", () => {
    expect(fieldOf("initial_stock: must be between 1 and 1000000")).toBe("initial_stock");
    expect(fieldOf("items[0].quantity: must be at least 1")).toBe("quantity");
    expect(fieldOf("customer_email: not an email address")).toBe("customer_email");
  });
  it("names none for a sentence", () => {
    expect(fieldOf("the gateway cannot be reached")).toBeUndefined();
    expect(fieldOf("no dead letter with id 3: gone")).toBeUndefined();
  });
});

describe("sortAndFilter", () => {
  const products = [
    product({ sku: "B-2", name: "Bolt", available: 5, on_hand: 9 }),
    product({ sku: "A-1", name: "Anchor", available: 50, on_hand: 50 }),
    product({ sku: "C-3", name: "Cable", available: 1, on_hand: 3, low_stock_threshold: 2 }),
  ];
  it("sorts by any column, either way, ties by sku", () => {
    expect(sortAndFilter(products, "", { key: "sku", descending: false }).map((p) => p.sku)).toEqual(["A-1", "B-2", "C-3"]);
    expect(sortAndFilter(products, "", { key: "available", descending: true }).map((p) => p.sku)).toEqual(["A-1", "B-2", "C-3"]);
    expect(sortAndFilter(products, "", { key: "on_hand", descending: false }).map((p) => p.sku)).toEqual(["C-3", "B-2", "A-1"]);
  });
  it("filters by sku or name in any case, and by low stock", () => {
    expect(sortAndFilter(products, "cab", { key: "sku", descending: false }).map((p) => p.sku)).toEqual(["C-3"]);
    expect(sortAndFilter(products, "a-1", { key: "sku", descending: false }).map((p) => p.sku)).toEqual(["A-1"]);
    expect(sortAndFilter(products, "", { key: "sku", descending: false }, true).map((p) => p.sku)).toEqual(["C-3"]);
  });
  it("calls a product low as the server counts it (available below the threshold)", () => {
    expect(isLow(product({ available: 2, low_stock_threshold: 2 }))).toBe(false);
    expect(isLow(product({ available: 1, low_stock_threshold: 2 }))).toBe(true);
  });
});

describe("history", () => {
  it("turns counter readings into rates and keeps the lag", () => {
    let h = record(emptyHistory, 100, pipeline({ appended: 1000, processed: 900, lag: 100 }));
    h = record(h, 102, pipeline({ appended: 1400, processed: 1500, lag: 0 }));
    expect(h.points).toHaveLength(2);
    expect(h.points[0]).toMatchObject({ appended: null, processed: null, lag: 100 });
    expect(h.points[1]).toMatchObject({ t: 102, appended: 200, processed: 300, lag: 0 });
  });
  it("has no rate across a restart (counters going back) or a gap in the log", () => {
    let h = record(emptyHistory, 1, pipeline({ appended: 1000, processed: 1000 }));
    h = record(h, 2, pipeline({ appended: 10, processed: 10 }));
    expect(h.points[1].appended).toBeNull();
    h = record(h, 3, pipeline({ appended: null, processed: null, lag: null }));
    expect(h.points[2]).toMatchObject({ appended: null, lag: null });
  });
  it("stays bounded and ignores a snapshot older than the last", () => {
    let h = emptyHistory;
    for (let t = 1; t <= LIMIT + 50; t++) h = record(h, t, pipeline({ appended: t, processed: t }));
    expect(h.points).toHaveLength(LIMIT);
    expect(h.points[0].t).toBe(51);
    expect(record(h, 10, pipeline({}))).toBe(h);
  });
});

describe("withStatusChanges", () => {
  it("updates the statuses of the orders shown, and nothing else", () => {
    const before = snapshot();
    const id = before.recent_orders[0].order_id;
    const after = withStatusChanges(before, { status_changes: [{ order_id: id, status: "SHIPPED" }] })!;
    expect(after.recent_orders[0].status).toBe("SHIPPED");
    const unrelated = withStatusChanges(before, { status_changes: [{ order_id: "x", status: "SHIPPED" }] });
    expect(unrelated).toBe(before);
  });
});

describe("duration", () => {
  it("reads at a glance", () => {
    expect(duration(12)).toBe("12s");
    expect(duration(250)).toBe("4m 10s");
    expect(duration(7500)).toBe("2h 5m");
    expect(duration(3 * 86400 + 4 * 3600)).toBe("3d 4h");
  });
});
