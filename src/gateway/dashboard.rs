//! `/api/stats` and the live dashboard feed on `/ws/dashboard`: a snapshot on
//! connect, then a fresh one every second while anyone is watching, and,
//! between snapshots, each order status change the moment a worker commits
//! it (a `StatusChanges` message). One task computes each snapshot and
//! broadcasts it, however many browsers are open.

use super::error::ApiError;
use super::AppState;
use crate::domain::inventory::PurchaseOrderStatus;
use crate::store::analytics::{PurchaseOrderView, Throughput, TopProduct};
use crate::store::queries::{AlertView, Figures, OrderView, ProductView};
use crate::stream::{PartitionStats, PROCESSOR_GROUP};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

const PUSH_EVERY: Duration = Duration::from_secs(1);
const SNAPSHOT_PRODUCTS: i64 = 200;
const SNAPSHOT_ORDERS: i64 = 15;
const SNAPSHOT_ALERTS: i64 = 10;
const TOP_PRODUCTS: i64 = 5;
const SNAPSHOT_PURCHASE_ORDERS: i64 = 10;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    #[serde(flatten)]
    pub figures: Figures,
    /// Events in the log not yet processed; null if the log is unreachable.
    pub backlog: Option<u64>,
    /// Order events per second and per minute (event time).
    pub throughput: Throughput,
    pub top_products: Vec<TopProduct>,
    pub event_log: String,
    pub database: String,
}

/// The pipeline's health: what the dashboard's header shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Pipeline {
    /// This gateway's version, and when it started.
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub event_log: String,
    pub database: String,
    pub partitions: u32,
    /// Each worker holding partitions, with the partitions it holds.
    pub workers: Vec<WorkerView>,
    /// Partitions no worker holds: their events wait until one takes them.
    pub unowned_partitions: Vec<u32>,
    /// Entries ever appended to the log, and processed by the workers:
    /// two snapshots a second apart give the rates in and out. Null (as
    /// are `lag` and `dead_letters`) while the log is unreachable.
    pub appended: Option<u64>,
    pub processed: Option<u64>,
    /// Entries appended but not yet processed (unread and pending).
    pub lag: Option<u64>,
    pub dead_letters: Option<u64>,
    /// Events the read model applied that the log then lost, as the
    /// workers' audit found them (`/api/lost-log-entries`); null while the
    /// database is unreachable.
    pub lost_log_entries: Option<u64>,
}

/// A worker (its member name: host, process id and a random suffix) and
/// the partitions whose leases it holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerView {
    pub name: String,
    pub partitions: Vec<u32>,
}

/// What `/ws/dashboard` pushes each second (in the OpenAPI document's
/// components, so the page's TypeScript types come from it).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub generated_at: DateTime<Utc>,
    pub pipeline: Pipeline,
    pub stats: Stats,
    pub products: Vec<ProductView>,
    pub recent_orders: Vec<OrderView>,
    pub alerts: Vec<AlertView>,
    pub open_purchase_orders: Vec<PurchaseOrderView>,
}

/// What `/ws/dashboard` pushes between snapshots: orders whose status a
/// worker has just committed, as soon as it has.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusChanges {
    pub status_changes: Vec<crate::stream::announce::StatusChange>,
}

pub struct Hub {
    sender: broadcast::Sender<Arc<str>>,
    /// Status changes, serialized once for every client.
    changes: broadcast::Sender<Arc<str>>,
    /// One permit per open dashboard connection: their number is bounded.
    clients: Arc<tokio::sync::Semaphore>,
}

impl Hub {
    pub fn new(max_clients: usize) -> Hub {
        // Slow clients skip snapshots (they lag) rather than buffer them:
        // each holds at most this many, whatever the number of clients.
        let (sender, _) = broadcast::channel(4);
        Hub {
            sender,
            // Many small messages a second under load: room for a few seconds.
            changes: broadcast::channel(1024).0,
            clients: Arc::new(tokio::sync::Semaphore::new(max_clients.max(1))),
        }
    }
}

impl Hub {
    /// Passes an announcement on to the open dashboards, if any.
    pub fn status_changed(&self, announcement: crate::stream::announce::Announcement) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        let message = StatusChanges {
            status_changes: announcement.to_vec(),
        };
        let json: Arc<str> = serde_json::to_string(&message)
            .expect("status changes serialize")
            .into();
        let _ = self.changes.send(json);
    }
}

/// The log's partition stats, or None (logged) while it is unreachable.
async fn partition_stats(state: &AppState) -> Option<Vec<PartitionStats>> {
    match state.log.partition_stats(PROCESSOR_GROUP).await {
        Ok(stats) => Some(stats),
        Err(e) => {
            tracing::debug!(error = %e, "partition stats unavailable");
            None
        }
    }
}

fn backlog_of(stats: &[PartitionStats]) -> u64 {
    stats.iter().map(|p| p.lag + p.pending).sum()
}

