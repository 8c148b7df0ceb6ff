//! TLS for the Flight server (and for any hopper gRPC server or client):
//! PEM files in, tonic's rustls configuration out.
//!
//! A server presents `--tls-cert`/`--tls-key`; with `--tls-client-ca` it
//! also asks every client for a certificate signed by that CA and refuses
//! connections without one (mutual TLS). Clients trust the CA files they
//! are given; no system root store is consulted (hopper's servers carry
//! certificates from the deployment's own CA).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

/// The PEM files of a TLS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// Certificate chain presented to clients.
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
    /// CA that client certificates must be signed by; `None` accepts
    /// clients without a certificate.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// tonic's server configuration for these files.
    pub fn config(&self) -> Result<ServerTlsConfig> {
        let identity = Identity::from_pem(
            read(&self.cert, "--tls-cert")?,
            read(&self.key, "--tls-key")?,
        );
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca, "--tls-client-ca")?));
        }
        Ok(config)
    }

    /// The server TLS of three optional flags: none, or cert and key
    /// together (a client CA needs them).
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> Result<Option<Self>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                client_ca: client_ca.map(Path::to_path_buf),
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            _ => Err(Error::Config(
                "TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)"
                    .into(),
            )),
        }
    }
}

/// The PEM files of a TLS client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA the server's certificate must be signed by.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for servers that require one (mTLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name to check the server's certificate against, if not the host dialed.
    pub domain: Option<String>,
}

impl ClientTls {
    /// tonic's client configuration for these files.
    pub fn config(&self) -> Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca, "tls_ca")?));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read(cert, "tls_cert")?,
                read(key, "tls_key")?,
            ));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("reading {what} {}: {e}", path.display())))
}
