//! The vocabulary of fencing: partitions, the epochs their leases are
//! acquired under, the set a consumer holds, and the consumer itself.
//!
//! Each acquisition of a partition's lease carries an epoch higher than any
//! issued for that partition before (see `lease`). Work done under an older
//! epoch, by a worker paused past its lease that does not know it lost the
//! partition, is refused wherever it would take effect: at the log's reads,
//! take-overs and acks, and at the read model's commit. These types keep a
//! partition and an epoch from being swapped for one another, or for any
//! other integer, on the way there.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Display and Debug as the bare number, as logs have always shown
/// partitions and epochs.
macro_rules! shown_as_its_number {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

/// One partition of the log; a key's partition is `partition_for(key)`.
/// Shown (Display and Debug alike) as its number, as logs have always
/// shown it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Partition(pub u32);

impl Partition {
    /// Partitions `0..count`, in order.
    pub fn all(count: u32) -> impl Iterator<Item = Partition> + Clone {
        (0..count).map(Partition)
    }

    /// As an index into per-partition arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

shown_as_its_number!(Partition);

/// A lease's fencing epoch. 0 is never issued: an epoch is at least
/// `Epoch::FIRST`, and "no epoch recorded" is an `Option`, not a zero.
/// Shown as its number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(u64);

impl Epoch {
    pub const FIRST: Epoch = Epoch(1);

    /// An epoch read back from where it was stored (a lease store, the read
    /// model); None for 0, which no acquisition ever issues.
    pub fn new(value: u64) -> Option<Epoch> {
        (value > 0).then_some(Epoch(value))
    }

    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }

    /// The first epoch above `floor`, or the first of all.
    pub fn above(floor: Option<Epoch>) -> Epoch {
        floor.map_or(Epoch::FIRST, Epoch::next)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

shown_as_its_number!(Epoch);

/// The partitions a consumer holds, each under the epoch its lease was
/// acquired with: what a fenced read, commit and ack are checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings(BTreeMap<Partition, Epoch>);

impl Holdings {
    pub fn new() -> Holdings {
        Holdings::default()
    }

    pub fn insert(&mut self, partition: Partition, epoch: Epoch) {
        self.0.insert(partition, epoch);
    }

    /// The epoch `partition` is held under, if it is held.
    pub fn epoch_of(&self, partition: Partition) -> Option<Epoch> {
        self.0.get(&partition).copied()
    }

    pub fn holds(&self, partition: Partition) -> bool {
        self.0.contains_key(&partition)
    }

    /// Each partition with its epoch, in partition order.
    pub fn iter(&self) -> impl Iterator<Item = (Partition, Epoch)> + '_ {
        self.0.iter().map(|(&p, &e)| (p, e))
    }

    pub fn partitions(&self) -> impl Iterator<Item = Partition> + '_ {
        self.0.keys().copied()
    }

    /// Those of these holdings whose partition is in `partitions`.
    pub fn only(&self, partitions: impl IntoIterator<Item = Partition>) -> Holdings {
        partitions
            .into_iter()
            .filter_map(|p| self.epoch_of(p).map(|e| (p, e)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Extend<(Partition, Epoch)> for Holdings {
    fn extend<I: IntoIterator<Item = (Partition, Epoch)>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl IntoIterator for Holdings {
    type Item = (Partition, Epoch);
    type IntoIter = std::collections::btree_map::IntoIter<Partition, Epoch>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(Partition, Epoch)> for Holdings {
    fn from_iter<I: IntoIterator<Item = (Partition, Epoch)>>(iter: I) -> Holdings {
        Holdings(iter.into_iter().collect())
    }
}

/// A consumer of the log: its group and its own name in that group. The
/// group's entries are handed out to, and held pending for, named members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub group: String,
    pub name: String,
}

impl Consumer {
    pub fn new(group: impl Into<String>, name: impl Into<String>) -> Consumer {
        Consumer {
            group: group.into(),
            name: name.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_epoch_and_each_is_above_its_floor() {
        assert_eq!(Epoch::new(0), None);
        assert_eq!(Epoch::above(None), Epoch::FIRST);
        let seven = Epoch::new(7).unwrap();
        assert_eq!(Epoch::above(Some(seven)).get(), 8);
        assert!(seven.next() > seven);
    }

    #[test]
    fn holdings_narrow_to_the_partitions_asked() {
        let e = |n| Epoch::new(n).unwrap();
        let held: Holdings = [(Partition(0), e(3)), (Partition(2), e(5))]
            .into_iter()
            .collect();
        let only = held.only([Partition(2), Partition(1)]);
        assert_eq!(only.iter().collect::<Vec<_>>(), [(Partition(2), e(5))]);
        assert_eq!(held.epoch_of(Partition(0)), Some(e(3)));
        assert!(!held.holds(Partition(1)));
    }
}
