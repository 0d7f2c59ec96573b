//! The embedded event log: one append-only file per partition in the data
//! dir, for `streamstock all` with nothing installed.
//!
//! Durability: a single writer thread takes every pending append, writes them,
//! `fdatasync`s each touched file once and only then answers the callers
//! (group commit), so an acknowledged append survives kill -9 and power loss.
//! A torn last line left by a crash mid-write is cut off on open; it was never
//! acknowledged.
//!
//! Consumer groups keep a committed offset per partition in
//! `groups/<group>.json` (written atomically on every ack). Entries past it
//! are redelivered after a restart; the read model's inbox (the event
//! archive) makes that harmless.
//! The log lives in one process: split roles need Valkey.

use super::dead_letter::DeadLetter;
use super::{partition_for, AppendReceipt, Delivery, EntryId, EventLog, LogError, PartitionStats};
use crate::domain::Envelope;
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

type Entry = Arc<Result<Envelope, String>>;

struct AppendRequest {
    partition: u32,
    line: Vec<u8>,
    envelope: Envelope,
    done: oneshot::Sender<Result<EntryId, String>>,
}

/// Per consumer group: the next offset to hand out and the committed offset
/// (everything below it is acked) of each partition.
struct GroupState {
    next: Vec<u64>,
    committed: Vec<u64>,
    acked_ahead: Vec<BTreeSet<u64>>,
    file: PathBuf,
}

struct Shared {
    partitions: Vec<RwLock<Vec<Entry>>>,
    appended: Notify,
}

pub struct EmbeddedLog {
    dir: PathBuf,
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<AppendRequest>,
    groups: Mutex<HashMap<String, GroupState>>,
    /// Serialises offset-file writes so an older snapshot never lands last.
    persist: tokio::sync::Mutex<()>,
    /// Dead letters per group, mirrored in `dead-letters/<group>.jsonl`.
    dead: tokio::sync::Mutex<HashMap<String, Vec<DeadLetter>>>,
    /// Held for the log's lifetime: one process per data dir.
    _lock: File,
}

const META_FILE: &str = "meta.json";

