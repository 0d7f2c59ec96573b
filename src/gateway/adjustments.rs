//! Stock adjustments: a change of on-hand with a reason (damage, shrinkage,
//! a found unit, a correction...), optionally conditional on the on-hand
//! the client last saw (compare-and-set). The gateway appends the request;
//! a worker applies it or records why not, and the client reads or
//! long-polls the outcome at the `Location` it was given.

use super::error::ApiError;
use super::extract::parse_time;
use super::extract::ApiQuery;
use super::long_poll::until_decided;
use super::products::require_product;
use super::responses::{
    Accepted, AdjustmentPending, AdjustmentQueued, CountQueued, ErrorBody, Queued,
};
use super::write_ids::{recently_issued, WriteIds};
use super::{ApiJson, ApiPath, AppState, Paging};
use crate::domain::catalog::{parse_counted, parse_delta, parse_name, parse_note};
use crate::domain::events::{StockAdjustmentRequested, StockCounted};
use crate::domain::status::{AdjustmentReason, AdjustmentStatus};
use crate::domain::{AdjustmentId, DomainEvent, LocationId, ProductId};
use crate::store::adjustments::AdjustmentView;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;

/// `POST /api/products/{id}/adjustments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStock {
    /// The change to on-hand: negative takes units away. Not 0.
    #[schema(minimum = -1_000_000, maximum = 1_000_000, example = -2)]
    pub delta: i64,
    pub reason: AdjustmentReason,
    /// An outside reference: a damage report, an RMA, a count sheet.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub reference: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub note: Option<String>,
    /// Compare-and-set: apply only if on-hand is this figure when a worker
    /// decides; otherwise the adjustment is refused with the actual figure.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub expected_on_hand: Option<i64>,
    /// The location adjusted (its on-hand is what `expected_on_hand` and
    /// the reserved-units check are about); default: the default location.
    #[serde(default)]
    pub location_id: Option<LocationId>,
}

/// `POST /api/products/{id}/counts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountStock {
    /// The units found on the shelf.
    #[schema(minimum = 0, maximum = 1_000_000_000, example = 47)]
    pub counted: i64,
    /// RFC 3339: when the shelf was counted (default: now). Movements of a
    /// later time are added back to the count, so a count made before a
    /// sale and sent after it is still right.
    #[serde(default)]
    pub counted_at: Option<String>,
    /// Compare-and-set, as for an adjustment.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub expected_on_hand: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub reference: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub note: Option<String>,
    /// The location counted; default: the default location.
    #[serde(default)]
    pub location_id: Option<LocationId>,
}

/// How far ahead of this gateway's clock a `counted_at` may be (another
/// host's clock).
const CLOCK_SKEW_MS: i64 = 60_000;

#[derive(Debug, Deserialize)]
pub struct OneAdjustmentQuery {
    /// Long-poll: wait up to this many seconds for the decision.
    pub wait: Option<u64>,
}

/// An adjustment's fields, each checked (the first bad one is the error).
fn parse_request(body: &AdjustStock) -> Result<(i64, Option<String>, Option<String>), ApiError> {
    let delta = parse_delta(body.delta).map_err(|e| ApiError::invalid("delta", e))?;
    let (reference, note) = parse_shared(
        body.reference.as_deref(),
        body.note.as_deref(),
        body.expected_on_hand,
    )?;
    Ok((delta, reference, note))
}

/// The fields an adjustment and a count share, checked: an optional
/// reference and note (returned cleaned), and `expected_on_hand`.
fn parse_shared(
    reference: Option<&str>,
    note: Option<&str>,
    expected_on_hand: Option<i64>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let reference = match reference.map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(parse_name(raw).map_err(|e| ApiError::invalid("reference", e))?),
    };
    let note = match note {
        None => None,
        Some(raw) => parse_note(raw).map_err(|e| ApiError::invalid("note", e))?,
    };
    if expected_on_hand.is_some_and(|x| x < 0) {
        return Err(ApiError::invalid(
            "expected_on_hand",
            "must not be negative",
        ));
    }
    Ok((reference, note))
}

