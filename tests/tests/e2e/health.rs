//! The standard gRPC health protocol (`grpc.health.v1`), asked by a client
//! hopper did not write (Python's grpcio-health-checking): a flight-server
//! is SERVING while every segment answers, NOT_SERVING while one is
//! stopped, SERVING again once it is back; a trainer is SERVING once its
//! device has computed. Both answer without credentials, while their own
//! services still refuse calls that carry none.

use arrow_flight::FlightDescriptor;
use hopper_tests::{
    cluster, flight_client, python_json, segments_server, status_of, TrainerProcess,
};
use serde_json::{json, Value};
use tonic::Code;

/// How long a Watch may wait for a status: a bound on the test (the
/// server probes every 5 s), not a measurement.
const BOUND_SECS: &str = "120";

fn check(address: &str, service: &str) -> Value {
    python_json("health_probe.py", &[&"check", &address, &service], &[])
}

/// Follows Watch until the server reports `status`; the statuses seen.
fn watch_until(address: &str, service: &str, status: &str) -> Vec<Value> {
    let out = python_json(
        "health_probe.py",
        &[&"watch", &address, &service, &status, &BOUND_SECS],
        &[],
    );
    assert_eq!(out["reached"], true, "waiting for {status}: {out}");
    out["seen"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flight_server_is_serving_only_while_every_segment_answers() {
    let cluster = cluster(2).await.unwrap();
    // Logins on (--auth database): the server holds no password, and the
    // health service needs none.
    let server = segments_server(&cluster, "database", &[]).unwrap();
    let addr = server.addr.as_str();
    watch_until(addr, "", "SERVING");
    assert_eq!(check(addr, ""), json!({"status": "SERVING"}));
    assert_eq!(
        check(addr, "arrow.flight.protocol.FlightService"),
        json!({"status": "SERVING"})
    );
    assert_eq!(check(addr, "no.such.Service")["code"], "NOT_FOUND");
    // Flight itself still wants a login.
    let mut client = flight_client(&server.url).await.unwrap();
    let refused = client
        .get_flight_info(FlightDescriptor::new_cmd("SELECT 1"))
        .await
        .map(drop)
        .map_err(status_of)
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");

    // One segment of two stops: the server's queries would fail, so it
    // is NOT_SERVING, under both names.
    cluster.stop_segment(1).await.unwrap();
    let seen = watch_until(addr, "", "NOT_SERVING");
    assert_eq!(seen.first().unwrap(), "SERVING", "{seen:?}");
    assert_eq!(check(addr, ""), json!({"status": "NOT_SERVING"}));
    assert_eq!(
        check(addr, "arrow.flight.protocol.FlightService"),
        json!({"status": "NOT_SERVING"})
    );

    // Back: SERVING again, without a restart of the flight-server.
    cluster.start_segment(1).await.unwrap();
    watch_until(addr, "arrow.flight.protocol.FlightService", "SERVING");
    assert_eq!(check(addr, ""), json!({"status": "SERVING"}));
}

#[tokio::test]
async fn a_trainer_is_serving_once_its_device_computes_and_answers_without_its_key() {
    // A trainer with a key: every trainer call must prove it.
    let trainer =
        TrainerProcess::start("127.0.0.1:0", &["--threads".as_ref(), "1".as_ref()], &[]).unwrap();
    let addr = trainer.address.trim_start_matches("http://");
    watch_until(addr, "", "SERVING");
    assert_eq!(check(addr, ""), json!({"status": "SERVING"}));
    assert_eq!(
        check(addr, "hopper.v1.Trainer"),
        json!({"status": "SERVING"})
    );
    let mut c = hopper_proto::trainer_client::TrainerClient::connect(trainer.address.clone())
        .await
        .unwrap();
    let refused = c.health(hopper_proto::HealthRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}
