//! The run's checkpoint: written after every unit, so a killed runner
//! resumes without losing finished work.
//!
//! `checkpoint.json` is the commit point. Model states are written first,
//! under a name that includes how many units the model has done
//! (`model-3.u12.safetensors`), then the checkpoint that names them is
//! renamed into place; so a crash between the two leaves the old
//! checkpoint pointing at the old, still present, state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{Metric, RegressionSums, ScoreCounts};
use crate::run_dir::reads::SourceReads;
use crate::schedule::Scheduler;

/// Per-epoch metrics of one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Training rows seen in the epoch.
    pub train_samples: u64,
    /// Sum of per-row training loss.
    pub train_loss_sum: f64,
    /// Correct training predictions.
    pub train_correct: u64,
    /// Seconds of training (sum over units).
    pub seconds: f64,
    /// Seconds waiting for data (sum over units).
    pub wait_seconds: f64,
    /// Validation rows, loss sum and correct predictions after the epoch.
    pub val_samples: u64,
    /// Sum of per-row validation loss.
    pub val_loss_sum: f64,
    /// Correct validation predictions.
    pub val_correct: u64,
    /// Regression: the training pass's sums (see [`crate::metrics`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_regression: Option<RegressionSums>,
    /// Regression: the validation pass's sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_regression: Option<RegressionSums>,
    /// Binary: the training scores counted so far in an epoch that has not
    /// visited every partition yet; once it has, they become `train_auc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_scores: Option<ScoreCounts>,
    /// Binary: training AUC over every row of the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_auc: Option<f64>,
    /// Binary: validation AUC over every validation row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_auc: Option<f64>,
}

/// Which rows a metric (or a read, [`crate::run_dir::reads`]) is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The training rows, scored before each update as the epoch trained.
    Train,
    /// The validation rows, scored after the epoch.
    Validation,
}

impl EpochMetrics {
    /// Mean training loss.
    pub fn train_loss(&self) -> f64 {
        self.train_loss_sum / (self.train_samples.max(1) as f64)
    }
    /// Training accuracy.
    pub fn train_acc(&self) -> f64 {
        self.train_correct as f64 / (self.train_samples.max(1) as f64)
    }
    /// Mean validation loss (NaN without validation rows).
    pub fn val_loss(&self) -> f64 {
        if self.val_samples == 0 {
            f64::NAN
        } else {
            self.val_loss_sum / self.val_samples as f64
        }
    }
    /// Validation accuracy (NaN without validation rows).
    pub fn val_acc(&self) -> f64 {
        if self.val_samples == 0 {
            f64::NAN
        } else {
            self.val_correct as f64 / self.val_samples as f64
        }
    }

    /// `metric` over the rows of `split`; NaN where it has no value (no
    /// rows, or a metric of another task).
    pub fn value(&self, metric: Metric, split: Split) -> f64 {
        let (n, regression, auc) = match split {
            Split::Train => (self.train_samples, self.train_regression, self.train_auc),
            Split::Validation => (self.val_samples, self.val_regression, self.val_auc),
        };
        if n == 0 {
            return f64::NAN;
        }
        let sums = |f: fn(&RegressionSums, u64) -> f64| regression.map_or(f64::NAN, |r| f(&r, n));
        match (metric, split) {
            (Metric::Loss | Metric::LogLoss, Split::Train) => self.train_loss(),
            (Metric::Loss | Metric::LogLoss, Split::Validation) => self.val_loss(),
            (Metric::Accuracy, Split::Train) => self.train_acc(),
            (Metric::Accuracy, Split::Validation) => self.val_acc(),
            (Metric::Auc, _) => auc.unwrap_or(f64::NAN),
            (Metric::Rmse, _) => sums(RegressionSums::rmse),
            (Metric::Mae, _) => sums(RegressionSums::mae),
            (Metric::R2, _) => sums(RegressionSums::r2),
        }
    }
}

/// One unit as it ran: the schedule picture is drawn from these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// Model index.
    pub model: usize,
    /// Partition (= worker) index.
    pub partition: usize,
    /// Epoch.
    pub epoch: usize,
    /// Seconds since the run started (resumed runs continue the clock).
    pub start: f64,
    /// Seconds since the run started.
    pub end: f64,
    /// Rows trained.
    pub samples: u64,
    /// Seconds waiting for data.
    pub wait_seconds: f64,
    /// Arrow IPC bytes the unit read over Flight (0 when it trained from
    /// the trainer's cache; the cache's own read is the partition's
    /// `open_bytes` in results.json).
    #[serde(default)]
    pub bytes_read: u64,
    /// Whether the trainer sits on the host its partition is served from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
}

/// A validation pass that was running when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Model index.
    pub model: usize,
    /// The epoch the model finished.
    pub epoch: usize,
    /// The state file (relative to the checkpoint dir) it ended that epoch with.
    pub state: String,
}

/// The best epoch of a model so far (`[train] keep = "best"`), with the
/// state it ended that epoch with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// The epoch (0-based); its score is in the checkpoint's metrics.
    pub epoch: usize,
    /// The state file (relative to the checkpoint dir).
    pub state: String,
}

/// The version of `checkpoint.json` this build writes and the newest it
/// resumes. Version 3 added `reads`: a mop that does not know them would
/// resume without comparing its reads with them, so it must refuse.
pub const CHECKPOINT_FORMAT: u32 = 3;

