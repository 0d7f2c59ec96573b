//! Applying consumed events to the read model with exactly-once effects.
//!
//! A batch is one transaction: the archive rows of its events, their
//! effects, and the outbox rows of the follow-up events they caused. The
//! archive is the read model's inbox: its primary key is the event id, so an
//! event whose archive row exists has been applied. The log is acked only
//! after commit, so a crash anywhere either leaves the transaction unapplied
//! (the events are redelivered and applied once) or applied (redelivery
//! finds the archive rows and changes nothing).
//!
//! The batch is a unit of work: it loads the state its events touch (stock
//! rows locked, known orders) in a few statements, applies the events in log
//! order in memory (the order decision is the pure domain function), and
//! writes the result back with one multi-row statement per table. Stock is
//! written as deltas, so a row another worker changed in between (only
//! possible for rows this batch could not lock because they did not exist
//! yet) is added to, never overwritten.

use super::sql::{bind_all, multi_insert, parameter_list, values_lists, SqlValue};
use super::{now_millis, Dialect, Store, StoreError};
use crate::domain::order::{reserve_all_or_nothing, Decision, StockLevel};
use crate::domain::{DomainEvent, Envelope};
use crate::stream::Decoded;
use sqlx::any::Any;
use sqlx::{Row, Transaction};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use uuid::Uuid;

type Tx<'a> = Transaction<'a, Any>;

/// What one batch did, for logs and metrics.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub applied: usize,
    pub duplicates: usize,
    /// Follow-up events to publish (already stored in the outbox).
    pub follow_ups: Vec<Envelope>,
}

/// One product's stock as the batch sees it: what was loaded (for
/// decisions) plus what the batch changed (written back as deltas).
#[derive(Debug, Default, Clone)]
struct Stock {
    sku: Option<String>,
    on_hand: i64,
    reserved: i64,
    delta_on_hand: i64,
    delta_reserved: i64,
    delta_received: i64,
    /// The row was in the database when the batch began. Rows that were not
    /// are in the map only because an event of the batch created them.
    existed: bool,
}

/// Rows the batch will write, table by table.
#[derive(Default)]
struct Writes {
    products: Vec<Vec<SqlValue>>,
    orders: Vec<Vec<SqlValue>>,
    order_items: Vec<Vec<SqlValue>>,
    alerts: Vec<Vec<SqlValue>>,
}

impl Store {
    /// Applies a batch of decoded events to the read model in one transaction.
    /// One consumer group (the processor) maintains the read model, so the
    /// archive alone tells what was applied. A handler that refuses an event
    /// fails the whole batch (nothing is written); the worker then retries
    /// the events one by one.
    pub async fn apply_batch(&self, events: &[Decoded]) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        let now = now_millis();
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
        // The archive (the inbox) first: on SQLite this write takes the
        // database's write lock at once, so everything read below stays true
        // until commit.
        let fresh_ids = archive_new_events(&mut tx, self.dialect(), &candidates, now).await?;
        let fresh: Vec<&Decoded> = candidates
            .into_iter()
            .filter(|d| fresh_ids.contains(&d.envelope.event_id))
            .collect();
        outcome.duplicates = events.len() - fresh.len();

        let mut product_ids = BTreeSet::new();
        let mut order_ids = Vec::new();
        for decoded in &fresh {
            match &decoded.event {
                DomainEvent::ProductCreated(e) => {
                    product_ids.insert(e.product_id);
                }
                DomainEvent::StockReceived(e) => {
                    product_ids.insert(e.product_id);
                }
                DomainEvent::OrderPlaced(e) => {
                    order_ids.push(e.order_id);
                    product_ids.extend(e.items.iter().map(|l| l.product_id));
                }
                _ => {}
            }
        }
        let mut stock = load_stock(&mut tx, self.dialect(), &product_ids).await?;
        let mut known_orders = existing_orders(&mut tx, self.dialect(), &order_ids).await?;

        let mut writes = Writes::default();
        for decoded in fresh {
            apply(
                decoded,
                &mut stock,
                &mut known_orders,
                &mut writes,
                &mut outcome.follow_ups,
                now,
            )?;
            outcome.applied += 1;
        }
        flush(
            &mut tx,
            self.dialect(),
            writes,
            &stock,
            &outcome.follow_ups,
            now,
        )
        .await?;
        tx.commit().await?;
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

