//! `training`: how fast one trainer turns Criteo rows into Adam steps, what
//! the CPU could do at best, how much of a unit is spent waiting for input,
//! and how tightly the MOP scheduler packs units onto workers.
//!
//! # Design
//!
//! ```text
//!  1. GEMM rate     tch matmul 1024×1024 f32, best of N ──► GFLOP/s ──► confA bound (32.2 MFLOP/row)
//!  2. throughput    random valid slot indices ──► train_partition(confA, batch, dense|sparse|lazy, 1|2 threads)
//!                   the same rows as .npy ──► bench/python/pytorch_trainer.py (PyTorch, same libtorch)
//!  3. data stall    same rows from a Vec  vs  producer thread ─ sync_channel(4) ─► train_partition
//!  4. scheduling    Scheduler + simulate(UnitTimes::{equal, mixed}) ──► makespan / lower bound
//! ```
//!
//! Rows are synthetic but shaped exactly like featurized Criteo: 13 numeric
//! slots in `j·50 .. j·50+50` and 26 categorical slots in
//! `650 + k·256 .. +256`, so the model does the same arithmetic it does on
//! the real table. Categories are drawn as the Criteo-like table draws them
//! (Zipf-like, ∝ 1/(r+1)^1.1 over 10 000 values, hashed into the column's
//! slots), which matters for lazy Adam: its cost follows the rows a batch
//! touches. The PyTorch column (`HOPPER_TORCH_PYTHON`, from
//! `bench/torch-venv.sh`) trains the same rows with the same model, fused
//! Adam, batch sizes and timing rule, in the same run. Throughput runs stop after at least 2 s *and* 3 000 rows
//! (or 10 s), checked between mini-batches, so slow configurations stay short
//! and fast ones are not dominated by noise.
//!
//! `--smoke` runs every section once on tiny windows, data and schedules (a
//! few seconds; CI's check that the benchmark still works): its numbers are
//! not figures.

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use mop_core::config::{ModelConfig, OptimizerKind, CATEGORICAL_SLOTS, NUMERIC_BUCKETS};
use mop_core::schedule::{Policy, Scheduler};
use mop_core::simulate::{simulate, SimOptions, UnitTimes};
use mop_trainer::device::set_threads;
use mop_trainer::featurize::{categorical_slot, numeric_bucket, Featurized};
use mop_trainer::model::Model;
use mop_trainer::train::{train_partition, UnitMetrics};
use tch::{Device, Kind, Tensor};

/// Measures one trainer's confA throughput, its data stall and the MOP
/// scheduler's packing.
#[derive(Debug, Parser)]
#[command(name = "training", about)]
struct Args {
    /// A smoke run: every section once, on tiny timing windows, data and
    /// schedules, in seconds; the numbers it prints are not figures.
    #[arg(long)]
    smoke: bool,
}

/// Numeric columns of a Criteo row.
const NUMERIC: usize = 13;
/// Categorical columns of a Criteo row.
const CATEGORICAL: usize = 26;
/// Active slots per row.
const SLOTS: usize = NUMERIC + CATEGORICAL;
/// Forward + backward FLOPs of one confA row (7306→1000→500→2): two
/// multiply-adds per weight forward, the same again for the weight gradients,
/// plus the input gradients of the two upper layers (none for the input).
const CONF_A_FLOP_PER_ROW: f64 = 32.2e6;
/// Rows in the in-memory data set the throughput runs cycle over.
const DATA_ROWS: usize = 8192;
/// Minimum timed duration and rows of one throughput measurement.
const MIN_SECONDS: f64 = 2.0;
/// See [`MIN_SECONDS`].
const MIN_ROWS: u64 = 3000;
/// Hard cap on one throughput measurement.
const MAX_SECONDS: f64 = 10.0;
/// Rows per batch the simulated reader hands over (a Flight record batch).
const READER_BATCH: usize = 1024;

