import { useCallback, useEffect, useState } from "react";
import { call } from "../lib/http";
import { money, time } from "../lib/format";
import type { ArchivedEvent, OrderRow } from "../types";

type Loaded = { order: OrderRow | null; events: ArchivedEvent[] | null; error: string | null };

// One order: its lines, its status history and its audit trail (the events
// archived under its id, from /api/events?key=), with ship and cancel.
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

  const order = loaded.order;
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
          </p>
          <div className="actions-row">
            <button type="button" onClick={() => void command("ship")} disabled={order.status !== "CONFIRMED"} data-testid="ship">Ship</button>
            <button type="button" onClick={() => void command("cancel")} disabled={order.status === "CANCELLED" || order.status === "SHIPPED" || order.status === "REJECTED"} data-testid="cancel">Cancel</button>
            {message && <span className="muted" role="status" data-testid="drawer-message">{message}</span>}
          </div>
          <h3>Lines</h3>
          <table>
            <thead><tr><th>Product</th><th className="num">Qty</th><th className="num">Unit price</th></tr></thead>
            <tbody>
              {(order.items ?? []).map((item, i) => (
                <tr key={i}>
                  <td className="mono">{item.product_id.slice(-8)}</td>
                  <td className="num">{item.quantity}</td>
                  <td className="num">{money(item.unit_price)}</td>
                </tr>
              ))}
            </tbody>
          </table>
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
