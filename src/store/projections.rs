//! Applying consumed events to the read model with exactly-once effects.
//!
//! A batch is one transaction: the archive rows of its events, their
//! effects, the archive rows of the follow-up events (decisions) they
//! caused, and one outbox row listing those follow-ups. The archive is the read
//! model's inbox: its primary key is the event id, so an event whose archive
//! row exists has been applied. A follow-up is applied in the transaction
//! that decides it (a confirmation reserves stock at once, so no other order
//! can take it), and archived there; when the log delivers it later, the
//! archive says it is applied. The log is acked only after commit, so a crash
//! anywhere either leaves the transaction unapplied (the events are
//! redelivered and applied once) or applied (redelivery changes nothing).
//!
//! The batch is a unit of work: it loads the state its events touch (stock
//! rows locked, their orders and purchase orders) into the domain's
//! `Inventory` in a few statements, lets the domain handle the events in log
//! order, and writes back what changed with one multi-row statement per
//! table. Stock is written as deltas, so a row another worker changed in
//! between (only possible for rows this batch could not lock because they
//! did not exist yet) is added to, never overwritten.
//!
//! The archive's order (its `seq`) is the replay order of `rebuild`, and
//! it is the order the workers applied the events in: a batch looks its
//! events up in the archive first (those found are redeliveries), and
//! archives them only after the domain handled them, each followed by the
//! decisions it led to, with its stock rows locked (PostgreSQL) or the
//! database's write lock held (SQLite). Two batches that change the same
//! product are thus archived in the order they changed it.

use super::outbox::OutboxRows;
use super::sql::{bind_all, multi_insert, select_by_ids, Tx};
use super::writes::Writes;
use super::{now_millis, Dialect, Store, StoreError};
use crate::domain::events::Touched;
use crate::domain::events::HELD_BY_NAMED;
use crate::domain::inventory::{
    AllocationState, AllocationStrategy, Inventory, LineState, LocationState, LocationStock,
    OrderState, OrderStatus, ProductState, PurchaseOrderState, PurchaseOrderStatus, TransferLine,
    TransferState,
};
use crate::domain::{
    DomainEvent, Envelope, LocationId, Money, OrderId, ProductId, PurchaseOrderId, TransferId,
};
use crate::stream::{Decoded, Holdings, Partition};
use sqlx::Row;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

/// What one batch did, for logs and metrics.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub applied: usize,
    pub duplicates: usize,
    /// Follow-up events to publish (already listed in the outbox).
    pub follow_ups: Vec<Envelope>,
    /// The outbox rows to remove once `follow_ups` are published.
    pub outbox: OutboxRows,
}

/// An archive row to write: the envelope and where the log holds it.
struct ArchiveRow<'a> {
    envelope: &'a Envelope,
    partition: Partition,
    /// Empty for a follow-up: it is archived before it is published.
    entry_id: String,
    /// The lease epoch it was applied under: None for a follow-up, and
    /// without fencing.
    lease_epoch: Option<i64>,
}

impl Store {
    /// Applies a batch of decoded events to the read model in one transaction.
    /// One consumer group (the processor) maintains the read model, so the
    /// archive alone tells what was applied. An event the domain refuses
    /// fails the whole batch (nothing is written); the worker then retries
    /// the events one by one. `partition_of` tells which partition the log
    /// will put a follow-up in (by its key), for its archive row.
    /// `epochs`: each partition of the batch with the lease epoch it was
    /// read under. The transaction first records them, and aborts with
    /// `StoreError::Fenced` if a newer one is recorded for a partition: the
    /// row's lock orders this against the new owner's commits, so a batch
    /// of a worker that lost its partition is either committed before the
    /// new owner's first batch (which then finds its events archived) or
    /// not at all. Empty: no fencing (tests, tools).
    #[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
    pub async fn apply_batch(
        &self,
        events: &[Decoded],
        partition_of: &(dyn Fn(&str) -> Partition + Sync),
        group: &str,
        epochs: &Holdings,
    ) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        let now = chrono::Utc::now();
        let now_ms = now.timestamp_millis();
        // An event may come twice in one batch (a republished follow-up).
        let mut seen = HashSet::new();
        let candidates: Vec<&Decoded> = events
            .iter()
            .filter(|d| seen.insert(d.envelope.event_id))
            .collect();
        if candidates.is_empty() {
            outcome.duplicates = events.len();
            return Ok(outcome);
        }

