//! TLS to the database end to end: a real PostgreSQL segment that takes TCP
//! connections over TLS only (`ssl = on`, `hostssl` lines only in
//! pg_hba.conf), and flight-servers whose `--segment` URLs ask for it with
//! libpq's `sslmode` and `sslrootcert`. Callers log in and read with pyarrow
//! (`--auth database`), so the TLS sessions are the callers' own.

use std::path::{Path, PathBuf};

use hopper_tests::{binary, cluster, python_script, FlightServer};

/// Rows of `t` on the segment.
const ROWS: i64 = 40;

/// Rows of `t` the session may see only when it is encrypted: the count
/// proves the flight-server's session to the segment is TLS.
const SQL: &str =
    "SELECT id FROM t WHERE (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())";

/// A test CA.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// Its certificate, the file a URL's `sslrootcert` names.
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for `names` and its key, as PEM.
    fn server_cert(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// One segment that takes TCP over TLS only, with a certificate for
/// 127.0.0.1 signed by a test CA (its PEM in the returned directory); the
/// role `reader` logs in with a password and may read `t`.
async fn tls_only_segment() -> (tempfile::TempDir, Ca, devcluster::LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "segment-ca");
    let c = cluster(1).await.unwrap();
    c.client(0)
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE ROLE reader LOGIN PASSWORD 'reader-pw';
             CREATE TABLE t AS SELECT g::int8 AS id FROM generate_series(1, {ROWS}) g;
             GRANT SELECT ON t TO reader;"
        ))
        .await
        .unwrap();
    let (cert, key) = ca.server_cert(&["127.0.0.1"]);
    c.require_tls(0, &cert, &key).await.unwrap();
    (dir, ca, c)
}

/// A flight-server with `--auth database` over the one segment `url`.
fn server(url: &str) -> FlightServer {
    FlightServer::start(&["--segment", url, "--auth", "database"]).unwrap()
}

/// `postgresql://HOST:PORT/hopper` with `params` as its query.
fn url(c: &devcluster::LocalCluster, host: &str, params: &str) -> String {
    let sep = if params.is_empty() { "" } else { "?" };
    format!(
        "postgresql://{host}:{}/{}{sep}{params}",
        c.port(0),
        devcluster::DATABASE
    )
}

/// pyarrow logs in as `reader` and reads [`SQL`].
fn pyarrow_read(fs: &FlightServer) -> std::process::Output {
    let args: [&dyn AsRef<std::ffi::OsStr>; 4] =
        [&fs.url, &"reader", &"HOPPER_TEST_PASSWORD", &SQL];
    python_script(
        "auth_read.py",
        &args,
        &[("HOPPER_TEST_PASSWORD", "reader-pw")],
    )
}

/// The rows pyarrow read as `reader`.
fn read_as_reader(fs: &FlightServer) -> i64 {
    let out = pyarrow_read(fs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the read failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    summary["rows"].as_i64().unwrap()
}

/// What pyarrow printed when its login as `reader` failed, as it must.
fn refused_login(fs: &FlightServer) -> String {
    let out = pyarrow_read(fs);
    assert!(!out.status.success(), "the login was not refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn verify_full_with_the_segments_ca_logs_in_and_reads_over_tls_only() {
    let (_dir, ca, c) = tls_only_segment().await;
    let root = ca.pem.display();

    let fs = server(&url(
        &c,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ));
    assert_eq!(read_as_reader(&fs), ROWS);
    drop(fs);

    // The key=value form says the same.
    let port = c.port(0);
    let fs = server(&format!(
        "host=127.0.0.1 port={port} dbname=hopper sslmode=verify-full sslrootcert='{root}'"
    ));
    assert_eq!(read_as_reader(&fs), ROWS);
    drop(fs);

    // Encryption without verification: `require`, and libpq's default
    // `prefer`, which a TLS-only server answers with TLS.
    for params in ["sslmode=require", ""] {
        let fs = server(&url(&c, "127.0.0.1", params));
        assert_eq!(read_as_reader(&fs), ROWS, "{params:?}");
    }
}

#[tokio::test]
async fn sslmode_disable_is_refused_by_a_tls_only_segments_pg_hba_not_taken_for_an_outage() {
    let (_dir, _ca, c) = tls_only_segment().await;

    let fs = server(&url(&c, "127.0.0.1", "sslmode=disable"));
    let err = refused_login(&fs);
    assert!(err.contains("no pg_hba.conf entry"), "{err}");
    assert!(err.contains("no encryption"), "{err}");
    assert!(
        err.contains("only over TLS: ask for it in the URL with sslmode="),
        "{err}"
    );
    assert!(err.contains("FlightUnauthenticatedError"), "{err}");
    assert!(!err.contains("Unavailable"), "{err}");
}

#[tokio::test]
async fn verify_full_refuses_another_cas_certificate_or_another_host_naming_the_problem() {
    let (dir, ca, c) = tls_only_segment().await;
    let other = Ca::new(dir.path(), "other-ca");

    // A certificate the URL's CA did not sign.
    let fs = server(&url(
        &c,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", other.pem.display()),
    ));
    let err = refused_login(&fs);
    assert!(err.contains("configuration: "), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(
        err.contains("not signed by a CA in the URL's sslrootcert"),
        "{err}"
    );
    drop(fs);

    // The right CA, but the certificate names 127.0.0.1 and the URL's host
    // is `localhost` (dialled at 127.0.0.1): verify-full refuses it,
    // verify-ca does not check names.
    let named = |mode: &str| {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} dbname=hopper sslmode={mode} \
             sslrootcert={}",
            c.port(0),
            ca.pem.display()
        )
    };
    let fs = server(&named("verify-full"));
    let err = refused_login(&fs);
    assert!(
        err.contains("certificate not valid for name \"localhost\""),
        "{err}"
    );
    assert!(err.contains("names the URL's host"), "{err}");
    drop(fs);
    let fs = server(&named("verify-ca"));
    assert_eq!(read_as_reader(&fs), ROWS);
}

#[tokio::test]
async fn sslmode_require_of_a_segment_without_tls_says_the_database_offers_none() {
    let c = cluster(1).await.unwrap();
    c.client(0)
        .await
        .unwrap()
        .batch_execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
        .await
        .unwrap();
    let fs = server(&url(&c, "127.0.0.1", "sslmode=require"));
    let err = refused_login(&fs);
    assert!(err.contains("configuration: "), "{err}");
    assert!(err.contains("does not offer"), "{err}");
}

#[test]
fn an_unknown_sslmode_or_a_missing_root_certificate_is_a_configuration_error_at_start() {
    let bin = binary("flight-server").unwrap();
    let start = |url: &str| {
        let out = std::process::Command::new(&bin)
            .args([
                "--bind",
                "127.0.0.1:0",
                "--auth",
                "database",
                "--segment",
                url,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url}: the server started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = start("postgresql://127.0.0.1:1/hopper?sslmode=verify_full");
    assert!(
        err.contains("configuration: segment 0 (--segment): sslmode=\"verify_full\""),
        "{err}"
    );
    assert!(err.contains("verify-ca, verify-full"), "{err}");
    let err = start("host=127.0.0.1 port=1 sslmode=verify-ca");
    assert!(err.contains("configuration: "), "{err}");
    assert!(err.contains("needs sslrootcert"), "{err}");
    let err = start("host=127.0.0.1 port=1 sslmode=verify-full sslrootcert=/nonexistent/ca.pem");
    assert!(err.contains("/nonexistent/ca.pem: cannot read it"), "{err}");
}
