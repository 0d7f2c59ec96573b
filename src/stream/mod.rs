//! The stream layer: a durable, key-partitioned event log behind one trait,
//! with two backends (Valkey Streams for scale-out, an embedded file log for
//! the zero-setup default), and the consumer-group reads workers use.

pub mod announce;
pub mod dead_letter;
pub mod embedded;
pub mod fencing;
pub mod lease;
pub mod valkey;

use crate::domain::Envelope;
use async_trait::async_trait;
use dead_letter::DeadLetter;
pub use fencing::{Consumer, Epoch, Holdings, Partition};
use lease::LeaseStore;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The consumer group of the workers that maintain the read model. The
/// operations views (backlog, dead letters, lag) report for it; the log
/// itself serves any number of groups.
pub const PROCESSOR_GROUP: &str = "processor";

/// What a 2xx for an append promises (`--durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// The entry is on disk before the 2xx: fsynced by the embedded log;
    /// on Valkey, confirmed by WAITAOF after each append.
    Strict,
    /// Valkey only: the entry is in the primary's AOF and in the AOF of at
    /// least `--min-replicas` of its replicas before the 2xx (`WAITAOF 1
    /// N`), so losing the primary, or a failover to a replica, loses no
    /// acknowledged event.
    Replicated,
    /// The entry is in the server's memory: acknowledged events can be lost
    /// if Valkey crashes (chosen, or forced by a server without AOF or
    /// WAITAOF).
    Relaxed,
}

/// An event log and the partition leases that go with it: Valkey serves
/// both; the embedded log's leases live in its one process.
#[derive(Clone)]
pub struct LogBackend {
    pub log: Arc<dyn EventLog>,
    pub leases: Arc<dyn LeaseStore>,
}

/// A log entry id, `ms-seq` as Valkey writes it. Compared numerically, never
/// as a string ("10-0" sorts after "9-0").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = LogError;
    fn from_str(s: &str) -> Result<EntryId, LogError> {
        let bad = || LogError::Corrupt(format!("malformed entry id `{s}`"));
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(EntryId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Where an appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    pub partition: Partition,
    pub id: EntryId,
}

impl AppendReceipt {
    /// The `msg_id` the API answers with: partition and entry id.
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.partition, self.id)
    }
}

/// One entry handed to a consumer. An entry whose bytes do not decode as an
/// envelope is still delivered (as `Err`) so the consumer can record and ack
/// it instead of stalling its partition on it forever.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub partition: Partition,
    pub id: EntryId,
    pub envelope: Result<Envelope, String>,
}

/// A delivery whose envelope decoded into a domain event this build
/// understands: the only kind the read model applies.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub partition: Partition,
    pub id: EntryId,
    pub envelope: Envelope,
    pub event: crate::domain::DomainEvent,
}

