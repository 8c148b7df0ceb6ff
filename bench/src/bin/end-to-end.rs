//! `end-to-end`: the paper's headline on this machine — a grid of MLPs on
//! the Criteo-like table trained by hopper (`mop train`, one trainer per
//! PostgreSQL segment) against what a user would run instead on the same
//! cores: the same models one after another in one process from data
//! already in memory ("standalone"), the models split between W processes
//! of one thread each ("task-parallel"), and, when a Python with PyTorch is
//! at hand (`HOPPER_TORCH_PYTHON`), PyTorch doing the standalone's work.
//!
//! ```text
//!  devcluster: W PostgreSQL segments ── load_criteo ──► criteo (rows spread by id)
//!  hopper         flight-server ◄── mop train (W trainers × 1 thread, cache = memory)
//!  standalone     Flight once into memory ──► featurize ──► for each model, epoch:
//!                 for p in visit_order(model, epoch): train_partition (W threads)
//!  task-parallel  W processes of this binary (--task-worker K), one thread each:
//!                 each reads the table into memory, then trains its 1/W of the
//!                 models exactly as the standalone does
//!  pytorch        the same rows, model, Adam and batch sizes in torch (W threads)
//! ```
//!
//! The standalone and task-parallel legs visit the partitions in the order
//! the scheduler gives each model and seed model m as the runner does, so
//! their models are the ones hopper trains: the final validation accuracies
//! must agree (exactly for task-parallel, one thread like the trainers; to
//! rounding for the standalone's W threads, whose reductions change order).
//!
//! Memory is read too: the peak resident memory of hopper's runner and of
//! its largest trainer (which keeps the states of the models it trained
//! last for their next units), against task-parallel's largest worker; and
//! hopper's CPU split between its runner and its trainers, against the
//! task-parallel workers', which do the trainers' training.
//!
//! Every leg runs `--samples` times (default 3), interleaved: sample s runs
//! the legs round-robin, starting with leg s (rotated), so slow drift of a
//! shared machine's load falls on every leg alike. Each leg prints its
//! median wall time with the spread (min–max); the last lines are
//! `hopper/standalone = X`, `hopper/task-parallel = Z` and `hopper/pytorch =
//! Y`, each the median over samples of the ratio within a sample (below 1
//! means hopper is faster).
//!
//! `cargo run --release -p hopper-bench --bin end-to-end -- --quick`
//! (needs `cargo build --release -p flight-server -p mop --bins`).
//! `--smoke` runs every leg once on a tiny table and two small models, the
//! standalone on one thread (seconds; CI's check that the benchmark still
//! works): its numbers are not figures.

