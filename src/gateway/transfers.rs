//! Transfers of stock between locations, in two phases: a request the
//! worker ships (or refuses: not enough available at the origin), then a
//! receipt at the destination saying what arrived. The gateway checks what
//! it can against the read model, appends, and answers 202 with the
//! transfer's `Location`, where the client reads or long-polls it.

use super::error::ApiError;
use super::extract::ApiQuery;
use super::locations::require_location;
use super::long_poll::until_decided;
use super::responses::{Accepted, ErrorBody, Queued};
use super::write_ids::{recently_issued, WriteIds};
use super::{ApiJson, ApiPath, AppState, Paging};
use crate::domain::catalog::{parse_note, Quantity};
use crate::domain::events::{
    ProductQuantity, ReceivedLine, TransferReceiveRequested, TransferRequested,
};
use crate::domain::status::TransferStatus;
use crate::domain::{DomainEvent, LocationId, ProductId, TransferId};
use crate::store::transfers::TransferView;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};

/// The most lines one transfer may have.
const MAX_LINES: usize = 100;

/// `POST /api/transfers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTransfer {
    /// The location the units leave.
    pub from: LocationId,
    /// The location they go to.
    pub to: LocationId,
    /// 1 to 100 lines, each product once.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<TransferLineRequest>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferLineRequest {
    pub product_id: ProductId,
    #[schema(minimum = 1, maximum = 1_000_000, example = 5)]
    pub quantity: i64,
}

/// `POST /api/transfers/{id}/receive`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveTransfer {
    /// What arrived of each product; a product left out arrived whole.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub lines: Vec<ReceivedLineRequest>,
    /// Why less arrived (kept with the transit-loss adjustment).
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub discrepancy_reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceivedLineRequest {
    pub product_id: ProductId,
    /// 0 to the quantity shipped.
    #[schema(minimum = 0, example = 4)]
    pub received: i64,
}

/// A transfer request or receipt in the log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferQueued {
    pub id: TransferId,
    pub status: Queued,
    pub msg_id: String,
}

#[derive(Debug, Deserialize)]
pub struct TransferListQuery {
    /// requested, shipped, received or refused.
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct OneTransferQuery {
    /// Long-poll: wait up to this many seconds for the decision.
    pub wait: Option<u64>,
}

/// Asks to move stock between two locations.
#[utoipa::path(post, path = "/api/transfers", operation_id = "request_transfer", tag = "locations",
    request_body = RequestTransfer,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "In the log; a worker ships it (the origin's on-hand drops, the units are in transit) or refuses it with the reason", body = TransferQueued,
            headers(("Location" = String, description = "The transfer's URL: read or long-poll its outcome"))),
        (status = 422, description = "An unknown or equal from/to, no lines or more than 100, a quantity outside 1 to 1,000,000, an unknown product or one listed twice", body = ErrorBody)))]
#[tracing::instrument(name = "transfers::request", level = "debug", skip_all)]
pub async fn request(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiJson(body): ApiJson<RequestTransfer>,
) -> Result<Accepted<TransferQueued>, ApiError> {
    if body.lines.is_empty() || body.lines.len() > MAX_LINES {
        return Err(ApiError::invalid(
            "lines",
            format!("must have 1 to {MAX_LINES} lines"),
        ));
    }
    for (i, line) in body.lines.iter().enumerate() {
        Quantity::parse(line.quantity)
            .map_err(|e| ApiError::invalid(&format!("lines[{i}].quantity"), e))?;
        if body.lines[..i]
            .iter()
            .any(|l| l.product_id == line.product_id)
        {
            return Err(ApiError::invalid(
                &format!("lines[{i}].product_id"),
                "is listed twice",
            ));
        }
    }
    if body.from == body.to {
        return Err(ApiError::invalid(
            "to",
            "must be another location than from",
        ));
    }
    require_location(&state, "from", Some(body.from)).await?;
    require_location(&state, "to", Some(body.to)).await?;
    for (i, line) in body.lines.iter().enumerate() {
        if !super::products::product_exists(&state, line.product_id).await? {
            return Err(ApiError::invalid(
                &format!("lines[{i}].product_id"),
                format!("no product {}", line.product_id),
            ));
        }
    }
    let transfer_id = TransferId(ids.id("transfer"));
    let event = DomainEvent::TransferRequested(TransferRequested {
        transfer_id,
        from: body.from,
        to: body.to,
        lines: body
            .lines
            .iter()
            .map(|l| ProductQuantity {
                product_id: l.product_id,
                quantity: l.quantity,
                location_id: None,
            })
            .collect(),
    })
    .into_envelope_with_id(ids.id("transfer.requested"), Utc::now())
    .sent_by(ids.actor());
    let receipt = state.append(&event).await?;
    Ok(Accepted {
        body: TransferQueued {
            id: transfer_id,
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
        },
        location: Some(format!("/api/transfers/{transfer_id}")),
    })
}

/// Says what arrived of a shipped transfer.
#[utoipa::path(post, path = "/api/transfers/{id}/receive", operation_id = "receive_transfer", tag = "locations",
    request_body = ReceiveTransfer,
    params(("id" = TransferId, Path, description = "The transfer's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "In the log; a worker puts the units on the destination's shelf and adjusts a shortfall away as transit_loss", body = TransferQueued,
            headers(("Location" = String, description = "The transfer's URL"))),
        (status = 404, description = "No such transfer", body = ErrorBody),
        (status = 409, description = "The transfer is not in transit (requested, refused or received already)", body = ErrorBody),
        (status = 422, description = "A product not in the transfer or listed twice, received below 0 or above what shipped, a discrepancy reason too long", body = ErrorBody)))]