        let mut tx = self.pool().begin().await?;
        let dialect = self.dialect();
        if dialect == Dialect::Sqlite {
            take_write_lock(&mut tx).await?;
        }
        super::epochs::record_epochs(&mut tx, group, epochs).await?;
        let fresh = unarchived(&mut tx, dialect, candidates).await?;
        outcome.duplicates = events.len() - fresh.len();
        if fresh.is_empty() {
            tx.commit().await?;
            return Ok(outcome);
        }

        // The control's fault numbers the archive rows here, before the
        // batch waits for any row lock (see `faults`).
        let numbered_early = match dialect {
            Dialect::Postgres if crate::faults::archive_numbered_at_insert() => {
                Some(fault_numbers(&mut tx).await?)
            }
            _ => None,
        };
        let follow_ups_of =
            handle_and_write(&mut tx, dialect, &fresh, now, self.allocation).await?;
        outcome.applied = fresh.len();

        // The archive in the order the domain applied the events: each
        // consumed event, then the decisions it led to. Written after the
        // stock rows were locked, so `seq` also orders this batch after
        // every batch that changed the same products before it: replayed
        // in `seq` order, the archive meets each product's stock in the
        // order the workers did (the ledger's running figures depend on it).
        let mut rows = Vec::with_capacity(fresh.len() * 2);
        for (decoded, follow_ups) in fresh.iter().zip(&follow_ups_of) {
            rows.push(ArchiveRow {
                envelope: &decoded.envelope,
                partition: decoded.partition,
                entry_id: decoded.id.to_string(),
                lease_epoch: epochs.epoch_of(decoded.partition).map(|e| e.get() as i64),
            });
            rows.extend(follow_ups.iter().map(|(env, _)| ArchiveRow {
                envelope: env,
                partition: partition_of(&env.key),
                entry_id: String::new(),
                lease_epoch: None,
            }));
        }
        let archived = archive(&mut tx, dialect, &rows, now_ms, numbered_early).await?;
        // Found unarchived above, yet archived by someone else since: only
        // two workers applying the same partition at once (no fencing) can
        // race so. Nothing is kept; the retry finds it applied.
        if let Some(raced) = fresh
            .iter()
            .find(|d| !archived.contains(&d.envelope.event_id))
        {
            return Err(StoreError::Contended(format!(
                "event {} was archived by another worker during this batch",
                raced.envelope.event_id
            )));
        }
        let follow_ups: Vec<(Envelope, DomainEvent)> =
            follow_ups_of.into_iter().flatten().collect();
        // One outbox row for the whole batch: the follow-ups' envelopes are
        // already in the archive, so the outbox only says which of them are
        // not yet published (a row per event doubled every decision's write).
        if !follow_ups.is_empty() {
            let batch_id = Uuid::now_v7();
            let ids: Vec<String> = follow_ups
                .iter()
                .map(|(f, _)| f.event_id.to_string())
                .collect();
            sqlx::query(
                "INSERT INTO outbox_batches (id, event_ids, created_at) VALUES ($1, $2, $3)",
            )
            .bind(batch_id.to_string())
            .bind(serde_json::to_string(&ids).expect("strings serialize"))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            outcome.outbox.batches.push(batch_id);
        }
        tx.commit().await?;
        outcome.follow_ups = follow_ups.into_iter().map(|(env, _)| env).collect();
        Ok(outcome)
    }

    /// Counts one more failed attempt at `event_id` for `group`; returns the
    /// total so far (kept across restarts).
    pub async fn record_failed_attempt(
        &self,
        group: &str,
        event_id: &str,
        error: &str,
    ) -> Result<u32, StoreError> {
        let row = sqlx::query(
            "INSERT INTO event_attempts (group_name, event_id, attempts, last_error, updated_at) VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (group_name, event_id) DO UPDATE SET attempts = event_attempts.attempts + 1, \
             last_error = excluded.last_error, updated_at = excluded.updated_at RETURNING attempts",
        )
        .bind(group)
        .bind(event_id)
        .bind(error)
        .bind(now_millis())
        .fetch_one(self.pool())
        .await?;
        let attempts: i64 = row.try_get("attempts")?;
        Ok(attempts as u32)
    }

    /// Forgets the failed attempts of events (they were replayed).
    pub async fn clear_attempts(&self, group: &str, event_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM event_attempts WHERE group_name = $1 AND event_id = $2")
            .bind(group)
            .bind(event_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

/// On SQLite, makes the transaction a writer before it reads anything: a
/// statement that writes (even nothing) takes the database's write lock, so
/// what the batch reads stays true until it commits, and another worker's
/// batch waits for it instead of failing on a stale snapshot.
async fn take_write_lock(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    sqlx::query("UPDATE partition_epochs SET epoch = epoch WHERE 1 = 0")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The candidates the archive (the inbox) does not hold yet: the events to
/// apply. An archived one was applied before (a redelivery).
async fn unarchived<'d>(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    candidates: Vec<&'d Decoded>,
) -> Result<Vec<&'d Decoded>, StoreError> {
    let ids: Vec<Uuid> = candidates.iter().map(|d| d.envelope.event_id).collect();
    let archived: HashSet<Uuid> = select_by_ids(
        tx,
        dialect,
        "SELECT event_id FROM event_archive WHERE event_id IN ({ids})",
        &ids,
    )
    .await?
    .iter()
    .map(|row| super::uuid_col(row, "event_id"))
    .collect::<Result<_, _>>()?;
    Ok(candidates
        .into_iter()
        .filter(|d| !archived.contains(&d.envelope.event_id))
        .collect())
}

/// The unit of work: loads the state `fresh` touches, lets the domain
/// handle each event in log order (deciding follow-ups), and writes back
/// what changed. Returns each event's follow-ups with their envelopes.
async fn handle_and_write(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    fresh: &[&Decoded],
    now: chrono::DateTime<chrono::Utc>,
    strategy: AllocationStrategy,
) -> Result<Vec<Vec<(Envelope, DomainEvent)>>, StoreError> {
    let mut inventory = Inventory {
        strategy,
        checks_expiries: !crate::faults::expires_unchecked(),
        ..Inventory::default()
    };
    load_state(
        tx,
        dialect,
        fresh.iter().map(|d| &d.event),
        &mut inventory,
        true,
    )
    .await?;
    let baseline = inventory.clone();
    let mut follow_ups_of = Vec::with_capacity(fresh.len());
    for decoded in fresh {
        let decided = inventory
            .handle(&decoded.envelope, &decoded.event, now)
            .map_err(|refused| {
                StoreError::Rejected(format!(
                    "{} {}: {refused}",
                    decoded.envelope.event_type, decoded.envelope.event_id
                ))
            })?;
        follow_ups_of.push(decided);
    }

    check_stock_bounds(&baseline, &inventory)?;
    let mut writes = Writes::default();
    writes.events(
        fresh.iter().map(|d| (&d.envelope, &d.event)).chain(
            follow_ups_of
                .iter()
                .flatten()
                .map(|(env, event)| (env, event)),
        ),
    );
    writes.stock(&baseline.products, &inventory.products);
    writes.ledger(std::mem::take(&mut inventory.journal));
    writes.orders(&baseline.orders, &inventory.orders);
    writes.locations(&baseline.locations, &inventory.locations);
    writes.transfers(&baseline.transfers, &inventory.transfers);
    writes.purchase_orders(&baseline.purchase_orders, &inventory.purchase_orders);
    writes.flush(tx, dialect).await?;
    Ok(follow_ups_of)
}

/// The stock invariants of every product the batch changed, checked before
/// anything is written: a broken one fails the batch (nothing is written;
/// the worker then applies its events one by one, and the event that breaks
/// it ends in the dead letters), with an error line and a metric.
fn check_stock_bounds(before: &Inventory, after: &Inventory) -> Result<(), StoreError> {
    for (id, product) in &after.products {
        if before.products.get(id) == Some(product) {
            continue;
        }
        if let Err(broken) = product.stock_bounds() {
            crate::telemetry::metrics::invariant_broken("stock_bounds");
            tracing::error!(product = %id, %broken, "invariant broken: not writing the batch");
            return Err(StoreError::Inconsistent(format!(
                "product {id} after the batch: {broken}"
            )));
        }
    }
    Ok(())
}

/// A PostgreSQL advisory lock (transaction-scoped) a batch holds from
/// numbering its archive rows until it commits: no two batches number at
/// once, so a batch's numbers are above every committed one and `seq` order
/// is commit order. The feed relies on it (see `store::feed`).
const ARCHIVE_NUMBERING_LOCK: i64 = 0x5354_4d53_5345_5101; // "STMSSEQ" + 1

/// Archives the events not archived yet, in the order given (their `seq`);
/// returns the ids it archived.
///
/// `seq` must be in commit order, or a reader paging by it could pass a
/// number whose batch commits later. SQLite has one writer at a time, so
/// the rowid it gives (`seq` is the rowid) is. On PostgreSQL the batch takes
/// `ARCHIVE_NUMBERING_LOCK` and numbers its rows from the highest committed
/// `seq` + 1; the lock is held to the commit, which follows at once (only
/// the outbox row is written after this). A batch that rolls back takes no
/// numbers, so `seq` is dense.
async fn archive(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    events: &[ArchiveRow<'_>],
    now: i64,
    numbered_early: Option<i64>,
) -> Result<HashSet<Uuid>, StoreError> {
    let first_seq = match dialect {
        Dialect::Sqlite => None,
        Dialect::Postgres if numbered_early.is_some() => {
            assert!(
                events.len() < FAULT_RANGE,
                "a batch of {} archive rows",
                events.len()
            );
            numbered_early
        }
        Dialect::Postgres => {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ARCHIVE_NUMBERING_LOCK)
                .execute(&mut **tx)
                .await?;
            let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_archive")
                .fetch_one(&mut **tx)
                .await?;
            Some(last + 1)
        }
    };
    let rows = events
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let e = row.envelope;
            let mut values: Vec<super::sql::SqlValue> = vec![
                e.event_id.to_string().into(),
                e.event_type.as_str().into(),
                e.key.as_str().into(),
                i64::from(e.version).into(),
                e.occurred_at.timestamp_millis().into(),
                e.payload.to_string().into(),
                e.actor.clone().into(),
                i64::from(row.partition.0).into(),
                row.entry_id.as_str().into(),
                now.into(),
                row.lease_epoch.into(),
            ];
            if let Some(first) = first_seq {
                values.push((first + i as i64).into());
            }
            values
        })
        .collect();
    let mut columns = vec![
        "event_id",
        "event_type",
        "event_key",
        "version",
        "occurred_at",
        "payload",
        "actor",
        "partition_no",
        "entry_id",
        "processed_at",
        "lease_epoch",
    ];
    if first_seq.is_some() {
        columns.push("seq");
    }
    let mut fresh = HashSet::new();
    let suffix = "ON CONFLICT DO NOTHING RETURNING event_id";
    for (sql, values) in multi_insert(dialect, "event_archive", &columns, rows, suffix) {
        let query = bind_all(sqlx::query(&sql), values);
        for row in query.fetch_all(&mut **tx).await? {
            fresh.insert(super::uuid_col(&row, "event_id")?);
        }
    }
    Ok(fresh)
}

