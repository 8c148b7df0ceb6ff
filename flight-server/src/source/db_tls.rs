//! TLS to the database: libpq's `sslmode` and `sslrootcert`, over rustls.
//!
//! Clusters whose `pg_hba.conf` has only `hostssl` lines take no plaintext
//! connection, and a password (or its SCRAM proof) should not cross a
//! network in the clear. libpq's connection strings say how to connect
//! with two parameters; tokio-postgres understands `sslmode` only as
//! `disable | prefer | require` and knows no `sslrootcert`, so
//! [`DbUrl::parse`] takes both out of the URL (`?sslmode=…&sslrootcert=…`)
//! or key=value string before tokio-postgres reads the rest, and
//! [`DbTls::connect`] does what libpq does with them:
//!
//! ```text
//!  sslmode       TLS                         the database's certificate
//!  disable       never                       -
//!  allow         plaintext first; TLS if     not checked
//!                pg_hba refuses plaintext
//!  prefer        TLS first; plaintext if the  not checked
//!  (default)     server has no TLS, the
//!                handshake fails or pg_hba
//!                refuses TLS
//!  require       always                      not checked
//!  verify-ca     always                      signed by a CA in sslrootcert
//!  verify-full   always                      signed by a CA in sslrootcert, and
//!                                            carries the URL's host name
//! ```
//!
//! As in libpq, an `sslrootcert` given with `allow`, `prefer` or `require`
//! makes the certificate checked as with `verify-ca`. Unlike libpq, hopper
//! reads no default root file (`~/.postgresql/root.crt`) and no system
//! store: `verify-ca` and `verify-full` need `sslrootcert`, and say so.
//! Host names are matched against the certificate's subjectAltName entries
//! (DNS names, IP addresses), not its common name.
//!
//! The connector is `tokio-postgres-rustls` over a rustls configuration
//! whose certificate verifier is the table above; handshake signatures are
//! always checked, so even `require` talks to whoever holds the key of the
//! certificate it was shown. The connector also offers SCRAM channel
//! binding (`tls-server-end-point`), which tokio-postgres uses when the
//! server offers `SCRAM-SHA-256-PLUS`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// libpq's `sslmode`: whether and how connections to the database use TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plaintext; TLS only if the server refuses plaintext.
    Allow,
    /// TLS when the server offers it, else plaintext (libpq's default).
    Prefer,
    /// TLS always; the certificate is not checked (unless `sslrootcert`).
    Require,
    /// TLS always; the certificate must chain to `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// Every mode, in libpq's order of strictness.
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The mode's name in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database connection string split in two: what tokio-postgres reads,
/// and how connections use TLS.
#[derive(Clone, Debug)]
pub struct DbUrl {
    /// The connection parameters without `sslmode` and `sslrootcert`
    /// (its `ssl_mode` is the first attempt's).
    pub config: Config,
    /// How to connect with it.
    pub tls: DbTls,
}

impl DbUrl {
    /// Parses a libpq URL (`postgresql://…?sslmode=verify-full&sslrootcert=ca.pem`)
    /// or key=value string. `what` names where it came from (the flag)
    /// in the [`Error::Config`] that an unknown `sslmode`, an unreadable
    /// `sslrootcert` or a malformed string gives.
    pub fn parse(url: &str, what: &str) -> Result<Self> {
        let split = split_tls_params(url);
        let mut config: Config = split.rest.parse().map_err(|e: tokio_postgres::Error| {
            // "invalid connection string" says what only with its cause.
            match std::error::Error::source(&e) {
                Some(cause) => Error::Config(format!("{what}: {e}: {cause}")),
                None => Error::Config(format!("{what}: {e}")),
            }
        })?;
        let mode = match split.sslmode.as_deref() {
            None => SslMode::Prefer,
            Some(name) => SslMode::ALL
                .into_iter()
                .find(|m| m.as_str() == name)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{what}: sslmode={name:?} is not a libpq sslmode; use one of {}",
                        SslMode::ALL.map(SslMode::as_str).join(", ")
                    ))
                })?,
        };
        let root_cert = split.sslrootcert.map(PathBuf::from);
        let tls = DbTls::new(mode, root_cert.as_deref(), what)?;
        config.ssl_mode(tls.first_attempt());
        Ok(DbUrl { config, tls })
    }
}

