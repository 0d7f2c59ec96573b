// The inventory table's sorting and filtering, apart from React so that
// tests can check them.
import type { ProductRow, PurchaseOrderRow } from "../types";

export type SortKey = "sku" | "name" | "price" | "on_hand" | "reserved" | "available";
export type Sort = { key: SortKey; descending: boolean };

export function isLow(p: ProductRow): boolean {
  return p.available < p.low_stock_threshold; // as the server counts low-stock products
}

/** Products whose sku or name contains `filter` (any case), sorted; ties by sku. */
export function sortAndFilter(products: ProductRow[], filter: string, sort: Sort, lowOnly = false): ProductRow[] {
  const needle = filter.trim().toLowerCase();
  const chosen = products.filter(
    (p) =>
      (!lowOnly || isLow(p)) &&
      (needle === "" || p.sku.toLowerCase().includes(needle) || p.name.toLowerCase().includes(needle)),
  );
  const direction = sort.descending ? -1 : 1;
  return chosen.sort((a, b) => {
    const x = a[sort.key];
    const y = b[sort.key];
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return order !== 0 ? order * direction : a.sku.localeCompare(b.sku);
  });
}

/** Open purchase orders by product id. */
export function openPurchaseOrders(orders: PurchaseOrderRow[]): Map<string, PurchaseOrderRow> {
  return new Map(orders.map((po) => [po.product_id, po]));
}
