//! The Valkey Streams backend: one stream per partition
//! (`<namespace>:events:<p>`), one consumer group per processor group.
//!
//! Durability: Valkey must run with AOF on; after each XADD the gateway waits
//! for `WAITAOF 1 0` so the entry is fsynced before the 2xx. Concurrent
//! appends share one connection, so their WAITAOFs are pipelined and one
//! fsync covers many of them (group commit). Servers without WAITAOF
//! (Redis < 7.2) or without AOF run in relaxed durability, said loudly at
//! start-up.

use super::{AppendReceipt, Delivery, EntryId, EventLog, LogError};
use crate::domain::Envelope;
use async_trait::async_trait;
use fred::prelude::*;
use fred::types::streams::XReadResponse;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIELD: &str = "e";

/// One stream entry as fred returns it: id and field map.
type RawEntry = (String, HashMap<String, String>);
/// Entries delivered to a consumer that has not acked them for this long are
/// taken over by whoever reads next (the owner most likely died).
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAITAOF after each append: the entry is on disk before the 2xx.
    Strict,
    /// The server cannot confirm fsync (no AOF, or no WAITAOF): an append is
    /// acknowledged once it is in the server's memory.
    Relaxed,
}

pub struct ValkeyLog {
    url_for_display: String,
    namespace: String,
    partitions: u32,
    /// Appends, acks and queries share this pipelined connection.
    client: Client,
    /// Blocking XREADGROUP holds a connection; it gets its own.
    reader: Client,
    durability: Durability,
    groups_ready: Mutex<HashSet<String>>,
    last_claim: Mutex<Option<Instant>>,
    claim_idle: Duration,
}

fn unavailable(e: Error) -> LogError {
    LogError::Unavailable(e.to_string())
}

async fn connect_client(config: &Config) -> Result<Client, LogError> {
    let client = Builder::from_config(config.clone())
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(10);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(unavailable)?;
    client.init().await.map_err(unavailable)?;
    Ok(client)
}

impl ValkeyLog {
    pub async fn connect(url: &str, namespace: &str, partitions: u32, want_strict: bool) -> Result<ValkeyLog, LogError> {
        let config = Config::from_url(url)
            .map_err(|e| LogError::Corrupt(format!("invalid --valkey-url: {e}")))?;
        let client = connect_client(&config).await?;
        let reader = connect_client(&config).await?;

        // The partition count is part of the data's layout: refuse to run
        // with a different one than the deployment started with.
        let meta_key = format!("{namespace}:meta:partitions");
        let stored: Option<u32> = client.get(&meta_key).await.map_err(unavailable)?;
        match stored {
            Some(n) if n != partitions => {
                return Err(LogError::Corrupt(format!(
                    "Valkey namespace `{namespace}` has {n} partitions but --partitions is {partitions}; \
                     the partition count is fixed for the life of a deployment"
                )))
            }
            Some(_) => {}
            None => {
                let _: Option<String> = client
                    .set(&meta_key, partitions, None, Some(SetOptions::NX), false)
                    .await
                    .map_err(unavailable)?;
            }
        }

        let durability = if want_strict {
            // WAITAOF 1 0 1 fails at once where the command is missing or AOF is off.
            let probe: Result<Value, Error> = client
                .custom(fred::cmd!("WAITAOF"), vec![Value::from(1), Value::from(0), Value::from(1)])
                .await;
            match probe {
                Ok(_) => Durability::Strict,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "Valkey cannot confirm appends are on disk (needs Valkey >= 7.2 with appendonly yes); \
                         running with RELAXED durability: an acknowledged event can be lost if Valkey crashes"
                    );
                    Durability::Relaxed
                }
            }
        } else {
            tracing::warn!("--durability relaxed: acknowledged events can be lost if Valkey crashes");
            Durability::Relaxed
        };

        Ok(ValkeyLog {
            url_for_display: crate::config::redact_url(url),
            namespace: namespace.to_string(),
            partitions,
            client,
            reader,
            durability,
            groups_ready: Mutex::new(HashSet::new()),
            last_claim: Mutex::new(None),
            claim_idle: DEFAULT_CLAIM_IDLE,
        })
    }

    /// How long an entry stays pending with a silent consumer before another
    /// takes it over (checked at most every third of that).
    pub fn with_claim_idle(mut self, idle: Duration) -> ValkeyLog {
        self.claim_idle = idle;
        self
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    fn stream_key(&self, partition: u32) -> String {
        format!("{}:events:{partition}", self.namespace)
    }

    fn partition_of_key(&self, stream: &str) -> Option<u32> {
        stream.rsplit(':').next()?.parse().ok()
    }

    /// Creates the group on every partition stream (from the beginning), once.
    async fn ensure_group(&self, group: &str) -> Result<(), LogError> {
        if self.groups_ready.lock().expect("lock").contains(group) {
            return Ok(());
        }
        for p in 0..self.partitions {
            let created: Result<Value, Error> = self.client.xgroup_create(self.stream_key(p), group, "0", true).await;
            if let Err(e) = created {
                if !e.details().contains("BUSYGROUP") {
                    return Err(unavailable(e));
                }
            }
        }
        self.groups_ready.lock().expect("lock").insert(group.to_string());
        Ok(())
    }

    fn decode(partition: u32, id: &str, fields: &HashMap<String, String>) -> Result<Delivery, LogError> {
        let id: EntryId = id.parse()?;
        let envelope = match fields.get(FIELD) {
            Some(json) => serde_json::from_str::<Envelope>(json).map_err(|e| format!("undecodable log entry: {e}")),
            None => Err(format!("log entry has no `{FIELD}` field")),
        };
        Ok(Delivery { partition, id, envelope })
    }

    /// Takes over entries another consumer was given but never acked (it
    /// probably died), so they are not stuck pending forever.
    async fn claim_idle(&self, group: &str, consumer: &str, max: usize) -> Result<Vec<Delivery>, LogError> {
        {
            let mut last = self.last_claim.lock().expect("lock");
            if last.is_some_and(|t| t.elapsed() < self.claim_idle / 3) {
                return Ok(Vec::new());
            }
            *last = Some(Instant::now());
        }
        let mut out = Vec::new();
        for p in 0..self.partitions {
            let (_next, entries): (String, Vec<RawEntry>) = self
                .client
                .xautoclaim_values(
                    self.stream_key(p),
                    group,
                    consumer,
                    self.claim_idle.as_millis() as u64,
                    "0-0",
                    Some(max as u64),
                    false,
                )
                .await
                .map_err(unavailable)?;
            for (id, fields) in entries {
                out.push(Self::decode(p, &id, &fields)?);
            }
        }
        if !out.is_empty() {
            tracing::info!(claimed = out.len(), group, "took over idle pending entries");
        }
        Ok(out)
    }
}


