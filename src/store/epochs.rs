//! The lease epochs batches were committed under (`partition_epochs`):
//! each batch records its partitions' epochs in its own transaction, which
//! is refused when a newer one has committed (the fence at the commit), and
//! new leases are issued above what is recorded. And the epochs leases were
//! claimed under (`epoch_claims`): a worker claims a new lease's epoch
//! before working under it, and only one claim per epoch succeeds, so even
//! a lease store that forgot its last epochs (a Valkey failover to a
//! replica that missed them) never has two holders work under one epoch.

use super::sql::Tx;
use super::{Store, StoreError};
use crate::stream::{Epoch, Holdings, Partition};
use std::collections::HashSet;

impl Store {
    /// The floor of the epochs a worker's new leases must exceed, per
    /// partition of `group`: the highest epoch committed or claimed under.
    pub async fn epoch_floors(
        &self,
        group: &str,
    ) -> Result<std::collections::HashMap<Partition, Epoch>, StoreError> {
        let mut floors = self.partition_epochs(group).await?;
        let claims: Vec<(i64, i64)> =
            sqlx::query_as("SELECT partition_id, epoch FROM epoch_claims WHERE group_name = $1")
                .bind(group)
                .fetch_all(self.pool())
                .await?;
        for (partition, epoch) in claims {
            let (Ok(partition), Some(epoch)) = (
                u32::try_from(partition),
                u64::try_from(epoch).ok().and_then(Epoch::new),
            ) else {
                continue;
            };
            let floor = floors.entry(Partition(partition)).or_insert(epoch);
            *floor = (*floor).max(epoch);
        }
        Ok(floors)
    }

    /// Claims `epoch` of `partition` for `member`: true when it is above
    /// every epoch claimed before (the claim is recorded), false when
    /// another holder claimed it or a later one first.
    pub async fn claim_epoch(
        &self,
        group: &str,
        partition: Partition,
        epoch: Epoch,
        member: &str,
    ) -> Result<bool, StoreError> {
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO epoch_claims (group_name, partition_id, epoch, member) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (group_name, partition_id) DO UPDATE \
             SET epoch = excluded.epoch, member = excluded.member \
             WHERE epoch_claims.epoch < excluded.epoch RETURNING epoch",
        )
        .bind(group)
        .bind(i64::from(partition.0))
        .bind(epoch.get() as i64)
        .bind(member)
        .fetch_optional(self.pool())
        .await?;
        Ok(claimed.is_some())
    }

    /// The latest epoch committed under, per partition of `group`.
    pub async fn partition_epochs(
        &self,
        group: &str,
    ) -> Result<std::collections::HashMap<Partition, Epoch>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT partition_id, epoch FROM partition_epochs WHERE group_name = $1",
        )
        .bind(group)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(partition, epoch)| {
                let epoch = Epoch::new(u64::try_from(epoch).ok()?)?;
                Some((Partition(u32::try_from(partition).ok()?), epoch))
            })
            .collect())
    }
}

/// Records each partition's epoch unless a newer one is recorded, which
/// fences the batch. The upsert takes the row's lock, so concurrent batches
/// of one partition are ordered by it.
pub(super) async fn record_epochs(
    tx: &mut Tx<'_>,
    group: &str,
    epochs: &Holdings,
) -> Result<(), StoreError> {
    if epochs.is_empty() {
        return Ok(());
    }
    // One statement for every partition of the batch (a statement per
    // partition cost a round trip each, inside a transaction that holds
    // row locks). Rows are locked in partition order, the batch's order,
    // so two batches sharing partitions cannot deadlock.
    let rows: Vec<String> = (0..epochs.len())
        .map(|i| format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO partition_epochs (group_name, partition_id, epoch) VALUES {} \
         ON CONFLICT (group_name, partition_id) DO UPDATE SET epoch = excluded.epoch \
         WHERE partition_epochs.epoch <= excluded.epoch RETURNING partition_id",
        rows.join(", ")
    );
    let mut upsert = sqlx::query_scalar::<_, i64>(&sql).bind(group);
    for (partition, epoch) in epochs.iter() {
        upsert = upsert.bind(i64::from(partition.0)).bind(epoch.get() as i64);
    }
    let recorded: HashSet<i64> = upsert.fetch_all(&mut **tx).await?.into_iter().collect();
    // A partition not recorded has a newer epoch than the batch's.
    if let Some((partition, epoch)) = epochs
        .iter()
        .find(|(partition, _)| !recorded.contains(&i64::from(partition.0)))
    {
        let recorded: i64 = sqlx::query_scalar(
            "SELECT epoch FROM partition_epochs WHERE group_name = $1 AND partition_id = $2",
        )
        .bind(group)
        .bind(i64::from(partition.0))
        .fetch_one(&mut **tx)
        .await?;
        let recorded = u64::try_from(recorded)
            .ok()
            .and_then(Epoch::new)
            .ok_or_else(|| {
                StoreError::Inconsistent(format!(
                    "partition {partition}: recorded epoch {recorded}"
                ))
            })?;
        return Err(StoreError::Fenced {
            partition,
            epoch,
            recorded,
        });
    }
    Ok(())
}
