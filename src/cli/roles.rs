//! The roles: `all`, `serve`, `worker`, `simulate` and `migrate`. Each
//! opens the backends its settings name and runs as tokio tasks until
//! shutdown; tests call them directly on ephemeral ports.

use super::backends::{open_log, open_store};
use super::config::{
    AllArgs, CommonArgs, GatewayArgs, Profile, ReportFormat, ServeArgs, SimulateArgs, WorkerArgs,
};
use super::reload;
use super::simulator_switch::InProcessSimulator;
use super::startup::Startup;
use super::systemd;
use crate::gateway::simulator_control::{DashboardProfile, SimulatorSwitch};
use crate::gateway::{self, Gateway};
use crate::http_server;
use crate::simulator::load::{LoadOptions, Pace};
use crate::simulator::trust::GatewayTrust;
use crate::simulator::Simulator;
use crate::worker;
use anyhow::{bail, Context};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn bind(gateway: &GatewayArgs) -> anyhow::Result<TcpListener> {
    gateway.check_exposure()?;
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
    options: http_server::ServerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = tower::ServiceBuilder::new()
        .map_request(gateway::trim_api_trailing_slash)
        .service(gateway::router(state));
    let address = listener.local_addr()?;
    tracing::info!(%address, "gateway listening; dashboard on http://{address}/");
    http_server::serve(listener, app, options, shutdown)
        .await
        .context("gateway failed")
}

pub async fn run_all(
    common: CommonArgs,
    mut args: AllArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    args.gateway.load_token_file()?;
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
    if matches!(
        args.profile,
        Profile::Steady | Profile::Max | Profile::FlashSale
    ) {
        bail!("--profile steady, max and flash-sale are load runs: start them with `streamstock simulate` against this gateway");
    }
    let options = args.gateway.connections.server_options("gateway")?;
    let startup = common.startup(&shutdown);
    let store = open_store(&common, Some(&startup), Some(args.processing.lease_ttl())).await?;
    let backend = open_log(&common, None, Some(&startup)).await?;
    let address = listener.local_addr()?;

    let worker = tokio::spawn(worker::run(
        backend.clone(),
        store
            .clone()
            .allocating_by(args.processing.allocation_strategy),
        common.with_webhooks(args.processing.worker_options(common.retention.windows()))?,
        shutdown.clone(),
    ));
    // The simulator runs behind a switch the dashboard can turn.
    let (scheme, trust) = match options.tls {
        Some(_) => ("https", GatewayTrust::OwnListener),
        None => ("http", GatewayTrust::SystemRoots),
    };
    let simulator = Arc::new(InProcessSimulator::new(
        format!("{scheme}://{address}"),
        trust,
        args.gateway.api_token.clone(),
        shutdown.clone(),
    ));
    match args.profile {
        Profile::Normal => simulator.start(DashboardProfile::Normal),
        Profile::Burst => simulator.start(DashboardProfile::Burst),
        Profile::Checkout => simulator.start(DashboardProfile::Checkout),
        _ => {}
    }
    let state = Gateway::new(
        store.clone(),
        backend.log,
        backend.leases,
        Some(simulator.clone()),
        crate::gateway::Access {
            webhook_allow: common.webhook_allow()?,
            max_subscriptions: common.max_subscriptions as usize,
            ..args.gateway.access()?
        },
        args.gateway.limits(),
        shutdown.clone(),
    );
    reload::tokens_on_sighup(state.access.tokens.clone(), shutdown.clone());
    reload::certificate_on_sighup(&options, shutdown.clone());
    systemd::ready(&format!("serving on {address}"));
    let served = serve_gateway(listener, state, options, shutdown.clone()).await;
    // The gateway returns on shutdown (or failure): stop and drain the rest.
    shutdown.cancel();
    simulator.finish().await;
    worker.await.context("worker task panicked")?;
    store.close().await;
    served
}

pub async fn run_serve(
    common: CommonArgs,
    mut args: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    args.gateway.load_token_file()?;
    let listener = bind(&args.gateway).await?;
    let options = args.gateway.connections.server_options("gateway")?;
    let startup = common.startup(&shutdown);
    let store = open_store(&common, Some(&startup), None).await?;
    let backend = open_log(&common, Some("serve"), Some(&startup)).await?;
    let state = Gateway::new(
        store.clone(),
        backend.log,
        backend.leases,
        None,
        crate::gateway::Access {
            webhook_allow: common.webhook_allow()?,
            max_subscriptions: common.max_subscriptions as usize,
            ..args.gateway.access()?
        },
        args.gateway.limits(),
        shutdown.clone(),
    );
    reload::tokens_on_sighup(state.access.tokens.clone(), shutdown.clone());
    reload::certificate_on_sighup(&options, shutdown.clone());
    systemd::ready(&format!("serving on {}", listener.local_addr()?));
    let served = serve_gateway(listener, state, options, shutdown).await;
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
            "cannot listen on {} (--worker-listen / STREAMSTOCK_WORKER_LISTEN)",
            args.listen
        )
    })?;
    let probe_options = args.connections.server_options("worker")?;
    let startup = common.startup(&shutdown);
    let store = open_store(&common, Some(&startup), Some(args.processing.lease_ttl())).await?;
    let backend = open_log(&common, Some("worker"), Some(&startup)).await?;

    // A worker answers /health, /ready and /metrics for orchestrators.
    let tokens = Arc::new(gateway::auth::Tokens::load(
        args.tokens_file.as_deref(),
        args.api_token.clone(),
        args.api_token_file.as_deref(),
    )?);
    reload::tokens_on_sighup(tokens.clone(), shutdown.clone());
    reload::certificate_on_sighup(&probe_options, shutdown.clone());
    let probes = gateway::probes::probe_router(backend.log.clone(), store.clone(), tokens);
    let probe_server = tokio::spawn(http_server::serve(
        listener,
        probes,
        probe_options,
        shutdown.clone(),
    ));

    systemd::ready("processing");
    worker::run(
        backend,
        store
            .clone()
            .allocating_by(args.processing.allocation_strategy),
        common.with_webhooks(args.processing.worker_options(common.retention.windows()))?,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    probe_server.await.context("probe server panicked")??;
    store.close().await;
    Ok(())
}