/// The numbers the control's fault takes per batch.
const FAULT_RANGE: usize = 10_000;

/// The first of a range of numbers (one `nextval` of a sequence that steps
/// by more than a batch holds) taken at the start of a batch without the
/// lock, then a pause: the control's fault (see `faults`). A batch that
/// numbered later can then take the row locks first and commit first.
async fn fault_numbers(tx: &mut Tx<'_>) -> Result<i64, StoreError> {
    sqlx::query("CREATE SEQUENCE IF NOT EXISTS archive_fault_seq START 1 INCREMENT 10000")
        .execute(&mut **tx)
        .await?;
    let first: i64 = sqlx::query_scalar("SELECT nextval('archive_fault_seq')")
        .fetch_one(&mut **tx)
        .await?;
    tokio::time::sleep(std::time::Duration::from_millis(
        rand::random::<u64>() % 150,
    ))
    .await;
    Ok(first)
}

/// Loads into `inventory` the state `events` touch: their orders (with
/// lines), their purchase orders and, if `with_stock`, their products' stock
/// (locked on PostgreSQL, in product-id order so concurrent workers cannot
/// deadlock) with each product's open purchase order.
pub(super) async fn load_state<'e>(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    events: impl Iterator<Item = &'e DomainEvent>,
    inventory: &mut Inventory,
    with_stock: bool,
) -> Result<(), StoreError> {
    let mut touched = Touched::default();
    for event in events {
        event.touches(&mut touched);
    }
    let Touched {
        orders: mut order_ids,
        products: mut product_ids,
        purchase_orders: purchase_order_ids,
        holders_of,
        moved_since,
        locations,
        transfers,
    } = touched;
    for (product_id, location_id) in holders_of {
        order_ids.extend(holders_of_product(tx, product_id, location_id).await?);
    }
    for (product_id, location_id, at) in moved_since {
        let moved = moved_on_hand_since(tx, product_id, location_id, at).await?;
        inventory
            .moved_since
            .insert((product_id, location_id, at), moved);
    }
    let order_ids: Vec<OrderId> = order_ids.into_iter().collect();
    for (id, order) in load_orders(tx, dialect, &order_ids).await? {
        product_ids.extend(order.lines.iter().map(|l| l.product_id));
        inventory.orders.insert(id, order);
    }
    let transfer_ids: Vec<TransferId> = transfers.into_iter().collect();
    for (id, transfer) in load_transfers(tx, dialect, &transfer_ids).await? {
        product_ids.extend(transfer.lines.iter().map(|l| l.product_id));
        inventory.transfers.insert(id, transfer);
    }
    if !with_stock {
        return Ok(());
    }
    if locations {
        inventory.locations = load_locations(tx).await?;
    }
    let purchase_order_ids: Vec<PurchaseOrderId> = purchase_order_ids.into_iter().collect();
    let rows = select_by_ids(
        tx,
        dialect,
        "SELECT id, product_id, quantity, status, drafted_at, received_at, location_id FROM purchase_orders WHERE id IN ({ids})",
        &purchase_order_ids,
    )
    .await?;
    for row in rows {
        let po = purchase_order_from_row(&row)?;
        product_ids.insert(po.product_id);
        inventory
            .purchase_orders
            .insert(super::uuid_col(&row, "id")?, po);
    }
    let ids: Vec<ProductId> = product_ids.into_iter().collect();
    load_stock(tx, dialect, &ids, inventory).await?;
    load_backorder_queues(tx, dialect, inventory, locations).await
}

