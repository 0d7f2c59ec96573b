//! Wiring: opens the backends the settings name and runs each role as a
//! tokio task until shutdown. `main` only parses the command line and calls
//! one of these; tests call them directly on ephemeral ports.

use crate::config::{
    AllArgs, CommonArgs, Durability, GatewayArgs, Profile, ServeArgs, SimulateArgs, WorkerArgs,
};
use crate::gateway::{self, Gateway};
use crate::simulator::Simulator;
use crate::store::Store;
use crate::stream::embedded::{EmbeddedLog, EmbeddedOptions};
use crate::stream::lease::{LeaseStore, LocalLeases};
use crate::stream::valkey::ValkeyLog;
use crate::stream::EventLog;
use crate::worker::{self, WorkerOptions};
use anyhow::{bail, Context};
use axum::extract::Request;
use axum::ServiceExt;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

/// Opens the read-model database and brings its schema up to date.
pub async fn open_store(common: &CommonArgs) -> anyhow::Result<Store> {
    let url = common.database_url();
    let store = Store::connect_with(&url, common.retention.sqlite_memory_mib)
        .await
        .context("cannot open the database (--database-url / DATABASE_URL)")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

/// The event log and the partition leases that go with it.
#[derive(Clone)]
pub struct LogBackend {
    pub log: Arc<dyn EventLog>,
    pub leases: Arc<dyn LeaseStore>,
}

/// Opens the event log: Valkey when --valkey-url is set, else the embedded
/// log. A role running on its own (`serve`, `worker`) needs a log other
/// processes can reach, so it refuses the embedded one.
pub async fn open_log(
    common: &CommonArgs,
    standalone_role: Option<&str>,
) -> anyhow::Result<LogBackend> {
    match &common.valkey_url {
        Some(url) => {
            let log = ValkeyLog::connect(
                url,
                &common.valkey_namespace,
                common.partitions,
                common.durability == Durability::Strict,
            )
            .await
            .context("cannot connect to Valkey (--valkey-url / STREAMSTOCK_VALKEY_URL)")?
            .with_retention(*common.retention.log_retention);
            let log = Arc::new(log);
            Ok(LogBackend {
                log: log.clone(),
                leases: log,
            })
        }
        None => {
            if let Some(role) = standalone_role {
                bail!(
                    "`streamstock {role}` on its own needs a shared event log: pass --valkey-url (or set \
                     STREAMSTOCK_VALKEY_URL). The embedded log lives inside one process; use `streamstock all` \
                     to run every role on it"
                );
            }
            let dir = common.data_dir.join("log");
            let options = EmbeddedOptions {
                retention: *common.retention.log_retention,
                segment_bytes: common.retention.log_segment_bytes,
                ..EmbeddedOptions::default()
            };
            let log = EmbeddedLog::open_with(&dir, common.partitions, options)
                .with_context(|| format!("cannot open the embedded log in {}", dir.display()))?;
            Ok(LogBackend {
                log: Arc::new(log),
                leases: Arc::new(LocalLeases::new()),
            })
        }
    }
}

async fn bind(gateway: &GatewayArgs) -> anyhow::Result<TcpListener> {
    gateway.check_exposure().map_err(anyhow::Error::msg)?;
    TcpListener::bind(gateway.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (--listen / STREAMSTOCK_LISTEN)",
            gateway.listen
        )
    })
}

/// Serves the gateway on `listener` until `shutdown`.
pub async fn serve_gateway(
    listener: TcpListener,
    state: gateway::AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = NormalizePathLayer::trim_trailing_slash().layer(gateway::router(state));
    let address = listener.local_addr()?;
    tracing::info!(%address, "gateway listening; dashboard on http://{address}/");
    axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("gateway failed")
}

pub async fn run_all(
    common: CommonArgs,
    args: AllArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = bind(&args.gateway).await?;
    run_all_on(common, args, listener, shutdown).await
}

