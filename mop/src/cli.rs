//! The `mop` command line.
//!
//! `main.rs` only parses [`Cli`] and calls [`run`]; each subcommand is one
//! variant of [`Command`] and one function here, so adding a subcommand
//! touches nothing else.

use std::io::{self, Write};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use mop_core::schedule::{Policy, Scheduler};
use mop_core::search::{SearchConfig, SearchKind};
use mop_core::simulate::{simulate, Curves, SimOptions, SimReport, UnitTimes};

/// Model hopper parallelism: train a grid of models over database segments.
#[derive(Debug, Parser)]
#[command(name = "mop", version, about)]
#[command(after_help = "Examples:
  mop demo                                  segments, a flight-server, trainers and 16 models on this machine
  mop train --config examples/criteo.toml   a grid over running flight-servers
  mop status --dir hopper-out/criteo        how far a run got
  mop report --dir hopper-out/criteo        its HTML report

Each command has examples of its own: mop help train.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `mop`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate the MOP scheduler and report how close it gets to optimal.
    Simulate(SimulateArgs),
    /// Train a grid of models over a flight-server's partitions with MOP.
    #[command(after_help = "Examples:
  HOPPER_FLIGHT_USER=alice HOPPER_PASSWORD_FILE=~/.hopper-pw mop train --config grid.toml
  mop train --config grid.toml --resume                  continue an interrupted run
  mop train --config grid.toml --epochs 1 --progress json

The configuration's fields: mop-core/src/run_config.rs, README (mop).")]
    Train(crate::commands::TrainArgs),
    /// Serve training units beside one partition (started by `mop train`).
    #[command(after_help = "Examples:
  head -c 32 /dev/urandom > trainer.key
  mop trainer --bind 0.0.0.0:7000 --threads 4 --key-file trainer.key
  mop trainer --bind 0.0.0.0:7000 --key-file trainer.key --tls-cert server.pem --tls-key server.key

The port also answers the gRPC health protocol (grpc.health.v1) without a key:
SERVING once the device has computed.")]
    Trainer(crate::commands::TrainerArgs),
    /// Run the whole of hopper locally: segments, flight-server, trainers, a grid.
    #[cfg(feature = "demo")]
    #[command(after_help = "Examples:
  mop demo                                        2 segments, 20 000 rows, 3 epochs
  mop demo --rows 3000 --epochs 1                 a quick look
  mop demo --rows 200000 --epochs 5 --segments 3
  mop demo --keep                                 leave the segments and flight-server running
  mop demo --greenplum postgres://gpadmin:PASSWORD@mdw:5432/postgres")]
    Demo(crate::demo::DemoArgs),
    /// Write a run's HTML report: leaderboard, learning curves, the MOP schedule.
    Report(crate::commands::ReportArgs),
    /// Show what a run is doing or did, from its checkpoint.
    Status(crate::commands::StatusArgs),
    /// List a run's trained models (from results.json, or the result table).
    Models(crate::commands::ModelsArgs),
    /// Score a table with a trained model; write the predictions back to its segments.
    #[command(after_help = "Example:
  mop predict --dir hopper-out/criteo --model best --table criteo --key id --into criteo_scores")]
    Predict(mop_trainer::predict::PredictArgs),
}

/// Unit-time patterns for `mop simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimesArg {
    /// Every unit takes the same time.
    Equal,
    /// 1–4× by model, as a grid over batch sizes 32, 64, 256, 512.
    Mixed,
    /// Independent uniform times in [1, 4) per (model, partition).
    Random,
}

/// Policy selection for `mop simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Fixed visit orders, most remaining work first (the runner's default).
    Reproducible,
    /// Cerebro's randomized policy with an epoch barrier.
    Cerebro,
    /// Both, side by side.
    All,
}

impl PolicyArg {
    fn policies(self) -> Vec<Policy> {
        match self {
            PolicyArg::Reproducible => vec![Policy::Reproducible],
            PolicyArg::Cerebro => vec![Policy::Cerebro],
            PolicyArg::All => Policy::ALL.to_vec(),
        }
    }
}

/// Searches `mop simulate --search` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchArg {
    /// Every model every epoch.
    Grid,
    /// Asynchronous successive halving.
    Asha,
    /// Hyperband's brackets.
    Hyperband,
}

