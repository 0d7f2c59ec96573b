//! Fencing at the commit, on both databases: a batch's transaction records
//! the lease epoch it was read under and is refused, with nothing applied,
//! when a newer epoch has committed for its partition. (The epochs' own
//! rules are unit tests in src/stream/lease.rs and run on Valkey in
//! log_conformance.)

use crate::common;
use streamstock::domain::status::OrderStatus;

use chrono::Utc;
use common::held;
use streamstock::domain::events::StockReceived;
use streamstock::domain::{DomainEvent, ProductId};
use streamstock::store::{Store, StoreError};
use streamstock::stream::{partition_for, Decoded, EntryId, Epoch, Partition};

const GROUP: &str = "fencing-test";

fn receipt(partition: u32, seq: u64) -> Decoded {
    let event = DomainEvent::StockReceived(StockReceived {
        location_id: None,
        product_id: ProductId::new(),
        quantity: 1,
        purchase_order_id: None,
    });
    Decoded {
        partition: Partition(partition),
        id: EntryId { ms: 1, seq },
        envelope: event.clone().into_envelope(Utc::now()),
        event,
    }
}

async fn a_stale_epoch_cannot_commit(store: Store) {
    store.migrate().await.unwrap();
    let route = |key: &str| partition_for(key, 4);
    let apply = |batch: Vec<Decoded>, epochs: Vec<(u32, u64)>| {
        let store = store.clone();
        async move {
            store
                .apply_batch(&batch, &route, GROUP, &held(&epochs))
                .await
        }
    };
    let archived = |batch: &[Decoded]| {
        let store = store.clone();
        let ids: Vec<uuid::Uuid> = batch.iter().map(|d| d.envelope.event_id).collect();
        async move {
            let mut found = 0;
            for id in ids {
                found += usize::from(store.is_archived(id).await.unwrap());
            }
            found
        }
    };

    // The new holder (epoch 2) commits first.
    let new_owner = vec![receipt(0, 1)];
    apply(new_owner.clone(), vec![(0, 2)]).await.unwrap();
    // The old holder (epoch 1) wakes up with a batch in hand: refused.
    let zombie = vec![receipt(0, 2), receipt(1, 3)];
    match apply(zombie.clone(), vec![(0, 1), (1, 1)]).await {
        Err(StoreError::Fenced {
            partition,
            epoch,
            recorded,
        }) => assert_eq!((partition.0, epoch.get(), recorded.get()), (0, 1, 2)),
        other => panic!("a stale epoch committed: {other:?}"),
    }
    assert_eq!(
        archived(&zombie).await,
        0,
        "nothing of the refused batch applied"
    );
    assert_eq!(
        store
            .partition_epochs(GROUP)
            .await
            .unwrap()
            .get(&Partition(1)),
        None,
        "the refused transaction recorded nothing"
    );
    // The current epoch commits again, a newer one too, and other groups
    // and partitions keep epochs of their own.
    apply(vec![receipt(0, 4)], vec![(0, 2)]).await.unwrap();
    apply(vec![receipt(0, 5), receipt(1, 6)], vec![(0, 3), (1, 1)])
        .await
        .unwrap();
    let epochs = store.partition_epochs(GROUP).await.unwrap();
    let epoch_of = |p| epochs[&Partition(p)].get();
    assert_eq!((epoch_of(0), epoch_of(1)), (3, 1));
    assert!(store.partition_epochs("another").await.unwrap().is_empty());
    assert!(matches!(
        apply(vec![receipt(0, 7)], vec![(0, 2)]).await,
        Err(StoreError::Fenced { recorded, .. }) if Some(recorded) == Epoch::new(3)
    ));

    // The archive records the epoch each event was applied under, and the
    // fault tests' check G reads it: nothing here went past the fence.
    let late = receipt(0, 8);
    apply(vec![late.clone()], vec![(0, 3)]).await.unwrap();
    assert_eq!(common::history::stale_commits(&store).await, 0);
    // Its negative control: the last commit rewritten as a fence that let
    // a stale holder (epoch 2) through after epoch 3 would have left it.
    sqlx::query("UPDATE event_archive SET lease_epoch = 2 WHERE event_id = $1")
        .bind(late.envelope.event_id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(common::history::stale_commits(&store).await, 1);
}

/// Claims of lease epochs: each epoch of a partition is claimed once, by
/// one holder, and only above every earlier claim; new leases are issued
/// above the highest epoch committed or claimed.
async fn an_epoch_is_claimed_once(store: Store) {
    store.migrate().await.unwrap();
    let epoch = |n: u64| Epoch::new(n).unwrap();
    let p = Partition(3);
    assert!(store.claim_epoch(GROUP, p, epoch(4), "a").await.unwrap());
    // The same epoch again, by another holder or the same: refused.
    assert!(!store.claim_epoch(GROUP, p, epoch(4), "b").await.unwrap());
    assert!(!store.claim_epoch(GROUP, p, epoch(4), "a").await.unwrap());
    assert!(!store.claim_epoch(GROUP, p, epoch(2), "b").await.unwrap());
    assert!(store.claim_epoch(GROUP, p, epoch(5), "b").await.unwrap());
    // Other partitions and groups claim on their own.
    assert!(store
        .claim_epoch(GROUP, Partition(1), epoch(1), "a")
        .await
        .unwrap());
    assert!(store
        .claim_epoch("another", p, epoch(4), "a")
        .await
        .unwrap());
    // The floor is the higher of committed and claimed.
    let route = |key: &str| partition_for(key, 4);
    store
        .apply_batch(&[receipt(1, 1)], &route, GROUP, &held(&[(1, 7)]))
        .await
        .unwrap();
    let floors = store.epoch_floors(GROUP).await.unwrap();
    assert_eq!(floors[&p], epoch(5));
    assert_eq!(floors[&Partition(1)], epoch(7));
}

database_pairs!(a_stale_epoch_cannot_commit, an_epoch_is_claimed_once);

/// The workers holding partitions now.
fn owners(env: &[(String, String)]) -> std::collections::BTreeSet<String> {
    common::process::owners(&common::process::status_report(env))
}

/// The zombie-owner case end to end, on Valkey + PostgreSQL under load: a
/// worker is frozen with SIGSTOP past its lease, the other takes its
/// partitions over and commits, then the frozen one carries on (SIGCONT)
/// with the batches it had in hand. Three times. Its late commits are
/// refused (its log and its metric say so), its reads after the lease
/// moved on hand it nothing, the log drains, every accepted order is
/// decided once, the invariants hold, each key's events were applied in log
/// order, and `rebuild` is identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_cannot_commit() {
    use common::process::{free_port, Role, SharedDeployment, BIN};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_LEASE_TTL_MS", "1000");
    let env = &deployment.env;
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
    let zombie_listen = format!("127.0.0.1:{}", free_port());
    let zombie_log = tempfile::NamedTempFile::new().unwrap();
    let zombie = Role::start_with_log(
        "worker (to be paused)",
        &["worker", "--worker-listen", &zombie_listen],
        env,
        zombie_log.reopen().unwrap(),
    );
    let survivor = Role::start("worker", &["worker", "--worker-listen", "127.0.0.1:0"], env);
    let api = common::Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    api.wait_for("both workers holding partitions", || async {
        owners(env).len() == 2
    })
    .await;

    let load = Command::new(BIN)
        .args([
            "simulate",
            "--profile",
            "max",
            "--concurrency",
            "8",
            "--duration",
            "20s",
        ])
        .args(["--target", &format!("http://{listen}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics_of_zombie = || async {
        reqwest::get(format!("http://{zombie_listen}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let fenced = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("streamstock_fenced_batches_total "))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or(0)
    };
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        zombie.pause();
        api.wait_for(
            &format!("round {round}: the survivor holding every partition"),
            || async { owners(env).len() == 1 },
        )
        .await;
        // The survivor commits under its new epochs meanwhile.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        zombie.resume();
        api.wait_for(
            &format!("round {round}: the partitions shared again"),
            || async { owners(env).len() == 2 },
        )
        .await;
    }
    let load = load.wait_with_output().unwrap();
    assert!(load.status.success(), "the load generator failed");
    api.wait_for("the log drained", || async {
        let report = common::process::status_report(env);
        report["lag"] == 0 && report["pending"] == 0
    })
    .await;

    // The late commits were refused, and the worker said so.
    let refused = fenced(&metrics_of_zombie().await);
    let log = std::fs::read_to_string(zombie_log.path()).unwrap();
    assert!(
        refused > 0,
        "no commit was refused; the paused worker's log:\n{log}"
    );
    assert!(log.contains("lost this partition"), "{log}");
    let stalled_transactions = log.matches("idle-in-transaction timeout").count();
    eprintln!(
        "commits refused: {refused}; transactions the database ended as stalled: {stalled_transactions}"
    );

    let store = streamstock::store::Store::connect(&deployment.database)
        .await
        .unwrap();
    let orders = api.all_orders().await.expect("the orders");
    assert!(!orders.is_empty());
    assert!(
        orders.iter().all(|o| o.status != OrderStatus::Pending),
        "every order decided"
    );
    let violations = common::invariants::invariant_violations(&store)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(common::process::status_report(env)["dead_letters"], 0);
    // Each key's events from the log were applied in the log's order.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_key, entry_id FROM event_archive WHERE entry_id <> '' ORDER BY event_key, seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let entry = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    for pair in rows.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(
                entry(&pair[0].1) < entry(&pair[1].1),
                "key {}: entry {} applied after {}",
                pair[0].0,
                pair[1].1,
                pair[0].1
            );
        }
    }
    store.close().await;

    assert!(zombie.terminate().success());
    assert!(survivor.terminate().success());
    assert!(gateway.terminate().success());
    common::process::assert_rebuild_identical(&[], env);
    eprintln!("{refused} late commit(s) refused over three pauses");
}
