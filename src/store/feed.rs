//! The integration feed: the archive read by `seq`, for other systems to
//! follow (`GET /api/feed`, its Server-Sent Events, and the webhooks).
//!
//! What makes a cursor safe is how `seq` is given (see `projections::archive`):
//! in commit order, so once a reader sees a `seq` every smaller one is
//! committed too, and no later commit can land below a cursor. A page is read
//! up to the head the reader saw first (the highest `seq`), so a batch
//! committing during the read is left whole for the next page.
//!
//! `seq` never changes: the archive is only appended to, `rebuild` replays
//! it without writing it, and SQLite's `seq` is an explicit column (VACUUM
//! keeps it).

use super::analytics::archived_event_of;
use super::sql::{bind_all, param, parameter_list, SqlValue};
use super::{Store, StoreError};
use crate::domain::events::EventType;
use crate::domain::Envelope;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Archive positions one page examines at most, whatever the filter: a
/// filter that matches little costs a bounded scan, and the cursor still
/// moves past what it examined.
pub const FEED_SCAN: i64 = 10_000;

/// One event of the feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FeedEvent {
    /// Its position: increases by one from event to event (older archives
    /// may have gaps), never changes, and is the cursor to resume after.
    pub seq: i64,
    #[serde(flatten)]
    pub envelope: Envelope,
    /// When the worker that applied it committed it (its batch's time).
    pub archived_at: DateTime<Utc>,
}

/// A page of the feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// The cursor for the next page (`after=`): the last `seq` this page
    /// examined, which a filter may have passed over.
    pub next: i64,
    /// The highest `seq` committed when the page was read.
    pub head: i64,
}

/// Which event types a reader wants: every one, or the names listed. A
/// name may end in `.*` for a family (`order.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter {
    /// None: every type (including types a newer release may add).
    names: Option<Vec<&'static str>>,
}

impl TypeFilter {
    /// Parses a comma-separated list (`order.*,stock.received`); empty is
    /// every type. The error names what is not an event type.
    pub fn parse(raw: &str) -> Result<TypeFilter, String> {
        let patterns: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        TypeFilter::of(&patterns)
    }

    /// The filter of a list of names or `family.*` patterns; empty is every
    /// type.
    pub fn of<S: AsRef<str>>(patterns: &[S]) -> Result<TypeFilter, String> {
        if patterns.is_empty() {
            return Ok(TypeFilter::default());
        }
        let mut names = Vec::new();
        for pattern in patterns {
            let pattern = pattern.as_ref().trim();
            let matched: Vec<&'static str> = match pattern.strip_suffix(".*") {
                Some(family) => EventType::ALL
                    .iter()
                    .map(|t| t.name())
                    .filter(|name| name.split('.').next() == Some(family))
                    .collect(),
                None => EventType::from_name(pattern)
                    .map(EventType::name)
                    .into_iter()
                    .collect(),
            };
            if matched.is_empty() {
                return Err(format!(
                    "{pattern:?} is not an event type (nor `family.*` of one), e.g. order.placed or stock.*"
                ));
            }
            names.extend(matched);
        }
        names.sort_unstable();
        names.dedup();
        Ok(TypeFilter { names: Some(names) })
    }

    pub fn is_all(&self) -> bool {
        self.names.is_none()
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match &self.names {
            None => true,
            Some(names) => names.binary_search(&event_type).is_ok(),
        }
    }

    /// The names, for showing a subscription's filter (empty: all).
    pub fn names(&self) -> Vec<String> {
        self.names
            .iter()
            .flatten()
            .map(|name| name.to_string())
            .collect()
    }
}

impl Store {
    /// The highest `seq` committed (0 for an empty archive).
    pub async fn feed_head(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM event_archive")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Up to `limit` events after `after` that `types` wants, in `seq`
    /// order, examining at most `FEED_SCAN` positions.
    pub async fn feed_page(
        &self,
        after: i64,
        limit: i64,
        types: &TypeFilter,
    ) -> Result<FeedPage, StoreError> {
        // The head first: every seq up to it is committed (seq is in commit
        // order), so the page below it is final however long the read takes.
        let head = self.feed_head().await?;
        let upto = head.min(after.saturating_add(FEED_SCAN));
        if upto <= after {
            return Ok(FeedPage {
                events: Vec::new(),
                next: after,
                head,
            });
        }
        let dialect = self.dialect();
        let mut sql = format!(
            "SELECT seq, event_id, event_type, event_key, version, occurred_at, payload, actor, \
             partition_no, entry_id, processed_at FROM event_archive \
             WHERE seq > {} AND seq <= {}",
            param(dialect, 1),
            param(dialect, 2)
        );
        let mut values: Vec<SqlValue> = vec![after.into(), upto.into()];
        if let Some(names) = &types.names {
            let list = parameter_list(dialect, values.len() + 1, names.len());
            sql.push_str(&format!(" AND event_type IN ({list})"));
            values.extend(names.iter().map(|name| SqlValue::from(*name)));
        }
        sql.push_str(&format!(
            " ORDER BY seq LIMIT {}",
            param(dialect, values.len() + 1)
        ));
        values.push(limit.into());
        let rows = bind_all(sqlx::query(&sql), values)
            .fetch_all(self.pool())
            .await?;
        let events = rows
            .iter()
            .map(|row| {
                let archived = archived_event_of(row)?;
                Ok(FeedEvent {
                    seq: archived.seq,
                    envelope: archived.envelope,
                    archived_at: archived.processed_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // A full page ends at its last event; a short one examined all up to
        // `upto`.
        let next = match events.last() {
            Some(last) if events.len() as i64 >= limit => last.seq,
            _ => upto,
        };
        Ok(FeedPage { events, next, head })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_filter_takes_names_and_families() {
        let filter = TypeFilter::parse("order.*, stock.received").unwrap();
        assert!(filter.matches("order.placed"));
        assert!(filter.matches("order.confirmed"));
        assert!(filter.matches("stock.received"));
        assert!(!filter.matches("stock.low"));
        assert!(!filter.matches("product.created"));
        assert!(TypeFilter::parse("").unwrap().is_all());
        assert!(TypeFilter::parse(" , ").unwrap().matches("anything.new"));
    }

    #[test]
    fn a_type_filter_refuses_what_is_not_a_type() {
        let error = TypeFilter::parse("order.placed,order.teleported").unwrap_err();
        assert!(error.contains("order.teleported"), "{error}");
        assert!(TypeFilter::parse("nothing.*").is_err());
        assert!(TypeFilter::parse("*").is_err());
    }
}
