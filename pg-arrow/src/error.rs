//! The one error type of the pg-arrow crate.
//!
//! Each variant is a kind of failure a caller reports differently: a type
//! the mapping refuses is the user's to fix with a cast, bytes that do not
//! decode are a protocol bug or a misconfigured connection, an upload that
//! cannot be written and a bad identifier are the request's fault.
//! Messages are complete sentences for the person who has to act on them,
//! so a server can pass them on as they are.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong converting between PostgreSQL and Arrow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A result column has a type hopper does not stream.
    #[error(
        "column \"{column}\" has type {type_name}, which hopper cannot stream; \
         cast it in the query (e.g. \"{column}\"::text or ::float8)"
    )]
    UnsupportedType {
        /// Column name as the query returns it.
        column: String,
        /// The database's name for the type.
        type_name: String,
    },

    /// Malformed data from the database (a protocol or decoding bug, or a
    /// session whose output settings the parsers do not expect).
    #[error("decoding {context}: {message}")]
    Decode {
        /// Where decoding failed (column, type).
        context: String,
        /// What was wrong.
        message: String,
    },

    /// Arrow data that cannot be written into PostgreSQL as it is (a type
    /// with no counterpart, a column that does not match the table, a
    /// batch whose schema differs from the upload's).
    #[error("{0}")]
    Unwritable(String),

    /// A name that is not a valid SQL identifier.
    #[error("{0}")]
    Ident(String),

    /// An error from Arrow itself.
    #[cfg(feature = "codec")]
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),

    /// A decoder or encoder used against its own contract: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}
