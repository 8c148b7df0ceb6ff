//! What a failed database connection says about TLS, in words that say
//! what to fix: a refused certificate, a database without TLS, a pg_hba.conf
//! line that wants (or refuses) encryption. Read by the error mapping
//! (`crate::error`) and by the TLS connector ([`super::db_tls`]), and
//! depending on neither.

/// The rustls error inside a failed connection, if TLS is why it failed.
pub(crate) fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    // tokio-rustls reports rustls errors as io::Error(InvalidData, rustls::Error);
    // io::Error's own `source` skips the error it wraps, so look inside.
    let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Why a connection failed at TLS, in words that say what to fix: the
/// database's certificate was refused, or the server takes no TLS. `None`
/// for anything else (a network failure during the handshake included).
pub fn refusal(e: &tokio_postgres::Error) -> Option<String> {
    if let Some(tls) = rustls_error(e) {
        use rustls::CertificateError as C;
        let hint = match tls {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                "the database's certificate is not signed by a CA in the URL's sslrootcert: \
                 give the CA that signed it"
            }
            rustls::Error::InvalidCertificate(C::NotValidForName)
            | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
                "sslmode=verify-full checks that the database's certificate names the URL's \
                 host: connect by a name the certificate carries, or reissue it with this one"
            }
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => "the database's certificate is outside its validity period: renew it",
            rustls::Error::InvalidCertificate(_) => {
                "the database's certificate was refused: check its ssl_cert_file and the URL's \
                 sslrootcert"
            }
            _ => "the TLS handshake with the database failed: check its ssl settings",
        };
        return Some(format!("TLS to the database failed: {tls}; {hint}"));
    }
    // tokio-postgres says so in the error's cause, a plain message.
    let cause = std::error::Error::source(e)?.to_string();
    cause.contains("server does not support TLS").then(|| {
        format!(
            "{e}: {cause}: the URL's sslmode asks for TLS, which the database does not \
             offer (ssl = off): turn ssl on there, or use sslmode=prefer or disable"
        )
    })
}

/// What to change when pg_hba.conf refused a connection for its use of TLS
/// ("no pg_hba.conf entry for host …, no encryption"): the URL's sslmode.
pub fn hba_hint(db: &tokio_postgres::error::DbError) -> Option<&'static str> {
    hba_hint_for(db.message())
}

/// [`hba_hint`] for the message `m` of a refusal a session read at the
/// protocol level received.
pub fn hba_hint_for(m: &str) -> Option<&'static str> {
    if !m.starts_with("no pg_hba.conf entry") {
        return None;
    }
    if m.ends_with("no encryption") {
        Some(
            "; the database takes this connection only over TLS: ask for it in the URL \
             with sslmode=verify-full and sslrootcert=CA.pem (or sslmode=require)",
        )
    } else if m.ends_with("SSL encryption") {
        Some("; the database takes this connection only without TLS: sslmode=prefer or disable")
    } else {
        None
    }
}
