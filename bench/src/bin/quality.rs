//! `quality`: does a model trained by hopper reach the quality of PyTorch
//! training the same scripted module sequentially on the same rows?
//!
//! ```text
//!  devcluster: 2 PostgreSQL segments ── quality_binary, quality_regression
//!              (id, x1…x4 float8 and n1 int4 with NULLs, city text, target; rows spread by id)
//!  for each sample s (a seed), the legs interleaved:
//!    module    examples/torchscript/net.py --seed s: 37 features → 1 output (BatchNorm, Dropout)
//!    hopper    mop train: 2 trainers over the flight-server, adam, lr [1e-3, 3e-3], batch 32,
//!              metric auc (binary) / rmse (regression) → results.json val_auc / val_rmse per epoch
//!    pytorch   bench/python/quality_torch.py: the same module file, the same training and
//!              validation rows (read from the segments with the run's own split queries),
//!              featurized with the run's table_features.json, Adam, the same lrs, batch size,
//!              epochs and loss; one process, rows reshuffled every epoch
//!    pytorch, hopper's order   the same, in hopper's mini-batches: each epoch the
//!              partitions in the order the scheduler gives the model, each partition's rows
//!              in the order hopper's unit shuffles them (mop_trainer::shuffle, computed here
//!              by hopper's own code), libtorch's generator seeded per unit as hopper seeds it
//!    pytorch, partitions shuffled   hopper's partition order, each partition's rows
//!              reshuffled every epoch by PyTorch's own generator
//! ```
//!
//! Quality, not time, is compared, so machine noise does not matter. For
//! each task it prints, per leg and learning rate, the median and range
//! over the samples of the validation metric at each model's best epoch and
//! at its final epoch, and the lines `hopper/pytorch val_auc = X` and
//! `hopper/pytorch val_rmse = Y`: the median over samples of the grid's
//! winner (the better learning rate of that sample) at its best epoch,
//! hopper's over PyTorch's (the final epoch's after it); and the same
//! against the other two PyTorch legs: the first trains hopper's very
//! mini-batches (what is left is the arithmetic of two processes and of
//! hopping), the second another draw of the same kind of order. AUC is better higher, RMSE lower: 1.0 means
//! equal quality.
//!
//! The PyTorch leg runs when `HOPPER_TORCH_PYTHON` names a Python with
//! torch (`bench/torch-venv.sh`); without it the benchmark trains the
//! hopper leg only, from the committed fixture module, and says so.
//!
//! ```sh
//! cargo build --workspace --bins --features mop/demo
//! HOPPER_TORCH_PYTHON="$(bench/torch-venv.sh)" target/debug/quality            # ~8 min on 2 cores
//! HOPPER_TORCH_PYTHON="$(bench/torch-venv.sh)" target/debug/quality --quick    # ~3 min
//! target/debug/quality --smoke   # seconds, hopper leg only: its numbers are not figures
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use hopper_bench::server::{self, Server};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use devcluster::datagen::splitmix64;
use devcluster::{segment_of, ClusterOptions, LocalCluster};
use flight_client::plan::plan;
use flight_client::read::spawn_reader;
use futures::SinkExt;
use mop_core::run_config::RunConfig;
use mop_core::schedule::visit_order;
use mop_core::table::{FeaturesFile, FEATURES_FILE};
use mop_trainer::featurize::{Featurized, Featurizer};
use mop_trainer::shuffle::{shuffled, unit_seed, WINDOW};
use tch::{Device, Kind, Tensor};

