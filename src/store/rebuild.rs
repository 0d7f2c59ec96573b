//! `streamstock rebuild`: drop the projections and replay the event archive
//! through the domain's projection (`Inventory::apply`), deciding nothing:
//! decisions are read from the decision events the archive holds. The
//! rebuilt read model equals the live one, which `projection_checksums`
//! shows table by table.
//!
//! The whole rebuild is one transaction: readers see the old read model
//! until it commits, and a failure leaves it untouched. Orders are loaded
//! and written chunk by chunk; products and purchase orders (few) stay in
//! memory and are written once at the end, so an intermediate state never
//! meets the stock constraints half-replayed.

use super::analytics::{prune_windows_on, WindowRetention};
use super::projections::load_state;
use super::sql::Tx;
use super::writes::{
    AdjustmentRow, AlertRow, AllocationRow, DailySalesRow, FulfilmentRow, LedgerRow, LocationRow,
    LocationStockRow, OrderItemRow, OrderRow, OrderTotalRow, ProductRow, ProductSalesRow,
    PurchaseOrderRow, StockRow, TableRow, TransferLineRow, TransferRow, WindowRow, Writes,
};
use super::{archived_envelope, Dialect, Store, StoreError};
use crate::domain::inventory::Inventory;
use crate::domain::{DomainEvent, Envelope};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;

/// Archive positions (`seq`) replayed per chunk: a range, not a LIMIT, so
/// each chunk is one index range scan (PostgreSQL's index on seq is a BRIN).
const CHUNK: i64 = 5_000;

/// A table the projections maintain: what rebuild drops and rewrites.
pub struct Projection {
    pub table: &'static str,
    order_by: &'static str,
    columns: &'static [&'static str],
    /// The rows that carry information. A running total whose deltas
    /// cancelled out stays as a row of zeros in a live read model, while a
    /// rebuild, summing other spans of events, may never write it.
    counts_rows: &'static str,
}

pub const PROJECTIONS: &[Projection] = &[
    Projection {
        table: "subscriptions",
        order_by: "id",
        columns: &[
            "id",
            "url",
            "event_types",
            "start_after",
            "state",
            "paused_reason",
            "rewind_to",
            "rewind_id",
            "created_at",
            "updated_at",
        ],
        counts_rows: "TRUE",
    },
    Projection {
        table: ProductRow::TABLE,
        order_by: "id",
        columns: ProductRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: StockRow::TABLE,
        order_by: "product_id",
        columns: StockRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: LocationStockRow::TABLE,
        order_by: "product_id, location_id",
        columns: LocationStockRow::COLUMNS,
        // A row a live worker created stays when it empties; a rebuild
        // from a read model upgraded with zero rows may not write it.
        counts_rows: "on_hand <> 0 OR reserved <> 0 OR in_transit <> 0",
    },
    Projection {
        table: TransferRow::TABLE,
        order_by: "id",
        columns: TransferRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: TransferLineRow::TABLE,
        order_by: "transfer_id, line_no",
        columns: TransferLineRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: LocationRow::TABLE,
        order_by: "id",
        columns: LocationRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: AllocationRow::TABLE,
        order_by: "order_id, seq",
        columns: AllocationRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: OrderRow::TABLE,
        order_by: "id",
        columns: OrderRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: OrderItemRow::TABLE,
        order_by: "order_id, line_no",
        columns: OrderItemRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: PurchaseOrderRow::TABLE,
        order_by: "id",
        columns: PurchaseOrderRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: AlertRow::TABLE,
        order_by: "id",
        columns: AlertRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: AdjustmentRow::TABLE,
        order_by: "id",
        columns: AdjustmentRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: FulfilmentRow::TABLE,
        order_by: "id",
        columns: FulfilmentRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: LedgerRow::TABLE,
        order_by: "product_id, seq",
        columns: LedgerRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: WindowRow::TABLE,
        order_by: "granularity, window_start, event_type",
        columns: WindowRow::COLUMNS,
        counts_rows: "TRUE",
    },
    Projection {
        table: OrderTotalRow::TABLE,
        order_by: "status",
        columns: OrderTotalRow::COLUMNS,
        counts_rows: "orders <> 0 OR amount_cents <> 0 OR sold_cents <> 0",
    },
    Projection {
        table: DailySalesRow::TABLE,
        order_by: "day_start",
        columns: DailySalesRow::COLUMNS,
        counts_rows: "amount_cents <> 0",
    },
    Projection {
        table: ProductSalesRow::TABLE,
        order_by: "product_id",
        columns: ProductSalesRow::COLUMNS,
        counts_rows: "units <> 0 OR revenue_cents <> 0",
    },
];

/// A digest of one projection table's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableChecksum {
    pub table: &'static str,
    pub rows: u64,
    /// xxh3-128 of every row's columns as text, in primary-key order.
    pub checksum: String,
}

