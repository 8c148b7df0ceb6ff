//! `hops`: what one hop of a model costs — its state moved from the trainer
//! that trained it to the trainer of its next unit — against the training
//! it would hide behind.
//!
//! ```text
//!  devcluster: 1 PostgreSQL segment ── load_criteo ──► criteo (--rows)
//!  flight-server ◄── trainers A and B (`mop trainer`, spawned as the runner spawns them, 1 thread)
//!  this process, as the runner:
//!    trainer to trainer:  TrainUnit(model, from A, hold) ──► B ── FetchState ──► A;  B ──► UnitResult(seconds)
//!    through the runner:  TrainUnit(model, state) ──► A ──► UnitResult(state', seconds)
//! ```
//!
//! A hop is measured through real trainer processes: the wall time of a
//! `TrainUnit` round trip minus the seconds the trainer reports for the
//! training itself, on a partition of about 100 rows from the trainer's
//! memory cache, so what is left is everything a unit costs beyond
//! training. Two ways, samples interleaved:
//! - **trainer to trainer**, as `mop train` moves states: the trainer of
//!   the next unit fetches the state the other trainer kept, rebuilds the
//!   model, trains, encodes and keeps the new state; nothing comes back.
//! - **through the runner**, as states moved before hops went direct (and
//!   as they still do when trainers cannot reach each other): the state
//!   sent with the request, the model rebuilt, trained, its state encoded,
//!   returned and copied into a buffer the runner keeps.
//!
//! States of about 1, 10 and 100 MB: MLPs over the Criteo input's 7306
//! slots with hidden layers [11, 8], [112, 64] and confA's [1000, 500],
//! Adam (weights and both moments).
//!
//! Against it, the same trainer's own unit seconds of confA units over the
//! `--rows` rows (15 000 by default: a partition of the end-to-end
//! benchmark's 30 000-row table on two segments, training rows and
//! validation together) at batch sizes 32, 256 and 512, and one
//! validation pass of confA over the same rows (`Evaluate`, the weights
//! sent as the runner sends them: the round trip, on the runner's clock).
//! And what encoding each state costs in this process: hopper's encoder
//! against the safetensors crate's over the same tensors.
//! Every figure is the median over `--samples` with the spread (min–max),
//! after one warm-up.
//!
//! `cargo run --release -p hopper-bench --bin hops` (needs `cargo build
//! --release -p flight-server -p mop --bins`); `--smoke` runs every step
//! once on a tiny table (seconds; its numbers are not figures).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use devcluster::{load_criteo, ClusterOptions, LocalCluster};
use flight_client::plan::plan;
use hopper_bench::samples::Samples;
use hopper_bench::server::{self, Server};
use hopper_proto::{
    train_event, CacheMode, EvaluateRequest, FlightEndpoint, OpenPartitionRequest, StateKey,
    StateSource, TrainUnitRequest, UnitResult,
};
use mop_core::config::ModelConfig;
use mop_core::model_state::weights_only;
use mop_core::run_config::RunConfig;
use mop_runner::trainers::{connect, Client, LocalTrainer};
use mop_trainer::model::Model;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// One hop's cost against a unit's training time.
#[derive(Parser, Debug)]
#[command(name = "hops")]
struct Args {
    /// Rows of the table: the partition the confA units train on.
    #[arg(long, default_value_t = 15_000)]
    rows: u64,
    /// Samples of every figure (after one warm-up).
    #[arg(long, default_value_t = 7)]
    samples: usize,
    /// A smoke run in seconds: 1 000 rows, two samples, one batch size
    /// (overrides --rows and --samples); the numbers are not figures.
    #[arg(long)]
    smoke: bool,
}

/// The models whose states hop: (what, hidden layers).
const STATES: [(&str, &str); 3] = [
    ("about 1 MB: MLP 7306 → 11 → 8 → 2", "[11, 8]"),
    ("about 10 MB: MLP 7306 → 112 → 64 → 2", "[112, 64]"),
    ("about 100 MB: confA, 7306 → 1000 → 500 → 2", "[1000, 500]"),
];

