//! A database session spoken at the protocol level, for reads where the
//! per-row cost is the product: a Greenplum retrieve session, and the
//! `COPY … TO STDOUT` of a PostgreSQL segment (`source::postgres::read`).
//!
//! tokio-postgres turns every result row into its own message object
//! (a `Bytes` handle, a vector of field ranges, a row struct) and hands it
//! through a channel from its connection task; at hundreds of thousands of
//! rows a second that bookkeeping costs more than decoding the values.
//! Here the socket is read into one large buffer (reads of up to
//! [`READ_SIZE`]), the messages are framed in place, and every `DataRow`
//! body (or `CopyData` payload) is handed as a slice of that buffer to the
//! caller's decoder, which appends its fields straight into Arrow buffers.
//! Nothing is allocated per row, and backpressure is the socket's: a
//! session not read stops the segment from sending.
//!
//! Everything else goes through `postgres-protocol` (the messages
//! tokio-postgres itself builds on): the startup message, authentication
//! (cleartext — what a retrieve session's token is —, MD5, SCRAM-SHA-256),
//! error responses and row descriptions. TLS follows the URL's `sslmode`
//! exactly as [`DbTls::connect`] does for tokio-postgres, with the same
//! rustls connector: `SSLRequest` first unless `disable`/`allow`, plaintext
//! again where `prefer` meets a server without TLS or a failed handshake,
//! TLS again where `allow` meets a pg_hba that refuses plaintext.

use std::ops::Range;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{self, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Config;

use crate::error::{Error, Result};
use crate::source::db_tls::{DbTls, SslMode};
use crate::source::tls_refusal::hba_hint_for;

/// How much a read asks the socket for at least: many rows per system
/// call (a `DataRow` of the Criteo-like table is about 300 bytes).
pub(crate) const READ_SIZE: usize = 256 * 1024;

/// The largest message accepted: PostgreSQL's own limit on a field is
/// 1 GiB; anything longer is a corrupt stream, not a row.
const MAX_MESSAGE: usize = (1 << 30) + 1024;

/// The connection: a TCP socket, or TLS over one.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One result column as a `RowDescription` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnDesc {
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    pub(crate) type_modifier: i32,
}

/// A logged-in session, idle between queries.
pub(crate) struct Session {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed; messages are framed in place.
    buf: BytesMut,
    /// Length of the message at the front of `buf` that is still
    /// incomplete, so that the next read makes room for all of it.
    need: usize,
    out: BytesMut,
    /// Where the session goes, for error messages ("segment endpoint h:p").
    context: String,
    /// Where a cancel request for this session goes, once the server sent
    /// its `BackendKeyData`.
    cancel: Option<Canceller>,
}

/// Where the server listens: what a cancel request dials too.
#[derive(Clone, Debug)]
enum Peer {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
}

impl Peer {
    async fn dial(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Peer::Tcp(host, port) => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                let _ = tcp.set_nodelay(true);
                Box::new(tcp)
            }
            Peer::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        })
    }
}

/// Asks the server to cancel whatever a session is running: a
/// `CancelRequest` with its backend's key, on a connection of its own
/// (the server reads it before any TLS or login, as libpq sends it).
#[derive(Clone, Debug)]
pub(crate) struct Canceller {
    peer: Peer,
    process_id: i32,
    secret_key: i32,
}

impl Canceller {
    /// Sends the request; the server closes the connection after reading it.
    pub(crate) async fn cancel(&self) -> std::io::Result<()> {
        let mut io = self.peer.dial().await?;
        let mut out = BytesMut::new();
        frontend::cancel_request(self.process_id, self.secret_key, &mut out);
        io.write_all(&out).await?;
        io.flush().await?;
        let mut rest = Vec::new();
        let _ = io.read_to_end(&mut rest).await;
        Ok(())
    }
}

/// Why one connection attempt failed: what decides whether to try again
/// the other way (TLS or plaintext), as libpq does.
enum Attempt {
    /// The server answered `N` to an `SSLRequest` that `require` sent.
    NoTls,
    /// The TLS handshake itself failed.
    Handshake(std::io::Error),
    /// The database refused the login (pg_hba, password, …).
    Refused(ServerError),
    /// Anything else, already classified.
    Other(Error),
}

