//! `scale`: a cluster too large for this machine, on paper — a flight-server
//! beside every segment host against one funnel server, from measured
//! per-row costs, with the costs of model hopping itself.
//!
//! ```text
//!  beside   segment ─loopback─► flight-server ─loopback─► trainer       (on each of H hosts)
//!  funnel   segment ─NIC─► one flight-server (its own host) ─NIC─► trainers
//!  hops     trainer ─NIC─► trainer: every unit's state, once
//!           trainer ─NIC─► runner: a copy of each model's state per epoch
//! ```
//!
//! The inputs are per-row costs that `hopper-bench --bin greenplum` measures
//! on a real Greenplum (it prints them as a `scale inputs:` line), the
//! trainer's rows/s that `hopper-bench --bin training` measures, and a hop's
//! cost and a validation pass's rate that `hopper-bench --bin hops`
//! measures; the rest are assumptions. It prints which is which. The model:
//!
//! - CPU costs add up per row and divide a host's cores: a segment spends
//!   `segment_us` producing a row for RETRIEVE, a flight-server
//!   `server_us` turning it into Arrow, a Flight client `client_us`
//!   decoding it. Work spreads over a host's cores (an upper bound), **but
//!   one stream is a pipeline of single-threaded stages** (one backend, one
//!   server task, one decoding task): it moves at most 1 / max(stage cost)
//!   rows/s, so a host's or the funnel's rate is also capped by its streams
//!   (one per segment) times that.
//! - A NIC carries `nic_gbit` each way; rows cross it as text (RETRIEVE,
//!   `text_bytes`) into the funnel and as Arrow IPC (`arrow_bytes`) out of
//!   it. Beside the segments, rows cross only loopback, taken as free.
//! - Each trainer trains on one core at `trainer_rps` rows/s per model pass
//!   (the default `threads = 1`); while trainers train, a host has
//!   `cores - 1` cores for its segments and server.
//! - A unit streams its partition while training (prefetch), so it trains
//!   for `rows / min(train rate, read rate)`; the read rate of a trainer is
//!   its host's (beside) or the funnel's divided by all trainers reading at
//!   once.
//! - **State transfer**: every unit also pays one hop, `hop_s` (measured on
//!   loopback for a `state_mb` state, trainer to trainer: the holder
//!   sending, the receiver decoding and rebuilding the model) plus the
//!   state crossing a NIC once, into the next trainer's host: each trainer
//!   receives its own states on its own host's NIC.
//! - **Validation**: after each epoch of each model, the model's state
//!   crosses the runner's NIC once (the runner's copy, which validation
//!   and the checkpoint use), every trainer evaluates its share of
//!   `validation` × rows at `eval_rps` rows/s, and the runner sends the
//!   model's weights (a third of an Adam state) to every trainer; no unit
//!   runs on a trainer meanwhile, so it adds to the makespan. The
//!   validation rows are not trained on.
//! - MOP: `models` models × `epochs` epochs over `trainers` partitions, the
//!   runner's reproducible policy, played by `mop_core::simulate`. With
//!   `cache = memory` the partitions are read once (the fill, at the
//!   layout's aggregate rate with every core) and every unit trains from
//!   memory; with `cache = none` every unit reads its partition again.
//!
//! Everything it prints follows from the flags, which it echoes.

use anyhow::{bail, Result};
use clap::Parser;
use mop_core::schedule::{Policy, Scheduler};
use mop_core::simulate::{simulate, SimOptions, UnitTimes};

/// A cluster on paper: a flight-server per host against one funnel.
#[derive(Debug, Parser)]
#[command(name = "scale", about)]
struct Args {
    /// Segment hosts.
    #[arg(long, default_value_t = 16)]
    hosts: usize,
    /// Primary segments over all hosts.
    #[arg(long, default_value_t = 64)]
    segments: usize,
    /// Cores per host (the funnel's host too).
    #[arg(long, default_value_t = 16)]
    cores: usize,
    /// NIC bandwidth per host, Gbit/s each way.
    #[arg(long, default_value_t = 10.0)]
    nic_gbit: f64,
    /// Rows of the table.
    #[arg(long, default_value_t = 45_840_617)]
    rows: u64,
    /// Models of the search.
    #[arg(long, default_value_t = 16)]
    models: usize,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// CPU µs a segment spends per row it RETRIEVEs (measured).
    #[arg(long, default_value_t = 4.87)]
    segment_us: f64,
    /// CPU µs a flight-server spends per row (measured).
    #[arg(long, default_value_t = 2.90)]
    server_us: f64,
    /// CPU µs a Flight client spends decoding a row (measured).
    #[arg(long, default_value_t = 0.35)]
    client_us: f64,
    /// Bytes of a row as RETRIEVE sends it (text; measured).
    #[arg(long, default_value_t = 268.0)]
    text_bytes: f64,
    /// Bytes of a row as Arrow IPC (measured).
    #[arg(long, default_value_t = 372.0)]
    arrow_bytes: f64,
    /// Rows/s one trainer trains one model on one core: measured for
    /// sparse confA at batch 256; repeat the flag to compare trainers
    /// (e.g. a GPU's rate, stated as an assumption).
    #[arg(long = "trainer-rps", default_values_t = [13_433.0, 400_000.0])]
    trainer_rps: Vec<f64>,
    /// A model's state, MB (confA with Adam: weights and two moments;
    /// measured by `hops`).
    #[arg(long, default_value_t = 93.7)]
    state_mb: f64,
    /// Seconds one hop of that state costs beyond training, on loopback
    /// (measured by `hops`, trainer to trainer: sending, decoding,
    /// rebuilding the model).
    #[arg(long, default_value_t = HOP_S)]
    hop_s: f64,
    /// Fraction of the rows held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation: f64,
    /// Rows/s one trainer evaluates confA on one core (measured by `hops`:
    /// its Evaluate round trip, weights sent).
    #[arg(long, default_value_t = EVAL_RPS)]
    eval_rps: f64,
}