async fn compute_stats(
    state: &AppState,
    log_stats: Option<&[PartitionStats]>,
) -> Result<Stats, ApiError> {
    let figures = state.store.figures().await?;
    let backlog = log_stats.map(backlog_of);
    Ok(Stats {
        figures,
        backlog,
        throughput: state.store.throughput(Utc::now()).await?,
        top_products: state.store.top_products(TOP_PRODUCTS).await?,
        event_log: state.log.describe(),
        database: state.store.describe().to_string(),
    })
}

async fn pipeline(state: &AppState, log_stats: Option<&[PartitionStats]>) -> Pipeline {
    let partitions = state.log.partitions();
    let owners = match state.leases.owners(PROCESSOR_GROUP, partitions).await {
        Ok(owners) => owners,
        Err(e) => {
            tracing::debug!(error = %e, "partition owners unavailable");
            vec![None; partitions as usize]
        }
    };
    let mut workers: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    let mut unowned_partitions = Vec::new();
    for (partition, owner) in owners.into_iter().enumerate() {
        match owner {
            Some(name) => workers.entry(name).or_default().push(partition as u32),
            None => unowned_partitions.push(partition as u32),
        }
    }
    let dead_letters = state.log.dead_letter_count(PROCESSOR_GROUP).await.ok();
    let lost_log_entries = state.store.lost_log_entry_count().await.ok();
    Pipeline {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: state.started_at,
        event_log: state.log.describe(),
        database: state.store.describe().to_string(),
        partitions,
        workers: workers
            .into_iter()
            .map(|(name, partitions)| WorkerView { name, partitions })
            .collect(),
        unowned_partitions,
        appended: log_stats.map(|stats| stats.iter().map(|p| p.appended).sum()),
        processed: log_stats.map(|stats| {
            let appended: u64 = stats.iter().map(|p| p.appended).sum();
            appended.saturating_sub(backlog_of(stats))
        }),
        lag: log_stats.map(backlog_of),
        dead_letters,
        lost_log_entries,
    }
}

pub async fn snapshot(state: &AppState) -> Result<Snapshot, ApiError> {
    // Read once: the backlog in the stats and the pipeline's figures agree.
    let log_stats = partition_stats(state).await;
    Ok(Snapshot {
        generated_at: Utc::now(),
        pipeline: pipeline(state, log_stats.as_deref()).await,
        stats: compute_stats(state, log_stats.as_deref()).await?,
        products: state.store.list_products(SNAPSHOT_PRODUCTS, None).await?,
        recent_orders: state.store.recent_orders(SNAPSHOT_ORDERS).await?,
        alerts: state.store.recent_alerts(SNAPSHOT_ALERTS).await?,
        open_purchase_orders: state
            .store
            .list_purchase_orders(
                Some(PurchaseOrderStatus::Open),
                SNAPSHOT_PURCHASE_ORDERS,
                None,
            )
            .await?,
    })
}

#[utoipa::path(get, path = "/api/stats", operation_id = "get_stats", tag = "operations",
    responses((status = 200, description = "The figures the dashboard shows", body = Stats)))]
#[tracing::instrument(name = "dashboard::stats", level = "debug", skip_all)]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let log_stats = partition_stats(&state).await;
    Ok(Json(compute_stats(&state, log_stats.as_deref()).await?))
}

pub fn spawn_publisher(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if state.dashboard.sender.receiver_count() == 0 {
                continue;
            }
            match snapshot(&state).await {
                Ok(snap) => {
                    let json: Arc<str> = serde_json::to_string(&snap)
                        .expect("snapshots serialize")
                        .into();
                    let _ = state.dashboard.sender.send(json);
                }
                Err(e) => tracing::debug!(error = e.message, "dashboard snapshot failed"),
            }
        }
    });
}

pub async fn websocket(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Ok(permit) = state.dashboard.clients.clone().try_acquire_owned() else {
        metrics::counter!(crate::telemetry::metrics::REQUESTS_SHED, "reason" => "dashboard_clients")
            .increment(1);
        return Err(ApiError::overloaded(
            "too many dashboard connections are open; retry shortly",
        ));
    };
    // A page that sent its token as a subprotocol must get one of those it
    // offered back, or the browser drops the socket.
    let upgrade = upgrade.protocols([super::auth::DASHBOARD_PROTOCOL]);
    Ok(upgrade.on_upgrade(move |socket| async move {
        feed(socket, state).await;
        drop(permit);
    }))
}

async fn feed(mut socket: WebSocket, state: AppState) {
    let mut updates = state.dashboard.sender.subscribe();
    let mut changes = state.dashboard.changes.subscribe();
    if let Ok(first) = snapshot(&state).await {
        let json = serde_json::to_string(&first).expect("snapshots serialize");
        if socket.send(Message::Text(json.into())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            update = updates.recv() => match update {
                Ok(json) => {
                    if socket.send(Message::Text(json.to_string().into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            change = changes.recv() => match change {
                Ok(json) => {
                    if socket.send(Message::Text(json.to_string().into())).await.is_err() {
                        return;
                    }
                }
                // The next snapshot has what a lagging client skipped.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // The dashboard sends nothing we act on; a close or an error ends the feed.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
