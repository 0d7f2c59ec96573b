//! The Valkey Streams backend: one stream per partition
//! (`<namespace>:events:<p>`), one consumer group per processor group.
//!
//! Durability: Valkey must run with AOF on; after each XADD the gateway waits
//! for `WAITAOF 1 0` so the entry is fsynced before the 2xx. Concurrent
//! appends share one connection, so their WAITAOFs are pipelined and one
//! fsync covers many of them (group commit). Servers without WAITAOF
//! (Redis < 7.2) or without AOF run in relaxed durability, said loudly at
//! start-up.

use super::dead_letter::DeadLetter;
use super::lease::LeaseStore;
use super::{AppendReceipt, Delivery, EntryId, EventLog, LogError, PartitionStats, Trimmed};
use crate::domain::Envelope;
use async_trait::async_trait;
use fred::prelude::*;
use fred::types::streams::XReadResponse;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

const FIELD: &str = "e";

/// One stream entry as fred returns it: id and field map.
type RawEntry = (String, HashMap<String, String>);
/// How long a command may wait for Valkey before it fails (and the gateway
/// answers 503): fred would otherwise queue it until Valkey is back.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Blocking reads wait up to the batch wait (at most 10 s) on top of that.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAITAOF after each append: the entry is on disk before the 2xx.
    Strict,
    /// The server cannot confirm fsync (no AOF, or no WAITAOF): an append is
    /// acknowledged once it is in the server's memory.
    Relaxed,
}

pub struct ValkeyLog {
    url_for_display: String,
    namespace: String,
    partitions: u32,
    /// Appends, acks and queries share this pipelined connection.
    client: Client,
    /// Blocking XREADGROUP holds a connection; it gets its own.
    reader: Client,
    durability: Durability,
    /// Acked entries are kept at least this long before trimming.
    retention: Duration,
    groups_ready: Mutex<HashSet<String>>,
}

fn unavailable(e: Error) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// `WAITAOF 1 0 timeout`: waits until this connection's writes are in the
/// local AOF; returns how many local AOFs confirmed (0 or 1).
async fn wait_for_aof(client: &Client, timeout_ms: i64) -> Result<i64, Error> {
    let confirmed: Vec<i64> = client
        .custom(
            fred::cmd!("WAITAOF"),
            vec![Value::from(1), Value::from(0), Value::from(timeout_ms)],
        )
        .await?;
    Ok(confirmed.first().copied().unwrap_or(0))
}

async fn connect_client(config: &Config, command_timeout: Duration) -> Result<Client, LogError> {
    let client = Builder::from_config(config.clone())
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(10);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(unavailable)?;
    client.init().await.map_err(unavailable)?;
    Ok(client)
}

impl ValkeyLog {
    pub async fn connect(
        url: &str,
        namespace: &str,
        partitions: u32,
        want_strict: bool,
    ) -> Result<ValkeyLog, LogError> {
        let config = Config::from_url(url)
            .map_err(|e| LogError::Corrupt(format!("invalid --valkey-url: {e}")))?;
        let client = connect_client(&config, COMMAND_TIMEOUT).await?;
        let reader = connect_client(&config, READ_TIMEOUT).await?;

        // The partition count is part of the data's layout: refuse to run
        // with a different one than the deployment started with.
        let meta_key = format!("{namespace}:meta:partitions");
        let stored: Option<u32> = client.get(&meta_key).await.map_err(unavailable)?;
        match stored {
            Some(n) if n != partitions => {
                return Err(LogError::Corrupt(format!(
                    "Valkey namespace `{namespace}` has {n} partitions but --partitions is {partitions}; \
                     the partition count is fixed for the life of a deployment"
                )))
            }
            Some(_) => {}
            None => {
                let _: Option<String> = client
                    .set(&meta_key, partitions, None, Some(SetOptions::NX), false)
                    .await
                    .map_err(unavailable)?;
            }
        }

        let durability = if want_strict {
            // WAITAOF fails at once where the command is missing or AOF is off.
            match wait_for_aof(&client, 1).await {
                Ok(_) => Durability::Strict,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "Valkey cannot confirm appends are on disk (needs Valkey >= 7.2 with appendonly yes); \
                         running with RELAXED durability: an acknowledged event can be lost if Valkey crashes"
                    );
                    Durability::Relaxed
                }
            }
        } else {
            tracing::warn!(
                "--durability relaxed: acknowledged events can be lost if Valkey crashes"
            );
            Durability::Relaxed
        };

        Ok(ValkeyLog {
            url_for_display: crate::config::redact_url(url),
            namespace: namespace.to_string(),
            partitions,
            client,
            reader,
            durability,
            retention: Duration::ZERO,
            groups_ready: Mutex::new(HashSet::new()),
        })
    }

    /// Keeps acked entries for `retention` before `trim` removes them.
    pub fn with_retention(mut self, retention: Duration) -> ValkeyLog {
        self.retention = retention;
        self
    }

    fn stream_key(&self, partition: u32) -> String {
        format!("{}:events:{partition}", self.namespace)
    }

    fn partition_of_key(&self, stream: &str) -> Option<u32> {
        stream.rsplit(':').next()?.parse().ok()
    }

    /// Creates the group on every partition stream (from the beginning), once.
    async fn ensure_group(&self, group: &str) -> Result<(), LogError> {
        if self.groups_ready.lock().expect("lock").contains(group) {
            return Ok(());
        }
        for p in 0..self.partitions {
            let created: Result<Value, Error> = self
                .client
                .xgroup_create(self.stream_key(p), group, "0", true)
                .await;
            if let Err(e) = created {
                if !e.details().contains("BUSYGROUP") {
                    return Err(unavailable(e));
                }
            }
        }
        self.groups_ready
            .lock()
            .expect("lock")
            .insert(group.to_string());
        Ok(())
    }

    fn decode(
        partition: u32,
        id: &str,
        fields: &HashMap<String, String>,
    ) -> Result<Delivery, LogError> {
        let id: EntryId = id.parse()?;
        let envelope = match fields.get(FIELD) {
            Some(json) => serde_json::from_str::<Envelope>(json)
                .map_err(|e| format!("undecodable log entry: {e}")),
            None => Err(format!("log entry has no `{FIELD}` field")),
        };
        Ok(Delivery {
            partition,
            id,
            envelope,
        })
    }
}

