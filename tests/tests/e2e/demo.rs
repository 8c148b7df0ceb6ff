//! `mop demo` and `mop predict` end to end, at a tiny size: the product a
//! newcomer meets. The demo must finish, write its result tables and model
//! files, leave no process behind (after a normal end, a `--keep` that is
//! stopped, or Ctrl-C), resume after Ctrl-C to all epochs, and its best
//! model's predictions — written back into the segments with `DoPut` —
//! must cover every input row once and beat the base rate on held-out rows.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use devcluster::LocalCluster;
use hopper_tests::run::{is_gone, results};
use hopper_tests::{binary, ChildGuard};
use serde_json::Value;

/// Rows, epochs and segments of every demo here (the grid is the demo's 16 models).
const DEMO: [&str; 6] = ["--rows", "3000", "--epochs", "2", "--segments", "2"];
/// How long one demo may take before the test gives up.
const TIMEOUT: Duration = Duration::from_secs(180);
/// Models in the demo's grid.
const MODELS: usize = 16;

/// A running `mop demo`: its output lines, and every process it started.
struct Demo {
    process: ChildGuard,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    tree: ProcessWatch,
}

impl Demo {
    /// `mop demo <DEMO> --progress json --dir <dir> <extra>`.
    fn spawn(dir: &Path, extra: &[&str]) -> Demo {
        let mut child = Command::new(binary("mop").unwrap())
            .arg("demo")
            .args(DEMO)
            .args(["--progress", "json", "--dir"])
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let process = ChildGuard::new("mop demo", child);
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("demo: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let tree = ProcessWatch::start(process.pid());
        Demo {
            process,
            stdout,
            stderr,
            tree,
        }
    }

    /// Waits for the demo to exit; returns whether it succeeded and its stdout.
    fn finish(mut self) -> (bool, Vec<String>, Finished) {
        let status = self.process.wait_timeout(TIMEOUT).unwrap();
        let stdout: Vec<String> = self.stdout.iter().collect();
        let seen = self.tree.stop();
        let stderr = self.stderr.lock().unwrap().clone();
        (status.success(), stdout, Finished { seen, stderr })
    }
}

/// What a finished demo left to check.
struct Finished {
    /// Every descendant process seen while it ran: pid → command line.
    seen: BTreeMap<u32, String>,
    stderr: Vec<String>,
}

impl Finished {
    /// The directory of the demo's segments, from its own messages.
    fn segments_dir(&self) -> PathBuf {
        self.stderr
            .iter()
            .find_map(|l| {
                l.strip_prefix("reusing the segments in ").or_else(|| {
                    l.strip_prefix("starting ")
                        .and_then(|r| r.split_once(" PostgreSQL segments in "))
                        .map(|(_, dir)| dir)
                })
            })
            .map(PathBuf::from)
            .expect("the demo names its segments' directory")
    }
}

/// Polls `/proc` for the descendants of one process while it runs.
struct ProcessWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeMap<u32, String>>>,
}

impl ProcessWatch {
    fn start(root: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                for pid in descendants(root) {
                    seen.entry(pid).or_insert_with(|| cmdline(pid));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> BTreeMap<u32, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// (pid, parent pid) of every process.
fn processes() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat.rsplit(')').next()?.split_whitespace().nth(1)?;
            Some((pid, ppid.parse().ok()?))
        })
        .collect()
}

