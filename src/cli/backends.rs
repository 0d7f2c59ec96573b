//! Opening the backends the settings name: the read-model database and
//! the event log with its leases.

use super::config::CommonArgs;
use super::startup::Startup;
use crate::store::{Store, StoreError};
use crate::stream::embedded::{EmbeddedLog, EmbeddedOptions};
use crate::stream::valkey::{ValkeyLog, ValkeyOptions};
use crate::stream::{LogBackend, LogError};
use anyhow::{bail, Context};
use std::sync::Arc;

/// Opens the read-model database and brings its schema up to date. A role
/// passes `startup` to wait for a database that is not up yet; the operator
/// commands pass None and fail at once. A role that runs a worker passes
/// its lease TTL as `stall_limit` (see `Store::connect_with`).
pub async fn open_store(
    common: &CommonArgs,
    startup: Option<&Startup>,
    stall_limit: Option<std::time::Duration>,
) -> anyhow::Result<Store> {
    let url = common.database_url_with_password()?;
    let url = secrecy::ExposeSecret::expose_secret(&url);
    let connect = || Store::connect_with(url, common.retention.sqlite_memory_mib, stall_limit);
    let store = match startup {
        Some(startup) => {
            let what = format!("the database at {}", crate::telemetry::redact_url(url));
            let down =
                |e: &StoreError| matches!(e, StoreError::Unavailable(_)) && !e.is_tls_failure();
            startup.wait_for(&what, down, connect).await
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
/// processes can reach, so it refuses the embedded one. A role passes
/// `startup` to wait for a Valkey that is not up yet.
pub async fn open_log(
    common: &CommonArgs,
    standalone_role: Option<&str>,
    startup: Option<&Startup>,
) -> anyhow::Result<LogBackend> {
    match &common.valkey_url {
        Some(url) => {
            let options = ValkeyOptions {
                durability: common.durability,
                min_replicas: common.min_replicas,
                ca_file: common.valkey_ca_file.clone(),
            };
            let connect = || {
                ValkeyLog::connect_with(url, &common.valkey_namespace, common.partitions, &options)
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
            if common.durability == crate::stream::Durability::Replicated {
                bail!(
                    "--durability replicated waits for Valkey replicas: pass --valkey-url. The \
                     embedded log lives on one disk; its strict durability is an fsync"
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
                leases: log.leases(),
                log: Arc::new(log),
            })
        }
    }
}
