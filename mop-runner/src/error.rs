//! The crate's one error type.
//!
//! Every fallible function in `mop_runner` returns [`Result`]; the binary turns
//! an [`Error`] into a message and a nonzero exit code. Messages say what was
//! wrong and, where it helps, what to do about it.

use std::io;

/// Everything that can go wrong in the MOP runner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the command line or a grid/config file.
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
    /// A checkpoint or report could not be encoded or decoded as JSON.
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
            F::TicketRefused(m) => Error::TicketRefused(m),
        }
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
