//! Stock imports: a CSV of adjustments (`sku,quantity,reason`) or counts
//! (`sku,counted`), one event per good row. Each row's ids derive from the
//! file's hash and its line, so uploading the same file again appends
//! nothing for the rows already applied (and the workers' inbox drops a
//! row still in flight). Bad rows are refused with their line and why;
//! they never stop the good ones.

use super::error::ApiError;
use super::responses::ErrorBody;
use super::write_ids::WriteIds;
use super::AppState;
use crate::domain::catalog::{parse_counted, parse_delta, Sku};
use crate::domain::events::{StockAdjustmentRequested, StockCounted};
use crate::domain::status::AdjustmentReason;
use crate::domain::{AdjustmentId, DomainEvent, ProductId};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The largest file an import takes (100,000 rows are about 3 MiB).
pub const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
/// The most rows one file may hold.
const MAX_ROWS: usize = 200_000;
/// Appends in flight at once (the gateway's group commit batches them).
const APPENDS_AT_ONCE: usize = 64;
/// The refused rows an answer lists (all are counted).
const REFUSALS_LISTED: usize = 1_000;

/// Where the ids of an import's rows come from.
const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_6a2e_8d31_4b57_9e0a_3c1d_7b24_e916);

/// `POST /api/imports/stock`: what became of each row.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportOutcome {
    /// The file's digest (xxh3-128): the same file has the same one.
    pub file: String,
    pub kind: ImportKind,
    pub rows: usize,
    /// Rows appended as an adjustment or a count (each one is decided by a
    /// worker: read it under `/api/products/{id}/adjustments`).
    pub accepted: usize,
    /// Rows of this file applied before (an upload of the same file again).
    pub already_imported: usize,
    pub refused_count: usize,
    /// The refused rows (the first 1,000), each with its line and why.
    pub refused: Vec<RefusedRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    /// `sku,quantity,reason`: adjustments.
    Adjustments,
    /// `sku,counted`: cycle counts.
    Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefusedRow {
    /// The line in the file (the header is line 1).
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub reason: String,
}

/// A row that passed its own checks, its product still to find.
struct GoodRow {
    line: u64,
    sku: String,
    change: RowChange,
}

enum RowChange {
    Adjust {
        delta: i64,
        reason: AdjustmentReason,
    },
    Count {
        counted: i64,
    },
}

/// The line a record starts on, from its byte offset: the reader's own
/// line count is one short after a CRLF (it counts the `\n` of the line
/// before as part of the record). Counts forward only, so a file's lines
/// are counted once in all.
struct LineCounter<'a> {
    body: &'a [u8],
    at: usize,
    newlines: u64,
}

impl LineCounter<'_> {
    fn line_at(&mut self, offset: usize) -> u64 {
        // The record starts past the line ends (and blank lines) before it.
        let mut start = offset.min(self.body.len());
        while start < self.body.len() && matches!(self.body[start], b'\r' | b'\n') {
            start += 1;
        }
        if start >= self.at {
            self.newlines += self.body[self.at..start]
                .iter()
                .filter(|&&c| c == b'\n')
                .count() as u64;
            self.at = start;
        }
        self.newlines + 1
    }
}