    /// Outbox rows not yet published (left by a crash between commit and
    /// publish), oldest first.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<Envelope>, StoreError> {
        let rows =
            sqlx::query("SELECT envelope FROM outbox ORDER BY created_at, event_id LIMIT $1")
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| {
                let json: String = row.try_get("envelope")?;
                serde_json::from_str(&json)
                    .map_err(|e| StoreError::Inconsistent(format!("outbox row: {e}")))
            })
            .collect()
    }

    pub async fn remove_from_outbox(&self, events: &[Envelope]) -> Result<(), StoreError> {
        for chunk in events.chunks(1000) {
            let sql = format!(
                "DELETE FROM outbox WHERE event_id IN ({})",
                parameter_list(self.dialect(), 1, chunk.len())
            );
            let values = chunk
                .iter()
                .map(|e| SqlValue::from(e.event_id.to_string()))
                .collect();
            bind_all(sqlx::query(&sql), values)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }
}

/// Archives the events not archived yet; returns their ids (the events to
/// apply now).
async fn archive_new_events(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    events: &[&Decoded],
    now: i64,
) -> Result<HashSet<Uuid>, StoreError> {
    let rows = events
        .iter()
        .map(|d| {
            vec![
                d.envelope.event_id.to_string().into(),
                d.envelope.event_type.as_str().into(),
                d.envelope.key.as_str().into(),
                i64::from(d.envelope.version).into(),
                d.envelope.occurred_at.timestamp_millis().into(),
                d.envelope.payload.to_string().into(),
                i64::from(d.partition).into(),
                d.id.to_string().into(),
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
    for (sql, values) in multi_insert(
        dialect,
        "event_archive",
        &columns,
        rows,
        "ON CONFLICT DO NOTHING RETURNING event_id",
    ) {
        for row in bind_all(sqlx::query(&sql), values)
            .fetch_all(&mut **tx)
            .await?
        {
            fresh.insert(super::uuid_col(&row, "event_id")?);
        }
    }
    Ok(fresh)
}

/// Runs `sql` (whose `{ids}` is replaced by an `IN` list) for `ids`, in
/// chunks, and returns every row.
async fn select_by_ids(
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

/// Loads (and on PostgreSQL locks, in product-id order so concurrent
/// workers cannot deadlock) the stock rows of `products`.
async fn load_stock(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    products: &BTreeSet<Uuid>,
) -> Result<BTreeMap<Uuid, Stock>, StoreError> {
    let lock = match dialect {
        Dialect::Postgres => " FOR UPDATE OF i",
        Dialect::Sqlite => "",
    };
    let sql = format!(
        "SELECT i.product_id, p.sku, i.on_hand, i.reserved FROM inventory i LEFT JOIN products p ON p.id = i.product_id \
         WHERE i.product_id IN ({{ids}}) ORDER BY i.product_id{lock}"
    );
    let ids: Vec<Uuid> = products.iter().copied().collect();
    let mut stock = BTreeMap::new();
    for row in select_by_ids(tx, dialect, &sql, &ids).await? {
        let loaded = Stock {
            sku: row.try_get("sku")?,
            on_hand: row.try_get("on_hand")?,
            reserved: row.try_get("reserved")?,
            existed: true,
            ..Stock::default()
        };
        stock.insert(super::uuid_col(&row, "product_id")?, loaded);
    }
    Ok(stock)
}

async fn existing_orders(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    orders: &[Uuid],
) -> Result<HashSet<Uuid>, StoreError> {
    let rows = select_by_ids(
        tx,
        dialect,
        "SELECT id FROM orders WHERE id IN ({ids})",
        orders,
    )
    .await?;
    rows.iter().map(|row| super::uuid_col(row, "id")).collect()
}

/// One event's effect on the batch's in-memory state.
fn apply(
    decoded: &Decoded,
    stock: &mut BTreeMap<Uuid, Stock>,
    known_orders: &mut HashSet<Uuid>,
    writes: &mut Writes,
    follow_ups: &mut Vec<Envelope>,
    now: i64,
) -> Result<(), StoreError> {
    let envelope = &decoded.envelope;
    match &decoded.event {
        DomainEvent::ProductCreated(e) => {
            writes.products.push(vec![
                e.product_id.to_string().into(),
                e.sku.as_str().into(),
                e.name.as_str().into(),
                e.price.cents().into(),
                e.category_name.as_str().into(),
                e.low_stock_threshold.into(),
                e.reorder_quantity.into(),
                envelope.occurred_at.timestamp_millis().into(),
            ]);
            // Stock may have arrived first: the row exists, keep its figures.
            let row = stock.entry(e.product_id).or_default();
            row.sku.get_or_insert_with(|| e.sku.clone());
        }
        DomainEvent::StockReceived(e) => {
            // The gateway never emits these, but the log is an open
            // interface: a receipt that would take stock away is refused.
            if e.quantity <= 0 {
                return Err(StoreError::Rejected(format!(
                    "stock.received for {} has quantity {}; it must be positive",
                    e.product_id, e.quantity
                )));
            }
            let row = stock.entry(e.product_id).or_default();
            row.on_hand += e.quantity;
            row.delta_on_hand += e.quantity;
            row.delta_received += e.quantity;
        }
        DomainEvent::OrderPlaced(order) => {
            // Already placed (under another event id): never decide twice.
            if !known_orders.insert(order.order_id) {
                return Ok(());
            }
            let levels: BTreeMap<Uuid, StockLevel> = order
                .items
                .iter()
                .map(|line| &line.product_id)
                .filter_map(|id| {
                    let row = stock.get(id)?;
                    Some((
                        *id,
                        StockLevel {
                            sku: row.sku.clone()?,
                            on_hand: row.on_hand,
                            reserved: row.reserved,
                        },
                    ))
                })
                .collect();
            let (status, reason, decision) = match reserve_all_or_nothing(order, &levels) {
                Decision::Confirm {
                    reservations,
                    event,
                } => {
                    for (product_id, quantity) in reservations {
                        let row = stock.get_mut(&product_id).expect("decided on a loaded row");
                        row.reserved += quantity;
                        row.delta_reserved += quantity;
                    }
                    ("CONFIRMED", None, DomainEvent::OrderConfirmed(event))
                }
                Decision::Reject(event) => (
                    "REJECTED",
                    Some(event.reason.clone()),
                    DomainEvent::OrderRejected(event),
                ),
            };
            let order_id = order.order_id.to_string();
            writes.orders.push(vec![
                order_id.as_str().into(),
                order.customer_email.as_str().into(),
                status.into(),
                order.total.cents().into(),
                reason.into(),
                envelope.occurred_at.timestamp_millis().into(),
                now.into(),
            ]);
            for (line_no, line) in order.items.iter().enumerate() {
                writes.order_items.push(vec![
                    order_id.as_str().into(),
                    (line_no as i64).into(),
                    line.product_id.to_string().into(),
                    line.quantity.into(),
                    line.unit_price.cents().into(),
                ]);
            }
            follow_ups.push(decision.into_follow_up_of(envelope));
        }
        // The decision's effects were applied when it was made, in the same
        // transaction as the decision; the decision events themselves are
        // archived (for audit and rebuild) and change nothing live.
        DomainEvent::OrderConfirmed(_) | DomainEvent::OrderRejected(_) => {}
        DomainEvent::AlertRaised(e) => {
            writes.alerts.push(vec![
                e.alert_id.to_string().into(),
                e.kind.as_str().into(),
                e.severity.as_str().into(),
                e.subject.as_str().into(),
                e.message.as_str().into(),
                envelope.occurred_at.timestamp_millis().into(),
            ]);
        }
    }
    Ok(())
}

async fn execute_all(
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

/// Writes the batch's rows, one multi-row statement per table.
async fn flush(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    writes: Writes,
    stock: &BTreeMap<Uuid, Stock>,
    follow_ups: &[Envelope],
    now: i64,
) -> Result<(), StoreError> {
    let product_columns = [
        "id",
        "sku",
        "name",
        "price_cents",
        "category_name",
        "low_stock_threshold",
        "reorder_quantity",
        "created_at",
    ];
    execute_all(
        tx,
        multi_insert(
            dialect,
            "products",
            &product_columns,
            writes.products,
            "ON CONFLICT DO NOTHING",
        ),
    )
    .await?;

    // Rows that existed are updated by their deltas (PostgreSQL holds their
    // locks); new rows are inserted, adding to any row created meanwhile.
    // (An upsert cannot serve both: SQLite checks the inserted row's CHECK
    // constraints before it resolves the conflict.)
    let deltas = |s: &Stock| -> [SqlValue; 3] {
        [
            s.delta_on_hand.into(),
            s.delta_reserved.into(),
            s.delta_received.into(),
        ]
    };
    let existing: Vec<Vec<SqlValue>> = stock
        .iter()
        .filter(|(_, s)| {
            s.existed && (s.delta_on_hand, s.delta_reserved, s.delta_received) != (0, 0, 0)
        })
        .map(|(id, s)| {
            let mut row = vec![SqlValue::from(id.to_string())];
            row.extend(deltas(s));
            row
        })
        .collect();
    for (values_sql, values) in
        values_lists(dialect, &["TEXT", "BIGINT", "BIGINT", "BIGINT"], existing)
    {
        let sql = format!(
            "WITH delta (product_id, on_hand, reserved, received) AS (VALUES {values_sql}) \
             UPDATE inventory SET on_hand = inventory.on_hand + delta.on_hand, \
             reserved = inventory.reserved + delta.reserved, \
             received_total = inventory.received_total + delta.received, updated_at = {now} \
             FROM delta WHERE inventory.product_id = delta.product_id"
        );
        bind_all(sqlx::query(&sql), values)
            .execute(&mut **tx)
            .await?;
    }
    let created: Vec<Vec<SqlValue>> = stock
        .iter()
        .filter(|(_, s)| !s.existed)
        .map(|(id, s)| {
            let mut row = vec![SqlValue::from(id.to_string())];
            row.extend(deltas(s));
            row.push(now.into());
            row
        })
        .collect();
    execute_all(
        tx,
        multi_insert(
        dialect,
            "inventory",
            &["product_id", "on_hand", "reserved", "received_total", "updated_at"],
            created,
            "ON CONFLICT (product_id) DO UPDATE SET on_hand = inventory.on_hand + excluded.on_hand, \
             reserved = inventory.reserved + excluded.reserved, \
             received_total = inventory.received_total + excluded.received_total, updated_at = excluded.updated_at",
        ),
    )
    .await?;

    let order_columns = [
        "id",
        "customer_email",
        "status",
        "total_cents",
        "reason",
        "placed_at",
        "decided_at",
    ];
    execute_all(
        tx,
        multi_insert(
            dialect,
            "orders",
            &order_columns,
            writes.orders,
            "ON CONFLICT DO NOTHING",
        ),
    )
    .await?;
    let item_columns = [
        "order_id",
        "line_no",
        "product_id",
        "quantity",
        "unit_price_cents",
    ];
    execute_all(
        tx,
        multi_insert(
            dialect,
            "order_items",
            &item_columns,
            writes.order_items,
            "ON CONFLICT DO NOTHING",
        ),
    )
    .await?;
    let alert_columns = ["id", "kind", "severity", "subject", "message", "raised_at"];
    execute_all(
        tx,
        multi_insert(
            dialect,
            "alerts",
            &alert_columns,
            writes.alerts,
            "ON CONFLICT DO NOTHING",
        ),
    )
    .await?;
    let outbox = follow_ups
        .iter()
        .map(|f| {
            vec![
                f.event_id.to_string().into(),
                serde_json::to_string(f)
                    .expect("envelopes serialize")
                    .into(),
                now.into(),
            ]
        })
        .collect();
    execute_all(
        tx,
        multi_insert(
            dialect,
            "outbox",
            &["event_id", "envelope", "created_at"],
            outbox,
            "ON CONFLICT DO NOTHING",
        ),
    )
    .await?;
    Ok(())
}
