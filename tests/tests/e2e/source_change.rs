//! A run knows when the rows it reads changed: with `cache = "none"` over
//! two PostgreSQL segments, the flight-server is killed mid-run and
//! restarted on the same port (whatever snapshot it held is gone) while
//! rows are deleted from and inserted into segment 1's table. Every read
//! reports its row count and checksum; the runner compares them with each
//! partition's first read. By default the run stops with an error naming
//! partition 1 and both row counts — which the database confirms — and its
//! checkpoint keeps every epoch finished before; `--resume` over the
//! changed table stops again, and `on_change = "warn"` lets it go on. With
//! `on_change = "warn"` from the start the run finishes and `results.json`
//! (and the report) list the change, once per changed split. With
//! `cache = "memory"` the units read no Flight; a trainer killed after the
//! change is replaced and fills its cache again, and that read stops the
//! run.

use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};

use devcluster::{load_criteo, LocalCluster};
use hopper_tests::run::{results, wait_for, RUN_TIMEOUT};
use hopper_tests::{binary, cluster, segment_args, ChildGuard, FlightServer};
use mop_core::run_config::RunConfig;
use mop_core::run_dir::checkpoint::{CheckpointDir, Split};
use serde_json::Value;

/// Rows of `criteo` over both segments.
const ROWS: u64 = 4000;
/// Epochs of the runs: many more than the one waited for before the fault.
const EPOCHS: usize = 6;

struct Setup {
    cluster: LocalCluster,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

async fn setup() -> Setup {
    let cluster = cluster(2).await.unwrap();
    load_criteo(&cluster, "criteo", ROWS, 11).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ticket.key");
    std::fs::write(&key, b"source-change-test-ticket-key, 32 bytes or more").unwrap();
    let mut args = segment_args(&cluster);
    args.extend(["--ticket-key-file".into(), key.display().to_string()]);
    Setup { cluster, dir, args }
}

impl Setup {
    fn server(&self) -> FlightServer {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        FlightServer::start(&args).unwrap()
    }

    /// A `cache = "none"` run of two models with `on_change`.
    fn config(&self, name: &str, flight: &str, on_change: &str) -> PathBuf {
        self.config_with(name, flight, on_change, "none", EPOCHS)
    }

