//! Fencing in one process, on the embedded log and SQLite: the rule the
//! zombie-worker test (tests/fencing.rs) checks across processes on Valkey
//! and PostgreSQL, here between two processor tasks sharing a log, its
//! leases and a database.

use super::apply::Applier;
use super::pipeline::Processor;
use super::recent::RecentlyCommitted;
use super::WorkerOptions;
use crate::domain::events::StockReceived;
use crate::domain::{DomainEvent, ProductId};
use crate::store::Store;
use crate::stream::embedded::EmbeddedLog;
use crate::stream::lease::LeaseStore;
use crate::stream::{Consumer, Epoch, EventLog, Holdings, LogError, Partition, PROCESSOR_GROUP};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Partition 0 alone, held under `epoch`.
fn partition_0(epoch: Epoch) -> Holdings {
    [(Partition(0), epoch)].into_iter().collect()
}

fn epoch(n: u64) -> Epoch {
    Epoch::new(n).unwrap()
}

fn options(consumer: &str, lease_ttl: Duration) -> WorkerOptions {
    WorkerOptions {
        consumer: Consumer::new(PROCESSOR_GROUP, consumer),
        batch_size: 100,
        batch_wait: Duration::from_millis(20),
        lease_ttl,
        max_attempts: 3,
        retry_backoff: Duration::from_millis(10),
        dead_letter_alert: 1_000,
        windows: Default::default(),
        hold_sweep: Default::default(),
        webhooks: Default::default(),
    }
}

