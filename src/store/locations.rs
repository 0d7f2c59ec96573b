//! Locations: the claims a gateway takes on their codes, and the reads of
//! locations, of a product's stock per location and of an order's
//! allocations. The rows are written by the projections (`writes.rs`).

use super::{now_millis, uuid_col, Store, StoreError};
use crate::domain::{LocationId, OrderId, ProductId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A location with the stock it holds, all products together.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LocationView {
    pub id: LocationId,
    pub code: String,
    pub name: String,
    /// Lower is allocated from first (the `priority` strategy).
    pub priority: i64,
    /// Inactive: its stock stays, no order is allocated from it.
    pub active: bool,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// Units on their way here by transfer.
    pub in_transit: i64,
}

/// One product's stock at one location.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LocationStockView {
    pub location_id: LocationId,
    pub code: String,
    pub active: bool,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub in_transit: i64,
}

/// One product's stock at a location, as the location lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StockAtLocationView {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub in_transit: i64,
}

/// Units of an order's product reserved (then shipped) at one location.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AllocationView {
    pub product_id: ProductId,
    pub location_id: LocationId,
    pub code: String,
    pub quantity: i64,
    pub shipped: i64,
}

const LOCATION_COLUMNS: &str = "l.id, l.code, l.name, l.priority, l.active, \
     CAST(COALESCE(SUM(s.on_hand), 0) AS BIGINT) AS on_hand, \
     CAST(COALESCE(SUM(s.reserved), 0) AS BIGINT) AS reserved, \
     CAST(COALESCE(SUM(s.in_transit), 0) AS BIGINT) AS in_transit \
     FROM locations l LEFT JOIN inventory_locations s ON s.location_id = l.id";

fn location_from_row(row: &AnyRow) -> Result<LocationView, StoreError> {
    let active: i64 = row.try_get("active")?;
    let on_hand: i64 = row.try_get("on_hand")?;
    let reserved: i64 = row.try_get("reserved")?;
    Ok(LocationView {
        id: uuid_col(row, "id")?,
        code: row.try_get("code")?,
        name: row.try_get("name")?,
        priority: row.try_get("priority")?,
        active: active != 0,
        on_hand,
        reserved,
        available: on_hand - reserved,
        in_transit: row.try_get("in_transit")?,
    })
}

impl Store {
    /// Claims `code` for `location_id`. False when another location has it.
    pub async fn claim_location_code(
        &self,
        code: &str,
        location_id: LocationId,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO location_claims (code, location_id, claimed_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(code)
        .bind(location_id.to_string())
        .bind(now_millis())
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        // Claimed already by this very location: a retry of its creation.
        Ok(self.claimed_location(code).await? == Some(location_id))
    }

    /// Gives a claim back when the location.created append failed.
    pub async fn release_location_code(
        &self,
        code: &str,
        location_id: LocationId,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM location_claims WHERE code = $1 AND location_id = $2")
            .bind(code)
            .bind(location_id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn claimed_location(&self, code: &str) -> Result<Option<LocationId>, StoreError> {
        let row = sqlx::query("SELECT location_id FROM location_claims WHERE code = $1")
            .bind(code)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| uuid_col(&r, "location_id")).transpose()
    }

    /// The code of a location this deployment's gateways created (its
    /// creation is in the log), whether or not a worker applied it yet.
    pub async fn location_code(&self, id: LocationId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT code FROM location_claims WHERE location_id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("code")).transpose()?)
    }

    /// How many locations have been created (claimed), the default one
    /// included.
    pub async fn location_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM location_claims")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Every location a worker has applied, by priority then code.
    pub async fn list_locations(&self) -> Result<Vec<LocationView>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {LOCATION_COLUMNS} GROUP BY l.id, l.code, l.name, l.priority, l.active \
             ORDER BY l.priority, l.code"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(location_from_row).collect()
    }

    pub async fn get_location(&self, id: LocationId) -> Result<Option<LocationView>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {LOCATION_COLUMNS} WHERE l.id = $1 GROUP BY l.id, l.code, l.name, l.priority, l.active"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(location_from_row).transpose()
    }

    /// A product's stock at each location that has ever held it, by
    /// location priority then code.
    pub async fn stock_by_location(
        &self,
        product_id: ProductId,
    ) -> Result<Vec<LocationStockView>, StoreError> {
        let rows = sqlx::query(
            // A location whose creation a worker has yet to apply shows
            // by its id.
            "SELECT s.location_id, COALESCE(l.code, s.location_id) AS code, \
             COALESCE(l.active, 1) AS active, s.on_hand, s.reserved, s.in_transit \
             FROM inventory_locations s LEFT JOIN locations l ON l.id = s.location_id \
             WHERE s.product_id = $1 ORDER BY COALESCE(l.priority, 0), code",
        )
        .bind(product_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let active: i64 = row.try_get("active")?;
                let on_hand: i64 = row.try_get("on_hand")?;
                let reserved: i64 = row.try_get("reserved")?;
                Ok(LocationStockView {
                    location_id: uuid_col(row, "location_id")?,
                    code: row.try_get("code")?,
                    active: active != 0,
                    on_hand,
                    reserved,
                    available: on_hand - reserved,
                    in_transit: row.try_get("in_transit")?,
                })
            })
            .collect()
    }

    /// The products a location holds or has held, by product id, after
    /// `after`.
    pub async fn stock_at_location(
        &self,
        location_id: LocationId,
        after: Option<ProductId>,
        limit: i64,
    ) -> Result<Vec<StockAtLocationView>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.product_id, p.sku, p.name, s.on_hand, s.reserved, s.in_transit \
             FROM inventory_locations s JOIN products p ON p.id = s.product_id \
             WHERE s.location_id = $1 AND s.product_id > $2 ORDER BY s.product_id LIMIT $3",
        )
        .bind(location_id.to_string())
        .bind(after.map(|a| a.to_string()).unwrap_or_default())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let on_hand: i64 = row.try_get("on_hand")?;
                let reserved: i64 = row.try_get("reserved")?;
                Ok(StockAtLocationView {
                    product_id: uuid_col(row, "product_id")?,
                    sku: row.try_get("sku")?,
                    name: row.try_get("name")?,
                    on_hand,
                    reserved,
                    available: on_hand - reserved,
                    in_transit: row.try_get("in_transit")?,
                })
            })
            .collect()
    }

    /// Where an order's units are reserved, in the order allocated.
    pub async fn allocations_of(
        &self,
        order_id: OrderId,
    ) -> Result<Vec<AllocationView>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.product_id, a.location_id, COALESCE(l.code, a.location_id) AS code, \
             a.quantity, a.shipped \
             FROM order_allocations a LEFT JOIN locations l ON l.id = a.location_id \
             WHERE a.order_id = $1 ORDER BY a.seq",
        )
        .bind(order_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AllocationView {
                    product_id: uuid_col(row, "product_id")?,
                    location_id: uuid_col(row, "location_id")?,
                    code: row.try_get("code")?,
                    quantity: row.try_get("quantity")?,
                    shipped: row.try_get("shipped")?,
                })
            })
            .collect()
    }
}
