//! The inventory domain end to end over the HTTP API, on each backend pair:
//! every order lifecycle path (ship, cancel with compensation, refusals of
//! commands in the wrong state, a cancel before the decision), the restock
//! cycle (low stock once per crossing, one open purchase order, receipt),
//! the audit trail, the analytics, and `streamstock rebuild` reproducing the
//! read model checksum for checksum.

use crate::common;

use common::process::{assert_rebuild_identical_for, run_cli, Role, SharedDeployment};
use common::{Api, Backend, TestApp};
use serde_json::json;
use streamstock::domain::status::{AlertKind, OrderStatus};
use streamstock::gateway::responses::{OrderPending, Queued};
use streamstock::store::analytics::ArchivedEvent;
use uuid::Uuid;

async fn product(api: &Api, sku: &str, stock: i64, threshold: i64, reorder: i64) -> Uuid {
    let created = api
        .add_product(&json!({ "sku": sku, "name": sku, "price": 10.0, "category_name": "tests",
                              "initial_stock": stock, "low_stock_threshold": threshold, "reorder_quantity": reorder }))
        .await
        .expect(201);
    let id = created.id.as_uuid();
    api.wait_for(&format!("{sku} stocked"), || async {
        let product = api.product(id).await.found();
        product.is_some_and(|p| p.on_hand == stock)
    })
    .await;
    id
}

async fn order(api: &Api, product: Uuid, quantity: i64) -> Uuid {
    let queued = api
        .order_of("life@example.com", &[(product, quantity)])
        .await
        .expect(202);
    queued.order_id.as_uuid()
}

async fn wait_status(api: &Api, order: Uuid, want: OrderStatus) {
    api.wait_for(&format!("order {order} {want:?}"), || async {
        api.status_waiting(order, 10).await == Some(want)
    })
    .await;
}

async fn stock(api: &Api, product: Uuid) -> (i64, i64) {
    let p = api.product(product).await.expect(200);
    (p.on_hand, p.reserved)
}

async fn events(api: &Api, query: &str) -> Vec<ArchivedEvent> {
    api.events(query).await.expect(200)
}

fn types(events: &[ArchivedEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.envelope.event_type.as_str())
        .collect()
}

