import { useCallback, useEffect, useState, type FormEvent } from "react";
import { call } from "../lib/http";
import { count, shortId, time } from "../lib/format";
import type { BackorderQueue, ProductRow } from "../types";

// A product's backorders, in its drawer: how many units may be sold past
// zero (set here), how many wait, and the queue's head in the order stock
// will fill it. Reloads when the live figures change.
export function Backorders({ product }: { product: ProductRow }) {
  const [queue, setQueue] = useState<BackorderQueue | null>(null);
  const [limit, setLimit] = useState(String(product.backorder_limit ?? 0));
  const [message, setMessage] = useState<string | null>(null);

  const load = useCallback(async () => {
    const answer = await call<BackorderQueue>("GET", `/api/products/${product.id}/backorders?limit=20`);
    if (answer.ok) setQueue(answer.body);
  }, [product.id]);

  useEffect(() => {
    void load();
  }, [load, product.backordered, product.reserved, product.backorder_limit]);

  const save = async (e: FormEvent) => {
    e.preventDefault();
    const wanted = Number(limit);
    const answer = await call<ProductRow>("PATCH", `/api/products/${product.id}`, {
      backorder_limit: Number.isInteger(wanted) && limit.trim() !== "" ? wanted : limit,
    });
    setMessage(answer.ok ? `limit set to ${count(wanted)}` : answer.message);
    void load();
  };

  return (
    <section data-testid="backorders">
      <h3>Backorders</h3>
      <p className="muted">
        <span data-testid="backordered">{count(queue?.backordered ?? product.backordered ?? 0)}</span> units waiting for stock, of a limit of{" "}
        {count(queue?.backorder_limit ?? product.backorder_limit ?? 0)} (0: an order short of stock is rejected).
      </p>
      <form className="inline-form" onSubmit={(e) => void save(e)} data-testid="backorder-limit-form">
        <label>
          Backorder limit{" "}
          <input value={limit} onChange={(e) => setLimit(e.target.value)} name="backorder_limit" inputMode="numeric" size={8} />
        </label>
        <button type="submit">Set</button>
        {message && <span className="muted" role="status" data-testid="backorder-message">{message}</span>}
      </form>
      {queue && queue.orders.length > 0 && (
        <table data-testid="backorder-queue">
          <thead>
            <tr><th className="num">#</th><th>Order</th><th>Placed</th><th className="num">Waiting</th></tr>
          </thead>
          <tbody>
            {queue.orders.map((o) => (
              <tr key={o.order_id} data-testid="queued-backorder" data-order={o.order_id}>
                <td className="num">{o.position}</td>
                <td className="mono">{shortId(o.order_id)}</td>
                <td>{time(o.placed_at)}</td>
                <td className="num" data-field="waiting">{count(o.waiting)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
