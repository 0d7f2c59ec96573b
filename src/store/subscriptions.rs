//! Webhook subscriptions: the projection written from the subscription.*
//! events (`subscriptions`), and the deliverers' own state beside it
//! (`subscription_progress`: secret, cursor, counters; and the recent
//! attempts in `subscription_deliveries`). See migration 0024 for why the
//! cursor is not part of the projection.

use super::sql::{bind_all, multi_insert, param, parameter_list, SqlValue, Tx};
use super::{now_millis, Dialect, Store, StoreError};
use crate::domain::{DomainEvent, Envelope};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

/// Attempts kept per subscription in `subscription_deliveries`.
pub const KEPT_DELIVERIES: i64 = 100;

/// A subscription's state as its events left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionState {
    Active,
    Paused,
    Deleted,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Active => "active",
            SubscriptionState::Paused => "paused",
            SubscriptionState::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Result<SubscriptionState, StoreError> {
        match text {
            "active" => Ok(SubscriptionState::Active),
            "paused" => Ok(SubscriptionState::Paused),
            "deleted" => Ok(SubscriptionState::Deleted),
            other => Err(StoreError::Inconsistent(format!(
                "subscription state {other:?}"
            ))),
        }
    }
}

/// A subscription as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub id: Uuid,
    pub url: String,
    /// The types delivered (names or `family.*`); empty: every type.
    pub event_types: Vec<String>,
    pub state: SubscriptionState,
    pub paused_reason: Option<String>,
    /// The last seq delivered (or passed over by the filter).
    pub cursor: i64,
    /// The archive's head when this was read.
    pub head: i64,
    /// Matching events not delivered yet (counted up to 10,000).
    pub lag_events: i64,
    /// How long the oldest undelivered matching event has waited.
    pub lag_seconds: f64,
    pub delivered: i64,
    pub failed: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Since when every attempt has failed (None while deliveries succeed).
    pub failing_since: Option<DateTime<Utc>>,
    pub last_delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub seq: i64,
    pub event_id: Uuid,
    pub attempt: i64,
    /// The HTTP status answered; None if no answer came (refused, timed
    /// out, not allowed).
    pub status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub attempted_at: DateTime<Utc>,
}

/// What a deliverer needs of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryTarget {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub state: SubscriptionState,
    pub secret: String,
    pub cursor: i64,
    /// A rewind asked for and not taken up yet: (to, its event id).
    pub rewind: Option<(i64, String)>,
    pub failing_since: Option<i64>,
    /// When its last event was applied (a version of its settings).
    pub updated_at: i64,
}

/// A change to the projection, from one event.
#[derive(Debug)]
pub(super) enum SubscriptionWrite {
    Created {
        id: String,
        url: String,
        event_types: String,
        start_after: i64,
        at: i64,
    },
    State {
        id: String,
        state: SubscriptionState,
        reason: Option<String>,
        at: i64,
    },
    Rewound {
        id: String,
        to: i64,
        rewind_id: String,
        at: i64,
    },
}

impl SubscriptionWrite {
    pub(super) fn of(envelope: &Envelope, event: &DomainEvent) -> Option<SubscriptionWrite> {
        let at = envelope.occurred_at.timestamp_millis();
        let state = |id: Uuid, state, reason: Option<String>| SubscriptionWrite::State {
            id: id.to_string(),
            state,
            reason,
            at,
        };
        Some(match event {
            DomainEvent::SubscriptionCreated(e) => SubscriptionWrite::Created {
                id: e.subscription_id.to_string(),
                url: e.url.clone(),
                event_types: serde_json::to_string(&e.event_types).expect("strings serialize"),
                start_after: e.start_after,
                at,
            },
            DomainEvent::SubscriptionPaused(e) => state(
                e.subscription_id,
                SubscriptionState::Paused,
                e.reason.clone(),
            ),
            DomainEvent::SubscriptionResumed(e) => {
                state(e.subscription_id, SubscriptionState::Active, None)
            }
            DomainEvent::SubscriptionDeleted(e) => {
                state(e.subscription_id, SubscriptionState::Deleted, None)
            }
            DomainEvent::SubscriptionRewound(e) => SubscriptionWrite::Rewound {
                id: e.subscription_id.to_string(),
                to: e.seq,
                rewind_id: envelope.event_id.to_string(),
                at,
            },
            _ => return None,
        })
    }
}