#[async_trait]
impl EventLog for ValkeyLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn describe(&self) -> String {
        let durability = match self.durability {
            Durability::Strict => "strict",
            Durability::Relaxed => "relaxed",
        };
        format!(
            "Valkey streams at {} ({durability} durability)",
            self.url_for_display
        )
    }

    async fn append(&self, envelope: &Envelope) -> Result<AppendReceipt, LogError> {
        let partition = super::partition_for(&envelope.key, self.partitions);
        let id = self.xadd_json(self.stream_key(partition), envelope).await?;
        if self.durability == Durability::Strict {
            let fsynced = wait_for_aof(&self.client, 5_000)
                .await
                .map_err(unavailable)?;
            if fsynced < 1 {
                return Err(LogError::Unavailable(
                    "Valkey did not confirm the append reached its AOF within 5 s".into(),
                ));
            }
        }
        Ok(AppendReceipt {
            partition,
            id: id.parse()?,
        })
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        partitions: &[u32],
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        self.ensure_group(group).await?;
        if partitions.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(Vec::new());
        }
        let keys: Vec<String> = partitions.iter().map(|&p| self.stream_key(p)).collect();
        // COUNT applies per stream: share `max` among them.
        let per_stream = max.div_ceil(partitions.len()).max(1);
        let ids: Vec<&str> = vec![">"; keys.len()];
        let raw: Value = self
            .reader
            .xreadgroup(
                group,
                consumer,
                Some(per_stream as u64),
                Some(block.as_millis().max(1) as u64),
                false,
                keys,
                ids,
            )
            .await
            .map_err(unavailable)?;
        // A read that times out answers nil, not an empty map.
        if raw.is_null() {
            return Ok(Vec::new());
        }
        let response: XReadResponse<String, String, String, String> =
            raw.into_xread_response().map_err(unavailable)?;
        let mut out = Vec::new();
        for (stream, entries) in response {
            let partition = self
                .partition_of_key(&stream)
                .ok_or_else(|| LogError::Corrupt(format!("unexpected stream `{stream}`")))?;
            for (id, fields) in entries {
                out.push(Self::decode(partition, &id, &fields)?);
            }
        }
        Ok(out)
    }

    async fn ack(&self, group: &str, entries: &[(u32, EntryId)]) -> Result<(), LogError> {
        let mut by_partition: HashMap<u32, Vec<String>> = HashMap::new();
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

    async fn take_over(
        &self,
        group: &str,
        consumer: &str,
        partition: u32,
    ) -> Result<Vec<Delivery>, LogError> {
        self.ensure_group(group).await?;
        let mut out = Vec::new();
        let mut cursor = "0-0".to_string();
        // XAUTOCLAIM with no idle minimum: we hold the partition's lease, so
        // whoever had these entries has lost it.
        loop {
            let (next, entries): (String, Vec<RawEntry>) = self
                .client
                .xautoclaim_values(
                    self.stream_key(partition),
                    group,
                    consumer,
                    0,
                    cursor.as_str(),
                    Some(500),
                    false,
                )
                .await
                .map_err(unavailable)?;
            for (id, fields) in entries {
                out.push(Self::decode(partition, &id, &fields)?);
            }
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    async fn partition_stats(&self, group: &str) -> Result<Vec<PartitionStats>, LogError> {
        self.ensure_group(group).await?;
        let mut stats = Vec::new();
        for p in 0..self.partitions {
            let groups: Vec<HashMap<String, Value>> = self
                .client
                .xinfo_groups(self.stream_key(p))
                .await
                .map_err(unavailable)?;
            let info = groups
                .iter()
                .find(|g| g.get("name").and_then(|v| v.as_string()).as_deref() == Some(group));
            let length: u64 = self
                .client
                .xlen(self.stream_key(p))
                .await
                .map_err(unavailable)?;
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
                    fred::cmd!("MEMORY"),
                    vec![Value::from("USAGE"), Value::from(self.stream_key(p))],
                )
                .await
                .map_err(unavailable)?;
            stats.push(PartitionStats {
                partition: p,
                length,
                bytes,
                lag,
                pending,
            });
        }
        Ok(stats)
    }

    async fn trim(&self, partitions: &[u32]) -> Result<Trimmed, LogError> {
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
        entries
            .into_iter()
            .map(|(id, fields)| {
                let json = fields
                    .get(FIELD)
                    .ok_or_else(|| LogError::Corrupt(format!("dead letter {id} has no body")))?;
                let mut letter: DeadLetter = serde_json::from_str(json)
                    .map_err(|e| LogError::Corrupt(format!("dead letter {id}: {e}")))?;
                letter.id = id;
                Ok(letter)
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
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', min_ms, min_seq))
"#;

/// Server-side scripts keep each lease operation atomic, and use Valkey's
/// clock so workers on different hosts agree on who is alive.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;
/// Takes a free lease, or keeps one this member already holds (after a
/// Valkey restart its lease may still be there).
const ACQUIRE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

impl ValkeyLog {
    fn members_key(&self, group: &str) -> String {
        format!("{}:members:{group}", self.namespace)
    }

    /// Runs ACQUIRE or RENEW on a partition's lease: true when held after.
    async fn lease_script(
        &self,
        script: &str,
        group: &str,
        partition: u32,
        member: &str,
        ttl: Duration,
    ) -> Result<bool, LogError> {
        let held: i64 = self
            .client
            .eval(
                script,
                vec![self.lease_key(group, partition)],
                vec![member.to_string(), ttl.as_millis().to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
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

    fn lease_key(&self, group: &str, partition: u32) -> String {
        format!("{}:lease:{group}:{partition}", self.namespace)
    }
}

#[async_trait]
impl LeaseStore for ValkeyLog {
    async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, LogError> {
        let mut members: Vec<String> = self
            .client
            .eval(
                HEARTBEAT,
                vec![self.members_key(group)],
                vec![member.to_string(), ttl.as_millis().to_string()],
            )
            .await
            .map_err(unavailable)?;
        members.sort();
        Ok(members)
    }

    async fn try_acquire(
        &self,
        group: &str,
        partition: u32,
        member: &str,
        ttl: Duration,
    ) -> Result<bool, LogError> {
        self.lease_script(ACQUIRE, group, partition, member, ttl)
            .await
    }

    async fn renew(
        &self,
        group: &str,
        partition: u32,
        member: &str,
        ttl: Duration,
    ) -> Result<bool, LogError> {
        self.lease_script(RENEW, group, partition, member, ttl)
            .await
    }

    async fn release(&self, group: &str, partition: u32, member: &str) -> Result<(), LogError> {
        let _: i64 = self
            .client
            .eval(
                RELEASE,
                vec![self.lease_key(group, partition)],
                vec![member.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn leave(&self, group: &str, member: &str) -> Result<(), LogError> {
        let _: i64 = self
            .client
            .zrem(self.members_key(group), member)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn owners(&self, group: &str, partitions: u32) -> Result<Vec<Option<String>>, LogError> {
        let mut owners = Vec::new();
        for p in 0..partitions {
            let owner: Option<String> = self
                .client
                .get(self.lease_key(group, p))
                .await
                .map_err(unavailable)?;
            owners.push(owner);
        }
        Ok(owners)
    }
}
