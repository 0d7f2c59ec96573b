//! The events that travel through the log, and the envelope that carries them
//! (DESIGN.md section 3). The envelope is what the log stores; the typed
//! `DomainEvent` is what the domain and the projections work with.

use super::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version of each event type this build writes, which is also
/// the newest it understands. An older version is upcast when read (see
/// `upcast`); a newer one is refused, so an old worker never guesses at a
/// shape it does not know (the event goes to the dead letters).
/// None for a type this build does not know.
pub fn current_version(event_type: &str) -> Option<u32> {
    match event_type {
        // v2 added `purchase_order_id` (a receipt that closes a purchase order).
        "stock.received" => Some(2),
        "product.created"
        | "order.placed"
        | "order.confirmed"
        | "order.rejected"
        | "order.cancel_requested"
        | "order.ship_requested"
        | "order.cancelled"
        | "order.shipped"
        | "stock.low"
        | "purchase_order.drafted"
        | "purchase_order.received"
        | "alert.raised" => Some(1),
        _ => None,
    }
}

/// What the log stores: a typed event's JSON plus the routing and identity
/// fields every consumer needs without decoding the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub event_type: String,
    /// The aggregate id (product id or order id); it picks the partition.
    pub key: String,
    pub occurred_at: DateTime<Utc>,
    pub version: u32,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub category_name: String,
    pub low_stock_threshold: i64,
    pub reorder_quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReceived {
    pub product_id: Uuid,
    pub quantity: i64,
    /// Set when the receipt is the delivery of a purchase order, which it
    /// closes; None for stock received directly (POST .../stock).
    pub purchase_order_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    /// The catalog price when the order was accepted: the order is charged at
    /// this price even if the catalog changes before it is decided.
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_email: String,
    pub items: Vec<OrderLine>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub order_id: Uuid,
    pub reason: String,
}

/// A customer (or operator) asks to cancel an order. A command: the worker
/// decides, and records the outcome as `order.cancelled` or a refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelRequested {
    pub order_id: Uuid,
}

/// The warehouse asks to ship an order (a command, like a cancel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipRequested {
    pub order_id: Uuid,
}

/// The reservation is released: each line's quantity goes back to available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
}

/// The reservation is committed: on-hand and reserved both drop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: Uuid,
}

/// Available stock of a product fell below its threshold (once per crossing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockLow {
    pub product_id: Uuid,
    pub sku: String,
    pub available: i64,
    pub threshold: i64,
}

/// A purchase order for the product's reorder quantity; at most one is open
/// per product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseOrderDrafted {
    pub purchase_order_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
}

/// The supplier delivered a purchase order (a command: the worker closes the
/// order and receives its stock with `stock.received`, or refuses it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseOrderReceived {
    pub purchase_order_id: Uuid,
    pub product_id: Uuid,
}

