import { useMemo, useState } from "react";
import { useDashboard } from "./useDashboard";
import { Header } from "./components/Header";
import { LineChart } from "./components/LineChart";
import { Inventory } from "./components/Inventory";
import { Orders } from "./components/Orders";
import { OrderDrawer } from "./components/OrderDrawer";
import { AdjustStockForm, CreateProductForm, PlaceOrderForm, ReceiveStockForm } from "./components/Forms";
import { ImportStockForm } from "./components/ImportStock";
import { ProductDrawer } from "./components/ProductDrawer";
import { DeadLetters } from "./components/DeadLetters";
import { LostLogEntries } from "./components/LostLogEntries";
import { SimulatorControl } from "./components/Simulator";
import { Subscriptions } from "./components/Subscriptions";
import { Locations, useLocations } from "./components/Locations";
import { Alerts, PurchaseOrders, TopProducts } from "./components/Tables";
import { count, money, rate } from "./lib/format";
import type { ProductRow, Snapshot } from "./types";
import type { History } from "./lib/history";

const STATUSES = ["PENDING", "HELD", "BACKORDERED", "CONFIRMED", "PARTIALLY_SHIPPED", "SHIPPED", "REJECTED", "CANCELLED", "EXPIRED"];
// Colours that read on both themes.
const COLOR = { in: "#3b82f6", out: "#16a34a", lag: "#f59e0b", placed: "#8b95a5", confirmed: "#16a34a", rejected: "#dc2626", shipped: "#2563eb", cancelled: "#a855f7" };

export function App() {
  const { snapshot, history, connection, reconnectedAt } = useDashboard();
  return (
    <>
      <Header pipeline={snapshot?.pipeline ?? null} connection={connection} reconnectedAt={reconnectedAt} />
      <main>
        {snapshot ? <Dashboard snapshot={snapshot} history={history} /> : <p className="muted">Waiting for the first snapshot…</p>}
      </main>
    </>
  );
}

function Dashboard({ snapshot, history }: { snapshot: Snapshot; history: History }) {
  const { stats } = snapshot;
  const [openOrder, setOpenOrder] = useState<string | null>(null);
  const [receiving, setReceiving] = useState<ProductRow | null>(null);
  const [adjusting, setAdjusting] = useState<ProductRow | null>(null);
  const [openProduct, setOpenProduct] = useState<string | null>(null);
  const openStatus = snapshot.recent_orders.find((o) => o.order_id === openOrder)?.status;
  const times = useMemo(() => history.points.map((p) => p.t), [history]);
  const perSecond = stats.throughput.per_second;
  const { locations, reload: reloadLocations } = useLocations(snapshot.products);
  return (
    <>
      <SimulatorControl />
      <section className="figures">
        <Figure label="Total sales" value={money(stats.total_sales)} testId="total-sales" />
        <Figure label="Today's sales" value={money(stats.today_sales)} testId="today-sales" />
        <Figure label="Orders accepted" value={stats.order_count.toString()} testId="order-count" />
        <Figure label="Orders in the last minute" value={stats.orders_last_minute.toString()} testId="orders-last-minute" />
        <Figure label="Events waiting" value={stats.backlog == null ? "n/a" : count(stats.backlog)} testId="backlog" />
        <Figure label="Low-stock products" value={`${stats.low_stock_products} / ${stats.products}`} testId="low-stock" />
      </section>
      <section className="statuses">
        {STATUSES.map((status) => (
          <div key={status} className={`status ${status.toLowerCase()}`}>
            <span>{status.replace("_", " ")}</span>
            <strong data-testid={`status-${status}`}>{stats.orders_by_status[status] ?? 0}</strong>
          </div>
        ))}
      </section>
      <div className="charts">
        <LineChart
          title="Events per second: in (appended) and out (processed)"
          times={times}
          series={[
            { label: "in", color: COLOR.in, values: history.points.map((p) => p.appended) },
            { label: "out", color: COLOR.out, values: history.points.map((p) => p.processed) },
          ]}
          format={(v) => `${rate(v)}/s`}
          testId="chart-throughput"
        />
        <LineChart
          title="Order outcomes per second (last minute)"
          times={perSecond.map((w) => Date.parse(w.start) / 1000)}
          series={(["placed", "confirmed", "rejected", "shipped", "cancelled"] as const).map((key) => ({
            label: key,
            color: COLOR[key],
            values: perSecond.map((w) => w[key]),
          }))}
          format={(v) => count(v)}
          testId="chart-outcomes"
        />
        <LineChart
          title="Lag: events waiting for the workers"
          times={times}
          series={[{ label: "lag", color: COLOR.lag, values: history.points.map((p) => p.lag) }]}
          format={(v) => count(v)}
          testId="chart-lag"
        />
      </div>
      <div className="columns">
        <Inventory products={snapshot.products} purchaseOrders={snapshot.open_purchase_orders} locations={locations} onReceive={setReceiving} onAdjust={setAdjusting} onOpen={(p) => setOpenProduct(p.id)} />
        <div className="stack">
          <Orders orders={snapshot.recent_orders} onOpen={setOpenOrder} />
          <section className="card actions">
            <h2>Actions</h2>
            {receiving && <ReceiveStockForm product={receiving} onDone={() => setReceiving(null)} />}
            {adjusting && <AdjustStockForm key={adjusting.id} product={adjusting} onDone={() => setAdjusting(null)} />}
            <PlaceOrderForm products={snapshot.products} onPlaced={setOpenOrder} />
            <CreateProductForm />
            <ImportStockForm />
          </section>
        </div>
      </div>
      <Locations locations={locations} products={snapshot.products} onChanged={reloadLocations} />
      <div className="columns even">
        <TopProducts products={stats.top_products} />
        <PurchaseOrders orders={snapshot.open_purchase_orders} />
      </div>
      <LostLogEntries count={snapshot.pipeline.lost_log_entries} />
      <Subscriptions />
      <div className="columns even">
        <Alerts alerts={snapshot.alerts} />
        <DeadLetters count={snapshot.pipeline.dead_letters} />
      </div>
      <footer className="muted">
        {stats.event_log} · {stats.database} · updated {new Date(snapshot.generated_at).toLocaleTimeString()}
      </footer>
      {openProduct && snapshot.products.some((p) => p.id === openProduct) && (
        <ProductDrawer product={snapshot.products.find((p) => p.id === openProduct)!} onClose={() => setOpenProduct(null)} />
      )}
      {openOrder && <OrderDrawer orderId={openOrder} status={openStatus} onClose={() => setOpenOrder(null)} />}
    </>
  );
}

function Figure({ label, value, testId }: { label: string; value: string; testId: string }) {
  return (
    <div className="figure card">
      <span>{label}</span>
      <strong data-testid={testId}>{value}</strong>
    </div>
  );
}
