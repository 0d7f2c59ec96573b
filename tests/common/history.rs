//! A history checker for fault scenarios. A load client records every
//! request it makes: ok (2xx), fail (4xx) or unknown (5xx, a timeout, a
//! broken connection). Each order has its own customer and Idempotency-Key,
//! and an unknown outcome is retried with the same key, as a careful client
//! does. After the run, `check` compares the history with what the system
//! kept:
//! - A: every acknowledged order is decided;
//! - B: no key made two orders, retries included;
//! - C: each aggregate's events were applied in the order of the log;
//! - D: the business invariants hold;
//! - G: each partition's events were applied under lease epochs that never
//!   go down (a holder that lost its lease committed nothing after its
//!   successor: the fence's audit, from the archive's `lease_epoch`);
//! - H: the time from the fault to the first acknowledgement after it, and
//!   the p99 latency of the requests sent meanwhile.
//!
//! Each verdict is printed as one `CHAOS {json}` line, which
//! `scripts/chaos.sh` gathers into a table over many runs.

use super::Api;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::domain::status::OrderStatus;
use streamstock::store::Store;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// 2xx: the order, and the partition its event went to.
    Ok { order: Uuid, partition: u32 },
    /// 4xx: refused, nothing recorded.
    Fail(u16),
    /// 5xx or no answer: recorded or not, nobody knows.
    Unknown(String),
}

/// One request of the history.
#[derive(Debug, Clone)]
pub struct Op {
    pub key: String,
    pub sent: Instant,
    pub answered: Instant,
    pub outcome: Outcome,
}

/// `clients` clients placing orders of `product` until `until`, each
/// order under its own key (and customer). An unknown outcome is retried
/// with the same key 50 ms later, while the client goes on with new
/// orders meanwhile, as many users of one gateway would: a partition that
/// answers 503 for some partitions of the log does not stop the orders
/// bound for the others.
pub async fn record(api: Arc<Api>, clients: usize, product: Uuid, until: Instant) -> Vec<Op> {
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let api = api.clone();
            tokio::spawn(async move {
                let run = Uuid::now_v7().simple().to_string();
                let mut ops = Vec::new();
                let mut n = 0;
                // Keys whose outcome is unknown, and when to retry each.
                let mut retries: std::collections::VecDeque<(String, Instant)> = Default::default();
                while Instant::now() < until {
                    let key = match retries.front() {
                        Some((_, due)) if *due <= Instant::now() => retries.pop_front().unwrap().0,
                        _ => {
                            n += 1;
                            format!("history-{run}-{client}-{n}")
                        }
                    };
                    let (sent, outcome) = place(&api, &key, product).await;
                    if matches!(outcome, Outcome::Unknown(_)) {
                        retries
                            .push_back((key.clone(), Instant::now() + Duration::from_millis(50)));
                        if retries.len() >= 64 {
                            // A client with this many orders in doubt
                            // waits, rather than pile up more.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    ops.push(Op {
                        key,
                        sent,
                        answered: Instant::now(),
                        outcome,
                    });
                }
                ops
            })
        })
        .collect();
    let mut ops = Vec::new();
    for task in tasks {
        ops.extend(task.await.unwrap());
    }
    ops.sort_by_key(|op| op.sent);
    ops
}

/// One order under `key`; when it was sent, and what came of it.
async fn place(api: &Api, key: &str, product: Uuid) -> (Instant, Outcome) {
    let body = serde_json::json!({
        "customer_email": format!("{key}@example.com"),
        "items": [{ "product_id": product, "quantity": 1 }],
    });
    let sent = Instant::now();
    let reply = api
        .http
        .post(api.url("/api/orders"))
        .header("Idempotency-Key", key)
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await;
    let outcome = match reply {
        Ok(reply) if reply.status().is_success() => {
            let queued: streamstock::gateway::responses::OrderQueued =
                reply.json().await.expect("a 2xx order answer parses");
            let partition = queued.msg_id.split(':').next().unwrap().parse().unwrap();
            Outcome::Ok {
                order: queued.order_id.as_uuid(),
                partition,
            }
        }
        Ok(reply) if reply.status().is_client_error() => Outcome::Fail(reply.status().as_u16()),
        Ok(reply) => {
            let status = reply.status().as_u16();
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            Outcome::Unknown(format!("{status} {}", body["error"]["code"]))
        }
        Err(error) => Outcome::Unknown(error.to_string()),
    };
    (sent, outcome)
}