impl Delivery {
    /// Decodes the entry once; `Err` says why no handler can ever apply it
    /// (not an envelope, unknown type, newer version, payload not fitting).
    pub fn decode(&self) -> Result<Decoded, String> {
        let envelope = self.envelope.as_ref().map_err(Clone::clone)?;
        let event =
            crate::domain::DomainEvent::from_envelope(envelope).map_err(|e| e.to_string())?;
        Ok(Decoded {
            partition: self.partition,
            id: self.id,
            envelope: envelope.clone(),
            event,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStats {
    pub partition: u32,
    /// Entries the partition's log holds (acked ones are trimmed).
    pub length: u64,
    /// Bytes those entries take (Valkey: its memory estimate), when known.
    pub bytes: Option<u64>,
    /// Entries not yet delivered to the group.
    pub lag: u64,
    /// Entries delivered but not acked.
    pub pending: u64,
    /// Entries ever appended to the partition (trimmed ones included), so
    /// that two readings a second apart give the append rate, and
    /// `appended - lag - pending` the entries processed.
    pub appended: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("event log I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("event log corrupt or misconfigured: {0}")]
    Corrupt(String),
    /// The append was sent but not confirmed (its connection broke, or
    /// the wait for disk or replicas failed): it may or may not be in the
    /// log.
    #[error("append outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The log's disk is full: nothing was recorded; writes resume once
    /// there is space again.
    #[error("event log disk full: {0}")]
    DiskFull(String),
    /// The log is reachable but behind the offered load: retry later.
    #[error("event log overloaded: {0}")]
    Overloaded(String),
    /// A fenced call for a partition whose lease the caller no longer
    /// holds under the epoch it gave.
    #[error("partition {partition}'s lease is no longer held under epoch {epoch}")]
    LeaseLost { partition: Partition, epoch: Epoch },
}

/// What one `trim` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub entries: u64,
    pub bytes: u64,
}

/// The stable partition of a key: xxh3 is fixed by its specification, so the
/// same key maps to the same partition in every process, build and host.
pub fn partition_for(key: &str, partitions: u32) -> Partition {
    Partition((xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(partitions)) as u32)
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    fn partitions(&self) -> u32;

    /// The partition `append` puts an entry with this key in.
    fn partition_of(&self, key: &str) -> Partition {
        partition_for(key, self.partitions())
    }

    /// Human-readable backend description for logs and `/api/stats`.
    fn describe(&self) -> String;

    /// Appends to the partition of the envelope's key. Returns only once the
    /// entry is durable, so a 2xx built on it never loses the event.
    async fn append(&self, envelope: &Envelope) -> Result<AppendReceipt, LogError>;

    /// Up to `max` new entries for `consumer` in `group` from `partitions`
    /// (the ones it owns), waiting at most `block` when there are none.
    /// Entries stay pending for the group until acked.
    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        partitions: &[Partition],
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError>;

    /// `read_group` for a worker holding `held`'s partitions under the
    /// lease epochs given: a partition whose lease `consumer` no longer
    /// holds under that epoch yields nothing, checked in the same step as
    /// the entries are handed out (a Valkey script; on the embedded log,
    /// under the lock of its leases), so a worker that lost a partition
    /// while paused cannot take its new entries from the new holder
    /// (fencing, see `lease`).
    async fn read_fenced(
        &self,
        consumer: &Consumer,
        held: &Holdings,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError>;

    /// Makes `consumer` the holder of every entry of `partition` that was
    /// delivered in `group` but never acked (its previous owner died or gave
    /// it up), and returns them in log order, to be processed before any new
    /// entry of the partition. Fenced like `read_fenced`: refused with
    /// `LogError::LeaseLost` unless `consumer` holds the partition's lease
    /// under `epoch`, so a worker that acquired a partition and was paused
    /// before taking it over cannot take the new holder's entries.
    async fn take_over(
        &self,
        consumer: &Consumer,
        partition: Partition,
        epoch: Epoch,
    ) -> Result<Vec<Delivery>, LogError>;

    /// Entries of `partition` delivered in `group` to another consumer and
    /// left unacked for at least `min_idle`, made `consumer`'s and returned
    /// in log order; fenced like `take_over`. The partition's holder sweeps
    /// for such entries now and then, so that no entry is stranded with a
    /// consumer that no longer reads the partition. The embedded log hands
    /// entries out per group, not per consumer: nothing to do there.
    async fn reclaim_stale(
        &self,
        _consumer: &Consumer,
        _partition: Partition,
        _epoch: Epoch,
        _min_idle: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        Ok(Vec::new())
    }

    /// Acks `entries` of the partitions `consumer` holds under the epochs
    /// in `held`, checked in the same step as the ack; the entries of any
    /// other partition stay pending for its holder, and those partitions
    /// are returned. A worker whose lease moved on thus acks nothing of the
    /// partition, whatever it believes it holds.
    async fn ack_fenced(
        &self,
        consumer: &Consumer,
        entries: &[(Partition, EntryId)],
        held: &Holdings,
    ) -> Result<Vec<Partition>, LogError>;

    /// Acks entries for `group`, unconditionally (the workers ack with
    /// `ack_fenced`).
    async fn ack(&self, group: &str, entries: &[(Partition, EntryId)]) -> Result<(), LogError>;

    /// Removes from `partitions` the entries every consumer group has
    /// acked (and that are older than the log's retention), never one a
    /// group still needs: pending entries of any consumer, dead or alive,
    /// stay. Called by the partitions' owner now and then, not per event.
    async fn trim(&self, partitions: &[Partition]) -> Result<Trimmed, LogError>;

    /// Per partition: entries in the log, not yet delivered, and delivered
    /// but not acked, for `group`.
    async fn partition_stats(&self, group: &str) -> Result<Vec<PartitionStats>, LogError>;

    /// Stores a dead letter for `group`; returns its id.
    async fn dead_letter(&self, group: &str, letter: &DeadLetter) -> Result<String, LogError>;

    /// The oldest `limit` dead letters of `group`.
    async fn dead_letters(&self, group: &str, limit: usize) -> Result<Vec<DeadLetter>, LogError>;

    /// The dead letters of `group` with these ids, in the order given:
    /// `None` where an id is not there. Reads only those letters.
    async fn dead_letters_by_id(
        &self,
        group: &str,
        ids: &[String],
    ) -> Result<Vec<Option<DeadLetter>>, LogError>;

    /// Removes dead letters by id; returns how many were removed.
    async fn remove_dead_letters(&self, group: &str, ids: &[String]) -> Result<u64, LogError>;

    async fn dead_letter_count(&self, group: &str) -> Result<u64, LogError>;

    /// Entries appended but not yet acked by `group` (unread + pending).
    async fn backlog(&self, group: &str) -> Result<u64, LogError> {
        Ok(self
            .partition_stats(group)
            .await?
            .iter()
            .map(|p| p.lag + p.pending)
            .sum())
    }

    /// Cheap reachability check for `/ready`.
    async fn ping(&self) -> Result<(), LogError>;

    /// Of the entries `ids` of `partition`, which this log once delivered
    /// and no longer has: neither in the log nor removed by trimming. A
    /// Valkey failover to a replica that had not received them, or a
    /// server restarted from an AOF that missed them, loses entries a
    /// worker may already have applied (see `worker::log_audit`).
    async fn lost_entries(
        &self,
        partition: Partition,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, LogError>;

    /// Yields each time the log's connections were established again (a
    /// reconnect, or a new primary after a failover): the moments after
    /// which entries can have been lost. The embedded log lives in the
    /// process and never reconnects.
    fn reconnects(&self) -> futures::stream::BoxStream<'static, ()> {
        Box::pin(futures::stream::pending())
    }

    /// Tells every gateway which orders' status a worker has just committed
    /// (see `announce`). Best effort, and never makes the worker wait.
    fn announce(&self, changes: announce::Announcement);

    /// Every worker's announcements from now on, however many processes
    /// they run in.
    fn announcements(&self) -> tokio::sync::broadcast::Receiver<announce::Announcement>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_compare_numerically() {
        let a: EntryId = "9-0".parse().unwrap();
        let b: EntryId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert!("x-1".parse::<EntryId>().is_err());
        assert!("12".parse::<EntryId>().is_err());
    }

    #[test]
    fn partitioning_is_stable_and_spread() {
        assert_eq!(partition_for("order-1", 8), partition_for("order-1", 8));
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            seen[partition_for(&format!("key-{i}"), 8).index()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
