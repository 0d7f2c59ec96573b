//! The events that travel through the log, and the envelope that carries them
//! (docs/architecture.md). The envelope is what the log stores; the typed
//! `DomainEvent` is what the domain and the projections work with.

use super::ids::{LocationId, OrderId, ProductId, PurchaseOrderId, TransferId};
pub use super::payloads::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use uuid::Uuid;

/// The schema version of an event type this build writes, which is also
/// the newest it understands; None for a type this build does not know.
pub fn current_version(event_type: &str) -> Option<u32> {
    EventType::from_name(event_type).map(EventType::version)
}

/// What the log stores: a typed event's JSON plus the routing and identity
/// fields every consumer needs without decoding the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    pub event_id: Uuid,
    /// The event's type by name (`order.placed`).
    #[schema(value_type = String)]
    pub event_type: EnvelopeType,
    /// The aggregate id (product id or order id); it picks the partition.
    pub key: String,
    pub occurred_at: DateTime<Utc>,
    pub version: u32,
    pub payload: serde_json::Value,
    /// Who sent the command: the name of the gateway token it came with.
    /// Absent on a gateway without tokens and on the workers' decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl Envelope {
    /// The envelope, naming `actor` as who sent it.
    pub fn sent_by(mut self, actor: Option<&str>) -> Envelope {
        self.actor = actor.map(str::to_string);
        self
    }
}

/// Defines every event type once: its payload struct (the variant's name),
/// its name on the wire and its schema version. From that one table come
/// `EventType`, `DomainEvent` and the conversions between them and JSON.
macro_rules! event_types {
    ($($variant:ident => $name:literal, version $version:literal;)*) => {
        /// The kind of an event, without its payload.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($variant,)*
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            /// The name the envelope, the archive and the API use.
            pub const fn name(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            /// The schema version this build writes, also the newest it
            /// reads. An older version is upcast when read (see `upcast`);
            /// a newer one is refused, so an old worker never guesses at a
            /// shape it does not know (the event goes to the dead letters).
            pub const fn version(self) -> u32 {
                match self {
                    $(EventType::$variant => $version,)*
                }
            }

            pub fn from_name(name: &str) -> Option<EventType> {
                match name {
                    $($name => Some(EventType::$variant),)*
                    _ => None,
                }
            }
        }

        #[derive(Debug, Clone, PartialEq)]
        pub enum DomainEvent {
            $($variant($variant),)*
        }

        impl DomainEvent {
            pub fn kind(&self) -> EventType {
                match self {
                    $(DomainEvent::$variant(_) => EventType::$variant,)*
                }
            }

            fn payload(&self) -> serde_json::Value {
                let value = match self {
                    $(DomainEvent::$variant(e) => serde_json::to_value(e),)*
                };
                value.expect("domain events always serialize")
            }

            /// The typed event of `kind` from a payload of its current shape.
            fn from_payload(
                kind: EventType,
                payload: &serde_json::Value,
            ) -> Result<DomainEvent, serde_json::Error> {
                Ok(match kind {
                    $(EventType::$variant => DomainEvent::$variant(Deserialize::deserialize(payload)?),)*
                })
            }
        }
    };
}

