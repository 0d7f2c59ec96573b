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

mod journal;
mod segments;

use super::dead_letter::DeadLetter;
use super::lease::LocalLeases;
use super::{
    partition_for, AppendReceipt, Delivery, EntryId, EventLog, LogError, PartitionStats, Trimmed,
};
use super::{Consumer, Epoch, Holdings, Partition};
use crate::domain::Envelope;
use async_trait::async_trait;
use journal::Journal;
use segments::{Cursor, PartitionFiles};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, Notify};

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

impl Default for EmbeddedOptions {
    fn default() -> EmbeddedOptions {
        EmbeddedOptions {
            // 16 MiB: about 40,000 orders; finding an entry or opening the
            // log reads at most this much per partition.
            segment_bytes: 16 << 20,
            retention: Duration::ZERO,
            // One writer batch's worth: about 4 MB of lines at most.
            queue_capacity: 8192,
            queue_wait: Duration::from_millis(500),
            // Eight flushes (one per partition) every 16 MiB of orders.
            journal_bytes: 16 << 20,
        }
    }
}

struct AppendRequest {
    partition: Partition,
    line: Vec<u8>,
    done: oneshot::Sender<Result<EntryId, String>>,
}

/// One consumer group's position in one partition.
#[derive(Debug, Clone)]
struct GroupPartition {
    /// Every entry below it is acked.
    committed: u64,
    /// The next entry to hand out.
    next: u64,
    /// Where `next` is on disk, once found: (segment base, byte offset).
    next_at: Option<(u64, u64)>,
    /// Acked entries above `committed` (acks can come out of order).
    acked_ahead: BTreeSet<u64>,
}

struct GroupState {
    partitions: Vec<GroupPartition>,
    file: PathBuf,
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
        let meta_path = dir.join(META_FILE);
        if meta_path.exists() {
            let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path)?)
                .map_err(|e| LogError::Corrupt(format!("{}: {e}", meta_path.display())))?;
            let stored = meta["partitions"].as_u64().unwrap_or(0) as u32;
            if stored != partitions {
                return Err(LogError::Corrupt(format!(
                    "the log in {} has {stored} partitions but --partitions is {partitions}; \
                     the partition count is fixed for the life of a deployment",
                    dir.display()
                )));
            }
        } else {
            write_atomically(
                &meta_path,
                &serde_json::to_vec(&serde_json::json!({ "partitions": partitions })).unwrap(),
            )?;
        }

        let mut active = Vec::new();
        let mut opened = Vec::new();
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
        let recovered = journal::recover(dir)?;
        replay(&recovered.records, &mut opened, &mut active)?;
        let journal = recovered.finish(dir)?;
        let views = opened.into_iter().map(RwLock::new).collect();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            options: options.clone(),
            partitions: views,
            appended: Notify::new(),
            groups: Mutex::new(HashMap::new()),
        });
        // Every group that ever committed counts when deciding what may be
        // deleted, so all are loaded now, not on first use.
        for entry in fs::read_dir(dir.join("groups"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                    inner.with_group(name, |_| ())?;
                }
            }
        }
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