use std::io::{BufRead, BufReader as StdBufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use clap::Parser;
use devcluster::{load_criteo, ClusterOptions, LocalCluster};
use flight_client::plan::plan;
use flight_client::read::spawn_reader;
use flight_client::FlightSlice;
use hopper_bench::procstat::TreePeaks;
use hopper_bench::samples::Samples;
use hopper_bench::server::{self, Server};
use mop_core::config::Arch;
use mop_core::run_config::RunConfig;
use mop_core::schedule::visit_order;
use mop_trainer::device::set_threads;
use mop_trainer::featurize::{Featurized, Featurizer};
use mop_trainer::model::Model;
use mop_trainer::shuffle::{shuffled, unit_seed, WINDOW};
use mop_trainer::train::{evaluate, train_partition};
use tch::Tensor;

/// hopper end to end against standalone, task-parallel and PyTorch training.
#[derive(Parser, Debug)]
#[command(name = "end-to-end")]
struct Args {
    /// Rows in the table.
    #[arg(long, default_value_t = 30_000)]
    rows: u64,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// PostgreSQL segments (and trainers; the standalone's threads; the
    /// task-parallel processes).
    #[arg(long, default_value_t = 2)]
    segments: usize,
    /// Samples of every leg, interleaved round-robin.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// A few-minute sample set: 12 000 rows, one epoch.
    #[arg(long)]
    quick: bool,
    /// A smoke run in seconds: 1 000 rows, two epochs, two small models
    /// instead of the paper's grid, a one-thread standalone, one sample
    /// (overrides --rows, --epochs, --quick and --samples); the numbers are
    /// not figures.
    #[arg(long)]
    smoke: bool,
    /// Internal: run as task-parallel worker K of the run configuration
    /// `--config` (W = its trainers): read the table into memory, print
    /// `ready`, wait for a line on stdin, train models K·n/W..(K+1)·n/W on
    /// one thread, print the outcome as JSON.
    #[arg(long, hide = true, value_name = "K", requires = "config")]
    task_worker: Option<usize>,
    /// Internal: the run configuration of `--task-worker`.
    #[arg(long, hide = true)]
    config: Option<PathBuf>,
}

/// The models a run trains.
struct Grid {
    /// What the title line calls them.
    what: &'static str,
    /// The `[grid]` keys that differ between runs.
    toml: &'static str,
}

/// The paper's grid: 2 learning rates × 2 L2 × 4 batch sizes of confA.
const PAPER_GRID: Grid = Grid {
    what: "16 confA models",
    toml: r#"arch = [{ kind = "mlp", hidden = [1000, 500] }]
lr = [1e-3, 1e-4]
l2 = [1e-4, 1e-5]
batch_size = [32, 64, 256, 512]"#,
};

/// `--smoke`: two small models, the same code paths.
const SMOKE_GRID: Grid = Grid {
    what: "2 small models (7306 → 64 → 32 → 2)",
    toml: r#"arch = [{ kind = "mlp", hidden = [64, 32] }]
lr = [1e-3]
l2 = [1e-5]
batch_size = [32, 256]"#,
};

fn config_toml(url: &str, out: &Path, epochs: usize, trainers: usize, grid: &Grid) -> String {
    format!(
        r#"[source]
flight = "{url}"
table = "criteo"
validation = {{ fraction = 0.1, key = "id" }}
cache = "memory"

[train]
epochs = {epochs}
seed = 42
trainers = {trainers}
threads = 1

[grid]
{}
optimizer = [{{ kind = "adam" }}]
input = {{ kind = "criteo", sparse = true }}
classes = 2

[output]
dir = "{}"
"#,
        grid.toml,
        out.display()
    )
}

/// Fields of `/proc/self/stat` after the command name.
fn stat_fields() -> Vec<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default().to_string();
    after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect()
}

/// CPU seconds from two clock-tick fields of [`stat_fields`].
fn cpu_seconds(user: usize) -> f64 {
    let f = stat_fields();
    (f.get(user).copied().unwrap_or(0.0) + f.get(user + 1).copied().unwrap_or(0.0)) / 100.0
}

/// CPU seconds of this process's waited-for children (`cutime + cstime`,
/// fields 16 and 17 of stat).
fn children_cpu() -> f64 {
    cpu_seconds(13)
}

/// CPU seconds of this process (`utime + stime`, fields 14 and 15).
fn own_cpu() -> f64 {
    cpu_seconds(11)
}

/// The ways of training the grid, in the order sample 0 runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Hopper,
    Standalone,
    TaskParallel,
    Pytorch,
}

impl Leg {
    fn name(self) -> &'static str {
        match self {
            Leg::Hopper => "hopper",
            Leg::Standalone => "standalone",
            Leg::TaskParallel => "task-parallel",
            Leg::Pytorch => "pytorch",
        }
    }

    /// What the table calls it: `w` trainers or processes, `threads` of
    /// the one-process legs.
    fn describe(self, w: usize, threads: usize) -> String {
        match self {
            Leg::Hopper => format!("hopper (mop train, {w} trainers × 1 thread)"),
            Leg::Standalone => format!("standalone (1 process × {threads} threads, in memory)"),
            Leg::TaskParallel => format!("task-parallel ({w} processes × 1 thread, in memory)"),
            Leg::Pytorch => format!("pytorch (1 process × {threads} threads, in memory)"),
        }
    }
}

/// One sample of one leg.
struct Outcome {
    wall: f64,
    cpu: f64,
    samples: u64,
    /// Final validation accuracy per model id.
    accuracies: Vec<f64>,
    note: String,
    /// hopper only: where its time went.
    breakdown: Option<Breakdown>,
    /// Seconds spent evaluating (standalone, task-parallel: summed over processes).
    eval_seconds: f64,
    /// Peak resident memory, MiB: hopper's runner and its largest trainer;
    /// task-parallel's largest worker (as the second). None for the legs
    /// that run in this process.
    peak_mib: Option<(f64, f64)>,
    /// hopper only: CPU seconds of the runner and of its trainers together.
    cpu_split: Option<(f64, f64)>,
}

