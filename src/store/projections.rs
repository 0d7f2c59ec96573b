//! Applying consumed events to the read model with exactly-once effects.
//!
//! A batch is one transaction: the archive rows of its events, their
//! effects, the archive rows of the follow-up events (decisions) they
//! caused, and one outbox row listing those follow-ups. The archive is the read
//! model's inbox: its primary key is the event id, so an event whose archive
//! row exists has been applied. A follow-up is applied in the transaction
//! that decides it (a confirmation reserves stock at once, so no other order
//! can take it), and archived there; when the log delivers it later, the
//! archive says it is applied. The log is acked only after commit, so a crash
//! anywhere either leaves the transaction unapplied (the events are
//! redelivered and applied once) or applied (redelivery changes nothing).
//!
//! The batch is a unit of work: it loads the state its events touch (stock
//! rows locked, their orders and purchase orders) into the domain's
//! `Inventory` in a few statements, lets the domain handle the events in log
//! order, and writes back what changed with one multi-row statement per
//! table. Stock is written as deltas, so a row another worker changed in
//! between (only possible for rows this batch could not lock because they
//! did not exist yet) is added to, never overwritten.
//!
//! The archive's order (its `seq`) is the replay order of `rebuild`: a
//! batch's events are archived first, its follow-ups last, once the stock
//! rows they depend on are locked.

use super::sql::{bind_all, multi_insert, parameter_list, values_lists, SqlValue};
use super::{now_millis, Dialect, Store, StoreError};
use crate::domain::inventory::{
    Inventory, OrderState, OrderStatus, ProductState, PurchaseOrderState, PurchaseOrderStatus,
};
use crate::domain::{events::OrderLine, DomainEvent, Envelope, Money};
use crate::stream::{partition_for, Decoded};
use sqlx::any::Any;
use sqlx::{Row, Transaction};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use uuid::Uuid;

pub(super) type Tx<'a> = Transaction<'a, Any>;

/// What one batch did, for logs and metrics.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub applied: usize,
    pub duplicates: usize,
    /// Follow-up events to publish (already listed in the outbox).
    pub follow_ups: Vec<Envelope>,
    /// The outbox rows to remove once `follow_ups` are published.
    pub outbox: OutboxRows,
}

/// Outbox rows, by table: one row per committed batch listing its
/// follow-ups' ids (their envelopes are in the archive), and rows of the
/// older one-row-per-event outbox, only ever drained.
#[derive(Debug, Default, Clone)]
pub struct OutboxRows {
    pub batches: Vec<Uuid>,
    pub legacy_events: Vec<Uuid>,
}

impl OutboxRows {
    pub fn extend(&mut self, other: OutboxRows) {
        self.batches.extend(other.batches);
        self.legacy_events.extend(other.legacy_events);
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.legacy_events.is_empty()
    }
}

/// An archive row to write: the envelope and where the log holds it.
struct ArchiveRow<'a> {
    envelope: &'a Envelope,
    partition: u32,
    /// Empty for a follow-up: it is archived before it is published.
    entry_id: String,
}

impl Store {
    /// Applies a batch of decoded events to the read model in one transaction.
    /// One consumer group (the processor) maintains the read model, so the
    /// archive alone tells what was applied. An event the domain refuses
    /// fails the whole batch (nothing is written); the worker then retries
    /// the events one by one. `partitions` places follow-ups in the archive.
    pub async fn apply_batch(
        &self,
        events: &[Decoded],
        partitions: u32,
    ) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        let now = chrono::Utc::now();
        let now_ms = now.timestamp_millis();
        // An event may come twice in one batch (a republished follow-up).
        let mut seen = HashSet::new();
        let candidates: Vec<&Decoded> = events
            .iter()
            .filter(|d| seen.insert(d.envelope.event_id))
            .collect();
        if candidates.is_empty() {
            outcome.duplicates = events.len();
            return Ok(outcome);
        }

