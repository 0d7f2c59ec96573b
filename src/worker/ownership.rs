//! Keeps this worker's set of owned partitions up to date: heartbeats,
//! renews its leases, gives up partitions that now belong to another member
//! and takes the ones that are its own as soon as their lease is free.

// A fault for the partition test's negative control (debug builds only).
use crate::faults::keeps_expired_leases;
use crate::store::Store;
use crate::stream::lease::{fair_share, Epoch, Holdings, LeaseStore, Partition};
use crate::telemetry::metrics as names;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Ownership {
    pub leases: Arc<dyn LeaseStore>,
    pub group: String,
    pub member: String,
    pub partitions: u32,
    pub ttl: Duration,
    /// Where the epochs committed and claimed under are recorded: a new
    /// lease's epoch must exceed them, and is claimed there before this
    /// worker works under it (None in tests of the lease rules alone).
    pub recorded_epochs: Option<Store>,
}

impl Ownership {
    /// One round: returns the partitions held afterwards.
    pub async fn step(&self, owned: &Holdings) -> Result<Holdings, crate::stream::LogError> {
        let members = self
            .leases
            .heartbeat(&self.group, &self.member, self.ttl)
            .await?;
        let desired = fair_share(self.partitions, &members, &self.member);
        let mut held = Holdings::new();
        for (p, epoch) in owned.iter() {
            if !desired.contains(&p) {
                self.leases.release(&self.group, p, &self.member).await?;
                tracing::info!(partition = p.0, "released partition to rebalance");
            } else if self
                .leases
                .renew(&self.group, p, &self.member, self.ttl)
                .await?
            {
                held.insert(p, epoch);
            } else {
                tracing::warn!(
                    partition = p.0,
                    epoch = epoch.get(),
                    "lost the lease of a partition"
                );
            }
        }
        let wanted: BTreeSet<Partition> =
            desired.into_iter().filter(|&p| !owned.holds(p)).collect();
        if wanted.is_empty() {
            return Ok(held);
        }
        let floors = self.floors().await;
        for p in wanted {
            let floor = floors.get(&p).copied();
            let Some(epoch) = self
                .leases
                .try_acquire(&self.group, p, &self.member, self.ttl, floor)
                .await?
            else {
                continue;
            };
            if floor.is_some_and(|floor| epoch <= floor) {
                // An invariant of the lease store, checked where it is
                // relied on: working under an epoch that has already
                // committed would let this worker's batches be refused,
                // or worse, interleave with a zombie's.
                tracing::error!(
                    partition = p.0, epoch = epoch.get(), floor = floor.map_or(0, Epoch::get),
                    "invariant broken: a lease epoch at or below the recorded one; not taking the partition"
                );
                names::invariant_broken("lease_epoch_above_floor");
                self.leases.release(&self.group, p, &self.member).await?;
                continue;
            }
            if !self.claimed(p, epoch).await? {
                self.leases.release(&self.group, p, &self.member).await?;
                continue;
            }
            tracing::info!(partition = p.0, epoch = epoch.get(), "acquired partition");
            held.insert(p, epoch);
        }
        Ok(held)
    }

    /// Claims `epoch` in the database before any work under it: false when
    /// another holder has claimed it or a later one (the lease store issued
    /// an epoch twice, as a Valkey that failed over to a replica missing
    /// its last increments can); the next round takes a lease above the
    /// claim. Without a database to claim in, nothing can commit either:
    /// the partition is not taken.
    async fn claimed(&self, p: Partition, epoch: Epoch) -> Result<bool, crate::stream::LogError> {
        let Some(store) = &self.recorded_epochs else {
            return Ok(true);
        };
        match store.claim_epoch(&self.group, p, epoch, &self.member).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                tracing::warn!(
                    partition = p.0,
                    epoch = epoch.get(),
                    "the lease store issued an epoch already claimed (did Valkey fail over?); \
                     taking a later one"
                );
                names::epoch_reissued();
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(partition = p.0, error = %e, "cannot claim the lease's epoch; not taking the partition");
                Ok(false)
            }
        }
    }

    /// The epochs recorded per partition; none when they cannot be read
    /// (then the lease store's own counter is the floor, and a batch under
    /// a stale epoch is refused at commit all the same).
    async fn floors(&self) -> HashMap<Partition, Epoch> {
        let Some(store) = &self.recorded_epochs else {
            return Default::default();
        };
        match store.epoch_floors(&self.group).await {
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
    pub async fn run(self, owned_tx: watch::Sender<Holdings>, stop: CancellationToken) -> Holdings {
        let mut owned = Holdings::new();
        let mut last_success = Instant::now();
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            // A lease renewed in this round runs from when Valkey ran the
            // renewal, which is after the round started: counting from the
            // start keeps this worker's view of its leases within them. And
            // a round still unanswered when the leases run out cannot save
            // them (the client's command timeout is longer than a short
            // TTL): stop waiting then, and own nothing from that moment.
            let started = Instant::now();
            let round = if owned.is_empty() {
                self.step(&owned).await
            } else {
                tokio::time::timeout_at(last_success + self.ttl, self.step(&owned))
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::stream::LogError::Unavailable(
                            "the lease store did not answer before the leases ran out".into(),
                        ))
                    })
            };
            match round {
                Ok(held) => {
                    owned = held;
                    last_success = started;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "partition leases could not be renewed");
                    if last_success.elapsed() >= self.ttl
                        && !owned.is_empty()
                        && !keeps_expired_leases()
                    {
                        tracing::warn!(
                            "leases expired while the lease store was unreachable; pausing"
                        );
                        owned = Holdings::new();
                    }
                }
            }
            for p in Partition::all(self.partitions) {
                let held = if owned.holds(p) { 1.0 } else { 0.0 };
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
    pub async fn release_all(&self, owned: &Holdings) {
        for p in owned.partitions() {
            if let Err(e) = self.leases.release(&self.group, p, &self.member).await {
                tracing::warn!(partition = p.0, error = %e, "could not release a lease; it will expire");
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
        let (mut owned_a, mut owned_b) = (Holdings::new(), Holdings::new());
        owned_a = a.step(&owned_a).await.unwrap();
        assert_eq!(owned_a.len(), 8, "alone, a takes everything");

        // b joins: it gets what is free (nothing yet), a gives its half back.
        for _ in 0..3 {
            owned_b = b.step(&owned_b).await.unwrap();
            owned_a = a.step(&owned_a).await.unwrap();
            assert!(
                owned_a.partitions().all(|p| !owned_b.holds(p)),
                "{owned_a:?} {owned_b:?}"
            );
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!((owned_a.len(), owned_b.len()), (4, 4));
        assert_eq!(owned_a.partitions().chain(owned_b.partitions()).count(), 8);

        // a dies (no more steps). b's membership view drops a after the TTL,
        // and a's leases expire: b owns all 8.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            owned_b = b.step(&owned_b).await.unwrap();
        }
        assert_eq!(owned_b.len(), 8);
        // Every partition b took from a carries a newer epoch than a's.
        assert!(
            owned_a
                .iter()
                .all(|(p, epoch)| owned_b.epoch_of(p).is_some_and(|newer| newer > epoch)),
            "{owned_a:?} {owned_b:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_release_hands_over_at_once() {
        let leases = Arc::new(LocalLeases::new());
        let (a, b) = (worker(&leases, "a"), worker(&leases, "b"));
        let owned_a = a.step(&Holdings::new()).await.unwrap();
        a.release_all(&owned_a).await;
        let owned_b = b.step(&Holdings::new()).await.unwrap();
        assert_eq!(owned_b.len(), 8, "no wait for expiry after a graceful stop");
    }
}
