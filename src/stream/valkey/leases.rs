//! The Valkey backend's partition leases: a member set with heartbeats and
//! one lease key per partition, each changed by a server-side script. Each
//! lease has an epoch counter beside it (`<lease key>:epoch`, never
//! expiring) that ACQUIRE increments in the same script; the two keys
//! share a hash tag, so on a cluster they sit in one slot.

use super::{unavailable, ValkeyLog};
use crate::stream::lease::{Epoch, LeaseStore, Partition};
use crate::stream::LogError;
use async_trait::async_trait;
use fred::prelude::*;
use std::time::Duration;

/// Server-side scripts keep each lease operation atomic, and use Valkey's
/// clock so workers on different hosts agree on who is alive.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;
/// Takes a free lease under a new epoch (one above the last, and above
/// ARGV[3], the caller's floor), or keeps one this member already holds
/// (after a Valkey restart its lease may still be there) with its epoch.
/// Returns the epoch, or 0 when another member holds the lease.
const ACQUIRE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local epoch = redis.call('GET', KEYS[2])
  if epoch then return tonumber(epoch) end
end
if holder and holder ~= ARGV[1] then
  return 0
end
local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return epoch
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

    /// A partition's lease key: `{<stream key>}:lease:<group>`. Its hash
    /// tag is the partition stream's whole key, so on a cluster the lease,
    /// its epoch counter and the stream share a slot, and one script can
    /// check the lease and act on the stream (see `fenced`).
    pub(super) fn lease_key(&self, group: &str, partition: Partition) -> String {
        format!("{{{}}}:lease:{group}", self.stream_key(partition))
    }

    pub(super) fn epoch_key(&self, group: &str, partition: Partition) -> String {
        format!("{}:epoch", self.lease_key(group, partition))
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
        partition: Partition,
        member: &str,
        ttl: Duration,
        floor: Option<Epoch>,
    ) -> Result<Option<Epoch>, LogError> {
        let epoch: u64 = self
            .client
            .eval(
                ACQUIRE,
                vec![
                    self.lease_key(group, partition),
                    self.epoch_key(group, partition),
                ],
                vec![
                    member.to_string(),
                    ttl.as_millis().to_string(),
                    floor.map_or(0, Epoch::get).to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        // 0: another member holds the lease.
        Ok(Epoch::new(epoch))
    }

    async fn renew(
        &self,
        group: &str,
        partition: Partition,
        member: &str,
        ttl: Duration,
    ) -> Result<bool, LogError> {
        let held: i64 = self
            .client
            .eval(
                RENEW,
                vec![self.lease_key(group, partition)],
                vec![member.to_string(), ttl.as_millis().to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    async fn release(
        &self,
        group: &str,
        partition: Partition,
        member: &str,
    ) -> Result<(), LogError> {
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
        for p in Partition::all(partitions) {
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
