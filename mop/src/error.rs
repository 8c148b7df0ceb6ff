//! What `mop` reports when a command fails: each library's own error,
//! passed through with its message, and the command line's own mistakes.

use std::io;

/// Everything a `mop` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input on the command line.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The run configuration, scheduler or a run directory's files.
    #[error(transparent)]
    Core(#[from] mop_core::Error),
    /// The control plane: planning, trainers, result tables.
    #[error(transparent)]
    Runner(#[from] mop_runner::Error),
    /// The training plane: a trainer or `mop predict`.
    #[error(transparent)]
    Trainer(#[from] mop_trainer::Error),
    /// The report.
    #[error(transparent)]
    Report(#[from] mop_report::Error),
    /// The trainer protocol's key handling.
    #[error(transparent)]
    Proto(#[from] hopper_proto::Error),
    /// Starting the runtime, reading standard input.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
