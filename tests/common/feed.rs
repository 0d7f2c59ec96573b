//! Clients of the integration feed, as an integrator would write them: one
//! that long-polls `GET /api/feed` with `wait`, one that reads its
//! Server-Sent Events and reconnects with `Last-Event-ID`. Each records
//! every event it got, in the order it got them, and checks its cursor as
//! it goes; `compare` holds what they saw against the archive.

use super::Api;
use serde_json::Value;
use std::time::Duration;
use streamstock::store::Store;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a follower saw: each event's (seq, id), in the order received, and
/// how its cursor went.
#[derive(Debug, Default, Clone)]
pub struct Followed {
    pub events: Vec<(i64, Uuid)>,
    /// Requests (or connections, for a stream) made.
    pub requests: u64,
    /// Pages answered early by a commit (long poll) rather than by `wait`.
    pub woken: u64,
    /// A page whose `next` was below its cursor, or events out of order:
    /// what a correct feed never gives.
    pub cursor_faults: Vec<String>,
}

/// Long-polls the feed from the beginning until `stop` and then until it
/// has reached `head_at_stop()` (the archive's head once the load ended).
pub async fn follow_long_poll(
    api: &Api,
    stop: CancellationToken,
    types: Option<&str>,
    wait_s: u64,
) -> Followed {
    let mut seen = Followed::default();
    let mut after = 0i64;
    let mut caught_up_after_stop = false;
    while !caught_up_after_stop {
        let filter = types.map(|t| format!("&types={t}")).unwrap_or_default();
        let path = format!("/api/feed?after={after}&limit=200&wait={wait_s}{filter}");
        let started = std::time::Instant::now();
        let (status, page) = match tokio::time::timeout(
            Duration::from_secs(wait_s + 20),
            api.http.get(api.url(&path)).send(),
        )
        .await
        {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
            // The gateway restarting, say: ask again from the same cursor.
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seen.requests += 1;
        if status != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let next = page["next"].as_i64().expect("a page has next");
        let head = page["head"].as_i64().expect("a page has head");
        if next < after {
            seen.cursor_faults
                .push(format!("after={after} answered next={next}"));
        }
        for event in &events {
            let seq = event["seq"].as_i64().expect("seq");
            let id: Uuid = event["event_id"].as_str().unwrap().parse().unwrap();
            if seq <= seen.events.last().map_or(after, |e| e.0.max(after)) {
                seen.cursor_faults
                    .push(format!("seq {seq} after {:?}", seen.events.last()));
            }
            seen.events.push((seq, id));
        }
        if !events.is_empty() && started.elapsed() > Duration::from_millis(50) {
            seen.woken += 1;
        }
        after = next;
        caught_up_after_stop = stop.is_cancelled() && events.is_empty() && next >= head;
    }
    seen
}

/// Reads the feed's Server-Sent Events from the beginning, dropping the
/// connection every `reconnect_every` events and resuming with
/// `Last-Event-ID`, until `stop` and then until `head` is reached.
pub async fn follow_stream(
    api: &Api,
    stop: CancellationToken,
    reconnect_every: usize,
    head: impl Fn() -> i64,
) -> Followed {
    let mut seen = Followed::default();
    loop {
        let last = seen.events.last().map(|e| e.0);
        if stop.is_cancelled() && last.unwrap_or(0) >= head() {
            return seen;
        }
        let mut request = api
            .http
            .get(api.url("/api/feed"))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600));
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        seen.requests += 1;
        let Ok(mut response) = request.send().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if response.status() != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut buffer = String::new();
        let mut this_connection = 0;
        'connection: loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                // Checked now and then, so a follower at the head notices
                // the stop.
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stop.is_cancelled() && seen.events.last().map_or(0, |e| e.0) >= head() {
                        return seen;
                    }
                    continue;
                }
            };
            let Ok(Some(chunk)) = chunk else { break };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            // An event ends at a blank line.
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().parse::<i64>().expect("an id is a seq"));
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                let Some(seq) = id else { continue }; // a keep-alive comment
                let event: Value = serde_json::from_str(&data).expect("data is JSON");
                assert_eq!(event["seq"].as_i64(), Some(seq), "the id is the seq");
                if let Some(&(previous, _)) = seen.events.last() {
                    if seq <= previous {
                        seen.cursor_faults
                            .push(format!("seq {seq} after {previous}"));
                    }
                }
                let event_id: Uuid = event["event_id"].as_str().unwrap().parse().unwrap();
                seen.events.push((seq, event_id));
                this_connection += 1;
                if this_connection >= reconnect_every {
                    break 'connection;
                }
            }
        }
    }
}

/// The archive as the feed should give it: every event's (seq, id) in
/// `seq` order, of the types listed (all if None).
pub async fn archive(store: &Store, types: Option<&[&str]>) -> Vec<(i64, Uuid)> {
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, event_id, event_type FROM event_archive ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    rows.into_iter()
        .filter(|(_, _, t)| types.is_none_or(|types| types.contains(&t.as_str())))
        .map(|(seq, id, _)| (seq, id.parse().unwrap()))
        .collect()
}

/// What a follower got wrong against the archive: events it never got,
/// events it got twice, and its cursor faults; empty if it saw exactly
/// the archive, in order.
pub fn compare(seen: &Followed, archive: &[(i64, Uuid)]) -> Vec<String> {
    let mut problems = seen.cursor_faults.clone();
    let got: std::collections::HashMap<Uuid, usize> =
        seen.events
            .iter()
            .fold(Default::default(), |mut counts, (_, id)| {
                *counts.entry(*id).or_default() += 1;
                counts
            });
    let missing: Vec<&(i64, Uuid)> = archive
        .iter()
        .filter(|(_, id)| !got.contains_key(id))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} archived events never received, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    let twice = got.values().filter(|&&n| n > 1).count();
    if twice > 0 {
        problems.push(format!("{twice} events received more than once"));
    }
    if problems.is_empty() && seen.events != archive {
        problems.push("received in another order than the archive's".into());
    }
    problems
}
