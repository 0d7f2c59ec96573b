//! The worker's flags (`all`, `worker`, `bench`): batches, leases, retries,
//! dead letters; and the roles' own argument sets.

use super::gateway::GatewayArgs;
use super::{duration_in, Profile};
use crate::domain::status::AllocationStrategy;
use crate::store::analytics::WindowRetention;
use crate::stream::{Consumer, PROCESSOR_GROUP};
use crate::worker::{self, WorkerOptions};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct ProcessingArgs {
    /// Most events a worker applies in one transaction.
    #[arg(long, env = "STREAMSTOCK_BATCH_SIZE", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// How long a worker waits for a batch to fill (1ms to 10s).
    #[arg(long, env = "STREAMSTOCK_BATCH_WAIT", default_value = "500ms", value_parser = duration_in(Duration::from_millis(1), Duration::from_secs(10)))]
    pub batch_wait: Duration,
    /// --batch-wait in milliseconds (the earlier spelling, still read).
    #[arg(long, env = "STREAMSTOCK_BATCH_WAIT_MS", hide = true, conflicts_with = "batch_wait", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_wait_ms: Option<u64>,
    /// A worker's partition leases last this long without renewal (it renews
    /// every third of it); a dead worker's partitions move after this
    /// (300ms to 10m).
    #[arg(long, env = "STREAMSTOCK_LEASE_TTL", default_value = "5s", value_parser = duration_in(Duration::from_millis(300), Duration::from_secs(600)))]
    pub lease_ttl: Duration,
    /// --lease-ttl in milliseconds (the earlier spelling, still read).
    #[arg(long, env = "STREAMSTOCK_LEASE_TTL_MS", hide = true, conflicts_with = "lease_ttl", value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub lease_ttl_ms: Option<u64>,
    /// Failed attempts at an event before it goes to the dead letters.
    #[arg(long, env = "STREAMSTOCK_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Wait before the first retry of a failed event, doubling each time
    /// (at most 30 s); 1ms to 60s.
    #[arg(long, env = "STREAMSTOCK_RETRY_BACKOFF", default_value = "200ms", value_parser = duration_in(Duration::from_millis(1), Duration::from_secs(60)))]
    pub retry_backoff: Duration,
    /// --retry-backoff in milliseconds (the earlier spelling, still read).
    #[arg(long, env = "STREAMSTOCK_RETRY_BACKOFF_MS", hide = true, conflicts_with = "retry_backoff", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub retry_backoff_ms: Option<u64>,
    /// Dead letters wait for an operator (`streamstock dlq`); when their
    /// count reaches this, the worker raises a critical alert.
    #[arg(long, env = "STREAMSTOCK_DEAD_LETTER_ALERT", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub dead_letter_alert: u64,
    /// How a worker chooses the locations an order's lines are reserved
    /// at: `priority` (locations by priority, filling from the first) or
    /// `most_stock` (the location with the most available first). Each
    /// decision is recorded, so a change applies to orders decided after it
    /// and never changes a rebuild.
    #[arg(long, env = "STREAMSTOCK_ALLOCATION_STRATEGY", default_value = "priority", value_parser = parse_allocation_strategy)]
    pub allocation_strategy: AllocationStrategy,
    /// How often a worker looks for held orders whose hold ran out, in the
    /// partitions it holds, and asks for their expiry (100ms to 1m). An
    /// expiry is decided within about this plus a batch of its deadline.
    /// The same sweep takes up backorder queues longer than one batch
    /// fills.
    #[arg(long, env = "STREAMSTOCK_HOLD_SWEEP_INTERVAL", default_value = "1s", value_parser = duration_in(Duration::from_millis(100), Duration::from_secs(60)))]
    pub hold_sweep_interval: Duration,
    /// Most expiries one sweep asks for; the rest wait for the next sweep.
    #[arg(long, env = "STREAMSTOCK_HOLD_SWEEP_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub hold_sweep_batch: u32,
    /// A webhook delivery's time limit (connecting, sending, the answer's
    /// head); past it the attempt failed and is retried.
    #[arg(long, env = "STREAMSTOCK_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = duration_in(Duration::from_millis(100), Duration::from_secs(120)))]
    pub webhook_timeout: Duration,
    /// How long every delivery to a subscription may fail before it is
    /// paused (with an alert; its cursor is kept for `resume`).
    #[arg(long, env = "STREAMSTOCK_WEBHOOK_PAUSE_AFTER", default_value = "1h", value_parser = duration_in(Duration::from_secs(1), Duration::from_secs(30 * 86_400)))]
    pub webhook_pause_after: Duration,
}

fn parse_allocation_strategy(raw: &str) -> Result<AllocationStrategy, String> {
    AllocationStrategy::parse(raw).ok_or_else(|| {
        let names: Vec<&str> = AllocationStrategy::ALL.iter().map(|s| s.as_str()).collect();
        format!("must be one of {}", names.join(", "))
    })
}

impl ProcessingArgs {
    pub fn batch_wait(&self) -> Duration {
        self.batch_wait_ms
            .map_or(self.batch_wait, Duration::from_millis)
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl_ms
            .map_or(self.lease_ttl, Duration::from_millis)
    }

    pub fn retry_backoff(&self) -> Duration {
        self.retry_backoff_ms
            .map_or(self.retry_backoff, Duration::from_millis)
    }

    /// The worker's own settings, under a consumer name unique to this process.
    pub fn worker_options(&self, windows: WindowRetention) -> WorkerOptions {
        WorkerOptions {
            consumer: Consumer::new(PROCESSOR_GROUP, worker::unique_consumer_name()),
            batch_size: self.batch_size as usize,
            batch_wait: self.batch_wait(),
            lease_ttl: self.lease_ttl(),
            max_attempts: self.max_attempts,
            retry_backoff: self.retry_backoff(),
            dead_letter_alert: self.dead_letter_alert,
            windows,
            hold_sweep: worker::sweep::SweepSettings {
                interval: self.hold_sweep_interval,
                batch: self.hold_sweep_batch as usize,
            },
            // The allow-list and the bound come from the common settings
            // (the gateway checks them too): see `CommonArgs::deliverer`.
            webhooks: worker::deliverer::DelivererSettings {
                timeout: self.webhook_timeout,
                pause_after: self.webhook_pause_after,
                ..Default::default()
            },
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub processing: ProcessingArgs,
    /// Simulator profile, or `none` to run without it. Any case: the
    /// reference's README and compose file write `NORMAL` and `BURST`.
    #[arg(long, env = "SIM_PROFILE", value_enum, ignore_case = true, default_value_t = Profile::Normal)]
    pub profile: Profile,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Address of the worker's /health, /ready and /metrics endpoints. Its
    /// own variable, so a gateway and a worker can share an environment
    /// file (`--listen` still works on the command line).
    #[arg(
        long = "worker-listen",
        visible_alias = "listen",
        env = "STREAMSTOCK_WORKER_LISTEN",
        default_value = "127.0.0.1:8001"
    )]
    pub listen: SocketAddr,
    /// Bearer token required on the worker's /metrics, as on the gateway's.
    #[arg(long, env = "STREAMSTOCK_API_TOKEN", hide_env_values = true, value_parser = super::parse_secret)]
    pub api_token: Option<secrecy::SecretString>,
    /// A file holding that token (its first line).
    #[arg(long, env = "STREAMSTOCK_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,
    /// Named tokens with scopes, as the gateway's; /metrics needs `read`.
    #[arg(long, env = "STREAMSTOCK_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    #[command(flatten)]
    pub connections: super::ListenerArgs,
    #[command(flatten)]
    pub processing: ProcessingArgs,
}
