//! The embedded log's single writer thread: it takes the pending appends
//! in batches, writes each partition's share to its active segment, the
//! whole batch to the journal (one fdatasync: the group commit), publishes
//! the partitions' new ends and answers the callers; it rolls segments, and
//! has a checkpoint thread sync them so the journal can be emptied. On
//! open, `replay` restores from the journal what a crash lost.
//!
//! A failed fsync halts the writer: the appends it covered are answered
//! "outcome unknown" (they may be on disk), and every later append is
//! refused until the process restarts and recovery reads what the disk
//! really holds. The writer never retries an fsync and then acknowledges:
//! after a failed fsync the kernel may have dropped dirty pages while
//! marking them clean, so a later fsync that succeeds proves nothing
//! (PostgreSQL's "fsyncgate"). A write refused for want of space (ENOSPC)
//! is different: nothing of the batch is kept, its appends hear "disk
//! full", and the next batch tries again.

use super::{journal, segments, Inner};
use crate::stream::{EntryId, LogError, Partition};
use journal::Journal;
use segments::PartitionFiles;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// An append waiting for the writer, and where its answer goes.
pub(super) struct AppendRequest {
    pub partition: Partition,
    pub line: Vec<u8>,
    pub done: oneshot::Sender<Result<EntryId, WriteFailure>>,
}

/// Why an append was not made durable, as its caller hears it.
#[derive(Debug, Clone)]
pub(super) enum WriteFailure {
    /// The disk is full: nothing was recorded; writes resume with space.
    DiskFull(String),
    /// Nothing was recorded.
    Failed(String),
    /// An fsync failed: the append may or may not be on disk, and the log
    /// has halted.
    InDoubt(String),
}

impl WriteFailure {
    /// A failed write: `DiskFull` when the disk had no room for it.
    fn of_write(what: &str, e: &std::io::Error) -> WriteFailure {
        let message = format!("{what}: {e}");
        if e.kind() == std::io::ErrorKind::StorageFull {
            WriteFailure::DiskFull(message)
        } else {
            WriteFailure::Failed(message)
        }
    }
}

impl From<WriteFailure> for LogError {
    fn from(failure: WriteFailure) -> LogError {
        match failure {
            WriteFailure::DiskFull(message) => LogError::DiskFull(message),
            WriteFailure::Failed(message) => LogError::Unavailable(message),
            WriteFailure::InDoubt(message) => LogError::OutcomeUnknown(message),
        }
    }
}

/// Halts the log after a failed fsync: said once, loudly, and recorded for
/// every later append and for readiness.
pub(super) fn halt(halted: &std::sync::OnceLock<String>, why: String) {
    if halted.set(why.clone()).is_ok() {
        tracing::error!(
            reason = %why,
            "the embedded log has halted after a failed fsync and takes no more writes; \
             restart the process (recovery reads what the disk holds)"
        );
    }
}

/// The segment a partition's appends go to, owned by the writer thread.
pub(super) struct ActiveSegment {
    pub file: File,
    pub base: u64,
    pub bytes: u64,
}

/// Appends the writer takes into one batch at most: one journal write and
/// one fdatasync for them all.
const MAX_BATCH: usize = 4096;

/// Runs the writer until every sender of `rx` is gone.
pub(super) fn run_writer(
    active: Vec<ActiveSegment>,
    journal: Journal,
    mut rx: mpsc::Receiver<AppendRequest>,
    inner: &Inner,
) {
    let partitions = active.len();
    let mut writer = Writer {
        inner,
        active,
        journal,
        unsynced: vec![false; partitions],
        checkpoints: Checkpoints::spawn(inner.halted.clone()),
    };
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        writer.write(batch);
    }
}

/// What the writer thread owns between batches.
struct Writer<'a> {
    inner: &'a Inner,
    active: Vec<ActiveSegment>,
    journal: Journal,
    /// Segments written since the last checkpoint, not yet synced.
    unsynced: Vec<bool>,
    checkpoints: Checkpoints,
}

/// One batch's lines, gathered per partition.
struct Batch {
    requests: Vec<AppendRequest>,
    lines: Vec<Vec<u8>>,
    counts: Vec<u64>,
}

impl Batch {
    fn gather(requests: Vec<AppendRequest>, partitions: usize) -> Batch {
        let mut lines: Vec<Vec<u8>> = vec![Vec::new(); partitions];
        let mut counts = vec![0u64; partitions];
        for req in &requests {
            lines[req.partition.index()].extend_from_slice(&req.line);
            counts[req.partition.index()] += 1;
        }
        Batch {
            requests,
            lines,
            counts,
        }
    }
}

