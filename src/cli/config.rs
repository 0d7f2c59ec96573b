//! Command line and environment, parsed once into typed settings (the
//! roles and flags of docs/configuration.md). Every option is a flag with
//! an env fallback.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::simulator::Profile;
use crate::store::analytics::WindowRetention;
use crate::stream::{Consumer, PROCESSOR_GROUP};
pub use crate::telemetry::LogFormat;
use crate::worker::{self, WorkerOptions};

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

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Orders in the backlog the worker drains.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub orders: u64,
    /// Products the orders are spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub products: u64,
    /// Instead of the drain: time pages of the audit trail on an archive of
    /// this many synthetic events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    pub archive_events: Option<u64>,
    #[command(flatten)]
    pub processing: ProcessingArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// List dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Append dead-lettered events to the log again, to be processed anew.
    Replay(DlqSelection),
    /// Delete dead letters for good.
    Purge(DlqSelection),
}

#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct DlqSelection {
    /// Dead-letter ids, as `dlq list` shows them.
    pub ids: Vec<String>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Valkey (or Redis 7) URL for the shared event log; unset: embedded log.
    #[arg(long, env = "STREAMSTOCK_VALKEY_URL", global = true)]
    pub valkey_url: Option<String>,
    /// PEM file of the CA(s) to trust for a rediss:// --valkey-url, instead
    /// of the system's.
    #[arg(long, env = "STREAMSTOCK_VALKEY_CA_FILE", global = true)]
    pub valkey_ca_file: Option<PathBuf>,
    /// The reference's name for the same URL (its compose file sets
    /// REDIS_URL): used when --valkey-url is not given.
    #[arg(long, env = "REDIS_URL", hide = true, global = true)]
    pub redis_url: Option<String>,
    /// A TOML file of settings (keys: the long flag names), beneath flags
    /// and environment; see `streamstock config`.
    #[arg(long, env = "STREAMSTOCK_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Read-model database: postgres://… or sqlite://…
    /// [default: sqlite://<data-dir>/streamstock.db]
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// A file whose first line is the database password, put into
    /// --database-url, so the password stays out of the URL, `ps` and the
    /// environment.
    #[arg(long, env = "STREAMSTOCK_DATABASE_PASSWORD_FILE", global = true)]
    pub database_password_file: Option<PathBuf>,
    /// Where the embedded log and the default SQLite database live.
    #[arg(
        long,
        env = "STREAMSTOCK_DATA_DIR",
        default_value = "./streamstock-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Number of log partitions; fixed for the life of a deployment.
    #[arg(long, env = "STREAMSTOCK_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024), global = true)]
    pub partitions: u32,
    /// Prefix of every Valkey key this deployment uses.
    #[arg(
        long,
        env = "STREAMSTOCK_VALKEY_NAMESPACE",
        default_value = "streamstock",
        global = true
    )]
    pub valkey_namespace: String,
    /// strict: a 2xx waits until the event is on disk (Valkey WAITAOF);
    /// relaxed: it waits only for the append.
    #[arg(long, env = "STREAMSTOCK_DURABILITY", value_enum, default_value_t = Durability::Strict, global = true)]
    pub durability: Durability,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// How long a role waits at start-up for its database, Valkey (or, for
    /// the simulator, its gateway) to answer, retrying with backoff and
    /// saying what it waits for, before it fails.
    #[arg(
        long,
        env = "STREAMSTOCK_STARTUP_TIMEOUT",
        default_value = "60s",
        global = true
    )]
    pub startup_timeout: humantime::Duration,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// How much each bounded resource may hold: log entries after every group
