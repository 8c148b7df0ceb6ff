//! The control plane's one error type.
//!
//! Messages say what was wrong and, where it helps, what to do about it.

use std::io;

/// Everything that can go wrong in running a search over trainers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the command line or a run configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The scheduler was asked to do something its state does not allow
    /// (completing a unit that is not running, resuming a corrupt checkpoint).
    #[error("scheduler: {0}")]
    Schedule(String),
    /// A flight-server could not be reached or refused a request.
    #[error("flight: {0}")]
    Flight(String),
    /// A flight-server or one of its segments stayed unreachable, or a
    /// stream broke mid-way; running the read again may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A flight-server refused a ticket (expired, issued under another key
    /// by a server since restarted, a single-read endpoint read again):
    /// planning the query again gives tickets that work.
    #[error("ticket refused: {0}")]
    TicketRefused(String),
    /// A unit's trainer could not get the model's starting state from the
    /// trainer that keeps it: the runner fetches it itself, or sends the
    /// model back to the last state it holds.
    #[error("model state: {0}")]
    StateSource(String),
    /// A trainer failed, died, or could not be reached.
    #[error("trainer {trainer}: {message}")]
    Trainer {
        /// The trainer's index or address.
        trainer: String,
        /// What went wrong.
        message: String,
    },
    /// Reading or writing result tables failed.
    #[error("database: {0}")]
    Database(String),
    /// A run was interrupted (Ctrl-C); its checkpoint is kept.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A partition's rows differed from its earlier reads and the run
    /// stopped (`[source] on_change = "stop"`); its checkpoint is kept.
    #[error("rows changed: {0}")]
    RowsChanged(String),
    /// The model-selection table could not be read as Arrow.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Reading or writing a file or stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A checkpoint or report could not be encoded or decoded as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Trainer `w` failed in the way `message` says.
    pub fn trainer(w: usize, message: impl std::fmt::Display) -> Self {
        Error::Trainer {
            trainer: w.to_string(),
            message: message.to_string(),
        }
    }
}

impl From<flight_client::Error> for Error {
    fn from(e: flight_client::Error) -> Self {
        use flight_client::Error as F;
        match e {
            F::Config(m) => Error::Config(m),
            F::Flight(m) | F::BadPut(m) => Error::Flight(m),
            F::Unavailable(m) => Error::Unavailable(m),
            F::TicketRefused(m) => Error::TicketRefused(m),
            F::SnapshotLost(m) => Error::Flight(format!("snapshot lost: {m}")),
        }
    }
}

impl From<mop_core::Error> for Error {
    fn from(e: mop_core::Error) -> Self {
        use mop_core::Error as C;
        match e {
            C::Config(m) => Error::Config(m),
            C::Schedule(m) => Error::Schedule(m),
            C::Io(e) => Error::Io(e),
            C::Json(e) => Error::Json(e),
        }
    }
}

impl From<mop_report::Error> for Error {
    fn from(e: mop_report::Error) -> Self {
        match e {
            mop_report::Error::Config(m) => Error::Config(m),
            other => Error::Io(io::Error::other(other.to_string())),
        }
    }
}

impl From<hopper_proto::Error> for Error {
    fn from(e: hopper_proto::Error) -> Self {
        let hopper_proto::Error::Config(m) = e;
        Error::Config(m)
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
