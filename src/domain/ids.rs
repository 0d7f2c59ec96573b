//! Typed ids: a product id, an order id and a purchase-order id are all
//! UUIDs, but one cannot be passed where another is expected. On the wire
//! and in the database each is the plain UUID text (`serde(transparent)`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered (v7) id.
            pub fn new() -> $name {
                $name(Uuid::now_v7())
            }

            pub const fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name(Uuid::nil())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<$name, uuid::Error> {
                Uuid::from_str(text).map($name)
            }
        }

        /// In the OpenAPI document: a UUID string.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> $name {
                $name(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

id_type!(
    /// A product of the catalog; its events are keyed (partitioned) by it.
    ProductId
);
id_type!(
    /// An order; its events are keyed by it.
    OrderId
);
id_type!(
    /// A purchase order to a supplier; keyed by its product.
    PurchaseOrderId
);
id_type!(
    /// A stock adjustment or cycle count of one product; keyed by its
    /// product.
    AdjustmentId
);
id_type!(
    /// A shipment of some of an order's lines; keyed by its order.
    ShipmentId
);
id_type!(
    /// A place stock is kept in. Stock events carry one optionally: none
    /// means the default location (all stock, until there are others).
    LocationId
);

impl LocationId {
    /// The location every deployment has: stock named by no location is
    /// here, as all stock was before there were others.
    pub const DEFAULT: LocationId = LocationId(Uuid::from_u128(1));
}
id_type!(
    /// A return of some of an order's shipped units; keyed by its order.
    ReturnId
);
id_type!(
    /// A transfer of stock between two locations; its events are keyed by
    /// it.
    TransferId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_uuids_on_the_wire() {
        let id = OrderId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.as_uuid()));
        assert_eq!(serde_json::from_str::<OrderId>(&json).unwrap(), id);
        assert_eq!(id.to_string().parse::<OrderId>().unwrap(), id);
        assert!("not-a-uuid".parse::<ProductId>().is_err());
    }
}