/// How connections to one database use TLS: an [`SslMode`] and the
/// connector that enforces it. Cheap to clone (the rustls configuration is
/// shared). Also a [`MakeTlsConnect`], for `CancelToken::cancel_query`.
#[derive(Clone)]
pub struct DbTls {
    mode: SslMode,
    connector: MakeRustlsConnect,
}

impl fmt::Debug for DbTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbTls").field("mode", &self.mode).finish()
    }
}

/// A connection opened by [`DbTls::connect`], to be driven on a task.
pub type DbConnection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

impl DbTls {
    /// `mode`, trusting the CA certificates in the PEM file `root_cert`
    /// (required for `verify-ca` and `verify-full`).
    pub fn new(mode: SslMode, root_cert: Option<&Path>, what: &str) -> Result<Self> {
        let roots = match root_cert {
            Some(path) => Some(read_roots(path, what)?),
            None if mode.verifies() => {
                return Err(Error::Config(format!(
                    "{what}: sslmode={mode} needs sslrootcert=PATH, a PEM file with the CA \
                     certificate that signed the database's certificate (hopper reads no \
                     default root file)"
                )))
            }
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Verifier {
            roots,
            check_name: mode == SslMode::VerifyFull,
            provider: provider.clone(),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("rustls protocol versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What libpq 17 sends; servers that predate it ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(DbTls {
            mode,
            connector: MakeRustlsConnect::new(config),
        })
    }

    /// The configured `sslmode`.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The rustls connector, for sessions hopper speaks the protocol on
    /// itself (`source::wire`): the same verifier and roots.
    pub(crate) fn rustls(&self) -> &MakeRustlsConnect {
        &self.connector
    }

    /// The wire mode of the first attempt: what tokio-postgres is told.
    fn first_attempt(&self) -> WireMode {
        match self.mode {
            SslMode::Disable | SslMode::Allow => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        }
    }

    /// Connects with `config` (its own `ssl_mode` is ignored), falling back
    /// between TLS and plaintext where the mode allows, as libpq does. The
    /// error is the last attempt's.
    pub async fn connect(
        &self,
        config: &Config,
    ) -> Result<(Client, DbConnection), tokio_postgres::Error> {
        let outcome = self.attempt(config, self.first_attempt()).await;
        let retry = match (&outcome, self.mode) {
            (Err(e), SslMode::Allow) if refused_by_hba(e) => Some(WireMode::Require),
            (Err(e), SslMode::Prefer) if refused_by_hba(e) || tls_failed(e) => {
                Some(WireMode::Disable)
            }
            _ => None,
        };
        let (Some(retry), Err(e)) = (retry, &outcome) else {
            return outcome;
        };
        tracing::debug!(sslmode = %self.mode, error = %e, retry = ?retry, "connecting again");
        self.attempt(config, retry).await
    }

    async fn attempt(
        &self,
        config: &Config,
        mode: WireMode,
    ) -> Result<(Client, DbConnection), tokio_postgres::Error> {
        if config.get_ssl_mode() == mode {
            return config.connect(self.connector.clone()).await;
        }
        let mut config = config.clone();
        config.ssl_mode(mode);
        config.connect(self.connector.clone()).await
    }
}

impl MakeTlsConnect<Socket> for DbTls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        MakeTlsConnect::<Socket>::make_tls_connect(&mut self.connector, domain)
    }
}

/// The server's pg_hba refused this kind of connection (SQLSTATE 28000:
/// "no pg_hba.conf entry for … no encryption"): what libpq retries the
/// other way under `allow` and `prefer`.
fn refused_by_hba(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
}

/// The TLS handshake itself failed (not the network under it).
fn tls_failed(e: &tokio_postgres::Error) -> bool {
    super::tls_refusal::rustls_error(e).is_some()
}

