//! Dialing a flight-server: locations to gRPC URIs, TLS from the
//! environment, and the Flight Handshake that logs a client in — or a
//! Bearer token from someone else's login ([`client_with`]): `mop`'s runner
//! logs in and its trainers read with its tokens.

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

/// The largest HTTP/2 frame this client accepts. A server may send a
/// stream's data in frames no larger than its client allows, and HTTP/2's
/// default is 16 KiB: a 2 MiB Flight message then takes 128 frames and as
/// many socket writes on the server and reads here. With 1 MiB frames the
/// client spent 40 % less CPU per row reading two segments, and the server
/// 13 % less (`data-plane --client-frame-size 1048576` against the
/// default: 0.30 → 0.18 and 0.86 → 0.75 µs).
const MAX_FRAME_SIZE: u32 = 1024 * 1024;

/// A channel to a flight-server.
pub async fn channel(location: &str) -> Result<Channel> {
    let uri = grpc_uri(location)?;
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| Error::Flight(format!("bad location {location}: {e}")))?
        .tcp_nodelay(true)
        .max_frame_size(MAX_FRAME_SIZE);
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

/// A Bearer token a flight-server issued at a login: the secret that lets
/// its holder read as the user who logged in, until it expires. `Debug`
/// hides it, and it has no `Display`: it reaches only the `authorization`
/// header and the runner's requests to its trainers.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer(String);

impl Bearer {
    /// A token as the server issued it (without the `Bearer ` scheme); it
    /// must be a valid header value.
    pub fn new(token: impl Into<String>) -> Result<Self> {
        let token = token.into();
        if token.is_empty()
            || format!("Bearer {token}")
                .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .is_err()
        {
            return Err(Error::Config(
                "a Bearer token must be a non-empty header value".into(),
            ));
        }
        Ok(Self(token))
    }

    /// The token itself, to hand on (never to print).
    pub fn secret(&self) -> &str {
        &self.0
    }

    fn header(&self) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| Error::Config("a Bearer token must be a valid header value".into()))
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// A Flight client with limits large enough for hopper's batches, logged in
/// as [`USER_ENV`] if it is set.
pub async fn client(location: &str) -> Result<FlightClient> {
    let mut c = FlightClient::new(channel(location).await?);
    if let Some(bearer) = handshake(&mut c, location).await? {
        c.metadata_mut().insert("authorization", bearer.header()?);
    }
    Ok(c)
}

/// A Flight client that reads with `bearer`, a token someone else got at
/// its login to `location` (the runner hands its trainers its own), instead
/// of logging in; without one, [`client`].
pub async fn client_with(location: &str, bearer: Option<&Bearer>) -> Result<FlightClient> {
    let Some(bearer) = bearer else {
        return client(location).await;
    };
    let mut c = FlightClient::new(channel(location).await?);
    c.metadata_mut().insert("authorization", bearer.header()?);
    Ok(c)
}

/// Logs in to the flight-server at `location` as [`USER_ENV`] and returns
/// the Bearer token it issued, to hand to [`client_with`]; `None` when
/// [`USER_ENV`] is unset or the server does not authenticate.
pub async fn login(location: &str) -> Result<Option<Bearer>> {
    let mut c = FlightClient::new(channel(location).await?);
    handshake(&mut c, location).await
}

/// The Flight Handshake with Basic credentials ([`USER_ENV`]), answered
/// with the server's Bearer token. Each login is the server's to check
/// against the database; a token is valid on the server that issued it.
async fn handshake(c: &mut FlightClient, location: &str) -> Result<Option<Bearer>> {
    let Some(user) = std::env::var(USER_ENV).ok().filter(|u| !u.is_empty()) else {
        return Ok(None);
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
    let basic = format!("Basic {basic}")
        .parse::<tonic::metadata::MetadataValue<_>>()
        .map_err(|_| Error::Config(format!("{USER_ENV}: not a valid header value")))?;
    c.metadata_mut().insert("authorization", basic);
    let token = c.handshake(bytes::Bytes::new()).await;
    // The Basic credentials go with the handshake only.
    c.metadata_mut().remove("authorization");
    let token = token.map_err(|e| match e {
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
        return Ok(None);
    }
    Bearer::new(token).map(Some).map_err(|_| {
        Error::Flight(format!(
            "{location} answered the login with a token that is no header value"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_prints_redacted_and_must_be_a_header_value() {
        let b = Bearer::new("abc.def").unwrap();
        assert_eq!(b.secret(), "abc.def");
        assert_eq!(format!("{b:?}"), "Bearer(<redacted>)");
        assert!(Bearer::new("").is_err());
        assert!(Bearer::new("a\nb").is_err());
    }
}
