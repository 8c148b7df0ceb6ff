//! `results.json`, `results.csv` and the model files: what a finished run
//! leaves in its directory. [`RunResults`] is the one definition of
//! `results.json` — `mop train` writes it through this type and `mop
//! report`, `mop models` and `mop predict` read it back through the same
//! type — and [`leaderboard`] the one ranking every tool prints.
//!
//! The file carries a [`FORMAT_VERSION`]; a reader refuses a newer one
//! instead of misreading it (files written before the field existed read
//! as version 1, whose fields are a subset of today's). Version 3 added
//! tasks: one list per metric of the task (`val_auc`, `train_rmse`, …),
//! `metric` (what ranks the models, [`Metric`]) and `keep` at the top, and
//! each model's `kept_epoch` and `best_epoch`; older files read as
//! multiclass runs ranked by accuracy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use crate::metrics::Metric;
use crate::run_config::{Keep, RunConfig};
use crate::run_dir::checkpoint::{EpochMetrics, Split, UnitRecord};
use crate::run_dir::partitions::PartitionRecord;
use crate::run_dir::reads::SourceChange;
use crate::run_dir::RunOutcome;
use crate::search::{Reason, Rule, SearchKind, Stop};

/// The version of `results.json` this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 3;
/// Name of the results file a run writes at its end.
pub const RESULTS_FILE: &str = "results.json";
/// Name of the timeline file (every unit's start and end).
pub const TIMELINE_FILE: &str = "timeline.json";

/// A model's state blob, shared with whoever else holds it: the runner's
/// copies are written out as they are, not copied again (16 confA states
/// are 1.5 GB).
#[derive(Clone)]
pub struct StateBlob {
    bytes: std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>,
    file: Option<PathBuf>,
}

impl StateBlob {
    /// Shares `bytes` (a `Vec<u8>`, a `bytes::Bytes`, …) without copying it.
    pub fn new(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Self {
        StateBlob {
            bytes: std::sync::Arc::new(bytes),
            file: None,
        }
    }

    /// The same bytes are in `file`, which is never written again (a
    /// checkpoint's state): the model file becomes a link to it instead of
    /// another copy.
    pub fn in_file(mut self, file: PathBuf) -> Self {
        self.file = Some(file);
        self
    }

    /// The blob.
    pub fn bytes(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }

    /// Writes the blob to `dest`: a hard link to its [`in_file`](Self::in_file)
    /// where that works (same file system, the file still there), else a
    /// copy.
    fn write_to(&self, dest: &Path) -> std::io::Result<()> {
        if let Some(file) = &self.file {
            let same_size =
                std::fs::metadata(file).is_ok_and(|m| m.len() == self.bytes().len() as u64);
            if same_size {
                let _ = std::fs::remove_file(dest);
                if std::fs::hard_link(file, dest).is_ok() {
                    return Ok(());
                }
            }
        }
        std::fs::write(dest, self.bytes())
    }
}

impl std::fmt::Debug for StateBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateBlob({} bytes)", self.bytes().len())
    }
}

/// One model's result, as the runner holds it at the end of a run.
#[derive(Debug, Clone)]
pub struct ModelResult {
    /// Model id (index in the grid).
    pub id: usize,
    /// Its configuration.
    pub config: ModelConfig,
    /// Per-epoch metrics.
    pub metrics: Vec<EpochMetrics>,
    /// The model file's weights and optimizer state (safetensors): the
    /// last epoch's, or the `kept` one's.
    pub state: Option<StateBlob>,
    /// The epoch (0-based) whose state `state` is, when it is not the last
    /// (`[train] keep = "best"`).
    pub kept: Option<usize>,
    /// Where and why its training ended (`None`: the run did not decide,
    /// as in results written before searches existed).
    pub stop: Option<Stop>,
}

impl ModelResult {
    /// The bytes of [`state`](Self::state), if it has one.
    pub fn state_bytes(&self) -> Option<&[u8]> {
        self.state.as_ref().map(StateBlob::bytes)
    }

