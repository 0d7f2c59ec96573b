//! The worker's fenced calls on Valkey: each checks, in a script, that the
//! worker still holds the partition's lease under the epoch it acts under,
//! and acts (hands out new entries, claims pending ones, acks) in the same
//! atomic step, so no lease moves in between (see `stream::lease`).
//!
//! The scripts run by SHA1 (EVALSHA; loaded on first use, and again after a
//! server lost its script cache). fred sends a script and waits for its
//! answer before the next command on that connection (it does not pipeline
//! EVAL), so a script per partition cost a round trip per partition: on one
//! server each call covers every partition it acts on. On a cluster a
//! script may touch one slot only, and each partition's keys are a slot of
//! their own: one call per partition there, concurrently.
//!
//! The read on a single server is a transaction instead of a script (see
//! `read_in_transaction`): entries returned through Lua cost Valkey more
//! CPU than reading them.

use super::answers::{first_entry_id, PendingSummary, ScriptAnswer, STREAM_START};
use super::{unavailable, RawEntry, ValkeyLog};
use crate::stream::{Consumer, Delivery, EntryId, Epoch, Holdings, LogError, Partition};
use fred::prelude::*;
use fred::types::scripts::Script;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

/// Entries one page of XAUTOCLAIM takes.
const CLAIM_PAGE: usize = 500;

/// KEYS: for each partition its stream, lease and epoch key (one slot: see
/// leases.rs). ARGV: group, consumer, count, then each partition's epoch.
/// Answers, per partition: {0} when the lease is not (or no longer) held
/// so, {1, entries} with new entries, {2, last id} with none.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local out = {}
for i = 1, #KEYS / 3 do
  local stream = KEYS[3 * i - 2]
  if redis.call('GET', KEYS[3 * i - 1]) ~= ARGV[2] or redis.call('GET', KEYS[3 * i]) ~= ARGV[3 + i] then
    out[i] = {0}
  else
    local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', stream, '>')
    if got then
      out[i] = {1, got[1][2]}
    else
      local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
      out[i] = {2, last[1] and last[1][1] or '0-0'}
    end
  end
end
return out
"#,
    )
});

/// KEYS: as READ's. ARGV: group, consumer, then for each partition its
/// epoch, the number of its ids, and the ids. Answers the (1-based)
/// positions of the partitions left unacked because their lease is not
/// held so.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local refused = {}
local at = 3
for i = 1, #KEYS / 3 do
  local n = tonumber(ARGV[at + 1])
  if redis.call('GET', KEYS[3 * i - 1]) == ARGV[2] and redis.call('GET', KEYS[3 * i]) == ARGV[at] then
    for from = at + 2, at + 1 + n, 1000 do
      redis.call('XACK', KEYS[3 * i - 2], ARGV[1], unpack(ARGV, from, math.min(from + 999, at + 1 + n)))
    end
  else
    refused[#refused + 1] = i
  end
  at = at + 2 + n
end
return refused
"#,
    )
});

/// KEYS: one partition's stream, lease and epoch key. ARGV: group,
/// consumer, epoch, min idle (ms), cursor, count. One page of XAUTOCLAIM:
/// {0} when the lease is not held so, else {1, next cursor, entries}.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('GET', KEYS[2]) ~= ARGV[2] or redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return {0}
end
local page = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], ARGV[5], 'COUNT', ARGV[6])
return {1, page[1], page[2]}
"#,
    )
});

/// KEYS: one partition's stream, lease and epoch key. ARGV: group,
/// consumer, epoch, last id. The entries up to the last id pending with
/// other consumers, claimed for this one while it holds the lease so: {0}
/// when it does not, else {1, entries}.
static CLAIM_STRAYS: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('GET', KEYS[2]) ~= ARGV[2] or redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return {0}
end
local claimed = {}
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
for _, holder in ipairs(summary[4] or {}) do
  if holder[1] ~= ARGV[2] then
    local ids = {}
    for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', ARGV[4], tonumber(holder[2]), holder[1])) do
      ids[#ids + 1] = p[1]
    end
    for from = 1, #ids, 1000 do
      local page = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids, from, math.min(from + 999, #ids)))
      for _, entry in ipairs(page) do claimed[#claimed + 1] = entry end
    end
  end
end
return {1, claimed}
"#,
    )
});

/// What a fenced read found in one partition.
pub(super) enum FencedRead {
    Entries(Vec<Delivery>),
    Nothing {
        partition: Partition,
        last_id: String,
    },
    NotHeld(Partition),
}

