import { money, shortId, time } from "../lib/format";
import type { OrderRow } from "../types";
import { HoldCountdown } from "./HoldCountdown";

// The latest orders, their statuses changing live as workers decide them
// (a held one with what is left of its hold); a click opens the order.
export function Orders({ orders, onOpen }: { orders: OrderRow[]; onOpen: (orderId: string) => void }) {
  return (
    <section className="card">
      <h2>Latest orders</h2>
      {orders.length === 0 ? (
        <p className="muted">No orders yet.</p>
      ) : (
        <ul className="feed" data-testid="orders">
          {orders.map((o) => (
            <li key={o.order_id}>
              <button type="button" className="feed-row" onClick={() => onOpen(o.order_id)} data-testid="order-row" data-order={o.order_id}>
                <span className="mono">{shortId(o.order_id)}</span>
                <span className={`badge ${o.status.toLowerCase()}`} data-testid="order-status">{o.status}</span>
                {o.status === "HELD" && o.hold_until ? (
                  <HoldCountdown until={o.hold_until} />
                ) : (
                  <span className="muted ellipsis">{o.reason ?? o.customer_email}</span>
                )}
                <span className="num">{money(o.total)}</span>
                <span className="muted">{time(o.updated_at)}</span>
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
