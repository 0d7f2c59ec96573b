//! The read model: catalog, inventory, orders, the event archive and the
//! worker's outbox and retry counts, in PostgreSQL or SQLite through sqlx.
//!
//! The seam between the two databases is sqlx's `Any` driver: one set of
//! portable SQL (numbered `$n` parameters, `ON CONFLICT`, integer cents and
//! millisecond times) runs on both, and the few places where the dialects
//! differ ask `Dialect`. Both are exercised by the same tests.

pub mod adjustments;
pub mod analytics;
pub mod backorders;
pub mod dead_letters;
mod epochs;
pub mod feed;
pub mod fulfilments;
pub mod holds;
pub mod idempotency;
pub mod ledger;
pub mod locations;
pub mod lost_entries;
pub mod outbox;
pub mod product_search;
pub mod projections;
pub mod queries;
pub mod rebuild;
pub mod sql;
pub mod subscriptions;
pub mod transfers;
mod writes;

use crate::domain::status::Named;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}`: use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    #[error("stored data is inconsistent: {0}")]
    Inconsistent(String),
    /// Another transaction did part of this one's work meanwhile (two
    /// workers applying the same event): retried, it finds it done.
    #[error("contended: {0}")]
    Contended(String),
    /// A handler refused an event whose content it cannot apply.
    #[error("event refused: {0}")]
    Rejected(String),
    /// A batch read under a lease epoch older than one already recorded
    /// for its partition: its reader lost the partition (see
    /// `Store::apply_batch`). Nothing of the batch was applied.
    #[error("partition {partition}: batch read under lease epoch {epoch}, but epoch {recorded} has committed since")]
    Fenced {
        partition: crate::stream::Partition,
        epoch: crate::stream::Epoch,
        recorded: crate::stream::Epoch,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            other => StoreError::Query(other),
        }
    }
}

impl StoreError {
    /// The TLS handshake failed: a CA that did not sign the server's
    /// certificate, or a server without TLS. Waiting does not mend it.
    /// (rustls reports a failed handshake as an I/O error of kind
    /// InvalidData.)
    pub fn is_tls_failure(&self) -> bool {
        match self {
            StoreError::Unavailable(sqlx::Error::Tls(_)) => true,
            StoreError::Unavailable(sqlx::Error::Io(io)) => {
                io.kind() == std::io::ErrorKind::InvalidData
            }
            _ => false,
        }
    }

    /// Transient failures (lost connection, lock timeout, deadlock, write
    /// conflict) are worth retrying; anything else is a bug or bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::Contended(_) => true,
            StoreError::Query(sqlx::Error::Database(db)) => {
                // 40001 serialization failure, 40P01 deadlock, 55P03 lock
                // not available, 25P03 the session's transaction stalled
                // past its limit (PostgreSQL); SQLITE_BUSY (5) and
                // SQLITE_LOCKED (6).
                matches!(
                    db.code().as_deref(),
                    Some("40001" | "40P01" | "5" | "6" | "55P03" | "25P03")
                ) || db.message().contains("database is locked")
            }
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    description: String,
    /// How the batches this store applies allocate orders to locations.
    allocation: crate::domain::status::AllocationStrategy,
}

/// SQLite's page caches, all connections together, by default (MiB).
pub const DEFAULT_SQLITE_MEMORY_MIB: u32 = 32;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

impl Store {
    /// The store, allocating the orders its batches confirm by `strategy`
    /// (a worker's `--allocation-strategy`).
    pub fn allocating_by(mut self, strategy: crate::domain::status::AllocationStrategy) -> Store {
        self.allocation = strategy;
        self
    }

    /// Connects with the default SQLite memory budget.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, DEFAULT_SQLITE_MEMORY_MIB, None).await
    }

    /// Connects to `url` (postgres://… or sqlite://…). SQLite files are
    /// created when missing and run in WAL mode with a busy timeout, so the
    /// gateway can read while a worker writes; all its connections' page
    /// caches together stay within `sqlite_memory_mib`.
    ///
    /// `stall_limit` (a worker passes its lease TTL): PostgreSQL ends a
    /// session that leaves a transaction idle that long
    /// (`idle_in_transaction_session_timeout`). A worker stalled in the
    /// middle of a batch (a pause, SIGSTOP, a partition from the database)
    /// would otherwise keep its row locks, so the partition's new holder
    /// waited for it, and then commit when it woke, ahead of the new
    /// holder. This way its transaction is rolled back, the new holder goes
    /// on, and the stalled worker's retry is refused by the epoch fence.
    pub async fn connect_with(
        url: &str,
        sqlite_memory_mib: u32,
        stall_limit: Option<Duration>,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (dialect, url, description) = database_of(url)?;

        // PostgreSQL serves the gateway's reads and the workers' batches
        // side by side. SQLite has one writer at a time (WAL), so a few
        // connections are enough for the readers; each one's page cache
        // counts in this process's memory.
        let connections: u32 = match dialect {
            Dialect::Postgres => 16,
            Dialect::Sqlite => 6,
        };
        let cache_kib_per_connection =
            (u64::from(sqlite_memory_mib) * 1024 / u64::from(connections)).max(1024);
        let cache_pragma = format!("PRAGMA cache_size = -{cache_kib_per_connection}");
        let options = AnyPoolOptions::new()
            // Short: while the database is down, requests fail fast with 503
            // instead of queueing for a connection.
            .acquire_timeout(Duration::from_secs(3))
            .max_connections(connections)
            .after_connect(move |conn, _meta| {
                let cache_pragma = cache_pragma.clone();
                Box::pin(async move {
                    if let (Dialect::Postgres, Some(limit)) = (dialect, stall_limit) {
                        let set = format!(
                            "SET idle_in_transaction_session_timeout = {}",
                            limit.as_millis().max(1)
                        );
                        conn.execute(set.as_str()).await?;
                    }
                    if dialect == Dialect::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // The budget's share of page cache (negative: KiB).
                        // No memory-mapped I/O: mapped pages would count in
                        // RSS once per connection, outside the budget; the
                        // OS page cache still keeps hot pages close.
                        conn.execute(cache_pragma.as_str()).await?;
                        conn.execute("PRAGMA mmap_size = 0").await?;
                        // Sorts and temporary indexes spill to files, not RSS.
                        conn.execute("PRAGMA temp_store = FILE").await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        Ok(Store {
            pool,
            dialect,
            description,
            allocation: Default::default(),
        })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.dialect {
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Creates database `name` on the PostgreSQL server of `admin_url`;
    /// returns the URL of the new database (for tests and the benchmark).
    pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let without_query = admin_url.split('?').next().unwrap_or(admin_url);
        let (server, _) = without_query
            .rsplit_once('/')
            .ok_or_else(|| StoreError::UnsupportedUrl(crate::telemetry::redact_url(admin_url)))?;
        Ok(format!("{server}/{name}"))
    }

    /// Drops database `name`, disconnecting its sessions; best effort.
    pub async fn drop_database(admin_url: &str, name: &str) {
        if let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Reads a UUID stored as text, as whichever id type the column holds.
pub(crate) fn uuid_col<Id: From<uuid::Uuid>>(row: &AnyRow, col: &str) -> Result<Id, StoreError> {
    use sqlx::Row;
    let raw: String = row.try_get(col)?;
    uuid::Uuid::from_str(&raw)
        .map(Id::from)
        .map_err(|e| StoreError::Inconsistent(format!("bad uuid in {col}: {e}")))
}

/// A nullable id column.
pub(crate) fn optional_uuid_col<Id: From<uuid::Uuid>>(
    row: &AnyRow,
    col: &str,
) -> Result<Option<Id>, StoreError> {
    use sqlx::Row;
    let raw: Option<String> = row.try_get(col)?;
    raw.map(|raw| {
        uuid::Uuid::from_str(&raw)
            .map(Id::from)
            .map_err(|e| StoreError::Inconsistent(format!("bad uuid in {col}: {e}")))
    })
    .transpose()
}

/// Reads one of a closed set of names (a status, an alert kind) stored as
/// text; a name this build does not know means the data is inconsistent.
pub(crate) fn named_col<N: Named>(row: &AnyRow, col: &str) -> Result<N, StoreError> {
    use sqlx::Row;
    let raw: String = row.try_get(col)?;
    N::parse(&raw).ok_or_else(|| StoreError::Inconsistent(format!("unknown {col} `{raw}`")))
}

/// A time stored as Unix milliseconds (the read model's representation).
pub(crate) fn time_of_millis(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// An envelope read back from an `event_archive` row (its event_id,
/// event_type, event_key, version, occurred_at, payload and actor columns).
pub(crate) fn archived_envelope(row: &AnyRow) -> Result<crate::domain::Envelope, StoreError> {
    let payload: String = row.try_get("payload")?;
    let version: i64 = row.try_get("version")?;
    let occurred: i64 = row.try_get("occurred_at")?;
    use sqlx::Row;
    Ok(crate::domain::Envelope {
        event_id: uuid_col(row, "event_id")?,
        event_type: row.try_get::<String, _>("event_type")?.into(),
        key: row.try_get("event_key")?,
        occurred_at: chrono::DateTime::from_timestamp_millis(occurred)
            .ok_or_else(|| StoreError::Inconsistent(format!("archived time {occurred}")))?,
        version: u32::try_from(version)
            .map_err(|_| StoreError::Inconsistent(format!("archived version {version}")))?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Inconsistent(format!("archived payload is not JSON: {e}")))?,
        actor: row.try_get("actor")?,
    })
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The dialect of a database URL, the URL to connect with (SQLite's with
/// `mode=rwc`, its folder created), and how to name it in logs (password
/// redacted).
fn database_of(url: &str) -> Result<(Dialect, String, String), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let description = format!("PostgreSQL at {}", crate::telemetry::redact_url(url));
        return Ok((Dialect::Postgres, url.to_string(), description));
    }
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Err(StoreError::UnsupportedUrl(crate::telemetry::redact_url(
            url,
        )));
    };
    let path = path.split('?').next().unwrap_or(path);
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        }
    }
    let url = if url.contains('?') {
        url.to_string()
    } else {
        format!("{url}?mode=rwc")
    };
    Ok((Dialect::Sqlite, url, format!("SQLite at {path}")))
}