/// Something an operator should see on the dashboard's alert feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRaised {
    pub alert_id: Uuid,
    /// What kind of alert: `dead_letter`, `low_stock`, `rejection`, ...
    pub kind: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    /// What it is about: an event id, a product id, an order id. It is also
    /// the event's key, so `GET /api/events?key=<order id>` shows an order's
    /// refusals beside its other events.
    pub subject: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    ProductCreated(ProductCreated),
    StockReceived(StockReceived),
    OrderPlaced(OrderPlaced),
    OrderConfirmed(OrderConfirmed),
    OrderRejected(OrderRejected),
    OrderCancelRequested(OrderCancelRequested),
    OrderShipRequested(OrderShipRequested),
    OrderCancelled(OrderCancelled),
    OrderShipped(OrderShipped),
    StockLow(StockLow),
    PurchaseOrderDrafted(PurchaseOrderDrafted),
    PurchaseOrderReceived(PurchaseOrderReceived),
    AlertRaised(AlertRaised),
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
        match self {
            DomainEvent::ProductCreated(_) => "product.created",
            DomainEvent::StockReceived(_) => "stock.received",
            DomainEvent::OrderPlaced(_) => "order.placed",
            DomainEvent::OrderConfirmed(_) => "order.confirmed",
            DomainEvent::OrderRejected(_) => "order.rejected",
            DomainEvent::OrderCancelRequested(_) => "order.cancel_requested",
            DomainEvent::OrderShipRequested(_) => "order.ship_requested",
            DomainEvent::OrderCancelled(_) => "order.cancelled",
            DomainEvent::OrderShipped(_) => "order.shipped",
            DomainEvent::StockLow(_) => "stock.low",
            DomainEvent::PurchaseOrderDrafted(_) => "purchase_order.drafted",
            DomainEvent::PurchaseOrderReceived(_) => "purchase_order.received",
            DomainEvent::AlertRaised(_) => "alert.raised",
        }
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
            DomainEvent::StockLow(e) => e.product_id.to_string(),
            DomainEvent::PurchaseOrderDrafted(e) => e.product_id.to_string(),
            DomainEvent::PurchaseOrderReceived(e) => e.product_id.to_string(),
            DomainEvent::AlertRaised(e) => e.subject.clone(),
        }
    }

    fn payload(&self) -> serde_json::Value {
        let value = match self {
            DomainEvent::ProductCreated(e) => serde_json::to_value(e),
            DomainEvent::StockReceived(e) => serde_json::to_value(e),
            DomainEvent::OrderPlaced(e) => serde_json::to_value(e),
            DomainEvent::OrderConfirmed(e) => serde_json::to_value(e),
            DomainEvent::OrderRejected(e) => serde_json::to_value(e),
            DomainEvent::OrderCancelRequested(e) => serde_json::to_value(e),
            DomainEvent::OrderShipRequested(e) => serde_json::to_value(e),
            DomainEvent::OrderCancelled(e) => serde_json::to_value(e),
            DomainEvent::OrderShipped(e) => serde_json::to_value(e),
            DomainEvent::StockLow(e) => serde_json::to_value(e),
            DomainEvent::PurchaseOrderDrafted(e) => serde_json::to_value(e),
            DomainEvent::PurchaseOrderReceived(e) => serde_json::to_value(e),
            DomainEvent::AlertRaised(e) => serde_json::to_value(e),
        };
        value.expect("domain events always serialize")
    }

    /// A new envelope with a fresh UUID v7 (time-ordered) id.
    pub fn into_envelope(self, occurred_at: DateTime<Utc>) -> Envelope {
        self.envelope_with_id(Uuid::now_v7(), occurred_at)
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
            event_type: self.event_type().to_string(),
            key: self.key(),
            occurred_at,
            version: current_version(self.event_type())
                .expect("every domain event type has a version"),
            payload: self.payload(),
        }
    }

    /// Reads an envelope of any version this build understands: older
    /// payloads are upcast to the current shape first.
    pub fn from_envelope(envelope: &Envelope) -> Result<DomainEvent, DecodeError> {
        let understood = current_version(&envelope.event_type)
            .ok_or_else(|| DecodeError::UnknownType(envelope.event_type.clone()))?;
        if envelope.version > understood {
            return Err(DecodeError::NewerVersion {
                event_type: envelope.event_type.clone(),
                version: envelope.version,
                understood,
            });
        }
        if envelope.version == 0 {
            return Err(DecodeError::NoVersion {
                event_type: envelope.event_type.clone(),
            });
        }
        let upcast_payload;
        let payload = if envelope.version < understood {
            upcast_payload = upcast(
                &envelope.event_type,
                envelope.version,
                envelope.payload.clone(),
            );
            &upcast_payload
        } else {
            &envelope.payload
        };
        fn decode<T: serde::de::DeserializeOwned>(
            env: &Envelope,
            payload: &serde_json::Value,
        ) -> Result<T, DecodeError> {
            T::deserialize(payload).map_err(|source| DecodeError::InvalidPayload {
                event_type: env.event_type.clone(),
                source,
            })
        }
        Ok(match envelope.event_type.as_str() {
            "product.created" => DomainEvent::ProductCreated(decode(envelope, payload)?),
            "stock.received" => DomainEvent::StockReceived(decode(envelope, payload)?),
            "order.placed" => DomainEvent::OrderPlaced(decode(envelope, payload)?),
            "order.confirmed" => DomainEvent::OrderConfirmed(decode(envelope, payload)?),
            "order.rejected" => DomainEvent::OrderRejected(decode(envelope, payload)?),
            "order.cancel_requested" => {
                DomainEvent::OrderCancelRequested(decode(envelope, payload)?)
            }
            "order.ship_requested" => DomainEvent::OrderShipRequested(decode(envelope, payload)?),
            "order.cancelled" => DomainEvent::OrderCancelled(decode(envelope, payload)?),
            "order.shipped" => DomainEvent::OrderShipped(decode(envelope, payload)?),
            "stock.low" => DomainEvent::StockLow(decode(envelope, payload)?),
            "purchase_order.drafted" => {
                DomainEvent::PurchaseOrderDrafted(decode(envelope, payload)?)
            }
            "purchase_order.received" => {
                DomainEvent::PurchaseOrderReceived(decode(envelope, payload)?)
            }
            "alert.raised" => DomainEvent::AlertRaised(decode(envelope, payload)?),
            other => return Err(DecodeError::UnknownType(other.to_string())),
        })
    }
}

