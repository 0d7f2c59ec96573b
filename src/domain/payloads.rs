//! The payload of each event type: what `DomainEvent`'s variants carry,
//! and what the log's envelopes hold as JSON (see `events`).

use super::ids::{
    AdjustmentId, LocationId, OrderId, ProductId, PurchaseOrderId, ReturnId, ShipmentId, TransferId,
};
use super::money::Money;
use super::status::{AdjustmentReason, AdjustmentRefusal, AlertKind, ReturnDisposition, Severity};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub category_name: String,
    pub low_stock_threshold: i64,
    pub reorder_quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReceived {
    pub product_id: ProductId,
    pub quantity: i64,
    /// Set when the receipt is the delivery of a purchase order, which it
    /// closes; None for stock received directly (POST .../stock).
    pub purchase_order_id: Option<PurchaseOrderId>,
    /// Where the stock is; none: the default location (every event
    /// before locations, upcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub quantity: i64,
    /// The catalog price when the order was accepted: the order is charged at
    /// this price even if the catalog changes before it is decided.
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_email: String,
    pub items: Vec<OrderLine>,
    pub total: Money,
    /// A checkout's hold: once confirmed the order is HELD until this
    /// moment (the gateway's clock when it accepted the order, plus the
    /// client's `hold_ttl_s`), then expires unless committed. None: an
    /// order confirmed for good (every v1 placement, upcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// The worker confirmed an order: its lines are reserved where
/// `allocations` say. v1 had no allocations (all stock was at the default
/// location): upcast to None, which reserves every line there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: OrderId,
    pub total: Money,
    #[serde(default)]
    pub allocations: Option<Vec<Allocation>>,
    /// Confirmed as HELD until then (the order was placed with a hold):
    /// it expires unless committed. v2 and earlier: None, CONFIRMED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Units not in stock, sold past zero under the products' backorder
    /// limits: not reserved, they wait for stock (the order is
    /// BACKORDERED until `order.backorder_filled` covers them). v2 and
    /// earlier: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backordered: Vec<Backordered>,
}

/// Units of a product an order waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Backordered {
    pub product_id: ProductId,
    pub quantity: i64,
}

/// A product's policy: how many units may be sold past zero and wait for
/// stock (0: none, an order short of stock is rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductPolicySet {
    pub product_id: ProductId,
    pub backorder_limit: i64,
}

/// Stock that arrived went to a backordered order, first in first out:
/// these units of the product are now reserved for it where `allocations`
/// say. Keyed by the order; decided by the worker that applied the
/// arrival.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderBackorderFilled {
    pub order_id: OrderId,
    pub product_id: ProductId,
    pub allocations: Vec<Allocation>,
}

/// More backordered orders of a product wait than one batch loads, and
/// stock is left for them: a worker's sweep asks the product's partition
/// to take the queue up again (a note; it changes nothing, and the batch
/// that applies it fills the next orders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackorderFillRequested {
    pub product_id: ProductId,
}

/// Units of a product reserved at one location for an order. An order
/// holds one per (product, location), in the order they were chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Allocation {
    pub product_id: ProductId,
    pub location_id: LocationId,
    pub quantity: i64,
}

/// Stock asked to move between two locations (a command: the worker
/// records `transfer.shipped` or `transfer.refused`). Keyed by its id;
/// one aggregate, however many products.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRequested {
    pub transfer_id: TransferId,
    pub from: LocationId,
    pub to: LocationId,
    pub lines: Vec<ProductQuantity>,
}

/// The transfer left `from`: its on-hand drops by each line, and the
/// units are in transit to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferShipped {
    pub transfer_id: TransferId,
}

/// A transfer not shipped (not enough available at `from`, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRefused {
    pub transfer_id: TransferId,
    pub message: String,
}

/// Units of a transfer's product as they arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedLine {
    pub product_id: ProductId,
    pub received: i64,
}

/// The destination says what arrived (a command: the worker records
/// `transfer.received`, or refuses it with an alert). Lines left out
/// arrived whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferReceiveRequested {
    pub transfer_id: TransferId,
    pub lines: Vec<ReceivedLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discrepancy_reason: Option<String>,
}

/// The transfer arrived: each line's units leave transit and go on the
/// destination's shelf (`received` of them stay: the worker records a
/// shortfall as `stock.adjusted` with reason `transit_loss` right after).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferReceived {
    pub transfer_id: TransferId,
    pub lines: Vec<ReceivedLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discrepancy_reason: Option<String>,
}

/// A place stock is kept in. `priority`: lower first, for the `priority`
/// allocation strategy. Keyed by its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationCreated {
    pub location_id: LocationId,
    pub code: String,
    pub name: String,
    pub priority: i64,
    pub active: bool,
}

