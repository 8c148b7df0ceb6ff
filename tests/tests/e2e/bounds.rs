//! What one client can hold of a flight-server is bounded: connections
//! (`--max-clients`) and the bytes of bound parameters a prepared
//! statement keeps in memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, Int32Array, RecordBatch, StringArray};
use arrow_flight::{Action, FlightClient};
use futures::TryStreamExt;
use hopper_tests::{channel_from, cluster, flight_sql_client, segments_server, FlightServer};
use tonic::Code;

fn server(c: &devcluster::LocalCluster, extra: &[&str]) -> FlightServer {
    segments_server(c, "none", extra).unwrap()
}

/// How long a connection waits for an answer before it counts as left
/// hanging (far more than a closed connection takes to be noticed).
const HANGING: Duration = Duration::from_secs(30);

/// A new connection to `url` and its answer to `DoAction("health")`: the
/// client, to hold the connection open; else what went wrong — the
/// transport's error, or `hanging` when nothing came within [`HANGING`].
async fn connect_and_ask(url: &str) -> Result<FlightClient, String> {
    let channel = channel_from(url, None).await.map_err(|e| e.to_string())?;
    let mut client = FlightClient::new(channel);
    let answer = tokio::time::timeout(HANGING, client.do_action(Action::new("health", "")))
        .await
        .map_err(|_| "hanging".to_string())?
        .map_err(|e| e.to_string())?;
    answer
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_past_max_clients_is_closed_at_once_and_the_others_are_served() {
    let c = cluster(1).await.unwrap();
    let s = server(&c, &["--max-clients", "2"]);
    let first = connect_and_ask(&s.url).await.expect("first connection");
    let second = connect_and_ask(&s.url).await.expect("second connection");
    match connect_and_ask(&s.url).await {
        Ok(_) => panic!("a third connection was served"),
        Err(e) => assert_ne!(
            e, "hanging",
            "the third connection was left hanging instead of closed"
        ),
    }
    // The two held ones still work.
    for mut held in [first, second] {
        let answer = held.do_action(Action::new("health", "")).await.unwrap();
        answer.try_collect::<Vec<_>>().await.unwrap();
    }
    // A closed connection frees its place.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect_and_ask(&s.url).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no place came free");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bound_parameters_over_a_mebibyte_are_refused_and_smaller_ones_bind() {
    let c = cluster(1).await.unwrap();
    let s = server(&c, &[]);
    let mut client = flight_sql_client(&s.url).await.unwrap();
    let mut prepared = client
        .prepare("SELECT length($1::text) AS n".into(), None)
        .await
        .unwrap();
    let params = Arc::new(prepared.parameter_schema().unwrap().clone());
    let bind = |value: String| {
        RecordBatch::try_new(
            params.clone(),
            vec![Arc::new(StringArray::from(vec![value])) as Arc<dyn Array>],
        )
        .unwrap()
    };

    prepared
        .set_parameters(bind("x".repeat(2 * 1024 * 1024)))
        .unwrap();
    let e = hopper_tests::status_of(prepared.execute().await.unwrap_err());
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("exceed 1024 KiB"), "{e}");

    prepared.set_parameters(bind("x".repeat(1000))).unwrap();
    let info = prepared.execute().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int32Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 1000);
}
