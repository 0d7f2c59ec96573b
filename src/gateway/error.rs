//! The one place where failures become HTTP answers: a JSON body
//! `{"error": {"code", "message"}}`, 4xx for the client's mistakes, 503 when
//! a backend is unreachable, and internals logged, never shown.

use super::responses::{ErrorBody, ErrorDetail};
use crate::store::StoreError;
use crate::stream::LogError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (503s of overload).
    pub retry_after: Option<u32>,
}

/// What an overloaded gateway tells clients to wait, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The gateway or the log is behind the offered load: 503 with
    /// `Retry-After`, nothing recorded.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECS),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }

    /// The request ran past the gateway's time limit: 503 with
    /// `Retry-After`. (What it had appended, if anything, stays appended.)
    pub fn timed_out(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECS),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
        }
    }

    /// A field failed validation: the message names it.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {problem}"),
        )
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }
}

/// Marks an answer after which the request's write may or may not have
/// been recorded (`outcome_unknown`): the idempotency middleware keeps the
/// request's key for its retries instead of freeing it.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeInDoubt;

impl ApiError {
    /// The write was sent to the log but not confirmed.
    pub fn in_doubt(&self) -> bool {
        self.code == "outcome_unknown"
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let in_doubt = self.in_doubt();
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        });
        let mut response = (self.status, body).into_response();
        if in_doubt {
            response.extensions_mut().insert(OutcomeInDoubt);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if matches!(e, StoreError::Unavailable(_)) || e.is_transient() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is unavailable; retry shortly",
            )
        } else {
            tracing::error!(error = %e, "database error");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            )
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        if let LogError::Overloaded(reason) = &e {
            tracing::debug!(%reason, "event log overloaded");
            return ApiError::overloaded(
                "the event log is behind the offered load; nothing was recorded, retry shortly",
            );
        }
        if let LogError::DiskFull(reason) = &e {
            tracing::warn!(%reason, "the event log's disk is full");
            let mut full = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "disk_full",
                "the event log's disk is full; nothing was recorded, retry once there is space",
            );
            full.retry_after = Some(RETRY_AFTER_SECS);
            return full;
        }
        if let LogError::OutcomeUnknown(reason) = &e {
            tracing::warn!(%reason, "an append's outcome is unknown");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the event log did not confirm the write: it may or may not have been recorded; \
                 retry with the same Idempotency-Key (it will not be recorded twice), or read the \
                 resource before writing it again",
            );
        }
        tracing::warn!(error = %e, "event log unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "event_log_unavailable",
            "the event log is unavailable; nothing was recorded, retry shortly",
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let (status, code) = match &rejection {
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}