impl Inner {
    fn with_group<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut GroupState) -> T,
    ) -> Result<T, LogError> {
        let mut groups = self.groups.lock().expect("group lock poisoned");
        if !groups.contains_key(group) {
            let state = self.load_group(group)?;
            groups.insert(group.to_string(), state);
        }
        Ok(f(groups.get_mut(group).expect("inserted above")))
    }

    fn files(&self, partition: usize) -> std::sync::RwLockReadGuard<'_, PartitionFiles> {
        self.partitions[partition]
            .read()
            .expect("partition lock poisoned")
    }

    fn load_group(&self, group: &str) -> Result<GroupState, LogError> {
        let n = self.partitions.len();
        let file = self
            .dir
            .join("groups")
            .join(format!("{}.json", sanitize(group)));
        let stored: Option<Vec<u64>> = if file.exists() {
            Some(
                serde_json::from_slice(&fs::read(&file)?)
                    .map_err(|e| LogError::Corrupt(format!("{}: {e}", file.display())))?,
            )
        } else {
            None
        };
        let mut partitions = Vec::with_capacity(n);
        for p in 0..n {
            let files = self.files(p);
            let wanted = stored.as_ref().and_then(|s| s.get(p).copied()).unwrap_or(0);
            // Entries below the first segment are gone. A group that never
            // committed starts at the oldest entry kept; one that had
            // committed less than that lost entries to trimming (it was not
            // known when they were deleted, or its file was replaced): say so.
            let committed = wanted.clamp(files.first(), files.end);
            if stored.is_some() && committed != wanted {
                tracing::warn!(
                    group,
                    partition = p,
                    committed = wanted,
                    first_kept = files.first(),
                    end = files.end,
                    "the group's committed offset is outside the log; it resumes at the nearest entry kept"
                );
            }
            partitions.push(GroupPartition {
                committed,
                next: committed,
                next_at: None,
                acked_ahead: BTreeSet::new(),
            });
        }
        Ok(GroupState { partitions, file })
    }

    /// Reads up to `max` entries of `partition` from offset `from` (found at
    /// `at`, a segment base and byte offset, when known), decoded. Returns
    /// them and where reading stopped; None when `from` is at the end.
    /// An offset below the oldest segment starts at the oldest entry kept:
    /// the returned deliveries then begin above `from`.
    fn read_from(
        &self,
        partition: Partition,
        from: u64,
        at: Option<(u64, u64)>,
        max: usize,
    ) -> Result<Option<(Vec<Delivery>, Cursor)>, LogError> {
        let (mut cursor, plan) = {
            let files = self.files(partition.index());
            if from >= files.end {
                return Ok(None);
            }
            let cursor = match at {
                Some((base, pos)) if files.segments.contains_key(&base) => Cursor {
                    offset: from,
                    base,
                    pos,
                },
                _ => segments::locate(&files, from)?,
            };
            (cursor, segments::plan_read(&files, cursor.base))
        };
        let mut deliveries = Vec::new();
        segments::read_entries(&plan, &mut cursor, max, |offset, line| {
            deliveries.push(delivery(partition, offset, line))
        })?;
        Ok(Some((deliveries, cursor)))
    }

    /// Up to `share` new entries of one partition for the group, read from
    /// disk where the group left off.
    fn read_partition(
        &self,
        state: &mut GroupPartition,
        partition: Partition,
        share: usize,
    ) -> Result<Vec<Delivery>, LogError> {
        let Some((deliveries, cursor)) =
            self.read_from(partition, state.next, state.next_at, share)?
        else {
            return Ok(Vec::new());
        };
        let first = deliveries.first().map_or(cursor.offset, |d| d.id.seq);
        if first != state.next {
            // Only a group that was created after its entries were deleted
            // gets here; what it never saw, it cannot process.
            tracing::warn!(
                partition = partition.0,
                from = state.next,
                to = first,
                "entries below the oldest segment were deleted; the group skips them"
            );
            state.committed = state.committed.max(first);
        }
        state.next = cursor.offset;
        state.next_at = Some((cursor.base, cursor.pos));
        Ok(deliveries)
    }

    fn collect(
        &self,
        group: &str,
        partitions: &[Partition],
        max: usize,
    ) -> Result<Vec<Delivery>, LogError> {
        let n = self.partitions.len();
        self.with_group(group, |state| {
            let mut out = Vec::new();
            // Fair across partitions: take a share from each in turn, so one
            // hot partition cannot starve the others.
            let share = (max / partitions.len().max(1)).max(1);
            loop {
                let before = out.len();
                for &p in partitions.iter().filter(|p| p.index() < n) {
                    let room = share.min(max - out.len());
                    if room == 0 {
                        break;
                    }
                    out.extend(self.read_partition(&mut state.partitions[p.index()], p, room)?);
                }
                if out.len() >= max || out.len() == before {
                    return Ok(out);
                }
            }
        })?
    }

    /// Marks entries acked in memory; returns the group's offsets file and
    /// its committed offsets, to be written (`persist_offsets`).
    fn ack(&self, group: &str, acked: &[(Partition, EntryId)]) -> Result<GroupOffsets, LogError> {
        self.with_group(group, |state| {
            for &(p, id) in acked {
                let Some(gp) = state.partitions.get_mut(p.index()) else {
                    continue;
                };
                if id.seq >= gp.committed && id.seq < gp.next {
                    gp.acked_ahead.insert(id.seq);
                }
                while gp.acked_ahead.remove(&gp.committed) {
                    gp.committed += 1;
                }
            }
            let committed: Vec<u64> = state.partitions.iter().map(|gp| gp.committed).collect();
            (state.file.clone(), committed)
        })
    }

    /// The group's delivered but unacked entries of `partition`, in order.
    fn unacked(&self, group: &str, partition: Partition) -> Result<Vec<Delivery>, LogError> {
        let p = partition.index();
        if p >= self.partitions.len() {
            return Ok(Vec::new());
        }
        let (committed, next, acked) = self.with_group(group, |state| {
            let gp = &state.partitions[p];
            (gp.committed, gp.next, gp.acked_ahead.clone())
        })?;
        if next <= committed {
            return Ok(Vec::new());
        }
        let read = self.read_from(partition, committed, None, (next - committed) as usize)?;
        let mut deliveries = read.map(|(d, _)| d).unwrap_or_default();
        deliveries.retain(|d| !acked.contains(&d.id.seq));
        Ok(deliveries)
    }

    /// Deletes the sealed segments of `partitions` that every group has
    /// committed past and that were sealed longer ago than the retention.
    fn trim(&self, partitions: &[Partition]) -> Result<Trimmed, LogError> {
        let mut trimmed = Trimmed::default();
        let sealed_before = SystemTime::now()
            .checked_sub(self.options.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for &p in partitions {
            let p = p.index();
            if p >= self.partitions.len() {
                continue;
            }
            // The lowest committed offset of any group: nothing at or above
            // it may go. With no group at all, nothing is known to be
            // consumed, and nothing goes.
            let below = {
                let groups = self.groups.lock().expect("group lock poisoned");
                match groups.values().map(|g| g.partitions[p].committed).min() {
                    Some(min) => min,
                    None => continue,
                }
            };
            let removed: Vec<(u64, segments::Segment, u64)> = {
                let mut files = self.partitions[p].write().expect("partition lock poisoned");
                let bases = files.deletable(below, sealed_before);
                bases
                    .into_iter()
                    .map(|base| {
                        let segment = files.segments.remove(&base).expect("listed above");
                        let next = files.first();
                        (base, segment, next)
                    })
                    .collect()
            };
            if removed.is_empty() {
                continue;
            }
            for (base, segment, next) in &removed {
                fs::remove_file(&segment.path)?;
                trimmed.entries += next - base;
                trimmed.bytes += segment.bytes;
            }
            segments::sync_dir(&self.files(p).dir)?;
        }
        Ok(trimmed)
    }
}

