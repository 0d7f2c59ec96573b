use streamstock::cli;
use streamstock::{memory, shutdown, telemetry};

/// Rust's heap is mimalloc: a profile of order ingest on embedded `all`
/// spent a fifth of its CPU in glibc's malloc and free (each request's
/// 8 KiB read buffer sent glibc into malloc_consolidate), and mimalloc
/// took the same run from 15,000 to 18,000-19,500 orders/s with RSS flat
/// (see src/memory.rs and docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before any thread exists: glibc's arenas are set up per thread.
    memory::limit_allocator_arenas();
    memory::spawn_free_memory_release();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(run())
}

async fn run() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = cli::parse(&args);
    telemetry::init_logging(cli.common.log_format, cli.command.name());
    let stop = shutdown::on_signals();
    match cli::run(cli, stop).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