    /// The last epoch's metrics.
    pub fn last(&self) -> EpochMetrics {
        self.metrics.last().cloned().unwrap_or_default()
    }

    /// The metrics of the epoch whose weights the model file holds.
    pub fn kept_metrics(&self) -> EpochMetrics {
        self.kept
            .and_then(|e| self.metrics.get(e))
            .cloned()
            .unwrap_or_else(|| self.last())
    }
}

/// What models are ranked by: the run's metric on the validation rows,
/// else on the training rows, at the epoch whose weights the model file
/// holds (the last, or the best with `keep = "best"`); a model without
/// either ranks last.
pub trait Ranked {
    /// The model's id (ties are broken by it, lower first).
    fn model_id(&self) -> usize;
    /// `metric` over `split` at the kept epoch, if it has a finite value.
    fn kept_value(&self, metric: Metric, split: Split) -> Option<f64>;
    /// The score models are ranked by, higher is better.
    fn score(&self, metric: Metric) -> f64 {
        self.kept_value(metric, Split::Validation)
            .or_else(|| self.kept_value(metric, Split::Train))
            .map_or(f64::NEG_INFINITY, |v| metric.signed(v))
    }
}

/// Models ordered best first under `metric`, ties by id.
pub fn leaderboard<T: Ranked>(models: &[T], metric: Metric) -> Vec<&T> {
    let mut v: Vec<&T> = models.iter().collect();
    v.sort_by(|a, b| {
        b.score(metric)
            .total_cmp(&a.score(metric))
            .then(a.model_id().cmp(&b.model_id()))
    });
    v
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Ranked for ModelResult {
    fn model_id(&self) -> usize {
        self.id
    }
    fn kept_value(&self, metric: Metric, split: Split) -> Option<f64> {
        finite(self.kept_metrics().value(metric, split))
    }
}

/// The epoch (0-based) with the best validation value of `metric` — the
/// earliest of equals — among epochs that have one.
pub fn best_epoch(metrics: &[EpochMetrics], metric: Metric) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (e, m) in metrics.iter().enumerate() {
        let v = m.value(metric, Split::Validation);
        if v.is_nan() {
            continue;
        }
        let s = metric.signed(v);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((e, s));
        }
    }
    best.map(|(e, _)| e)
}

/// A short name of an architecture, e.g. `mlp[1000,500]`.
pub fn arch_name(a: &Arch) -> String {
    match a {
        Arch::Mlp { hidden } => format!(
            "mlp[{}]",
            hidden
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Arch::LogReg => "logreg".into(),
        Arch::Cnn => "cnn".into(),
        Arch::ResNet18 => "resnet18".into(),
        Arch::TorchScript { path } => format!(
            "torchscript[{}]",
            Path::new(path)
                .file_name()
                .map_or(path.as_str(), |n| n.to_str().unwrap_or(path))
        ),
    }
}

/// `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// The file's format ([`FORMAT_VERSION`]; 1 when absent).
    #[serde(default = "version_one")]
    pub format_version: u32,
    /// Where the data came from.
    pub source: SourceRecord,
    /// Epochs per model.
    pub epochs: usize,
    /// How the run searched (absent in version 1 files of older runs).
    #[serde(default)]
    pub search: Option<SearchRecord>,
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
    /// Every partition: its trainer and where it was read from.
    #[serde(default)]
    pub partitions: Vec<PartitionRecord>,
    /// The metric that ranks the models (accuracy in files older than
    /// version 3).
    #[serde(default = "accuracy")]
    pub metric: Metric,
    /// Which epoch's weights the model files hold.
    #[serde(default)]
    pub keep: Keep,
    /// Partitions whose rows changed between two reads while the run went
    /// on (`[source] on_change = "warn"`; see [`crate::run_dir::reads`]):
    /// the models trained or validated on different rows from there on.
    /// Absent when none did, and in files of builds before the check (a
    /// reader that ignores the list misreads nothing else, so the format
    /// stays 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_changes: Vec<SourceChange>,
}

