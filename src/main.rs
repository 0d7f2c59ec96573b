use clap::Parser;
use streamstock::config::{Cli, Command};
use streamstock::{admin, app, bench, shutdown, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.common.log_format);
    let stop = shutdown::on_signals();
    let result = match cli.command {
        Command::All(args) => app::run_all(cli.common, args, stop).await,
        Command::Serve(args) => app::run_serve(cli.common, args, stop).await,
        Command::Worker(args) => app::run_worker(cli.common, args, stop).await,
        Command::Simulate(args) => app::run_simulate(args, stop).await,
        Command::Migrate => app::run_migrate(cli.common).await,
        Command::Status(args) => admin::status(cli.common, args).await,
        Command::Dlq(args) => admin::dlq(cli.common, args.action).await,
        Command::Rebuild(args) => admin::rebuild(cli.common, args).await,
        Command::Bench(args) => bench::run(cli.common, args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