/// An `ErrorResponse`'s fields.
#[derive(Debug, Default)]
pub(crate) struct ServerError {
    code: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl ServerError {
    fn parse(body: &backend::ErrorResponseBody) -> Self {
        let mut e = ServerError::default();
        let mut fields = body.fields();
        while let Ok(Some(f)) = fields.next() {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        e
    }

    /// The SQLSTATE.
    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    fn refused_by_hba(&self) -> bool {
        self.code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION.code()
    }

    pub(crate) fn into_error(self, context: &str) -> Error {
        Error::from_db(
            context,
            &SqlState::from_code(&self.code),
            &self.message,
            self.detail.as_deref(),
            self.hint.as_deref(),
            hba_hint_for(&self.message),
        )
    }
}

/// The wire mode of one attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wire {
    Plain,
    /// `SSLRequest`; plaintext if the server has no TLS.
    Prefer,
    /// `SSLRequest`; TLS or nothing.
    Require,
}

impl Session {
    /// Connects with `config` (its first host and port, user, password,
    /// database, options, application name and connect timeout) and logs
    /// in; TLS as `tls` says. `peer` names the server in errors
    /// ("connecting to {peer}: …", then "{peer}: …").
    pub(crate) async fn connect(config: &Config, tls: &DbTls, peer: &str) -> Result<Self> {
        let context = &format!("connecting to {peer}");
        let first = match tls.mode() {
            SslMode::Disable | SslMode::Allow => Wire::Plain,
            SslMode::Prefer => Wire::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
        };
        let outcome = Self::attempt(config, tls, first, context).await;
        let retry = match (&outcome, tls.mode()) {
            (Err(Attempt::Refused(e)), SslMode::Allow) if e.refused_by_hba() => Some(Wire::Require),
            (Err(Attempt::Refused(e)), SslMode::Prefer) if e.refused_by_hba() => Some(Wire::Plain),
            (Err(Attempt::Handshake(_)), SslMode::Prefer) => Some(Wire::Plain),
            _ => None,
        };
        let outcome = match retry {
            Some(wire) => Self::attempt(config, tls, wire, context).await,
            None => outcome,
        };
        let mut session = outcome.map_err(|a| match a {
            Attempt::NoTls => Error::Config(format!(
                "{context}: the URL's sslmode asks for TLS, which the database does not offer \
                 (ssl = off): turn ssl on there, or use sslmode=prefer or disable"
            )),
            Attempt::Handshake(e) => match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls) => Error::Config(format!(
                    "{context}: TLS to the database failed: {tls}; check the URL's sslrootcert \
                     and the database's certificate"
                )),
                None => Error::connection(context, format!("TLS handshake: {e}")),
            },
            Attempt::Refused(e) => e.into_error(context),
            Attempt::Other(e) => e,
        })?;
        session.context = peer.to_owned();
        Ok(session)
    }

    async fn attempt(
        config: &Config,
        tls: &DbTls,
        wire: Wire,
        context: &str,
    ) -> std::result::Result<Self, Attempt> {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let peer = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => Peer::Tcp(h.clone(), port),
            Some(Host::Unix(dir)) => Peer::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            None => {
                return Err(Attempt::Other(Error::Config(format!(
                    "{context}: the connection string names no host"
                ))))
            }
        };
        let dial = peer.dial();
        let io = match config.get_connect_timeout() {
            Some(t) => tokio::time::timeout(*t, dial).await.unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {}", fmt_secs(*t)),
                ))
            }),
            None => dial.await,
        }
        .map_err(|e| Attempt::Other(Error::connection(context, e)))?;
        let io: Box<dyn Io> = match (&peer, wire) {
            // As libpq: no TLS over a unix socket.
            (Peer::Unix(_), _) | (_, Wire::Plain) => io,
            (Peer::Tcp(host, _), Wire::Prefer | Wire::Require) => {
                let mut tcp = io;
                let mut req = BytesMut::new();
                frontend::ssl_request(&mut req);
                let io_err = |e| Attempt::Other(Error::connection(context, e));
                tcp.write_all(&req).await.map_err(io_err)?;
                let answer = tcp.read_u8().await.map_err(io_err)?;
                match (answer, wire) {
                    (b'S', _) => {
                        let mut make = tls.rustls().clone();
                        let connect =
                            MakeTlsConnect::<Box<dyn Io>>::make_tls_connect(&mut make, host)
                                .map_err(|e| match e {})?;
                        Box::new(connect.connect(tcp).await.map_err(Attempt::Handshake)?)
                    }
                    (b'N', Wire::Prefer) => tcp,
                    (b'N', _) => return Err(Attempt::NoTls),
                    (other, _) => {
                        return Err(Attempt::Other(protocol(
                            context,
                            format!("answer {:?} to an SSLRequest", other as char),
                        )))
                    }
                }
            }
        };
        let mut session = Session {
            io,
            buf: BytesMut::with_capacity(READ_SIZE),
            need: 0,
            out: BytesMut::new(),
            context: context.to_owned(),
            cancel: None,
        };
        session.startup(config, peer).await?;
        Ok(session)
    }

    /// The startup message, authentication, and the messages up to the
    /// first `ReadyForQuery`.
    async fn startup(&mut self, config: &Config, peer: Peer) -> std::result::Result<(), Attempt> {
        let user = config.get_user().unwrap_or_default();
        let mut params: Vec<(&str, &str)> = vec![("user", user), ("client_encoding", "UTF8")];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(o) = config.get_options() {
            params.push(("options", o));
        }
        if let Some(a) = config.get_application_name() {
            params.push(("application_name", a));
        }
        frontend::startup_message(params, &mut self.out)
            .map_err(|e| Attempt::Other(Error::Config(format!("{}: {e}", self.context))))?;
        self.flush().await.map_err(Attempt::Other)?;
        let password = config.get_password().unwrap_or_default();
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let message = self.message().await.map_err(Attempt::Other)?;
            let bad = |what: &str| Attempt::Other(protocol(&self.context, what.to_owned()));
            match message {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password, &mut self.out)
                        .map_err(|e| bad(&e.to_string()))?;
                    self.flush().await.map_err(Attempt::Other)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user.as_bytes(), password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out)
                        .map_err(|e| bad(&e.to_string()))?;
                    self.flush().await.map_err(Attempt::Other)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut offered = Vec::new();
                    let mut mechanisms = body.mechanisms();
                    while let Some(m) = mechanisms.next().map_err(|e| bad(&e.to_string()))? {
                        offered.push(m.to_owned());
                    }
                    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(Attempt::Other(Error::Config(format!(
                            "{}: the database offers SASL mechanisms {offered:?}, none of \
                             which hopper speaks (SCRAM-SHA-256)",
                            self.context
                        ))));
                    }
                    // No channel binding: the TLS connector's certificate
                    // hash is not reachable from here, and "n" is what a
                    // client without it says (the server accepts it).
                    let s = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.out,
                    )
                    .map_err(|e| bad(&e.to_string()))?;
                    scram = Some(s);
                    self.flush().await.map_err(Attempt::Other)?;
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| bad("SASL continue before SASL start"))?;
                    s.update(body.data()).map_err(|e| bad(&e.to_string()))?;
                    frontend::sasl_response(s.message(), &mut self.out)
                        .map_err(|e| bad(&e.to_string()))?;
                    self.flush().await.map_err(Attempt::Other)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| bad("SASL final before SASL start"))?;
                    s.finish(body.data()).map_err(|e| {
                        Attempt::Other(Error::Unauthenticated(format!(
                            "{}: the database's SCRAM proof does not check out: {e}",
                            self.context
                        )))
                    })?;
                }
                Message::ErrorResponse(body) => {
                    return Err(Attempt::Refused(ServerError::parse(&body)))
                }
                Message::BackendKeyData(key) => {
                    self.cancel = Some(Canceller {
                        peer: peer.clone(),
                        process_id: key.process_id(),
                        secret_key: key.secret_key(),
                    })
                }
                Message::ParameterStatus(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::AuthenticationGss
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(Attempt::Other(Error::Config(format!(
                        "{}: the database asks for GSS/SSPI/Kerberos authentication, which \
                         hopper does not speak: use password or SCRAM-SHA-256 in pg_hba.conf",
                        self.context
                    ))))
                }
                other => {
                    return Err(bad(&format!(
                        "unexpected message {} while logging in",
                        name(&other)
                    )))
                }
            }
        }
    }

    /// What cancels this session's running statement, if the server sent
    /// its key.
    pub(crate) fn canceller(&self) -> Option<Canceller> {
        self.cancel.clone()
    }

    /// Runs `sql` (one or more statements) with the simple query protocol,
    /// dropping any rows: `Ok(Err(…))` is the database refusing it, with
    /// its SQLSTATE for the caller to tell cases apart.
    pub(crate) async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<std::result::Result<(), ServerError>> {
        frontend::query(sql, &mut self.out)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.context)))?;
        self.flush().await?;
        let mut failed = None;
        loop {
            match self.message().await? {
                Message::ErrorResponse(body) => failed = Some(ServerError::parse(&body)),
                Message::ReadyForQuery(_) => break,
                Message::CopyInResponse(_) | Message::CopyOutResponse(_) => {
                    return Err(protocol(
                        &self.context,
                        "a COPY started by a statement that was to run alone".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(failed.map_or(Ok(()), Err))
    }

    /// Starts `COPY … TO STDOUT` with the simple query protocol and waits
    /// for the server to accept it (`CopyOutResponse`), so that a refused
    /// statement fails here; its data comes from
    /// [`read_data`](Self::read_data) with `copy`.
    pub(crate) async fn copy_out(&mut self, sql: &str) -> Result<()> {
        frontend::query(sql, &mut self.out)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.context)))?;
        self.flush().await?;
        loop {
            match self.message().await? {
                Message::CopyOutResponse(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(ServerError::parse(&body).into_error(&self.context))
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                other => {
                    return Err(protocol(
                        &self.context,
                        format!("unexpected message {} starting a COPY", name(&other)),
                    ))
                }
            }
        }
    }

    /// Prepares `sql` as the unnamed statement and returns its result
    /// columns (Parse, Describe, Sync).
    pub(crate) async fn describe(&mut self, sql: &str) -> Result<Vec<ColumnDesc>> {
        let ctx = self.context.clone();
        frontend::parse("", sql, std::iter::empty(), &mut self.out)
            .map_err(|e| Error::Internal(format!("{ctx}: {e}")))?;
        frontend::describe(b'S', "", &mut self.out)
            .map_err(|e| Error::Internal(format!("{ctx}: {e}")))?;
        frontend::sync(&mut self.out);
        self.flush().await?;
        let mut columns = Vec::new();
        let mut failed = None;
        loop {
            match self.message().await? {
                Message::ParseComplete
                | Message::ParameterDescription(_)
                | Message::NoData
                | Message::NoticeResponse(_)
                | Message::ParameterStatus(_) => {}
                Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    while let Some(f) = fields
                        .next()
                        .map_err(|e| protocol(&ctx, format!("RowDescription: {e}")))?
                    {
                        columns.push(ColumnDesc {
                            name: f.name().to_owned(),
                            type_oid: f.type_oid(),
                            type_modifier: f.type_modifier(),
                        });
                    }
                }
                Message::ErrorResponse(body) => failed = Some(ServerError::parse(&body)),
                Message::ReadyForQuery(_) => break,
                other => {
                    return Err(protocol(
                        &ctx,
                        format!("unexpected message {} describing a statement", name(&other)),
                    ))
                }
            }
        }
        match failed {
            Some(e) => Err(e.into_error(&ctx)),
            None => Ok(columns),
        }
    }

    /// Runs the statement [`describe`](Self::describe) prepared, every
    /// result column in binary (`binary`) or text format (Bind, Execute,
    /// Sync); its rows come from [`read_rows`](Self::read_rows).
    pub(crate) async fn execute(&mut self, binary: bool) -> Result<()> {
        let ctx = self.context.clone();
        let format: i16 = if binary { 1 } else { 0 };
        frontend::bind(
            "",
            "",
            std::iter::empty::<i16>(),
            std::iter::empty::<()>(),
            |(), _| Ok(postgres_protocol::IsNull::No),
            [format],
            &mut self.out,
        )
        .map_err(|_| Error::Internal(format!("{ctx}: binding a statement without parameters")))?;
        frontend::execute("", 0, &mut self.out)
            .map_err(|e| Error::Internal(format!("{ctx}: {e}")))?;
        frontend::sync(&mut self.out);
        self.flush().await
    }

    /// Hands every `DataRow` body already buffered to `on_row`, in order,
    /// and consumes the other messages of the statement's response.
    /// `Ok(true)` once the response is over (`ReadyForQuery`); `Ok(false)`
    /// when more must be read first ([`fill`](Self::fill)).
    pub(crate) fn read_rows(
        &mut self,
        on_row: impl FnMut(&[u8]) -> pg_arrow::Result<()>,
    ) -> Result<bool> {
        self.read_data(false, on_row)
    }

    /// [`read_rows`](Self::read_rows), or with `copy` the `CopyData`
    /// payloads of a [`copy_out`](Self::copy_out) (a row may span payloads:
    /// the protocol does not promise one row per message, so the COPY
    /// decoders carry partial rows over).
    pub(crate) fn read_data(
        &mut self,
        copy: bool,
        mut on_data: impl FnMut(&[u8]) -> pg_arrow::Result<()>,
    ) -> Result<bool> {
        let data_tag = if copy {
            backend::COPY_DATA_TAG
        } else {
            backend::DATA_ROW_TAG
        };
        let mut pos = 0;
        let mut done = false;
        let outcome = loop {
            let Some((tag, body)) =
                frame(&self.buf[pos..], &mut self.need).map_err(|m| protocol(&self.context, m))?
            else {
                break Ok(());
            };
            let body = pos + body.start..pos + body.end;
            let next = body.end;
            match tag {
                t if t == data_tag => {
                    if let Err(e) = on_data(&self.buf[body]) {
                        break Err(Error::from(e));
                    }
                }
                backend::COPY_DONE_TAG if copy => {}
                backend::READY_FOR_QUERY_TAG => {
                    pos = next;
                    done = true;
                    break Ok(());
                }
                backend::ERROR_RESPONSE_TAG => {
                    let e = match Message::parse(&mut BytesMut::from(&self.buf[pos..next])) {
                        Ok(Some(Message::ErrorResponse(b))) => ServerError::parse(&b),
                        _ => ServerError {
                            message: "an unreadable error response".into(),
                            ..ServerError::default()
                        },
                    };
                    break Err(e.into_error(&self.context));
                }
                backend::BIND_COMPLETE_TAG
                | backend::COMMAND_COMPLETE_TAG
                | backend::PORTAL_SUSPENDED_TAG
                | backend::EMPTY_QUERY_RESPONSE_TAG
                | backend::NOTICE_RESPONSE_TAG
                | backend::PARAMETER_STATUS_TAG => {}
                other => {
                    break Err(protocol(
                        &self.context,
                        format!(
                            "unexpected message {:?} among the rows of a statement",
                            other as char
                        ),
                    ))
                }
            }
            pos = next;
        };
        self.buf.advance(pos);
        outcome.map(|()| done)
    }

    /// Reads what the socket has (at least one byte, up to the buffer's
    /// free room, which is at least [`READ_SIZE`] or the incomplete
    /// message's length). The peer closing the connection is an error: a
    /// response always ends with `ReadyForQuery`.
    pub(crate) async fn fill(&mut self) -> Result<()> {
        let want = READ_SIZE.max(self.need);
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) => Err(Error::connection(
                &self.context,
                "the database closed the connection mid-response",
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(Error::connection(&self.context, e)),
        }
    }

    /// The next whole message, parsed (for the few messages off the hot path).
    async fn message(&mut self) -> Result<Message> {
        loop {
            if let Some((_, body)) =
                frame(&self.buf, &mut self.need).map_err(|m| protocol(&self.context, m))?
            {
                let mut whole = self.buf.split_to(body.end);
                return match Message::parse(&mut whole) {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => Err(protocol(&self.context, "a message cut short".into())),
                    Err(e) => Err(protocol(&self.context, e.to_string())),
                };
            }
            self.fill().await?;
        }
    }

    async fn flush(&mut self) -> Result<()> {
        let out = self.out.split();
        self.io
            .write_all(&out)
            .await
            .map_err(|e| Error::connection(&self.context, e))?;
        self.io
            .flush()
            .await
            .map_err(|e| Error::connection(&self.context, e))
    }
}

