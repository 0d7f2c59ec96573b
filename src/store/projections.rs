//! Applying consumed events to the read model with exactly-once effects.
//!
//! A batch is one transaction: for each event the inbox row, its effects and
//! its archive row; then the outbox rows of the follow-up events it caused.
//! The log is acked only after commit, so a crash anywhere either leaves the
//! transaction unapplied (the events are redelivered and applied once) or
//! applied (redelivery finds the inbox rows and changes nothing).

use super::{now_millis, Dialect, Store, StoreError};
use crate::domain::events::{OrderPlaced, ProductCreated, StockReceived};
use crate::domain::order::{reserve_all_or_nothing, Decision, StockLevel};
use crate::domain::{DomainEvent, Envelope};
use crate::stream::Delivery;
use sqlx::any::Any;
use sqlx::{Row, Transaction};
use std::collections::BTreeMap;

type Tx<'a> = Transaction<'a, Any>;

/// What one batch did, for logs and metrics.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub applied: usize,
    pub duplicates: usize,
    pub failed: usize,
    /// Follow-up events to publish (already stored in the outbox).
    pub follow_ups: Vec<Envelope>,
}

impl Store {
    /// Applies a batch of deliveries for consumer group `group` in one
    /// transaction. Events that cannot be decoded or applied are archived
    /// with their error instead of blocking the partition.
    pub async fn apply_batch(
        &self,
        group: &str,
        deliveries: &[Delivery],
    ) -> Result<BatchOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut outcome = BatchOutcome::default();
        let now = now_millis();
        for delivery in deliveries {
            let envelope = match &delivery.envelope {
                Ok(envelope) => envelope,
                Err(problem) => {
                    tracing::error!(partition = delivery.partition, entry = %delivery.id, %problem, "skipping undecodable log entry");
                    outcome.failed += 1;
                    continue;
                }
            };
            let first_time = sqlx::query(
                "INSERT INTO processed_events (group_name, event_id, processed_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(group)
            .bind(envelope.event_id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !first_time {
                outcome.duplicates += 1;
                continue;
            }
            let error = match DomainEvent::from_envelope(envelope) {
                Ok(event) => {
                    apply_event(
                        &mut tx,
                        self.dialect(),
                        envelope,
                        event,
                        &mut outcome.follow_ups,
                    )
                    .await?;
                    outcome.applied += 1;
                    None
                }
                Err(e) => {
                    tracing::error!(event_id = %envelope.event_id, event_type = %envelope.event_type, error = %e, "event not applied");
                    outcome.failed += 1;
                    Some(e.to_string())
                }
            };
            archive(&mut tx, delivery, envelope, error.as_deref(), now).await?;
        }
        for follow_up in &outcome.follow_ups {
            sqlx::query("INSERT INTO outbox (event_id, envelope, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(follow_up.event_id.to_string())
                .bind(serde_json::to_string(follow_up).expect("envelopes serialize"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
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
        for event in events {
            sqlx::query("DELETE FROM outbox WHERE event_id = $1")
                .bind(event.event_id.to_string())
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }
}

async fn archive(
    tx: &mut Tx<'_>,
    delivery: &Delivery,
    envelope: &Envelope,
    error: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO event_archive (event_id, event_type, event_key, version, occurred_at, payload, \
         partition_no, entry_id, processed_at, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT DO NOTHING",
    )
    .bind(envelope.event_id.to_string())
    .bind(&envelope.event_type)
    .bind(&envelope.key)
    .bind(i64::from(envelope.version))
    .bind(envelope.occurred_at.timestamp_millis())
    .bind(envelope.payload.to_string())
    .bind(i64::from(delivery.partition))
    .bind(delivery.id.to_string())
    .bind(now)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply_event(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    envelope: &Envelope,
    event: DomainEvent,
    follow_ups: &mut Vec<Envelope>,
) -> Result<(), StoreError> {
    match event {
        DomainEvent::ProductCreated(e) => create_product(tx, &e, envelope).await,
        DomainEvent::StockReceived(e) => receive_stock(tx, &e).await,
        DomainEvent::OrderPlaced(e) => {
            if let Some(decision) = place_and_decide(tx, dialect, &e, envelope).await? {
                follow_ups.push(decision.into_follow_up_of(envelope));
            }
            Ok(())
        }
        // The decision's effects were applied when it was made, in the same
        // transaction as the decision; the decision events themselves are
        // archived (for audit and rebuild) and change nothing live.
        DomainEvent::OrderConfirmed(_) | DomainEvent::OrderRejected(_) => Ok(()),
        DomainEvent::AlertRaised(e) => {
            sqlx::query(
                "INSERT INTO alerts (id, kind, severity, subject, message, raised_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(e.alert_id.to_string())
            .bind(&e.kind)
            .bind(&e.severity)
            .bind(&e.subject)
            .bind(&e.message)
            .bind(envelope.occurred_at.timestamp_millis())
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    }
}

async fn create_product(
    tx: &mut Tx<'_>,
    e: &ProductCreated,
    envelope: &Envelope,
) -> Result<(), StoreError> {
    let at = envelope.occurred_at.timestamp_millis();
    sqlx::query(
        "INSERT INTO products (id, sku, name, price_cents, category_name, low_stock_threshold, reorder_quantity, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(e.product_id.to_string())
    .bind(&e.sku)
    .bind(&e.name)
    .bind(e.price.cents())
    .bind(&e.category_name)
    .bind(e.low_stock_threshold)
    .bind(e.reorder_quantity)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    // Stock may have arrived first (different workers, same partition key
    // but no ordering across consumers yet): the inventory row is an upsert
    // on both sides so the order of the two does not matter.
    sqlx::query(
        "INSERT INTO inventory (product_id, updated_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(e.product_id.to_string())
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn receive_stock(tx: &mut Tx<'_>, e: &StockReceived) -> Result<(), StoreError> {
    // The gateway never emits these, but the log is an open interface: a
    // receipt that would take stock away is refused, not applied.
    if e.quantity <= 0 {
        return Err(StoreError::Rejected(format!(
            "stock.received for {} has quantity {}; it must be positive",
            e.product_id, e.quantity
        )));
    }
    sqlx::query(
        "INSERT INTO inventory (product_id, on_hand, received_total, updated_at) VALUES ($1, $2, $2, $3) \
         ON CONFLICT (product_id) DO UPDATE SET on_hand = inventory.on_hand + excluded.on_hand, \
         received_total = inventory.received_total + excluded.received_total, updated_at = excluded.updated_at",
    )
    .bind(e.product_id.to_string())
    .bind(e.quantity)
    .bind(now_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records the order and decides it: all items reserved, or none.
/// The stock rows are locked (PostgreSQL: `FOR UPDATE`, in product-id order so
/// concurrent workers cannot deadlock on one order; SQLite: the transaction
/// already holds the database's write lock) so no other worker can reserve
/// the same units between the check and the reservation.
async fn place_and_decide(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    order: &OrderPlaced,
    envelope: &Envelope,
) -> Result<Option<DomainEvent>, StoreError> {
    let order_id = order.order_id.to_string();
    let inserted = sqlx::query(
        "INSERT INTO orders (id, customer_email, status, total_cents, placed_at) VALUES ($1, $2, 'PENDING', $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&order_id)
    .bind(&order.customer_email)
    .bind(order.total.cents())
    .bind(envelope.occurred_at.timestamp_millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Already placed under another event id: never decide twice.
        return Ok(None);
    }
    for (line_no, line) in order.items.iter().enumerate() {
        sqlx::query(
            "INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&order_id)
        .bind(line_no as i64)
        .bind(line.product_id.to_string())
        .bind(line.quantity)
        .bind(line.unit_price.cents())
        .execute(&mut **tx)
        .await?;
    }

    let wanted = crate::domain::order::requested_quantities(order);
    let mut stock = BTreeMap::new();
    for product_id in wanted.keys() {
        let lock = match dialect {
            Dialect::Postgres => " FOR UPDATE OF i",
            Dialect::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT p.sku, i.on_hand, i.reserved FROM inventory i JOIN products p ON p.id = i.product_id \
             WHERE i.product_id = $1{lock}"
        ))
        .bind(product_id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = row {
            stock.insert(
                *product_id,
                StockLevel {
                    sku: row.try_get("sku")?,
                    on_hand: row.try_get("on_hand")?,
                    reserved: row.try_get("reserved")?,
                },
            );
        }
    }

    let now = now_millis();
    match reserve_all_or_nothing(order, &stock) {
        Decision::Confirm {
            reservations,
            event,
        } => {
            for (product_id, quantity) in reservations {
                // The guard repeats the decision's check in SQL: if it ever
                // fails, the transaction aborts rather than oversell.
                let updated = sqlx::query(
                    "UPDATE inventory SET reserved = reserved + $1, updated_at = $2 \
                     WHERE product_id = $3 AND on_hand - reserved >= $1",
                )
                .bind(quantity)
                .bind(now)
                .bind(product_id.to_string())
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if updated != 1 {
                    return Err(StoreError::Inconsistent(format!(
                        "stock of {product_id} changed under a lock while confirming order {order_id}"
                    )));
                }
            }
            set_decision(tx, &order_id, "CONFIRMED", None, now).await?;
            Ok(Some(DomainEvent::OrderConfirmed(event)))
        }
        Decision::Reject(event) => {
            set_decision(tx, &order_id, "REJECTED", Some(&event.reason), now).await?;
            Ok(Some(DomainEvent::OrderRejected(event)))
        }
    }
}

async fn set_decision(
    tx: &mut Tx<'_>,
    order_id: &str,
    status: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE orders SET status = $1, reason = $2, decided_at = $3 WHERE id = $4")
        .bind(status)
        .bind(reason)
        .bind(now)
        .bind(order_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
