//! The business invariants of DESIGN.md section 5, checked against a read
//! model from the outside, as an auditor would: tests call it once the log
//! is drained. It reads the tables with SQL of its own, so it does not
//! trust the store's code it is checking.

use sqlx::Row;
use streamstock::store::Store;

/// Checks the business invariants of DESIGN.md section 5 against the read
/// model and returns every violation found (empty when all hold). Meant
/// for quiescent moments: tests call it once the log is drained.
pub async fn invariant_violations(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    let mut violations = Vec::new();
    let rows = sqlx::query(
        "SELECT i.product_id, i.on_hand, i.reserved, i.received_total, i.shipped_total, \
         CAST(COALESCE(c.quantity, 0) AS BIGINT) AS confirmed_qty FROM inventory i LEFT JOIN \
         (SELECT oi.product_id, SUM(oi.quantity) AS quantity FROM order_items oi JOIN orders o ON o.id = oi.order_id \
          WHERE o.status = 'CONFIRMED' GROUP BY oi.product_id) c ON c.product_id = i.product_id",
    )
    .fetch_all(store.pool())
    .await?;
    for row in rows {
        let id: String = row.try_get("product_id")?;
        let on_hand: i64 = row.try_get("on_hand")?;
        let reserved: i64 = row.try_get("reserved")?;
        let received: i64 = row.try_get("received_total")?;
        let shipped: i64 = row.try_get("shipped_total")?;
        let confirmed: i64 = row.try_get("confirmed_qty")?;
        if !(0 <= reserved && reserved <= on_hand) {
            violations.push(format!("{id}: reserved {reserved} outside 0..={on_hand}"));
        }
        if on_hand != received - shipped {
            violations.push(format!(
                "{id}: on_hand {on_hand} != received {received} - shipped {shipped}"
            ));
        }
        if reserved != confirmed {
            violations.push(format!(
                "{id}: reserved {reserved} != confirmed quantities {confirmed}"
            ));
        }
    }
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS by_orders, \
         CAST(COALESCE((SELECT SUM(oi.quantity * oi.unit_price_cents) FROM order_items oi JOIN orders o \
              ON o.id = oi.order_id WHERE o.status IN ('CONFIRMED', 'SHIPPED')), 0) AS BIGINT) AS by_items \
         FROM orders WHERE status IN ('CONFIRMED', 'SHIPPED')",
    )
    .fetch_one(store.pool())
    .await?;
    let (by_orders, by_items): (i64, i64) = (row.try_get("by_orders")?, row.try_get("by_items")?);
    if by_orders != by_items {
        violations.push(format!(
            "revenue {by_orders} != sum of confirmed/shipped lines {by_items}"
        ));
    }
    let pending: i64 = sqlx::query("SELECT COUNT(*) AS n FROM orders WHERE status = 'PENDING'")
        .fetch_one(store.pool())
        .await?
        .try_get("n")?;
    if pending > 0 {
        violations.push(format!("{pending} orders still PENDING"));
    }
    Ok(violations)
}