/// `all` on an already bound listener (tests bind port 0).
pub async fn run_all_on(
    common: CommonArgs,
    args: AllArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = open_store(&common).await?;
    let backend = open_log(&common, None).await?;
    let address = listener.local_addr()?;

    let worker = tokio::spawn(worker::run(
        backend.clone(),
        store.clone(),
        WorkerOptions::new(&args.processing, common.retention.windows()),
        shutdown.clone(),
    ));
    let simulator = (args.profile != Profile::None).then(|| {
        let sim = Simulator::new(
            &format!("http://{address}"),
            args.gateway.api_token.clone(),
            args.profile,
        );
        let token = shutdown.clone();
        tokio::spawn(async move { sim.run(token).await })
    });
    let state = Gateway::new(
        store.clone(),
        backend.log,
        args.gateway.api_token.clone(),
        args.gateway.limits(),
        shutdown.clone(),
    );
    let served = serve_gateway(listener, state, shutdown.clone()).await;
    // The gateway returns on shutdown (or failure): stop and drain the rest.
    shutdown.cancel();
    if let Some(simulator) = simulator {
        let _ = simulator.await;
    }
    worker.await.context("worker task panicked")?;
    store.close().await;
    served
}

pub async fn run_serve(
    common: CommonArgs,
    args: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = bind(&args.gateway).await?;
    let store = open_store(&common).await?;
    let log = open_log(&common, Some("serve")).await?.log;
    let state = Gateway::new(
        store.clone(),
        log,
        args.gateway.api_token.clone(),
        args.gateway.limits(),
        shutdown.clone(),
    );
    let served = serve_gateway(listener, state, shutdown).await;
    store.close().await;
    served
}

pub async fn run_worker(
    common: CommonArgs,
    args: WorkerArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (--listen / STREAMSTOCK_LISTEN)",
            args.listen
        )
    })?;
    let store = open_store(&common).await?;
    let backend = open_log(&common, Some("worker")).await?;

    // A worker answers /health and /ready for orchestrators.
    let probe_log = backend.log.clone();
    let metrics_log = backend.log.clone();
    let probe_store = store.clone();
    let probes = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/ready",
            axum::routing::get(move || {
                let (log, store) = (probe_log.clone(), probe_store.clone());
                async move { gateway::readiness(&*log, &store).await }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || crate::metrics::serve(metrics_log.clone())),
        );
    let probe_shutdown = shutdown.clone();
    let probe_server = tokio::spawn(async move {
        axum::serve(listener, probes)
            .with_graceful_shutdown(probe_shutdown.cancelled_owned())
            .await
    });

    worker::run(
        backend,
        store.clone(),
        WorkerOptions::new(&args.processing, common.retention.windows()),
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    probe_server.await.context("probe server panicked")??;
    store.close().await;
    Ok(())
}

pub async fn run_simulate(args: SimulateArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if args.profile == Profile::None {
        bail!("--profile none generates no traffic; choose normal or burst");
    }
    if let Some(secs) = args.duration_secs {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
            stop.cancel();
        });
    }
    let simulator = Simulator::new(&args.target, args.api_token, args.profile);
    let report = match args.rate {
        Some(rate) => Arc::new(simulator).run_at_rate(rate, shutdown).await,
        None => simulator.run(shutdown).await,
    };
    println!(
        "orders accepted: {}, refused: {}, failed: {}, skipped (gateway behind the rate): {}; \
         shipped: {}, cancelled: {}; purchase orders delivered: {}, direct restocks: {}",
        report.accepted,
        report.refused,
        report.failed,
        report.skipped,
        report.shipped,
        report.cancelled,
        report.deliveries,
        report.restocks
    );
    Ok(())
}

pub async fn run_migrate(common: CommonArgs) -> anyhow::Result<()> {
    let store = open_store(&common).await?;
    println!("migrations applied to {}", store.describe());
    store.close().await;
    Ok(())
}
