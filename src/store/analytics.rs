//! Reads for the restock cycle, the audit trail and the dashboard's
//! analytics: purchase orders, archived events, throughput windows and top
//! products.

use super::sql::{bind_all, param, SqlValue};
use super::{archived_envelope, time_of_millis, uuid_col, Store, StoreError};
use crate::domain::events::EventType;
use crate::domain::status::PurchaseOrderStatus;
use crate::domain::{Envelope, LocationId, Money, ProductId, PurchaseOrderId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Named columns, never `*` (see `queries::ORDER_FIELDS`).
const PURCHASE_ORDER_FIELDS: &str =
    "po.id, po.product_id, po.quantity, po.status, po.drafted_at, po.received_at, po.location_id, p.sku";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PurchaseOrderView {
    pub id: PurchaseOrderId,
    pub product_id: ProductId,
    pub sku: Option<String>,
    pub quantity: i64,
    /// OPEN or RECEIVED.
    pub status: PurchaseOrderStatus,
    pub drafted_at: DateTime<Utc>,
    pub received_at: Option<DateTime<Utc>>,
    /// Where it is to be received (absent: the default location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// One archived event: its envelope and where the log held it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ArchivedEvent {
    /// Position in the archive: the order events were applied in.
    pub seq: i64,
    #[serde(flatten)]
    pub envelope: Envelope,
    pub partition: i64,
    /// The log entry id; null for a follow-up archived by the transaction
    /// that decided it (before it was published).
    pub entry_id: Option<String>,
    pub processed_at: DateTime<Utc>,
}

/// Filters of `GET /api/events`.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub key: Option<String>,
    pub event_type: Option<String>,
    /// Events archived after this one.
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// One tumbling window of event time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub placed: i64,
    pub confirmed: i64,
    pub rejected: i64,
    pub shipped: i64,
    pub cancelled: i64,
    /// Sum of the totals of orders confirmed in the window.
    pub revenue: Money,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Throughput {
    /// The last 60 one-second windows, oldest first.
    pub per_second: Vec<Window>,
    /// The last 60 one-minute windows, oldest first.
    pub per_minute: Vec<Window>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TopProduct {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    /// Units in confirmed and shipped orders.
    pub units: i64,
    pub revenue: Money,
}

/// How long throughput windows are kept: a window goes once it starts
/// more than this before the newest window of its granularity. Measured in
/// event time against the data itself, not the wall clock, so the worker's
/// pruning and `rebuild` (which prunes the same way after replaying) keep
/// the same rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRetention {
    pub per_second: std::time::Duration,
    pub per_minute: std::time::Duration,
}

impl WindowRetention {
    /// An hour of per-second windows.
    pub const DEFAULT_PER_SECOND: std::time::Duration = std::time::Duration::from_secs(3600);
    /// A week of per-minute windows.
    pub const DEFAULT_PER_MINUTE: std::time::Duration =
        std::time::Duration::from_secs(7 * 24 * 3600);
}

impl Default for WindowRetention {
    fn default() -> WindowRetention {
        WindowRetention {
            per_second: WindowRetention::DEFAULT_PER_SECOND,
            per_minute: WindowRetention::DEFAULT_PER_MINUTE,
        }
    }
}

/// Deletes the windows past `retention` on `conn`; returns how many went.
pub(crate) async fn prune_windows_on(
    conn: &mut sqlx::AnyConnection,
    retention: &WindowRetention,
) -> Result<u64, StoreError> {
    let mut pruned = 0;
    for (granularity, keep) in [("s", retention.per_second), ("m", retention.per_minute)] {
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        pruned += sqlx::query(
            "DELETE FROM throughput WHERE granularity = $1 AND window_start < \
             (SELECT MAX(window_start) FROM throughput WHERE granularity = $1) - $2",
        )
        .bind(granularity)
        .bind(keep_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(pruned)
}

impl Store {
    /// Applies the windows' retention to the live read model.
    pub async fn prune_windows(&self, retention: &WindowRetention) -> Result<u64, StoreError> {
        let mut conn = self.pool().acquire().await?;
        prune_windows_on(&mut conn, retention).await
    }

    /// How many events the archive holds (a benchmark's count of events
    /// applied).
    pub async fn archive_len(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_archive")
            .fetch_one(self.pool())
            .await?;
        Ok(n.max(0) as u64)
    }

    pub async fn list_purchase_orders(
        &self,
        status: Option<PurchaseOrderStatus>,
        limit: i64,
        after: Option<PurchaseOrderId>,
    ) -> Result<Vec<PurchaseOrderView>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PURCHASE_ORDER_FIELDS} FROM purchase_orders po LEFT JOIN products p ON p.id = po.product_id \
             WHERE ($1 = '' OR po.status = $1) AND po.id > $2 ORDER BY po.id LIMIT $3",
        ))
        .bind(status.map(|s| s.as_str()).unwrap_or(""))
        .bind(after.map(|a| a.to_string()).unwrap_or_default())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(purchase_order_view).collect()
    }

    pub async fn get_purchase_order(
        &self,
        id: PurchaseOrderId,
    ) -> Result<Option<PurchaseOrderView>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PURCHASE_ORDER_FIELDS} FROM purchase_orders po LEFT JOIN products p ON p.id = po.product_id WHERE po.id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(purchase_order_view).transpose()
    }

    /// Whether `event_id` is in the archive (a valid `after` cursor).
    pub async fn is_archived(&self, event_id: Uuid) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM event_archive WHERE event_id = $1")
                .bind(event_id.to_string())
                .fetch_optional(self.pool())
                .await?
                .is_some(),
        )
    }

    /// Archived events in the order they were applied, filtered.
    pub async fn archived_events(
        &self,
        filter: &EventFilter,
    ) -> Result<Vec<ArchivedEvent>, StoreError> {
        let mut sql = String::from(
            "SELECT seq, event_id, event_type, event_key, version, occurred_at, payload, actor, \
             partition_no, entry_id, processed_at FROM event_archive WHERE 1 = 1",
        );
        // Each filter adds a clause whose `{}` is its parameter.
        let mut values: Vec<SqlValue> = Vec::new();
        let mut param = |sql: &mut String, clause: &str, value: SqlValue| {
            values.push(value);
            sql.push_str(&clause.replace("{}", &param(self.dialect(), values.len())));
        };
        if let Some(key) = &filter.key {
            param(&mut sql, " AND event_key = {}", key.clone().into());
        }
        if let Some(event_type) = &filter.event_type {
            param(&mut sql, " AND event_type = {}", event_type.clone().into());
        }
        if let Some(after) = filter.after {
            param(
                &mut sql,
                " AND seq > (SELECT seq FROM event_archive WHERE event_id = {})",
                after.to_string().into(),
            );
        }
        param(&mut sql, " ORDER BY seq LIMIT {}", filter.limit.into());
        let rows = bind_all(sqlx::query(&sql), values)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(archived_event_of).collect()
    }

    /// The last 60 seconds and 60 minutes of order events (event time,
    /// tumbling windows), ending at `now`; empty windows are zeros.
    pub async fn throughput(&self, now: DateTime<Utc>) -> Result<Throughput, StoreError> {
        let now = now.timestamp_millis();
        Ok(Throughput {
            per_second: self.windows("s", 1_000, now).await?,
            per_minute: self.windows("m", 60_000, now).await?,
        })
    }

    async fn windows(
        &self,
        granularity: &str,
        width: i64,
        now: i64,
    ) -> Result<Vec<Window>, StoreError> {
        const COUNT: i64 = 60;
        let last = now - now.rem_euclid(width);
        let first = last - (COUNT - 1) * width;
        let mut windows: BTreeMap<i64, Window> = (0..COUNT)
            .map(|i| {
                let start = first + i * width;
                (
                    start,
                    Window {
                        start: time_of_millis(start),
                        ..Window::default()
                    },
                )
            })
            .collect();
        let rows = sqlx::query(
            "SELECT window_start, event_type, events, amount_cents FROM throughput \
             WHERE granularity = $1 AND window_start >= $2 AND window_start <= $3 AND event_type LIKE 'order.%'",
        )
        .bind(granularity)
        .bind(first)
        .bind(last)
        .fetch_all(self.pool())
        .await?;
        for row in rows {
            let start: i64 = row.try_get("window_start")?;
            let Some(window) = windows.get_mut(&start) else {
                continue;
            };
            let events: i64 = row.try_get("events")?;
            let event_type: String = row.try_get("event_type")?;
            match EventType::from_name(&event_type) {
                Some(EventType::OrderPlaced) => window.placed += events,
                Some(EventType::OrderConfirmed) => {
                    window.confirmed += events;
                    window.revenue = window
                        .revenue
                        .plus(Money::from_total_cents(row.try_get("amount_cents")?));
                }
                Some(EventType::OrderRejected) => window.rejected += events,
                Some(EventType::OrderShipped) => window.shipped += events,
                Some(EventType::OrderCancelled) => window.cancelled += events,
                _ => {}
            }
        }
        Ok(windows.into_values().collect())
    }

    /// Best sellers by revenue of confirmed and shipped orders.
    pub async fn top_products(&self, limit: i64) -> Result<Vec<TopProduct>, StoreError> {
        // A running total (`product_sales`), not an aggregate over every
        // sold line: the dashboard asks each second.
        let rows = sqlx::query(
            "SELECT s.product_id, p.sku, p.name, s.units, s.revenue_cents \
             FROM product_sales s JOIN products p ON p.id = s.product_id \
             WHERE s.units > 0 ORDER BY s.revenue_cents DESC, s.product_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TopProduct {
                    product_id: uuid_col(row, "product_id")?,
                    sku: row.try_get("sku")?,
                    name: row.try_get("name")?,
                    units: row.try_get("units")?,
                    revenue: Money::from_total_cents(row.try_get("revenue_cents")?),
                })
            })
            .collect()
    }
}

