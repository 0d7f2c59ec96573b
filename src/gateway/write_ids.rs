//! Where a write's new ids come from: its order or product id and the ids
//! of the events it appends; and whom those events name as their actor
//! (the token the request came with, see `auth`).
//!
//! Without an `Idempotency-Key`, fresh UUID v7s. With one, ids derived from
//! the key and the time it was first claimed, so every retry of the request
//! gets the same ids. A request whose append ended in doubt (sent to the
//! log, not confirmed) keeps its key (see `idempotency`); its retry appends
//! the same events under the same event ids, which the worker's inbox
//! applies once, and names the same order or product. So a client that
//! retries with the same key never makes a second order, whether or not
//! the first append landed.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::convert::Infallible;
use uuid::Uuid;

/// How long after its id was issued a write the read model does not show
/// yet may still be waiting in the log (a command for it is then accepted,
/// and the worker refuses it with a recorded reason if it never existed).
const QUEUED_FOR_AT_MOST: chrono::Duration = chrono::Duration::minutes(10);

/// Ids of orders and adjustments are UUID v7 issued by the gateway: one
/// issued recently may name a write still in the log (answered 202, never
/// 404); any other unknown id names nothing.
pub fn recently_issued(id: Uuid) -> bool {
    let Some(timestamp) = id.get_timestamp() else {
        return false;
    };
    let (seconds, nanos) = timestamp.to_unix();
    let Some(issued) = chrono::DateTime::from_timestamp(seconds as i64, nanos) else {
        return false;
    };
    let age = chrono::Utc::now() - issued;
    id.get_version_num() == 7 && age >= -chrono::Duration::minutes(1) && age <= QUEUED_FOR_AT_MOST
}

/// A request extension set by the idempotency middleware; handlers extract
/// it (fresh ids when the request has no key).
#[derive(Debug, Clone, Default)]
pub struct WriteIds {
    keyed: Option<Keyed>,
    actor: Option<std::sync::Arc<str>>,
}

#[derive(Debug, Clone)]
struct Keyed {
    key: String,
    first_seen_ms: i64,
}

impl WriteIds {
    /// Ids derived from `key`, first claimed at `first_seen_ms`.
    pub fn from_key(key: &str, first_seen_ms: i64) -> WriteIds {
        WriteIds {
            keyed: Some(Keyed {
                key: key.to_string(),
                first_seen_ms,
            }),
            actor: None,
        }
    }

    /// The name of the token the request came with, if any.
    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }

    /// The id this request uses for `purpose` (`"order"`, `"event"`, ...):
    /// a UUID v7 whose time is the key's first claim and whose random bits
    /// hash the key and the purpose; fresh without a key.
    pub fn id(&self, purpose: &str) -> Uuid {
        let Some(keyed) = &self.keyed else {
            return Uuid::now_v7();
        };
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(keyed.key.as_bytes());
        hasher.update(b"\0");
        hasher.update(purpose.as_bytes());
        let digest = hasher.digest128().to_le_bytes();
        let random: [u8; 10] = digest[..10].try_into().expect("10 bytes");
        let millis = keyed.first_seen_ms.max(0) as u64;
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WriteIds {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<WriteIds, Infallible> {
        let mut ids = parts
            .extensions
            .get::<WriteIds>()
            .cloned()
            .unwrap_or_default();
        ids.actor = parts
            .extensions
            .get::<super::auth::Actor>()
            .map(|actor| actor.0.clone());
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::WriteIds;

    #[test]
    fn a_key_gives_the_same_ids_every_time_and_others_differ() {
        let first = WriteIds::from_key("k-1", 1_700_000_000_000);
        let retry = WriteIds::from_key("k-1", 1_700_000_000_000);
        assert_eq!(first.id("order"), retry.id("order"));
        assert_ne!(first.id("order"), first.id("event"));
        assert_ne!(
            first.id("order"),
            WriteIds::from_key("k-2", 1_700_000_000_000).id("order")
        );
        let id = first.id("order");
        assert_eq!(id.get_version_num(), 7);
        let (seconds, _) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(seconds, 1_700_000_000);
        // Without a key: fresh each time.
        assert_ne!(
            WriteIds::default().id("order"),
            WriteIds::default().id("order")
        );
    }
}
