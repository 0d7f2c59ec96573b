//! Reads of transfers between locations: one, or a page of them, newest
//! first. The rows are written by the projections (`writes.rs`).

use super::{time_of_millis, uuid_col, Store, StoreError};
use crate::domain::status::TransferStatus;
use crate::domain::{LocationId, ProductId, TransferId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeMap;

/// A transfer as the read model knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TransferView {
    pub id: TransferId,
    pub from: LocationId,
    pub to: LocationId,
    /// The locations' codes (their ids when not applied yet).
    pub from_code: String,
    pub to_code: String,
    pub status: TransferStatus,
    pub lines: Vec<TransferLineView>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the destination said about a shortfall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discrepancy_reason: Option<String>,
    pub requested_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipped_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TransferLineView {
    pub product_id: ProductId,
    pub quantity: i64,
    /// What arrived (once received).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<i64>,
}

const TRANSFER_COLUMNS: &str = "t.id, t.from_location, t.to_location, \
     COALESCE(f.code, t.from_location) AS from_code, COALESCE(d.code, t.to_location) AS to_code, \
     t.status, t.message, t.discrepancy_reason, t.requested_at, t.shipped_at, t.received_at \
     FROM transfers t LEFT JOIN locations f ON f.id = t.from_location \
     LEFT JOIN locations d ON d.id = t.to_location";

fn transfer_from_row(row: &AnyRow) -> Result<TransferView, StoreError> {
    let shipped_at: Option<i64> = row.try_get("shipped_at")?;
    let received_at: Option<i64> = row.try_get("received_at")?;
    Ok(TransferView {
        id: uuid_col(row, "id")?,
        from: uuid_col(row, "from_location")?,
        to: uuid_col(row, "to_location")?,
        from_code: row.try_get("from_code")?,
        to_code: row.try_get("to_code")?,
        status: super::named_col(row, "status")?,
        lines: Vec::new(),
        message: row.try_get("message")?,
        discrepancy_reason: row.try_get("discrepancy_reason")?,
        requested_at: time_of_millis(row.try_get("requested_at")?),
        shipped_at: shipped_at.map(time_of_millis),
        received_at: received_at.map(time_of_millis),
    })
}

impl Store {
    /// One transfer, if a worker has applied its request.
    pub async fn get_transfer(&self, id: TransferId) -> Result<Option<TransferView>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TRANSFER_COLUMNS} WHERE t.id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut transfers = vec![transfer_from_row(&row)?];
        self.fill_transfer_lines(&mut transfers).await?;
        Ok(transfers.pop())
    }

    /// Transfers, newest first (their ids are time-ordered), optionally of
    /// one status; `before`: the last id of the previous page.
    pub async fn list_transfers(
        &self,
        status: Option<TransferStatus>,
        before: Option<TransferId>,
        limit: i64,
    ) -> Result<Vec<TransferView>, StoreError> {
        let before = before.map_or_else(|| "~".to_string(), |id| id.to_string());
        // One statement: an empty `$1` is no filter.
        let sql = format!(
            "SELECT {TRANSFER_COLUMNS} WHERE ($1 = '' OR t.status = $1) AND t.id < $2 \
             ORDER BY t.id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(status.map_or("", |s| s.as_str()))
            .bind(before)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut transfers: Vec<TransferView> = rows
            .iter()
            .map(transfer_from_row)
            .collect::<Result<_, _>>()?;
        self.fill_transfer_lines(&mut transfers).await?;
        Ok(transfers)
    }

    async fn fill_transfer_lines(&self, transfers: &mut [TransferView]) -> Result<(), StoreError> {
        if transfers.is_empty() {
            return Ok(());
        }
        let ids: Vec<TransferId> = transfers.iter().map(|t| t.id).collect();
        let mut tx = self.pool().begin().await?;
        let rows = super::sql::select_by_ids(
            &mut tx,
            self.dialect(),
            "SELECT transfer_id, product_id, quantity, received FROM transfer_lines \
             WHERE transfer_id IN ({ids}) ORDER BY transfer_id, line_no",
            &ids,
        )
        .await?;
        tx.commit().await?;
        let mut lines: BTreeMap<TransferId, Vec<TransferLineView>> = BTreeMap::new();
        for row in rows {
            lines
                .entry(uuid_col(&row, "transfer_id")?)
                .or_default()
                .push(TransferLineView {
                    product_id: uuid_col(&row, "product_id")?,
                    quantity: row.try_get("quantity")?,
                    received: row.try_get("received")?,
                });
        }
        for transfer in transfers {
            transfer.lines = lines.remove(&transfer.id).unwrap_or_default();
        }
        Ok(())
    }
}
