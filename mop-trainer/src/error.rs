//! The training plane's one error type.
//!
//! Messages say what was wrong and, where it helps, what to do about it.

use std::io;

/// Everything that can go wrong in a trainer, in training, or in `mop predict`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the command line, a run directory or a key file.
    #[error("invalid configuration: {0}")]
    Config(String),
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
    /// A trainer failed, or its service could not start.
    #[error("trainer {trainer}: {message}")]
    Trainer {
        /// The trainer's index or address.
        trainer: String,
        /// What went wrong.
        message: String,
    },
    /// Input data does not fit the model (missing column, wrong type, label
    /// out of range, image of the wrong size, ...).
    #[error("invalid training data: {0}")]
    Data(String),
    /// A serialized model/optimizer state could not be decoded or does not
    /// match the configuration it is loaded into.
    #[error("invalid model state: {0}")]
    State(String),
    /// libtorch reported an error (shape mismatch, out of memory, ...).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// An Arrow kernel failed while featurizing a record batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Reading or writing a file or stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A state or configuration could not be encoded or decoded as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<flight_client::Error> for Error {
    fn from(e: flight_client::Error) -> Self {
        use flight_client::Error as F;
        match e {
            F::Config(m) => Error::Config(m),
            F::Flight(m) | F::BadPut(m) => Error::Flight(m),
            F::Unavailable(m) => Error::Unavailable(m),
            // Planning again (the runner does) pins a new snapshot.
            F::TicketRefused(m) | F::SnapshotLost(m) => Error::TicketRefused(m),
        }
    }
}

impl From<mop_core::Error> for Error {
    fn from(e: mop_core::Error) -> Self {
        use mop_core::Error as C;
        match e {
            C::Config(m) => Error::Config(m),
            C::Schedule(m) => Error::State(m),
            C::Io(e) => Error::Io(e),
            C::Json(e) => Error::Json(e),
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
