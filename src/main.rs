use clap::Parser;
use streamstock::config::{Cli, Command};
use streamstock::{admin, app, bench, memory, shutdown, telemetry};

fn main() -> std::process::ExitCode {
    // Before any thread exists: the allocator's arenas are set up per thread.
    memory::limit_allocator_arenas();
    memory::spawn_free_memory_release();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(run())
}

async fn run() -> std::process::ExitCode {
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
