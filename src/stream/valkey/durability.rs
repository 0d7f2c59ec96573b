//! What a 2xx can promise on this Valkey deployment: checked at start-up,
//! primary by primary, before any append (see the module's comment on
//! durability).

use super::group_commit;
use super::unavailable;
use crate::stream::{Durability, LogError};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, InfoKind};

/// The durability this server can give: strict only where WAITAOF works
/// (on a cluster, on every primary); says so when it falls back.
/// Replicated durability does not fall back: it fails where WAITAOF does
/// not work, and is unavailable (start-up waits) while a primary has fewer
/// than `min_replicas` replicas.
pub(super) async fn in_force(
    client: &Client,
    cluster: bool,
    wanted: Durability,
    min_replicas: u32,
) -> Result<(Durability, Option<String>), LogError> {
    if wanted == Durability::Relaxed {
        tracing::warn!("--durability relaxed: acknowledged events can be lost if Valkey crashes");
        return Ok((Durability::Relaxed, None));
    }
    // WAITAOF fails at once where the command is missing or AOF is off.
    let primaries = match client.cached_cluster_state() {
        Some(state) if cluster => state.unique_primary_nodes().into_iter().map(Some).collect(),
        _ => vec![None],
    };
    let mut alone = Vec::new();
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
            return Ok((Durability::Relaxed, None));
        }
        if wanted == Durability::Replicated {
            check_replicas(client, primary.as_ref(), min_replicas).await?;
            if takes_writes_alone(client, primary.as_ref()).await {
                alone.push(
                    primary
                        .as_ref()
                        .map_or_else(|| "the primary".to_string(), |p| p.to_string()),
                );
            }
        }
    }
    let caveat = (!alone.is_empty()).then(|| {
        format!(
            "min-replicas-to-write is 0 on {}: cut off from its replicas, a primary still takes \
             appends (never acknowledged here), which a worker may apply and a failover lose",
            alone.join(", ")
        )
    });
    if let Some(caveat) = &caveat {
        tracing::warn!("{caveat}; set min-replicas-to-write on the primaries");
    }
    if wanted == Durability::Replicated {
        tracing::info!(
            min_replicas,
            primaries = primaries.len(),
            "replicated durability: a 2xx waits until the event is in the primary's AOF and in \
             the AOF of {min_replicas} replica(s)"
        );
    }
    Ok((wanted, caveat))
}

/// Whether `node` (None: the single server) takes writes with no replica
/// connected (`min-replicas-to-write 0`, the default). False when its
/// configuration cannot be read (a managed service may hide CONFIG).
async fn takes_writes_alone(client: &Client, node: Option<&Server>) -> bool {
    let command = CustomCommand::new_static("CONFIG", ClusterHash::Random, false);
    let args = vec!["GET", "min-replicas-to-write"];
    let answer: Result<Vec<String>, Error> = match node {
        Some(node) => {
            client
                .with_cluster_node(node.clone())
                .custom(command, args)
                .await
        }
        None => client.custom(command, args).await,
    };
    match answer {
        Ok(pair) => pair.get(1).is_some_and(|value| value == "0"),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read min-replicas-to-write");
            false
        }
    }
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
