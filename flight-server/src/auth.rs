//! Authentication: Basic credentials at the Flight `Handshake`, checked by
//! the database itself, then a Bearer token on every other call.
//!
//! ```text
//!  client ── Handshake, authorization: Basic base64(user:pass) ──► server
//!                                   server ── login as user ──► segment (the database checks the password)
//!         ◄── authorization: Bearer <token> ───────────────────── (also the handshake payload)
//!  client ── GetFlightInfo / DoGet …, authorization: Bearer <token> ──► runs as that user
//! ```
//!
//! This is what pyarrow's `client.authenticate_basic_token(user, password)`
//! does; it returns the `(b"authorization", b"Bearer …")` header pair to pass
//! in `FlightCallOptions(headers=[pair])`.
//!
//! Queries run with the user's rights: the PostgreSQL source connects to each
//! segment as the user (and the Greenplum source opens the coordinator
//! session as the user), so the database's GRANTs decide what can be read.
//! The files source has no database to ask, so it cannot be served with
//! `--auth database` (there would be nothing to check a password against).
//!
//! # Where the password lives
//! Every query opens new database connections as the user, so the server
//! needs the password for as long as the token lives. The token itself
//! carries only a random id, the user and the expiry, HMAC-signed with the
//! server key; the password stays in this process's memory, in a
//! [`TokenStore`] bounded in size (the oldest token is dropped when it is
//! full) and swept of expired entries. The trade-offs: a token is valid only
//! on the server that issued it and only until that server restarts (the
//! client handshakes again; `Unauthenticated` says so), and a leaked token
//! lets its holder read as the user until it expires (`--token-ttl`) — but
//! no password is ever sent back to a client, written to disk, or put in a
//! ticket, and tickets are bound to the user, so another user's ticket reads
//! nothing.

use std::fmt;
use std::sync::Arc;

/// A database login: the user and the password the database checks.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The database role.
    pub user: String,
    /// The role's password (never logged; `Debug` redacts it).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The identity a request runs with.
///
/// [`Caller::server`] (no authentication) runs queries as the user of the
/// server's own connection strings; [`Caller::login`] runs them as the
/// authenticated database user, so the database's GRANTs decide what it
/// may read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    login: Option<Arc<Credentials>>,
}

impl Caller {
    /// No authenticated user: the server's configured connections are used.
    pub fn server() -> Self {
        Self::default()
    }

    /// An authenticated database user.
    pub fn login(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            login: Some(Arc::new(Credentials {
                user: user.into(),
                password: password.into(),
            })),
        }
    }

    /// The authenticated user's name, if any (tickets are bound to it).
    pub fn user(&self) -> Option<&str> {
        self.login.as_deref().map(|c| c.user.as_str())
    }

    /// The authenticated user's credentials, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.login.as_deref()
    }
}
