//! `mop`: the model hopper parallelism runner. All logic lives in the library;
//! this only parses the command line and reports errors.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mop_runner::cli::Cli::parse();
    match mop_runner::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mop: {e}");
            ExitCode::FAILURE
        }
    }
}