#[async_trait]
impl EventLog for ValkeyLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn describe(&self) -> String {
        let durability = match self.durability {
            Durability::Strict => "strict",
            Durability::Relaxed => "relaxed",
        };
        format!("Valkey streams at {} ({durability} durability)", self.url_for_display)
    }

    async fn append(&self, envelope: &Envelope) -> Result<AppendReceipt, LogError> {
        let partition = super::partition_for(&envelope.key, self.partitions);
        let json = serde_json::to_string(envelope).map_err(|e| LogError::Corrupt(e.to_string()))?;
        let id: String = self
            .client
            .xadd(self.stream_key(partition), false, None, "*", vec![(FIELD, json)])
            .await
            .map_err(unavailable)?;
        if self.durability == Durability::Strict {
            let acked: Vec<i64> = self
                .client
                .custom(fred::cmd!("WAITAOF"), vec![Value::from(1), Value::from(0), Value::from(5_000)])
                .await
                .map_err(unavailable)?;
            if acked.first().copied().unwrap_or(0) < 1 {
                return Err(LogError::Unavailable(
                    "Valkey did not confirm the append reached its AOF within 5 s".into(),
                ));
            }
        }
        Ok(AppendReceipt {
            partition,
            id: id.parse()?,
        })
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, LogError> {
        self.ensure_group(group).await?;
        let claimed = self.claim_idle(group, consumer, max).await?;
        if !claimed.is_empty() {
            return Ok(claimed);
        }
        let keys: Vec<String> = (0..self.partitions).map(|p| self.stream_key(p)).collect();
        let ids: Vec<&str> = vec![">"; keys.len()];
        let raw: Value = self
            .reader
            .xreadgroup(
                group,
                consumer,
                Some(max as u64),
                Some(block.as_millis().max(1) as u64),
                false,
                keys,
                ids,
            )
            .await
            .map_err(unavailable)?;
        // A read that times out answers nil, not an empty map.
        if raw.is_null() {
            return Ok(Vec::new());
        }
        let response: XReadResponse<String, String, String, String> = raw.into_xread_response().map_err(unavailable)?;
        let mut out = Vec::new();
        for (stream, entries) in response {
            let partition = self
                .partition_of_key(&stream)
                .ok_or_else(|| LogError::Corrupt(format!("unexpected stream `{stream}`")))?;
            for (id, fields) in entries {
                out.push(Self::decode(partition, &id, &fields)?);
            }
        }
        Ok(out)
    }

    async fn ack(&self, group: &str, entries: &[(u32, EntryId)]) -> Result<(), LogError> {
        let mut by_partition: HashMap<u32, Vec<String>> = HashMap::new();
        for (p, id) in entries {
            by_partition.entry(*p).or_default().push(id.to_string());
        }
        for (p, ids) in by_partition {
            let _: i64 = self
                .client
                .xack(self.stream_key(p), group, ids)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn backlog(&self, group: &str) -> Result<u64, LogError> {
        self.ensure_group(group).await?;
        let mut total = 0u64;
        for p in 0..self.partitions {
            let groups: Vec<HashMap<String, Value>> =
                self.client.xinfo_groups(self.stream_key(p)).await.map_err(unavailable)?;
            let info = groups
                .iter()
                .find(|g| g.get("name").and_then(|v| v.as_string()).as_deref() == Some(group));
            if let Some(info) = info {
                let pending = info.get("pending").and_then(|v| v.as_u64()).unwrap_or(0);
                // `lag` is nil when Valkey cannot compute it (after deletions);
                // fall back to the stream length, an upper bound.
                let lag = match info.get("lag").and_then(|v| v.as_u64()) {
                    Some(lag) => lag,
                    None => self.client.xlen(self.stream_key(p)).await.map_err(unavailable)?,
                };
                total += lag + pending;
            }
        }
        Ok(total)
    }

    async fn ping(&self) -> Result<(), LogError> {
        let _: String = self.client.ping(None).await.map_err(unavailable)?;
        Ok(())
    }
}
