//! Writing a unit of work back: the rows that come from applied events
//! (catalog entries, order lines, alerts, throughput windows) and the rows
//! that differ between the state loaded and the state after the domain ran,
//! one multi-row statement per table. Shared by live batches and rebuild.

use super::projections::Tx;
use super::sql::{bind_all, multi_insert, values_lists, SqlValue};
use super::{Dialect, StoreError};
use crate::domain::inventory::{OrderState, ProductState, PurchaseOrderState, PurchaseOrderStatus};
use crate::domain::{DomainEvent, Envelope};
use crate::domain::{OrderId, ProductId, PurchaseOrderId};
use std::collections::BTreeMap;

pub(super) async fn execute_all(
    tx: &mut Tx<'_>,
    statements: Vec<(String, Vec<SqlValue>)>,
) -> Result<(), StoreError> {
    for (sql, values) in statements {
        bind_all(sqlx::query(&sql), values)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

// The columns each projection table is written with; `rebuild` checksums
// the same columns, so a column written here is a column compared there.
pub(super) const PRODUCT_COLUMNS: &[&str] = &[
    "id",
    "sku",
    "name",
    "price_cents",
    "category_name",
    "low_stock_threshold",
    "reorder_quantity",
    "created_at",
];
pub(super) const STOCK_COLUMNS: &[&str] = &[
    "product_id",
    "on_hand",
    "reserved",
    "received_total",
    "shipped_total",
    "updated_at",
];
pub(super) const ORDER_COLUMNS: &[&str] = &[
    "id",
    "customer_email",
    "status",
    "total_cents",
    "reason",
    "cancel_requested",
    "placed_at",
    "decided_at",
    "updated_at",
];
pub(super) const ITEM_COLUMNS: &[&str] = &[
    "order_id",
    "line_no",
    "product_id",
    "quantity",
    "unit_price_cents",
];
pub(super) const PURCHASE_ORDER_COLUMNS: &[&str] = &[
    "id",
    "product_id",
    "quantity",
    "status",
    "drafted_at",
    "received_at",
];
pub(super) const ALERT_COLUMNS: &[&str] =
    &["id", "kind", "severity", "subject", "message", "raised_at"];
pub(super) const WINDOW_COLUMNS: &[&str] = &[
    "granularity",
    "window_start",
    "event_type",
    "events",
    "amount_cents",
];

/// A tumbling window: (granularity, window start, event type).
type Window = (&'static str, i64, &'static str);

/// The rows a unit of work writes, table by table: rows that come from
/// events (catalog entries, order lines, alerts, throughput windows) and rows
/// that come from the difference between the state before and after.
#[derive(Default)]
pub(super) struct Writes {
    products: Vec<Vec<SqlValue>>,
    order_items: Vec<Vec<SqlValue>>,
    alerts: Vec<Vec<SqlValue>>,
    windows: BTreeMap<Window, (i64, i64)>,
    stock_updates: Vec<Vec<SqlValue>>,
    stock_inserts: Vec<Vec<SqlValue>>,
    orders: Vec<Vec<SqlValue>>,
    purchase_orders: Vec<(PurchaseOrderStatus, Vec<SqlValue>)>,
}

impl Writes {
    /// Rows written straight from applied events. `orders_before` tells
    /// which placed orders are new (a repeated placement writes no lines).
    pub(super) fn events<'e>(
        &mut self,
        events: impl Iterator<Item = (&'e Envelope, &'e DomainEvent)>,
        orders_before: &BTreeMap<OrderId, OrderState>,
    ) {
        for (envelope, event) in events {
            let at = envelope.occurred_at.timestamp_millis();
            let mut amount = 0;
            match event {
                DomainEvent::ProductCreated(e) => self.products.push(vec![
                    e.product_id.to_string().into(),
                    e.sku.as_str().into(),
                    e.name.as_str().into(),
                    e.price.cents().into(),
                    e.category_name.as_str().into(),
                    e.low_stock_threshold.into(),
                    e.reorder_quantity.into(),
                    at.into(),
                ]),
                DomainEvent::OrderPlaced(e) if !orders_before.contains_key(&e.order_id) => {
                    let order_id = e.order_id.to_string();
                    for (line_no, line) in e.items.iter().enumerate() {
                        self.order_items.push(vec![
                            order_id.as_str().into(),
                            (line_no as i64).into(),
                            line.product_id.to_string().into(),
                            line.quantity.into(),
                            line.unit_price.cents().into(),
                        ]);
                    }
                }
                DomainEvent::OrderConfirmed(e) => amount = e.total.cents(),
                DomainEvent::AlertRaised(e) => self.alerts.push(vec![
                    e.alert_id.to_string().into(),
                    e.kind.as_str().into(),
                    e.severity.as_str().into(),
                    e.subject.as_str().into(),
                    e.message.as_str().into(),
                    at.into(),
                ]),
                _ => {}
            }
            for (granularity, width) in [("s", 1_000), ("m", 60_000)] {
                let window = (granularity, at - at.rem_euclid(width), event.event_type());
                let counts = self.windows.entry(window).or_default();
                counts.0 += 1;
                counts.1 += amount;
            }
        }
    }

    /// Stock rows: those that existed are updated by their deltas, new ones
    /// inserted (adding to a row created meanwhile).
    pub(super) fn stock(
        &mut self,
        before: &BTreeMap<ProductId, ProductState>,
        after: &BTreeMap<ProductId, ProductState>,
    ) {
        let zero = ProductState::default();
        for (id, now) in after {
            let was = before.get(id);
            let base = was.unwrap_or(&zero);
            let row: Vec<SqlValue> = vec![
                id.to_string().into(),
                (now.on_hand - base.on_hand).into(),
                (now.reserved - base.reserved).into(),
                (now.received_total - base.received_total).into(),
                (now.shipped_total - base.shipped_total).into(),
                now.updated_at.into(),
            ];
            match was {
                Some(was) if was == now => {}
                Some(_) => self.stock_updates.push(row),
                None => self.stock_inserts.push(row),
            }
        }
    }

    /// Orders whose state changed, written whole (upsert).
    pub(super) fn orders(
        &mut self,
        before: &BTreeMap<OrderId, OrderState>,
        after: &BTreeMap<OrderId, OrderState>,
    ) {
        for (id, order) in after {
            if before.get(id) == Some(order) {
                continue;
            }
            self.orders.push(vec![
                id.to_string().into(),
                order.customer_email.as_str().into(),
                order.status.as_str().into(),
                order.total.cents().into(),
                order.reason.clone().into(),
                i64::from(order.cancel_requested).into(),
                order.placed_at.into(),
                order.decided_at.into(),
                order.updated_at.into(),
            ]);
        }
    }

    pub(super) fn purchase_orders(
        &mut self,
        before: &BTreeMap<PurchaseOrderId, PurchaseOrderState>,
        after: &BTreeMap<PurchaseOrderId, PurchaseOrderState>,
    ) {
        for (id, po) in after {
            if before.get(id) == Some(po) {
                continue;
            }
            self.purchase_orders.push((
                po.status,
                vec![
                    id.to_string().into(),
                    po.product_id.to_string().into(),
                    po.quantity.into(),
                    po.status.as_str().into(),
                    po.drafted_at.into(),
                    po.received_at.into(),
                ],
            ));
        }
    }

    pub(super) async fn flush(self, tx: &mut Tx<'_>, dialect: Dialect) -> Result<(), StoreError> {
        execute_all(
            tx,
            multi_insert(
                dialect,
                "products",
                PRODUCT_COLUMNS,
                self.products,
                "ON CONFLICT DO NOTHING",
            ),
        )
        .await?;

        // Stock: rows that existed by their deltas (PostgreSQL holds their
        // locks); new rows inserted, adding to any row created meanwhile.
        // (An upsert cannot serve both: SQLite checks the inserted row's
        // CHECK constraints before it resolves the conflict.)
        let latest = match dialect {
            Dialect::Postgres => "GREATEST",
            Dialect::Sqlite => "MAX",
        };
        for (values_sql, values) in values_lists(
            dialect,
            &["TEXT", "BIGINT", "BIGINT", "BIGINT", "BIGINT", "BIGINT"],
            self.stock_updates,
        ) {
            let sql = format!(
                "WITH delta (product_id, on_hand, reserved, received, shipped, updated_at) AS (VALUES {values_sql}) \
                 UPDATE inventory SET on_hand = inventory.on_hand + delta.on_hand, \
                 reserved = inventory.reserved + delta.reserved, \
                 received_total = inventory.received_total + delta.received, \
                 shipped_total = inventory.shipped_total + delta.shipped, \
                 updated_at = {latest}(inventory.updated_at, delta.updated_at) \
                 FROM delta WHERE inventory.product_id = delta.product_id"
            );
            bind_all(sqlx::query(&sql), values)
                .execute(&mut **tx)
                .await?;
        }
        execute_all(
            tx,
            multi_insert(
                dialect,
                "inventory",
                STOCK_COLUMNS,
                self.stock_inserts,
                &format!(
                    "ON CONFLICT (product_id) DO UPDATE SET on_hand = inventory.on_hand + excluded.on_hand, \
                     reserved = inventory.reserved + excluded.reserved, \
                     received_total = inventory.received_total + excluded.received_total, \
                     shipped_total = inventory.shipped_total + excluded.shipped_total, \
                     updated_at = {latest}(inventory.updated_at, excluded.updated_at)"
                ),
            ),
        )
        .await?;

        execute_all(
            tx,
            multi_insert(
                dialect,
                "orders",
                ORDER_COLUMNS,
                self.orders,
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
                 cancel_requested = excluded.cancel_requested, decided_at = excluded.decided_at, \
                 updated_at = excluded.updated_at",
            ),
        )
        .await?;
        execute_all(
            tx,
            multi_insert(
                dialect,
                "order_items",
                ITEM_COLUMNS,
                self.order_items,
                "ON CONFLICT DO NOTHING",
            ),
        )
        .await?;

        // Closed purchase orders before new open ones: the one-open-per-
        // product index is checked row by row.
        let mut purchase_orders = self.purchase_orders;
        purchase_orders.sort_by_key(|(status, _)| *status == PurchaseOrderStatus::Open);
        execute_all(
            tx,
            multi_insert(
                dialect,
                "purchase_orders",
                PURCHASE_ORDER_COLUMNS,
                purchase_orders.into_iter().map(|(_, row)| row).collect(),
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, received_at = excluded.received_at",
            ),
        )
        .await?;

        execute_all(
            tx,
            multi_insert(
                dialect,
                "alerts",
                ALERT_COLUMNS,
                self.alerts,
                "ON CONFLICT DO NOTHING",
            ),
        )
        .await?;

        // Windows last and in key order: concurrent workers add to the same
        // rows, so they take these locks in one order, just before commit.
        let windows = self
            .windows
            .into_iter()
            .map(|((granularity, start, event_type), (events, amount))| {
                vec![
                    granularity.into(),
                    start.into(),
                    event_type.into(),
                    events.into(),
                    amount.into(),
                ]
            })
            .collect();
        execute_all(
            tx,
            multi_insert(
                dialect,
                "throughput",
                WINDOW_COLUMNS,
                windows,
                "ON CONFLICT (granularity, window_start, event_type) DO UPDATE SET \
                 events = throughput.events + excluded.events, \
                 amount_cents = throughput.amount_cents + excluded.amount_cents",
            ),
        )
        .await?;
        Ok(())
    }
}