/// Brings an older payload of `event_type` up to the current version, one
/// version step at a time, so each step stays small and testable. Events in
/// the log and in the archive are never rewritten: they are upcast each time
/// they are read (by a worker, or by `rebuild`).
pub fn upcast(
    event_type: &str,
    mut version: u32,
    mut payload: serde_json::Value,
) -> serde_json::Value {
    while version < current_version(event_type).unwrap_or(version) {
        // One arm per (type, version) step as the schema evolves.
        #[allow(clippy::single_match)]
        match (event_type, version) {
            // v1 → v2: every v1 receipt was a direct one (no purchase order).
            ("stock.received", 1) => {
                if let Some(fields) = payload.as_object_mut() {
                    fields
                        .entry("purchase_order_id")
                        .or_insert(serde_json::Value::Null);
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

    fn placed() -> DomainEvent {
        DomainEvent::OrderPlaced(OrderPlaced {
            order_id: Uuid::now_v7(),
            customer_email: "a@example.com".into(),
            items: vec![OrderLine {
                product_id: Uuid::now_v7(),
                quantity: 2,
                unit_price: Money::from_cents(150).unwrap(),
            }],
            total: Money::from_cents(300).unwrap(),
        })
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
                order_id: Uuid::nil(),
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
            order_id: Uuid::nil(),
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
            refused.to_string().contains("version 2, newer than the 1"),
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
    fn stock_received_v1_is_upcast_to_v2() {
        let product_id = Uuid::now_v7();
        let v1 = Envelope {
            event_id: Uuid::now_v7(),
            event_type: "stock.received".into(),
            key: product_id.to_string(),
            occurred_at: Utc::now(),
            version: 1,
            payload: serde_json::json!({"product_id": product_id, "quantity": 7}),
        };
        assert_eq!(
            DomainEvent::from_envelope(&v1).unwrap(),
            DomainEvent::StockReceived(StockReceived {
                product_id,
                quantity: 7,
                purchase_order_id: None,
            })
        );
        // What this build writes is the current version, and reads back as is.
        let v2 = DomainEvent::StockReceived(StockReceived {
            product_id,
            quantity: 3,
            purchase_order_id: Some(Uuid::now_v7()),
        })
        .into_envelope(Utc::now());
        assert_eq!(v2.version, 2);
        assert!(DomainEvent::from_envelope(&v2).is_ok());
        let mut v3 = v2.clone();
        v3.version = 3;
        assert!(matches!(
            DomainEvent::from_envelope(&v3),
            Err(DecodeError::NewerVersion { understood: 2, .. })
        ));
    }
}
