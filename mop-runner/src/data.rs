//! Reading a partition from flight-server: Flight `DoGet` streams bridged
//! to the (blocking) training thread through a bounded channel.
//!
//! The reader runs on the async runtime and stays a few batches ahead of
//! training (prefetch), so the network and the database work while the CPU
//! trains; the bound keeps memory flat however large the partition is.
//!
//! # Failures
//! A slice whose flight-server or segment is down (connection refused,
//! `Unavailable`) is retried with exponential backoff for up to
//! [`retry_budget`] — as long as none of its batches has been handed on.
//! A stream that breaks after that is never resumed mid-way (the rows
//! already handed on would be seen twice): the read ends with
//! [`Error::Unavailable`], so that a unit fails and runs again from its
//! starting state and a cache is read again from the beginning.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, Ticket};
use futures::TryStreamExt;
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};

/// Record batches the reader may run ahead of training.
pub const PREFETCH_BATCHES: usize = 4;

/// Environment variable: seconds a read keeps retrying a flight-server or
/// segment that is down (default 60).
pub const RETRY_ENV: &str = "HOPPER_READ_RETRY_SECONDS";

/// How long a read retries an unreachable flight-server or segment:
/// `HOPPER_READ_RETRY_SECONDS`, else 60 s (the env passes from `mop train`
/// to the trainers it spawns).
pub fn retry_budget() -> Duration {
    std::env::var(RETRY_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(60), Duration::from_secs_f64)
}

/// One Flight endpoint of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightSlice {
    /// `grpc+tcp://host:port` (or `http://host:port`).
    pub location: String,
    /// The opaque ticket.
    pub ticket: Vec<u8>,
}

/// Turns a Flight location into a gRPC URI tonic can dial
/// (`grpc+tls://` becomes `https://`).
pub fn grpc_uri(location: &str) -> Result<String> {
    if let Some(hostport) = location.strip_prefix("grpc+tls://") {
        return Ok(format!("https://{hostport}"));
    }
    let rest = location
        .strip_prefix("grpc+tcp://")
        .or_else(|| location.strip_prefix("grpc://"))
        .or_else(|| location.strip_prefix("http://"));
    match rest {
        Some(hostport) => Ok(format!("http://{hostport}")),
        None => Err(Error::Flight(format!(
            "unsupported Flight location {location:?}; use grpc+tcp://host:port or grpc+tls://host:port"
        ))),
    }
}

/// Environment: a PEM file with the CA that signed the flight-servers' TLS
/// certificates; needed for `grpc+tls://` locations (there is no fallback
/// to system roots: a private CA is what a deployment beside a database uses).
pub const TLS_CA_ENV: &str = "HOPPER_TLS_CA";
/// Environment: a PEM certificate `mop` presents to flight-servers that
/// require client certificates (mutual TLS), with [`TLS_KEY_ENV`].
pub const TLS_CERT_ENV: &str = "HOPPER_TLS_CERT";
/// Environment: the PEM private key of [`TLS_CERT_ENV`].
pub const TLS_KEY_ENV: &str = "HOPPER_TLS_KEY";

/// The client TLS settings for `location` (a flight-server or a trainer),
/// from the environment (which `mop train` passes on to the trainers it
/// spawns).
pub fn tls_config(location: &str) -> Result<ClientTlsConfig> {
    let path = |var: &str| {
        std::env::var_os(var)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    let ca = path(TLS_CA_ENV).ok_or_else(|| {
        Error::Config(format!(
            "{location} is served over TLS: set {TLS_CA_ENV} to the PEM file of the CA \
             that signed its certificate"
        ))
    })?;
    let identity = match (path(TLS_CERT_ENV), path(TLS_KEY_ENV)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(Error::Config(format!(
                "set both {TLS_CERT_ENV} and {TLS_KEY_ENV} for a client certificate, or neither"
            )))
        }
    };
    flight_server::tls::ClientTls {
        ca: Some(ca),
        identity,
        domain: None,
    }
    .config()
    .map_err(|e| Error::Config(e.to_string()))
}

