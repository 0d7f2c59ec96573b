//! The embedded event log: segment files per partition in the data dir, for
//! `streamstock all` with nothing installed.
//!
//! Durability: a single writer thread takes the pending appends (a bounded
//! queue: when it is full an append waits briefly, then fails as
//! overloaded), writes each partition's share to its segment, then the whole
//! batch to the write-ahead journal (see `journal`), and answers the callers
//! only once the journal is synced: one `fdatasync` per batch (group commit),
//! so an acknowledged append survives kill -9 and power loss. A torn last
//! line left by a crash mid-write is cut off on open; it was never
//! acknowledged. Entries a crash lost from the segments are restored from
//! the journal on open.
//!
//! Entries live on disk only (see `segments`): a consumer reads them from
//! its partition's files when they are delivered, and opening a log reads
//! only each partition's newest segment, so memory and start-up time do not
//! grow with the history.
//!
//! Consumer groups keep a committed offset per partition in
//! `groups/<group>.json` (written atomically on every ack). Entries past it
//! are redelivered after a restart; the read model's inbox (the event
//! archive) makes that harmless. `trim` deletes the sealed segments every
//! group has committed past (and that are older than the retention).
//! The log lives in one process: split roles need Valkey. Its partition
//! leases (`leases()`) live in that process too, and its fenced calls check
//! them under their lock, in the same step as they hand out or ack entries.

mod dead_letters;
mod groups;
mod journal;
mod reads;
mod segments;
mod writer;

use super::dead_letter::DeadLetter;
use super::lease::LocalLeases;
use super::{
    partition_for, AppendReceipt, Delivery, EntryId, EventLog, LogError, PartitionStats, Trimmed,
};
use super::{Consumer, Epoch, Holdings, Partition};
use crate::domain::Envelope;
use async_trait::async_trait;
use groups::{persist_offsets, GroupState};
use segments::PartitionFiles;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use writer::{replay, run_writer, ActiveSegment, AppendRequest};

/// Tunables of the embedded log; `Default` is what `streamstock all` uses.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// A segment is sealed, and a new one begun, past this size. It bounds
    /// what opening and seeking read, and is the unit in which acked
    /// entries are deleted.
    pub segment_bytes: u64,
    /// Acked entries are kept at least this long (whole segments).
    pub retention: Duration,
    /// Appends waiting for the writer, at most.
    pub queue_capacity: usize,
    /// How long an append waits for room in a full queue before it fails
    /// as overloaded.
    pub queue_wait: Duration,
    /// Past this size the writer starts a new journal file, and the old
    /// one is deleted once the segments written meanwhile are synced. The
    /// journal's files hold at most twice this (the writer waits for a
    /// checkpoint that lags), and so does what opening the log replays.
    pub journal_bytes: u64,
}

impl EmbeddedOptions {
    /// 16 MiB: about 40,000 orders; finding an entry or opening the log
    /// reads at most this much per partition.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
}

impl Default for EmbeddedOptions {
    fn default() -> EmbeddedOptions {
        EmbeddedOptions {
            segment_bytes: EmbeddedOptions::DEFAULT_SEGMENT_BYTES,
            retention: Duration::ZERO,
            // One writer batch's worth: about 4 MB of lines at most.
            queue_capacity: 8192,
            queue_wait: Duration::from_millis(500),
            // Eight flushes (one per partition) every 16 MiB of orders.
            journal_bytes: 16 << 20,
        }
    }
}

/// What the log's handle, its read tasks and its writer thread share.
struct Inner {
    dir: PathBuf,
    options: EmbeddedOptions,
    /// Each partition's segments and end, extended by the writer.
    partitions: Vec<RwLock<PartitionFiles>>,
    /// Woken after every durable write, for blocked reads.
    appended: Notify,
    groups: Mutex<HashMap<String, GroupState>>,
    /// Why the writer halted (a failed fsync), once it has.
    halted: Arc<std::sync::OnceLock<String>>,
}

