//! The one error type of the flight-server crate, and its mapping to gRPC.
//!
//! Every failure a client can cause (bad SQL, an unknown table, a type hopper
//! cannot carry, a bad ticket) is an `InvalidArgument` whose message names
//! what was wrong and what to do; a segment that cannot be reached is
//! `Unavailable` so that clients know a retry may help; `Internal` is kept
//! for bugs.

use tonic::{Code, Status};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while planning or streaming a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query was rejected by the database or the file engine (syntax,
    /// unknown relation or column, missing privilege surfaced as text).
    #[error("query rejected: {0}")]
    InvalidQuery(String),

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

    /// A ticket that is malformed, forged, altered, expired or for another user.
    #[error("bad ticket: {0}")]
    BadTicket(String),

    /// The caller is not allowed to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// Credentials missing or wrong.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// Something the caller named does not exist (a flight, an endpoint).
    #[error("not found: {0}")]
    NotFound(String),

    /// A segment (database instance) or file could not be reached.
    #[error("segment unavailable: {0}")]
    Unavailable(String),

    /// Malformed data from the database (a protocol or decoding bug).
    #[error("decoding {context}: {message}")]
    Decode {
        /// Where decoding failed (column, type).
        context: String,
        /// What was wrong.
        message: String,
    },

    /// Bad configuration given on the command line or in code.
    #[error("configuration: {0}")]
    Config(String),

    /// An error from Arrow itself.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),

    /// Anything else: a bug.
    #[error("internal error: {0}")]
    Internal(String),

    /// A request that is malformed (a bad `DoPut` descriptor, an upload
    /// whose columns do not fit the table).
    #[error("bad request: {0}")]
    BadRequest(String),

    /// The source does not support the operation (e.g. `DoPut` into files).
    #[error("not supported: {0}")]
    Unimplemented(String),

    /// A per-caller or per-server bound was reached (failed logins from an
    /// address, the login pool, a store's share of one user): retry later.
    #[error("too many: {0}")]
    Exhausted(String),

    /// A pinned snapshot this server does not hold (released, expired, or
    /// the server restarted); `NotFound`, marked so that clients pin again.
    #[error("snapshot lost: {0}")]
    SnapshotLost(String),
}

impl From<pg_arrow::Error> for Error {
    /// The codec's failures keep their kind: a type it refuses, bytes it
    /// cannot decode, an upload or a name it cannot write.
    fn from(e: pg_arrow::Error) -> Self {
        use pg_arrow::Error as Codec;
        match e {
            Codec::UnsupportedType { column, type_name } => {
                Error::UnsupportedType { column, type_name }
            }
            Codec::Decode { context, message } => Error::Decode { context, message },
            Codec::Unwritable(m) | Codec::Ident(m) => Error::BadRequest(m),
            Codec::Arrow(e) => Error::Arrow(e),
            Codec::Internal(m) => Error::Internal(m),
        }
    }
}

/// What an `Unavailable` from a segment tells the client to do.
const RETRY_HINT: &str =
    "the segment is down or restarting: retry once it is back (mop's trainers retry by themselves)";