/// Reads the file: its kind from the header, then each row checked on its
/// own. Errors of the file as a whole (no header, unknown columns) are a
/// 422; errors of a row are that row's refusal.
fn parse_file(body: &[u8]) -> Result<(ImportKind, Vec<GoodRow>, Vec<RefusedRow>), ApiError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ApiError::invalid("file", format!("the header cannot be read: {e}")))?
        .iter()
        .map(str::to_ascii_lowercase)
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let sku_at =
        column("sku").ok_or_else(|| ApiError::invalid("file", "the header has no `sku` column"))?;
    let (kind, value_at, reason_at) =
        match (column("quantity"), column("reason"), column("counted")) {
            (Some(q), Some(r), None) => (ImportKind::Adjustments, q, Some(r)),
            (None, None, Some(c)) => (ImportKind::Counts, c, None),
            _ => return Err(ApiError::invalid(
                "file",
                "the header must be `sku,quantity,reason` (adjustments) or `sku,counted` (counts)",
            )),
        };
    let mut good = Vec::new();
    let mut refused = Vec::new();
    let mut lines = LineCounter {
        body,
        at: 0,
        newlines: 0,
    };
    for (index, record) in reader.records().enumerate() {
        if index >= MAX_ROWS {
            return Err(ApiError::invalid(
                "file",
                format!("holds more than {MAX_ROWS} rows: split it"),
            ));
        }
        let line = match record.as_ref().ok().and_then(|r| r.position()) {
            Some(position) => lines.line_at(position.byte() as usize),
            None => index as u64 + 2,
        };
        let refuse = |sku: Option<&str>, reason: String| RefusedRow {
            line,
            sku: sku.map(str::to_string),
            reason,
        };
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                refused.push(refuse(None, format!("unreadable: {e}")));
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue; // a blank line
        }
        let field = |at: usize| record.get(at).unwrap_or("");
        let sku = field(sku_at);
        if sku.is_empty() {
            refused.push(refuse(None, "sku: missing".into()));
            continue;
        }
        if let Err(e) = Sku::parse(sku) {
            refused.push(refuse(Some(sku), format!("sku: {e}")));
            continue;
        }
        let value = field(value_at);
        let change = match kind {
            ImportKind::Adjustments => {
                let delta = match value
                    .parse::<i64>()
                    .map_err(|_| "must be a whole number".to_string())
                    .and_then(|d| parse_delta(d).map_err(|e| e.0))
                {
                    Ok(delta) => delta,
                    Err(e) => {
                        refused.push(refuse(Some(sku), format!("quantity: {e}")));
                        continue;
                    }
                };
                let raw = field(reason_at.expect("adjustments have a reason column"));
                let Some(reason) = AdjustmentReason::parse(&raw.to_ascii_lowercase()) else {
                    let names: Vec<&str> =
                        AdjustmentReason::ALL.iter().map(|r| r.as_str()).collect();
                    refused.push(refuse(
                        Some(sku),
                        format!("reason: `{raw}` is not one of {}", names.join(", ")),
                    ));
                    continue;
                };
                RowChange::Adjust { delta, reason }
            }
            ImportKind::Counts => match value
                .parse::<i64>()
                .map_err(|_| "must be a whole number".to_string())
                .and_then(|c| parse_counted(c).map_err(|e| e.0))
            {
                Ok(counted) => RowChange::Count { counted },
                Err(e) => {
                    refused.push(refuse(Some(sku), format!("counted: {e}")));
                    continue;
                }
            },
        };
        good.push(GoodRow {
            line,
            sku: sku.to_string(),
            change,
        });
    }
    Ok((kind, good, refused))
}

/// Imports a CSV of adjustments or counts.
#[utoipa::path(post, path = "/api/imports/stock", operation_id = "import_stock", tag = "stock",
    request_body(content = String, content_type = "text/csv",
        description = "A header, then one row per change: `sku,quantity,reason` (adjustments: quantity a non-zero whole number within ±1,000,000, reason one of damaged, shrinkage, found, correction, cycle_count, transit_loss, returned) or `sku,counted` (counts: 0 to 1,000,000,000). UTF-8, a BOM and CRLF line ends accepted; at most 16 MiB and 200,000 rows."),
    responses((status = 202, description = "Every row accounted for: appended, imported before, or refused with its line and why", body = ImportOutcome),
        (status = 413, description = "The file is over 16 MiB", body = ErrorBody),
        (status = 415, description = "The body is not text/csv", body = ErrorBody),
        (status = 422, description = "The file as a whole is unusable: no header, unknown columns, too many rows", body = ErrorBody)))]
