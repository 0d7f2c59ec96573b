//! The Valkey Streams backend: one stream per partition
//! (`<namespace>:events:<p>`), one consumer group per processor group.
//!
//! Durability: Valkey must run with AOF on; after each XADD the gateway waits
//! for `WAITAOF 1 0` (strict) or `WAITAOF 1 N` (replicated: N replicas have
//! it in their AOF too) before the 2xx, on the connection that carried the
//! XADD. Concurrent appends share one connection and one WAITAOF
//! (`group_commit`). Servers without WAITAOF (Redis < 7.2) or without AOF
//! run in relaxed durability, said loudly at start-up; replicated
//! durability refuses to start on them, and waits at start-up until every
//! primary has its replicas.
//!
//! Valkey Cluster (a `valkey-cluster://` or `redis-cluster://` URL): each
//! key lives in one of 16,384 hash slots, spread over the primaries. Every
//! partition's stream is a key of its own, so the partitions spread over
//! the slots and hence over the primaries. Every command and script here
//! names one key, so none crosses slots; the few places that differ on a
//! cluster are the WAITAOF (sent to the primary that took the XADD, see
//! `group_commit`) and the consumer's read (see `log`).
//!
//! `log` implements the event log on this connection, `leases` the
//! partition leases, `fenced` the worker's reads, take-overs and acks that
//! check its lease; all share the connection and key layout set up here.

mod announce;
mod answers;
mod durability;
mod fenced;
mod group_commit;
mod leases;
mod log;
mod lost;
mod read_confirm;

use super::{Delivery, Durability, EntryId, LogError, Partition};
use crate::domain::Envelope;
use fred::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

const FIELD: &str = "e";

/// How a Valkey log is set up beyond its URL.
#[derive(Debug, Clone)]
pub struct ValkeyOptions {
    pub durability: Durability,
    /// Replicas each append waits for under `Durability::Replicated`.
    pub min_replicas: u32,
    /// With a `rediss://` URL: trust only the CAs in this PEM file.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for ValkeyOptions {
    fn default() -> ValkeyOptions {
        ValkeyOptions {
            durability: Durability::Strict,
            min_replicas: 1,
            ca_file: None,
        }
    }
}

/// One stream entry as fred returns it: id and field map.
type RawEntry = (String, HashMap<String, String>);
/// The client's settings from the URL; with `ca_file`, TLS trusting only
/// the CAs in it.
fn client_config(url: &str, ca_file: Option<&std::path::Path>) -> Result<Config, LogError> {
    let mut config = Config::from_url(url)
        .map_err(|e| LogError::Corrupt(format!("invalid --valkey-url: {e}")))?;
    if let Some(ca_file) = ca_file {
        if config.tls.is_none() {
            return Err(LogError::Corrupt(
                "--valkey-ca-file is for TLS: use a rediss:// --valkey-url".into(),
            ));
        }
        config.tls = Some(tls_trusting(ca_file)?.into());
    }
    Ok(config)
}

/// The partition count is part of the data's layout: refuses to run with
/// a different one than the deployment started with (and records it for a
/// new namespace).
async fn check_partition_count(
    client: &Client,
    namespace: &str,
    partitions: u32,
) -> Result<(), LogError> {
    let meta_key = format!("{namespace}:meta:partitions");
    let stored: Option<u32> = client.get(&meta_key).await.map_err(unavailable)?;
    match stored {
        Some(n) if n != partitions => Err(LogError::Corrupt(format!(
            "Valkey namespace `{namespace}` has {n} partitions but {partitions} were asked for; \
             the partition count is fixed for the life of a deployment"
        ))),
        Some(_) => Ok(()),
        None => {
            let _: Option<String> = client
                .set(&meta_key, partitions, None, Some(SetOptions::NX), false)
                .await
                .map_err(unavailable)?;
            Ok(())
        }
    }
}

/// How long a command may wait for Valkey before it fails (and the gateway
/// answers 503): fred would otherwise queue it until Valkey is back.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Blocking reads wait up to the batch wait (at most 10 s) on top of that.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub struct ValkeyLog {
    url_for_display: String,
    namespace: String,
    partitions: u32,
    /// Appends, acks and queries share this pipelined connection.
    client: Client,
    /// Blocking XREADGROUP holds a connection; it gets its own.
    reader: Client,
    durability: Durability,
    /// Replicas each append waits for, under replicated durability.
    min_replicas: u32,
    /// What the durability in force does not cover in this deployment's
    /// configuration, said with it (`describe`).
    caveat: Option<String>,
    /// Acked entries are kept at least this long before trimming.
    retention: Duration,
    groups_ready: Mutex<HashSet<String>>,
    /// For the announcement subscriber's own connection.
    config: Config,
    /// What this process heard announced (see `announce`).
    announcements: crate::stream::announce::LocalAnnouncements,
    /// Set once this process subscribes (a gateway; workers only publish).
    subscribed: std::sync::OnceLock<()>,
    /// The durable appends' WAITAOFs, shared by concurrent appends.
    aof: group_commit::AofGroupCommits,
    /// On Valkey Cluster (see the module's comment).
    cluster: bool,
}

fn unavailable(e: Error) -> LogError {
    LogError::Unavailable(e.to_string())
}

