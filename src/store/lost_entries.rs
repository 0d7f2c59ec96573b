//! The read model's side of the log audit (`worker::log_audit`): the
//! entries it applied most recently, and the record of those the log lost.

use super::sql::{bind_all, multi_insert, SqlValue};
use super::{Store, StoreError};
use crate::stream::{EntryId, Partition};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

/// The lost entries kept on record, the newest (see `record_lost_entries`).
pub const KEPT: usize = 100_000;

/// An event the read model applied from the log: where the log held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppliedEntry {
    pub event_id: String,
    pub event_type: String,
    pub event_key: String,
    pub partition: u32,
    pub entry_id: String,
    /// When it was applied.
    pub applied_at: DateTime<Utc>,
}

impl AppliedEntry {
    pub fn position(&self) -> Option<(Partition, EntryId)> {
        Some((Partition(self.partition), self.entry_id.parse().ok()?))
    }
}

/// An applied event the log no longer has, as recorded by the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LostLogEntry {
    #[serde(flatten)]
    pub entry: AppliedEntry,
    /// When a worker found it missing.
    pub detected_at: DateTime<Utc>,
}

impl Store {
    /// The consumed events applied at or after `since` (ms), newest first,
    /// at most `limit`: walked back from the end of the archive, so the
    /// cost is bounded by `limit` whatever the archive's size. Follow-ups,
    /// archived before they are published, have no entry and are left out.
    pub async fn recently_applied(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<AppliedEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, event_type, event_key, partition_no, entry_id, processed_at \
             FROM event_archive ORDER BY seq DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        let mut applied = Vec::new();
        for row in rows {
            let applied_at: i64 = row.try_get("processed_at")?;
            // The archive's order is commit order, and commit times only
            // grow within a worker's clock: stop once past the window
            // (another worker's skewed clock can only end the walk early
            // by that skew).
            if applied_at < since {
                break;
            }
            let entry_id: String = row.try_get("entry_id")?;
            if entry_id.is_empty() {
                continue;
            }
            applied.push(AppliedEntry {
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                event_key: row.try_get("event_key")?,
                partition: u32::try_from(row.try_get::<i64, _>("partition_no")?).unwrap_or(0),
                entry_id,
                applied_at: at(applied_at),
            });
        }
        Ok(applied)
    }

    /// Records applied events the log lost; returns how many were not
    /// recorded before (another worker's audit may have found them first).
    /// Keeps the newest `KEPT` records: a deployment that loses entries
    /// failover after failover (strict durability) does not grow the table
    /// without bound; the metric still counts every one.
    pub async fn record_lost_entries(
        &self,
        lost: &[AppliedEntry],
        detected_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.record_lost_entries_keeping(lost, detected_at, KEPT)
            .await
    }

    async fn record_lost_entries_keeping(
        &self,
        lost: &[AppliedEntry],
        detected_at: DateTime<Utc>,
        kept: usize,
    ) -> Result<u64, StoreError> {
        let columns = [
            "event_id",
            "event_type",
            "event_key",
            "partition_no",
            "entry_id",
            "applied_at",
            "detected_at",
        ];
        let rows: Vec<Vec<SqlValue>> = lost
            .iter()
            .map(|entry| {
                vec![
                    entry.event_id.as_str().into(),
                    entry.event_type.as_str().into(),
                    entry.event_key.as_str().into(),
                    i64::from(entry.partition).into(),
                    entry.entry_id.as_str().into(),
                    entry.applied_at.timestamp_millis().into(),
                    detected_at.timestamp_millis().into(),
                ]
            })
            .collect();
        let mut recorded = 0;
        let mut tx = self.pool().begin().await?;
        for (sql, values) in multi_insert(
            self.dialect(),
            "lost_log_entries",
            &columns,
            rows,
            "ON CONFLICT (event_id) DO NOTHING",
        ) {
            recorded += bind_all(sqlx::query(&sql), values)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        if recorded > 0 {
            // Only after a loss (rare): the cost of the sort is paid then.
            sqlx::query(
                "DELETE FROM lost_log_entries WHERE event_id NOT IN \
                 (SELECT event_id FROM lost_log_entries \
                  ORDER BY detected_at DESC, applied_at DESC LIMIT $1)",
            )
            .bind(kept as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// How many lost entries are on record (at most about `KEPT`).
    pub async fn lost_log_entry_count(&self) -> Result<u64, StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lost_log_entries")
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// The recorded lost entries, newest first, at most `limit`, and how
    /// many there are in all.
    pub async fn lost_log_entries(
        &self,
        limit: usize,
    ) -> Result<(Vec<LostLogEntry>, u64), StoreError> {
        let total = self.lost_log_entry_count().await?;
        let rows = sqlx::query(
            "SELECT event_id, event_type, event_key, partition_no, entry_id, applied_at, detected_at \
             FROM lost_log_entries ORDER BY detected_at DESC, applied_at DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        let mut lost = Vec::with_capacity(rows.len());
        for row in rows {
            lost.push(LostLogEntry {
                entry: AppliedEntry {
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    event_key: row.try_get("event_key")?,
                    partition: u32::try_from(row.try_get::<i64, _>("partition_no")?).unwrap_or(0),
                    entry_id: row.try_get("entry_id")?,
                    applied_at: at(row.try_get("applied_at")?),
                },
                detected_at: at(row.try_get("detected_at")?),
            });
        }
        Ok((lost, total))
    }
}

/// A time stored as ms since the epoch.
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> AppliedEntry {
        AppliedEntry {
            event_id: format!("event-{n}"),
            event_type: "order.placed".into(),
            event_key: format!("order-{n}"),
            partition: n % 2,
            entry_id: format!("{n}-0"),
            applied_at: at(1_000 + i64::from(n)),
        }
    }

    #[tokio::test]
    async fn each_lost_entry_is_recorded_once_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/read-model.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let first = [entry(1), entry(2)];
        assert_eq!(
            store
                .record_lost_entries_keeping(&first, at(10), 2)
                .await
                .unwrap(),
            2
        );
        // Found again by another worker: nothing new.
        assert_eq!(
            store
                .record_lost_entries_keeping(&first, at(11), 2)
                .await
                .unwrap(),
            0
        );
        // A later loss: the oldest record goes, the two newest stay.
        assert_eq!(
            store
                .record_lost_entries_keeping(&[entry(3)], at(20), 2)
                .await
                .unwrap(),
            1
        );
        let (kept, total) = store.lost_log_entries(10).await.unwrap();
        assert_eq!(total, 2);
        let ids: Vec<&str> = kept.iter().map(|e| e.entry.event_id.as_str()).collect();
        assert_eq!(ids[0], "event-3");
        assert_eq!(ids.len(), 2);
    }
}
