//! Authentication end to end: a flight-server with `--auth database` over
//! real PostgreSQL segments lets each user read exactly what the database
//! GRANTs it, through the Rust client and pyarrow.

use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor, HandshakeRequest, Ticket};
use base64::Engine as _;
use futures::TryStreamExt;
use hopper_tests::{cluster, python, segment_args, FlightServer};
use tonic::Code;

/// Rows of `secret` on each segment.
const ROWS_PER_SEGMENT: i64 = 25;

/// Two segments, each with `secret` (readable by `reader` only) and the
/// roles `reader` and `outsider`, both logging in with a password.
async fn segments() -> flight_server::cluster::LocalCluster {
    let c = cluster(2).await.unwrap();
    for i in 0..c.len() {
        let db = c.client(i).await.unwrap();
        let lo = i as i64 * 1000;
        db.batch_execute(&format!(
            "CREATE ROLE reader LOGIN PASSWORD 'reader-pw';
             CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw';
             CREATE TABLE secret (id int8, v text);
             INSERT INTO secret SELECT g, 'v' || g FROM generate_series({lo}, {lo} + {n} - 1) g;
             GRANT SELECT ON secret TO reader;",
            n = ROWS_PER_SEGMENT
        ))
        .await
        .unwrap();
    }
    c
}

fn server(c: &flight_server::cluster::LocalCluster, extra: &[&str]) -> FlightServer {
    let mut args = segment_args(c);
    args.extend(["--auth", "database"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    FlightServer::start(&args).unwrap()
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
    let mut raw = FlightServiceClient::new(channel(url).await);
    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    request
        .metadata_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    let response = raw.handshake(request).await?;
    let header = response
        .metadata()
        .get("authorization")
        .expect("the handshake answers with an authorization header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(header.starts_with("Bearer "), "{header}");
    Ok(header)
}

/// A Flight client that sends `bearer` (if any) on every call.
async fn client(url: &str, bearer: Option<&str>) -> FlightClient {
    let mut c = FlightClient::new(channel(url).await);
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

    // The outsider logs in fine, but the database refuses it the table
    // (PostgreSQL checks privileges when the query runs, i.e. at DoGet)…
    let outsider = handshake(&fs.url, "outsider", "outsider-pw").await.unwrap();
    let mut oc = client(&fs.url, Some(&outsider)).await;
    let e = match tickets(&mut oc, sql).await {
        Ok(own) => rows(&mut oc, &own).await.unwrap_err(),
        Err(e) => e,
    };
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
             WHERE application_name = 'hopper-flight-server' AND usename NOT IN ('reader', 'outsider')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(superuser_backends, 0);
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
    let py = python().expect("HOPPER_PYTHON is not set: run the tests through scripts/test.sh");
    let c = segments().await;
    let fs = server(&c, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/auth_read.py");
    let out = std::process::Command::new(&py)
        .args([
            script,
            &fs.url,
            "reader",
            "HOPPER_TEST_PASSWORD",
            "SELECT * FROM secret",
        ])
        .env("HOPPER_TEST_PASSWORD", "reader-pw")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["endpoints"], 2);
    assert_eq!(summary["rows"], 2 * ROWS_PER_SEGMENT);

    // pyarrow with a wrong password gets the server's refusal.
    let out = std::process::Command::new(&py)
        .args([
            script,
            &fs.url,
            "reader",
            "HOPPER_TEST_PASSWORD",
            "SELECT * FROM secret",
        ])
        .env("HOPPER_TEST_PASSWORD", "wrong")
        .output()
        .unwrap();
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
