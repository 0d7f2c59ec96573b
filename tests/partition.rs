//! A network partition across hosts, with network namespaces
//! (`common::network`): a Valkey Cluster of three primaries with two
//! replicas each, one primary on an island with a gateway of its own
//! (`serve`), the rest of the cluster and a worker on the mainland.
//! PostgreSQL stands on a third host that both sides still reach (the
//! gateway keeps its Idempotency-Keys there; were it cut off too, it would
//! refuse every order before reaching Valkey, and the cut would test
//! nothing of the log). Clients place orders through the island's
//! gateway; 4 s in, the island's link to the mainland is cut for 12 s: the
//! mainland promotes a replica of the island's primary, and when the
//! network heals, the old primary rejoins as a replica and drops whatever
//! it took meanwhile.
//!
//! With `--durability replicated`, an append is answered 2xx only once a
//! replica has it, so the cut-off gateway answers nothing but 503 while
//! it is cut off, and nothing acknowledged is lost. Its negative control
//! is `--durability strict` (the primary's own fsync): the island's
//! primary goes on acknowledging, and those orders are lost when the
//! network heals.
//!
//! A second scenario puts a worker on the island instead, cut off from
//! Valkey and PostgreSQL: it stops committing once its leases are gone,
//! and the mainland's worker takes its partitions over.

use crate::common;

use common::cluster::{self, cli};
use common::history::{self, Outcome};
use common::network::Island;
use common::process::{free_port, OwnValkey, Role};
use common::{Backend, TestApp};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::stream::Durability;

/// `url` (a server on this side's loopback: the suite's PostgreSQL, a
/// Valkey) reached through a TCP relay listening on `host`, an address of
/// this side the island can reach; returns the URL that names the relay.
async fn relayed(url: &str, host: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    let target = (
        url.host_str().unwrap().to_string(),
        url.port().unwrap_or(5432),
    );
    let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    url.set_host(Some(host)).unwrap();
    url.set_port(Some(port)).unwrap();
    url.to_string()
}