    /// A run of two models for `epochs` with `on_change` and `cache`.
    fn config_with(
        &self,
        name: &str,
        flight: &str,
        on_change: &str,
        cache: &str,
        epochs: usize,
    ) -> PathBuf {
        let out = self.dir.path().join(name);
        let text = format!(
            r#"
[source]
flight = "{flight}"
table = "criteo"
validation = {{ fraction = 0.2, key = "id" }}
cache = "{cache}"
on_change = "{on_change}"

[train]
epochs = {epochs}
seed = 3
threads = 1

[grid]
arch = [{{ kind = "mlp", hidden = [16] }}]
optimizer = [{{ kind = "adam" }}]
lr = [1e-2, 1e-3]
batch_size = [64]
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

    /// Rows of the run's training and validation queries on `segment`, as
    /// the database counts them.
    async fn counts(&self, config: &Path, segment: usize) -> (u64, u64) {
        let c = RunConfig::load(config).unwrap();
        let client = self.cluster.client(segment).await.unwrap();
        let mut out = [0u64; 2];
        for (slot, sql) in out
            .iter_mut()
            .zip([c.train_sql().unwrap(), c.validation_sql().unwrap().unwrap()])
        {
            let row = client
                .query_one(&format!("SELECT count(*) FROM ({sql}) AS t"), &[])
                .await
                .unwrap();
            *slot = row.get::<_, i64>(0) as u64;
        }
        (out[0], out[1])
    }

    /// While the flight-server is down: 40 rows of segment 1 deleted and 70
    /// copies of others inserted under new ids.
    async fn change_segment_1(&self) {
        let columns: Vec<String> = ["label".to_string()]
            .into_iter()
            .chain((1..=13).map(|j| format!("i{j}")))
            .chain((1..=26).map(|j| format!("c{j}")))
            .collect();
        let columns = columns.join(", ");
        self.cluster
            .client(1)
            .await
            .unwrap()
            .batch_execute(&format!(
                "DELETE FROM criteo WHERE id IN (SELECT id FROM criteo ORDER BY id LIMIT 40);
                 INSERT INTO criteo (id, {columns})
                 SELECT id + 1000000, {columns} FROM criteo ORDER BY id DESC LIMIT 70;"
            ))
            .await
            .unwrap();
    }

    /// Kills the server (SIGKILL), changes segment 1's rows while it is
    /// down, and starts it again on the same port.
    async fn restart_over_changed_rows(&self, server: &mut FlightServer) -> FlightServer {
        server.process.kill();
        self.change_segment_1().await;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        FlightServer::start_on(&server.addr, &args).unwrap()
    }
}

/// `mop train` with its JSON events on a channel and its standard error
/// collected (and echoed).
struct Mop {
    process: ChildGuard,
    events: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<String>>,
}

fn spawn_mop(config: &Path, extra: &[&str]) -> Mop {
    let mut child = Command::new(binary("mop").unwrap())
        .args(["train", "--progress", "json", "--config"])
        .arg(config)
        .args(extra)
        .env("HOPPER_READ_RETRY_SECONDS", "60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, events) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            eprint!("{text}");
            sink.lock().unwrap().push_str(&text);
        }
    });
    Mop {
        process: ChildGuard::new("mop train", child),
        events,
        stderr,
    }
}

impl Mop {
    /// Waits for the run to end; returns whether it succeeded, its events
    /// from `seen` on, and the `mop: …` line it failed with (if any).
    fn end(mut self, seen: &mut Vec<Value>) -> (bool, String) {
        let status = self.process.wait_timeout(RUN_TIMEOUT).unwrap();
        seen.extend(self.events.iter());
        let stderr = self.stderr.lock().unwrap().clone();
        let error = stderr
            .lines()
            .filter(|l| l.starts_with("mop: "))
            .collect::<Vec<_>>()
            .join("\n");
        (status.success(), error)
    }
}

/// Waits for a model's first validated epoch: every partition's training
/// and validation rows have been read at least once.
fn wait_first_epoch(mop: &Mop, seen: &mut Vec<Value>) {
    wait_for(&mop.events, seen, "epoch", |v| v["event"] == "epoch");
}

/// What the runner expected of each partition's rows, from its checkpoint.
fn expected_rows(out: &Path, partition: usize, split: Split) -> u64 {
    let c = CheckpointDir::new(out).unwrap().load().unwrap().unwrap();
    c.reads
        .expected
        .iter()
        .find(|e| e.partition == partition && e.split == split)
        .unwrap_or_else(|| panic!("no read of partition {partition}'s {split:?} rows recorded"))
        .rows
        .rows
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_changed_under_a_run_stop_it_naming_the_partition_and_keep_its_finished_epochs() {
    let s = setup().await;
    let mut server = s.server();
    let config = s.config("stop", &server.url, "stop");
    let out = s.dir.path().join("stop");
    let (train0, val0) = s.counts(&config, 0).await;
    let (train1, val1) = s.counts(&config, 1).await;

    let mop = spawn_mop(&config, &[]);
    let mut events = Vec::new();
    wait_first_epoch(&mop, &mut events);
    let restarted = s.restart_over_changed_rows(&mut server).await;
    let (train1_now, val1_now) = s.counts(&config, 1).await;
    assert_eq!(
        s.counts(&config, 0).await,
        (train0, val0),
        "segment 0 unchanged"
    );
    assert_ne!((train1_now, val1_now), (train1, val1));
    assert_eq!(train1_now + val1_now, train1 + val1 + 30);

    let (ok, error) = mop.end(&mut events);
    println!("the run stopped with: {error}");
    assert!(!ok, "the run stops when partition 1's rows change");
    // The error names the partition, its endpoint and server, both row
    // counts as the database has them, and what to do.
    let (split, before, now) = if error.contains("the training rows of partition 1 ") {
        ("training", train1, train1_now)
    } else {
        ("validation", val1, val1_now)
    };
    for part in [
        format!(
            "the {split} rows of partition 1 (endpoint 1 of the {split} query, at {}",
            restarted.url
        ),
        format!("{before} rows (checksum"),
        format!("{now} rows (checksum"),
        "on_change = \"warn\"".to_string(),
        "--resume".to_string(),
    ] {
        assert!(error.contains(&part), "{part:?} is not in: {error}");
    }
    assert!(!error.contains("partition 0"), "{error}");

    // The checkpoint keeps every epoch the run reported finished, with the
    // rows the database had before the change, and the first reads.
    let checkpoint = CheckpointDir::new(&out).unwrap().load().unwrap().unwrap();
    let epochs: Vec<(usize, usize)> = events
        .iter()
        .filter(|v| v["event"] == "epoch")
        .map(|v| {
            (
                v["model"].as_u64().unwrap() as usize,
                v["epoch"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert!(!epochs.is_empty());
    for (m, e) in &epochs {
        let kept = &checkpoint.metrics[*m][*e];
        assert_eq!(kept.train_samples, train0 + train1, "model {m} epoch {e}");
        assert_eq!(kept.val_samples, val0 + val1, "model {m} epoch {e}");
    }
    assert_eq!(expected_rows(&out, 0, Split::Train), train0);
    assert_eq!(expected_rows(&out, 1, Split::Train), train1);
    assert_eq!(expected_rows(&out, 0, Split::Validation), val0);
    assert_eq!(expected_rows(&out, 1, Split::Validation), val1);
    assert!(checkpoint.reads.changes.is_empty());
    assert!(
        !out.join("results.json").exists(),
        "no results of a stopped run"
    );

    // Resumed over the changed table, the run is caught again.
    let (ok, again) = spawn_mop(&config, &["--resume"]).end(&mut Vec::new());
    assert!(!ok, "a resumed run over the changed rows stops too");
    // Its error compares with the rows before the change, which only the
    // checkpoint still knows.
    assert!(again.contains("of partition 1 ("), "{again}");
    assert!(
        again.contains(&format!("{train1} rows (checksum"))
            || again.contains(&format!("{val1} rows (checksum")),
        "{again}"
    );

    // As the error says: on_change = "warn" and --resume go on, and record it.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("on_change = \"stop\"", "on_change = \"warn\""),
    )
    .unwrap();
    let mut resumed = Vec::new();
    let (ok, error) = spawn_mop(&config, &["--resume"]).end(&mut resumed);
    assert!(
        ok,
        "the resumed run with on_change = \"warn\" finishes: {error}"
    );
    let r = results(&out);
    let changes = r["source_changes"].as_array().expect("source_changes");
    assert!(changes.iter().all(|c| c["partition"] == 1), "{changes:?}");
    assert!(
        changes.iter().any(|c| (c["split"] == "train"
            && c["rows_before"] == train1
            && c["rows_after"] == train1_now)
            || (c["split"] == "validation"
                && c["rows_before"] == val1
                && c["rows_after"] == val1_now)),
        "{changes:?}"
    );
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_on_change_warn_a_run_over_changed_rows_finishes_and_lists_each_change_once() {
    let s = setup().await;
    let mut server = s.server();
    let config = s.config("warn", &server.url, "warn");
    let out = s.dir.path().join("warn");
    let (train1, val1) = s.counts(&config, 1).await;

    let mop = spawn_mop(&config, &[]);
    let mut events = Vec::new();
    wait_first_epoch(&mop, &mut events);
    let restarted = s.restart_over_changed_rows(&mut server).await;
    let (train1_now, val1_now) = s.counts(&config, 1).await;
    let (ok, error) = mop.end(&mut events);
    assert!(ok, "the run goes on over the changed rows: {error}");
    assert_eq!(
        events.iter().filter(|v| v["event"] == "epoch").count(),
        2 * EPOCHS,
        "every epoch of both models was validated"
    );

    let r = results(&out);
    let changes = r["source_changes"].as_array().expect("source_changes");
    println!("changes: {changes:#?}");
    // Partition 1's training and validation rows each changed once: later
    // reads are compared with the rows after the change.
    for (split, before, after) in [
        ("train", train1, train1_now),
        ("validation", val1, val1_now),
    ] {
        let of: Vec<&Value> = changes.iter().filter(|c| c["split"] == split).collect();
        if before == after {
            // Rows replaced by as many others: the checksum still tells.
            assert!(of.len() <= 1, "{changes:?}");
            continue;
        }
        assert_eq!(of.len(), 1, "one {split} change: {changes:?}");
        let c = of[0];
        assert_eq!(c["partition"], 1);
        assert_eq!(
            (c["rows_before"].as_u64(), c["rows_after"].as_u64()),
            (Some(before), Some(after))
        );
        assert_ne!(c["checksum_before"], c["checksum_after"]);
        assert!(c["epoch"].as_u64().is_some_and(|e| e >= 1), "{c}");
    }
    assert!(changes.iter().all(|c| c["partition"] == 1), "{changes:?}");
    // Later units of partition 1 trained on the rows after the change.
    let last = r["models"][0]["train_loss"].as_array().unwrap().len();
    assert_eq!(last, EPOCHS);
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("<h2>Rows that changed during the run</h2>"));
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trainer_replaced_after_the_rows_changed_finds_it_when_it_fills_its_cache_again() {
    let s = setup().await;
    let mut server = s.server();
    // With a cache the units read no Flight: only the trainer that fills
    // its cache again, once replaced, sees the new rows. Many epochs, so
    // that the run is still going when the trainer is killed.
    let config = s.config_with("memory", &server.url, "stop", "memory", 40);
    let (train1, val1) = s.counts(&config, 1).await;
    let mop = spawn_mop(&config, &[]);
    let mut events = Vec::new();
    wait_first_epoch(&mop, &mut events);
    let restarted = s.restart_over_changed_rows(&mut server).await;
    let (train1_now, val1_now) = s.counts(&config, 1).await;
    let trainer1 = events
        .iter()
        .find(|v| v["event"] == "trainer" && v["trainer"] == 1)
        .and_then(|v| v["pid"].as_u64())
        .expect("trainer 1's pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(trainer1),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (ok, error) = mop.end(&mut events);
    println!("the run stopped with: {error}");
    assert!(!ok, "the replaced trainer read other rows: the run stops");
    assert!(
        events
            .iter()
            .any(|v| v["event"] == "trainer" && v["trainer"] == 1 && v["pid"] != trainer1),
        "trainer 1 was replaced"
    );
    assert!(
        error.contains("as the trainer filling its cache read them"),
        "{error}"
    );
    let (before, now) = if error.contains("the training rows of partition 1 ") {
        (train1, train1_now)
    } else {
        assert!(
            error.contains("the validation rows of partition 1 "),
            "{error}"
        );
        (val1, val1_now)
    };
    assert!(
        error.contains(&format!("{before} rows (checksum"))
            && error.contains(&format!("{now} rows (checksum")),
        "{error}"
    );
    drop(restarted);
}
