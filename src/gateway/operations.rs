//! Read-only views for operators: the alert feed, the dead letters and the
//! audit trail (the event archive).

use super::error::ApiError;
use super::responses::ErrorBody;
use super::{ApiQuery, AppState, Paging};
use crate::store::analytics::{ArchivedEvent, EventFilter};
use crate::store::queries::AlertView;
use crate::stream::dead_letter::DeadLetter;
use crate::stream::PROCESSOR_GROUP;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
pub struct Limit {
    pub limit: Option<i64>,
}

impl Limit {
    fn value(&self) -> Result<i64, ApiError> {
        super::page_limit(self.limit)
    }
}

/// Newest first.
#[utoipa::path(get, path = "/api/alerts", operation_id = "list_alerts", tag = "operations",
    params(("limit" = Option<i64>, Query, description = "At most this many, 1 to 1000 (default 100)")),
    responses((status = 200, description = "Alerts, newest first", body = Vec<AlertView>),
        (status = 422, description = "A bad limit", body = ErrorBody), (status = 503, description = "A backend is unreachable or the gateway is overloaded (Retry-After)", body = ErrorBody)))]
pub async fn alerts(
    State(state): State<AppState>,
    ApiQuery(limit): ApiQuery<Limit>,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    Ok(Json(state.store.recent_alerts(limit.value()?).await?))
}

/// Oldest first, as they would be replayed.
#[utoipa::path(get, path = "/api/dead-letters", operation_id = "list_dead_letters", tag = "operations",
    params(("limit" = Option<i64>, Query, description = "At most this many, 1 to 1000 (default 100)")),
    responses((status = 200, description = "Dead letters, oldest first", body = Vec<DeadLetter>),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 422, description = "A bad limit", body = ErrorBody), (status = 503, description = "A backend is unreachable or the gateway is overloaded (Retry-After)", body = ErrorBody)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    ApiQuery(limit): ApiQuery<Limit>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    Ok(Json(
        state
            .log
            .dead_letters(PROCESSOR_GROUP, limit.value()? as usize)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    pub key: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
}

/// Archived events in the order they were applied, by key and/or type,
/// paged with `after=<event_id>`.
#[utoipa::path(get, path = "/api/events", operation_id = "list_events", tag = "operations",
    params(("key" = Option<String>, Query, description = "Only events of this aggregate (a product or order id)"),
        ("type" = Option<String>, Query, description = "Only events of this type, e.g. order.placed"), ("limit" = Option<i64>, Query, description = "Items per page, 1 to 1000 (default 100)"), ("after" = Option<uuid::Uuid>, Query, description = "The id of the last item of the previous page")),
    responses((status = 200, description = "Archived events in the order they were applied", body = Vec<ArchivedEvent>),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 422, description = "A bad filter, limit or cursor", body = ErrorBody), (status = 503, description = "A backend is unreachable or the gateway is overloaded (Retry-After)", body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventQuery>,
    paging: Paging<Uuid>,
) -> Result<Json<Vec<ArchivedEvent>>, ApiError> {
    let text = |field: &str, value: Option<String>| -> Result<Option<String>, ApiError> {
        match value {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) if v.len() > 200 => Err(ApiError::invalid(field, "at most 200 characters")),
            Some(v) => Ok(Some(v)),
        }
    };
    if let Some(after) = paging.after {
        if !state.store.is_archived(after).await? {
            return Err(ApiError::invalid(
                "after",
                format!("no archived event {after}"),
            ));
        }
    }
    let filter = EventFilter {
        key: text("key", query.key)?,
        event_type: text("type", query.event_type)?,
        after: paging.after,
        limit: paging.limit,
    };
    Ok(Json(state.store.archived_events(&filter).await?))
}
