//! Read-only views for operators: the alert feed, the dead letters and the
//! audit trail (the event archive).

use super::error::ApiError;
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
pub async fn alerts(
    State(state): State<AppState>,
    ApiQuery(limit): ApiQuery<Limit>,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    Ok(Json(state.store.recent_alerts(limit.value()?).await?))
}

/// Oldest first, as they would be replayed.
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
