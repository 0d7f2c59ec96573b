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
mod fenced;
mod group_commit;
mod leases;
mod log;

use super::{Delivery, Durability, EntryId, LogError, Partition};
use crate::domain::Envelope;
use fred::prelude::*;
use fred::types::InfoKind;
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

/// The durability this server can give: strict only where WAITAOF works
/// (on a cluster, on every primary); says so when it falls back.
/// Replicated durability does not fall back: it fails where WAITAOF does
/// not work, and is unavailable (start-up waits) while a primary has fewer
/// than `min_replicas` replicas.
async fn durability_in_force(
    client: &Client,
    cluster: bool,
    wanted: Durability,
    min_replicas: u32,
) -> Result<Durability, LogError> {
    if wanted == Durability::Relaxed {
        tracing::warn!("--durability relaxed: acknowledged events can be lost if Valkey crashes");
        return Ok(Durability::Relaxed);
    }
    // WAITAOF fails at once where the command is missing or AOF is off.
    let primaries = match client.cached_cluster_state() {
        Some(state) if cluster => state.unique_primary_nodes().into_iter().map(Some).collect(),
        _ => vec![None],
    };
    for primary in &primaries {
        if let Err(e) = group_commit::wait_for_aof(client, primary.as_ref(), 0, 1).await {
            if wanted == Durability::Replicated {
                return Err(LogError::Corrupt(format!(
                    "--durability replicated needs WAITAOF (Valkey >= 7.2 with appendonly yes): {e}"
                )));
            }
            tracing::warn!(
                error = %e,
                "Valkey cannot confirm appends are on disk (needs Valkey >= 7.2 with appendonly yes); \
                 running with RELAXED durability: an acknowledged event can be lost if Valkey crashes"
            );
            return Ok(Durability::Relaxed);
        }
        if wanted == Durability::Replicated {
            check_replicas(client, primary.as_ref(), min_replicas).await?;
        }
    }
    if wanted == Durability::Replicated {
        tracing::info!(
            min_replicas,
            primaries = primaries.len(),
            "replicated durability: a 2xx waits until the event is in the primary's AOF and in \
             the AOF of {min_replicas} replica(s)"
        );
    }
    Ok(wanted)
}

/// Unavailable while `node` (None: the single server) has fewer than
/// `wanted` replicas connected: every append would wait in vain.
async fn check_replicas(
    client: &Client,
    node: Option<&Server>,
    wanted: u32,
) -> Result<(), LogError> {
    let info: String = match node {
        Some(node) => {
            client
                .with_cluster_node(node.clone())
                .info(Some(InfoKind::Replication))
                .await
        }
        None => client.info(Some(InfoKind::Replication)).await,
    }
    .map_err(unavailable)?;
    let connected = info
        .lines()
        .find_map(|line| line.strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let primary = node.map_or_else(|| "the primary".to_string(), |n| format!("primary {n}"));
    if connected < wanted {
        return Err(LogError::Unavailable(format!(
            "{primary} has {connected} replica(s) connected; --durability replicated \
             --min-replicas {wanted} needs {wanted}"
        )));
    }
    // Connected is not enough: a replica reports what its AOF holds only
    // once its own AOF is up after the initial sync (a rewrite); until
    // then every append would wait in vain.
    let confirmed = group_commit::wait_for_aof(client, node, wanted, 100)
        .await
        .map_err(unavailable)?
        .replicas;
    if confirmed < i64::from(wanted) {
        return Err(LogError::Unavailable(format!(
            "{primary}: {confirmed} of its {connected} replicas confirm their AOF yet; \
             --min-replicas {wanted} needs {wanted}"
        )));
    }
    Ok(())
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
        let durability =
            durability_in_force(&client, cluster, options.durability, min_replicas).await?;
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
