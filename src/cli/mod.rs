//! The command line: settings parsed from flags and environment
//! (`config`), the backends they name (`backends`), and the commands that
//! run on them — the roles (`roles`), the operator commands (`admin`) and
//! the benchmarks (`bench`). The top layer: it may import every other
//! module, and none imports it.

pub mod admin;
pub mod backends;
pub mod bench;
pub mod config;
pub mod roles;

use config::{Cli, Command};
use tokio_util::sync::CancellationToken;

/// Runs the command `cli` names until it ends or `stop` fires.
pub async fn run(mut cli: Cli, stop: CancellationToken) -> anyhow::Result<()> {
    cli.common = cli.common.with_reference_names();
    match cli.command {
        Command::All(args) => roles::run_all(cli.common, args, stop).await,
        Command::Serve(args) => roles::run_serve(cli.common, args, stop).await,
        Command::Worker(args) => roles::run_worker(cli.common, args, stop).await,
        Command::Simulate(args) => roles::run_simulate(args, stop).await,
        Command::Migrate => roles::run_migrate(cli.common).await,
        Command::Status(args) => admin::status(cli.common, args).await,
        Command::Dlq(args) => admin::dlq(cli.common, args.action).await,
        Command::Rebuild(args) => admin::rebuild(cli.common, args).await,
        Command::Bench(args) => bench::run(cli.common, args).await,
        Command::Openapi => {
            println!("{}", crate::gateway::openapi_document().to_pretty_json()?);
            Ok(())
        }
    }
}