fn version_one() -> u32 {
    1
}

fn accuracy() -> Metric {
    Metric::Accuracy
}

/// Where the data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The flight-server location(s).
    pub flight: String,
    /// The training query.
    pub sql: String,
}

/// How the run searched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRecord {
    /// grid, random, hyperband or asha.
    pub kind: SearchKind,
    /// Its parameters.
    pub rule: Rule,
    /// Random search's draws.
    #[serde(default)]
    pub samples: Option<usize>,
    /// Epochs trained, summed over models.
    pub model_epochs: usize,
    /// What the full grid over the same configurations would train.
    pub full_model_epochs: usize,
}

/// One model of `results.json`. Per-epoch values are `null` where there
/// is none (validation without validation rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Validation loss per epoch.
    pub val_loss: Vec<Option<f64>>,
    /// Validation accuracy per epoch.
    pub val_acc: Vec<Option<f64>>,
    /// Binary: training AUC per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_auc: Vec<Option<f64>>,
    /// Binary: validation AUC per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_auc: Vec<Option<f64>>,
    /// Binary: training log loss per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_log_loss: Vec<Option<f64>>,
    /// Binary: validation log loss per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_log_loss: Vec<Option<f64>>,
    /// Regression: training RMSE per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_rmse: Vec<Option<f64>>,
    /// Regression: validation RMSE per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_rmse: Vec<Option<f64>>,
    /// Regression: training MAE per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_mae: Vec<Option<f64>>,
    /// Regression: validation MAE per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_mae: Vec<Option<f64>>,
    /// Regression: training R² per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_r2: Vec<Option<f64>>,
    /// Regression: validation R² per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_r2: Vec<Option<f64>>,
    /// The epochs (counted from 1) whose weights the model file holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_epoch: Option<usize>,
    /// The epoch (counted from 1) with the best validation value of the
    /// run's metric, the earliest of equals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
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
    pub stop_reason: Option<Reason>,
    /// The same, in words.
    #[serde(default)]
    pub stop: Option<String>,
}

fn last(v: &[Option<f64>]) -> Option<f64> {
    v.last().copied().flatten().filter(|x| x.is_finite())
}

impl ModelRecord {
    /// The record of one model's result in a run ranked by `metric`;
    /// `model_file` is where its state was written, relative to the run
    /// directory. Lists of metrics the model's task has not are empty.
    pub fn new(m: &ModelResult, model_file: Option<String>, metric: Metric) -> Self {
        let per_epoch = |f: &dyn Fn(&EpochMetrics) -> f64| -> Vec<Option<f64>> {
            m.metrics.iter().map(|e| finite(f(e))).collect()
        };
        let task = m.config.task;
        let series = |metric: Metric, split: Split| -> Vec<Option<f64>> {
            if metric.applies_to(task) {
                per_epoch(&|e: &EpochMetrics| e.value(metric, split))
            } else {
                Vec::new()
            }
        };
        let (t, v) = (Split::Train, Split::Validation);
        Self {
            model_id: m.id,
            arch: arch_name(&m.config.arch),
            config: m.config.clone(),
            train_loss: per_epoch(&EpochMetrics::train_loss),
            train_acc: series(Metric::Accuracy, t),
            val_loss: per_epoch(&EpochMetrics::val_loss),
            val_acc: series(Metric::Accuracy, v),
            train_auc: series(Metric::Auc, t),
            val_auc: series(Metric::Auc, v),
            train_log_loss: series(Metric::LogLoss, t),
            val_log_loss: series(Metric::LogLoss, v),
            train_rmse: series(Metric::Rmse, t),
            val_rmse: series(Metric::Rmse, v),
            train_mae: series(Metric::Mae, t),
            val_mae: series(Metric::Mae, v),
            train_r2: series(Metric::R2, t),
            val_r2: series(Metric::R2, v),
            kept_epoch: m.kept.map(|e| e + 1),
            best_epoch: best_epoch(&m.metrics, metric).map(|e| e + 1),
            epoch_seconds: per_epoch(&|e: &EpochMetrics| e.seconds),
            wait_seconds: per_epoch(&|e: &EpochMetrics| e.wait_seconds),
            model_file,
            stopped_at: m.stop.map(|s| s.epochs),
            stop_reason: m.stop.map(|s| s.reason),
            stop: m.stop.map(|s| s.reason.to_string()),
        }
    }
    /// The per-epoch values of `metric` over `split` (empty where the
    /// model's task has no such metric).
    pub fn series(&self, metric: Metric, split: Split) -> &[Option<f64>] {
        let v = split == Split::Validation;
        match metric {
            Metric::Loss if v => &self.val_loss,
            Metric::Loss => &self.train_loss,
            Metric::Accuracy if v => &self.val_acc,
            Metric::Accuracy => &self.train_acc,
            Metric::Auc if v => &self.val_auc,
            Metric::Auc => &self.train_auc,
            Metric::LogLoss if v => &self.val_log_loss,
            Metric::LogLoss => &self.train_log_loss,
            Metric::Rmse if v => &self.val_rmse,
            Metric::Rmse => &self.train_rmse,
            Metric::Mae if v => &self.val_mae,
            Metric::Mae => &self.train_mae,
            Metric::R2 if v => &self.val_r2,
            Metric::R2 => &self.train_r2,
        }
    }