impl Writer<'_> {
    /// Makes a batch durable and answers each of its appends: segments,
    /// then the journal (the one sync), then the new ends, then answers.
    fn write(&mut self, requests: Vec<AppendRequest>) {
        if let Some(why) = self.inner.halted.get() {
            let failure = WriteFailure::Failed(format!("the embedded log has halted: {why}"));
            for req in requests {
                let _ = req.done.send(Err(failure.clone()));
            }
            return;
        }
        let batch = Batch::gather(requests, self.active.len());
        let mut failure = None;
        // Per partition: the offset of its first entry in this batch, once
        // written; None when its write failed (or it had none).
        let mut first_offset = self.write_segments(&batch, &mut failure);
        self.write_journal(&batch, &mut first_offset, &mut failure);
        self.publish_ends(&batch, &mut first_offset, &mut failure);
        self.inner.appended.notify_waiters();
        answer(batch.requests, first_offset, &failure);
        if let Some(failure) = failure {
            tracing::error!(?failure, "embedded log write failed");
        }
        if self.journal.bytes() >= self.inner.options.journal_bytes {
            self.checkpoints.start(
                &self.active,
                &mut self.unsynced,
                &mut self.journal,
                self.inner.options.journal_bytes,
            );
        }
    }

    /// Each partition's lines to its segment, unsynced: the journal makes
    /// the whole batch durable with one fdatasync.
    fn write_segments(
        &mut self,
        batch: &Batch,
        failure: &mut Option<WriteFailure>,
    ) -> Vec<Option<u64>> {
        let mut first_offset = vec![None; self.active.len()];
        for (p, bytes) in batch.lines.iter().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            let segment = &mut self.active[p];
            if let Err(e) = segment.file.write_all(bytes) {
                // Cut off whatever part of the batch reached the file,
                // so later appends do not follow a torn line.
                let _ = segment.file.set_len(segment.bytes);
                *failure = Some(WriteFailure::of_write(
                    &format!("append to partition {p}"),
                    &e,
                ));
                continue;
            }
            self.unsynced[p] = true;
            first_offset[p] = Some(self.inner.files(p).end);
        }
        first_offset
    }

    /// The batch's written lines to the journal, synced. If that fails,
    /// nothing of the batch is durable: it is taken back out of the
    /// segments (readers never saw it: the ends are not moved yet).
    fn write_journal(
        &mut self,
        batch: &Batch,
        first_offset: &mut [Option<u64>],
        failure: &mut Option<WriteFailure>,
    ) {
        let written = first_offset
            .iter()
            .enumerate()
            .filter_map(|(p, first)| first.map(|first| (p as u32, first, &batch.lines[p][..])));
        if let Err(e) = self.journal.write_batch(written) {
            for (p, first) in first_offset.iter_mut().enumerate() {
                if first.take().is_some() {
                    let _ = self.active[p].file.set_len(self.active[p].bytes);
                }
            }
            *failure = Some(match e {
                journal::JournalError::Write(e) => {
                    WriteFailure::of_write("append to the journal", &e)
                }
                journal::JournalError::Sync(e) => {
                    let why = format!("fsync of the journal failed: {e}");
                    halt(&self.inner.halted, why.clone());
                    WriteFailure::InDoubt(why)
                }
            });
        }
    }

    /// Publishes each written partition's new durable end (offsets are
    /// assigned in queue order within the partition) and rolls a full
    /// segment.
    fn publish_ends(
        &mut self,
        batch: &Batch,
        first_offset: &mut [Option<u64>],
        failure: &mut Option<WriteFailure>,
    ) {
        let segment_bytes = self.inner.options.segment_bytes.max(1);
        for (p, written) in first_offset.iter_mut().enumerate() {
            let Some(first) = *written else {
                continue;
            };
            let segment = &mut self.active[p];
            let mut files = self.inner.partitions[p]
                .write()
                .expect("partition lock poisoned");
            if files.end != first {
                // Only this thread moves a partition's end: an end that
                // moved since the write means offsets would repeat or skip.
                // Refuse the batch's entries of the partition rather than
                // hand out wrong offsets.
                crate::telemetry::metrics::invariant_broken("embedded_log_offsets_forward");
                tracing::error!(
                    partition = p,
                    expected = first,
                    end = files.end,
                    "invariant broken: the partition's end moved under the writer; its appends fail"
                );
                let _ = segment.file.set_len(segment.bytes);
                *failure = Some(WriteFailure::Failed(format!(
                    "partition {p}'s end moved under the writer"
                )));
                *written = None;
                continue;
            }
            segment.bytes += batch.lines[p].len() as u64;
            files.end += batch.counts[p];
            if let Some(s) = files.segments.get_mut(&segment.base) {
                s.bytes = segment.bytes;
            }
            if segment.bytes >= segment_bytes && roll(segment, &mut files, &self.inner.halted) {
                self.unsynced[p] = false;
            }
        }
    }
}