/// The CA certificates of the PEM file `path`.
fn read_roots(path: &Path, what: &str) -> Result<Arc<RootCertStore>> {
    let bad = |why: String| {
        Error::Config(format!(
            "{what}: sslrootcert={}: {why}; give a PEM file with the CA certificate that \
             signed the database's certificate",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad("it holds no CERTIFICATE block".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("a certificate in it is invalid ({e})")))?;
    }
    Ok(Arc::new(roots))
}

/// The certificate check of an [`SslMode`]: none without roots; with them
/// the chain, and with `check_name` the host name too. Handshake
/// signatures are always verified.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A connection string with `sslmode` and `sslrootcert` taken out.
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    /// Everything else, byte for byte.
    rest: String,
    /// The last `sslmode` given, decoded.
    sslmode: Option<String>,
    /// The last `sslrootcert` given, decoded.
    sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a key=value
/// string. A string this cannot read is left whole, for tokio-postgres to
/// report what is wrong with it.
fn split_tls_params(url: &str) -> Split {
    let whole = || Split {
        rest: url.to_owned(),
        ..Split::default()
    };
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|p| url.starts_with(p));
    let split = if is_url {
        split_query(url)
    } else {
        split_key_values(url)
    };
    split.unwrap_or_else(whole)
}

fn split_query(url: &str) -> Option<Split> {
    let Some((base, query)) = url.split_once('?') else {
        return Some(Split {
            rest: url.to_owned(),
            ..Split::default()
        });
    };
    let mut split = Split::default();
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=')?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|v| v.into_owned())
        };
        match decode(key)?.as_str() {
            "sslmode" => split.sslmode = Some(decode(value)?),
            "sslrootcert" => split.sslrootcert = Some(decode(value)?),
            _ => kept.push(pair),
        }
    }
    split.rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Some(split)
}