/// `hops`' confA hop, seconds: the median of its release run in
/// BENCHMARKS.md ("Hops").
const HOP_S: f64 = 0.141;
/// `hops`' confA validation pass over 15 000 rows, rows/s (the same run;
/// its round trip includes sending the weights once over loopback).
const EVAL_RPS: f64 = 44_793.0;

/// Which inputs were measured, by what, and which are assumed.
fn inputs(a: &Args) -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("segment µs per row (RETRIEVE)", format!("{}", a.segment_us), "measured: greenplum"),
        ("flight-server µs per row", format!("{}", a.server_us), "measured: greenplum"),
        ("Flight client µs per row", format!("{}", a.client_us), "measured: greenplum"),
        ("row bytes, text / Arrow", format!("{} / {}", a.text_bytes, a.arrow_bytes), "measured: greenplum"),
        (
            "trainer rows/s",
            a.trainer_rps.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            "measured: training (13 433, sparse confA, batch 256, 1 thread); any other rate is assumed",
        ),
        ("state MB per model", format!("{}", a.state_mb), "measured: hops (confA, Adam)"),
        ("hop s beyond training, loopback", format!("{}", a.hop_s), "measured: hops"),
        ("validation rows/s per trainer", format!("{:.0}", a.eval_rps), "measured: hops (confA Evaluate round trip)"),
        ("validation fraction", format!("{}", a.validation), "assumed (end-to-end's)"),
        ("hosts, segments, cores, NIC Gbit/s", format!("{}, {}, {}, {}", a.hosts, a.segments, a.cores, a.nic_gbit), "assumed"),
        ("one stream = single-threaded stages", "1 core per stage".into(), "assumed"),
        ("CPU work spreads over a host's cores", "perfectly, up to the streams' cap".into(), "assumed"),
        ("a hop crosses one NIC, the receiving host's", "yes".into(), "assumed"),
    ]
}

/// One layout's rates, rows/s.
struct Layout {
    name: &'static str,
    /// Reading the whole table with every core (the cache fill, an export).
    fill: f64,
    /// What one trainer can read while all trainers train.
    per_trainer: f64,
    /// What limits the fill.
    bottleneck: &'static str,
}

fn layouts(a: &Args) -> Vec<Layout> {
    let (h, c) = (a.hosts as f64, a.cores as f64);
    let nic = a.nic_gbit * 1e9 / 8.0;
    let per_core = |us: f64| 1e6 / us;
    let trainers = a.hosts as f64;
    // One stream (a segment's endpoint) is a pipeline of single-threaded
    // stages: the slowest stage sets its pace.
    let stream = per_core(a.segment_us.max(a.server_us).max(a.client_us));
    let streams_per_host = a.segments as f64 / h;
    let streams_all = a.segments as f64 * stream;
    // Beside: everything on the host, nothing on the wire.
    let host_all =
        (c * per_core(a.segment_us + a.server_us + a.client_us)).min(streams_per_host * stream);
    let host_training = ((c - 1.0).max(0.0) * per_core(a.segment_us + a.server_us + a.client_us))
        .min(streams_per_host * stream);
    // Funnel: the limits of the segments, the one server, its NIC and the
    // trainers' decoding; the smallest wins.
    let funnel = |cores_per_segment_host: f64| {
        let limits = [
            (
                "segments",
                h * cores_per_segment_host * per_core(a.segment_us),
            ),
            ("the funnel's cores", c * per_core(a.server_us)),
            ("the funnel's NIC in (text)", nic / a.text_bytes),
            ("the funnel's NIC out (Arrow)", nic / a.arrow_bytes),
            (
                "the trainers' decoding",
                h * cores_per_segment_host * per_core(a.client_us),
            ),
            (
                "one stream per segment, single-threaded stages",
                streams_all,
            ),
        ];
        limits
            .into_iter()
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .unwrap_or(("none", f64::INFINITY))
    };
    let (bottleneck, fill) = funnel(c);
    let (_, training) = funnel((c - 1.0).max(0.0));
    vec![
        Layout {
            name: "a flight-server beside each host",
            fill: h * host_all,
            per_trainer: host_training,
            bottleneck: if host_all < c * per_core(a.segment_us + a.server_us + a.client_us) {
                "its streams (one per segment, single-threaded stages)"
            } else {
                "the hosts' cores"
            },
        },
        Layout {
            name: "one funnel flight-server",
            fill,
            per_trainer: training / trainers,
            bottleneck,
        },
    ]
}

