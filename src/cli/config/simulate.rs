//! The load generator's flags (`simulate`).

use super::Profile;
use clap::Args;

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
    /// `steady`/`max`: parts of each request kind (place, ship, cancel,
    /// partial, return, adjust). Ship, cancel and partial (one unit of the
    /// first line) act on orders confirmed earlier in the run; return takes
    /// back a unit of an order shipped earlier; adjust writes off or finds
    /// a unit of a product.
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
    /// CA certificates (PEM) to trust for an https:// --target besides the
    /// system's: a gateway with a certificate from a private CA.
    #[arg(long, env = "STREAMSTOCK_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    #[arg(long, env = "STREAMSTOCK_API_TOKEN", hide_env_values = true, value_parser = super::parse_secret)]
    pub api_token: Option<secrecy::SecretString>,
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