/// What a scenario's run came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub scenario: String,
    /// A negative control: its anomaly is expected.
    pub control: bool,
    /// Orders tried (distinct keys).
    pub orders: usize,
    pub acknowledged: usize,
    /// A: acknowledged and never decided.
    pub lost: usize,
    /// B: keys that made more than one order.
    pub duplicated: usize,
    /// B: those keys, and what each request under them was answered (read
    /// through Debug, in the assertions' messages).
    #[allow(dead_code)]
    #[serde(skip)]
    pub duplicated_keys: Vec<(String, Vec<Outcome>)>,
    /// Keys whose last answer left the outcome unknown.
    pub unknown: usize,
    /// C: aggregates whose events were applied out of log order.
    pub out_of_order: usize,
    /// D: business invariants broken.
    pub invariant_violations: usize,
    /// G: events applied under an epoch lower than one their partition had
    /// already committed under.
    pub stale_commits: usize,
    /// E: archived events whose log entries the log no longer has (and
    /// never trimmed); None where the scenario does not read the log back.
    pub read_model_lost: Option<usize>,
    /// E: of those, the events of acknowledged orders (what the strict
    /// controls must show). Every lost event counts against the safe
    /// settings: under replicated durability a worker applies only entries
    /// the replicas have, so the read model holds nothing the log lost.
    pub read_model_lost_acknowledged: Option<usize>,
    /// E: how many lost entries StreamStock's own audit reported
    /// (`/api/lost-log-entries`).
    pub reported_lost: Option<u64>,
    /// H: from the fault to the first acknowledgement sent after it.
    pub recovery_ms: Option<u64>,
    /// H: p99 latency of the requests sent in the 20 s after the fault.
    pub p99_during_fault_ms: Option<u64>,
    /// Disk faults: appends acknowledged although nothing made them
    /// durable (an fsync failed or never ran).
    pub acknowledged_undurable: usize,
    /// A worker cut off: partitions it still claimed to hold once its
    /// leases had run out.
    pub held_past_lease: usize,
    /// Replicated durability: events a worker applied while only their
    /// primary had them (what a failover then would take from the log).
    #[serde(default)]
    pub applied_unreplicated: usize,
}

impl Verdict {
    /// The verdict of a scenario that counts its own requests (the disk
    /// faults, the replication of single appends) rather than running the
    /// history's load: every check at zero, to be filled in.
    pub fn counted(scenario: &str, control: bool) -> Verdict {
        Verdict {
            scenario: scenario.to_string(),
            control,
            orders: 0,
            acknowledged: 0,
            lost: 0,
            duplicated: 0,
            duplicated_keys: Vec::new(),
            unknown: 0,
            out_of_order: 0,
            invariant_violations: 0,
            stale_commits: 0,
            read_model_lost: None,
            read_model_lost_acknowledged: None,
            reported_lost: None,
            recovery_ms: None,
            p99_during_fault_ms: None,
            acknowledged_undurable: 0,
            held_past_lease: 0,
            applied_unreplicated: 0,
        }
    }

    /// Whether the run shows an anomaly the checks look for.
    pub fn anomalous(&self) -> bool {
        self.lost
            + self.duplicated
            + self.out_of_order
            + self.invariant_violations
            + self.stale_commits
            + self.read_model_lost.unwrap_or(0)
            + self.unreported_losses()
            + self.acknowledged_undurable
            + self.held_past_lease
            + self.applied_unreplicated
            > 0
    }

    /// E: lost entries in the read model that the audit did not report.
    pub fn unreported_losses(&self) -> usize {
        let reported = self.reported_lost.unwrap_or(0) as usize;
        self.read_model_lost.unwrap_or(0).saturating_sub(reported)
    }

