//! The standard gRPC health service (`grpc.health.v1.Health`, served by
//! `tonic-health`) beside Flight on the same port: what load balancers,
//! Kubernetes probes (`grpc:` probes), `grpc_health_probe` and Consul ask.
//!
//! A flight-server is SERVING while every database it reads answers —
//! each `--segment`, or the `--greenplum` coordinator — and NOT_SERVING
//! from the moment one does not (or has not been asked yet, at start), so
//! a balancer stops sending clients to a server whose queries would fail
//! with `Unavailable`. A files source has no database: SERVING at once.
//! The answer is the same for the whole server (`""`) and for the Flight
//! service by name (`arrow.flight.protocol.FlightService`).
//!
//! # The probe
//!
//! Every [`PROBE_INTERVAL`] each database is asked what `pg_isready` asks:
//! a connection is opened (TLS as the URL's `sslmode` says) and closed at
//! the password prompt. The probe sends no password and runs no query, so
//! it reads nothing and never logs in where pg_hba.conf asks for a
//! password; under `--auth database` it names the role `hopper-health`
//! (which need not exist) rather than anyone's. The database answers if
//! it asks for a password, logs the probe in (pg_hba `trust`), or refuses
//! the role; it does not answer if the connection fails or takes longer
//! than [`PROBE_TIMEOUT`], if TLS fails, or if it says it is starting up,
//! shutting down or in recovery (SQLSTATE class 57, as `pg_isready`'s
//! "rejecting connections").
//!
//! # No credentials
//!
//! The health service answers anyone who reaches the port, without a
//! Bearer token: it tells only SERVING or NOT_SERVING, never why (the why
//! is in the server's log), and a probe must not need a login. TLS and
//! `--tls-client-ca` apply to it as to Flight: behind mutual TLS, a probe
//! needs a client certificate too.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::Config;
use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::auth::AuthMode;
use crate::error::Result;
use crate::server::SourceConfig;
use crate::service::HopperFlightService;
use crate::source::db_tls::{DbTls, DbUrl};

/// How often every database is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long one probe may take before the database counts as not answering.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The role the probe names when the URL names none (`--auth database`):
/// it need not exist; the probe never gets past the password prompt.
pub const PROBE_ROLE: &str = "hopper-health";

/// One database the server reads, as the probe reaches it.
#[derive(Clone, Debug)]
pub struct Target {
    /// `segment 1 at host:port/db`, `the coordinator at host:port/db`.
    pub name: String,
    config: Config,
    tls: DbTls,
}

/// The databases of `source`, each to be probed as the URL reaches it
/// but without its password. The files source has none.
pub fn targets(source: &SourceConfig, auth: AuthMode) -> Result<Vec<Target>> {
    let urls: Vec<(String, &str)> = match source {
        SourceConfig::Postgres { segments, .. } => segments
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("segment {i}"), url.as_str()))
            .collect(),
        SourceConfig::Greenplum { url, .. } => vec![("the coordinator".into(), url.as_str())],
        SourceConfig::Files { .. } => Vec::new(),
    };
    urls.into_iter()
        .map(|(what, url)| {
            let DbUrl { config, tls } = DbUrl::parse(url, &what)?;
            let config = probe_config(&config, auth);
            Ok(Target {
                name: format!("{what} at {}", address(&config)),
                config,
                tls,
            })
        })
        .collect()
}

/// `config`'s address, database and TLS without its password, named for
/// the probe (`application_name = hopper-health`), with the probe's
/// deadline. Under `--auth database` the role is [`PROBE_ROLE`]: the
/// server connects as nobody but its callers.
fn probe_config(config: &Config, auth: AuthMode) -> Config {
    let mut probe = Config::new();
    for host in config.get_hosts() {
        match host {
            Host::Tcp(name) => probe.host(name),
            Host::Unix(path) => probe.host_path(path),
        };
    }
    for addr in config.get_hostaddrs() {
        probe.hostaddr(*addr);
    }
    for port in config.get_ports() {
        probe.port(*port);
    }
    if let Some(db) = config.get_dbname() {
        probe.dbname(db);
    }
    let user = match (auth, config.get_user()) {
        (AuthMode::None, Some(user)) => user,
        _ => PROBE_ROLE,
    };
    probe
        .user(user)
        .application_name(PROBE_ROLE)
        .ssl_mode(config.get_ssl_mode())
        .connect_timeout(PROBE_TIMEOUT);
    probe
}

