//! Reads of the stock ledger (written by the projections from the domain's
//! movements): a product's rows a page at a time, its figures as of a past
//! moment, and the self-audit that every product's last row equals its
//! figures.

use super::{time_of_millis, uuid_col, Store, StoreError};
use crate::domain::status::{AdjustmentReason, MovementKind};
use crate::domain::{AdjustmentId, LocationId, OrderId, ProductId, PurchaseOrderId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

/// One stock movement of a product.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LedgerEntry {
    /// The product's movement number: 1, 2, ... in the order applied.
    pub seq: i64,
    /// The time of the event that moved the stock.
    pub occurred_at: DateTime<Utc>,
    pub kind: MovementKind,
    /// Where the stock moved.
    pub location_id: LocationId,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    /// The product's figures (all locations) after the movement.
    pub on_hand: i64,
    pub reserved: i64,
    /// The event that moved the stock (absent on an `opening` row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_order_id: Option<PurchaseOrderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjustment_id: Option<AdjustmentId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<AdjustmentReason>,
}

/// Which of a product's rows to read: after movement `after` (in the
/// order asked for: before it, newest first), with event times in
/// `from..=to` (Unix milliseconds), at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct LedgerRange {
    pub after: Option<i64>,
    pub newest_first: bool,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: i64,
}

/// The ledger's self-audit: products whose last ledger row is not their
/// figures (none, on a sound read model).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LedgerAudit {
    pub products: i64,
    pub mismatched: i64,
    /// Some of the mismatched products (at most 10).
    pub examples: Vec<ProductId>,
}

const LEDGER_COLUMNS: &str =
    "seq, occurred_at, kind, on_hand_delta, reserved_delta, on_hand, reserved, \
     event_type, event_id, order_id, purchase_order_id, adjustment_id, reason, location_id";

fn optional_id<T: From<Uuid>>(row: &AnyRow, col: &str) -> Result<Option<T>, StoreError> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| {
        t.parse::<Uuid>()
            .map(T::from)
            .map_err(|e| StoreError::Inconsistent(format!("{col} `{t}`: {e}")))
    })
    .transpose()
}

fn entry_from_row(row: &AnyRow) -> Result<LedgerEntry, StoreError> {
    let reason: Option<String> = row.try_get("reason")?;
    let reason = match reason {
        None => None,
        Some(_) => Some(super::named_col(row, "reason")?),
    };
    Ok(LedgerEntry {
        seq: row.try_get("seq")?,
        occurred_at: time_of_millis(row.try_get("occurred_at")?),
        kind: super::named_col(row, "kind")?,
        location_id: super::uuid_col(row, "location_id")?,
        on_hand_delta: row.try_get("on_hand_delta")?,
        reserved_delta: row.try_get("reserved_delta")?,
        on_hand: row.try_get("on_hand")?,
        reserved: row.try_get("reserved")?,
        event_type: row.try_get("event_type")?,
        event_id: optional_id(row, "event_id")?,
        order_id: optional_id(row, "order_id")?,
        purchase_order_id: optional_id(row, "purchase_order_id")?,
        adjustment_id: optional_id(row, "adjustment_id")?,
        reason,
    })
}

impl Store {
    /// A product's ledger rows in `range`, oldest (or newest) first.
    pub async fn ledger(
        &self,
        product_id: ProductId,
        range: LedgerRange,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let (past, order, first) = match range.newest_first {
            false => ("seq > $2", "seq", 0),
            true => ("seq < $2", "seq DESC", i64::MAX),
        };
        let rows = sqlx::query(&format!(
            "SELECT {LEDGER_COLUMNS} FROM stock_ledger WHERE product_id = $1 AND {past} \
             AND occurred_at >= $3 AND occurred_at <= $4 ORDER BY {order} LIMIT $5"
        ))
        .bind(product_id.to_string())
        .bind(range.after.unwrap_or(first))
        .bind(range.from.unwrap_or(i64::MIN))
        .bind(range.to.unwrap_or(i64::MAX))
        .bind(range.limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// A product's on-hand and reserved as of `at` (Unix milliseconds, event
    /// time): today's figures less every movement of a later event time,
    /// as Square counts inventory. None for a product without stock row.
    pub async fn figures_as_of(
        &self,
        product_id: ProductId,
        at: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT i.on_hand, i.reserved, \
             CAST(COALESCE((SELECT SUM(l.on_hand_delta) FROM stock_ledger l WHERE l.product_id = i.product_id \
                  AND l.occurred_at > $2), 0) AS BIGINT) AS on_hand_later, \
             CAST(COALESCE((SELECT SUM(l.reserved_delta) FROM stock_ledger l WHERE l.product_id = i.product_id \
                  AND l.occurred_at > $2), 0) AS BIGINT) AS reserved_later \
             FROM inventory i WHERE i.product_id = $1",
        )
        .bind(product_id.to_string())
        .bind(at)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            let on_hand: i64 = row.try_get("on_hand")?;
            let reserved: i64 = row.try_get("reserved")?;
            let on_hand_later: i64 = row.try_get("on_hand_later")?;
            let reserved_later: i64 = row.try_get("reserved_later")?;
            Ok((on_hand - on_hand_later, reserved - reserved_later))
        })
        .transpose()
    }

    /// The self-audit: each product's last ledger row (number
    /// `inventory.movements`) against its figures. Both are written in one
    /// transaction, so this holds at every moment, not only quiescent ones.
    pub async fn audit_ledger(&self) -> Result<LedgerAudit, StoreError> {
        const MISMATCHED: &str = "FROM inventory i LEFT JOIN stock_ledger l \
             ON l.product_id = i.product_id AND l.seq = i.movements \
             WHERE (i.movements = 0 AND (i.on_hand <> 0 OR i.reserved <> 0)) \
             OR (i.movements > 0 AND (l.product_id IS NULL OR l.on_hand <> i.on_hand OR l.reserved <> i.reserved))";
        let counts = sqlx::query(&format!(
            "SELECT (SELECT COUNT(*) FROM inventory) AS products, (SELECT COUNT(*) {MISMATCHED}) AS mismatched"
        ))
        .fetch_one(self.pool())
        .await?;
        let examples = sqlx::query(&format!(
            "SELECT i.product_id {MISMATCHED} ORDER BY i.product_id LIMIT 10"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(LedgerAudit {
            products: counts.try_get("products")?,
            mismatched: counts.try_get("mismatched")?,
            examples: examples
                .iter()
                .map(|row| uuid_col(row, "product_id"))
                .collect::<Result<_, _>>()?,
        })
    }
}