    /// Fills in E: the archived events the log lost, as `log` shows it (per
    /// partition: the entry ids it holds and the highest it ever deleted),
    /// and what the audit reported, once it has reported them all or 20 s
    /// have passed.
    pub async fn check_log(
        &mut self,
        api: &Api,
        store: &Store,
        ops: &[Op],
        log: impl Fn(u32) -> (HashSet<(u64, u64)>, (u64, u64)),
    ) {
        let lost_keys = read_model_lost(store, log).await;
        let acknowledged: HashSet<String> = ops
            .iter()
            .filter_map(|op| match op.outcome {
                Outcome::Ok { order, .. } => Some(order.to_string()),
                _ => None,
            })
            .collect();
        let lost = lost_keys.len();
        self.read_model_lost_acknowledged = Some(
            lost_keys
                .iter()
                .filter(|key| acknowledged.contains(*key))
                .count(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let reported = loop {
            let (_, found) = api.get("/api/lost-log-entries").await;
            let reported = found["total"].as_u64().unwrap_or(0);
            if reported as usize >= lost || Instant::now() > deadline {
                break reported;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        self.read_model_lost = Some(lost);
        self.reported_lost = Some(reported);
    }

    /// Prints the `CHAOS` line `scripts/chaos.sh` reads.
    pub fn report(&self) {
        eprintln!("CHAOS {}", serde_json::to_string(self).unwrap());
    }

    /// Reports now if an anomaly is already seen: the assertion that
    /// follows ends the test before its report at the end.
    pub fn report_if_anomalous(&self) {
        if self.anomalous() {
            self.report();
        }
    }
}

/// Checks the history `ops` of a run whose fault came at `fault_at`,
/// waiting up to `settle` for the log to drain and the orders to be
/// decided.
pub async fn check(
    scenario: &str,
    control: bool,
    api: &Api,
    store: &Store,
    ops: &[Op],
    fault_at: Instant,
    settle: Duration,
) -> Verdict {
    let acknowledged: HashSet<Uuid> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Ok { order, .. } => Some(order),
            _ => None,
        })
        .collect();
    // A: decided once the log has drained (or the wait is over).
    let deadline = Instant::now() + settle;
    let (orders, lost) = loop {
        let orders = api.all_orders().await.unwrap_or_default();
        let decided: HashSet<Uuid> = orders
            .iter()
            .filter(|o| o.status != OrderStatus::Pending)
            .map(|o| o.order_id.as_uuid())
            .collect();
        let lost = acknowledged.difference(&decided).count();
        let drained = api
            .stats()
            .await
            .found()
            .is_some_and(|s| s.backlog == Some(0));
        if (lost == 0 && drained) || Instant::now() > deadline {
            break (orders, lost);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // B: one order per key (each key has its own customer).
    let mut per_customer: HashMap<&str, usize> = HashMap::new();
    for order in &orders {
        *per_customer
            .entry(order.customer_email.as_str())
            .or_default() += 1;
    }
    let duplicated = per_customer.values().filter(|n| **n > 1).count();
    let duplicated_keys: Vec<(String, Vec<Outcome>)> = per_customer
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(email, _)| {
            let key = email.trim_end_matches("@example.com").to_string();
            let answers = ops
                .iter()
                .filter(|op| op.key == key)
                .map(|op| op.outcome.clone())
                .collect();
            (key, answers)
        })
        .collect();
    // The keys whose last answer was unknown.
    let mut last: HashMap<&str, &Outcome> = HashMap::new();
    for op in ops {
        last.insert(op.key.as_str(), &op.outcome);
    }
    let unknown = last
        .values()
        .filter(|o| matches!(o, Outcome::Unknown(_)))
        .count();
    let violations = super::invariants::invariant_violations(store)
        .await
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    let after_fault: Vec<&Op> = ops.iter().filter(|op| op.sent >= fault_at).collect();
    let recovery_ms = after_fault
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok { .. }))
        .map(|op| (op.answered - fault_at).as_millis() as u64)
        .min();
    let mut latencies: Vec<u64> = after_fault
        .iter()
        .filter(|op| op.sent < fault_at + Duration::from_secs(20))
        .map(|op| (op.answered - op.sent).as_millis() as u64)
        .collect();
    latencies.sort_unstable();
    let p99_during_fault_ms = (!latencies.is_empty())
        .then(|| latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]);
    Verdict {
        scenario: scenario.to_string(),
        control,
        orders: last.len(),
        acknowledged: acknowledged.len(),
        lost,
        duplicated,
        duplicated_keys,
        unknown,
        out_of_order: out_of_log_order(store).await,
        invariant_violations: violations,
        stale_commits: stale_commits(store).await,
        read_model_lost: None,
        read_model_lost_acknowledged: None,
        reported_lost: None,
        recovery_ms,
        p99_during_fault_ms,
        acknowledged_undurable: 0,
        held_past_lease: 0,
        applied_unreplicated: 0,
    }
}

