//! `end-to-end`: the paper's headline on this machine — a grid of MLPs on
//! the Criteo-like table trained by hopper (`mop train`, one trainer per
//! PostgreSQL segment, reading Flight) against the same models trained one
//! after another in one process from data already in memory, with all
//! cores ("standalone"), and, when a Python with PyTorch is at hand
//! (`HOPPER_TORCH_PYTHON`), against PyTorch doing the same from memory.
//!
//! ```text
//!  devcluster: W PostgreSQL segments ── load_criteo ──► criteo (rows spread by id)
//!  (a) hopper      flight-server ◄── mop train (W trainers × 1 thread, cache = memory)
//!  (b) standalone  Flight once into memory ──► featurize ──► for each model, epoch:
//!                  for p in visit_order(model, epoch): train_partition (W threads)
//!  (c) pytorch     the same rows, model, Adam and batch sizes in torch (W threads)
//! ```
//!
//! (b) visits the partitions in the order the scheduler gives each model
//! and seeds model m as the runner does, so its models are the ones hopper
//! trains: the final validation accuracies must agree (exactly with one
//! thread; to rounding with several, since intra-op reductions change
//! order). Prints a table and the lines `hopper/standalone = X` and
//! `hopper/pytorch = Y` (wall-time ratios; below 1 means hopper is faster).
//!
//! `cargo run --release -p hopper-bench --bin end-to-end -- --quick`
//! (needs `cargo build --release -p flight-server -p mop-runner --bins`).
//! `--smoke` runs every way on a tiny table and two small models, the
//! standalone on one thread (seconds; CI's check that the benchmark still
//! works): its numbers are not figures.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use clap::Parser;
use devcluster::{load_criteo, ClusterOptions, LocalCluster};
use flight_client::plan::plan;
use flight_client::read::spawn_reader;
use flight_client::FlightSlice;
use mop_core::config::Arch;
use mop_core::run_config::RunConfig;
use mop_core::schedule::visit_order;
use mop_trainer::device::set_threads;
use mop_trainer::featurize::{Featurized, Featurizer};
use mop_trainer::model::Model;
use mop_trainer::shuffle::{shuffled, unit_seed, WINDOW};
use mop_trainer::train::{evaluate, train_partition};
use tch::Tensor;
use tokio::io::{AsyncBufReadExt, BufReader};

