//! The restock cycle's routes: purchase orders drafted by the workers when
//! stock runs low, and their receipt (by an operator, or the simulator
//! acting as the supplier).

use super::error::ApiError;
use super::responses::ErrorBody;
use super::responses::{Accepted, Queued, ReceiptQueued};
use super::write_ids::WriteIds;
use super::{ApiPath, ApiQuery, AppState, Paging, StatusFilter};
use crate::domain::events::PurchaseOrderReceived;
use crate::domain::inventory::PurchaseOrderStatus;
use crate::domain::{DomainEvent, LocationId, PurchaseOrderId};
use crate::store::analytics::PurchaseOrderView;
use axum::extract::State;
use axum::Json;
use chrono::Utc;

#[utoipa::path(get, path = "/api/purchase-orders", operation_id = "list_purchase_orders", tag = "restock",
    params(("status" = Option<PurchaseOrderStatus>, Query, description = "Only purchase orders in this status (any case)"), ("limit" = Option<i64>, Query, description = "Items per page, 1 to 1000 (default 100)"), ("after" = Option<uuid::Uuid>, Query, description = "The id of the last item of the previous page")),
    responses((status = 200, description = "Purchase orders by id", body = Vec<PurchaseOrderView>),
        (status = 422, description = "A bad filter, limit or cursor", body = ErrorBody)))]
#[tracing::instrument(name = "restock::list", level = "debug", skip_all)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<StatusFilter>,
    paging: Paging<PurchaseOrderId>,
) -> Result<Json<Vec<PurchaseOrderView>>, ApiError> {
    let status = filter.parse::<PurchaseOrderStatus>()?;
    Ok(Json(
        state
            .store
            .list_purchase_orders(status, paging.limit, paging.after)
            .await?,
    ))
}

/// Where a delivery arrived, when not where its purchase order said.
#[derive(Debug, serde::Deserialize)]
pub struct ReceiveQuery {
    pub location_id: Option<LocationId>,
}

/// Records the delivery of an open purchase order (202). The worker closes
/// it and receives its stock (at `location_id`, or where the purchase
/// order said), or refuses a repeated receipt with a reason.
#[utoipa::path(post, path = "/api/purchase-orders/{id}/receive", operation_id = "receive_purchase_order", tag = "restock",
    params(("id" = PurchaseOrderId, Path, description = "The purchase order's id"),
        ("location_id" = Option<LocationId>, Query, description = "Where it arrived (default: where the purchase order said)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "The delivery is in the log", body = ReceiptQueued),
        (status = 404, description = "No such purchase order", body = ErrorBody),
        (status = 409, description = "Already received", body = ErrorBody),
        (status = 422, description = "An unknown location_id", body = ErrorBody)))]
#[tracing::instrument(name = "restock::receive", level = "debug", skip_all)]
pub async fn receive(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(id): ApiPath<PurchaseOrderId>,
    ApiQuery(query): ApiQuery<ReceiveQuery>,
) -> Result<Accepted<ReceiptQueued>, ApiError> {
    super::locations::require_location(&state, "location_id", query.location_id).await?;
    let po = state
        .store
        .get_purchase_order(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("purchase order {id} not found")))?;
    if po.status != PurchaseOrderStatus::Open {
        return Err(ApiError::conflict(format!(
            "purchase order {id} was already received"
        )));
    }
    let event = DomainEvent::PurchaseOrderReceived(PurchaseOrderReceived {
        purchase_order_id: id,
        product_id: po.product_id,
        location_id: query.location_id,
    });
    let envelope = event
        .into_envelope_with_id(ids.id("purchase_order.received"), Utc::now())
        .sent_by(ids.actor());
    let receipt = state.append(&envelope).await?;
    Ok(Accepted {
        body: ReceiptQueued {
            purchase_order_id: id,
            product_id: po.product_id,
            quantity: po.quantity,
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
        },
        location: None,
    })
}
