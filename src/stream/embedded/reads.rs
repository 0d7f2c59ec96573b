//! Reading the embedded log: a group's new entries, a share from each
//! partition in turn, read from the segment files where the group left off.

use super::groups::GroupPartition;
use super::{segments, Inner};
use crate::domain::Envelope;
use crate::stream::{Delivery, EntryId, LogError, Partition};
use segments::Cursor;

impl Inner {
    /// Reads up to `max` entries of `partition` from offset `from` (found at
    /// `at`, a segment base and byte offset, when known), decoded. Returns
    /// them and where reading stopped; None when `from` is at the end.
    /// An offset below the oldest segment starts at the oldest entry kept:
    /// the returned deliveries then begin above `from`.
    pub(super) fn read_from(
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
    pub(super) fn read_partition(
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

    pub(super) fn collect(
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
}

fn delivery(partition: Partition, offset: u64, line: &[u8]) -> Delivery {
    Delivery {
        partition,
        id: EntryId { ms: 0, seq: offset },
        envelope: serde_json::from_slice::<Envelope>(line)
            .map_err(|e| format!("undecodable log entry: {e}")),
    }
}