/// Orders of a product's backorder queue a batch loads at most: the
/// fills of one batch reach no further (`Inventory::queue_horizon`), and
/// the queue is taken up again by the next.
const QUEUE_PAGE: i64 = 64;

/// For each product loaded that orders wait for (its stock row locked
/// above, so its queue cannot change meanwhile): the head of its queue,
/// every location (a fill allocates), and the backordered orders loaded
/// before the lock, read again. A backordered order is the one kind of
/// order a worker of another partition changes (a fill, under its
/// product's lock): read after the lock, and (PostgreSQL) with its row
/// locked in id order, it is current.
async fn load_backorder_queues(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    inventory: &mut Inventory,
    locations_loaded: bool,
) -> Result<(), StoreError> {
    let waiting: Vec<ProductId> = inventory
        .products
        .iter()
        .filter(|(_, p)| p.backordered > 0)
        .map(|(id, _)| *id)
        .collect();
    let stale: Vec<OrderId> = inventory
        .orders
        .iter()
        .filter(|(_, o)| o.status == OrderStatus::Backordered)
        .map(|(id, _)| *id)
        .collect();
    if waiting.is_empty() && stale.is_empty() {
        return Ok(());
    }
    inventory.waiting.extend(waiting.iter().copied());
    if !waiting.is_empty() && !locations_loaded {
        inventory.locations = load_locations(tx).await?;
    }
    let mut queued: Vec<OrderId> = stale;
    for product_id in &waiting {
        let rows = sqlx::query(
            "SELECT id, placed_at FROM orders WHERE status = $1 AND id IN \
             (SELECT order_id FROM order_items WHERE product_id = $2 AND backordered > 0) \
             ORDER BY placed_at, id LIMIT $3",
        )
        .bind(OrderStatus::Backordered.as_str())
        .bind(product_id.to_string())
        .bind(QUEUE_PAGE)
        .fetch_all(&mut **tx)
        .await?;
        let mut last = None;
        for row in &rows {
            let id: OrderId = super::uuid_col(row, "id")?;
            last = Some((row.try_get::<i64, _>("placed_at")?, id));
            queued.push(id);
        }
        if rows.len() as i64 == QUEUE_PAGE {
            inventory
                .queue_horizon
                .insert(*product_id, last.expect("a full page"));
        }
    }
    queued.sort();
    queued.dedup();
    if dialect == Dialect::Postgres {
        select_by_ids(
            tx,
            dialect,
            "SELECT id FROM orders WHERE id IN ({ids}) ORDER BY id FOR UPDATE",
            &queued,
        )
        .await?;
    }
    for (id, order) in load_orders(tx, dialect, &queued).await? {
        inventory.orders.insert(id, order);
    }
    Ok(())
}