fn version_one() -> u32 {
    1
}

/// Everything a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The file's format ([`CHECKPOINT_FORMAT`]; 1 when absent).
    #[serde(default = "version_one")]
    pub format_version: u32,
    /// The scheduler, with no unit running.
    pub scheduler: Scheduler,
    /// Per model: the state file (relative to the checkpoint dir), if any.
    pub states: Vec<Option<String>>,
    /// Per model: units done (names state files).
    pub units_done: Vec<u64>,
    /// Per model, per finished epoch.
    pub metrics: Vec<Vec<EpochMetrics>>,
    /// Every unit run so far.
    pub timeline: Vec<UnitRecord>,
    /// Seconds the run had used before this checkpoint.
    pub elapsed: f64,
    /// Hash of the run configuration, to refuse resuming another run.
    pub config_fingerprint: String,
    /// Validation passes to run again on resume.
    #[serde(default)]
    pub pending_evals: Vec<EvalRecord>,
    /// Per model, its best epoch so far (`[train] keep = "best"`; empty
    /// otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub best: Vec<Option<BestRecord>>,
    /// What every partition's rows were at their reads, and the changes
    /// the run went on after ([`crate::run_dir::reads`]).
    #[serde(default, skip_serializing_if = "SourceReads::is_empty")]
    pub reads: SourceReads,
}

/// Where a run keeps its checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
}

impl CheckpointDir {
    /// The checkpoint directory under a run's output directory.
    pub fn new(output: &Path) -> Result<Self> {
        let dir = output.join("checkpoint");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The checkpoint directory itself, for the runner's own files in it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the checkpoint file.
    pub fn file(&self) -> PathBuf {
        self.dir.join("checkpoint.json")
    }

    /// Loads the checkpoint, if one exists.
    pub fn load(&self) -> Result<Option<Checkpoint>> {
        let path = self.file();
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)?;
        let c: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "checkpoint {} is unreadable ({e}); delete it to start over",
                path.display()
            ))
        })?;
        if c.format_version > CHECKPOINT_FORMAT {
            return Err(Error::Config(format!(
                "checkpoint {} has format_version {}, newer than this mop resumes                  ({CHECKPOINT_FORMAT}): resume with the mop that wrote it",
                path.display(),
                c.format_version
            )));
        }
        Ok(Some(c))
    }

    /// Reads a model state named by a checkpoint.
    pub fn read_state(&self, name: &str) -> Result<Vec<u8>> {
        Ok(std::fs::read(self.dir.join(name))?)
    }

    /// Writes a model state; returns its name for the checkpoint.
    pub fn write_state(&self, model: usize, units_done: u64, state: &[u8]) -> Result<String> {
        let name = format!("model-{model}.u{units_done}.safetensors");
        write_atomic(&self.dir.join(&name), state)?;
        Ok(name)
    }

    /// Commits a checkpoint, then removes state files it no longer names.
    pub fn commit(&self, c: &Checkpoint) -> Result<()> {
        write_atomic(&self.file(), &serde_json::to_vec(c)?)?;
        let keep: std::collections::HashSet<&str> = c
            .states
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(c.pending_evals.iter().map(|e| e.state.as_str()))
            .chain(c.best.iter().flatten().map(|b| b.state.as_str()))
            .collect();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".safetensors") && !keep.contains(name.as_ref()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to a temporary file and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Policy;

    #[test]
    fn a_kept_best_state_survives_a_commit_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let ck = CheckpointDir::new(dir.path()).unwrap();
        let last = ck.write_state(0, 4, b"last").unwrap();
        let best = ck.write_state(0, 2, b"best").unwrap();
        let stale = ck.write_state(0, 1, b"stale").unwrap();
        let metrics = EpochMetrics {
            val_samples: 4,
            val_regression: Some(RegressionSums {
                abs_error: 2.0,
                squared_error: 4.0,
                label: 4.0,
                label_squared: 8.0,
            }),
            train_scores: Some(ScoreCounts::from_rows([(0.5, true), (f32::NAN, false)])),
            ..EpochMetrics::default()
        };
        let c = Checkpoint {
            format_version: CHECKPOINT_FORMAT,
            scheduler: Scheduler::new(1, 1, 4, 0, Policy::Reproducible).unwrap(),
            states: vec![Some(last.clone())],
            units_done: vec![4],
            metrics: vec![vec![metrics.clone()]],
            timeline: Vec::new(),
            elapsed: 1.0,
            config_fingerprint: "f".into(),
            pending_evals: Vec::new(),
            best: vec![Some(BestRecord {
                epoch: 1,
                state: best.clone(),
            })],
            reads: SourceReads::default(),
        };
        ck.commit(&c).unwrap();
        let back = ck.load().unwrap().unwrap();
        assert_eq!(back.best, c.best);
        assert_eq!(back.metrics[0][0].val_regression, metrics.val_regression);
        assert_eq!(
            back.metrics[0][0].value(Metric::Rmse, Split::Validation),
            1.0
        );
        assert_eq!(ck.read_state(&best).unwrap(), b"best");
        assert_eq!(ck.read_state(&last).unwrap(), b"last");
        assert!(ck.read_state(&stale).is_err(), "unnamed states are removed");
    }
}