/// MOP makespan of `models × epochs` units of `unit` seconds over `w` partitions.
fn makespan(a: &Args, w: usize, unit: f64) -> Result<f64> {
    let times = UnitTimes::new(a.models, w, vec![unit; a.models * w])?;
    let sched = Scheduler::new(a.models, w, a.epochs, 0, Policy::Reproducible)?;
    Ok(simulate(sched, &times, &SimOptions::default())?.makespan)
}

fn human(secs: f64) -> String {
    if secs >= 3600.0 {
        format!("{:.2} h", secs / 3600.0)
    } else if secs >= 60.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{secs:.1} s")
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.hosts == 0 || a.segments < a.hosts || a.cores < 2 {
        bail!("need hosts ≥ 1, segments ≥ hosts and cores ≥ 2");
    }
    let w = a.hosts; // one trainer per host, holding that host's segments
    if !(0.0..1.0).contains(&a.validation) {
        bail!("--validation must be in [0, 1)");
    }
    let rows_per_trainer = a.rows as f64 * (1.0 - a.validation) / w as f64;
    let nic = a.nic_gbit * 1e9 / 8.0;
    // A hop: its cost on loopback, plus the state over the receiving
    // host's NIC, once.
    let hop = a.hop_s + a.state_mb * 1e6 / nic;
    // Validation of one model-epoch: the runner's copy of the state in over
    // its NIC, then each trainer's share of the held-out rows, after the
    // weights (a third of an Adam state) reach every trainer.
    let validate = a.rows as f64 * a.validation / w as f64 / a.eval_rps
        + a.state_mb * 1e6 / nic
        + a.state_mb / 3.0 * 1e6 * w as f64 / nic;
    let validation_total = (a.models * a.epochs) as f64 * validate;
    println!(
        "{} segments on {} hosts ({} cores, {} Gbit/s each), {} trainers (one per host, one core), \
         {} rows, {} models × {} epochs",
        a.segments, a.hosts, a.cores, a.nic_gbit, w, a.rows, a.models, a.epochs
    );
    println!("\n| input | value | source |");
    println!("|---|---|---|");
    for (what, value, source) in inputs(&a) {
        println!("| {what} | {value} | {source} |");
    }
    println!(
        "\nper unit: one hop {} (of which {} on a NIC); per model-epoch: validation {} on every trainer",
        human(hop),
        human(hop - a.hop_s),
        human(validate)
    );
    let layouts = layouts(&a);
    println!(
        "\n| layout | read rows/s, all cores | limited by | rows/s per trainer while training |"
    );
    println!("|---|---:|---|---:|");
    for l in &layouts {
        println!(
            "| {} | {:.0} | {} | {:.0} |",
            l.name, l.fill, l.bottleneck, l.per_trainer
        );
    }
    println!(
        "beside / funnel, reading: {:.1}×",
        layouts[0].fill / layouts[1].fill
    );

    println!(
        "\n| trainer rows/s | layout | cache | fill | unit: training + hop | validation | MOP makespan | without hops and validation | × beside |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for &rps in &a.trainer_rps {
        for cache in ["memory", "none"] {
            let mut first = None;
            for l in &layouts {
                let (fill, train) = match cache {
                    "memory" => (Some(a.rows as f64 / l.fill), rows_per_trainer / rps),
                    _ => (None, rows_per_trainer / rps.min(l.per_trainer)),
                };
                let bare = fill.unwrap_or(0.0) + makespan(&a, w, train)?;
                let total = fill.unwrap_or(0.0) + makespan(&a, w, train + hop)? + validation_total;
                let base = *first.get_or_insert(total);
                println!(
                    "| {rps:.0} | {} | {cache} | {} | {} + {} | {} | {} | {} | {:.2} |",
                    l.name,
                    fill.map_or("–".into(), human),
                    human(train),
                    human(hop),
                    human(validation_total),
                    human(total),
                    human(bare),
                    total / base
                );
            }
        }
    }
    Ok(())
}
