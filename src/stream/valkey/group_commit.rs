//! One WAITAOF for the appends that arrive together.
//!
//! Strict durability needs each XADD on disk before its 2xx: `WAITAOF 1 0`
//! on the connection that sent it answers once everything the connection
//! sent before is in the AOF. So a WAITAOF sent after an XADD's answer
//! came back covers that XADD, and every other one answered by then. The
//! appends that finish their XADD while a WAITAOF is in flight queue behind
//! it; the first of them sends the next WAITAOF for all of them, and the
//! rest find themselves covered when it returns. Under load this halves
//! the commands per append (a profile of order ingest showed the Valkey
//! client at a fifth of the gateway's CPU); alone, an append pays the
//! same single WAITAOF as before.
//!
//! When a WAITAOF fails (Valkey died, or its timeout passed), the appends
//! queued behind it fail at once too, instead of each waiting out a
//! timeout of its own in turn: a client hears 503 within one timeout.
//!
//! On Valkey Cluster the client holds one connection per primary, and an
//! XADD goes down the connection of the primary that owns its stream's
//! slot; only a WAITAOF on that same connection covers it. So each primary
//! has a group of its own, and its WAITAOF is sent to it by name.

use super::{unavailable, wait_for_aof};
use crate::stream::LogError;
use fred::prelude::{Client, Server};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A group commit per primary: one entry (`None`) on a single server, one
/// per primary the appends went to on a cluster (a handful: the map is as
/// big as the cluster).
#[derive(Default)]
pub(super) struct AofGroupCommits {
    by_node: Mutex<HashMap<Option<Server>, Arc<AofGroupCommit>>>,
}

impl AofGroupCommits {
    /// Call once an XADD sent to `node` (None: the single server) has
    /// answered; returns once it is in that node's AOF.
    pub(super) async fn synced(
        &self,
        client: &Client,
        node: Option<Server>,
        timeout_ms: i64,
    ) -> Result<(), LogError> {
        let group = self
            .by_node
            .lock()
            .expect("lock")
            .entry(node.clone())
            .or_default()
            .clone();
        group.synced(client, node.as_ref(), timeout_ms).await
    }
}

#[derive(Default)]
struct AofGroupCommit {
    /// XADDs answered so far, numbered in the order their answers came.
    answered: AtomicU64,
    /// The highest number a returned WAITAOF covers; held by the one
    /// append whose WAITAOF is in flight.
    synced_through: tokio::sync::Mutex<u64>,
    /// WAITAOFs that failed so far.
    failures: AtomicU64,
}

impl AofGroupCommit {
    /// Call once the XADD has answered; returns once it is in the AOF.
    async fn synced(
        &self,
        client: &Client,
        node: Option<&Server>,
        timeout_ms: i64,
    ) -> Result<(), LogError> {
        let mine = self.answered.fetch_add(1, Ordering::SeqCst) + 1;
        let failures_before = self.failures.load(Ordering::SeqCst);
        let mut synced_through = self.synced_through.lock().await;
        if *synced_through >= mine {
            return Ok(());
        }
        if self.failures.load(Ordering::SeqCst) != failures_before {
            return Err(LogError::Unavailable(
                "Valkey did not confirm an earlier append reached its AOF; not waiting again"
                    .into(),
            ));
        }
        // Everything answered up to now is covered by a WAITAOF sent now.
        let covers = self.answered.load(Ordering::SeqCst);
        let fsynced = match wait_for_aof(client, node, timeout_ms).await {
            Ok(fsynced) => fsynced,
            Err(e) => {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(unavailable(e));
            }
        };
        if fsynced < 1 {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(LogError::Unavailable(format!(
                "Valkey did not confirm the append reached its AOF within {} s",
                timeout_ms / 1000
            )));
        }
        *synced_through = covers;
        Ok(())
    }
}