event_types! {
    ProductCreated => "product.created", version 1;
    // v2 added `purchase_order_id` (a receipt that closes a purchase order),
    // v3 `location_id`, as every stock event's v2 did.
    StockReceived => "stock.received", version 3;
    // v2 added `hold_until` (a checkout's hold).
    OrderPlaced => "order.placed", version 2;
    // v2 added `allocations` (stock in several locations), v3 `hold_until`
    // (confirmed as a checkout's hold) and `backordered`.
    OrderConfirmed => "order.confirmed", version 3;
    OrderRejected => "order.rejected", version 1;
    OrderCancelRequested => "order.cancel_requested", version 1;
    OrderShipRequested => "order.ship_requested", version 1;
    OrderCancelled => "order.cancelled", version 1;
    // v2 added `shipment_id`, `lines` and `complete` (partial shipments),
    // v3 each line's `location_id`.
    OrderShipped => "order.shipped", version 3;
    StockLow => "stock.low", version 1;
    // v2 added `location_id` (where it is to be, or was, received).
    PurchaseOrderDrafted => "purchase_order.drafted", version 2;
    PurchaseOrderReceived => "purchase_order.received", version 2;
    AlertRaised => "alert.raised", version 1;
    StockAdjustmentRequested => "stock.adjustment_requested", version 2;
    StockAdjusted => "stock.adjusted", version 2;
    StockAdjustmentRefused => "stock.adjustment_refused", version 2;
    StockCounted => "stock.counted", version 2;
    OrderShipmentRequested => "order.shipment_requested", version 1;
    OrderShipmentRefused => "order.shipment_refused", version 1;
    OrderReturnRequested => "order.return_requested", version 1;
    OrderReturned => "order.returned", version 1;
    OrderReturnRefused => "order.return_refused", version 1;
    LocationCreated => "location.created", version 1;
    LocationUpdated => "location.updated", version 1;
    TransferRequested => "transfer.requested", version 1;
    TransferShipped => "transfer.shipped", version 1;
    TransferRefused => "transfer.refused", version 1;
    TransferReceiveRequested => "transfer.receive_requested", version 1;
    TransferReceived => "transfer.received", version 1;
    OrderCommitRequested => "order.commit_requested", version 1;
    OrderCommitted => "order.committed", version 1;
    OrderExpireRequested => "order.expire_requested", version 1;
    OrderExpired => "order.expired", version 1;
    OrderExpiryRefused => "order.expiry_refused", version 1;
    ProductPolicySet => "product.policy_set", version 1;
    OrderBackorderFilled => "order.backorder_filled", version 1;
    BackorderFillRequested => "product.backorder_fill_requested", version 1;
    SubscriptionCreated => "subscription.created", version 1;
    SubscriptionPaused => "subscription.paused", version 1;
    SubscriptionResumed => "subscription.resumed", version 1;
    SubscriptionRewound => "subscription.rewound", version 1;
    SubscriptionDeleted => "subscription.deleted", version 1;
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An envelope's type as the log holds it: one of this build's event
/// types, or a name it does not know (a newer release's, or not an event
/// at all), kept as written so that the entry can be dead-lettered, shown
/// and replayed. Written as its name, either way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EnvelopeType {
    Known(EventType),
    Unknown(String),
}

impl EnvelopeType {
    pub fn as_str(&self) -> &str {
        match self {
            EnvelopeType::Known(kind) => kind.name(),
            EnvelopeType::Unknown(name) => name,
        }
    }

    /// The type, when this build knows it.
    pub fn known(&self) -> Option<EventType> {
        match self {
            EnvelopeType::Known(kind) => Some(*kind),
            EnvelopeType::Unknown(_) => None,
        }
    }

    /// The name as a metric label: no allocation for a known type.
    pub fn label(&self) -> std::borrow::Cow<'static, str> {
        match self {
            EnvelopeType::Known(kind) => std::borrow::Cow::Borrowed(kind.name()),
            EnvelopeType::Unknown(name) => std::borrow::Cow::Owned(name.clone()),
        }
    }
}

impl From<EventType> for EnvelopeType {
    fn from(kind: EventType) -> EnvelopeType {
        EnvelopeType::Known(kind)
    }
}

impl From<&str> for EnvelopeType {
    fn from(name: &str) -> EnvelopeType {
        match EventType::from_name(name) {
            Some(kind) => EnvelopeType::Known(kind),
            None => EnvelopeType::Unknown(name.to_string()),
        }
    }
}

impl From<String> for EnvelopeType {
    fn from(name: String) -> EnvelopeType {
        match EventType::from_name(&name) {
            Some(kind) => EnvelopeType::Known(kind),
            None => EnvelopeType::Unknown(name),
        }
    }
}

impl std::fmt::Display for EnvelopeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EnvelopeType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EnvelopeType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(EnvelopeType::from)
    }
}

