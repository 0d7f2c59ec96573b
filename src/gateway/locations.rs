//! Locations: the places stock is kept in. A gateway claims a new
//! location's code (409 if taken), appends `location.created` and answers
//! 201 once a worker has applied it; a change (name, priority, active) is
//! a `location.updated`. Every deployment has the `default` location.

use super::error::ApiError;
use super::long_poll::{until_decided, APPLIED_WAIT};
use super::responses::{ErrorBody, FoundOrQueued, Queued, Stored};
use super::write_ids::WriteIds;
use super::{ApiJson, ApiPath, AppState, Paging};
use crate::domain::catalog::{parse_name, parse_priority, LocationCode};
use crate::domain::events::{LocationCreated, LocationUpdated};
use crate::domain::{DomainEvent, LocationId, ProductId};
use crate::store::locations::{LocationView, StockAtLocationView};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};

/// `POST /api/locations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLocation {
    /// Unique: 1–32 lowercase letters, digits, '-' and '_'.
    #[schema(example = "east", max_length = 32)]
    pub code: String,
    #[schema(example = "East warehouse", max_length = 200)]
    pub name: String,
    /// Lower is allocated from first (default 100).
    #[serde(default)]
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub priority: Option<i64>,
    /// Default true.
    #[serde(default)]
    pub active: Option<bool>,
}

/// `PATCH /api/locations/{id}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLocation {
    #[serde(default)]
    #[schema(max_length = 200)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub priority: Option<i64>,
    /// false: no order is allocated from it any more (its stock stays).
    #[serde(default)]
    pub active: Option<bool>,
}

/// A location's creation or change, as appended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationQueued {
    pub id: LocationId,
    pub code: String,
    pub status: Queued,
    pub msg_id: String,
}

/// The priority a location gets when none is given: after the default
/// location's 0, so a new location does not take its orders unasked.
const DEFAULT_PRIORITY: i64 = 100;

/// A location an event may name: one this deployment created (its
/// creation is in the log), or 422 naming `field`.
pub(super) async fn require_location(
    state: &AppState,
    field: &str,
    id: Option<LocationId>,
) -> Result<(), ApiError> {
    if let Some(id) = id {
        if state.store.location_code(id).await?.is_none() {
            return Err(ApiError::invalid(field, format!("no location {id}")));
        }
    }
    Ok(())
}

/// Every location, by priority then code, with the stock each holds.
#[utoipa::path(get, path = "/api/locations", operation_id = "list_locations", tag = "locations",
    responses((status = 200, description = "Locations, by priority then code", body = Vec<LocationView>)))]
#[tracing::instrument(name = "locations::list", level = "debug", skip_all)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<LocationView>>, ApiError> {
    Ok(Json(state.store.list_locations().await?))
}

/// One location.
#[utoipa::path(get, path = "/api/locations/{id}", operation_id = "get_location", tag = "locations",
    params(("id" = LocationId, Path, description = "The location's id")),
    responses((status = 200, description = "The location", body = LocationView),
        (status = 202, description = "Created, not yet applied by a worker", body = LocationQueued),
        (status = 404, description = "No such location", body = ErrorBody)))]
#[tracing::instrument(name = "locations::one", level = "debug", skip_all)]
pub async fn one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<LocationId>,
) -> Result<FoundOrQueued<LocationView, LocationQueued>, ApiError> {
    if let Some(location) = state.store.get_location(id).await? {
        return Ok(FoundOrQueued::Found(location));
    }
    match state.store.location_code(id).await? {
        Some(code) => Ok(FoundOrQueued::Queued(LocationQueued {
            id,
            code,
            status: Queued::Queued,
            msg_id: String::new(),
        })),
        None => Err(ApiError::not_found(format!("location {id} not found"))),
    }
}

/// The products a location holds (or held), with their figures there, by
/// product id.
#[utoipa::path(get, path = "/api/locations/{id}/stock", operation_id = "location_stock", tag = "locations",
    params(("id" = LocationId, Path, description = "The location's id"),
        ("limit" = Option<i64>, Query, description = "Items per page, 1 to 1000 (default 100)"),
        ("after" = Option<ProductId>, Query, description = "The product id of the last item of the previous page")),
    responses((status = 200, description = "Products at the location, by id", body = Vec<StockAtLocationView>),
        (status = 404, description = "No such location", body = ErrorBody),
        (status = 422, description = "A bad limit or cursor", body = ErrorBody)))]
#[tracing::instrument(name = "locations::stock", level = "debug", skip_all)]
pub async fn stock(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<LocationId>,
    paging: Paging<ProductId>,
) -> Result<Json<Vec<StockAtLocationView>>, ApiError> {
    if state.store.location_code(id).await?.is_none() {
        return Err(ApiError::not_found(format!("location {id} not found")));
    }
    Ok(Json(
        state
            .store
            .stock_at_location(id, paging.after, paging.limit)
            .await?,
    ))
}

