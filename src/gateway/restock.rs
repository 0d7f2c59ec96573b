//! The restock cycle's routes: purchase orders drafted by the workers when
//! stock runs low, and their receipt (by an operator, or the simulator
//! acting as the supplier).

use super::error::ApiError;
use super::responses::{Accepted, Queued, ReceiptQueued};
use super::{ApiPath, ApiQuery, AppState, Paging, StatusFilter};
use crate::domain::events::PurchaseOrderReceived;
use crate::domain::inventory::PurchaseOrderStatus;
use crate::domain::{DomainEvent, PurchaseOrderId};
use crate::store::analytics::PurchaseOrderView;
use axum::extract::State;
use axum::Json;
use chrono::Utc;

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

/// Records the delivery of an open purchase order (202). The worker closes
/// it and receives its stock, or refuses a repeated receipt with a reason.
pub async fn receive(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<PurchaseOrderId>,
) -> Result<Accepted<ReceiptQueued>, ApiError> {
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
    });
    let receipt = state.append(&event.into_envelope(Utc::now())).await?;
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
