//! Validated input types: a value of these types has passed its checks, so
//! code past the gateway never re-validates raw strings and numbers.

/// Largest quantity accepted on one order line or one stock receipt.
pub const MAX_QUANTITY: i64 = 1_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    /// 1–64 characters of letters, digits, '-', '_' and '.'.
    pub fn parse(raw: &str) -> Result<Sku, Invalid> {
        let sku = raw.trim();
        if sku.is_empty() || sku.len() > 64 {
            return Err(Invalid("must be 1 to 64 characters".into()));
        }
        if !sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Invalid(
                "may contain only letters, digits, '-', '_' and '.'".into(),
            ));
        }
        Ok(Sku(sku.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A location's code: 1–32 characters of lowercase letters, digits, '-'
/// and '_' (it names the location in URLs, files and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationCode(String);

impl LocationCode {
    pub fn parse(raw: &str) -> Result<LocationCode, Invalid> {
        let code = raw.trim();
        if code.is_empty() || code.len() > 32 {
            return Err(Invalid("must be 1 to 32 characters".into()));
        }
        if !code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
        {
            return Err(Invalid(
                "may contain only lowercase letters, digits, '-' and '_'".into(),
            ));
        }
        Ok(LocationCode(code.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The range of a location's priority (lower is allocated from first).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1_000_000..=1_000_000;

pub fn parse_priority(raw: i64) -> Result<i64, Invalid> {
    if !PRIORITY_RANGE.contains(&raw) {
        return Err(Invalid(format!(
            "must be between {} and {}",
            PRIORITY_RANGE.start(),
            PRIORITY_RANGE.end()
        )));
    }
    Ok(raw)
}

/// A free-text name: trimmed, 1–200 characters, no control characters.
pub fn parse_name(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Invalid("must be 1 to 200 characters".into()));
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid("must not contain control characters".into()));
    }
    Ok(name.to_string())
}

/// A quantity of units on an order line or a receipt: 1 to MAX_QUANTITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(raw: i64) -> Result<Quantity, Invalid> {
        if !(1..=MAX_QUANTITY).contains(&raw) {
            return Err(Invalid(format!("must be between 1 and {MAX_QUANTITY}")));
        }
        Ok(Quantity(raw))
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

/// An adjustment's change to on-hand: non-zero, at most MAX_QUANTITY
/// either way.
pub fn parse_delta(raw: i64) -> Result<i64, Invalid> {
    if raw == 0 {
        return Err(Invalid("must not be 0".into()));
    }
    if !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&raw) {
        return Err(Invalid(format!(
            "must be between -{MAX_QUANTITY} and {MAX_QUANTITY}"
        )));
    }
    Ok(raw)
}

/// The most units a count may find.
pub const MAX_COUNTED: i64 = 1_000_000_000;

/// The units a count found: 0 to MAX_COUNTED.
pub fn parse_counted(raw: i64) -> Result<i64, Invalid> {
    if !(0..=MAX_COUNTED).contains(&raw) {
        return Err(Invalid(format!("must be between 0 and {MAX_COUNTED}")));
    }
    Ok(raw)
}

/// The longest free-text note an adjustment keeps.
pub const MAX_NOTE_CHARS: usize = 1_000;

/// A free-text note: trimmed, at most MAX_NOTE_CHARS characters; line
/// breaks and tabs are kept, other control characters refused. Empty is
/// no note.
pub fn parse_note(raw: &str) -> Result<Option<String>, Invalid> {
    let note = raw.trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(Invalid(format!(
            "must be at most {MAX_NOTE_CHARS} characters"
        )));
    }
    if note
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Invalid(
            "must not contain control characters other than line breaks and tabs".into(),
        ));
    }
    Ok((!note.is_empty()).then(|| note.to_string()))
}

/// A threshold or reorder amount: 0 to MAX_QUANTITY.
pub fn parse_stock_level(raw: i64) -> Result<i64, Invalid> {
    if !(0..=MAX_QUANTITY).contains(&raw) {
        return Err(Invalid(format!("must be between 0 and {MAX_QUANTITY}")));
    }
    Ok(raw)
}

/// A plausible e-mail address: one '@' with text on both sides, a dot in the
/// domain, no spaces, at most 254 characters. Deliverability is not our
/// business; catching garbage is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, Invalid> {
        parse_email(raw).map(Email)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn parse_email(raw: &str) -> Result<String, Invalid> {
    let email = raw.trim();
    let bad = || Invalid("must be an e-mail address like name@example.com".into());
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(email.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_codes_are_short_lowercase_names() {
        assert_eq!(LocationCode::parse(" east-1 ").unwrap().as_str(), "east-1");
        for bad in ["", "East", "a b", "x".repeat(33).as_str(), "dépôt"] {
            assert!(LocationCode::parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse_priority(1_000_001).is_err());
        assert_eq!(parse_priority(-5).unwrap(), -5);
    }

    #[test]
    fn sku_rules() {
        assert_eq!(Sku::parse(" LAP-001 ").unwrap().as_str(), "LAP-001");
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("has space").is_err());
        assert!(Sku::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn quantity_and_levels() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert_eq!(Quantity::parse(5).map(Quantity::get), Ok(5));
        assert!(Quantity::parse(MAX_QUANTITY + 1).is_err());
        assert_eq!(parse_delta(-3).unwrap(), -3);
        assert!(parse_delta(0).unwrap_err().0.contains("not be 0"));
        assert!(parse_delta(-MAX_QUANTITY - 1).is_err());
        assert_eq!(
            parse_note("  two\nlines ").unwrap().as_deref(),
            Some("two\nlines")
        );
        assert_eq!(parse_note("   ").unwrap(), None);
        assert!(parse_note("bell\u{7}").is_err());
        assert!(parse_note(&"x".repeat(MAX_NOTE_CHARS + 1)).is_err());
        assert_eq!(parse_stock_level(0), Ok(0));
        assert!(parse_stock_level(-1).is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" a@example.com ").unwrap().as_str(),
            "a@example.com"
        );
        assert!(parse_email("nope").is_err());
        assert!(parse_email("@example.com").is_err());
        assert!(parse_email("a@b@c.com").is_err());
        assert!(parse_email("a@localhost").is_err());
        assert!(parse_email("a b@example.com").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("  Laptop ").unwrap(), "Laptop");
        assert!(parse_name("   ").is_err());
        assert!(parse_name("a\u{0}b").is_err());
    }
}