impl Error {
    /// Classifies a `tokio_postgres` error: SQLSTATE classes that mean "the
    /// query is wrong" become [`Error::InvalidQuery`], privilege errors
    /// [`Error::PermissionDenied`], connection failures [`Error::Unavailable`].
    pub fn from_pg(context: &str, err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let hba = crate::source::tls_refusal::hba_hint(db);
            return Self::from_db(
                context,
                db.code(),
                db.message(),
                db.detail(),
                db.hint(),
                hba,
            );
        }
        if let Some(config) = Self::configuration(context, &err) {
            return config;
        }
        Error::Unavailable(format!("{context}: {err}; {RETRY_HINT}"))
    }

    /// Classifies an error the database reported (its SQLSTATE `code`,
    /// message, detail and hint) as [`from_pg`](Self::from_pg) does; also
    /// for sessions hopper speaks the protocol on itself. `hba` is what to
    /// change when pg_hba.conf refused the connection for its use of TLS.
    pub fn from_db(
        context: &str,
        code: &tokio_postgres::error::SqlState,
        message: &str,
        detail: Option<&str>,
        hint: Option<&str>,
        hba: Option<&str>,
    ) -> Self {
        use tokio_postgres::error::SqlState;
        let msg = match (detail, hint) {
            (Some(d), Some(h)) => format!("{context}: {message} (detail: {d}; hint: {h})"),
            (Some(d), None) => format!("{context}: {message} (detail: {d})"),
            (None, Some(h)) => format!("{context}: {message} (hint: {h})"),
            (None, None) => format!("{context}: {message}"),
        };
        if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            return Error::PermissionDenied(msg);
        }
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return Error::Unauthenticated(format!("{msg}{}", hba.unwrap_or_default()));
        }
        match &code.code()[..2] {
            // connection exception, operator intervention (shutdown, cancel), insufficient resources
            "08" | "57" | "53" => Error::Unavailable(format!("{msg}; {RETRY_HINT}")),
            _ => Error::InvalidQuery(msg),
        }
    }

    /// The failure of a connection hopper reads at the protocol level
    /// (its socket, or the bytes on it), as an outage to retry.
    pub fn connection(context: &str, err: impl std::fmt::Display) -> Self {
        Error::Unavailable(format!("{context}: {err}; {RETRY_HINT}"))
    }

    /// A connection failure that no retry cures — a connection string
    /// lacking what the login needs, a host name that does not resolve
    /// here — as the configuration error it is, naming the flag to fix.
    /// `None` for anything else (an outage).
    pub fn configuration(context: &str, err: &tokio_postgres::Error) -> Option<Self> {
        // A refused certificate, or TLS asked of a server without it.
        if let Some(why) = crate::source::tls_refusal::refusal(err) {
            return Some(Error::Config(format!("{context}: {why}")));
        }
        let mut text = err.to_string();
        if let Some(cause) = std::error::Error::source(err) {
            if !text.contains(&cause.to_string()) {
                text = format!("{text}: {cause}");
            }
        }
        if text.starts_with("invalid configuration") {
            let hint = if text.contains("password missing") || text.contains("user missing") {
                "; the server connects with this URL's login only under --auth none, which \
                 then needs the user and password in the URL — or serve with --auth database \
                 (the default), where callers log in as themselves and URLs carry no password"
            } else {
                ""
            };
            return Some(Error::Config(format!("{context}: {text}{hint}")));
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
        while let Some(c) = cause {
            if c.to_string().contains("failed to lookup address") {
                return Some(Error::Config(format!(
                    "{context}: {text}: {c}; the host name does not resolve where the \
                     server runs — fix the URL, or map the name with --host-map NAME=ADDRESS"
                )));
            }
            cause = c.source();
        }
        None
    }
}

#[cfg(feature = "files")]
impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        // Planner errors arrive wrapped (context, diagnostics): classify the root.
        match e.find_root() {
            D::SQL(..) | D::Plan(..) | D::SchemaError(..) | D::NotImplemented(..) => {
                Error::InvalidQuery(e.to_string())
            }
            D::IoError(..) | D::ObjectStore(..) => Error::Unavailable(e.to_string()),
            _ => Error::Internal(e.to_string()),
        }
    }
}

impl From<flight_client::Error> for Error {
    fn from(e: flight_client::Error) -> Self {
        match e {
            flight_client::Error::BadPut(m) => Error::BadRequest(m),
            other => Error::Config(other.to_string()),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidQuery(_) | Error::UnsupportedType { .. } | Error::BadTicket(_) => {
                Code::InvalidArgument
            }
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::NotFound(_) | Error::SnapshotLost(_) => Code::NotFound,
            Error::BadRequest(_) => Code::InvalidArgument,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Exhausted(_) => Code::ResourceExhausted,
            Error::Config(_) => Code::FailedPrecondition,
            Error::Decode { .. } | Error::Arrow(_) | Error::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if matches!(e, Error::BadTicket(_)) {
            // Machine-readable: a fresh GetFlightInfo is the cure.
            flight_client::refused::mark_ticket_refused(&mut status);
        }
        if matches!(e, Error::SnapshotLost(_)) {
            flight_client::snapshot::mark_snapshot_lost(&mut status);
        }
        status
    }
}
