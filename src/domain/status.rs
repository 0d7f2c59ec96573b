//! The closed sets of names the system writes: order and purchase-order
//! statuses, alert kinds and severities. Each is an enum whose wire name
//! (in events, the read model's columns and the API) is written once, here.

/// A closed set of names, for code that handles any of them alike (a
/// `?status=` filter, a column read back from the database).
pub trait Named: Copy + Sized + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn parse(text: &str) -> Option<Self>;
}

/// An enum whose variants each have one wire name: serde, `Display`,
/// `as_str` and `parse` all use it.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        /// In the OpenAPI document: one of the wire names. (Written by hand:
        /// a derive inside this macro does not see the serde renames.)
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([$($text),*]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $crate::domain::status::Named for $name {
            const ALL: &'static [$name] = $name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn parse(text: &str) -> Option<$name> {
                $name::parse(text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// For the enums of other layers that have wire names too.
pub(crate) use named_enum;

named_enum! {
    /// Where an order is in its lifecycle.
    pub enum OrderStatus {
        /// Placed, not decided yet.
        Pending => "PENDING",
        /// Reserved for a checkout until `hold_until`: committed (payment
        /// taken) it becomes CONFIRMED; not committed in time, EXPIRED.
        Held => "HELD",
        Confirmed => "CONFIRMED",
        /// Confirmed with units sold past zero: what was in stock is
        /// reserved, the rest waits for stock (filled first in, first out);
        /// CONFIRMED once every unit is reserved.
        Backordered => "BACKORDERED",
        /// Some units have shipped, others are still reserved.
        PartiallyShipped => "PARTIALLY_SHIPPED",
        Rejected => "REJECTED",
        Cancelled => "CANCELLED",
        Shipped => "SHIPPED",
        /// A hold not committed in time: its reservation was released.
        Expired => "EXPIRED",
    }
}

named_enum! {
    pub enum PurchaseOrderStatus {
        Open => "OPEN",
        Received => "RECEIVED",
    }
}

named_enum! {
    /// What an alert is about.
    pub enum AlertKind {
        /// A worker dead-lettered an event.
        DeadLetter => "dead_letter",
        /// The dead letters reached the operator's alert threshold.
        DeadLettersPilingUp => "dead_letters_piling_up",
        LowStock => "low_stock",
        Rejection => "rejection",
        /// A ship, cancel or receipt that the order's state does not allow.
        CommandRefused => "command_refused",
        /// An adjustment would have taken on-hand below what confirmed
        /// orders hold; the alert names them.
        AdjustmentBelowReserved => "adjustment_below_reserved",
        /// A webhook subscription was paused after failing too long.
        WebhookFailing => "webhook_failing",
    }
}

named_enum! {
    /// Why stock was adjusted: a closed set, so reports can group by it.
    pub enum AdjustmentReason {
        /// Broken or spoiled units written off.
        Damaged => "damaged",
        /// Units missing without explanation (theft, loss).
        Shrinkage => "shrinkage",
        /// Units found that the book did not know of.
        Found => "found",
        /// A fix of an earlier booking error.
        Correction => "correction",
        /// The difference a physical count found (`POST .../counts`).
        CycleCount => "cycle_count",
        /// Units lost on the way between places.
        TransitLoss => "transit_loss",
        /// Units a customer brought back outside an order's return.
        Returned => "returned",
    }
}

named_enum! {
    /// What a stock movement (a row of a product's ledger) was.
    pub enum MovementKind {
        /// Units came in: a direct receipt or a purchase order's delivery.
        Received => "received",
        /// A confirmed order's line reserved units.
        Reserved => "reserved",
        /// A cancelled order gave its reserved units back.
        Released => "released",
        /// A shipment's units left the shelf (and their reservation).
        Shipped => "shipped",
        /// A customer's return put units back on the shelf (restocked).
        Returned => "returned",
        /// An adjustment or a count changed on-hand.
        Adjusted => "adjusted",
        /// The figures a product had when the ledger began (a read model
        /// upgraded from a release without one).
        Opening => "opening",
        /// A transfer left this location (on-hand drops; the units are in
        /// transit to another).
        TransferOut => "transfer_out",
        /// A transfer arrived at this location: the units shipped, a
        /// shortfall then adjusted away as `transit_loss`.
        TransferIn => "transfer_in",
    }
}

named_enum! {
    /// How a worker chooses the locations an order's lines are reserved at
    /// (`--allocation-strategy`). Either fills a line from the first
    /// location in its order and goes on to the next only for what that
    /// one lacks.
    #[derive(Default)]
    pub enum AllocationStrategy {
        /// Active locations by priority (lowest number first), then code.
        #[default]
        Priority => "priority",
        /// The active location with the most available first.
        MostStock => "most_stock",
    }
}

named_enum! {
    /// Where a transfer between locations stands.
    pub enum TransferStatus {
        /// In the log; no worker has decided it yet.
        Requested => "requested",
        /// Left its origin: the units are in transit.
        Shipped => "shipped",
        /// Arrived at its destination.
        Received => "received",
        /// Not shipped: `message` says why.
        Refused => "refused",
    }
}

named_enum! {
    /// Where an adjustment stands: the worker decides it once.
    pub enum AdjustmentStatus {
        /// In the log; no worker has decided it yet.
        Pending => "pending",
        Applied => "applied",
        Refused => "refused",
    }
}

named_enum! {
    /// Why a worker refused an adjustment.
    pub enum AdjustmentRefusal {
        /// `expected_on_hand` was given and on-hand was another figure
        /// (the compare-and-set failed): read it and try again.
        OnHandChanged => "on_hand_changed",
        /// It would take on-hand below the units confirmed orders hold.
        BelowReserved => "below_reserved",
        /// No product with that id was ever applied.
        UnknownProduct => "unknown_product",
    }
}

named_enum! {
    /// What becomes of a returned unit.
    pub enum ReturnDisposition {
        /// Back on the shelf: on-hand rises (a ledger row `returned`).
        Restock => "restock",
        /// Recorded as returned, not sellable: on-hand does not change.
        Damaged => "damaged",
    }
}

named_enum! {
    /// Which of an order's line changes a fulfilment row is.
    pub enum FulfilmentKind {
        Shipment => "shipment",
        Return => "return",
    }
}

named_enum! {
    pub enum Severity {
        Info => "info",
        Warning => "warning",
        Error => "error",
        Critical => "critical",
    }
}

impl OrderStatus {
    /// The statuses of an order that still holds reserved units (its
    /// unshipped lines).
    pub const OPEN: [OrderStatus; 4] = [
        OrderStatus::Held,
        OrderStatus::Backordered,
        OrderStatus::Confirmed,
        OrderStatus::PartiallyShipped,
    ];

    /// The statuses an order may ship in: open and committed (a held
    /// order's payment is not taken yet).
    pub const SHIPPABLE: [OrderStatus; 2] = [OrderStatus::Confirmed, OrderStatus::PartiallyShipped];

    /// The statuses an order may take returns in: it may have shipped
    /// units (a cancelled order keeps the ones it shipped before).
    pub const RETURNABLE: [OrderStatus; 3] = [
        OrderStatus::PartiallyShipped,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ];

    /// Whether the order holds reserved units.
    pub fn is_open(self) -> bool {
        OrderStatus::OPEN.contains(&self)
    }

    /// Whether units of the order may ship.
    pub fn may_ship(self) -> bool {
        OrderStatus::SHIPPABLE.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(*status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(
            serde_json::from_str::<AlertKind>("\"low_stock\"").unwrap(),
            AlertKind::LowStock
        );
        assert_eq!(Severity::parse("loud"), None);
        assert!(serde_json::from_str::<PurchaseOrderStatus>("\"open\"").is_err());
    }
}
