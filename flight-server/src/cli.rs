//! The `flight-server` command line — a contract other parts rely on
//! (README documents it; docker-compose and tests use it).

use std::time::Duration;

use clap::{ArgGroup, Parser};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::server::{serve, ServerConfig, SourceConfig};
use crate::source::BatchLimits;

/// Arrow Flight server over PostgreSQL segments, a Greenplum coordinator, or files.
#[derive(Debug, Parser)]
#[command(name = "flight-server", version, about)]
#[command(after_help = "Examples:
  flight-server keygen /etc/hopper/ticket.key
  flight-server --bind 0.0.0.0:50051 --segment postgresql://db1:5432/sales --segment postgresql://db2:5432/sales
  flight-server --bind 0.0.0.0:50051 --greenplum postgresql://mdw:5432/sales \\
      --ticket-key-file /etc/hopper/ticket.key --segment-flight-port 50051 --metrics 0.0.0.0:9187
  flight-server --bind 127.0.0.1:50051 --files 'data/*.parquet' --auth none

The port also answers the gRPC health protocol (grpc.health.v1) without a login:
SERVING while the database answers. Deployment: docs/deploy.md.")]
#[command(group(ArgGroup::new("source").required(true).args(["segment", "greenplum", "files"])))]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A task instead of serving (`flight-server keygen PATH`).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub bind: String,

    /// A PostgreSQL connection string; repeat for each segment.
    #[arg(long, value_name = "URL")]
    pub segment: Vec<String>,

    /// A Greenplum coordinator's connection string (parallel retrieve cursors).
    #[arg(long, value_name = "URL")]
    pub greenplum: Option<String>,

    /// A Greenplum segment host name (as gp_segment_configuration knows it)
    /// and the address to dial for it here; repeat per host.
    #[arg(long, value_name = "NAME=ADDRESS", value_parser = parse_host_map, requires = "greenplum")]
    pub host_map: Vec<(String, String)>,

    /// A directory or glob of Parquet / CSV / Arrow IPC files.
    #[arg(long, value_name = "PATH")]
    pub files: Option<String>,

    /// Endpoints per PostgreSQL segment (ctid ranges) for single-table queries.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub split: usize,

    /// How PostgreSQL segments export rows: `binary` (the default) or
    /// `text` COPY (text falls back to binary for the few types its parsers
    /// do not know); `auto` reads queries whose columns are all integers,
    /// booleans or text as text (cheaper for the database to write, dearer
    /// for this server to parse) and the rest as binary. The Arrow values
    /// are the same either way.
    #[arg(long, value_enum, default_value_t = crate::source::postgres::CopyFormat::Binary)]
    pub copy_format: crate::source::postgres::CopyFormat,

    /// Endpoints per query for --files (DataFusion target partitions).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub file_partitions: usize,

    /// Maximum rows per record batch.
    #[arg(long, default_value_t = BatchLimits::default().rows)]
    pub batch_rows: usize,

    /// Maximum bytes per record batch (approximate).
    #[arg(long, default_value_t = BatchLimits::default().bytes)]
    pub batch_bytes: usize,

    /// Location advertised in endpoints (default: grpc+tcp://<bound address>).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,

    /// File holding the ticket signing key (share it between servers that
    /// serve each other's tickets); env HOPPER_TICKET_KEY works too.
    #[arg(long, value_name = "PATH")]
    pub ticket_key_file: Option<String>,

    /// Seconds a ticket stays valid.
    #[arg(long, default_value_t = 3600)]
    pub ticket_ttl: u64,

    /// How clients authenticate: `database` (the default: a Flight
    /// Handshake with Basic credentials, checked by a login to the database;
    /// queries run as that user, and URLs need no password) or `none`
    /// (loopback addresses only: every caller runs as the URLs' user).
    #[arg(long, value_name = "none|database")]
    pub auth: Option<crate::auth::AuthMode>,

    /// The longest a pinned snapshot is held, in seconds, whatever its
    /// client asks: a pin holds one session per segment and holds back
    /// vacuum for rows changed after it.
    #[arg(long, default_value_t = crate::snapshot::DEFAULT_MAX_TTL.as_secs(), value_name = "SECS")]
    pub snapshot_max_ttl: u64,

    /// Seconds a pinned snapshot may go unused (no plan at it, no renewal)
    /// before it is released: a client that died holds nothing for long.
    #[arg(long, default_value_t = crate::snapshot::DEFAULT_IDLE.as_secs(), value_name = "SECS")]
    pub snapshot_idle: u64,

    /// Seconds a Bearer token from the Handshake stays valid.
    #[arg(long, default_value_t = crate::auth::DEFAULT_TOKEN_TTL.as_secs())]
    pub token_ttl: u64,

    /// PEM certificate chain: serve Flight over TLS (`grpc+tls://`).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA: require client certificates signed by it (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Database connections held per segment at once (PostgreSQL
    /// connections; Greenplum retrieve sessions per segment and coordinator
    /// sessions); streams beyond it wait in line (keep it below the
    /// database's max_connections).
    #[arg(long, default_value_t = crate::source::limit::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,

    /// Seconds a Greenplum cursor may sit with none of its endpoints being
    /// read before it is closed and its coordinator session released.
    #[arg(long, default_value_t = crate::source::greenplum::DEFAULT_CURSOR_TIMEOUT.as_secs(), value_name = "SECS")]
    pub cursor_idle_timeout: u64,

    /// The endpoint of segment CONTENT (its index; `gp_segment_id` for
    /// Greenplum) is located at URL — a flight-server beside that segment,
    /// sharing --ticket-key-file — instead of here; repeat per segment.
    #[arg(long, value_name = "CONTENT=URL", value_parser = parse_segment_flight)]
    pub segment_flight: Vec<(i32, String)>,

    /// Every Greenplum segment's endpoint is located at the flight-server on
    /// its segment host, `grpc+tcp://<host>:PORT` (the host as
    /// gp_segment_configuration names it, through --host-map; grpc+tls with
    /// --tls-cert); --segment-flight still names exceptions. Start one server
    /// per segment host at PORT, all sharing --ticket-key-file.
    #[arg(long, value_name = "PORT", requires = "greenplum")]
    pub segment_flight_port: Option<u16>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics (rows and bytes
    /// sent per segment, open streams, cursors, connections, durations).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,

    /// Let superuser and replication roles log in (refused by default:
    /// they bypass every GRANT).
    #[arg(long)]
    pub allow_superuser: bool,

    /// Client connections served at once; further ones are closed at once.
    #[arg(long, default_value_t = crate::listener::DEFAULT_MAX_CLIENTS, value_name = "N")]
    pub max_clients: usize,
}