async fn lifecycle_paths(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = product(&app, "LIFE-A", 20, 0, 0).await;

    // confirmed → shipped: on-hand and reserved both drop.
    let shipped = order(&app, a, 2).await;
    wait_status(&app, shipped, OrderStatus::Confirmed).await;
    assert_eq!(stock(&app, a).await, (20, 2));
    let queued = app.ship(shipped).await.expect(202);
    assert_eq!(queued.status, Queued::Queued);
    wait_status(&app, shipped, OrderStatus::Shipped).await;
    assert_eq!(stock(&app, a).await, (18, 0));
    let view = app.order(shipped).await.expect(200);
    assert!(view.updated_at >= view.decided_at.unwrap(), "{view:?}");

    // confirmed → cancelled: the reservation is released.
    let cancelled = order(&app, a, 3).await;
    wait_status(&app, cancelled, OrderStatus::Confirmed).await;
    assert_eq!(stock(&app, a).await, (18, 3));
    app.cancel(cancelled).await.expect(202);
    wait_status(&app, cancelled, OrderStatus::Cancelled).await;
    assert_eq!(stock(&app, a).await, (18, 0));

    // rejected: the reason names the product and the shortfall.
    let rejected = order(&app, a, 100).await;
    wait_status(&app, rejected, OrderStatus::Rejected).await;
    let view = app.order(rejected).await.expect(200);
    let reason = view.reason.unwrap();
    assert!(
        reason.contains("LIFE-A") && reason.contains("short by 82"),
        "{reason}"
    );

    // Commands in the wrong state: 409 with the reason, nothing changes.
    for (order, ship, why) in [
        (shipped, true, "already shipped"),
        (shipped, false, "already shipped"),
        (cancelled, true, "was cancelled"),
        (cancelled, false, "already cancelled"),
        (rejected, true, "was rejected"),
        (rejected, false, "was rejected"),
    ] {
        let reply = if ship {
            app.ship(order).await
        } else {
            app.cancel(order).await
        };
        let error = reply.error(409);
        assert_eq!(error.code, "conflict");
        assert!(
            error.message.contains(why),
            "{order} ship={ship}: {error:?}"
        );
    }
    // An id no order ever had: 404. A fresh v7 id may be an order still in
    // the log: accepted, then refused by the worker with a recorded reason.
    assert_eq!(app.ship(Uuid::new_v4()).await.status, 404);
    let ghost = Uuid::now_v7();
    app.cancel(ghost).await.expect(202);
    app.wait_for("the ghost's refusal", || async {
        types(&events(&app, &format!("key={ghost}")).await)
            == ["order.cancel_requested", "alert.raised"]
    })
    .await;
    let refusal = &events(&app, &format!("key={ghost}&type=alert.raised")).await[0];
    assert_eq!(refusal.envelope.payload["kind"], "command_refused");
    assert!(refusal.envelope.payload["message"]
        .as_str()
        .unwrap()
        .contains("no such order"));
    assert!(
        refusal.entry_id.is_none(),
        "a decision is archived before it is published"
    );

    // A race: cancel and ship at once. One wins; the other is refused,
    // either here (409) or by the worker (recorded), never both applied.
    let raced = order(&app, a, 4).await;
    wait_status(&app, raced, OrderStatus::Confirmed).await;
    let (c, s) = tokio::join!(app.cancel(raced), app.ship(raced));
    assert!(c.status == 202 || s.status == 202, "{c:?} {s:?}");
    app.wait_for("the race decided", || async {
        let status = app.status_waiting(raced, 10).await;
        status == Some(OrderStatus::Cancelled) || status == Some(OrderStatus::Shipped)
    })
    .await;
    if c.status == 202 && s.status == 202 {
        app.wait_for("the loser's refusal", || async {
            events(&app, &format!("key={raced}&type=alert.raised"))
                .await
                .len()
                == 1
        })
        .await;
    }
    let (on_hand, reserved) = stock(&app, a).await;
    assert_eq!(reserved, 0);
    assert_eq!(
        on_hand,
        if app.status_waiting(raced, 10).await == Some(OrderStatus::Shipped) {
            14
        } else {
            18
        }
    );

    // The audit trail of one order, in the order it was applied, paged.
    let trail = events(&app, &format!("key={shipped}")).await;
    assert_eq!(
        types(&trail),
        [
            "order.placed",
            "order.confirmed",
            "order.ship_requested",
            "order.shipped"
        ]
    );
    assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
    let first = events(&app, &format!("key={shipped}&limit=1")).await;
    let rest = events(
        &app,
        &format!("key={shipped}&after={}", first[0].envelope.event_id),
    )
    .await;
    assert_eq!(types(&first), ["order.placed"]);
    assert_eq!(
        types(&rest),
        ["order.confirmed", "order.ship_requested", "order.shipped"]
    );
    app.events(&format!("after={}", Uuid::now_v7()))
        .await
        .error(422);
    assert_eq!(app.events("limit=0").await.status, 422);

    // Analytics: windows over event time and top products.
    let stats = app.stats().await.expect(200);
    let per_minute = &stats.throughput.per_minute;
    assert_eq!(per_minute.len(), 60);
    let placed: i64 = per_minute.iter().map(|w| w.placed).sum();
    let shipped_n: i64 = per_minute.iter().map(|w| w.shipped).sum();
    assert_eq!(placed, 4);
    assert!(shipped_n >= 1);
    assert_eq!(stats.top_products[0].sku, "LIFE-A");
    assert_eq!(stats.figures.orders_in(OrderStatus::Rejected), 1);

    let store = app.store().await;
    assert_eq!(
        common::invariants::invariant_violations(&store)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    rebuild_reproduces(app).await;
}

/// Stops the app, rebuilds its read model with the real CLI and checks
/// every projection table's checksum is unchanged.
async fn rebuild_reproduces(app: TestApp) {
    let common = app.common.clone();
    // While the app runs, rebuild refuses (the worker would race it).
    let refused = run_cli(&common, &["rebuild"]);
    assert!(
        !refused.status.success(),
        "rebuild must refuse while the app runs"
    );
    let dir = app.stop().await;
    let store = streamstock::store::Store::connect(&common.database_url())
        .await
        .unwrap();
    let before = store.projection_checksums().await.unwrap();
    assert!(before.iter().find(|t| t.table == "inventory").unwrap().rows > 0);
    assert_rebuild_identical_for(&common);
    assert_eq!(store.projection_checksums().await.unwrap(), before);
    assert_eq!(
        common::invariants::invariant_violations(&store)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    drop(dir);
}

async fn restock_cycle(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = product(&app, "RESTOCK-A", 8, 5, 20).await;

    // 8 → 4 crosses below 5: stock.low once, a purchase order, an alert.
    let first = order(&app, p, 4).await;
    wait_status(&app, first, OrderStatus::Confirmed).await;
    // 4 → 3: still below, no second notice or purchase order.
    let second = order(&app, p, 1).await;
    wait_status(&app, second, OrderStatus::Confirmed).await;
    app.wait_for("one open purchase order", || async {
        app.purchase_orders("OPEN").await.expect(200).len() == 1
    })
    .await;
    let open = app.purchase_orders("open").await.expect(200);
    let po = open[0].clone();
    assert_eq!(po.product_id.as_uuid(), p);
    assert_eq!(po.quantity, 20);
    assert_eq!(po.sku.as_deref(), Some("RESTOCK-A"));
    assert_eq!(
        types(&events(&app, &format!("key={p}&type=stock.low")).await).len(),
        1
    );
    let alerts = app.alerts().await.expect(200);
    assert!(alerts
        .iter()
        .any(|a| a.kind == AlertKind::LowStock && a.subject == p.to_string()));

    // The supplier delivers: stock.received closes the purchase order.
    let po_id = po.id;
    app.receive_purchase_order(po_id).await.expect(202);
    app.wait_for("the delivery", || async { stock(&app, p).await == (28, 5) })
        .await;
    let received = app.purchase_orders("RECEIVED").await.expect(200);
    assert_eq!(received[0].id, po_id);
    assert!(received[0].received_at.is_some());
    let receipts = events(&app, &format!("key={p}&type=stock.received")).await;
    let receipt = &receipts.last().unwrap().envelope;
    assert_eq!(
        receipt.payload["purchase_order_id"],
        po_id.as_uuid().to_string()
    );
    assert_eq!(receipt.version, 3);
    // Received twice: 409; unknown: 404; bad status filter: 422.
    assert_eq!(app.receive_purchase_order(po_id).await.status, 409);
    assert_eq!(app.receive_purchase_order(Uuid::now_v7()).await.status, 404);
    assert_eq!(app.purchase_orders("LOST").await.status, 422);

    // Above the threshold again (23 available), a new crossing drafts a new
    // purchase order: once per crossing.
    let third = order(&app, p, 20).await;
    wait_status(&app, third, OrderStatus::Confirmed).await;
    app.wait_for("a second stock.low", || async {
        events(&app, &format!("key={p}&type=stock.low")).await.len() == 2
    })
    .await;
    app.wait_for("a new open purchase order", || async {
        let open = app.purchase_orders("OPEN").await.expect(200);
        open.len() == 1 && open[0].id != po_id
    })
    .await;
    let store = app.store().await;
    assert_eq!(
        common::invariants::invariant_violations(&store)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    rebuild_reproduces(app).await;
}

backend_pairs!(lifecycle_paths, restock_cycle);

/// The audit trail of an order cancelled before its decision: placed first,
/// cancelled last; the cancel request and the confirmation in between, in
/// whichever order the batches put them.
fn assert_cancel_trail(trail: &[ArchivedEvent]) {
    let mut types: Vec<&str> = types(trail);
    assert_eq!(types.first(), Some(&"order.placed"), "{types:?}");
    assert_eq!(types.last(), Some(&"order.cancelled"), "{types:?}");
    types.sort();
    assert_eq!(
        types,
        [
            "order.cancel_requested",
            "order.cancelled",
            "order.confirmed",
            "order.placed"
        ]
    );
}

/// A cancel that reaches the log before the order is decided: the product
/// is applied by a first worker, which then stops; the order and its cancel
/// wait in the log (the cancel is accepted: the id is fresh); a new worker
/// decides the order, then cancels it, releasing the reservation.
#[tokio::test]
async fn valkey_postgres_cancel_before_the_decision() {
    let deployment = SharedDeployment::new().await;
    let listen = format!("127.0.0.1:{}", common::process::free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], &deployment.env);
    let start_worker = || {
        let listen = format!("127.0.0.1:{}", common::process::free_port());
        Role::start("worker", &["worker", "--listen", &listen], &deployment.env)
    };
    let api = Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    let first_worker = start_worker();
    let p = product(&api, "EARLY-1", 5, 0, 0).await;
    assert!(first_worker.terminate().success());

    let o = order(&api, p, 2).await;
    api.cancel(o).await.expect(202);
    let pending: OrderPending = api.order(o).await.expect_as(202);
    assert_eq!(pending.status, Queued::Queued, "nothing decided yet");

    let worker = start_worker();
    wait_status(&api, o, OrderStatus::Cancelled).await;
    assert_eq!(stock(&api, p).await, (5, 0));
    assert_cancel_trail(&events(&api, &format!("key={o}")).await);
    assert!(worker.terminate().success());
    assert!(gateway.terminate().success());
}

/// Schema evolution: a `stock.received` written by an older producer
/// (version 1, without `purchase_order_id`) is upcast and applied, and
/// replays the same way in a rebuild; a version from the future is
/// dead-lettered with a reason naming both versions.
#[tokio::test]
async fn valkey_postgres_older_versions_are_upcast_newer_dead_lettered() {
    use streamstock::stream::EventLog;
    let app = TestApp::spawn(Backend::ValkeyPostgres).await;
    let p = product(&app, "UPCAST-1", 1, 0, 0).await;
    let log = app.valkey_log().await;
    let envelope = |version: u32, quantity: i64| streamstock::domain::Envelope {
        event_id: Uuid::now_v7(),
        event_type: "stock.received".into(),
        key: p.to_string(),
        occurred_at: chrono::Utc::now(),
        version,
        payload: json!({ "product_id": p, "quantity": quantity }),
        actor: None,
    };
    let old = envelope(1, 4);
    log.append(&old).await.unwrap();
    log.append(&envelope(4, 100)).await.unwrap();
    app.wait_for("the v1 receipt applied", || async {
        stock(&app, p).await == (5, 0)
    })
    .await;
    let archived = events(&app, &format!("key={p}&type=stock.received")).await;
    let v1 = archived
        .iter()
        .find(|e| e.envelope.event_id == old.event_id)
        .unwrap();
    assert_eq!(
        v1.envelope.version, 1,
        "the archive keeps the event as it was written"
    );
    app.wait_for("the v4 receipt dead-lettered", || async {
        let letters = app.dead_letters().await.expect(200);
        letters.iter().any(|l| {
            l.error.contains(
                "`stock.received` has version 4, newer than the 3 this worker understands",
            )
        })
    })
    .await;
    assert_eq!(
        stock(&app, p).await,
        (5, 0),
        "the v4 receipt changed nothing"
    );
    rebuild_reproduces(app).await;
}

/// Two worker processes under a mixed load: orders, ships and cancels of
/// confirmed orders, and deliveries of open purchase orders, all at once.
/// Decisions about one product come from orders in every partition, so both
/// workers decide low stock and purchase orders for the same products. Once
/// drained: the invariants hold, no order is left pending, no product has
/// two open purchase orders, and a rebuild reproduces the read model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_postgres_two_workers_mixed_lifecycle_load() {
    let deployment = SharedDeployment::new().await;
    let listen = format!("127.0.0.1:{}", common::process::free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], &deployment.env);
    let workers: Vec<Role> = (0..2)
        .map(|_| {
            let listen = format!("127.0.0.1:{}", common::process::free_port());
            Role::start("worker", &["worker", "--listen", &listen], &deployment.env)
        })
        .collect();
    let api = std::sync::Arc::new(Api::new(&format!("http://{listen}")));
    api.wait_healthy().await;
    let mut products = Vec::new();
    for (i, stock) in [40, 25, 60].into_iter().enumerate() {
        products.push(product(&api, &format!("MIX-{i}"), stock, 10, 30).await);
    }

    let stop = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let placed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Uuid>::new()));
    let customers = (0..4).map(|c| {
        let (api, products, placed) = (api.clone(), products.clone(), placed.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while std::time::Instant::now() < stop {
                i += 1;
                let line = (products[(c + i) % 3], 1 + (i % 3) as i64);
                let queued = api.order_of("mix@example.com", &[line]).await.expect(202);
                placed.lock().unwrap().push(queued.order_id.as_uuid());
            }
        })
    });
    // The warehouse and the supplier: ship most confirmed orders, cancel
    // every fourth, deliver open purchase orders.
    let operations = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut round = 0usize;
            while std::time::Instant::now() < stop {
                round += 1;
                let confirmed = api.orders("status=CONFIRMED&limit=20").await.expect(200);
                for (n, order) in confirmed.iter().enumerate() {
                    let id = order.order_id;
                    let reply = if (round + n).is_multiple_of(4) {
                        api.cancel(id).await
                    } else {
                        api.ship(id).await
                    };
                    assert!(
                        reply.status == 202 || reply.status == 409,
                        "{id}: {reply:?}"
                    );
                }
                let open = api.purchase_orders("OPEN").await.expect(200);
                for po in open {
                    let reply = api.receive_purchase_order(po.id).await;
                    assert!(
                        reply.status == 202 || reply.status == 409,
                        "{}: {reply:?}",
                        po.id
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    for customer in customers {
        customer.await.unwrap();
    }
    operations.await.unwrap();
    let placed = placed.lock().unwrap().len() as i64;
    assert!(placed > 30, "too few orders to mean anything: {placed}");
    api.wait_until_decided(placed).await;

    let stats = api.stats().await.expect(200);
    let by_status = &stats.figures.orders_by_status;
    assert!(by_status[&OrderStatus::Shipped] > 0, "{by_status:?}");
    assert!(by_status[&OrderStatus::Cancelled] > 0, "{by_status:?}");
    let open = api.purchase_orders("OPEN").await.expect(200);
    let mut open_products: Vec<_> = open.iter().map(|po| po.product_id).collect();
    let before = open_products.len();
    open_products.dedup();
    open_products.sort();
    open_products.dedup();
    assert_eq!(
        open_products.len(),
        before,
        "two open purchase orders for one product: {open:?}"
    );
    let all_pos = api.purchase_orders("").await.expect(200);
    assert!(!all_pos.is_empty(), "the load drafted no purchase order");
    let store = streamstock::store::Store::connect(&deployment.database)
        .await
        .unwrap();
    assert_eq!(
        common::invariants::invariant_violations(&store)
            .await
            .unwrap(),
        Vec::<String>::new()
    );

    for worker in workers {
        assert!(worker.terminate().success());
    }
    assert!(gateway.terminate().success());
    common::process::assert_rebuild_identical(&[], &deployment.env);
}

/// The same on the embedded log: with the app stopped, an order and its
/// cancel are in the log before any worker has decided the order (written
/// as the gateway would have); at start the worker decides it, then
/// cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sqlite_cancel_before_the_decision() {
    use streamstock::domain::events::{OrderCancelRequested, OrderLine, OrderPlaced};
    use streamstock::domain::{DomainEvent, Money};
    use streamstock::stream::EventLog;
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let app = TestApp::spawn_with(common.clone()).await;
    let p = product(&app, "EARLY-2", 5, 0, 0).await;
    app.stop().await;

    let order_id = streamstock::domain::OrderId::new();
    {
        let log = streamstock::stream::embedded::EmbeddedLog::open(
            &dir.path().join("log"),
            common.partitions,
        )
        .unwrap();
        let price = Money::from_cents(1000).unwrap();
        let placed = DomainEvent::OrderPlaced(OrderPlaced {
            order_id,
            customer_email: "early@example.com".into(),
            items: vec![OrderLine {
                product_id: p.into(),
                quantity: 2,
                unit_price: price,
            }],
            total: price.times(2),
            hold_until: None,
        });
        let cancel = DomainEvent::OrderCancelRequested(OrderCancelRequested { order_id });
        for event in [placed, cancel] {
            log.append(&event.into_envelope(chrono::Utc::now()))
                .await
                .unwrap();
        }
    }

    let app = TestApp::spawn_with(common.clone()).await;
    wait_status(&app, order_id.as_uuid(), OrderStatus::Cancelled).await;
    assert_eq!(stock(&app, p).await, (5, 0));
    assert_cancel_trail(&events(&app, &format!("key={order_id}")).await);
    let common_for_rebuild = app.common.clone();
    app.stop().await;
    assert_rebuild_identical_for(&common_for_rebuild);
}