/// The first open orders (by id) holding some of a product's stock at a
/// location:
/// one more than a refusal names, so it can say there are others.
async fn holders_of_product(
    tx: &mut Tx<'_>,
    product_id: ProductId,
    location_id: LocationId,
) -> Result<Vec<OrderId>, StoreError> {
    let [held, backordered, confirmed, partly_shipped] = OrderStatus::OPEN;
    let rows = sqlx::query(
        "SELECT DISTINCT o.id FROM order_allocations a JOIN orders o ON o.id = a.order_id \
         WHERE a.product_id = $1 AND a.location_id = $2 AND o.status IN ($3, $4, $5, $6) \
         AND a.shipped < a.quantity ORDER BY o.id LIMIT $7",
    )
    .bind(product_id.to_string())
    .bind(location_id.to_string())
    .bind(held.as_str())
    .bind(backordered.as_str())
    .bind(confirmed.as_str())
    .bind(partly_shipped.as_str())
    .bind(HELD_BY_NAMED as i64 + 1)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(|row| super::uuid_col(row, "id")).collect()
}

/// The on-hand a product's written ledger rows moved at a location after
/// `at` (event time): what a count made there at `at` did not see.
async fn moved_on_hand_since(
    tx: &mut Tx<'_>,
    product_id: ProductId,
    location_id: LocationId,
    at: i64,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(on_hand_delta), 0) AS BIGINT) AS moved FROM stock_ledger \
         WHERE product_id = $1 AND occurred_at > $2 AND location_id = $3",
    )
    .bind(product_id.to_string())
    .bind(at)
    .bind(location_id.to_string())
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("moved")?)
}

