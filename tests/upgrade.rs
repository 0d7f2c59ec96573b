//! Upgrading a read model written by the previous release (migrations
//! 0001–0004) on both databases: migrations 0005, 0008 and 0018 run on
//! existing rows (0008 fills the running totals from the orders there,
//! 0018 marks a shipped order's lines shipped whole, 0019 puts every unit
//! and every order's allocation at the default location), the
//! old one-row-per-event outbox is still relayed, and a rebuild replays the
//! old archive (decisions archived when they came back from the log; a v1
//! `order.shipped` upcast to a shipment of every line).

use crate::common;

use chrono::Utc;
use streamstock::domain::events::{
    OrderConfirmed, OrderLine, OrderPlaced, OrderShipped, ProductCreated, StockReceived,
};
use streamstock::domain::status::OrderStatus;
use streamstock::domain::{DomainEvent, Envelope, LocationId, Money, OrderId, ProductId};
use streamstock::store::{Dialect, Store};

async fn read_model_of_the_previous_release_upgrades(store: Store) {
    let dialect = match store.dialect() {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    };
    // The schema the previous release left.
    let old = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < "0005" {
            std::fs::copy(&path, old.path().join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(store.pool())
        .await
        .unwrap();

    // Rows as that release wrote them: the order decided when placed, its
    // confirmation archived when it came back from the log, one follow-up
    // still in the per-event outbox.
    let product = ProductId::new();
    let order = OrderId::new();
    let shipped = OrderId::new();
    let price = Money::from_cents(250).unwrap();
    let events = [
        DomainEvent::ProductCreated(ProductCreated {
            product_id: product,
            sku: "OLD-1".into(),
            name: "old".into(),
            price,
            category_name: "c".into(),
            low_stock_threshold: 1,
            reorder_quantity: 5,
        }),
        DomainEvent::StockReceived(StockReceived {
            location_id: None,
            product_id: product,
            quantity: 10,
            purchase_order_id: None,
        }),
        DomainEvent::OrderPlaced(OrderPlaced {
            order_id: order,
            customer_email: "old@example.com".into(),
            items: vec![OrderLine {
                product_id: product,
                quantity: 3,
                unit_price: price,
            }],
            total: price.times(3),
            hold_until: None,
        }),
        DomainEvent::OrderConfirmed(OrderConfirmed {
            order_id: order,
            total: price.times(3),
            allocations: None,
            hold_until: None,
            backordered: Vec::new(),
        }),
        // A second order, shipped whole (order.shipped v1 had only the id).
        DomainEvent::OrderPlaced(OrderPlaced {
            order_id: shipped,
            customer_email: "old@example.com".into(),
            items: vec![OrderLine {
                product_id: product,
                quantity: 2,
                unit_price: price,
            }],
            total: price.times(2),
            hold_until: None,
        }),
        DomainEvent::OrderConfirmed(OrderConfirmed {
            order_id: shipped,
            total: price.times(2),
            allocations: None,
            hold_until: None,
            backordered: Vec::new(),
        }),
        DomainEvent::OrderShipped(OrderShipped {
            order_id: shipped,
            shipment_id: None,
            lines: None,
            complete: true,
        }),
    ];
    let at = Utc::now().timestamp_millis();
    let mut archived_in_order = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let mut envelope = event.clone().into_envelope(Utc::now());
        archived_in_order.push(envelope.event_id.to_string());
        envelope.version = 1; // that release wrote every type at version 1
        if let Some(fields) = envelope.payload.as_object_mut() {
            for later in ["purchase_order_id", "shipment_id", "lines", "complete"] {
                fields.remove(later);
            }
        }
        sqlx::query(
            "INSERT INTO event_archive (event_id, event_type, event_key, version, occurred_at, payload, partition_no, entry_id, processed_at) \
             VALUES ($1, $2, $3, 1, $4, $5, 0, $6, $7)",
        )
        .bind(envelope.event_id.to_string())
        .bind(envelope.event_type.as_str())
        .bind(&envelope.key)
        .bind(at + i as i64)
        .bind(envelope.payload.to_string())
        .bind(format!("1-{i}"))
        .bind(at)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let statements = [
        format!("INSERT INTO products VALUES ('{product}', 'OLD-1', 'old', 250, 'c', 1, 5, {at})"),
        format!("INSERT INTO inventory VALUES ('{product}', 8, 3, 10, 2, {at})"),
        format!("INSERT INTO orders VALUES ('{order}', 'old@example.com', 'CONFIRMED', 750, NULL, {}, {})", at + 2, at + 2),
        format!("INSERT INTO order_items VALUES ('{order}', 0, '{product}', 3, 250)"),
        format!("INSERT INTO orders VALUES ('{shipped}', 'old@example.com', 'SHIPPED', 500, NULL, {}, {})", at + 4, at + 4),
        format!("INSERT INTO order_items VALUES ('{shipped}', 0, '{product}', 2, 250)"),
    ];
    for sql in statements {
        sqlx::query(&sql).execute(store.pool()).await.unwrap();
    }
    let leftover: Envelope = DomainEvent::OrderConfirmed(OrderConfirmed {
        order_id: order,
        total: price.times(3),
        allocations: None,
        hold_until: None,
        backordered: Vec::new(),
    })
    .into_envelope(Utc::now());
    sqlx::query("INSERT INTO outbox (event_id, envelope, created_at) VALUES ($1, $2, $3)")
        .bind(leftover.event_id.to_string())
        .bind(serde_json::to_string(&leftover).unwrap())
        .bind(at)
        .execute(store.pool())
        .await
        .unwrap();

    // This release's migrations on top.
    store.migrate().await.unwrap();
    // The archive keeps its order and positions (SQLite's implicit rowid
    // became the explicit `seq`; PostgreSQL's numbers stay).
    let by_seq: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, event_id FROM event_archive ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        by_seq.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        archived_in_order
    );
    assert_eq!(by_seq.first().map(|r| r.0), Some(1));
    assert_eq!(
        store.feed_head().await.unwrap(),
        archived_in_order.len() as i64
    );
    // The running totals (migration 0008) start from the orders there.
    assert_eq!(
        common::invariants::invariant_violations(&store)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let figures = store.figures().await.unwrap();
    assert_eq!(figures.orders_by_status[&OrderStatus::Confirmed], 1);
    assert_eq!(figures.orders_by_status[&OrderStatus::Shipped], 1);
    // Revenue (migration 0018's sold value) counts confirmed and shipped.
    assert_eq!(figures.total_sales.cents(), 1250);
    let top = store.top_products(5).await.unwrap();
    assert_eq!(
        (top.len(), top[0].units, top[0].revenue.cents()),
        (1, 5, 1250)
    );
    // A shipped order's lines are shipped whole (migration 0018).
    let shipped_lines = |store: Store| async move {
        let order = store.get_order(shipped).await.unwrap().unwrap();
        let items = order.items.unwrap();
        (order.status, items[0].shipped, items[0].returned)
    };
    assert_eq!(
        shipped_lines(store.clone()).await,
        (OrderStatus::Shipped, 2, 0)
    );
    // Every unit is at the default location, every order's allocation
    // there (migration 0019).
    let where_it_is = |store: Store| async move {
        let stock: Vec<(LocationId, i64, i64)> = store
            .stock_by_location(product)
            .await
            .unwrap()
            .iter()
            .map(|s| (s.location_id, s.on_hand, s.reserved))
            .collect();
        let allocated = |id| {
            let store = store.clone();
            async move {
                store
                    .allocations_of(id)
                    .await
                    .unwrap()
                    .iter()
                    .map(|a| (a.location_id, a.quantity, a.shipped))
                    .collect::<Vec<_>>()
            }
        };
        (stock, allocated(order).await, allocated(shipped).await)
    };
    let at_default = (
        vec![(LocationId::DEFAULT, 8, 3)],
        vec![(LocationId::DEFAULT, 3, 0)],
        vec![(LocationId::DEFAULT, 2, 2)],
    );
    assert_eq!(where_it_is(store.clone()).await, at_default);
    let order_row = store.get_order(order).await.unwrap().unwrap();
    assert_eq!(order_row.status, OrderStatus::Confirmed);
    assert_eq!(
        order_row.updated_at,
        order_row.decided_at.unwrap(),
        "updated_at filled in from decided_at"
    );
    let (pending, rows) = store.pending_outbox(100).await.unwrap();
    assert_eq!(pending, vec![leftover]);
    assert_eq!(rows.legacy_events.len(), 1);
    store.remove_from_outbox(&rows).await.unwrap();
    assert!(store.pending_outbox(100).await.unwrap().1.is_empty());

    // The old archive replays into the same orders and stock.
    let replayed = store
        .rebuild(&Default::default(), &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(replayed, 7);
    let product_row = store.get_product(product).await.unwrap().unwrap();
    assert_eq!((product_row.on_hand, product_row.reserved), (8, 3));
    // The v1 order.shipped is upcast: every line shipped whole.
    assert_eq!(
        shipped_lines(store.clone()).await,
        (OrderStatus::Shipped, 2, 0)
    );
    assert_eq!(
        store.get_order(order).await.unwrap().unwrap().status,
        OrderStatus::Confirmed
    );
    assert_eq!(where_it_is(store.clone()).await, at_default);
    assert_eq!(
        common::invariants::invariant_violations(&store)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}

database_pairs!(read_model_of_the_previous_release_upgrades);
