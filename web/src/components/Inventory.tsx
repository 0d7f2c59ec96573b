import { useEffect, useMemo, useRef, useState } from "react";
import { call } from "../lib/http";
import { useVirtualizer } from "@tanstack/react-virtual";
import { count, money } from "../lib/format";
import { isLow, openPurchaseOrders, sortAndFilter, type Sort, type SortKey } from "../lib/inventory";
import type { LocationRow, ProductRow, PurchaseOrderRow, StockAtLocation } from "../types";

const COLUMNS: { key: SortKey; label: string; numeric?: boolean }[] = [
  { key: "sku", label: "SKU" },
  { key: "name", label: "Name" },
  { key: "price", label: "Price", numeric: true },
  { key: "on_hand", label: "On hand", numeric: true },
  { key: "reserved", label: "Reserved", numeric: true },
  { key: "available", label: "Available", numeric: true },
];
const ROW_HEIGHT = 40;

// The inventory: sortable by any column, filtered by sku or name, each row
// with a stock bar (reserved and available out of on hand), a low-stock
// badge and its open purchase order. Rows are keyed by product, so the
// live updates change them in place and keep the sort, the filter and the
// scroll; only the rows in view are rendered. A location filter shows the
// products a location holds, with its figures.
export function Inventory({
  products,
  purchaseOrders,
  locations,
  onReceive,
  onAdjust,
  onOpen,
}: {
  products: ProductRow[];
  purchaseOrders: PurchaseOrderRow[];
  locations: LocationRow[];
  onReceive: (product: ProductRow) => void;
  onAdjust: (product: ProductRow) => void;
  /** Opens the product's stock history (its ledger). */
  onOpen: (product: ProductRow) => void;
}) {
  const [filter, setFilter] = useState("");
  const [lowOnly, setLowOnly] = useState(false);
  const [sort, setSort] = useState<Sort>({ key: "sku", descending: false });
  const [location, setLocation] = useState("");
  const searched = useServerSearch(filter, lowOnly, sort, products);
  const atLocation = useLocationStock(location, products);
  const rows = useMemo(
    () => sortAndFilter(atLocation ? atLocationRows(searched ?? products, atLocation) : (searched ?? products), filter, sort, lowOnly),
    [searched, products, filter, sort, lowOnly, atLocation],
  );
  const open = useMemo(() => openPurchaseOrders(purchaseOrders), [purchaseOrders]);
  const scroller = useRef<HTMLDivElement>(null);
  const virtual = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 8,
    // Without layout (tests, a hidden tab) render a first screenful.
    initialRect: { width: 800, height: 480 },
  });

  const sortBy = (key: SortKey) =>
    setSort((s) => (s.key === key ? { key, descending: !s.descending } : { key, descending: false }));

  return (
    <section className="card inventory">
      <div className="card-head">
        <h2>Inventory</h2>
        <input
          type="search"
          placeholder="Filter by SKU or name"
          aria-label="Filter products"
          value={filter}
          onChange={(e) => setFilter(e.target.value)}
          data-testid="inventory-filter"
        />
        <label className="check">
          <input type="checkbox" checked={lowOnly} onChange={(e) => setLowOnly(e.target.checked)} /> low stock only
        </label>
        {locations.length > 1 && (
          <select aria-label="Location" value={location} onChange={(e) => setLocation(e.target.value)} data-testid="inventory-location">
            <option value="">All locations</option>
            {locations.map((l) => (
              <option key={l.id} value={l.id}>{l.code}</option>
            ))}
          </select>
        )}
      </div>
      {products.length === 0 ? (
        <p className="muted">No products yet.</p>
      ) : (
        <div className="grid-table" role="table" data-testid="inventory" aria-rowcount={rows.length}>
          <div className="grid-row head" role="row">
            {COLUMNS.map((c) => (
              <button
                key={c.key}
                type="button"
                role="columnheader"
                className={c.numeric ? "num" : undefined}
                aria-sort={sort.key === c.key ? (sort.descending ? "descending" : "ascending") : "none"}
                onClick={() => sortBy(c.key)}
                data-testid={`sort-${c.key}`}
              >
                {c.label}
                {sort.key === c.key ? (sort.descending ? " ▼" : " ▲") : ""}
              </button>
            ))}
            <span role="columnheader">Stock</span>
            <span role="columnheader" />
          </div>
          <div className="grid-body" ref={scroller}>
            <div style={{ height: virtual.getTotalSize(), position: "relative" }}>
              {virtual.getVirtualItems().map((item) => {
                const p = rows[item.index];
                const po = open.get(p.id);
                return (
                  <div
                    key={p.id}
                    role="row"
                    className={`grid-row${isLow(p) ? " low" : ""}`}
                    data-testid="inventory-row"
                    data-sku={p.sku}
                    style={{ position: "absolute", top: 0, left: 0, right: 0, height: ROW_HEIGHT, transform: `translateY(${item.start}px)` }}
                  >
                    <span role="cell">
                      <button type="button" className="link mono" onClick={() => onOpen(p)} title="stock history" data-testid="open-product">
                        {p.sku}
                      </button>
                    </span>
                    <span role="cell" className="name">
                      <span className="ellipsis" title={p.name}>{p.name}</span>
                      {isLow(p) && <span className="badge low" data-testid="low-badge">low</span>}
                      {(p.backordered ?? 0) > 0 && (
                        <span className="badge backordered" title={`${p.backordered} units wait for stock (limit ${p.backorder_limit})`} data-testid="backordered-badge">
                          {count(p.backordered ?? 0)} waiting
                        </span>
                      )}
                      {po && (
                        <span className="badge po" title={`purchase order ${po.id} for ${po.quantity}`} data-testid="open-po">
                          PO +{count(po.quantity)}
                        </span>
                      )}
                    </span>
                    <span role="cell" className="num">{money(p.price)}</span>
                    <span role="cell" className="num" data-field="on_hand">{count(p.on_hand)}</span>
                    <span role="cell" className="num" data-field="reserved">{count(p.reserved)}</span>
                    <span role="cell" className="num" data-field="available">{count(p.available)}</span>
                    <span role="cell"><StockBar product={p} /></span>
                    <span role="cell" className="row-actions">
                      <button type="button" className="link" onClick={() => onReceive(p)} data-testid="receive-stock">
                        receive
                      </button>
                      <button type="button" className="link" onClick={() => onAdjust(p)} data-testid="adjust-stock">
                        adjust
                      </button>
                    </span>
                  </div>
                );
              })}
            </div>
          </div>
        </div>
      )}
    </section>
  );
}