/// Loads the stock of `ids` (locked on PostgreSQL, in product-id order)
/// and each product's open purchase order.
async fn load_stock(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    ids: &[ProductId],
    inventory: &mut Inventory,
) -> Result<(), StoreError> {
    let lock = match dialect {
        Dialect::Postgres => " FOR UPDATE OF i",
        Dialect::Sqlite => "",
    };
    let sql = format!(
        "SELECT i.product_id, p.sku, p.low_stock_threshold, p.reorder_quantity, i.on_hand, i.reserved, \
         i.received_total, i.shipped_total, i.adjusted_total, i.restocked_total, i.movements, i.updated_at, \
         i.in_transit, i.backorder_limit, i.backordered FROM inventory i LEFT JOIN products p ON p.id = i.product_id \
         WHERE i.product_id IN ({{ids}}) ORDER BY i.product_id{lock}"
    );
    for row in select_by_ids(tx, dialect, &sql, ids).await? {
        let threshold: Option<i64> = row.try_get("low_stock_threshold")?;
        let reorder: Option<i64> = row.try_get("reorder_quantity")?;
        inventory.products.insert(
            super::uuid_col(&row, "product_id")?,
            ProductState {
                sku: row.try_get("sku")?,
                low_stock_threshold: threshold.unwrap_or(0),
                reorder_quantity: reorder.unwrap_or(0),
                on_hand: row.try_get("on_hand")?,
                reserved: row.try_get("reserved")?,
                received_total: row.try_get("received_total")?,
                shipped_total: row.try_get("shipped_total")?,
                adjusted_total: row.try_get("adjusted_total")?,
                restocked_total: row.try_get("restocked_total")?,
                movements: row.try_get("movements")?,
                open_purchase_order: None,
                in_transit: row.try_get("in_transit")?,
                backorder_limit: row.try_get("backorder_limit")?,
                backordered: row.try_get("backordered")?,
                locations: BTreeMap::new(),
                updated_at: row.try_get("updated_at")?,
            },
        );
    }
    // Each product's stock per location: its rows change only under the
    // lock of its inventory row, taken above.
    let per_location = select_by_ids(
        tx,
        dialect,
        "SELECT product_id, location_id, on_hand, reserved, in_transit FROM inventory_locations \
         WHERE product_id IN ({ids})",
        ids,
    )
    .await?;
    for row in per_location {
        let product_id: ProductId = super::uuid_col(&row, "product_id")?;
        if let Some(product) = inventory.products.get_mut(&product_id) {
            product.locations.insert(
                super::uuid_col(&row, "location_id")?,
                LocationStock {
                    on_hand: row.try_get("on_hand")?,
                    reserved: row.try_get("reserved")?,
                    in_transit: row.try_get("in_transit")?,
                },
            );
        }
    }
    // Open purchase orders in a statement of their own, after the stock
    // rows are locked: on PostgreSQL it reads what a worker that held those
    // locks before us committed (a join in the locking statement would
    // show the rows as they were when it started waiting).
    let open_of_products = format!(
        "SELECT id, product_id, quantity, status, drafted_at, received_at, location_id FROM purchase_orders \
         WHERE status = '{}' AND product_id IN ({{ids}})",
        PurchaseOrderStatus::Open.as_str()
    );
    let open = select_by_ids(tx, dialect, &open_of_products, ids).await?;
    for row in open {
        let po = purchase_order_from_row(&row)?;
        let po_id = super::uuid_col(&row, "id")?;
        if let Some(product) = inventory.products.get_mut(&po.product_id) {
            product.open_purchase_order = Some(po_id);
        }
        inventory.purchase_orders.entry(po_id).or_insert(po);
    }
    Ok(())
}

