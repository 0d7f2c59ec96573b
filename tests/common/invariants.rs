//! The business invariants (docs/architecture.md), checked against a read
//! model from the outside, as an auditor would: tests call it once the log
//! is drained. It reads the tables with SQL of its own, so it does not
//! trust the store's code it is checking.

use sqlx::Row;
use streamstock::store::Store;

/// The statuses of orders that hold reserved units.
const OPEN: &str = "('HELD', 'BACKORDERED', 'CONFIRMED', 'PARTIALLY_SHIPPED')";

/// The units of an order line (`oi`, of order `o`) sold: ordered, less
/// what a cancel released (what had not shipped), less what came back. A
/// hold is not a sale until committed; a backorder is one.
const SOLD_UNITS: &str = "CASE WHEN o.status IN ('CONFIRMED', 'BACKORDERED', 'PARTIALLY_SHIPPED', 'SHIPPED') \
     THEN oi.quantity - oi.returned WHEN o.status = 'CANCELLED' THEN oi.shipped - oi.returned ELSE 0 END";

/// Checks the business invariants (docs/architecture.md) against the read
/// model and returns every violation found (empty when all hold). Meant
/// for quiescent moments: tests call it once the log is drained.
pub async fn invariant_violations(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    let mut violations = Vec::new();
    let rows = sqlx::query(&format!(
        "SELECT i.product_id, i.on_hand, i.reserved, i.in_transit, i.received_total, i.shipped_total, i.adjusted_total, \
         CAST(COALESCE(c.quantity, 0) AS BIGINT) AS held, \
         CAST(COALESCE(c.shipped, 0) AS BIGINT) AS shipped_by_lines, \
         CAST(COALESCE(a.delta, 0) AS BIGINT) AS adjusted, \
         CAST(COALESCE(r.restocked, 0) AS BIGINT) AS restocked FROM inventory i LEFT JOIN \
         (SELECT oi.product_id, SUM(CASE WHEN o.status IN {OPEN} THEN oi.quantity - oi.shipped - oi.backordered ELSE 0 END) AS quantity, \
          SUM(oi.shipped) AS shipped FROM order_items oi JOIN orders o ON o.id = oi.order_id \
          GROUP BY oi.product_id) c ON c.product_id = i.product_id LEFT JOIN \
         (SELECT product_id, SUM(delta) AS delta FROM stock_adjustments WHERE status = 'applied' \
          GROUP BY product_id) a ON a.product_id = i.product_id LEFT JOIN \
         (SELECT product_id, SUM(on_hand_delta) AS restocked FROM stock_ledger WHERE kind = 'returned' \
          GROUP BY product_id) r ON r.product_id = i.product_id"
    ))
    .fetch_all(store.pool())
    .await?;
    for row in rows {
        let id: String = row.try_get("product_id")?;
        let on_hand: i64 = row.try_get("on_hand")?;
        let reserved: i64 = row.try_get("reserved")?;
        let received: i64 = row.try_get("received_total")?;
        let shipped: i64 = row.try_get("shipped_total")?;
        let shipped_by_lines: i64 = row.try_get("shipped_by_lines")?;
        let held: i64 = row.try_get("held")?;
        let adjusted: i64 = row.try_get("adjusted")?;
        let adjusted_kept: i64 = row.try_get("adjusted_total")?;
        let restocked: i64 = row.try_get("restocked")?;
        let in_transit: i64 = row.try_get("in_transit")?;
        if adjusted_kept != adjusted {
            violations.push(format!(
                "{id}: adjusted_total {adjusted_kept} != applied adjustments {adjusted}"
            ));
        }
        if shipped != shipped_by_lines {
            violations.push(format!(
                "{id}: shipped_total {shipped} != units the order lines shipped {shipped_by_lines}"
            ));
        }
        if !(0 <= reserved && reserved <= on_hand) {
            violations.push(format!("{id}: reserved {reserved} outside 0..={on_hand}"));
        }
        // Adjustments summed from their own rows, restocked returns from
        // the ledger, not the kept totals; transfers move units between
        // on-hand and in transit.
        if on_hand + in_transit != received - shipped + adjusted + restocked {
            violations.push(format!(
                "{id}: on_hand {on_hand} + in transit {in_transit} != received {received} - shipped {shipped} + adjusted {adjusted} + restocked {restocked}"
            ));
        }
        if reserved != held {
            violations.push(format!(
                "{id}: reserved {reserved} != open orders' unshipped units {held}"
            ));
        }
    }
    // Per line: shipped ≤ quantity, 0 ≤ returned ≤ shipped.
    let bad_lines: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM order_items WHERE shipped < 0 OR shipped > quantity \
         OR returned < 0 OR returned > shipped",
    )
    .fetch_one(store.pool())
    .await?
    .try_get("n")?;
    if bad_lines > 0 {
        violations.push(format!(
            "{bad_lines} order lines ship more than ordered or return more than shipped"
        ));
    }
    // Revenue: the kept total of units sold equals the lines' value sold
    // (ordered, less released by a cancel, less returned).
    let row = sqlx::query(&format!(
        "SELECT CAST(COALESCE((SELECT SUM(sold_cents) FROM order_totals), 0) AS BIGINT) AS kept, \
         CAST(COALESCE((SELECT SUM(({SOLD_UNITS}) * oi.unit_price_cents) FROM order_items oi \
              JOIN orders o ON o.id = oi.order_id), 0) AS BIGINT) AS by_items"
    ))
    .fetch_one(store.pool())
    .await?;
    let (kept, by_items): (i64, i64) = (row.try_get("kept")?, row.try_get("by_items")?);
    if kept != by_items {
        violations.push(format!(
            "revenue {kept} != value of the lines' units sold {by_items}"
        ));
    }
    let pending: i64 = sqlx::query("SELECT COUNT(*) AS n FROM orders WHERE status = 'PENDING'")
        .fetch_one(store.pool())
        .await?
        .try_get("n")?;
    if pending > 0 {
        violations.push(format!("{pending} orders still PENDING"));
    }
    // The stock ledger: each product's last row (the highest seq) is its
    // figures, its rows add up to them, and they are numbered 1..n.
    let rows = sqlx::query(
        "SELECT i.product_id, i.on_hand, i.reserved, \
         CAST(COALESCE(s.rows_n, 0) AS BIGINT) AS rows_n, CAST(COALESCE(s.top, 0) AS BIGINT) AS top, \
         CAST(COALESCE(s.on_hand_sum, 0) AS BIGINT) AS on_hand_sum, \
         CAST(COALESCE(s.reserved_sum, 0) AS BIGINT) AS reserved_sum, \
         l.on_hand AS last_on_hand, l.reserved AS last_reserved FROM inventory i \
         LEFT JOIN (SELECT product_id, COUNT(*) AS rows_n, MAX(seq) AS top, SUM(on_hand_delta) AS on_hand_sum, \
                    SUM(reserved_delta) AS reserved_sum FROM stock_ledger GROUP BY product_id) s \
           ON s.product_id = i.product_id \
         LEFT JOIN stock_ledger l ON l.product_id = i.product_id AND l.seq = s.top",
    )
    .fetch_all(store.pool())
    .await?;
    for row in rows {
        let id: String = row.try_get("product_id")?;
        let figures: (i64, i64) = (row.try_get("on_hand")?, row.try_get("reserved")?);
        let sums: (i64, i64) = (row.try_get("on_hand_sum")?, row.try_get("reserved_sum")?);
        let (count, top): (i64, i64) = (row.try_get("rows_n")?, row.try_get("top")?);
        let last: (Option<i64>, Option<i64>) =
            (row.try_get("last_on_hand")?, row.try_get("last_reserved")?);
        if sums != figures {
            violations.push(format!(
                "{id}: ledger adds up to {sums:?}, figures {figures:?}"
            ));
        }
        if count != top {
            violations.push(format!("{id}: {count} ledger rows numbered up to {top}"));
        }
        if count > 0 && last != (Some(figures.0), Some(figures.1)) {
            violations.push(format!(
                "{id}: ledger's last row {last:?} != figures {figures:?}"
            ));
        }
    }
    violations.extend(location_violations(store).await?);
    violations.extend(backorder_violations(store).await?);
    let undecided: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM stock_adjustments WHERE status = 'pending'")
            .fetch_one(store.pool())
            .await?
            .try_get("n")?;
    if undecided > 0 {
        violations.push(format!("{undecided} adjustments still pending"));
    }
    let undecided: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM fulfilments WHERE status = 'pending'")
            .fetch_one(store.pool())
            .await?
            .try_get("n")?;
    if undecided > 0 {
        violations.push(format!("{undecided} shipments or returns still pending"));
    }
    // The running totals the workers keep equal the aggregates over the
    // orders they stand for (rows of zeros count as absent).
    for (what, kept, computed) in [
        (
            "order_totals",
            "SELECT status AS k, orders AS a, amount_cents AS b FROM order_totals \
             WHERE orders <> 0 OR amount_cents <> 0".to_string(),
            "SELECT status AS k, COUNT(*) AS a, SUM(total_cents) AS b FROM orders GROUP BY status"
                .to_string(),
        ),
        (
            "daily_sales",
            "SELECT CAST(day_start AS TEXT) AS k, amount_cents AS a, 0 AS b FROM daily_sales \
             WHERE amount_cents <> 0".to_string(),
            format!(
                "SELECT CAST(o.placed_at - (o.placed_at % 86400000) AS TEXT) AS k, \
                 SUM(({SOLD_UNITS}) * oi.unit_price_cents) AS a, 0 AS b FROM order_items oi \
                 JOIN orders o ON o.id = oi.order_id GROUP BY o.placed_at - (o.placed_at % 86400000) \
                 HAVING SUM(({SOLD_UNITS}) * oi.unit_price_cents) <> 0"
            ),
        ),
        (
            "product_sales",
            "SELECT product_id AS k, units AS a, revenue_cents AS b FROM product_sales \
             WHERE units <> 0 OR revenue_cents <> 0".to_string(),
            format!(
                "SELECT oi.product_id AS k, SUM({SOLD_UNITS}) AS a, \
                 SUM(({SOLD_UNITS}) * oi.unit_price_cents) AS b FROM order_items oi \
                 JOIN orders o ON o.id = oi.order_id GROUP BY oi.product_id \
                 HAVING SUM({SOLD_UNITS}) <> 0 OR SUM(({SOLD_UNITS}) * oi.unit_price_cents) <> 0"
            ),
        ),
    ] {
        let kept = keyed_pairs(store, &kept).await?;
        let computed = keyed_pairs(store, &computed).await?;
        if kept != computed {
            violations.push(format!(
                "running totals in {what} {kept:?} != aggregates over the orders {computed:?}"
            ));
        }
    }
    Ok(violations)
}

