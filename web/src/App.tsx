import { useDashboard } from "./useDashboard";
import type { AlertRow, ProductRow, Snapshot } from "./types";

const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const STATUSES = ["PENDING", "CONFIRMED", "REJECTED", "CANCELLED", "SHIPPED"];

export function App() {
  const { snapshot, connection } = useDashboard();
  return (
    <main>
      <header>
        <h1>StreamStock</h1>
        <span className={`connection ${connection}`} data-testid="connection">
          {connection}
        </span>
      </header>
      {snapshot ? <Dashboard snapshot={snapshot} /> : <p className="muted">Waiting for the first snapshot…</p>}
    </main>
  );
}

function Dashboard({ snapshot }: { snapshot: Snapshot }) {
  const { stats } = snapshot;
  return (
    <>
      <section className="figures">
        <Figure label="Total sales" value={money.format(stats.total_sales)} testId="total-sales" />
        <Figure label="Today's sales" value={money.format(stats.today_sales)} testId="today-sales" />
        <Figure label="Orders accepted" value={stats.order_count.toString()} testId="order-count" />
        <Figure label="Orders in the last minute" value={stats.orders_last_minute.toString()} testId="orders-last-minute" />
        <Figure label="Events waiting" value={stats.backlog === null ? "n/a" : stats.backlog.toString()} testId="backlog" />
        <Figure label="Low-stock products" value={`${stats.low_stock_products} / ${stats.products}`} testId="low-stock" />
      </section>
      <section className="statuses">
        {STATUSES.map((status) => (
          <div key={status} className={`status ${status.toLowerCase()}`}>
            <span>{status}</span>
            <strong data-testid={`status-${status}`}>{stats.orders_by_status[status] ?? 0}</strong>
          </div>
        ))}
      </section>
      <div className="columns">
        <section>
          <h2>Inventory</h2>
          <InventoryTable products={snapshot.products} />
        </section>
        <section>
          <h2>Latest orders</h2>
          <table data-testid="orders">
            <thead>
              <tr><th>Order</th><th>Status</th><th className="num">Total</th></tr>
            </thead>
            <tbody>
              {snapshot.recent_orders.map((o) => (
                <tr key={o.order_id} title={o.reason ?? o.customer_email}>
                  <td className="mono">{o.order_id.slice(-8)}</td>
                  <td><span className={`badge ${o.status.toLowerCase()}`}>{o.status}</span></td>
                  <td className="num">{money.format(o.total)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      </div>
      <section>
        <h2>Alerts</h2>
        <Alerts alerts={snapshot.alerts} />
      </section>
      <footer className="muted">
        {stats.event_log} · {stats.database} · updated {new Date(snapshot.generated_at).toLocaleTimeString()}
      </footer>
    </>
  );
}

function Figure({ label, value, testId }: { label: string; value: string; testId: string }) {
  return (
    <div className="figure">
      <span>{label}</span>
      <strong data-testid={testId}>{value}</strong>
    </div>
  );
}

function Alerts({ alerts }: { alerts: AlertRow[] }) {
  if (alerts.length === 0) return <p className="muted" data-testid="alerts-empty">No alerts.</p>;
  return (
    <ul className="alerts" data-testid="alerts">
      {alerts.map((a) => (
        <li key={a.id} className={`alert ${a.severity}`}>
          <span className="mono">{new Date(a.raised_at).toLocaleTimeString()}</span>
          <span className="badge">{a.kind}</span>
          <span>{a.message}</span>
        </li>
      ))}
    </ul>
  );
}

function InventoryTable({ products }: { products: ProductRow[] }) {
  if (products.length === 0) return <p className="muted">No products yet.</p>;
  return (
    <table data-testid="inventory">
      <thead>
        <tr>
          <th>SKU</th><th>Name</th><th className="num">Price</th>
          <th className="num">On hand</th><th className="num">Reserved</th><th className="num">Available</th>
        </tr>
      </thead>
      <tbody>
        {products.map((p) => (
          <tr key={p.id} className={p.available < p.low_stock_threshold ? "low" : undefined}>
            <td className="mono">{p.sku}</td>
            <td>{p.name}</td>
            <td className="num">{money.format(p.price)}</td>
            <td className="num">{p.on_hand}</td>
            <td className="num">{p.reserved}</td>
            <td className="num">{p.available}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
