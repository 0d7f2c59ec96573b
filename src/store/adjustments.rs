//! Reads of stock adjustments and counts: one, or a product's, newest
//! first. The rows are written by the projections (`writes.rs`) from the
//! request and its decision.

use super::{time_of_millis, uuid_col, Store, StoreError};
use crate::domain::status::{AdjustmentReason, AdjustmentRefusal, AdjustmentStatus};
use crate::domain::{AdjustmentId, LocationId, OrderId, ProductId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// An adjustment as the read model knows it: requested, then applied or
/// refused by a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AdjustmentView {
    pub adjustment_id: AdjustmentId,
    pub product_id: ProductId,
    /// The change to on-hand: asked for, or for a count what the worker
    /// found against the book (absent until it decides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
    pub reason: AdjustmentReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The on-hand the request was conditional on (compare-and-set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_on_hand: Option<i64>,
    /// For a count: the units counted, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted_at: Option<DateTime<Utc>>,
    pub status: AdjustmentStatus,
    /// Why it was refused, with the figures the worker found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<RefusalView>,
    /// The name of the token that asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub requested_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// The location adjusted or counted (absent: the default location).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// A refused adjustment's outcome: what a `409 Conflict` says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RefusalView {
    pub code: AdjustmentRefusal,
    pub message: String,
    /// The product's on-hand when the worker decided.
    pub on_hand: i64,
    pub reserved: i64,
    /// For `below_reserved`: the confirmed orders holding the stock (the
    /// first 20 by id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<OrderId>,
}

const ADJUSTMENT_COLUMNS: &str =
    "id, product_id, delta, reason, reference, note, expected_on_hand, counted, counted_at, status, \
     refusal, message, on_hand, reserved, held_by, requested_by, requested_at, decided_at, location_id";

fn adjustment_from_row(row: &AnyRow) -> Result<AdjustmentView, StoreError> {
    let refusal = match row.try_get::<Option<String>, _>("refusal")? {
        None => None,
        Some(_) => {
            let held_by: Option<String> = row.try_get("held_by")?;
            let held_by = match held_by {
                Some(json) => serde_json::from_str(&json).map_err(|e| {
                    StoreError::Inconsistent(format!("stock_adjustments.held_by `{json}`: {e}"))
                })?,
                None => Vec::new(),
            };
            Some(RefusalView {
                code: super::named_col(row, "refusal")?,
                message: row
                    .try_get::<Option<String>, _>("message")?
                    .unwrap_or_default(),
                on_hand: row
                    .try_get::<Option<i64>, _>("on_hand")?
                    .unwrap_or_default(),
                reserved: row
                    .try_get::<Option<i64>, _>("reserved")?
                    .unwrap_or_default(),
                held_by,
            })
        }
    };
    let decided_at: Option<i64> = row.try_get("decided_at")?;
    let counted_at: Option<i64> = row.try_get("counted_at")?;
    Ok(AdjustmentView {
        adjustment_id: uuid_col(row, "id")?,
        product_id: uuid_col(row, "product_id")?,
        delta: row.try_get("delta")?,
        reason: super::named_col(row, "reason")?,
        reference: row.try_get("reference")?,
        note: row.try_get("note")?,
        expected_on_hand: row.try_get("expected_on_hand")?,
        counted: row.try_get("counted")?,
        counted_at: counted_at.map(time_of_millis),
        status: super::named_col(row, "status")?,
        refusal,
        requested_by: row.try_get("requested_by")?,
        requested_at: time_of_millis(row.try_get("requested_at")?),
        decided_at: decided_at.map(time_of_millis),
        location_id: super::optional_uuid_col(row, "location_id")?,
    })
}

impl Store {
    /// One adjustment, if a worker has applied its request.
    pub async fn get_adjustment(
        &self,
        id: AdjustmentId,
    ) -> Result<Option<AdjustmentView>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ADJUSTMENT_COLUMNS} FROM stock_adjustments WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(adjustment_from_row).transpose()
    }

    /// A product's adjustments, newest first (ids are time-ordered), a page
    /// at a time: `after` is the last id of the previous page.
    pub async fn list_adjustments(
        &self,
        product_id: ProductId,
        limit: i64,
        after: Option<AdjustmentId>,
    ) -> Result<Vec<AdjustmentView>, StoreError> {
        // "~" sorts after every id's text: the first page.
        let before = after.map_or_else(|| "~".to_string(), |id| id.to_string());
        let rows = sqlx::query(&format!(
            "SELECT {ADJUSTMENT_COLUMNS} FROM stock_adjustments WHERE product_id = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(product_id.to_string())
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(adjustment_from_row).collect()
    }
}

impl Store {
    /// The products of `skus` that exist, by sku (an import's rows).
    pub async fn product_ids_by_sku(
        &self,
        skus: &[String],
    ) -> Result<std::collections::HashMap<String, ProductId>, StoreError> {
        let mut found = std::collections::HashMap::new();
        for (sql, values) in super::sql::by_ids(
            self.dialect(),
            "SELECT id, sku FROM products WHERE sku IN ({ids})",
            skus,
        ) {
            for row in super::sql::bind_all(sqlx::query(&sql), values)
                .fetch_all(self.pool())
                .await?
            {
                found.insert(row.try_get("sku")?, uuid_col(&row, "id")?);
            }
        }
        Ok(found)
    }

    /// Which of `ids` a worker has applied (an import uploaded again).
    pub async fn known_adjustments(
        &self,
        ids: &[AdjustmentId],
    ) -> Result<std::collections::HashSet<AdjustmentId>, StoreError> {
        let mut known = std::collections::HashSet::new();
        for (sql, values) in super::sql::by_ids(
            self.dialect(),
            "SELECT id FROM stock_adjustments WHERE id IN ({ids})",
            ids,
        ) {
            for row in super::sql::bind_all(sqlx::query(&sql), values)
                .fetch_all(self.pool())
                .await?
            {
                known.insert(uuid_col(&row, "id")?);
            }
        }
        Ok(known)
    }
}