/// Arguments of `mop simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Number of model configurations (S).
    #[arg(long, short = 's', default_value_t = 16)]
    pub models: usize,
    /// Number of workers = partitions (W).
    #[arg(long, short = 'w', default_value_t = 8)]
    pub workers: usize,
    /// Number of epochs (E).
    #[arg(long, short = 'e', default_value_t = 10)]
    pub epochs: usize,
    /// How long each (model, partition) unit takes.
    #[arg(long, value_enum, default_value_t = TimesArg::Mixed)]
    pub times: TimesArg,
    /// Scheduling policy, or `all` to compare them.
    #[arg(long, value_enum, default_value_t = PolicyArg::All)]
    pub policy: PolicyArg,
    /// Seed of the schedule (and of `random` unit times and the simulated
    /// learning curves).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A search that stops models early, against the full grid (simulated
    /// learning curves give the scores; the reproducible policy runs it).
    #[arg(long, value_enum, default_value_t = SearchArg::Grid)]
    pub search: SearchArg,
    /// The search's reduction factor.
    #[arg(long, default_value_t = 3)]
    pub eta: usize,
    /// ASHA's first rung, in epochs.
    #[arg(long, default_value_t = 1)]
    pub min_epochs: usize,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Simulate(args) => run_simulate(&args, &mut io::stdout().lock()),
        Command::Train(args) => crate::commands::run_train(args),
        Command::Trainer(args) => crate::commands::run_trainer(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => crate::demo::run_demo(args),
        Command::Report(args) => crate::commands::run_report(args),
        Command::Status(args) => crate::commands::run_status(args),
        Command::Models(args) => crate::commands::run_models(args),
        Command::Predict(args) => crate::commands::run_predict(args),
    }
}

