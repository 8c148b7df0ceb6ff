//! The protocol crate's one error type.

/// What can go wrong in setting up the trainer protocol's authentication.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file or the `--no-auth`/key combination is not usable; the
    /// message says what to do.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