pub async fn run_simulate(
    common: CommonArgs,
    args: SimulateArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let profile = match (args.profile, args.rate) {
        (Some(profile), _) => profile,
        (None, Some(_)) => Profile::Steady,
        (None, None) => Profile::Normal,
    };
    if profile == Profile::None {
        bail!("--profile none generates no traffic; choose normal, burst, steady or max");
    }
    let pace = match (profile, args.rate) {
        (Profile::Steady, Some(rate)) => Some(Pace::Steady { rate }),
        (Profile::Steady, None) => bail!("--profile steady needs --rate N (requests per second)"),
        (Profile::Max, None) => Some(Pace::Max),
        (Profile::Max, Some(_)) => {
            bail!("--profile max sends as fast as answered; --rate is for steady")
        }
        (_, Some(_)) => bail!("--rate is for --profile steady"),
        _ => None,
    };
    let trust = GatewayTrust::from_ca_file(args.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
    wait_for_gateway(&args.target, &trust, &common.startup(&shutdown)).await?;
    systemd::ready(&format!("sending traffic to {}", args.target));
    let simulator = Simulator::new(&args.target, args.api_token, profile, trust);
    if profile == Profile::FlashSale {
        let duration = args.duration.unwrap_or(std::time::Duration::from_secs(10));
        let report = simulator
            .flash_sale(args.concurrency, duration, shutdown)
            .await?;
        match args.report {
            ReportFormat::Text => println!("{report}"),
            ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        }
        if report.oversold {
            bail!(
                "the flash sale oversold: {} reserved of {} on hand for {} confirmed orders",
                report.reserved,
                report.on_hand,
                report.confirmed
            );
        }
        return Ok(());
    }
    let Some(pace) = pace else {
        if let Some(duration) = args.duration {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                stop.cancel();
            });
        }
        let report = simulator.run(shutdown).await;
        println!(
            "orders accepted: {}, refused: {}, failed: {}; shipped: {}, partial shipments: {}, \
             cancelled: {}, returns: {}; adjustments and counts: {}; \
             purchase orders delivered: {}, direct restocks: {}; \
             transfers: {}, transfers received: {}; \
             held: {}, committed: {}, commits refused: {}",
            report.accepted,
            report.refused,
            report.failed,
            report.shipped,
            report.partial_shipments,
            report.cancelled,
            report.returns,
            report.adjustments,
            report.deliveries,
            report.restocks,
            report.transfers,
            report.transfers_received,
            report.held,
            report.committed,
            report.commits_refused
        );
        return Ok(());
    };
    let options = LoadOptions {
        pace,
        concurrency: args.concurrency as usize,
        duration: args.duration,
        orders: args.orders,
        seed: args.seed.unwrap_or_else(rand::random),
        mix: args.mix,
        supplier_delay: *args.supplier_delay,
        progress_every: std::time::Duration::from_secs(2),
    };
    let summary = Arc::new(simulator).run_load(options, shutdown).await;
    match args.report {
        ReportFormat::Text => print!("{}", summary.text()),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
    }
    Ok(())
}

/// Waits until the gateway at `target` answers `/health`.
async fn wait_for_gateway(
    target: &str,
    trust: &GatewayTrust,
    startup: &Startup,
) -> anyhow::Result<()> {
    let client = trust.http_client(std::time::Duration::from_secs(5));
    let health = format!("{}/health", target.trim_end_matches('/'));
    startup
        .wait_for(
            &format!("the gateway at {target}"),
            |e: &reqwest::Error| !e.is_builder(),
            || async { client.get(&health).send().await?.error_for_status() },
        )
        .await
        .with_context(|| format!("cannot reach the gateway (--target / API_URL: {target})"))?;
    Ok(())
}

pub async fn run_migrate(common: CommonArgs) -> anyhow::Result<()> {
    let store = open_store(&common, None, None).await?;
    println!("migrations applied to {}", store.describe());
    store.close().await;
    Ok(())
}
