//! Dialing a flight-server: locations to gRPC URIs, TLS from the
//! environment, and the Flight Handshake that logs a client in.

use std::path::PathBuf;

use arrow_flight::FlightClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};

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
    crate::tls::ClientTls {
        ca: Some(ca),
        identity,
        domain: None,
    }
    .config()
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