/// A group's offsets file and the committed offset of each partition.
type GroupOffsets = (PathBuf, Vec<u64>);

/// Writes a group's committed offsets (callers hold `persist`).
async fn persist_offsets((file, committed): GroupOffsets) -> Result<(), LogError> {
    tokio::task::spawn_blocking(move || {
        write_atomically(&file, &serde_json::to_vec(&committed).unwrap())
    })
    .await
    .map_err(|e| LogError::Unavailable(e.to_string()))??;
    Ok(())
}

fn delivery(partition: Partition, offset: u64, line: &[u8]) -> Delivery {
    Delivery {
        partition,
        id: EntryId { ms: 0, seq: offset },
        envelope: serde_json::from_slice::<Envelope>(line)
            .map_err(|e| format!("undecodable log entry: {e}")),
    }
}

impl EmbeddedLog {
    fn dead_letter_file(&self, group: &str) -> PathBuf {
        self.inner
            .dir
            .join("dead-letters")
            .join(format!("{}.jsonl", sanitize(group)))
    }

    /// Runs `f` on the group's dead letters, loading them on first use.
    async fn with_dead_letters<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut Vec<DeadLetter>, &Path) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let mut all = self.dead.lock().await;
        let file = self.dead_letter_file(group);
        if !all.contains_key(group) {
            let mut letters = Vec::new();
            if file.exists() {
                for line in fs::read_to_string(&file)?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                {
                    match serde_json::from_str::<DeadLetter>(line) {
                        Ok(letter) => letters.push(letter),
                        Err(e) => {
                            tracing::warn!(file = %file.display(), error = %e, "skipping a torn dead-letter line")
                        }
                    }
                }
            }
            all.insert(group.to_string(), letters);
        }
        f(all.get_mut(group).expect("inserted above"), &file)
    }
}

