//! Shipments and returns of an order's lines. The gateway checks what it
//! can against the read model (the order's status, its products, each
//! quantity) and appends the request; a worker allocates it to the order's
//! lines or records why not (more than a line has unshipped, or shipped
//! and not returned), and the client reads or long-polls the outcome at
//! the `Location` it was given.

use super::error::ApiError;
use super::extract::ApiQuery;
use super::long_poll::until_decided;
use super::responses::{Accepted, ErrorBody, FulfilmentPending, FulfilmentQueued, Queued};
use super::write_ids::{recently_issued, WriteIds};
use super::{ApiJson, ApiPath, AppState};
use crate::domain::catalog::{parse_note, Quantity};
use crate::domain::events::{
    OrderReturnRequested, OrderShipmentRequested, ProductQuantity, ReturnLine,
};
use crate::domain::inventory::OrderCommand;
use crate::domain::status::{AdjustmentStatus, FulfilmentKind, OrderStatus, ReturnDisposition};
use crate::domain::{DomainEvent, LocationId, OrderId, ProductId, ReturnId, ShipmentId};
use crate::store::fulfilments::FulfilmentView;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

/// Most lines one shipment or return may have (an order has at most 100).
const MAX_LINES: usize = 100;

/// `POST /api/orders/{id}/shipments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipLines {
    /// 1 to 100 lines; a product listed twice ships the sum.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<ShipLine>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipLine {
    /// A product of the order.
    pub product_id: ProductId,
    #[schema(minimum = 1, maximum = 1_000_000, example = 2)]
    pub quantity: i64,
    /// Ship from this location only (one the order's product is allocated
    /// at); default: the allocations in the order they were made.
    #[serde(default)]
    pub location_id: Option<LocationId>,
}

/// `POST /api/orders/{id}/returns`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnLines {
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<ReturnLineRequest>,
    /// Why the customer sent the units back.
    #[schema(min_length = 1, max_length = 1000, example = "wrong size")]
    pub reason: String,
    /// Where restocked units go back on the shelf; default: the default
    /// location.
    #[serde(default)]
    pub location_id: Option<LocationId>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnLineRequest {
    /// A product of the order.
    pub product_id: ProductId,
    #[schema(minimum = 1, maximum = 1_000_000, example = 1)]
    pub quantity: i64,
    /// `restock`: back on the shelf (on-hand rises); `damaged`: recorded,
    /// not sellable.
    pub disposition: ReturnDisposition,
}

#[derive(Debug, Deserialize)]
pub struct OneFulfilmentQuery {
    /// Long-poll: wait up to this many seconds for the decision.
    pub wait: Option<u64>,
}

/// Asks to ship some of an order's units.
#[utoipa::path(post, path = "/api/orders/{id}/shipments", operation_id = "ship_order_lines", tag = "orders",
    request_body = ShipLines,
    params(("id" = OrderId, Path, description = "The order's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "In the log; a worker ships the units or records why not (more than a line has unshipped)", body = FulfilmentQueued,
            headers(("Location" = String, description = "The shipment's URL: read or long-poll its outcome"))),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order is not CONFIRMED or PARTIALLY_SHIPPED", body = ErrorBody),
        (status = 422, description = "No lines or more than 100, a quantity outside 1 to 1,000,000, a product not in the order", body = ErrorBody)))]
#[tracing::instrument(name = "fulfilments::ship", level = "debug", skip_all)]
pub async fn ship(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(order_id): ApiPath<OrderId>,
    ApiJson(body): ApiJson<ShipLines>,
) -> Result<Accepted<FulfilmentQueued>, ApiError> {
    let asked: Vec<(ProductId, i64)> = body
        .lines
        .iter()
        .map(|l| (l.product_id, l.quantity))
        .collect();
    check_lines(&asked)?;
    for (i, line) in body.lines.iter().enumerate() {
        super::locations::require_location(
            &state,
            &format!("lines[{i}].location_id"),
            line.location_id,
        )
        .await?;
    }
    check_order(&state, order_id, &asked, |status| {
        OrderCommand::Ship.refusal(status)
    })
    .await?;
    let shipment_id = ShipmentId(ids.id("shipment"));
    let event = DomainEvent::OrderShipmentRequested(OrderShipmentRequested {
        order_id,
        shipment_id,
        lines: body
            .lines
            .iter()
            .map(|line| ProductQuantity {
                product_id: line.product_id,
                quantity: line.quantity,
                location_id: line.location_id,
            })
            .collect(),
    });
    request(
        &state,
        &ids,
        order_id,
        event,
        shipment_id.as_uuid(),
        FulfilmentKind::Shipment,
    )
    .await
}

