//! The outbox: follow-up events committed with their effects and not yet
//! published. One row per committed batch lists its follow-ups' ids (their
//! envelopes are in the archive, written by the same transaction); the
//! worker removes the row once it has published them, and republishes what
//! is left after a crash. Rows of the older one-row-per-event `outbox` table
//! are still published, then removed.

use super::sql::{bind_all, by_ids};
use super::{Store, StoreError};
use crate::domain::Envelope;
use sqlx::Row;
use uuid::Uuid;

/// Outbox rows, by table: one row per committed batch listing its
/// follow-ups' ids (their envelopes are in the archive), and rows of the
/// older one-row-per-event outbox, only ever drained.
#[derive(Debug, Default, Clone)]
pub struct OutboxRows {
    pub batches: Vec<Uuid>,
    pub legacy_events: Vec<Uuid>,
}

impl OutboxRows {
    pub fn extend(&mut self, other: OutboxRows) {
        self.batches.extend(other.batches);
        self.legacy_events.extend(other.legacy_events);
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.legacy_events.is_empty()
    }
}

impl Store {
    /// Follow-ups committed but not yet published (left by a crash between
    /// commit and publish, or in flight in another worker), oldest first,
    /// with the outbox rows that list them.
    pub async fn pending_outbox(
        &self,
        limit: i64,
    ) -> Result<(Vec<Envelope>, OutboxRows), StoreError> {
        let mut events = Vec::new();
        let mut rows = OutboxRows::default();
        let batches = sqlx::query(
            "SELECT id, event_ids FROM outbox_batches ORDER BY created_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        for batch in batches {
            let listed: String = batch.try_get("event_ids")?;
            let ids: Vec<Uuid> = serde_json::from_str(&listed)
                .map_err(|e| StoreError::Inconsistent(format!("outbox row: {e}")))?;
            let mut by_id: std::collections::HashMap<Uuid, Envelope> = Default::default();
            let select =
                "SELECT event_id, event_type, event_key, version, occurred_at, payload, actor \
                          FROM event_archive WHERE event_id IN ({ids})";
            for (sql, values) in by_ids(self.dialect(), select, &ids) {
                for row in bind_all(sqlx::query(&sql), values)
                    .fetch_all(self.pool())
                    .await?
                {
                    let envelope = super::archived_envelope(&row)?;
                    by_id.insert(envelope.event_id, envelope);
                }
            }
            // In the order they were decided.
            for id in ids {
                let envelope = by_id.remove(&id).ok_or_else(|| {
                    StoreError::Inconsistent(format!("outbox lists {id}, which is not archived"))
                })?;
                events.push(envelope);
            }
            rows.batches.push(super::uuid_col(&batch, "id")?);
        }
        let legacy =
            sqlx::query("SELECT envelope FROM outbox ORDER BY created_at, event_id LIMIT $1")
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
        for row in legacy {
            let json: String = row.try_get("envelope")?;
            let envelope: Envelope = serde_json::from_str(&json)
                .map_err(|e| StoreError::Inconsistent(format!("outbox row: {e}")))?;
            rows.legacy_events.push(envelope.event_id);
            events.push(envelope);
        }
        Ok((events, rows))
    }

    pub async fn remove_from_outbox(&self, rows: &OutboxRows) -> Result<(), StoreError> {
        for (table, column, ids) in [
            ("outbox_batches", "id", &rows.batches),
            ("outbox", "event_id", &rows.legacy_events),
        ] {
            let delete = format!("DELETE FROM {table} WHERE {column} IN ({{ids}})");
            for (sql, values) in by_ids(self.dialect(), &delete, ids) {
                bind_all(sqlx::query(&sql), values)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }
}
