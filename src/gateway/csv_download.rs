//! CSV downloads streamed a page at a time (the ledger, the products): the
//! header with the first page, then each page as it is read, so a download
//! holds one page in memory however long it is.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;

/// Rows read per chunk.
pub(super) const PAGE: i64 = 1_000;

/// Reads the page after `cursor` (None: the first), of at most `limit` rows.
pub(super) type PageReader<R, C> =
    Box<dyn FnMut(Option<C>, i64) -> BoxFuture<'static, Result<Vec<R>, String>> + Send>;

/// How a download turns its rows into CSV.
pub(super) struct CsvShape<R, C> {
    pub header: &'static [&'static str],
    pub record: fn(&R) -> Vec<String>,
    /// The cursor a row leaves for the next page.
    pub cursor: fn(&R) -> C,
}

/// A `text/csv` attachment named `filename`: every row `read` gives,
/// `limit` at most (None: all).
pub(super) fn download<R, C>(
    filename: &str,
    shape: CsvShape<R, C>,
    read: PageReader<R, C>,
    first_cursor: Option<C>,
    limit: Option<i64>,
) -> Response
where
    R: Send + 'static,
    C: Send + 'static,
{
    struct State<R, C> {
        shape: CsvShape<R, C>,
        read: PageReader<R, C>,
        cursor: Option<C>,
        left: Option<i64>,
        header_sent: bool,
        done: bool,
    }
    let state = State {
        shape,
        read,
        cursor: first_cursor,
        left: limit,
        header_sent: false,
        done: false,
    };
    let chunks = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let page = state.left.map_or(PAGE, |left| left.min(PAGE));
        let rows = match (state.read)(state.cursor.take(), page).await {
            Ok(rows) => rows,
            // The status is sent: cut the body short, so the client sees a
            // broken download rather than a short file that looks whole.
            Err(e) => {
                tracing::warn!(error = %e, "reading a page of a CSV download failed");
                state.done = true;
                return Some((Err(std::io::Error::other(e)), state));
            }
        };
        state.done = (rows.len() as i64) < page;
        if let Some(left) = state.left.as_mut() {
            *left -= rows.len() as i64;
            state.done |= *left <= 0;
        }
        state.cursor = rows.last().map(state.shape.cursor);
        let chunk = csv_chunk(&state.shape, &rows, !state.header_sent);
        state.header_sent = true;
        Some((chunk.map(Bytes::from), state))
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

fn csv_chunk<R, C>(
    shape: &CsvShape<R, C>,
    rows: &[R],
    with_header: bool,
) -> Result<Vec<u8>, std::io::Error> {
    let mut out = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 160));
    if with_header {
        out.write_record(shape.header)?;
    }
    for row in rows {
        out.write_record((shape.record)(row))?;
    }
    out.into_inner().map_err(|e| e.into_error())
}

/// Whether the client asked for CSV (`Accept: text/csv`).
pub(super) fn wants_csv(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"))
}