/// Writes the changes in order (they are few: one per subscription event).
pub(super) async fn write_all(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    writes: Vec<SubscriptionWrite>,
) -> Result<(), StoreError> {
    let p = |n| param(dialect, n);
    for write in writes {
        let (sql, values): (String, Vec<SqlValue>) = match write {
            SubscriptionWrite::Created {
                id,
                url,
                event_types,
                start_after,
                at,
            } => (
                format!(
                    "INSERT INTO subscriptions (id, url, event_types, start_after, state, created_at, updated_at) \
                     VALUES ({}, {}, {}, {}, 'active', {}, {}) ON CONFLICT (id) DO NOTHING",
                    p(1), p(2), p(3), p(4), p(5), p(6)
                ),
                vec![id.into(), url.into(), event_types.into(), start_after.into(), at.into(), at.into()],
            ),
            // A deleted subscription stays deleted.
            SubscriptionWrite::State {
                id,
                state,
                reason,
                at,
            } => (
                format!(
                    "UPDATE subscriptions SET state = {}, paused_reason = {}, updated_at = {} \
                     WHERE id = {} AND state <> 'deleted'",
                    p(1), p(2), p(3), p(4)
                ),
                vec![state.as_str().into(), reason.into(), at.into(), id.into()],
            ),
            SubscriptionWrite::Rewound {
                id,
                to,
                rewind_id,
                at,
            } => (
                format!(
                    "UPDATE subscriptions SET rewind_to = {}, rewind_id = {}, updated_at = {} \
                     WHERE id = {} AND state <> 'deleted'",
                    p(1), p(2), p(3), p(4)
                ),
                vec![to.into(), rewind_id.into(), at.into(), id.into()],
            ),
        };
        super::sql::bind_all(sqlx::query(&sql), values)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn time_of(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

const VIEW_COLUMNS: &str = "s.id, s.url, s.event_types, s.state, s.paused_reason, s.created_at, \
    p.cursor, p.delivered, p.failed, p.last_error, p.last_error_at, p.failing_since, p.last_delivered_at";

impl Store {
    /// Records a new subscription's secret and starting cursor, before its
    /// event is appended (an event that never makes it leaves a row no
    /// subscription uses). A retry of the same request (the same id) keeps
    /// the first: returns the secret and cursor stored.
    pub async fn create_subscription_progress(
        &self,
        id: Uuid,
        secret: &str,
        cursor: i64,
    ) -> Result<(String, i64), StoreError> {
        sqlx::query(
            "INSERT INTO subscription_progress (subscription_id, secret, cursor) VALUES ($1, $2, $3) \
             ON CONFLICT (subscription_id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(secret)
        .bind(cursor)
        .execute(self.pool())
        .await?;
        let row = sqlx::query(
            "SELECT secret, cursor FROM subscription_progress WHERE subscription_id = $1",
        )
        .bind(id.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok((row.try_get("secret")?, row.try_get("cursor")?))
    }

    /// Subscriptions not deleted (for `--max-subscriptions`).
    pub async fn subscription_count(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE state <> 'deleted'")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// The subscriptions, oldest first, without the deleted ones.
    pub async fn list_subscriptions(&self) -> Result<Vec<SubscriptionView>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {VIEW_COLUMNS} FROM subscriptions s JOIN subscription_progress p ON p.subscription_id = s.id \
             WHERE s.state <> 'deleted' ORDER BY s.created_at, s.id LIMIT 1000"
        ))
        .fetch_all(self.pool())
        .await?;
        let head = self.feed_head().await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in &rows {
            views.push(self.subscription_view(row, head).await?);
        }
        Ok(views)
    }

    pub async fn get_subscription(&self, id: Uuid) -> Result<Option<SubscriptionView>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {VIEW_COLUMNS} FROM subscriptions s JOIN subscription_progress p ON p.subscription_id = s.id \
             WHERE s.id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let head = self.feed_head().await?;
                Ok(Some(self.subscription_view(&row, head).await?))
            }
        }
    }

    async fn subscription_view(
        &self,
        row: &sqlx::any::AnyRow,
        head: i64,
    ) -> Result<SubscriptionView, StoreError> {
        let event_types: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>("event_types")?)
                .map_err(|e| StoreError::Inconsistent(format!("subscription event types: {e}")))?;
        let cursor: i64 = row.try_get("cursor")?;
        let (lag_events, oldest) = self.lag(cursor, head, &event_types).await?;
        let created_at: i64 = row.try_get("created_at")?;
        Ok(SubscriptionView {
            id: super::uuid_col(row, "id")?,
            url: row.try_get("url")?,
            event_types,
            state: SubscriptionState::parse(&row.try_get::<String, _>("state")?)?,
            paused_reason: row.try_get("paused_reason")?,
            cursor,
            head,
            lag_events,
            lag_seconds: oldest
                .map(|at| ((now_millis() - at).max(0)) as f64 / 1000.0)
                .unwrap_or(0.0),
            delivered: row.try_get("delivered")?,
            failed: row.try_get("failed")?,
            last_error: row.try_get("last_error")?,
            last_error_at: time_of(row.try_get("last_error_at")?),
            failing_since: time_of(row.try_get("failing_since")?),
            last_delivered_at: time_of(row.try_get("last_delivered_at")?),
            created_at: time_of(Some(created_at)).unwrap_or_default(),
        })
    }

    /// Matching events after `cursor` (counted up to 10,000) and when the
    /// oldest of them was archived.
    pub async fn lag(
        &self,
        cursor: i64,
        head: i64,
        event_types: &[String],
    ) -> Result<(i64, Option<i64>), StoreError> {
        if cursor >= head {
            return Ok((0, None));
        }
        let types = super::feed::TypeFilter::of(event_types).unwrap_or_default();
        let page = self.feed_page(cursor, 1, &types).await?;
        let Some(first) = page.events.first() else {
            return Ok((0, None));
        };
        let upto = head.min(cursor + super::feed::FEED_SCAN);
        let count: i64 = if types.is_all() {
            upto - cursor
        } else {
            let names = types.names();
            let sql = format!(
                "SELECT COUNT(*) FROM event_archive WHERE seq > {} AND seq <= {} AND event_type IN ({})",
                param(self.dialect(), 1),
                param(self.dialect(), 2),
                parameter_list(self.dialect(), 3, names.len())
            );
            let mut query = sqlx::query_scalar(&sql).bind(cursor).bind(upto);
            for name in names {
                query = query.bind(name);
            }
            query.fetch_one(self.pool()).await?
        };
        Ok((count.max(1), Some(first.archived_at.timestamp_millis())))
    }

    /// The recent attempts of a subscription, newest first.
    pub async fn recent_deliveries(
        &self,
        id: Uuid,
        limit: i64,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, attempt, status, error, latency_ms, attempted_at \
             FROM subscription_deliveries WHERE subscription_id = $1 \
             ORDER BY attempted_at DESC, seq DESC, attempt DESC LIMIT $2",
        )
        .bind(id.to_string())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeliveryAttempt {
                    seq: row.try_get("seq")?,
                    event_id: super::uuid_col(row, "event_id")?,
                    attempt: row.try_get("attempt")?,
                    status: row.try_get("status")?,
                    error: row.try_get("error")?,
                    latency_ms: row.try_get("latency_ms")?,
                    attempted_at: time_of(Some(row.try_get("attempted_at")?)).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Every subscription that is not deleted, with what a deliverer needs.
    pub async fn delivery_targets(&self) -> Result<Vec<DeliveryTarget>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.id, s.url, s.event_types, s.state, s.rewind_to, s.rewind_id AS asked_rewind, s.updated_at, \
             p.secret, p.cursor, p.rewind_id AS taken_rewind, p.failing_since \
             FROM subscriptions s JOIN subscription_progress p ON p.subscription_id = s.id \
             WHERE s.state <> 'deleted' ORDER BY s.id LIMIT 10000",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let asked: Option<String> = row.try_get("asked_rewind")?;
                let taken: Option<String> = row.try_get("taken_rewind")?;
                let rewind_to: Option<i64> = row.try_get("rewind_to")?;
                let rewind = match (asked, rewind_to) {
                    (Some(asked), Some(to)) if Some(&asked) != taken.as_ref() => Some((to, asked)),
                    _ => None,
                };
                Ok(DeliveryTarget {
                    id: super::uuid_col(row, "id")?,
                    url: row.try_get("url")?,
                    event_types: serde_json::from_str(&row.try_get::<String, _>("event_types")?)
                        .map_err(|e| {
                            StoreError::Inconsistent(format!("subscription event types: {e}"))
                        })?,
                    state: SubscriptionState::parse(&row.try_get::<String, _>("state")?)?,
                    secret: row.try_get("secret")?,
                    cursor: row.try_get("cursor")?,
                    rewind,
                    failing_since: row.try_get("failing_since")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Takes up a rewind: the cursor moves to `to`, once per rewind event.
    /// Returns whether it moved (false: taken up already).
    pub async fn take_rewind(
        &self,
        id: Uuid,
        to: i64,
        rewind_id: &str,
    ) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE subscription_progress SET cursor = $1, rewind_id = $2, failing_since = NULL \
             WHERE subscription_id = $3 AND (rewind_id IS NULL OR rewind_id <> $4)",
        )
        .bind(to)
        .bind(rewind_id)
        .bind(id.to_string())
        .bind(rewind_id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(moved > 0)
    }

    /// Records what a deliverer did: the cursor moved from `from` to `to`
    /// (only if it is still at `from`: a stale deliverer or a rewind in
    /// between leaves it), the attempts made, and the counters. Returns
    /// whether the cursor moved.
    pub async fn record_deliveries(
        &self,
        id: Uuid,
        from: i64,
        to: i64,
        attempts: &[DeliveryAttempt],
        failing_since: Option<i64>,
    ) -> Result<bool, StoreError> {
        let delivered = attempts.iter().filter(|a| a.error.is_none()).count() as i64;
        let failed = attempts.len() as i64 - delivered;
        let last_failure = attempts.iter().rev().find(|a| a.error.is_some());
        let last_success = attempts.iter().rev().find(|a| a.error.is_none());
        let mut tx = self.pool().begin().await?;
        let moved = sqlx::query(
            "UPDATE subscription_progress SET cursor = $1, delivered = delivered + $2, failed = failed + $3, \
             last_error = COALESCE($4, last_error), last_error_at = COALESCE($5, last_error_at), \
             failing_since = $6, last_delivered_at = COALESCE($7, last_delivered_at) \
             WHERE subscription_id = $8 AND cursor = $9",
        )
        .bind(to)
        .bind(delivered)
        .bind(failed)
        .bind(last_failure.and_then(|a| a.error.clone()))
        .bind(last_failure.map(|a| a.attempted_at.timestamp_millis()))
        .bind(failing_since)
        .bind(last_success.map(|a| a.attempted_at.timestamp_millis()))
        .bind(id.to_string())
        .bind(from)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        // The attempts in one statement; only the newest that are kept (the
        // rest are counted above, and would be pruned at once).
        let newest = attempts.len().saturating_sub(KEPT_DELIVERIES as usize);
        let rows = attempts[newest..]
            .iter()
            .map(|a| {
                vec![
                    id.to_string().into(),
                    a.seq.into(),
                    a.event_id.to_string().into(),
                    a.attempt.into(),
                    a.status.into(),
                    a.error.clone().into(),
                    a.latency_ms.into(),
                    a.attempted_at.timestamp_millis().into(),
                ]
            })
            .collect();
        let columns = [
            "subscription_id",
            "seq",
            "event_id",
            "attempt",
            "status",
            "error",
            "latency_ms",
            "attempted_at",
        ];
        for (sql, values) in multi_insert(
            self.dialect(),
            "subscription_deliveries",
            &columns,
            rows,
            "",
        ) {
            bind_all(sqlx::query(&sql), values)
                .execute(&mut *tx)
                .await?;
        }
        if !attempts.is_empty() {
            // Keeps the newest `KEPT_DELIVERIES` attempts.
            sqlx::query(
                "DELETE FROM subscription_deliveries WHERE subscription_id = $1 AND attempted_at < \
                 (SELECT attempted_at FROM subscription_deliveries WHERE subscription_id = $1 \
                  ORDER BY attempted_at DESC LIMIT 1 OFFSET $2)",
            )
            .bind(id.to_string())
            .bind(KEPT_DELIVERIES)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }
}
