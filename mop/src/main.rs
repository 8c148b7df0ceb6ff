//! `mop`: the model hopper parallelism command. Each subcommand is glue from
//! the command line to a library crate: `mop-core` (simulate), `mop-runner`
//! (train, status, models), `mop-trainer` (trainer, predict), `mop-report`
//! (report); `demo` (feature `demo`) adds local PostgreSQL segments.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
#[cfg(feature = "demo")]
mod demo;
mod error;

fn main() -> ExitCode {
    // Before anything allocates: every subcommand trains models or moves
    // their states (the runner relays them, trainers decode and encode them).
    hopper_malloc::keep_freed_memory();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mop: {e}");
            ExitCode::FAILURE
        }
    }
}