/// acked them, throughput windows, SQLite's memory.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Keep log entries this long after every consumer group acked them
    /// (e.g. `1h`, for inspection or a second group); `0s` trims them as
    /// soon as they are acked. The event archive in the database is kept
    /// whole regardless.
    #[arg(
        long,
        env = "STREAMSTOCK_LOG_RETENTION",
        default_value = "0s",
        global = true
    )]
    pub log_retention: humantime::Duration,
    /// Embedded log only: a partition's segment file is sealed, and a new
    /// one begun, past this many bytes. Acked entries are deleted a whole
    /// segment at a time, and opening the log reads one segment per
    /// partition.
    #[arg(long, env = "STREAMSTOCK_LOG_SEGMENT_BYTES", default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(4096..=(1 << 30)), global = true)]
    pub log_segment_bytes: u64,
    /// Per-second throughput windows are kept this long (event time, behind
    /// the newest window).
    #[arg(
        long,
        env = "STREAMSTOCK_PER_SECOND_RETENTION",
        default_value = "1h",
        global = true
    )]
    pub per_second_retention: humantime::Duration,
    /// Per-minute throughput windows are kept this long.
    #[arg(
        long,
        env = "STREAMSTOCK_PER_MINUTE_RETENTION",
        default_value = "7d",
        global = true
    )]
    pub per_minute_retention: humantime::Duration,
    /// SQLite's memory budget in MiB: the page caches of all its pooled
    /// connections together (memory-mapped reads are off, so the budget is
    /// what SQLite adds to the process's RSS).
    #[arg(long, env = "STREAMSTOCK_SQLITE_MEMORY_MIB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65_536), global = true)]
    pub sqlite_memory_mib: u32,
}

impl Default for RetentionArgs {
    /// The command line's defaults (a test checks they agree).
    fn default() -> RetentionArgs {
        let windows = WindowRetention::default();
        RetentionArgs {
            log_retention: Duration::ZERO.into(),
            log_segment_bytes: 16 << 20,
            per_second_retention: windows.per_second.into(),
            per_minute_retention: windows.per_minute.into(),
            sqlite_memory_mib: crate::store::DEFAULT_SQLITE_MEMORY_MIB,
        }
    }
}

impl RetentionArgs {
    pub fn windows(&self) -> WindowRetention {
        WindowRetention {
            per_second: *self.per_second_retention,
            per_minute: *self.per_minute_retention,
        }
    }
}

impl CommonArgs {
    /// Settings under the reference's names take effect where ours are
    /// not given: REDIS_URL for the Valkey URL.
    pub fn with_reference_names(mut self) -> CommonArgs {
        if self.valkey_url.is_none() {
            self.valkey_url = self.redis_url.take();
        }
        self
    }

    /// How the roles wait for their backends at start-up.
    pub fn startup(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> super::startup::Startup {
        super::startup::Startup {
            timeout: *self.startup_timeout,
            shutdown: shutdown.clone(),
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.data_dir.join("streamstock.db").display()
            ),
        }
    }

