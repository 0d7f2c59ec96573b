//! `GET /api/feed`: the archive in `seq` order for other systems to follow
//! (see `store::feed` for why a cursor never skips an event). As JSON it
//! is a long poll: a page after the cursor, or, when nothing is newer, a
//! wait of up to `wait` seconds that the workers' commit announcements end
//! (see `stream::announce`). With `Accept: text/event-stream` it is the
//! same as Server-Sent Events, each event's id its `seq`, so a client that
//! reconnects with `Last-Event-ID` resumes after the last one it got.

use super::error::ApiError;
use super::extract::{page_limit, ApiQuery};
use super::long_poll::MAX_WAIT_SECS;
use super::responses::ErrorBody;
use super::AppState;
use crate::store::feed::{FeedEvent, FeedPage, TypeFilter};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::watch;

/// How often a waiting reader re-reads the archive's head with no
/// announcement: what a lost announcement (they are best effort) costs.
const FALLBACK_CHECK: Duration = Duration::from_secs(1);
/// Events a stream reads per page.
const STREAM_PAGE: i64 = 500;

/// Commits the gateway heard of: a counter every announcement bumps, which
/// waiting feed readers watch. One per gateway.
#[derive(Debug)]
pub struct FeedWake {
    commits: watch::Sender<u64>,
    /// Streams open at once (`--max-feed-streams`).
    streams: std::sync::Arc<tokio::sync::Semaphore>,
}

impl FeedWake {
    pub fn new(max_streams: usize) -> FeedWake {
        FeedWake {
            commits: watch::Sender::new(0),
            streams: std::sync::Arc::new(tokio::sync::Semaphore::new(max_streams.max(1))),
        }
    }

    /// A worker committed a batch: wake the readers.
    pub fn committed(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }
}

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    after: Option<i64>,
    limit: Option<i64>,
    types: Option<String>,
    wait: Option<u64>,
}

/// What a feed request asks for, checked.
struct FeedRequest {
    after: i64,
    limit: i64,
    types: TypeFilter,
    wait: Duration,
}

impl FeedRequest {
    fn parse(query: FeedQuery, last_event_id: Option<i64>) -> Result<FeedRequest, ApiError> {
        let after = match (query.after, last_event_id) {
            (Some(after), _) | (None, Some(after)) => after,
            (None, None) => 0,
        };
        if after < 0 {
            return Err(ApiError::invalid(
                "after",
                "must be a seq (0 or more; 0 is the beginning)",
            ));
        }
        let wait = query.wait.unwrap_or(0);
        if wait > MAX_WAIT_SECS {
            return Err(ApiError::invalid(
                "wait",
                format!("must be between 0 and {MAX_WAIT_SECS} seconds"),
            ));
        }
        Ok(FeedRequest {
            after,
            limit: page_limit(query.limit)?,
            types: TypeFilter::parse(query.types.as_deref().unwrap_or(""))
                .map_err(|problem| ApiError::invalid("types", problem))?,
            wait: Duration::from_secs(wait),
        })
    }
}

/// The events after a cursor, in `seq` order; waits for new ones with
/// `wait`. `Accept: text/event-stream` streams them instead.
#[utoipa::path(get, path = "/api/feed", operation_id = "read_feed", tag = "integrations",
    params(
        ("after" = Option<i64>, Query, description = "The cursor: events with a greater seq (default 0, the beginning). A stream may resume with Last-Event-ID instead."),
        ("limit" = Option<i64>, Query, description = "Events per page, 1 to 1000 (default 100)"),
        ("types" = Option<String>, Query, description = "Comma-separated event types, or families such as order.*; the order is the same with or without"),
        ("wait" = Option<u64>, Query, description = "Seconds (0 to 30) to wait for an event when none is newer than the cursor"),
        ("Last-Event-ID" = Option<i64>, Header, description = "For a stream: the seq of the last event received"),
    ),
    responses(
        (status = 200, description = "A page of events and the next cursor; as text/event-stream, every event after the cursor as it commits", content((FeedPage = "application/json"), (String = "text/event-stream"))),
        (status = 409, description = "The cursor is beyond the feed's head (a cursor from another deployment, or from before a restore)", body = ErrorBody),
        (status = 422, description = "A bad cursor, limit, type or wait", body = ErrorBody),
        (status = 503, description = "Too many streams are open", body = ErrorBody)))]