/// Asks to take back some of an order's shipped units.
#[utoipa::path(post, path = "/api/orders/{id}/returns", operation_id = "return_order_lines", tag = "orders",
    request_body = ReturnLines,
    params(("id" = OrderId, Path, description = "The order's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "In the log; a worker takes the units back or records why not (more than was shipped and not returned)", body = FulfilmentQueued,
            headers(("Location" = String, description = "The return's URL: read or long-poll its outcome"))),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order has shipped nothing (not PARTIALLY_SHIPPED, SHIPPED or CANCELLED)", body = ErrorBody),
        (status = 422, description = "No lines or more than 100, a quantity outside 1 to 1,000,000, a product not in the order, an unknown disposition, an empty or too long reason", body = ErrorBody)))]
#[tracing::instrument(name = "fulfilments::take_back", level = "debug", skip_all)]
pub async fn take_back(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(order_id): ApiPath<OrderId>,
    ApiJson(body): ApiJson<ReturnLines>,
) -> Result<Accepted<FulfilmentQueued>, ApiError> {
    let asked: Vec<(ProductId, i64)> = body
        .lines
        .iter()
        .map(|l| (l.product_id, l.quantity))
        .collect();
    check_lines(&asked)?;
    let reason = parse_note(&body.reason)
        .map_err(|e| ApiError::invalid("reason", e))?
        .ok_or_else(|| ApiError::invalid("reason", "must not be empty"))?;
    super::locations::require_location(&state, "location_id", body.location_id).await?;
    check_order(&state, order_id, &asked, |status| {
        (!OrderStatus::RETURNABLE.contains(&status)).then_some("it has shipped nothing")
    })
    .await?;
    let return_id = ReturnId(ids.id("return"));
    let event = DomainEvent::OrderReturnRequested(OrderReturnRequested {
        order_id,
        return_id,
        lines: body
            .lines
            .iter()
            .map(|l| ReturnLine {
                product_id: l.product_id,
                quantity: l.quantity,
                disposition: l.disposition,
            })
            .collect(),
        reason,
        location_id: body.location_id,
    });
    request(
        &state,
        &ids,
        order_id,
        event,
        return_id.as_uuid(),
        FulfilmentKind::Return,
    )
    .await
}

/// One shipment. A refused one answers 409 Conflict with the reason. With
/// `?wait=N` the answer waits up to N seconds for the decision.
#[utoipa::path(get, path = "/api/orders/{id}/shipments/{shipment_id}", operation_id = "get_shipment", tag = "orders",
    params(("id" = OrderId, Path, description = "The order's id"),
        ("shipment_id" = ShipmentId, Path, description = "The shipment's id"),
        ("wait" = Option<u64>, Query, description = "Seconds (up to 30) to wait for the decision")),
    responses((status = 200, description = "Pending or shipped (`status: applied`, with the units per order line)", body = FulfilmentView),
        (status = 202, description = "Not processed yet; the id may still be in the log", body = FulfilmentPending),
        (status = 404, description = "No such shipment", body = ErrorBody),
        (status = 409, description = "Refused: `message` says why", body = FulfilmentView)))]
#[tracing::instrument(name = "fulfilments::shipment", level = "debug", skip_all)]
pub async fn shipment(
    State(state): State<AppState>,
    ApiPath((order_id, id)): ApiPath<(OrderId, ShipmentId)>,
    ApiQuery(query): ApiQuery<OneFulfilmentQuery>,
) -> Result<Response, ApiError> {
    outcome(
        &state,
        order_id,
        id.as_uuid(),
        FulfilmentKind::Shipment,
        query.wait,
    )
    .await
}

/// One return. A refused one answers 409 Conflict with the reason. With
/// `?wait=N` the answer waits up to N seconds for the decision.
#[utoipa::path(get, path = "/api/orders/{id}/returns/{return_id}", operation_id = "get_return", tag = "orders",
    params(("id" = OrderId, Path, description = "The order's id"),
        ("return_id" = ReturnId, Path, description = "The return's id"),
        ("wait" = Option<u64>, Query, description = "Seconds (up to 30) to wait for the decision")),
    responses((status = 200, description = "Pending or taken back (`status: applied`, with the units per order line and the refund)", body = FulfilmentView),
        (status = 202, description = "Not processed yet; the id may still be in the log", body = FulfilmentPending),
        (status = 404, description = "No such return", body = ErrorBody),
        (status = 409, description = "Refused: `message` says why", body = FulfilmentView)))]