/// H, for part of the log: from the fault to the first acknowledgement, sent
/// after it, of an order whose event went to one of `partitions`.
pub fn recovery_on(ops: &[Op], fault_at: Instant, partitions: &[u32]) -> Option<u64> {
    ops.iter()
        .filter(|op| op.sent >= fault_at)
        .filter(|op| matches!(op.outcome, Outcome::Ok { partition, .. } if partitions.contains(&partition)))
        .map(|op| (op.answered - fault_at).as_millis() as u64)
        .min()
}

/// C: the aggregates whose archived events (in the order they were
/// applied) do not follow their log entries' order. Follow-ups archived
/// by the transaction that decided them have no entry yet and are left out.
async fn out_of_log_order(store: &Store) -> usize {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT event_key, partition_no, entry_id FROM event_archive \
         WHERE entry_id <> '' ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let position = |entry: &str| -> (u64, u64) {
        let (ms, n) = entry.split_once('-').unwrap_or((entry, "0"));
        (ms.parse().unwrap_or(0), n.parse().unwrap_or(0))
    };
    let mut last: HashMap<String, (i64, (u64, u64))> = HashMap::new();
    let mut out_of_order = HashSet::new();
    for row in rows {
        let key: String = row.get("event_key");
        let partition: i64 = row.get("partition_no");
        let entry = position(&row.get::<String, _>("entry_id"));
        if let Some((before_partition, before)) = last.get(&key) {
            if *before_partition == partition && entry < *before {
                out_of_order.insert(key.clone());
            }
        }
        last.insert(key, (partition, entry));
    }
    out_of_order.len()
}

/// G: the archived events applied under a lease epoch lower than one
/// their partition had already committed under, in commit order (a
/// partition's batches take its `partition_epochs` row lock before they
/// archive, so its archive order is its commit order). Follow-ups and
/// events applied without fencing have no epoch and are left out.
pub async fn stale_commits(store: &Store) -> usize {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT partition_no, lease_epoch FROM event_archive \
         WHERE lease_epoch IS NOT NULL ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut highest: HashMap<i64, i64> = HashMap::new();
    let mut stale = 0;
    for row in rows {
        let partition: i64 = row.get("partition_no");
        let epoch: i64 = row.get("lease_epoch");
        let seen = highest.entry(partition).or_insert(epoch);
        if epoch < *seen {
            stale += 1;
        }
        *seen = (*seen).max(epoch);
    }
    stale
}

/// E: the keys of the archived events whose entries `log` no longer holds
/// and never deleted (see `Verdict::check_log`). Follow-ups archived before they
/// were published have no entry and are left out.
async fn read_model_lost(
    store: &Store,
    log: impl Fn(u32) -> (HashSet<(u64, u64)>, (u64, u64)),
) -> Vec<String> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT partition_no, entry_id, event_key FROM event_archive WHERE entry_id <> ''",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    // Per partition: each applied entry's id and its event's key.
    type Applied = Vec<((u64, u64), String)>;
    let mut by_partition: HashMap<u32, Applied> = HashMap::new();
    for row in rows {
        let partition: i64 = row.get("partition_no");
        let entry: String = row.get("entry_id");
        if let Some(id) = entry_id(&entry) {
            by_partition
                .entry(partition as u32)
                .or_default()
                .push((id, row.get("event_key")));
        }
    }
    let mut lost = Vec::new();
    for (partition, applied) in by_partition {
        let (held, deleted_through) = log(partition);
        lost.extend(
            applied
                .into_iter()
                .filter(|(id, _)| *id > deleted_through && !held.contains(id))
                .map(|(_, key)| key),
        );
    }
    lost
}

/// `ms-seq` as numbers.
pub fn entry_id(text: &str) -> Option<(u64, u64)> {
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}
