//! Reads of shipments and returns: one, or an order's. The rows are
//! written by the projections (`writes.rs`) from the request and its
//! decision.

use super::{time_of_millis, uuid_col, Store, StoreError};
use crate::domain::status::{AdjustmentStatus, FulfilmentKind, ReturnDisposition};
use crate::domain::{LocationId, Money, OrderId, ProductId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

/// A shipment or a return as the read model knows it: requested, then
/// carried out (`applied`) or refused by a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FulfilmentView {
    /// The shipment's or return's id.
    pub id: Uuid,
    pub order_id: OrderId,
    pub kind: FulfilmentKind,
    pub status: AdjustmentStatus,
    /// What was asked for, per product.
    pub lines: Vec<FulfilmentLine>,
    /// What the worker shipped or took back, per order line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Vec<AllocatedLine>>,
    /// A return's reason, as the customer gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A return's value at the order's prices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub requested_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// A return's: where its restocked units went (absent: the default
    /// location).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FulfilmentLine {
    pub product_id: ProductId,
    pub quantity: i64,
    /// A shipment's: the location asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
    /// A return's: restock or damaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<ReturnDisposition>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AllocatedLine {
    /// The order line's index among its items.
    pub line_no: u32,
    pub product_id: ProductId,
    pub quantity: i64,
    /// A shipment's: the location the units left from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<ReturnDisposition>,
}

const FULFILMENT_COLUMNS: &str = "id, order_id, kind, status, lines, allocated, reason, message, \
     refund_cents, requested_by, requested_at, decided_at, location_id";

/// How many of an order's shipments and returns its page shows.
pub const SHOWN_PER_ORDER: i64 = 100;

fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Inconsistent(format!("fulfilments.{column} `{text}`: {e}")))
}

fn fulfilment_from_row(row: &AnyRow) -> Result<FulfilmentView, StoreError> {
    let allocated = match row.try_get::<Option<String>, _>("allocated")? {
        Some(_) => Some(json_col(row, "allocated")?),
        None => None,
    };
    let refund: Option<i64> = row.try_get("refund_cents")?;
    let decided_at: Option<i64> = row.try_get("decided_at")?;
    Ok(FulfilmentView {
        id: uuid_col(row, "id")?,
        order_id: uuid_col(row, "order_id")?,
        kind: super::named_col(row, "kind")?,
        status: super::named_col(row, "status")?,
        lines: json_col(row, "lines")?,
        allocated,
        reason: row.try_get("reason")?,
        message: row.try_get("message")?,
        refund: refund.map(Money::from_total_cents),
        requested_by: row.try_get("requested_by")?,
        requested_at: time_of_millis(row.try_get("requested_at")?),
        decided_at: decided_at.map(time_of_millis),
        location_id: super::optional_uuid_col(row, "location_id")?,
    })
}

impl Store {
    /// One shipment or return, if a worker has applied its request.
    pub async fn get_fulfilment(&self, id: Uuid) -> Result<Option<FulfilmentView>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {FULFILMENT_COLUMNS} FROM fulfilments WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(fulfilment_from_row).transpose()
    }

    /// An order's shipments and returns, oldest first (by the time they
    /// were asked for), at most `SHOWN_PER_ORDER`.
    pub async fn order_fulfilments(
        &self,
        order_id: OrderId,
    ) -> Result<Vec<FulfilmentView>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {FULFILMENT_COLUMNS} FROM fulfilments WHERE order_id = $1 ORDER BY requested_at, id LIMIT $2"
        ))
        .bind(order_id.to_string())
        .bind(SHOWN_PER_ORDER)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(fulfilment_from_row).collect()
    }
}