#[tracing::instrument(name = "fulfilments::one_return", level = "debug", skip_all)]
pub async fn one_return(
    State(state): State<AppState>,
    ApiPath((order_id, id)): ApiPath<(OrderId, ReturnId)>,
    ApiQuery(query): ApiQuery<OneFulfilmentQuery>,
) -> Result<Response, ApiError> {
    outcome(
        &state,
        order_id,
        id.as_uuid(),
        FulfilmentKind::Return,
        query.wait,
    )
    .await
}

/// The lines' count and quantities, each named by its place.
fn check_lines(asked: &[(ProductId, i64)]) -> Result<(), ApiError> {
    if asked.is_empty() {
        return Err(ApiError::invalid("lines", "at least one line is needed"));
    }
    if asked.len() > MAX_LINES {
        return Err(ApiError::invalid(
            "lines",
            format!("at most {MAX_LINES} lines"),
        ));
    }
    for (i, &(_, quantity)) in asked.iter().enumerate() {
        Quantity::parse(quantity)
            .map_err(|e| ApiError::invalid(&format!("lines[{i}].quantity"), e))?;
    }
    Ok(())
}

/// The order as the read model has it: 404 if unknown (unless this
/// gateway issued its id lately: the worker decides then), 409 if its
/// status refuses (`refusal` says why), 422 for a product not in it.
async fn check_order(
    state: &AppState,
    order_id: OrderId,
    asked: &[(ProductId, i64)],
    refusal: impl Fn(OrderStatus) -> Option<&'static str>,
) -> Result<(), ApiError> {
    let Some(order) = state.store.get_order(order_id).await? else {
        if recently_issued(order_id.as_uuid()) {
            return Ok(());
        }
        return Err(ApiError::not_found(format!("order {order_id} not found")));
    };
    if let Some(why) = refusal(order.status) {
        return Err(ApiError::conflict(format!(
            "order {order_id} is {}: {why}",
            order.status
        )));
    }
    let items = order.items.unwrap_or_default();
    for (i, (product_id, _)) in asked.iter().enumerate() {
        if !items.iter().any(|item| item.product_id == *product_id) {
            return Err(ApiError::invalid(
                &format!("lines[{i}].product_id"),
                format!("product {product_id} is not in order {order_id}"),
            ));
        }
    }
    Ok(())
}

/// Appends a shipment's or return's request (its event id derived, as its
/// `id` is, from the Idempotency-Key) and answers 202 with its Location.
async fn request(
    state: &AppState,
    ids: &WriteIds,
    order_id: OrderId,
    event: DomainEvent,
    id: Uuid,
    kind: FulfilmentKind,
) -> Result<Accepted<FulfilmentQueued>, ApiError> {
    let event_id = ids.id(event.event_type());
    let envelope = event
        .into_envelope_with_id(event_id, Utc::now())
        .sent_by(ids.actor());
    let receipt = state.append(&envelope).await?;
    let path = match kind {
        FulfilmentKind::Shipment => "shipments",
        FulfilmentKind::Return => "returns",
    };
    Ok(Accepted {
        body: FulfilmentQueued {
            id,
            order_id,
            kind,
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
        },
        location: Some(format!("/api/orders/{order_id}/{path}/{id}")),
    })
}

/// A shipment's or return's outcome: 200 pending or applied, 409 refused,
/// 202 not applied yet (an id issued lately), else 404.
async fn outcome(
    state: &AppState,
    order_id: OrderId,
    id: Uuid,
    kind: FulfilmentKind,
    wait: Option<u64>,
) -> Result<Response, ApiError> {
    let queued = recently_issued(id);
    let found = until_decided(
        state,
        wait,
        queued,
        || async { Ok(state.store.get_fulfilment(id).await?) },
        |f| f.status != AdjustmentStatus::Pending,
    )
    .await?
    .filter(|f| f.order_id == order_id && f.kind == kind);
    match found {
        Some(f) if f.status == AdjustmentStatus::Refused => {
            Ok((StatusCode::CONFLICT, Json(f)).into_response())
        }
        Some(f) => Ok(Json(f).into_response()),
        None if queued => Ok((
            StatusCode::ACCEPTED,
            Json(FulfilmentPending {
                id,
                order_id,
                kind,
                status: Queued::Queued,
            }),
        )
            .into_response()),
        None => Err(ApiError::not_found(format!(
            "{kind} {id} of order {order_id} not found"
        ))),
    }
}