    /// `metric` over `split` after the last epoch.
    pub fn last_value(&self, metric: Metric, split: Split) -> Option<f64> {
        last(self.series(metric, split))
    }

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
    /// Epochs recorded.
    pub fn epochs(&self) -> usize {
        self.train_loss.len()
    }
    /// Training seconds over all epochs.
    pub fn seconds(&self) -> f64 {
        self.epoch_seconds.iter().flatten().sum()
    }
}

impl Ranked for ModelRecord {
    fn model_id(&self) -> usize {
        self.model_id
    }
    fn kept_value(&self, metric: Metric, split: Split) -> Option<f64> {
        let series = self.series(metric, split);
        match self.kept_epoch {
            Some(e) => series
                .get(e.wrapping_sub(1))
                .copied()
                .flatten()
                .filter(|x| x.is_finite()),
            None => last(series),
        }
    }
}

impl RunResults {
    /// Models best first under the run's metric (ties by id), as `mop
    /// train`'s leaderboard.
    pub fn leaderboard(&self) -> Vec<&ModelRecord> {
        leaderboard(&self.models, self.metric)
    }

    /// The best model (the file's choice, else the leaderboard's first).
    pub fn best(&self) -> Option<&ModelRecord> {
        self.best_model
            .and_then(|id| self.models.iter().find(|m| m.model_id == id))
            .or_else(|| self.leaderboard().first().copied())
    }

    /// Whether any model has validation metrics.
    pub fn has_validation(&self) -> bool {
        self.models.iter().any(|m| m.val_loss().is_some())
    }

    /// Reads `results.json` at `path`; refuses a file of a newer format.
    pub fn read(path: &Path) -> Result<Self> {
        let results: Self = read_json(path)?;
        if results.format_version > FORMAT_VERSION {
            return Err(Error::Config(format!(
                "{} has format_version {}, newer than this mop reads ({FORMAT_VERSION}): \
                 use the mop that wrote it",
                path.display(),
                results.format_version
            )));
        }
        Ok(results)
    }
}

/// Reads a JSON file of a run directory, saying which file is unreadable.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
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

/// Epochs trained, summed over the models.
pub fn model_epochs(outcome: &RunOutcome) -> usize {
    outcome.models.iter().map(|m| m.metrics.len()).sum()
}