/// Processor task "a" holds the partition and has a batch in hand when its
/// lease is revoked (it expires unrenewed) and "b" acquires the partition
/// under a newer epoch. "b"'s processor takes over what "a" read, commits
/// it and acks it. Then "a" carries on: its commit of the batch in hand is
/// refused with nothing applied, its reads hand it nothing more, and it can
/// neither take the partition over nor ack its entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_task_whose_lease_was_revoked_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log"), 1).unwrap();
    let leases = log.leases();
    let log: Arc<dyn EventLog> = Arc::new(log);
    let store = Store::connect(&format!("sqlite://{}/read-model.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mut appended = Vec::new();
    for quantity in 1..=6 {
        let event = DomainEvent::StockReceived(StockReceived {
            location_id: None,
            product_id: ProductId::new(),
            quantity,
            purchase_order_id: None,
        })
        .into_envelope(chrono::Utc::now());
        log.append(&event).await.unwrap();
        appended.push(event.event_id);
    }
    let group = PROCESSOR_GROUP;
    let ttl = Duration::from_millis(300);
    let (a, b) = (options("a", ttl), options("b", ttl));

    // "a" holds partition 0 and reads a batch under its lease.
    let old = leases
        .try_acquire(group, Partition(0), "a", ttl, None)
        .await
        .unwrap()
        .unwrap();
    let in_hand = log
        .read_fenced(
            &a.consumer,
            &partition_0(old),
            100,
            Duration::from_millis(50),
        )
        .await
        .unwrap();
    assert_eq!(in_hand.len(), 6);

    // Its lease runs out unrenewed; "b" takes the partition and its
    // processor works through everything, "a"'s batch included.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let new = leases
        .try_acquire(group, Partition(0), "b", Duration::from_secs(60), None)
        .await
        .unwrap()
        .expect("the revoked lease is free");
    assert!(new > old);
    let (shutdown, stop) = (CancellationToken::new(), CancellationToken::new());
    let (_owned_tx, owned_rx) = watch::channel(partition_0(new));
    let processor_b = tokio::spawn(
        Processor {
            log: log.clone(),
            store: store.clone(),
            options: b,
        }
        .run(owned_rx, shutdown.clone(), stop.clone()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.backlog(group).await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b did not drain the partition"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    processor_b.await.unwrap();
    for id in &appended {
        assert!(store.is_archived(*id).await.unwrap(), "b applied {id}");
    }

    // "a" wakes with its batch: the commit is refused, nothing to ack.
    let mut applier = Applier {
        log: &*log,
        store: &store,
        options: &a,
        recent: RecentlyCommitted::new(16),
        fenced: Default::default(),
    };
    let committed = applier
        .apply(&in_hand, &partition_0(old), &stop)
        .await
        .unwrap();
    assert!(committed.ids.is_empty() && committed.follow_ups.is_empty());
    assert_eq!(
        applier.fenced.get(&Partition(0)),
        Some(&old),
        "refused as fenced, not as duplicates"
    );
    assert_eq!(
        store.partition_epochs(group).await.unwrap()[&Partition(0)],
        new
    );
    // Nor can it read, take over or ack the partition any more.
    let appended_late = DomainEvent::StockReceived(StockReceived {
        location_id: None,
        product_id: ProductId::new(),
        quantity: 7,
        purchase_order_id: None,
    })
    .into_envelope(chrono::Utc::now());
    log.append(&appended_late).await.unwrap();
    assert!(log
        .read_fenced(
            &a.consumer,
            &partition_0(old),
            100,
            Duration::from_millis(50)
        )
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        log.take_over(&a.consumer, Partition(0), old).await,
        Err(LogError::LeaseLost { .. })
    ));
    let ids: Vec<_> = in_hand.iter().map(|d| (d.partition, d.id)).collect();
    assert_eq!(
        log.ack_fenced(&a.consumer, &ids, &partition_0(old))
            .await
            .unwrap(),
        vec![Partition(0)]
    );
    assert!(!store.is_archived(appended_late.event_id).await.unwrap());
}

/// A batch refused by the fence is applied again without the fenced
/// partition; an undecodable entry of another partition in it goes to the
/// dead letters once, not once per pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_retried_after_a_fence_dead_letters_once() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(&dir.path().join("log"), 2).unwrap());
    let store = Store::connect(&format!("sqlite://{}/read-model.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let group = PROCESSOR_GROUP;
    let stock_received = || {
        let event = DomainEvent::StockReceived(StockReceived {
            location_id: None,
            product_id: ProductId::new(),
            quantity: 1,
            purchase_order_id: None,
        });
        (event.clone().into_envelope(chrono::Utc::now()), event)
    };
    // Another worker committed for partition 0 under epoch 2.
    let (envelope, event) = stock_received();
    let theirs = crate::stream::Decoded {
        partition: Partition(0),
        id: crate::stream::EntryId { ms: 1, seq: 0 },
        envelope,
        event,
    };
    store
        .apply_batch(
            &[theirs],
            &|key: &str| log.partition_of(key),
            group,
            &partition_0(epoch(2)),
        )
        .await
        .unwrap();
    let (event, _) = stock_received();
    let batch = [
        crate::stream::Delivery {
            partition: Partition(0),
            id: crate::stream::EntryId { ms: 1, seq: 1 },
            envelope: Ok(event),
        },
        crate::stream::Delivery {
            partition: Partition(1),
            id: crate::stream::EntryId { ms: 1, seq: 2 },
            envelope: Err("not an envelope".into()),
        },
    ];
    let options = options("a", Duration::from_secs(5));
    let mut applier = Applier {
        log: &*log,
        store: &store,
        options: &options,
        recent: RecentlyCommitted::new(16),
        fenced: Default::default(),
    };
    let committed = applier
        .apply(
            &batch,
            &[(Partition(0), epoch(1)), (Partition(1), epoch(1))]
                .into_iter()
                .collect(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(applier.fenced.get(&Partition(0)), Some(&epoch(1)));
    assert_eq!(
        committed.ids,
        vec![(Partition(1), crate::stream::EntryId { ms: 1, seq: 2 })]
    );
    assert_eq!(log.dead_letter_count(group).await.unwrap(), 1);
}

/// A lease store that forgot its epochs (Valkey failed over to a replica
/// that missed the last increments; here a second embedded lease store,
/// whose counter starts again) would issue worker "b" the epoch worker "a"
/// works under. "a" claimed it in the database, so "b" takes the partition
/// under a later epoch (a claim raced past that floor is refused: see
/// tests/fencing.rs). The negative control: without the database's
/// claims, "b" gets "a"'s epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_the_lease_store_issues_twice_is_worked_under_once() {
    use super::ownership::Ownership;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/read-model.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let lease_store = |name: &str| -> Arc<dyn LeaseStore> {
        EmbeddedLog::open(&dir.path().join(name), 1)
            .unwrap()
            .leases()
    };
    let ownership = |member: &str, leases, recorded_epochs| Ownership {
        leases,
        group: PROCESSOR_GROUP.to_string(),
        member: member.to_string(),
        partitions: 1,
        ttl: Duration::from_secs(30),
        recorded_epochs,
    };
    let held_by_a = ownership("a", lease_store("before"), Some(store.clone()))
        .step(&Holdings::new())
        .await
        .unwrap();
    let epoch_of_a = held_by_a
        .epoch_of(Partition(0))
        .expect("a holds partition 0");

    let b = ownership("b", lease_store("after"), Some(store.clone()));
    let mut held_by_b = b.step(&Holdings::new()).await.unwrap();
    for _ in 0..3 {
        if held_by_b.holds(Partition(0)) {
            break;
        }
        held_by_b = b.step(&held_by_b).await.unwrap();
    }
    let epoch_of_b = held_by_b
        .epoch_of(Partition(0))
        .expect("b holds partition 0");
    assert!(
        epoch_of_b > epoch_of_a,
        "{epoch_of_b:?} after {epoch_of_a:?}"
    );

    // Negative control: the same failover without the database's claims.
    let unchecked = ownership("c", lease_store("unchecked"), None)
        .step(&Holdings::new())
        .await
        .unwrap();
    assert_eq!(
        unchecked.epoch_of(Partition(0)),
        Some(epoch_of_a),
        "the negative control did not show its anomaly: no epoch issued twice"
    );
}
