//! A product's stock ledger: why on-hand is what it is, movement by
//! movement, as JSON pages or one CSV download (streamed a page at a time,
//! so its memory does not grow with the history).

use super::error::ApiError;
use super::extract::parse_time;
use super::products::product_exists;
use super::responses::ErrorBody;
use super::{page_limit, ApiPath, ApiQuery, AppState};
use crate::domain::ProductId;
use crate::store::ledger::{LedgerEntry, LedgerRange};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// Rows read from the database per CSV chunk.
const CSV_PAGE: i64 = 1_000;

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

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"))
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
    if !product_exists(&state, product_id).await? {
        return Err(ApiError::not_found(format!(
            "product {product_id} not found"
        )));
    }
    let range = LedgerRange {
        after: query.after,
        newest_first,
        from,
        to,
        limit: limit.unwrap_or(CSV_PAGE),
    };
    if !csv {
        return Ok(Json(state.store.ledger(product_id, range).await?).into_response());
    }
    let filename = format!("ledger-{product_id}.csv");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(csv_pages(state, product_id, range, limit)),
    )
        .into_response())
}

/// What the CSV stream has left to do.
struct CsvCursor {
    state: AppState,
    product_id: ProductId,
    range: LedgerRange,
    /// Rows still to send (None: all).
    left: Option<i64>,
    header_sent: bool,
    done: bool,
}

/// The CSV, a page of rows per chunk (the header with the first).
fn csv_pages(
    state: AppState,
    product_id: ProductId,
    range: LedgerRange,
    left: Option<i64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let cursor = CsvCursor {
        state,
        product_id,
        range,
        left,
        header_sent: false,
        done: false,
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        let page = cursor.left.map_or(CSV_PAGE, |left| left.min(CSV_PAGE));
        let rows = match cursor
            .state
            .store
            .ledger(
                cursor.product_id,
                LedgerRange {
                    limit: page,
                    ..cursor.range
                },
            )
            .await
        {
            Ok(rows) => rows,
            // The status is sent: cut the body short, so the client sees
            // a broken download rather than a short file that looks whole.
            Err(e) => {
                tracing::warn!(error = %e, "reading the ledger for a CSV download failed");
                cursor.done = true;
                return Some((Err(std::io::Error::other(e.to_string())), cursor));
            }
        };
        cursor.done = (rows.len() as i64) < page;
        if let Some(left) = cursor.left.as_mut() {
            *left -= rows.len() as i64;
            cursor.done |= *left <= 0;
        }
        cursor.range.after = rows.last().map(|r| r.seq).or(cursor.range.after);
        let chunk = csv_rows(&rows, !cursor.header_sent);
        cursor.header_sent = true;
        Some((chunk.map(Bytes::from), cursor))
    })
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

fn csv_rows(rows: &[LedgerEntry], with_header: bool) -> Result<Vec<u8>, std::io::Error> {
    let mut out = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 160));
    if with_header {
        out.write_record(CSV_HEADER)?;
    }
    let text = |v: Option<String>| v.unwrap_or_default();
    for r in rows {
        out.write_record([
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
        ])?;
    }
    out.into_inner().map_err(|e| e.into_error())
}