/// Tasks besides serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Writes a fresh random ticket key (32 bytes, mode 0600) to PATH, for
    /// --ticket-key-file; never overwrites an existing file.
    Keygen {
        /// Where to write the key.
        path: std::path::PathBuf,
        /// Leave an existing key file as it is (exit 0) instead of refusing:
        /// for a container's first start.
        #[arg(long)]
        if_missing: bool,
    },
}

impl Args {
    /// Turns the arguments into a server configuration.
    pub fn config(&self) -> Result<ServerConfig> {
        let source = if let Some(url) = &self.greenplum {
            SourceConfig::Greenplum {
                url: url.clone(),
                host_map: self.host_map.iter().cloned().collect(),
                cursor_idle_timeout: Duration::from_secs(self.cursor_idle_timeout.max(1)),
            }
        } else if let Some(path) = &self.files {
            SourceConfig::Files {
                path: path.clone(),
                partitions: self.file_partitions,
            }
        } else {
            SourceConfig::Postgres {
                segments: self.segment.clone(),
                split: self.split,
                copy_format: self.copy_format,
            }
        };
        if self.batch_rows == 0 || self.batch_bytes == 0 {
            return Err(Error::Config(
                "--batch-rows and --batch-bytes must be > 0".into(),
            ));
        }
        let ticket_key = match (&self.ticket_key_file, std::env::var("HOPPER_TICKET_KEY")) {
            (Some(path), _) => {
                let key = std::fs::read(path)
                    .map_err(|e| Error::Config(format!("reading --ticket-key-file {path}: {e}")))?;
                crate::ticket::check_key(&key)
                    .map_err(|e| Error::Config(format!("--ticket-key-file {path}: {e}")))?;
                Some(key)
            }
            (None, Ok(key)) if !key.is_empty() => {
                crate::ticket::check_key(key.as_bytes())
                    .map_err(|e| Error::Config(format!("HOPPER_TICKET_KEY: {e}")))?;
                Some(key.into_bytes())
            }
            _ => None,
        };
        let mut config = ServerConfig::new(source);
        config.limits = BatchLimits {
            rows: self.batch_rows,
            bytes: self.batch_bytes,
        };
        config.advertise = self.advertise.clone();
        config.ticket_key = ticket_key;
        config.ticket_ttl = Duration::from_secs(self.ticket_ttl);
        config.auth = self.auth;
        config.token_ttl = Duration::from_secs(self.token_ttl.max(1));
        if self.snapshot_max_ttl == 0 || self.snapshot_idle == 0 {
            return Err(Error::Config(
                "--snapshot-max-ttl and --snapshot-idle must be > 0".into(),
            ));
        }
        config.snapshot_max_ttl = Duration::from_secs(self.snapshot_max_ttl);
        config.snapshot_idle = Duration::from_secs(self.snapshot_idle);
        config.tls = flight_client::tls::ServerTls::from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
        )?;
        if self.max_connections == 0 {
            return Err(Error::Config("--max-connections must be > 0".into()));
        }
        config.max_connections = self.max_connections;
        config.metrics = self.metrics.clone();
        config.segment_flight = self.segment_flight.iter().cloned().collect();
        config.segment_flight_port = self.segment_flight_port;
        config.allow_superuser = self.allow_superuser;
        if self.max_clients == 0 {
            return Err(Error::Config("--max-clients must be > 0".into()));
        }
        config.max_clients = self.max_clients;
        let elsewhere = !config.segment_flight.is_empty() || config.segment_flight_port.is_some();
        if elsewhere && config.ticket_key.is_none() {
            return Err(Error::Config(
                "--segment-flight(-port) points clients at other flight-servers, which can serve \
                 this server's tickets only with the same key: give every server the same \
                 --ticket-key-file (or HOPPER_TICKET_KEY)"
                    .into(),
            ));
        }
        Ok(config)
    }
}

