//! One conformance suite for every event-log backend: the same test bodies
//! run against the embedded file log and against a real Valkey.

use crate::common;

use chrono::Utc;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use streamstock::domain::events::StockReceived;
use streamstock::domain::{DomainEvent, Envelope};
use streamstock::stream::embedded::{EmbeddedLog, EmbeddedOptions};
use streamstock::stream::lease::{LeaseStore, LocalLeases};
use streamstock::stream::valkey::ValkeyLog;
use streamstock::stream::{
    partition_for, Consumer, EntryId, Epoch, EventLog, Holdings, LogBackend, LogError, Partition,
};
use uuid::Uuid;

const PARTITIONS: u32 = 4;
const GROUP: &str = "conformance";
const ALL: [Partition; 4] = [Partition(0), Partition(1), Partition(2), Partition(3)];

/// Opens the same log again (a restart), with a given partition count, and
/// the leases that go with it.
type Opener = Box<dyn Fn(u32) -> Pin<Box<dyn Future<Output = anyhow::Result<LogBackend>>>>>;

/// Segments of about three entries: every test reads across segment
/// boundaries, and trimming has whole segments to delete.
const TINY_SEGMENT: u64 = 600;

fn embedded(dir: PathBuf) -> Opener {
    embedded_retaining(dir, Duration::ZERO)
}

fn embedded_retaining(dir: PathBuf, retention: Duration) -> Opener {
    Box::new(move |partitions| {
        let dir = dir.clone();
        let options = EmbeddedOptions {
            segment_bytes: TINY_SEGMENT,
            retention,
            ..EmbeddedOptions::default()
        };
        Box::pin(async move {
            let log = EmbeddedLog::open_with(&dir, partitions, options)?;
            Ok(LogBackend {
                leases: log.leases(),
                log: Arc::new(log),
            })
        })
    })
}

fn valkey() -> Opener {
    valkey_at(common::valkey_url(), Duration::ZERO)
}

fn valkey_retaining(retention: Duration) -> Opener {
    valkey_at(common::valkey_url(), retention)
}

/// The same tests on a Valkey Cluster of three primaries.
fn valkey_cluster() -> Opener {
    valkey_at(common::valkey_cluster_url(), Duration::ZERO)
}

fn valkey_at(url: String, retention: Duration) -> Opener {
    let namespace = format!("conformance-{}", Uuid::new_v4().simple());
    Box::new(move |partitions| {
        let (url, namespace) = (url.clone(), namespace.clone());
        Box::pin(async move {
            let log = ValkeyLog::connect(
                &url,
                &namespace,
                partitions,
                streamstock::stream::Durability::Strict,
            )
            .await?
            .with_retention(retention);
            let log = Arc::new(log);
            Ok(LogBackend {
                log: log.clone(),
                leases: log,
            })
        })
    })
}

