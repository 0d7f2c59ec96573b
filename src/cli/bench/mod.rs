//! `streamstock bench`: how fast a worker drains a backlog of orders, with
//! the exactly-once machinery on, next to raw references measured on the
//! same servers in the same run (plain appends to the log, plain inserts
//! into the database), so the runtime's overhead shows as a ratio.
//!
//! It never touches existing data: it works in a fresh Valkey namespace, a
//! fresh PostgreSQL database (created from --database-url, dropped after)
//! or a fresh SQLite file and embedded log under the data dir (removed
//! after).

mod archive;
mod expiry;
mod feed_lag;
mod webhooks;

use super::backends::{open_log, open_store};
use super::config::{BenchArgs, BenchMix, CommonArgs};
use crate::domain::events::LocationCreated;
use crate::domain::events::{
    OrderCancelRequested, OrderLine, OrderPlaced, OrderReturnRequested, OrderShipRequested,
    OrderShipmentRequested, ProductCreated, ProductQuantity, ReturnLine, StockAdjustmentRequested,
    StockCounted, StockReceived,
};
use crate::domain::status::OrderStatus;
use crate::domain::status::{AdjustmentReason, ReturnDisposition};
use crate::domain::{AdjustmentId, LocationId, ReturnId, ShipmentId};
use crate::domain::{DomainEvent, Envelope, Money, OrderId, ProductId};
use crate::store::Store;
use crate::stream::LogBackend;
use crate::stream::PROCESSOR_GROUP;
use crate::worker;
use anyhow::Context;
use chrono::Utc;
use futures::StreamExt;
use rand::prelude::*;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Appends in flight at once, like many gateway requests.
const APPEND_CONCURRENCY: usize = 128;

struct Row {
    what: String,
    count: u64,
    seconds: f64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

pub async fn run(common: CommonArgs, args: BenchArgs) -> anyhow::Result<()> {
    let id = Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut settings = common.clone();
    settings.valkey_namespace = format!("bench-{id}");
    let scratch_dir = common.data_dir.join(format!("bench-{id}"));
    settings.data_dir = scratch_dir.clone();
    let admin_url = common
        .database_url
        .clone()
        .filter(|u| u.starts_with("postgres"));
    if let Some(admin) = &admin_url {
        settings.database_url = Some(
            Store::create_database(admin, &format!("streamstock_bench_{id}"))
                .await
                .context("creating the bench database")?,
        );
    } else {
        settings.database_url = None; // SQLite in the scratch dir
    }
    let result = match (args.archive_events, args.expiry_rate, args.feed_lag_rate) {
        (Some(count), _, _) => archive_paging(&settings, count).await.map(|()| Vec::new()),
        (None, Some(rate), _) => expiry::run(&settings, &args, rate)
            .await
            .map(|()| Vec::new()),
        (None, None, Some(rate)) => feed_lag::run(&settings, &args, rate)
            .await
            .map(|()| Vec::new()),
        (None, None, None) => measure(&settings, &args).await,
    };
    if let Some(admin) = &admin_url {
        Store::drop_database(admin, &format!("streamstock_bench_{id}")).await;
    }
    let _ = std::fs::remove_dir_all(&scratch_dir);
    let rows = result?;
    if rows.is_empty() {
        return Ok(());
    }

    println!();
    println!(
        "{:<58} {:>10} {:>9} {:>12}",
        "measurement", "count", "seconds", "per second"
    );
    for row in &rows {
        println!(
            "{:<58} {:>10} {:>9.2} {:>12.0}",
            row.what,
            row.count,
            row.seconds,
            row.rate()
        );
    }
    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.what.starts_with(prefix))
            .map(Row::rate)
    };
    if let (Some(drain), Some(raw_db)) =
        (find("worker drain: orders"), find("raw database inserts"))
    {
        println!(
            "\norders drained per raw database insert rate: {:.3}",
            drain / raw_db
        );
    }
    if let (Some(append), Some(raw_log)) = (find("durable appends"), find("raw log appends")) {
        println!(
            "durable appends per raw log append rate:     {:.3}",
            append / raw_log
        );
    }
    Ok(())
}