/// A channel to a flight-server.
pub async fn channel(location: &str) -> Result<Channel> {
    let uri = grpc_uri(location)?;
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| Error::Flight(format!("bad location {location}: {e}")))?
        .tcp_nodelay(true);
    if uri.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_config(location)?)
            .map_err(|e| Error::Config(format!("TLS settings for {location}: {e}")))?;
    }
    endpoint.connect().await.map_err(|e| {
        Error::Flight(format!(
            "cannot reach flight-server at {location}: {e}; is it running?"
        ))
    })
}

/// Environment: the database user `mop` and its trainers log in to
/// flight-servers with (servers run with `--auth database`); unset, no
/// login is made. The password comes from [`PASSWORD_ENV`] or from the file
/// [`PASSWORD_FILE_ENV`] names — never from the command line.
pub const USER_ENV: &str = "HOPPER_FLIGHT_USER";
/// Environment: the password of [`USER_ENV`].
pub const PASSWORD_ENV: &str = "HOPPER_PASSWORD";
/// Environment: a file holding the password of [`USER_ENV`].
pub const PASSWORD_FILE_ENV: &str = "HOPPER_PASSWORD_FILE";

/// A Flight client with limits large enough for hopper's batches, logged in
/// as [`USER_ENV`] if it is set.
pub async fn client(location: &str) -> Result<FlightClient> {
    let mut c = FlightClient::new(channel(location).await?);
    login(&mut c, location).await?;
    Ok(c)
}

/// The Flight Handshake with Basic credentials; the client then sends the
/// server's Bearer token on every call. Each client logs in for itself
/// (tokens are per server), so a token never outlives the read it serves.
async fn login(c: &mut FlightClient, location: &str) -> Result<()> {
    let Some(user) = std::env::var(USER_ENV).ok().filter(|u| !u.is_empty()) else {
        return Ok(());
    };
    let password = match (
        std::env::var(PASSWORD_ENV),
        std::env::var(PASSWORD_FILE_ENV),
    ) {
        (Ok(p), _) => p,
        (_, Ok(path)) => std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("reading {PASSWORD_FILE_ENV} {path}: {e}")))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        _ => {
            return Err(Error::Config(format!(
                "{USER_ENV} is set but neither {PASSWORD_ENV} nor {PASSWORD_FILE_ENV} is"
            )))
        }
    };
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let header = |v: String| {
        v.parse::<tonic::metadata::MetadataValue<_>>()
            .map_err(|_| Error::Config(format!("{USER_ENV}: not a valid header value")))
    };
    c.metadata_mut()
        .insert("authorization", header(format!("Basic {basic}"))?);
    let token = c
        .handshake(bytes::Bytes::new())
        .await
        .map_err(|e| match e {
            arrow_flight::error::FlightError::Tonic(s) if s.code() == tonic::Code::Unavailable => {
                Error::Flight(format!("logging in to {location}: {s}"))
            }
            e => Error::Config(format!(
                "flight-server at {location} refused the login of {user:?}: {e}; \
             check {USER_ENV} and {PASSWORD_ENV}"
            )),
        })?;
    let token = String::from_utf8(token.to_vec()).map_err(|_| {
        Error::Flight(format!(
            "{location} answered the login with a non-text token"
        ))
    })?;
    if token.is_empty() {
        // A server without authentication answers with an empty handshake.
        c.metadata_mut().remove("authorization");
    } else {
        c.metadata_mut()
            .insert("authorization", header(format!("Bearer {token}"))?);
    }
    Ok(())
}

fn flight_err(context: &str, e: arrow_flight::error::FlightError) -> Error {
    Error::Flight(format!("{context}: {e}"))
}

/// Plans `sql` on a flight-server: one slice per endpoint, in order.
pub async fn plan(location: &str, sql: &str) -> Result<Vec<FlightSlice>> {
    Ok(plan_until(location, sql).await?.0)
}

