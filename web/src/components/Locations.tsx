import { useCallback, useEffect, useState, type FormEvent } from "react";
import { call } from "../lib/http";
import { count, time } from "../lib/format";
import type { LocationRow, ProductRow, TransferQueued, TransferRow } from "../types";

/** How often the locations and transfers are read again (ms). */
const REFRESH_MS = 3000;
/** Transfers the panel lists: the newest. */
const SHOWN = 20;

// The locations, polled, for the inventory's filter and the transfers
// panel. Read again when the live figures change, and every few seconds.
export function useLocations(live: unknown): { locations: LocationRow[]; reload: () => void } {
  const [locations, setLocations] = useState<LocationRow[]>([]);
  const reload = useCallback(() => {
    void call<LocationRow[]>("GET", "/api/locations").then((answer) => {
      if (answer.ok) setLocations(answer.body);
    });
  }, []);
  useEffect(() => {
    reload();
    const timer = window.setInterval(reload, REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [reload, live]);
  return { locations, reload };
}

// Locations and the transfers between them: each location's stock (all
// products together) with a switch to stop or resume allocating from it;
// a form to move units of a product from one location to another; the
// newest transfers, a shipped one with a form to receive it (what arrived;
// a shortfall is booked as a transit loss).
export function Locations({ locations, products, onChanged }: { locations: LocationRow[]; products: ProductRow[]; onChanged: () => void }) {
  const [transfers, setTransfers] = useState<TransferRow[]>([]);
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const loadTransfers = useCallback(async () => {
    const answer = await call<TransferRow[]>("GET", `/api/transfers?limit=${SHOWN}`);
    if (answer.ok) setTransfers(answer.body);
  }, []);
  useEffect(() => {
    void loadTransfers();
    const timer = window.setInterval(() => void loadTransfers(), REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [loadTransfers, locations]);

  const toggle = async (location: LocationRow) => {
    const answer = await call<LocationRow>("PATCH", `/api/locations/${location.id}`, { active: !location.active });
    setMessage(answer.ok ? { ok: true, text: `${location.code} ${location.active ? "deactivated" : "activated"}` } : { ok: false, text: answer.message });
    onChanged();
  };
  const code = (id: string) => locations.find((l) => l.id === id)?.code ?? id.slice(-8);
  const sku = (id: string) => products.find((p) => p.id === id)?.sku ?? id.slice(-8);

  return (
    <section className="card locations" data-testid="locations">
      <div className="card-head">
        <h2>Locations and transfers</h2>
      </div>
      <table>
        <thead>
          <tr><th>Code</th><th>Name</th><th className="num">Priority</th><th className="num">On hand</th><th className="num">Reserved</th><th className="num">In transit</th><th /></tr>
        </thead>
        <tbody>
          {locations.map((l) => (
            <tr key={l.id} data-testid="location-row" data-code={l.code} className={l.active ? undefined : "muted"}>
              <td className="mono">{l.code}</td>
              <td>{l.name}</td>
              <td className="num">{l.priority}</td>
              <td className="num" data-field="on_hand">{count(l.on_hand)}</td>
              <td className="num">{count(l.reserved)}</td>
              <td className="num" data-field="in_transit">{count(l.in_transit)}</td>
              <td>
                <button type="button" className="link" onClick={() => void toggle(l)} data-testid="toggle-location">
                  {l.active ? "deactivate" : "activate"}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <TransferForm locations={locations} products={products} onDone={(text, ok) => { setMessage({ ok, text }); void loadTransfers(); onChanged(); }} />
      {message && (
        <p className={message.ok ? "ok" : "error"} role={message.ok ? "status" : "alert"} data-testid="transfer-message">{message.text}</p>
      )}
      <h3>Transfers</h3>
      {transfers.length === 0 && <p className="muted">No transfer yet.</p>}
      <ol className="timeline" data-testid="transfers">
        {transfers.map((t) => (
          <li key={t.id} data-testid="transfer" data-status={t.status}>
            <span className="mono">{time(t.requested_at)}</span> {code(t.from)} → {code(t.to)}:{" "}
            {t.lines.map((l) => `${l.quantity}×${sku(l.product_id)}${l.received != null && l.received !== l.quantity ? ` (${l.received} arrived)` : ""}`).join(", ")}{" "}
            <strong>{t.status}</strong>
            {t.message && <span className="muted"> · {t.message}</span>}
            {t.status === "shipped" && (
              <ReceiveForm transfer={t} onDone={(text, ok) => { setMessage({ ok, text }); void loadTransfers(); onChanged(); }} />
            )}
          </li>
        ))}
      </ol>
    </section>
  );
}

// Moves units of one product between two locations; says whether the
// worker shipped it, or why not.
function TransferForm({ locations, products, onDone }: { locations: LocationRow[]; products: ProductRow[]; onDone: (text: string, ok: boolean) => void }) {
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [product, setProduct] = useState("");
  const [quantity, setQuantity] = useState("1");
  const [busy, setBusy] = useState(false);
  // Until chosen: the first location to the second, the first product.
  const fromId = from || locations[0]?.id || "";
  const toId = to || locations[1]?.id || "";
  const productId = product || products[0]?.id || "";
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    const units = Number(quantity);
    const sent = await call<TransferQueued>("POST", "/api/transfers", {
      from: fromId,
      to: toId,
      lines: [{ product_id: productId, quantity: Number.isNaN(units) ? quantity : units }],
    });
    if (!sent.ok) {
      setBusy(false);
      onDone(sent.message, false);
      return;
    }
    const read = await call<TransferRow>("GET", `/api/transfers/${sent.body.id}?wait=10`);
    setBusy(false);
    const decided = read.body as TransferRow | undefined;
    if (decided?.status === "refused") onDone(decided.message ?? "refused", false);
    else onDone(decided?.status ? `transfer ${decided.status}` : read.ok ? "queued" : read.message, true);
  };
  return (
    <form className="form inline" onSubmit={onSubmit} data-testid="transfer-form">
      <select aria-label="from" value={fromId} onChange={(e) => setFrom(e.target.value)} data-testid="transfer-from">
        {locations.map((l) => <option key={l.id} value={l.id}>{l.code}</option>)}
      </select>
      <span>→</span>
      <select aria-label="to" value={toId} onChange={(e) => setTo(e.target.value)} data-testid="transfer-to">
        {locations.map((l) => <option key={l.id} value={l.id}>{l.code}</option>)}
      </select>
      <select aria-label="product" value={productId} onChange={(e) => setProduct(e.target.value)} data-testid="transfer-product">
        {products.map((p) => <option key={p.id} value={p.id}>{p.sku}</option>)}
      </select>
      <input aria-label="units" className="qty" inputMode="numeric" value={quantity} onChange={(e) => setQuantity(e.target.value)} data-testid="transfer-quantity" />
      <button type="submit" disabled={busy || locations.length < 2 || products.length === 0} data-testid="transfer-submit">Transfer</button>
    </form>
  );
}

// What arrived of a shipped transfer's first product (the others whole).
function ReceiveForm({ transfer, onDone }: { transfer: TransferRow; onDone: (text: string, ok: boolean) => void }) {
  const first = transfer.lines[0];
  const [received, setReceived] = useState(String(first?.quantity ?? 0));
  const [busy, setBusy] = useState(false);
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    const arrived = Number(received);
    const sent = await call<TransferQueued>("POST", `/api/transfers/${transfer.id}/receive`, {
      lines: first ? [{ product_id: first.product_id, received: Number.isNaN(arrived) ? received : arrived }] : [],
      discrepancy_reason: first && arrived < first.quantity ? "counted at the dock" : undefined,
    });
    setBusy(false);
    onDone(sent.ok ? "receipt recorded" : sent.message, sent.ok);
  };
  return (
    <form className="form inline" onSubmit={onSubmit} data-testid="receive-transfer">
      <input aria-label="units arrived" className="qty" inputMode="numeric" value={received} onChange={(e) => setReceived(e.target.value)} data-testid="transfer-received" />
      <button type="submit" disabled={busy} data-testid="receive-transfer-submit">Receive</button>
    </form>
  );
}
