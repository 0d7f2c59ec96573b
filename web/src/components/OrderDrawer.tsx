import { useCallback, useEffect, useState } from "react";
import { call } from "../lib/http";
import { money, time } from "../lib/format";
import type { ArchivedEvent, FulfilmentQueued, FulfilmentRow, OrderRow } from "../types";
import { HoldCountdown } from "./HoldCountdown";

type Loaded = { order: OrderRow | null; events: ArchivedEvent[] | null; error: string | null };

// One order: its lines (what shipped and came back), its shipments and
// returns, its status history and its audit trail (the events archived
// under its id, from /api/events?key=), with ship, cancel, commit (a held
// order, payment taken), and a shipment or a return of the quantities
// entered per line.
// Reloads when the live feed says its status changed.
export function OrderDrawer({ orderId, status, onClose }: { orderId: string; status?: string; onClose: () => void }) {
  const [loaded, setLoaded] = useState<Loaded>({ order: null, events: null, error: null });
  const [message, setMessage] = useState<string | null>(null);

  const load = useCallback(async () => {
    const [order, events] = await Promise.all([
      call<OrderRow>("GET", `/api/orders/${orderId}`),
      call<ArchivedEvent[]>("GET", `/api/events?key=${orderId}&limit=100`),
    ]);
    // 202 with {order_id, status: "QUEUED"}: placed, not yet applied.
    const applied = order.ok && "total" in (order.body as object);
    setLoaded({
      order: applied && order.ok ? order.body : null,
      events: events.ok ? events.body : null,
      error: !order.ok ? order.message : !events.ok ? `audit trail: ${events.message}` : null,
    });
  }, [orderId]);

  useEffect(() => {
    void load();
  }, [load, status]);

  const command = async (what: "ship" | "cancel") => {
    const answer = await call("POST", `/api/orders/${orderId}/${what}`);
    setMessage(answer.ok ? `${what} requested` : answer.message);
    if (answer.ok) window.setTimeout(() => void load(), 500);
  };

  // Waits for the worker's decision: confirmed, or refused (the hold ran
  // out first) with the reason.
  const commit = async () => {
    const answer = await call<OrderRow>("POST", `/api/orders/${orderId}/commit?wait=5`);
    setMessage(answer.ok ? (answer.status === 200 ? "committed" : "commit requested") : answer.message);
    void load();
  };

  // Quantities entered per line, by line index; a shipment or a return
  // sends the lines with one above zero.
  const [quantities, setQuantities] = useState<Record<number, string>>({});
  const [disposition, setDisposition] = useState<"restock" | "damaged">("restock");
  const [reason, setReason] = useState("");
  const chosen = (loaded.order?.items ?? [])
    .map((item, i) => ({ product_id: item.product_id, quantity: Number(quantities[i] ?? 0) }))
    .filter((line) => Number.isInteger(line.quantity) && line.quantity > 0);

  // Sends the shipment or return, then long-polls its outcome.
  const fulfil = async (kind: "shipments" | "returns") => {
    const body =
      kind === "shipments"
        ? { lines: chosen }
        : { lines: chosen.map((line) => ({ ...line, disposition })), reason };
    const sent = await call<FulfilmentQueued>("POST", `/api/orders/${orderId}/${kind}`, body);
    if (!sent.ok) {
      setMessage(sent.message);
      return;
    }
    const read = await call<FulfilmentRow>("GET", `/api/orders/${orderId}/${kind}/${sent.body.id}?wait=10`);
    const what = kind === "shipments" ? "shipment" : "return";
    if (read.ok && read.body.status === "applied") {
      const units = (read.body.allocated ?? []).reduce((sum, line) => sum + line.quantity, 0);
      setMessage(kind === "shipments" ? `shipped ${units}` : `took back ${units} (refund ${money(read.body.refund ?? 0)})`);
      setQuantities({});
    } else if (read.ok) {
      setMessage(`${what} queued`);
    } else {
      const refused = read.body as FulfilmentRow | undefined;
      setMessage(refused?.message ?? read.message);
    }
    void load();
  };

  const order = loaded.order;
  const open = order?.status === "CONFIRMED" || order?.status === "PARTIALLY_SHIPPED";
  const isHeld = order?.status === "HELD";
  const returnable = order != null && ["PARTIALLY_SHIPPED", "SHIPPED", "CANCELLED"].includes(order.status);
  const history = (loaded.events ?? []).filter((e) => e.event_type.startsWith("order."));
  return (
    <aside className="drawer" role="dialog" aria-label={`Order ${orderId}`} data-testid="order-drawer">
      <div className="card-head">
        <h2>Order <span className="mono">{orderId.slice(-12)}</span></h2>
        <button type="button" className="link" onClick={onClose} data-testid="drawer-close">close</button>
      </div>
      {loaded.error && <p className="error" role="alert">{loaded.error}</p>}
      {!order && !loaded.error && <p className="muted">Queued: no worker has applied it yet.</p>}
      {order && (
        <>
          <p>
            <span className={`badge ${order.status.toLowerCase()}`} data-testid="drawer-status">{order.status}</span>{" "}
            {money(order.total)} · {order.customer_email}
            {order.reason && <span className="muted"> · {order.reason}</span>}
            {isHeld && order.hold_until && (
              <>
                {" · "}
                <HoldCountdown until={order.hold_until} />
              </>
            )}
          </p>
          <div className="actions-row">
            {isHeld && (
              <button type="button" onClick={() => void commit()} data-testid="commit">Commit (payment taken)</button>
            )}
            <button type="button" onClick={() => void command("ship")} disabled={!open} data-testid="ship">Ship all</button>
            <button type="button" onClick={() => void command("cancel")} disabled={!open && !isHeld && order.status !== "PENDING"} data-testid="cancel">Cancel</button>
            {message && <span className="muted" role="status" data-testid="drawer-message">{message}</span>}
          </div>
          <h3>Lines</h3>
          <table>
            <thead><tr><th>Product</th><th className="num">Qty</th><th className="num">Unit price</th><th className="num">Shipped</th><th className="num">Returned</th><th className="num">Units</th></tr></thead>
            <tbody>
              {(order.items ?? []).map((item, i) => (
                <tr key={i} data-testid="order-line">
                  <td className="mono">{item.product_id.slice(-8)}</td>
                  <td className="num">{item.quantity}</td>
                  <td className="num">{money(item.unit_price)}</td>
                  <td className="num" data-field="shipped">{item.shipped}</td>
                  <td className="num" data-field="returned">{item.returned}</td>
                  <td className="num">
                    <input type="number" min={0} max={item.quantity} className="qty" aria-label={`units of line ${i + 1}`} data-testid="line-quantity"
                      value={quantities[i] ?? ""} onChange={(e) => setQuantities({ ...quantities, [i]: e.target.value })} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <div className="actions-row" data-testid="fulfil-lines">
            <button type="button" onClick={() => void fulfil("shipments")} disabled={!open || chosen.length === 0} data-testid="ship-lines">Ship units</button>
            <select aria-label="disposition" value={disposition} onChange={(e) => setDisposition(e.target.value as "restock" | "damaged")} data-testid="return-disposition">
              <option value="restock">restock</option>
              <option value="damaged">damaged</option>
            </select>
            <input placeholder="return reason" aria-label="return reason" value={reason} onChange={(e) => setReason(e.target.value)} data-testid="return-reason" />
            <button type="button" onClick={() => void fulfil("returns")} disabled={!returnable || chosen.length === 0 || reason.trim() === ""} data-testid="return-lines">Return units</button>
          </div>
          {(order.allocations ?? []).length > 0 && (
            <>
              <h3>Where the units are reserved</h3>
              <table data-testid="allocations">
                <thead><tr><th>Product</th><th>Location</th><th className="num">Units</th><th className="num">Shipped</th></tr></thead>
                <tbody>
                  {(order.allocations ?? []).map((a) => (
                    <tr key={`${a.product_id}/${a.location_id}`} data-testid="allocation" data-location={a.code}>
                      <td className="mono">{a.product_id.slice(-8)}</td>
                      <td>{a.code}</td>
                      <td className="num">{a.quantity}</td>
                      <td className="num">{a.shipped}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
          {(order.fulfilments ?? []).length > 0 && (
            <>
              <h3>Shipments and returns</h3>
              <ol className="timeline" data-testid="fulfilments">
                {(order.fulfilments ?? []).map((f) => (
                  <li key={f.id} data-kind={f.kind} data-status={f.status}>
                    <span className="mono">{time(f.requested_at)}</span> {f.kind} {f.status}:{" "}
                    {(f.allocated ?? f.lines).map((l) => `${l.quantity}×${l.product_id.slice(-8)}${l.disposition ? ` ${l.disposition}` : ""}${"location_id" in l && l.location_id ? ` from ${l.location_id.slice(-4)}` : ""}`).join(", ")}
                    {f.refund != null && <span className="muted"> · refund {money(f.refund)}</span>}
                    {f.message && <span className="muted"> · {f.message}</span>}
                  </li>
                ))}
              </ol>
            </>
          )}
        </>
      )}
      <h3>Status history</h3>
      <ol className="timeline" data-testid="status-history">
        {history.map((e) => (
          <li key={e.event_id}><span className="mono">{time(e.occurred_at)}</span> {e.event_type}{e.actor ? <span className="muted"> by {e.actor}</span> : null}</li>
        ))}
      </ol>
      <h3>Audit trail</h3>
      {loaded.events == null ? (
        <p className="muted">Not loaded{loaded.error ? "" : "…"}</p>
      ) : (
        <ol className="audit" data-testid="audit-trail">
          {loaded.events.map((e) => (
            <li key={e.event_id}>
              <div><span className="mono">#{e.seq}</span> <strong>{e.event_type}</strong> <span className="muted">partition {e.partition}{e.entry_id ? ` · entry ${e.entry_id}` : ""} · {time(e.processed_at)}</span>{e.actor ? <span className="actor" data-testid="event-actor"> by {e.actor}</span> : null}</div>
              <pre>{JSON.stringify(e.payload, null, 1)}</pre>
            </li>
          ))}
        </ol>
      )}
    </aside>
  );
}
