//! The events that travel through the log, and the envelope that carries them
//! (DESIGN.md section 3). The envelope is what the log stores; the typed
//! `DomainEvent` is what the domain and the projections work with.

use super::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version this build writes, and the newest it understands.
pub const CURRENT_VERSION: u32 = 1;

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Something an operator should see on the dashboard's alert feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRaised {
    pub alert_id: Uuid,
    /// What kind of alert: `dead_letter`, `low_stock`, `rejection`, ...
    pub kind: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    /// What it is about: an event id, a product id, an order id.
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
    AlertRaised(AlertRaised),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("event `{event_type}` has version {version}, newer than the {CURRENT_VERSION} this worker understands")]
    NewerVersion { event_type: String, version: u32 },
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
            DomainEvent::AlertRaised(_) => "alert.raised",
        }
    }

    /// The aggregate id: product events are keyed by product, order events by
    /// order, so each aggregate's events keep their order in one partition.
    pub fn key(&self) -> String {
        match self {
            DomainEvent::ProductCreated(e) => e.product_id.to_string(),
            DomainEvent::StockReceived(e) => e.product_id.to_string(),
            DomainEvent::OrderPlaced(e) => e.order_id.to_string(),
            DomainEvent::OrderConfirmed(e) => e.order_id.to_string(),
            DomainEvent::OrderRejected(e) => e.order_id.to_string(),
            DomainEvent::AlertRaised(e) => e.alert_id.to_string(),
        }
    }

    fn payload(&self) -> serde_json::Value {
        let value = match self {
            DomainEvent::ProductCreated(e) => serde_json::to_value(e),
            DomainEvent::StockReceived(e) => serde_json::to_value(e),
            DomainEvent::OrderPlaced(e) => serde_json::to_value(e),
            DomainEvent::OrderConfirmed(e) => serde_json::to_value(e),
            DomainEvent::OrderRejected(e) => serde_json::to_value(e),
            DomainEvent::AlertRaised(e) => serde_json::to_value(e),
        };
        value.expect("domain events always serialize")
    }

    /// A new envelope with a fresh UUID v7 (time-ordered) id.
    pub fn into_envelope(self, occurred_at: DateTime<Utc>) -> Envelope {
        self.into_envelope_with_id(Uuid::now_v7(), occurred_at)
    }

    /// A follow-up event gets an id derived from the event that caused it, so
    /// republishing it after a crash yields the same id and is deduplicated
    /// downstream. The id is still a valid UUID v7: its timestamp is the
    /// cause's, its "random" bits a hash of (cause id, follow-up type).
    pub fn into_follow_up_of(self, cause: &Envelope) -> Envelope {
        let digest = Uuid::new_v5(&cause.event_id, self.event_type().as_bytes());
        let millis = cause.occurred_at.timestamp_millis().max(0) as u64;
        let random: [u8; 10] = digest.as_bytes()[6..16].try_into().expect("10 bytes");
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        self.into_envelope_with_id(id, cause.occurred_at)
    }

    fn into_envelope_with_id(self, event_id: Uuid, occurred_at: DateTime<Utc>) -> Envelope {
        Envelope {
            event_id,
            event_type: self.event_type().to_string(),
            key: self.key(),
            occurred_at,
            version: CURRENT_VERSION,
            payload: self.payload(),
        }
    }

    pub fn from_envelope(envelope: &Envelope) -> Result<DomainEvent, DecodeError> {
        if envelope.version > CURRENT_VERSION {
            return Err(DecodeError::NewerVersion {
                event_type: envelope.event_type.clone(),
                version: envelope.version,
            });
        }
        fn decode<T: serde::de::DeserializeOwned>(env: &Envelope) -> Result<T, DecodeError> {
            T::deserialize(&env.payload).map_err(|source| DecodeError::InvalidPayload {
                event_type: env.event_type.clone(),
                source,
            })
        }
        Ok(match envelope.event_type.as_str() {
            "product.created" => DomainEvent::ProductCreated(decode(envelope)?),
            "stock.received" => DomainEvent::StockReceived(decode(envelope)?),
            "order.placed" => DomainEvent::OrderPlaced(decode(envelope)?),
            "order.confirmed" => DomainEvent::OrderConfirmed(decode(envelope)?),
            "order.rejected" => DomainEvent::OrderRejected(decode(envelope)?),
            "alert.raised" => DomainEvent::AlertRaised(decode(envelope)?),
            other => return Err(DecodeError::UnknownType(other.to_string())),
        })
    }
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
            .into_follow_up_of(c)
        };
        let a = follow(&cause);
        let b = follow(&cause);
        assert_eq!(a.event_id, b.event_id);
        assert_eq!(a.event_id.get_version_num(), 7);
        assert_ne!(a.event_id, cause.event_id);
    }

    #[test]
    fn unknown_and_newer_events_are_refused() {
        let mut env = placed().into_envelope(Utc::now());
        env.version = CURRENT_VERSION + 1;
        assert!(matches!(
            DomainEvent::from_envelope(&env),
            Err(DecodeError::NewerVersion { .. })
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
}
