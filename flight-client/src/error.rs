//! The one error type of flight-client.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong on the client side of a Flight call, or with the
/// pieces both ends share.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting to fix: a TLS file or flag combination, a login the server
    /// refused, a password variable that is missing.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A flight-server could not be reached or refused a request.
    #[error("flight: {0}")]
    Flight(String),

    /// A flight-server or one of its segments stayed unreachable within the
    /// retry budget, or a stream broke mid-way; reading again may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// A flight-server refused a ticket (expired, issued under another key,
    /// a single-read endpoint read again), or the login token a read was
    /// handed: planning again (and logging in again) is the cure.
    #[error("ticket refused: {0}")]
    TicketRefused(String),

    /// A pinned snapshot is no longer held (released, expired, its server
    /// restarted): pin a new one; the rows may have changed since.
    #[error("snapshot lost: {0}")]
    SnapshotLost(String),

    /// A `DoPut` descriptor that names no usable target.
    #[error("bad DoPut descriptor: {0}")]
    BadPut(String),
}
