//! Writing a unit of work back: the rows that come from applied events
//! (catalog entries, order lines, alerts, throughput windows) and the rows
//! that differ between the state loaded and the state after the domain ran,
//! one multi-row statement per table. Shared by live batches and rebuild.

use super::sql::{execute_all, multi_insert, values_lists, SqlValue, Tx};
use super::{Dialect, StoreError};
use crate::domain::events::{LineQuantity, ProductQuantity};
use crate::domain::inventory::{
    LocationState, Movement, OrderState, OrderStatus, ProductState, PurchaseOrderState,
    PurchaseOrderStatus, TransferState,
};
use crate::domain::status::{AdjustmentReason, AdjustmentStatus, FulfilmentKind};
use crate::domain::{AdjustmentId, LocationId, OrderId, ProductId, PurchaseOrderId, TransferId};
use crate::domain::{DomainEvent, Envelope};
use std::collections::BTreeMap;

/// A row of a projection table. Its columns are its fields, in order, so
/// the values a row gives always line up with the columns it is written
/// to; `rebuild` checksums the same columns, so a column written here is a
/// column compared there.
pub(super) trait TableRow {
    const TABLE: &'static str;
    const COLUMNS: &'static [&'static str];
    /// Each column's SQL type, for `VALUES` lists both databases must type.
    const SQL_TYPES: &'static [&'static str];
    /// What an insert does when the row exists already.
    fn on_conflict(dialect: Dialect) -> String;
    fn into_values(self) -> Vec<SqlValue>;
}

