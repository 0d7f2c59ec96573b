import { useDashboard } from "./useDashboard";
import { ThroughputChart } from "./ThroughputChart";
import type { AlertRow, ProductRow, PurchaseOrderRow, Snapshot, TopProduct } from "./types";

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
        <Figure label="Events waiting" value={stats.backlog == null ? "n/a" : stats.backlog.toString()} testId="backlog" />
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
      <div className="charts">
        <ThroughputChart title="Orders per second (last minute)" windows={stats.throughput.per_second} testId="chart-per-second" />
        <ThroughputChart title="Orders per minute (last hour)" windows={stats.throughput.per_minute} testId="chart-per-minute" />
      </div>
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
      <div className="columns">
        <section>
          <h2>Top products</h2>
          <TopProducts products={stats.top_products} />
        </section>
        <section>
          <h2>Open purchase orders</h2>
          <PurchaseOrders orders={snapshot.open_purchase_orders} />
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

function TopProducts({ products }: { products: TopProduct[] }) {
  if (products.length === 0) return <p className="muted" data-testid="top-products-empty">No sales yet.</p>;
  return (
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
            <td className="num">{money.format(p.revenue)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function PurchaseOrders({ orders }: { orders: PurchaseOrderRow[] }) {
  if (orders.length === 0) return <p className="muted" data-testid="purchase-orders-empty">None open.</p>;
  return (
    <table data-testid="purchase-orders">
      <thead>
        <tr><th>Purchase order</th><th>SKU</th><th className="num">Quantity</th><th>Drafted</th></tr>
      </thead>
      <tbody>
        {orders.map((po) => (
          <tr key={po.id}>
            <td className="mono">{po.id.slice(-8)}</td>
            <td className="mono">{po.sku ?? "?"}</td>
            <td className="num">{po.quantity}</td>
            <td>{new Date(po.drafted_at).toLocaleTimeString()}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