impl EmbeddedLog {
    /// Opens (or creates) the log under `dir`. The partition count is fixed
    /// for the life of a log: opening with another count is an error, since
    /// keys would silently move partitions and lose their order.
    pub fn open(dir: &Path, partitions: u32) -> Result<EmbeddedLog, LogError> {
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

        let mut files = Vec::new();
        let mut loaded = Vec::new();
        for p in 0..partitions {
            let path = dir.join(format!("partition-{p}.log"));
            let (file, entries) = load_partition(&path)?;
            files.push(file);
            loaded.push(RwLock::new(entries));
        }
        let shared = Arc::new(Shared {
            partitions: loaded,
            appended: Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("embedded-log-writer".into())
            .spawn(move || run_writer(files, rx, writer_shared))?;
        Ok(EmbeddedLog {
            dir: dir.to_path_buf(),
            shared,
            writer: tx,
            groups: Mutex::new(HashMap::new()),
            persist: tokio::sync::Mutex::new(()),
            dead: tokio::sync::Mutex::new(HashMap::new()),
            _lock: lock,
        })
    }

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

    fn load_group(&self, group: &str) -> Result<GroupState, LogError> {
        let n = self.shared.partitions.len();
        let file = self
            .dir
            .join("groups")
            .join(format!("{}.json", sanitize(group)));
        let mut committed = vec![0u64; n];
        if file.exists() {
            let stored: Vec<u64> = serde_json::from_slice(&fs::read(&file)?)
                .map_err(|e| LogError::Corrupt(format!("{}: {e}", file.display())))?;
            for (p, offset) in stored.into_iter().enumerate().take(n) {
                committed[p] = offset;
            }
        }
        Ok(GroupState {
            next: committed.clone(),
            committed,
            acked_ahead: vec![BTreeSet::new(); n],
            file,
        })
    }

    fn collect(
        &self,
        group: &str,
        partitions: &[u32],
        max: usize,
    ) -> Result<Vec<Delivery>, LogError> {
        self.with_group(group, |state| {
            let mut out = Vec::new();
            // Fair across partitions: take a share from each in turn, so one
            // hot partition cannot starve the others.
            let share = (max / partitions.len().max(1)).max(1);
            loop {
                let before = out.len();
                for &p in partitions {
                    let Some(entries) = self.shared.partitions.get(p as usize) else {
                        continue;
                    };
                    let entries = entries.read().expect("partition lock poisoned");
                    let p = p as usize;
                    let mut taken = 0;
                    while (state.next[p] as usize) < entries.len()
                        && taken < share
                        && out.len() < max
                    {
                        let offset = state.next[p];
                        out.push(delivery(p as u32, offset, &entries[offset as usize]));
                        state.next[p] += 1;
                        taken += 1;
                    }
                }
                if out.len() >= max || out.len() == before {
                    return out;
                }
            }
        })
    }
}

fn delivery(partition: u32, offset: u64, entry: &Entry) -> Delivery {
    Delivery {
        partition,
        id: EntryId { ms: 0, seq: offset },
        envelope: (**entry).clone(),
    }
}

impl EmbeddedLog {
    fn dead_letter_file(&self, group: &str) -> PathBuf {
        self.dir
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
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Reads a partition file, cutting off a torn final line (a crash during an
/// append that was never acknowledged).
fn load_partition(path: &Path) -> Result<(File, Vec<Entry>), LogError> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut entries = Vec::new();
    let mut good_len: u64 = 0;
    {
        let mut reader = BufReader::new(&mut file);
        reader.seek(SeekFrom::Start(0))?;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            good_len += n as u64;
            let entry = serde_json::from_slice::<Envelope>(&line[..n - 1])
                .map_err(|e| format!("undecodable log entry: {e}"));
            entries.push(Arc::new(entry));
        }
    }
    if file.metadata()?.len() != good_len {
        tracing::warn!(path = %path.display(), "cutting off a torn, unacknowledged final entry");
        file.set_len(good_len)?;
        file.sync_all()?;
    }
    Ok((file, entries))
}

fn run_writer(
    mut files: Vec<File>,
    mut rx: mpsc::UnboundedReceiver<AppendRequest>,
    shared: Arc<Shared>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 4096 {
                break;
            }
        }
        let mut touched = vec![false; files.len()];
        let mut result: Result<(), String> = Ok(());
        let mut per_partition: Vec<Vec<u8>> = vec![Vec::new(); files.len()];
        for req in &batch {
            per_partition[req.partition as usize].extend_from_slice(&req.line);
            touched[req.partition as usize] = true;
        }
        for (p, bytes) in per_partition.iter().enumerate() {
            if touched[p] {
                if let Err(e) = files[p].write_all(bytes).and_then(|_| files[p].sync_data()) {
                    result = Err(format!("append to partition {p} failed: {e}"));
                }
            }
        }
        match result {
            Ok(()) => {
                for req in batch {
                    let mut entries = shared.partitions[req.partition as usize]
                        .write()
                        .expect("partition lock poisoned");
                    let offset = entries.len() as u64;
                    entries.push(Arc::new(Ok(req.envelope)));
                    drop(entries);
                    let _ = req.done.send(Ok(EntryId { ms: 0, seq: offset }));
                }
                shared.appended.notify_waiters();
            }
            Err(message) => {
                // A failed write may have left partial bytes: the next open
                // cuts them off. Refuse this batch so no caller gets a 2xx.
                tracing::error!(%message, "embedded log write failed");
                for req in batch {
                    let _ = req.done.send(Err(message.clone()));
                }
            }
        }
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.shared.partitions.len() as u32
    }

    fn describe(&self) -> String {
        format!("embedded log at {}", self.dir.display())
    }

    async fn append(&self, envelope: &Envelope) -> Result<AppendReceipt, LogError> {
        let partition = partition_for(&envelope.key, self.partitions());
        let mut line =
            serde_json::to_vec(envelope).map_err(|e| LogError::Corrupt(e.to_string()))?;
        line.push(b'\n');
        let (done, answer) = oneshot::channel();
        self.writer
            .send(AppendRequest {
                partition,
                line,
                envelope: envelope.clone(),
                done,
            })
            .map_err(|_| LogError::Unavailable("embedded log writer stopped".into()))?;
        let id = answer
            .await
            .map_err(|_| LogError::Unavailable("embedded log writer stopped".into()))?
            .map_err(LogError::Unavailable)?;
        Ok(AppendReceipt { partition, id })
    }

    async fn read_group(
        &self,
        group: &str,
        _consumer: &str,
        partitions: &[u32],
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register interest before looking, so an append between the look
            // and the wait still wakes us.
            let notified = self.shared.appended.notified();
            let found = self.collect(group, partitions, max.max(1))?;
            if !found.is_empty() {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, group: &str, acked: &[(u32, EntryId)]) -> Result<(), LogError> {
        let _persisting = self.persist.lock().await;
        let snapshot = self.with_group(group, |state| {
            for &(p, id) in acked {
                let p = p as usize;
                if id.seq >= state.committed[p] {
                    state.acked_ahead[p].insert(id.seq);
                }
                while state.acked_ahead[p].remove(&state.committed[p]) {
                    state.committed[p] += 1;
                }
            }
            (state.file.clone(), state.committed.clone())
        })?;
        let (file, committed) = snapshot;
        tokio::task::spawn_blocking(move || {
            write_atomically(&file, &serde_json::to_vec(&committed).unwrap())
        })
        .await
        .map_err(|e| LogError::Unavailable(e.to_string()))??;
        Ok(())
    }

    async fn take_over(
        &self,
        group: &str,
        _consumer: &str,
        partition: u32,
    ) -> Result<Vec<Delivery>, LogError> {
        let p = partition as usize;
        let Some(entries) = self.shared.partitions.get(p) else {
            return Ok(Vec::new());
        };
        self.with_group(group, |state| {
            let entries = entries.read().expect("partition lock poisoned");
            (state.committed[p]..state.next[p])
                .filter(|offset| !state.acked_ahead[p].contains(offset))
                .map(|offset| delivery(partition, offset, &entries[offset as usize]))
                .collect()
        })
    }

    async fn partition_stats(&self, group: &str) -> Result<Vec<PartitionStats>, LogError> {
        self.with_group(group, |state| {
            self.shared
                .partitions
                .iter()
                .enumerate()
                .map(|(p, entries)| {
                    let length = entries.read().expect("partition lock poisoned").len() as u64;
                    PartitionStats {
                        partition: p as u32,
                        length,
                        lag: length.saturating_sub(state.next[p]),
                        pending: state.next[p].saturating_sub(state.committed[p])
                            - state.acked_ahead[p].len() as u64,
                    }
                })
                .collect()
        })
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
}