fn rewrite_dead_letters(file: &Path, letters: &[DeadLetter]) -> Result<(), LogError> {
    let mut bytes = Vec::new();
    for letter in letters {
        bytes.extend(serde_json::to_vec(letter).map_err(|e| LogError::Corrupt(e.to_string()))?);
        bytes.push(b'\n');
    }
    Ok(write_atomically(file, &bytes)?)
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

/// The segment a partition's appends go to, owned by the writer thread.
struct ActiveSegment {
    file: File,
    base: u64,
    bytes: u64,
}

fn run_writer(
    mut active: Vec<ActiveSegment>,
    mut journal: Journal,
    mut rx: mpsc::Receiver<AppendRequest>,
    inner: &Inner,
) {
    let segment_bytes = inner.options.segment_bytes.max(1);
    let partitions = active.len();
    // Segments written since the last checkpoint, not yet synced.
    let mut unsynced = vec![false; partitions];
    let mut checkpoints = Checkpoints::spawn();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 4096 {
                break;
            }
        }
        let mut per_partition: Vec<Vec<u8>> = vec![Vec::new(); partitions];
        let mut counts = vec![0u64; partitions];
        for req in &batch {
            per_partition[req.partition.index()].extend_from_slice(&req.line);
            counts[req.partition.index()] += 1;
        }
        // Per partition: the offset of its first entry in this batch, once
        // written; None when its write failed (or it had none).
        let mut first_offset: Vec<Option<u64>> = vec![None; partitions];
        let mut failure: Option<String> = None;
        // Each partition's lines go to its segment, unsynced: the journal
        // below makes the whole batch durable with one fdatasync.
        for (p, bytes) in per_partition.iter().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            let segment = &mut active[p];
            if let Err(e) = segment.file.write_all(bytes) {
                // Cut off whatever part of the batch reached the file,
                // so later appends do not follow a torn line.
                let _ = segment.file.set_len(segment.bytes);
                failure = Some(format!("append to partition {p} failed: {e}"));
                continue;
            }
            unsynced[p] = true;
            first_offset[p] = Some(
                inner.partitions[p]
                    .read()
                    .expect("partition lock poisoned")
                    .end,
            );
        }
        let written = first_offset
            .iter()
            .enumerate()
            .filter_map(|(p, first)| first.map(|first| (p as u32, first, &per_partition[p][..])));
        if let Err(e) = journal.write_batch(written) {
            // Nothing of the batch is durable: take it back out of the
            // segments (readers never saw it: the ends are not moved yet).
            for (p, first) in first_offset.iter_mut().enumerate() {
                if first.take().is_some() {
                    let _ = active[p].file.set_len(active[p].bytes);
                }
            }
            failure = Some(format!("append to the journal failed: {e}"));
        }
        for (p, first) in first_offset.iter().enumerate() {
            if first.is_none() {
                continue;
            }
            let segment = &mut active[p];
            segment.bytes += per_partition[p].len() as u64;
            // Publish the new durable end; offsets are assigned in queue
            // order within the partition.
            let mut files = inner.partitions[p]
                .write()
                .expect("partition lock poisoned");
            files.end += counts[p];
            if let Some(s) = files.segments.get_mut(&segment.base) {
                s.bytes = segment.bytes;
            }
            if segment.bytes >= segment_bytes && roll(segment, &mut files) {
                unsynced[p] = false;
            }
        }
        inner.appended.notify_waiters();
        let mut next_offset = first_offset;
        for req in batch {
            let answer = match &mut next_offset[req.partition.index()] {
                Some(offset) => {
                    *offset += 1;
                    Ok(EntryId {
                        ms: 0,
                        seq: *offset - 1,
                    })
                }
                None => Err(failure.clone().unwrap_or_default()),
            };
            let _ = req.done.send(answer);
        }
        if let Some(message) = failure {
            tracing::error!(%message, "embedded log write failed");
        }
        if journal.bytes() >= inner.options.journal_bytes {
            checkpoints.start(
                &active,
                &mut unsynced,
                &mut journal,
                inner.options.journal_bytes,
            );
        }
    }
}

