//! `streamstock bench --feed-lag-rate N`: how soon an order reaches a
//! client following the feed. Orders are placed at N per second for
//! `--feed-lag-seconds` with a worker and a gateway running, while a client
//! long-polls `GET /api/feed?wait=` over HTTP on loopback (the gateway
//! answers when a worker's commit announcement wakes it). For each
//! `order.placed` it reads, it records how long since the order was placed
//! (the client's view: log, batch, commit, wake and HTTP) and since its
//! batch began (`archived_at`).

use super::{append_all, LiveRun};
use crate::cli::config::{BenchArgs, CommonArgs};
use crate::domain::events::{OrderLine, OrderPlaced};
use crate::domain::{DomainEvent, OrderId};
use crate::store::feed::FeedPage;
use anyhow::Context;
use chrono::Utc;
use rand::prelude::*;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(10);

pub(super) async fn run(settings: &CommonArgs, args: &BenchArgs, rate: u64) -> anyhow::Result<()> {
    let mut run = LiveRun::start(settings, args).await?;
    let (store, backend, products) = (run.store.clone(), run.backend.clone(), run.products.clone());
    let shutdown = run.shutdown.clone();
    let rng = &mut run.rng;

    // A gateway on loopback, as `serve` runs one.
    let gateway = crate::gateway::Gateway::new(
        store.clone(),
        backend.log.clone(),
        backend.leases.clone(),
        None,
        crate::gateway::Access::default(),
        crate::gateway::Limits {
            requests_in_flight: 1024,
            request_timeout: Duration::from_secs(35),
            in_flight_appends: 1024,
            dashboard_clients: 4,
            feed_streams: 4,
            idempotency_ttl: Duration::from_secs(3600),
            idempotency_max_keys: 10_000,
            catalog_cache_products: 10_000,
            max_locations: 100,
            max_backlog: 100_000,
        },
        shutdown.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, crate::gateway::router(gateway)).await;
    });

    // The client, from the head on.
    let total = rate * args.feed_lag_seconds;
    let reader = {
        let stop = shutdown.clone();
        let mut after = store.feed_head().await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()?;
        tokio::spawn(async move {
            let (mut since_placed, mut since_batch) = (Vec::new(), Vec::new());
            while (since_placed.len() as u64) < total && !stop.is_cancelled() {
                let url =
                    format!("{base}/api/feed?after={after}&types=order.placed&limit=1000&wait=5");
                let Ok(answer) = http.get(&url).send().await else {
                    continue;
                };
                let Ok(page) = answer.json::<FeedPage>().await else {
                    continue;
                };
                let now = Utc::now();
                for event in &page.events {
                    since_placed.push((now - event.envelope.occurred_at).num_milliseconds());
                    since_batch.push((now - event.archived_at).num_milliseconds());
                }
                after = page.next;
            }
            (since_placed, since_batch)
        })
    };

    eprintln!("bench: placing {total} orders at {rate}/s while a reader follows the feed");
    let started = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(TICK);
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        let now = Utc::now();
        let orders = (sent..due).map(|i| {
            let (product_id, unit_price) = products[rng.random_range(0..products.len())];
            DomainEvent::OrderPlaced(OrderPlaced {
                order_id: OrderId::new(),
                customer_email: format!("feed{}@example.com", i % 1000),
                items: vec![OrderLine {
                    product_id,
                    quantity: 1,
                    unit_price,
                }],
                total: unit_price,
                hold_until: None,
            })
            .into_envelope(now)
        });
        append_all(&backend, orders.collect()).await?;
        sent = due;
    }
    let placing = started.elapsed().as_secs_f64();
    let (mut since_placed, mut since_batch) =
        tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .context("the reader did not get every order within 2 minutes")?
            .context("the reader panicked")?;
    run.stop().await?;
    server.abort();
    store.close().await;
    since_placed.sort_unstable();
    since_batch.sort_unstable();
    let at = |v: &[i64], q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!();
    println!(
        "{:<48} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "measurement", "orders", "per sec", "p50 ms", "p99 ms", "max ms"
    );
    for (what, lags) in [
        ("feed lag: placed to a long-polling client", &since_placed),
        (
            "feed lag: batch start to a long-polling client",
            &since_batch,
        ),
    ] {
        println!(
            "{:<48} {:>8} {:>9.0} {:>9} {:>9} {:>9}",
            what,
            lags.len(),
            total as f64 / placing,
            at(lags, 0.5),
            at(lags, 0.99),
            lags.last().copied().unwrap_or(0)
        );
    }
    Ok(())
}
