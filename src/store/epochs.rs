//! The lease epochs batches were committed under (`partition_epochs`):
//! each batch records its partitions' epochs in its own transaction, which
//! is refused when a newer one has committed (the fence at the commit), and
//! new leases are issued above what is recorded.

use super::sql::Tx;
use super::{Store, StoreError};
use crate::stream::{Epoch, Holdings, Partition};
use std::collections::HashSet;

impl Store {
    /// The latest epoch committed under, per partition of `group`: the
    /// floor of the epochs a worker's new leases must exceed.
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