pub struct EmbeddedLog {
    inner: Arc<Inner>,
    writer: mpsc::Sender<AppendRequest>,
    /// Serialises offset-file writes so an older snapshot never lands last.
    persist: tokio::sync::Mutex<()>,
    /// Dead letters per group, mirrored in `dead-letters/<group>.jsonl`.
    dead: tokio::sync::Mutex<HashMap<String, Vec<DeadLetter>>>,
    /// Held for the log's lifetime: one process per data dir.
    _lock: File,
    /// One process holds the log, so its workers and gateway share this.
    announcements: crate::stream::announce::LocalAnnouncements,
    /// The partition leases of the workers reading this log.
    leases: Arc<LocalLeases>,
}

const META_FILE: &str = "meta.json";

/// Takes the data dir's lock file, held for the log's lifetime: one
/// process per data dir.
fn lock_data_dir(dir: &Path) -> Result<File, LogError> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    if lock.try_lock().is_err() {
        return Err(LogError::Unavailable(format!(
            "the embedded log in {} is in use by another streamstock process; stop it first \
             (split roles and concurrent tools need Valkey)",
            dir.display()
        )));
    }
    Ok(lock)
}

/// The partition count is fixed for the life of a log: another count would
/// move keys between partitions and lose their order. A new log records it.
fn check_partition_count(dir: &Path, partitions: u32) -> Result<(), LogError> {
    let meta_path = dir.join(META_FILE);
    if !meta_path.exists() {
        return Ok(write_atomically(
            &meta_path,
            &serde_json::to_vec(&serde_json::json!({ "partitions": partitions })).unwrap(),
        )?);
    }
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path)?)
        .map_err(|e| LogError::Corrupt(format!("{}: {e}", meta_path.display())))?;
    let stored = meta["partitions"].as_u64().unwrap_or(0) as u32;
    if stored != partitions {
        return Err(LogError::Corrupt(format!(
            "the log in {} has {stored} partitions but {partitions} were asked for; \
             the partition count is fixed for the life of a deployment",
            dir.display()
        )));
    }
    Ok(())
}

/// Each partition's segments (converting an older release's single file)
/// and the active segment its appends go to.
fn open_partitions(
    dir: &Path,
    partitions: u32,
) -> Result<(Vec<PartitionFiles>, Vec<ActiveSegment>), LogError> {
    let mut opened = Vec::new();
    let mut active = Vec::new();
    for p in 0..partitions {
        let (files, file) = segments::open_partition(
            &dir.join(format!("partition-{p}")),
            &dir.join(format!("partition-{p}.log")),
        )?;
        active.push(ActiveSegment {
            file,
            base: files.active_base(),
            bytes: files.segments[&files.active_base()].bytes,
        });
        opened.push(files);
    }
    Ok((opened, active))
}

impl EmbeddedLog {
    /// Opens the log under `dir` with the default options.
    pub fn open(dir: &Path, partitions: u32) -> Result<EmbeddedLog, LogError> {
        EmbeddedLog::open_with(dir, partitions, EmbeddedOptions::default())
    }