        let mut tx = self.pool().begin().await?;
        let dialect = self.dialect();
        // The archive (the inbox) first: on SQLite this write takes the
        // database's write lock at once, so everything read below stays true
        // until commit.
        let rows: Vec<ArchiveRow> = candidates
            .iter()
            .map(|d| ArchiveRow {
                envelope: &d.envelope,
                partition: d.partition,
                entry_id: d.id.to_string(),
            })
            .collect();
        let fresh_ids = archive(&mut tx, dialect, &rows, now_ms, true).await?;
        let fresh: Vec<&Decoded> = candidates
            .into_iter()
            .filter(|d| fresh_ids.contains(&d.envelope.event_id))
            .collect();
        outcome.duplicates = events.len() - fresh.len();
        if fresh.is_empty() {
            tx.commit().await?;
            return Ok(outcome);
        }

        let mut inventory = Inventory::default();
        load_state(
            &mut tx,
            dialect,
            fresh.iter().map(|d| &d.event),
            &mut inventory,
            true,
        )
        .await?;
        let baseline = inventory.clone();
        let mut follow_ups = Vec::new();
        for decoded in &fresh {
            let decided = inventory
                .handle(&decoded.envelope, &decoded.event, now)
                .map_err(|refused| {
                    StoreError::Rejected(format!(
                        "{} {}: {refused}",
                        decoded.envelope.event_type, decoded.envelope.event_id
                    ))
                })?;
            follow_ups.extend(decided);
            outcome.applied += 1;
        }

        let mut writes = Writes::default();
        writes.events(
            fresh
                .iter()
                .map(|d| (&d.envelope, &d.event))
                .chain(follow_ups.iter().map(|(env, event)| (env, event))),
            &baseline.orders,
        );
        writes.stock(&baseline.products, &inventory.products);
        writes.orders(&baseline.orders, &inventory.orders);
        writes.purchase_orders(&baseline.purchase_orders, &inventory.purchase_orders);
        writes.flush(&mut tx, dialect).await?;

