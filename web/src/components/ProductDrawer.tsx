import { useCallback, useEffect, useState, type FormEvent } from "react";
import { authorizedFetch, call } from "../lib/http";
import { count, time } from "../lib/format";
import { adjustmentOutcome } from "./Forms";
import type { Adjustment, LedgerEntry, LocationStock, ProductRow } from "../types";
import { Backorders } from "./Backorders";

/** The ledger rows the drawer shows: the newest this many. */
const SHOWN = 200;

// One product's stock history: its ledger (why on-hand is what it is),
// a sparkline of on-hand over its movements, the whole ledger as a CSV
// download, and a cycle count. Reloads when the live figures change.
export function ProductDrawer({ product, onClose }: { product: ProductRow; onClose: () => void }) {
  const [rows, setRows] = useState<LedgerEntry[] | null>(null);
  const [locations, setLocations] = useState<LocationStock[]>([]);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async () => {
    const detail = await call<ProductRow>("GET", `/api/products/${product.id}`);
    if (detail.ok) setLocations(detail.body.locations ?? []);
    const page = await call<LedgerEntry[]>("GET", `/api/products/${product.id}/ledger?order=desc&limit=${SHOWN}`);
    if (!page.ok) {
      setError(page.message);
      return;
    }
    setError(null);
    // Oldest first, as the sparkline reads them.
    setRows([...page.body].reverse());
  }, [product.id]);

  useEffect(() => {
    void load();
  }, [load, product.on_hand, product.reserved]);

  const download = async () => {
    const response = await authorizedFetch(`/api/products/${product.id}/ledger`, { headers: { accept: "text/csv" } });
    if (!response.ok) {
      setError(`the ledger download answered ${response.status}`);
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = `ledger-${product.sku}.csv`;
    link.click();
    URL.revokeObjectURL(url);
  };

  return (
    <aside className="drawer" role="dialog" aria-label={`Product ${product.sku}`} data-testid="product-drawer">
      <div className="card-head">
        <h2>Stock of <span className="mono">{product.sku}</span></h2>
        <button type="button" className="link" onClick={onClose} data-testid="product-drawer-close">close</button>
      </div>
      <p>
        {count(product.on_hand)} on hand · {count(product.reserved)} reserved · {count(product.available)} available
      </p>
      {error && <p className="error" role="alert">{error}</p>}
      {locations.length > 0 && (
        <table data-testid="product-locations">
          <thead>
            <tr><th>Location</th><th className="num">On hand</th><th className="num">Reserved</th><th className="num">Available</th><th className="num">In transit</th></tr>
          </thead>
          <tbody>
            {locations.map((l) => (
              <tr key={l.location_id} data-testid="product-location" data-location={l.code}>
                <td>{l.code}{!l.active && <span className="muted"> (inactive)</span>}</td>
                <td className="num" data-field="on_hand">{count(l.on_hand)}</td>
                <td className="num">{count(l.reserved)}</td>
                <td className="num" data-field="available">{count(l.available)}</td>
                <td className="num" data-field="in_transit">{count(l.in_transit)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Backorders product={product} />
      {rows && <Sparkline rows={rows} />}
      <div className="actions-row">
        <button type="button" onClick={() => void download()} data-testid="ledger-csv">Download the ledger (CSV)</button>
      </div>
      <CountForm product={product} onCounted={() => void load()} />
      <h3>Ledger</h3>
      {rows && rows.length === 0 && <p className="muted">No movement yet.</p>}
      {rows && rows.length > 0 && (
        <table className="ledger" data-testid="ledger">
          <thead>
            <tr>
              <th>#</th>
              <th>When</th>
              <th>What</th>
              <th className="num">Δ on hand</th>
              <th className="num">Δ reserved</th>
              <th className="num">On hand</th>
              <th className="num">Reserved</th>
            </tr>
          </thead>
          <tbody>
            {[...rows].reverse().map((r) => (
              <tr key={r.seq} data-testid="ledger-row" data-kind={r.kind}>
                <td className="num">{r.seq}</td>
                <td>{time(r.occurred_at)}</td>
                <td>
                  {r.kind}
                  {r.reason && <span className="muted"> · {r.reason.replace("_", " ")}</span>}
                  {r.order_id && <span className="muted mono"> · {r.order_id.slice(-8)}</span>}
                </td>
                <td className="num">{signed(r.on_hand_delta)}</td>
                <td className="num">{signed(r.reserved_delta)}</td>
                <td className="num" data-field="on_hand">{count(r.on_hand)}</td>
                <td className="num">{count(r.reserved)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </aside>
  );
}

const signed = (n: number) => (n === 0 ? "" : n > 0 ? `+${count(n)}` : count(n));

/** On hand after each movement, as a line. */
export function Sparkline({ rows }: { rows: LedgerEntry[] }) {
  if (rows.length < 2) return null;
  const width = 480;
  const height = 60;
  const values = rows.map((r) => r.on_hand);
  const top = Math.max(...values, 1);
  const x = (i: number) => (i / (values.length - 1)) * width;
  const y = (v: number) => height - 2 - (v / top) * (height - 4);
  const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  return (
    <svg
      className="sparkline"
      viewBox={`0 0 ${width} ${height}`}
      role="img"
      aria-label={`on hand over the last ${values.length} movements, from ${values[0]} to ${values[values.length - 1]}`}
      data-testid="ledger-sparkline"
    >
      <polyline points={points} fill="none" stroke="currentColor" strokeWidth="1.5" />
    </svg>
  );
}

// A cycle count: the units on the shelf now; the worker compares them with
// the book as of this moment, even if the stock moves before it decides.
function CountForm({ product, onCounted }: { product: ProductRow; onCounted: () => void }) {
  const [counted, setCounted] = useState("");
  const [outcome, setOutcome] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setOutcome(null);
    const value = counted.trim() !== "" && !Number.isNaN(Number(counted)) ? Number(counted) : counted;
    const sent = await call<{ adjustment_id: string }>("POST", `/api/products/${product.id}/counts`, {
      counted: value,
      counted_at: new Date().toISOString(),
    });
    if (!sent.ok) {
      setBusy(false);
      setOutcome({ ok: false, text: sent.message });
      return;
    }
    const read = await call<Adjustment>("GET", `/api/products/${product.id}/adjustments/${sent.body.adjustment_id}?wait=10`);
    setBusy(false);
    const decided = read.body as Adjustment | undefined;
    setOutcome(decided?.status ? adjustmentOutcome(decided, product.sku) : { ok: false, text: read.ok ? "no outcome" : read.message });
    onCounted();
  };
  return (
    <form className="form inline" onSubmit={onSubmit} data-testid="count-form">
      <label className="field">
        <span>Counted on the shelf</span>
        <input value={counted} onChange={(e) => setCounted(e.target.value)} name="counted" inputMode="numeric" />
      </label>
      <button type="submit" disabled={busy}>Record count</button>
      {outcome && (
        <p className={outcome.ok ? "ok" : "error"} role={outcome.ok ? "status" : "alert"} data-testid="count-outcome">
          {outcome.text}
        </p>
      )}
    </form>
  );
}
