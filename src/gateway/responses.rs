//! The bodies the gateway answers with, each a struct that derives
//! `Serialize` (and `Deserialize`, for clients written in Rust), and the status codes that go with them. A write is answered
//! once its event is durable in the log: 202 (or 201 for a new product)
//! with `status: "QUEUED"` and the log entry's id.

use crate::domain::order_command::OrderCommand;
use crate::domain::status::{AdjustmentReason, FulfilmentKind};
use crate::domain::{AdjustmentId, Money, OrderId, ProductId, PurchaseOrderId};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What every accepted write says of itself: in the log, not yet applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Queued {
    #[serde(rename = "QUEUED")]
    Queued,
}

/// 202 Accepted, with the place to watch the outcome when there is one.
pub struct Accepted<T> {
    pub body: T,
    pub location: Option<String>,
}

impl<T: Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        match self.location {
            Some(location) => (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(self.body),
            )
                .into_response(),
            None => (StatusCode::ACCEPTED, Json(self.body)).into_response(),
        }
    }
}

/// 201 Created once what was created is readable; 202 Accepted, with the
/// same body and place, while a worker has yet to apply it.
pub struct Stored<T> {
    pub body: T,
    pub location: String,
    pub readable: bool,
}

impl<T: Serialize> IntoResponse for Stored<T> {
    fn into_response(self) -> Response {
        let status = if self.readable {
            StatusCode::CREATED
        } else {
            StatusCode::ACCEPTED
        };
        (status, [(header::LOCATION, self.location)], Json(self.body)).into_response()
    }
}

/// A resource (200), or (202) what is known of one still in the log: an
/// id the gateway returned is never answered 404.
pub enum FoundOrQueued<T, Q> {
    Found(T),
    Queued(Q),
}

impl<T: Serialize, Q: Serialize> IntoResponse for FoundOrQueued<T, Q> {
    fn into_response(self) -> Response {
        match self {
            FoundOrQueued::Found(found) => Json(found).into_response(),
            FoundOrQueued::Queued(queued) => (StatusCode::ACCEPTED, Json(queued)).into_response(),
        }
    }
}

/// `GET /api/products/{id}` of a product created but not yet applied:
/// 202, and what is known of it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductPending {
    pub id: ProductId,
    pub sku: String,
    pub status: Queued,
}

/// `GET /api/orders/{id}` of an order not yet applied whose id this
/// gateway may have issued lately: 202.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderPending {
    pub order_id: OrderId,
    pub status: Queued,
}

/// `POST /api/orders`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderQueued {
    pub order_id: OrderId,
    pub status: Queued,
    pub msg_id: String,
    pub total: Money,
    /// Placed with `hold_ttl_s`: the moment the hold runs out unless the
    /// order is committed (`POST /api/orders/{id}/commit`) first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST /api/orders/{id}/cancel`, `/ship` and `/commit`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommandQueued {
    pub order_id: OrderId,
    pub command: OrderCommand,
    pub status: Queued,
    pub msg_id: String,
}

/// `POST /api/products`: the product as it will be once applied.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductQueued {
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
    /// The initial stock, received right after the creation.
    pub incoming_stock: i64,
    pub status: Queued,
    pub msg_id: String,
}

/// `POST /api/products/{id}/stock`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockQueued {
    pub product_id: ProductId,
    pub quantity: i64,
    pub status: Queued,
    pub msg_id: String,
}

/// `POST /api/products/{id}/adjustments`: in the log, not yet decided.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdjustmentQueued {
    pub adjustment_id: AdjustmentId,
    pub product_id: ProductId,
    pub delta: i64,
    pub reason: AdjustmentReason,
    pub status: Queued,
    pub msg_id: String,
}

/// `GET .../adjustments/{adjustment_id}` of one not yet applied whose id
/// this gateway issued lately: 202.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdjustmentPending {
    pub adjustment_id: AdjustmentId,
    pub product_id: ProductId,
    pub status: Queued,
}

/// `POST /api/orders/{id}/shipments` and `/returns`: in the log, not yet
/// decided.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FulfilmentQueued {
    /// The shipment's or return's id.
    pub id: uuid::Uuid,
    pub order_id: OrderId,
    pub kind: FulfilmentKind,
    pub status: Queued,
    pub msg_id: String,
}

/// `GET .../shipments/{id}` or `.../returns/{id}` of one not yet applied
/// whose id this gateway issued lately: 202.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FulfilmentPending {
    pub id: uuid::Uuid,
    pub order_id: OrderId,
    pub kind: FulfilmentKind,
    pub status: Queued,
}

/// `POST /api/products/{id}/counts`: in the log; a worker decides its delta.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CountQueued {
    pub adjustment_id: AdjustmentId,
    pub product_id: ProductId,
    pub counted: i64,
    pub counted_at: chrono::DateTime<chrono::Utc>,
    pub status: Queued,
    pub msg_id: String,
}

/// `POST /api/purchase-orders/{id}/receive`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptQueued {
    pub purchase_order_id: PurchaseOrderId,
    pub product_id: ProductId,
    pub quantity: i64,
    pub status: Queued,
    pub msg_id: String,
}

/// Every error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_field`, `not_found`, `conflict`,
    /// `unauthorized`, `overloaded`, `unavailable`, ...
    pub code: Cow<'static, str>,
    pub message: String,
}