/// Rows of (k TEXT, a, b) as a sorted map, the numbers read as i64.
async fn keyed_pairs(
    store: &Store,
    sql: &str,
) -> Result<std::collections::BTreeMap<String, (i64, i64)>, sqlx::Error> {
    let wrapped =
        format!("SELECT k, CAST(a AS BIGINT) AS a, CAST(b AS BIGINT) AS b FROM ({sql}) t");
    let mut out = std::collections::BTreeMap::new();
    for row in sqlx::query(&wrapped).fetch_all(store.pool()).await? {
        out.insert(row.try_get("k")?, (row.try_get("a")?, row.try_get("b")?));
    }
    Ok(out)
}

/// Backorders: per product, the units waiting are the backordered orders'
/// waiting lines, within the product's limit, and no stock is available at
/// an active location while they wait (it would have filled them).
async fn backorder_violations(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT i.product_id, i.backordered, i.backorder_limit, \
         CAST(COALESCE(w.waiting, 0) AS BIGINT) AS waiting, \
         CAST(COALESCE(s.available, 0) AS BIGINT) AS available FROM inventory i LEFT JOIN \
         (SELECT oi.product_id, SUM(oi.backordered) AS waiting FROM order_items oi \
          JOIN orders o ON o.id = oi.order_id WHERE o.status = 'BACKORDERED' GROUP BY oi.product_id) w \
         ON w.product_id = i.product_id LEFT JOIN \
         (SELECT s.product_id, SUM(s.on_hand - s.reserved) AS available FROM inventory_locations s \
          JOIN locations l ON l.id = s.location_id WHERE l.active <> 0 GROUP BY s.product_id) s \
         ON s.product_id = i.product_id",
    )
    .fetch_all(store.pool())
    .await?;
    let mut violations = Vec::new();
    for row in rows {
        let id: String = row.try_get("product_id")?;
        let (backordered, limit, waiting, available): (i64, i64, i64, i64) = (
            row.try_get("backordered")?,
            row.try_get("backorder_limit")?,
            row.try_get("waiting")?,
            row.try_get("available")?,
        );
        if backordered != waiting {
            violations.push(format!(
                "{id}: backordered {backordered} != waiting lines {waiting}"
            ));
        }
        if !(0 <= backordered && backordered <= limit) {
            violations.push(format!(
                "{id}: backordered {backordered} outside 0..={limit}"
            ));
        }
        if backordered > 0 && available > 0 {
            violations.push(format!(
                "{id}: {available} available while {backordered} wait"
            ));
        }
    }
    Ok(violations)
}