/// Creates a location: claims its code (409 if taken), appends
/// `location.created`, and answers 201 once a worker has applied it (202
/// if that takes longer).
#[utoipa::path(post, path = "/api/locations", operation_id = "create_location", tag = "locations",
    request_body = CreateLocation,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 201, description = "Created and readable", body = LocationQueued, headers(("Location" = String, description = "The location's URL"))),
        (status = 202, description = "Created; a worker has yet to apply it", body = LocationQueued, headers(("Location" = String, description = "The location's URL"))),
        (status = 409, description = "The code is taken, or the deployment has --max-locations already", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody)))]
#[tracing::instrument(name = "locations::create", level = "debug", skip_all)]
pub async fn create(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiJson(body): ApiJson<CreateLocation>,
) -> Result<Stored<LocationQueued>, ApiError> {
    let code = LocationCode::parse(&body.code).map_err(|e| ApiError::invalid("code", e))?;
    let name = parse_name(&body.name).map_err(|e| ApiError::invalid("name", e))?;
    let priority = parse_priority(body.priority.unwrap_or(DEFAULT_PRIORITY))
        .map_err(|e| ApiError::invalid("priority", e))?;
    let location_id = LocationId(ids.id("location"));
    let existing = state.store.location_count().await?;
    let retry = state.store.location_code(location_id).await?.is_some();
    if !retry && existing >= state.limits.max_locations as i64 {
        return Err(ApiError::conflict(format!(
            "this deployment has {existing} locations, the most --max-locations allows"
        )));
    }
    if !state
        .store
        .claim_location_code(code.as_str(), location_id)
        .await?
    {
        return Err(ApiError::conflict(format!(
            "a location with code {} already exists",
            code.as_str()
        )));
    }
    let event = DomainEvent::LocationCreated(LocationCreated {
        location_id,
        code: code.as_str().to_string(),
        name,
        priority,
        active: body.active.unwrap_or(true),
    })
    .into_envelope_with_id(ids.id("location.created"), Utc::now())
    .sent_by(ids.actor());
    let receipt = match state.append(&event).await {
        Ok(receipt) => receipt,
        // It may be in the log: the code stays this location's, for the
        // retry (the same ids) to finish.
        Err(e) if e.in_doubt() => return Err(e),
        Err(e) => {
            if let Err(release) = state
                .store
                .release_location_code(code.as_str(), location_id)
                .await
            {
                tracing::error!(error = %release, code = code.as_str(), "could not release a location code");
            }
            return Err(e);
        }
    };
    let readable = applied(&state, location_id, |_| true).await?.is_some();
    Ok(Stored {
        body: LocationQueued {
            id: location_id,
            code: code.as_str().to_string(),
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
        },
        location: format!("/api/locations/{location_id}"),
        readable,
    })
}

/// Changes a location's name, priority or activity: appends
/// `location.updated`; answers 200 with the location once a worker has
/// applied it, 202 if that takes longer.
#[utoipa::path(patch, path = "/api/locations/{id}", operation_id = "update_location", tag = "locations",
    request_body = UpdateLocation,
    params(("id" = LocationId, Path, description = "The location's id")),
    responses((status = 200, description = "Changed and readable", body = LocationView),
        (status = 202, description = "In the log; a worker has yet to apply it", body = LocationQueued),
        (status = 404, description = "No such location", body = ErrorBody),
        (status = 422, description = "A field is invalid, or none is given", body = ErrorBody)))]
#[tracing::instrument(name = "locations::update", level = "debug", skip_all)]
pub async fn update(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(id): ApiPath<LocationId>,
    ApiJson(body): ApiJson<UpdateLocation>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .as_deref()
        .map(parse_name)
        .transpose()
        .map_err(|e| ApiError::invalid("name", e))?;
    let priority = body
        .priority
        .map(parse_priority)
        .transpose()
        .map_err(|e| ApiError::invalid("priority", e))?;
    if name.is_none() && priority.is_none() && body.active.is_none() {
        return Err(ApiError::invalid(
            "name",
            "give at least one of name, priority and active",
        ));
    }
    let Some(code) = state.store.location_code(id).await? else {
        return Err(ApiError::not_found(format!("location {id} not found")));
    };
    let wanted = (name.clone(), priority, body.active);
    let event = DomainEvent::LocationUpdated(LocationUpdated {
        location_id: id,
        name,
        priority,
        active: body.active,
    })
    .into_envelope_with_id(ids.id("location.updated"), Utc::now())
    .sent_by(ids.actor());
    let receipt = state.append(&event).await?;
    let matches = |l: &LocationView| {
        wanted.0.as_ref().is_none_or(|n| *n == l.name)
            && wanted.1.is_none_or(|p| p == l.priority)
            && wanted.2.is_none_or(|a| a == l.active)
    };
    if let Some(location) = applied(&state, id, matches).await? {
        return Ok(Json(location).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(LocationQueued {
            id,
            code,
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
        }),
    )
        .into_response())
}

/// The location once a worker has applied it in a state `done` accepts
/// (the shared long-poll, for APPLIED_WAIT); None if that takes longer.
async fn applied(
    state: &AppState,
    id: LocationId,
    done: impl Fn(&LocationView) -> bool,
) -> Result<Option<LocationView>, ApiError> {
    let wait = Some(APPLIED_WAIT.as_secs());
    let read = || async { Ok(state.store.get_location(id).await?) };
    let location = until_decided(state, wait, true, read, &done).await?;
    Ok(location.filter(|l| done(l)))
}
