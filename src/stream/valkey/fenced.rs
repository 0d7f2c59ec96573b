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

use super::{unavailable, RawEntry, ValkeyLog};
use crate::stream::lease::Epoch;
use crate::stream::{Delivery, EntryId, LogError};
use fred::prelude::*;
use fred::types::scripts::Script;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

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
    Nothing { partition: u32, last_id: String },
    NotHeld(u32),
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
    fn fence_keys(&self, group: &str, partition: u32) -> [String; 3] {
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

    /// Up to `count` new entries of each of `owned`'s partitions, for
    /// `consumer`, from those it holds under the epoch given.
    pub(super) async fn fenced_read(
        &self,
        group: &str,
        consumer: &str,
        owned: &[(u32, Epoch)],
        count: usize,
    ) -> Result<Vec<FencedRead>, LogError> {
        if self.cluster {
            self.read_by_script(group, consumer, owned, count).await
        } else {
            self.read_in_transaction(group, consumer, owned, count)
                .await
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
    /// claims such strays before anything newer (below).
    async fn read_in_transaction(
        &self,
        group: &str,
        consumer: &str,
        owned: &[(u32, Epoch)],
        count: usize,
    ) -> Result<Vec<FencedRead>, LogError> {
        let streams: Vec<String> = owned.iter().map(|&(p, _)| self.stream_key(p)).collect();
        let trx = self.reader.multi();
        let fence_keys: Vec<String> = owned
            .iter()
            .flat_map(|&(p, _)| [self.lease_key(group, p), self.epoch_key(group, p)])
            .collect();
        let queued: Result<Vec<Value>, Error> = async {
            let mut queued = vec![trx.mget(fence_keys).await?];
            for stream in &streams {
                queued.push(trx.xpending(stream.as_str(), group, ()).await?);
            }
            let ids = vec![">"; streams.len()];
            queued.push(
                trx.xreadgroup(
                    group,
                    consumer,
                    Some(count as u64),
                    None,
                    false,
                    streams.clone(),
                    ids,
                )
                .await?,
            );
            for stream in &streams {
                queued.push(trx.xrevrange(stream.as_str(), "+", "-", Some(1)).await?);
            }
            Ok(queued)
        }
        .await;
        queued.map_err(unavailable)?;
        let results: Vec<Value> = trx.exec(true).await.map_err(unavailable)?;
        let n = owned.len();
        if results.len() != 2 * n + 2 {
            return Err(LogError::Corrupt(format!(
                "a fenced read of {n} partitions answered {} results",
                results.len()
            )));
        }
        let mut results = results.into_iter();
        let fences: Vec<Option<String>> = results
            .next()
            .unwrap_or(Value::Null)
            .convert()
            .map_err(unavailable)?;
        let summaries: Vec<Value> = results.by_ref().take(n).collect();
        let mut read = self.xread_deliveries(results.next().unwrap_or(Value::Null))?;
        let lasts: Vec<Value> = results.collect();

        let mut out = Vec::with_capacity(n);
        for (i, &(partition, epoch)) in owned.iter().enumerate() {
            let entries: Vec<Delivery> = read.remove(&partition).unwrap_or_default();
            let held = fences.get(2 * i).and_then(Option::as_deref) == Some(consumer)
                && fences.get(2 * i + 1).and_then(Option::as_deref)
                    == Some(epoch.to_string().as_str());
            if !held {
                if !entries.is_empty() {
                    tracing::info!(
                        partition,
                        entries = entries.len(),
                        "read entries of a partition whose lease moved on; left for its holder"
                    );
                }
                out.push(FencedRead::NotHeld(partition));
                continue;
            }
            let mut entries = entries;
            if let Some(last_stray) = pending_with_others(&summaries[i], consumer) {
                match self
                    .claim_strays(group, consumer, partition, epoch, &last_stray)
                    .await
                {
                    Ok(mut strays) => {
                        tracing::warn!(
                            partition,
                            entries = strays.len(),
                            "claimed entries a worker read after losing the partition"
                        );
                        strays.sort_by_key(|d| d.id);
                        strays.extend(entries);
                        entries = strays;
                    }
                    Err(LogError::LeaseLost { .. }) => {
                        out.push(FencedRead::NotHeld(partition));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            out.push(if entries.is_empty() {
                FencedRead::Nothing {
                    partition,
                    last_id: first_entry_id(&lasts[i]).unwrap_or_else(|| "0-0".to_string()),
                }
            } else {
                FencedRead::Entries(entries)
            });
        }
        Ok(out)
    }

    /// The entries up to `last` of `partition` pending with other
    /// consumers, made `consumer`'s while it holds the partition under
    /// `epoch` (else `LogError::LeaseLost`).
    async fn claim_strays(
        &self,
        group: &str,
        consumer: &str,
        partition: u32,
        epoch: Epoch,
        last: &str,
    ) -> Result<Vec<Delivery>, LogError> {
        let args = vec![
            group.to_string(),
            consumer.to_string(),
            epoch.to_string(),
            last.to_string(),
        ];
        let answer = self
            .run_fenced(&CLAIM_STRAYS, group, partition, epoch, args)
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
        partition: u32,
        epoch: Epoch,
        args: Vec<String>,
    ) -> Result<Vec<Value>, LogError> {
        let keys = self.fence_keys(group, partition).to_vec();
        let answer: Vec<Value> = run(&self.client, script, keys, args).await?;
        let mut answer = answer.into_iter();
        if answer.next().and_then(|code| code.as_i64()) != Some(1) {
            return Err(LogError::LeaseLost { partition, epoch });
        }
        Ok(answer.collect())
    }

    /// The fenced read on a cluster: the READ script, one call per
    /// partition (each its own slot), concurrently.
    async fn read_by_script(
        &self,
        group: &str,
        consumer: &str,
        owned: &[(u32, Epoch)],
        count: usize,
    ) -> Result<Vec<FencedRead>, LogError> {
        let calls = self.calls(owned).into_iter().map(|owned| async move {
            let keys = owned
                .iter()
                .flat_map(|&(p, _)| self.fence_keys(group, p))
                .collect();
            let mut args = vec![group.to_string(), consumer.to_string(), count.to_string()];
            args.extend(owned.iter().map(|(_, epoch)| epoch.to_string()));
            let answers: Vec<Value> = run(&self.reader, &READ, keys, args).await?;
            if answers.len() != owned.len() {
                return Err(LogError::Corrupt(format!(
                    "a fenced read of {} partitions answered {}",
                    owned.len(),
                    answers.len()
                )));
            }
            owned
                .iter()
                .zip(answers)
                .map(|(&(partition, _), answer)| read_answer(partition, answer))
                .collect::<Result<Vec<FencedRead>, LogError>>()
        });
        let mut out = Vec::with_capacity(owned.len());
        for found in futures::future::join_all(calls).await {
            out.extend(found?);
        }
        Ok(out)
    }

    /// Acks `entries` of the partitions `consumer` holds under `epochs`;
    /// returns the partitions left unacked.
    pub(super) async fn fenced_ack(
        &self,
        group: &str,
        consumer: &str,
        entries: &[(u32, EntryId)],
        epochs: &BTreeMap<u32, Epoch>,
    ) -> Result<Vec<u32>, LogError> {
        let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (p, id) in entries {
            by_partition.entry(*p).or_default().push(id.to_string());
        }
        // A partition committed under no epoch has none to ack under.
        let mut refused: Vec<u32> = by_partition
            .keys()
            .filter(|p| !epochs.contains_key(p))
            .copied()
            .collect();
        let acks: Vec<(u32, Epoch, Vec<String>)> = by_partition
            .into_iter()
            .filter_map(|(p, ids)| epochs.get(&p).map(|&epoch| (p, epoch, ids)))
            .collect();
        let calls = self.calls(&acks).into_iter().map(|acks| async move {
            let keys = acks
                .iter()
                .flat_map(|(p, _, _)| self.fence_keys(group, *p))
                .collect();
            let mut args = vec![group.to_string(), consumer.to_string()];
            for (_, epoch, ids) in acks {
                args.push(epoch.to_string());
                args.push(ids.len().to_string());
                args.extend(ids.iter().cloned());
            }
            let positions: Vec<usize> = run(&self.client, &ACK, keys, args).await?;
            Ok::<Vec<u32>, LogError>(
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
        group: &str,
        consumer: &str,
        partition: u32,
        epoch: Epoch,
        min_idle: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        let mut out = Vec::new();
        let mut cursor = "0-0".to_string();
        loop {
            let args = vec![
                group.to_string(),
                consumer.to_string(),
                epoch.to_string(),
                min_idle.as_millis().to_string(),
                cursor.clone(),
                "500".to_string(),
            ];
            let mut answer = self
                .run_fenced(&CLAIM, group, partition, epoch, args)
                .await?
                .into_iter();
            let next = answer.next().and_then(|v| v.as_string());
            out.extend(deliveries(partition, answer.next())?);
            match next {
                Some(next) if next != "0-0" => cursor = next,
                _ => break,
            }
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }
}

/// From a stream's XPENDING summary (count, first id, last id, and the
/// count per consumer): the last id pending, when some are pending with a
/// consumer other than `consumer`.
fn pending_with_others(summary: &Value, consumer: &str) -> Option<String> {
    let Value::Array(summary) = summary else {
        return None;
    };
    let others = match summary.get(3) {
        Some(Value::Array(holders)) => holders.iter().any(|holder| match holder {
            Value::Array(pair) => {
                pair.first().and_then(Value::as_string).as_deref() != Some(consumer)
            }
            _ => false,
        }),
        _ => false,
    };
    others
        .then(|| summary.get(2).and_then(Value::as_string))
        .flatten()
}

/// The id of the first entry in an XRANGE/XREVRANGE answer.
fn first_entry_id(entries: &Value) -> Option<String> {
    match entries {
        Value::Array(entries) => match entries.first()? {
            Value::Array(entry) => entry.first()?.as_string(),
            _ => None,
        },
        _ => None,
    }
}

/// A script's list of stream entries (id and fields), decoded; None (no
/// list where one belongs) is a corrupt answer.
fn deliveries(partition: u32, entries: Option<Value>) -> Result<Vec<Delivery>, LogError> {
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
fn read_answer(partition: u32, answer: Value) -> Result<FencedRead, LogError> {
    let mut answer = answer.into_array().into_iter();
    match answer.next().and_then(|code| code.as_i64()) {
        Some(1) => Ok(FencedRead::Entries(deliveries(partition, answer.next())?)),
        Some(2) => Ok(FencedRead::Nothing {
            partition,
            last_id: answer
                .next()
                .and_then(|v| v.as_string())
                .unwrap_or_else(|| "0-0".to_string()),
        }),
        _ => Ok(FencedRead::NotHeld(partition)),
    }
}