/// Writes `models/model-<id>.safetensors`, `results.json`, `results.csv`,
/// and `timeline.json` into the output directory.
pub fn write_files(outcome: &RunOutcome, config: &RunConfig) -> Result<()> {
    let dir = &outcome.dir;
    let models_dir = dir.join("models");
    std::fs::create_dir_all(&models_dir)?;
    let mut models = Vec::new();
    let metric = config.metric();
    let mut csv = String::from(
        "model_id,arch,optimizer,lr,l2,batch_size,epochs,train_loss,train_acc,val_loss,val_acc,seconds,\
         val_auc,val_log_loss,val_rmse,val_mae,val_r2,kept_epoch\n",
    );
    for m in &outcome.models {
        let file = match &m.state {
            Some(state) => {
                let name = format!("model-{}.safetensors", m.id);
                state.write_to(&models_dir.join(&name))?;
                Some(format!("models/{name}"))
            }
            None => None,
        };
        let last = m.last();
        let kept = m.kept_metrics();
        let extra: Vec<String> = [
            Metric::Auc,
            Metric::LogLoss,
            Metric::Rmse,
            Metric::Mae,
            Metric::R2,
        ]
        .into_iter()
        .map(|x| match finite(kept.value(x, Split::Validation)) {
            Some(v) if x.applies_to(m.config.task) => format!("{v:.6}"),
            _ => String::new(),
        })
        .chain([m.kept.map(|e| (e + 1).to_string()).unwrap_or_default()])
        .collect();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.3},{}\n",
            m.id,
            arch_name(&m.config.arch).replace(',', ";"),
            serde_json::to_string(&m.config.optimizer)?
                .replace(',', ";")
                .replace('"', ""),
            m.config.lr,
            m.config.l2,
            m.config.batch_size,
            m.metrics.len(),
            last.train_loss(),
            last.train_acc(),
            last.val_loss(),
            last.val_acc(),
            m.metrics.iter().map(|e| e.seconds).sum::<f64>(),
            extra.join(","),
        ));
        models.push(ModelRecord::new(m, file, metric));
    }
    let results = RunResults {
        format_version: FORMAT_VERSION,
        source: SourceRecord {
            flight: config.source.flight.to_string(),
            sql: config.train_sql()?,
        },
        epochs: config.epochs(),
        search: Some(SearchRecord {
            kind: config.search.kind,
            rule: config.rule()?,
            samples: config.search.samples,
            model_epochs: model_epochs(outcome),
            full_model_epochs: outcome.models.len() * config.epochs(),
        }),
        seed: config.train.seed,
        trainers: outcome.trainers,
        seconds: outcome.seconds,
        best_model: leaderboard(&outcome.models, metric).first().map(|m| m.id),
        models,
        partitions: outcome.partitions.clone(),
        metric,
        keep: config.train.keep,
        source_changes: outcome.source_changes.clone(),
    };
    std::fs::write(dir.join(RESULTS_FILE), serde_json::to_vec_pretty(&results)?)?;
    std::fs::write(dir.join("results.csv"), csv)?;
    std::fs::write(
        dir.join(TIMELINE_FILE),
        serde_json::to_vec::<[UnitRecord]>(&outcome.timeline)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_state_already_in_a_file_is_linked_and_one_that_is_not_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let held = dir.path().join("model-0.u4.safetensors");
        std::fs::write(&held, [1u8; 64]).unwrap();
        let linked = dir.path().join("linked.safetensors");
        StateBlob::new(vec![1u8; 64])
            .in_file(held.clone())
            .write_to(&linked)
            .unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&linked), ino(&held), "a link, not a copy");

        // Its file gone, or of another size: the bytes are written.
        for file in [dir.path().join("gone"), held.clone()] {
            let out = dir.path().join("written.safetensors");
            StateBlob::new(vec![2u8; 32])
                .in_file(file)
                .write_to(&out)
                .unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), [2u8; 32]);
            assert_ne!(ino(&out), ino(&held));
        }
        assert_eq!(std::fs::read(&held).unwrap(), [1u8; 64], "left as it was");
    }
}