impl Store {
    /// A checksum of every projection table, for comparing read models.
    pub async fn projection_checksums(&self) -> Result<Vec<TableChecksum>, StoreError> {
        let mut sums = Vec::new();
        for projection in PROJECTIONS {
            let columns: Vec<String> = projection
                .columns
                .iter()
                .map(|c| format!("CAST({c} AS TEXT) AS {c}"))
                .collect();
            let sql = format!(
                "SELECT {} FROM {} WHERE {} ORDER BY {}",
                columns.join(", "),
                projection.table,
                projection.counts_rows,
                projection.order_by
            );
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut rows = 0u64;
            let mut stream = sqlx::query(&sql).fetch(self.pool());
            while let Some(row) = stream.try_next().await? {
                rows += 1;
                for i in 0..projection.columns.len() {
                    let value: Option<String> = row.try_get(i)?;
                    match value {
                        Some(text) => {
                            hasher.update(b"v");
                            hasher.update(text.as_bytes());
                        }
                        None => hasher.update(b"n"),
                    }
                    // Separators keep ("ab", "c") and ("a", "bc") apart.
                    hasher.update(b"\x1f");
                }
                hasher.update(b"\x1e");
            }
            sums.push(TableChecksum {
                table: projection.table,
                rows,
                checksum: format!("{:032x}", hasher.digest128()),
            });
        }
        Ok(sums)
    }

    /// Empties the projections and replays the archive into them, in one
    /// transaction; the throughput windows then get the same retention the
    /// worker applies. `progress(replayed, total)` is called after each
    /// chunk. Returns the number of events replayed.
    pub async fn rebuild(
        &self,
        windows: &WindowRetention,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, StoreError> {
        let dialect = self.dialect();
        let extent = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(MIN(seq), 0) AS BIGINT) AS first, \
             CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS last FROM event_archive",
        )
        .fetch_one(self.pool())
        .await?;
        let total: i64 = extent.try_get("n")?;
        let first: i64 = extent.try_get("first")?;
        let last: i64 = extent.try_get("last")?;
        let mut tx = self.pool().begin().await?;
        for projection in PROJECTIONS {
            sqlx::query(&format!("DELETE FROM {}", projection.table))
                .execute(&mut *tx)
                .await?;
        }
        let mut inventory = Inventory::default();
        let mut replayed = 0u64;
        let select =
            "SELECT event_id, event_type, event_key, version, occurred_at, payload, actor \
             FROM event_archive WHERE seq >= $1 AND seq < $2 ORDER BY seq";
        // `seq` has gaps (numbers a sequence gave to inserts that
        // conflicted, before the archive numbered its rows itself), so a
        // range may hold fewer than CHUNK events, or none.
        let mut from = first;
        while total > 0 && from <= last {
            let rows = sqlx::query(select)
                .bind(from)
                .bind(from + CHUNK)
                .fetch_all(&mut *tx)
                .await?;
            from += CHUNK;
            if rows.is_empty() {
                continue;
            }
            let chunk = decode_chunk(&rows)?;
            replay_chunk(&mut tx, dialect, &chunk, &mut inventory).await?;
            replayed += chunk.len() as u64;
            progress(replayed, total.max(0) as u64);
        }
        let mut writes = Writes::default();
        writes.stock(&BTreeMap::new(), &inventory.products);
        writes.locations(&BTreeMap::new(), &inventory.locations);
        writes.purchase_orders(&BTreeMap::new(), &inventory.purchase_orders);
        writes.flush(&mut tx, dialect).await?;
        prune_windows_on(&mut tx, windows).await?;
        tx.commit().await?;
        Ok(replayed)
    }
}

/// The archived rows of a chunk, read as domain events.
fn decode_chunk(rows: &[sqlx::any::AnyRow]) -> Result<Vec<(Envelope, DomainEvent)>, StoreError> {
    let mut chunk = Vec::with_capacity(rows.len());
    for row in rows {
        let envelope = archived_envelope(row)?;
        let event = DomainEvent::from_envelope(&envelope).map_err(|e| {
            StoreError::Inconsistent(format!(
                "archived event {} cannot be read: {e}",
                envelope.event_id
            ))
        })?;
        chunk.push((envelope, event));
    }
    Ok(chunk)
}

/// Applies a chunk through the projection only (nothing is decided) and
/// writes its orders and event rows.
async fn replay_chunk(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    chunk: &[(Envelope, DomainEvent)],
    inventory: &mut Inventory,
) -> Result<(), StoreError> {
    // Orders come from the database (written by earlier chunks);
    // products and purchase orders stay in `inventory`.
    inventory.orders.clear();
    inventory.transfers.clear();
    load_state(tx, dialect, chunk.iter().map(|(_, e)| e), inventory, false).await?;
    let orders_before = inventory.orders.clone();
    let transfers_before = inventory.transfers.clone();
    for (envelope, event) in chunk {
        inventory
            .apply_enveloped(envelope, event)
            .map_err(|refused| {
                StoreError::Inconsistent(format!(
                    "replaying {} {}: {refused}",
                    envelope.event_type, envelope.event_id
                ))
            })?;
    }
    let mut writes = Writes::default();
    writes.events(chunk.iter().map(|(env, event)| (env, event)));
    writes.orders(&orders_before, &inventory.orders);
    writes.transfers(&transfers_before, &inventory.transfers);
    writes.ledger(std::mem::take(&mut inventory.journal));
    writes.flush(tx, dialect).await?;
    Ok(())
}
