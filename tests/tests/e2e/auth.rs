//! Authentication end to end: a flight-server with `--auth database` over
//! real PostgreSQL segments lets each user read exactly what the database
//! GRANTs it, through the Rust client and pyarrow.

use std::time::{Duration, Instant};

use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use futures::TryStreamExt;
use hopper_tests::run::{mop_train, spawn_mop_train, with_trainers, RUN_TIMEOUT};
use hopper_tests::{
    binary, cluster, handshake_on, python_json, python_script, segments_server, trainer_key_file,
    FlightServer, TrainerProcess, TRAINER_KEY_ENV,
};
use tonic::Code;

/// Rows of `secret` on each segment.
const ROWS_PER_SEGMENT: i64 = 25;

/// Two segments, each with `secret` (readable by `reader` and `auditor`)
/// and the roles `reader`, `auditor` and `outsider`, each logging in with a
/// password.
async fn segments() -> devcluster::LocalCluster {
    let c = cluster(2).await.unwrap();
    for i in 0..c.len() {
        let db = c.client(i).await.unwrap();
        let lo = i as i64 * 1000;
        db.batch_execute(&format!(
            "CREATE ROLE reader LOGIN PASSWORD 'reader-pw';
             CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw';
             CREATE ROLE auditor LOGIN PASSWORD 'auditor-pw';
             CREATE TABLE secret (id int8, v text);
             INSERT INTO secret SELECT g, 'v' || g FROM generate_series({lo}, {lo} + {n} - 1) g;
             GRANT SELECT ON secret TO reader, auditor;",
            n = ROWS_PER_SEGMENT
        ))
        .await
        .unwrap();
    }
    c
}

fn server(c: &devcluster::LocalCluster, extra: &[&str]) -> FlightServer {
    segments_server(c, "database", extra).unwrap()
}

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.replace("grpc+tcp://", "http://"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A Flight Handshake with Basic credentials, as pyarrow's
/// `authenticate_basic_token` sends it; the bearer header the server answers.
async fn handshake(url: &str, user: &str, password: &str) -> Result<String, tonic::Status> {
    handshake_on(channel(url).await, user, password).await
}

/// A Flight client that sends `bearer` (if any) on every call.
async fn client(url: &str, bearer: Option<&str>) -> FlightClient {
    client_on(channel(url).await, bearer)
}

fn client_on(channel: tonic::transport::Channel, bearer: Option<&str>) -> FlightClient {
    let mut c = FlightClient::new(channel);
    if let Some(b) = bearer {
        c.add_header("authorization", b).unwrap();
    }
    c
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other}"),
    }
}

async fn tickets(c: &mut FlightClient, sql: &str) -> Result<Vec<Ticket>, tonic::Status> {
    let info = c
        .get_flight_info(FlightDescriptor::new_cmd(sql.to_string()))
        .await
        .map_err(status)?;
    Ok(info
        .endpoint
        .into_iter()
        .map(|e| e.ticket.expect("endpoint has a ticket"))
        .collect())
}

