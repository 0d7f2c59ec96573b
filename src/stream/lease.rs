//! Partition ownership: each partition of a consumer group is processed by
//! one worker at a time. Workers announce themselves with heartbeats; the
//! live members, sorted by name, split the partitions round-robin
//! (partition p belongs to member p mod n); a worker holds a partition
//! through a lease it must renew, and takes a partition only once its lease
//! is free. A worker that dies stops renewing: its leases expire and the
//! others take its partitions within one lease TTL.
//!
//! Each acquisition of a partition's lease carries a fencing epoch, higher
//! than any issued for that partition before, so that work done under an
//! older lease (by a worker that was paused past its TTL and does not know
//! it lost the partition) can be told from the current owner's (see
//! `fencing`).

pub use super::fencing::{Epoch, Holdings, Partition};
use super::LogError;
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Marks `member` alive for `ttl`; returns every live member.
    async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, LogError>;
    /// Takes the partition's lease if nobody holds it, with a new epoch
    /// above every earlier one and above `floor` (the highest the caller
    /// has seen recorded, so that a store that lost its counter, or an
    /// in-process one after a restart, still issues higher ones). A lease
    /// `member` already holds is kept, with its epoch. None: another
    /// member holds it.
    async fn try_acquire(
        &self,
        group: &str,
        partition: Partition,
        member: &str,
        ttl: Duration,
        floor: Option<Epoch>,
    ) -> Result<Option<Epoch>, LogError>;
    /// Extends a lease `member` holds; false if it was lost (expired, taken).
    async fn renew(
        &self,
        group: &str,
        partition: Partition,
        member: &str,
        ttl: Duration,
    ) -> Result<bool, LogError>;
    /// Gives a lease back (only if `member` holds it).
    async fn release(
        &self,
        group: &str,
        partition: Partition,
        member: &str,
    ) -> Result<(), LogError>;
    /// Removes `member` from the live set (graceful shutdown).
    async fn leave(&self, group: &str, member: &str) -> Result<(), LogError>;
    /// The holder of each partition's lease, for `status`.
    async fn owners(&self, group: &str, partitions: u32) -> Result<Vec<Option<String>>, LogError>;
}

/// The partitions `me` should own when `members` are alive: p mod n.
pub fn fair_share(partitions: u32, members: &[String], me: &str) -> BTreeSet<Partition> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    sorted.dedup();
    let Some(index) = sorted.iter().position(|m| m.as_str() == me) else {
        return BTreeSet::new();
    };
    Partition::all(partitions)
        .filter(|p| p.index() % sorted.len() == index)
        .collect()
}

/// Leases for the embedded log, which lives in one process: the same rules,
/// kept in memory, timed with tokio's clock (so tests can pause it).
#[derive(Default)]
pub struct LocalLeases {
    state: Mutex<LocalState>,
}

#[derive(Default)]
struct LocalState {
    members: HashMap<(String, String), Instant>,
    /// Holder, expiry and epoch of each lease.
    leases: HashMap<(String, Partition), (String, Instant, Epoch)>,
    /// The last epoch issued per partition: kept when leases expire.
    epochs: HashMap<(String, Partition), Epoch>,
}

impl LocalLeases {
    pub fn new() -> LocalLeases {
        LocalLeases::default()
    }

    /// Runs `f` with those of `owned`'s partitions that `member` holds
    /// under the epoch given (unexpired), the leases locked until `f`
    /// returns, so that no lease moves while `f` acts on them: the embedded
    /// log's fenced reads, take-overs and acks, as Valkey's scripts check
    /// the lease and act in one step.
    pub fn while_held<R>(
        &self,
        group: &str,
        member: &str,
        owned: &Holdings,
        f: impl FnOnce(&[Partition]) -> R,
    ) -> R {
        let now = Instant::now();
        let state = self.state.lock().expect("lease lock");
        let held: Vec<Partition> = owned
            .iter()
            .filter(|&(p, epoch)| {
                state.leases.get(&(group.to_string(), p)).is_some_and(
                    |(holder, expiry, held_epoch)| {
                        holder == member && *expiry > now && *held_epoch == epoch
                    },
                )
            })
            .map(|(p, _)| p)
            .collect();
        f(&held)
    }
}

