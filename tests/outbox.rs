//! The outbox on both databases: a committed batch's follow-ups (decisions)
//! are listed until published, come back in the order they were decided,
//! and a redelivered batch changes nothing.

use crate::common;

use chrono::Utc;
use streamstock::domain::events::{OrderLine, OrderPlaced, ProductCreated, StockReceived};
use streamstock::domain::{DomainEvent, Money, OrderId, ProductId};
use streamstock::store::Store;
use streamstock::stream::{partition_for, Decoded, EntryId};

fn decoded(event: DomainEvent, seq: u64) -> Decoded {
    let envelope = event.clone().into_envelope(Utc::now());
    Decoded {
        partition: streamstock::stream::Partition(0),
        id: EntryId { ms: 1, seq },
        envelope,
        event,
    }
}

async fn follow_ups_wait_in_the_outbox(store: Store) {
    store.migrate().await.unwrap();
    let product = ProductId::new();
    let price = Money::from_cents(500).unwrap();
    let order = |quantity| {
        DomainEvent::OrderPlaced(OrderPlaced {
            order_id: OrderId::new(),
            customer_email: "o@example.com".into(),
            items: vec![OrderLine {
                product_id: product,
                quantity,
                unit_price: price,
            }],
            total: price.times(quantity),
            hold_until: None,
        })
    };
    let batch = vec![
        decoded(
            DomainEvent::ProductCreated(ProductCreated {
                product_id: product,
                sku: "OUTBOX-1".into(),
                name: "outbox".into(),
                price,
                category_name: "c".into(),
                low_stock_threshold: 2,
                reorder_quantity: 10,
            }),
            1,
        ),
        decoded(
            DomainEvent::StockReceived(StockReceived {
                location_id: None,
                product_id: product,
                quantity: 3,
                purchase_order_id: None,
            }),
            2,
        ),
        decoded(order(2), 3),
        decoded(order(5), 4),
    ];
    let outcome = store
        .apply_batch(
            &batch,
            &|key| partition_for(key, 4),
            "outbox-test",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.applied, 4);
    let types: Vec<&str> = outcome
        .follow_ups
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "order.confirmed",
            "stock.low",
            "purchase_order.drafted",
            "alert.raised",
            "order.rejected",
            "alert.raised"
        ]
    );

    // Not published yet (as after a crash right after commit): the outbox
    // gives back exactly those follow-ups, in the order they were decided.
    let (pending, rows) = store.pending_outbox(100).await.unwrap();
    assert_eq!(pending, outcome.follow_ups);
    assert_eq!(rows.batches, outcome.outbox.batches);

    // Redelivered: nothing applied again, nothing new to publish.
    let again = store
        .apply_batch(
            &batch,
            &|key| partition_for(key, 4),
            "outbox-test",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 4));
    assert!(again.follow_ups.is_empty() && again.outbox.is_empty());

    store.remove_from_outbox(&rows).await.unwrap();
    let (pending, rows) = store.pending_outbox(100).await.unwrap();
    assert!(pending.is_empty() && rows.is_empty());
    assert_eq!(
        common::invariants::invariant_violations(&store)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}

database_pairs!(follow_ups_wait_in_the_outbox);