fn purchase_order_view(row: &sqlx::any::AnyRow) -> Result<PurchaseOrderView, StoreError> {
    let received: Option<i64> = row.try_get("received_at")?;
    Ok(PurchaseOrderView {
        id: uuid_col(row, "id")?,
        product_id: uuid_col(row, "product_id")?,
        sku: row.try_get("sku")?,
        quantity: row.try_get("quantity")?,
        status: super::named_col(row, "status")?,
        drafted_at: time_of_millis(row.try_get("drafted_at")?),
        received_at: received.map(time_of_millis),
        location_id: super::optional_uuid_col(row, "location_id")?,
    })
}

/// An archive row (`seq`, the envelope's columns, `partition_no`,
/// `entry_id`, `processed_at`) as an `ArchivedEvent`.
pub(super) fn archived_event_of(row: &sqlx::any::AnyRow) -> Result<ArchivedEvent, StoreError> {
    let entry_id: String = row.try_get("entry_id")?;
    Ok(ArchivedEvent {
        seq: row.try_get("seq")?,
        envelope: archived_envelope(row)?,
        partition: row.try_get("partition_no")?,
        entry_id: (!entry_id.is_empty()).then_some(entry_id),
        processed_at: time_of_millis(row.try_get("processed_at")?),
    })
}