/// How often the memory of hopper's processes and the task-parallel
/// workers is read ([`TreePeaks`]).
const PEAK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Every batch of the endpoints `slices` names.
async fn read(slices: Vec<FlightSlice>) -> Result<Vec<RecordBatch>> {
    let mut rx = spawn_reader::<flight_client::Error>(&tokio::runtime::Handle::current(), slices);
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.push(b?);
    }
    Ok(out)
}

/// The runner's split: partition p is every endpoint i with i % W == p.
async fn partitions(url: &str, sql: &str, w: usize) -> Result<Vec<Vec<RecordBatch>>> {
    let slices = plan(url, sql).await?;
    let mut parts = Vec::with_capacity(w);
    for p in 0..w {
        let mine = slices
            .iter()
            .enumerate()
            .filter(|(i, _)| i % w == p)
            .map(|(_, s)| s.clone())
            .collect();
        parts.push(read(mine).await?);
    }
    Ok(parts)
}

/// Where one run of hopper's wall time went, per trainer (averages over
/// trainers), in seconds.
#[derive(Debug, Clone, Copy)]
struct Breakdown {
    trainers: usize,
    units: usize,
    /// Before the first unit was sent and after the last came back, on the
    /// runner's clock: spawning trainers, reading partitions into memory,
    /// the last validations, results and report.
    outside: f64,
    /// The trainers' own unit seconds (UnitResult.seconds): training.
    training: f64,
    /// Within the runner's unit spans (union per trainer), not training:
    /// the state sent, the model rebuilt, its state encoded and returned,
    /// and validation passes the unit waited behind.
    in_units: f64,
    /// Between a trainer's unit spans: scheduling, checkpoints, and
    /// validation passes while no unit was out.
    between: f64,
}

/// Union length of intervals.
fn covered(mut spans: Vec<(f64, f64)>) -> f64 {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut total, mut cur) = (0.0, None::<(f64, f64)>);
    for (s, e) in spans {
        cur = match cur {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    total + cur.map_or(0.0, |(s, e)| e - s)
}

/// hopper's time, from `timeline.json` (the runner's clock: when it sent
/// each unit and when the model's new state was back) and the trainers'
/// own unit seconds (`busy`, summed over trainers, from results.json).
/// The timeline holds no validation passes and no per-unit trainer
/// seconds, so training is averaged over trainers and validation is not
/// separated here (see [`report_breakdown`]).
fn breakdown(out: &Path, wall: f64, busy: f64) -> Result<Breakdown> {
    let timeline: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("timeline.json"))?)?;
    let field = |u: &serde_json::Value, k: &str| u[k].as_f64().unwrap_or(0.0);
    let first = timeline
        .iter()
        .map(|u| field(u, "start"))
        .fold(f64::INFINITY, f64::min);
    let last = timeline.iter().map(|u| field(u, "end")).fold(0.0, f64::max);
    let trainers = timeline
        .iter()
        .map(|u| u["partition"].as_u64().unwrap_or(0) as usize + 1)
        .max()
        .unwrap_or(1);
    // Per trainer, the union of its units' spans: a unit sent ahead, while
    // the one before it still trains, does not count twice.
    let spans: f64 = (0..trainers)
        .map(|p| {
            covered(
                timeline
                    .iter()
                    .filter(|u| u["partition"].as_u64() == Some(p as u64))
                    .map(|u| (field(u, "start"), field(u, "end")))
                    .collect(),
            )
        })
        .sum();
    let per = |x: f64| x / trainers as f64;
    Ok(Breakdown {
        trainers,
        units: timeline.len(),
        outside: wall - (last - first),
        training: per(busy),
        in_units: per(spans - busy),
        between: (last - first) - per(spans),
    })
}