#[tracing::instrument(name = "transfers::receive", level = "debug", skip_all)]
pub async fn receive(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(id): ApiPath<TransferId>,
    ApiJson(body): ApiJson<ReceiveTransfer>,
) -> Result<Accepted<TransferQueued>, ApiError> {
    let discrepancy_reason = match body.discrepancy_reason.as_deref() {
        None => None,
        Some(raw) => parse_note(raw).map_err(|e| ApiError::invalid("discrepancy_reason", e))?,
    };
    let Some(transfer) = state.store.get_transfer(id).await? else {
        return Err(ApiError::not_found(format!("transfer {id} not found")));
    };
    if transfer.status != TransferStatus::Shipped {
        return Err(ApiError::conflict(format!(
            "transfer {id} is {}; only a shipped one can be received",
            transfer.status
        )));
    }
    for (i, got) in body.lines.iter().enumerate() {
        let Some(line) = transfer
            .lines
            .iter()
            .find(|l| l.product_id == got.product_id)
        else {
            return Err(ApiError::invalid(
                &format!("lines[{i}].product_id"),
                "is not in the transfer",
            ));
        };
        if body.lines[..i]
            .iter()
            .any(|l| l.product_id == got.product_id)
        {
            return Err(ApiError::invalid(
                &format!("lines[{i}].product_id"),
                "is listed twice",
            ));
        }
        if !(0..=line.quantity).contains(&got.received) {
            return Err(ApiError::invalid(
                &format!("lines[{i}].received"),
                format!("must be between 0 and the {} shipped", line.quantity),
            ));
        }
    }
    let event = DomainEvent::TransferReceiveRequested(TransferReceiveRequested {
        transfer_id: id,
        lines: body
            .lines
            .iter()
            .map(|l| ReceivedLine {
                product_id: l.product_id,
                received: l.received,
            })
            .collect(),
        discrepancy_reason,
    })
    .into_envelope_with_id(ids.id("transfer.receive_requested"), Utc::now())
    .sent_by(ids.actor());
    let receipt = state.append(&event).await?;
    Ok(Accepted {
        body: TransferQueued {
            id,
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
        },
        location: Some(format!("/api/transfers/{id}")),
    })
}

/// Transfers, newest first.
#[utoipa::path(get, path = "/api/transfers", operation_id = "list_transfers", tag = "locations",
    params(("status" = Option<TransferStatus>, Query, description = "Only transfers in this state"),
        ("limit" = Option<i64>, Query, description = "Items per page, 1 to 1000 (default 100)"),
        ("after" = Option<TransferId>, Query, description = "The id of the last item of the previous page")),
    responses((status = 200, description = "Transfers, newest first", body = Vec<TransferView>),
        (status = 422, description = "An unknown status, a bad limit or cursor", body = ErrorBody)))]
#[tracing::instrument(name = "transfers::list", level = "debug", skip_all)]
pub async fn list(
    State(state): State<AppState>,
    paging: Paging<TransferId>,
    ApiQuery(query): ApiQuery<TransferListQuery>,
) -> Result<Json<Vec<TransferView>>, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(TransferStatus::parse(raw).ok_or_else(|| {
            ApiError::invalid("status", "must be requested, shipped, received or refused")
        })?),
    };
    Ok(Json(
        state
            .store
            .list_transfers(status, paging.after, paging.limit)
            .await?,
    ))
}

/// One transfer. A refused one answers 409 with the reason. With
/// `?wait=N` the answer waits up to N seconds for the worker's decision.
#[utoipa::path(get, path = "/api/transfers/{id}", operation_id = "get_transfer", tag = "locations",
    params(("id" = TransferId, Path, description = "The transfer's id"),
        ("wait" = Option<u64>, Query, description = "Seconds (up to 30) to wait for the decision")),
    responses((status = 200, description = "Requested, shipped or received", body = TransferView),
        (status = 202, description = "Not processed yet; the id may still be in the log", body = TransferQueued),
        (status = 404, description = "No such transfer", body = ErrorBody),
        (status = 409, description = "Refused: `message` says why", body = TransferView)))]
#[tracing::instrument(name = "transfers::one", level = "debug", skip_all)]
pub async fn one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TransferId>,
    ApiQuery(query): ApiQuery<OneTransferQuery>,
) -> Result<Response, ApiError> {
    let queued = recently_issued(id.as_uuid());
    let transfer = until_decided(
        &state,
        query.wait,
        queued,
        || async { Ok(state.store.get_transfer(id).await?) },
        |t| t.status != TransferStatus::Requested,
    )
    .await?;
    match transfer {
        Some(t) if t.status == TransferStatus::Refused => {
            Ok((StatusCode::CONFLICT, Json(t)).into_response())
        }
        Some(t) => Ok(Json(t).into_response()),
        None if queued => Ok((
            StatusCode::ACCEPTED,
            Json(TransferQueued {
                id,
                status: Queued::Queued,
                msg_id: String::new(),
            }),
        )
            .into_response()),
        None => Err(ApiError::not_found(format!("transfer {id} not found"))),
    }
}
