//! The worker's flags (`all`, `worker`, `bench`): batches, leases, retries,
//! dead letters; and the roles' own argument sets.

use super::gateway::GatewayArgs;
use super::Profile;
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
    /// How long a worker waits for a batch to fill, in milliseconds.
    #[arg(long, env = "STREAMSTOCK_BATCH_WAIT_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_wait_ms: u64,
    /// A worker's partition leases last this long without renewal (it renews
    /// every third of it); a dead worker's partitions move after this, in ms.
    #[arg(long, env = "STREAMSTOCK_LEASE_TTL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub lease_ttl_ms: u64,
    /// Failed attempts at an event before it goes to the dead letters.
    #[arg(long, env = "STREAMSTOCK_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Wait before the first retry of a failed event, doubling each time
    /// (at most 30 s), in milliseconds.
    #[arg(long, env = "STREAMSTOCK_RETRY_BACKOFF_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub retry_backoff_ms: u64,
    /// Dead letters wait for an operator (`streamstock dlq`); when their
    /// count reaches this, the worker raises a critical alert.
    #[arg(long, env = "STREAMSTOCK_DEAD_LETTER_ALERT", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub dead_letter_alert: u64,
}

impl ProcessingArgs {
    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// The worker's own settings, under a consumer name unique to this process.
    pub fn worker_options(&self, windows: WindowRetention) -> WorkerOptions {
        WorkerOptions {
            consumer: Consumer::new(PROCESSOR_GROUP, worker::unique_consumer_name()),
            batch_size: self.batch_size as usize,
            batch_wait: self.batch_wait(),
            lease_ttl: self.lease_ttl(),
            max_attempts: self.max_attempts,
            retry_backoff: Duration::from_millis(self.retry_backoff_ms),
            dead_letter_alert: self.dead_letter_alert,
            windows,
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
    #[command(flatten)]
    pub processing: ProcessingArgs,
}
