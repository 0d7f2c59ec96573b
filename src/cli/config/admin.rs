//! The operator's commands' own flags: bench, rebuild, status, dlq.

use super::ProcessingArgs;
use clap::{Args, Subcommand};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Orders in the backlog the worker drains.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub orders: u64,
    /// Products the orders are spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub products: u64,
    /// What follows the orders in the backlog: `orders` (nothing) or
    /// `operations` (per 100 orders, 20 partial shipments, 10 of them then
    /// returning a unit; 60 ships of the whole order; 5 cancels; 2
    /// adjustments and a count).
    #[arg(long, value_enum, default_value_t = BenchMix::Orders)]
    pub mix: BenchMix,
    /// Locations the stock is kept in (1: the default one only). With
    /// more, each location but the last holds a few units of each product
    /// (a fraction of what the orders want), in priority order, so the
    /// first ones run dry and lines are split across locations.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub locations: u64,
    /// Every order of the backlog placed with a checkout's hold (an hour
    /// long: none expires during the drain), to weigh holds against plain
    /// orders.
    #[arg(long)]
    pub holds: bool,
    /// Instead of the drain: place this many held orders per second (for
    /// `--expiry-seconds`, each held 2 s) with a worker running, and time
    /// each hold's expiry from its deadline (p50, p99, max).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000), conflicts_with = "archive_events")]
    pub expiry_rate: Option<u64>,
    /// How long `--expiry-rate` places holds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub expiry_seconds: u64,
    /// Instead of the drain: time pages of the audit trail on an archive of
    /// this many synthetic events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    pub archive_events: Option<u64>,
    /// Instead of the drain: place this many orders per second (for
    /// `--feed-lag-seconds`) with a worker running and a reader following
    /// the feed, and time each order's arrival at the reader (p50, p99).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000), conflicts_with_all = ["archive_events", "expiry_rate"])]
    pub feed_lag_rate: Option<u64>,
    /// How long `--feed-lag-rate` places orders.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub feed_lag_seconds: u64,
    /// Webhook receivers (local, answering at once) subscribed from the
    /// beginning while the backlog drains: the drain's cost, and their
    /// events delivered per second.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub webhooks: u64,
    /// Workers that drain the backlog together, each with its share of the
    /// partitions (tasks of this process, as roles on one host would be).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub workers: u64,
    #[command(flatten)]
    pub processing: ProcessingArgs,
}

/// The backlog `streamstock bench` drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMix {
    /// Orders only.
    Orders,
    /// Orders, then the warehouse's and stock keeper's commands on them.
    Operations,
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
