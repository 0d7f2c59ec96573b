//! Fencing at the commit, on both databases: a batch's transaction records
//! the lease epoch it was read under and is refused, with nothing applied,
//! when a newer epoch has committed for its partition. (The epochs' own
//! rules are unit tests in src/stream/lease.rs and run on Valkey in
//! log_conformance.)

mod common;

use chrono::Utc;
use streamstock::domain::events::StockReceived;
use streamstock::domain::{DomainEvent, ProductId};
use streamstock::store::{Store, StoreError};
use streamstock::stream::{partition_for, Decoded, EntryId};

const GROUP: &str = "fencing-test";

fn receipt(partition: u32, seq: u64) -> Decoded {
    let event = DomainEvent::StockReceived(StockReceived {
        product_id: ProductId::new(),
        quantity: 1,
        purchase_order_id: None,
    });
    Decoded {
        partition,
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
        async move { store.apply_batch(&batch, &route, GROUP, &epochs).await }
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
        }) => assert_eq!((partition, epoch, recorded), (0, 1, 2)),
        other => panic!("a stale epoch committed: {other:?}"),
    }
    assert_eq!(
        archived(&zombie).await,
        0,
        "nothing of the refused batch applied"
    );
    assert_eq!(
        store.partition_epochs(GROUP).await.unwrap().get(&1),
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
    assert_eq!((epochs[&0], epochs[&1]), (3, 1));
    assert!(store.partition_epochs("another").await.unwrap().is_empty());
    assert!(matches!(
        apply(vec![receipt(0, 7)], vec![(0, 2)]).await,
        Err(StoreError::Fenced { recorded: 3, .. })
    ));
}

database_pairs!(a_stale_epoch_cannot_commit);
