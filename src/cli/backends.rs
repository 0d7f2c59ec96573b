//! Opening the backends the settings name: the read-model database and
//! the event log with its leases.

use super::config::{CommonArgs, Durability};
use crate::store::Store;
use crate::stream::embedded::{EmbeddedLog, EmbeddedOptions};
use crate::stream::lease::LocalLeases;
use crate::stream::valkey::ValkeyLog;
use crate::stream::LogBackend;
use anyhow::{bail, Context};
use std::sync::Arc;

/// Opens the read-model database and brings its schema up to date.
pub async fn open_store(common: &CommonArgs) -> anyhow::Result<Store> {
    let url = common.database_url();
    let store = Store::connect_with(&url, common.retention.sqlite_memory_mib)
        .await
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
    match &common.valkey_url {
        Some(url) => {
            let log = ValkeyLog::connect(
                url,
                &common.valkey_namespace,
                common.partitions,
                common.durability == Durability::Strict,
            )
            .await
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