/// hopper end to end against standalone training.
#[derive(Parser, Debug)]
#[command(name = "end-to-end")]
struct Args {
    /// Rows in the table.
    #[arg(long, default_value_t = 30_000)]
    rows: u64,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// PostgreSQL segments (and trainers; and the standalone's threads).
    #[arg(long, default_value_t = 2)]
    segments: usize,
    /// A few-minute run: 12 000 rows, one epoch.
    #[arg(long)]
    quick: bool,
    /// A smoke run in seconds: 1 000 rows, two epochs, two small models
    /// instead of the paper's grid, a one-thread standalone (overrides
    /// --rows, --epochs and --quick); the numbers are not figures.
    #[arg(long)]
    smoke: bool,
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

/// A running flight-server, killed on drop.
struct Server {
    child: tokio::process::Child,
    url: String,
}

impl Server {
    async fn start(bin: &Path, cluster: &LocalCluster) -> Result<Self> {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["--bind", "127.0.0.1:0", "--auth", "none"]);
        for url in cluster.segment_urls() {
            cmd.args(["--segment", &url]);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let url = line
            .trim()
            .strip_prefix("flight-server listening on ")
            .with_context(|| format!("flight-server printed {line:?}"))?
            .to_string();
        Ok(Self { child, url })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
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

/// One way of training the grid, measured.
struct Outcome {
    name: &'static str,
    wall: f64,
    cpu: f64,
    samples: u64,
    accuracies: Vec<f64>,
    note: String,
}

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

async fn hopper(mop: &Path, config: &Path, out: &Path) -> Result<Outcome> {
    let cpu0 = children_cpu();
    let start = Instant::now();
    let run = Command::new(mop)
        .args(["train", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    let wall = start.elapsed().as_secs_f64();
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
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json"))?)?;
    let models = results["models"]
        .as_array()
        .context("results.json has no models")?;
    let mut accuracies = vec![0.0; models.len()];
    let (mut wait, mut busy) = (0.0, 0.0);
    for m in models {
        let id = m["model_id"].as_u64().context("model_id")? as usize;
        accuracies[id] = m["val_acc"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN);
        wait += m["wait_seconds"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).sum::<f64>())
            .unwrap_or(0.0);
        busy += m["epoch_seconds"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).sum::<f64>())
            .unwrap_or(0.0);
    }
    breakdown(out, wall, busy)?;
    Ok(Outcome {
        name: "hopper (mop train)",
        wall,
        cpu: children_cpu() - cpu0,
        samples: 0,
        accuracies,
        note: format!("units {busy:.1} s of which data wait {wait:.2} s"),
    })
}

/// Where hopper's wall time went, per trainer, from `timeline.json` (the
/// runner's view of every unit: from sending the model's state to having
/// its new state back) and the trainers' own unit times (`busy`, summed
/// over trainers): training; moving state (a unit's runner time minus its
/// training time: sending the state, rebuilding the model, encoding and
/// returning it, and waiting for a validation pass the trainer runs first);
/// idle between units (scheduling, checkpoints); and the rest (start-up,
/// opening the partitions, and after the last unit the last validations,
/// results and report).
fn breakdown(out: &Path, wall: f64, busy: f64) -> Result<()> {
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
        .map(|u| u["partition"].as_u64().unwrap_or(0) + 1)
        .max()
        .unwrap_or(1) as f64;
    let in_units: f64 = timeline
        .iter()
        .map(|u| field(u, "end") - field(u, "start"))
        .sum();
    let per = |x: f64| x / trainers;
    // The timeline's clock starts once the partitions are open.
    let rows = [
        ("training (the trainers' unit time)", per(busy)),
        (
            "moving model state, and validation passes waited for",
            per(in_units - busy),
        ),
        (
            "idle between units (scheduling, checkpoints)",
            (last - first) - per(in_units),
        ),
        (
            "start-up, opening partitions, and after the last unit",
            wall - (last - first),
        ),
    ];
    println!(
        "
where hopper's {wall:.1} s went, per trainer ({trainers} trainers, {} units):",
        timeline.len()
    );
    for (what, secs) in rows {
        println!("  {what:<58} {secs:>6.1} s  {:>5.1}%", 100.0 * secs / wall);
    }
    Ok(())
}

/// Featurized once, kept in memory: what a trainer's memory cache holds.
struct InMemory {
    parts: Vec<Vec<Featurized>>,
    validation: Vec<Featurized>,
}

impl InMemory {
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

/// (c): the same grid in PyTorch (`bench/python/pytorch_grid.py`), when
/// `HOPPER_TORCH_PYTHON` names a Python with torch.
fn pytorch(
    config: &RunConfig,
    data: &InMemory,
    dir: &Path,
    threads: usize,
) -> Result<Option<Outcome>> {
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pytorch_grid.py");
    let out = Command::new(&python).arg(script).arg(&path).output()?;
    if !out.status.success() {
        bail!(
            "the PyTorch leg failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Some(Outcome {
        name: "pytorch (one process, in memory)",
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
    }))
}

fn standalone(config: &RunConfig, data: &InMemory, threads: usize) -> Result<Outcome> {
    set_threads(threads);
    let models = config.grid.expand()?;
    let (w, epochs, seed) = (data.parts.len(), config.train.epochs, config.train.seed);
    let cpu0 = own_cpu();
    let start = Instant::now();
    let mut accuracies = Vec::with_capacity(models.len());
    let mut samples = 0u64;
    for (m, cfg) in models.iter().enumerate() {
        let mut model = Model::new(cfg.clone(), seed.wrapping_add(m as u64))?;
        let mut opt = model.optimizer()?;
        let mut acc = f64::NAN;
        for epoch in 0..epochs {
            for p in visit_order(models.len(), w, seed, m, epoch)? {
                let batches = data.parts[p].iter().map(|f| Ok(f.shallow_clone()));
                let model_seed = seed.wrapping_add(m as u64);
                let batches = shuffled(batches, unit_seed(model_seed, epoch, p), WINDOW);
                let metrics =
                    train_partition(&mut model, &mut opt, batches, cfg.batch_size, |_| {})?;
                samples += metrics.samples;
            }
            acc = evaluate(
                &model,
                data.validation.iter().map(|f| Ok(f.shallow_clone())),
            )?
            .accuracy;
        }
        accuracies.push(acc);
    }
    Ok(Outcome {
        name: "standalone (one process, in memory)",
        wall: start.elapsed().as_secs_f64(),
        cpu: own_cpu() - cpu0,
        samples,
        accuracies,
        note: format!("{threads} threads"),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.rows = 12_000;
        args.epochs = 1;
    }
    let grid = if args.smoke {
        args.rows = 1_000;
        args.epochs = 2;
        println!(
            "SMOKE RUN (--smoke): a tiny table and two small models; the numbers below are not figures"
        );
        &SMOKE_GRID
    } else {
        &PAPER_GRID
    };
    let here = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (server_bin, mop_bin) = (here.join("flight-server"), here.join("mop"));
    for b in [&server_bin, &mop_bin] {
        if !b.exists() {
            bail!(
                "{} is missing: cargo build --release -p flight-server -p mop-runner --bins",
                b.display()
            );
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# hopper end to end: {} rows, {} epochs, {} segments, {} (load average {})",
        args.rows,
        args.epochs,
        args.segments,
        grid.what,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let cluster = LocalCluster::start(args.segments, ClusterOptions::default()).await?;
    load_criteo(&cluster, "criteo", args.rows, 7).await?;
    let server = Server::start(&server_bin, &cluster).await?;
    let dir = std::env::temp_dir().join(format!("hopper-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("out");
    let config_path = dir.join("grid.toml");
    std::fs::write(
        &config_path,
        config_toml(&server.url, &out, args.epochs, args.segments, grid),
    )?;
    let config = RunConfig::load(&config_path)?;

    let a = hopper(&mop_bin, &config_path, &out).await?;

    let parts = partitions(&server.url, &config.train_sql()?, args.segments).await?;
    let validation = match config.validation_sql()? {
        Some(sql) => partitions(&server.url, &sql, 1).await?.remove(0),
        None => Vec::new(),
    };
    // A smoke run's standalone trains on one thread: tiny batches on two
    // threads of a shared machine spend their time waiting for each other.
    let threads = if args.smoke { 1 } else { args.segments };
    // Featurizing is not timed: the standalone ways start from data in memory.
    let data = InMemory::featurize(&config, &parts, &validation)?;
    let b = standalone(&config, &data, threads)?;
    let a = Outcome {
        samples: b.samples,
        ..a
    };
    let c = pytorch(&config, &data, &dir, threads)?;
    println!();
    println!("| way | wall s | samples/s | CPU s | best val acc | note |");
    println!("|---|---|---|---|---|---|");
    for o in [Some(&a), Some(&b), c.as_ref()].into_iter().flatten() {
        let best = o.accuracies.iter().copied().fold(f64::NAN, f64::max);
        println!(
            "| {} | {:.1} | {:.0} | {:.1} | {:.4} | {} |",
            o.name,
            o.wall,
            o.samples as f64 / o.wall,
            o.cpu,
            best,
            o.note
        );
    }
    let max_diff = a
        .accuracies
        .iter()
        .zip(&b.accuracies)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    println!();
    println!(
        "final val acc, largest difference between (a) and (b) over {} models: {max_diff:.4}",
        a.accuracies.len()
    );
    println!("hopper/standalone = {:.3}", a.wall / b.wall);
    match &c {
        Some(c) => println!("hopper/pytorch = {:.3}", a.wall / c.wall),
        None => println!(
            "hopper/pytorch = not measured: HOPPER_TORCH_PYTHON=\"$(bench/torch-venv.sh)\" runs the PyTorch leg"
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