/// The sizes and timing windows of a run: the figures' or a smoke run's.
struct Plan {
    /// Timed 1024×1024 matmuls per thread count (the best counts).
    gemm_repeats: usize,
    /// Rows of the in-memory data set, and of the data-stall run.
    data_rows: usize,
    /// Batch sizes of the throughput runs.
    batches: &'static [usize],
    /// See [`MIN_SECONDS`].
    min_seconds: f64,
    /// See [`MIN_ROWS`].
    min_rows: u64,
    /// See [`MAX_SECONDS`].
    max_seconds: f64,
    /// A throughput warm-up lasts at least this long and `warmup_batches`.
    warmup: Duration,
    /// See `warmup`.
    warmup_batches: u64,
    /// Rows a data-stall model trains on before it is timed.
    stall_warmup_rows: usize,
    /// The simulated searches: `(models, workers, epochs)`.
    schedules: [(usize, usize, usize); 2],
}

impl Plan {
    /// The figures BENCHMARKS.md reports.
    const FULL: Plan = Plan {
        gemm_repeats: 10,
        data_rows: DATA_ROWS,
        batches: &[32, 256, 512],
        min_seconds: MIN_SECONDS,
        min_rows: MIN_ROWS,
        max_seconds: MAX_SECONDS,
        warmup: Duration::from_millis(300),
        warmup_batches: 3,
        stall_warmup_rows: 4 * 256,
        schedules: [(16, 8, 10), (1000, 64, 1)],
    };

    /// Every code path once, in seconds: one batch size, one mini-batch per
    /// warm-up and measurement, a full and a partial data-stall reader
    /// batch, small schedules.
    const SMOKE: Plan = Plan {
        gemm_repeats: 1,
        data_rows: READER_BATCH + 256,
        batches: &[256],
        min_seconds: 0.0,
        min_rows: 1,
        max_seconds: 1.0,
        warmup: Duration::ZERO,
        warmup_batches: 1,
        stall_warmup_rows: 256,
        schedules: [(4, 2, 2), (32, 8, 1)],
    };
}

/// How confA's first layer runs and is optimized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One-hot input times the full weight; Adam.
    Dense,
    /// `embedding_bag` over the 39 active rows; Adam over every row.
    Sparse,
    /// `embedding_bag`; lazy Adam over the rows the batch touched.
    Lazy,
}

/// PyTorch's rows/s for each `(mode, batch)` at `threads` threads, from
/// `bench/python/pytorch_trainer.py` on the rows in `x.npy`/`y.npy` in
/// `dir`; `None` without `HOPPER_TORCH_PYTHON`.
fn pytorch_rates(
    dir: &std::path::Path,
    threads: usize,
    runs: &[(&str, usize)],
) -> Result<Option<Vec<f64>>> {
    let Some(python) = std::env::var_os("HOPPER_TORCH_PYTHON") else {
        return Ok(None);
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/pytorch_trainer.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script)
        .arg(dir.join("x.npy"))
        .arg(dir.join("y.npy"))
        .arg(threads.to_string());
    for (mode, batch) in runs {
        cmd.arg(mode).arg(batch.to_string());
    }
    let out = cmd.output()?;
    if !out.status.success() {
        anyhow::bail!(
            "pytorch_trainer.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rates = String::from_utf8(out.stdout)?
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)?;
            Ok(v["rows"].as_f64().unwrap_or(0.0) / v["seconds"].as_f64().unwrap_or(f64::NAN))
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(Some(rates))
}

/// SplitMix64: a tiny deterministic generator, so the benchmark needs no
/// random-number crate and every run trains on the same rows.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Distinct values of a categorical column the rows draw from.
const VOCAB: usize = 10_000;

/// The cumulative distribution of a Zipf-like draw over [`VOCAB`] values,
/// `P(r) ∝ 1/(r+1)^1.1` (the Criteo-like table's).
fn zipf_cdf() -> Vec<f64> {
    let weights: Vec<f64> = (0..VOCAB)
        .map(|r| 1.0 / ((r + 1) as f64).powf(1.1))
        .collect();
    let total: f64 = weights.iter().sum();
    weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / total;
            Some(*acc)
        })
        .collect()
}

