//! One conformance suite for every event-log backend: the same test bodies
//! run against the embedded file log and against a real Valkey.

mod common;

use chrono::Utc;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use streamstock::domain::events::StockReceived;
use streamstock::domain::{DomainEvent, Envelope};
use streamstock::stream::embedded::EmbeddedLog;
use streamstock::stream::lease::{LeaseStore, LocalLeases};
use streamstock::stream::valkey::ValkeyLog;
use streamstock::stream::{partition_for, EventLog};
use uuid::Uuid;

const PARTITIONS: u32 = 4;
const GROUP: &str = "conformance";
const ALL: [u32; 4] = [0, 1, 2, 3];

/// Opens the same log again (a restart), with a given partition count.
type Opener = Box<dyn Fn(u32) -> Pin<Box<dyn Future<Output = anyhow::Result<Arc<dyn EventLog>>>>>>;

fn embedded(dir: PathBuf) -> Opener {
    Box::new(move |partitions| {
        let dir = dir.clone();
        Box::pin(
            async move { Ok(Arc::new(EmbeddedLog::open(&dir, partitions)?) as Arc<dyn EventLog>) },
        )
    })
}

fn valkey() -> Opener {
    let namespace = format!("conformance-{}", Uuid::new_v4().simple());
    Box::new(move |partitions| {
        let namespace = namespace.clone();
        Box::pin(async move {
            let log =
                ValkeyLog::connect(&common::valkey_url(), &namespace, partitions, true).await?;
            Ok(Arc::new(log) as Arc<dyn EventLog>)
        })
    })
}

fn event(key: Uuid, quantity: i64) -> Envelope {
    DomainEvent::StockReceived(StockReceived {
        product_id: key,
        quantity,
        purchase_order_id: None,
    })
    .into_envelope(Utc::now())
}

/// Reads until `want` entries arrived or 10 s passed.
async fn read_all(
    log: &dyn EventLog,
    consumer: &str,
    want: usize,
) -> Vec<streamstock::stream::Delivery> {
    let mut got = Vec::new();
    for _ in 0..100 {
        if got.len() >= want {
            break;
        }
        got.extend(
            log.read_group(GROUP, consumer, &ALL, 7, Duration::from_millis(100))
                .await
                .unwrap(),
        );
    }
    got
}