/// What one MULTI/EXEC of `read_in_transaction` answered.
struct TransactionRead {
    /// Per partition, its lease holder and epoch, as stored.
    fences: Vec<Option<String>>,
    /// Per partition, its stream's XPENDING summary.
    summaries: Vec<Value>,
    /// The new entries, by partition.
    read: HashMap<Partition, Vec<Delivery>>,
    /// Per partition, its stream's last entry (XREVRANGE COUNT 1).
    lasts: Vec<Value>,
}

impl TransactionRead {
    /// Whether the `i`th partition's lease is held by `consumer` under
    /// `epoch`, as the transaction read it.
    fn holds(&self, i: usize, consumer: &Consumer, epoch: Epoch) -> bool {
        let stored = |at: usize| self.fences.get(at).and_then(Option::as_deref);
        stored(2 * i) == Some(consumer.name.as_str())
            && stored(2 * i + 1) == Some(epoch.to_string().as_str())
    }
}

async fn run<R: FromValue>(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<R, LogError> {
    script
        .evalsha_with_reload(client, keys, args)
        .await
        .map_err(unavailable)
}

impl ValkeyLog {
    /// A partition's stream, lease and epoch key, as the scripts take them.
    fn fence_keys(&self, group: &str, partition: Partition) -> [String; 3] {
        [
            self.stream_key(partition),
            self.lease_key(group, partition),
            self.epoch_key(group, partition),
        ]
    }

    /// The calls a fenced action over `items` takes: one on a single
    /// server, one per partition on a cluster.
    fn calls<'a, T>(&self, items: &'a [T]) -> Vec<&'a [T]> {
        if self.cluster {
            items.chunks(1).collect()
        } else {
            vec![items]
        }
    }

    /// Up to `count` new entries of each of `held`'s partitions, for
    /// `consumer`, from those it holds under the epoch given.
    pub(super) async fn fenced_read(
        &self,
        consumer: &Consumer,
        held: &Holdings,
        count: usize,
    ) -> Result<Vec<FencedRead>, LogError> {
        let held: Vec<(Partition, Epoch)> = held.iter().collect();
        if self.cluster {
            self.read_by_script(consumer, &held, count).await
        } else {
            self.read_in_transaction(consumer, &held, count).await
        }
    }

    /// The fenced read on a single server. A script's entries pass through
    /// Lua, which cost Valkey more CPU than the read itself (the drain
    /// benchmark lost a tenth to it), so here one MULTI/EXEC reads, in one
    /// atomic step and one round trip: the leases and their epochs, each
    /// stream's pending summary, the new entries, and each stream's last
    /// id. The check comes back with the entries rather than before them:
    /// a worker that finds it no longer holds a partition hands nothing of
    /// it out and leaves what it read pending, and the partition's holder
    /// claims such strays before anything newer (`with_strays`).
    async fn read_in_transaction(
        &self,
        consumer: &Consumer,
        held: &[(Partition, Epoch)],
        count: usize,
    ) -> Result<Vec<FencedRead>, LogError> {
        let mut answer = self.transaction_read(consumer, held, count).await?;
        let mut out = Vec::with_capacity(held.len());
        for (i, &(partition, epoch)) in held.iter().enumerate() {
            let entries = answer.read.remove(&partition).unwrap_or_default();
            if !answer.holds(i, consumer, epoch) {
                if !entries.is_empty() {
                    tracing::info!(
                        partition = partition.0,
                        entries = entries.len(),
                        "read entries of a partition whose lease moved on; left for its holder"
                    );
                }
                out.push(FencedRead::NotHeld(partition));
                continue;
            }
            let summary = &answer.summaries[i];
            let Some(entries) = self
                .with_strays(consumer, partition, epoch, summary, entries)
                .await?
            else {
                out.push(FencedRead::NotHeld(partition));
                continue;
            };
            out.push(if entries.is_empty() {
                FencedRead::Nothing {
                    partition,
                    last_id: first_entry_id(&answer.lasts[i])
                        .unwrap_or_else(|| STREAM_START.to_string()),
                }
            } else {
                FencedRead::Entries(entries)
            });
        }
        Ok(out)
    }

    /// The one MULTI/EXEC of `read_in_transaction`.
    async fn transaction_read(
        &self,
        consumer: &Consumer,
        held: &[(Partition, Epoch)],
        count: usize,
    ) -> Result<TransactionRead, LogError> {
        let group = consumer.group.as_str();
        let streams: Vec<String> = held.iter().map(|&(p, _)| self.stream_key(p)).collect();
        let fence_keys: Vec<String> = held
            .iter()
            .flat_map(|&(p, _)| [self.lease_key(group, p), self.epoch_key(group, p)])
            .collect();
        let trx = self.reader.multi();
        let queued: Result<(), Error> = async {
            let _: Value = trx.mget(fence_keys).await?;
            for stream in &streams {
                let _: Value = trx.xpending(stream.as_str(), group, ()).await?;
            }
            let ids = vec![">"; streams.len()];
            let _: Value = trx
                .xreadgroup(
                    group,
                    consumer.name.as_str(),
                    Some(count as u64),
                    None,
                    false,
                    streams.clone(),
                    ids,
                )
                .await?;
            for stream in &streams {
                let _: Value = trx.xrevrange(stream.as_str(), "+", "-", Some(1)).await?;
            }
            Ok(())
        }
        .await;
        queued.map_err(unavailable)?;
        let results: Vec<Value> = trx.exec(true).await.map_err(unavailable)?;
        let n = held.len();
        if results.len() != 2 * n + 2 {
            return Err(LogError::Corrupt(format!(
                "a fenced read of {n} partitions answered {} results",
                results.len()
            )));
        }
        let mut results = results.into_iter();
        let fences = results
            .next()
            .unwrap_or(Value::Null)
            .convert()
            .map_err(unavailable)?;
        let summaries = results.by_ref().take(n).collect();
        let read = self.xread_deliveries(results.next().unwrap_or(Value::Null))?;
        Ok(TransactionRead {
            fences,
            summaries,
            read,
            lasts: results.collect(),
        })
    }

    /// `entries` read of a held partition, after the strays its XPENDING
    /// `summary` shows pending with other consumers (read by a worker after
    /// it lost the partition), claimed first; None when the lease moved on
    /// before the claim.
    async fn with_strays(
        &self,
        consumer: &Consumer,
        partition: Partition,
        epoch: Epoch,
        summary: &Value,
        entries: Vec<Delivery>,
    ) -> Result<Option<Vec<Delivery>>, LogError> {
        let Some(last_stray) = PendingSummary::parse(summary).last_with_others(&consumer.name)
        else {
            return Ok(Some(entries));
        };
        match self
            .claim_strays(consumer, partition, epoch, &last_stray)
            .await
        {
            Ok(mut strays) => {
                tracing::warn!(
                    partition = partition.0,
                    entries = strays.len(),
                    "claimed entries a worker read after losing the partition"
                );
                strays.sort_by_key(|d| d.id);
                strays.extend(entries);
                Ok(Some(strays))
            }
            Err(LogError::LeaseLost { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The entries up to `last` of `partition` pending with other
    /// consumers, made `consumer`'s while it holds the partition under
    /// `epoch` (else `LogError::LeaseLost`).
    async fn claim_strays(
        &self,
        consumer: &Consumer,
        partition: Partition,
        epoch: Epoch,
        last: &str,
    ) -> Result<Vec<Delivery>, LogError> {
        let args = vec![
            consumer.group.clone(),
            consumer.name.clone(),
            epoch.to_string(),
            last.to_string(),
        ];
        let answer = self
            .run_fenced(&CLAIM_STRAYS, &consumer.group, partition, epoch, args)
            .await?;
        deliveries(partition, answer.into_iter().next())
    }

    /// Runs one of the scripts that answer {0} when `partition`'s lease is
    /// not held under `epoch`, else {1, ...}: the rest of the answer, or
    /// `LogError::LeaseLost`.
    async fn run_fenced(
        &self,
        script: &Script,
        group: &str,
        partition: Partition,
        epoch: Epoch,
        args: Vec<String>,
    ) -> Result<Vec<Value>, LogError> {
        let keys = self.fence_keys(group, partition).to_vec();
        let answer: Value = run(&self.client, script, keys, args).await?;
        match ScriptAnswer::parse(answer)? {
            ScriptAnswer::Held(rest) => Ok(rest),
            ScriptAnswer::NotHeld | ScriptAnswer::NothingNew { .. } => {
                Err(LogError::LeaseLost { partition, epoch })
            }
        }
    }

    /// The fenced read on a cluster: the READ script, one call per
    /// partition (each its own slot), concurrently.
    async fn read_by_script(
        &self,
        consumer: &Consumer,
        held: &[(Partition, Epoch)],
        count: usize,
    ) -> Result<Vec<FencedRead>, LogError> {
        let calls = self.calls(held).into_iter().map(|held| async move {
            let keys = held
                .iter()
                .flat_map(|&(p, _)| self.fence_keys(&consumer.group, p))
                .collect();
            let mut args = vec![
                consumer.group.clone(),
                consumer.name.clone(),
                count.to_string(),
            ];
            args.extend(held.iter().map(|(_, epoch)| epoch.to_string()));
            let answers: Vec<Value> = run(&self.reader, &READ, keys, args).await?;
            if answers.len() != held.len() {
                return Err(LogError::Corrupt(format!(
                    "a fenced read of {} partitions answered {}",
                    held.len(),
                    answers.len()
                )));
            }
            held.iter()
                .zip(answers)
                .map(|(&(partition, _), answer)| read_answer(partition, answer))
                .collect::<Result<Vec<FencedRead>, LogError>>()
        });
        let mut out = Vec::with_capacity(held.len());
        for found in futures::future::join_all(calls).await {
            out.extend(found?);
        }
        Ok(out)
    }

    /// Acks `entries` of the partitions `consumer` holds under the epochs
    /// in `held`; returns the partitions left unacked.
    pub(super) async fn fenced_ack(
        &self,
        consumer: &Consumer,
        entries: &[(Partition, EntryId)],
        held: &Holdings,
    ) -> Result<Vec<Partition>, LogError> {
        let mut by_partition: BTreeMap<Partition, Vec<String>> = BTreeMap::new();
        for (p, id) in entries {
            by_partition.entry(*p).or_default().push(id.to_string());
        }
        // A partition committed under no epoch has none to ack under.
        let mut refused: Vec<Partition> = by_partition
            .keys()
            .filter(|&&p| !held.holds(p))
            .copied()
            .collect();
        let acks: Vec<(Partition, Epoch, Vec<String>)> = by_partition
            .into_iter()
            .filter_map(|(p, ids)| held.epoch_of(p).map(|epoch| (p, epoch, ids)))
            .collect();
        let calls = self.calls(&acks).into_iter().map(|acks| async move {
            let keys = acks
                .iter()
                .flat_map(|(p, _, _)| self.fence_keys(&consumer.group, *p))
                .collect();
            let mut args = vec![consumer.group.clone(), consumer.name.clone()];
            for (_, epoch, ids) in acks {
                args.push(epoch.to_string());
                args.push(ids.len().to_string());
                args.extend(ids.iter().cloned());
            }
            let positions: Vec<usize> = run(&self.client, &ACK, keys, args).await?;
            Ok::<Vec<Partition>, LogError>(
                positions
                    .into_iter()
                    .filter_map(|i| acks.get(i.checked_sub(1)?).map(|(p, _, _)| *p))
                    .collect(),
            )
        });
        for refused_here in futures::future::join_all(calls).await {
            refused.extend(refused_here?);
        }
        refused.sort_unstable();
        Ok(refused)
    }

    /// XAUTOCLAIM of every entry of `partition` pending in `group` for at
    /// least `min_idle`, to `consumer`, page by page, while it holds the
    /// partition under `epoch` (else `LogError::LeaseLost`); in log order.
    pub(super) async fn fenced_claim(
        &self,
        consumer: &Consumer,
        partition: Partition,
        epoch: Epoch,
        min_idle: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        let mut out = Vec::new();
        let mut cursor = STREAM_START.to_string();
        loop {
            let args = vec![
                consumer.group.clone(),
                consumer.name.clone(),
                epoch.to_string(),
                min_idle.as_millis().to_string(),
                cursor.clone(),
                CLAIM_PAGE.to_string(),
            ];
            let mut answer = self
                .run_fenced(&CLAIM, &consumer.group, partition, epoch, args)
                .await?
                .into_iter();
            let next = answer.next().and_then(|v| v.as_string());
            out.extend(deliveries(partition, answer.next())?);
            match next {
                Some(next) if next != STREAM_START => cursor = next,
                _ => break,
            }
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }
}

/// A script's list of stream entries (id and fields), decoded; None (no
/// list where one belongs) is a corrupt answer.
fn deliveries(partition: Partition, entries: Option<Value>) -> Result<Vec<Delivery>, LogError> {
    let entries: Vec<RawEntry> = entries
        .ok_or_else(|| LogError::Corrupt("a script's answer without its entries".into()))?
        .convert()
        .map_err(unavailable)?;
    entries
        .into_iter()
        .map(|(id, fields)| ValkeyLog::decode(partition, &id, &fields))
        .collect()
}

/// One partition's answer to READ.
fn read_answer(partition: Partition, answer: Value) -> Result<FencedRead, LogError> {
    Ok(match ScriptAnswer::parse(answer)? {
        ScriptAnswer::Held(mut rest) => {
            let entries = (!rest.is_empty()).then(|| rest.swap_remove(0));
            FencedRead::Entries(deliveries(partition, entries)?)
        }
        ScriptAnswer::NothingNew { last_id } => FencedRead::Nothing { partition, last_id },
        ScriptAnswer::NotHeld => FencedRead::NotHeld(partition),
    })
}
