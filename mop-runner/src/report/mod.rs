//! `mop report`: one self-contained HTML page about a finished run —
//! leaderboard, grid, learning curves, the MOP schedule as a Gantt chart, and
//! how busy every trainer was.
//!
//! # Design
//!
//! ```text
//!  run dir ─► load(): results.json + timeline.json ─► RunFiles
//!  RunFiles ─► render() (pure: strings in, HTML out, SVG inlined) ─► report.html
//! ```
//!
//! The report reads only the files `mop train` writes into its output
//! directory: no database, no libtorch. [`render`] is a pure function of the
//! parsed files, so tests check its output without running a training.

mod charts;
mod html;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{ModelConfig, OptimizerKind};
use crate::error::{Error, Result};
use crate::run_dir::checkpoint::UnitRecord;
use crate::run_dir::partitions::PartitionRecord;

pub use html::render;

/// Name of the report file in a run directory.
pub const REPORT_FILE: &str = "report.html";
/// Name of the results file `mop train` writes at the end of a run.
pub const RESULTS_FILE: &str = "results.json";
/// Name of the timeline file (every unit's start and end).
pub const TIMELINE_FILE: &str = "timeline.json";
/// Run directories tried when no `--dir` is given (`mop demo`'s, then `mop train`'s default).
pub const DEFAULT_DIRS: [&str; 2] = ["hopper-demo", "hopper-out"];

/// `mop report` options.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run's output directory (default: ./hopper-demo, else ./hopper-out).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where to write the report (default: <dir>/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Where the data came from, as recorded in results.json.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceRecord {
    /// The flight-server location(s).
    pub flight: String,
    /// The training query.
    pub sql: String,
}

/// One model of results.json.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelRecord {
    /// Model id (index in the grid).
    pub model_id: usize,
    /// Short architecture name.
    pub arch: String,
    /// The model's configuration.
    pub config: ModelConfig,
    /// Mean training loss per epoch.
    pub train_loss: Vec<Option<f64>>,
    /// Training accuracy per epoch.
    pub train_acc: Vec<Option<f64>>,
    /// Validation loss per epoch (`None` without validation rows).
    pub val_loss: Vec<Option<f64>>,
    /// Validation accuracy per epoch.
    pub val_acc: Vec<Option<f64>>,
    /// Training seconds per epoch.
    #[serde(default)]
    pub epoch_seconds: Vec<Option<f64>>,
    /// Seconds waiting for data per epoch.
    #[serde(default)]
    pub wait_seconds: Vec<Option<f64>>,
    /// The model file, relative to the run directory.
    pub model_file: Option<String>,
    /// Epochs it trained in all, when the run decided (a search may stop
    /// a model before the last epoch).
    #[serde(default)]
    pub stopped_at: Option<usize>,
    /// Why it stopped there.
    #[serde(default)]
    pub stop_reason: Option<crate::search::Reason>,
}

fn last(v: &[Option<f64>]) -> Option<f64> {
    v.last().copied().flatten().filter(|x| x.is_finite())
}

impl ModelRecord {
    /// Final training loss.
    pub fn train_loss(&self) -> Option<f64> {
        last(&self.train_loss)
    }
    /// Final training accuracy.
    pub fn train_acc(&self) -> Option<f64> {
        last(&self.train_acc)
    }
    /// Final validation loss.
    pub fn val_loss(&self) -> Option<f64> {
        last(&self.val_loss)
    }
    /// Final validation accuracy.
    pub fn val_acc(&self) -> Option<f64> {
        last(&self.val_acc)
    }
    /// What models are ranked by (as `mop train` does): validation
    /// accuracy, else training accuracy.
    pub fn score(&self) -> f64 {
        self.val_acc()
            .or(self.train_acc())
            .unwrap_or(f64::NEG_INFINITY)
    }
    /// Epochs recorded.
    pub fn epochs(&self) -> usize {
        self.train_loss.len()
    }
    /// Training seconds over all epochs.
    pub fn seconds(&self) -> f64 {
        self.epoch_seconds.iter().flatten().sum()
    }
}

/// The optimizer's name, e.g. `adam` or `sgd(0.9)`.
pub fn optimizer_name(o: &OptimizerKind) -> String {
    match o {
        OptimizerKind::Sgd { momentum } if *momentum != 0.0 => format!("sgd({momentum})"),
        OptimizerKind::Sgd { .. } => "sgd".into(),
        OptimizerKind::Adam => "adam".into(),
        OptimizerKind::AdamW => "adamw".into(),
        OptimizerKind::LazyAdam => "lazy_adam".into(),
    }
}

/// A hyper-parameter value in short form: `1e-3`, `0`, `0.5`.
pub fn short_number(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if (0.01..1000.0).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// results.json as `mop train` writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct RunResults {
    /// Where the data came from.
    pub source: SourceRecord,
    /// Epochs per model.
    pub epochs: usize,
    /// Seed of the run.
    pub seed: u64,
    /// Number of trainers.
    pub trainers: usize,
    /// Wall seconds of the run (over resumes).
    pub seconds: f64,
    /// The best model's id.
    pub best_model: Option<usize>,
    /// Every model, by id.
    pub models: Vec<ModelRecord>,
    /// Every partition: its trainer and where it was read from (empty in
    /// results of older versions).
    #[serde(default)]
    pub partitions: Vec<PartitionRecord>,
    /// How the run searched (absent in results of older versions).
    #[serde(default)]
    pub search: Option<SearchRecord>,
}

