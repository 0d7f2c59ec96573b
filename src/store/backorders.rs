//! The read side of backorders: a product's queue of waiting orders, in
//! the order they are filled (placement time, then id).

use super::{time_of_millis, uuid_col, Store, StoreError};
use crate::domain::inventory::OrderStatus;
use crate::domain::{OrderId, ProductId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// One order of a product's backorder queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueuedBackorderView {
    /// 1 for the order filled next.
    pub position: i64,
    pub order_id: OrderId,
    pub customer_email: String,
    pub placed_at: DateTime<Utc>,
    /// Units of the product it waits for.
    pub waiting: i64,
}

impl Store {
    /// Products whose orders wait for stock that is available at an active
    /// location (a queue longer than one batch fills), at most `limit`.
    pub async fn stalled_backorder_queues(
        &self,
        limit: usize,
    ) -> Result<Vec<ProductId>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.product_id FROM inventory i WHERE i.backordered > 0 AND EXISTS \
             (SELECT 1 FROM inventory_locations s JOIN locations l ON l.id = s.location_id \
              WHERE s.product_id = i.product_id AND l.active <> 0 AND s.on_hand > s.reserved) \
             ORDER BY i.product_id LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| uuid_col(row, "product_id")).collect()
    }

    /// The first `limit` orders waiting for `product_id`, first to be
    /// filled first.
    pub async fn backorder_queue(
        &self,
        product_id: ProductId,
        limit: i64,
    ) -> Result<Vec<QueuedBackorderView>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.customer_email, o.placed_at, CAST(SUM(i.backordered) AS BIGINT) AS waiting \
             FROM order_items i JOIN orders o ON o.id = i.order_id \
             WHERE i.product_id = $1 AND i.backordered > 0 AND o.status = $2 \
             GROUP BY o.id, o.customer_email, o.placed_at ORDER BY o.placed_at, o.id LIMIT $3",
        )
        .bind(product_id.to_string())
        .bind(OrderStatus::Backordered.as_str())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .enumerate()
            .map(|(i, row)| {
                let waiting: i64 = row.try_get("waiting")?;
                Ok(QueuedBackorderView {
                    position: i as i64 + 1,
                    order_id: uuid_col(row, "id")?,
                    customer_email: row.try_get("customer_email")?,
                    placed_at: time_of_millis(row.try_get("placed_at")?),
                    waiting,
                })
            })
            .collect()
    }
}
