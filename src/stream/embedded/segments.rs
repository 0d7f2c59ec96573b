//! One partition of the embedded log on disk: a folder of segment files,
//! `partition-<p>/<first offset, 20 digits>.seg`, each a run of JSON lines.
//!
//! Only the newest segment is written to. Once it passes the segment size
//! it is sealed and a new one begins at the next offset, so a sealed
//! segment's entries are `[its base, the next segment's base)` and never
//! change again: deleting the oldest sealed segment is how the log forgets
//! entries every consumer group has acked.
//!
//! Nothing here keeps entries in memory. Opening reads only the newest
//! segment (to find its end and cut a torn tail); finding an entry scans at
//! most one segment from its start, so both are bounded by the segment size,
//! never by the length of the history.

use super::super::LogError;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const SEGMENT_SUFFIX: &str = "seg";

/// What the log knows of one segment file without reading it.
#[derive(Debug, Clone)]
pub struct Segment {
    pub path: PathBuf,
    /// Bytes of complete, durable entries: a reader never goes past them.
    pub bytes: u64,
    /// When the segment was sealed (its last write); None while active.
    pub sealed_at: Option<SystemTime>,
}

/// The partition's segments by first offset, and the offset the next append
/// gets. Shared between the writer (which extends it) and readers.
#[derive(Debug)]
pub struct PartitionFiles {
    pub dir: PathBuf,
    pub segments: BTreeMap<u64, Segment>,
    pub end: u64,
}

impl PartitionFiles {
    /// The first offset still on disk.
    pub fn first(&self) -> u64 {
        self.segments.keys().next().copied().unwrap_or(self.end)
    }

    /// Entries and bytes on disk.
    pub fn retained(&self) -> (u64, u64) {
        (
            self.end - self.first(),
            self.segments.values().map(|s| s.bytes).sum(),
        )
    }

    /// The newest segment: the one appends go to.
    pub fn active_base(&self) -> u64 {
        *self
            .segments
            .keys()
            .next_back()
            .expect("a partition always has an active segment")
    }

    /// Sealed segments that hold only entries below `below` and were sealed
    /// at or before `sealed_before`, oldest first. The active segment never
    /// qualifies.
    pub fn deletable(&self, below: u64, sealed_before: SystemTime) -> Vec<u64> {
        let bases: Vec<u64> = self.segments.keys().copied().collect();
        let mut out = Vec::new();
        for pair in bases.windows(2) {
            if pair[1] > below {
                break;
            }
            // Stop at the first one too young: deletion stays a prefix even
            // if modification times went backwards.
            match self.segments[&pair[0]].sealed_at {
                Some(sealed) if sealed <= sealed_before => out.push(pair[0]),
                _ => break,
            }
        }
        out
    }
}

pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{SEGMENT_SUFFIX}"))
}

/// Opens (creating or converting if needed) the partition whose segments
/// live in `dir`; `legacy` is the single file an earlier release wrote for
/// it. Returns the partition's view and the active segment opened for
/// appending.
pub fn open_partition(dir: &Path, legacy: &Path) -> Result<(PartitionFiles, File), LogError> {
    convert_legacy(dir, legacy)?;
    fs::create_dir_all(dir)?;
    let mut segments = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_SUFFIX) {
            continue;
        }
        let base = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                LogError::Corrupt(format!("unexpected segment file {}", path.display()))
            })?;
        let metadata = fs::metadata(&path)?;
        segments.insert(
            base,
            Segment {
                path,
                bytes: metadata.len(),
                sealed_at: Some(metadata.modified()?),
            },
        );
    }
    if segments.is_empty() {
        let path = segment_path(dir, 0);
        File::create(&path)?;
        sync_dir(dir)?;
        segments.insert(
            0,
            Segment {
                path,
                bytes: 0,
                sealed_at: None,
            },
        );
    }
    let (&active_base, active) = segments.iter_mut().next_back().expect("not empty");
    active.sealed_at = None;
    let (count, good_bytes) = count_complete_entries(&active.path)?;
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&active.path)?;
    if file.metadata()?.len() != good_bytes {
        tracing::warn!(path = %active.path.display(), "cutting off a torn, unacknowledged final entry");
        file.set_len(good_bytes)?;
        file.sync_all()?;
    }
    file.seek(SeekFrom::End(0))?;
    active.bytes = good_bytes;
    let files = PartitionFiles {
        dir: dir.to_path_buf(),
        segments,
        end: active_base + count,
    };
    Ok((files, file))
}