#[tracing::instrument(name = "feed::read", level = "debug", skip_all)]
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<FeedQuery>,
) -> Result<Response, ApiError> {
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be a seq"))?,
        ),
    };
    let request = FeedRequest::parse(query, last_event_id.filter(|_| streaming))?;
    let head = state.store.feed_head().await?;
    if request.after > head {
        return Err(ApiError::conflict(format!(
            "the cursor {} is beyond the feed's head ({head}): it is not from this deployment's archive",
            request.after
        )));
    }
    if streaming {
        stream(state, request)
    } else {
        Ok(Json(long_poll(&state, request).await?).into_response())
    }
}

/// A page after the cursor; if it is empty and the reader is at the head,
/// waits for a commit (or the fallback check) until `wait` runs out.
async fn long_poll(state: &AppState, request: FeedRequest) -> Result<FeedPage, ApiError> {
    let deadline = tokio::time::Instant::now() + request.wait;
    let mut commits = state.feed_wake.watch();
    let mut after = request.after;
    loop {
        // Marked seen before the read: a commit after it wakes the wait.
        commits.borrow_and_update();
        let page = state
            .store
            .feed_page(after, request.limit, &request.types)
            .await?;
        let now = tokio::time::Instant::now();
        if !page.events.is_empty() || now >= deadline || state.shutdown.is_cancelled() {
            return Ok(page);
        }
        if page.next < page.head {
            // The filter passed over a scan's worth: go on from there.
            after = page.next;
            continue;
        }
        after = page.next;
        let until = deadline.min(now + FALLBACK_CHECK);
        tokio::select! {
            _ = commits.changed() => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

/// The stream's state between two events sent.
struct Streaming {
    state: AppState,
    commits: watch::Receiver<u64>,
    after: i64,
    types: TypeFilter,
    ready: VecDeque<FeedEvent>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

fn stream(state: AppState, request: FeedRequest) -> Result<Response, ApiError> {
    let Ok(permit) = state.feed_wake.streams.clone().try_acquire_owned() else {
        metrics::counter!(crate::telemetry::metrics::REQUESTS_SHED, "reason" => "feed_streams")
            .increment(1);
        return Err(ApiError::overloaded(
            "too many feed streams are open; retry shortly",
        ));
    };
    let streaming = Streaming {
        commits: state.feed_wake.watch(),
        state,
        after: request.after,
        types: request.types,
        ready: VecDeque::new(),
        _permit: permit,
    };
    let events = futures::stream::unfold(streaming, |mut s| async move {
        let event = s.next_event().await?;
        let sse = Event::default()
            .id(event.seq.to_string())
            .event(event.envelope.event_type.as_str())
            .json_data(&event)
            .expect("feed events serialize");
        Some((Ok::<_, Infallible>(sse), s))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

impl Streaming {
    /// The next event to send, waiting for one as long as it takes; None
    /// ends the stream (the gateway stops, or the archive cannot be read:
    /// the client reconnects with Last-Event-ID and loses nothing).
    async fn next_event(&mut self) -> Option<FeedEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.state.shutdown.is_cancelled() {
                return None;
            }
            self.commits.borrow_and_update();
            let page = match self
                .state
                .store
                .feed_page(self.after, STREAM_PAGE, &self.types)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "a feed stream cannot read the archive; ending it");
                    return None;
                }
            };
            self.after = page.next;
            if !page.events.is_empty() {
                self.ready.extend(page.events);
                continue;
            }
            if page.next < page.head {
                continue;
            }
            tokio::select! {
                _ = self.commits.changed() => {}
                _ = tokio::time::sleep(FALLBACK_CHECK) => {}
                _ = self.state.shutdown.cancelled() => return None,
            }
        }
    }
}