/// `host:port/db` of a probe's configuration.
fn address(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
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
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

/// Whether `target` answers: `Ok`, or why not.
pub async fn probe(target: &Target) -> std::result::Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, target.tls.connect(&target.config)).await {
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        // Logged in (pg_hba trusts the probe): the connection closes as
        // it is dropped.
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => answered(&e),
    }
}

/// Whether a failed probe connection still shows a database that answers.
fn answered(e: &tokio_postgres::Error) -> std::result::Result<(), String> {
    if let Some(db) = e.as_db_error() {
        // Class 57, operator intervention: starting up, shutting down,
        // in recovery (57P03 "cannot connect now"), terminated.
        let rejecting = db.code().code().starts_with("57");
        if rejecting || db.code() == &SqlState::INVALID_CATALOG_NAME {
            return Err(format!("{}: {}", db.code().code(), db.message()));
        }
        // It judged the probe's login (no pg_hba entry, no such role):
        // it is up.
        return Ok(());
    }
    if let Some(why) = crate::source::tls_refusal::refusal(e) {
        return Err(why);
    }
    // tokio-postgres reports the server's request for a password, to a
    // client that has none, as this configuration error: the database
    // answered the startup packet, as pg_isready counts it.
    let cause = std::error::Error::source(e).map(ToString::to_string);
    if cause.as_deref() == Some("password missing") {
        return Ok(());
    }
    Err(match cause {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    })
}

/// The health service of a server over `source`, and the task that keeps
/// its status, probing until `stop` completes. NOT_SERVING until the
/// first probe of every database has answered.
pub async fn service(
    targets: Vec<Target>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> HealthServer<impl Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let status = Reported { reporter };
    if targets.is_empty() {
        status.set(ServingStatus::Serving).await;
        return service;
    }
    status.set(ServingStatus::NotServing).await;
    tokio::spawn(async move {
        tokio::select! {
            _ = watch(targets, status) => {}
            _ = stop => {}
        }
    });
    service
}

/// The server's one status, under both names a client may ask for.
struct Reported {
    reporter: HealthReporter,
}

impl Reported {
    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(
                <FlightServiceServer<HopperFlightService> as NamedService>::NAME,
                status,
            )
            .await;
    }
}

/// Probes every target each [`PROBE_INTERVAL`], forever, setting the
/// status and logging each change with its reason.
async fn watch(targets: Vec<Target>, status: Reported) {
    let targets: Arc<[Target]> = targets.into();
    let mut serving = None;
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcomes = futures::future::join_all(targets.iter().map(probe)).await;
        let down: Vec<String> = targets
            .iter()
            .zip(outcomes)
            .filter_map(|(t, o)| o.err().map(|why| format!("{}: {why}", t.name)))
            .collect();
        let now = down.is_empty();
        if serving != Some(now) {
            if now {
                tracing::info!("health: SERVING (every database answers)");
                status.set(ServingStatus::Serving).await;
            } else {
                tracing::warn!(
                    "health: NOT_SERVING until the database answers again: {}",
                    down.join("; ")
                );
                status.set(ServingStatus::NotServing).await;
            }
            serving = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_carries_no_password_and_no_callers_role() {
        let source = SourceConfig::Postgres {
            segments: vec![
                "postgresql://alice:secret@db1:6000/sales?sslmode=require".into(),
                "host=db2 dbname=sales".into(),
            ],
            split: 1,
            copy_format: Default::default(),
        };
        let t = targets(&source, AuthMode::Database).unwrap();
        assert_eq!(t[0].name, "segment 0 at db1:6000/sales");
        assert_eq!(t[1].name, "segment 1 at db2:5432/sales");
        for t in &t {
            assert_eq!(t.config.get_password(), None);
            assert_eq!(t.config.get_user(), Some(PROBE_ROLE));
        }
        assert_eq!(
            t[0].config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        // --auth none: the server's own role (what it reads as anyway),
        // still without its password.
        let t = targets(&source, AuthMode::None).unwrap();
        assert_eq!(t[0].config.get_user(), Some("alice"));
        assert_eq!(t[0].config.get_password(), None);
    }

    #[test]
    fn files_have_no_database_to_probe() {
        let source = SourceConfig::Files {
            path: "/data".into(),
            partitions: 1,
        };
        assert!(targets(&source, AuthMode::None).unwrap().is_empty());
    }
}