/// The aggregates a set of events touches (see `DomainEvent::touches`),
/// sorted: the store locks stock rows in this order, so concurrent workers
/// cannot deadlock on each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub products: BTreeSet<ProductId>,
    pub orders: BTreeSet<OrderId>,
    pub purchase_orders: BTreeSet<PurchaseOrderId>,
    /// (product, location) whose open orders (some of them:
    /// `HELD_BY_NAMED`) must be loaded, to name who holds the stock there.
    pub holders_of: BTreeSet<(ProductId, LocationId)>,
    /// (product, location, moment): the on-hand its written ledger rows
    /// moved there after that moment, for a count made then.
    pub moved_since: BTreeSet<(ProductId, LocationId, i64)>,
    /// Every location must be loaded: the batch allocates an order's
    /// lines, or changes a location.
    pub locations: bool,
    pub transfers: BTreeSet<TransferId>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("event `{event_type}` has version {version}, newer than the {understood} this worker understands")]
    NewerVersion {
        event_type: String,
        version: u32,
        understood: u32,
    },
    #[error("event `{event_type}` has version 0; versions start at 1")]
    NoVersion { event_type: String },
    #[error("invalid payload for `{event_type}`: {source}")]
    InvalidPayload {
        event_type: String,
        source: serde_json::Error,
    },
}

