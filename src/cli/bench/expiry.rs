//! `streamstock bench --expiry-rate N`: how soon after its deadline a hold
//! expires. Held orders are placed at N per second for `--expiry-seconds`,
//! each held 2 s, with a worker running (its sweep at
//! `--hold-sweep-interval`); once every hold has expired, the lag of each
//! (from its deadline to the worker's `order.expired`, in event time) is
//! read from the read model: p50, p99 and max.

use super::{append_all, LiveRun};
use crate::cli::config::{BenchArgs, CommonArgs};
use crate::domain::events::{OrderLine, OrderPlaced};
use crate::domain::status::OrderStatus;
use crate::domain::{DomainEvent, OrderId};
use chrono::Utc;
use rand::prelude::*;
use std::time::{Duration, Instant};

/// How long each hold lasts.
const HOLD: Duration = Duration::from_secs(2);
/// Holds are placed in ticks of this length (the rate's share each).
const TICK: Duration = Duration::from_millis(10);

pub(super) async fn run(settings: &CommonArgs, args: &BenchArgs, rate: u64) -> anyhow::Result<()> {
    // Stock for `--orders` orders: every hold is confirmed.
    let mut run = LiveRun::start(settings, args).await?;
    let (store, backend, products) = (run.store.clone(), run.backend.clone(), run.products.clone());
    let rng = &mut run.rng;

    let total = rate * args.expiry_seconds;
    eprintln!(
        "bench: placing {total} holds at {rate}/s, each held {} s (sweep every {:?})",
        HOLD.as_secs(),
        args.processing.hold_sweep_interval
    );
    let started = Instant::now();
    let mut placed = 0;
    let mut tick = tokio::time::interval(TICK);
    while placed < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        let now = Utc::now();
        let holds = (placed..due).map(|i| {
            let (product_id, unit_price) = products[rng.random_range(0..products.len())];
            DomainEvent::OrderPlaced(OrderPlaced {
                order_id: OrderId::new(),
                customer_email: format!("hold{}@example.com", i % 1000),
                items: vec![OrderLine {
                    product_id,
                    quantity: 1,
                    unit_price,
                }],
                total: unit_price,
                hold_until: Some(now + chrono::Duration::from_std(HOLD).expect("2 s")),
            })
            .into_envelope(now)
        });
        append_all(&backend, holds.collect()).await?;
        placed = due;
    }
    let placing = started.elapsed().as_secs_f64();
    eprintln!("bench: placed {total} holds in {placing:.1} s; waiting for them to expire");
    let deadline = Instant::now() + HOLD + Duration::from_secs(120);
    loop {
        let figures = store.figures().await?;
        let of = |s| figures.orders_by_status.get(&s).copied().unwrap_or(0);
        if of(OrderStatus::Expired) as u64 >= total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "holds not expired within 2 minutes of the last deadline: {} held, {} expired of {total}",
            of(OrderStatus::Held),
            of(OrderStatus::Expired)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.stop().await?;
    let mut lags: Vec<i64> = sqlx::query_scalar(
        "SELECT updated_at - hold_until FROM orders WHERE status = 'EXPIRED' ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await?;
    store.close().await;
    lags.sort_unstable();
    let at = |q: f64| lags[((lags.len() as f64 - 1.0) * q).round() as usize];
    println!();
    println!(
        "{:<44} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "measurement", "holds", "per sec", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "{:<44} {:>8} {:>9.0} {:>9} {:>9} {:>9}",
        "expiry lag (deadline to order.expired)",
        lags.len(),
        total as f64 / placing,
        at(0.5),
        at(0.99),
        lags.last().copied().unwrap_or(0)
    );
    Ok(())
}
