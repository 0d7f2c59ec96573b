//! Consumer groups of the embedded log: each group's position in each
//! partition (committed, next to hand out, acked ahead), loaded from and
//! persisted to `groups/<group>.json`, and what depends on it: acks,
//! take-overs of unacked entries, and trimming what every group committed.

use super::segments::{self, PartitionFiles};
use super::{sanitize, write_atomically, Inner};
use crate::stream::{Delivery, EntryId, LogError, Partition, Trimmed};
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

/// One consumer group's position in one partition.
#[derive(Debug, Clone)]
pub(super) struct GroupPartition {
    /// Every entry below it is acked.
    pub committed: u64,
    /// The next entry to hand out.
    pub next: u64,
    /// Where `next` is on disk, once found: (segment base, byte offset).
    pub next_at: Option<(u64, u64)>,
    /// Acked entries above `committed` (acks can come out of order).
    pub acked_ahead: BTreeSet<u64>,
}

impl GroupPartition {
    /// Its invariant: everything below `committed` is acked, and the acks
    /// held ahead lie between `committed` and `next`.
    fn check(&self) -> Result<(), String> {
        let ahead_inside = match (self.acked_ahead.first(), self.acked_ahead.last()) {
            (Some(&low), Some(&high)) => low > self.committed && high < self.next,
            _ => true,
        };
        if self.committed > self.next {
            return Err(format!(
                "committed offset {} is past the next to hand out, {}",
                self.committed, self.next
            ));
        }
        if !ahead_inside {
            return Err(format!(
                "acks held ahead {:?} fall outside ({}, {})",
                self.acked_ahead, self.committed, self.next
            ));
        }
        Ok(())
    }
}

pub(super) struct GroupState {
    pub partitions: Vec<GroupPartition>,
    pub file: PathBuf,
}

impl Inner {
    /// Loads every group that ever committed: all count when deciding what
    /// may be deleted, so none waits for its first use.
    pub(super) fn load_every_group(&self) -> Result<(), LogError> {
        for entry in fs::read_dir(self.dir.join("groups"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                    self.with_group(name, |_| ())?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn with_group<T>(
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

    pub(super) fn files(&self, partition: usize) -> std::sync::RwLockReadGuard<'_, PartitionFiles> {
        self.partitions[partition]
            .read()
            .expect("partition lock poisoned")
    }

    pub(super) fn load_group(&self, group: &str) -> Result<GroupState, LogError> {
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

    /// Marks entries acked in memory; returns the group's offsets file and
    /// its committed offsets, to be written (`persist_offsets`).
    pub(super) fn ack(
        &self,
        group: &str,
        acked: &[(Partition, EntryId)],
    ) -> Result<GroupOffsets, LogError> {
        self.with_group(group, |state| {
            let mut touched = std::collections::BTreeSet::new();
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
                touched.insert(p);
            }
            // Checked once per partition the ack moved, not per entry.
            for p in touched {
                if let Err(broken) = state.partitions[p.index()].check() {
                    // Persisting these offsets could skip or repeat entries:
                    // the ack fails instead, and the partition waits.
                    crate::telemetry::metrics::invariant_broken("embedded_group_offsets");
                    tracing::error!(group, partition = p.0, %broken, "invariant broken: not persisting the group's offsets");
                    return Err(LogError::Corrupt(format!(
                        "group {group}, partition {p}: {broken}"
                    )));
                }
            }
            let committed: Vec<u64> = state.partitions.iter().map(|gp| gp.committed).collect();
            Ok((state.file.clone(), committed))
        })?
    }

    /// The group's delivered but unacked entries of `partition`, in order.
    pub(super) fn unacked(
        &self,
        group: &str,
        partition: Partition,
    ) -> Result<Vec<Delivery>, LogError> {
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
    pub(super) fn trim(&self, partitions: &[Partition]) -> Result<Trimmed, LogError> {
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
pub(super) type GroupOffsets = (PathBuf, Vec<u64>);

/// Writes a group's committed offsets (callers hold `persist`).
pub(super) async fn persist_offsets((file, committed): GroupOffsets) -> Result<(), LogError> {
    tokio::task::spawn_blocking(move || {
        write_atomically(&file, &serde_json::to_vec(&committed).unwrap())
    })
    .await
    .map_err(|e| LogError::Unavailable(e.to_string()))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::GroupPartition;
    use std::collections::BTreeSet;

    #[test]
    fn a_group_position_checks_its_invariant() {
        let at = |committed, next, ahead: &[u64]| GroupPartition {
            committed,
            next,
            next_at: None,
            acked_ahead: ahead.iter().copied().collect::<BTreeSet<u64>>(),
        };
        assert!(at(3, 7, &[5, 6]).check().is_ok());
        assert!(at(3, 3, &[]).check().is_ok());
        assert!(at(8, 7, &[]).check().is_err(), "committed past next");
        assert!(
            at(3, 7, &[3]).check().is_err(),
            "an ack at committed is no ack ahead"
        );
        assert!(
            at(3, 7, &[7]).check().is_err(),
            "ahead of what was handed out"
        );
    }
}