impl DomainEvent {
    pub fn event_type(&self) -> &'static str {
        self.kind().name()
    }

    /// The aggregate id: product, stock and purchase-order events are keyed
    /// by product, order events by order, so each aggregate's events keep
    /// their order in one partition. Alerts are keyed by their subject.
    pub fn key(&self) -> String {
        match self {
            DomainEvent::ProductCreated(e) => e.product_id.to_string(),
            DomainEvent::StockReceived(e) => e.product_id.to_string(),
            DomainEvent::OrderPlaced(e) => e.order_id.to_string(),
            DomainEvent::OrderConfirmed(e) => e.order_id.to_string(),
            DomainEvent::OrderRejected(e) => e.order_id.to_string(),
            DomainEvent::OrderCancelRequested(e) => e.order_id.to_string(),
            DomainEvent::OrderShipRequested(e) => e.order_id.to_string(),
            DomainEvent::OrderCancelled(e) => e.order_id.to_string(),
            DomainEvent::OrderShipped(e) => e.order_id.to_string(),
            DomainEvent::OrderShipmentRequested(e) => e.order_id.to_string(),
            DomainEvent::OrderShipmentRefused(e) => e.order_id.to_string(),
            DomainEvent::OrderReturnRequested(e) => e.order_id.to_string(),
            DomainEvent::OrderReturned(e) => e.order_id.to_string(),
            DomainEvent::OrderReturnRefused(e) => e.order_id.to_string(),
            DomainEvent::OrderCommitRequested(e) => e.order_id.to_string(),
            DomainEvent::OrderCommitted(e) => e.order_id.to_string(),
            DomainEvent::OrderExpireRequested(e) => e.order_id.to_string(),
            DomainEvent::OrderExpired(e) => e.order_id.to_string(),
            DomainEvent::OrderExpiryRefused(e) => e.order_id.to_string(),
            DomainEvent::OrderBackorderFilled(e) => e.order_id.to_string(),
            DomainEvent::ProductPolicySet(e) => e.product_id.to_string(),
            DomainEvent::BackorderFillRequested(e) => e.product_id.to_string(),
            DomainEvent::StockLow(e) => e.product_id.to_string(),
            DomainEvent::PurchaseOrderDrafted(e) => e.product_id.to_string(),
            DomainEvent::PurchaseOrderReceived(e) => e.product_id.to_string(),
            DomainEvent::AlertRaised(e) => e.subject.clone(),
            DomainEvent::StockAdjustmentRequested(e) => e.product_id.to_string(),
            DomainEvent::StockAdjusted(e) => e.product_id.to_string(),
            DomainEvent::StockAdjustmentRefused(e) => e.product_id.to_string(),
            DomainEvent::StockCounted(e) => e.product_id.to_string(),
            DomainEvent::LocationCreated(e) => e.location_id.to_string(),
            DomainEvent::LocationUpdated(e) => e.location_id.to_string(),
            DomainEvent::TransferRequested(e) => e.transfer_id.to_string(),
            DomainEvent::TransferShipped(e) => e.transfer_id.to_string(),
            DomainEvent::TransferRefused(e) => e.transfer_id.to_string(),
            DomainEvent::TransferReceiveRequested(e) => e.transfer_id.to_string(),
            DomainEvent::TransferReceived(e) => e.transfer_id.to_string(),
            DomainEvent::SubscriptionCreated(e) => e.subscription_id.to_string(),
            DomainEvent::SubscriptionPaused(e) => e.subscription_id.to_string(),
            DomainEvent::SubscriptionResumed(e) => e.subscription_id.to_string(),
            DomainEvent::SubscriptionRewound(e) => e.subscription_id.to_string(),
            DomainEvent::SubscriptionDeleted(e) => e.subscription_id.to_string(),
        }
    }

    /// The location a stock event names; None for the default location and
    /// for events that are not about stock.
    pub fn location_id(&self) -> Option<LocationId> {
        match self {
            DomainEvent::StockReceived(e) => e.location_id,
            DomainEvent::StockAdjustmentRequested(e) => e.location_id,
            DomainEvent::StockAdjusted(e) => e.location_id,
            DomainEvent::StockAdjustmentRefused(e) => e.location_id,
            DomainEvent::StockCounted(e) => e.location_id,
            DomainEvent::OrderReturnRequested(e) => e.location_id,
            DomainEvent::OrderReturned(e) => e.location_id,
            _ => None,
        }
    }

    /// Adds to `touched` the aggregates this event reads or changes, which
    /// are what must be loaded (and, for stock, locked) before the domain
    /// handles it. An order's products come with the order (its lines).
    pub fn touches(&self, touched: &mut Touched) {
        match self {
            DomainEvent::ProductCreated(ProductCreated { product_id, .. })
            | DomainEvent::ProductPolicySet(ProductPolicySet { product_id, .. })
            | DomainEvent::BackorderFillRequested(BackorderFillRequested { product_id })
            | DomainEvent::StockLow(StockLow { product_id, .. })
            | DomainEvent::StockAdjusted(StockAdjusted { product_id, .. })
            | DomainEvent::StockAdjustmentRefused(StockAdjustmentRefused { product_id, .. }) => {
                touched.products.insert(*product_id);
            }
            // Deciding it may name the orders holding the product's stock:
            // those are loaded too.
            // Deciding it may draft a purchase order, which names the
            // first active location: every location is loaded.
            DomainEvent::StockAdjustmentRequested(e) => {
                touched.locations = true;
                touched.products.insert(e.product_id);
                let location = e.location_id.unwrap_or(LocationId::DEFAULT);
                touched.holders_of.insert((e.product_id, location));
            }
            // A count also needs the stock moved since it was made.
            DomainEvent::StockCounted(e) => {
                touched.locations = true;
                touched.products.insert(e.product_id);
                let location = e.location_id.unwrap_or(LocationId::DEFAULT);
                touched.holders_of.insert((e.product_id, location));
                touched
                    .moved_since
                    .insert((e.product_id, location, e.counted_at));
            }
            DomainEvent::StockReceived(e) => {
                touched.products.insert(e.product_id);
                touched.purchase_orders.extend(e.purchase_order_id);
            }
            DomainEvent::OrderPlaced(e) => {
                touched.locations = true;
                touched.orders.insert(e.order_id);
                touched
                    .products
                    .extend(e.items.iter().map(|line| line.product_id));
            }
            // A confirmation reserves at its allocations' locations, which
            // must be known and active.
            DomainEvent::OrderConfirmed(OrderConfirmed { order_id, .. })
            | DomainEvent::OrderBackorderFilled(OrderBackorderFilled { order_id, .. }) => {
                touched.locations = true;
                touched.orders.insert(*order_id);
            }
            DomainEvent::OrderRejected(OrderRejected { order_id, .. })
            | DomainEvent::OrderCancelRequested(OrderCancelRequested { order_id })
            | DomainEvent::OrderShipRequested(OrderShipRequested { order_id })
            | DomainEvent::OrderCancelled(OrderCancelled { order_id })
            | DomainEvent::OrderShipped(OrderShipped { order_id, .. })
            | DomainEvent::OrderShipmentRequested(OrderShipmentRequested { order_id, .. })
            | DomainEvent::OrderShipmentRefused(OrderShipmentRefused { order_id, .. })
            | DomainEvent::OrderReturnRequested(OrderReturnRequested { order_id, .. })
            | DomainEvent::OrderReturned(OrderReturned { order_id, .. })
            | DomainEvent::OrderReturnRefused(OrderReturnRefused { order_id, .. })
            | DomainEvent::OrderCommitRequested(OrderCommitRequested { order_id })
            | DomainEvent::OrderCommitted(OrderCommitted { order_id })
            | DomainEvent::OrderExpireRequested(OrderExpireRequested { order_id, .. })
            | DomainEvent::OrderExpired(OrderExpired { order_id })
            | DomainEvent::OrderExpiryRefused(OrderExpiryRefused { order_id, .. }) => {
                touched.orders.insert(*order_id);
            }
            DomainEvent::PurchaseOrderDrafted(PurchaseOrderDrafted {
                purchase_order_id,
                product_id,
                ..
            })
            | DomainEvent::PurchaseOrderReceived(PurchaseOrderReceived {
                purchase_order_id,
                product_id,
                ..
            }) => {
                touched.products.insert(*product_id);
                touched.purchase_orders.insert(*purchase_order_id);
            }
            DomainEvent::LocationCreated(_) | DomainEvent::LocationUpdated(_) => {
                touched.locations = true;
            }
            // A transfer's products come with it (its lines), as an
            // order's do; a new one names them.
            DomainEvent::TransferRequested(e) => {
                touched.locations = true; // to name them in a refusal
                touched.transfers.insert(e.transfer_id);
                touched
                    .products
                    .extend(e.lines.iter().map(|l| l.product_id));
            }
            DomainEvent::TransferShipped(TransferShipped { transfer_id })
            | DomainEvent::TransferRefused(TransferRefused { transfer_id, .. })
            | DomainEvent::TransferReceiveRequested(TransferReceiveRequested {
                transfer_id, ..
            })
            | DomainEvent::TransferReceived(TransferReceived { transfer_id, .. }) => {
                touched.transfers.insert(*transfer_id);
            }
            DomainEvent::AlertRaised(_)
            | DomainEvent::SubscriptionCreated(_)
            | DomainEvent::SubscriptionPaused(_)
            | DomainEvent::SubscriptionResumed(_)
            | DomainEvent::SubscriptionRewound(_)
            | DomainEvent::SubscriptionDeleted(_) => {}
        }
    }

    /// A new envelope with a fresh UUID v7 (time-ordered) id.
    pub fn into_envelope(self, occurred_at: DateTime<Utc>) -> Envelope {
        self.envelope_with_id(Uuid::now_v7(), occurred_at)
    }

    /// A new envelope under `event_id`, one the caller chose (the gateway
    /// derives it from an Idempotency-Key, so a retry carries the same id).
    pub fn into_envelope_with_id(self, event_id: Uuid, occurred_at: DateTime<Utc>) -> Envelope {
        self.envelope_with_id(event_id, occurred_at)
    }

    /// A follow-up event (a decision) gets an id derived from the event that
    /// caused it and its place among that event's follow-ups, so deciding
    /// again yields the same id and is deduplicated downstream. The id is
    /// still a valid UUID v7: its timestamp is the cause's, its "random" bits
    /// a hash of (cause id, ordinal, follow-up type). `occurred_at` is when
    /// the decision was made.
    pub fn follow_up_of(
        &self,
        cause: &Envelope,
        ordinal: usize,
        occurred_at: DateTime<Utc>,
    ) -> Envelope {
        let name = format!("{ordinal}/{}", self.event_type());
        let digest = Uuid::new_v5(&cause.event_id, name.as_bytes());
        let millis = cause.occurred_at.timestamp_millis().max(0) as u64;
        let random: [u8; 10] = digest.as_bytes()[6..16].try_into().expect("10 bytes");
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        // Millisecond precision, as the archive keeps it: a follow-up
        // republished from the archive is then the very envelope first sent.
        let occurred_at =
            DateTime::from_timestamp_millis(occurred_at.timestamp_millis()).unwrap_or(occurred_at);
        self.envelope_with_id(id, occurred_at)
    }

    fn envelope_with_id(&self, event_id: Uuid, occurred_at: DateTime<Utc>) -> Envelope {
        Envelope {
            event_id,
            event_type: EnvelopeType::Known(self.kind()),
            key: self.key(),
            occurred_at,
            version: self.kind().version(),
            payload: self.payload(),
            actor: None,
        }
    }

    /// Reads an envelope of any version this build understands: older
    /// payloads are upcast to the current shape first.
    pub fn from_envelope(envelope: &Envelope) -> Result<DomainEvent, DecodeError> {
        let kind = envelope
            .event_type
            .known()
            .ok_or_else(|| DecodeError::UnknownType(envelope.event_type.to_string()))?;
        let understood = kind.version();
        if envelope.version > understood {
            return Err(DecodeError::NewerVersion {
                event_type: envelope.event_type.to_string(),
                version: envelope.version,
                understood,
            });
        }
        if envelope.version == 0 {
            return Err(DecodeError::NoVersion {
                event_type: envelope.event_type.to_string(),
            });
        }
        let decoded = if envelope.version < understood {
            let payload = upcast(kind, envelope.version, envelope.payload.clone());
            DomainEvent::from_payload(kind, &payload)
        } else {
            DomainEvent::from_payload(kind, &envelope.payload)
        };
        decoded.map_err(|source| DecodeError::InvalidPayload {
            event_type: envelope.event_type.to_string(),
            source,
        })
    }
}

