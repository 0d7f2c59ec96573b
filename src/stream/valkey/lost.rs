//! Finding entries Valkey delivered and then lost. Replication is
//! asynchronous: a failover to a replica that had not received the last
//! appends, or a restart from an AOF that had not fsynced them, loses
//! entries a worker may already have read and applied. Those are absent
//! from the stream yet newer than anything the stream ever deleted, which
//! is how they are told from entries trimmed once every group acked them.

use super::{unavailable, RawEntry, ValkeyLog};
use crate::stream::{EntryId, LogError, Partition};
use fred::prelude::*;
use futures::stream::{BoxStream, StreamExt};
use std::collections::{HashMap, HashSet};
use tokio::sync::broadcast::{self, error::RecvError};

/// XRANGEs per pipeline: a round trip for this many entries.
const PER_PIPELINE: usize = 500;

pub(super) async fn lost_entries(
    log: &ValkeyLog,
    partition: Partition,
    ids: &[EntryId],
) -> Result<Vec<EntryId>, LogError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let key = log.stream_key(partition);
    let exists: u64 = log.client.exists(&key).await.map_err(unavailable)?;
    if exists == 0 {
        // The whole stream is gone: a failover to a replica that never had
        // it, or a server that came back empty.
        return Ok(ids.to_vec());
    }
    let stream: HashMap<String, Value> = log
        .client
        .xinfo_stream(&key, false, None)
        .await
        .map_err(unavailable)?;
    let id_field = |name: &str| -> Option<EntryId> {
        match stream.get(name)? {
            Value::Array(entry) => entry.first()?.as_string()?.parse().ok(),
            other => other.as_string()?.parse().ok(),
        }
    };
    // Everything at or below the highest id ever deleted was trimmed (or
    // deleted) on purpose: the trim records it (XTRIM alone does not; see
    // TRIM_ACKED). A stream never trimmed since (`0-0`: a release before
    // this one trimmed it, or a server before 7.0) falls back to what is
    // still kept: below the first entry, or anything up to the last id
    // generated when none is left, counts as trimmed. That can miss a loss
    // but never cries wolf.
    let zero = EntryId { ms: 0, seq: 0 };
    let trimmed_through = id_field("max-deleted-entry-id").filter(|id| *id != zero);
    let first_kept = id_field("first-entry");
    let last_generated = id_field("last-generated-id");
    let trimmed = |id: &EntryId| match (trimmed_through, first_kept) {
        (Some(through), _) => *id <= through,
        (None, Some(first)) => *id < first,
        (None, None) => last_generated.is_none_or(|last| *id <= last),
    };
    let candidates: Vec<EntryId> = ids.iter().copied().filter(|id| !trimmed(id)).collect();
    let mut present = HashSet::new();
    for chunk in candidates.chunks(PER_PIPELINE) {
        let pipeline = log.client.pipeline();
        for id in chunk {
            let id = id.to_string();
            let _: () = pipeline
                .xrange(&key, id.as_str(), id.as_str(), Some(1))
                .await
                .map_err(unavailable)?;
        }
        let found: Vec<Vec<RawEntry>> = pipeline.all().await.map_err(unavailable)?;
        for (id, entries) in chunk.iter().zip(found) {
            if !entries.is_empty() {
                present.insert(*id);
            }
        }
    }
    Ok(candidates
        .into_iter()
        .filter(|id| !present.contains(id))
        .collect())
}

/// One item each time any of `clients` connects again, or learns that the
/// cluster changed shape (a primary replaced, slots moved).
pub(super) fn reconnects(clients: &[&Client]) -> BoxStream<'static, ()> {
    let mut heard: Vec<BoxStream<'static, ()>> = Vec::new();
    for client in clients {
        heard.push(each(client.reconnect_rx()));
        heard.push(each(client.cluster_change_rx()));
    }
    futures::stream::select_all(heard).boxed()
}

/// A unit for each message of `rx` (messages missed while lagging count as
/// one), ending when the sender is gone.
fn each<T: Clone + Send + 'static>(rx: broadcast::Receiver<T>) -> BoxStream<'static, ()> {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => Some(((), rx)),
            Err(RecvError::Closed) => None,
        }
    })
    .boxed()
}