/// A change of a location's name, priority or activity (a field left out
/// keeps its value). An inactive location keeps its stock, visible, but
/// no order is allocated from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationUpdated {
    pub location_id: LocationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub order_id: OrderId,
    pub reason: String,
}

/// A customer (or operator) asks to cancel an order. A command: the worker
/// decides, and records the outcome as `order.cancelled` or a refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelRequested {
    pub order_id: OrderId,
}

/// The client took payment for a held order (a command: the worker records
/// `order.committed`, or refuses it with an alert when the hold is over).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCommitRequested {
    pub order_id: OrderId,
}

/// A held order committed in time: it is CONFIRMED, its stock stays
/// reserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCommitted {
    pub order_id: OrderId,
}

/// The owner of the order's partition saw its hold run out (by its clock)
/// and asks for it to expire. The clock's decision enters the log here:
/// the worker decides `order.expired` or `order.expiry_refused` from the
/// order's state and this request alone, so a rebuild reads the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderExpireRequested {
    pub order_id: OrderId,
    /// The hold the requester saw run out (a request for another one,
    /// older or newer, is refused).
    pub hold_until: chrono::DateTime<chrono::Utc>,
    /// The lease epoch of the partition the requester held (an audit
    /// trail: a stale owner's request shows an older epoch).
    pub epoch: u64,
}

/// A hold not committed in time: the order is EXPIRED and its reservation
/// released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderExpired {
    pub order_id: OrderId,
}

/// An expiry request the order's state did not allow (committed or
/// cancelled first, already expired, not due): nothing changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderExpiryRefused {
    pub order_id: OrderId,
    pub reason: String,
}

/// The warehouse asks to ship an order (a command, like a cancel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipRequested {
    pub order_id: OrderId,
}

/// The reservation is released: each line's quantity goes back to available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
}

/// Units of an order leave the shelf: on-hand and reserved both drop by
/// each line's quantity. Decided by a worker from a shipment (`lines` as
/// allocated to the order's lines) or a ship-everything command.
/// v1 had only `order_id`, and shipped every line whole: it is upcast to
/// `lines: None` (every unshipped unit) and `complete: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: OrderId,
    /// None for an event of v1.
    #[serde(default)]
    pub shipment_id: Option<ShipmentId>,
    /// The units shipped per order line; None ships every unshipped unit.
    #[serde(default)]
    pub lines: Option<Vec<LineQuantity>>,
    /// Whether the order has now shipped whole (SHIPPED, else
    /// PARTIALLY_SHIPPED). Apply checks it against the lines.
    pub complete: bool,
}

/// A quantity of one product, as a shipment or return request names it.
/// A shipment may name the location it draws from (one the order's
/// product is allocated at); none: the worker takes the allocations in
/// the order they were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductQuantity {
    pub product_id: ProductId,
    pub quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// A quantity of one line of an order (`line_no`: its index among the
/// order's items), as a worker allocated a request to the lines, and for
/// a shipment the location the units left from. A line shipped from two
/// locations appears twice. None (v2): drawn from the product's
/// allocations in order, which before locations were all at the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineQuantity {
    pub line_no: u32,
    pub product_id: ProductId,
    pub quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// The warehouse asks to ship some units of a confirmed order (a command:
/// the worker records `order.shipped` or `order.shipment_refused`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipmentRequested {
    pub order_id: OrderId,
    pub shipment_id: ShipmentId,
    pub lines: Vec<ProductQuantity>,
}

/// A shipment the order's state does not allow (more than a line has
/// unshipped, a product not in the order, an order not confirmed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipmentRefused {
    pub order_id: OrderId,
    pub shipment_id: ShipmentId,
    pub message: String,
}

/// One line of a return request: units of a product, and what becomes of
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnLine {
    pub product_id: ProductId,
    pub quantity: i64,
    pub disposition: ReturnDisposition,
}

/// One line of a decided return: as allocated to the order's lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnedLine {
    pub line_no: u32,
    pub product_id: ProductId,
    pub quantity: i64,
    pub disposition: ReturnDisposition,
}

/// A customer sends shipped units back (a command: the worker records
/// `order.returned` or `order.return_refused`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderReturnRequested {
    pub order_id: OrderId,
    pub return_id: ReturnId,
    pub lines: Vec<ReturnLine>,
    pub reason: String,
    /// Where restocked units go; none: the default location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// A decided return: each line's units count as returned; restocked ones
