//! Under replicated durability, a worker applies only entries that
//! `--min-replicas` replicas of their primary have. An append is answered
//! 2xx once replicas have it, but the entry is on the primary before that,
//! and a worker reading it there could apply it; if the primary were then
//! lost, the read model would hold an event the log lost (its order was
//! never acknowledged, but the log and the read model would disagree).
//!
//! So after a read that returned entries, the worker sends to each primary
//! it read from, in one pipeline on one connection tried once (its `CLIENT
//! ID` first and last, to be sure it was one): an XRANGE of
//! the last entry it read of each partition there (still on this primary:
//! not a failover to a replica without it), a write (an INCR of a per-
//! partition counter: WAIT and WAITAOF only count the writes of their own
//! connection), then `WAIT n` and `WAITAOF 1 n`. A primary's replication
//! stream is one ordered stream, so replicas that have that write have
//! every entry the read returned before it. Until they do, the entries are
//! not handed over: the read fails, and the worker takes its partitions
//! over again (see the processor's read stage), which delivers them again,
//! in order, once they are confirmed, or never if they were lost.

use super::group_commit::{once_on, WAIT_TIMEOUT_MS};
use super::{unavailable, ValkeyLog};
use crate::stream::{Delivery, EntryId, LogError, Partition};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

/// A partition and the last entry read of it.
type LastRead = (Partition, EntryId);

impl ValkeyLog {
    /// The counter a read's confirmation writes, in `partition`'s slot.
    fn read_mark_key(&self, group: &str, partition: Partition) -> String {
        format!("{{{}}}:read-mark:{group}", self.stream_key(partition))
    }

    /// Succeeds once the entries of `read` are confirmed on
    /// `min_replicas` replicas of each primary they came from.
    pub(super) async fn confirm_replicated(
        &self,
        group: &str,
        read: &[Delivery],
    ) -> Result<(), LogError> {
        // The last entry read of each partition, grouped by primary.
        let mut last: Vec<LastRead> = Vec::new();
        for delivery in read {
            match last.iter_mut().find(|(p, _)| *p == delivery.partition) {
                Some((_, id)) => *id = (*id).max(delivery.id),
                None => last.push((delivery.partition, delivery.id)),
            }
        }
        let mut by_primary: Vec<(Option<Server>, Vec<LastRead>)> = Vec::new();
        for (partition, id) in last {
            let node = self.primary_of(&self.stream_key(partition));
            match by_primary.iter_mut().find(|(n, _)| *n == node) {
                Some((_, lasts)) => lasts.push((partition, id)),
                None => by_primary.push((node, vec![(partition, id)])),
            }
        }
        for (node, lasts) in &by_primary {
            self.confirm_on(node.as_ref(), group, lasts).await?;
        }
        Ok(())
    }

    async fn confirm_on(
        &self,
        node: Option<&Server>,
        group: &str,
        lasts: &[LastRead],
    ) -> Result<(), LogError> {
        let replicas = i64::from(self.min_replicas);
        let pipeline = self.client.pipeline();
        let on_node = pipeline.with_options(&once_on(node));
        let client_id = || CustomCommand::new_static("CLIENT", ClusterHash::Random, false);
        let queued = async {
            // The connection's id first and last: the pipeline is tried
            // once, and all of it must have gone down one connection.
            let _: () = on_node.custom(client_id(), vec!["ID"]).await?;
            for (partition, id) in lasts {
                let id = id.to_string();
                let _: () = on_node
                    .xrange(
                        self.stream_key(*partition),
                        id.as_str(),
                        id.as_str(),
                        Some(1),
                    )
                    .await?;
            }
            let _: () = on_node.incr(self.read_mark_key(group, lasts[0].0)).await?;
            let wait = CustomCommand::new_static("WAIT", ClusterHash::Random, false);
            let _: () = on_node
                .custom(
                    wait,
                    vec![Value::from(replicas), Value::from(WAIT_TIMEOUT_MS)],
                )
                .await?;
            let waitaof = CustomCommand::new_static("WAITAOF", ClusterHash::Random, false);
            let args = vec![
                Value::from(1),
                Value::from(replicas),
                Value::from(WAIT_TIMEOUT_MS),
            ];
            let _: () = on_node.custom(waitaof, args).await?;
            let _: () = on_node.custom(client_id(), vec!["ID"]).await?;
            Ok::<(), Error>(())
        };
        queued.await.map_err(unavailable)?;
        let mut answers: Vec<Value> = pipeline.all().await.map_err(unavailable)?;
        if answers.len() != lasts.len() + 5 {
            return Err(LogError::Corrupt(format!(
                "a read's confirmation answered {} results for {} partitions",
                answers.len(),
                lasts.len()
            )));
        }
        let last_id = answers.pop().expect("checked above");
        let counts: Vec<i64> = answers
            .pop()
            .expect("checked above")
            .convert()
            .map_err(unavailable)?;
        let first_id = answers.remove(0);
        if first_id != last_id {
            return Err(LogError::Unavailable(
                "the connection to Valkey changed during a read's confirmation".into(),
            ));
        }
        let confirmed = counts.get(1).copied().unwrap_or(0);
        for ((partition, id), found) in lasts.iter().zip(&answers) {
            let present = matches!(found, Value::Array(entries) if !entries.is_empty());
            if !present {
                return Err(LogError::Unavailable(format!(
                    "entry {id} of partition {partition}, just read, is not on the primary now \
                     (a failover to a replica without it): not applying it"
                )));
            }
        }
        if confirmed < replicas {
            return Err(LogError::Unavailable(format!(
                "{confirmed} of the {replicas} replicas needed have the entries read: not applying them yet"
            )));
        }
        Ok(())
    }
}
