//! Idempotency keys: the first answer to a POST that carried an
//! `Idempotency-Key`, kept for the key's lifetime so its retries get the
//! same answer instead of doing the work again. In the read-model
//! database, so every gateway of a deployment (and a restarted one) sees
//! the same keys; the primary key makes one of two concurrent requests
//! the owner.

use super::{now_millis, Store, StoreError};
use sqlx::Row;

/// The first answer to a key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// What a request finds when it claims its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new, or its first request ended in doubt: this request
    /// does the work and records its answer. `first_seen_ms` is when the
    /// key was first claimed, the same for every retry (ids derive from it).
    /// `after_doubt`: an earlier request with the key may have been
    /// recorded, so whatever this one answers, the key is never freed.
    Owned {
        first_seen_ms: i64,
        after_doubt: bool,
    },
    /// The key's first request is still being handled.
    InProgress,
    /// The key was used for a request with another method, path or body.
    Mismatch,
    /// The key's first answer, to be replayed.
    Answered(StoredAnswer),
}

impl Store {
    /// Claims `key` for a request with `fingerprint`; a key older than
    /// `ttl_ms` counts as new.
    pub async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        ttl_ms: i64,
    ) -> Result<KeyClaim, StoreError> {
        let now = now_millis();
        sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = $1 AND created_at < $2")
            .bind(key)
            .bind(now - ttl_ms)
            .execute(self.pool())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (idem_key, fingerprint, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .bind(fingerprint)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(KeyClaim::Owned {
                first_seen_ms: now,
                after_doubt: false,
            });
        }
        let row = sqlx::query(
            "SELECT fingerprint, CAST(status AS BIGINT) AS status, location, body, in_doubt, \
             created_at FROM idempotency_keys WHERE idem_key = $1",
        )
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        // Expired and deleted by another request in between: try again.
        let Some(row) = row else {
            return Ok(KeyClaim::InProgress);
        };
        let stored: String = row.try_get("fingerprint")?;
        if stored != fingerprint {
            return Ok(KeyClaim::Mismatch);
        }
        let status: Option<i64> = row.try_get("status")?;
        let in_doubt: i64 = row.try_get("in_doubt")?;
        if status.is_none() && in_doubt != 0 {
            // The same request again after an unknown outcome: one retry
            // takes the key over (the others find it in progress).
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET in_doubt = 0 WHERE idem_key = $1 AND in_doubt <> 0",
            )
            .bind(key)
            .execute(self.pool())
            .await?
            .rows_affected();
            if taken == 1 {
                return Ok(KeyClaim::Owned {
                    first_seen_ms: row.try_get("created_at")?,
                    after_doubt: true,
                });
            }
            return Ok(KeyClaim::InProgress);
        }
        Ok(match status {
            None => KeyClaim::InProgress,
            Some(status) => KeyClaim::Answered(StoredAnswer {
                status: u16::try_from(status).map_err(|_| {
                    StoreError::Inconsistent(format!("idempotency key {key}: status {status}"))
                })?,
                location: row.try_get("location")?,
                body: row
                    .try_get::<Option<String>, _>("body")?
                    .unwrap_or_default(),
            }),
        })
    }

    /// Records the answer of the request that owns `key`.
    pub async fn record_idempotent_answer(
        &self,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, location = $2, body = $3 WHERE idem_key = $4",
        )
        .bind(i64::from(answer.status))
        .bind(answer.location.as_deref())
        .bind(answer.body.as_str())
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Keeps `key` for its own request's retries after that request ended
    /// without knowing whether its event was recorded.
    pub async fn mark_idempotency_key_in_doubt(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET in_doubt = 1 WHERE idem_key = $1 AND status IS NULL",
        )
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Frees `key` after its request failed without doing anything (a 5xx),
    /// so a retry does the work.
    pub async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = $1 AND status IS NULL")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Keeps only the newest `max` keys; returns how many were removed.
    pub async fn cap_idempotency_keys(&self, max: u64) -> Result<u64, StoreError> {
        let offset = i64::try_from(max).unwrap_or(i64::MAX);
        Ok(sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at <= \
             (SELECT created_at FROM idempotency_keys ORDER BY created_at DESC LIMIT 1 OFFSET $1)",
        )
        .bind(offset)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Removes keys older than `ttl_ms`; returns how many.
    pub async fn prune_idempotency_keys(&self, ttl_ms: i64) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(now_millis() - ttl_ms)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }
}
