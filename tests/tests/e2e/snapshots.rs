//! Pinned snapshots over real PostgreSQL segments: a client pins once, and
//! every plan at the pin reads the rows the pin saw while the tables are
//! inserted into, updated and deleted from — through pyarrow, through
//! hostile callers, and through a whole `mop train` with `cache = "none"`.

use std::path::{Path, PathBuf};

use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use futures::TryStreamExt;
use hopper_tests::run::{assert_same_models, mop_train, spawn_mop_train, RUN_TIMEOUT};
use hopper_tests::{
    channel, cluster, flight_backends, handshake_on, python_json, python_script, segment_args,
    segments_server, FlightServer,
};
use serde_json::Value;
use tonic::Code;

/// Rows of `t` on each segment before anything changes.
const ROWS: i64 = 100;

/// Two segments with `t (id, v)` readable by `reader` and `outsider`
/// (both log in with a password).
async fn segments() -> devcluster::LocalCluster {
    let c = cluster(2).await.unwrap();
    for i in 0..c.len() {
        let lo = i as i64 * 1000;
        c.client(i)
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE ROLE reader LOGIN PASSWORD 'reader-pw';
                 CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw';
                 CREATE TABLE t (id int8, v float8);
                 INSERT INTO t SELECT g, g * 0.5 FROM generate_series({lo}, {lo} + {ROWS} - 1) g;
                 GRANT SELECT ON t TO reader, outsider;"
            ))
            .await
            .unwrap();
    }
    c
}

/// Inserts, updates and deletes rows of `t` on every segment.
async fn change(c: &devcluster::LocalCluster) {
    for i in 0..c.len() {
        c.client(i)
            .await
            .unwrap()
            .batch_execute(
                "INSERT INTO t SELECT g, 1 FROM generate_series(50000, 50039) g;
                 UPDATE t SET id = id + 7 WHERE id % 3 = 0;
                 DELETE FROM t WHERE id % 5 = 1;",
            )
            .await
            .unwrap();
    }
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    hopper_tests::status_of(e)
}

async fn client(url: &str, bearer: Option<&str>) -> FlightClient {
    let mut c = FlightClient::new(channel(url).await.unwrap());
    if let Some(b) = bearer {
        c.add_header("authorization", b).unwrap();
    }
    c
}

async fn login(url: &str, user: &str, password: &str) -> String {
    handshake_on(channel(url).await.unwrap(), user, password)
        .await
        .unwrap()
}

async fn action(c: &mut FlightClient, kind: &str, body: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let answers: Vec<Vec<u8>> = c
        .do_action(Action::new(kind, body.to_vec()))
        .await
        .map_err(status)?
        .map_ok(|b| b.to_vec())
        .try_collect()
        .await
        .map_err(status)?;
    Ok(answers.into_iter().next().unwrap_or_default())
}

async fn pin(c: &mut FlightClient) -> Result<String, tonic::Status> {
    let answer = action(c, "pin-snapshot", b"{}").await?;
    let v: Value = serde_json::from_slice(&answer).unwrap();
    Ok(v["snapshot"].as_str().unwrap().to_owned())
}

/// Plans `sql` at `snapshot` (if any).
async fn plan(
    c: &mut FlightClient,
    sql: &str,
    snapshot: Option<&str>,
) -> Result<Vec<Ticket>, tonic::Status> {
    let mut request = tonic::Request::new(FlightDescriptor::new_cmd(sql.to_owned()));
    if let Some(s) = snapshot {
        request
            .metadata_mut()
            .insert("x-hopper-snapshot", s.parse().unwrap());
    }
    // The client's own headers (its Bearer token) go along.
    for kv in c.metadata().iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
    }
    let mut raw = c.inner().clone();
    let info = raw.get_flight_info(request).await?.into_inner();
    Ok(info.endpoint.into_iter().filter_map(|e| e.ticket).collect())
}

/// Rows and the sum of `id` over every ticket.
async fn read(c: &mut FlightClient, tickets: &[Ticket]) -> Result<(usize, i64), tonic::Status> {
    let (mut rows, mut sum) = (0, 0);
    for t in tickets {
        let batches: Vec<_> = c
            .do_get(t.clone())
            .await
            .map_err(status)?
            .try_collect()
            .await
            .map_err(status)?;
        for b in batches {
            rows += b.num_rows();
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap();
            sum += ids.iter().flatten().sum::<i64>();
        }
    }
    Ok((rows, sum))
}