/// The run's search, in results.json.
#[derive(Debug, Clone, Deserialize)]
pub struct SearchRecord {
    /// grid, random, hyperband or asha.
    pub kind: crate::search::SearchKind,
    /// Its parameters.
    pub rule: crate::search::Rule,
    /// Epochs trained, summed over models.
    pub model_epochs: usize,
    /// What the full grid over the same configurations would train.
    pub full_model_epochs: usize,
}

impl RunResults {
    /// Models best first (ties by id), as `mop train`'s leaderboard.
    pub fn leaderboard(&self) -> Vec<&ModelRecord> {
        let mut v: Vec<&ModelRecord> = self.models.iter().collect();
        v.sort_by(|a, b| {
            b.score()
                .total_cmp(&a.score())
                .then(a.model_id.cmp(&b.model_id))
        });
        v
    }

    /// The best model (results.json's choice, else the leaderboard's first).
    pub fn best(&self) -> Option<&ModelRecord> {
        self.best_model
            .and_then(|id| self.models.iter().find(|m| m.model_id == id))
            .or_else(|| self.leaderboard().first().copied())
    }

    /// Whether any model has validation metrics.
    pub fn has_validation(&self) -> bool {
        self.models.iter().any(|m| m.val_acc().is_some())
    }
}

/// A finished run's files, parsed.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The run directory.
    pub dir: PathBuf,
    /// results.json.
    pub results: RunResults,
    /// timeline.json: every unit as it ran (empty if the file is missing).
    pub timeline: Vec<UnitRecord>,
}

/// Whether `dir` holds a run (its results, or its checkpoint).
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join(RESULTS_FILE).is_file() || dir.join("checkpoint").join("checkpoint.json").is_file()
}

/// The run directory to use: `dir` if given, else the first default that holds a run.
pub fn resolve_dir(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_path_buf());
    }
    DEFAULT_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| is_run_dir(d))
        .ok_or_else(|| {
            Error::Config(format!(
                "no run directory given and neither ./{} nor ./{} holds a run; \
                 pass --dir with the run's output.dir (or `mop demo --dir`)",
                DEFAULT_DIRS[0], DEFAULT_DIRS[1]
            ))
        })
}

/// Checks that `dir` exists and holds a run.
pub fn check_run_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Err(Error::Config(format!(
            "run directory {} does not exist; pass --dir with the output.dir of a \
             `mop train` run (or the --dir of `mop demo`)",
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory; pass --dir with a run's output directory",
            dir.display()
        )));
    }
    if !is_run_dir(dir) {
        return Err(Error::Config(format!(
            "{} is not a hopper run directory: it has neither {RESULTS_FILE} nor \
             checkpoint/checkpoint.json; pass --dir with the output.dir of a `mop train` run",
            dir.display()
        )));
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Config(format!(
            "{} is not a results file of this version of mop ({e}); \
             `mop train --resume` on the run writes it again from the checkpoint",
            path.display()
        ))
    })
}

/// Reads a finished run's results.json (and timeline.json, if present).
pub fn load(dir: &Path) -> Result<RunFiles> {
    check_run_dir(dir)?;
    let results_path = dir.join(RESULTS_FILE);
    if !results_path.is_file() {
        return Err(Error::Config(format!(
            "the run in {} has not finished: {RESULTS_FILE} is written at its end; \
             `mop status --dir {}` shows how far it got, `mop train --resume` continues it",
            dir.display(),
            dir.display()
        )));
    }
    let results: RunResults = read_json(&results_path)?;
    let timeline_path = dir.join(TIMELINE_FILE);
    let timeline = if timeline_path.is_file() {
        read_json(&timeline_path)?
    } else {
        Vec::new()
    };
    Ok(RunFiles {
        dir: dir.to_path_buf(),
        results,
        timeline,
    })
}

/// Renders the report of the run in `dir` and writes it to `out`
/// (default `<dir>/report.html`); returns the path written.
pub fn write_report(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let run = load(dir)?;
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(REPORT_FILE));
    let html = render(&run)?;
    crate::run_dir::checkpoint::write_atomic(&path, html.as_bytes()).map_err(|e| {
        Error::Config(format!(
            "cannot write the report to {}: {e}",
            path.display()
        ))
    })?;
    Ok(path)
}

/// Runs `mop report`.
pub fn run_report(args: ReportArgs) -> Result<()> {
    let dir = resolve_dir(args.dir.as_deref())?;
    let path = write_report(&dir, args.out.as_deref())?;
    println!("report: {}", path.display());
    Ok(())
}

#[cfg(test)]
pub(crate) mod fixture;

#[cfg(test)]
mod tests;
