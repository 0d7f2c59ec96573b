//! The read side of holds: which held orders are due (their hold ran out),
//! for the expiry sweep. The partial index `orders_held_until` holds only
//! held orders, so these reads cost what the open holds are, never the
//! history.

use super::{Store, StoreError};
use crate::domain::inventory::OrderStatus;
use crate::domain::OrderId;
use sqlx::Row;

/// A held order whose hold ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueHold {
    pub order_id: OrderId,
    /// Unix milliseconds (event time).
    pub hold_until: i64,
}

impl Store {
    /// Held orders whose hold ran out at or before `now_ms`, by deadline
    /// then id, after `after` (the last one of the previous page), at most
    /// `limit`.
    pub async fn due_holds(
        &self,
        now_ms: i64,
        after: Option<DueHold>,
        limit: usize,
    ) -> Result<Vec<DueHold>, StoreError> {
        let (after_until, after_id) = after.map_or((i64::MIN, String::new()), |h| {
            (h.hold_until, h.order_id.to_string())
        });
        let rows = sqlx::query(
            "SELECT id, hold_until FROM orders WHERE status = $1 AND hold_until <= $2 \
             AND (hold_until > $3 OR (hold_until = $3 AND id > $4)) \
             ORDER BY hold_until, id LIMIT $5",
        )
        .bind(OrderStatus::Held.as_str())
        .bind(now_ms)
        .bind(after_until)
        .bind(after_id)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DueHold {
                    order_id: super::uuid_col(row, "id")?,
                    hold_until: row.try_get("hold_until")?,
                })
            })
            .collect()
    }
}
