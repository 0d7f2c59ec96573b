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
            let answer: Vec<Value> = run(
                &self.client,
                &CLAIM,
                self.fence_keys(group, partition).to_vec(),
                args,
            )
            .await?;
            let mut answer = answer.into_iter();
            if answer.next().and_then(|code| code.as_i64()) != Some(1) {
                return Err(LogError::LeaseLost { partition, epoch });
            }
            let next = answer.next().and_then(|v| v.as_string());
            let entries: Vec<RawEntry> = answer
                .next()
                .ok_or_else(|| LogError::Corrupt("a claim without its entries".into()))?
                .convert()
                .map_err(unavailable)?;
            for (id, fields) in entries {
                out.push(Self::decode(partition, &id, &fields)?);
            }
            match next {
                Some(next) if next != "0-0" => cursor = next,
                _ => break,
            }
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }
}

/// One partition's answer to READ.
fn read_answer(partition: u32, answer: Value) -> Result<FencedRead, LogError> {
    let mut answer = answer.into_array().into_iter();
    match answer.next().and_then(|code| code.as_i64()) {
        Some(1) => {
            let entries: Vec<RawEntry> = answer
                .next()
                .ok_or_else(|| LogError::Corrupt("a fenced read without entries".into()))?
                .convert()
                .map_err(unavailable)?;
            let mut out = Vec::with_capacity(entries.len());
            for (id, fields) in entries {
                out.push(ValkeyLog::decode(partition, &id, &fields)?);
            }
            Ok(FencedRead::Entries(out))
        }
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