/// Brings an older payload of `event_type` up to the current version, one
/// version step at a time, so each step stays small and testable. Events in
/// the log and in the archive are never rewritten: they are upcast each time
/// they are read (by a worker, or by `rebuild`).
pub fn upcast(
    kind: EventType,
    mut version: u32,
    mut payload: serde_json::Value,
) -> serde_json::Value {
    while version < kind.version() {
        // One arm per (type, version) step as the schema evolves.
        match (kind, version) {
            // v1 → v2: every v1 receipt was a direct one (no purchase order).
            (EventType::StockReceived, 1) => {
                if let Some(fields) = payload.as_object_mut() {
                    fields
                        .entry("purchase_order_id")
                        .or_insert(serde_json::Value::Null);
                }
            }
            // A stock event from before locations: its stock is at the
            // default location.
            (EventType::StockReceived, 2)
            | (
                EventType::StockAdjustmentRequested
                | EventType::StockAdjusted
                | EventType::StockAdjustmentRefused
                | EventType::StockCounted,
                1,
            ) => {
                if let Some(fields) = payload.as_object_mut() {
                    fields
                        .entry("location_id")
                        .or_insert(serde_json::Value::Null);
                }
            }
            // v1 → v2: no order before holds had one.
            (EventType::OrderPlaced, 1) => {
                if let Some(fields) = payload.as_object_mut() {
                    fields
                        .entry("hold_until")
                        .or_insert(serde_json::Value::Null);
                }
            }
            // v1 → v2: a v1 confirmation reserved at the default location.
            (EventType::OrderConfirmed, 1) => {
                if let Some(fields) = payload.as_object_mut() {
                    fields
                        .entry("allocations")
                        .or_insert(serde_json::Value::Null);
                }
            }
            // v2 → v3: no confirmation before holds was a hold.
            (EventType::OrderConfirmed, 2) => {
                if let Some(fields) = payload.as_object_mut() {
                    fields
                        .entry("hold_until")
                        .or_insert(serde_json::Value::Null);
                }
            }
            // v1 → v2: a v1 shipment shipped the whole order, which only a
            // confirmed order (nothing shipped yet) could do.
            (EventType::OrderShipped, 1) => {
                if let Some(fields) = payload.as_object_mut() {
                    fields
                        .entry("shipment_id")
                        .or_insert(serde_json::Value::Null);
                    fields.entry("lines").or_insert(serde_json::Value::Null);
                    fields
                        .entry("complete")
                        .or_insert(serde_json::Value::Bool(true));
                }
            }
            _ => {}
        }
        version += 1;
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;

    fn placed() -> DomainEvent {
        DomainEvent::OrderPlaced(OrderPlaced {
            order_id: OrderId::new(),
            customer_email: "a@example.com".into(),
            items: vec![OrderLine {
                product_id: ProductId::new(),
                quantity: 2,
                unit_price: Money::from_cents(150).unwrap(),
            }],
            total: Money::from_cents(300).unwrap(),
            hold_until: None,
        })
    }

    #[test]
    fn an_envelope_keeps_a_type_it_does_not_know_as_written() {
        for name in ["order.placed", "order.teleported", ""] {
            let kind = EnvelopeType::from(name);
            assert_eq!(kind.as_str(), name);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<EnvelopeType>(&json).unwrap(), kind);
        }
        assert_eq!(
            EnvelopeType::from("order.placed").known(),
            Some(EventType::OrderPlaced)
        );
        assert_eq!(EnvelopeType::from("order.teleported").known(), None);
    }

    #[test]
    fn every_event_type_has_one_name_and_a_version() {
        let names: std::collections::BTreeSet<&str> =
            EventType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), EventType::ALL.len(), "names are unique");
        for kind in EventType::ALL {
            assert_eq!(EventType::from_name(kind.name()), Some(*kind));
            assert!(kind.version() >= 1);
        }
        assert_eq!(EventType::from_name("order.teleported"), None);
    }

    #[test]
    fn events_name_the_aggregates_they_touch() {
        let mut touched = Touched::default();
        let DomainEvent::OrderPlaced(order) = placed() else {
            unreachable!()
        };
        DomainEvent::OrderPlaced(order.clone()).touches(&mut touched);
        let po = PurchaseOrderId::new();
        DomainEvent::PurchaseOrderReceived(PurchaseOrderReceived {
            purchase_order_id: po,
            product_id: order.items[0].product_id,
            location_id: None,
        })
        .touches(&mut touched);
        DomainEvent::OrderShipped(OrderShipped {
            order_id: order.order_id,
            shipment_id: None,
            lines: None,
            complete: true,
        })
        .touches(&mut touched);
        assert_eq!(touched.orders, BTreeSet::from([order.order_id]));
        assert_eq!(
            touched.products,
            BTreeSet::from([order.items[0].product_id])
        );
        assert_eq!(touched.purchase_orders, BTreeSet::from([po]));
    }

    #[test]
    fn envelope_round_trips() {
        let event = placed();
        let env = event.clone().into_envelope(Utc::now());
        assert_eq!(env.key, event.key());
        let json = serde_json::to_string(&env).unwrap();
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(DomainEvent::from_envelope(&back).unwrap(), event);
    }

    #[test]
    fn follow_up_ids_are_deterministic_v7() {
        let cause = placed().into_envelope(Utc::now());
        let follow = |c: &Envelope| {
            DomainEvent::OrderRejected(OrderRejected {
                order_id: OrderId::default(),
                reason: "x".into(),
            })
            .follow_up_of(c, 0, Utc::now())
        };
        let a = follow(&cause);
        let b = follow(&cause);
        assert_eq!(a.event_id, b.event_id);
        assert_eq!(a.event_id.get_version_num(), 7);
        assert_ne!(a.event_id, cause.event_id);
        let second = DomainEvent::OrderRejected(OrderRejected {
            order_id: OrderId::default(),
            reason: "x".into(),
        })
        .follow_up_of(&cause, 1, Utc::now());
        assert_ne!(a.event_id, second.event_id, "ordinals give distinct ids");
    }

    #[test]
    fn unknown_and_newer_events_are_refused() {
        let mut env = placed().into_envelope(Utc::now());
        env.version = current_version("order.placed").unwrap() + 1;
        let refused = DomainEvent::from_envelope(&env).unwrap_err();
        assert!(matches!(refused, DecodeError::NewerVersion { .. }));
        assert!(
            refused.to_string().contains("version 3, newer than the 2"),
            "{refused}"
        );
        env.version = 0;
        assert!(matches!(
            DomainEvent::from_envelope(&env),
            Err(DecodeError::NoVersion { .. })
        ));
        env.version = 1;
        env.event_type = "order.teleported".into();
        assert!(matches!(
            DomainEvent::from_envelope(&env),
            Err(DecodeError::UnknownType(_))
        ));
        env.event_type = "order.placed".into();
        env.payload = serde_json::json!({"nope": 1});
        assert!(matches!(
            DomainEvent::from_envelope(&env),
            Err(DecodeError::InvalidPayload { .. })
        ));
    }

    #[test]
    fn stock_received_v1_is_upcast_to_the_current_version() {
        let product_id = ProductId::new();
        let v1 = Envelope {
            event_id: Uuid::now_v7(),
            event_type: "stock.received".into(),
            key: product_id.to_string(),
            occurred_at: Utc::now(),
            version: 1,
            payload: serde_json::json!({"product_id": product_id, "quantity": 7}),
            actor: None,
        };
        assert_eq!(
            DomainEvent::from_envelope(&v1).unwrap(),
            DomainEvent::StockReceived(StockReceived {
                location_id: None,
                product_id,
                quantity: 7,
                purchase_order_id: None,
            })
        );
        // What this build writes is the current version, and reads back as is.
        let current = DomainEvent::StockReceived(StockReceived {
            location_id: None,
            product_id,
            quantity: 3,
            purchase_order_id: Some(PurchaseOrderId::new()),
        })
        .into_envelope(Utc::now());
        assert_eq!(current.version, 3);
        assert!(DomainEvent::from_envelope(&current).is_ok());
        let mut newer = current.clone();
        newer.version = 4;
        assert!(matches!(
            DomainEvent::from_envelope(&newer),
            Err(DecodeError::NewerVersion { understood: 3, .. })
        ));
        // A v2 receipt (before locations) is at the default location.
        let mut v2 = current.clone();
        v2.version = 2;
        v2.payload.as_object_mut().unwrap().remove("location_id");
        assert!(matches!(
            DomainEvent::from_envelope(&v2),
            Ok(DomainEvent::StockReceived(StockReceived {
                location_id: None,
                ..
            }))
        ));
    }

    #[test]
    fn stock_events_of_v1_are_at_the_default_location() {
        let product_id = ProductId::new();
        for (event_type, payload) in [
            (
                "stock.adjustment_requested",
                serde_json::json!({"adjustment_id": Uuid::now_v7(), "product_id": product_id, "delta": -1, "reason": "damaged"}),
            ),
            (
                "stock.adjusted",
                serde_json::json!({"adjustment_id": Uuid::now_v7(), "product_id": product_id, "delta": -1, "reason": "damaged"}),
            ),
            (
                "stock.counted",
                serde_json::json!({"adjustment_id": Uuid::now_v7(), "product_id": product_id, "counted": 4, "counted_at": 0}),
            ),
        ] {
            let v1 = Envelope {
                event_id: Uuid::now_v7(),
                event_type: event_type.into(),
                key: product_id.to_string(),
                occurred_at: Utc::now(),
                version: 1,
                payload,
                actor: None,
            };
            let upcast = upcast(v1.event_type.known().unwrap(), 1, v1.payload.clone());
            assert_eq!(
                upcast["location_id"],
                serde_json::Value::Null,
                "{event_type}"
            );
            assert!(DomainEvent::from_envelope(&v1).is_ok(), "{event_type}");
        }
    }

    #[test]
    fn order_shipped_v1_is_upcast_to_a_complete_shipment_of_every_line() {
        let order_id = OrderId::new();
        let v1 = Envelope {
            event_id: Uuid::now_v7(),
            event_type: "order.shipped".into(),
            key: order_id.to_string(),
            occurred_at: Utc::now(),
            version: 1,
            payload: serde_json::json!({"order_id": order_id}),
            actor: None,
        };
        assert_eq!(
            DomainEvent::from_envelope(&v1).unwrap(),
            DomainEvent::OrderShipped(OrderShipped {
                order_id,
                shipment_id: None,
                lines: None,
                complete: true,
            })
        );
    }
}