/// Orders among `ids` that exist, with their lines.
async fn load_orders(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    ids: &[OrderId],
) -> Result<BTreeMap<OrderId, OrderState>, StoreError> {
    let mut orders = BTreeMap::new();
    for row in select_by_ids(tx, dialect, "SELECT id, customer_email, status, total_cents, reason, cancel_requested, placed_at, decided_at, updated_at, \
         hold_until FROM orders WHERE id IN ({ids})", ids).await? {
        let cancel_requested: i64 = row.try_get("cancel_requested")?;
        orders.insert(
            super::uuid_col(&row, "id")?,
            OrderState {
                customer_email: row.try_get("customer_email")?,
                status: super::named_col(&row, "status")?,
                lines: Vec::new(),
                allocations: Vec::new(),
                total: Money::from_total_cents(row.try_get("total_cents")?),
                reason: row.try_get("reason")?,
                cancel_requested: cancel_requested != 0,
                hold_until: row.try_get("hold_until")?,
                placed_at: row.try_get("placed_at")?,
                decided_at: row.try_get("decided_at")?,
                updated_at: row.try_get("updated_at")?,
            },
        );
    }
    if orders.is_empty() {
        return Ok(orders);
    }
    let existing: Vec<OrderId> = orders.keys().copied().collect();
    let lines = select_by_ids(
        tx,
        dialect,
        "SELECT order_id, line_no, product_id, quantity, unit_price_cents, shipped, returned, backordered FROM order_items \
         WHERE order_id IN ({ids}) ORDER BY order_id, line_no",
        &existing,
    )
    .await?;
    for row in lines {
        let order_id = super::uuid_col(&row, "order_id")?;
        if let Some(order) = orders.get_mut(&order_id) {
            order.lines.push(LineState {
                product_id: super::uuid_col(&row, "product_id")?,
                quantity: row.try_get("quantity")?,
                unit_price: Money::from_total_cents(row.try_get("unit_price_cents")?),
                shipped: row.try_get("shipped")?,
                returned: row.try_get("returned")?,
                backordered: row.try_get("backordered")?,
            });
        }
    }
    let allocations = select_by_ids(
        tx,
        dialect,
        "SELECT order_id, product_id, location_id, quantity, shipped FROM order_allocations \
         WHERE order_id IN ({ids}) ORDER BY order_id, seq",
        &existing,
    )
    .await?;
    for row in allocations {
        let order_id = super::uuid_col(&row, "order_id")?;
        if let Some(order) = orders.get_mut(&order_id) {
            order.allocations.push(AllocationState {
                product_id: super::uuid_col(&row, "product_id")?,
                location_id: super::uuid_col(&row, "location_id")?,
                quantity: row.try_get("quantity")?,
                shipped: row.try_get("shipped")?,
            });
        }
    }
    Ok(orders)
}