/// Declares a projection table once: its row type, name, columns (the
/// fields, with their SQL types) and conflict clause.
macro_rules! table_row {
    (
        $(#[$meta:meta])*
        $row:ident in $table:literal {
            $($column:ident: $ty:ty => $sql_type:literal,)*
        }
        on conflict $on_conflict:expr
    ) => {
        $(#[$meta])*
        pub(super) struct $row {
            $(pub $column: $ty,)*
        }

        impl TableRow for $row {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static [&'static str] = &[$(stringify!($column)),*];
            const SQL_TYPES: &'static [&'static str] = &[$($sql_type),*];

            fn on_conflict(dialect: Dialect) -> String {
                let clause: fn(Dialect) -> String = $on_conflict;
                clause(dialect)
            }

            fn into_values(self) -> Vec<SqlValue> {
                vec![$(self.$column.into()),*]
            }
        }
    };
}

/// The SQL function for the later of two event times.
fn latest(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "GREATEST",
        Dialect::Sqlite => "MAX",
    }
}

table_row! {
    /// A catalog entry, written once from `product.created`.
    ProductRow in "products" {
        id: String => "TEXT",
        sku: String => "TEXT",
        name: String => "TEXT",
        price_cents: i64 => "BIGINT",
        category_name: String => "TEXT",
        low_stock_threshold: i64 => "BIGINT",
        reorder_quantity: i64 => "BIGINT",
        created_at: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT DO NOTHING".into()
}

table_row! {
    /// A product's stock, written as deltas: an insert adds to a row that
    /// another worker created meanwhile.
    StockRow in "inventory" {
        product_id: String => "TEXT",
        on_hand: i64 => "BIGINT",
        reserved: i64 => "BIGINT",
        received_total: i64 => "BIGINT",
        shipped_total: i64 => "BIGINT",
        adjusted_total: i64 => "BIGINT",
        restocked_total: i64 => "BIGINT",
        movements: i64 => "BIGINT",
        updated_at: i64 => "BIGINT",
        in_transit: i64 => "BIGINT",
        backorder_limit: i64 => "BIGINT",
        backordered: i64 => "BIGINT",
    }
    on conflict |dialect| format!(
        "ON CONFLICT (product_id) DO UPDATE SET on_hand = inventory.on_hand + excluded.on_hand, \
         reserved = inventory.reserved + excluded.reserved, \
         received_total = inventory.received_total + excluded.received_total, \
         shipped_total = inventory.shipped_total + excluded.shipped_total, \
         adjusted_total = inventory.adjusted_total + excluded.adjusted_total, \
         restocked_total = inventory.restocked_total + excluded.restocked_total, \
         movements = inventory.movements + excluded.movements, \
         in_transit = inventory.in_transit + excluded.in_transit, \
         backorder_limit = inventory.backorder_limit + excluded.backorder_limit, \
         backordered = inventory.backordered + excluded.backordered, \
         updated_at = {}(inventory.updated_at, excluded.updated_at)",
        latest(dialect)
    )
}

table_row! {
    /// A product's stock at one location, written as deltas like its
    /// totals (under the lock of its inventory row).
    LocationStockRow in "inventory_locations" {
        product_id: String => "TEXT",
        location_id: String => "TEXT",
        on_hand: i64 => "BIGINT",
        reserved: i64 => "BIGINT",
        in_transit: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (product_id, location_id) DO UPDATE SET \
                     on_hand = inventory_locations.on_hand + excluded.on_hand, \
                     reserved = inventory_locations.reserved + excluded.reserved, \
                     in_transit = inventory_locations.in_transit + excluded.in_transit".into()
}

table_row! {
    /// A transfer, written whole whenever it changes.
    TransferRow in "transfers" {
        id: String => "TEXT",
        from_location: String => "TEXT",
        to_location: String => "TEXT",
        status: &'static str => "TEXT",
        message: Option<String> => "TEXT",
        discrepancy_reason: Option<String> => "TEXT",
        requested_at: i64 => "BIGINT",
        shipped_at: Option<i64> => "BIGINT",
        received_at: Option<i64> => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (id) DO UPDATE SET status = excluded.status, message = excluded.message, \
                     discrepancy_reason = excluded.discrepancy_reason, shipped_at = excluded.shipped_at, \
                     received_at = excluded.received_at".into()
}

table_row! {
    /// A transfer's product, with what arrived once it did.
    TransferLineRow in "transfer_lines" {
        transfer_id: String => "TEXT",
        line_no: i64 => "BIGINT",
        product_id: String => "TEXT",
        quantity: i64 => "BIGINT",
        received: Option<i64> => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (transfer_id, line_no) DO UPDATE SET received = excluded.received".into()
}

table_row! {
    /// A location, written whole whenever it changes.
    LocationRow in "locations" {
        id: String => "TEXT",
        code: String => "TEXT",
        name: String => "TEXT",
        priority: i64 => "BIGINT",
        active: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                     priority = excluded.priority, active = excluded.active".into()
}

table_row! {
    /// Units of an order's product reserved at one location (`seq`: the
    /// order they were allocated in), and how many of them shipped.
    AllocationRow in "order_allocations" {
        order_id: String => "TEXT",
        seq: i64 => "BIGINT",
        product_id: String => "TEXT",
        location_id: String => "TEXT",
        quantity: i64 => "BIGINT",
        shipped: i64 => "BIGINT",
    }
    // A backorder's fill adds to the allocation at a location it holds.
    on conflict |_| "ON CONFLICT (order_id, seq) DO UPDATE SET quantity = excluded.quantity, \
                     shipped = excluded.shipped".into()
}

table_row! {
    /// An order, written whole whenever its state changes.
    OrderRow in "orders" {
        id: String => "TEXT",
        customer_email: String => "TEXT",
        status: &'static str => "TEXT",
        total_cents: i64 => "BIGINT",
        reason: Option<String> => "TEXT",
        cancel_requested: i64 => "BIGINT",
        placed_at: i64 => "BIGINT",
        decided_at: Option<i64> => "BIGINT",
        updated_at: i64 => "BIGINT",
        hold_until: Option<i64> => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
                     cancel_requested = excluded.cancel_requested, decided_at = excluded.decided_at, \
                     updated_at = excluded.updated_at".into()
}

table_row! {
    /// An order line, written with its order whenever the order changes
    /// (its shipped and returned units change with shipments and returns).
    OrderItemRow in "order_items" {
        order_id: String => "TEXT",
        line_no: i64 => "BIGINT",
        product_id: String => "TEXT",
        quantity: i64 => "BIGINT",
        unit_price_cents: i64 => "BIGINT",
        shipped: i64 => "BIGINT",
        returned: i64 => "BIGINT",
        backordered: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (order_id, line_no) DO UPDATE SET shipped = excluded.shipped, \
                     returned = excluded.returned, backordered = excluded.backordered".into()
}

table_row! {
    PurchaseOrderRow in "purchase_orders" {
        id: String => "TEXT",
        product_id: String => "TEXT",
        quantity: i64 => "BIGINT",
        status: &'static str => "TEXT",
        drafted_at: i64 => "BIGINT",
        received_at: Option<i64> => "BIGINT",
        location_id: Option<String> => "TEXT",
    }
    on conflict |_| "ON CONFLICT (id) DO UPDATE SET status = excluded.status, received_at = excluded.received_at".into()
}

table_row! {
    AlertRow in "alerts" {
        id: String => "TEXT",
        kind: &'static str => "TEXT",
        severity: &'static str => "TEXT",
        subject: String => "TEXT",
        message: String => "TEXT",
        raised_at: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT DO NOTHING".into()
}

table_row! {
    /// Events (and confirmed revenue) per tumbling window and event type.
    WindowRow in "throughput" {
        granularity: &'static str => "TEXT",
        window_start: i64 => "BIGINT",
        event_type: &'static str => "TEXT",
        events: i64 => "BIGINT",
        amount_cents: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (granularity, window_start, event_type) DO UPDATE SET \
                     events = throughput.events + excluded.events, \
                     amount_cents = throughput.amount_cents + excluded.amount_cents".into()
}

table_row! {
    /// Orders and their totals per status, and the value of their units
    /// sold (a running total, by deltas).
    OrderTotalRow in "order_totals" {
        status: &'static str => "TEXT",
        orders: i64 => "BIGINT",
        amount_cents: i64 => "BIGINT",
        sold_cents: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (status) DO UPDATE SET \
                     orders = order_totals.orders + excluded.orders, \
                     amount_cents = order_totals.amount_cents + excluded.amount_cents, \
                     sold_cents = order_totals.sold_cents + excluded.sold_cents".into()
}

table_row! {
    /// The value of units sold by the UTC day their order was placed on
    /// (by deltas).
    DailySalesRow in "daily_sales" {
        day_start: i64 => "BIGINT",
        amount_cents: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (day_start) DO UPDATE SET \
                     amount_cents = daily_sales.amount_cents + excluded.amount_cents".into()
}

table_row! {
    /// Units sold and their revenue per product (by deltas).
    ProductSalesRow in "product_sales" {
        product_id: String => "TEXT",
        units: i64 => "BIGINT",
        revenue_cents: i64 => "BIGINT",
    }
    on conflict |_| "ON CONFLICT (product_id) DO UPDATE SET \
                     units = product_sales.units + excluded.units, \
                     revenue_cents = product_sales.revenue_cents + excluded.revenue_cents".into()
}

table_row! {
    /// An adjustment as requested (pending), written from
    /// `stock.adjustment_requested`.
    AdjustmentRow in "stock_adjustments" {
        id: String => "TEXT",
        product_id: String => "TEXT",
        delta: Option<i64> => "BIGINT",
        reason: &'static str => "TEXT",
        reference: Option<String> => "TEXT",
        note: Option<String> => "TEXT",
        expected_on_hand: Option<i64> => "BIGINT",
        counted: Option<i64> => "BIGINT",
        counted_at: Option<i64> => "BIGINT",
        status: &'static str => "TEXT",
        refusal: Option<&'static str> => "TEXT",
        message: Option<String> => "TEXT",
        on_hand: Option<i64> => "BIGINT",
        reserved: Option<i64> => "BIGINT",
        held_by: Option<String> => "TEXT",
        requested_by: Option<String> => "TEXT",
        requested_at: i64 => "BIGINT",
        decided_at: Option<i64> => "BIGINT",
        location_id: Option<String> => "TEXT",
    }
    on conflict |_| "ON CONFLICT DO NOTHING".into()
}

table_row! {
    /// A stock movement: a row of a product's ledger.
    LedgerRow in "stock_ledger" {
        product_id: String => "TEXT",
        seq: i64 => "BIGINT",
        occurred_at: i64 => "BIGINT",
        kind: &'static str => "TEXT",
        on_hand_delta: i64 => "BIGINT",
        reserved_delta: i64 => "BIGINT",
        on_hand: i64 => "BIGINT",
        reserved: i64 => "BIGINT",
        event_type: Option<&'static str> => "TEXT",
        event_id: Option<String> => "TEXT",
        order_id: Option<String> => "TEXT",
        purchase_order_id: Option<String> => "TEXT",
        adjustment_id: Option<String> => "TEXT",
        reason: Option<&'static str> => "TEXT",
        location_id: String => "TEXT",
    }
    // No conflict clause: a movement number taken twice is a bug, and
    // fails the batch rather than losing a row.
    on conflict |_| String::new()
}

table_row! {
    /// A shipment or return as requested (pending), written from its
    /// request; its decision completes the row.
    FulfilmentRow in "fulfilments" {
        id: String => "TEXT",
        order_id: String => "TEXT",
        kind: &'static str => "TEXT",
        status: &'static str => "TEXT",
        lines: String => "TEXT",
        allocated: Option<String> => "TEXT",
        reason: Option<String> => "TEXT",
        message: Option<String> => "TEXT",
        refund_cents: Option<i64> => "BIGINT",
        requested_by: Option<String> => "TEXT",
        requested_at: i64 => "BIGINT",
        decided_at: Option<i64> => "BIGINT",
        location_id: Option<String> => "TEXT",
    }
    on conflict |_| "ON CONFLICT DO NOTHING".into()
}

/// A shipment's or return's decision: it completes the request's row (or
/// is the whole row, for a ship-everything command, which has none).
pub(super) struct FulfilmentDecisionRow(FulfilmentRow);

impl TableRow for FulfilmentDecisionRow {
    const TABLE: &'static str = FulfilmentRow::TABLE;
    const COLUMNS: &'static [&'static str] = FulfilmentRow::COLUMNS;
    const SQL_TYPES: &'static [&'static str] = FulfilmentRow::SQL_TYPES;

    fn on_conflict(_: Dialect) -> String {
        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, allocated = excluded.allocated, \
         message = excluded.message, refund_cents = excluded.refund_cents, \
         decided_at = excluded.decided_at"
            .into()
    }

    fn into_values(self) -> Vec<SqlValue> {
        self.0.into_values()
    }
}

impl FulfilmentRow {
    /// A row with only what every row has; each event fills in the rest.
    fn of(
        id: uuid::Uuid,
        order_id: OrderId,
        kind: FulfilmentKind,
        status: AdjustmentStatus,
        lines: String,
        at: i64,
    ) -> FulfilmentRow {
        FulfilmentRow {
            id: id.to_string(),
            order_id: order_id.to_string(),
            kind: kind.as_str(),
            status: status.as_str(),
            lines,
            allocated: None,
            reason: None,
            message: None,
            refund_cents: None,
            requested_by: None,
            requested_at: at,
            decided_at: None,
            location_id: None,
        }
    }
}

/// JSON of lines a fulfilment row keeps.
fn json_lines<T: serde::Serialize>(lines: &T) -> String {
    serde_json::to_string(lines).expect("lines serialize")
}

impl AdjustmentRow {
    /// A row of an adjustment with only what every row has; each event
    /// fills in the columns it knows.
    fn of(
        id: AdjustmentId,
        product_id: ProductId,
        reason: AdjustmentReason,
        status: AdjustmentStatus,
        at: i64,
    ) -> AdjustmentRow {
        AdjustmentRow {
            id: id.to_string(),
            product_id: product_id.to_string(),
            delta: None,
            reason: reason.as_str(),
            reference: None,
            note: None,
            expected_on_hand: None,
            counted: None,
            counted_at: None,
            status: status.as_str(),
            refusal: None,
            message: None,
            on_hand: None,
            reserved: None,
            held_by: None,
            requested_by: None,
            requested_at: at,
            decided_at: None,
            location_id: None,
        }
    }
}

/// An adjustment's decision: the columns of the request's row, which it
/// completes (written whole only if the request's row is missing).
pub(super) struct AdjustmentDecisionRow(AdjustmentRow);

impl TableRow for AdjustmentDecisionRow {
    const TABLE: &'static str = AdjustmentRow::TABLE;
    const COLUMNS: &'static [&'static str] = AdjustmentRow::COLUMNS;
    const SQL_TYPES: &'static [&'static str] = AdjustmentRow::SQL_TYPES;

    fn on_conflict(_: Dialect) -> String {
        "ON CONFLICT (id) DO UPDATE SET delta = excluded.delta, status = excluded.status, \
         refusal = excluded.refusal, \
         message = excluded.message, on_hand = excluded.on_hand, reserved = excluded.reserved, \
         held_by = excluded.held_by, decided_at = excluded.decided_at"
            .into()
    }

    fn into_values(self) -> Vec<SqlValue> {
        self.0.into_values()
    }
}

/// One UTC day in milliseconds: the unit of `daily_sales`.
pub(super) const DAY_MS: i64 = 86_400_000;

/// The multi-row inserts of `rows` into their table.
fn inserts<R: TableRow>(dialect: Dialect, rows: Vec<R>) -> Vec<(String, Vec<SqlValue>)> {
    multi_insert(
        dialect,
        R::TABLE,
        R::COLUMNS,
        rows.into_iter().map(R::into_values).collect(),
        &R::on_conflict(dialect),
    )
}

/// Stock rows that existed, changed by their deltas (PostgreSQL holds
/// their locks). An upsert cannot serve both these and new rows: SQLite
/// checks the inserted row's CHECK constraints before it resolves the
/// conflict.
fn stock_updates(dialect: Dialect, rows: Vec<StockRow>) -> Vec<(String, Vec<SqlValue>)> {
    let values = rows.into_iter().map(StockRow::into_values).collect();
    values_lists(dialect, StockRow::SQL_TYPES, values)
        .into_iter()
        .map(|(values_sql, values)| {
            let sql = format!(
                "WITH delta ({columns}) AS (VALUES {values_sql}) \
                 UPDATE inventory SET on_hand = inventory.on_hand + delta.on_hand, \
                 reserved = inventory.reserved + delta.reserved, \
                 received_total = inventory.received_total + delta.received_total, \
                 shipped_total = inventory.shipped_total + delta.shipped_total, \
                 adjusted_total = inventory.adjusted_total + delta.adjusted_total, \
                 restocked_total = inventory.restocked_total + delta.restocked_total, \
                 movements = inventory.movements + delta.movements, \
                 in_transit = inventory.in_transit + delta.in_transit, \
                 backorder_limit = inventory.backorder_limit + delta.backorder_limit, \
                 backordered = inventory.backordered + delta.backordered, \
                 updated_at = {latest}(inventory.updated_at, delta.updated_at) \
                 FROM delta WHERE inventory.product_id = delta.product_id",
                columns = StockRow::COLUMNS.join(", "),
                latest = latest(dialect),
            );
            (sql, values)
        })
        .collect()
}

/// What a unit of work adds to one status's running totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct OrderTotalsDelta {
    orders: i64,
    amount_cents: i64,
    sold_cents: i64,
}

/// What a shipment's lines ask for per product (the row of a shipment
/// decided without a request: a ship-everything command).
fn asked_of(lines: &[LineQuantity]) -> Vec<ProductQuantity> {
    lines
        .iter()
        .map(|line| ProductQuantity {
            product_id: line.product_id,
            quantity: line.quantity,
            location_id: line.location_id,
        })
        .collect()
}

/// A tumbling window: (granularity, window start, event type).
type Window = (&'static str, i64, &'static str);

/// The rows a unit of work writes, table by table: rows that come from
/// events (catalog entries, order lines, alerts, throughput windows) and rows
/// that come from the difference between the state before and after.
#[derive(Default)]
pub(super) struct Writes {
    products: Vec<ProductRow>,
    order_items: Vec<OrderItemRow>,
    alerts: Vec<AlertRow>,
    adjustments: Vec<AdjustmentRow>,
    adjustment_decisions: Vec<AdjustmentDecisionRow>,
    fulfilments: Vec<FulfilmentRow>,
    fulfilment_decisions: Vec<FulfilmentDecisionRow>,
    ledger: Vec<LedgerRow>,
    windows: BTreeMap<Window, (i64, i64)>,
    stock_updates: Vec<StockRow>,
    stock_inserts: Vec<StockRow>,
    location_stock: Vec<LocationStockRow>,
    locations: Vec<LocationRow>,
    allocations: Vec<AllocationRow>,
    transfers: Vec<TransferRow>,
    transfer_lines: Vec<TransferLineRow>,
    orders: Vec<OrderRow>,
    purchase_orders: Vec<(PurchaseOrderStatus, PurchaseOrderRow)>,
    /// Running totals' deltas, by key (the order their locks are taken in).
    order_totals: BTreeMap<OrderStatus, OrderTotalsDelta>,
    daily_sales: BTreeMap<i64, i64>,
    product_sales: BTreeMap<ProductId, (i64, i64)>,
    /// Subscriptions' changes, in event order (see `store::subscriptions`).
    subscriptions: Vec<super::subscriptions::SubscriptionWrite>,
}

impl Writes {
    /// Rows written straight from applied events.
    pub(super) fn events<'e>(
        &mut self,
        events: impl Iterator<Item = (&'e Envelope, &'e DomainEvent)>,
    ) {
        for (envelope, event) in events {
            let at = envelope.occurred_at.timestamp_millis();
            let mut amount = 0;
            match event {
                DomainEvent::ProductCreated(e) => self.products.push(ProductRow {
                    id: e.product_id.to_string(),
                    sku: e.sku.clone(),
                    name: e.name.clone(),
                    price_cents: e.price.cents(),
                    category_name: e.category_name.clone(),
                    low_stock_threshold: e.low_stock_threshold,
                    reorder_quantity: e.reorder_quantity,
                    created_at: at,
                }),
                DomainEvent::OrderConfirmed(e) => amount = e.total.cents(),
                DomainEvent::AlertRaised(e) => self.alerts.push(AlertRow {
                    id: e.alert_id.to_string(),
                    kind: e.kind.as_str(),
                    severity: e.severity.as_str(),
                    subject: e.subject.clone(),
                    message: e.message.clone(),
                    raised_at: at,
                }),
                DomainEvent::OrderShipmentRequested(e) => self.fulfilments.push(FulfilmentRow {
                    requested_by: envelope.actor.clone(),
                    ..FulfilmentRow::of(
                        e.shipment_id.as_uuid(),
                        e.order_id,
                        FulfilmentKind::Shipment,
                        AdjustmentStatus::Pending,
                        json_lines(&e.lines),
                        at,
                    )
                }),
                DomainEvent::OrderReturnRequested(e) => self.fulfilments.push(FulfilmentRow {
                    reason: Some(e.reason.clone()),
                    location_id: e.location_id.map(|l| l.to_string()),
                    requested_by: envelope.actor.clone(),
                    ..FulfilmentRow::of(
                        e.return_id.as_uuid(),
                        e.order_id,
                        FulfilmentKind::Return,
                        AdjustmentStatus::Pending,
                        json_lines(&e.lines),
                        at,
                    )
                }),
                DomainEvent::OrderShipped(e) => {
                    if let (Some(id), Some(lines)) = (e.shipment_id, &e.lines) {
                        self.fulfilment_decisions
                            .push(FulfilmentDecisionRow(FulfilmentRow {
                                allocated: Some(json_lines(lines)),
                                decided_at: Some(at),
                                ..FulfilmentRow::of(
                                    id.as_uuid(),
                                    e.order_id,
                                    FulfilmentKind::Shipment,
                                    AdjustmentStatus::Applied,
                                    json_lines(&asked_of(lines)),
                                    at,
                                )
                            }))
                    }
                }
                DomainEvent::OrderReturned(e) => {
                    self.fulfilment_decisions
                        .push(FulfilmentDecisionRow(FulfilmentRow {
                            allocated: Some(json_lines(&e.lines)),
                            reason: Some(e.reason.clone()),
                            refund_cents: Some(e.refund.cents()),
                            decided_at: Some(at),
                            ..FulfilmentRow::of(
                                e.return_id.as_uuid(),
                                e.order_id,
                                FulfilmentKind::Return,
                                AdjustmentStatus::Applied,
                                json_lines(&e.lines),
                                at,
                            )
                        }))
                }
                DomainEvent::OrderShipmentRefused(e) => {
                    self.fulfilment_decisions
                        .push(FulfilmentDecisionRow(FulfilmentRow {
                            message: Some(e.message.clone()),
                            decided_at: Some(at),
                            ..FulfilmentRow::of(
                                e.shipment_id.as_uuid(),
                                e.order_id,
                                FulfilmentKind::Shipment,
                                AdjustmentStatus::Refused,
                                "[]".into(),
                                at,
                            )
                        }))
                }
                DomainEvent::OrderReturnRefused(e) => {
                    self.fulfilment_decisions
                        .push(FulfilmentDecisionRow(FulfilmentRow {
                            message: Some(e.message.clone()),
                            decided_at: Some(at),
                            ..FulfilmentRow::of(
                                e.return_id.as_uuid(),
                                e.order_id,
                                FulfilmentKind::Return,
                                AdjustmentStatus::Refused,
                                "[]".into(),
                                at,
                            )
                        }))
                }
                DomainEvent::StockCounted(e) => self.adjustments.push(AdjustmentRow {
                    location_id: e.location_id.map(|l| l.to_string()),
                    reference: e.reference.clone(),
                    note: e.note.clone(),
                    expected_on_hand: e.expected_on_hand,
                    counted: Some(e.counted),
                    counted_at: Some(e.counted_at),
                    requested_by: envelope.actor.clone(),
                    ..AdjustmentRow::of(
                        e.adjustment_id,
                        e.product_id,
                        AdjustmentReason::CycleCount,
                        AdjustmentStatus::Pending,
                        at,
                    )
                }),
                DomainEvent::StockAdjustmentRequested(e) => self.adjustments.push(AdjustmentRow {
                    location_id: e.location_id.map(|l| l.to_string()),
                    delta: Some(e.delta),
                    reference: e.reference.clone(),
                    note: e.note.clone(),
                    expected_on_hand: e.expected_on_hand,
                    requested_by: envelope.actor.clone(),
                    ..AdjustmentRow::of(
                        e.adjustment_id,
                        e.product_id,
                        e.reason,
                        AdjustmentStatus::Pending,
                        at,
                    )
                }),
                DomainEvent::StockAdjusted(e) => {
                    self.adjustment_decisions
                        .push(AdjustmentDecisionRow(AdjustmentRow {
                            // A transit loss has no request: this is its row.
                            location_id: e.location_id.map(|l| l.to_string()),
                            delta: Some(e.delta),
                            reference: e.reference.clone(),
                            note: e.note.clone(),
                            counted: e.counted,
                            decided_at: Some(at),
                            ..AdjustmentRow::of(
                                e.adjustment_id,
                                e.product_id,
                                e.reason,
                                AdjustmentStatus::Applied,
                                at,
                            )
                        }))
                }
                DomainEvent::StockAdjustmentRefused(e) => {
                    let held_by = (!e.held_by.is_empty())
                        .then(|| serde_json::to_string(&e.held_by).expect("ids serialize"));
                    self.adjustment_decisions
                        .push(AdjustmentDecisionRow(AdjustmentRow {
                            delta: Some(e.delta),
                            refusal: Some(e.refusal.as_str()),
                            message: Some(e.message.clone()),
                            on_hand: Some(e.on_hand),
                            reserved: Some(e.reserved),
                            held_by,
                            decided_at: Some(at),
                            ..AdjustmentRow::of(
                                e.adjustment_id,
                                e.product_id,
                                e.reason,
                                AdjustmentStatus::Refused,
                                at,
                            )
                        }))
                }
                DomainEvent::SubscriptionCreated(_)
                | DomainEvent::SubscriptionPaused(_)
                | DomainEvent::SubscriptionResumed(_)
                | DomainEvent::SubscriptionRewound(_)
                | DomainEvent::SubscriptionDeleted(_) => {
                    if let Some(write) =
                        super::subscriptions::SubscriptionWrite::of(envelope, event)
                    {
                        self.subscriptions.push(write);
                    }
                }
                _ => {}
            }
            for (granularity, width) in [("s", 1_000), ("m", 60_000)] {
                let window = (granularity, at - at.rem_euclid(width), event.event_type());
                let counts = self.windows.entry(window).or_default();
                counts.0 += 1;
                counts.1 += amount;
            }
        }
    }

    /// Ledger rows of the movements the domain recorded.
    pub(super) fn ledger(&mut self, movements: Vec<Movement>) {
        self.ledger.extend(movements.into_iter().map(|m| LedgerRow {
            product_id: m.product_id.to_string(),
            seq: m.seq,
            occurred_at: m.at,
            kind: m.kind.as_str(),
            on_hand_delta: m.on_hand_delta,
            reserved_delta: m.reserved_delta,
            on_hand: m.on_hand,
            reserved: m.reserved,
            event_type: Some(m.cause.event_type.name()),
            event_id: Some(m.event_id.to_string()),
            order_id: m.cause.order_id.map(|id| id.to_string()),
            purchase_order_id: m.cause.purchase_order_id.map(|id| id.to_string()),
            adjustment_id: m.cause.adjustment_id.map(|id| id.to_string()),
            reason: m.cause.reason.map(|r| r.as_str()),
            location_id: m.location_id.to_string(),
        }));
    }

    /// Stock rows: those that existed are updated by their deltas, new ones
    /// inserted (adding to a row created meanwhile).
    pub(super) fn stock(
        &mut self,
        before: &BTreeMap<ProductId, ProductState>,
        after: &BTreeMap<ProductId, ProductState>,
    ) {
        let zero = ProductState::default();
        for (id, now) in after {
            let was = before.get(id);
            let base = was.unwrap_or(&zero);
            let row = StockRow {
                product_id: id.to_string(),
                on_hand: now.on_hand - base.on_hand,
                reserved: now.reserved - base.reserved,
                received_total: now.received_total - base.received_total,
                shipped_total: now.shipped_total - base.shipped_total,
                adjusted_total: now.adjusted_total - base.adjusted_total,
                restocked_total: now.restocked_total - base.restocked_total,
                movements: now.movements - base.movements,
                updated_at: now.updated_at,
                in_transit: now.in_transit - base.in_transit,
                backorder_limit: now.backorder_limit - base.backorder_limit,
                backordered: now.backordered - base.backordered,
            };
            match was {
                Some(was) if was == now => {}
                Some(_) => self.stock_updates.push(row),
                None => self.stock_inserts.push(row),
            }
            for (location, stock) in &now.locations {
                let base = base.locations.get(location);
                if base == Some(stock) {
                    continue;
                }
                let base = base.copied().unwrap_or_default();
                self.location_stock.push(LocationStockRow {
                    product_id: id.to_string(),
                    location_id: location.to_string(),
                    on_hand: stock.on_hand - base.on_hand,
                    reserved: stock.reserved - base.reserved,
                    in_transit: stock.in_transit - base.in_transit,
                });
            }
        }
    }

    /// Transfers that were requested or changed, written whole with the
    /// lines that changed.
    pub(super) fn transfers(
        &mut self,
        before: &BTreeMap<TransferId, TransferState>,
        after: &BTreeMap<TransferId, TransferState>,
    ) {
        for (id, transfer) in after {
            let was = before.get(id);
            if was == Some(transfer) {
                continue;
            }
            self.transfers.push(TransferRow {
                id: id.to_string(),
                from_location: transfer.from.to_string(),
                to_location: transfer.to.to_string(),
                status: transfer.status.as_str(),
                message: transfer.message.clone(),
                discrepancy_reason: transfer.discrepancy_reason.clone(),
                requested_at: transfer.requested_at,
                shipped_at: transfer.shipped_at,
                received_at: transfer.received_at,
            });
            let lines_before = was.map(|w| &w.lines[..]).unwrap_or_default();
            for (line_no, line) in transfer.lines.iter().enumerate() {
                if lines_before.get(line_no) == Some(line) {
                    continue;
                }
                self.transfer_lines.push(TransferLineRow {
                    transfer_id: id.to_string(),
                    line_no: line_no as i64,
                    product_id: line.product_id.to_string(),
                    quantity: line.quantity,
                    received: line.received,
                });
            }
        }
    }

    /// Locations that were created or changed, written whole.
    pub(super) fn locations(
        &mut self,
        before: &BTreeMap<LocationId, LocationState>,
        after: &BTreeMap<LocationId, LocationState>,
    ) {
        for (id, location) in after {
            if before.get(id) == Some(location) {
                continue;
            }
            self.locations.push(LocationRow {
                id: id.to_string(),
                code: location.code.clone(),
                name: location.name.clone(),
                priority: location.priority,
                active: i64::from(location.active),
            });
        }
    }

    /// Orders whose state changed, written whole (upsert) with their
    /// lines, and what their changes add to the running totals.
    pub(super) fn orders(
        &mut self,
        before: &BTreeMap<OrderId, OrderState>,
        after: &BTreeMap<OrderId, OrderState>,
    ) {
        for (id, order) in after {
            let was = before.get(id);
            if was == Some(order) {
                continue;
            }
            if let Some(was) = was {
                self.count(was, -1);
            }
            self.count(order, 1);
            self.orders.push(OrderRow {
                id: id.to_string(),
                customer_email: order.customer_email.clone(),
                status: order.status.as_str(),
                total_cents: order.total.cents(),
                reason: order.reason.clone(),
                cancel_requested: i64::from(order.cancel_requested),
                placed_at: order.placed_at,
                decided_at: order.decided_at,
                updated_at: order.updated_at,
                hold_until: order.hold_until,
            });
            let lines_before = was.map(|w| &w.lines[..]).unwrap_or_default();
            for (line_no, line) in order.lines.iter().enumerate() {
                if lines_before.get(line_no) == Some(line) {
                    continue;
                }
                self.order_items.push(OrderItemRow {
                    order_id: id.to_string(),
                    line_no: line_no as i64,
                    product_id: line.product_id.to_string(),
                    quantity: line.quantity,
                    unit_price_cents: line.unit_price.cents(),
                    shipped: line.shipped,
                    returned: line.returned,
                    backordered: line.backordered,
                });
            }
            let allocations_before = was.map(|w| &w.allocations[..]).unwrap_or_default();
            for (seq, allocation) in order.allocations.iter().enumerate() {
                if allocations_before.get(seq) == Some(allocation) {
                    continue;
                }
                self.allocations.push(AllocationRow {
                    order_id: id.to_string(),
                    seq: seq as i64,
                    product_id: allocation.product_id.to_string(),
                    location_id: allocation.location_id.to_string(),
                    quantity: allocation.quantity,
                    shipped: allocation.shipped,
                });
            }
        }
    }

    /// Adds (`sign` 1) or takes away (-1) an order in the running totals:
    /// its status's count and total, and the value of its units sold.
    fn count(&mut self, order: &OrderState, sign: i64) {
        let sold = order.sold_cents();
        let per_status = self.order_totals.entry(order.status).or_default();
        per_status.orders += sign;
        per_status.amount_cents += sign * order.total.cents();
        per_status.sold_cents += sign * sold;
        if sold != 0 {
            let day = order.placed_at - order.placed_at.rem_euclid(DAY_MS);
            *self.daily_sales.entry(day).or_default() += sign * sold;
        }
        for line in &order.lines {
            let units = order.sold_units(line);
            if units != 0 {
                let sales = self.product_sales.entry(line.product_id).or_default();
                sales.0 += sign * units;
                sales.1 += sign * units * line.unit_price.cents();
            }
        }
    }

    pub(super) fn purchase_orders(
        &mut self,
        before: &BTreeMap<PurchaseOrderId, PurchaseOrderState>,
        after: &BTreeMap<PurchaseOrderId, PurchaseOrderState>,
    ) {
        for (id, po) in after {
            if before.get(id) == Some(po) {
                continue;
            }
            self.purchase_orders.push((
                po.status,
                PurchaseOrderRow {
                    id: id.to_string(),
                    product_id: po.product_id.to_string(),
                    quantity: po.quantity,
                    status: po.status.as_str(),
                    drafted_at: po.drafted_at,
                    received_at: po.received_at,
                    location_id: po.location_id.map(|l| l.to_string()),
                },
            ));
        }
    }

    /// Writes every table, in an order that matters:
    /// - stock rows that existed are updated before new ones are inserted;
    /// - closed purchase orders before new open ones, as the
    ///   one-open-per-product index is checked row by row;
    /// - windows and running totals last, each in key order: concurrent
    ///   workers add to the same rows, so they take these locks in one
    ///   order, just before commit.
    pub(super) async fn flush(self, tx: &mut Tx<'_>, dialect: Dialect) -> Result<(), StoreError> {
        let mut purchase_orders = self.purchase_orders;
        purchase_orders.sort_by_key(|(status, _)| *status == PurchaseOrderStatus::Open);
        let windows: Vec<WindowRow> = self
            .windows
            .into_iter()
            .map(
                |((granularity, window_start, event_type), (events, amount_cents))| WindowRow {
                    granularity,
                    window_start,
                    event_type,
                    events,
                    amount_cents,
                },
            )
            .collect();
        let order_totals = (self.order_totals.into_iter())
            .filter(|(_, delta)| *delta != OrderTotalsDelta::default())
            .map(|(status, delta)| OrderTotalRow {
                status: status.as_str(),
                orders: delta.orders,
                amount_cents: delta.amount_cents,
                sold_cents: delta.sold_cents,
            })
            .collect();
        let daily_sales = (self.daily_sales.into_iter())
            .filter(|(_, delta)| *delta != 0)
            .map(|(day_start, amount_cents)| DailySalesRow {
                day_start,
                amount_cents,
            })
            .collect();
        let product_sales = (self.product_sales.into_iter())
            .filter(|(_, delta)| *delta != (0, 0))
            .map(|(product, (units, revenue_cents))| ProductSalesRow {
                product_id: product.to_string(),
                units,
                revenue_cents,
            })
            .collect();
        let statements = [
            inserts(dialect, self.products),
            stock_updates(dialect, self.stock_updates),
            inserts(dialect, self.stock_inserts),
            inserts(dialect, self.location_stock),
            inserts(dialect, self.locations),
            inserts(dialect, self.orders),
            inserts(dialect, self.order_items),
            inserts(dialect, self.allocations),
            inserts(dialect, self.transfers),
            inserts(dialect, self.transfer_lines),
            inserts(
                dialect,
                purchase_orders.into_iter().map(|(_, row)| row).collect(),
            ),
            inserts(dialect, self.alerts),
            // Requests before decisions: a decision completes its request's row.
            inserts(dialect, self.adjustments),
            inserts(dialect, self.adjustment_decisions),
            inserts(dialect, self.fulfilments),
            inserts(dialect, self.fulfilment_decisions),
            inserts(dialect, self.ledger),
            inserts(dialect, windows),
            inserts(dialect, order_totals),
            inserts(dialect, daily_sales),
            inserts(dialect, product_sales),
        ];
        execute_all(tx, statements.into_iter().flatten().collect()).await?;
        super::subscriptions::write_all(tx, dialect, self.subscriptions).await
    }
}