/// `rows` random but valid featurized Criteo rows.
fn random_rows(rows: usize, seed: u64) -> Result<Featurized> {
    let mut rng = SplitMix(seed);
    let cdf = zipf_cdf();
    let mut x = Vec::with_capacity(rows * SLOTS);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        for j in 0..NUMERIC {
            x.push((j * NUMERIC_BUCKETS + rng.below(NUMERIC_BUCKETS)) as i64);
        }
        for k in 0..CATEGORICAL {
            let base = NUMERIC * NUMERIC_BUCKETS + k * CATEGORICAL_SLOTS;
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let rank = cdf.partition_point(|&c| c < u).min(VOCAB - 1);
            let slot = SplitMix((rank * CATEGORICAL + k) as u64).next_u64() as usize;
            x.push((base + slot % CATEGORICAL_SLOTS) as i64);
        }
        y.push(rng.below(2) as i64);
    }
    let x = Tensor::from_slice(&x).view([rows as i64, SLOTS as i64]);
    Ok(Featurized::new(x, Tensor::from_slice(&y))?)
}

/// One raw Criteo row as a reader would see it before featurization.
struct RawRow {
    numeric: [f64; NUMERIC],
    categorical: [Option<String>; CATEGORICAL],
    label: i64,
}

/// `rows` raw rows with Criteo-like values (log-spread numbers, some NULLs,
/// hex-string categories).
fn raw_rows(rows: usize, seed: u64) -> Vec<RawRow> {
    let mut rng = SplitMix(seed);
    (0..rows)
        .map(|_| RawRow {
            numeric: std::array::from_fn(|_| {
                let e = rng.below(24) as i32;
                (rng.next_u64() % 1000) as f64 / 1000.0 * 2f64.powi(e)
            }),
            categorical: std::array::from_fn(|_| {
                let v = rng.next_u64();
                (!v.is_multiple_of(10)).then(|| format!("{:08x}", v >> 40))
            }),
            label: rng.below(2) as i64,
        })
        .collect()
}

/// Featurizes raw rows the way the Criteo featurizer does (log buckets,
/// FNV-1a hashed categories) into one batch: the CPU work a reader does per
/// record batch.
fn featurize(rows: &[RawRow]) -> Result<Featurized> {
    let mut x = Vec::with_capacity(rows.len() * SLOTS);
    let mut y = Vec::with_capacity(rows.len());
    for row in rows {
        for (j, v) in row.numeric.iter().enumerate() {
            x.push((j * NUMERIC_BUCKETS) as i64 + numeric_bucket(*v));
        }
        for (k, v) in row.categorical.iter().enumerate() {
            let base = (NUMERIC * NUMERIC_BUCKETS + k * CATEGORICAL_SLOTS) as i64;
            x.push(base + categorical_slot(v.as_deref().map(str::as_bytes)));
        }
        y.push(row.label);
    }
    let x = Tensor::from_slice(&x).view([rows.len() as i64, SLOTS as i64]);
    Ok(Featurized::new(x, Tensor::from_slice(&y))?)
}

/// Best GFLOP/s of a 1024×1024 f32 matmul over `repeats` runs.
fn gemm_gflops(repeats: usize) -> f64 {
    let n = 1024i64;
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let _ = a.matmul(&b);
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        let c = a.matmul(&b);
        best = best.min(t.elapsed().as_secs_f64());
        drop(c);
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// Mini-batches of `batch` rows cycled over `data` until `until` says stop.
fn cycle<'a>(
    data: &'a Featurized,
    batch: usize,
    mut until: impl FnMut(u64) -> bool + 'a,
) -> impl Iterator<Item = mop_trainer::Result<Featurized>> + 'a {
    let rows = data.len();
    let mut offset = 0;
    let mut served = 0u64;
    std::iter::from_fn(move || {
        if until(served) {
            return None;
        }
        if offset + batch > rows {
            offset = 0;
        }
        let mb = data.slice(offset, batch);
        offset += batch;
        served += batch as u64;
        Some(mb)
    })
}

