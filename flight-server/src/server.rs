//! Server assembly: which source, which limits, the tonic server, shutdown.
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so
//! tests bind port 0, read the address, and stop the server cleanly.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;

use crate::auth::{AuthMode, TokenStore, DEFAULT_TOKEN_TTL};
use crate::error::{Error, Result};
use crate::locate::Locator;
use crate::login::LoginGate;
use crate::metrics::Metrics;
use crate::service::HopperFlightService;
use crate::source::greenplum::GreenplumSource;
use crate::source::postgres::{CopyFormat, PostgresSource};
use crate::source::{BatchLimits, Source};
use crate::ticket::TicketSigner;
use flight_client::tls::ServerTls;

/// Concurrent gRPC streams one client connection may have open.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How often an idle connection is pinged, and how long an answer may take
/// before the connection is closed.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the data comes from.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// PostgreSQL instances, each one segment; each split into `split` endpoints.
    Postgres {
        /// Connection strings, one per segment.
        segments: Vec<String>,
        /// Endpoints per segment (ctid ranges) for single-table queries.
        split: usize,
        /// How segments export rows (`--copy-format`).
        copy_format: CopyFormat,
    },
    /// A Greenplum coordinator: endpoints from parallel retrieve cursors.
    Greenplum {
        /// Connection string of the coordinator.
        url: String,
        /// Segment host names (as `gp_segment_configuration` knows them)
        /// mapped to addresses that resolve where this server runs.
        host_map: BTreeMap<String, String>,
        /// How long a cursor may sit unread before it is closed.
        cursor_idle_timeout: Duration,
    },
    /// Parquet / CSV / Arrow IPC files through DataFusion.
    Files {
        /// A directory or a glob.
        path: String,
        /// DataFusion's target partitions (endpoints per query, at most).
        partitions: usize,
    },
}

/// Everything a flight-server needs besides its listener.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The source.
    pub source: SourceConfig,
    /// Batch size limits.
    pub limits: BatchLimits,
    /// Location put in endpoints; defaults to `grpc+tcp://<bound address>`.
    pub advertise: Option<String>,
    /// Ticket signing key; random (tickets valid on this process only) if unset.
    pub ticket_key: Option<Vec<u8>>,
    /// How long tickets stay valid.
    pub ticket_ttl: Duration,
    /// How callers authenticate; `None` means [`AuthMode::Database`].
    pub auth: Option<AuthMode>,
    /// How long Bearer tokens stay valid.
    pub token_ttl: Duration,
    /// TLS certificate, key and optional client CA; plain TCP if unset.
    pub tls: Option<ServerTls>,
    /// Database connections held per PostgreSQL segment at once; requests
    /// beyond it wait in line.
    pub max_connections: usize,
    /// Where to serve Prometheus metrics (`/metrics`); none if unset.
    pub metrics: Option<String>,
    /// Segments whose endpoints another flight-server serves (one beside
    /// the segment), and its location.
    pub segment_flight: BTreeMap<i32, String>,
    /// The port of the flight-server on every Greenplum segment host:
    /// endpoints not in `segment_flight` are located there.
    pub segment_flight_port: Option<u16>,
    /// Whether superuser and replication roles may log in (`--allow-superuser`).
    pub allow_superuser: bool,
    /// Client connections served at once (`--max-clients`).
    pub max_clients: usize,
    /// The longest a pinned snapshot is held (`--snapshot-max-ttl`).
    pub snapshot_max_ttl: Duration,
    /// How long a pinned snapshot may go unused (`--snapshot-idle`).
    pub snapshot_idle: Duration,
}

impl ServerConfig {
    /// A configuration with default limits, a random key and 1-hour tickets.
    pub fn new(source: SourceConfig) -> Self {
        Self {
            source,
            limits: BatchLimits::default(),
            advertise: None,
            ticket_key: None,
            ticket_ttl: Duration::from_secs(3600),
            auth: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            tls: None,
            max_connections: crate::source::limit::DEFAULT_MAX_CONNECTIONS,
            metrics: None,
            segment_flight: BTreeMap::new(),
            segment_flight_port: None,
            allow_superuser: false,
            max_clients: crate::listener::DEFAULT_MAX_CLIENTS,
            snapshot_max_ttl: crate::snapshot::DEFAULT_MAX_TTL,
            snapshot_idle: crate::snapshot::DEFAULT_IDLE,
        }
    }
}

/// Opens the configured source. Under [`AuthMode::None`] the server runs
/// queries as its URLs' users, so it logs in now and fails early; under
/// [`AuthMode::Database`] it never logs in but as a caller, so URLs need no
/// password and only what can be checked without a login is checked.
pub async fn open_source(
    config: &ServerConfig,
    auth: AuthMode,
    locator: Arc<Locator>,
) -> Result<Arc<dyn Source>> {
    let server_login = auth == AuthMode::None;
    Ok(match &config.source {
        SourceConfig::Postgres {
            segments,
            split,
            copy_format,
        } => {
            if segments.is_empty() {
                return Err(Error::Config("give at least one --segment URL".into()));
            }
            let (segments, split) = (segments.clone(), (*split).max(1));
            let source = if server_login {
                PostgresSource::new(segments, split, config.limits).await?
            } else {
                PostgresSource::for_callers(segments, split, config.limits).await?
            };
            Arc::new(
                source
                    .with_max_connections(config.max_connections)
                    .with_copy_format(*copy_format),
            )
        }
        SourceConfig::Greenplum {
            url,
            host_map,
            cursor_idle_timeout,
        } => Arc::new(
            GreenplumSource::open(url, config.limits, server_login)
                .await?
                .with_cursor_timeout(*cursor_idle_timeout)
                .with_host_map(host_map.clone())
                .with_locator(locator)
                .with_max_connections(config.max_connections),
        ),
        SourceConfig::Files { path, partitions } => {
            if !server_login {
                return Err(Error::Config(
                    "the files source has no database to check passwords against: serve \
                     it with --auth none (on a loopback address)"
                        .into(),
                ));
            }
            open_files(path, config, (*partitions).max(1)).await?
        }
    })
}

