//! The one error type of devcluster.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while starting, attaching to or loading a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something to fix on this machine or in the options (no PostgreSQL
    /// binaries, a port or directory that cannot be used, a bad option).
    #[error("configuration: {0}")]
    Config(String),

    /// A segment did not start or stopped answering.
    #[error("segment unavailable: {0}")]
    Unavailable(String),

    /// A statement failed on a segment.
    #[error("{context}: {source}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A bug (a generator thread that panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A PostgreSQL error with what was being done when it happened.
    /// A refused or broken connection is [`Error::Unavailable`].
    pub fn from_pg(context: &str, source: tokio_postgres::Error) -> Self {
        if source.as_db_error().is_none() {
            let cause = std::error::Error::source(&source)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            return Self::Unavailable(format!("{context}: {source}{cause}"));
        }
        Self::Postgres {
            context: context.to_string(),
            source,
        }
    }
}
