//! `streamstock bench --archive-events N`: how long a page of the audit
//! trail (`GET /api/events`, the store's `archived_events`) takes on an
//! archive of N events, at its start, middle and end, with and without a
//! type filter. The archive is filled with synthetic rows by one SQL
//! statement in a scratch database, so millions take seconds to make.

use crate::domain::events::EventType;
use crate::store::analytics::EventFilter;
use crate::store::{Dialect, Store};
use std::time::Instant;
use uuid::Uuid;

/// Rows per page, as the dashboard and a client would ask.
const PAGE: i64 = 100;
/// Timed runs of each query; the median is reported.
const RUNS: usize = 21;

/// The n-th synthetic event's id: a valid UUID that sorts with n.
fn event_id(n: u64) -> Uuid {
    format!("00000000-0000-7000-8000-{n:012}")
        .parse()
        .expect("a well-formed uuid")
}

/// Fills the (empty) archive with `count` events, alternately
/// `order.placed` and `order.confirmed`, with a realistic payload size.
async fn fill(store: &Store, count: u64) -> anyhow::Result<()> {
    let payload = r#"{"order_id":"0190e1a2-7b3c-7def-8123-456789abcdef","customer_email":"alice@example.com","items":[{"product_id":"0190e1a2-7b3c-7def-8123-000000000001","quantity":2,"unit_price":12.99},{"product_id":"0190e1a2-7b3c-7def-8123-000000000002","quantity":1,"unit_price":249.5}]}"#;
    let columns = "seq, event_id, event_type, event_key, version, occurred_at, payload, \
                   partition_no, entry_id, processed_at";
    let (placed, confirmed) = (EventType::OrderPlaced, EventType::OrderConfirmed);
    let sql = match store.dialect() {
        Dialect::Postgres => format!(
            "INSERT INTO event_archive ({columns}) SELECT i, \
             '00000000-0000-7000-8000-' || lpad(i::text, 12, '0'), \
             CASE WHEN i % 2 = 0 THEN '{placed}' ELSE '{confirmed}' END, \
             'key-' || (i % 100000), 1, 1700000000000 + i, $1, i % 8, i || '-0', 1700000000000 + i \
             FROM generate_series(1, $2) AS i"
        ),
        Dialect::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $2) \
             INSERT INTO event_archive ({columns}) SELECT i, \
             printf('00000000-0000-7000-8000-%012d', i), \
             CASE WHEN i % 2 = 0 THEN '{placed}' ELSE '{confirmed}' END, \
             'key-' || (i % 100000), 1, 1700000000000 + i, $1, i % 8, i || '-0', 1700000000000 + i \
             FROM s"
        ),
    };
    sqlx::query(&sql)
        .bind(payload)
        .bind(count as i64)
        .execute(store.pool())
        .await?;
    if store.dialect() == Dialect::Postgres {
        sqlx::query("ANALYZE event_archive")
            .execute(store.pool())
            .await?;
    }
    Ok(())
}

/// Median milliseconds of `archived_events(filter)`, and the rows a page had.
async fn time_page(store: &Store, filter: &EventFilter) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::with_capacity(RUNS);
    let mut rows = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        rows = store.archived_events(filter).await?.len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[RUNS / 2], rows))
}

pub async fn run(store: &Store, count: u64) -> anyhow::Result<()> {
    eprintln!("bench: filling an archive of {count} events");
    let started = Instant::now();
    fill(store, count).await?;
    eprintln!(
        "bench: filled in {:.1} s; timing pages of {PAGE}",
        started.elapsed().as_secs_f64()
    );
    let page = |event_type: Option<&str>, after: Option<u64>| EventFilter {
        key: None,
        event_type: event_type.map(str::to_string),
        after: after.map(event_id),
        limit: PAGE,
    };
    let cases = [
        ("no filter, first page", page(None, None)),
        (
            "no filter, after the middle event",
            page(None, Some(count / 2)),
        ),
        (
            "no filter, near the end",
            page(None, Some(count.saturating_sub(PAGE as u64 / 2))),
        ),
        (
            "type order.confirmed, first page",
            page(Some(EventType::OrderConfirmed.name()), None),
        ),
        (
            "type order.confirmed, after the middle event",
            page(Some(EventType::OrderConfirmed.name()), Some(count / 2)),
        ),
        (
            "key filter (one aggregate)",
            EventFilter {
                key: Some("key-4242".into()),
                ..page(None, None)
            },
        ),
    ];
    println!();
    println!("archive of {count} events on {}", store.describe());
    println!(
        "{:<48} {:>6} {:>12}",
        "page of GET /api/events", "rows", "median ms"
    );
    for (what, filter) in cases {
        let (ms, rows) = time_page(store, &filter).await?;
        println!("{what:<48} {rows:>6} {ms:>12.2}");
    }
    Ok(())
}