/// Stock in several locations: each (product, location) within bounds and
/// reserved by exactly its open orders' unshipped allocations there; each
/// product's totals the sums of its locations; each decided order's
/// allocations covering its lines, product by product.
async fn location_violations(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    let mut violations = Vec::new();
    let rows = sqlx::query(&format!(
        "SELECT s.product_id, s.location_id, s.on_hand, s.reserved, s.in_transit, \
         CAST(COALESCE(h.held, 0) AS BIGINT) AS held, \
         CAST(COALESCE(t.carried, 0) AS BIGINT) AS carried FROM inventory_locations s LEFT JOIN \
         (SELECT l.product_id, t.to_location, SUM(l.quantity) AS carried FROM transfer_lines l \
          JOIN transfers t ON t.id = l.transfer_id WHERE t.status = 'shipped' \
          GROUP BY l.product_id, t.to_location) t \
         ON t.product_id = s.product_id AND t.to_location = s.location_id LEFT JOIN \
         (SELECT a.product_id, a.location_id, SUM(a.quantity - a.shipped) AS held \
          FROM order_allocations a JOIN orders o ON o.id = a.order_id WHERE o.status IN {OPEN} \
          GROUP BY a.product_id, a.location_id) h \
         ON h.product_id = s.product_id AND h.location_id = s.location_id"
    ))
    .fetch_all(store.pool())
    .await?;
    for row in rows {
        let at = format!(
            "{} at {}",
            row.try_get::<String, _>("product_id")?,
            row.try_get::<String, _>("location_id")?
        );
        let (on_hand, reserved, in_transit, held): (i64, i64, i64, i64) = (
            row.try_get("on_hand")?,
            row.try_get("reserved")?,
            row.try_get("in_transit")?,
            row.try_get("held")?,
        );
        if !(0 <= reserved && reserved <= on_hand) || in_transit < 0 {
            violations.push(format!(
                "{at}: reserved {reserved} outside 0..={on_hand} (in transit {in_transit})"
            ));
        }
        if reserved != held {
            violations.push(format!(
                "{at}: reserved {reserved} != open orders' unshipped allocations {held}"
            ));
        }
        let carried: i64 = row.try_get("carried")?;
        if in_transit != carried {
            violations.push(format!(
                "{at}: in transit {in_transit} != shipped transfers' units {carried}"
            ));
        }
    }
    let unsummed: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM inventory i LEFT JOIN \
         (SELECT product_id, SUM(on_hand) AS on_hand, SUM(reserved) AS reserved, \
          SUM(in_transit) AS in_transit FROM inventory_locations GROUP BY product_id) s \
         ON s.product_id = i.product_id \
         WHERE COALESCE(s.on_hand, 0) <> i.on_hand OR COALESCE(s.reserved, 0) <> i.reserved \
         OR COALESCE(s.in_transit, 0) <> i.in_transit",
    )
    .fetch_one(store.pool())
    .await?
    .try_get("n")?;
    if unsummed > 0 {
        violations.push(format!(
            "{unsummed} products whose totals are not their locations' sums"
        ));
    }
    let uncovered: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM \
         (SELECT oi.order_id, oi.product_id, SUM(oi.quantity - oi.backordered) AS q, SUM(oi.shipped) AS s \
          FROM order_items oi JOIN orders o ON o.id = oi.order_id \
          WHERE o.status NOT IN ('PENDING', 'REJECTED') GROUP BY oi.order_id, oi.product_id) l \
         LEFT JOIN (SELECT order_id, product_id, SUM(quantity) AS q, SUM(shipped) AS s \
          FROM order_allocations GROUP BY order_id, product_id) a \
         ON a.order_id = l.order_id AND a.product_id = l.product_id \
         WHERE (a.q IS NULL AND l.q <> 0) OR a.q <> l.q OR a.s <> l.s",
    )
    .fetch_one(store.pool())
    .await?
    .try_get("n")?;
    if uncovered > 0 {
        violations.push(format!(
            "{uncovered} (order, product) whose allocations do not cover the lines"
        ));
    }
    Ok(violations)
}
