// Shapes of the dashboard snapshot pushed on /ws/dashboard (see
// src/gateway/dashboard.rs). Money is a decimal number of the currency unit.

export interface Stats {
  total_sales: number;
  today_sales: number;
  order_count: number;
  orders_by_status: Record<string, number>;
  orders_last_minute: number;
  backlog: number | null;
  products: number;
  low_stock_products: number;
  event_log: string;
  database: string;
  throughput: { per_second: Window[]; per_minute: Window[] };
  top_products: TopProduct[];
}

/** One tumbling window of event time: order events and confirmed revenue. */
export interface Window {
  start: string;
  placed: number;
  confirmed: number;
  rejected: number;
  shipped: number;
  cancelled: number;
  revenue: number;
}

export interface TopProduct {
  product_id: string;
  sku: string;
  name: string;
  units: number;
  revenue: number;
}

export interface PurchaseOrderRow {
  id: string;
  product_id: string;
  sku: string | null;
  quantity: number;
  status: string;
  drafted_at: string;
}

export interface ProductRow {
  id: string;
  sku: string;
  name: string;
  category_name: string;
  price: number;
  on_hand: number;
  reserved: number;
  available: number;
  low_stock_threshold: number;
}

export interface OrderRow {
  order_id: string;
  customer_email: string;
  status: string;
  total: number;
  reason: string | null;
  created_at: string;
}

export interface AlertRow {
  id: string;
  kind: string;
  severity: string;
  subject: string;
  message: string;
  raised_at: string;
}

export interface Snapshot {
  generated_at: string;
  stats: Stats;
  products: ProductRow[];
  recent_orders: OrderRow[];
  alerts: AlertRow[];
  open_purchase_orders: PurchaseOrderRow[];
}