/// A journal file to delete once these segments are synced.
struct Checkpoint {
    segments: Vec<File>,
    journal: PathBuf,
}

/// The checkpoint thread: syncing 16 MiB of segments takes tens of
/// milliseconds, which the writer (and every append waiting on it) must not.
struct Checkpoints {
    jobs: std::sync::mpsc::Sender<Checkpoint>,
    done: std::sync::mpsc::Receiver<()>,
    /// A checkpoint was handed over and has not reported back.
    running: bool,
}

impl Checkpoints {
    fn spawn() -> Checkpoints {
        let (jobs, queue) = std::sync::mpsc::channel::<Checkpoint>();
        let (report, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("embedded-log-checkpoint".into())
            .spawn(move || {
                for job in queue {
                    let synced = job.segments.iter().try_for_each(|f| f.sync_data());
                    // On failure the old file stays: it still holds every
                    // acknowledged entry, and the next open replays it.
                    if let Err(e) = synced.and_then(|_| fs::remove_file(&job.journal)) {
                        tracing::warn!(error = %e, journal = %job.journal.display(),
                            "journal checkpoint failed; the file is kept until the log is next opened");
                    }
                    let _ = report.send(());
                }
            })
            .expect("cannot start the embedded log's checkpoint thread");
        Checkpoints {
            jobs,
            done,
            running: false,
        }
    }

    /// Moves the writer to a new journal file and has the segments written
    /// meanwhile synced, then the old file deleted, off the writer's thread.
    /// While the previous checkpoint still runs the writer keeps the current
    /// file, up to twice the bound, and then waits for it.
    fn start(
        &mut self,
        active: &[ActiveSegment],
        unsynced: &mut [bool],
        journal: &mut Journal,
        bound: u64,
    ) {
        if self.running && self.done.try_recv().is_ok() {
            self.running = false;
        }
        if self.running {
            if journal.bytes() < bound.saturating_mul(2) {
                return;
            }
            let _ = self.done.recv();
            self.running = false;
        }
        let mut segments = Vec::new();
        for (p, segment) in active.iter().enumerate() {
            if unsynced[p] {
                match segment.file.try_clone() {
                    Ok(file) => segments.push(file),
                    Err(e) => {
                        tracing::warn!(error = %e, "journal checkpoint postponed");
                        return;
                    }
                }
            }
        }
        let old = match journal.rotate() {
            Ok(old) => old,
            Err(e) => {
                tracing::warn!(error = %e, "journal checkpoint postponed: no new journal file");
                return;
            }
        };
        let job = Checkpoint {
            segments,
            journal: old,
        };
        if self.jobs.send(job).is_ok() {
            self.running = true;
            unsynced.iter_mut().for_each(|u| *u = false);
        }
    }
}

/// Puts back into the segments whatever the journal holds past their ends:
/// entries acknowledged before a crash that lost unsynced segment data. A
/// record whose entries are all there already is skipped, so replaying twice
/// changes nothing.
fn replay(
    records: &[journal::Record],
    files: &mut [PartitionFiles],
    active: &mut [ActiveSegment],
) -> Result<(), LogError> {
    let mut restored = vec![0u64; files.len()];
    for record in records {
        let p = record.partition as usize;
        let (Some(files), Some(segment)) = (files.get_mut(p), active.get_mut(p)) else {
            return Err(LogError::Corrupt(format!(
                "the journal has entries of partition {p}, beyond the log's partitions"
            )));
        };
        let count = record.count();
        if record.first + count <= files.end {
            continue;
        }
        if record.first > files.end {
            return Err(LogError::Corrupt(format!(
                "partition {p} ends at entry {} but the journal resumes it at {}: entries are missing",
                files.end, record.first
            )));
        }
        let missing = record.lines_after(files.end - record.first);
        segment.file.write_all(missing)?;
        segment.bytes += missing.len() as u64;
        let added = record.first + count - files.end;
        files.end += added;
        restored[p] += added;
        if let Some(s) = files.segments.get_mut(&segment.base) {
            s.bytes = segment.bytes;
        }
    }
    // The journal is emptied next, so what it covered must be on disk: the
    // restored entries, and those a kill -9 left in the page cache only.
    if !records.is_empty() {
        for segment in active.iter() {
            segment.file.sync_data()?;
        }
    }
    for (p, &n) in restored.iter().enumerate() {
        if n > 0 {
            tracing::warn!(
                partition = p,
                entries = n,
                "restored acknowledged entries from the journal"
            );
        }
    }
    Ok(())
}

/// Seals the active segment and starts a new one at the partition's end;
/// returns whether it did. The sealed segment is synced first: opening the
/// log reads only the newest segment, so the journal could not restore the
/// tail of an older one. If either step fails, appends go on into the old
/// segment and the roll is tried again after the next write.
fn roll(segment: &mut ActiveSegment, files: &mut PartitionFiles) -> bool {
    let base = files.end;
    let path = segments::segment_path(&files.dir, base);
    let created = segment
        .file
        .sync_data()
        .and_then(|_| File::create(&path))
        .and_then(|_| segments::sync_dir(&files.dir))
        .and_then(|_| OpenOptions::new().append(true).open(&path));
    match created {
        Ok(file) => {
            if let Some(old) = files.segments.get_mut(&segment.base) {
                old.sealed_at = Some(SystemTime::now());
            }
            files.segments.insert(
                base,
                segments::Segment {
                    path,
                    bytes: 0,
                    sealed_at: None,
                },
            );
            *segment = ActiveSegment {
                file,
                base,
                bytes: 0,
            };
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "could not start a new segment");
            false
        }
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    fn describe(&self) -> String {
        format!("embedded log at {}", self.inner.dir.display())
    }

    async fn append(&self, envelope: &Envelope) -> Result<AppendReceipt, LogError> {
        let partition = partition_for(&envelope.key, self.partitions());
        let mut line =
            serde_json::to_vec(envelope).map_err(|e| LogError::Corrupt(e.to_string()))?;
        line.push(b'\n');
        let stopped = || LogError::Unavailable("embedded log writer stopped".into());
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
        let id = answer
            .await
            .map_err(|_| stopped())?
            .map_err(LogError::Unavailable)?;
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
        self.with_dead_letters(group, |letters, file| {
            let next = letters
                .iter()
                .filter_map(|l| l.id.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
                + 1;
            let mut letter = letter.clone();
            letter.id = next.to_string();
            let mut line =
                serde_json::to_vec(&letter).map_err(|e| LogError::Corrupt(e.to_string()))?;
            line.push(b'\n');
            let mut f = OpenOptions::new().create(true).append(true).open(file)?;
            f.write_all(&line)?;
            f.sync_data()?;
            letters.push(letter);
            Ok(next.to_string())
        })
        .await
    }

    async fn dead_letters(&self, group: &str, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        self.with_dead_letters(group, |letters, _| {
            Ok(letters.iter().take(limit).cloned().collect())
        })
        .await
    }

    async fn dead_letters_by_id(
        &self,
        group: &str,
        ids: &[String],
    ) -> Result<Vec<Option<DeadLetter>>, LogError> {
        self.with_dead_letters(group, |letters, _| {
            Ok(ids
                .iter()
                .map(|id| letters.iter().find(|l| &l.id == id).cloned())
                .collect())
        })
        .await
    }

    async fn remove_dead_letters(&self, group: &str, ids: &[String]) -> Result<u64, LogError> {
        self.with_dead_letters(group, |letters, file| {
            let before = letters.len();
            letters.retain(|l| !ids.contains(&l.id));
            let removed = (before - letters.len()) as u64;
            if removed > 0 {
                rewrite_dead_letters(file, letters)?;
            }
            Ok(removed)
        })
        .await
    }

    async fn dead_letter_count(&self, group: &str) -> Result<u64, LogError> {
        self.with_dead_letters(group, |letters, _| Ok(letters.len() as u64))
            .await
    }

    async fn ping(&self) -> Result<(), LogError> {
        if self.writer.is_closed() {
            return Err(LogError::Unavailable("embedded log writer stopped".into()));
        }
        Ok(())
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
