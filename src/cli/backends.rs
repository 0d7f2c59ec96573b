//! Opening the backends the settings name: the read-model database and
//! the event log with its leases.

use super::config::{CommonArgs, Durability};
use super::startup::Startup;
use crate::store::{Store, StoreError};
use crate::stream::embedded::{EmbeddedLog, EmbeddedOptions};
use crate::stream::lease::LocalLeases;
use crate::stream::valkey::ValkeyLog;
use crate::stream::{LogBackend, LogError};
use anyhow::{bail, Context};
use std::sync::Arc;

/// Opens the read-model database and brings its schema up to date; fails
/// at once when it does not answer (the operator commands).
pub async fn open_store(common: &CommonArgs) -> anyhow::Result<Store> {
    connect_store(common, None).await
}

/// `open_store` for a role: waits for the database as `startup` says.
pub async fn wait_for_store(common: &CommonArgs, startup: &Startup) -> anyhow::Result<Store> {
    connect_store(common, Some(startup)).await
}

/// Whether waiting may mend `e`: a database down or unreachable, but not
/// a TLS failure (a wrong CA, a server without TLS), which only fails again.
/// rustls reports a failed handshake as an I/O error of kind InvalidData.
fn store_down(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(sqlx::Error::Tls(_)) => false,
        StoreError::Unavailable(sqlx::Error::Io(io)) => {
            io.kind() != std::io::ErrorKind::InvalidData
        }
        StoreError::Unavailable(_) => true,
        _ => false,
    }
}

async fn connect_store(common: &CommonArgs, startup: Option<&Startup>) -> anyhow::Result<Store> {
    let url = common
        .database_url_with_password()
        .map_err(anyhow::Error::msg)?;
    let connect = || Store::connect_with(&url, common.retention.sqlite_memory_mib);
    let store = match startup {
        Some(startup) => {
            let what = format!("the database at {}", crate::telemetry::redact_url(&url));
            startup.wait_for(&what, store_down, connect).await
        }
        None => connect().await.map_err(anyhow::Error::from),
    }
    .context("cannot open the database (--database-url / DATABASE_URL)")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

/// Opens the event log: Valkey when --valkey-url is set, else the embedded
/// log. A role running on its own (`serve`, `worker`) needs a log other
/// processes can reach, so it refuses the embedded one.
pub async fn open_log(
    common: &CommonArgs,
    standalone_role: Option<&str>,
) -> anyhow::Result<LogBackend> {
    connect_log(common, standalone_role, None).await
}

/// `open_log` for a role: waits for Valkey as `startup` says.
pub async fn wait_for_log(
    common: &CommonArgs,
    standalone_role: Option<&str>,
    startup: &Startup,
) -> anyhow::Result<LogBackend> {
    connect_log(common, standalone_role, Some(startup)).await
}

async fn connect_log(
    common: &CommonArgs,
    standalone_role: Option<&str>,
    startup: Option<&Startup>,
) -> anyhow::Result<LogBackend> {
    match &common.valkey_url {
        Some(url) => {
            let connect = || {
                ValkeyLog::connect_tls(
                    url,
                    &common.valkey_namespace,
                    common.partitions,
                    common.durability == Durability::Strict,
                    common.valkey_ca_file.as_deref(),
                )
            };
            let log = match startup {
                Some(startup) => {
                    let what = format!("Valkey at {}", crate::telemetry::redact_url(url));
                    startup
                        .wait_for(&what, |e| matches!(e, LogError::Unavailable(_)), connect)
                        .await
                }
                None => connect().await.map_err(anyhow::Error::from),
            }
            .context("cannot connect to Valkey (--valkey-url / STREAMSTOCK_VALKEY_URL)")?
            .with_retention(*common.retention.log_retention);
            let log = Arc::new(log);
            Ok(LogBackend {
                log: log.clone(),
                leases: log,
            })
        }
        None => {
            if let Some(role) = standalone_role {
                bail!(
                    "`streamstock {role}` on its own needs a shared event log: pass --valkey-url (or set \
                     STREAMSTOCK_VALKEY_URL). The embedded log lives inside one process; use `streamstock all` \
                     to run every role on it"
                );
            }
            let dir = common.data_dir.join("log");
            let options = EmbeddedOptions {
                retention: *common.retention.log_retention,
                segment_bytes: common.retention.log_segment_bytes,
                ..EmbeddedOptions::default()
            };
            let log = EmbeddedLog::open_with(&dir, common.partitions, options)
                .with_context(|| format!("cannot open the embedded log in {}", dir.display()))?;
            Ok(LogBackend {
                log: Arc::new(log),
                leases: Arc::new(LocalLeases::new()),
            })
        }
    }
}
