//! Dead letters: events a worker gave up on (undecodable, of an unknown type
//! or newer version, or failing their handler N times), kept with the reason
//! so an operator can inspect, replay or purge them (`streamstock dlq`).

use crate::domain::Envelope;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The dead-letter entry's own id (assigned when stored).
    #[serde(default)]
    pub id: String,
    pub partition: u32,
    /// Where the event was in its partition.
    pub entry_id: String,
    /// The event, when it could be decoded as an envelope at all.
    pub envelope: Option<Envelope>,
    pub error: String,
    pub attempts: u32,
    pub failed_at: DateTime<Utc>,
}

impl DeadLetter {
    /// A dead letter for the entry at `partition`/`entry`, failed now.
    pub fn new(
        partition: u32,
        entry: super::EntryId,
        envelope: Option<Envelope>,
        error: String,
        attempts: u32,
    ) -> DeadLetter {
        DeadLetter {
            id: String::new(),
            partition,
            entry_id: entry.to_string(),
            envelope,
            error,
            attempts,
            failed_at: Utc::now(),
        }
    }

    pub fn event_type(&self) -> &str {
        self.envelope
            .as_ref()
            .map(|e| e.event_type.as_str())
            .unwrap_or("(undecodable)")
    }

    pub fn key(&self) -> &str {
        self.envelope
            .as_ref()
            .map(|e| e.key.as_str())
            .unwrap_or("-")
    }
}
