import { useState } from "react";
import { call } from "../lib/http";
import { count, money, shortId, time } from "../lib/format";
import type { AlertRow, PurchaseOrderRow, TopProduct } from "../types";

export function TopProducts({ products }: { products: TopProduct[] }) {
  return (
    <section className="card">
      <h2>Top products</h2>
      {products.length === 0 ? (
        <p className="muted" data-testid="top-products-empty">No sales yet.</p>
      ) : (
        <table data-testid="top-products">
          <thead>
            <tr><th>SKU</th><th>Name</th><th className="num">Units</th><th className="num">Revenue</th></tr>
          </thead>
          <tbody>
            {products.map((p) => (
              <tr key={p.product_id}>
                <td className="mono">{p.sku}</td>
                <td>{p.name}</td>
                <td className="num">{p.units}</td>
                <td className="num">{money(p.revenue)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

// Open purchase orders, each with the supplier's delivery button.
export function PurchaseOrders({ orders }: { orders: PurchaseOrderRow[] }) {
  const [message, setMessage] = useState<string | null>(null);
  const receive = async (po: PurchaseOrderRow) => {
    const answer = await call("POST", `/api/purchase-orders/${po.id}/receive`);
    setMessage(answer.ok ? `receiving ${po.quantity} of ${po.sku ?? "the product"}` : answer.message);
  };
  return (
    <section className="card">
      <h2>Open purchase orders</h2>
      {message && <p className="muted" role="status" data-testid="purchase-order-message">{message}</p>}
      {orders.length === 0 ? (
        <p className="muted" data-testid="purchase-orders-empty">None open.</p>
      ) : (
        <table data-testid="purchase-orders">
          <thead>
            <tr><th>Purchase order</th><th>SKU</th><th className="num">Quantity</th><th>Drafted</th><th /></tr>
          </thead>
          <tbody>
            {orders.map((po) => (
              <tr key={po.id}>
                <td className="mono">{shortId(po.id)}</td>
                <td className="mono">{po.sku ?? "?"}</td>
                <td className="num">{count(po.quantity)}</td>
                <td>{time(po.drafted_at)}</td>
                <td><button type="button" className="link" onClick={() => void receive(po)} data-testid="receive-po">receive</button></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function Alerts({ alerts }: { alerts: AlertRow[] }) {
  return (
    <section className="card">
      <h2>Alerts</h2>
      {alerts.length === 0 ? (
        <p className="muted" data-testid="alerts-empty">No alerts.</p>
      ) : (
        <ul className="alerts" data-testid="alerts">
          {alerts.map((a) => (
            <li key={a.id} className={`alert ${a.severity}`}>
              <span className="mono">{time(a.raised_at)}</span>
              <span className="badge">{a.kind}</span>
              <span>{a.message}</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