async fn backends(c: &devcluster::LocalCluster) -> i64 {
    let mut n = 0;
    for i in 0..c.len() {
        n += flight_backends(&c.client(i).await.unwrap()).await.unwrap();
    }
    n
}

#[tokio::test]
async fn pyarrow_pins_a_snapshot_and_reads_the_same_rows_while_the_table_changes() {
    let c = segments().await;
    let fs = segments_server(&c, "database", &[]).unwrap();
    let sql = "SELECT id, v FROM t";
    let env = [("HOPPER_TEST_PASSWORD", "reader-pw")];
    let pinned = python_json(
        "snapshot_read.py",
        &[&fs.url, &"reader", &"HOPPER_TEST_PASSWORD", &"pin"],
        &env,
    );
    let bearer = pinned["bearer"].as_str().unwrap().to_owned();
    let snapshot = pinned["pin"]["snapshot"].as_str().unwrap().to_owned();
    assert_eq!(pinned["pin"]["ttl_seconds"], 600, "{pinned}");
    // pyarrow plans `sql` at `snapshot` (none when empty) and reads it all.
    let run = |snapshot: &str| {
        let args: [&dyn AsRef<std::ffi::OsStr>; 7] = [
            &fs.url,
            &"reader",
            &"HOPPER_TEST_PASSWORD",
            &"read",
            &bearer,
            &snapshot,
            &sql,
        ];
        python_script("snapshot_read.py", &args, &env)
    };
    let read = |snapshot: &str| -> Value {
        let out = run(snapshot);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "snapshot_read.py failed: {err}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = read(&snapshot);
    assert_eq!(before["endpoints"], 2);
    assert_eq!(before["rows"], 2 * ROWS);

    change(&c).await;
    // Planned again at the pin, after every kind of change: the same rows.
    let at_pin = read(&snapshot);
    assert_eq!(at_pin["rows"], before["rows"], "{at_pin}");
    assert_eq!(at_pin["sum"], before["sum"], "{at_pin}");
    // Without the pin, the table as it is now.
    let now = read("");
    assert_ne!(now["rows"], before["rows"], "{now}");
    assert_ne!(now["sum"], before["sum"], "{now}");

    // Released, the pin is gone and says so; its sessions end.
    let mut rust = client(&fs.url, Some(&bearer)).await;
    assert!(
        backends(&c).await >= 2,
        "one session per segment holds the pin"
    );
    action(&mut rust, "release-snapshot", snapshot.as_bytes())
        .await
        .unwrap();
    let out = run(&snapshot);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pin a new one"), "{err}");
}

#[tokio::test]
async fn a_ticket_planned_at_a_pin_reads_the_pinned_rows_until_the_pin_is_released() {
    let c = segments().await;
    let fs = segments_server(&c, "database", &[]).unwrap();
    let bearer = login(&fs.url, "reader", "reader-pw").await;
    let mut reader = client(&fs.url, Some(&bearer)).await;
    let snapshot = pin(&mut reader).await.unwrap();
    let tickets = plan(&mut reader, "SELECT id FROM t", Some(&snapshot))
        .await
        .unwrap();
    let before = read(&mut reader, &tickets).await.unwrap();
    change(&c).await;
    // The same tickets, read again (as every epoch does): the same rows.
    assert_eq!(read(&mut reader, &tickets).await.unwrap(), before);
    assert_eq!(before.0, 2 * ROWS as usize);

    action(&mut reader, "release-snapshot", snapshot.as_bytes())
        .await
        .unwrap();
    // A ticket of a released pin is refused as a ticket: planning again is
    // the cure, and the plan says the pin is lost.
    let e = read(&mut reader, &tickets).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(flight_client::refused::is_ticket_refused(&e), "{e}");
    assert!(e.message().contains("no longer held"), "{e}");
    let e = plan(&mut reader, "SELECT id FROM t", Some(&snapshot))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(flight_client::snapshot::is_snapshot_lost(&e), "{e}");
}

#[tokio::test]
async fn a_pin_is_its_owners_alone_bounded_in_number_and_refuses_forged_ids() {
    let c = segments().await;
    let fs = segments_server(&c, "database", &[]).unwrap();
    let mut reader = client(&fs.url, Some(&login(&fs.url, "reader", "reader-pw").await)).await;
    let mut outsider = client(
        &fs.url,
        Some(&login(&fs.url, "outsider", "outsider-pw").await),
    )
    .await;
    let mut anonymous = client(&fs.url, None).await;
    let sql = "SELECT id FROM t";

    // No login, no pin.
    let e = pin(&mut anonymous).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    let mine = pin(&mut reader).await.unwrap();
    // Another user (who may read the table) cannot plan at, renew or
    // release it.
    let e = plan(&mut outsider, sql, Some(&mine)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    for kind in ["renew-snapshot", "release-snapshot"] {
        let e = action(&mut outsider, kind, mine.as_bytes())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{kind}: {e}");
    }
    // ... and it still works for its owner.
    let tickets = plan(&mut reader, sql, Some(&mine)).await.unwrap();
    assert_eq!(
        read(&mut reader, &tickets).await.unwrap().0,
        2 * ROWS as usize
    );

    // Made-up ids: lost, said without echoing them whole.
    let long = "a".repeat(5000);
    for forged in [
        "00000003-00000002-1",
        "'; DROP TABLE t; --",
        "../../../../etc/passwd",
        long.as_str(),
    ] {
        let e = plan(&mut reader, sql, Some(forged)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");
        assert!(flight_client::snapshot::is_snapshot_lost(&e), "{e}");
        assert!(e.message().len() < 600, "{}", e.message().len());
        let e = action(&mut reader, "renew-snapshot", forged.as_bytes())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");
    }
    // Bodies that are not a pin request.
    for body in [
        &b"{\"ttl_seconds\": 0}"[..],
        b"{\"evil\": 1}",
        b"not json",
        b"{\"ttl_seconds\": -5}",
    ] {
        let e = action(&mut reader, "pin-snapshot", body).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    }

    // At most four pins per user: the fifth is refused, saying what to do.
    let mut more = Vec::new();
    for _ in 0..3 {
        more.push(pin(&mut reader).await.unwrap());
    }
    let e = pin(&mut reader).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("release"), "{e}");
    // Another user is not held up by them.
    let theirs = pin(&mut outsider).await.unwrap();
    action(&mut reader, "release-snapshot", more[0].as_bytes())
        .await
        .unwrap();
    pin(&mut reader).await.unwrap();

    // Each pin holds one session per segment, and releasing gives them back.
    let held = backends(&c).await;
    assert!(held >= 2 * 5, "5 pins over 2 segments hold {held} sessions");
    action(&mut outsider, "release-snapshot", theirs.as_bytes())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while backends(&c).await > held - 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "a released pin's sessions stay"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_pin_left_unused_is_released_by_the_server() {
    let c = segments().await;
    let fs = segments_server(&c, "database", &["--snapshot-idle", "1"]).unwrap();
    let mut reader = client(&fs.url, Some(&login(&fs.url, "reader", "reader-pw").await)).await;
    let snapshot = pin(&mut reader).await.unwrap();
    // Nothing renews it: the server lets it go, and its sessions end.
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    loop {
        match action(&mut reader, "renew-snapshot", snapshot.as_bytes()).await {
            Ok(_) => {}
            Err(e) => {
                assert!(flight_client::snapshot::is_snapshot_lost(&e), "{e}");
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pin never idled out"
        );
        // Renewing keeps it; so wait without renewing for a while.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    while backends(&c).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle pin's sessions stay"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A `cache = "none"` run (every unit reads its partition again) over `t2`.
fn config(dir: &Path, name: &str, flight: &str, source: &str) -> PathBuf {
    let out = dir.join(name);
    let text = format!(
        r#"
[source]
flight = "{flight}"
sql = "SELECT id, label, i1, i2, i3, c1, c2 FROM criteo"
validation = {{ fraction = 0.25, key = "id" }}
cache = "none"
{source}

[train]
epochs = 4
seed = 11
threads = 1

[grid]
arch = [{{ kind = "mlp", hidden = [16] }}]
optimizer = [{{ kind = "adam" }}]
lr = [1e-2, 3e-3]
batch_size = [16]
input = {{ kind = "table", label = "label", columns = ["i1", "i2", "i3"], categorical = ["c1", "c2"] }}
task = "binary"

[output]
dir = "{out}"
"#,
        out = out.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_run_reads_one_snapshot_while_rows_are_inserted_updated_and_deleted() {
    let (c, fs, dir) = criteo_setup().await;

    // The run over the table as it is.
    let still = config(dir.path(), "still", &fs.url, "");
    mop_train(&still, &[]);

    // The same run while every segment's rows change under it, more than once.
    let moving = config(dir.path(), "moving", &fs.url, "");
    let status = train_while_changing(&c, &moving).await;
    assert!(
        status.success(),
        "mop train over a changing table failed: {status}"
    );

    // Every model is the one trained over the unchanged rows, byte for byte.
    assert_same_models(&dir.path().join("still"), &dir.path().join("moving"), 2);
    // Every unit of a partition read the same rows.
    for (p, samples) in samples_per_partition(&dir.path().join("moving"))
        .iter()
        .enumerate()
    {
        assert_eq!(samples.len(), 1, "partition {p} read {samples:?} rows");
    }
    // The run released its pins: no session of the flight-server is left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while backends(&c).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run's pins were not released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Without a pin (`snapshot_ttl = 0`) the same changes reach the units:
    // what kept them out above is the pin.
    let unpinned = config(dir.path(), "unpinned", &fs.url, "snapshot_ttl = 0");
    let status = train_while_changing(&c, &unpinned).await;
    let unchanged = status.success()
        && samples_per_partition(&dir.path().join("unpinned"))
            .iter()
            .all(|s| s.len() == 1);
    assert!(!unchanged, "an unpinned run read the same rows every time");
}

/// Per partition, the row counts its units read (`timeline.json`).
fn samples_per_partition(out: &Path) -> Vec<std::collections::BTreeSet<u64>> {
    let timeline: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.join("timeline.json")).unwrap()).unwrap();
    (0..2)
        .map(|p| {
            timeline
                .iter()
                .filter(|u| u["partition"] == p)
                .map(|u| u["samples"].as_u64().unwrap())
                .collect()
        })
        .collect()
}

/// Runs `mop train` on `config`, changing `criteo` on every segment after
/// the first unit of each of the first three epochs; how it ended.
async fn train_while_changing(
    c: &devcluster::LocalCluster,
    config: &Path,
) -> std::process::ExitStatus {
    let (mut guard, rx) = spawn_mop_train(config, &[], &[]);
    for epoch in 0..3 {
        // Until a unit of `epoch` ends, or the run does (it may stop when
        // it sees the rows change).
        let unit = rx
            .iter()
            .find(|v| v["event"] == "unit" && v["epoch"].as_u64() == Some(epoch));
        if unit.is_none() {
            break;
        }
        change_criteo(c, epoch).await;
    }
    guard.wait_timeout(RUN_TIMEOUT).unwrap()
}

/// Inserts, updates and deletes rows of `criteo` on every segment (`round`
/// varies which).
async fn change_criteo(c: &devcluster::LocalCluster, round: u64) {
    for i in 0..c.len() {
        c.client(i)
            .await
            .unwrap()
            .batch_execute(&format!(
                "INSERT INTO criteo SELECT * FROM criteo WHERE id % 4 = 0;
                 UPDATE criteo SET label = 1 - label WHERE id % 7 = {round};
                 DELETE FROM criteo WHERE id % 11 = {round};"
            ))
            .await
            .unwrap();
    }
}

/// A `cache = "none"` flight-server over two segments holding `criteo`,
/// and a directory for runs.
async fn criteo_setup() -> (devcluster::LocalCluster, FlightServer, tempfile::TempDir) {
    let c = cluster(2).await.unwrap();
    devcluster::datagen::load_criteo(&c, "criteo", 800, 3)
        .await
        .unwrap();
    let mut args = segment_args(&c);
    args.extend(["--auth".into(), "none".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fs = FlightServer::start(&args).unwrap();
    (c, fs, tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn a_killed_run_resumed_reads_the_snapshot_it_began_with() {
    let (c, fs, dir) = criteo_setup().await;
    let still = config(dir.path(), "still", &fs.url, "");
    mop_train(&still, &[]);

    // Killed (SIGKILL: nothing released) after a unit of epoch 1; the rows
    // change while it is down; resumed, it reads the rows it began with.
    let killed = config(dir.path(), "killed", &fs.url, "");
    let (mut mop, rx) = spawn_mop_train(&killed, &[], &[]);
    let unit = rx
        .iter()
        .find(|v| v["event"] == "unit" && v["epoch"].as_u64() == Some(1));
    assert!(unit.is_some(), "the run ended before a unit of epoch 1");
    mop.kill();
    change_criteo(&c, 0).await;
    mop_train(&killed, &["--resume"]);
    assert_same_models(&dir.path().join("still"), &dir.path().join("killed"), 2);
}