/// A data dir from before segments kept each partition in one file. Its
/// entries start at offset 0, so the file becomes the first segment as it
/// is: one rename, atomic, nothing copied and nothing lost. (The committed
/// offsets of the consumer groups stay valid for the same reason.)
fn convert_legacy(dir: &Path, legacy: &Path) -> Result<(), LogError> {
    if !legacy.exists() {
        return Ok(());
    }
    let has_segments = dir.exists()
        && fs::read_dir(dir)?.any(|e| {
            e.map(|e| e.path().extension().and_then(|x| x.to_str()) == Some(SEGMENT_SUFFIX))
                .unwrap_or(false)
        });
    if has_segments {
        return Err(LogError::Corrupt(format!(
            "both {} (an older release's log) and segments in {} exist; move one away",
            legacy.display(),
            dir.display()
        )));
    }
    fs::create_dir_all(dir)?;
    let target = segment_path(dir, 0);
    tracing::info!(from = %legacy.display(), to = %target.display(), "converting a partition file into the first segment");
    fs::rename(legacy, &target)?;
    sync_dir(dir)?;
    if let Some(parent) = legacy.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Counts the complete (newline-terminated) entries of a segment and the
/// bytes they span; a torn last line is not counted.
fn count_complete_entries(path: &Path) -> Result<(u64, u64), LogError> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    // `good` is the byte after the last newline seen so far.
    let (mut count, mut good, mut consumed) = (0u64, 0u64, 0u64);
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        let len = buffer.len();
        for (i, &b) in buffer.iter().enumerate() {
            if b == b'\n' {
                count += 1;
                good = consumed + i as u64 + 1;
            }
        }
        consumed += len as u64;
        reader.consume(len);
    }
    Ok((count, good))
}

/// Where a reader stands: entry `offset` starts `pos` bytes into the
/// segment that begins at `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub offset: u64,
    pub base: u64,
    pub pos: u64,
}

/// The segments a read may touch, copied out so no lock is held while
/// reading the files: `(base, path, durable bytes)` from the cursor's on.
pub fn plan_read(files: &PartitionFiles, from_base: u64) -> Vec<(u64, PathBuf, u64)> {
    files
        .segments
        .range(from_base..)
        .map(|(&base, s)| (base, s.path.clone(), s.bytes))
        .collect()
}

/// Places a cursor on entry `offset`, scanning its segment from the start.
/// An offset below the first segment (its entries were deleted) moves up
/// to the first entry still there; the caller says so.
pub fn locate(files: &PartitionFiles, offset: u64) -> Result<Cursor, LogError> {
    let offset = offset.clamp(files.first(), files.end);
    let (&base, segment) = files
        .segments
        .range(..=offset)
        .next_back()
        .expect("offset is at or above the first segment");
    let mut pos = 0u64;
    if offset > base {
        let mut reader =
            BufReader::with_capacity(1 << 20, File::open(&segment.path)?).take(segment.bytes);
        let mut line = Vec::new();
        for _ in base..offset {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(LogError::Corrupt(format!(
                    "{} ends before entry {offset}",
                    segment.path.display()
                )));
            }
            pos += n as u64;
        }
    }
    Ok(Cursor { offset, base, pos })
}