/// hopper's model quality against PyTorch's on the same module and rows.
#[derive(Parser, Debug)]
#[command(name = "quality")]
struct Args {
    /// Rows in each table (about 80 % train, 20 % validate).
    #[arg(long, default_value_t = 5_000)]
    rows: u64,
    /// Epochs every model trains.
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Samples per leg: seeds 1..=N (the module's initial weights, Dropout's
    /// stream, PyTorch's shuffles).
    #[arg(long, default_value_t = 5)]
    samples: u64,
    /// A few minutes: 4 000 rows, 20 epochs, 3 samples.
    #[arg(long)]
    quick: bool,
    /// Seconds: 600 rows, 2 epochs, 1 sample, the hopper leg only (CI's
    /// check that the benchmark still works); the numbers are not figures.
    #[arg(long)]
    smoke: bool,
    /// Keep the run directories here (default: a temporary directory,
    /// removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// PostgreSQL segments and trainers.
const SEGMENTS: usize = 2;
/// The learning rates of the grid (the issue's).
const LRS: [f64; 2] = [1e-3, 3e-3];
/// Mini-batch rows.
const BATCH: usize = 32;
/// Feature width: 5 numeric columns + 32 hash buckets of `city`.
const FEATURES: usize = 37;
/// The module's hidden width when it is made for the run.
const HIDDEN: usize = 32;
/// The fixture trained when no PyTorch makes modules (37 → 16 → 16 → 1).
const FIXTURE: &str = "tests/fixtures/torchscript/table_bn_dropout_37_1.pt";

/// A learning task: its table, hopper's names for it and its metric.
struct Task {
    table: &'static str,
    task: &'static str,
    metric: &'static str,
    /// The label column's SQL type.
    label_type: &'static str,
    higher_is_better: bool,
    /// Seeds the table's rows.
    data_seed: u64,
}

const TASKS: [Task; 2] = [
    Task {
        table: "quality_binary",
        task: "binary",
        metric: "auc",
        label_type: "int4",
        higher_is_better: true,
        data_seed: 11,
    },
    Task {
        table: "quality_regression",
        task: "regression",
        metric: "rmse",
        label_type: "float8",
        higher_is_better: false,
        data_seed: 12,
    },
];

const CITIES: [&str; 12] = [
    "oslo", "lima", "rome", "kyiv", "pune", "lodz", "cali", "nice", "graz", "bonn", "riga", "faro",
];
/// Each city's share of the latent score.
const CITY_EFFECT: [f64; 12] = [
    1.2, -1.0, 0.4, -0.3, 0.9, -0.8, 0.0, 0.2, -0.5, 0.6, -0.1, 0.3,
];

/// Uniform in [0, 1) for draw `j` of row `id` of a table seeded `seed`.
fn uniform(seed: u64, id: u64, j: u64) -> f64 {
    let bits = splitmix64(splitmix64(seed ^ id.wrapping_mul(0x9E37_79B9)) ^ j);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller over draws `j`, `j + 1`).
fn normal(seed: u64, id: u64, j: u64) -> f64 {
    let (u, v) = (uniform(seed, id, j), uniform(seed, id, j + 1));
    (-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Row `id` of `task`'s table as a COPY text line. The latent score mixes
/// a sine, a square, a log of a skewed column switched by another column,
/// a count and the city; NULLs (about 5–10 % of x1, x2, x3 and city) hide
/// values the target still depends on; the binary target is the latent
/// score plus logistic noise above 0, the regression target the latent
/// score plus Gaussian noise (σ = 0.5).
fn row(task: &Task, id: u64, out: &mut String) {
    let s = task.data_seed;
    let x1 = normal(s, id, 0);
    let x2 = 4.0 * uniform(s, id, 2) - 2.0;
    let x3 = 100.0 * (0.8 * normal(s, id, 3)).exp();
    let x4 = 50.0 + 15.0 * normal(s, id, 5);
    let n1 = (uniform(s, id, 7) * uniform(s, id, 8) * 20.0).floor() as i32;
    let city = ((uniform(s, id, 9).powi(2)) * CITIES.len() as f64) as usize;
    let latent = 1.5 * (1.5 * x1).sin()
        + 0.6 * (x2 * x2 - 1.3)
        + 0.8 * (x3 / 100.0).ln() * if x4 > 50.0 { 1.0 } else { -0.5 }
        + 0.1 * (n1 as f64 - 4.0)
        + CITY_EFFECT[city];
    let target = if task.task == "binary" {
        let u = uniform(s, id, 10).clamp(1e-12, 1.0 - 1e-12);
        let logistic = (u / (1.0 - u)).ln();
        format!("{}", i32::from(latent + logistic > 0.0))
    } else {
        format!("{}", latent + 0.5 * normal(s, id, 11))
    };
    let null = |j: u64, p: f64, v: String| {
        if uniform(s, id, 20 + j) < p {
            "\\N".to_string()
        } else {
            v
        }
    };
    out.push_str(&format!(
        "{id}\t{}\t{}\t{}\t{x4}\t{n1}\t{}\t{target}\n",
        null(0, 0.08, x1.to_string()),
        null(1, 0.05, x2.to_string()),
        null(2, 0.10, x3.to_string()),
        null(3, 0.06, CITIES[city].to_string()),
    ));
}

/// (Re)creates `task`'s table on every segment with `rows` rows, row `id`
/// on segment `segment_of(id)`.
async fn load(cluster: &LocalCluster, task: &Task, rows: u64) -> Result<()> {
    for seg in 0..cluster.len() {
        let client = cluster.client(seg).await?;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {t};
                 CREATE TABLE {t} (id bigint, x1 float8, x2 float8, x3 float8, x4 float8,
                                   n1 int4, city text, target {l});",
                t = task.table,
                l = task.label_type
            ))
            .await?;
        let mut text = String::new();
        for id in (1..=rows).filter(|&id| segment_of(id, cluster.len()) == seg) {
            row(task, id, &mut text);
        }
        let sink = client
            .copy_in::<_, Bytes>(&format!("COPY {} FROM STDIN", task.table))
            .await?;
        let mut sink = Box::pin(sink);
        sink.send(Bytes::from(text)).await?;
        sink.as_mut().finish().await?;
        client
            .batch_execute(&format!("ANALYZE {}", task.table))
            .await?;
    }
    Ok(())
}

/// The run configuration of `task` for sample `seed`, training `module`.
fn config_toml(
    url: &str,
    task: &Task,
    module: &Path,
    epochs: usize,
    seed: u64,
    out: &Path,
) -> String {
    let lrs: Vec<String> = LRS.iter().map(|lr| format!("{lr:e}")).collect();
    format!(
        r#"[source]
flight = "{url}"
table = "{table}"
validation = {{ fraction = 0.2, key = "id" }}
cache = "memory"

[train]
epochs = {epochs}
seed = {seed}
trainers = {SEGMENTS}
threads = 1
metric = "{metric}"

[grid]
arch = [{{ kind = "torchscript", path = "{module}" }}]
optimizer = [{{ kind = "adam" }}]
lr = [{lrs}]
batch_size = [{BATCH}]
input = {{ kind = "table", label = "target", categorical = ["city"] }}
task = "{kind}"

[output]
dir = "{out}"
"#,
        table = task.table,
        metric = task.metric,
        module = module.display(),
        lrs = lrs.join(", "),
        kind = task.task,
        out = out.display(),
    )
}

/// One model's validation metric, one value per epoch.
type Curve = Vec<f64>;

/// One leg's models of one sample, in the order of [`LRS`].
struct Sample {
    curves: Vec<Curve>,
    wall: f64,
}

/// The hopper leg: `mop train` over the flight-server; the curves from
/// results.json.
fn hopper(mop: &Path, config: &Path, out: &Path, metric: &str) -> Result<Sample> {
    let start = Instant::now();
    let run = Command::new(mop)
        .args(["train", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let wall = start.elapsed().as_secs_f64();
    if !run.status.success() {
        let stderr = String::from_utf8_lossy(&run.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        bail!(
            "mop train failed ({}); run it by hand: {} train --config {}\n{}",
            run.status,
            mop.display(),
            config.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json"))?)?;
    let key = format!("val_{metric}");
    let mut curves = vec![Vec::new(); LRS.len()];
    for m in results["models"]
        .as_array()
        .context("results.json has no models")?
    {
        let lr = m["config"]["lr"].as_f64().context("a model without lr")?;
        let i = LRS
            .iter()
            .position(|&x| (x - lr).abs() < 1e-12)
            .with_context(|| format!("a model with lr {lr}, not in the grid"))?;
        curves[i] = m[&key]
            .as_array()
            .with_context(|| format!("results.json has no {key}"))?
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
    }
    Ok(Sample { curves, wall })
}

/// The rows of `sql` on every segment (the union a flight-server streams),
/// as JSON columns: `id`, `x1`…`x4`, `n1`, `city`, `target` (NULL: null)
/// and `segment`, in the order each segment returns them.
async fn rows(cluster: &LocalCluster, sql: &str) -> Result<serde_json::Value> {
    let mut cols: [Vec<Option<f64>>; 7] = Default::default();
    let mut city: Vec<Option<String>> = Vec::new();
    let mut segment = Vec::new();
    for seg in 0..cluster.len() {
        let client = cluster.client(seg).await?;
        let query = format!(
            "SELECT id::float8, x1, x2, x3, x4, n1::float8, city, target::float8 FROM ({sql}) AS t"
        );
        for r in client.query(&query, &[]).await? {
            for (j, col) in cols.iter_mut().enumerate() {
                col.push(r.get::<_, Option<f64>>(if j < 6 { j } else { 7 }));
            }
            city.push(r.get(6));
            segment.push(seg);
        }
    }
    let [id, x1, x2, x3, x4, n1, target] = cols;
    Ok(serde_json::json!({
        "id": id, "x1": x1, "x2": x2, "x3": x3, "x4": x4, "n1": n1,
        "city": city, "target": target, "segment": segment,
    }))
}

/// The training rows of `config`, read over Flight from `url` endpoint by
/// endpoint (one a segment, in segment order: the order [`rows`] writes)
/// and featurized by hopper's own featurizer with the run's
/// `table_features.json`, written as a `.npy` to `out`: what the PyTorch
/// leg's featurization is checked against, bit for bit.
async fn hopper_features(url: &str, config: &Path, run: &Path, out: &Path) -> Result<()> {
    let config = RunConfig::load(config)?;
    let file = FeaturesFile::read(run)?
        .with_context(|| format!("{} has no {FEATURES_FILE}", run.display()))?;
    let mut model = config.grid.expand()?.remove(0);
    model.input = file.input;
    let featurizer = Featurizer::new(&model);
    let mut xs = Vec::new();
    for slice in plan(url, &config.train_sql()?).await? {
        let handle = tokio::runtime::Handle::current();
        let mut rx = spawn_reader::<flight_client::Error>(&handle, vec![slice]);
        while let Some(batch) = rx.recv().await {
            xs.push(featurizer.featurize(&batch?)?.x);
        }
    }
    Tensor::f_cat(&xs, 0)?.f_contiguous()?.write_npy(out)?;
    Ok(())
}

/// What the PyTorch legs of one task and sample train on.
struct TorchRun<'a> {
    task: &'a Task,
    /// The rows, as [`rows`] writes them.
    rows: &'a Path,
    /// Training rows per partition (= segment).
    partition_rows: &'a [usize],
    /// The hopper run's directory (its `table_features.json`).
    run: &'a Path,
    /// The hopper run's configuration (its models and their visit orders).
    config: &'a Path,
    module: &'a Path,
    /// Hopper's features of the training rows, to check PyTorch's against.
    hopper_features: Option<PathBuf>,
}

/// The PyTorch legs: `bench/python/quality_torch.py` on the same module
/// file and rows, one [`Sample`] per leg of [`TORCH_LEGS`].
fn pytorch(python: &Path, run: &TorchRun<'_>, dir: &Path) -> Result<Vec<Sample>> {
    let config = RunConfig::load(run.config)?;
    let models = config.grid.expand()?;
    let (epochs, seed) = (config.train.epochs, config.train.seed);
    // Per learning rate, the partition order of every epoch of its model.
    let mut orders = Vec::new();
    // Per learning rate, epoch and partition: hopper's unit seed and rows.
    let mut units = Vec::new();
    for lr in LRS {
        let m = models
            .iter()
            .position(|c| (c.lr - lr).abs() < 1e-12)
            .with_context(|| format!("no model with lr {lr} in {}", run.config.display()))?;
        orders.push(
            (0..epochs)
                .map(|e| visit_order(models.len(), SEGMENTS, seed, m, e))
                .collect::<Result<Vec<_>, _>>()?,
        );
        // The runner's seed of model m (run seed + m), and per epoch and
        // partition its unit's seed and row order.
        let model_seed = seed.wrapping_add(m as u64);
        units.push(
            (0..epochs)
                .map(|e| {
                    (0..SEGMENTS)
                        .map(|p| {
                            let s = unit_seed(model_seed, e, p);
                            let rows = unit_rows(run.partition_rows[p], s)?;
                            Ok(serde_json::json!({ "seed": s, "rows": rows }))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?,
        );
    }
    let manifest = serde_json::json!({
        "task": run.task.task,
        "module": run.module,
        "rows": run.rows,
        "features": run.run.join(FEATURES_FILE),
        "lrs": LRS,
        "batch_size": BATCH,
        "epochs": epochs,
        "seed": seed,
        "orders": orders,
        "units": units,
        "hopper_features": run.hopper_features,
        "threads": 1,
    });
    let path = dir.join(format!("torch-{}-{seed}.json", run.task.task));
    std::fs::write(&path, serde_json::to_vec(&manifest)?)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/quality_torch.py");
    let out = Command::new(python).arg(&script).arg(&path).output()?;
    if !out.status.success() {
        bail!(
            "the PyTorch leg failed: {} {} {}\n{}",
            python.display(),
            script.display(),
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} printed no JSON", script.display()))?;
    let leg = |name: &str| -> Result<Sample> {
        let l = &r["legs"][name];
        let curves = l["curves"]
            .as_array()
            .with_context(|| format!("no curves from the PyTorch leg {name}"))?
            .iter()
            .map(|c| {
                c.as_array()
                    .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
                    .unwrap_or_default()
            })
            .collect();
        Ok(Sample {
            curves,
            wall: l["seconds"].as_f64().unwrap_or(f64::NAN),
        })
    };
    if let Some(same) = r["features_checked"].as_str() {
        println!("{}: {same}", run.task.table);
    }
    TORCH_LEGS.iter().map(|l| leg(l.key)).collect()
}

/// The order in which a hopper unit seeded `seed` trains a partition of
/// `n` rows: positions in the partition as read, shuffled by hopper's own
/// [`shuffled`].
fn unit_rows(n: usize, seed: u64) -> Result<Vec<i64>> {
    let x = Tensor::arange(n as i64, (Kind::Int64, Device::Cpu)).view([n as i64, 1]);
    let y = Tensor::zeros([n as i64], (Kind::Float, Device::Cpu));
    let mut order = Vec::with_capacity(n);
    for rows in shuffled([Featurized::new(x, y)], seed, WINDOW) {
        order.extend(Vec::<i64>::try_from(rows?.x.view([-1]))?);
    }
    Ok(order)
}

/// The best value of `curve` and its final one.
fn best_and_final(curve: &[f64], higher: bool) -> (f64, f64) {
    let best = curve.iter().copied().fold(f64::NAN, |a, b| {
        if a.is_nan() || (higher && b > a) || (!higher && b < a) {
            b
        } else {
            a
        }
    });
    (best, curve.last().copied().unwrap_or(f64::NAN))
}

/// Median, min and max.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

fn cell(values: &[f64]) -> String {
    let (m, lo, hi) = spread(values);
    format!("{m:.4} [{lo:.4}, {hi:.4}]")
}

/// The better of two values of a metric.
fn better(a: f64, b: f64, higher: bool) -> f64 {
    if (higher && b > a) || (!higher && b < a) {
        b
    } else {
        a
    }
}

/// A leg's per-sample winners: the better learning rate's value at its best
/// epoch, and at its final epoch.
fn winners(samples: &[Sample], higher: bool) -> (Vec<f64>, Vec<f64>) {
    let start = if higher {
        f64::NEG_INFINITY
    } else {
        f64::INFINITY
    };
    samples
        .iter()
        .map(|s| {
            s.curves.iter().fold((start, start), |(b, f), c| {
                let (cb, cf) = best_and_final(c, higher);
                (better(b, cb, higher), better(f, cf, higher))
            })
        })
        .unzip()
}

/// A PyTorch leg: `quality_torch.py`'s name for it, the tables' and the
/// ratio line's.
struct TorchLeg {
    key: &'static str,
    name: &'static str,
    ratio: &'static str,
}

/// The PyTorch legs, in the order `quality_torch.py` trains them.
const TORCH_LEGS: [TorchLeg; 3] = [
    TorchLeg {
        key: "shuffled",
        name: "pytorch",
        ratio: "hopper/pytorch",
    },
    TorchLeg {
        key: "hopper_order",
        name: "pytorch, hopper's order",
        ratio: "hopper/pytorch-in-hopper's-order",
    },
    TorchLeg {
        key: "partitions_shuffled",
        name: "pytorch, partitions shuffled",
        ratio: "hopper/pytorch-partitions-shuffled",
    },
];

/// The ratio of the medians of two legs' winners, at the best and at the
/// final epoch.
fn ratio(a: &[Sample], b: &[Sample], higher: bool) -> (f64, f64) {
    let ((ab, af), (bb, bf)) = (winners(a, higher), winners(b, higher));
    (spread(&ab).0 / spread(&bb).0, spread(&af).0 / spread(&bf).0)
}

/// Prints one task's table and its ratio lines: hopper against each of
/// the [`TORCH_LEGS`], or why PyTorch did not run.
fn report(task: &Task, hopper: &[Sample], torch: Result<&[Vec<Sample>], &str>) {
    let mut legs: Vec<(&str, &[Sample])> = vec![("hopper", hopper)];
    if let Ok(torch) = torch {
        for (leg, samples) in TORCH_LEGS.iter().zip(torch) {
            legs.push((leg.name, samples));
        }
    }
    let metric = format!("val_{}", task.metric);
    let higher = task.higher_is_better;
    println!();
    println!(
        "## {} ({metric}, {} is better)",
        task.task,
        if higher { "higher" } else { "lower" }
    );
    println!("| leg | lr | best epoch: median [min, max] | final epoch: median [min, max] | best epoch (median) | wall s per sample |");
    println!("|---|---|---|---|---|---|");
    for (name, samples) in &legs {
        for (i, lr) in LRS.iter().enumerate() {
            let (mut bests, mut finals, mut at) = (Vec::new(), Vec::new(), Vec::new());
            for s in samples.iter() {
                let c = &s.curves[i];
                let (b, f) = best_and_final(c, higher);
                bests.push(b);
                finals.push(f);
                if let Some(e) = c.iter().position(|&v| v == b) {
                    at.push(e as f64 + 1.0);
                }
            }
            let walls: Vec<f64> = samples.iter().map(|s| s.wall).collect();
            println!(
                "| {name} | {lr:e} | {} | {} | {:.0} | {:.1} |",
                cell(&bests),
                cell(&finals),
                spread(&at).0,
                spread(&walls).0
            );
        }
        let (b, f) = winners(samples, higher);
        println!("| {name} | winner | {} | {} | | |", cell(&b), cell(&f));
    }
    match torch {
        Ok(torch) => {
            for (leg, samples) in TORCH_LEGS.iter().zip(torch) {
                let (b, f) = ratio(hopper, samples, higher);
                println!(
                    "{} {metric} = {b:.4} (best epoch; final epoch {f:.4})",
                    leg.ratio
                );
            }
        }
        Err(why) => println!("hopper/pytorch {metric} = not measured: {why}"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        (args.rows, args.epochs, args.samples) = (4_000, 20, 3);
    }
    let python = std::env::var_os("HOPPER_TORCH_PYTHON").map(PathBuf::from);
    let python = if args.smoke {
        (args.rows, args.epochs, args.samples) = (600, 2, 1);
        println!(
            "SMOKE RUN (--smoke): tiny tables, the hopper leg only; the numbers below are not figures"
        );
        None
    } else {
        python
    };
    let torch_missing = python.is_none().then_some(if args.smoke {
        "the PyTorch leg is not part of a smoke run"
    } else {
        "HOPPER_TORCH_PYTHON is unset; HOPPER_TORCH_PYTHON=\"$(bench/torch-venv.sh)\" runs the PyTorch leg"
    });
    let (server_bin, mop_bin) =
        server::binaries("cargo build --workspace --bins --features mop/demo")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the bench crate's parent")?
        .to_path_buf();
    let (dir, keep) = match &args.dir {
        Some(d) => (d.clone(), true),
        None => (
            std::env::temp_dir().join(format!("hopper-quality-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&dir)?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# hopper's model quality against PyTorch: {} rows per table over {SEGMENTS} segments, \
         {} epochs, lr {:?}, batch {BATCH}, {} samples per leg (load average {})",
        args.rows,
        args.epochs,
        LRS,
        args.samples,
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let cluster = LocalCluster::start(SEGMENTS, ClusterOptions::default()).await?;
    for task in &TASKS {
        load(&cluster, task, args.rows).await?;
    }
    let server = Server::start(&server_bin, &cluster).await?;

    // The same rows for PyTorch: the run's own split queries, on every
    // segment.
    let mut torch_data = Vec::new();
    for task in &TASKS {
        let probe = dir.join(format!("{}-probe.toml", task.task));
        std::fs::write(
            &probe,
            config_toml(&server.url, task, &root.join(FIXTURE), 1, 1, &dir),
        )?;
        let config = RunConfig::load(&probe)?;
        let validation = config
            .validation_sql()?
            .context("the configuration has a validation split")?;
        let data = serde_json::json!({
            "train": rows(&cluster, &config.train_sql()?).await?,
            "validation": rows(&cluster, &validation).await?,
        });
        let path = dir.join(format!("{}-rows.json", task.task));
        std::fs::write(&path, serde_json::to_vec(&data)?)?;
        let n = |k: &str| data[k]["id"].as_array().map_or(0, Vec::len);
        let mut held_rows = Vec::new();
        // A partition whose rows leave one in its last mini-batch: hopper
        // joins that row to the mini-batch before it (BatchNorm cannot train
        // on one row), which the PyTorch legs do not copy; keep the
        // comparison to row counts where mini-batches are plain.
        for seg in 0..SEGMENTS {
            let held = data["train"]["segment"].as_array().map_or(0, |a| {
                a.iter().filter(|s| s.as_u64() == Some(seg as u64)).count()
            });
            held_rows.push(held);
            if held % BATCH == 1 {
                bail!(
                    "segment {seg} holds {held} training rows of {}, one more than a multiple of \
                     the batch size {BATCH}: hopper would join its last row to the mini-batch \
                     before, which the PyTorch legs do not; choose another --rows",
                    task.table
                );
            }
        }
        println!(
            "{}: {} training rows, {} validation rows",
            task.table,
            n("train"),
            n("validation")
        );
        torch_data.push((path, held_rows));
    }
    match &python {
        Some(p) => println!(
            "module: examples/torchscript/net.py --features {FEATURES} --outputs 1 --hidden {HIDDEN} --seed S; PyTorch: {}",
            p.display()
        ),
        None => println!("module: {FIXTURE} for every sample (no PyTorch to make one per seed)"),
    }

    let mut hopper_samples: Vec<Vec<Sample>> = TASKS.iter().map(|_| Vec::new()).collect();
    let mut torch_samples: Vec<Vec<Vec<Sample>>> = TASKS
        .iter()
        .map(|_| TORCH_LEGS.iter().map(|_| Vec::new()).collect())
        .collect();
    for seed in 1..=args.samples {
        let module = match &python {
            Some(py) => {
                let module = dir.join(format!("net-{seed}.pt"));
                let made = Command::new(py)
                    .arg(root.join("examples/torchscript/net.py"))
                    .args(["--features", &FEATURES.to_string(), "--outputs", "1"])
                    .args(["--hidden", &HIDDEN.to_string(), "--seed", &seed.to_string()])
                    .arg(&module)
                    .output()?;
                if !made.status.success() {
                    bail!(
                        "examples/torchscript/net.py failed: {}",
                        String::from_utf8_lossy(&made.stderr)
                    );
                }
                module
            }
            None => root.join(FIXTURE),
        };
        for (t, task) in TASKS.iter().enumerate() {
            let out = dir.join(format!("{}-{seed}", task.task));
            let _ = std::fs::remove_dir_all(&out);
            let config = dir.join(format!("{}-{seed}.toml", task.task));
            std::fs::write(
                &config,
                config_toml(&server.url, task, &module, args.epochs, seed, &out),
            )?;
            let h = hopper(&mop_bin, &config, &out, task.metric)?;
            let show = |s: &Sample| {
                s.curves
                    .iter()
                    .map(|c| {
                        let (b, f) = best_and_final(c, task.higher_is_better);
                        format!("best {b:.4} final {f:.4}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "sample {seed} {:<10} {:<28} {} ({:.1} s)",
                task.task,
                "hopper",
                show(&h),
                h.wall
            );
            hopper_samples[t].push(h);
            if let Some(py) = &python {
                // Once per task: are PyTorch's features hopper's?
                let hopper_features = if seed == 1 {
                    let npy = dir.join(format!("{}-hopper-features.npy", task.task));
                    hopper_features(&server.url, &config, &out, &npy).await?;
                    Some(npy)
                } else {
                    None
                };
                let run = TorchRun {
                    task,
                    rows: &torch_data[t].0,
                    partition_rows: &torch_data[t].1,
                    run: &out,
                    config: &config,
                    module: &module,
                    hopper_features,
                };
                let legs = pytorch(py, &run, &dir)?;
                for ((leg, p), into) in TORCH_LEGS.iter().zip(legs).zip(&mut torch_samples[t]) {
                    println!(
                        "sample {seed} {:<10} {:<28} {} ({:.1} s)",
                        task.task,
                        leg.name,
                        show(&p),
                        p.wall
                    );
                    if leg.key == "hopper_order" {
                        // The same mini-batches and Dropout seeds: how far
                        // apart are the two curves, epoch by epoch?
                        let h = hopper_samples[t].last().context("hopper's sample")?;
                        let apart = h
                            .curves
                            .iter()
                            .zip(&p.curves)
                            .flat_map(|(a, b)| a.iter().zip(b).map(|(a, b)| (a - b).abs()))
                            .fold(0.0, f64::max);
                        println!(
                            "sample {seed} {:<10} {:<28} val_{} of every epoch within {apart:.1e} of hopper's",
                            task.task, leg.name, task.metric
                        );
                    }
                    into.push(p);
                }
            }
        }
    }

    for (t, task) in TASKS.iter().enumerate() {
        let torch = match torch_missing {
            None => Ok(&torch_samples[t][..]),
            Some(why) => Err(why),
        };
        report(task, &hopper_samples[t], torch);
    }
    if python.is_none() {
        println!();
        println!("pytorch: NOT RUN ({})", torch_missing.unwrap_or_default());
    }
    drop(server);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