async fn hopper(mop: &Path, config: &Path, out: &Path) -> Result<Outcome> {
    let cpu0 = children_cpu();
    let start = Instant::now();
    let child = Command::new(mop)
        .args(["train", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let peaks = TreePeaks::watch(pid, PEAK_EVERY);
    let run = child.wait_with_output()?;
    let wall = start.elapsed().as_secs_f64();
    let used = peaks.finish(pid);
    if !run.status.success() {
        let stderr = String::from_utf8_lossy(&run.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        bail!(
            "mop train failed ({}); run it by hand: mop train --config {}\n{}",
            run.status,
            config.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // `model states: N hops trainer to trainer, …`: what crossed the network.
    let stderr = String::from_utf8_lossy(&run.stderr);
    let moved = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("model states:"));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json"))?)?;
    let models = results["models"]
        .as_array()
        .context("results.json has no models")?;
    let mut accuracies = vec![0.0; models.len()];
    let mut busy = 0.0;
    for m in models {
        let id = m["model_id"].as_u64().context("model_id")? as usize;
        accuracies[id] = m["val_acc"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN);
        busy += m["epoch_seconds"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).sum::<f64>())
            .unwrap_or(0.0);
    }
    let cpu = children_cpu() - cpu0;
    Ok(Outcome {
        wall,
        cpu,
        samples: 0,
        accuracies,
        // cache = "memory": units train from the trainers' memory, so no
        // unit reads Flight; the one read of each partition is in start-up.
        note: format!(
            "units {busy:.1} s (trainers' clocks); cache = memory, partitions read once at start-up; {}",
            moved.unwrap_or("mop printed no line on how model states moved")
        ),
        breakdown: Some(breakdown(out, wall, busy)?),
        eval_seconds: 0.0,
        peak_mib: Some((used.root_kib as f64 / 1024.0, used.below_kib as f64 / 1024.0)),
        // The runner's own: the tree's less what its trainers were seen using.
        cpu_split: Some((cpu - used.below_cpu, used.below_cpu)),
    })
}

/// Featurized once, kept in memory: what a trainer's memory cache holds.
struct InMemory {
    parts: Vec<Vec<Featurized>>,
    validation: Vec<Featurized>,
}

impl InMemory {
    /// Reads the run's training partitions (the runner's split) and its
    /// validation rows over Flight, and featurizes them.
    async fn load(config: &RunConfig, url: &str, w: usize) -> Result<Self> {
        let parts = partitions(url, &config.train_sql()?, w).await?;
        let validation = match config.validation_sql()? {
            Some(sql) => partitions(url, &sql, 1).await?.remove(0),
            None => Vec::new(),
        };
        Self::featurize(config, &parts, &validation)
    }

    fn featurize(
        config: &RunConfig,
        parts: &[Vec<RecordBatch>],
        validation: &[RecordBatch],
    ) -> Result<Self> {
        let featurizer = Featurizer::new(&config.grid.expand()?[0]);
        let all = |batches: &[RecordBatch]| -> Result<Vec<Featurized>> {
            Ok(batches
                .iter()
                .map(|b| featurizer.featurize(b))
                .collect::<Result<_, _>>()?)
        };
        Ok(Self {
            parts: parts.iter().map(|p| all(p)).collect::<Result<_>>()?,
            validation: all(validation)?,
        })
    }

    /// `x` and `y` of `batches` as `.npy` files in `dir`, named `name`.
    fn write_npy(batches: &[Featurized], dir: &Path, name: &str) -> Result<serde_json::Value> {
        let x: Vec<Tensor> = batches.iter().map(|f| f.x.shallow_clone()).collect();
        let y: Vec<Tensor> = batches.iter().map(|f| f.y.shallow_clone()).collect();
        let (xp, yp) = (
            dir.join(format!("{name}-x.npy")),
            dir.join(format!("{name}-y.npy")),
        );
        Tensor::f_cat(&x, 0)?.f_contiguous()?.write_npy(&xp)?;
        Tensor::f_cat(&y, 0)?.f_contiguous()?.write_npy(&yp)?;
        Ok(serde_json::json!({ "x": xp, "y": yp }))
    }
}

/// The PyTorch leg's input (`bench/python/pytorch_grid.py`), written once
/// when `HOPPER_TORCH_PYTHON` names a Python with torch: its manifest.
fn pytorch_manifest(
    config: &RunConfig,
    data: &InMemory,
    dir: &Path,
    threads: usize,
) -> Result<Option<(PathBuf, PathBuf)>> {
    let Some(python) = std::env::var_os("HOPPER_TORCH_PYTHON") else {
        return Ok(None);
    };
    let models = config.grid.expand()?;
    let (w, epochs, seed) = (data.parts.len(), config.train.epochs, config.train.seed);
    let mut parts = Vec::new();
    for (p, batches) in data.parts.iter().enumerate() {
        parts.push(InMemory::write_npy(batches, dir, &format!("part{p}"))?);
    }
    let mut specs = Vec::new();
    let mut orders = Vec::new();
    for (m, cfg) in models.iter().enumerate() {
        let Arch::Mlp { hidden } = &cfg.arch else {
            bail!("the PyTorch leg builds MLPs only");
        };
        specs.push(serde_json::json!({
            "hidden": hidden, "lr": cfg.lr, "l2": cfg.l2, "batch_size": cfg.batch_size,
        }));
        orders.push(
            (0..epochs)
                .map(|e| visit_order(models.len(), w, seed, m, e))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    let manifest = serde_json::json!({
        "threads": threads,
        "slots": models[0].input.dims(),
        "classes": models[0].classes,
        "partitions": parts,
        "validation": InMemory::write_npy(&data.validation, dir, "validation")?,
        "models": specs,
        "orders": orders,
    });
    let path = dir.join("pytorch.json");
    std::fs::write(&path, serde_json::to_vec(&manifest)?)?;
    Ok(Some((PathBuf::from(python), path)))
}

/// One sample of the PyTorch leg.
fn pytorch(python: &Path, manifest: &Path, threads: usize) -> Result<Outcome> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pytorch_grid.py");
    let out = Command::new(python).arg(script).arg(manifest).output()?;
    if !out.status.success() {
        bail!(
            "the PyTorch leg failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Outcome {
        wall: r["wall"].as_f64().unwrap_or(f64::NAN),
        cpu: r["cpu"].as_f64().unwrap_or(f64::NAN),
        samples: r["samples"].as_u64().unwrap_or(0),
        accuracies: r["accuracies"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
            .unwrap_or_default(),
        note: format!(
            "torch {}, {threads} threads",
            r["torch"].as_str().unwrap_or("?")
        ),
        breakdown: None,
        eval_seconds: f64::NAN,
        peak_mib: None,
        cpu_split: None,
    })
}

/// What training some of the grid's models one after another gave.
struct Trained {
    samples: u64,
    /// (model id, final validation accuracy)
    accuracies: Vec<(usize, f64)>,
    /// Seconds in `evaluate`.
    eval_seconds: f64,
}

/// Trains `models` of the grid one after another on this process's
/// threads, from memory: each model visits the partitions in the order the
/// scheduler gives it and is seeded as the runner seeds it. The standalone
/// leg runs it for every model; each task-parallel worker for its share.
fn train_models(config: &RunConfig, data: &InMemory, models: Range<usize>) -> Result<Trained> {
    let grid = config.grid.expand()?;
    let (w, epochs, seed) = (data.parts.len(), config.train.epochs, config.train.seed);
    let mut out = Trained {
        samples: 0,
        accuracies: Vec::new(),
        eval_seconds: 0.0,
    };
    for m in models {
        let cfg = &grid[m];
        let model_seed = seed.wrapping_add(m as u64);
        let mut model = Model::new(cfg.clone(), model_seed)?;
        let mut opt = model.optimizer()?;
        let mut acc = f64::NAN;
        for epoch in 0..epochs {
            for p in visit_order(grid.len(), w, seed, m, epoch)? {
                let batches = data.parts[p].iter().map(|f| Ok(f.shallow_clone()));
                let batches = shuffled(batches, unit_seed(model_seed, epoch, p), WINDOW);
                let metrics =
                    train_partition(&mut model, &mut opt, batches, cfg.batch_size, |_| {})?;
                out.samples += metrics.samples;
            }
            let t = Instant::now();
            acc = evaluate(
                &model,
                data.validation.iter().map(|f| Ok(f.shallow_clone())),
            )?
            .accuracy;
            out.eval_seconds += t.elapsed().as_secs_f64();
        }
        out.accuracies.push((m, acc));
    }
    Ok(out)
}

fn standalone(config: &RunConfig, data: &InMemory, threads: usize) -> Result<Outcome> {
    set_threads(threads);
    let n = config.grid.expand()?.len();
    let cpu0 = own_cpu();
    let start = Instant::now();
    let t = train_models(config, data, 0..n)?;
    Ok(Outcome {
        wall: start.elapsed().as_secs_f64(),
        cpu: own_cpu() - cpu0,
        samples: t.samples,
        accuracies: t.accuracies.iter().map(|&(_, a)| a).collect(),
        note: format!("{threads} threads"),
        breakdown: None,
        eval_seconds: t.eval_seconds,
        peak_mib: None,
        cpu_split: None,
    })
}

/// The models task-parallel worker `k` of `w` trains: a contiguous share
/// (the grid varies batch size fastest, so every share holds the same mix
/// of cheap and dear models).
fn share(n: usize, k: usize, w: usize) -> Range<usize> {
    k * n / w..(k + 1) * n / w
}

/// `--task-worker K`: one process of the task-parallel leg.
async fn task_worker(k: usize, config_path: &Path) -> Result<()> {
    let config = RunConfig::load(config_path)?;
    let w = config
        .train
        .trainers
        .context("the task-parallel worker's configuration names no trainers")?;
    let url = config
        .source
        .flight
        .locations()
        .first()
        .context("the configuration names no flight-server")?
        .to_string();
    // Reading and featurizing are not timed: the leg starts from memory.
    let data = InMemory::load(&config, &url, w).await?;
    let n = config.grid.expand()?.len();
    set_threads(1);
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let cpu0 = own_cpu();
    let start = Instant::now();
    let t = train_models(&config, &data, share(n, k, w))?;
    let out = serde_json::json!({
        "wall": start.elapsed().as_secs_f64(),
        "cpu": own_cpu() - cpu0,
        "samples": t.samples,
        "accuracies": t.accuracies,
        "eval_seconds": t.eval_seconds,
    });
    println!("{out}");
    Ok(())
}

/// One sample of the task-parallel leg: W workers, started and loaded
/// first, then told to go at once; the leg lasts until the last is done.
fn task_parallel(config_path: &Path, w: usize, n: usize) -> Result<Outcome> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for k in 0..w {
        let mut child = Command::new(&exe)
            .arg("--task-worker")
            .arg(k.to_string())
            .arg("--config")
            .arg(config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} --task-worker {k}", exe.display()))?;
        let mut out = StdBufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("task-parallel worker {k} printed {line:?} instead of `ready`");
        }
        let peaks = TreePeaks::watch(child.id(), PEAK_EVERY);
        children.push((child, out, peaks));
    }
    let start = Instant::now();
    for (child, _, _) in &mut children {
        let stdin = child.stdin.as_mut().context("no stdin")?;
        writeln!(stdin, "go")?;
        stdin.flush()?;
    }
    let mut accuracies = vec![f64::NAN; n];
    let (mut cpu, mut samples, mut eval_seconds) = (0.0, 0, 0.0);
    let mut worker_kib = 0;
    for (k, (mut child, mut out, peaks)) in children.into_iter().enumerate() {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let pid = child.id();
        let status = child.wait()?;
        worker_kib = worker_kib.max(peaks.finish(pid).root_kib);
        if !status.success() {
            bail!("task-parallel worker {k} failed ({status})");
        }
        let r: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("task-parallel worker {k} printed {line:?}"))?;
        cpu += r["cpu"].as_f64().unwrap_or(f64::NAN);
        samples += r["samples"].as_u64().unwrap_or(0);
        eval_seconds += r["eval_seconds"].as_f64().unwrap_or(f64::NAN);
        for pair in r["accuracies"].as_array().into_iter().flatten() {
            let id = pair[0].as_u64().context("model id")? as usize;
            if let Some(slot) = accuracies.get_mut(id) {
                *slot = pair[1].as_f64().unwrap_or(f64::NAN);
            }
        }
    }
    Ok(Outcome {
        wall: start.elapsed().as_secs_f64(),
        cpu,
        samples,
        accuracies,
        note: format!("the {n} models split {w} ways"),
        breakdown: None,
        eval_seconds,
        peak_mib: Some((0.0, worker_kib as f64 / 1024.0)),
        cpu_split: None,
    })
}

/// Largest difference between two legs' final accuracies.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Prints where hopper's time went, per trainer: median [min–max] over
/// samples of every row. Validation is estimated (the timeline has no
/// validation passes): the task-parallel workers' own one-thread
/// evaluation seconds of the same models, divided by W, since each
/// trainer validates 1/W of the rows, on one thread.
fn report_breakdown(hopper: &[&Outcome], task: &[&Outcome]) {
    let b: Vec<Breakdown> = hopper.iter().filter_map(|o| o.breakdown).collect();
    let Some(first) = b.first() else { return };
    let w = first.trainers as f64;
    let validation = Samples(task.iter().map(|o| o.eval_seconds / w).collect());
    let col = |f: &dyn Fn(&Breakdown) -> f64| Samples(b.iter().map(f).collect());
    let wall = Samples(hopper.iter().map(|o| o.wall).collect());
    println!(
        "\nwhere hopper's {} s went, per trainer ({} trainers, {} units; median [min–max] over {} samples):",
        wall.show(1),
        first.trainers,
        first.units,
        b.len()
    );
    let rows: [(&str, Samples); 5] = [
        (
            "start-up (trainers, reading partitions), after the last unit [runner's clock]",
            col(&|x| x.outside),
        ),
        (
            "training [trainers' own unit seconds]",
            col(&|x| x.training),
        ),
        (
            "in a unit, not training: state sent, model rebuilt, state returned, validations waited for [runner's timeline − trainers' seconds]",
            col(&|x| x.in_units),
        ),
        (
            "between units: scheduling, checkpoints, validations [runner's timeline]",
            col(&|x| x.between),
        ),
        (
            "  of the two rows above, validation (estimated: task-parallel's 1-thread evaluation ÷ W)",
            validation.clone(),
        ),
    ];
    for (what, s) in rows {
        println!("  {:>20} s  {what}", s.show(1));
    }
    let exposed = Samples(
        b.iter()
            .map(|x| x.in_units + x.between - validation.median())
            .collect(),
    );
    println!(
        "  {:>20} s  state exposed: a trainer neither training nor validating, between its first and last unit (the two rows above less validation)",
        exposed.show(1)
    );
}

fn main() -> Result<()> {
    // The allocator settings `mop` runs with, for the standalone leg (this
    // process) and the task-parallel workers (this binary) alike.
    // Set before the runtime starts its threads, as `mop` sets them.
    hopper_malloc::keep_freed_memory();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> Result<()> {
    let mut args = Args::parse();
    if let (Some(k), Some(config)) = (args.task_worker, args.config.as_deref()) {
        return task_worker(k, config).await;
    }
    if args.quick {
        args.rows = 12_000;
        args.epochs = 1;
    }
    let grid = if args.smoke {
        args.rows = 1_000;
        args.epochs = 2;
        args.samples = 1;
        println!(
            "SMOKE RUN (--smoke): a tiny table and two small models; the numbers below are not figures"
        );
        &SMOKE_GRID
    } else {
        &PAPER_GRID
    };
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let (server_bin, mop_bin) =
        server::binaries("cargo build --release -p flight-server -p mop --bins")?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# hopper end to end: {} rows, {} epochs, {} segments, {}, {} samples per leg (load average {})",
        args.rows,
        args.epochs,
        args.segments,
        grid.what,
        args.samples,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let w = args.segments;
    let cluster = LocalCluster::start(w, ClusterOptions::default()).await?;
    load_criteo(&cluster, "criteo", args.rows, 7).await?;
    let server = Server::start(&server_bin, &cluster).await?;
    let dir = std::env::temp_dir().join(format!("hopper-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // One configuration per sample: each hopper run writes a fresh output
    // directory.
    let config_of = |s: usize| -> Result<PathBuf> {
        let path = dir.join(format!("grid-{s}.toml"));
        let out = dir.join(format!("out-{s}"));
        std::fs::write(&path, config_toml(&server.url, &out, args.epochs, w, grid))?;
        Ok(path)
    };
    let config = RunConfig::load(&config_of(0)?)?;
    let n = config.grid.expand()?.len();

    // Reading and featurizing are not timed: the in-process legs start
    // from data in memory (hopper reads its partitions in its start-up).
    let data = InMemory::load(&config, &server.url, w).await?;
    // A smoke run's standalone trains on one thread: tiny batches on two
    // threads of a shared machine spend their time waiting for each other.
    let threads = if args.smoke { 1 } else { w };
    let torch = pytorch_manifest(&config, &data, &dir, threads)?;
    let mut legs = vec![Leg::Hopper, Leg::Standalone, Leg::TaskParallel];
    if torch.is_some() {
        legs.push(Leg::Pytorch);
    }

    let mut results: Vec<Vec<Outcome>> = legs.iter().map(|_| Vec::new()).collect();
    for s in 0..args.samples {
        let path = config_of(s)?;
        let mut line = format!("sample {}:", s + 1);
        for i in 0..legs.len() {
            let at = (s + i) % legs.len();
            let leg = legs[at];
            let o = match leg {
                Leg::Hopper => hopper(&mop_bin, &path, &dir.join(format!("out-{s}"))).await?,
                Leg::Standalone => standalone(&config, &data, threads)?,
                Leg::TaskParallel => task_parallel(&path, w, n)?,
                Leg::Pytorch => {
                    let (python, manifest) = torch.as_ref().context("no PyTorch")?;
                    pytorch(python, manifest, threads)?
                }
            };
            line += &format!(" {} {:.1} s,", leg.name(), o.wall);
            results[at].push(o);
        }
        println!("{}", line.trim_end_matches(','));
    }
    // hopper's samples count is the standalone's: the same rows trained.
    let trained = results[1][0].samples;
    for o in &mut results[0] {
        o.samples = trained;
    }

    let of = |leg: Leg| -> Vec<&Outcome> {
        legs.iter()
            .position(|&l| l == leg)
            .map(|i| results[i].iter().collect())
            .unwrap_or_default()
    };
    report_breakdown(&of(Leg::Hopper), &of(Leg::TaskParallel));

    println!();
    println!(
        "| way | wall s, median [min–max] | samples/s (median) | CPU s (median) | best val acc | note |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, &leg) in legs.iter().enumerate() {
        let os = &results[i];
        let wall = Samples(os.iter().map(|o| o.wall).collect());
        let cpu = Samples(os.iter().map(|o| o.cpu).collect());
        let rate = Samples(os.iter().map(|o| o.samples as f64 / o.wall).collect());
        let best = os[0].accuracies.iter().copied().fold(f64::NAN, f64::max);
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.4} | {} |",
            leg.describe(w, threads),
            wall.show(1),
            rate.median(),
            cpu.median(),
            best,
            os[0].note
        );
    }

    // Memory: the states a trainer keeps for its models' next units, and
    // the runner's copies, against a worker holding only its own models.
    let peak = |leg: Leg, which: fn(&(f64, f64)) -> f64| {
        Samples(
            of(leg)
                .iter()
                .filter_map(|o| o.peak_mib.as_ref().map(which))
                .collect(),
        )
    };
    let (runner, trainer, worker) = (
        peak(Leg::Hopper, |p| p.0),
        peak(Leg::Hopper, |p| p.1),
        peak(Leg::TaskParallel, |p| p.1),
    );
    if !runner.is_empty() && !worker.is_empty() {
        println!(
            "\npeak resident memory, MiB (VmHWM every {} ms; median [min–max]): hopper's runner {}, its largest trainer {}; task-parallel's largest worker {}",
            PEAK_EVERY.as_millis(),
            runner.show(0),
            trainer.show(0),
            worker.show(0)
        );
    }
    // Where hopper's CPU goes: its runner, and its trainers against the
    // task-parallel workers doing the same training.
    let split = |which: fn(&(f64, f64)) -> f64| {
        Samples(
            of(Leg::Hopper)
                .iter()
                .filter_map(|o| o.cpu_split.as_ref().map(which))
                .collect(),
        )
    };
    let (runner_cpu, trainers_cpu) = (split(|c| c.0), split(|c| c.1));
    let workers_cpu = Samples(of(Leg::TaskParallel).iter().map(|o| o.cpu).collect());
    if !runner_cpu.is_empty() && !workers_cpu.is_empty() {
        println!(
            "CPU s (median [min–max]): hopper's runner {}, its trainers together {}; task-parallel's workers together {}",
            runner_cpu.show(1),
            trainers_cpu.show(1),
            workers_cpu.show(1)
        );
    }

    // Every sample's final accuracies against hopper's.
    println!();
    for (leg, exact) in [(Leg::Standalone, false), (Leg::TaskParallel, true)] {
        let diff = of(Leg::Hopper)
            .iter()
            .zip(of(leg))
            .map(|(a, b)| max_diff(&a.accuracies, &b.accuracies))
            .fold(0.0, f64::max);
        let verdict = if diff == 0.0 {
            "equal"
        } else if !exact && diff < 1e-3 {
            "equal to rounding (W threads reduce in another order)"
        } else {
            "DIFFERENT: the legs did not train the same models"
        };
        println!(
            "final val acc, largest difference between hopper and {} over {n} models and every sample: {diff:.4} ({verdict})",
            leg.name()
        );
    }

    println!();
    println!("| ratio (per sample: hopper's wall / the leg's) | median [min–max] |");
    println!("|---|---|");
    let mut finals = Vec::new();
    for &leg in &legs[1..] {
        let ratio = Samples(
            of(Leg::Hopper)
                .iter()
                .zip(of(leg))
                .map(|(a, b)| a.wall / b.wall)
                .collect(),
        );
        println!("| hopper/{} | {} |", leg.name(), ratio.show(3));
        finals.push((leg, ratio.median()));
    }
    println!();
    for leg in [Leg::Standalone, Leg::TaskParallel, Leg::Pytorch] {
        match finals.iter().find(|(l, _)| *l == leg) {
            Some((_, r)) => println!("hopper/{} = {r:.3}", leg.name()),
            None => println!(
                "hopper/{} = not measured: HOPPER_TORCH_PYTHON=\"$(bench/torch-venv.sh)\" runs the PyTorch leg",
                leg.name()
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