    /// `database_url` with the password from --database-password-file, if
    /// one is given.
    pub fn database_url_with_password(&self) -> Result<String, String> {
        let url = self.database_url();
        let Some(path) = &self.database_password_file else {
            return Ok(url);
        };
        let password = read_secret_file(path, "--database-password-file")?;
        let mut parsed =
            url::Url::parse(&url).map_err(|e| format!("invalid --database-url: {e}"))?;
        if !parsed.scheme().starts_with("postgres") {
            return Err("--database-password-file needs a postgres:// --database-url".into());
        }
        let no_user = || "--database-url has no user name to go with the password file".to_string();
        if parsed.username().is_empty() {
            return Err(no_user());
        }
        parsed
            .set_password(Some(&password))
            .map_err(|_| no_user())?;
        Ok(parsed.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    Strict,
    Relaxed,
}

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "STREAMSTOCK_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Bearer token required on writes and on the audit trail, the dead
    /// letters and the metrics; unset: no auth.
    #[arg(long, env = "STREAMSTOCK_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// A file holding the token (its first line), so it stays out of `ps`
    /// and of the environment.
    #[arg(long, env = "STREAMSTOCK_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,
    /// Origins whose web pages may call the API (CORS), comma-separated,
    /// e.g. https://ops.example.com; unset: none.
    #[arg(
        long = "cors-origin",
        env = "STREAMSTOCK_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Allow a non-loopback --listen without --api-token.
    #[arg(long)]
    pub insecure: bool,
    /// Appends the gateway has in flight to the log, at most. A request
    /// that finds them all taken waits up to a second, then gets 503 with
    /// Retry-After: the log is behind, and nothing queues without bound.
    #[arg(long, env = "STREAMSTOCK_MAX_IN_FLIGHT_APPENDS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight_appends: u32,
    /// Requests the gateway handles at once; more get 503 with
    /// Retry-After at once (the probes /health, /ready and /metrics aside).
    #[arg(long, env = "STREAMSTOCK_MAX_IN_FLIGHT_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight_requests: u32,
    /// How long a request may take before it is answered 503 (longer than
    /// the 30 s an order's `?wait=` may take).
    #[arg(long, env = "STREAMSTOCK_REQUEST_TIMEOUT", default_value = "35s")]
    pub request_timeout: humantime::Duration,
    /// How long the first answer to a POST with an Idempotency-Key is kept
    /// for its retries.
    #[arg(long, env = "STREAMSTOCK_IDEMPOTENCY_TTL", default_value = "24h")]
    pub idempotency_ttl: humantime::Duration,
    /// The most idempotency keys kept; beyond, the oldest are removed
    /// (checked every few seconds), so load cannot grow the table unbounded.
    #[arg(long, env = "STREAMSTOCK_IDEMPOTENCY_MAX_KEYS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_max_keys: u64,
    /// Products whose price the gateway keeps in memory, so an order needs
    /// no database read (the least recently ordered fall out beyond it).
    #[arg(long, env = "STREAMSTOCK_CATALOG_CACHE_PRODUCTS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub catalog_cache_products: u32,
    /// Dashboard WebSocket connections served at once; more get 503.
    #[arg(long, env = "STREAMSTOCK_MAX_DASHBOARD_CLIENTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_dashboard_clients: u32,
}

/// The token in `path`: its first line, trimmed; an empty one is refused.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    read_secret_file(path, "--api-token-file")
}

/// The first line of the secret file `path` (given as `flag`), trimmed.
pub fn read_secret_file(path: &std::path::Path, flag: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(format!("{flag} {} is empty", path.display()));
    }
    Ok(secret.to_string())
}

impl GatewayArgs {
    /// Reads `--api-token-file` into the token.
    pub fn load_token_file(&mut self) -> Result<(), String> {
        if let Some(path) = &self.api_token_file {
            self.api_token = Some(read_token_file(path)?);
        }
        Ok(())
    }

    /// Who may call the gateway (see gateway::auth), once the token file
    /// is loaded.
    pub fn access(&self) -> Result<crate::gateway::Access, String> {
        let cors_origins = self
            .cors_origins
            .iter()
            .map(|origin| {
                axum::http::HeaderValue::from_str(origin.trim())
                    .map_err(|_| format!("--cors-origin {origin:?} is not a valid origin"))
            })
            .collect::<Result<_, _>>()?;
        Ok(crate::gateway::Access {
            api_token: self.api_token.clone(),
            cors_origins,
        })
    }

    pub fn limits(&self) -> crate::gateway::Limits {
        crate::gateway::Limits {
            requests_in_flight: self.max_in_flight_requests as usize,
            request_timeout: *self.request_timeout,
            in_flight_appends: self.max_in_flight_appends as usize,
            dashboard_clients: self.max_dashboard_clients as usize,
            idempotency_ttl: *self.idempotency_ttl,
            idempotency_max_keys: self.idempotency_max_keys,
            catalog_cache_products: self.catalog_cache_products as usize,
        }
    }