/// Records a cycle count: appends `stock.counted` and answers 202 with
/// where to read the outcome (an adjustment with reason `cycle_count`).
#[utoipa::path(post, path = "/api/products/{id}/counts", operation_id = "count_stock", tag = "stock",
    request_body = CountStock,
    params(("id" = ProductId, Path, description = "The product's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "In the log; a worker decides the delta against the book as of counted_at and applies it, or records why not", body = CountQueued,
            headers(("Location" = String, description = "The count's URL (an adjustment): read or long-poll its outcome"))),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 422, description = "A field is invalid: counted below 0 or above 1,000,000,000, counted_at not RFC 3339 or in the future, a reference or note too long, a negative expected_on_hand", body = ErrorBody)))]
#[tracing::instrument(name = "adjustments::count", level = "debug", skip_all)]
pub async fn count(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(product_id): ApiPath<ProductId>,
    ApiJson(body): ApiJson<CountStock>,
) -> Result<Accepted<CountQueued>, ApiError> {
    let counted = parse_counted(body.counted).map_err(|e| ApiError::invalid("counted", e))?;
    let now = Utc::now();
    let counted_at =
        parse_time("counted_at", body.counted_at.as_deref())?.unwrap_or(now.timestamp_millis());
    if counted_at > now.timestamp_millis() + CLOCK_SKEW_MS {
        return Err(ApiError::invalid("counted_at", "must not be in the future"));
    }
    let (reference, note) = parse_shared(
        body.reference.as_deref(),
        body.note.as_deref(),
        body.expected_on_hand,
    )?;
    require_product(&state, product_id).await?;
    super::locations::require_location(&state, "location_id", body.location_id).await?;
    let adjustment_id = AdjustmentId(ids.id("count"));
    let receipt = state
        .append(
            &DomainEvent::StockCounted(StockCounted {
                location_id: body.location_id,
                adjustment_id,
                product_id,
                counted,
                counted_at,
                expected_on_hand: body.expected_on_hand,
                reference,
                note,
            })
            .into_envelope_with_id(ids.id("stock.counted"), now)
            .sent_by(ids.actor()),
        )
        .await?;
    let location = format!("/api/products/{product_id}/adjustments/{adjustment_id}");
    let body = CountQueued {
        adjustment_id,
        product_id,
        counted,
        counted_at: chrono::DateTime::from_timestamp_millis(counted_at).unwrap_or(now),
        status: Queued::Queued,
        msg_id: receipt.msg_id(),
    };
    Ok(Accepted {
        body,
        location: Some(location),
    })
}

/// Asks for an adjustment: appends `stock.adjustment_requested` and answers
/// 202 with where to read the outcome.
#[utoipa::path(post, path = "/api/products/{id}/adjustments", operation_id = "adjust_stock", tag = "stock",
    request_body = AdjustStock,
    params(("id" = ProductId, Path, description = "The product's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "In the log; a worker applies it or records why not", body = AdjustmentQueued,
            headers(("Location" = String, description = "The adjustment's URL: read or long-poll its outcome"))),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 422, description = "A field is invalid: delta 0 or beyond ±1,000,000, an unknown reason, a reference or note too long, a negative expected_on_hand", body = ErrorBody)))]
#[tracing::instrument(name = "adjustments::request", level = "debug", skip_all)]
pub async fn request(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(product_id): ApiPath<ProductId>,
    ApiJson(body): ApiJson<AdjustStock>,
) -> Result<Accepted<AdjustmentQueued>, ApiError> {
    let (delta, reference, note) = parse_request(&body)?;
    require_product(&state, product_id).await?;
    super::locations::require_location(&state, "location_id", body.location_id).await?;
    let adjustment_id = AdjustmentId(ids.id("adjustment"));
    let receipt = state
        .append(
            &DomainEvent::StockAdjustmentRequested(StockAdjustmentRequested {
                location_id: body.location_id,
                adjustment_id,
                product_id,
                delta,
                reason: body.reason,
                reference,
                note,
                expected_on_hand: body.expected_on_hand,
            })
            .into_envelope_with_id(ids.id("stock.adjustment_requested"), Utc::now())
            .sent_by(ids.actor()),
        )
        .await?;
    let location = format!("/api/products/{product_id}/adjustments/{adjustment_id}");
    let body = AdjustmentQueued {
        adjustment_id,
        product_id,
        delta,
        reason: body.reason,
        status: Queued::Queued,
        msg_id: receipt.msg_id(),
    };
    Ok(Accepted {
        body,
        location: Some(location),
    })
}

