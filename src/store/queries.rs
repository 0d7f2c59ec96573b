//! Reads for the API and the dashboard, and the few writes the gateway makes
//! directly (sku claims). Everything else is written by projections.

use super::{now_millis, time_of_millis, uuid_col, Store, StoreError};
use crate::domain::status::{AlertKind, OrderStatus, Severity};
use crate::domain::{Money, OrderId, ProductId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ProductView {
    pub id: ProductId,
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub category_name: String,
    pub low_stock_threshold: i64,
    pub reorder_quantity: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// How many units may be sold past zero and wait for stock (0: none).
    #[serde(default)]
    pub backorder_limit: i64,
    /// Units backordered orders wait for (filled first in, first out as
    /// stock arrives; see `GET /api/products/{id}/backorders`).
    #[serde(default)]
    pub backordered: i64,
    pub created_at: DateTime<Utc>,
    /// Set when the figures are as of this past moment (`?as_of=`), not now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// Its stock per location (one product, figures of now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Vec<super::locations::LocationStockView>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct OrderItemView {
    pub product_id: ProductId,
    pub quantity: i64,
    pub unit_price: Money,
    /// Units shipped so far.
    pub shipped: i64,
    /// Units returned (restocked or damaged); at most `shipped`.
    pub returned: i64,
    /// Units the order waits for (not reserved: out of stock when it was
    /// placed, sold past zero); 0 once filled.
    #[serde(default)]
    pub backordered: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: OrderId,
    pub customer_email: String,
    pub status: OrderStatus,
    pub total: Money,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// When the order last changed state (placed, decided, shipped or
    /// cancelled), in event time.
    pub updated_at: DateTime<Utc>,
    /// A checkout's hold: while HELD, the order expires at this moment
    /// unless committed first. Absent for an order placed without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<OrderItemView>>,
    /// Its shipments and returns, oldest first (the first 100; one order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fulfilments: Option<Vec<super::fulfilments::FulfilmentView>>,
    /// Where its units are reserved (one order): per product and location,
    /// in the order the worker allocated them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocations: Option<Vec<super::locations::AllocationView>>,
}

/// Figures the read model knows; the gateway adds the log's backlog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Figures {
    pub total_sales: Money,
    pub today_sales: Money,
    pub order_count: i64,
    pub orders_by_status: BTreeMap<OrderStatus, i64>,
    pub orders_last_minute: i64,
    pub products: i64,
    pub low_stock_products: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AlertView {
    pub id: Uuid,
    pub kind: AlertKind,
    pub severity: Severity,
    pub subject: String,
    pub message: String,
    pub raised_at: DateTime<Utc>,
}

impl Figures {
    /// How many orders are in `status` (0 when none are).
    pub fn orders_in(&self, status: OrderStatus) -> i64 {
        self.orders_by_status.get(&status).copied().unwrap_or(0)
    }
}

pub(super) const PRODUCT_COLUMNS: &str = "p.id, p.sku, p.name, p.price_cents, p.category_name, p.low_stock_threshold, \
     p.reorder_quantity, p.created_at, COALESCE(i.on_hand, 0) AS on_hand, COALESCE(i.reserved, 0) AS reserved, \
     COALESCE(i.backorder_limit, 0) AS backorder_limit, COALESCE(i.backordered, 0) AS backordered \
     FROM products p LEFT JOIN inventory i ON i.product_id = p.id";

pub(super) fn product_from_row(row: &AnyRow) -> Result<ProductView, StoreError> {
    let on_hand: i64 = row.try_get("on_hand")?;
    let reserved: i64 = row.try_get("reserved")?;
    Ok(ProductView {
        id: uuid_col(row, "id")?,
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        price: Money::from_total_cents(row.try_get("price_cents")?),
        category_name: row.try_get("category_name")?,
        low_stock_threshold: row.try_get("low_stock_threshold")?,
        reorder_quantity: row.try_get("reorder_quantity")?,
        on_hand,
        reserved,
        available: on_hand - reserved,
        backorder_limit: row.try_get("backorder_limit")?,
        backordered: row.try_get("backordered")?,
        created_at: time_of_millis(row.try_get("created_at")?),
        as_of: None,
        locations: None,
    })
}

/// Reads name their columns, never `SELECT *`: a SQLite connection that read
/// the schema before a migration ran on another connection prepares `*` with
/// the old column count, and the statement's rows then no longer fit it.
const ORDER_FIELDS: &str =
    "id, customer_email, status, total_cents, reason, placed_at, decided_at, updated_at, hold_until";

fn order_from_row(row: &AnyRow) -> Result<OrderView, StoreError> {
    let decided: Option<i64> = row.try_get("decided_at")?;
    let hold_until: Option<i64> = row.try_get("hold_until")?;
    Ok(OrderView {
        order_id: uuid_col(row, "id")?,
        customer_email: row.try_get("customer_email")?,
        status: super::named_col(row, "status")?,
        total: Money::from_total_cents(row.try_get("total_cents")?),
        reason: row.try_get("reason")?,
        created_at: time_of_millis(row.try_get("placed_at")?),
        decided_at: decided.map(time_of_millis),
        updated_at: time_of_millis(row.try_get("updated_at")?),
        hold_until: hold_until.map(time_of_millis),
        items: None,
        fulfilments: None,
        allocations: None,
    })
}

impl Store {
    /// Claims `sku` for `product_id`. False when another product has it.
    pub async fn claim_sku(&self, sku: &str, product_id: ProductId) -> Result<bool, StoreError> {
        let inserted = sqlx::query("INSERT INTO sku_claims (sku, product_id, claimed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(sku)
            .bind(product_id.to_string())
            .bind(now_millis())
            .execute(self.pool())
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        // Claimed already by this very product: a retry of its creation.
        let holder: Option<String> =
            sqlx::query_scalar("SELECT product_id FROM sku_claims WHERE sku = $1")
                .bind(sku)
                .fetch_optional(self.pool())
                .await?;
        Ok(holder.as_deref() == Some(product_id.to_string().as_str()))
    }

    /// The sku of a product this deployment's gateways issued (its
    /// creation is in the log), whether or not a worker has applied it yet.
    pub async fn claimed_sku(&self, product_id: ProductId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT sku FROM sku_claims WHERE product_id = $1")
            .bind(product_id.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("sku")).transpose()?)
    }

    /// Gives a claim back when the product.created append failed.
    pub async fn release_sku(&self, sku: &str, product_id: ProductId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sku_claims WHERE sku = $1 AND product_id = $2")
            .bind(sku)
            .bind(product_id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn list_products(
        &self,
        limit: i64,
        after: Option<ProductId>,
    ) -> Result<Vec<ProductView>, StoreError> {
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {PRODUCT_COLUMNS} WHERE p.id > $1 ORDER BY p.id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(product_from_row).collect()
    }

    pub async fn get_product(&self, id: ProductId) -> Result<Option<ProductView>, StoreError> {
        let row = sqlx::query(&format!("SELECT {PRODUCT_COLUMNS} WHERE p.id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(product_from_row).transpose()
    }

    /// The products among `ids` that exist, in one query (an order's lines).
    pub async fn get_products(
        &self,
        ids: &[ProductId],
    ) -> Result<std::collections::HashMap<ProductId, ProductView>, StoreError> {
        let select = format!("SELECT {PRODUCT_COLUMNS} WHERE p.id IN ({{ids}})");
        let mut products = std::collections::HashMap::new();
        for (sql, values) in super::sql::by_ids(self.dialect(), &select, ids) {
            for row in super::sql::bind_all(sqlx::query(&sql), values)
                .fetch_all(self.pool())
                .await?
            {
                let product = product_from_row(&row)?;
                products.insert(product.id, product);
            }
        }
        Ok(products)
    }

    pub async fn list_orders(
        &self,
        status: Option<OrderStatus>,
        limit: i64,
        after: Option<OrderId>,
    ) -> Result<Vec<OrderView>, StoreError> {
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let rows = match status {
            Some(status) => {
                sqlx::query(
                    &format!("SELECT {ORDER_FIELDS} FROM orders WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"),
                )
                .bind(status.as_str())
                .bind(after)
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ORDER_FIELDS} FROM orders WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter().map(order_from_row).collect()
    }

    pub async fn recent_orders(&self, limit: i64) -> Result<Vec<OrderView>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_FIELDS} FROM orders ORDER BY placed_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(order_from_row).collect()
    }

    pub async fn get_order(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        let Some(row) = sqlx::query(&format!("SELECT {ORDER_FIELDS} FROM orders WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let mut order = order_from_row(&row)?;
        let items = sqlx::query("SELECT product_id, quantity, unit_price_cents, shipped, returned, backordered FROM order_items WHERE order_id = $1 ORDER BY line_no")
            .bind(id.to_string())
            .fetch_all(self.pool())
            .await?;
        order.items = Some(
            items
                .iter()
                .map(|r| {
                    Ok(OrderItemView {
                        product_id: uuid_col(r, "product_id")?,
                        quantity: r.try_get("quantity")?,
                        unit_price: Money::from_total_cents(r.try_get("unit_price_cents")?),
                        shipped: r.try_get("shipped")?,
                        returned: r.try_get("returned")?,
                        backordered: r.try_get("backordered")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        );
        order.fulfilments = Some(self.order_fulfilments(id).await?);
        order.allocations = Some(self.allocations_of(id).await?);
        Ok(Some(order))
    }

    /// Newest alerts first.
    pub async fn recent_alerts(&self, limit: i64) -> Result<Vec<AlertView>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, severity, subject, message, raised_at FROM alerts ORDER BY raised_at DESC, id DESC LIMIT $1",
        )
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AlertView {
                    id: uuid_col(row, "id")?,
                    kind: super::named_col(row, "kind")?,
                    severity: super::named_col(row, "severity")?,
                    subject: row.try_get("subject")?,
                    message: row.try_get("message")?,
                    raised_at: time_of_millis(row.try_get("raised_at")?),
                })
            })
            .collect()
    }

    pub async fn figures(&self) -> Result<Figures, StoreError> {
        let now = now_millis();
        let start_of_day = now - now.rem_euclid(super::writes::DAY_MS);
        // Running totals the workers keep (`order_totals`, `daily_sales`,
        // the per-second windows): the dashboard asks each second, and
        // aggregates over every order grew with the history.
        let mut orders_by_status: BTreeMap<OrderStatus, i64> =
            OrderStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let (mut order_count, mut total) = (0, 0);
        for row in sqlx::query("SELECT status, orders, sold_cents FROM order_totals")
            .fetch_all(self.pool())
            .await?
        {
            let status: OrderStatus = super::named_col(&row, "status")?;
            let n: i64 = row.try_get("orders")?;
            order_count += n;
            orders_by_status.insert(status, n);
            total += row.try_get::<i64, _>("sold_cents")?;
        }
        let today: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) AS cents FROM daily_sales \
             WHERE day_start >= $1",
        )
        .bind(start_of_day)
        .fetch_one(self.pool())
        .await?
        .try_get("cents")?;
        let orders_last_minute: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) AS n FROM throughput \
             WHERE granularity = 's' AND event_type = $1 AND window_start >= $2",
        )
        .bind(crate::domain::events::EventType::OrderPlaced.name())
        .bind(now - 60_000)
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS products, \
             CAST(COALESCE(SUM(CASE WHEN COALESCE(i.on_hand, 0) - COALESCE(i.reserved, 0) < p.low_stock_threshold THEN 1 ELSE 0 END), 0) AS BIGINT) AS low \
             FROM products p LEFT JOIN inventory i ON i.product_id = p.id",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Figures {
            total_sales: Money::from_total_cents(total),
            today_sales: Money::from_total_cents(today),
            order_count,
            orders_by_status,
            orders_last_minute,
            products: row.try_get("products")?,
            low_stock_products: row.try_get("low")?,
        })
    }
}
