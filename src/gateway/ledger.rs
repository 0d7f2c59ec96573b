//! A product's stock ledger: why on-hand is what it is, movement by
//! movement, as JSON pages or one CSV download (streamed a page at a time,
//! so its memory does not grow with the history).

use super::csv_download::{self, download, wants_csv, CsvShape, PageReader};
use super::error::ApiError;
use super::extract::parse_time;
use super::products::require_product;
use super::responses::ErrorBody;
use super::{page_limit, ApiPath, ApiQuery, AppState};
use crate::domain::ProductId;
use crate::store::ledger::{LedgerEntry, LedgerRange};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct LedgerQuery {
    pub limit: Option<i64>,
    /// The `seq` of the last row of the previous page.
    pub after: Option<i64>,
    /// RFC 3339: only movements at or after this time.
    pub from: Option<String>,
    /// RFC 3339: only movements at or before this time.
    pub to: Option<String>,
    /// `asc` (default) or `desc`: newest first.
    pub order: Option<String>,
}

#[utoipa::path(get, path = "/api/products/{id}/ledger", operation_id = "product_ledger", tag = "stock",
    params(("id" = ProductId, Path, description = "The product's id"),
        ("limit" = Option<i64>, Query, description = "Rows per page, 1 to 1000 (default 100; with CSV, every row unless given)"),
        ("after" = Option<i64>, Query, description = "The seq of the last row of the previous page"),
        ("from" = Option<String>, Query, description = "RFC 3339: movements at or after this time"),
        ("to" = Option<String>, Query, description = "RFC 3339: movements at or before this time"),
        ("order" = Option<String>, Query, description = "asc (default, oldest first) or desc (newest first; `after` is then the seq the page ends below)"),
        ("Accept" = Option<String>, Header, description = "text/csv for a CSV download")),
    responses((status = 200, description = "The product's stock movements, oldest first (JSON, or CSV with `Accept: text/csv`)",
            content((Vec<LedgerEntry> = "application/json"), (String = "text/csv"))),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 422, description = "A bad limit, cursor or time", body = ErrorBody)))]
#[tracing::instrument(name = "ledger::list", level = "debug", skip_all)]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(product_id): ApiPath<ProductId>,
    ApiQuery(query): ApiQuery<LedgerQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let from = parse_time("from", query.from.as_deref())?;
    let to = parse_time("to", query.to.as_deref())?;
    if query.after.is_some_and(|after| after < 0) {
        return Err(ApiError::invalid("after", "must not be negative"));
    }
    let newest_first = match query.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::invalid("order", "must be asc or desc")),
    };
    let csv = wants_csv(&headers);
    let limit = match (query.limit, csv) {
        (None, true) => None,
        (limit, _) => Some(page_limit(limit)?),
    };
    require_product(&state, product_id).await?;
    let range = LedgerRange {
        after: query.after,
        newest_first,
        from,
        to,
        limit: limit.unwrap_or(csv_download::PAGE),
    };
    if !csv {
        return Ok(Json(state.store.ledger(product_id, range).await?).into_response());
    }
    let store = state.store.clone();
    let read: PageReader<LedgerEntry, i64> = Box::new(move |after, limit| {
        let store = store.clone();
        let page = LedgerRange {
            after: after.or(range.after),
            limit,
            ..range
        };
        Box::pin(async move {
            store
                .ledger(product_id, page)
                .await
                .map_err(|e| e.to_string())
        })
    });
    let shape = CsvShape {
        header: &CSV_HEADER,
        record: csv_record,
        cursor: |row: &LedgerEntry| row.seq,
    };
    Ok(download(
        &format!("ledger-{product_id}.csv"),
        shape,
        read,
        None,
        limit,
    ))
}

/// The CSV's columns.
const CSV_HEADER: [&str; 13] = [
    "seq",
    "occurred_at",
    "kind",
    "on_hand_delta",
    "reserved_delta",
    "on_hand",
    "reserved",
    "event_type",
    "event_id",
    "order_id",
    "purchase_order_id",
    "adjustment_id",
    "reason",
];

fn csv_record(r: &LedgerEntry) -> Vec<String> {
    let text = |v: Option<String>| v.unwrap_or_default();
    vec![
        r.seq.to_string(),
        r.occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        r.kind.as_str().to_string(),
        r.on_hand_delta.to_string(),
        r.reserved_delta.to_string(),
        r.on_hand.to_string(),
        r.reserved.to_string(),
        text(r.event_type.clone()),
        text(r.event_id.map(|id| id.to_string())),
        text(r.order_id.map(|id| id.to_string())),
        text(r.purchase_order_id.map(|id| id.to_string())),
        text(r.adjustment_id.map(|id| id.to_string())),
        text(r.reason.map(|reason| reason.as_str().to_string())),
    ]
}