async fn rows(c: &mut FlightClient, tickets: &[Ticket]) -> Result<usize, tonic::Status> {
    let mut n = 0;
    for t in tickets {
        let batches: Vec<_> = c
            .do_get(t.clone())
            .await
            .map_err(status)?
            .try_collect()
            .await
            .map_err(status)?;
        n += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    Ok(n)
}

#[tokio::test]
async fn the_database_checks_logins_and_its_grants_decide_what_each_user_reads() {
    let c = segments().await;
    let fs = server(&c, &[]);
    let sql = "SELECT id, v FROM secret";

    // A wrong password is refused by the database, at the handshake.
    let e = handshake(&fs.url, "reader", "wrong").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("reader"), "{e}");
    let e = handshake(&fs.url, "nobody", "x").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    // No token, or a made-up one: nothing but a pointer to the handshake.
    let e = tickets(&mut client(&fs.url, None).await, sql)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("handshake first"), "{e}");
    let e = tickets(&mut client(&fs.url, Some("Bearer forged.token")).await, sql)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    // The reader has SELECT on `secret` and reads every row of both segments.
    let reader = handshake(&fs.url, "reader", "reader-pw").await.unwrap();
    let mut rc = client(&fs.url, Some(&reader)).await;
    let reader_tickets = tickets(&mut rc, sql).await.unwrap();
    assert_eq!(reader_tickets.len(), 2);
    assert_eq!(
        rows(&mut rc, &reader_tickets).await.unwrap() as i64,
        2 * ROWS_PER_SEGMENT
    );

    // The outsider logs in fine, but the database refuses it the table,
    // already at planning (the server EXPLAINs the query as the user)…
    let outsider = handshake(&fs.url, "outsider", "outsider-pw").await.unwrap();
    let mut oc = client(&fs.url, Some(&outsider)).await;
    let e = tickets(&mut oc, sql).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("secret"), "{e}");
    // …and the reader's tickets read nothing for it.
    let e = rows(&mut oc, &reader_tickets).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    // Queries run as the user: the database sees who is asking.
    let who = tickets(&mut oc, "SELECT current_user::text AS u")
        .await
        .unwrap();
    let batches: Vec<_> = oc
        .do_get(who[0].clone())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let u = arrow_cast::display::array_value_to_string(batches[0].column(0), 0).unwrap();
    assert_eq!(u, "outsider");
    // The server's own connections never appear as the logged-in users.
    let db = c.client(0).await.unwrap();
    let superuser_backends: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'hopper-flight-server' \
               AND usename NOT IN ('reader', 'outsider', 'auditor')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(superuser_backends, 0);
}

#[tokio::test]
async fn a_server_started_without_auth_flags_asks_the_database() {
    // No --auth at all: what a deployment that names none gets.
    let c = segments().await;
    let args = hopper_tests::segment_args(&c);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fs = FlightServer::start_as_deployed(&args).unwrap();
    let sql = "SELECT id, v FROM secret";
    let e = tickets(&mut client(&fs.url, None).await, sql)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("handshake first"), "{e}");
    let e = handshake(&fs.url, "reader", "wrong").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let reader = handshake(&fs.url, "reader", "reader-pw").await.unwrap();
    let mut rc = client(&fs.url, Some(&reader)).await;
    let t = tickets(&mut rc, sql).await.unwrap();
    assert_eq!(
        rows(&mut rc, &t).await.unwrap() as i64,
        2 * ROWS_PER_SEGMENT
    );
    let outsider = handshake(&fs.url, "outsider", "outsider-pw").await.unwrap();
    let e = tickets(&mut client(&fs.url, Some(&outsider)).await, sql)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
}

#[tokio::test]
async fn a_ticket_replayed_by_another_user_with_the_same_grant_is_refused() {
    // The auditor may read `secret` too; the reader's tickets are still the
    // reader's: a ticket is bound to the user it was issued to, whatever
    // the other user may read.
    let c = segments().await;
    let fs = server(&c, &[]);
    let sql = "SELECT id, v FROM secret";
    let reader = handshake(&fs.url, "reader", "reader-pw").await.unwrap();
    let reader_tickets = tickets(&mut client(&fs.url, Some(&reader)).await, sql)
        .await
        .unwrap();
    let auditor = handshake(&fs.url, "auditor", "auditor-pw").await.unwrap();
    let mut ac = client(&fs.url, Some(&auditor)).await;
    for t in &reader_tickets {
        let e = rows(&mut ac, std::slice::from_ref(t)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        assert!(e.message().contains("another user"), "{e}");
    }
    // Its own tickets read every row.
    let own = tickets(&mut ac, sql).await.unwrap();
    assert_eq!(
        rows(&mut ac, &own).await.unwrap() as i64,
        2 * ROWS_PER_SEGMENT
    );
}

#[tokio::test]
async fn an_expired_bearer_token_is_refused_with_a_pointer_to_the_handshake() {
    let c = segments().await;
    let fs = server(&c, &["--token-ttl", "1"]);
    let bearer = handshake(&fs.url, "reader", "reader-pw").await.unwrap();
    let mut rc = client(&fs.url, Some(&bearer)).await;
    tickets(&mut rc, "SELECT 1 AS one").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        match tickets(&mut rc, "SELECT 1 AS one").await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => panic!("the token was still accepted after 10 s with --token-ttl 1"),
        }
    };
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("expired"), "{e}");
    // A new handshake gives a working token again.
    let fresh = handshake(&fs.url, "reader", "reader-pw").await.unwrap();
    tickets(&mut client(&fs.url, Some(&fresh)).await, "SELECT 1 AS one")
        .await
        .unwrap();
}