fn descendants(root: u32) -> BTreeSet<u32> {
    let all = processes();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &all {
            if ppid == p && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Fails unless every process the demo started is gone and no process
/// names the demo's directories (a postmaster's `-D`) any more.
fn assert_nothing_left(seen: &BTreeMap<u32, String>, dirs: &[&Path]) {
    assert!(
        seen.values().any(|c| c.contains("flight-server")),
        "the watch saw the demo's flight-server: {seen:?}"
    );
    assert!(
        seen.values().any(|c| c.contains("trainer")),
        "the watch saw the demo's trainers: {seen:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive: Vec<String> = seen
            .iter()
            .filter(|(pid, _)| !is_gone(**pid))
            .map(|(pid, c)| format!("{pid}: {c}"))
            .chain(
                processes()
                    .into_iter()
                    .map(|(pid, _)| (pid, cmdline(pid)))
                    .filter(|(_, c)| {
                        dirs.iter()
                            .any(|d| c.contains(d.to_string_lossy().as_ref()))
                    })
                    .map(|(pid, c)| format!("{pid}: {c}")),
            )
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind by the demo: {alive:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value after `prefix` on the first stdout line that has it.
fn field<'a>(stdout: &'a [String], prefix: &str) -> &'a str {
    stdout
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout:#?}"))
}

/// Segments left running by `--keep`: stopped (with their flight-server)
/// when dropped, so a failing test cleans up too.
struct Kept {
    server_pid: u32,
    segments: PathBuf,
    urls: Vec<String>,
}

impl Kept {
    fn from_stdout(stdout: &[String]) -> Kept {
        let server_pid = field(stdout, "server:  pid").parse().unwrap();
        let segments = PathBuf::from(field(stdout, "segments:"));
        let urls = stdout
            .iter()
            .filter_map(|l| l.trim_start().strip_prefix("psql:    psql '"))
            .filter_map(|l| l.split('\'').next())
            .map(str::to_owned)
            .collect();
        Kept {
            server_pid,
            segments,
            urls,
        }
    }

    fn stop(&self) {
        if self.server_pid != 0 && !is_gone(self.server_pid) {
            let _ = Command::new("kill")
                .arg(self.server_pid.to_string())
                .status();
        }
        if self.segments.join(devcluster::MANIFEST_FILE).exists() {
            // Attaching adopts the running segments; dropping stops them.
            let dir = self.segments.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                drop(rt.block_on(LocalCluster::attach(&dir)));
            })
            .join()
            .unwrap();
            std::fs::remove_dir_all(&self.segments).ok();
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn assert_all_models_trained(out: &Path, epochs: usize) {
    let r = results(out);
    let models = r["models"].as_array().unwrap();
    assert_eq!(models.len(), MODELS);
    for m in models {
        assert_eq!(
            m["train_loss"].as_array().unwrap().len(),
            epochs,
            "model {}",
            m["model_id"]
        );
        assert!(
            m["val_acc"].as_array().unwrap().iter().all(Value::is_f64),
            "every epoch validated: {m}"
        );
        let file = m["model_file"].as_str().unwrap();
        assert!(out.join(file).is_file(), "{file} exists");
    }
    let report = std::fs::read_to_string(out.join("report.html"))
        .expect("the demo writes report.html into its run directory");
    assert!(
        report.contains("Leaderboard")
            && report.contains("<svg")
            && report.contains("models/model-0.safetensors"),
        "report.html has the leaderboard, its charts and links to the model files"
    );
}

/// `mop predict` against a kept demo.
fn mop_predict(out: &Path, extra: &[&str]) -> Vec<String> {
    let output = Command::new(binary("mop").unwrap())
        .args(["predict", "--dir"])
        .arg(out)
        .args([
            "--table",
            "criteo",
            "--key",
            "id",
            "--into",
            "criteo_predictions",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mop predict failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_writes_tables_and_models_and_its_best_model_scores_every_row_back_into_its_segment(
) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let started = Instant::now();
    let (ok, stdout, finished) = Demo::spawn(&out, &["--keep"]).finish();
    assert!(ok, "mop demo --keep failed: {stdout:#?}");
    let kept = Kept::from_stdout(&stdout);
    eprintln!("demo: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(kept.urls.len(), 2, "one psql URL a segment: {stdout:#?}");
    assert_all_models_trained(&out, 2);

    // The result tables, read with SQL on the URL the demo printed.
    let db = connect(&kept.urls[0]).await;
    let row = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE epochs = 2 AND val_acc IS NOT NULL \
               AND state IS NOT NULL) FROM criteo_models",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (16, 16));
    let curves: i64 = db
        .query_one(
            "SELECT count(*) FROM criteo_models_info \
             WHERE array_length(train_loss, 1) = 2 AND array_length(val_acc, 1) = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(curves, 16);
    let summary = db
        .query_one(
            "SELECT models, trainers, epochs, best_model_id FROM criteo_models_summary",
            &[],
        )
        .await
        .unwrap();
    let best = results(&out)["best_model"].as_i64().unwrap();
    assert_eq!(
        (
            summary.get::<_, i32>(0),
            summary.get::<_, i32>(1),
            summary.get::<_, i32>(2),
            summary.get::<_, i32>(3) as i64
        ),
        (16, 2, 2, best)
    );

    // Predictions, written back next to the rows they score.
    let started = Instant::now();
    let lines = mop_predict(&out, &["--replace"]);
    eprintln!(
        "predict: {:.1} s: {lines:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        lines.iter().any(|l| l.starts_with("segment 0"))
            && lines.iter().any(|l| l.starts_with("segment 1")),
        "{lines:?}"
    );
    // Scoring again with --replace starts the table over.
    mop_predict(&out, &["--replace", "--model", &best.to_string()]);

    let (mut held_out, mut correct, mut clicks) = (0i64, 0i64, 0i64);
    for (i, url) in kept.urls.iter().enumerate() {
        let seg = connect(url).await;
        let row = seg
            .query_one(
                "SELECT (SELECT count(*) FROM criteo), (SELECT count(*) FROM criteo_predictions), \
                        (SELECT count(DISTINCT id) FROM criteo_predictions), \
                        (SELECT count(*) FROM criteo c FULL JOIN criteo_predictions p USING (id) \
                          WHERE c.id IS NULL OR p.id IS NULL)",
                &[],
            )
            .await
            .unwrap();
        let (rows, preds, keys, unmatched): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert!(rows > 0, "segment {i} holds rows");
        assert_eq!(
            (preds, keys, unmatched),
            (rows, rows, 0),
            "segment {i}: one prediction per row, keyed like the input"
        );
        let bad: i64 = seg
            .query_one(
                "SELECT count(*) FROM criteo_predictions \
                 WHERE predicted NOT IN (0, 1) OR probability NOT BETWEEN 0 AND 1 \
                    OR (predicted = 1) <> (probability > 0.5)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(bad, 0, "segment {i}: classes and probabilities agree");
        // Held-out rows: the demo's validation split (fraction 0.2 on id).
        let row = seg
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE p.predicted = c.label), \
                        coalesce(sum(c.label), 0) \
                 FROM criteo c JOIN criteo_predictions p USING (id) \
                 WHERE mod(abs(hashint8(c.id::int8)::int8), 1000) < 200",
                &[],
            )
            .await
            .unwrap();
        held_out += row.get::<_, i64>(0);
        correct += row.get::<_, i64>(1);
        clicks += row.get::<_, i64>(2);
    }
    let accuracy = correct as f64 / held_out as f64;
    let base_rate = clicks.max(held_out - clicks) as f64 / held_out as f64;
    eprintln!("held-out rows {held_out}: accuracy {accuracy:.4}, base rate {base_rate:.4}");
    assert!(held_out > 300, "{held_out} held-out rows");
    assert!(
        accuracy > base_rate,
        "the best model ({accuracy:.4}) beats always predicting the majority class ({base_rate:.4})"
    );

    kept.stop();
    assert_nothing_left(&finished.seen, &[&kept.segments, &out]);
    assert_eq!(finished.segments_dir(), kept.segments);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_everything_the_demo_started_and_resume_finishes_every_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let checkpoint = out.join("checkpoint").join("checkpoint.json");
    let demo = Demo::spawn(&out, &[]);
    // Wait until at least one unit is committed, then interrupt.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let units = std::fs::read(&checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|c| c["timeline"].as_array().map(Vec::len))
            .unwrap_or(0);
        if units >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no unit finished in {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    demo.process.signal(libc_sigint()).unwrap();
    let (ok, _, interrupted) = demo.finish();
    assert!(!ok, "an interrupted demo exits with an error");
    assert!(
        interrupted.stderr.iter().any(|l| l.contains("--resume")),
        "it says how to continue: {:#?}",
        interrupted.stderr
    );
    let segments = interrupted.segments_dir();
    assert_nothing_left(&interrupted.seen, &[&segments, &out]);
    let done_before = serde_json::from_slice::<Value>(&std::fs::read(&checkpoint).unwrap())
        .unwrap()["timeline"]
        .as_array()
        .unwrap()
        .len();
    assert!(done_before < 2 * 2 * MODELS, "interrupted before the end");

    let (ok, stdout, resumed) = Demo::spawn(&out, &["--resume"]).finish();
    assert!(ok, "mop demo --resume failed: {stdout:#?}");
    let units = serde_json::from_slice::<Value>(&std::fs::read(&checkpoint).unwrap()).unwrap()
        ["timeline"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        units,
        2 * 2 * MODELS,
        "every model trained on both partitions in both epochs, once"
    );
    assert_all_models_trained(&out, 2);
    assert_nothing_left(&resumed.seen, &[&segments, &out]);
    assert!(
        !segments.exists(),
        "a demo without --keep removes its segments"
    );

    // README's first command, run again in the same directory: a new run
    // that finishes, not a refusal to overwrite the finished one.
    let (ok, stdout, again) = Demo::spawn(&out, &[]).finish();
    assert!(
        ok,
        "a second mop demo in the same directory failed: {stdout:#?} {:#?}",
        again.stderr
    );
    assert_all_models_trained(&out, 2);
}

/// SIGINT, without a libc dependency in this crate.
fn libc_sigint() -> i32 {
    nix::sys::signal::Signal::SIGINT as i32
}