/// Transfers among `ids` that exist, with their lines.
async fn load_transfers(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    ids: &[TransferId],
) -> Result<BTreeMap<TransferId, TransferState>, StoreError> {
    let mut transfers = BTreeMap::new();
    if ids.is_empty() {
        return Ok(transfers);
    }
    let rows = select_by_ids(
        tx,
        dialect,
        "SELECT id, from_location, to_location, status, message, discrepancy_reason, \
         requested_at, shipped_at, received_at FROM transfers WHERE id IN ({ids})",
        ids,
    )
    .await?;
    for row in rows {
        transfers.insert(
            super::uuid_col(&row, "id")?,
            TransferState {
                from: super::uuid_col(&row, "from_location")?,
                to: super::uuid_col(&row, "to_location")?,
                lines: Vec::new(),
                status: super::named_col(&row, "status")?,
                message: row.try_get("message")?,
                discrepancy_reason: row.try_get("discrepancy_reason")?,
                requested_at: row.try_get("requested_at")?,
                shipped_at: row.try_get("shipped_at")?,
                received_at: row.try_get("received_at")?,
            },
        );
    }
    let existing: Vec<TransferId> = transfers.keys().copied().collect();
    let lines = select_by_ids(
        tx,
        dialect,
        "SELECT transfer_id, product_id, quantity, received FROM transfer_lines \
         WHERE transfer_id IN ({ids}) ORDER BY transfer_id, line_no",
        &existing,
    )
    .await?;
    for row in lines {
        let id: TransferId = super::uuid_col(&row, "transfer_id")?;
        if let Some(transfer) = transfers.get_mut(&id) {
            transfer.lines.push(TransferLine {
                product_id: super::uuid_col(&row, "product_id")?,
                quantity: row.try_get("quantity")?,
                received: row.try_get("received")?,
            });
        }
    }
    Ok(transfers)
}

/// Every location (a short list: `--max-locations` bounds it).
async fn load_locations(
    tx: &mut Tx<'_>,
) -> Result<BTreeMap<LocationId, LocationState>, StoreError> {
    let rows = sqlx::query("SELECT id, code, name, priority, active FROM locations")
        .fetch_all(&mut **tx)
        .await?;
    let mut locations = BTreeMap::new();
    for row in rows {
        let active: i64 = row.try_get("active")?;
        locations.insert(
            super::uuid_col(&row, "id")?,
            LocationState {
                code: row.try_get("code")?,
                name: row.try_get("name")?,
                priority: row.try_get("priority")?,
                active: active != 0,
            },
        );
    }
    Ok(locations)
}

pub(super) fn purchase_order_from_row(
    row: &sqlx::any::AnyRow,
) -> Result<PurchaseOrderState, StoreError> {
    Ok(PurchaseOrderState {
        product_id: super::uuid_col(row, "product_id")?,
        quantity: row.try_get("quantity")?,
        location_id: super::optional_uuid_col(row, "location_id")?,
        status: super::named_col(row, "status")?,
        drafted_at: row.try_get("drafted_at")?,
        received_at: row.try_get("received_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::check_stock_bounds;
    use crate::domain::inventory::{Inventory, LocationStock, ProductState};
    use crate::domain::{LocationId, ProductId};
    use crate::store::StoreError;

    #[test]
    fn a_batch_that_breaks_the_stock_bounds_is_not_written() {
        let id = ProductId::new();
        let stock = |on_hand, reserved| ProductState {
            on_hand,
            reserved,
            received_total: 5,
            locations: [(
                LocationId::DEFAULT,
                LocationStock {
                    on_hand,
                    reserved,
                    in_transit: 0,
                },
            )]
            .into(),
            ..ProductState::default()
        };
        let of = |product| Inventory {
            products: [(id, product)].into(),
            ..Inventory::default()
        };
        let before = of(stock(5, 0));
        assert!(check_stock_bounds(&before, &of(stock(5, 5))).is_ok());
        assert!(matches!(
            check_stock_bounds(&before, &of(stock(5, 6))),
            Err(StoreError::Inconsistent(message)) if message.contains("reserved 6 outside 0..=5")
        ));
        // On-hand that the receipts, shipments and adjustments do not explain.
        assert!(check_stock_bounds(&before, &of(stock(4, 0))).is_err());
        // Totals that are not the locations' sums.
        let mut unsummed = stock(5, 0);
        unsummed.reserved = 1;
        assert!(check_stock_bounds(&before, &of(unsummed)).is_err());
        // Unchanged products are not checked again (the batch did not touch them).
        let broken = of(stock(5, 6));
        assert!(check_stock_bounds(&broken, &broken).is_ok());
    }
}