#[tokio::test]
async fn pyarrow_logs_in_with_authenticate_basic_token_and_reads_every_endpoint() {
    let c = segments().await;
    let fs = server(&c, &[]);
    let sql = "SELECT * FROM secret";
    let args: [&dyn AsRef<std::ffi::OsStr>; 4] =
        [&fs.url, &"reader", &"HOPPER_TEST_PASSWORD", &sql];
    let summary = python_json(
        "auth_read.py",
        &args,
        &[("HOPPER_TEST_PASSWORD", "reader-pw")],
    );
    assert_eq!(summary["endpoints"], 2);
    assert_eq!(summary["rows"], 2 * ROWS_PER_SEGMENT);

    // pyarrow with a wrong password gets the server's refusal.
    let out = python_script("auth_read.py", &args, &[("HOPPER_TEST_PASSWORD", "wrong")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unauthenticated") || err.contains("refused the login"),
        "{err}"
    );
}

#[test]
fn auth_none_is_refused_on_an_address_other_than_loopback() {
    let bin = hopper_tests::binary("flight-server").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin)
        .args(["--bind", "0.0.0.0:0", "--auth", "none", "--files"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--auth none is allowed only on a loopback address"),
        "{err}"
    );
}

/// A CA, a server certificate for 127.0.0.1 / localhost and a client
/// certificate, both signed by the CA, as PEM files in `dir`.
struct Certs {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: String,
    client_key: String,
}

fn make_certs(dir: &std::path::Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct subjects: with rcgen's default one for all, OpenSSL-based
    // clients (pyarrow) take the leaf for a self-signed certificate.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hopper test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["trainer".into()]);
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Certs {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert,
        client_key,
    }
}

/// A TLS channel to `url` (`grpc+tls://…`) trusting `ca` (none: no root at
/// all), presenting `identity` if given.
/// A flight-server with `--auth database` serving TLS with `certs`.
fn tls_server(c: &devcluster::LocalCluster, certs: &Certs, extra: &[&str]) -> FlightServer {
    let mut args = vec![
        "--tls-cert",
        certs.server_cert.to_str().unwrap(),
        "--tls-key",
        certs.server_key.to_str().unwrap(),
    ];
    args.extend(extra);
    server(c, &args)
}

async fn tls_channel(
    url: &str,
    ca: Option<&std::path::Path>,
    identity: Option<(&str, &str)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    }
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tonic::transport::Endpoint::from_shared(url.replace("grpc+tls://", "https://"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn over_tls_clients_that_trust_the_ca_read_and_others_are_refused() {
    let c = segments().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let fs = tls_server(&c, &certs, &[]);
    assert!(fs.url.starts_with("grpc+tls://"), "{}", fs.url);
    let sql = "SELECT id, v FROM secret";

    // The Rust client with the CA: log in and read every endpoint over TLS.
    let ch = tls_channel(&fs.url, Some(&certs.ca), None).await.unwrap();
    let bearer = handshake_on(ch.clone(), "reader", "reader-pw")
        .await
        .unwrap();
    let mut rc = client_on(ch, Some(&bearer));
    let t = tickets(&mut rc, sql).await.unwrap();
    assert_eq!(
        rows(&mut rc, &t).await.unwrap() as i64,
        2 * ROWS_PER_SEGMENT
    );

    // Without the CA the server's certificate is not trusted.
    let refused = match tls_channel(&fs.url, None, None).await {
        Err(_) => true,
        Ok(ch) => handshake_on(ch, "reader", "reader-pw").await.is_err(),
    };
    assert!(refused, "a client without the CA must not get through");
    // Plain TCP to a TLS server gets nowhere either.
    let plain = tonic::transport::Endpoint::from_shared(fs.url.replace("grpc+tls://", "http://"))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(handshake_on(ch, "reader", "reader-pw").await.is_err());
    }

    // pyarrow over TLS with the CA as its root.
    let summary = python_json(
        "auth_read.py",
        &[&fs.url, &"reader", &"HOPPER_TEST_PASSWORD", &sql, &certs.ca],
        &[("HOPPER_TEST_PASSWORD", "reader-pw")],
    );
    assert_eq!(summary["rows"], 2 * ROWS_PER_SEGMENT);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let c = segments().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let fs = tls_server(&c, &certs, &["--tls-client-ca", certs.ca.to_str().unwrap()]);
    let refused = match tls_channel(&fs.url, Some(&certs.ca), None).await {
        Err(_) => true,
        Ok(ch) => handshake_on(ch, "reader", "reader-pw").await.is_err(),
    };
    assert!(refused, "mTLS must refuse a client without a certificate");

    let ch = tls_channel(
        &fs.url,
        Some(&certs.ca),
        Some((&certs.client_cert, &certs.client_key)),
    )
    .await
    .unwrap();
    let bearer = handshake_on(ch.clone(), "reader", "reader-pw")
        .await
        .unwrap();
    let mut rc = client_on(ch, Some(&bearer));
    let t = tickets(&mut rc, "SELECT id FROM secret").await.unwrap();
    assert_eq!(
        rows(&mut rc, &t).await.unwrap() as i64,
        2 * ROWS_PER_SEGMENT
    );
}

/// `mop train` against a flight-server with `--auth database` over TLS:
/// the runner and the trainers it spawns log in as the granted user
/// (`HOPPER_FLIGHT_USER`, `HOPPER_PASSWORD`) and trust the server through
/// `HOPPER_TLS_CA`; a wrong password stops the run with a message naming
/// the login, and without the CA the run says which variable to set.
#[tokio::test]
async fn mop_train_logs_in_and_trains_over_tls_as_the_granted_user() {
    let c = segments().await;
    devcluster::load_criteo(&c, "criteo", 1200, 3)
        .await
        .unwrap();
    for i in 0..c.len() {
        c.client(i)
            .await
            .unwrap()
            .batch_execute("GRANT SELECT ON criteo TO reader")
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let fs = tls_server(&c, &certs, &[]);
    let out = dir.path().join("run");
    let config = dir.path().join("grid.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
flight = "{url}"
table = "criteo"

[train]
epochs = 1
seed = 5
threads = 1

[grid]
arch = [{{ kind = "log_reg" }}]
lr = [1e-2]
batch_size = [64]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
"#,
            url = fs.url,
            out = out.display()
        ),
    )
    .unwrap();
    let mop = |password: &str, ca: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(binary("mop").unwrap());
        cmd.args(["train", "--progress", "quiet", "--config"])
            .arg(&config)
            .env("HOPPER_FLIGHT_USER", "reader")
            .env("HOPPER_PASSWORD", password)
            .env_remove("HOPPER_TLS_CA")
            .stdin(std::process::Stdio::null());
        if let Some(ca) = ca {
            cmd.env("HOPPER_TLS_CA", ca);
        }
        cmd.output().unwrap()
    };

    let no_ca = mop("reader-pw", None);
    let err = String::from_utf8_lossy(&no_ca.stderr);
    assert!(
        !no_ca.status.success(),
        "trained without trusting the server"
    );
    assert!(err.contains("HOPPER_TLS_CA"), "{err}");

    let wrong = mop("wrong", Some(&certs.ca));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "trained with a wrong password");
    assert!(err.contains("reader"), "{err}");

    let ok = mop("reader-pw", Some(&certs.ca));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let models = results["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    let loss = models[0]["train_loss"].as_array().unwrap();
    assert_eq!(loss.len(), 1, "one epoch: {}", models[0]);
    assert!(loss[0].as_f64().unwrap().is_finite());

    // The same run over trainers that serve TLS themselves: the runner
    // dials them at https:// trusting the same CA.
    let trainers: Vec<TrainerProcess> = (0..c.len())
        .map(|_| {
            let t = TrainerProcess::start(
                "127.0.0.1:0",
                &[
                    "--tls-cert".as_ref(),
                    certs.server_cert.as_os_str(),
                    "--tls-key".as_ref(),
                    certs.server_key.as_os_str(),
                ],
                &[
                    ("HOPPER_FLIGHT_USER", "reader"),
                    ("HOPPER_PASSWORD", "reader-pw"),
                    ("HOPPER_TLS_CA", certs.ca.to_str().unwrap()),
                ],
            )
            .unwrap();
            assert!(t.address.starts_with("https://"), "{}", t.address);
            t
        })
        .collect();
    let text = with_trainers(&std::fs::read_to_string(&config).unwrap(), &trainers);
    let remote = dir.path().join("remote.toml");
    std::fs::write(&remote, text.replace("/run\"", "/remote\"")).unwrap();
    let ok = std::process::Command::new(binary("mop").unwrap())
        .args(["train", "--progress", "quiet", "--config"])
        .arg(&remote)
        .env("HOPPER_FLIGHT_USER", "reader")
        .env("HOPPER_PASSWORD", "reader-pw")
        .env("HOPPER_TLS_CA", &certs.ca)
        .env(TRAINER_KEY_ENV, trainer_key_file().unwrap())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("remote").join("results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        results["models"][0]["train_loss"], models[0]["train_loss"],
        "remote TLS trainers train the same model as spawned ones"
    );
}

/// Trainers that cannot reach each other still train the same models.
/// Here trainer 0 serves TLS under a CA only the runner trusts, so trainer 1
/// cannot fetch the states trainer 0 keeps: such a unit fails once, saying
/// what to set, the runner fetches the state itself, and from then on
/// states go through the runner. The weights equal those of a run whose
/// states hopped trainer to trainer.
#[tokio::test]
async fn trainers_that_cannot_reach_each_other_train_the_same_models_through_the_runner() {
    let c = segments().await;
    devcluster::load_criteo(&c, "criteo", 1200, 3)
        .await
        .unwrap();
    let fs = segments_server(&c, "none", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let config = |name: &str| {
        format!(
            r#"
[source]
flight = "{url}"
table = "criteo"

[train]
epochs = 2
seed = 5
threads = 1

[grid]
arch = [{{ kind = "log_reg" }}]
lr = [1e-2, 1e-3]
batch_size = [64]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
"#,
            url = fs.url,
            out = dir.path().join(name).display()
        )
    };
    // Neither trainer has HOPPER_TLS_CA (TrainerProcess passes on only what
    // it is given): trainer 1 cannot verify trainer 0.
    let tls = [
        "--tls-cert".as_ref(),
        certs.server_cert.as_os_str(),
        "--tls-key".as_ref(),
        certs.server_key.as_os_str(),
    ];
    let trainers = [
        TrainerProcess::start("127.0.0.1:0", &tls, &[]).unwrap(),
        TrainerProcess::start("127.0.0.1:0", &[], &[]).unwrap(),
    ];
    assert!(trainers[0].address.starts_with("https://"));
    let apart = dir.path().join("apart.toml");
    std::fs::write(&apart, with_trainers(&config("apart"), &trainers)).unwrap();
    let key = trainer_key_file().unwrap();
    let env = [
        ("HOPPER_TLS_CA", certs.ca.to_str().unwrap()),
        (TRAINER_KEY_ENV, key.to_str().unwrap()),
    ];
    let (mut mop, rx) = spawn_mop_train(&apart, &[], &env);
    let status = mop.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(status.success(), "mop train over trainers apart: {status}");
    let events: Vec<serde_json::Value> = rx.iter().collect();
    let event = |name: &'static str| events.iter().filter(move |v| v["event"] == name);
    let failed: Vec<_> = event("unit_failed").collect();
    assert!(
        failed
            .iter()
            .any(|v| v["error"].as_str().unwrap().contains("HOPPER_TLS_CA")),
        "a unit failed saying what trainer 1 lacks: {failed:?}"
    );
    assert_eq!(event("states_through_runner").count(), 1);
    let states = event("states")
        .next()
        .expect("the run says how states moved");
    assert!(states["sent"].as_u64().unwrap() > 0, "{states}");
    assert_eq!(event("unit").count(), 2 * 2 * 2, "every unit once");

    // The same run with trainers that reach each other: states hop directly.
    let spawned = dir.path().join("spawned.toml");
    std::fs::write(&spawned, config("spawned")).unwrap();
    mop_train(&spawned, &[]);
    hopper_tests::run::assert_same_models(
        &dir.path().join("apart"),
        &dir.path().join("spawned"),
        2,
    );
}