    /// Refuses to expose an unauthenticated API beyond this machine.
    pub fn check_exposure(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.api_token.is_none() && !self.insecure {
            return Err(format!(
                "refusing to listen on {} without --api-token: anyone on the network could write. \
                 Set STREAMSTOCK_API_TOKEN, listen on 127.0.0.1, or pass --insecure",
                self.listen
            ));
        }
        Ok(())
    }
}

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
    #[arg(long, env = "STREAMSTOCK_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// A file holding that token (its first line).
    #[arg(long, env = "STREAMSTOCK_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub processing: ProcessingArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Gateway to send traffic to.
    #[arg(long, env = "API_URL", default_value = "http://127.0.0.1:8000")]
    pub target: String,
    /// Traffic profile, in any case: `normal` and `burst` (a shop's pace,
    /// as the reference's), `steady` (open loop at --rate) or `max` (closed
    /// loop at --concurrency). A --rate with no profile given means steady.
    #[arg(long, env = "SIM_PROFILE", value_enum, ignore_case = true)]
    pub profile: Option<Profile>,
    /// Stop after this long: `30s`, `5m`, or seconds (`5`). Default: until
    /// Ctrl-C (or --orders).
    #[arg(long, alias = "duration-secs", env = "SIM_DURATION_SECS", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Requests per second of the steady profile (open loop).
    #[arg(long, env = "SIM_RATE", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: Option<u32>,
    /// `max`: connections, each sending as soon as answered; `steady`: the
    /// most requests in flight (a request due while all are busy waits, and
    /// its wait counts in its latency).
    #[arg(long, env = "SIM_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// `steady`/`max`: stop after this many orders were sent.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub orders: Option<u64>,
    /// `steady`/`max`: seed of every random choice, for a reproducible run
    /// (default: a random one, printed in the summary).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `steady`/`max`: parts of each request kind. Ship and cancel act on
    /// orders confirmed earlier in the run.
    #[arg(long, default_value = "place=85,ship=12,cancel=3")]
    pub mix: crate::simulator::load::Mix,
    /// `steady`/`max`: the supplier receives a purchase order this long
    /// after the workers draft it.
    #[arg(long, default_value = "2s")]
    pub supplier_delay: humantime::Duration,
    /// `steady`/`max`: the final summary as `text` or `json` (on stdout).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
    /// Bearer token for a gateway started with --api-token.
    #[arg(long, env = "STREAMSTOCK_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// `5` (seconds) or a humantime duration (`90s`, `5m`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) => Ok(std::time::Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_stands_in_for_the_valkey_url() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(args)
                .unwrap()
                .common
                .with_reference_names()
                .valkey_url
        };
        assert_eq!(
            parse(&["streamstock", "migrate", "--redis-url", "redis://r"]).as_deref(),
            Some("redis://r")
        );
        assert_eq!(
            parse(&[
                "streamstock",
                "migrate",
                "--redis-url",
                "redis://r",
                "--valkey-url",
                "redis://v"
            ])
            .as_deref(),
            Some("redis://v"),
            "ours wins"
        );
    }

    #[test]
    fn the_token_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let args = |file: &std::path::Path| {
            let cli = Cli::try_parse_from([
                "streamstock",
                "serve",
                "--api-token-file",
                file.to_str().unwrap(),
            ])
            .unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("not `serve`")
            };
            args.gateway
        };
        std::fs::write(&file, "  s3cret  \nsecond line\n").unwrap();
        let mut gateway = args(&file);
        gateway.load_token_file().unwrap();
        assert_eq!(gateway.api_token.as_deref(), Some("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        assert!(args(&file).load_token_file().unwrap_err().contains("empty"));
        assert!(args(&dir.path().join("missing"))
            .load_token_file()
            .unwrap_err()
            .contains("cannot read"));
        assert!(Cli::try_parse_from([
            "streamstock",
            "serve",
            "--api-token",
            "a",
            "--api-token-file",
            "b"
        ])
        .is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "streamstock",
            "worker",
            "--partitions",
            "4",
            "--valkey-url",
            "redis://x",
        ])
        .unwrap();
        assert_eq!(cli.common.partitions, 4);
        assert!(matches!(cli.command, Command::Worker(_)));
    }

    #[test]
    fn retention_defaults_match_the_command_line() {
        let cli = Cli::try_parse_from(["streamstock", "migrate"]).unwrap();
        let parsed = cli.common.retention;
        let default = RetentionArgs::default();
        assert_eq!(*parsed.log_retention, *default.log_retention);
        assert_eq!(*parsed.per_second_retention, *default.per_second_retention);
        assert_eq!(*parsed.per_minute_retention, *default.per_minute_retention);
        assert_eq!(parsed.sqlite_memory_mib, default.sqlite_memory_mib);
        assert_eq!(parsed.log_segment_bytes, default.log_segment_bytes);
        let cli =
            Cli::try_parse_from(["streamstock", "migrate", "--log-retention", "90s"]).unwrap();
        assert_eq!(*cli.common.retention.log_retention, Duration::from_secs(90));
        assert!(
            Cli::try_parse_from(["streamstock", "migrate", "--log-retention", "soon"]).is_err()
        );
    }

    /// The Python reference's README and compose file spell the profiles
    /// in capitals; its users' settings keep working.
    #[test]
    fn profiles_are_read_in_any_case() {
        for (spelling, expected) in [
            ("NORMAL", Profile::Normal),
            ("Burst", Profile::Burst),
            ("burst", Profile::Burst),
            ("NONE", Profile::None),
        ] {
            let cli = Cli::try_parse_from(["streamstock", "all", "--profile", spelling]).unwrap();
            let Command::All(args) = cli.command else {
                panic!("not `all`")
            };
            assert_eq!(args.profile, expected, "{spelling}");
            let cli =
                Cli::try_parse_from(["streamstock", "simulate", "--profile", spelling]).unwrap();
            let Command::Simulate(args) = cli.command else {
                panic!("not `simulate`")
            };
            assert_eq!(args.profile, Some(expected), "{spelling}");
        }
        assert!(Cli::try_parse_from(["streamstock", "all", "--profile", "HEAVY"]).is_err());
    }

    #[test]
    fn gateway_and_worker_listen_addresses_have_their_own_variables() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let env_of = |role: &str| {
            let command = cli.find_subcommand(role).unwrap();
            let listen = command
                .get_arguments()
                .find(|a| a.get_id() == "listen")
                .unwrap();
            listen.get_env().unwrap().to_str().unwrap().to_string()
        };
        assert_eq!(env_of("serve"), "STREAMSTOCK_LISTEN");
        assert_eq!(env_of("all"), "STREAMSTOCK_LISTEN");
        assert_eq!(env_of("worker"), "STREAMSTOCK_WORKER_LISTEN");
        for flag in ["--worker-listen", "--listen"] {
            let cli =
                Cli::try_parse_from(["streamstock", "worker", flag, "127.0.0.1:9101"]).unwrap();
            let Command::Worker(args) = cli.command else {
                panic!("not `worker`")
            };
            assert_eq!(args.listen.port(), 9101, "{flag}");
        }
    }

    #[test]
    fn the_database_password_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db-password");
        std::fs::write(&file, "p@ss word/1\n").unwrap();
        let cli = Cli::try_parse_from([
            "streamstock",
            "--database-url",
            "postgres://shop@db.internal:5432/streamstock",
            "--database-password-file",
            file.to_str().unwrap(),
            "migrate",
        ])
        .unwrap();
        assert_eq!(
            cli.common.database_url_with_password().unwrap(),
            "postgres://shop:p%40ss%20word%2F1@db.internal:5432/streamstock"
        );
        let no_user = CommonArgs {
            database_url: Some("postgres://db.internal/streamstock".into()),
            ..cli.common.clone()
        };
        assert!(no_user
            .database_url_with_password()
            .unwrap_err()
            .contains("no user name"));
        let missing = CommonArgs {
            database_password_file: Some(dir.path().join("absent")),
            ..cli.common
        };
        assert!(missing
            .database_url_with_password()
            .unwrap_err()
            .contains("cannot read --database-password-file"));
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let args = GatewayArgs {
            listen: "0.0.0.0:8000".parse().unwrap(),
            api_token: None,
            api_token_file: None,
            cors_origins: Vec::new(),
            insecure: false,
            max_in_flight_appends: 16,
            max_dashboard_clients: 4,
            max_in_flight_requests: 16,
            request_timeout: std::time::Duration::from_secs(35).into(),
            idempotency_ttl: std::time::Duration::from_secs(86_400).into(),
            idempotency_max_keys: 1_000_000,
            catalog_cache_products: 100,
        };
        assert!(args.check_exposure().is_err());
        assert!(GatewayArgs {
            api_token: Some("t".into()),
            ..args.clone()
        }
        .check_exposure()
        .is_ok());
        assert!(GatewayArgs {
            insecure: true,
            ..args
        }
        .check_exposure()
        .is_ok());
    }
}
