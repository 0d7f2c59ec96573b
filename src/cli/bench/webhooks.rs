//! `streamstock bench --webhooks N`: N local receivers (HTTP on loopback,
//! answering 200 at once) subscribed from the beginning before the
//! backlog is appended, so the drain runs with N subscriptions delivering
//! beside it (its cost, against `--webhooks 0` in the same run), and the
//! deliveries' own rate: every archived event to every receiver.

use crate::domain::events::SubscriptionCreated;
use crate::domain::webhooks::AllowList;
use crate::domain::DomainEvent;
use crate::store::Store;
use crate::stream::LogBackend;
use crate::worker::WorkerOptions;
use anyhow::Context;
use chrono::Utc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The receivers and their subscriptions.
pub(super) struct Receivers {
    pub subscriptions: Vec<Uuid>,
    pub received: Arc<AtomicU64>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// Starts `count` receivers and subscribes each from the beginning.
pub(super) async fn subscribe(
    backend: &LogBackend,
    store: &Store,
    count: u64,
) -> anyhow::Result<Receivers> {
    let received = Arc::new(AtomicU64::new(0));
    let mut receivers = Receivers {
        subscriptions: Vec::new(),
        received: received.clone(),
        servers: Vec::new(),
    };
    for _ in 0..count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let counter = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                async { axum::http::StatusCode::OK }
            }),
        );
        receivers.servers.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        let id = Uuid::now_v7();
        store
            .create_subscription_progress(id, "whsec_bench_secret_0123456789", 0)
            .await?;
        let created = DomainEvent::SubscriptionCreated(SubscriptionCreated {
            subscription_id: id,
            url,
            event_types: Vec::new(),
            start_after: 0,
        })
        .into_envelope(Utc::now());
        backend
            .log
            .append(&created)
            .await
            .context("subscribing a receiver")?;
        receivers.subscriptions.push(id);
    }
    Ok(receivers)
}

/// The worker's options with loopback allowed (the receivers are there).
pub(super) fn allowing_loopback(mut options: WorkerOptions) -> WorkerOptions {
    options.webhooks.allow = AllowList::parse(&["127.0.0.0/8".into()]).expect("a valid network");
    options
}

/// Waits until every subscription's cursor is at the archive's head.
pub(super) async fn delivered(store: &Store, receivers: &Receivers) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let head = store.feed_head().await?;
        let targets = store.delivery_targets().await?;
        let behind = targets
            .iter()
            .filter(|t| receivers.subscriptions.contains(&t.id) && t.cursor < head)
            .count();
        let known = targets
            .iter()
            .filter(|t| receivers.subscriptions.contains(&t.id))
            .count();
        if behind == 0 && known == receivers.subscriptions.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "webhooks not delivered within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
