//! `flight-server`: see `flight_server::cli` for the command line.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