async fn append_read_ack_in_key_order(open: Opener) {
    let log = open(PARTITIONS).await.unwrap();
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
        let log = open(PARTITIONS).await.unwrap();
        for q in 1..=6 {
            log.append(&event(key, q)).await.unwrap();
        }
        let delivered = read_all(&*log, "doomed", 6).await;
        assert_eq!(delivered.len(), 6);
        // Ack only the first two, then "crash".
        let first_two: Vec<_> = delivered[..2].iter().map(|d| (d.partition, d.id)).collect();
        log.ack(GROUP, &first_two).await.unwrap();
    }
    let log = open(PARTITIONS).await.unwrap();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    // Taken over (Valkey: still pending for the dead consumer) or simply
    // delivered again (embedded: delivery state is not kept across restarts).
    let mut again = log.take_over(GROUP, "survivor", partition).await.unwrap();
    if again.len() < 4 {
        again.extend(read_all(&*log, "survivor", 4 - again.len()).await);
    }
    let quantities: Vec<i64> = again
        .iter()
        .map(|d| {
            d.envelope.as_ref().unwrap().payload["quantity"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        quantities,
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
    let log = open(PARTITIONS).await.unwrap();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    for q in 1..=3 {
        log.append(&event(key, q)).await.unwrap();
    }
    let first = read_all(&*log, "old-owner", 3).await;
    log.ack(GROUP, &[(first[0].partition, first[0].id)])
        .await
        .unwrap();
    let taken = log.take_over(GROUP, "new-owner", partition).await.unwrap();
    let quantities: Vec<i64> = taken
        .iter()
        .map(|d| {
            d.envelope.as_ref().unwrap().payload["quantity"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(quantities, vec![2, 3]);
    let ids: Vec<_> = taken.iter().map(|d| (d.partition, d.id)).collect();
    log.ack(GROUP, &ids).await.unwrap();
    assert_eq!(log.backlog(GROUP).await.unwrap(), 0);
    let stats = log.partition_stats(GROUP).await.unwrap();
    assert_eq!(stats[partition as usize].length, 3);
    assert_eq!(stats[partition as usize].pending, 0);
}

/// Leases: exclusive while renewed, free after the TTL, released only by
/// their holder; members drop out when they stop heartbeating.
async fn leases_are_exclusive_and_expire(leases: Arc<dyn LeaseStore>) {
    let group = format!("leases-{}", Uuid::new_v4().simple());
    let ttl = Duration::from_millis(400);
    assert!(leases.try_acquire(&group, 1, "a", ttl).await.unwrap());
    assert!(!leases.try_acquire(&group, 1, "b", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(leases.renew(&group, 1, "a", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        !leases.try_acquire(&group, 1, "b", ttl).await.unwrap(),
        "a renewed it"
    );
    leases.release(&group, 1, "b").await.unwrap();
    assert_eq!(
        leases.owners(&group, 2).await.unwrap(),
        vec![None, Some("a".to_string())]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!leases.renew(&group, 1, "a", ttl).await.unwrap(), "expired");
    assert!(leases.try_acquire(&group, 1, "b", ttl).await.unwrap());

    assert_eq!(leases.heartbeat(&group, "a", ttl).await.unwrap(), vec!["a"]);
    assert_eq!(
        leases.heartbeat(&group, "b", ttl).await.unwrap(),
        vec!["a", "b"]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        leases.heartbeat(&group, "b", ttl).await.unwrap(),
        vec!["b"],
        "a went silent"
    );
    leases.leave(&group, "b").await.unwrap();
    assert_eq!(leases.heartbeat(&group, "c", ttl).await.unwrap(), vec!["c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_leases_are_exclusive_and_expire() {
    leases_are_exclusive_and_expire(Arc::new(LocalLeases::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_leases_are_exclusive_and_expire() {
    let log = ValkeyLog::connect(
        &common::valkey_url(),
        &format!("leases-{}", Uuid::new_v4().simple()),
        PARTITIONS,
        true,
    )
    .await
    .unwrap();
    leases_are_exclusive_and_expire(Arc::new(log)).await;
}

async fn partition_count_is_fixed(open: Opener) {
    let log = open(PARTITIONS).await.unwrap();
    log.append(&event(Uuid::now_v7(), 1)).await.unwrap();
    drop(log);
    let err = match open(PARTITIONS + 1).await {
        Ok(_) => panic!("a different partition count was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("fixed for the life of a deployment"), "{err}");
}

async fn blocking_read_wakes_on_append(open: Opener) {
    let log = open(PARTITIONS).await.unwrap();
    // Create the group first so the append is after the group's start.
    assert!(log
        .read_group(GROUP, "c", &ALL, 1, Duration::from_millis(10))
        .await
        .unwrap()
        .is_empty());
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            log.read_group(GROUP, "c", &ALL, 10, Duration::from_secs(5))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    log.append(&event(Uuid::now_v7(), 1)).await.unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the read waited for its timeout instead of the append"
    );
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
    };
}

conformance!(
    append_read_ack_in_key_order,
    unacked_entries_are_redelivered,
    take_over_hands_unacked_entries_to_the_new_owner,
    partition_count_is_fixed,
    blocking_read_wakes_on_append
);

/// A crash in the middle of an append leaves a torn last line; reopening
/// cuts it off and keeps every complete (acknowledged) entry.
#[tokio::test]
async fn embedded_log_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let key = Uuid::now_v7();
    let partition = partition_for(&key.to_string(), PARTITIONS);
    {
        let log = EmbeddedLog::open(dir.path(), PARTITIONS).unwrap();
        log.append(&event(key, 1)).await.unwrap();
        log.append(&event(key, 2)).await.unwrap();
    }
    let file = dir.path().join(format!("partition-{partition}.log"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"{\"event_id\":\"0191");
    std::fs::write(&file, bytes).unwrap();

    let log = EmbeddedLog::open(dir.path(), PARTITIONS).unwrap();
    log.append(&event(key, 3)).await.unwrap();
    let got = read_all(&log, "c", 3).await;
    let quantities: Vec<i64> = got
        .iter()
        .map(|d| {
            d.envelope.as_ref().unwrap().payload["quantity"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(quantities, vec![1, 2, 3]);
}