/// [`plan`], and the earliest expiration time of the endpoints' tickets
/// (`None`: the server set none).
pub async fn plan_until(
    location: &str,
    sql: &str,
) -> Result<(Vec<FlightSlice>, Option<SystemTime>)> {
    let mut c = client(location).await?;
    let info = c
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(sql.to_string()))
        .await
        .map_err(|e| flight_err(&format!("planning {sql:?}"), e))?;
    let expires = info
        .endpoint
        .iter()
        .filter_map(|ep| ep.expiration_time.as_ref())
        .map(|t| {
            UNIX_EPOCH
                + Duration::from_secs(t.seconds.max(0) as u64)
                + Duration::from_nanos(t.nanos.max(0) as u64)
        })
        .min();
    let slices = info
        .endpoint
        .into_iter()
        .map(|ep| FlightSlice {
            location: ep
                .location
                .first()
                .map(|l| l.uri.clone())
                .unwrap_or_else(|| location.to_string()),
            ticket: ep.ticket.map(|t| t.ticket.to_vec()).unwrap_or_default(),
        })
        .collect();
    Ok((slices, expires))
}

/// Starts reading `slices` one after another into a bounded channel; the
/// receiver gets every batch in order, then the channel closes (or an
/// `Err` item says why the read stopped).
pub fn spawn_reader(
    runtime: &tokio::runtime::Handle,
    slices: Vec<FlightSlice>,
) -> mpsc::Receiver<Result<RecordBatch>> {
    let (tx, rx) = mpsc::channel(PREFETCH_BATCHES);
    runtime.spawn(async move {
        for slice in slices {
            if let Err(e) = read_slice_retrying(&slice, &tx, retry_budget()).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    });
    rx
}

/// Reads one slice, retrying with backoff while its server or segment is
/// unreachable and nothing of it has been handed on yet.
async fn read_slice_retrying(
    slice: &FlightSlice,
    tx: &mpsc::Sender<Result<RecordBatch>>,
    budget: Duration,
) -> Result<()> {
    grpc_uri(&slice.location)?; // a bad location is not worth retrying
    let deadline = Instant::now() + budget;
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        let mut sent = 0usize;
        let e = match read_slice(slice, tx, &mut sent).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let message = match e {
            SliceError::Transient(m) => m,
            SliceError::Fatal(e) => return Err(e),
        };
        if sent > 0 {
            return Err(Error::Unavailable(format!(
                "{message}; the stream broke after {sent} batches, so this read stops \
                 (a unit runs again from its starting state, a cache is read again)"
            )));
        }
        if Instant::now() + delay > deadline {
            return Err(Error::Unavailable(format!(
                "{message}; gave up after {attempt} attempts in {:.0?} \
                 (raise {RETRY_ENV} to wait longer)",
                budget
            )));
        }
        tracing::warn!(location = %slice.location, attempt, error = %message, "retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

/// Why one attempt at a slice failed.
enum SliceError {
    /// The server or its segment is unreachable or went away: retry may help.
    Transient(String),
    /// The request itself is wrong (bad ticket, bad query): do not retry.
    Fatal(Error),
}

fn classify(context: &str, e: FlightError) -> SliceError {
    if let FlightError::Tonic(s) = &e {
        if flight_server::error::is_ticket_refused(s) {
            return SliceError::Fatal(Error::TicketRefused(format!("{context}: {}", s.message())));
        }
    }
    let transient = match &e {
        FlightError::Tonic(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        FlightError::ExternalError(_) => true,
        _ => false,
    };
    let message = format!("{context}: {e}");
    if transient {
        SliceError::Transient(message)
    } else {
        SliceError::Fatal(Error::Flight(message))
    }
}

async fn read_slice(
    slice: &FlightSlice,
    tx: &mpsc::Sender<Result<RecordBatch>>,
    sent: &mut usize,
) -> std::result::Result<(), SliceError> {
    let mut c = match client(&slice.location).await {
        Ok(c) => c,
        Err(Error::Flight(m)) => return Err(SliceError::Transient(m)),
        Err(e) => return Err(SliceError::Fatal(e)),
    };
    let mut stream = c
        .do_get(Ticket::new(slice.ticket.clone()))
        .await
        .map_err(|e| classify(&format!("DoGet at {}", slice.location), e))?;
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| classify(&format!("reading from {}", slice.location), e))?
    {
        if tx.send(Ok(batch)).await.is_err() {
            // Training stopped; dropping the stream cancels the DoGet.
            return Ok(());
        }
        *sent += 1;
    }
    Ok(())
}