/// Rows per second of confA at `batch` rows per step.
fn throughput(plan: &Plan, data: &Featurized, batch: usize, mode: Mode) -> Result<UnitMetrics> {
    let mut config = ModelConfig::conf_a(1e-3, 1e-5, batch, mode != Mode::Dense);
    if mode == Mode::Lazy {
        config.optimizer = OptimizerKind::LazyAdam;
    }
    let mut model = Model::new(config, 7)?;
    let mut opt = model.optimizer()?;
    // Warm-up: allocator, kernels' first-call setup, Adam's state tensors.
    let warm = Instant::now();
    train_partition(
        &mut model,
        &mut opt,
        cycle(data, batch, |rows| {
            rows >= plan.warmup_batches * batch as u64 && warm.elapsed() >= plan.warmup
        }),
        batch,
        |_| {},
    )?;
    let start = Instant::now();
    let m = train_partition(
        &mut model,
        &mut opt,
        cycle(data, batch, |rows| {
            let t = start.elapsed().as_secs_f64();
            (t >= plan.min_seconds && rows >= plan.min_rows) || t >= plan.max_seconds
        }),
        batch,
        |_| {},
    )?;
    Ok(m)
}

/// Trains sparse confA (batch 256) over `raw`'s rows (a) from batches
/// featurized up front and (b) from a producer thread that featurizes each
/// record batch and hands it over a `sync_channel(4)`.
fn data_stall(
    raw: std::sync::Arc<Vec<RawRow>>,
    warm_rows: usize,
) -> Result<(UnitMetrics, UnitMetrics)> {
    let batch = 256;
    let config = ModelConfig::conf_a(1e-3, 1e-5, batch, true);
    let warm = random_rows(warm_rows, 3)?;

    let in_memory: Vec<Featurized> = raw
        .chunks(READER_BATCH)
        .map(featurize)
        .collect::<Result<_>>()?;
    let mut model = Model::new(config.clone(), 7)?;
    let mut opt = model.optimizer()?;
    train_partition(
        &mut model,
        &mut opt,
        [Ok(warm.shallow_clone())],
        batch,
        |_| {},
    )?;
    let from_vec = train_partition(
        &mut model,
        &mut opt,
        in_memory.into_iter().map(Ok),
        batch,
        |_| {},
    )?;

    let mut model = Model::new(config, 7)?;
    let mut opt = model.optimizer()?;
    train_partition(&mut model, &mut opt, [Ok(warm)], batch, |_| {})?;
    let (tx, rx) = sync_channel::<mop_trainer::Result<Featurized>>(4);
    let producer = std::thread::spawn(move || {
        for chunk in raw.chunks(READER_BATCH) {
            let batch = featurize(chunk).map_err(|e| mop_trainer::Error::Config(e.to_string()));
            if tx.send(batch).is_err() {
                break;
            }
        }
    });
    let from_channel = train_partition(&mut model, &mut opt, rx, batch, |_| {})?;
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))?;
    Ok((from_vec, from_channel))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let plan = if args.smoke { Plan::SMOKE } else { Plan::FULL };
    let began = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    if args.smoke {
        println!(
            "SMOKE RUN (--smoke): every section once on tiny windows and data; \
             the numbers below are not figures"
        );
    }
    println!(
        "# hopper training benchmark ({cpus} CPUs, libtorch CPU, load average {})",
        loadavg()
    );

    println!(
        "\n## 1. GEMM rate (1024×1024 f32 matmul, best of {})",
        plan.gemm_repeats
    );
    let mut bound = [0.0f64; 3];
    for threads in [1, 2] {
        set_threads(threads);
        let g = gemm_gflops(plan.gemm_repeats);
        bound[threads] = g * 1e9 / CONF_A_FLOP_PER_ROW;
        println!(
            "threads={threads}: {g:7.1} GFLOP/s  → confA bound {:7.0} rows/s (32.2 MFLOP/row)",
            bound[threads]
        );
    }

    println!(
        "\n## 2. confA throughput against PyTorch (rows/s; ≥{} s and ≥{} rows after warm-up)",
        plan.min_seconds, plan.min_rows
    );
    println!("dense: one-hot input; sparse: embedding_bag first layer; both with fused Adam.");
    println!("lazy: hopper's sparse first layer with lazy_adam (touched rows only).");
    println!(
        "{:>7} {:>5} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>8}",
        "threads",
        "batch",
        "dense",
        "torch",
        "h/torch",
        "sparse",
        "torch",
        "h/torch",
        "lazy",
        "dense/GB"
    );
    let data = random_rows(plan.data_rows, 1)?;
    let npy = std::env::temp_dir().join(format!("hopper-training-bench-{}", std::process::id()));
    std::fs::create_dir_all(&npy)?;
    data.x.write_npy(npy.join("x.npy"))?;
    data.y.write_npy(npy.join("y.npy"))?;
    let batches = plan.batches;
    let mut ratios = Vec::new();
    for threads in [1, 2] {
        set_threads(threads);
        let runs: Vec<(&str, usize)> = batches
            .iter()
            .flat_map(|&b| [("dense", b), ("sparse", b)])
            .collect();
        let torch = pytorch_rates(&npy, threads, &runs)?;
        for (i, &batch) in batches.iter().enumerate() {
            let rate = |m: UnitMetrics| m.samples as f64 / m.seconds;
            let d = rate(throughput(&plan, &data, batch, Mode::Dense)?);
            let s = rate(throughput(&plan, &data, batch, Mode::Sparse)?);
            let l = rate(throughput(&plan, &data, batch, Mode::Lazy)?);
            let (td, ts) = torch
                .as_ref()
                .map_or((f64::NAN, f64::NAN), |t| (t[2 * i], t[2 * i + 1]));
            ratios.push((threads, batch, d / td, s / ts, l));
            println!(
                "{threads:>7} {batch:>5} {d:>9.0} {td:>9.0} {:>7.2}× {s:>9.0} {ts:>9.0} {:>7.2}× {l:>9.0} {:>7.0}%",
                d / td,
                s / ts,
                100.0 * d / bound[threads]
            );
        }
    }
    std::fs::remove_dir_all(&npy)?;
    if std::env::var_os("HOPPER_TORCH_PYTHON").is_none() {
        println!("(PyTorch columns: run with HOPPER_TORCH_PYTHON=\"$(bench/torch-venv.sh)\")");
    }
    for (threads, batch, dense, _, _) in &ratios {
        if [256, 512].contains(batch) {
            println!("hopper/pytorch dense confA, {threads} thread(s), batch {batch} = {dense:.3}");
        }
    }
    for (threads, batch, _, _, lazy) in &ratios {
        if *batch == 256 {
            println!("lazy_adam sparse confA, {threads} thread(s), batch 256 = {lazy:.0} rows/s");
        }
    }

    println!(
        "\n## 3. Data stall (sparse confA, batch 256, {} rows in {READER_BATCH}-row batches)",
        plan.data_rows
    );
    let raw = std::sync::Arc::new(raw_rows(plan.data_rows, 2));
    for threads in [1, 2] {
        set_threads(threads);
        let (v, c) = data_stall(raw.clone(), plan.stall_warmup_rows)?;
        for (name, m) in [("Vec in memory", v), ("producer + sync_channel(4)", c)] {
            println!(
                "threads={threads} {name:<27} {:>6.2} s  {:>7.0} rows/s  wait {:>6.3} s ({:>4.1}%)",
                m.seconds,
                m.samples as f64 / m.seconds,
                m.wait_seconds,
                100.0 * m.wait_seconds / m.seconds
            );
        }
    }
    println!("(real Flight reads are not measured here; see the data-plane benchmark)");

    println!("\n## 4. Simulated MOP makespan / lower bound");
    println!(
        "{:>6} {:>7} {:>6} {:>6} {:>13} {:>10} {:>10} {:>10} {:>7}",
        "models", "workers", "epochs", "times", "policy", "makespan", "bound", "ratio", "wall"
    );
    for (models, workers, epochs) in plan.schedules {
        for (kind, times) in [
            ("equal", UnitTimes::equal(models, workers)?),
            ("mixed", UnitTimes::mixed(models, workers)?),
        ] {
            for policy in Policy::ALL {
                let t = Instant::now();
                let sched = Scheduler::new(models, workers, epochs, 42, policy)?;
                let r = simulate(sched, &times, &SimOptions::default())?;
                println!(
                    "{models:>6} {workers:>7} {epochs:>6} {kind:>6} {:>13} {:>10.1} {:>10.1} {:>10.4} {:>6.2}s",
                    policy.name(),
                    r.makespan,
                    r.lower_bound,
                    r.makespan / r.lower_bound,
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }

    println!(
        "\ntotal {:.0} s, load average at end {}",
        began.elapsed().as_secs_f64(),
        loadavg()
    );
    Ok(())
}
