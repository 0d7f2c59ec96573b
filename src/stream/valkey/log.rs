//! The Valkey backend's event log: XADD (+ WAITAOF) appends, consumer-group
//! reads, take-over of a dead consumer's pending entries, acks, trimming,
//! and dead letters in a stream of their own.

use super::answers::PendingSummary;
use super::fenced::FencedRead;
use super::group_commit::xadd_on_one_connection;
use super::{unavailable, RawEntry, ValkeyLog, FIELD};
use crate::domain::Envelope;
use crate::stream::dead_letter::DeadLetter;
use crate::stream::Durability;
use crate::stream::{
    AppendReceipt, Consumer, Delivery, EntryId, Epoch, EventLog, Holdings, LogError, Partition,
    PartitionStats, Trimmed,
};
use async_trait::async_trait;
use fred::prelude::*;
use fred::types::streams::XReadResponse;
use std::collections::HashMap;
use std::time::Duration;

#[async_trait]
impl EventLog for ValkeyLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn describe(&self) -> String {
        let durability = match self.durability {
            Durability::Strict => "strict".to_string(),
            Durability::Replicated => format!("replicated to {}", self.min_replicas),
            Durability::Relaxed => "relaxed".to_string(),
        };
        let server = if self.cluster {
            "Valkey Cluster"
        } else {
            "Valkey"
        };
        let described = format!(
            "{server} streams at {} ({durability} durability)",
            self.url_for_display
        );
        match &self.caveat {
            Some(caveat) => format!("{described}; {caveat}"),
            None => described,
        }
    }

    #[tracing::instrument(name = "valkey::append", level = "trace", skip_all, fields(key = %envelope.key))]
    async fn append(&self, envelope: &Envelope) -> Result<AppendReceipt, LogError> {
        let partition = self.partition_of(&envelope.key);
        let key = self.stream_key(partition);
        let id = if self.durability == Durability::Relaxed {
            self.xadd_json(key, envelope).await?
        } else {
            let json =
                serde_json::to_string(envelope).map_err(|e| LogError::Corrupt(e.to_string()))?;
            let node = self.primary_of(&key);
            let (id, connection) = xadd_on_one_connection(
                &self.client,
                node.as_ref(),
                key.clone(),
                vec![(FIELD, json)],
            )
            .await?;
            // Looked up again after the XADD: a redirect (the slot moved)
            // has updated the client's map of the cluster by then, and an
            // XADD that went elsewhere is not confirmed by this node.
            if self.primary_of(&key) != node {
                return Err(LogError::OutcomeUnknown(format!(
                    "the Valkey Cluster moved {key}'s slot during the append"
                )));
            }
            self.aof.synced(&self.client, &connection).await?;
            id
        };
        Ok(AppendReceipt {
            partition,
            id: id.parse()?,
        })
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        partitions: &[Partition],
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        self.ensure_group(group).await?;
        if partitions.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(Vec::new());
        }
        // COUNT applies per stream: share `max` among them.
        let per_stream = max.div_ceil(partitions.len()).max(1);
        let read = if self.cluster {
            self.poll_each_partition(group, consumer, partitions, per_stream, block)
                .await
        } else {
            self.xreadgroup(group, consumer, partitions, per_stream, Some(block))
                .await
        };
        read.inspect_err(|e| self.forget_vanished_groups(e))
    }

    async fn ack(&self, group: &str, entries: &[(Partition, EntryId)]) -> Result<(), LogError> {
        let mut by_partition: HashMap<Partition, Vec<String>> = HashMap::new();
        for (p, id) in entries {
            by_partition.entry(*p).or_default().push(id.to_string());
        }
        // Concurrently: the XACKs share one round trip (and, with
        // appendfsync always, one fsync) instead of one per partition.
        let acks = by_partition.into_iter().map(|(p, ids)| async move {
            let _: i64 = self
                .client
                .xack(self.stream_key(p), group, ids)
                .await
                .map_err(unavailable)?;
            Ok::<(), LogError>(())
        });
        for result in futures::future::join_all(acks).await {
            result?;
        }
        Ok(())
    }

    #[tracing::instrument(name = "valkey::read_fenced", level = "trace", skip_all, fields(consumer = %consumer.name, partitions = held.len()))]
    async fn read_fenced(
        &self,
        consumer: &Consumer,
        held: &Holdings,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        self.ensure_group(&consumer.group).await?;
        if held.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(Vec::new());
        }
        let per_stream = max.div_ceil(held.len()).max(1);
        let deadline = tokio::time::Instant::now() + block;
        let mut poll = ClusterPoll::until(deadline);
        loop {
            let mut out = Vec::new();
            let mut last_ids = Vec::new();
            let reads = self
                .fenced_read(consumer, held, per_stream)
                .await
                .inspect_err(|e| self.forget_vanished_groups(e))?;
            for read in reads {
                match read {
                    FencedRead::Entries(entries) => out.extend(entries),
                    FencedRead::Nothing { partition, last_id } => {
                        last_ids.push((partition, last_id))
                    }
                    FencedRead::NotHeld(partition) => {
                        tracing::debug!(
                            partition = partition.0,
                            "not reading a partition whose lease moved on"
                        )
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if !out.is_empty() {
                self.confirmed(&consumer.group, &out).await?;
                return Ok(out);
            }
            if now >= deadline {
                return Ok(out);
            }
            if last_ids.is_empty() {
                // No partition is held any more: nothing to wait for until
                // the coordinator says so. Waiting out `block`, as with no
                // partition at all, keeps the read stage from spinning on
                // Valkey meanwhile.
                tokio::time::sleep_until(deadline).await;
                return Ok(out);
            }
            if self.cluster {
                // One XREAD cannot cross slots either: poll (see
                // poll_each_partition).
                if !poll.pause().await {
                    return Ok(out);
                }
                continue;
            }
            // Wait for an entry after the last one of each stream: XREAD
            // hands nothing out (it moves no group's cursor), so a wait in
            // flight while its worker is paused does no harm.
            let keys: Vec<String> = last_ids.iter().map(|(p, _)| self.stream_key(*p)).collect();
            let ids: Vec<String> = last_ids.into_iter().map(|(_, id)| id).collect();
            let _: Value = self
                .reader
                .xread(
                    Some(1),
                    Some((deadline - now).as_millis().max(1) as u64),
                    keys,
                    ids,
                )
                .await
                .map_err(unavailable)?;
        }
    }

    #[tracing::instrument(name = "valkey::ack_fenced", level = "trace", skip_all, fields(consumer = %consumer.name, entries = entries.len()))]
    async fn ack_fenced(
        &self,
        consumer: &Consumer,
        entries: &[(Partition, EntryId)],
        held: &Holdings,
    ) -> Result<Vec<Partition>, LogError> {
        self.fenced_ack(consumer, entries, held).await
    }

    #[tracing::instrument(name = "valkey::take_over", level = "trace", skip_all, fields(consumer = %consumer.name, partition = partition.0, epoch = epoch.get()))]
    async fn take_over(
        &self,
        consumer: &Consumer,
        partition: Partition,
        epoch: Epoch,
    ) -> Result<Vec<Delivery>, LogError> {
        self.ensure_group(&consumer.group).await?;
        // No idle minimum: we hold the partition's lease, so whoever had
        // these entries has lost it.
        let claimed = self
            .fenced_claim(consumer, partition, epoch, Duration::ZERO)
            .await
            .inspect_err(|e| self.forget_vanished_groups(e))?;
        self.confirmed(&consumer.group, &claimed).await?;
        Ok(claimed)
    }

    async fn reclaim_stale(
        &self,
        consumer: &Consumer,
        partition: Partition,
        epoch: Epoch,
        min_idle: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        let summary: Value = self
            .client
            .xpending(self.stream_key(partition), consumer.group.as_str(), ())
            .await
            .map_err(unavailable)?;
        if !PendingSummary::parse(&summary).others_than(&consumer.name) {
            return Ok(Vec::new());
        }
        let claimed = self
            .fenced_claim(consumer, partition, epoch, min_idle)
            .await?;
        self.confirmed(&consumer.group, &claimed).await?;
        Ok(claimed)
    }

    async fn partition_stats(&self, group: &str) -> Result<Vec<PartitionStats>, LogError> {
        self.ensure_group(group).await?;
        let mut stats = Vec::new();
        for p in Partition::all(self.partitions) {
            let groups: Vec<HashMap<String, Value>> = self
                .client
                .xinfo_groups(self.stream_key(p))
                .await
                .map_err(unavailable)?;
            let info = groups
                .iter()
                .find(|g| g.get("name").and_then(|v| v.as_string()).as_deref() == Some(group));
            // XINFO STREAM: the length, and entries-added (Valkey >= 7;
            // older servers: the length stands in).
            let stream: HashMap<String, Value> = self
                .client
                .xinfo_stream(self.stream_key(p), false, None)
                .await
                .map_err(unavailable)?;
            let length = stream.get("length").and_then(|v| v.as_u64()).unwrap_or(0);
            let appended = stream
                .get("entries-added")
                .and_then(|v| v.as_u64())
                .unwrap_or(length);
            let (lag, pending) = match info {
                Some(info) => (
                    // `lag` is nil when Valkey cannot compute it (after
                    // deletions): the stream length is an upper bound.
                    info.get("lag").and_then(|v| v.as_u64()).unwrap_or(length),
                    info.get("pending").and_then(|v| v.as_u64()).unwrap_or(0),
                ),
                None => (length, 0),
            };
            let bytes: Option<u64> = self
                .client
                .custom(
                    // Routed by the key, MEMORY USAGE's second word.
                    fred::cmd!("MEMORY", hash: fred::types::ClusterHash::Offset(1)),
                    vec![Value::from("USAGE"), Value::from(self.stream_key(p))],
                )
                .await
                .map_err(unavailable)?;
            stats.push(PartitionStats {
                partition: p.0,
                length,
                bytes,
                lag,
                pending,
                appended,
            });
        }
        Ok(stats)
    }

    async fn trim(&self, partitions: &[Partition]) -> Result<Trimmed, LogError> {
        let mut trimmed = Trimmed::default();
        for &p in partitions {
            let removed: u64 = self
                .client
                .eval(
                    TRIM_ACKED,
                    vec![self.stream_key(p)],
                    vec![self.retention.as_millis().to_string()],
                )
                .await
                .map_err(unavailable)?;
            trimmed.entries += removed;
        }
        Ok(trimmed)
    }

    async fn dead_letter(&self, group: &str, letter: &DeadLetter) -> Result<String, LogError> {
        self.xadd_json(self.dead_letter_key(group), letter).await
    }

    async fn dead_letters(&self, group: &str, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        let entries: Vec<RawEntry> = self
            .client
            .xrange_values(self.dead_letter_key(group), "-", "+", Some(limit as u64))
            .await
            .map_err(unavailable)?;
        entries.into_iter().map(decode_dead_letter).collect()
    }

    async fn dead_letters_by_id(
        &self,
        group: &str,
        ids: &[String],
    ) -> Result<Vec<Option<DeadLetter>>, LogError> {
        // One pipelined XRANGE id id per letter: a round trip for the lot.
        // An id that is no stream id at all names no letter (Valkey would
        // refuse the whole pipeline for it).
        let asked: Vec<&String> = ids
            .iter()
            .filter(|id| id.parse::<EntryId>().is_ok())
            .collect();
        let pipeline = self.client.pipeline();
        for id in &asked {
            let _: () = pipeline
                .xrange(
                    self.dead_letter_key(group),
                    id.as_str(),
                    id.as_str(),
                    Some(1),
                )
                .await
                .map_err(unavailable)?;
        }
        let found: Vec<Vec<RawEntry>> = if asked.is_empty() {
            Vec::new()
        } else {
            pipeline.all().await.map_err(unavailable)?
        };
        let found = asked.into_iter().zip(found).collect::<HashMap<_, _>>();
        ids.iter()
            .map(|id| {
                let entry = found.get(id).and_then(|entries| entries.first()).cloned();
                entry.map(decode_dead_letter).transpose()
            })
            .collect()
    }

    async fn remove_dead_letters(&self, group: &str, ids: &[String]) -> Result<u64, LogError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.client
            .xdel(self.dead_letter_key(group), ids.to_vec())
            .await
            .map_err(unavailable)
    }

    async fn dead_letter_count(&self, group: &str) -> Result<u64, LogError> {
        self.client
            .xlen(self.dead_letter_key(group))
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), LogError> {
        let _: String = self.client.ping(None).await.map_err(unavailable)?;
        Ok(())
    }

    async fn lost_entries(
        &self,
        partition: Partition,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, LogError> {
        super::lost::lost_entries(self, partition, ids).await
    }

    fn reconnects(&self) -> futures::stream::BoxStream<'static, ()> {
        super::lost::reconnects(&[&self.client, &self.reader])
    }

    fn announce(&self, changes: crate::stream::announce::Announcement) {
        self.publish_announcement(changes);
    }

    fn announcements(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::stream::announce::Announcement> {
        self.subscribe_announcements()
    }
}

/// Trims a partition's stream below the oldest entry any consumer group
/// still needs, in one atomic step: for each group, its oldest pending
/// entry (delivered to some consumer, alive or dead, and not acked) or else
/// the entry after the last one it was delivered. With a retention (ARGV[1],
/// ms) entries newer than that stay too. A stream with no group is left
/// alone: nothing is known to be consumed. Returns the entries removed.
/// IDs are compared as numbers, never as strings.
const TRIM_ACKED: &str = r#"
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a_ms, a_seq, b_ms, b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local min_ms, min_seq = nil, nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local ms, seq
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', KEYS[1], info['name'])
    ms, seq = parse(summary[2])
  else
    ms, seq = parse(info['last-delivered-id'])
    seq = seq + 1
  end
  if min_ms == nil or less(ms, seq, min_ms, min_seq) then min_ms, min_seq = ms, seq end
end
local retention = tonumber(ARGV[1])
if retention > 0 then
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - retention
  if less(cutoff, 0, min_ms, min_seq) then min_ms, min_seq = cutoff, 0 end
end
local minid = string.format('%d-%d', min_ms, min_seq)
if min_ms == 0 and min_seq == 0 then return 0 end
-- The newest entry this trim removes is recorded as the stream's
-- max-deleted-entry-id, which XTRIM leaves alone (only XDEL sets it): an
-- entry absent from the stream yet newer than that was lost, not trimmed
-- (see lost.rs). A server without XSETID's MAXDELETEDID (before 7.0) just
-- leaves it unset.
local below = redis.call('XREVRANGE', KEYS[1], '(' .. minid, '-', 'COUNT', 1)
local removed = redis.call('XTRIM', KEYS[1], 'MINID', minid)
if removed > 0 and #below > 0 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  local newest = below[1][1]
  local deleted = fields['max-deleted-entry-id']
  if deleted ~= nil then
    local d_ms, d_seq = parse(deleted)
    local n_ms, n_seq = parse(newest)
    if less(d_ms, d_seq, n_ms, n_seq) then
      redis.pcall('XSETID', KEYS[1], fields['last-generated-id'], 'MAXDELETEDID', newest)
    end
  end
end
return removed
"#;

/// How an idle consumer on a cluster polls its partitions: the first wait
/// after an empty round, doubled after each one, up to the last.
const CLUSTER_POLL_FIRST: Duration = Duration::from_millis(1);
const CLUSTER_POLL_MAX: Duration = Duration::from_millis(25);

/// The waits between the empty rounds of a read polling a cluster, until
/// its deadline (see `poll_each_partition`).
struct ClusterPoll {
    deadline: tokio::time::Instant,
    wait: Duration,
}

impl ClusterPoll {
    fn until(deadline: tokio::time::Instant) -> ClusterPoll {
        ClusterPoll {
            deadline,
            wait: CLUSTER_POLL_FIRST,
        }
    }

    /// Waits before the next round; false once the deadline has passed.
    async fn pause(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.wait.min(self.deadline - now)).await;
        self.wait = (self.wait * 2).min(CLUSTER_POLL_MAX);
        true
    }
}