/// Encoding each state in this process on one thread, samples of both ways
/// interleaved: `Model::to_state` against `safetensors::serialize` over a
/// host copy of every tensor (how a state is encoded with the safetensors
/// crate, and how `to_state` encoded it before it wrote each tensor straight
/// into its place). Both must give the same bytes.
fn encoding(samples: usize) -> Result<()> {
    println!("\n## encoding a state (this process, 1 thread; both ways interleaved)");
    println!("| state | `to_state` s | `safetensors::serialize` over host copies s | to_state / serialize |");
    println!("|---|---|---|---:|");
    tch::set_num_threads(1);
    for (what, hidden) in STATES {
        let built = Model::new_on(model(hidden, 256)?, 1, tch::Device::Cpu)?;
        let opt = built.optimizer()?;
        let blob = built.to_state(&opt)?;
        let parsed = SafeTensors::deserialize(&blob)?;
        let (_, header) = SafeTensors::read_metadata(&blob)?;
        let tensors = parsed
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let kind = match view.dtype() {
                    Dtype::F32 => tch::Kind::Float,
                    Dtype::I64 => tch::Kind::Int64,
                    other => bail!("{name}: a state of {other:?} tensors"),
                };
                let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                Ok((
                    name,
                    view.dtype(),
                    tch::Tensor::f_from_data_size(view.data(), &shape, kind)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let serialize = || -> Result<Vec<u8>> {
            let mut host = Vec::new();
            for (name, dtype, t) in &tensors {
                let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
                t.f_copy_data_u8(&mut bytes, t.numel())?;
                let shape = t.size().iter().map(|&d| d as usize).collect::<Vec<_>>();
                host.push((name.as_str(), *dtype, shape, bytes));
            }
            let views = host
                .iter()
                .map(|(name, dtype, shape, bytes)| {
                    Ok((*name, TensorView::new(*dtype, shape.clone(), bytes)?))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(safetensors::serialize(views, header.metadata().clone())?)
        };
        if serialize()? != blob {
            bail!("{what}: to_state and safetensors::serialize encode different bytes");
        }
        let (mut ours, mut theirs) = (Samples::default(), Samples::default());
        for _ in 0..samples {
            let start = Instant::now();
            std::hint::black_box(built.to_state(&opt)?);
            ours.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            std::hint::black_box(serialize()?);
            theirs.push(start.elapsed().as_secs_f64());
        }
        println!(
            "| {what} | {} | {} | {:.2} |",
            ours.show(3),
            theirs.show(3),
            ours.median() / theirs.median()
        );
    }
    Ok(())
}

/// A model of the Criteo input with `hidden` layers, Adam, as a grid of
/// one builds it.
fn model(hidden: &str, batch: usize) -> Result<ModelConfig> {
    let toml = format!(
        r#"[source]
flight = "grpc+tcp://127.0.0.1:1"
table = "criteo"

[grid]
arch = [{{ kind = "mlp", hidden = {hidden} }}]
lr = [1e-3]
l2 = [1e-5]
batch_size = [{batch}]
optimizer = [{{ kind = "adam" }}]
input = {{ kind = "criteo", sparse = true }}
classes = 2
"#
    );
    Ok(RunConfig::parse(&toml)?.grid.expand()?.remove(0))
}

/// The endpoints of `sql`, as the runner hands them to a trainer.
async fn endpoints(url: &str, sql: &str) -> Result<Vec<FlightEndpoint>> {
    Ok(plan(url, sql)
        .await?
        .into_iter()
        .map(|s| FlightEndpoint {
            location: s.location,
            ticket: s.ticket,
            bearer: String::new(),
        })
        .collect())
}

/// Opens the trainer's partition on `train` (and `validation`), cached in
/// memory, one thread.
async fn open(
    client: &mut Client,
    train: Vec<FlightEndpoint>,
    validation: Vec<FlightEndpoint>,
) -> Result<u64> {
    let r = client
        .open_partition(OpenPartitionRequest {
            partition: 0,
            train,
            validation,
            cache: CacheMode::Memory as i32,
            threads: 1,
        })
        .await?
        .into_inner();
    Ok(r.train_rows)
}

/// One unit: the round trip's wall seconds and the trainer's result, its
/// state copied into a buffer of its own as the runner keeps it.
async fn unit(
    client: &mut Client,
    config: &ModelConfig,
    state: bytes::Bytes,
) -> Result<(f64, UnitResult, bytes::Bytes)> {
    let req = TrainUnitRequest {
        model: 0,
        config: Some(hopper_proto::ModelConfig::from(config)),
        state,
        epoch: 0,
        seed: 42,
        ..Default::default()
    };
    unit_with(client, req).await
}

/// A unit whose state hops as `mop train` moves it: fetched from `from`
/// (none: a fresh model), kept by the trainer under `version`, not returned.
async fn hop_unit(
    client: &mut Client,
    config: &ModelConfig,
    from: Option<StateSource>,
    version: u64,
) -> Result<(f64, UnitResult)> {
    let req = TrainUnitRequest {
        model: 1,
        config: Some(hopper_proto::ModelConfig::from(config)),
        epoch: 0,
        seed: 42,
        from,
        hold: true,
        version,
        ..Default::default()
    };
    let (wall, r, returned) = unit_with(client, req).await?;
    if !returned.is_empty() {
        bail!("a unit asked to keep its state returned it");
    }
    Ok((wall, r))
}

async fn unit_with(
    client: &mut Client,
    req: TrainUnitRequest,
) -> Result<(f64, UnitResult, bytes::Bytes)> {
    let start = Instant::now();
    let mut stream = client.train_unit(req).await?.into_inner();
    let mut result = None;
    while let Some(event) = stream.message().await? {
        if let Some(train_event::Event::Result(r)) = event.event {
            result = Some(r);
        }
    }
    let mut r = result.context("the trainer ended the unit without a result")?;
    // The runner keeps a returned state as its own Vec (mop-runner's run.rs).
    let kept = bytes::Bytes::from(Vec::from(std::mem::take(&mut r.state)));
    Ok((start.elapsed().as_secs_f64(), r, kept))
}

fn main() -> Result<()> {
    // This process plays the runner: the allocator settings `mop` runs with.
    // Set before the runtime starts its threads, as `mop` sets them.
    hopper_malloc::keep_freed_memory();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> Result<()> {
    let mut args = Args::parse();
    let batches: &[usize] = if args.smoke {
        args.rows = 1_000;
        args.samples = 2;
        println!(
            "SMOKE RUN (--smoke): a tiny table, two samples; the numbers below are not figures"
        );
        &[256]
    } else {
        &[32, 256, 512]
    };
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let (server_bin, mop_bin) =
        server::binaries("cargo build --release -p flight-server -p mop --bins")?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# hops: one trainer process (1 thread) on loopback, {} rows, {} samples per figure (load average {})",
        args.rows,
        args.samples,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cluster = LocalCluster::start(1, ClusterOptions::default()).await?;
    load_criteo(&cluster, "criteo", args.rows, 7).await?;
    let server = Server::start(&server_bin, &cluster).await?;
    let trainers = [
        LocalTrainer::spawn(&mop_bin, 1)?,
        LocalTrainer::spawn(&mop_bin, 1)?,
    ];
    let mut clients = Vec::new();
    for t in &trainers {
        clients.push(connect(&t.address, Some(t.key.clone())).await?);
    }

    // Hops: a partition of about 100 rows, so the unit trains almost nothing.
    let mut tiny_rows = 0;
    for c in clients.iter_mut() {
        let tiny = endpoints(&server.url, "SELECT * FROM criteo WHERE id < 100").await?;
        tiny_rows = open(c, tiny, Vec::new()).await?;
    }
    println!("\n## one hop (TrainUnit round trip − the trainer's unit seconds; a partition of {tiny_rows} rows; both ways interleaved)");
    println!("| state | bytes | trainer to trainer: hop s | through the runner: hop s | trainer's unit s | to trainer / through runner |");
    println!("|---|---:|---|---|---|---:|");
    let mut hops = Vec::new();
    let mut version = 0u64;
    for (what, hidden) in STATES {
        let config = model(hidden, 256)?;
        // Warm-up: a fresh model's first unit each way, whose state then hops.
        let (_, _, mut state) = unit(&mut clients[0], &config, bytes::Bytes::new()).await?;
        version += 1;
        hop_unit(&mut clients[0], &config, None, version).await?;
        let mut holder = 0;
        let (mut direct, mut relay, mut secs) =
            (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..args.samples {
            let (wall, r, next) = unit(&mut clients[0], &config, state).await?;
            state = next;
            relay.push(wall - r.seconds);
            secs.push(r.seconds);
            // The state the other trainer keeps hops to this one.
            let (to, key) = (1 - holder, StateKey { model: 1, version });
            let from = StateSource {
                key: Some(key),
                peer: trainers[holder].address.clone(),
                proof: trainers[holder].key.proof(),
            };
            version += 1;
            let (wall, r) = hop_unit(&mut clients[to], &config, Some(from), version).await?;
            direct.push(wall - r.seconds);
            secs.push(r.seconds);
            holder = to;
        }
        println!(
            "| {what} | {} | {} | {} | {} | {:.2} |",
            state.len(),
            direct.show(3),
            relay.show(3),
            secs.show(3),
            direct.median() / relay.median()
        );
        hops.push((what, direct));
    }
    let mut client = clients.swap_remove(0);

    encoding(args.samples)?;

    // What a hop hides behind: confA units over the whole table.
    let all = endpoints(&server.url, "SELECT * FROM criteo").await?;
    let rows = open(&mut client, all.clone(), all).await?;
    println!("\n## a confA unit over {rows} rows (the trainer's own unit seconds), and one hop of confA against it");
    println!("| batch size | unit s | rows/s | confA hop / unit |");
    println!("|---:|---|---:|---|");
    let confa_hop = hops.last().map(|(_, h)| h.median()).unwrap_or(f64::NAN);
    let mut weights = Vec::new();
    for &batch in batches {
        let config = model("[1000, 500]", batch)?;
        let (_, _, mut state) = unit(&mut client, &config, bytes::Bytes::new()).await?;
        let mut secs = Samples::default();
        for _ in 0..args.samples {
            let (_, r, next) = unit(&mut client, &config, state).await?;
            state = next;
            secs.push(r.seconds);
        }
        println!(
            "| {batch} | {} | {:.0} | {:.3} |",
            secs.show(2),
            rows as f64 / secs.median(),
            confa_hop / secs.median()
        );
        weights = weights_only(&state)?;
    }

    // A validation pass over the same rows, as the runner asks for one.
    let config = model("[1000, 500]", 256)?;
    let mut eval = Samples::default();
    for i in 0..=args.samples {
        let start = Instant::now();
        let r = client
            .evaluate(EvaluateRequest {
                config: Some(hopper_proto::ModelConfig::from(&config)),
                state: bytes::Bytes::from(weights.clone()),
                validation: Vec::new(),
            })
            .await?
            .into_inner();
        if r.samples != rows {
            bail!("the trainer evaluated {} rows of {rows}", r.samples);
        }
        if i > 0 {
            eval.push(start.elapsed().as_secs_f64());
        }
    }
    println!(
        "\nconfA validation pass over {rows} rows (Evaluate round trip, {} B of weights sent): {} s, {:.0} rows/s",
        weights.len(),
        eval.show(3),
        rows as f64 / eval.median()
    );
    println!();
    for (what, hop) in &hops {
        println!("hop s, trainer to trainer, {what} = {:.3}", hop.median());
    }
    Ok(())
}
