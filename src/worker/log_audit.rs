//! The audit of the read model against the log. A Valkey failover to a
//! replica that had not yet received the last appends, or a Valkey
//! restarted from an AOF that had not fsynced them, loses entries that a
//! worker may already have read and applied: the read model then holds
//! events the log no longer has. Nothing in the read model is wrong (the
//! effects were decided and committed once), but anything that reads the
//! log itself never sees them, and an operator must know.
//!
//! Such a loss can only happen while the log's connections break, so the
//! audit runs at start (a failover while no worker ran) and after every
//! reconnect or change of the cluster's shape (`housekeeping` runs it): it
//! asks the log which of the entries applied in the window before that
//! moment it lost, records them (`lost_log_entries`, listed at
//! `/api/lost-log-entries`), counts them
//! (`streamstock_log_lost_entries_total`, which pages) and logs them.
//!
//! A lost entry is told from a trimmed one by the log's record of the
//! newest entry it trimmed. Trimming after the failover would move that
//! record past the lost entries, so no trim runs between a reconnect and
//! the end of its audit.

use crate::store::lost_entries::AppliedEntry;
use crate::store::Store;
use crate::stream::{EntryId, EventLog, Partition};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How far back before a reconnect the applied entries are checked. A
/// failover loses what the replicas had not received, which is the
/// replication lag at the moment the primary was lost: milliseconds when
/// healthy, and never more than the node timeout plus the time to elect.
pub const WINDOW: Duration = Duration::from_secs(120);
/// At most this many entries per audit, the newest: the audit's cost is
/// bounded whatever the throughput (`WINDOW` at 10,000 events/s is more;
/// the entries lost are the newest ones before the cut).
pub const MAX_ENTRIES: usize = 50_000;
/// Reconnects come in bursts (every connection of a failover): one audit
/// after the burst settles.
pub const SETTLE: Duration = Duration::from_secs(1);
/// An audit that cannot finish (the log or the database down for longer)
/// is given up after this long, so that trimming (held back meanwhile, see
/// `housekeeping`) resumes.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
/// Between attempts while the log or the database does not answer (the
/// failover still under way).
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub struct LogAudit {
    pub log: Arc<dyn EventLog>,
    pub store: Store,
}

/// What one audit found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditOutcome {
    /// Applied entries checked.
    pub checked: usize,
    /// Of those, the ones the log lost.
    pub lost: Vec<AppliedEntry>,
    /// Of those, the ones no audit had recorded before.
    pub newly_recorded: u64,
}

impl LogAudit {
    /// Audits the window before `moment` (ms), again and again while the
    /// log or the database fails (the failover still under way), until it
    /// is done, `GIVE_UP_AFTER` has passed, or the worker stops.
    pub async fn audit_until_done(&self, moment: i64, stop: &CancellationToken) {
        let give_up = tokio::time::Instant::now() + GIVE_UP_AFTER;
        loop {
            match self.audit(moment).await {
                Ok(outcome) => {
                    crate::telemetry::metrics::log_audited(outcome.newly_recorded);
                    report(&outcome);
                    return;
                }
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::warn!(error = %e, "could not audit the log against the read model; giving up until the next reconnect");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "auditing the log failed; will retry")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    }

    /// Checks the entries applied in the `WINDOW` before `moment` (ms) and
    /// since, and records those the log lost.
    pub async fn audit(&self, moment: i64) -> Result<AuditOutcome, String> {
        let since = moment - WINDOW.as_millis() as i64;
        let applied = self
            .store
            .recently_applied(since, MAX_ENTRIES)
            .await
            .map_err(|e| e.to_string())?;
        let mut by_partition: BTreeMap<Partition, Vec<(EntryId, &AppliedEntry)>> = BTreeMap::new();
        for entry in &applied {
            if let Some((partition, id)) = entry.position() {
                by_partition.entry(partition).or_default().push((id, entry));
            }
        }
        let mut lost = Vec::new();
        for (partition, entries) in &by_partition {
            let ids: Vec<EntryId> = entries.iter().map(|(id, _)| *id).collect();
            let missing: HashSet<EntryId> = self
                .log
                .lost_entries(*partition, &ids)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect();
            lost.extend(
                entries
                    .iter()
                    .filter(|(id, _)| missing.contains(id))
                    .map(|(_, entry)| (*entry).clone()),
            );
        }
        let newly_recorded = if lost.is_empty() {
            0
        } else {
            self.store
                .record_lost_entries(&lost, chrono::Utc::now())
                .await
                .map_err(|e| e.to_string())?
        };
        Ok(AuditOutcome {
            checked: applied.len(),
            lost,
            newly_recorded,
        })
    }
}

fn report(outcome: &AuditOutcome) {
    if outcome.newly_recorded == 0 {
        tracing::debug!(
            checked = outcome.checked,
            lost = outcome.lost.len(),
            "audited the log"
        );
        return;
    }
    let partitions: std::collections::BTreeSet<u32> =
        outcome.lost.iter().map(|e| e.partition).collect();
    let examples: Vec<String> = outcome
        .lost
        .iter()
        .take(5)
        .map(|e| format!("{} {} ({})", e.event_type, e.event_id, e.entry_id))
        .collect();
    tracing::error!(
        lost = outcome.lost.len(),
        newly_recorded = outcome.newly_recorded,
        checked = outcome.checked,
        partitions = ?partitions,
        examples = ?examples,
        "the log lost events the read model had applied (a failover to a replica that had not received them?); \
         they are listed at /api/lost-log-entries"
    );
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
