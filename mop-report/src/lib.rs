//! # mop-report
//!
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
mod error;
mod html;

use std::path::{Path, PathBuf};

use mop_core::config::OptimizerKind;
use mop_core::run_dir::checkpoint::{write_atomic, UnitRecord};
use mop_core::run_dir::results::read_json;
pub use mop_core::run_dir::results::{RunResults, RESULTS_FILE, TIMELINE_FILE};

pub use error::{Error, Result};

pub use html::render;

/// Name of the report file in a run directory.
pub const REPORT_FILE: &str = "report.html";
/// Run directories tried when no `--dir` is given (`mop demo`'s, then `mop train`'s default).
pub const DEFAULT_DIRS: [&str; 2] = ["hopper-demo", "hopper-out"];

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
    let results = RunResults::read(&results_path)?;
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
    write_atomic(&path, html.as_bytes()).map_err(|e| {
        Error::Config(format!(
            "cannot write the report to {}: {e}",
            path.display()
        ))
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests;