/// `mop simulate`: prints makespan, lower bound and efficiency per policy.
pub fn run_simulate(args: &SimulateArgs, out: &mut dyn Write) -> Result<()> {
    let (s, w, e) = (args.models, args.workers, args.epochs);
    let times = match args.times {
        TimesArg::Equal => UnitTimes::equal(s, w),
        TimesArg::Mixed => UnitTimes::mixed(s, w),
        TimesArg::Random => UnitTimes::random(s, w, args.seed),
    }
    .map_err(|_| Error::Config("--models and --workers must be at least 1".into()))?;
    writeln!(
        out,
        "{s} models × {w} workers × {e} epochs, {} unit times, seed {}",
        args.times
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default(),
        args.seed
    )?;
    writeln!(
        out,
        "lower bound {:.2} = E · max(total / W, busiest partition, longest model)",
        times.lower_bound(e)
    )?;
    writeln!(
        out,
        "{:<13} {:>12} {:>11} {:>28}",
        "policy", "makespan", "efficiency", "worker busy min/mean/max"
    )?;
    for policy in args.policy.policies() {
        let scheduler = Scheduler::new(s, w, e, args.seed, policy)?;
        let report = simulate(scheduler, &times, &SimOptions::default())?;
        writeln!(out, "{}", format_row(policy, &report))?;
    }
    let kind = match args.search {
        SearchArg::Grid => return Ok(()),
        SearchArg::Asha => SearchKind::Asha,
        SearchArg::Hyperband => SearchKind::Hyperband,
    };
    let search = SearchConfig {
        kind,
        max_epochs: Some(e),
        eta: Some(args.eta),
        min_epochs: (kind == SearchKind::Asha).then_some(args.min_epochs),
        ..SearchConfig::default()
    };
    search.validate(e)?;
    let options = SimOptions {
        curves: Some(Curves::random(s, args.seed)),
        ..SimOptions::default()
    };
    let policy = Policy::Reproducible;
    let grid = simulate(
        Scheduler::new(s, w, e, args.seed, policy)?,
        &times,
        &options,
    )?;
    let sched = Scheduler::with_search(s, w, e, args.seed, policy, search.rule(e)?)?;
    let pruned = simulate(sched, &times, &options)?;
    writeln!(
        out,
        "{kind} (eta {}{}), simulated learning curves, reproducible policy:",
        args.eta,
        if kind == SearchKind::Asha {
            format!(", first rung {} epochs", args.min_epochs)
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "{:<13} {:>12} {:>11} {:>13} {:>14}",
        "search", "makespan", "efficiency", "model-epochs", "best accuracy"
    )?;
    for (name, r) in [("grid", &grid), (kind.name(), &pruned)] {
        writeln!(
            out,
            "{:<13} {:>12.2} {:>11.4} {:>13} {:>14.4}",
            name,
            r.makespan,
            r.efficiency,
            r.model_epochs,
            r.best_accuracy.unwrap_or(f64::NAN)
        )?;
    }
    writeln!(
        out,
        "{kind} trains {:.0}% of the grid's model-epochs in {:.0}% of its time \
         (efficiency over the work it trained)",
        100.0 * pruned.model_epochs as f64 / grid.model_epochs.max(1) as f64,
        100.0 * pruned.makespan / grid.makespan.max(f64::MIN_POSITIVE)
    )?;
    Ok(())
}

fn format_row(policy: Policy, r: &SimReport) -> String {
    let min = r.busy.iter().copied().fold(f64::INFINITY, f64::min);
    let max = r.busy.iter().copied().fold(0.0, f64::max);
    let mean = r.busy.iter().sum::<f64>() / r.busy.len().max(1) as f64;
    format!(
        "{:<13} {:>12.2} {:>11.4} {:>28}",
        policy.name(),
        r.makespan,
        r.efficiency,
        format!("{min:.1}/{mean:.1}/{max:.1}")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulate_args(line: &str) -> SimulateArgs {
        let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
        match cli.command {
            Command::Simulate(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn simulate_prints_every_policy_with_its_efficiency() {
        let args = simulate_args("mop simulate --models 16 --workers 8 --epochs 3 --times equal");
        let mut out = Vec::new();
        run_simulate(&args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("lower bound 48.00"), "{text}");
        assert!(
            text.contains("reproducible") && text.contains("cerebro"),
            "{text}"
        );
        let repro = text
            .lines()
            .find(|l| l.starts_with("reproducible"))
            .unwrap();
        assert!(
            repro.contains("48.00") && repro.contains("1.0000"),
            "{repro}"
        );
    }

    #[test]
    fn simulate_reports_what_a_search_saves() {
        for search in ["asha", "hyperband"] {
            let args = simulate_args(&format!(
                "mop simulate --models 27 --workers 4 --epochs 9 --search {search}"
            ));
            let mut out = Vec::new();
            run_simulate(&args, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let row = |name: &str| -> Vec<f64> {
                let fields = |l: &str| -> Option<Vec<f64>> {
                    let mut words = l.split_whitespace();
                    (words.next() == Some(name))
                        .then(|| words.map(|x| x.parse().ok()).collect())
                        .flatten()
                };
                text.lines().rev().find_map(fields).unwrap()
            };
            let (grid, pruned) = (row("grid"), row(search));
            assert_eq!(grid[2], 27.0 * 9.0, "{text}");
            assert!(pruned[2] < grid[2] / 2.0, "{text}");
            assert!(pruned[0] < grid[0], "it takes less time: {text}");
            assert!(pruned[1] > 0.6, "and keeps the trainers busy: {text}");
        }
    }

    #[test]
    fn simulate_rejects_an_empty_grid() {
        for line in [
            "mop simulate --models 0",
            "mop simulate --workers 0",
            "mop simulate -e 0",
        ] {
            let args = simulate_args(line);
            let err = run_simulate(&args, &mut Vec::new()).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Config(_) | Error::Core(mop_core::Error::Config(_))
                ),
                "{line}: {err}"
            );
        }
        assert!(Cli::try_parse_from(["mop", "simulate", "--policy", "fastest"]).is_err());
    }

    #[test]
    fn predict_needs_a_table_or_a_query_and_an_output_table() {
        let ok = Cli::try_parse_from([
            "mop", "predict", "--dir", "d", "--table", "t", "--into", "p",
        ])
        .unwrap();
        match ok.command {
            Command::Predict(a) => {
                assert_eq!((a.model.as_str(), a.key.as_str()), ("best", "id"));
                assert!(!a.replace);
            }
            other => panic!("parsed {other:?}"),
        }
        for line in [
            "mop predict --dir d --into p",
            "mop predict --dir d --table t --sql s --into p",
            "mop predict --dir d --table t",
        ] {
            assert!(
                Cli::try_parse_from(line.split_whitespace()).is_err(),
                "{line}"
            );
        }
    }
}
