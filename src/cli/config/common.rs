//! The flags every command takes: the backends, the data dir, partitions,
//! durability, logging, start-up, and the bounds of what is retained.

use crate::store::analytics::WindowRetention;
use crate::stream::embedded::EmbeddedOptions;
use crate::telemetry::LogFormat;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use super::gateway::read_secret_file;
use super::ConfigError;
use secrecy::{ExposeSecret, SecretString};

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
    /// replicated: as strict, and the event is in the AOF of at least
    /// --min-replicas replicas too (WAITAOF 1 N). Valkey only.
    #[arg(long, env = "STREAMSTOCK_DURABILITY", value_enum, default_value_t = Durability::Strict, global = true)]
    pub durability: Durability,
    /// Under --durability replicated, how many replicas of the primary
    /// must have an event in their AOF before its 2xx.
    #[arg(long, env = "STREAMSTOCK_MIN_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16), global = true)]
    pub min_replicas: u32,
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
    /// Networks webhooks may be sent to besides the public internet
    /// (CIDR or an address, comma-separated): loopback, link-local and
    /// cloud metadata addresses are refused unless one of these holds them.
    #[arg(
        long,
        env = "STREAMSTOCK_WEBHOOK_ALLOW",
        value_delimiter = ',',
        global = true
    )]
    pub webhook_allow: Vec<String>,
    /// The most webhook subscriptions (not deleted) a deployment keeps.
    #[arg(long, env = "STREAMSTOCK_MAX_SUBSCRIPTIONS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub max_subscriptions: u32,
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
    #[arg(long, env = "STREAMSTOCK_LOG_SEGMENT_BYTES", default_value_t = EmbeddedOptions::DEFAULT_SEGMENT_BYTES, value_parser = clap::value_parser!(u64).range(4096..=(1 << 30)), global = true)]
    pub log_segment_bytes: u64,
    /// Per-second throughput windows are kept this long (event time, behind
    /// the newest window).
    #[arg(
        long,
        env = "STREAMSTOCK_PER_SECOND_RETENTION",
        default_value_t = WindowRetention::DEFAULT_PER_SECOND.into(),
        global = true
    )]
    pub per_second_retention: humantime::Duration,
    /// Per-minute throughput windows are kept this long.
    #[arg(
        long,
        env = "STREAMSTOCK_PER_MINUTE_RETENTION",
        default_value_t = WindowRetention::DEFAULT_PER_MINUTE.into(),
        global = true
    )]
    pub per_minute_retention: humantime::Duration,
    /// SQLite's memory budget in MiB: the page caches of all its pooled
    /// connections together (memory-mapped reads are off, so the budget is
    /// what SQLite adds to the process's RSS).
    #[arg(long, env = "STREAMSTOCK_SQLITE_MEMORY_MIB", default_value_t = crate::store::DEFAULT_SQLITE_MEMORY_MIB, value_parser = clap::value_parser!(u32).range(1..=65_536), global = true)]
    pub sqlite_memory_mib: u32,
}

impl Default for RetentionArgs {
    /// The command line's defaults: the same constants (a test checks
    /// they agree).
    fn default() -> RetentionArgs {
        RetentionArgs {
            log_retention: Duration::ZERO.into(),
            log_segment_bytes: EmbeddedOptions::DEFAULT_SEGMENT_BYTES,
            per_second_retention: WindowRetention::DEFAULT_PER_SECOND.into(),
            per_minute_retention: WindowRetention::DEFAULT_PER_MINUTE.into(),
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
    /// The worker's options with the webhook settings this holds.
    pub fn with_webhooks(
        &self,
        mut options: crate::worker::WorkerOptions,
    ) -> Result<crate::worker::WorkerOptions, ConfigError> {
        options.webhooks.allow = self.webhook_allow()?;
        options.webhooks.max_subscriptions = self.max_subscriptions as usize;
        Ok(options)
    }

    /// `--webhook-allow`, parsed.
    pub fn webhook_allow(&self) -> Result<crate::domain::webhooks::AllowList, ConfigError> {
        crate::domain::webhooks::AllowList::parse(&self.webhook_allow)
            .map_err(|problem| ConfigError::Invalid(format!("--webhook-allow: {problem}")))
    }

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
    ) -> crate::cli::startup::Startup {
        crate::cli::startup::Startup {
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
    /// one is given: a secret, since it may hold the password.
    pub fn database_url_with_password(&self) -> Result<SecretString, ConfigError> {
        let url = self.database_url();
        let Some(path) = &self.database_password_file else {
            return Ok(SecretString::from(url));
        };
        let password = read_secret_file(path, "--database-password-file")?;
        let mut parsed = url::Url::parse(&url)?;
        if !parsed.scheme().starts_with("postgres") {
            return Err(ConfigError::PasswordFileNeedsPostgres);
        }
        if parsed.username().is_empty() {
            return Err(ConfigError::NoUserForPassword);
        }
        parsed
            .set_password(Some(password.expose_secret()))
            .map_err(|_| ConfigError::NoUserForPassword)?;
        Ok(SecretString::from(parsed.to_string()))
    }
}

pub use crate::stream::Durability;
