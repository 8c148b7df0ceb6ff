//! The report's one error type.

/// What can go wrong in reading a run directory and writing its report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The run directory, or where the report goes, is not usable; the
    /// message says what to pass instead.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A chart could not be drawn.
    #[error("chart: {0}")]
    Chart(String),
}

impl From<mop_core::Error> for Error {
    fn from(e: mop_core::Error) -> Self {
        match e {
            mop_core::Error::Config(m) => Error::Config(m),
            other => Error::Config(other.to_string()),
        }
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