/// The files source, where it was built in.
#[cfg(feature = "files")]
async fn open_files(
    path: &str,
    config: &ServerConfig,
    partitions: usize,
) -> Result<Arc<dyn Source>> {
    let source = crate::source::files::FilesSource::open(path, config.limits, partitions).await?;
    Ok(Arc::new(source))
}

/// The files source, where it was built in.
#[cfg(not(feature = "files"))]
async fn open_files(_: &str, _: &ServerConfig, _: usize) -> Result<Arc<dyn Source>> {
    Err(Error::Config(
        "this flight-server was built without the files source (DataFusion): \
         cargo build --release -p flight-server (default features include it)"
            .into(),
    ))
}

/// The authentication a server bound to `addr` uses: `requested`, or
/// database logins by default — on every address, so that no caller reads
/// with the server's own rights unless the operator asked for it. Refuses
/// `none` on any address but loopback, where anyone who can reach the port
/// would read with the server's database rights.
pub fn auth_mode(requested: Option<AuthMode>, addr: SocketAddr) -> Result<AuthMode> {
    let loopback = addr.ip().is_loopback();
    let mode = requested.unwrap_or(AuthMode::Database);
    match mode {
        AuthMode::None if !loopback => Err(Error::Config(format!(
            "--auth none is allowed only on a loopback address, and {addr} is not one: \
             use --auth database (clients log in with their database user), or bind 127.0.0.1"
        ))),
        AuthMode::None => {
            tracing::warn!(
                %addr,
                "authentication is off (--auth none): every local client reads with the \
                 server's own database rights"
            );
            Ok(mode)
        }
        AuthMode::Database => {
            tracing::info!(%addr, "clients log in with their database user (--auth database)");
            Ok(mode)
        }
    }
}

/// Where endpoints are located: at `own`, or beside their segments.
fn locator(config: &ServerConfig, own: String) -> Locator {
    let mut locator = Locator::here(own).with_segments(config.segment_flight.clone());
    if let (Some(port), SourceConfig::Greenplum { host_map, .. }) =
        (config.segment_flight_port, &config.source)
    {
        locator = locator.with_host_port(scheme(config), port, host_map.clone());
    }
    locator
}

/// `grpc+tls` or `grpc+tcp`: the Flight scheme clients dial.
pub fn scheme(config: &ServerConfig) -> &'static str {
    if config.tls.is_some() {
        "grpc+tls"
    } else {
        "grpc+tcp"
    }
}

/// Serves Flight on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("listener has no address: {e}")))?;
    let auth = auth_mode(config.auth, addr)?;
    let location = config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{}://{addr}", scheme(&config)));
    let locator = Arc::new(locator(&config, location));
    if let Some(key) = &config.ticket_key {
        crate::ticket::check_key(key)?;
    }
    let source = open_source(&config, auth, locator.clone()).await?;
    let signer = match &config.ticket_key {
        Some(key) => TicketSigner::new(key.clone(), config.ticket_ttl),
        None => TicketSigner::random(config.ticket_ttl),
    };
    let metrics = Metrics::new();
    // One signal stops both the Flight server and the metrics endpoint.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // grpc.health.v1 beside Flight: SERVING while the databases answer.
    let mut health_stop = stop_tx.subscribe();
    let health = crate::health::targets(&config.source, auth)?;
    let health = crate::health::service(health, async move {
        let _ = health_stop.wait_for(|stop| *stop).await;
    })
    .await;
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    if let Some(addr) = &config.metrics {
        let bound = crate::metrics::serve(addr, metrics.clone(), source.clone(), async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .await?;
        tracing::info!("metrics at http://{bound}/metrics");
    }
    let mut service = HopperFlightService::new(source, signer, locator.own().to_string())
        .with_metrics(metrics)
        .with_locator(locator)
        .with_snapshot_limits(config.snapshot_max_ttl, config.snapshot_idle);
    if auth == AuthMode::Database {
        let key = config
            .ticket_key
            .clone()
            .unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
        service = service
            .with_auth(Arc::new(TokenStore::new(key, config.token_ttl)))
            .with_login_gate(LoginGate::new(config.allow_superuser));
    }
    let server = FlightServiceServer::new(service)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    // Bounds on what one client can hold: streams per connection, a peer
    // that stops answering pings is dropped, a TLS handshake has a deadline.
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT));
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(tls.config()?.timeout(TLS_HANDSHAKE_TIMEOUT))
            .map_err(|e| Error::Config(format!("TLS configuration: {e}")))?;
    }
    builder
        .add_service(health)
        .add_service(server)
        .serve_with_incoming_shutdown(
            crate::listener::capped(listener, config.max_clients),
            shutdown,
        )
        .await
        .map_err(|e| Error::Internal(format!("server stopped: {e}")))
}