/// A fault for the negative control of `tests/replication.rs`, in debug
/// builds only: with `STREAMSTOCK_FAULT_SKIP_READ_CONFIRMATION` set, a
/// worker applies what it reads without waiting for the replicas.
fn skips_read_confirmation() -> bool {
    cfg!(debug_assertions) && std::env::var_os("STREAMSTOCK_FAULT_SKIP_READ_CONFIRMATION").is_some()
}

impl ValkeyLog {
    /// Under replicated durability, succeeds once the entries a worker
    /// read are on the replicas (see `read_confirm`); at once otherwise.
    async fn confirmed(&self, group: &str, read: &[Delivery]) -> Result<(), LogError> {
        if self.durability != Durability::Replicated || read.is_empty() || skips_read_confirmation()
        {
            return Ok(());
        }
        self.confirm_replicated(group, read).await
    }

    /// One XREADGROUP over `partitions`' streams, blocking up to `block`
    /// (None: not at all) for the first new entry.
    async fn xreadgroup(
        &self,
        group: &str,
        consumer: &str,
        partitions: &[Partition],
        per_stream: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivery>, LogError> {
        let keys: Vec<String> = partitions.iter().map(|&p| self.stream_key(p)).collect();
        let ids: Vec<&str> = vec![">"; keys.len()];
        let raw: Value = self
            .reader
            .xreadgroup(
                group,
                consumer,
                Some(per_stream as u64),
                block.map(|block| block.as_millis().max(1) as u64),
                false,
                keys,
                ids,
            )
            .await
            .map_err(unavailable)?;
        Ok(self
            .xread_deliveries(raw)?
            .into_values()
            .flatten()
            .collect())
    }

    /// An XREADGROUP answer's entries, by partition.
    pub(super) fn xread_deliveries(
        &self,
        raw: Value,
    ) -> Result<HashMap<Partition, Vec<Delivery>>, LogError> {
        let mut out: HashMap<Partition, Vec<Delivery>> = HashMap::new();
        // A read that times out, or finds nothing, answers nil.
        if raw.is_null() {
            return Ok(out);
        }
        let response: XReadResponse<String, String, String, String> =
            raw.into_xread_response().map_err(unavailable)?;
        for (stream, entries) in response {
            let partition = self
                .partition_of_key(&stream)
                .ok_or_else(|| LogError::Corrupt(format!("unexpected stream `{stream}`")))?;
            let delivered = out.entry(partition).or_default();
            for (id, fields) in entries {
                delivered.push(Self::decode(partition, &id, &fields)?);
            }
        }
        Ok(out)
    }

    /// The read on a cluster. One XREADGROUP may only name streams of one
    /// slot, and the partitions' streams sit in different slots; a blocking
    /// read per stream would hold its primary's one connection, so the
    /// blocking reads of one primary's partitions would wait one after the
    /// other. Instead every partition is read at once without blocking
    /// (the reads of one primary share its connection, pipelined), and an
    /// empty round waits a moment (1 ms, doubling up to 25 ms) before the
    /// next, until `block` has passed. An idle consumer costs a read per
    /// owned partition every 25 ms; an entry waits at most that long.
    async fn poll_each_partition(
        &self,
        group: &str,
        consumer: &str,
        partitions: &[Partition],
        per_stream: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        let mut poll = ClusterPoll::until(tokio::time::Instant::now() + block);
        loop {
            let reads = partitions.iter().map(|p| {
                self.xreadgroup(group, consumer, std::slice::from_ref(p), per_stream, None)
            });
            let mut out = Vec::new();
            for read in futures::future::join_all(reads).await {
                out.extend(read?);
            }
            if !out.is_empty() || !poll.pause().await {
                return Ok(out);
            }
        }
    }

    /// XADD of `value` as JSON in the entry's one field; returns the entry id.
    async fn xadd_json(
        &self,
        key: String,
        value: &impl serde::Serialize,
    ) -> Result<String, LogError> {
        let json = serde_json::to_string(value).map_err(|e| LogError::Corrupt(e.to_string()))?;
        self.client
            .xadd(key, false, None, "*", vec![(FIELD, json)])
            .await
            .map_err(unavailable)
    }

    fn dead_letter_key(&self, group: &str) -> String {
        format!("{}:dead-letters:{group}", self.namespace)
    }
}

/// A dead-letter stream entry as the letter it holds, under the entry's id.
fn decode_dead_letter((id, fields): RawEntry) -> Result<DeadLetter, LogError> {
    let json = fields
        .get(FIELD)
        .ok_or_else(|| LogError::Corrupt(format!("dead letter {id} has no body")))?;
    let mut letter: DeadLetter = serde_json::from_str(json)
        .map_err(|e| LogError::Corrupt(format!("dead letter {id}: {e}")))?;
    letter.id = id;
    Ok(letter)
}