/// The message at the start of `buf`: its tag and the range of its body,
/// or `None` if it is not all there yet (`need` is then its full length).
/// A length that cannot be is an error message.
fn frame(buf: &[u8], need: &mut usize) -> std::result::Result<Option<(u8, Range<usize>)>, String> {
    let Some(header) = buf.get(..5) else {
        *need = 5;
        return Ok(None);
    };
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = match usize::try_from(len) {
        Ok(l) if (4..=MAX_MESSAGE).contains(&l) => l,
        _ => {
            return Err(format!(
                "message {:?} claims a length of {len} bytes: not a PostgreSQL protocol stream",
                header[0] as char
            ))
        }
    };
    if buf.len() < 1 + len {
        *need = 1 + len;
        return Ok(None);
    }
    *need = 0;
    Ok(Some((header[0], 5..1 + len)))
}

/// A message the protocol does not allow here, or bytes that are not a
/// message at all.
#[cold]
fn protocol(context: &str, what: String) -> Error {
    Error::Decode {
        context: format!("the protocol of {context}"),
        message: what,
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// A message's name, for errors.
fn name(m: &Message) -> &'static str {
    match m {
        Message::BindComplete => "BindComplete",
        Message::CloseComplete => "CloseComplete",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        Message::NotificationResponse(_) => "NotificationResponse",
        Message::PortalSuspended => "PortalSuspended",
        _ => "(another message)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// A session reading `bytes`, which arrive `chunk` bytes at a time.
    fn session_over(bytes: Vec<u8>, chunk: usize) -> Session {
        let (ours, mut theirs) = tokio::io::duplex(chunk);
        tokio::spawn(async move {
            for c in bytes.chunks(chunk) {
                if theirs.write_all(c).await.is_err() {
                    return;
                }
            }
        });
        Session {
            io: Box::new(ours),
            buf: BytesMut::new(),
            need: 0,
            out: BytesMut::new(),
            context: "segment endpoint test:1".into(),
            cancel: None,
        }
    }

    /// Every row body until the response ends.
    async fn rows(s: &mut Session) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            if s.read_rows(|r| {
                out.push(r.to_vec());
                Ok(())
            })? {
                return Ok(out);
            }
            s.fill().await?;
        }
    }

    fn error_response(code: &str, text: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in [(b'S', "ERROR"), (b'C', code), (b'M', text)] {
            body.push(t);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        message(b'E', &body)
    }

    #[tokio::test]
    async fn rows_that_span_reads_arrive_whole_and_in_order() {
        let bodies: Vec<Vec<u8>> = (0..50u8)
            .map(|i| [&[0, 1, 0, 0, 0, 3][..], &[b'a', i, b'z']].concat())
            .collect();
        let mut stream = message(b'2', b"");
        for b in &bodies {
            stream.extend(message(b'D', b));
        }
        stream.extend(message(b'C', b"RETRIEVE 50\0"));
        stream.extend(message(b'Z', b"T"));
        for chunk in [1, 7, 4096] {
            let mut s = session_over(stream.clone(), chunk);
            assert_eq!(
                rows(&mut s).await.expect("rows"),
                bodies,
                "chunks of {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn copy_rows_that_span_copydata_messages_decode_whole() {
        use arrow_array::cast::AsArray;
        use arrow_array::Array;
        // A binary COPY stream of two int8 rows (the second NULL), cut in
        // the middle of the first row's value across two CopyData frames.
        let mut copy = b"PGCOPY\n\xff\r\n\0".to_vec();
        copy.extend_from_slice(&[0; 8]);
        for v in [Some(42i64), None] {
            copy.extend_from_slice(&1i16.to_be_bytes());
            match v {
                Some(v) => {
                    copy.extend_from_slice(&8i32.to_be_bytes());
                    copy.extend_from_slice(&v.to_be_bytes());
                }
                None => copy.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        copy.extend_from_slice(&(-1i16).to_be_bytes());
        let cut = 19 + 2 + 4 + 3;
        let stream = [
            message(b'd', &copy[..cut]),
            message(b'd', &copy[cut..]),
            message(b'c', b""),
            message(b'C', b"COPY 2\0"),
            message(b'Z', b"I"),
        ]
        .concat();
        let schema =
            std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "n",
                arrow_schema::DataType::Int64,
                true,
            )]));
        let mut decoder = pg_arrow::CopyDecoder::new(
            schema,
            &[tokio_postgres::types::Type::INT8],
            pg_arrow::BatchLimits::default(),
        )
        .expect("decoder");
        let mut s = session_over(stream, 5);
        while !s.read_data(true, |p| decoder.push(p)).expect("copy data") {
            s.fill().await.expect("bytes");
        }
        decoder.finish().expect("a complete stream");
        let batch = decoder.take_batch().expect("batch").expect("rows");
        let n = batch
            .column(0)
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!((n.len(), n.value(0), n.is_null(1)), (2, 42, true));
    }

    #[tokio::test]
    async fn errors_and_unexpected_messages_say_what_happened() {
        let mut s = session_over(
            [
                message(b'D', b"\0\0"),
                error_response("57014", "canceling statement due to user request"),
            ]
            .concat(),
            16,
        );
        let e = rows(&mut s).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("canceling statement"), "{e}");

        let mut s = session_over(error_response("42P01", "no such endpoint"), 64);
        let e = rows(&mut s).await.unwrap_err();
        assert!(matches!(e, Error::InvalidQuery(_)), "{e:?}");

        let mut s = session_over(message(b'H', b"\0\0\0"), 64);
        let e = rows(&mut s).await.unwrap_err().to_string();
        assert!(e.contains("unexpected message 'H'"), "{e}");

        let mut s = session_over([b'D', 0x80, 0, 0, 0].to_vec(), 64);
        let e = rows(&mut s).await.unwrap_err().to_string();
        assert!(e.contains("not a PostgreSQL protocol stream"), "{e}");

        // The connection closes mid-row.
        let mut s = session_over(message(b'D', b"\0\x01\0\0\0\x09abc")[..9].to_vec(), 64);
        let e = rows(&mut s).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("mid-response"), "{e}");

        // A decoder's refusal stops the read with the decoder's error.
        let mut s = session_over(message(b'D', b"\0\0"), 64);
        s.fill().await.expect("bytes");
        let e = s
            .read_rows(|_| {
                Err(pg_arrow::Error::Decode {
                    context: "column \"x\"".into(),
                    message: "bad".into(),
                })
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("column \"x\""), "{e}");
    }

    #[test]
    fn frames_whole_messages_and_waits_for_the_rest() {
        let m = message(b'D', b"\0\x01\0\0\0\x011");
        let mut need = 0;
        assert_eq!(frame(&m, &mut need), Ok(Some((b'D', 5..m.len()))));
        for cut in 0..m.len() {
            assert_eq!(frame(&m[..cut], &mut need), Ok(None));
            assert!(need > cut, "asks for more than it has");
        }
        let bad = frame(&[b'D', 0, 0, 0, 2, 0], &mut need).unwrap_err();
        assert!(bad.contains("length of 2"), "{bad}");
        let huge = frame(&[b'D', 0x7f, 0xff, 0xff, 0xff], &mut need).unwrap_err();
        assert!(huge.contains("not a PostgreSQL protocol stream"), "{huge}");
    }
}