/// Reads up to `max` entries from `cursor` (and on into later segments),
/// stopping at the durable end; advances the cursor past them. Each entry
/// is handed to `each` as its offset and its line without the newline, in
/// one reused buffer (no allocation per entry). Returns how many were read.
pub fn read_entries(
    plan: &[(u64, PathBuf, u64)],
    cursor: &mut Cursor,
    max: usize,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<usize, LogError> {
    let mut read = 0;
    let mut line = Vec::new();
    for (i, (base, path, bytes)) in plan.iter().enumerate() {
        if *base != cursor.base {
            continue;
        }
        if cursor.pos < *bytes {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(cursor.pos))?;
            let mut reader = BufReader::with_capacity(256 << 10, file).take(bytes - cursor.pos);
            while read < max {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                if line.last() != Some(&b'\n') {
                    return Err(LogError::Corrupt(format!(
                        "{}: entry {} is cut short inside the durable part",
                        path.display(),
                        cursor.offset
                    )));
                }
                each(cursor.offset, &line[..n - 1]);
                read += 1;
                cursor.offset += 1;
                cursor.pos += n as u64;
            }
        }
        if read >= max {
            break;
        }
        // At the end of this segment: go on in the next one if it exists
        // (then this one is sealed and its end is the next one's base).
        match plan.get(i + 1) {
            Some((next, _, _)) if *next == cursor.offset => {
                *cursor = Cursor {
                    offset: cursor.offset,
                    base: *next,
                    pos: 0,
                };
            }
            Some((next, _, _)) => {
                return Err(LogError::Corrupt(format!(
                    "segment {} ends at offset {} but the next begins at {next}",
                    path.display(),
                    cursor.offset
                )))
            }
            None => break,
        }
    }
    Ok(read)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn files_with(bases: &[(u64, Option<u64>)], end: u64) -> PartitionFiles {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        PartitionFiles {
            dir: PathBuf::from("/nonexistent"),
            segments: bases
                .iter()
                .map(|&(base, sealed)| {
                    (
                        base,
                        Segment {
                            path: PathBuf::from(format!("/nonexistent/{base}")),
                            bytes: 10,
                            sealed_at: sealed.map(|s| t0 + Duration::from_secs(s)),
                        },
                    )
                })
                .collect(),
            end,
        }
    }

    /// Exactly the segments wholly below the boundary go, oldest first,
    /// never the active one, and none younger than the retention.
    #[test]
    fn deletable_segments_are_the_acked_prefix() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let files = files_with(
            &[(0, Some(1)), (100, Some(2)), (200, Some(3)), (300, None)],
            350,
        );
        let now = t0 + Duration::from_secs(10);
        assert_eq!(files.deletable(0, now), Vec::<u64>::new());
        assert_eq!(
            files.deletable(99, now),
            Vec::<u64>::new(),
            "entry 99 is not acked"
        );
        assert_eq!(files.deletable(100, now), vec![0]);
        assert_eq!(files.deletable(299, now), vec![0, 100]);
        assert_eq!(files.deletable(300, now), vec![0, 100, 200]);
        assert_eq!(
            files.deletable(350, now),
            vec![0, 100, 200],
            "the active segment stays even when all of it is acked"
        );
        // Retention: only segments sealed at or before the cutoff.
        assert_eq!(
            files.deletable(350, t0 + Duration::from_secs(2)),
            vec![0, 100]
        );
        assert_eq!(files.deletable(350, t0), Vec::<u64>::new());
        assert_eq!(files.retained(), (350, 40));
        assert_eq!(files.first(), 0);
        assert_eq!(files.active_base(), 300);
    }

    #[test]
    fn a_younger_segment_stops_deletion_of_later_ones() {
        // Mtimes can go backwards (clock steps): deletion stays a prefix.
        let files = files_with(&[(0, Some(5)), (100, Some(1)), (200, None)], 250);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            files.deletable(250, t0 + Duration::from_secs(2)),
            Vec::<u64>::new()
        );
    }

    fn write_segment(dir: &Path, base: u64, lines: &[&str]) {
        let mut f = File::create(segment_path(dir, base)).unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    #[test]
    fn locate_and_read_across_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("partition-0");
        fs::create_dir_all(&dir).unwrap();
        write_segment(&dir, 10, &["a", "bb", "ccc"]);
        write_segment(&dir, 13, &["d", "e"]);
        let (files, _) = open_partition(&dir, &tmp.path().join("none.log")).unwrap();
        assert_eq!((files.first(), files.end), (10, 15));

        let mut cursor = locate(&files, 11).unwrap();
        assert_eq!(
            cursor,
            Cursor {
                offset: 11,
                base: 10,
                pos: 2
            }
        );
        let plan = plan_read(&files, cursor.base);
        let mut text: Vec<(u64, String)> = Vec::new();
        let read = read_entries(&plan, &mut cursor, 3, |o, l| {
            text.push((o, String::from_utf8(l.to_vec()).unwrap()))
        })
        .unwrap();
        assert_eq!(read, 3);
        assert_eq!(
            text,
            vec![(11, "bb".into()), (12, "ccc".into()), (13, "d".into())]
        );
        assert_eq!(
            cursor,
            Cursor {
                offset: 14,
                base: 13,
                pos: 2
            }
        );

        // Below the first segment: moved up to the first entry kept.
        assert_eq!(locate(&files, 3).unwrap().offset, 10);
        // At the end: nothing more to read.
        let mut end = locate(&files, 15).unwrap();
        let read = read_entries(&plan_read(&files, end.base), &mut end, 5, |_, _| {
            panic!("nothing to read at the end")
        });
        assert_eq!(read.unwrap(), 0);
    }

    #[test]
    fn counts_only_complete_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s");
        fs::write(&path, b"one\ntwo\nthr").unwrap();
        assert_eq!(count_complete_entries(&path).unwrap(), (2, 8));
        fs::write(&path, b"").unwrap();
        assert_eq!(count_complete_entries(&path).unwrap(), (0, 0));
    }
}
