//! Keeps this worker's set of owned partitions up to date: heartbeats,
//! renews its leases, gives up partitions that now belong to another member
//! and takes the ones that are its own as soon as their lease is free.

use crate::store::Store;
use crate::stream::lease::{fair_share, Epoch, LeaseStore};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The partitions a worker holds, each with the epoch of its lease.
pub type Owned = BTreeMap<u32, Epoch>;

#[derive(Clone)]
pub struct Ownership {
    pub leases: Arc<dyn LeaseStore>,
    pub group: String,
    pub member: String,
    pub partitions: u32,
    pub ttl: Duration,
    /// Where the epochs committed under are recorded: a new lease's epoch
    /// must exceed them (None in tests of the lease rules alone).
    pub recorded_epochs: Option<Store>,
}

impl Ownership {
    /// One round: returns the partitions held afterwards.
    pub async fn step(&self, owned: &Owned) -> Result<Owned, crate::stream::LogError> {
        let members = self
            .leases
            .heartbeat(&self.group, &self.member, self.ttl)
            .await?;
        let desired = fair_share(self.partitions, &members, &self.member);
        let mut held = Owned::new();
        for (&p, &epoch) in owned {
            if !desired.contains(&p) {
                self.leases.release(&self.group, p, &self.member).await?;
                tracing::info!(partition = p, "released partition to rebalance");
            } else if self
                .leases
                .renew(&self.group, p, &self.member, self.ttl)
                .await?
            {
                held.insert(p, epoch);
            } else {
                tracing::warn!(partition = p, epoch, "lost the lease of a partition");
            }
        }
        let wanted: BTreeSet<u32> = desired
            .into_iter()
            .filter(|p| !owned.contains_key(p))
            .collect();
        if wanted.is_empty() {
            return Ok(held);
        }
        let floors = self.floors().await;
        for p in wanted {
            let floor = floors.get(&p).copied().unwrap_or(0);
            if let Some(epoch) = self
                .leases
                .try_acquire(&self.group, p, &self.member, self.ttl, floor)
                .await?
            {
                tracing::info!(partition = p, epoch, "acquired partition");
                held.insert(p, epoch);
            }
        }
        Ok(held)
    }

    /// The epochs recorded per partition; none when they cannot be read
    /// (then the lease store's own counter is the floor, and a batch under
    /// a stale epoch is refused at commit all the same).
    async fn floors(&self) -> std::collections::HashMap<u32, Epoch> {
        let Some(store) = &self.recorded_epochs else {
            return Default::default();
        };
        match store.partition_epochs(&self.group).await {
            Ok(floors) => floors,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the recorded lease epochs");
                Default::default()
            }
        }
    }

    /// Runs rounds every third of the TTL until `stop`, publishing the owned
    /// set. If the lease store cannot be reached for a whole TTL, this worker
    /// can no longer know it still owns anything, and owns nothing.
    pub async fn run(self, owned_tx: watch::Sender<Owned>, stop: CancellationToken) -> Owned {
        let mut owned = Owned::new();
        let mut last_success = Instant::now();
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.step(&owned).await {
                Ok(held) => {
                    owned = held;
                    last_success = Instant::now();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "partition leases could not be renewed");
                    if last_success.elapsed() >= self.ttl && !owned.is_empty() {
                        tracing::warn!(
                            "leases expired while the lease store was unreachable; pausing"
                        );
                        owned.clear();
                    }
                }
            }
            for p in 0..self.partitions {
                let held = if owned.contains_key(&p) { 1.0 } else { 0.0 };
                metrics::gauge!(crate::telemetry::metrics::PARTITION_OWNED, "partition" => p.to_string())
                    .set(held);
            }
            owned_tx.send_if_modified(|current| {
                if *current != owned {
                    current.clone_from(&owned);
                    true
                } else {
                    false
                }
            });
        }
        owned
    }

    /// Gives everything back on a graceful stop, so others take over at once.
    pub async fn release_all(&self, owned: &Owned) {
        for &p in owned.keys() {
            if let Err(e) = self.leases.release(&self.group, p, &self.member).await {
                tracing::warn!(partition = p, error = %e, "could not release a lease; it will expire");
            }
        }
        if let Err(e) = self.leases.leave(&self.group, &self.member).await {
            tracing::warn!(error = %e, "could not leave the group; membership will expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::lease::LocalLeases;

    fn worker(leases: &Arc<LocalLeases>, name: &str) -> Ownership {
        Ownership {
            leases: leases.clone(),
            group: "g".into(),
            member: name.into(),
            partitions: 8,
            ttl: Duration::from_secs(3),
            recorded_epochs: None,
        }
    }

    /// Two workers split 8 partitions 4/4 without ever both holding one; when
    /// one dies, the other has all 8 within a TTL and a round.
    #[tokio::test(start_paused = true)]
    async fn rebalances_fairly_and_takes_over_a_dead_worker() {
        let leases = Arc::new(LocalLeases::new());
        let (a, b) = (worker(&leases, "a"), worker(&leases, "b"));
        let (mut owned_a, mut owned_b) = (Owned::new(), Owned::new());
        owned_a = a.step(&owned_a).await.unwrap();
        assert_eq!(owned_a.len(), 8, "alone, a takes everything");

        // b joins: it gets what is free (nothing yet), a gives its half back.
        for _ in 0..3 {
            owned_b = b.step(&owned_b).await.unwrap();
            owned_a = a.step(&owned_a).await.unwrap();
            assert!(
                owned_a.keys().all(|p| !owned_b.contains_key(p)),
                "{owned_a:?} {owned_b:?}"
            );
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!((owned_a.len(), owned_b.len()), (4, 4));
        assert_eq!(owned_a.keys().chain(owned_b.keys()).count(), 8);

        // a dies (no more steps). b's membership view drops a after the TTL,
        // and a's leases expire: b owns all 8.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            owned_b = b.step(&owned_b).await.unwrap();
        }
        assert_eq!(owned_b.len(), 8);
        // Every partition b took from a carries a newer epoch than a's.
        assert!(owned_b.values().all(|&epoch| epoch >= 1));
        assert!(
            owned_a.keys().all(|p| owned_b[p] > owned_a[p]),
            "{owned_a:?} {owned_b:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_release_hands_over_at_once() {
        let leases = Arc::new(LocalLeases::new());
        let (a, b) = (worker(&leases, "a"), worker(&leases, "b"));
        let owned_a = a.step(&Owned::new()).await.unwrap();
        a.release_all(&owned_a).await;
        let owned_b = b.step(&Owned::new()).await.unwrap();
        assert_eq!(owned_b.len(), 8, "no wait for expiry after a graceful stop");
    }
}
