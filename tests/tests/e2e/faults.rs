//! Faults injected into the data plane while it works: a PostgreSQL
//! segment stopped mid-stream, a flight-server killed with SIGKILL and
//! restarted on the same port with another ticket key, and tickets that
//! expire during a run. Clients get a clear `Unavailable`; a `mop train`
//! run rides through each (its trainers retry with backoff, a unit whose
//! stream broke runs again from its starting state, the runner plans again
//! when its tickets expire or are refused) and ends with the same weights,
//! byte for byte, as a run without the fault.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow_flight::FlightDescriptor;
use devcluster::{load_criteo, LocalCluster};
use futures::StreamExt;
use hopper_tests::run::{
    assert_same_models, count, is_gone, spawn_mop_train, wait_for, RUN_TIMEOUT,
};
use hopper_tests::{
    cluster, flight_backends, flight_client, segment_args, status_of, ChildGuard, FlightServer,
};
use serde_json::Value;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_stopped_mid_stream_is_unavailable_with_a_clear_message_until_it_returns() {
    let cluster = cluster(2).await.unwrap();
    for i in 0..2 {
        cluster
            .client(i)
            .await
            .unwrap()
            .batch_execute(
                "CREATE TABLE big AS SELECT g::int8 AS id, repeat('z', 200) AS pad \
                 FROM generate_series(1, 200000) g",
            )
            .await
            .unwrap();
    }
    let args = segment_args(&cluster);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--batch-rows", "1000"]);
    let server = FlightServer::start(&args).unwrap();
    let mut client = flight_client(&server.url).await.unwrap();
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd("SELECT * FROM big"))
        .await
        .unwrap();
    let ticket = info.endpoint[1].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket.clone()).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.num_rows(), 1000);

    cluster.stop_segment(1).await.unwrap();
    // The rest of the stream: whatever was in flight, then the error.
    let mut rows = first.num_rows();
    let status = loop {
        match stream.next().await {
            Some(Ok(b)) => rows += b.num_rows(),
            Some(Err(e)) => break status_of(e),
            None => panic!("the stream ended cleanly after {rows} rows of 200000"),
        }
    };
    assert!(rows < 200_000);
    println!("mid-stream: {:?} {}", status.code(), status.message());
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        status.message().contains("retry once it is back"),
        "{}",
        status.message()
    );

    // While it is down: planning and reading name the segment and its address.
    let port = cluster.port(1).to_string();
    let e = client
        .get_flight_info(FlightDescriptor::new_cmd("SELECT * FROM big"))
        .await
        .map(|_| ())
        .map_err(status_of)
        .unwrap_err();
    println!("planning: {:?} {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.message().contains("segment 1 at ") && e.message().contains(&port),
        "{}",
        e.message()
    );
    let e = client
        .do_get(ticket.clone())
        .await
        .map(|_| ())
        .map_err(status_of);
    let e = e.unwrap_err();
    println!("reading: {:?} {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("is unreachable"), "{}", e.message());

    // Back up: the same server and the same ticket read everything.
    cluster.start_segment(1).await.unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let mut rows = 0;
    while let Some(b) = stream.next().await {
        rows += b.unwrap().num_rows();
    }
    assert_eq!(rows, 200_000);
    let admin = cluster.client(0).await.unwrap();
    assert_eq!(flight_backends(&admin).await.unwrap(), 0);
}

/// A cluster with a Criteo-like table, and a ticket key for the
/// flight-servers the test starts.
struct Setup {
    cluster: LocalCluster,
    dir: tempfile::TempDir,
    key_file: String,
}

/// Rows of the runs that break streams mid-unit: with [`PAD`] bytes of
/// padding each, a partition (≈ 100 MB) is many times what the sockets, the
/// HTTP/2 windows and the prefetch channel hold, so a fault a moment into
/// a unit finds its stream still open.
const MID_UNIT_ROWS: u64 = 30_000;
/// Bytes of padding per row (appended to a categorical column).
const PAD: usize = 8000;

async fn setup(rows: u64) -> Setup {
    let cluster = cluster(2).await.unwrap();
    load_criteo(&cluster, "criteo", rows, 7).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ticket.key");
    std::fs::write(&key_file, b"faults-test-ticket-key, 32 bytes or more").unwrap();
    Setup {
        cluster,
        key_file: key_file.display().to_string(),
        dir,
    }
}