#[tracing::instrument(name = "imports::stock", level = "debug", skip_all)]
pub async fn stock(
    State(state): State<AppState>,
    ids: WriteIds,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let csv = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/csv"));
    if !csv {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the file as text/csv",
        ));
    }
    let body = axum::body::to_bytes(body, MAX_IMPORT_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the file is over {} MiB: split it",
                    MAX_IMPORT_BYTES / 1024 / 1024
                ),
            )
        })?;
    let file = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&body));
    let (kind, good, mut refused) = parse_file(&body)?;
    let rows = good.len() + refused.len();

    let skus: Vec<String> = good.iter().map(|r| r.sku.clone()).collect();
    let products = state.store.product_ids_by_sku(&skus).await?;
    let id_of = |line: u64, what: &str| {
        Uuid::new_v5(
            &IMPORT_NAMESPACE,
            format!("{file}/{line}/{what}").as_bytes(),
        )
    };
    let mut rows_to_append = Vec::with_capacity(good.len());
    for row in good {
        match products.get(&row.sku) {
            Some(&product_id) => rows_to_append.push((row, product_id)),
            None => refused.push(RefusedRow {
                line: row.line,
                sku: Some(row.sku),
                reason: "sku: no such product".into(),
            }),
        }
    }
    let adjustment_ids: Vec<AdjustmentId> = rows_to_append
        .iter()
        .map(|(row, _)| AdjustmentId(id_of(row.line, "adjustment")))
        .collect();
    let known = state.store.known_adjustments(&adjustment_ids).await?;
    let now = Utc::now();
    let already_imported = known.len();
    let to_append: Vec<(GoodRow, ProductId, AdjustmentId)> = rows_to_append
        .into_iter()
        .zip(adjustment_ids)
        .filter(|(_, id)| !known.contains(id))
        .map(|((row, product_id), adjustment_id)| (row, product_id, adjustment_id))
        .collect();
    // Each row's event is made as its append starts, so the file's rows
    // are held small (line, sku, change), not as envelopes.
    let envelope_of = |row: &GoodRow, product_id: ProductId, adjustment_id: AdjustmentId| {
        let reference = Some(format!("import {}:{}", &file[..12], row.line));
        let event = match row.change {
            RowChange::Adjust { delta, reason } => {
                DomainEvent::StockAdjustmentRequested(StockAdjustmentRequested {
                    location_id: None,
                    adjustment_id,
                    product_id,
                    delta,
                    reason,
                    reference,
                    note: None,
                    expected_on_hand: None,
                })
            }
            RowChange::Count { counted } => DomainEvent::StockCounted(StockCounted {
                location_id: None,
                adjustment_id,
                product_id,
                counted,
                counted_at: now.timestamp_millis(),
                expected_on_hand: None,
                reference,
                note: None,
            }),
        };
        event
            .into_envelope_with_id(id_of(row.line, "event"), now)
            .sent_by(ids.actor())
    };
    let appended: Vec<Result<(), RefusedRow>> = futures::stream::iter(to_append)
        .map(|(row, product_id, adjustment_id)| {
            let envelope = envelope_of(&row, product_id, adjustment_id);
            let state = state.clone();
            async move {
                state
                    .append(&envelope)
                    .await
                    .map(|_| ())
                    .map_err(|e| RefusedRow {
                        line: row.line,
                        sku: Some(row.sku),
                        reason: format!(
                            "not appended ({}): {}; upload the file again",
                            e.code, e.message
                        ),
                    })
            }
        })
        .buffer_unordered(APPENDS_AT_ONCE)
        .collect()
        .await;
    let mut accepted = 0;
    for result in appended {
        match result {
            Ok(()) => accepted += 1,
            Err(row) => refused.push(row),
        }
    }
    refused.sort_by_key(|r| r.line);
    let refused_count = refused.len();
    refused.truncate(REFUSALS_LISTED);
    Ok((
        StatusCode::ACCEPTED,
        Json(ImportOutcome {
            file,
            kind,
            rows,
            accepted,
            already_imported,
            refused_count,
            refused,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_row_by_row_with_a_bom_and_crlf() {
        let file = b"\xEF\xBB\xBFSKU,Quantity,Reason\r\nA-1,-2,damaged\r\nB-2,0,found\r\n\r\nC-3,4,stolen\r\n,1,found\r\nD-4,x,found\r\n";
        let (kind, good, refused) = parse_file(file).unwrap();
        assert_eq!(kind, ImportKind::Adjustments);
        assert_eq!(good.len(), 1);
        assert_eq!((good[0].line, good[0].sku.as_str()), (2, "A-1"));
        let why: Vec<(u64, &str)> = refused
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(why.len(), 4, "{why:?}");
        assert_eq!(why[0].0, 3);
        assert!(why[0].1.starts_with("quantity:"), "{why:?}");
        assert!(why[1].1.starts_with("reason:"), "{why:?}");
        assert!(why[2].1.starts_with("sku:"), "{why:?}");
        assert!(why[3].1.starts_with("quantity:"), "{why:?}");
        let (kind, good, refused) = parse_file(b"sku,counted\nA-1,7\n\nB-2,x\n").unwrap();
        assert_eq!((kind, good.len()), (ImportKind::Counts, 1));
        assert_eq!((good[0].line, refused[0].line), (2, 4));
        assert!(parse_file(b"sku,amount\nA-1,7\n").is_err());
        assert!(parse_file(b"").is_err());
    }
}
