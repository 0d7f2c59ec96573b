//! One WAITAOF for the appends that arrive together, and the proof that it
//! covers them.
//!
//! A durable append needs its XADD on disk before its 2xx: `WAITAOF 1 N`
//! on the connection that sent it answers once everything the connection
//! sent before is in the local AOF and in the AOF of N replicas (N is 0
//! for strict durability, `--min-replicas` for replicated). So a WAITAOF
//! sent after an XADD's answer came back covers that XADD, and every other
//! one answered by then. The appends that finish their XADD while a WAITAOF
//! is in flight queue behind it; the first of them sends the next WAITAOF
//! for all of them, and the rest find themselves covered when it returns.
//! Under load this halves the commands per append (a profile of order
//! ingest showed the Valkey client at a fifth of the gateway's CPU); alone,
//! an append pays the same single WAITAOF as before.
//!
//! WAITAOF only speaks for its own connection, and the client reconnects
//! by itself: a WAITAOF sent on a fresh connection answers at once and
//! covers nothing written on the old one. So the XADD and the WAITAOF each
//! travel in a pipeline with `CLIENT ID` (one attempt, never retried on
//! another connection), and an append counts as covered only by a WAITAOF
//! that ran on the connection its XADD ran on. Otherwise its outcome is
//! unknown, and the client hears so (503 `outcome_unknown`).
//!
//! When a WAITAOF fails (Valkey died, its timeout passed, too few replicas
//! confirmed), the appends queued behind it fail at once too, instead of
//! each waiting out a timeout of its own in turn: a client hears 503 within
//! one timeout.
//!
//! On Valkey Cluster the client holds one connection per primary, and an
//! XADD goes down the connection of the primary that owns its stream's
//! slot; only a WAITAOF on that same connection covers it. So each primary
//! has a group of its own, and its WAITAOF is sent to it by name.

use super::unavailable;
use crate::stream::LogError;
use fred::prelude::{Client, ClientLike, Error, Options, Server, Value};
use fred::types::{ClusterHash, CustomCommand};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How long a WAITAOF waits for the disks (and replicas), and a WAIT for
/// the replicas before it: together under the client's 5 s command
/// timeout, so Valkey's answer comes first.
pub(super) const WAIT_TIMEOUT_MS: i64 = 2_000;

/// One connection to one server: `CLIENT ID` on `node` (None: the single
/// server). Ids are unique among a server's connections while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConnectionId {
    pub node: Option<Server>,
    pub id: i64,
}

/// What a WAITAOF answered, and on which connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AofConfirmation {
    /// Local AOFs that have the writes: 1, or 0 when AOF is off or the
    /// fsync did not finish in time.
    pub local: i64,
    /// Replicas whose AOF has them.
    pub replicas: i64,
    pub connection: ConnectionId,
}

/// `CLIENT` (with `ID`), sent as a custom command: fred's client interface
/// is a feature this crate does not otherwise need.
fn client_id() -> CustomCommand {
    CustomCommand::new_static("CLIENT", ClusterHash::Random, false)
}

/// Options for a command that must run on `node`'s connection once, never
/// again on a new connection after a reconnect.
pub(super) fn once_on(node: Option<&Server>) -> Options {
    Options {
        max_attempts: Some(1),
        cluster_node: node.cloned(),
        ..Default::default()
    }
}

/// `WAITAOF 1 replicas timeout` then `CLIENT ID`, in one pipeline on
/// `node`'s connection (None: the single server).
///
/// With replicas, `WAIT replicas timeout` goes first. A replica answers the
/// primary's request for an acknowledgement at once, but reports the AOF
/// offset it had fsynced before that request's writes: when a WAITAOF
/// arrives together with the XADDs it covers, the replica's fsync of them
/// is only reported by its next periodic acknowledgement, a second later
/// (measured: every append then took 1 s). The WAIT returns once the
/// replicas have the writes; the WAITAOF after it asks again, and by then
/// their fsync is done.
pub(super) async fn wait_for_aof(
    client: &Client,
    node: Option<&Server>,
    replicas: u32,
    timeout_ms: i64,
) -> Result<AofConfirmation, Error> {
    let waitaof = CustomCommand::new_static("WAITAOF", ClusterHash::Random, false);
    let args = vec![
        Value::from(1),
        Value::from(replicas as i64),
        Value::from(timeout_ms),
    ];
    let pipeline = client.pipeline();
    let on_node = pipeline.with_options(&once_on(node));
    if replicas > 0 {
        let wait = CustomCommand::new_static("WAIT", ClusterHash::Random, false);
        let args = vec![Value::from(replicas as i64), Value::from(timeout_ms)];
        let _: () = on_node.custom(wait, args).await?;
    }
    let _: () = on_node.custom(waitaof, args).await?;
    let _: () = on_node.custom(client_id(), vec!["ID"]).await?;
    let mut answers: Vec<Value> = pipeline.all().await?;
    if replicas > 0 {
        answers.remove(0); // the WAIT's count: the WAITAOF's is the one that counts
    }
    let (counts, id): (Vec<i64>, i64) = Value::Array(answers).convert()?;
    Ok(AofConfirmation {
        local: counts.first().copied().unwrap_or(0),
        replicas: counts.get(1).copied().unwrap_or(0),
        connection: ConnectionId {
            node: node.cloned(),
            id,
        },
    })
}

