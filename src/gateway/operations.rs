//! Views for operators: the alert feed, the dead letters (with replay and
//! purge) and the audit trail (the event archive).

use super::error::ApiError;
use super::responses::ErrorBody;
use super::{ApiJson, ApiQuery, AppState, Paging};
use crate::store::analytics::{ArchivedEvent, EventFilter};
use crate::store::dead_letters::{self, DeadLetterError};
use crate::store::lost_entries::LostLogEntry;
use crate::store::queries::AlertView;
use crate::stream::dead_letter::DeadLetter;
use crate::stream::PROCESSOR_GROUP;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which dead letters a replay or purge acts on: those named, or all.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSelection {
    /// Dead letter ids (from `GET /api/dead-letters`).
    #[serde(default)]
    pub ids: Vec<String>,
    /// The oldest 1,000 dead letters instead (`ids` must then be empty);
    /// the answer's `remaining` says whether to call again.
    #[serde(default)]
    pub all: bool,
}

impl DeadLetterSelection {
    fn ids(&self) -> Result<Option<&[String]>, ApiError> {
        match (self.all, self.ids.is_empty()) {
            (true, true) => Ok(None),
            (false, false) if self.ids.len() <= 1000 => Ok(Some(&self.ids)),
            (false, false) => Err(ApiError::invalid("ids", "at most 1000 at once")),
            (true, false) => Err(ApiError::invalid("ids", "give ids or all, not both")),
            (false, true) => Err(ApiError::invalid("ids", "name at least one, or set all")),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayedLetter {
    /// The dead letter's id.
    pub id: String,
    /// Where its event was appended again.
    pub msg_id: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayOutcome {
    pub replayed: Vec<ReplayedLetter>,
    /// Letters that were not a readable event: purge them instead.
    pub not_replayable: Vec<String>,
    /// Dead letters left afterwards. `all` takes the oldest 1,000 at a
    /// time: call again while this is above zero.
    pub remaining: u64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurgeOutcome {
    pub purged: u64,
    /// Dead letters left afterwards. `all` takes the oldest 1,000 at a
    /// time: call again while this is above zero.
    pub remaining: u64,
}

impl From<DeadLetterError> for ApiError {
    fn from(e: DeadLetterError) -> ApiError {
        match e {
            DeadLetterError::Unknown(id) => {
                ApiError::not_found(format!("no dead letter with id {id}"))
            }
            DeadLetterError::Log(e) => e.into(),
            DeadLetterError::Store(e) => e.into(),
        }
    }
}

/// Appends the chosen letters' events to the log again, with their failed
/// attempts forgotten, and removes the letters: for after the cause is
/// fixed. `streamstock dlq replay` does the same.
#[utoipa::path(post, path = "/api/dead-letters/replay", operation_id = "replay_dead_letters", tag = "operations",
    request_body = DeadLetterSelection,
    responses((status = 200, description = "What was appended again", body = ReplayOutcome),
        (status = 404, description = "A named dead letter is not there (nothing was replayed)", body = ErrorBody),
        (status = 422, description = "Neither ids nor all, or both", body = ErrorBody)))]
#[tracing::instrument(name = "operations::replay_dead_letters", level = "debug", skip_all)]
pub async fn replay_dead_letters(
    State(state): State<AppState>,
    ApiJson(selection): ApiJson<DeadLetterSelection>,
) -> Result<Json<ReplayOutcome>, ApiError> {
    let letters = dead_letters::choose(&*state.log, PROCESSOR_GROUP, selection.ids()?).await?;
    let done = dead_letters::replay(&state.store, &*state.log, PROCESSOR_GROUP, &letters).await?;
    Ok(Json(ReplayOutcome {
        replayed: done
            .appended
            .into_iter()
            .map(|(id, msg_id)| ReplayedLetter { id, msg_id })
            .collect(),
        not_replayable: done.not_replayable,
        remaining: state.log.dead_letter_count(PROCESSOR_GROUP).await?,
    }))
}

/// Deletes the chosen dead letters for good. `streamstock dlq purge` does
/// the same.
#[utoipa::path(post, path = "/api/dead-letters/purge", operation_id = "purge_dead_letters", tag = "operations",
    request_body = DeadLetterSelection,
    responses((status = 200, description = "How many were deleted", body = PurgeOutcome),
        (status = 404, description = "A named dead letter is not there (nothing was purged)", body = ErrorBody),
        (status = 422, description = "Neither ids nor all, or both", body = ErrorBody)))]
#[tracing::instrument(name = "operations::purge_dead_letters", level = "debug", skip_all)]
pub async fn purge_dead_letters(
    State(state): State<AppState>,
    ApiJson(selection): ApiJson<DeadLetterSelection>,
) -> Result<Json<PurgeOutcome>, ApiError> {
    let letters = dead_letters::choose(&*state.log, PROCESSOR_GROUP, selection.ids()?).await?;
    let purged = dead_letters::purge(&*state.log, PROCESSOR_GROUP, &letters).await?;
    let remaining = state.log.dead_letter_count(PROCESSOR_GROUP).await?;
    Ok(Json(PurgeOutcome { purged, remaining }))
}

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
        (status = 422, description = "A bad limit", body = ErrorBody)))]
#[tracing::instrument(name = "operations::alerts", level = "debug", skip_all)]
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
        (status = 422, description = "A bad limit", body = ErrorBody)))]
#[tracing::instrument(name = "operations::dead_letters", level = "debug", skip_all)]
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

/// Events the read model applied that the log then lost, as the workers'
/// audit found them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LostLogEntries {
    /// How many are on record (the newest 100,000 are kept; the metric
    /// `streamstock_log_lost_entries_total` counts every one).
    pub total: u64,
    /// The most recently found, newest first, at most `limit`.
    pub entries: Vec<LostLogEntry>,
}

/// Events the read model applied and the log no longer has: a Valkey
/// failover to a replica that had not received them, or a server restarted
/// from an AOF that missed them. The read model and its archive keep them
/// (the effects were committed); consumers reading the log itself never
/// saw them. Found by the workers' audit at start and after each reconnect
/// to the log.
#[utoipa::path(get, path = "/api/lost-log-entries", operation_id = "list_lost_log_entries", tag = "operations",
    params(("limit" = Option<i64>, Query, description = "At most this many, 1 to 1000 (default 100)")),
    responses((status = 200, description = "The lost entries found, newest first", body = LostLogEntries),
        (status = 422, description = "A bad limit", body = ErrorBody)))]
#[tracing::instrument(name = "operations::lost_log_entries", level = "debug", skip_all)]
pub async fn lost_log_entries(
    State(state): State<AppState>,
    ApiQuery(limit): ApiQuery<Limit>,
) -> Result<Json<LostLogEntries>, ApiError> {
    let (entries, total) = state
        .store
        .lost_log_entries(limit.value()? as usize)
        .await?;
    Ok(Json(LostLogEntries { total, entries }))
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
        (status = 422, description = "A bad filter, limit or cursor", body = ErrorBody)))]
#[tracing::instrument(name = "operations::events", level = "debug", skip_all)]
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