/// Parses `CONTENT=URL` of `--segment-flight`.
fn parse_segment_flight(s: &str) -> std::result::Result<(i32, String), String> {
    let usage = || {
        format!(
            "{s:?}: expected CONTENT=URL, e.g. 1=grpc+tcp://sdw2:50051 (a segment's index and \
             the flight-server beside it)"
        )
    };
    let (content, url) = s.split_once('=').ok_or_else(usage)?;
    let content: i32 = content.trim().parse().map_err(|_| usage())?;
    if !(url.starts_with("grpc+tcp://") || url.starts_with("grpc+tls://")) {
        return Err(usage());
    }
    Ok((content, url.to_string()))
}

/// Parses `NAME=ADDRESS` of `--host-map`.
fn parse_host_map(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, addr)) if !name.is_empty() && !addr.is_empty() => {
            Ok((name.to_string(), addr.to_string()))
        }
        _ => Err(format!(
            "{s:?}: expected NAME=ADDRESS, e.g. sdw1=10.0.0.11 (a segment host name and the address to dial for it)"
        )),
    }
}

/// Binds, prints the bound address, and serves until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> Result<()> {
    if let Some(Command::Keygen { path, if_missing }) = &args.command {
        if *if_missing && path.exists() {
            let key = std::fs::read(path)
                .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
            crate::ticket::check_key(&key)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            println!("keeping the ticket key in {}", path.display());
        } else {
            crate::ticket::keygen(path)?;
            println!("wrote a new ticket key to {}", path.display());
        }
        return Ok(());
    }
    let config = args.config()?;
    let listener = TcpListener::bind(&args.bind)
        .await
        .map_err(|e| Error::Config(format!("cannot bind {}: {e}", args.bind)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("listener has no address: {e}")))?;
    // The first line on stdout is the address: scripts and tests read it.
    println!(
        "flight-server listening on {}://{addr}",
        crate::server::scheme(&config)
    );
    serve(listener, config, shutdown_signal()).await
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}
