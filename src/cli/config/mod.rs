//! Command line and environment, parsed once into typed settings (the
//! roles and flags of docs/configuration.md). Every option is a flag with
//! an env fallback. A file per role's flags: `common` (every command),
//! `gateway`, `processing` (the worker, and the roles' argument sets),
//! `simulate`, `admin` (the operator's commands).

mod admin;
mod common;
mod gateway;
mod listener;
mod processing;
mod simulate;
#[cfg(test)]
mod tests;

use clap::{Parser, Subcommand};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::simulator::Profile;
pub use crate::telemetry::LogFormat;
pub use admin::{BenchArgs, BenchMix, DlqAction, DlqArgs, DlqSelection, RebuildArgs, StatusArgs};
pub use common::{CommonArgs, Durability, RetentionArgs};
pub use gateway::{read_secret_file, read_token_file, GatewayArgs};
pub use listener::ListenerArgs;
pub use processing::{AllArgs, ProcessingArgs, ServeArgs, WorkerArgs};
pub use simulate::{ReportFormat, SimulateArgs};

/// A setting that cannot be used as given; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {flag} {}: {source}", path.display())]
    SecretFile {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {} is empty", path.display())]
    EmptySecret { flag: &'static str, path: PathBuf },
    #[error("invalid --database-url: {0}")]
    DatabaseUrl(#[from] url::ParseError),
    #[error("--database-password-file needs a postgres:// --database-url")]
    PasswordFileNeedsPostgres,
    #[error("--database-url has no user name to go with the password file")]
    NoUserForPassword,
    #[error(transparent)]
    Tokens(#[from] crate::gateway::auth::tokens::TokensFileError),
    #[error("--cors-origin {0:?} is not a valid origin")]
    CorsOrigin(String),
    #[error(
        "refusing to listen on {0} without --api-token or --tokens-file: anyone on the network could write. \
         Set STREAMSTOCK_API_TOKEN or STREAMSTOCK_TOKENS_FILE, listen on 127.0.0.1, or pass --insecure"
    )]
    Unprotected(SocketAddr),
    #[error("{0}")]
    Invalid(String),
}

/// A duration flag's parser: humantime (`500ms`, `5s`, `2m`), within
/// `min..=max`.
fn duration_in(
    min: std::time::Duration,
    max: std::time::Duration,
) -> impl Fn(&str) -> Result<std::time::Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let value = humantime::parse_duration(text)
            .map_err(|e| format!("{e} (write it as 500ms, 5s or 2m)"))?;
        if value < min || value > max {
            return Err(format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(value)
    }
}

/// A secret flag's value (a token): kept in a type whose Debug never
/// prints it, read out only where it is compared or sent.
fn parse_secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text.to_string()))
}

#[derive(Debug, Parser)]
#[command(
    name = "streamstock",
    version,
    about = "Event-driven inventory: gateway, workers, dashboard and simulator in one binary"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Gateway, worker and simulator in one process (the demo).
    All(AllArgs),
    /// HTTP gateway: REST API, WebSocket, dashboard.
    Serve(ServeArgs),
    /// Stream processor (needs --valkey-url when run on its own).
    Worker(WorkerArgs),
    /// Load generator against a running gateway.
    Simulate(SimulateArgs),
    /// Apply read-model migrations and exit.
    Migrate,
    /// Partitions, owners, lag, pending and dead letters.
    Status(StatusArgs),
    /// Inspect, replay or purge dead-lettered events.
    Dlq(DlqArgs),
    /// Drop the read model's projections and rebuild them from the event
    /// archive; prints a checksum of every table before and after.
    Rebuild(RebuildArgs),
    /// Measure worker drain throughput on the configured backends, next to
    /// raw references of the same servers, and print a table.
    Bench(BenchArgs),
    /// Print the gateway's OpenAPI document (what /openapi.json serves).
    Openapi,
    /// Print the effective settings of every role, where each comes from
    /// (flag, environment, --config file, default), secrets masked.
    Config,
}

impl Command {
    /// The command's name: the `role` of every JSON log line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::All(_) => "all",
            Command::Serve(_) => "serve",
            Command::Worker(_) => "worker",
            Command::Simulate(_) => "simulate",
            Command::Migrate => "migrate",
            Command::Status(_) => "status",
            Command::Dlq(_) => "dlq",
            Command::Rebuild(_) => "rebuild",
            Command::Bench(_) => "bench",
            Command::Openapi => "openapi",
            Command::Config => "config",
        }
    }
}
