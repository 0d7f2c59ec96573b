//! The extractors handlers take their input through: JSON bodies, paths
//! and queries whose rejections are the API's JSON errors, a list's
//! `?status=` filter, and paging.

use super::error::ApiError;
use crate::domain::status::Named;
use axum::extract::{FromRequest, FromRequestParts};

/// Request bodies beyond this are refused with 413: no order needs more.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;

/// JSON body extractor whose rejections are our JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A list route's `?status=` filter: case-insensitive, one of the
/// statuses of what is listed; empty or absent means no filter.
#[derive(Debug, serde::Deserialize)]
pub struct StatusFilter {
    pub status: Option<String>,
}

impl StatusFilter {
    pub fn parse<S: Named>(&self) -> Result<Option<S>, ApiError> {
        match self.status.as_deref() {
            None | Some("") => Ok(None),
            Some(raw) => S::parse(&raw.to_ascii_uppercase())
                .map(Some)
                .ok_or_else(|| {
                    let names: Vec<&str> = S::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::invalid("status", format!("must be one of {}", names.join(", ")))
                }),
        }
    }
}

/// Every list route's paging, `?limit=` (1–1000, default 100) and
/// `?after=<id of the last item seen>`, read from the query string beside
/// the route's own filters and checked in one place. `Id` is the listed
/// items' id type, so a product id is refused as an order list's cursor.
#[derive(Debug, Clone, Copy)]
pub struct Paging<Id> {
    pub limit: i64,
    pub after: Option<Id>,
}

/// Items per page when `?limit=` is absent, and the most a page may hold.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

#[derive(Debug, serde::Deserialize)]
struct PagingQuery<Id> {
    limit: Option<i64>,
    after: Option<Id>,
}

/// A `?limit=` alone (the alerts and dead letters, which are not paged).
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )),
    }
}

impl<S, Id> FromRequestParts<S> for Paging<Id>
where
    S: Send + Sync,
    Id: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Paging<Id>, ApiError> {
        let ApiQuery(query) = ApiQuery::<PagingQuery<Id>>::from_request_parts(parts, state).await?;
        Ok(Paging {
            limit: page_limit(query.limit)?,
            after: query.after,
        })
    }
}

/// An RFC 3339 time of a query parameter, as Unix milliseconds.
pub fn parse_time(field: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|text| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc).timestamp_millis())
            .map_err(|e| {
                ApiError::invalid(
                    field,
                    format!("must be an RFC 3339 time like 2026-12-07T10:00:00Z ({e})"),
                )
            })
    })
    .transpose()
}