    /// Opens (or creates) the log under `dir`. The partition count is fixed
    /// for the life of a log: opening with another count is an error, since
    /// keys would silently move partitions and lose their order. A data dir
    /// an older release wrote (one file per partition) is converted.
    pub fn open_with(
        dir: &Path,
        partitions: u32,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedLog, LogError> {
        fs::create_dir_all(dir.join("groups"))?;
        fs::create_dir_all(dir.join("dead-letters"))?;
        let lock = lock_data_dir(dir)?;
        check_partition_count(dir, partitions)?;
        let (mut opened, mut active) = open_partitions(dir, partitions)?;
        let recovered = journal::recover(dir)?;
        replay(&recovered.records, &mut opened, &mut active)?;
        let journal = recovered.finish(dir)?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            options: options.clone(),
            partitions: opened.into_iter().map(RwLock::new).collect(),
            appended: Notify::new(),
            groups: Mutex::new(HashMap::new()),
            halted: Arc::default(),
        });
        inner.load_every_group()?;
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let writer_inner = inner.clone();
        std::thread::Builder::new()
            .name("embedded-log-writer".into())
            .spawn(move || run_writer(active, journal, rx, &writer_inner))?;
        Ok(EmbeddedLog {
            inner,
            writer: tx,
            persist: tokio::sync::Mutex::new(()),
            dead: tokio::sync::Mutex::new(HashMap::new()),
            _lock: lock,
            announcements: Default::default(),
            leases: Arc::new(LocalLeases::new()),
        })
    }

    /// The partition leases of this log's workers (see `lease`).
    pub fn leases(&self) -> Arc<LocalLeases> {
        self.leases.clone()
    }

    /// New entries of `group`, as `collect` finds them, waiting up to
    /// `block` for an append when there are none.
    async fn read_waiting(
        &self,
        group: &str,
        block: Duration,
        collect: impl Fn(&Inner, &str) -> Result<Vec<Delivery>, LogError> + Clone + Send + 'static,
    ) -> Result<Vec<Delivery>, LogError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register interest before looking, so an append between the look
            // and the wait still wakes us.
            let notified = self.inner.appended.notified();
            let (group_name, collect) = (group.to_string(), collect.clone());
            let found = self
                .blocking(move |inner| collect(inner, &group_name))
                .await?;
            if !found.is_empty() {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| LogError::Unavailable(format!("embedded log task failed: {e}")))?
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        // Persist the rename itself.
        segments::sync_dir(parent)?;
    }
    Ok(())
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    fn describe(&self) -> String {
        format!("embedded log at {}", self.inner.dir.display())
    }

    #[tracing::instrument(name = "embedded::append", level = "trace", skip_all, fields(key = %envelope.key))]
    async fn append(&self, envelope: &Envelope) -> Result<AppendReceipt, LogError> {
        let partition = partition_for(&envelope.key, self.partitions());
        let mut line =
            serde_json::to_vec(envelope).map_err(|e| LogError::Corrupt(e.to_string()))?;
        line.push(b'\n');
        let stopped = || LogError::Unavailable("embedded log writer stopped".into());
        if let Some(why) = self.inner.halted.get() {
            return Err(LogError::Unavailable(format!(
                "the embedded log has halted ({why}); restart the process"
            )));
        }
        // A full queue means the disk is behind the offered load: wait a
        // little for room, then refuse rather than queue without bound.
        let slot = match tokio::time::timeout(self.inner.options.queue_wait, self.writer.reserve())
            .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => {
                return Err(LogError::Overloaded(format!(
                    "the embedded log's write queue ({} appends) stayed full for {} ms",
                    self.inner.options.queue_capacity,
                    self.inner.options.queue_wait.as_millis()
                )))
            }
        };
        let (done, answer) = oneshot::channel();
        slot.send(AppendRequest {
            partition,
            line,
            done,
        });
        let id = answer.await.map_err(|_| stopped())??;
        Ok(AppendReceipt { partition, id })
    }

    async fn read_group(
        &self,
        group: &str,
        _consumer: &str,
        partitions: &[Partition],
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        let wanted = partitions.to_vec();
        self.read_waiting(group, block, move |inner, group| {
            inner.collect(group, &wanted, max.max(1))
        })
        .await
    }

    #[tracing::instrument(name = "embedded::read_fenced", level = "trace", skip_all, fields(consumer = %consumer.name, partitions = held.len()))]
    async fn read_fenced(
        &self,
        consumer: &Consumer,
        held: &Holdings,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        let (leases, name, held) = (self.leases(), consumer.name.clone(), held.clone());
        self.read_waiting(&consumer.group, block, move |inner, group| {
            leases.while_held(group, &name, &held, |held| {
                inner.collect(group, held, max.max(1))
            })
        })
        .await
    }

    async fn ack(&self, group: &str, acked: &[(Partition, EntryId)]) -> Result<(), LogError> {
        let _persisting = self.persist.lock().await;
        let offsets = self.inner.ack(group, acked)?;
        persist_offsets(offsets).await
    }

    #[tracing::instrument(name = "embedded::ack_fenced", level = "trace", skip_all, fields(consumer = %consumer.name, entries = entries.len()))]
    async fn ack_fenced(
        &self,
        consumer: &Consumer,
        entries: &[(Partition, EntryId)],
        held: &Holdings,
    ) -> Result<Vec<Partition>, LogError> {
        let _persisting = self.persist.lock().await;
        let group = consumer.group.as_str();
        let (offsets, refused) = self
            .leases
            .while_held(group, &consumer.name, held, |held| {
                let (ours, others): (Vec<(Partition, EntryId)>, Vec<(Partition, EntryId)>) =
                    entries.iter().partition(|(p, _)| held.contains(p));
                let refused: BTreeSet<Partition> = others.iter().map(|&(p, _)| p).collect();
                let offsets = self.inner.ack(group, &ours)?;
                Ok::<_, LogError>((offsets, refused.into_iter().collect()))
            })?;
        persist_offsets(offsets).await?;
        Ok(refused)
    }

    #[tracing::instrument(name = "embedded::take_over", level = "trace", skip_all, fields(consumer = %consumer.name, partition = partition.0, epoch = epoch.get()))]
    async fn take_over(
        &self,
        consumer: &Consumer,
        partition: Partition,
        epoch: Epoch,
    ) -> Result<Vec<Delivery>, LogError> {
        let (leases, consumer) = (self.leases(), consumer.clone());
        let held: Holdings = [(partition, epoch)].into_iter().collect();
        self.blocking(move |inner| {
            let group = &consumer.group;
            leases.while_held(group, &consumer.name, &held, |held| {
                if held.is_empty() {
                    return Err(LogError::LeaseLost { partition, epoch });
                }
                inner.unacked(group, partition)
            })
        })
        .await
    }

    async fn partition_stats(&self, group: &str) -> Result<Vec<PartitionStats>, LogError> {
        self.inner.with_group(group, |state| {
            state
                .partitions
                .iter()
                .enumerate()
                .map(|(p, gp)| {
                    let files = self.inner.files(p);
                    let (length, bytes) = files.retained();
                    PartitionStats {
                        partition: p as u32,
                        length,
                        bytes: Some(bytes),
                        lag: files.end.saturating_sub(gp.next),
                        pending: gp.next.saturating_sub(gp.committed) - gp.acked_ahead.len() as u64,
                        appended: files.end,
                    }
                })
                .collect()
        })
    }

    async fn trim(&self, partitions: &[Partition]) -> Result<Trimmed, LogError> {
        let partitions = partitions.to_vec();
        self.blocking(move |inner| inner.trim(&partitions)).await
    }
    async fn dead_letter(&self, group: &str, letter: &DeadLetter) -> Result<String, LogError> {
        self.store_dead_letter(group, letter).await
    }

    async fn dead_letters(&self, group: &str, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        self.oldest_dead_letters(group, limit).await
    }

    async fn dead_letters_by_id(
        &self,
        group: &str,
        ids: &[String],
    ) -> Result<Vec<Option<DeadLetter>>, LogError> {
        self.find_dead_letters(group, ids).await
    }

    async fn remove_dead_letters(&self, group: &str, ids: &[String]) -> Result<u64, LogError> {
        self.drop_dead_letters(group, ids).await
    }

    async fn dead_letter_count(&self, group: &str) -> Result<u64, LogError> {
        self.count_dead_letters(group).await
    }

    async fn ping(&self) -> Result<(), LogError> {
        if self.writer.is_closed() {
            return Err(LogError::Unavailable("embedded log writer stopped".into()));
        }
        if let Some(why) = self.inner.halted.get() {
            return Err(LogError::Unavailable(format!(
                "the embedded log has halted ({why}); restart the process"
            )));
        }
        Ok(())
    }

    async fn lost_entries(
        &self,
        partition: Partition,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, LogError> {
        // Readers never go past the durable end, so an entry delivered once
        // is lost only if the partition ends before it now: its files were
        // replaced by an older copy (a restore from backup) or cut short.
        // Entries below the oldest segment were trimmed, not lost. (Its ids
        // are `0-offset`: any other is no entry it has.)
        let end = self.inner.files(partition.index()).end;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| id.ms != 0 || id.seq >= end)
            .collect())
    }

    fn announce(&self, changes: crate::stream::announce::Announcement) {
        self.announcements.send(changes);
    }

    fn announcements(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::stream::announce::Announcement> {
        self.announcements.subscribe()
    }
}
