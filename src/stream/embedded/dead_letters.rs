//! The embedded log's dead letters: per group, a JSON-lines file
//! (`dead-letters/<group>.jsonl`) mirrored in memory once loaded.

use super::{sanitize, write_atomically, EmbeddedLog};
use crate::stream::dead_letter::DeadLetter;
use crate::stream::LogError;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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

    /// Appends `letter` under the next id; returns the id.
    pub(super) async fn store_dead_letter(
        &self,
        group: &str,
        letter: &DeadLetter,
    ) -> Result<String, LogError> {
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

    pub(super) async fn oldest_dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, LogError> {
        self.with_dead_letters(group, |letters, _| {
            Ok(letters.iter().take(limit).cloned().collect())
        })
        .await
    }

    pub(super) async fn find_dead_letters(
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

    pub(super) async fn drop_dead_letters(
        &self,
        group: &str,
        ids: &[String],
    ) -> Result<u64, LogError> {
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

    pub(super) async fn count_dead_letters(&self, group: &str) -> Result<u64, LogError> {
        self.with_dead_letters(group, |letters, _| Ok(letters.len() as u64))
            .await
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