impl Setup {
    fn server_args(&self) -> Vec<String> {
        let mut args = segment_args(&self.cluster);
        args.extend(["--ticket-key-file".into(), self.key_file.clone()]);
        args
    }

    /// A run re-reading its partition every pass (`cache = "none"`), so
    /// that a fault anywhere in the run hits a read; the last categorical
    /// column of each row is made `pad` bytes longer.
    fn config(&self, name: &str, flight: &str, pad: usize, epochs: usize) -> PathBuf {
        let out = self.dir.path().join(name);
        let columns: Vec<String> = (1..=13)
            .map(|j| format!("i{j}"))
            .chain((1..=25).map(|j| format!("c{j}")))
            .collect();
        let sql = format!(
            "SELECT id, label, {}, c26 || repeat('x', {pad}) AS c26 FROM criteo",
            columns.join(", ")
        );
        let text = format!(
            r#"
[source]
flight = "{flight}"
sql = "{sql}"
validation = {{ fraction = 0.2, key = "id" }}
cache = "none"

[train]
epochs = {epochs}
seed = 5
threads = 1

[grid]
arch = [{{ kind = "mlp", hidden = [128] }}]
optimizer = [{{ kind = "adam" }}]
lr = [1e-2, 1e-3]
batch_size = [32]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
"#,
            out = out.display()
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Waits for a unit on `partition` to report training progress: its
/// stream has handed on batches, and (see [`PAD`]) is still open.
fn wait_mid_unit(rx: &mpsc::Receiver<Value>, seen: &mut Vec<Value>, partition: usize) {
    wait_for(rx, seen, "progress", |v| {
        v["event"] == "progress" && v["partition"] == partition && v["samples"].as_u64() > Some(0)
    })
}

/// `mop train` with reads that retry for a minute.
fn spawn_mop(config: &Path) -> (ChildGuard, mpsc::Receiver<Value>) {
    spawn_mop_train(config, &[], &[("HOPPER_READ_RETRY_SECONDS", "60")])
}

fn finish(mut mop: ChildGuard, rx: mpsc::Receiver<Value>, seen: &mut Vec<Value>) {
    let status = mop.wait_timeout(RUN_TIMEOUT).unwrap();
    seen.extend(rx.iter());
    assert!(status.success(), "the run survives the fault: {status}");
}

fn mean_unit_seconds(events: &[Value]) -> f64 {
    let secs: Vec<f64> = events
        .iter()
        .filter(|v| v["event"] == "unit")
        .filter_map(|v| v["seconds"].as_f64())
        .collect();
    secs.iter().sum::<f64>() / secs.len().max(1) as f64
}

/// The failures of units whose stream broke after handing on batches.
fn broken_mid_unit(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|v| v["event"] == "unit_failed")
        .filter(|v| {
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("the stream broke after"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_stopped_mid_unit_and_back_leaves_the_weights_of_a_clean_run() {
    let s = setup(MID_UNIT_ROWS).await;
    let args = s.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    let faulty = s.config("faulty", &server.url, PAD, 2);
    let clean = s.config("clean", &server.url, PAD, 2);

    let (mop, rx) = spawn_mop(&faulty);
    let mut events = Vec::new();
    // Segment 1 holds partition 1: stop it while a unit there trains.
    wait_mid_unit(&rx, &mut events, 1);
    let outage = Instant::now();
    s.cluster.stop_segment(1).await.unwrap();
    std::thread::sleep(Duration::from_secs(3)); // the outage itself
    assert!(
        !is_gone(mop.pid()),
        "the run was still going when the segment came back"
    );
    s.cluster.start_segment(1).await.unwrap();
    println!("segment 1 down for {:.1?}", outage.elapsed());
    finish(mop, rx, &mut events);
    println!(
        "segment outage: {} units of {:.2} s on average, {} failed and ran again ({} mid-stream)",
        count(&events, "unit"),
        mean_unit_seconds(&events),
        count(&events, "unit_failed"),
        broken_mid_unit(&events)
    );
    assert!(
        broken_mid_unit(&events) >= 1,
        "the outage broke a unit's stream mid-way: {:?}",
        events
            .iter()
            .filter(|v| v["event"] == "unit_failed")
            .collect::<Vec<_>>()
    );
    assert_eq!(count(&events, "unit"), 8, "every unit completed once");

    let (mop, rx) = spawn_mop(&clean);
    let mut clean_events = Vec::new();
    finish(mop, rx, &mut clean_events);
    assert_same_models(&s.out("faulty"), &s.out("clean"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flight_server_killed_mid_unit_and_restarted_with_a_new_key_lets_the_run_end_identical() {
    let s = setup(MID_UNIT_ROWS).await;
    let args = s.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = FlightServer::start(&args).unwrap();
    let addr = server.addr.clone();
    let faulty = s.config("faulty", &server.url, PAD, 2);
    let clean = s.config("clean", &server.url, PAD, 2);

    let (mop, rx) = spawn_mop(&faulty);
    let mut events = Vec::new();
    wait_mid_unit(&rx, &mut events, 0);
    server.process.kill(); // SIGKILL
    std::thread::sleep(Duration::from_secs(2)); // the outage itself
    assert!(
        !is_gone(mop.pid()),
        "the run was still going when the server came back"
    );
    // Without --ticket-key-file: a fresh random key, so every ticket the
    // run holds is refused and the runner must plan again.
    let fresh = segment_args(&s.cluster);
    let fresh: Vec<&str> = fresh.iter().map(String::as_str).collect();
    let restarted = FlightServer::start_on(&addr, &fresh).unwrap();
    finish(mop, rx, &mut events);
    let replans: Vec<_> = events.iter().filter(|v| v["event"] == "replan").collect();
    println!(
        "flight-server restart: {} units, {} failed and ran again ({} mid-stream), replans {replans:?}",
        count(&events, "unit"),
        count(&events, "unit_failed"),
        broken_mid_unit(&events)
    );
    assert!(
        broken_mid_unit(&events) >= 1,
        "the kill broke a stream mid-unit"
    );
    assert!(
        replans.iter().any(|v| v["reason"] == "refused"),
        "the new server refused the old tickets and the run planned again"
    );
    assert_eq!(count(&events, "unit"), 8, "every unit completed once");

    let (mop, rx) = spawn_mop(&clean);
    let mut clean_events = Vec::new();
    finish(mop, rx, &mut clean_events);
    assert_same_models(&s.out("faulty"), &s.out("clean"), 2);
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_longer_than_its_tickets_live_plans_again_and_matches_a_run_that_needed_none() {
    let s = setup(6000).await;
    let args = s.server_args();
    let mut short: Vec<&str> = args.iter().map(String::as_str).collect();
    short.extend(["--ticket-ttl", "2"]);
    let short = FlightServer::start(&short).unwrap();
    let long: Vec<&str> = args.iter().map(String::as_str).collect();
    let long = FlightServer::start(&long).unwrap();
    // Five epochs: the run outlives its 2 s tickets several times over.
    let expiring = s.config("expiring", &short.url, 0, 5);
    let clean = s.config("clean", &long.url, 0, 5);

    let (mop, rx) = spawn_mop(&expiring);
    let mut events = Vec::new();
    finish(mop, rx, &mut events);
    let replans: Vec<_> = events.iter().filter(|v| v["event"] == "replan").collect();
    println!("run over 2 s tickets: replans {replans:?}");
    // Twenty units, each spawning no process but reading over Flight and
    // training, outlive 2 s tickets several times over: the runner plans
    // again, ahead of expiry or (on a machine slow enough that a ticket
    // expires between plan and read) after a refusal; a unit that met the
    // refusal ran again, from its starting state.
    assert!(
        replans
            .iter()
            .any(|v| v["reason"] == "expiring" || v["reason"] == "refused"),
        "a run over 2 s tickets planned again: {replans:?}"
    );
    for failed in events.iter().filter(|v| v["event"] == "unit_failed") {
        assert!(
            failed["error"]
                .as_str()
                .is_some_and(|e| e.contains("ticket")),
            "only expired tickets failed units: {failed}"
        );
    }
    assert_eq!(count(&events, "unit"), 20, "every unit completed once");

    let (mop, rx) = spawn_mop(&clean);
    let mut clean_events = Vec::new();
    finish(mop, rx, &mut clean_events);
    assert_same_models(&s.out("expiring"), &s.out("clean"), 2);
}
