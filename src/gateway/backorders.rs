//! A product's backorder policy and queue: `PATCH /api/products/{id}`
//! sets how many units may be sold past zero (`product.policy_set`), and
//! `GET /api/products/{id}/backorders` lists the orders waiting for it in
//! the order they will be filled.

use super::error::ApiError;
use super::extract::page_limit;
use super::long_poll::{until_decided, APPLIED_WAIT};
use super::responses::{ErrorBody, Queued};
use super::write_ids::WriteIds;
use super::{ApiJson, ApiPath, ApiQuery, AppState};
use crate::domain::events::ProductPolicySet;
use crate::domain::{DomainEvent, ProductId};
use crate::store::backorders::QueuedBackorderView;
use crate::store::queries::ProductView;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};

/// The largest backorder limit a product may have.
const MAX_BACKORDER_LIMIT: i64 = 1_000_000_000;

/// `PATCH /api/products/{id}`: the product's policies to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    /// Units that may be sold past zero and wait for stock (0: none; an
    /// order short of stock is rejected).
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub backorder_limit: i64,
}

/// A policy change, in the log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyQueued {
    pub id: ProductId,
    pub backorder_limit: i64,
    pub status: Queued,
    pub msg_id: String,
}

/// Sets the product's backorder limit: appends `product.policy_set`;
/// answers 200 with the product once a worker has applied it, 202 if that
/// takes longer. A limit below the units already waiting is refused (409):
/// lower it once they are filled.
#[utoipa::path(patch, path = "/api/products/{id}", operation_id = "update_product", tag = "products",
    request_body = UpdateProduct,
    params(("id" = ProductId, Path, description = "The product's id")),
    responses((status = 200, description = "Changed and readable", body = ProductView),
        (status = 202, description = "In the log; a worker has yet to apply it", body = PolicyQueued),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 409, description = "More units already wait than the limit asked", body = ErrorBody),
        (status = 422, description = "The limit is negative or too large", body = ErrorBody)))]
#[tracing::instrument(name = "products::update", level = "debug", skip_all)]
pub async fn update(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(id): ApiPath<ProductId>,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> Result<Response, ApiError> {
    let limit = body.backorder_limit;
    if !(0..=MAX_BACKORDER_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "backorder_limit",
            format!("{limit} is not a limit: from 0 to {MAX_BACKORDER_LIMIT} units"),
        ));
    }
    let Some(product) = state.store.get_product(id).await? else {
        return Err(ApiError::not_found(format!("product {id} not found")));
    };
    if limit < product.backordered {
        return Err(ApiError::conflict(format!(
            "{} units of {} already wait for stock; a limit below that can be set once they are filled",
            product.backordered, product.sku
        )));
    }
    let event = DomainEvent::ProductPolicySet(ProductPolicySet {
        product_id: id,
        backorder_limit: limit,
    })
    .into_envelope_with_id(ids.id("product.policy_set"), Utc::now())
    .sent_by(ids.actor());
    let receipt = state.append(&event).await?;
    let wait = Some(APPLIED_WAIT.as_secs());
    let read = || async { Ok(state.store.get_product(id).await?) };
    let applied = until_decided(&state, wait, true, read, |p: &ProductView| {
        p.backorder_limit == limit
    })
    .await?;
    match applied {
        Some(product) if product.backorder_limit == limit => Ok(Json(product).into_response()),
        _ => Ok((
            StatusCode::ACCEPTED,
            Json(PolicyQueued {
                id,
                backorder_limit: limit,
                status: Queued::Queued,
                msg_id: receipt.msg_id(),
            }),
        )
            .into_response()),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct QueueQuery {
    /// How many of the first waiting orders (1 to 1000, default 100).
    pub limit: Option<i64>,
}

/// A product's backorder queue.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackorderQueue {
    pub product_id: ProductId,
    /// Units waiting in all.
    pub backordered: i64,
    pub backorder_limit: i64,
    /// The first waiting orders, the next to be filled first.
    pub orders: Vec<QueuedBackorderView>,
}

/// The orders waiting for the product, in the order stock will fill them
/// (placement, first in first out).
#[utoipa::path(get, path = "/api/products/{id}/backorders", operation_id = "product_backorders", tag = "products",
    params(("id" = ProductId, Path, description = "The product's id"), QueueQuery),
    responses((status = 200, description = "The queue's head", body = BackorderQueue),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 422, description = "A bad limit", body = ErrorBody)))]
#[tracing::instrument(name = "products::backorders", level = "debug", skip_all)]
pub async fn queue(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ProductId>,
    ApiQuery(query): ApiQuery<QueueQuery>,
) -> Result<Json<BackorderQueue>, ApiError> {
    let limit = page_limit(query.limit)?;
    let Some(product) = state.store.get_product(id).await? else {
        return Err(ApiError::not_found(format!("product {id} not found")));
    };
    Ok(Json(BackorderQueue {
        product_id: id,
        backordered: product.backordered,
        backorder_limit: product.backorder_limit,
        orders: state.store.backorder_queue(id, limit).await?,
    }))
}
