//! One PostgreSQL instance playing a segment: its connection settings,
//! the sessions hopper opens on it (read-only, named, capped by
//! `--max-connections`), and how it is named in messages without its
//! password.

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::db_tls::DbTls;
use crate::source::limit::ConnectionLimit;
use crate::source::wire::Session;

/// How long a connection's slot stays taken after its socket closed, for
/// the backend to exit (see [`super::limit`]).
pub(super) const BACKEND_EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// One PostgreSQL instance playing a segment.
#[derive(Clone)]
pub(super) struct Segment {
    pub(super) config: Config,
    /// How connections to it use TLS (the URL's `sslmode`, `sslrootcert`).
    pub(super) tls: DbTls,
    /// The segment's address without the password, for messages and logs.
    pub(super) display: String,
    /// Its position in the server's segment list, for messages.
    pub(super) index: usize,
    /// The connections this server may hold on it at once.
    pub(super) limit: ConnectionLimit,
}

impl Segment {
    /// Connects as `caller`'s user when there is one (the database checks
    /// the password and its GRANTs decide what the session may read), else
    /// with the segment's configured connection string; within
    /// `--max-connections`.
    pub(super) async fn connect(&self, caller: &Caller) -> Result<Client> {
        self.open(caller, true).await
    }

    /// A Handshake's login as `caller`: apart from the data connections'
    /// cap, so that logins never wait behind reads (the login pool of
    /// [`crate::login`] bounds them instead).
    pub(super) async fn login(&self, caller: &Caller) -> Result<Client> {
        self.open(caller, false).await
    }

    /// The connection settings `caller` logs in with: their own login
    /// where they proved one, else the server's.
    fn config_for(&self, caller: &Caller) -> Result<std::borrow::Cow<'_, Config>> {
        Ok(match caller.login_here()? {
            Some(login) => {
                let mut config = self.config.clone();
                config.user(&login.user).password(login.password.as_bytes());
                std::borrow::Cow::Owned(config)
            }
            None => std::borrow::Cow::Borrowed(&self.config),
        })
    }

    pub(super) async fn open(&self, caller: &Caller, capped: bool) -> Result<Client> {
        let config = self.config_for(caller)?;
        // Over the cap, wait in line; the permit then lives in the task
        // that drives the connection, so it is returned when the socket closes.
        let permit = match capped {
            true => Some(self.limit.acquire(&self.display).await?),
            false => None,
        };
        let (client, connection) = self.tls.connect(&config).await.map_err(|e| {
            let context = format!("connecting to {}", self.display);
            match std::error::Error::source(&e) {
                // I/O failures: say why ("Connection refused"), which the
                // error's own message leaves out.
                _ if Error::configuration(&context, &e).is_some() => Error::from_pg(&context, e),
                Some(cause) if e.as_db_error().is_none() => Error::Unavailable(format!(
                    "segment {} at {} is unreachable: {e}: {cause}; \
                     the request can be retried once the segment is back",
                    self.index, self.display
                )),
                _ => Error::from_pg(&context, e),
            }
        })?;
        let name = self.display.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(segment = %name, error = %e, "connection closed with an error");
            }
            // The backend exits a moment after our side closed; a new
            // connection in that moment would briefly exceed the cap.
            tokio::time::sleep(BACKEND_EXIT_GRACE).await;
            drop(permit);
        });
        Ok(client)
    }

    /// A session read at the protocol level
    /// ([`wire`](crate::source::wire)), as `caller` as
    /// [`connect`](Self::connect) logs in, within `--max-connections`: the
    /// returned permit is the session's place, to drop a moment after the
    /// session ([`BACKEND_EXIT_GRACE`]).
    pub(super) async fn session(
        &self,
        caller: &Caller,
    ) -> Result<(Session, tokio::sync::OwnedSemaphorePermit)> {
        let config = self.config_for(caller)?;
        let permit = self.limit.acquire(&self.display).await?;
        let peer = format!("segment {} ({})", self.index, self.display);
        let session = Session::connect(&config, &self.tls, &peer)
            .await
            .map_err(|e| match e {
                // I/O failures: the segment is down, and says which.
                Error::Unavailable(why) => Error::Unavailable(format!(
                    "segment {} at {} is unreachable: {why}",
                    self.index, self.display
                )),
                other => other,
            })?;
        Ok((session, permit))
    }

    /// Whether a login with `config` succeeds (the connection is closed at
    /// once); any failure, including a server asking for a password the
    /// config lacks, is `false`.
    pub(super) async fn probe(&self, config: &Config) -> bool {
        self.tls.connect(config).await.is_ok()
    }
}

/// `postgresql://user@host:port/db` — enough to find the segment, never
/// the password.
pub(super) fn redacted(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgresql://{user}{hosts}/{db}")
}
