//! `flight-server`: see `flight_server::cli` for the command line.

use clap::Parser;

/// mimalloc: a server allocates per message as much as per batch (see
/// hopper_malloc).
#[global_allocator]
static GLOBAL: hopper_malloc::MiMalloc = hopper_malloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads start: every batch is built in, encoded
    // from and freed from buffers of megabytes, which mimalloc would
    // otherwise give back to the kernel and fault in again.
    hopper_malloc::keep_freed_mimalloc_memory();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(serve()),
        Err(e) => {
            eprintln!("flight-server: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "flight_server=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match flight_server::cli::run(flight_server::cli::Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flight-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