/// Answers each append with its entry id, or with the failure when its
/// partition's write did not become durable.
fn answer(
    requests: Vec<AppendRequest>,
    first_offset: Vec<Option<u64>>,
    failure: &Option<WriteFailure>,
) {
    let mut next_offset = first_offset;
    for req in requests {
        let answer = match &mut next_offset[req.partition.index()] {
            Some(offset) => {
                *offset += 1;
                Ok(EntryId {
                    ms: 0,
                    seq: *offset - 1,
                })
            }
            None => Err(failure
                .clone()
                .unwrap_or_else(|| WriteFailure::Failed("not written".into()))),
        };
        let _ = req.done.send(answer);
    }
}

/// A journal file to delete once these segments are synced.
struct Checkpoint {
    segments: Vec<File>,
    journal: PathBuf,
}

/// A fault for tests, in debug builds only: with
/// `STREAMSTOCK_FAULT_SLOW_CHECKPOINT_MS` set, every checkpoint takes that
/// much longer, as on a slow disk, so the writer meets a lagging one.
fn slow_checkpoints() -> Option<std::time::Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let millis = std::env::var("STREAMSTOCK_FAULT_SLOW_CHECKPOINT_MS").ok()?;
    millis.parse().ok().map(std::time::Duration::from_millis)
}

/// The checkpoint thread: syncing 16 MiB of segments takes tens of
/// milliseconds, which the writer (and every append waiting on it) must not.
struct Checkpoints {
    jobs: std::sync::mpsc::Sender<Checkpoint>,
    done: std::sync::mpsc::Receiver<()>,
    /// A checkpoint was handed over and has not reported back.
    running: bool,
    /// The size of the journal file that checkpoint will delete.
    running_bytes: u64,
}

impl Checkpoints {
    fn spawn(halted: std::sync::Arc<std::sync::OnceLock<String>>) -> Checkpoints {
        let (jobs, queue) = std::sync::mpsc::channel::<Checkpoint>();
        let (report, done) = std::sync::mpsc::channel();
        let delay = slow_checkpoints();
        std::thread::Builder::new()
            .name("embedded-log-checkpoint".into())
            .spawn(move || {
                for job in queue {
                    if let Some(delay) = delay {
                        std::thread::sleep(delay);
                    }
                    // On failure the old file stays: it still holds every
                    // acknowledged entry, and the next open replays it. A
                    // failed fsync halts the log too (see the module's
                    // comment).
                    if let Err(e) = job.segments.iter().try_for_each(|f| f.sync_data()) {
                        halt(&halted, format!("fsync of a segment failed: {e}"));
                    } else if let Err(e) = fs::remove_file(&job.journal) {
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
            running_bytes: 0,
        }
    }

    /// Moves the writer to a new journal file and has the segments written
    /// meanwhile synced, then the old file deleted, off the writer's thread.
    /// While the previous checkpoint still runs the writer keeps the current
    /// file until it and the file being deleted hold twice the bound, and
    /// then waits for it: the journal's files never hold much more than
    /// twice the bound (a batch more).
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
            if journal.bytes() + self.running_bytes < bound.saturating_mul(2) {
                return;
            }
            let _ = self.done.recv();
            self.running = false;
        }
        let rotated_bytes = journal.bytes();
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
            self.running_bytes = rotated_bytes;
            unsynced.iter_mut().for_each(|u| *u = false);
        }
    }
}

/// Puts back into the segments whatever the journal holds past their ends:
/// entries acknowledged before a crash that lost unsynced segment data. A
/// record whose entries are all there already is skipped, so replaying twice
/// changes nothing.
pub(super) fn replay(
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
fn roll(
    segment: &mut ActiveSegment,
    files: &mut PartitionFiles,
    halted: &std::sync::OnceLock<String>,
) -> bool {
    let base = files.end;
    let path = segments::segment_path(&files.dir, base);
    if let Err(e) = segment.file.sync_data() {
        halt(halted, format!("fsync of a sealed segment failed: {e}"));
        return false;
    }
    let created = File::create(&path)
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