async fn archive_paging(settings: &CommonArgs, count: u64) -> anyhow::Result<()> {
    let store = open_store(settings, None, None).await?;
    let result = archive::run(&store, count).await;
    store.close().await;
    result
}

async fn measure(settings: &CommonArgs, args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    // The worker measured here runs as a role's does.
    let store = open_store(settings, None, Some(args.processing.lease_ttl())).await?;
    let backend = open_log(settings, None, None).await?;
    eprintln!("bench: {} and {}", backend.log.describe(), store.describe());
    let mut rows = Vec::new();

    let mut rng = StdRng::seed_from_u64(7);
    let products = seed_catalog(&backend, args, &mut rng).await?;
    let hold_until = args.holds.then(|| Utc::now() + chrono::Duration::hours(1));
    let orders = order_backlog(args.orders, &products, hold_until, &mut rng);
    let commands = match args.mix {
        BenchMix::Orders => Vec::new(),
        BenchMix::Operations => operations_backlog(&orders, &products),
    };
    let payload_bytes = serde_json::to_vec(&orders[0])
        .map(|v| v.len())
        .unwrap_or(300);
    // Subscribed ahead of the orders, so the workers take the
    // subscriptions up first and the deliveries run beside the drain.
    let receivers = match args.webhooks {
        0 => None,
        n => {
            eprintln!("bench: {n} webhook receivers subscribed from the beginning");
            Some(webhooks::subscribe(&backend, &store, n).await?)
        }
    };
    eprintln!("bench: appending {} orders", args.orders);
    let started = Instant::now();
    append_all(&backend, orders).await?;
    rows.push(Row {
        what: format!(
            "durable appends of order.placed ({} in flight)",
            APPEND_CONCURRENCY
        ),
        count: args.orders,
        seconds: started.elapsed().as_secs_f64(),
    });

    // The commands after the orders they act on (the log keeps each
    // order's events in order: they share its partition).
    let command_count = commands.len() as u64;
    if !commands.is_empty() {
        eprintln!("bench: appending {command_count} commands");
        append_all(&backend, commands).await?;
    }

    // The drain: the workers sharing the partitions, until nothing is left.
    eprintln!("bench: draining with {} worker(s)", args.workers);
    let shutdown = CancellationToken::new();
    let worker_tasks: Vec<_> = (0..args.workers)
        .map(|_| {
            tokio::spawn(worker::run(
                backend.clone(),
                store
                    .clone()
                    .allocating_by(args.processing.allocation_strategy),
                webhooks::allowing_loopback(
                    args.processing.worker_options(settings.retention.windows()),
                ),
                shutdown.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    wait_for_drain(&backend, &store, args.orders).await?;
    let drain = started.elapsed().as_secs_f64();
    if let Some(receivers) = &receivers {
        let during_drain = receivers
            .received
            .load(std::sync::atomic::Ordering::Relaxed);
        webhooks::delivered(&store, receivers).await?;
        let head = store.feed_head().await? as u64;
        let all = head * receivers.subscriptions.len() as u64;
        let seconds = started.elapsed().as_secs_f64();
        rows.push(Row {
            what: format!(
                "webhooks: events delivered, {} receivers together",
                receivers.subscriptions.len()
            ),
            count: all,
            seconds,
        });
        // Beside the drain they share the cores with it; alone, after it,
        // they show their own rate.
        rows.push(Row {
            what: "webhooks: of those, delivered after the drain".into(),
            count: all.saturating_sub(during_drain),
            seconds: seconds - drain,
        });
        eprintln!(
            "bench: the receivers got {} requests",
            receivers
                .received
                .load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    shutdown.cancel();
    for task in worker_tasks {
        task.await.context("worker panicked")?;
    }
    let workers = match args.workers {
        1 => String::new(),
        n => format!(", {n} workers"),
    };
    rows.push(Row {
        what: if args.holds {
            format!("worker drain: orders decided (each held{workers})")
        } else if args.workers > 1 {
            format!("worker drain: orders decided ({} workers)", args.workers)
        } else {
            "worker drain: orders decided".into()
        },
        count: args.orders,
        seconds: drain,
    });
    if command_count > 0 {
        rows.push(Row {
            what:
                "worker drain: commands decided (shipments, returns, cancels, adjustments, counts)"
                    .into(),
            count: command_count,
            seconds: drain,
        });
    }
    let archived = store.archive_len().await?;
    rows.push(Row {
        what: "worker drain: events applied (catalog, orders, commands, decisions)".into(),
        count: archived,
        seconds: drain,
    });

    // Raw references on the same servers.
    rows.push(raw_log_appends(&backend, args.orders, payload_bytes).await?);
    rows.push(raw_database_inserts(&store, args.orders, args.processing.batch_size as u64).await?);
    store.close().await;
    Ok(rows)
}

/// A timed run with a worker live (`--expiry-rate`, `--feed-lag-rate`):
/// the backends, the catalog, and one worker that has applied it.
pub(super) struct LiveRun {
    pub store: Store,
    pub backend: LogBackend,
    pub products: Vec<(ProductId, Money)>,
    /// Seeded: the same run each time.
    pub rng: StdRng,
    pub shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
}

impl LiveRun {
    pub async fn start(settings: &CommonArgs, args: &BenchArgs) -> anyhow::Result<LiveRun> {
        let store = open_store(settings, None, Some(args.processing.lease_ttl())).await?;
        let backend = open_log(settings, None, None).await?;
        eprintln!("bench: {} and {}", backend.log.describe(), store.describe());
        let mut rng = StdRng::seed_from_u64(7);
        let products = seed_catalog(&backend, args, &mut rng).await?;
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(worker::run(
            backend.clone(),
            store.clone(),
            args.processing.worker_options(settings.retention.windows()),
            shutdown.clone(),
        ));
        // The catalog applied first.
        wait_for_drain(&backend, &store, 0).await?;
        Ok(LiveRun {
            store,
            backend,
            products,
            rng,
            shutdown,
            worker,
        })
    }

    /// Stops the worker (and whatever else waits on `shutdown`).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.worker.await.context("worker panicked")?;
        Ok(())
    }
}

/// The catalog: `--products` products, each with stock enough for most
/// orders; with `--locations` N, N − 1 locations before the default one
/// by priority, each holding a sixth of what the orders want of each
/// product over N (they run dry, and lines are split), the default one the
/// rest. (The default location is known from the start; the others once a
/// worker applies their creation, in other partitions than the orders.)
pub(super) async fn seed_catalog(
    backend: &LogBackend,
    args: &BenchArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<(ProductId, Money)>> {
    let count = args.products;
    let mut locations = Vec::new();
    let mut seed = Vec::new();
    for i in 1..args.locations {
        let id = LocationId::new();
        locations.push(id);
        seed.push(
            DomainEvent::LocationCreated(LocationCreated {
                location_id: id,
                code: format!("bench-{i}"),
                name: format!("Bench location {i}"),
                priority: i as i64 - args.locations as i64,
                active: true,
            })
            .into_envelope(Utc::now()),
        );
    }
    locations.push(LocationId::DEFAULT);
    // An order has 2 lines of 2 units on average.
    let wanted = (args.orders * 4 / count.max(1)) as i64;
    let scarce = (wanted / (6 * args.locations as i64)).max(1);
    let products: Vec<(ProductId, Money)> = (0..count)
        .map(|_| {
            (
                ProductId::new(),
                Money::from_cents(rng.random_range(100..100_000)).expect("in range"),
            )
        })
        .collect();
    for (i, (id, price)) in products.iter().enumerate() {
        seed.push(
            DomainEvent::ProductCreated(ProductCreated {
                product_id: *id,
                sku: format!("BENCH-{i}"),
                name: format!("Bench product {i}"),
                price: *price,
                category_name: "Bench".into(),
                low_stock_threshold: 10,
                reorder_quantity: 100,
            })
            .into_envelope(Utc::now()),
        );
        for (n, location) in locations.iter().enumerate() {
            let last = n + 1 == locations.len();
            seed.push(
                DomainEvent::StockReceived(StockReceived {
                    location_id: (*location != LocationId::DEFAULT).then_some(*location),
                    product_id: *id,
                    quantity: if last { 1_000_000 } else { scarce },
                    purchase_order_id: None,
                })
                .into_envelope(Utc::now()),
            );
        }
    }
    append_all(backend, seed).await?;
    Ok(products)
}

/// The backlog: `count` orders of 1–3 lines over `products`.
fn order_backlog(
    count: u64,
    products: &[(ProductId, Money)],
    hold_until: Option<chrono::DateTime<Utc>>,
    rng: &mut StdRng,
) -> Vec<Envelope> {
    (0..count)
        .map(|i| {
            let lines: Vec<OrderLine> = (0..rng.random_range(1..=3))
                .map(|_| {
                    let (product_id, unit_price) = products[rng.random_range(0..products.len())];
                    OrderLine {
                        product_id,
                        quantity: rng.random_range(1..=3),
                        unit_price,
                    }
                })
                .collect();
            let total = lines
                .iter()
                .fold(Money::ZERO, |t, l| t.plus(l.unit_price.times(l.quantity)));
            DomainEvent::OrderPlaced(OrderPlaced {
                order_id: OrderId::new(),
                customer_email: format!("bench{}@example.com", i % 1000),
                items: lines,
                total,
                hold_until,
            })
            .into_envelope(Utc::now())
        })
        .collect()
}

/// The warehouse's and the stock keeper's commands on `orders` (see
/// `BenchMix::Operations`), in a fixed pattern so runs compare.
fn operations_backlog(orders: &[Envelope], products: &[(ProductId, Money)]) -> Vec<Envelope> {
    let mut commands = Vec::new();
    for (i, envelope) in orders.iter().enumerate() {
        let Ok(DomainEvent::OrderPlaced(order)) = DomainEvent::from_envelope(envelope) else {
            continue;
        };
        let order_id = order.order_id;
        let first = &order.items[0];
        let one_of_first = vec![ProductQuantity {
            product_id: first.product_id,
            quantity: 1,
            location_id: None,
        }];
        match i % 100 {
            0..20 => {
                commands.push(DomainEvent::OrderShipmentRequested(
                    OrderShipmentRequested {
                        order_id,
                        shipment_id: ShipmentId::new(),
                        lines: one_of_first,
                    },
                ));
                if i % 2 == 0 {
                    commands.push(DomainEvent::OrderReturnRequested(OrderReturnRequested {
                        order_id,
                        return_id: ReturnId::new(),
                        lines: vec![ReturnLine {
                            product_id: first.product_id,
                            quantity: 1,
                            disposition: ReturnDisposition::Restock,
                        }],
                        reason: "bench".into(),
                        location_id: None,
                    }));
                }
            }
            20..80 => commands.push(DomainEvent::OrderShipRequested(OrderShipRequested {
                order_id,
            })),
            80..85 => commands.push(DomainEvent::OrderCancelRequested(OrderCancelRequested {
                order_id,
            })),
            _ => {}
        }
        let (product_id, _) = products[i % products.len()];
        if i % 50 == 0 {
            commands.push(DomainEvent::StockAdjustmentRequested(
                StockAdjustmentRequested {
                    location_id: None,
                    adjustment_id: AdjustmentId::new(),
                    product_id,
                    delta: -1,
                    reason: AdjustmentReason::Damaged,
                    reference: None,
                    note: None,
                    expected_on_hand: None,
                },
            ));
        }
        if i % 100 == 50 {
            commands.push(DomainEvent::StockCounted(StockCounted {
                location_id: None,
                adjustment_id: AdjustmentId::new(),
                product_id,
                counted: 999_000,
                counted_at: Utc::now().timestamp_millis(),
                expected_on_hand: None,
                reference: None,
                note: None,
            }));
        }
    }
    commands
        .into_iter()
        .map(|command| command.into_envelope(Utc::now()))
        .collect()
}

/// Waits until the log is drained and all `orders` are decided, reporting
/// the backlog every 5 s; at most an hour.
pub(super) async fn wait_for_drain(
    backend: &LogBackend,
    store: &Store,
    orders: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The backlog is cheap to read; counting orders is not, so count
        // only when the log looks drained.
        let backlog = backend.log.backlog(PROCESSOR_GROUP).await?;
        if backlog == 0 && decided_orders(store).await? >= orders {
            return Ok(());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("bench: backlog {backlog} events");
            last_report = Instant::now();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the drain did not finish within an hour"
        );
    }
}

pub(super) async fn append_all(backend: &LogBackend, events: Vec<Envelope>) -> anyhow::Result<()> {
    let log = backend.log.clone();
    let mut appends = futures::stream::iter(events.into_iter().map(|e| {
        let log = log.clone();
        async move { log.append(&e).await }
    }))
    .buffer_unordered(APPEND_CONCURRENCY);
    while let Some(result) = appends.next().await {
        result?;
    }
    Ok(())
}

async fn decided_orders(store: &Store) -> anyhow::Result<u64> {
    let figures = store.figures().await?;
    Ok(figures.order_count.saturating_sub(
        figures
            .orders_by_status
            .get(&OrderStatus::Pending)
            .copied()
            .unwrap_or(0),
    ) as u64)
}

/// The log's own append path without envelopes or our code around it:
/// Valkey XADD of a same-sized payload (same durability wait), or the
/// embedded log's appends of a same-sized event.
async fn raw_log_appends(
    backend: &LogBackend,
    count: u64,
    payload_bytes: usize,
) -> anyhow::Result<Row> {
    let filler = "x".repeat(payload_bytes.saturating_sub(200));
    let events: Vec<Envelope> = (0..count)
        .map(|_| Envelope {
            event_id: Uuid::now_v7(),
            event_type: "bench.raw".into(),
            key: Uuid::now_v7().to_string(),
            occurred_at: Utc::now(),
            version: 1,
            payload: serde_json::json!({ "filler": filler }),
            actor: None,
        })
        .collect();
    let started = Instant::now();
    append_all(backend, events).await?;
    Ok(Row {
        what: format!("raw log appends, same size ({})", backend.log.describe()),
        count,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Plain single-row INSERTs of similar width, committed in transactions of
/// one batch each, on one connection: what the database does for us at best
/// per statement.
async fn raw_database_inserts(store: &Store, count: u64, batch: u64) -> anyhow::Result<Row> {
    let pool = store.pool();
    sqlx::query("CREATE TABLE bench_raw (id TEXT PRIMARY KEY, a BIGINT NOT NULL, b TEXT NOT NULL)")
        .execute(pool)
        .await?;
    let started = Instant::now();
    let mut done = 0;
    while done < count {
        let mut tx = pool.begin().await?;
        for i in done..(done + batch).min(count) {
            sqlx::query("INSERT INTO bench_raw (id, a, b) VALUES ($1, $2, $3)")
                .bind(Uuid::now_v7().to_string())
                .bind(i as i64)
                .bind("bench@example.com")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        done = (done + batch).min(count);
    }
    let seconds = started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_raw").execute(pool).await?;
    Ok(Row {
        what: format!("raw database inserts ({})", store.describe()),
        count,
        seconds,
    })
}
