//! Money is stored and summed as integer cents; the JSON surface speaks decimal
//! amounts with at most two decimals (`1299.99`), as the Python reference did.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The largest amount accepted from a client: ten million in major units.
/// Far above any real price, and small enough that totals of many orders fit
/// comfortably in an i64 of cents.
pub const MAX_CENTS: i64 = 1_000_000_000;

/// An amount of money in integer cents, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("must be a number")]
    NotANumber,
    #[error("must not be negative")]
    Negative,
    #[error("must have at most two decimals")]
    TooPrecise,
    #[error("is too large (at most 10000000.00)")]
    TooLarge,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_cents(cents: i64) -> Result<Money, MoneyError> {
        if cents < 0 {
            return Err(MoneyError::Negative);
        }
        if cents > MAX_CENTS {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money(cents))
    }

    /// Parses a decimal amount as a client sends it. The JSON number is read
    /// as f64 by serde_json, so "at most two decimals" is checked against the
    /// nearest cent with a tolerance far below a cent and far above f64 noise.
    pub fn from_decimal(amount: f64) -> Result<Money, MoneyError> {
        if !amount.is_finite() {
            return Err(MoneyError::NotANumber);
        }
        if amount < 0.0 {
            return Err(MoneyError::Negative);
        }
        let scaled = amount * 100.0;
        let cents = scaled.round();
        if (scaled - cents).abs() > 1e-6 * scaled.abs().max(1.0) {
            return Err(MoneyError::TooPrecise);
        }
        if cents > MAX_CENTS as f64 {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money(cents as i64))
    }

    /// An amount computed from validated ones (a total, a sum of totals):
    /// these may exceed the per-input limit, and are trusted as stored.
    pub fn from_total_cents(cents: i64) -> Money {
        Money(cents)
    }

    pub fn cents(self) -> i64 {
        self.0
    }

    pub fn as_decimal(self) -> f64 {
        self.0 as f64 / 100.0
    }

    /// Multiplies by a quantity; totals are bounded by MAX_CENTS * MAX_QUANTITY
    /// which fits an i64, so this cannot overflow for validated inputs.
    pub fn times(self, quantity: i64) -> Money {
        Money(self.0 * quantity)
    }

    pub fn plus(self, other: Money) -> Money {
        Money(self.0 + other.0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// On the wire (events and API) money is a decimal number, like the reference.
/// In the OpenAPI document: a number with at most two decimals.
impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
            .minimum(Some(0.0))
            .description(Some(
                "An amount of money in currency units, with at most two decimals",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Money {}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_decimal())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        let amount = f64::deserialize(d)?;
        Money::from_decimal(amount).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_decimals_exactly() {
        assert_eq!(Money::from_decimal(1299.99).unwrap().cents(), 129_999);
        assert_eq!(Money::from_decimal(0.1).unwrap().cents(), 10);
        assert_eq!(Money::from_decimal(0.29).unwrap().cents(), 29);
        assert_eq!(Money::from_decimal(5.0).unwrap().cents(), 500);
        assert_eq!(Money::from_decimal(0.0).unwrap().cents(), 0);
    }

    #[test]
    fn refuses_bad_amounts() {
        assert_eq!(Money::from_decimal(1.001), Err(MoneyError::TooPrecise));
        assert_eq!(Money::from_decimal(-1.0), Err(MoneyError::Negative));
        assert_eq!(Money::from_decimal(f64::NAN), Err(MoneyError::NotANumber));
        assert_eq!(Money::from_decimal(1e12), Err(MoneyError::TooLarge));
    }

    #[test]
    fn round_trips_through_json() {
        let m = Money::from_cents(129_999).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "1299.99");
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.to_string(), "1299.99");
    }
}