/// The nine nodes, the island's primary first; the cluster is made whole,
/// and the island's node made a primary if `--cluster create` made it a
/// replica.
fn cluster_across(island: &Island) -> Vec<OwnValkey> {
    let mut nodes = vec![cluster::node(&island.address(), Some(island.namespace()))];
    nodes.extend((0..8).map(|_| cluster::node(&island.mainland(), None)));
    cluster::create(&nodes, 2);
    if cli(&nodes[0], &["role"]).starts_with("slave") {
        // A manual failover: the island's node and its primary swap roles,
        // losing nothing.
        assert!(cli(&nodes[0], &["cluster", "failover"]).contains("OK"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cli(&nodes[0], &["role"]).starts_with("master") {
            assert!(Instant::now() < deadline, "the manual failover never ended");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster::wait_whole(&nodes, "2");
    }
    nodes
}

/// What one run of the partition came to.
struct PartitionRun {
    verdict: history::Verdict,
    /// Answers the island's gateway gave, while cut off, to requests sent
    /// after the cut: 2xx, then anything but 503.
    acknowledged_while_cut: usize,
    not_503_while_cut: Vec<Outcome>,
}

async fn partition_under_load(durability: Durability, scenario: &str) -> PartitionRun {
    let island = Island::create();
    let nodes = cluster_across(&island);
    let seeds: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}:{}", n.host, n.port))
        .collect();
    let url = format!(
        "valkey-cluster://{}?node={}&node={}",
        seeds[1], seeds[2], seeds[0]
    );

    // The mainland: a worker (with a gateway the checks read through) and
    // the cluster's other eight nodes.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.valkey_url = Some(url.clone());
    settings.durability = Durability::Replicated;
    settings.partitions = 6;
    let app = TestApp::spawn_with(settings.clone()).await;
    let product = app.create_product("PARTITION-1", 1.00, 1_000_000).await;

    // The island: one primary and a gateway, reaching PostgreSQL on the
    // third host.
    let island_database = relayed(settings.database_url.as_ref().unwrap(), &island.clients()).await;
    let listen = format!("{}:{}", island.address(), free_port());
    let durability_flag = match durability {
        Durability::Replicated => "replicated",
        Durability::Strict => "strict",
        other => panic!("no partition scenario for {other:?}"),
    };
    let mut args = vec![
        "serve".to_string(),
        "--listen".to_string(),
        listen.clone(),
        "--insecure".to_string(),
        "--durability".to_string(),
        durability_flag.to_string(),
    ];
    settings.database_url = Some(island_database);
    args.extend(common::process::deployment_args(&settings));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Role::start_in_namespace(island.namespace(), "serve", &args, &[]);
    let api = Arc::new(common::Api::with_client(
        &format!("http://{listen}"),
        island.client(),
    ));
    api.wait_healthy().await;

    // Many clients, so that many orders are in flight at the cut. Once cut
    // off, the island's primary takes writes only until its node timeout
    // (2 s), when it finds itself in the minority and refuses them; and a
    // client whose order is bound for the mainland's primaries hears 503
    // only after the gateway's 5 s command timeout. What the strict control
    // loses is what reached the island's primary in between: the orders in
    // flight at the cut, about one in six of the clients.
    let load = tokio::spawn(history::record(
        api.clone(),
        64,
        product,
        Instant::now() + Duration::from_secs(24),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    island.cut();
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    island.heal();
    let healed_at = Instant::now();
    let ops = load.await.unwrap();

    let while_cut: Vec<&history::Op> = ops
        .iter()
        .filter(|op| op.sent >= cut_at && op.answered < healed_at)
        .collect();
    let acknowledged_while_cut = while_cut
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok { .. }))
        .count();
    let not_503_while_cut = while_cut
        .iter()
        .filter(|op| !matches!(&op.outcome, Outcome::Unknown(answer) if answer.starts_with("503")))
        .map(|op| op.outcome.clone())
        .collect();
    // The checks read the mainland's read model, through its gateway.
    let store = app.store().await;
    let verdict = history::check(
        scenario,
        durability != Durability::Replicated,
        &app.api,
        &store,
        &ops,
        cut_at,
        Duration::from_secs(30),
    )
    .await;
    verdict.report();
    assert!(
        ops.iter()
            .any(|op| op.answered < cut_at && matches!(op.outcome, Outcome::Ok { .. })),
        "no order was acknowledged before the cut"
    );
    drop(gateway);
    app.stop().await;
    drop(nodes);
    PartitionRun {
        verdict,
        acknowledged_while_cut,
        not_503_while_cut,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_with_its_gateway_loses_nothing_acknowledged_with_replicated_durability()
{
    let run = partition_under_load(
        Durability::Replicated,
        "valkey-cluster, a primary and its gateway cut off",
    )
    .await;
    assert_eq!(run.acknowledged_while_cut, 0, "{:#?}", run.verdict);
    assert!(
        run.not_503_while_cut.is_empty(),
        "the cut-off gateway answered other than 503: {:?}",
        run.not_503_while_cut
    );
    assert!(
        run.verdict.recovery_ms.is_some(),
        "no order was acknowledged after the network healed"
    );
    assert!(!run.verdict.anomalous(), "{:#?}", run.verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_a_primary_cut_off_with_strict_durability_loses_acknowledged_orders() {
    let run = partition_under_load(
        Durability::Strict,
        "valkey-cluster, a primary and its gateway cut off, strict durability",
    )
    .await;
    assert!(
        run.verdict.lost > 0,
        "the control lost nothing: the scenario cannot show the anomaly it looks for: {:#?}",
        run.verdict
    );
}

/// The partitions a worker's `/metrics` says it holds, and the events it
/// has applied so far.
fn holdings_and_applied(metrics: &str) -> (Vec<u32>, u64) {
    let mut held = Vec::new();
    let mut applied = 0;
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("streamstock_partition_owned{partition=\"") {
            if let Some((partition, value)) = rest.split_once("\"} ") {
                if value.trim() == "1" {
                    held.push(partition.parse().unwrap());
                }
            }
        } else if line.starts_with("streamstock_events_processed_total{status=\"applied\"}") {
            applied = line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64;
        }
    }
    (held, applied)
}

/// A worker on the island, reaching Valkey and PostgreSQL at the
/// mainland's address, holds partitions of a deployment whose gateway and
/// second worker are on the mainland. The island is cut off for 12 s
/// under load: the island's worker can neither renew its leases nor
/// commit; once its leases have run out, the mainland's worker takes its
/// partitions over under new epochs and decides their orders while the
/// cut lasts. When the network heals, the island's worker applies nothing
/// under its old leases (a batch it held at the cut would be refused by
/// the epoch fence), every acknowledged order is decided exactly once, and
/// each aggregate's events were applied in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_stops_committing_once_its_lease_is_gone() {
    let verdict = worker_cut_off(false).await;
    assert!(!verdict.anomalous(), "{verdict:#?}");
}

/// Its negative control: the island's worker keeps believing it holds its
/// partitions once its leases have run out (a fault only debug builds
/// honour). The check must see it still holding them; the database's
/// epoch fence still keeps its commits out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_a_worker_cut_off_that_keeps_expired_leases_is_seen() {
    let verdict = worker_cut_off(true).await;
    assert!(
        verdict.held_past_lease > 0,
        "the control showed no worker holding partitions past its lease: {verdict:#?}"
    );
}

async fn worker_cut_off(control: bool) -> history::Verdict {
    let island = Island::create();
    let valkey = OwnValkey::start_with(free_port(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.valkey_url = Some(valkey.url());

    // Both backends reached by the island through the mainland's address,
    // which the cut stops.
    let mut on_island = settings.clone();
    on_island.valkey_url = Some(relayed(&valkey.url(), &island.mainland()).await);
    on_island.database_url =
        Some(relayed(settings.database_url.as_ref().unwrap(), &island.mainland()).await);
    // The schema first, so that the island's worker finds it.
    common::process::run_cli_ok(&settings, &["migrate"]);

    let listen = format!("{}:{}", island.address(), free_port());
    let mut args = vec![
        "worker".to_string(),
        "--listen".to_string(),
        listen.clone(),
        "--lease-ttl".to_string(),
        "2s".to_string(),
    ];
    args.extend(common::process::deployment_args(&on_island));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fault: Vec<(String, String)> = if control {
        vec![("STREAMSTOCK_FAULT_KEEP_EXPIRED_LEASES".into(), "1".into())]
    } else {
        Vec::new()
    };
    let worker = Role::start_in_namespace(island.namespace(), "worker", &args, &fault);
    let observer = common::Api::with_client(&format!("http://{listen}"), island.client());
    // What the island's worker says it holds and has applied; its probes
    // listen on the island, and the cut spares the clients' side.
    let island_metrics = || async {
        let reply = observer
            .http
            .get(observer.url("/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("the island's worker answers /metrics, cut off or not");
        holdings_and_applied(&reply.text().await.unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = match observer.http.get(observer.url("/metrics")).send().await {
            Ok(reply) => holdings_and_applied(&reply.text().await.unwrap_or_default()).0,
            Err(_) => Vec::new(), // not listening yet
        };
        if held.len() == settings.partitions as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the island's worker never took the partitions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The mainland: a gateway and a second worker, with the same lease TTL.
    let app = TestApp::spawn_with_args(settings.clone(), |args| {
        args.processing.lease_ttl = Duration::from_secs(2);
    })
    .await;
    let product = app
        .create_product("PARTITION-WORKER", 1.00, 1_000_000)
        .await;
    let api = Arc::new(common::Api::new(&app.base));
    let load = tokio::spawn(history::record(
        api.clone(),
        4,
        product,
        Instant::now() + Duration::from_secs(24),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (held_at_cut, _) = island_metrics().await;
    assert!(
        !held_at_cut.is_empty(),
        "the island's worker held no partition at the cut"
    );
    island.cut();
    let cut_at = Instant::now();
    let cut_wall_ms = chrono::Utc::now().timestamp_millis();
    // Its leases (2 s) run out, and its own view of them with them: it
    // stops waiting on a renewal when they would expire.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let (held_once_expired, applied_once_expired) = island_metrics().await;
    // Its readiness says so, at once: a probe does not wait out the
    // client's timeouts.
    let asked = Instant::now();
    let ready = observer
        .http
        .get(observer.url("/ready"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the island's worker answers /ready, cut off or not");
    if !control {
        assert_eq!(ready.status().as_u16(), 503, "ready while cut off");
    }
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "/ready took {:?}",
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(8_500) - asked.elapsed()).await;
    let (_, applied_at_heal) = island_metrics().await;
    // The mainland's worker applied events of the island's partitions
    // while the cut lasted (the island's worker reaches no database).
    let store = app.store().await;
    let (taken_over, first_taken_ms): (i64, Option<i64>) = sqlx::query_as(&format!(
        "SELECT COUNT(*), MIN(processed_at) FROM event_archive \
         WHERE processed_at > $1 AND partition_no IN ({})",
        held_at_cut
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(cut_wall_ms)
    .fetch_one(store.pool())
    .await
    .unwrap();
    island.heal();
    let ops = load.await.unwrap();

    let scenario = if control {
        "a worker cut off from Valkey and PostgreSQL (control: it keeps its expired leases)"
    } else {
        "a worker cut off from Valkey and PostgreSQL"
    };
    let mut verdict = history::check(
        scenario,
        control,
        &api,
        &store,
        &ops,
        cut_at,
        Duration::from_secs(30),
    )
    .await;
    // Recovery here is the island's partitions' first event applied by the
    // mainland's worker (the gateway never stopped acknowledging).
    verdict.recovery_ms = first_taken_ms.map(|ms| (ms - cut_wall_ms) as u64);
    verdict.held_past_lease = held_once_expired.len();
    verdict.report();
    if control {
        app.stop().await;
        drop(worker);
        return verdict;
    }
    assert!(
        held_once_expired.is_empty(),
        "the island's worker still held {held_once_expired:?} 3.5 s into the cut (its lease TTL is 2 s)"
    );
    assert_eq!(
        applied_once_expired, applied_at_heal,
        "the island's worker applied events without its leases"
    );
    assert!(
        taken_over > 0,
        "the mainland's worker never took the island's partitions {held_at_cut:?} over"
    );
    app.stop().await;
    drop(worker);
    verdict
}