async fn connect_client(config: &Config, command_timeout: Duration) -> Result<Client, LogError> {
    let client = Builder::from_config(config.clone())
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(10);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(unavailable)?;
    client.init().await.map_err(|e| {
        // A certificate the CA does not vouch for, or a server that does not
        // speak TLS: retrying cannot mend it. tokio-rustls reports TLS
        // failures as I/O errors of kind InvalidData.
        let tls_failed = *e.kind() == ErrorKind::Tls
            || (config.tls.is_some()
                && *e.kind() == ErrorKind::IO
                && e.details().contains("InvalidData"));
        if tls_failed {
            LogError::Corrupt(format!(
                "TLS with Valkey failed: {} (check --valkey-ca-file, and that the server \
                 speaks TLS on that port)",
                e.details()
            ))
        } else if config.tls.is_some() && *e.kind() == ErrorKind::Timeout {
            // A plain-text server never answers the TLS greeting; a slow
            // one may yet, so this stays worth a retry.
            LogError::Unavailable(format!(
                "no answer to TLS within 5 s: is the server speaking TLS on that port? ({e})"
            ))
        } else {
            unavailable(e)
        }
    })?;
    Ok(client)
}

/// rustls trusting only the CA certificates in the PEM file `ca_file`.
fn tls_trusting(ca_file: &std::path::Path) -> Result<fred::types::config::TlsConnector, LogError> {
    use fred::rustls::pki_types::{pem::PemObject, CertificateDer};
    use fred::rustls::{ClientConfig, RootCertStore};
    let unreadable = |e: &dyn std::fmt::Display| {
        LogError::Corrupt(format!(
            "cannot read --valkey-ca-file {}: {e}",
            ca_file.display()
        ))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(&e))? {
        roots
            .add(cert.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in it"));
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config.into())
}

impl ValkeyLog {
    pub async fn connect(
        url: &str,
        namespace: &str,
        partitions: u32,
        durability: Durability,
    ) -> Result<ValkeyLog, LogError> {
        let options = ValkeyOptions {
            durability,
            ..ValkeyOptions::default()
        };
        ValkeyLog::connect_with(url, namespace, partitions, &options).await
    }

    /// `connect` with every option; a `rediss://` URL speaks TLS, trusting
    /// the system's CAs, or only those in `options.ca_file`.
    pub async fn connect_with(
        url: &str,
        namespace: &str,
        partitions: u32,
        options: &ValkeyOptions,
    ) -> Result<ValkeyLog, LogError> {
        let config = client_config(url, options.ca_file.as_deref())?;
        let client = connect_client(&config, COMMAND_TIMEOUT).await?;
        let reader = connect_client(&config, READ_TIMEOUT).await?;
        check_partition_count(&client, namespace, partitions).await?;
        let cluster = config.server.is_clustered();
        let min_replicas = options.min_replicas;
        let (durability, caveat) =
            durability::in_force(&client, cluster, options.durability, min_replicas).await?;
        let replicas_per_wait = match durability {
            Durability::Replicated => min_replicas,
            _ => 0,
        };

        Ok(ValkeyLog {
            url_for_display: crate::telemetry::redact_url(url),
            namespace: namespace.to_string(),
            partitions,
            client,
            reader,
            durability,
            min_replicas,
            caveat,
            retention: Duration::ZERO,
            groups_ready: Mutex::new(HashSet::new()),
            config,
            announcements: Default::default(),
            subscribed: std::sync::OnceLock::new(),
            aof: group_commit::AofGroupCommits::new(replicas_per_wait),
            cluster,
        })
    }

    /// Keeps acked entries for `retention` before `trim` removes them.
    pub fn with_retention(mut self, retention: Duration) -> ValkeyLog {
        self.retention = retention;
        self
    }

    fn stream_key(&self, partition: Partition) -> String {
        format!("{}:events:{partition}", self.namespace)
    }

    /// The primary that owns `key`'s slot, on a cluster; None on a single
    /// server.
    fn primary_of(&self, key: &str) -> Option<Server> {
        if !self.cluster {
            return None;
        }
        let slot = fred::util::redis_keyslot(key.as_bytes());
        self.client
            .cached_cluster_state()
            .and_then(|state| state.get_server(slot).cloned())
    }

    fn partition_of_key(&self, stream: &str) -> Option<Partition> {
        stream.rsplit(':').next()?.parse().ok().map(Partition)
    }

    /// Creates the group on every partition stream (from the beginning), once.
    async fn ensure_group(&self, group: &str) -> Result<(), LogError> {
        if self.groups_ready.lock().expect("lock").contains(group) {
            return Ok(());
        }
        for p in Partition::all(self.partitions) {
            let created: Result<Value, Error> = self
                .client
                .xgroup_create(self.stream_key(p), group, "0", true)
                .await;
            if let Err(e) = created {
                if !e.details().contains("BUSYGROUP") {
                    return Err(unavailable(e));
                }
            }
        }
        self.groups_ready
            .lock()
            .expect("lock")
            .insert(group.to_string());
        Ok(())
    }

    /// A group that vanished (a server that came back without its data, a
    /// failover to a replica that never had the stream) is created again by
    /// the next `ensure_group`, or its workers would read nothing forever.
    fn forget_vanished_groups(&self, error: &LogError) {
        if error.to_string().contains("NOGROUP") {
            tracing::warn!(error = %error, "a consumer group vanished from Valkey; creating it again");
            self.groups_ready.lock().expect("lock").clear();
        }
    }

    fn decode(
        partition: Partition,
        id: &str,
        fields: &HashMap<String, String>,
    ) -> Result<Delivery, LogError> {
        let id: EntryId = id.parse()?;
        let envelope = match fields.get(FIELD) {
            Some(json) => serde_json::from_str::<Envelope>(json)
                .map_err(|e| format!("undecodable log entry: {e}")),
            None => Err(format!("log entry has no `{FIELD}` field")),
        };
        Ok(Delivery {
            partition,
            id,
            envelope,
        })
    }
}
