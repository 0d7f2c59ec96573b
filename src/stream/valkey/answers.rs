//! What Valkey answers the fenced calls, parsed in one place: the scripts'
//! answer codes, a stream's XPENDING summary, and a range's first id.

use super::LogError;
use fred::prelude::*;

/// The id before every entry of a stream: where a claim's cursor starts,
/// and the last id of a stream that holds none.
pub(super) const STREAM_START: &str = "0-0";

/// A fenced script's answer for one partition, by its first element (the
/// codes the scripts above return).
pub(super) enum ScriptAnswer {
    /// {0}: the lease is not (or no longer) held under the epoch given.
    NotHeld,
    /// {1, ...}: held, and what the script did: the rest of the answer.
    Held(Vec<Value>),
    /// {2, last id}: held, and nothing new to read (READ only).
    NothingNew { last_id: String },
}

impl ScriptAnswer {
    pub(super) fn parse(answer: Value) -> Result<ScriptAnswer, LogError> {
        let mut answer = answer.into_array().into_iter();
        let code = answer.next().and_then(|code| code.as_i64());
        match code {
            Some(0) => Ok(ScriptAnswer::NotHeld),
            Some(1) => Ok(ScriptAnswer::Held(answer.collect())),
            Some(2) => Ok(ScriptAnswer::NothingNew {
                last_id: answer
                    .next()
                    .and_then(|v| v.as_string())
                    .unwrap_or_else(|| STREAM_START.to_string()),
            }),
            other => Err(LogError::Corrupt(format!(
                "a fenced script answered with code {other:?}"
            ))),
        }
    }
}

/// A stream's XPENDING summary for a group: how many entries are pending,
/// the last of them, and the count per consumer.
pub(super) struct PendingSummary {
    pub last_id: Option<String>,
    pub consumers: Vec<String>,
}

impl PendingSummary {
    /// From XPENDING's answer without a range: (count, first id, last id,
    /// [(consumer, count)]); an empty summary when it has another shape.
    pub(super) fn parse(summary: &Value) -> PendingSummary {
        let Value::Array(summary) = summary else {
            return PendingSummary {
                last_id: None,
                consumers: Vec::new(),
            };
        };
        let consumers = match summary.get(3) {
            Some(Value::Array(holders)) => holders
                .iter()
                .filter_map(|holder| match holder {
                    Value::Array(pair) => pair.first().and_then(Value::as_string),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        PendingSummary {
            last_id: summary.get(2).and_then(Value::as_string),
            consumers,
        }
    }

    /// Whether a consumer other than `consumer` holds pending entries.
    pub(super) fn others_than(&self, consumer: &str) -> bool {
        self.consumers.iter().any(|c| c != consumer)
    }

    /// The last id pending, when some are pending with a consumer other
    /// than `consumer`.
    pub(super) fn last_with_others(&self, consumer: &str) -> Option<String> {
        self.others_than(consumer)
            .then(|| self.last_id.clone())
            .flatten()
    }
}

/// The id of the first entry in an XRANGE/XREVRANGE answer.
pub(super) fn first_entry_id(entries: &Value) -> Option<String> {
    match entries {
        Value::Array(entries) => match entries.first()? {
            Value::Array(entry) => entry.first()?.as_string(),
            _ => None,
        },
        _ => None,
    }
}