fn quantities(deliveries: &[streamstock::stream::Delivery]) -> Vec<i64> {
    deliveries
        .iter()
        .map(|d| {
            d.envelope.as_ref().unwrap().payload["quantity"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

/// Reads `want` entries of one partition for `group` (10 s at most).
async fn read_partition(
    log: &dyn EventLog,
    group: &str,
    consumer: &str,
    partition: Partition,
    want: usize,
) -> Vec<streamstock::stream::Delivery> {
    read_until(log, group, consumer, &[partition], want, want).await
}

/// Reads from `partitions`, at most `per_read` entries a call, until `want`
/// entries arrived or 10 s passed.
async fn read_until(
    log: &dyn EventLog,
    group: &str,
    consumer: &str,
    partitions: &[Partition],
    per_read: usize,
    want: usize,
) -> Vec<streamstock::stream::Delivery> {
    let mut got = Vec::new();
    for _ in 0..100 {
        if got.len() >= want {
            break;
        }
        let max = per_read.min(want - got.len());
        got.extend(
            log.read_group(group, consumer, partitions, max, Duration::from_millis(100))
                .await
                .unwrap(),
        );
    }
    got
}

fn ids(
    deliveries: &[streamstock::stream::Delivery],
) -> Vec<(Partition, streamstock::stream::EntryId)> {
    deliveries.iter().map(|d| (d.partition, d.id)).collect()
}

/// An entry trimmed after every group acked it is not lost, one the log
/// never had past its end is (what the read model's audit asks after a
/// failover), and entries still there are neither.
async fn trimmed_entries_are_not_lost_ones(open: Opener) {
    let backend = open(PARTITIONS).await.unwrap();
    let log = backend.log.clone();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    for q in 1..=30 {
        log.append(&event(key, q)).await.unwrap();
    }
    let read = read_partition(&*log, "audited", "reader", partition, 30).await;
    log.ack("audited", &ids(&read[..20])).await.unwrap();
    log.trim(&ALL).await.unwrap();
    let all: Vec<EntryId> = read.iter().map(|d| d.id).collect();
    assert_eq!(
        log.lost_entries(partition, &all).await.unwrap(),
        Vec::<EntryId>::new(),
        "trimmed or kept, none is lost"
    );
    // Ids past the partition's end: what a failover to a replica that
    // missed the last appends leaves the read model holding.
    let last = all[29];
    let beyond = vec![
        EntryId {
            ms: last.ms,
            seq: last.seq + 1,
        },
        EntryId {
            ms: last.ms + 1,
            seq: 0,
        },
    ];
    let mut asked = all.clone();
    asked.extend(&beyond);
    assert_eq!(log.lost_entries(partition, &asked).await.unwrap(), beyond);
}

/// Trimming removes what every group acked and nothing any group still
/// needs: a second group that is behind, and a dead consumer's pending
/// entries, which its successor takes over after the trim, all there.
async fn trim_keeps_what_any_group_still_needs(open: Opener) {
    let backend = open(PARTITIONS).await.unwrap();
    let log = backend.log.clone();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    for q in 1..=30 {
        log.append(&event(key, q)).await.unwrap();
    }
    // Group "ahead": its consumer read all 30, acked 1..=20, then died.
    let ahead = read_partition(&*log, "ahead", "doomed", partition, 30).await;
    assert_eq!(quantities(&ahead), (1..=30).collect::<Vec<_>>());
    log.ack("ahead", &ids(&ahead[..20])).await.unwrap();
    // Group "behind" read and acked 1..=10 only.
    let behind = read_partition(&*log, "behind", "slow", partition, 10).await;
    assert_eq!(quantities(&behind), (1..=10).collect::<Vec<_>>());
    log.ack("behind", &ids(&behind)).await.unwrap();

    log.trim(&ALL).await.unwrap();
    let length = log.partition_stats("ahead").await.unwrap()[partition.index()].length;
    assert!(
        (20..30).contains(&length),
        "entries 1..=10 may go (at least some did), 11..=30 stay: {length} retained"
    );

    // The dead consumer's pending entries, handed to its successor intact.
    let epoch = holding(&backend, "ahead", "successor", partition).await;
    let taken = log
        .take_over(&Consumer::new("ahead", "successor"), partition, epoch)
        .await
        .unwrap();
    assert_eq!(quantities(&taken), (21..=30).collect::<Vec<_>>());
    // The group behind goes on where it was.
    let rest = read_partition(&*log, "behind", "slow", partition, 20).await;
    assert_eq!(quantities(&rest), (11..=30).collect::<Vec<_>>());

    log.ack("ahead", &ids(&taken)).await.unwrap();
    log.ack("behind", &ids(&rest)).await.unwrap();
    let trimmed = log.trim(&ALL).await.unwrap();
    assert!(trimmed.entries > 0);
    let stats = log.partition_stats("behind").await.unwrap();
    assert!(
        stats[partition.index()].length < 20,
        "with everything acked, the log keeps at most its newest segment: {:?}",
        stats[partition.index()]
    );
    assert_eq!(log.backlog("behind").await.unwrap(), 0);

    // Appends and reads go on after trimming.
    log.append(&event(key, 31)).await.unwrap();
    let next = read_partition(&*log, "behind", "slow", partition, 1).await;
    assert_eq!(quantities(&next), vec![31]);
}

/// With a retention, acked entries stay until they are that old.
async fn retention_keeps_acked_entries(open: Opener) {
    let log = open(PARTITIONS).await.unwrap().log;
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    for q in 1..=12 {
        log.append(&event(key, q)).await.unwrap();
    }
    let all = read_partition(&*log, GROUP, "c", partition, 12).await;
    log.ack(GROUP, &ids(&all)).await.unwrap();
    assert_eq!(log.trim(&ALL).await.unwrap().entries, 0);
    let stats = log.partition_stats(GROUP).await.unwrap();
    assert_eq!(stats[partition.index()].length, 12);
}

fn event(key: Uuid, quantity: i64) -> Envelope {
    DomainEvent::StockReceived(StockReceived {
        location_id: None,
        product_id: key.into(),
        quantity,
        purchase_order_id: None,
    })
    .into_envelope(Utc::now())
}

/// Reads from every partition, 7 entries a call, until `want` entries
/// arrived or 10 s passed.
async fn read_all(
    log: &dyn EventLog,
    consumer: &str,
    want: usize,
) -> Vec<streamstock::stream::Delivery> {
    read_until(log, GROUP, consumer, &ALL, 7, want).await
}

async fn append_read_ack_in_key_order(open: Opener) {
    let log = open(PARTITIONS).await.unwrap().log;
    let keys: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let mut appended: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for i in 0..40 {
        let key = keys[i % keys.len()];
        let env = event(key, i as i64 + 1);
        let receipt = log.append(&env).await.unwrap();
        assert_eq!(
            receipt.partition,
            partition_for(&key.to_string(), PARTITIONS)
        );
        appended.entry(key).or_default().push(env.event_id);
    }
    assert_eq!(log.backlog(GROUP).await.unwrap(), 40);

    let delivered = read_all(&*log, "c1", 40).await;
    assert_eq!(delivered.len(), 40);
    let mut seen: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for d in &delivered {
        let env = d.envelope.as_ref().unwrap();
        let key: Uuid = env.key.parse().unwrap();
        assert_eq!(d.partition, partition_for(&env.key, PARTITIONS));
        seen.entry(key).or_default().push(env.event_id);
    }
    assert_eq!(
        seen, appended,
        "every key's events arrive once, in append order"
    );

    let ids: Vec<_> = delivered.iter().map(|d| (d.partition, d.id)).collect();
    log.ack(GROUP, &ids).await.unwrap();
    assert_eq!(log.backlog(GROUP).await.unwrap(), 0);
    assert!(log
        .read_group(GROUP, "c1", &ALL, 10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
}

/// A consumer that dies with entries unacked: they are delivered again (to a
/// restarted process), acked ones are not, and appends survive the restart.
async fn unacked_entries_are_redelivered(open: Opener) {
    let key = Uuid::now_v7();
    {
        let log = open(PARTITIONS).await.unwrap().log;
        for q in 1..=6 {
            log.append(&event(key, q)).await.unwrap();
        }
        let delivered = read_all(&*log, "doomed", 6).await;
        assert_eq!(delivered.len(), 6);
        // Ack only the first two, then "crash".
        let first_two: Vec<_> = delivered[..2].iter().map(|d| (d.partition, d.id)).collect();
        log.ack(GROUP, &first_two).await.unwrap();
    }
    let backend = open(PARTITIONS).await.unwrap();
    let log = backend.log.clone();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    let epoch = holding(&backend, GROUP, "survivor", partition).await;
    // Taken over (Valkey: still pending for the dead consumer) or simply
    // delivered again (embedded: delivery state is not kept across restarts).
    let mut again = log
        .take_over(&Consumer::new(GROUP, "survivor"), partition, epoch)
        .await
        .unwrap();
    if again.len() < 4 {
        again.extend(read_all(&*log, "survivor", 4 - again.len()).await);
    }
    assert_eq!(
        quantities(&again),
        vec![3, 4, 5, 6],
        "exactly the unacked entries, in order"
    );
    assert!(log
        .read_group(GROUP, "survivor", &ALL, 10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    let ids: Vec<_> = again.iter().map(|d| (d.partition, d.id)).collect();
    log.ack(GROUP, &ids).await.unwrap();
    assert_eq!(log.backlog(GROUP).await.unwrap(), 0);
}

/// A live consumer's unacked entries handed to the partition's new owner,
/// in order, without the ones already acked.
async fn take_over_hands_unacked_entries_to_the_new_owner(open: Opener) {
    let backend = open(PARTITIONS).await.unwrap();
    let log = backend.log.clone();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    for q in 1..=3 {
        log.append(&event(key, q)).await.unwrap();
    }
    let first = read_all(&*log, "old-owner", 3).await;
    log.ack(GROUP, &[(first[0].partition, first[0].id)])
        .await
        .unwrap();
    let epoch = holding(&backend, GROUP, "new-owner", partition).await;
    let taken = log
        .take_over(&Consumer::new(GROUP, "new-owner"), partition, epoch)
        .await
        .unwrap();
    assert_eq!(quantities(&taken), vec![2, 3]);
    let ids: Vec<_> = taken.iter().map(|d| (d.partition, d.id)).collect();
    log.ack(GROUP, &ids).await.unwrap();
    assert_eq!(log.backlog(GROUP).await.unwrap(), 0);
    let stats = log.partition_stats(GROUP).await.unwrap();
    assert_eq!(stats[partition.index()].length, 3);
    assert_eq!(stats[partition.index()].pending, 0);
}

/// `consumer` takes `partition`'s lease in `group` (for a minute): the
/// epoch it holds it under.
async fn holding(backend: &LogBackend, group: &str, consumer: &str, partition: Partition) -> Epoch {
    backend
        .leases
        .try_acquire(group, partition, consumer, Duration::from_secs(60), None)
        .await
        .unwrap()
        .expect("the lease is free")
}

/// Fenced reads by `consumer` under `owned`, until `want` entries arrived
/// or 10 s passed.
async fn read_fenced_until(
    log: &dyn EventLog,
    consumer: &str,
    owned: &[(Partition, Epoch)],
    want: usize,
) -> Vec<streamstock::stream::Delivery> {
    let owned: Holdings = owned.iter().copied().collect();
    let mut got = Vec::new();
    for _ in 0..100 {
        if got.len() >= want {
            break;
        }
        got.extend(
            log.read_fenced(
                &Consumer::new(GROUP, consumer),
                &owned,
                want - got.len(),
                Duration::from_millis(100),
            )
            .await
            .unwrap(),
        );
    }
    got
}

/// Fencing: a consumer whose lease on a partition expired, and went to
/// another consumer under a newer epoch, gets nothing more of that
/// partition: no new entry, no take-over, no ack, while it goes on with a
/// partition it still holds, in the same calls. The new holder gets every
/// entry the old one did not ack, once and in log order, including those
/// the old one read after losing the lease.
async fn a_lost_lease_fences_reads_take_overs_and_acks(open: Opener) {
    let backend = open(PARTITIONS).await.unwrap();
    let (log, leases) = (&*backend.log, &*backend.leases);
    let key = Uuid::now_v7();
    let lost = partition_for(&key.to_string(), PARTITIONS);
    let other_key = std::iter::repeat_with(Uuid::now_v7)
        .find(|k| partition_for(&k.to_string(), PARTITIONS) != lost)
        .unwrap();
    let kept = partition_for(&other_key.to_string(), PARTITIONS);
    for q in 1..=6 {
        log.append(&event(key, q)).await.unwrap();
    }
    let short = Duration::from_millis(300);
    let old = leases
        .try_acquire(GROUP, lost, "old", short, None)
        .await
        .unwrap()
        .unwrap();
    let kept_epoch = holding(&backend, GROUP, "old", kept).await;
    let epochs = |pairs: &[(Partition, Epoch)]| -> Holdings { pairs.iter().copied().collect() };

    // Under its lease, "old" reads 1..=4 and acks 1.
    let first = read_fenced_until(log, "old", &[(lost, old)], 4).await;
    assert_eq!(quantities(&first), vec![1, 2, 3, 4]);
    let refused = log
        .ack_fenced(
            &Consumer::new(GROUP, "old"),
            &ids(&first[..1]),
            &epochs(&[(lost, old)]),
        )
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");

    // Its lease expires and "new" takes the partition, under a newer epoch.
    tokio::time::sleep(short * 2).await;
    let new = holding(&backend, GROUP, "new", lost).await;
    assert!(new > old, "epoch {new} after {old}");
    log.append(&event(other_key, 100)).await.unwrap();

    // "old" reads only the partition it still holds; cannot take over,
    // reclaim or ack the one it lost (a right name under an old epoch is
    // refused just the same).
    let owned = [(lost, old), (kept, kept_epoch)];
    let read = read_fenced_until(log, "old", &owned, 1).await;
    assert_eq!(
        quantities(&read),
        vec![100],
        "only the partition still held"
    );
    assert!(log
        .read_fenced(
            &Consumer::new(GROUP, "old"),
            &epochs(&owned),
            10,
            Duration::from_millis(100)
        )
        .await
        .unwrap()
        .is_empty());
    for (consumer, epoch) in [("old", old), ("new", old)] {
        assert!(matches!(
            log.take_over(&Consumer::new(GROUP, consumer), lost, epoch)
                .await,
            Err(LogError::LeaseLost { .. })
        ));
    }
    let mut old_ids = ids(&first[1..]);
    old_ids.extend(ids(&read));
    let refused = log
        .ack_fenced(&Consumer::new(GROUP, "old"), &old_ids, &epochs(&owned))
        .await
        .unwrap();
    assert_eq!(refused, vec![lost], "acked the partition still held only");

    // "new" takes over what "old" read and did not ack, then reads on: all
    // of it once, in log order. (On a single Valkey, "old"'s reads after
    // losing the lease take entries out and hand them nobody; "new" gets
    // them first, by take-over or by claiming them before its next read.)
    let mut new_got = log
        .take_over(&Consumer::new(GROUP, "new"), lost, new)
        .await
        .unwrap();
    assert_eq!(quantities(&new_got[..3]), vec![2, 3, 4]);
    let want = 5 - new_got.len();
    new_got.extend(read_fenced_until(log, "new", &[(lost, new)], want).await);
    assert_eq!(quantities(&new_got), vec![2, 3, 4, 5, 6]);
    for q in 7..=8 {
        log.append(&event(key, q)).await.unwrap();
    }
    assert!(log
        .read_fenced(
            &Consumer::new(GROUP, "old"),
            &epochs(&owned),
            10,
            Duration::from_millis(100)
        )
        .await
        .unwrap()
        .is_empty());
    let late = read_fenced_until(log, "new", &[(lost, new)], 2).await;
    assert_eq!(quantities(&late), vec![7, 8]);
    new_got.extend(late);
    let refused = log
        .ack_fenced(
            &Consumer::new(GROUP, "new"),
            &ids(&new_got),
            &epochs(&[(lost, new)]),
        )
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(log.backlog(GROUP).await.unwrap(), 0);
    assert!(matches!(
        log.reclaim_stale(&Consumer::new(GROUP, "old"), lost, old, Duration::ZERO)
            .await
            .map(|stranded| stranded.is_empty()),
        // Refused on Valkey; nothing to reclaim on the embedded log.
        Err(LogError::LeaseLost { .. }) | Ok(true)
    ));
}

/// Polls `check` every 20 ms until it holds; panics after 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Leases: exclusive while held, extended by a renewal, free after the
/// TTL, released only by their holder; members drop out when they stop
/// heartbeating. No step races the TTL: what must still hold is checked
/// under a TTL far longer than the test, and what must expire is waited for
/// (and must not come before its TTL).
async fn leases_are_exclusive_and_expire(leases: Arc<dyn LeaseStore>) {
    let group = format!("leases-{}", Uuid::new_v4().simple());
    let long = Duration::from_secs(60);
    let short = Duration::from_millis(300);

    // Exclusive, and released only by its holder.
    assert_eq!(
        leases
            .try_acquire(&group, Partition(1), "a", long, None)
            .await
            .unwrap(),
        Epoch::new(1)
    );
    assert_eq!(
        leases
            .try_acquire(&group, Partition(1), "b", long, None)
            .await
            .unwrap(),
        None
    );
    leases.release(&group, Partition(1), "b").await.unwrap();
    assert_eq!(
        leases.owners(&group, 2).await.unwrap(),
        vec![None, Some("a".to_string())]
    );

    // A renewal extends the lease: taken for `short`, renewed for `long`,
    // it is still a's well after `short` (waiting longer only makes the
    // check stricter).
    assert_eq!(
        leases
            .try_acquire(&group, Partition(2), "a", short, None)
            .await
            .unwrap(),
        Epoch::new(1)
    );
    assert!(leases.renew(&group, Partition(2), "a", long).await.unwrap());
    tokio::time::sleep(short * 3).await;
    assert_eq!(
        leases
            .try_acquire(&group, Partition(2), "b", long, None)
            .await
            .unwrap(),
        None,
        "a renewed it"
    );

    // Not renewed, a lease expires: b gets it after `short`, not before.
    let taken_at = tokio::time::Instant::now();
    assert_eq!(
        leases
            .try_acquire(&group, Partition(3), "a", short, None)
            .await
            .unwrap(),
        Epoch::new(1)
    );
    eventually("a's lease expires", || async {
        leases
            .try_acquire(&group, Partition(3), "b", long, None)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    // b's is a new epoch; keeping it keeps the epoch.
    assert_eq!(
        leases
            .try_acquire(&group, Partition(3), "b", long, None)
            .await
            .unwrap(),
        Epoch::new(2)
    );
    assert!(
        taken_at.elapsed() >= short - Duration::from_millis(20),
        "expired after {:?}, before its TTL",
        taken_at.elapsed()
    );
    assert!(
        !leases.renew(&group, Partition(3), "a", long).await.unwrap(),
        "expired"
    );
    // Released and taken again: a newer epoch, and above the floor given.
    leases.release(&group, Partition(1), "a").await.unwrap();
    assert_eq!(
        leases
            .try_acquire(&group, Partition(1), "b", long, None)
            .await
            .unwrap(),
        Epoch::new(2)
    );
    leases.release(&group, Partition(1), "b").await.unwrap();
    assert_eq!(
        leases
            .try_acquire(&group, Partition(1), "a", long, Epoch::new(41))
            .await
            .unwrap(),
        Epoch::new(42)
    );

    // Members: a heartbeats once, b keeps heartbeating; a drops out.
    assert_eq!(
        leases.heartbeat(&group, "a", short).await.unwrap(),
        vec!["a"]
    );
    assert_eq!(
        leases.heartbeat(&group, "b", long).await.unwrap(),
        vec!["a", "b"]
    );
    eventually("a went silent", || async {
        leases.heartbeat(&group, "b", long).await.unwrap() == vec!["b"]
    })
    .await;
    leases.leave(&group, "b").await.unwrap();
    assert_eq!(
        leases.heartbeat(&group, "c", long).await.unwrap(),
        vec!["c"]
    );
}

/// The local leases run on tokio's clock: paused, the test is exact.
#[tokio::test(start_paused = true)]
async fn local_leases_are_exclusive_and_expire() {
    leases_are_exclusive_and_expire(Arc::new(LocalLeases::new())).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_leases_are_exclusive_and_expire() {
    let log = ValkeyLog::connect(
        &common::valkey_url(),
        &format!("leases-{}", Uuid::new_v4().simple()),
        PARTITIONS,
        streamstock::stream::Durability::Strict,
    )
    .await
    .unwrap();
    leases_are_exclusive_and_expire(Arc::new(log)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_cluster_leases_are_exclusive_and_expire() {
    let log = ValkeyLog::connect(
        &common::valkey_cluster_url(),
        &format!("leases-{}", Uuid::new_v4().simple()),
        PARTITIONS,
        streamstock::stream::Durability::Strict,
    )
    .await
    .unwrap();
    leases_are_exclusive_and_expire(Arc::new(log)).await;
}

async fn partition_count_is_fixed(open: Opener) {
    let log = open(PARTITIONS).await.unwrap().log;
    log.append(&event(Uuid::now_v7(), 1)).await.unwrap();
    drop(log);
    let err = match open(PARTITIONS + 1).await.map(|backend| backend.log) {
        Ok(_) => panic!("a different partition count was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("fixed for the life of a deployment"), "{err}");
}

async fn blocking_read_wakes_on_append(open: Opener) {
    let log = open(PARTITIONS).await.unwrap().log;
    // Create the group first so the append is after the group's start.
    assert!(log
        .read_group(GROUP, "c", &ALL, 1, Duration::from_millis(10))
        .await
        .unwrap()
        .is_empty());
    // The reader says when its read starts; the append comes well after
    // that. A read that did not wait returns at once with nothing; one that
    // waited out its timeout returns after 5 s: both fail below.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            started_tx.send(()).unwrap();
            let got = log
                .read_group(GROUP, "c", &ALL, 10, Duration::from_secs(5))
                .await
                .unwrap();
            (got, started.elapsed())
        })
    };
    started_rx.await.unwrap();
    let hold = Duration::from_millis(300);
    tokio::time::sleep(hold).await;
    log.append(&event(Uuid::now_v7(), 1)).await.unwrap();
    let (got, waited) = reader.await.unwrap();
    assert_eq!(got.len(), 1, "the read returned before the append");
    assert!(
        waited >= hold,
        "the read returned after {waited:?}, before the append"
    );
    assert!(
        waited < Duration::from_secs(4),
        "the read waited {waited:?}, for its timeout instead of the append"
    );
}

/// Dead letters are found by id without reading the rest, and "all" is
/// taken a page of `ALL_PAGE` at a time, oldest first, so an operator's
/// replay or purge never holds every letter in memory.
async fn dead_letters_are_chosen_by_id_and_a_page_at_a_time(open: Opener) {
    use streamstock::store::dead_letters::{self, DeadLetterError, ALL_PAGE};
    use streamstock::stream::dead_letter::DeadLetter;
    let log = open(PARTITIONS).await.unwrap().log;
    let total = ALL_PAGE + 203;
    let mut ids = Vec::with_capacity(total);
    for n in 0..total {
        let letter = DeadLetter::new(0, "1-0".parse().unwrap(), None, format!("letter {n}"), 1);
        ids.push(log.dead_letter(GROUP, &letter).await.unwrap());
    }

    let first_page = dead_letters::choose(&*log, GROUP, None).await.unwrap();
    assert_eq!(first_page.len(), ALL_PAGE);
    let errors: Vec<&str> = first_page.iter().map(|l| l.error.as_str()).collect();
    assert_eq!(errors[0], "letter 0");
    assert_eq!(errors[ALL_PAGE - 1], format!("letter {}", ALL_PAGE - 1));

    // By id, in the order named, repeats included; a missing id (or one
    // that is not an id at all) fails the whole choice.
    let named = [ids[1100].clone(), ids[3].clone(), ids[1100].clone()];
    let chosen = dead_letters::choose(&*log, GROUP, Some(&named))
        .await
        .unwrap();
    let errors: Vec<&str> = chosen.iter().map(|l| l.error.as_str()).collect();
    assert_eq!(errors, ["letter 1100", "letter 3", "letter 1100"]);
    for missing in ["999999999-0", "not-an-id", ""] {
        let asked = [ids[0].clone(), missing.to_string()];
        match dead_letters::choose(&*log, GROUP, Some(&asked)).await {
            Err(DeadLetterError::Unknown(id)) => assert_eq!(id, missing),
            other => panic!("{missing:?}: {other:?}"),
        }
    }

    // Purged a page at a time: 1,000, then the 203 left.
    let purged = dead_letters::purge(&*log, GROUP, &first_page)
        .await
        .unwrap();
    assert_eq!(purged, ALL_PAGE as u64);
    let rest = dead_letters::choose(&*log, GROUP, None).await.unwrap();
    assert_eq!(rest.len(), 203);
    assert_eq!(rest[0].error, format!("letter {ALL_PAGE}"));
    dead_letters::purge(&*log, GROUP, &rest).await.unwrap();
    assert_eq!(log.dead_letter_count(GROUP).await.unwrap(), 0);
}

macro_rules! conformance {
    ($($name:ident),*) => {
        mod embedded_log {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(embedded(dir.path().to_path_buf())).await;
                }
            )*
        }
        mod valkey_log {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(valkey()).await;
                }
            )*
        }
        mod valkey_cluster_log {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(valkey_cluster()).await;
                }
            )*
        }
    };
}

conformance!(
    append_read_ack_in_key_order,
    unacked_entries_are_redelivered,
    take_over_hands_unacked_entries_to_the_new_owner,
    a_lost_lease_fences_reads_take_overs_and_acks,
    partition_count_is_fixed,
    blocking_read_wakes_on_append,
    trim_keeps_what_any_group_still_needs,
    trimmed_entries_are_not_lost_ones,
    dead_letters_are_chosen_by_id_and_a_page_at_a_time
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_retention_keeps_acked_entries() {
    let dir = tempfile::tempdir().unwrap();
    retention_keeps_acked_entries(embedded_retaining(
        dir.path().to_path_buf(),
        Duration::from_secs(3600),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_log_retention_keeps_acked_entries() {
    retention_keeps_acked_entries(valkey_retaining(Duration::from_secs(3600))).await;
}

fn open_tiny(dir: &std::path::Path) -> EmbeddedLog {
    let options = EmbeddedOptions {
        segment_bytes: TINY_SEGMENT,
        ..EmbeddedOptions::default()
    };
    EmbeddedLog::open_with(dir, PARTITIONS, options).unwrap()
}

/// The segment files of a partition, oldest first.
fn segment_files(dir: &std::path::Path, partition: Partition) -> Vec<PathBuf> {
    let folder = dir.join(format!("partition-{partition}"));
    common::segment_bases(dir, partition.0)
        .into_iter()
        .map(|base| folder.join(format!("{base:020}.seg")))
        .collect()
}

/// A crash in the middle of an append leaves a torn last line in the newest
/// segment; reopening cuts it off and keeps every complete (acknowledged)
/// entry, in this segment and the sealed ones before it.
#[tokio::test]
async fn embedded_log_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    {
        let log = open_tiny(dir.path());
        for q in 1..=7 {
            log.append(&event(key, q)).await.unwrap();
        }
    }
    let segments = segment_files(dir.path(), partition);
    assert!(segments.len() >= 2, "the entries span several segments");
    let newest = segments.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    bytes.extend_from_slice(b"{\"event_id\":\"0191");
    std::fs::write(newest, bytes).unwrap();

    let log = open_tiny(dir.path());
    log.append(&event(key, 8)).await.unwrap();
    let got = read_all(&log, "c", 8).await;
    assert_eq!(quantities(&got), (1..=8).collect::<Vec<_>>());
}

/// A power loss can take appended lines from a segment's page cache: the
/// writer syncs only the journal before acknowledging. Reopening restores
/// them from the journal, in order, and the log goes on from there.
#[tokio::test]
async fn embedded_log_restores_lost_segment_tails_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    {
        let log = EmbeddedLog::open(dir.path(), PARTITIONS).unwrap();
        for q in 1..=7 {
            log.append(&event(key, q)).await.unwrap();
        }
    }
    // What the disk holds after the power loss: the segment without its
    // last three lines (nothing synced them), the journal intact (synced).
    let segment = segment_files(dir.path(), partition).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let keep = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(3)
        .map(|(i, _)| i + 1)
        .unwrap();
    std::fs::write(&segment, &bytes[..keep]).unwrap();

    let log = EmbeddedLog::open(dir.path(), PARTITIONS).unwrap();
    log.append(&event(key, 8)).await.unwrap();
    let got = read_all(&log, "c", 8).await;
    assert_eq!(quantities(&got), (1..=8).collect::<Vec<_>>());
    drop(log);
    // Replaying again (say, after another crash) adds nothing twice.
    let log = EmbeddedLog::open(dir.path(), PARTITIONS).unwrap();
    let got = read_all(&log, "d", 8).await;
    assert_eq!(quantities(&got), (1..=8).collect::<Vec<_>>());
}

/// Bytes in the journal's files.
fn journal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// The journal is bounded: past its size the writer moves to a new file and
/// the old one goes once the segments are synced; while a checkpoint lags
/// the writer waits once the files hold twice the size (so at most that, a
/// batch more, at any time), and nothing is lost across a reopen.
#[tokio::test]
async fn embedded_log_journal_stays_bounded() {
    journal_stays_bounded().await;
}

/// As above, with every checkpoint slowed down (a debug-only fault, as a
/// slow disk would): the writer meets a checkpoint still running at each
/// rotation, and waits for it rather than let the journal grow.
#[tokio::test]
async fn embedded_log_journal_stays_bounded_while_checkpoints_lag() {
    // Each test runs in its own process (nextest): the variable is this one's.
    std::env::set_var("STREAMSTOCK_FAULT_SLOW_CHECKPOINT_MS", "30");
    journal_stays_bounded().await;
}

async fn journal_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let key = Uuid::now_v7();
    let options = EmbeddedOptions {
        journal_bytes: 2048,
        ..EmbeddedOptions::default()
    };
    {
        let log = EmbeddedLog::open_with(dir.path(), PARTITIONS, options.clone()).unwrap();
        // 100 appends write about 15 times the bound: a journal that
        // grew with them would fail at once.
        for q in 1..=100 {
            log.append(&event(key, q)).await.unwrap();
            let journal = journal_bytes(dir.path());
            assert!(
                journal < 2 * 2048 + 1024,
                "journal at {journal} bytes after {q} appends"
            );
        }
    }
    let log = EmbeddedLog::open_with(dir.path(), PARTITIONS, options).unwrap();
    assert_eq!(
        journal_bytes(dir.path()),
        0,
        "opening replays and empties it"
    );
    let got = read_all(&log, "c", 100).await;
    assert_eq!(quantities(&got), (1..=100).collect::<Vec<_>>());
}

/// Deleted segments stay deleted across a restart, and the log goes on
/// from where it was: offsets keep counting, the group resumes at its
/// committed offset, nothing acked comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_restarts_after_segments_were_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    let last_offset;
    {
        let log = open_tiny(dir.path());
        for q in 1..=20 {
            log.append(&event(key, q)).await.unwrap();
        }
        let got = read_partition(&log, GROUP, "c", partition, 20).await;
        log.ack(GROUP, &ids(&got[..15])).await.unwrap();
        let trimmed = log.trim(&ALL).await.unwrap();
        assert!(trimmed.entries >= 9, "{trimmed:?}");
        last_offset = got.last().unwrap().id;
    }
    let first_kept = segment_files(dir.path(), partition)[0].clone();
    let log = open_tiny(dir.path());
    let again = read_partition(&log, GROUP, "c", partition, 5).await;
    assert_eq!(quantities(&again), (16..=20).collect::<Vec<_>>());
    let receipt = log.append(&event(key, 21)).await.unwrap();
    assert!(
        receipt.id > last_offset,
        "offsets keep counting after a trim"
    );
    let stats = log.partition_stats(GROUP).await.unwrap()[partition.index()];
    assert_eq!(stats.lag, 1);
    assert_eq!(stats.pending, 5);
    assert!(stats.bytes.unwrap() > 0);
    assert_eq!(segment_files(dir.path(), partition)[0], first_kept);
}

/// A group whose committed offset is below the oldest segment (its file
/// came back from a backup, say) resumes at the oldest entry kept, with a
/// warning in the log, instead of failing or reading garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_group_behind_the_oldest_segment_resumes_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    {
        let log = open_tiny(dir.path());
        for q in 1..=20 {
            log.append(&event(key, q)).await.unwrap();
        }
        let got = read_partition(&log, GROUP, "c", partition, 20).await;
        log.ack(GROUP, &ids(&got)).await.unwrap();
        log.trim(&ALL).await.unwrap();
    }
    std::fs::write(dir.path().join("groups/restored.json"), b"[0,0,0,0]").unwrap();
    let log = open_tiny(dir.path());
    let kept = log.partition_stats(GROUP).await.unwrap()[partition.index()].length;
    assert!(kept > 0 && kept < 20, "{kept}");
    let got = read_partition(&log, "restored", "c", partition, kept as usize).await;
    assert_eq!(
        quantities(&got),
        ((20 - kept as i64 + 1)..=20).collect::<Vec<_>>()
    );
}

/// A data dir written by the previous release (one file per partition,
/// committed offsets per group) is converted on open without losing an
/// entry: acked entries stay acked, the rest are delivered, appends follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_converts_a_previous_release_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    // The previous release's layout, byte for byte: meta.json, one JSON
    // line per envelope in partition-<p>.log, groups/<group>.json.
    std::fs::create_dir_all(dir.path().join("groups")).unwrap();
    std::fs::write(dir.path().join("meta.json"), br#"{"partitions":4}"#).unwrap();
    for p in 0..PARTITIONS {
        let mut lines = Vec::new();
        if p == partition.0 {
            for q in 1..=6 {
                lines.extend(serde_json::to_vec(&event(key, q)).unwrap());
                lines.push(b'\n');
            }
        }
        std::fs::write(dir.path().join(format!("partition-{p}.log")), lines).unwrap();
    }
    let mut committed = vec![0u64; PARTITIONS as usize];
    committed[partition.index()] = 4;
    std::fs::write(
        dir.path().join(format!("groups/{GROUP}.json")),
        serde_json::to_vec(&committed).unwrap(),
    )
    .unwrap();

    let log = open_tiny(dir.path());
    assert!(!dir
        .path()
        .join(format!("partition-{partition}.log"))
        .exists());
    let got = read_partition(&log, GROUP, "c", partition, 2).await;
    assert_eq!(quantities(&got), vec![5, 6]);
    assert_eq!(got[0].id.seq, 4, "offsets are those of the old file");
    let receipt = log.append(&event(key, 7)).await.unwrap();
    assert_eq!(receipt.id.seq, 6);
    // A new group sees the whole converted history.
    let fresh = read_partition(&log, "fresh", "c", partition, 7).await;
    assert_eq!(quantities(&fresh), (1..=7).collect::<Vec<_>>());
}

/// Concurrent strict appends share their WAITAOFs (group commit): every
/// append is answered with its own entry, read back in full, and Valkey ran
/// fewer WAITAOFs than XADDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_valkey_appends_share_their_waitaof() {
    let calls = |info: &str, command: &str| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map(|n| n.parse().unwrap())
            .unwrap_or(0)
    };
    use fred::prelude::{Builder, ClientLike, Config};
    let admin = Builder::from_config(Config::from_url(&common::valkey_url()).unwrap())
        .build()
        .unwrap();
    admin.init().await.unwrap();
    let stats = || async {
        let info: String = admin
            .info(Some(fred::types::InfoKind::CommandStats))
            .await
            .unwrap();
        (calls(&info, "xadd"), calls(&info, "waitaof"))
    };
    let log = valkey()(4).await.unwrap().log;
    let (xadd_before, waitaof_before) = stats().await;
    let key = Uuid::new_v4();
    let appends = (1..=400).map(|q| {
        let log = log.clone();
        async move { log.append(&event(key, q)).await.unwrap() }
    });
    let receipts = futures::future::join_all(appends).await;
    let (xadd_after, waitaof_after) = stats().await;
    let distinct: std::collections::HashSet<_> = receipts.iter().map(|r| r.id).collect();
    assert_eq!(distinct.len(), 400, "each append has its own entry");
    let got = read_until(log.as_ref(), GROUP, "c", &[receipts[0].partition], 400, 400).await;
    assert_eq!(got.len(), 400);
    // Other tests may share this Valkey, each connection's start-up probe
    // is a WAITAOF of its own, and ungrouped appends run one WAITAOF per
    // XADD: without grouping there would be at least as many as XADDs.
    let (xadds, waitaofs) = (xadd_after - xadd_before, waitaof_after - waitaof_before);
    assert!(xadds >= 400, "{xadds} XADDs");
    assert!(
        waitaofs < xadds,
        "{waitaofs} WAITAOFs for {xadds} XADDs (400 of them concurrent): not grouped"
    );
}

/// On a cluster the partitions' streams spread over the primaries, and a
/// strict append waits for a WAITAOF on the primary that took its XADD (a
/// WAITAOF anywhere else answers at once and covers nothing). Appends whose
/// partitions all live on one primary: that primary ran the WAITAOFs, fewer
/// than the XADDs (grouped), and the other primaries ran neither. The
/// cluster tests run one at a time (.config/nextest.toml), so the counts
/// are this test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_cluster_appends_wait_for_the_aof_of_their_primary() {
    use fred::interfaces::ClusterInterface;
    use fred::prelude::{Builder, ClientLike, Config};
    const SPREAD: u32 = 16;
    let url = common::valkey_cluster_url();
    let cluster = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    cluster.init().await.unwrap();
    let routing = cluster.cached_cluster_state().unwrap();
    let primaries = routing.unique_primary_nodes();
    assert_eq!(primaries.len(), 3, "{url}");
    let mut admins = Vec::new();
    for primary in &primaries {
        let admin = Builder::from_config(
            Config::from_url(&format!("redis://{}:{}", primary.host, primary.port)).unwrap(),
        )
        .build()
        .unwrap();
        admin.init().await.unwrap();
        admins.push(admin);
    }
    let namespace = format!("aof-{}", Uuid::new_v4().simple());
    let log = ValkeyLog::connect(
        &url,
        &namespace,
        SPREAD,
        streamstock::stream::Durability::Strict,
    )
    .await
    .unwrap();
    let primary_of = |partition: Partition| {
        let key = format!("{namespace}:events:{partition}");
        routing
            .get_server(fred::util::redis_keyslot(key.as_bytes()))
            .unwrap()
            .clone()
    };
    // Sixteen partitions: all on one primary by chance is 3 in 3^16.
    let spread: std::collections::BTreeSet<_> = Partition::all(SPREAD).map(primary_of).collect();
    assert!(
        spread.len() >= 2,
        "the partitions' streams did not spread: {spread:?}"
    );

    let calls = |info: &str, command: &str| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map(|n| n.parse().unwrap())
            .unwrap_or(0)
    };
    let stats = || async {
        let mut per_primary = Vec::new();
        for admin in &admins {
            let info: String = admin
                .info(Some(fred::types::InfoKind::CommandStats))
                .await
                .unwrap();
            per_primary.push((calls(&info, "xadd"), calls(&info, "waitaof")));
        }
        per_primary
    };
    // Keys whose partitions live on the first primary.
    let target = primary_of(Partition(0));
    let keys: Vec<Uuid> = std::iter::repeat_with(Uuid::new_v4)
        .filter(|key| primary_of(log.partition_of(&key.to_string())) == target)
        .take(300)
        .collect();
    let before = stats().await;
    let appends = keys.iter().enumerate().map(|(q, &key)| {
        let log = &log;
        async move { log.append(&event(key, q as i64 + 1)).await.unwrap() }
    });
    let receipts = futures::future::join_all(appends).await;
    let after = stats().await;
    let partitions: Vec<Partition> = receipts
        .iter()
        .map(|r| r.partition)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let got = read_until(&log, GROUP, "c", &partitions, 300, 300).await;
    assert_eq!(got.len(), 300, "every append is read back");
    for (primary, ((xadd_before, wait_before), (xadd_after, wait_after))) in
        primaries.iter().zip(before.iter().zip(&after))
    {
        let (xadds, waitaofs) = (xadd_after - xadd_before, wait_after - wait_before);
        if *primary == target {
            assert_eq!(xadds, 300, "{primary}: the XADDs went elsewhere");
            assert!(
                waitaofs > 0 && waitaofs < xadds,
                "{primary}: {waitaofs} WAITAOFs for {xadds} XADDs"
            );
        } else {
            assert_eq!(
                (xadds, waitaofs),
                (0, 0),
                "{primary} owns none of the streams appended to"
            );
        }
    }
}
