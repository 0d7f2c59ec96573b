//! The command line: settings parsed from flags and environment
//! (`config`), the backends they name (`backends`), and the commands that
//! run on them — the roles (`roles`), the operator commands (`admin`) and
//! the benchmarks (`bench`). The top layer: it may import every other
//! module, and none imports it.

pub mod admin;
pub mod backends;
pub mod bench;
pub mod config;
pub mod config_file;
mod reload;
pub mod roles;
mod simulator_switch;
pub mod startup;
pub mod systemd;

use clap::{CommandFactory, FromArgMatches};
use config::{Cli, Command};
use config_file::FileSettings;
use std::ffi::OsString;
use tokio_util::sync::CancellationToken;

/// Parses the command line `args`, with the settings of the --config file
/// (if any) beneath flags and environment. Exits with a usage error, as
/// clap does, on a bad flag or a bad file.
pub fn parse(args: &[OsString]) -> Cli {
    let command = FileSettings::locate_and_read(args).and_then(|file| file.apply(Cli::command()));
    let command = match command {
        Ok(command) => command,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Runs the command `cli` names until it ends or `stop` fires.
pub async fn run(mut cli: Cli, stop: CancellationToken) -> anyhow::Result<()> {
    cli.common = cli.common.with_reference_names();
    let watch = systemd::watch(stop.clone());
    let done = run_command(cli, stop).await;
    watch.finish().await;
    done
}

async fn run_command(cli: Cli, stop: CancellationToken) -> anyhow::Result<()> {
    match cli.command {
        Command::All(args) => roles::run_all(cli.common, args, stop).await,
        Command::Serve(args) => roles::run_serve(cli.common, args, stop).await,
        Command::Worker(args) => roles::run_worker(cli.common, args, stop).await,
        Command::Simulate(args) => roles::run_simulate(cli.common, args, stop).await,
        Command::Migrate => roles::run_migrate(cli.common).await,
        Command::Status(args) => admin::status(cli.common, args).await,
        Command::Dlq(args) => admin::dlq(cli.common, args.action).await,
        Command::Rebuild(args) => admin::rebuild(cli.common, args).await,
        Command::Bench(args) => bench::run(cli.common, args).await,
        Command::Config => {
            let args: Vec<OsString> = std::env::args_os().collect();
            let text = config_file::effective(&args, Cli::command()).map_err(anyhow::Error::msg)?;
            print!("{text}");
            Ok(())
        }
        Command::Openapi => {
            println!("{}", crate::gateway::openapi_document().to_pretty_json()?);
            Ok(())
        }
    }
}
