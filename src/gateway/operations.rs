//! Read-only views for operators: the alert feed and the dead letters.

use super::error::ApiError;
use super::{ApiQuery, AppState};
use crate::store::queries::AlertView;
use crate::stream::dead_letter::DeadLetter;
use crate::worker::PROCESSOR_GROUP;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Limit {
    pub limit: Option<i64>,
}

impl Limit {
    fn value(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=1000).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid("limit", "must be between 1 and 1000")),
        }
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