/** Products held at a location: the rows given, with the location's
 * figures instead of the totals (the others left out). */
function atLocationRows(products: ProductRow[], stock: Map<string, StockAtLocation>): ProductRow[] {
  return products.flatMap((p) => {
    const here = stock.get(p.id);
    return here ? [{ ...p, on_hand: here.on_hand, reserved: here.reserved, available: here.available }] : [];
  });
}

// A location's figures per product (`GET /api/locations/{id}/stock`), read
// again when the live figures change. Null with no location chosen.
function useLocationStock(location: string, live: ProductRow[]): Map<string, StockAtLocation> | null {
  const [stock, setStock] = useState<Map<string, StockAtLocation> | null>(null);
  useEffect(() => {
    if (!location) {
      setStock(null);
      return;
    }
    let cancelled = false;
    void (async () => {
      const answer = await call<StockAtLocation[]>("GET", `/api/locations/${location}/stock?limit=1000`);
      if (!cancelled && answer.ok) setStock(new Map(answer.body.map((s) => [s.product_id, s])));
    })();
    return () => {
      cancelled = true;
    };
  }, [location, live]);
  return location ? stock : null;
}

/** The sorts the server can do (price stays on the page). */
const SERVER_SORTS: Partial<Record<SortKey, string>> = { sku: "sku", name: "name", available: "available", on_hand: "on_hand" };
/** Products the search asks the server for. */
const SEARCHED = 200;

// A search or the low-stock filter asks the server (`GET /api/products?q=`),
// so it finds products beyond the snapshot's first 200; it asks again when
// the live figures change, a moment after the typing stops. Null while no
// search is on (the snapshot's products are shown).
function useServerSearch(filter: string, lowOnly: boolean, sort: Sort, live: ProductRow[]): ProductRow[] | null {
  const [found, setFound] = useState<ProductRow[] | null>(null);
  const needle = filter.trim();
  const active = needle !== "" || lowOnly;
  useEffect(() => {
    if (!active) {
      setFound(null);
      return;
    }
    let cancelled = false;
    const timer = window.setTimeout(async () => {
      const query = new URLSearchParams({ limit: String(SEARCHED) });
      if (needle) query.set("q", needle);
      if (lowOnly) query.set("low_stock", "true");
      const serverSort = SERVER_SORTS[sort.key];
      if (serverSort) {
        query.set("sort", serverSort);
        query.set("order", sort.descending ? "desc" : "asc");
      }
      const answer = await call<ProductRow[]>("GET", `/api/products?${query}`);
      if (!cancelled && answer.ok) setFound(answer.body);
    }, 250);
    return () => {
      cancelled = true;
      window.clearTimeout(timer);
    };
  }, [active, needle, lowOnly, sort.key, sort.descending, live]);
  return active ? found : null;
}

/** On hand as a bar: reserved, then available, with the threshold marked. */
export function StockBar({ product }: { product: ProductRow }) {
  const total = Math.max(product.on_hand, product.low_stock_threshold, 1);
  const pct = (n: number) => `${Math.max(0, Math.min(100, (n / total) * 100))}%`;
  return (
    <div
      className="stockbar"
      role="img"
      aria-label={`${product.reserved} reserved and ${product.available} available of ${product.on_hand} on hand`}
      title={`${product.reserved} reserved · ${product.available} available · ${product.on_hand} on hand`}
    >
      <span className="reserved" style={{ width: pct(product.reserved) }} />
      <span className={`available${isLow(product) ? " low" : ""}`} style={{ width: pct(product.available) }} />
      <span className="threshold" style={{ left: pct(product.low_stock_threshold) }} />
    </div>
  );
}