        // Follow-ups last: their archive order follows the locks above.
        let follow_up_rows: Vec<ArchiveRow> = follow_ups
            .iter()
            .map(|(env, _)| ArchiveRow {
                envelope: env,
                partition: partition_for(&env.key, partitions),
                entry_id: String::new(),
            })
            .collect();
        archive(&mut tx, dialect, &follow_up_rows, now_ms, false).await?;
        // One outbox row for the whole batch: the follow-ups' envelopes are
        // already in the archive, so the outbox only says which of them are
        // not yet published (a row per event doubled every decision's write).
        if !follow_ups.is_empty() {
            let batch_id = Uuid::now_v7();
            let ids: Vec<String> = follow_ups
                .iter()
                .map(|(f, _)| f.event_id.to_string())
                .collect();
            sqlx::query(
                "INSERT INTO outbox_batches (id, event_ids, created_at) VALUES ($1, $2, $3)",
            )
            .bind(batch_id.to_string())
            .bind(serde_json::to_string(&ids).expect("strings serialize"))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            outcome.outbox.batches.push(batch_id);
        }
        tx.commit().await?;
        outcome.follow_ups = follow_ups.into_iter().map(|(env, _)| env).collect();
        Ok(outcome)
    }

    /// Counts one more failed attempt at `event_id` for `group`; returns the
    /// total so far (kept across restarts).
    pub async fn record_failed_attempt(
        &self,
        group: &str,
        event_id: &str,
        error: &str,
    ) -> Result<u32, StoreError> {
        let row = sqlx::query(
            "INSERT INTO event_attempts (group_name, event_id, attempts, last_error, updated_at) VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (group_name, event_id) DO UPDATE SET attempts = event_attempts.attempts + 1, \
             last_error = excluded.last_error, updated_at = excluded.updated_at RETURNING attempts",
        )
        .bind(group)
        .bind(event_id)
        .bind(error)
        .bind(now_millis())
        .fetch_one(self.pool())
        .await?;
        let attempts: i64 = row.try_get("attempts")?;
        Ok(attempts as u32)
    }

    /// Forgets the failed attempts of events (they were replayed).
    pub async fn clear_attempts(&self, group: &str, event_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM event_attempts WHERE group_name = $1 AND event_id = $2")
            .bind(group)
            .bind(event_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Follow-ups committed but not yet published (left by a crash between
    /// commit and publish, or in flight in another worker), oldest first,
    /// with the outbox rows that list them.
    pub async fn pending_outbox(
        &self,
        limit: i64,
    ) -> Result<(Vec<Envelope>, OutboxRows), StoreError> {
        let mut events = Vec::new();
        let mut rows = OutboxRows::default();
        let batches = sqlx::query(
            "SELECT id, event_ids FROM outbox_batches ORDER BY created_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        for batch in batches {
            let listed: String = batch.try_get("event_ids")?;
            let ids: Vec<Uuid> = serde_json::from_str(&listed)
                .map_err(|e| StoreError::Inconsistent(format!("outbox row: {e}")))?;
            let mut by_id: std::collections::HashMap<Uuid, Envelope> = Default::default();
            for chunk in ids.chunks(1000) {
                let sql = format!(
                    "SELECT * FROM event_archive WHERE event_id IN ({})",
                    parameter_list(self.dialect(), 1, chunk.len())
                );
                let values = chunk
                    .iter()
                    .map(|id| SqlValue::from(id.to_string()))
                    .collect();
                for row in bind_all(sqlx::query(&sql), values)
                    .fetch_all(self.pool())
                    .await?
                {
                    let envelope = super::rebuild::archived_envelope(&row)?;
                    by_id.insert(envelope.event_id, envelope);
                }
            }
            // In the order they were decided.
            for id in ids {
                let envelope = by_id.remove(&id).ok_or_else(|| {
                    StoreError::Inconsistent(format!("outbox lists {id}, which is not archived"))
                })?;
                events.push(envelope);
            }
            rows.batches.push(super::uuid_col(&batch, "id")?);
        }
        let legacy =
            sqlx::query("SELECT envelope FROM outbox ORDER BY created_at, event_id LIMIT $1")
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
        for row in legacy {
            let json: String = row.try_get("envelope")?;
            let envelope: Envelope = serde_json::from_str(&json)
                .map_err(|e| StoreError::Inconsistent(format!("outbox row: {e}")))?;
            rows.legacy_events.push(envelope.event_id);
            events.push(envelope);
        }
        Ok((events, rows))
    }

    pub async fn remove_from_outbox(&self, rows: &OutboxRows) -> Result<(), StoreError> {
        for (table, column, ids) in [
            ("outbox_batches", "id", &rows.batches),
            ("outbox", "event_id", &rows.legacy_events),
        ] {
            for chunk in ids.chunks(1000) {
                let sql = format!(
                    "DELETE FROM {table} WHERE {column} IN ({})",
                    parameter_list(self.dialect(), 1, chunk.len())
                );
                let values = chunk
                    .iter()
                    .map(|id| SqlValue::from(id.to_string()))
                    .collect();
                bind_all(sqlx::query(&sql), values)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }
}

/// Runs `sql` (whose `{ids}` is replaced by an `IN` list) for `ids`, in
/// chunks, and returns every row.
pub(super) async fn select_by_ids(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    sql: &str,
    ids: &[Uuid],
) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(1000) {
        let sql = sql.replace("{ids}", &parameter_list(dialect, 1, chunk.len()));
        let values = chunk
            .iter()
            .map(|id| SqlValue::from(id.to_string()))
            .collect();
        rows.extend(
            bind_all(sqlx::query(&sql), values)
                .fetch_all(&mut **tx)
                .await?,
        );
    }
    Ok(rows)
}

/// Archives the events not archived yet; with `report_fresh`, returns their
/// ids (the events to apply now).
async fn archive(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    events: &[ArchiveRow<'_>],
    now: i64,
    report_fresh: bool,
) -> Result<HashSet<Uuid>, StoreError> {
    let rows = events
        .iter()
        .map(|row| {
            let e = row.envelope;
            vec![
                e.event_id.to_string().into(),
                e.event_type.as_str().into(),
                e.key.as_str().into(),
                i64::from(e.version).into(),
                e.occurred_at.timestamp_millis().into(),
                e.payload.to_string().into(),
                i64::from(row.partition).into(),
                row.entry_id.as_str().into(),
                now.into(),
            ]
        })
        .collect();
    let columns = [
        "event_id",
        "event_type",
        "event_key",
        "version",
        "occurred_at",
        "payload",
        "partition_no",
        "entry_id",
        "processed_at",
    ];
    let mut fresh = HashSet::new();
    let suffix = if report_fresh {
        "ON CONFLICT DO NOTHING RETURNING event_id"
    } else {
        "ON CONFLICT DO NOTHING"
    };
    for (sql, values) in multi_insert(dialect, "event_archive", &columns, rows, suffix) {
        let query = bind_all(sqlx::query(&sql), values);
        if !report_fresh {
            query.execute(&mut **tx).await?;
            continue;
        }
        for row in query.fetch_all(&mut **tx).await? {
            fresh.insert(super::uuid_col(&row, "event_id")?);
        }
    }
    Ok(fresh)
}

/// Loads into `inventory` the state `events` touch: their orders (with
/// lines), their purchase orders and, if `with_stock`, their products' stock
/// (locked on PostgreSQL, in product-id order so concurrent workers cannot
/// deadlock) with each product's open purchase order.
pub(super) async fn load_state<'e>(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    events: impl Iterator<Item = &'e DomainEvent>,
    inventory: &mut Inventory,
    with_stock: bool,
) -> Result<(), StoreError> {
    let mut order_ids = BTreeSet::new();
    let mut product_ids = BTreeSet::new();
    let mut purchase_order_ids = BTreeSet::new();
    for event in events {
        match event {
            DomainEvent::ProductCreated(e) => {
                product_ids.insert(e.product_id);
            }
            DomainEvent::StockReceived(e) => {
                product_ids.insert(e.product_id);
                purchase_order_ids.extend(e.purchase_order_id);
            }
            DomainEvent::OrderPlaced(e) => {
                order_ids.insert(e.order_id);
                product_ids.extend(e.items.iter().map(|l| l.product_id));
            }
            DomainEvent::OrderConfirmed(e) => {
                order_ids.insert(e.order_id);
            }
            DomainEvent::OrderRejected(e) => {
                order_ids.insert(e.order_id);
            }
            DomainEvent::OrderCancelRequested(e) => {
                order_ids.insert(e.order_id);
            }
            DomainEvent::OrderShipRequested(e) => {
                order_ids.insert(e.order_id);
            }
            DomainEvent::OrderCancelled(e) => {
                order_ids.insert(e.order_id);
            }
            DomainEvent::OrderShipped(e) => {
                order_ids.insert(e.order_id);
            }
            DomainEvent::StockLow(e) => {
                product_ids.insert(e.product_id);
            }
            DomainEvent::PurchaseOrderDrafted(e) => {
                product_ids.insert(e.product_id);
                purchase_order_ids.insert(e.purchase_order_id);
            }
            DomainEvent::PurchaseOrderReceived(e) => {
                product_ids.insert(e.product_id);
                purchase_order_ids.insert(e.purchase_order_id);
            }
            DomainEvent::AlertRaised(_) => {}
        }
    }
    let order_ids: Vec<Uuid> = order_ids.into_iter().collect();
    for (id, order) in load_orders(tx, dialect, &order_ids).await? {
        product_ids.extend(order.lines.iter().map(|l| l.product_id));
        inventory.orders.insert(id, order);
    }
    if !with_stock {
        return Ok(());
    }
    let purchase_order_ids: Vec<Uuid> = purchase_order_ids.into_iter().collect();
    let rows = select_by_ids(
        tx,
        dialect,
        "SELECT * FROM purchase_orders WHERE id IN ({ids})",
        &purchase_order_ids,
    )
    .await?;
    for row in rows {
        let po = purchase_order_from_row(&row)?;
        product_ids.insert(po.product_id);
        inventory
            .purchase_orders
            .insert(super::uuid_col(&row, "id")?, po);
    }
    let lock = match dialect {
        Dialect::Postgres => " FOR UPDATE OF i",
        Dialect::Sqlite => "",
    };
    let sql = format!(
        "SELECT i.product_id, p.sku, p.low_stock_threshold, p.reorder_quantity, i.on_hand, i.reserved, \
         i.received_total, i.shipped_total, i.updated_at FROM inventory i LEFT JOIN products p ON p.id = i.product_id \
         WHERE i.product_id IN ({{ids}}) ORDER BY i.product_id{lock}"
    );
    let ids: Vec<Uuid> = product_ids.into_iter().collect();
    for row in select_by_ids(tx, dialect, &sql, &ids).await? {
        let threshold: Option<i64> = row.try_get("low_stock_threshold")?;
        let reorder: Option<i64> = row.try_get("reorder_quantity")?;
        inventory.products.insert(
            super::uuid_col(&row, "product_id")?,
            ProductState {
                sku: row.try_get("sku")?,
                low_stock_threshold: threshold.unwrap_or(0),
                reorder_quantity: reorder.unwrap_or(0),
                on_hand: row.try_get("on_hand")?,
                reserved: row.try_get("reserved")?,
                received_total: row.try_get("received_total")?,
                shipped_total: row.try_get("shipped_total")?,
                open_purchase_order: None,
                updated_at: row.try_get("updated_at")?,
            },
        );
    }
    // Open purchase orders in a statement of their own, after the stock
    // rows are locked: on PostgreSQL it reads what a worker that held those
    // locks before us committed (a join in the locking statement would
    // show the rows as they were when it started waiting).
    let open = select_by_ids(
        tx,
        dialect,
        "SELECT * FROM purchase_orders WHERE status = 'OPEN' AND product_id IN ({ids})",
        &ids,
    )
    .await?;
    for row in open {
        let po = purchase_order_from_row(&row)?;
        let po_id = super::uuid_col(&row, "id")?;
        if let Some(product) = inventory.products.get_mut(&po.product_id) {
            product.open_purchase_order = Some(po_id);
        }
        inventory.purchase_orders.entry(po_id).or_insert(po);
    }
    Ok(())
}

/// Orders among `ids` that exist, with their lines.
async fn load_orders(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    ids: &[Uuid],
) -> Result<BTreeMap<Uuid, OrderState>, StoreError> {
    let mut orders = BTreeMap::new();
    for row in select_by_ids(tx, dialect, "SELECT * FROM orders WHERE id IN ({ids})", ids).await? {
        let status: String = row.try_get("status")?;
        let cancel_requested: i64 = row.try_get("cancel_requested")?;
        orders.insert(
            super::uuid_col(&row, "id")?,
            OrderState {
                customer_email: row.try_get("customer_email")?,
                status: OrderStatus::parse(&status)
                    .ok_or_else(|| StoreError::Inconsistent(format!("order status {status}")))?,
                lines: Vec::new(),
                total: Money::from_total_cents(row.try_get("total_cents")?),
                reason: row.try_get("reason")?,
                cancel_requested: cancel_requested != 0,
                placed_at: row.try_get("placed_at")?,
                decided_at: row.try_get("decided_at")?,
                updated_at: row.try_get("updated_at")?,
            },
        );
    }
    if orders.is_empty() {
        return Ok(orders);
    }
    let existing: Vec<Uuid> = orders.keys().copied().collect();
    let lines = select_by_ids(
        tx,
        dialect,
        "SELECT * FROM order_items WHERE order_id IN ({ids}) ORDER BY order_id, line_no",
        &existing,
    )
    .await?;
    for row in lines {
        let order_id = super::uuid_col(&row, "order_id")?;
        if let Some(order) = orders.get_mut(&order_id) {
            order.lines.push(OrderLine {
                product_id: super::uuid_col(&row, "product_id")?,
                quantity: row.try_get("quantity")?,
                unit_price: Money::from_total_cents(row.try_get("unit_price_cents")?),
            });
        }
    }
    Ok(orders)
}

pub(super) fn purchase_order_from_row(
    row: &sqlx::any::AnyRow,
) -> Result<PurchaseOrderState, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(PurchaseOrderState {
        product_id: super::uuid_col(row, "product_id")?,
        quantity: row.try_get("quantity")?,
        status: PurchaseOrderStatus::parse(&status)
            .ok_or_else(|| StoreError::Inconsistent(format!("purchase order status {status}")))?,
        drafted_at: row.try_get("drafted_at")?,
        received_at: row.try_get("received_at")?,
    })
}

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
type Window = (&'static str, i64, String);

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
        orders_before: &BTreeMap<Uuid, OrderState>,
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
                let window = (
                    granularity,
                    at - at.rem_euclid(width),
                    envelope.event_type.clone(),
                );
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
        before: &BTreeMap<Uuid, ProductState>,
        after: &BTreeMap<Uuid, ProductState>,
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
        before: &BTreeMap<Uuid, OrderState>,
        after: &BTreeMap<Uuid, OrderState>,
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
        before: &BTreeMap<Uuid, PurchaseOrderState>,
        after: &BTreeMap<Uuid, PurchaseOrderState>,
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