/// libpq's key=value syntax, as tokio-postgres reads it: `key = value`,
/// values bare or in single quotes, backslash escaping the next character.
fn split_key_values(s: &str) -> Option<Split> {
    let mut split = Split::default();
    let mut rest = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key_end = s.len();
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                key_end = i;
                break;
            }
            chars.next();
        }
        let key = &s[start..key_end];
        skip_ws(&mut chars);
        chars.next_if(|&(_, c)| c == '=')?;
        skip_ws(&mut chars);
        let quoted = chars.next_if(|&(_, c)| c == '\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some((_, '\'')) if quoted => break,
                Some((_, c)) if !quoted && c.is_whitespace() => break,
                Some((_, '\\')) => value.push(chars.next()?.1),
                Some((_, c)) => value.push(c),
                None if quoted => return None,
                None => break,
            }
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        match key {
            "sslmode" => split.sslmode = Some(value),
            "sslrootcert" => split.sslrootcert = Some(value),
            _ => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(s[start..end].trim_end());
            }
        }
    }
    split.rest = rest;
    Some(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, Option<String>, Option<String>) {
        let s = split_tls_params(url);
        (s.rest, s.sslmode, s.sslrootcert)
    }

    #[test]
    fn url_query_loses_only_the_tls_parameters() {
        assert_eq!(
            split("postgresql://h:5432/db?sslmode=verify-full&sslrootcert=/p/ca.pem"),
            (
                "postgresql://h:5432/db".into(),
                Some("verify-full".into()),
                Some("/p/ca.pem".into())
            )
        );
        assert_eq!(
            split("postgres://u@h/db?connect_timeout=5&sslmode=require&application_name=x"),
            (
                "postgres://u@h/db?connect_timeout=5&application_name=x".into(),
                Some("require".into()),
                None
            )
        );
        // Percent-encoded values (and keys) are decoded; the rest keeps its bytes.
        assert_eq!(
            split("postgresql://h/db?options=-c%20x%3Dy&sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem"),
            (
                "postgresql://h/db?options=-c%20x%3Dy".into(),
                None,
                Some("/etc/ca dir/ca.pem".into())
            )
        );
        assert_eq!(
            split("postgresql://h/db"),
            ("postgresql://h/db".into(), None, None)
        );
    }

    #[test]
    fn key_values_lose_only_the_tls_parameters() {
        assert_eq!(
            split("host=h port=5 sslmode=verify-ca sslrootcert='/a b/c\\'s.pem' dbname=d"),
            (
                "host=h port=5 dbname=d".into(),
                Some("verify-ca".into()),
                Some("/a b/c's.pem".into())
            )
        );
        assert_eq!(
            split("  sslmode = disable   host=h options='-c a=b'"),
            (
                "host=h options='-c a=b'".into(),
                Some("disable".into()),
                None
            )
        );
        // The last one given wins, as in libpq.
        assert_eq!(
            split("sslmode=require sslmode=verify-full").1.as_deref(),
            Some("verify-full")
        );
        // Malformed strings are left to tokio-postgres to explain.
        assert_eq!(split("host='h").0, "host='h");
    }

    #[test]
    fn the_default_is_prefer_and_the_rest_reaches_tokio_postgres() {
        let url = DbUrl::parse("postgresql://u@h:6543/db?connect_timeout=7", "--segment").unwrap();
        assert_eq!(url.tls.mode(), SslMode::Prefer);
        assert_eq!(url.config.get_ssl_mode(), WireMode::Prefer);
        assert_eq!(url.config.get_ports(), [6543]);
        assert_eq!(url.config.get_user(), Some("u"));
        assert_eq!(
            url.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        for (mode, wire) in [
            ("disable", WireMode::Disable),
            ("allow", WireMode::Disable),
            ("prefer", WireMode::Prefer),
            ("require", WireMode::Require),
        ] {
            let url = DbUrl::parse(&format!("host=h sslmode={mode}"), "--segment").unwrap();
            assert_eq!(url.tls.mode().as_str(), mode);
            assert_eq!(url.config.get_ssl_mode(), wire, "{mode}");
        }
    }

    #[test]
    fn an_unknown_sslmode_is_a_configuration_error_naming_the_flag_and_the_choices() {
        let e = DbUrl::parse("postgresql://h/db?sslmode=verify_full", "--greenplum").unwrap_err();
        let Error::Config(m) = e else { panic!("{e:?}") };
        assert!(m.starts_with("--greenplum: "), "{m}");
        assert!(m.contains("\"verify_full\""), "{m}");
        assert!(
            m.contains("disable, allow, prefer, require, verify-ca, verify-full"),
            "{m}"
        );
    }

    #[test]
    fn verify_modes_need_a_readable_pem_sslrootcert() {
        for mode in ["verify-ca", "verify-full"] {
            let e = DbUrl::parse(&format!("host=h sslmode={mode}"), "--segment").unwrap_err();
            assert!(
                matches!(&e, Error::Config(m) if m.contains("needs sslrootcert")),
                "{e}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = DbUrl::parse(
            &format!("host=h sslmode=require sslrootcert={}", missing.display()),
            "--segment",
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Config(m) if m.contains("missing.pem") && m.contains("cannot read")),
            "{e}"
        );
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = DbUrl::parse(
            &format!(
                "host=h sslmode=verify-full sslrootcert={}",
                not_pem.display()
            ),
            "--segment",
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Config(m) if m.contains("no CERTIFICATE")),
            "{e}"
        );
    }

    #[test]
    fn a_pem_ca_makes_a_verifying_connector() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        let url = DbUrl::parse(
            &format!(
                "postgresql://h/db?sslrootcert={}&sslmode=verify-full",
                path.display()
            ),
            "--segment",
        )
        .unwrap();
        assert_eq!(url.tls.mode(), SslMode::VerifyFull);
        assert_eq!(url.config.get_ssl_mode(), WireMode::Require);
    }

    #[test]
    fn tokio_postgres_errors_name_the_flag() {
        let e = DbUrl::parse("host=h bogus=1 sslmode=require", "--segment").unwrap_err();
        assert!(
            matches!(&e, Error::Config(m) if m.starts_with("--segment: ") && m.contains("bogus")),
            "{e}"
        );
    }
}
