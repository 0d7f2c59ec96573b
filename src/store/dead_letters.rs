//! What an operator does with dead letters, shared by `streamstock dlq`
//! and the gateway's `/api/dead-letters/replay` and `/purge` (the
//! dashboard's buttons): pick them by id, replay them (forget their failed
//! attempts, append them to the log again, remove them), or purge them.
//! Here because a replay touches both the read model (the attempts) and the
//! log.

use super::{Store, StoreError};
use crate::stream::dead_letter::DeadLetter;
use crate::stream::{EventLog, LogError};

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("no dead letter with id {0}")]
    Unknown(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a replay did with each letter.
#[derive(Debug, Default)]
pub struct Replayed {
    /// (letter id, the new log entry's msg id) of each letter appended again.
    pub appended: Vec<(String, String)>,
    /// Letters that were not a readable event: only purging removes them.
    pub not_replayable: Vec<String>,
}

/// How many letters a selection of "all" takes at once: replaying or
/// purging them is done a page at a time, so no call holds every dead
/// letter in memory however many there are.
pub const ALL_PAGE: usize = 1_000;

/// The oldest `ALL_PAGE` dead letters of `group` (`ids` None), or those
/// named, in the order named, each read by its id; an id that is not there
/// is an error, and nothing is chosen.
pub async fn choose(
    log: &dyn EventLog,
    group: &str,
    ids: Option<&[String]>,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let Some(ids) = ids else {
        return Ok(log.dead_letters(group, ALL_PAGE).await?);
    };
    log.dead_letters_by_id(group, ids)
        .await?
        .into_iter()
        .zip(ids)
        .map(|(letter, id)| letter.ok_or_else(|| DeadLetterError::Unknown(id.clone())))
        .collect()
}

/// Appends each letter's event to the log again with its failed attempts
/// forgotten (so it gets every attempt anew), then removes the letters
/// that were appended.
pub async fn replay(
    store: &Store,
    log: &dyn EventLog,
    group: &str,
    letters: &[DeadLetter],
) -> Result<Replayed, DeadLetterError> {
    let mut done = Replayed::default();
    for letter in letters {
        let Some(envelope) = &letter.envelope else {
            done.not_replayable.push(letter.id.clone());
            continue;
        };
        store
            .clear_attempts(group, &envelope.event_id.to_string())
            .await?;
        let receipt = log.append(envelope).await?;
        done.appended.push((letter.id.clone(), receipt.msg_id()));
    }
    let appended: Vec<String> = done.appended.iter().map(|(id, _)| id.clone()).collect();
    log.remove_dead_letters(group, &appended).await?;
    Ok(done)
}

/// Removes the letters for good; returns how many were removed.
pub async fn purge(
    log: &dyn EventLog,
    group: &str,
    letters: &[DeadLetter],
) -> Result<u64, DeadLetterError> {
    let ids: Vec<String> = letters.iter().map(|l| l.id.clone()).collect();
    Ok(log.remove_dead_letters(group, &ids).await?)
}
