//! The core's one error type.
//!
//! Messages say what was wrong and, where it helps, what to do about it;
//! the crates above map each variant into their own error of the same name.

use std::io;

/// What can go wrong in configuring, scheduling and recording a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the command line or a grid/config file.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The scheduler was asked to do something its state does not allow
    /// (completing a unit that is not running, resuming a corrupt checkpoint).
    #[error("scheduler: {0}")]
    Schedule(String),
    /// Reading or writing a file failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A checkpoint or results file could not be encoded or decoded as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