/// go back on the shelf. `refund` is their value at the order's prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderReturned {
    pub order_id: OrderId,
    pub return_id: ReturnId,
    pub lines: Vec<ReturnedLine>,
    pub reason: String,
    pub refund: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// A return the order's state does not allow (more than was shipped and
/// not yet returned, a product not in the order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderReturnRefused {
    pub order_id: OrderId,
    pub return_id: ReturnId,
    pub message: String,
}

/// Available stock of a product fell below its threshold (once per crossing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockLow {
    pub product_id: ProductId,
    pub sku: String,
    pub available: i64,
    pub threshold: i64,
}

/// A purchase order for the product's reorder quantity; at most one is open
/// per product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseOrderDrafted {
    pub purchase_order_id: PurchaseOrderId,
    pub product_id: ProductId,
    pub quantity: i64,
    /// Where it is to be received: the first active location by priority
    /// when it was drafted. None (v1): the default location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// The supplier delivered a purchase order (a command: the worker closes the
/// order and receives its stock with `stock.received`, or refuses it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseOrderReceived {
    pub purchase_order_id: PurchaseOrderId,
    pub product_id: ProductId,
    /// Where it arrived, when not where the purchase order said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// Something an operator should see on the dashboard's alert feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRaised {
    pub alert_id: Uuid,
    pub kind: AlertKind,
    pub severity: Severity,
    /// What it is about: an event id, a product id, an order id. It is also
    /// the event's key, so `GET /api/events?key=<order id>` shows an order's
    /// refusals beside its other events.
    pub subject: String,
    pub message: String,
}

/// Someone asks to change a product's on-hand by `delta` (a command: the
/// worker decides, and records `stock.adjusted` or
/// `stock.adjustment_refused`). With `expected_on_hand` it is a
/// compare-and-set: refused unless on-hand is that figure when decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockAdjustmentRequested {
    pub adjustment_id: AdjustmentId,
    pub product_id: ProductId,
    pub delta: i64,
    pub reason: AdjustmentReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_on_hand: Option<i64>,
    /// Where the stock is; none: the default location (every event
    /// before locations, upcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// A decided change of on-hand: the worker applied an adjustment (or the
/// difference a count found). It carries the request's description, so
/// the stock's history names its cause without a join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockAdjusted {
    pub adjustment_id: AdjustmentId,
    pub product_id: ProductId,
    pub delta: i64,
    pub reason: AdjustmentReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For a count: the units counted (`delta` is what it found against
    /// the book).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<i64>,
    /// Where the stock is; none: the default location (every event
    /// before locations, upcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// Someone counted a product's units on the shelf at `counted_at` (Unix
/// milliseconds). A command: the worker decides the delta against the book
/// as of that moment (movements of a later time added back, as Square
/// counts) and records it as `stock.adjusted` with reason `cycle_count`,
/// or refuses it as an adjustment is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockCounted {
    pub adjustment_id: AdjustmentId,
    pub product_id: ProductId,
    pub counted: i64,
    pub counted_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_on_hand: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Where the stock is; none: the default location (every event
    /// before locations, upcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// The worker refused an adjustment; `on_hand` and `reserved` are the
/// figures it found, `held_by` the confirmed orders holding the stock (for
/// `below_reserved`; at most `HELD_BY_NAMED` of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockAdjustmentRefused {
    pub adjustment_id: AdjustmentId,
    pub product_id: ProductId,
    pub delta: i64,
    pub reason: AdjustmentReason,
    pub refusal: AdjustmentRefusal,
    pub on_hand: i64,
    pub reserved: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<OrderId>,
    pub message: String,
    /// Where the stock is; none: the default location (every event
    /// before locations, upcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
}

/// How many of the orders holding a product's stock a refusal names.
pub const HELD_BY_NAMED: usize = 20;

/// A webhook subscription: matching events after `start_after` are POSTed
/// to `url`, in `seq` order. `event_types` as the feed's `types` (empty:
/// every type). The secret is not in the event (events are readable by
/// anyone with `read`): the gateway stores it beside the delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionCreated {
    pub subscription_id: Uuid,
    pub url: String,
    #[serde(default)]
    pub event_types: Vec<String>,
    pub start_after: i64,
}

/// A subscription stops delivering; its cursor is kept. `automatic`: the
/// deliverer paused it after failing for its allowed time (the worker then
/// raises an alert).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionPaused {
    pub subscription_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub automatic: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionResumed {
    pub subscription_id: Uuid,
}

/// Deliver again from after `seq`. The deliverer takes a rewind up once
/// (by this event's id), so replaying the archive sends nothing again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRewound {
    pub subscription_id: Uuid,
    pub seq: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionDeleted {
    pub subscription_id: Uuid,
}