#[async_trait]
impl LeaseStore for LocalLeases {
    async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, LogError> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("lease lock");
        state
            .members
            .insert((group.to_string(), member.to_string()), now + ttl);
        state.members.retain(|_, expiry| *expiry > now);
        let mut alive: Vec<String> = state
            .members
            .keys()
            .filter(|(g, _)| g == group)
            .map(|(_, m)| m.clone())
            .collect();
        alive.sort();
        Ok(alive)
    }

    async fn try_acquire(
        &self,
        group: &str,
        partition: Partition,
        member: &str,
        ttl: Duration,
        floor: Option<Epoch>,
    ) -> Result<Option<Epoch>, LogError> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("lease lock");
        let key = (group.to_string(), partition);
        match state.leases.get_mut(&key) {
            Some((holder, expiry, _)) if *expiry > now && holder != member => Ok(None),
            Some((_, expiry, epoch)) if *expiry > now => {
                *expiry = now + ttl;
                Ok(Some(*epoch))
            }
            _ => {
                let last = state.epochs.get(&key).copied().max(floor);
                let epoch = Epoch::above(last);
                state.epochs.insert(key.clone(), epoch);
                state
                    .leases
                    .insert(key, (member.to_string(), now + ttl, epoch));
                Ok(Some(epoch))
            }
        }
    }

    async fn renew(
        &self,
        group: &str,
        partition: Partition,
        member: &str,
        ttl: Duration,
    ) -> Result<bool, LogError> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("lease lock");
        match state.leases.get_mut(&(group.to_string(), partition)) {
            Some((holder, expiry, _)) if holder == member && *expiry > now => {
                *expiry = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(
        &self,
        group: &str,
        partition: Partition,
        member: &str,
    ) -> Result<(), LogError> {
        let mut state = self.state.lock().expect("lease lock");
        let key = (group.to_string(), partition);
        if state
            .leases
            .get(&key)
            .is_some_and(|(holder, _, _)| holder == member)
        {
            state.leases.remove(&key);
        }
        Ok(())
    }

    async fn leave(&self, group: &str, member: &str) -> Result<(), LogError> {
        self.state
            .lock()
            .expect("lease lock")
            .members
            .remove(&(group.to_string(), member.to_string()));
        Ok(())
    }

    async fn owners(&self, group: &str, partitions: u32) -> Result<Vec<Option<String>>, LogError> {
        let now = Instant::now();
        let state = self.state.lock().expect("lease lock");
        Ok(Partition::all(partitions)
            .map(|p| {
                state
                    .leases
                    .get(&(group.to_string(), p))
                    .filter(|(_, expiry, _)| *expiry > now)
                    .map(|(holder, _, _)| holder.clone())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: u64) -> Epoch {
        Epoch::new(n).unwrap()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w{i}")).collect()
    }

    #[test]
    fn fair_share_covers_every_partition_once() {
        for n in 1..=5 {
            let members = names(n);
            let mut seen = BTreeSet::new();
            for m in &members {
                let share = fair_share(8, &members, m);
                assert!(
                    share.len() == 8 / n || share.len() == 8 / n + 1,
                    "{n} members: {m} gets {share:?}"
                );
                for p in share {
                    assert!(seen.insert(p), "partition {p} assigned twice");
                }
            }
            assert_eq!(seen.len(), 8);
        }
        assert!(fair_share(8, &names(2), "stranger").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn leases_are_exclusive_until_they_expire() {
        let leases = LocalLeases::new();
        let ttl = Duration::from_secs(5);
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "a", ttl, None)
                .await
                .unwrap(),
            Some(e(1))
        );
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "b", ttl, None)
                .await
                .unwrap(),
            None
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(leases.renew("g", Partition(0), "a", ttl).await.unwrap());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "b", ttl, None)
                .await
                .unwrap(),
            None,
            "renewed lease still held"
        );
        // a stops renewing (dies): after the TTL, b gets it and a cannot renew.
        tokio::time::advance(Duration::from_millis(5001)).await;
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "b", ttl, None)
                .await
                .unwrap(),
            Some(e(2))
        );
        assert!(!leases.renew("g", Partition(0), "a", ttl).await.unwrap());
        assert_eq!(
            leases.owners("g", 2).await.unwrap(),
            vec![Some("b".to_string()), None]
        );
        leases.release("g", Partition(0), "a").await.unwrap();
        assert_eq!(
            leases.owners("g", 1).await.unwrap(),
            vec![Some("b".to_string())],
            "only the holder releases"
        );
    }

    /// The epoch rules, on tokio's paused clock: acquire, keep, renew, lose,
    /// re-acquire; each acquisition above every earlier one and above the
    /// floor; partitions and groups counted apart.
    #[tokio::test(start_paused = true)]
    async fn every_acquisition_gets_a_higher_epoch() {
        let leases = LocalLeases::new();
        let ttl = Duration::from_secs(3);
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "a", ttl, None)
                .await
                .unwrap(),
            Some(e(1))
        );
        // Keeping a held lease keeps its epoch (a renewal by acquisition).
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "a", ttl, None)
                .await
                .unwrap(),
            Some(e(1))
        );
        assert!(leases.renew("g", Partition(0), "a", ttl).await.unwrap());
        // Lost: a paused past its TTL; b takes it under a new epoch, and a
        // can neither renew nor take it back without a newer one.
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "b", ttl, None)
                .await
                .unwrap(),
            Some(e(2))
        );
        assert!(!leases.renew("g", Partition(0), "a", ttl).await.unwrap());
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "a", ttl, None)
                .await
                .unwrap(),
            None
        );
        // Released and re-acquired: newer again.
        leases.release("g", Partition(0), "b").await.unwrap();
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "a", ttl, None)
                .await
                .unwrap(),
            Some(e(3))
        );
        // The floor: what the read model recorded before a restart.
        leases.release("g", Partition(0), "a").await.unwrap();
        assert_eq!(
            leases
                .try_acquire("g", Partition(0), "a", ttl, Some(e(41)))
                .await
                .unwrap(),
            Some(e(42))
        );
        assert_eq!(
            LocalLeases::new()
                .try_acquire("g", Partition(0), "a", ttl, Some(e(42)))
                .await
                .unwrap(),
            Some(e(43)),
            "a fresh store (a restarted process) issues above the floor"
        );
        // Other partitions and groups have epochs of their own.
        assert_eq!(
            leases
                .try_acquire("g", Partition(1), "a", ttl, None)
                .await
                .unwrap(),
            Some(e(1))
        );
        assert_eq!(
            leases
                .try_acquire("h", Partition(0), "a", ttl, None)
                .await
                .unwrap(),
            Some(e(1))
        );
    }

    /// What the embedded log's fenced calls see (`while_held`): a lease
    /// counts under its own holder and epoch only, until it expires; then
    /// for nobody, and once taken, for the new holder under the new epoch.
    #[tokio::test(start_paused = true)]
    async fn only_the_current_holder_and_epoch_are_fenced_in() {
        let leases = LocalLeases::new();
        let ttl = Duration::from_secs(3);
        let held = |member: &str, owned: &[(u32, Epoch)]| {
            let owned: Holdings = owned.iter().map(|&(p, e)| (Partition(p), e)).collect();
            leases
                .while_held("g", member, &owned, |held| held.to_vec())
                .into_iter()
                .map(|p| p.0)
                .collect::<Vec<u32>>()
        };
        let a = leases
            .try_acquire("g", Partition(0), "a", ttl, None)
            .await
            .unwrap()
            .unwrap();
        let a1 = leases
            .try_acquire("g", Partition(1), "a", ttl, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held("a", &[(0, a), (1, a1)]), vec![0, 1]);
        assert!(held("a", &[(0, a.next())]).is_empty(), "another epoch");
        assert!(held("b", &[(0, a)]).is_empty(), "another member");
        // a renews partition 1 only; partition 0 expires, then b takes it.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(leases.renew("g", Partition(1), "a", ttl).await.unwrap());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(held("a", &[(0, a), (1, a1)]), vec![1], "expired");
        let b = leases
            .try_acquire("g", Partition(0), "b", ttl, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held("a", &[(0, a), (1, a1)]), vec![1]);
        assert_eq!(held("b", &[(0, b)]), vec![0]);
        assert!(held("b", &[(0, a)]).is_empty(), "b under a's old epoch");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_members_drop_out() {
        let leases = LocalLeases::new();
        let ttl = Duration::from_secs(3);
        leases.heartbeat("g", "a", ttl).await.unwrap();
        assert_eq!(
            leases.heartbeat("g", "b", ttl).await.unwrap(),
            vec!["a", "b"]
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        leases.heartbeat("g", "b", ttl).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(leases.heartbeat("g", "b", ttl).await.unwrap(), vec!["b"]);
        leases.leave("g", "b").await.unwrap();
        assert_eq!(leases.heartbeat("g", "c", ttl).await.unwrap(), vec!["c"]);
    }
}