/// A product's adjustments and counts, newest first.
#[utoipa::path(get, path = "/api/products/{id}/adjustments", operation_id = "list_adjustments", tag = "stock",
    params(("id" = ProductId, Path, description = "The product's id"),
        ("limit" = Option<i64>, Query, description = "Items per page, 1 to 1000 (default 100)"),
        ("after" = Option<AdjustmentId>, Query, description = "The id of the last item of the previous page")),
    responses((status = 200, description = "Adjustments, newest first", body = Vec<AdjustmentView>),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 422, description = "A bad limit or cursor", body = ErrorBody)))]
#[tracing::instrument(name = "adjustments::list", level = "debug", skip_all)]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(product_id): ApiPath<ProductId>,
    paging: Paging<AdjustmentId>,
) -> Result<Json<Vec<AdjustmentView>>, ApiError> {
    require_product(&state, product_id).await?;
    Ok(Json(
        state
            .store
            .list_adjustments(product_id, paging.limit, paging.after)
            .await?,
    ))
}

/// One adjustment. A refused one answers 409 Conflict with the figures the
/// worker found (a compare-and-set that lost: read them, try again). With
/// `?wait=N` the answer waits up to N seconds for the decision.
#[utoipa::path(get, path = "/api/products/{id}/adjustments/{adjustment_id}", operation_id = "get_adjustment", tag = "stock",
    params(("id" = ProductId, Path, description = "The product's id"),
        ("adjustment_id" = AdjustmentId, Path, description = "The adjustment's id"),
        ("wait" = Option<u64>, Query, description = "Seconds (up to 30) to wait for the decision")),
    responses((status = 200, description = "Pending or applied", body = AdjustmentView),
        (status = 202, description = "Not processed yet; the id may still be in the log", body = AdjustmentPending),
        (status = 404, description = "No such adjustment", body = ErrorBody),
        (status = 409, description = "Refused: `refusal` says why, with the product's on-hand and reserved then", body = AdjustmentView)))]
#[tracing::instrument(name = "adjustments::one", level = "debug", skip_all)]
pub async fn one(
    State(state): State<AppState>,
    ApiPath((product_id, id)): ApiPath<(ProductId, AdjustmentId)>,
    ApiQuery(query): ApiQuery<OneAdjustmentQuery>,
) -> Result<Response, ApiError> {
    let queued = recently_issued(id.as_uuid());
    let adjustment = until_decided(
        &state,
        query.wait,
        queued,
        || async { Ok(state.store.get_adjustment(id).await?) },
        |a| a.status != AdjustmentStatus::Pending,
    )
    .await?;
    if adjustment
        .as_ref()
        .is_some_and(|a| a.product_id != product_id)
    {
        return Err(ApiError::not_found(format!(
            "adjustment {id} is not one of product {product_id}"
        )));
    }
    match adjustment {
        Some(a) if a.status == AdjustmentStatus::Refused => {
            Ok((StatusCode::CONFLICT, Json(a)).into_response())
        }
        Some(a) => Ok(Json(a).into_response()),
        None if queued => Ok((
            StatusCode::ACCEPTED,
            Json(AdjustmentPending {
                adjustment_id: id,
                product_id,
                status: Queued::Queued,
            }),
        )
            .into_response()),
        None => Err(ApiError::not_found(format!(
            "adjustment {id} of product {product_id} not found"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::MAX_QUANTITY;

    fn body(delta: i64) -> AdjustStock {
        AdjustStock {
            delta,
            reason: AdjustmentReason::Damaged,
            reference: Some("  DMG-1 ".into()),
            note: Some("".into()),
            expected_on_hand: None,
            location_id: None,
        }
    }

    #[test]
    fn each_field_is_checked_and_named() {
        let (delta, reference, note) = parse_request(&body(-2)).unwrap();
        assert_eq!(
            (delta, reference.as_deref(), note),
            (-2, Some("DMG-1"), None)
        );
        let named = |b: &AdjustStock| parse_request(b).unwrap_err().message;
        assert!(named(&body(0)).contains("delta"));
        assert!(named(&body(MAX_QUANTITY + 1)).contains("delta"));
        let mut long = body(1);
        long.reference = Some("r".repeat(201));
        assert!(named(&long).contains("reference"));
        let mut negative = body(1);
        negative.expected_on_hand = Some(-1);
        assert!(named(&negative).contains("expected_on_hand"));
    }
}
