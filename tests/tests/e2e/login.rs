//! A login proves a password: a flight-server with `--auth database` over a
//! real PostgreSQL segment whose pg_hba.conf trusts the server's host (as
//! initdb's defaults do) refuses a Handshake the database never checked,
//! refuses superusers unless asked, and shrugs off a flood of bogus
//! handshakes without taking the database's connection slots.

use std::net::IpAddr;

use hopper_tests::{channel_from, cluster, handshake_on, segments_server, FlightServer};
use tonic::Code;

/// One segment with `reader` (password checked), `trusted` (pg_hba trusts
/// it from 127.0.0.1, the server's host) and `boss` (a superuser with a
/// password). The harness's own superuser `hopper` is trusted too.
async fn segment() -> devcluster::LocalCluster {
    let c = cluster(1).await.unwrap();
    let db = c.client(0).await.unwrap();
    db.batch_execute(
        "CREATE ROLE reader LOGIN PASSWORD 'reader-pw';
         CREATE ROLE trusted LOGIN PASSWORD 'trusted-pw';
         CREATE ROLE boss SUPERUSER LOGIN PASSWORD 'boss-pw';",
    )
    .await
    .unwrap();
    // The trust line goes first, as initdb's and gpinitsystem's do.
    let hba = c.data_dir(0).join("pg_hba.conf");
    let rest = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all trusted 127.0.0.1/32 trust\n{rest}")).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    c
}

fn server(c: &devcluster::LocalCluster, extra: &[&str]) -> FlightServer {
    segments_server(c, "database", extra).unwrap()
}

async fn login(url: &str, from: &str, user: &str, password: &str) -> Result<String, tonic::Status> {
    let local: IpAddr = from.parse().unwrap();
    handshake_on(
        channel_from(url, Some(local)).await.unwrap(),
        user,
        password,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_refused_where_pg_hba_trusts_the_servers_host() {
    let c = segment().await;
    let s = server(&c, &[]);

    // A role whose password the database checks: the right one logs in.
    login(&s.url, "127.0.0.1", "reader", "reader-pw")
        .await
        .expect("reader logs in with its password");
    let wrong = login(&s.url, "127.0.0.1", "reader", "nope")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong}");

    // A role pg_hba trusts from the server's host: the database would let
    // any password in, so no password proves anything — wrong or right.
    for password in ["anything", "trusted-pw"] {
        let e = login(&s.url, "127.0.0.2", "trusted", password)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        let m = e.message();
        assert!(m.contains("without a password"), "{m}");
        assert!(m.contains("pg_hba.conf"), "{m}");
        assert!(m.contains("127.0.0.1"), "names the server's address: {m}");
        assert!(m.contains("scram-sha-256"), "says what to change: {m}");
    }
    // The harness's superuser, trusted like initdb's default.
    let e = login(&s.url, "127.0.0.3", "hopper", "anything")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    // A superuser with a real password: refused unless asked for.
    let e = login(&s.url, "127.0.0.3", "boss", "boss-pw")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("--allow-superuser"), "{e}");
    let allowing = server(&c, &["--allow-superuser"]);
    login(&allowing.url, "127.0.0.1", "boss", "boss-pw")
        .await
        .expect("--allow-superuser lets a superuser with its password in");
    // Still never one the database did not check.
    let e = login(&allowing.url, "127.0.0.1", "hopper", "x")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_bogus_handshakes_leave_the_database_serving_other_clients() {
    let c = segment().await;
    let s = server(&c, &[]);

    // 500 handshakes with wrong passwords, 50 at a time, from one address.
    let channel = channel_from(&s.url, Some("127.0.0.1".parse().unwrap()))
        .await
        .unwrap();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for wave in 0..10 {
        let attempts = (0..50).map(|i| {
            let channel = channel.clone();
            async move {
                handshake_on(channel, "reader", &format!("guess-{wave}-{i}"))
                    .await
                    .unwrap_err()
            }
        });
        for e in futures::future::join_all(attempts).await {
            *codes.entry(format!("{:?}", e.code())).or_default() += 1;
        }
    }
    let checked = codes.get("Unauthenticated").copied().unwrap_or(0);
    let refused = codes.get("ResourceExhausted").copied().unwrap_or(0);
    println!("500 bogus handshakes: {codes:?}");
    assert_eq!(checked + refused, 500, "{codes:?}");
    // The database checked a handful; the rest never reached it.
    assert!(
        checked <= 10,
        "{checked} logins reached the database: {codes:?}"
    );

    // The database still takes other clients, and so does the server —
    // from another address, with the right password.
    let other = c.client(0).await.expect("the segment accepts a new client");
    other.batch_execute("SELECT 1").await.unwrap();
    login(&s.url, "127.0.0.5", "reader", "reader-pw")
        .await
        .expect("a client at another address logs in");
    // The flooding address is told why, without a login.
    let e = login(&s.url, "127.0.0.1", "reader", "reader-pw")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("failed logins from 127.0.0.1"), "{e}");
}