/// A group commit per primary: one entry (`None`) on a single server, one
/// per primary the appends went to on a cluster (a handful: the map is as
/// big as the cluster).
pub(super) struct AofGroupCommits {
    /// Replicas each WAITAOF asks for (0: the local AOF only).
    replicas: u32,
    by_node: Mutex<HashMap<Option<Server>, Arc<AofGroupCommit>>>,
}

impl AofGroupCommits {
    pub(super) fn new(replicas: u32) -> AofGroupCommits {
        AofGroupCommits {
            replicas,
            by_node: Mutex::default(),
        }
    }

    /// Call once an XADD sent on `connection` has answered; returns once a
    /// WAITAOF on that same connection confirms it.
    pub(super) async fn synced(
        &self,
        client: &Client,
        connection: &ConnectionId,
    ) -> Result<(), LogError> {
        let group = self
            .by_node
            .lock()
            .expect("lock")
            .entry(connection.node.clone())
            .or_default()
            .clone();
        group.synced(client, connection, self.replicas).await
    }
}

#[derive(Default)]
struct AofGroupCommit {
    /// XADDs answered so far, numbered in the order their answers came.
    answered: AtomicU64,
    /// The last WAITAOF that returned confirmed: the highest number it
    /// covers, and its connection. Held by the one append whose WAITAOF
    /// is in flight.
    confirmed: tokio::sync::Mutex<Option<(u64, ConnectionId)>>,
    /// WAITAOFs that failed so far.
    failures: AtomicU64,
}

impl AofGroupCommit {
    async fn synced(
        &self,
        client: &Client,
        connection: &ConnectionId,
        replicas: u32,
    ) -> Result<(), LogError> {
        let mine = self.answered.fetch_add(1, Ordering::SeqCst) + 1;
        let failures_before = self.failures.load(Ordering::SeqCst);
        let mut confirmed = self.confirmed.lock().await;
        if let Some((through, on)) = &*confirmed {
            if *through >= mine {
                return covered_on(on, connection);
            }
        }
        if self.failures.load(Ordering::SeqCst) != failures_before {
            return Err(LogError::OutcomeUnknown(
                "Valkey did not confirm an earlier append; not waiting again".into(),
            ));
        }
        // Everything answered up to now is covered by a WAITAOF sent now.
        let covers = self.answered.load(Ordering::SeqCst);
        let answer = wait_for_aof(client, connection.node.as_ref(), replicas, WAIT_TIMEOUT_MS)
            .await
            .map_err(|e| LogError::OutcomeUnknown(format!("waiting for the append: {e}")))
            .and_then(|answer| enough(answer, replicas));
        match answer {
            Ok(answer) => {
                *confirmed = Some((covers, answer.connection));
                covered_on(&confirmed.as_ref().expect("just set").1, connection)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }
}

/// The confirmation, when it counts what was asked for.
fn enough(answer: AofConfirmation, replicas: u32) -> Result<AofConfirmation, LogError> {
    if answer.local < 1 {
        return Err(LogError::OutcomeUnknown(format!(
            "Valkey did not confirm the append reached its AOF within {} s",
            WAIT_TIMEOUT_MS / 1000
        )));
    }
    if answer.replicas < i64::from(replicas) {
        return Err(LogError::OutcomeUnknown(format!(
            "{} of the {replicas} replicas asked for (--min-replicas) confirmed the append \
             within {} s",
            answer.replicas,
            WAIT_TIMEOUT_MS / 1000
        )));
    }
    Ok(answer)
}

/// A WAITAOF on `waited_on` covers an XADD sent on `sent_on` only when they
/// are one connection.
fn covered_on(waited_on: &ConnectionId, sent_on: &ConnectionId) -> Result<(), LogError> {
    if waited_on == sent_on {
        Ok(())
    } else {
        Err(LogError::OutcomeUnknown(format!(
            "the connection to Valkey changed between the append (connection {}) and its \
             confirmation (connection {})",
            sent_on.id, waited_on.id
        )))
    }
}

/// Sends the XADD of `fields` to `key` with `CLIENT ID` before it, in one
/// pipeline on `node`'s connection, tried once: returns the entry's id and
/// the connection that carried it.
pub(super) async fn xadd_on_one_connection(
    client: &Client,
    node: Option<&Server>,
    key: String,
    fields: Vec<(&'static str, String)>,
) -> Result<(String, ConnectionId), LogError> {
    use fred::prelude::StreamsInterface;
    if !client.is_connected() {
        // Not sent: the outcome is known (nothing was appended).
        return Err(LogError::Unavailable("not connected to Valkey".into()));
    }
    let pipeline = client.pipeline();
    let on_node = pipeline.with_options(&once_on(node));
    let queued = async {
        let _: () = on_node.custom(client_id(), vec!["ID"]).await?;
        let _: () = on_node.xadd(key, false, None, "*", fields).await?;
        Ok::<(), Error>(())
    };
    queued.await.map_err(unavailable)?;
    let (id, entry): (i64, String) = pipeline
        .all()
        .await
        .map_err(|e| LogError::OutcomeUnknown(format!("Valkey did not answer the append: {e}")))?;
    Ok((
        entry,
        ConnectionId {
            node: node.cloned(),
            id,
        },
    ))
}
