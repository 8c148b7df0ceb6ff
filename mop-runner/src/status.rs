//! `mop status` and `mop models`: what a run is doing or did, from its
//! checkpoint and results — or, for `models`, from the result table in the
//! database.
//!
//! Both read files only (`models --database` reads one table); neither needs
//! the run to be alive, so they answer the same during a run, after it, and
//! after a crash.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio_postgres::NoTls;

use crate::error::{Error, Result};
use mop_core::config::ModelConfig;
use mop_core::metrics::Metric;
use mop_core::run_config::RunConfig;
use mop_core::run_dir::checkpoint::{Checkpoint, CheckpointDir, Split};
use mop_core::run_dir::results::arch_name;
use mop_core::run_dir::results::Ranked;
use mop_report::{self as report, optimizer_name, short_number, RunResults};

/// What `mop status` reports, gathered from a run directory.
#[derive(Debug, Clone)]
pub struct RunStatus {
    /// The run directory.
    pub dir: PathBuf,
    /// The checkpoint, if the run has one.
    pub checkpoint: Option<Checkpoint>,
    /// results.json, if the run finished.
    pub results: Option<RunResults>,
    /// The model configurations (from results.json or the demo's grid.toml).
    pub configs: Vec<ModelConfig>,
    /// When the checkpoint (or results) was last written.
    pub updated: Option<SystemTime>,
}

impl RunStatus {
    /// Reads the run in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        report::check_run_dir(dir)?;
        let ck_file = dir.join("checkpoint").join("checkpoint.json");
        let checkpoint = if ck_file.is_file() {
            CheckpointDir::new(dir)?.load()?
        } else {
            None
        };
        let results = if dir.join(report::RESULTS_FILE).is_file() {
            Some(report::load(dir)?.results)
        } else {
            None
        };
        let configs = match &results {
            Some(r) => r.models.iter().map(|m| m.config.clone()).collect(),
            None => {
                // `mop demo` leaves its run configuration beside the run.
                let grid = dir.join("grid.toml");
                RunConfig::load(&grid)
                    .and_then(|c| c.models())
                    .unwrap_or_default()
            }
        };
        let updated = [ck_file, dir.join(report::RESULTS_FILE)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max();
        Ok(Self {
            dir: dir.to_path_buf(),
            checkpoint,
            results,
            configs,
            updated,
        })
    }

    /// Whether the run finished: every unit done and validated, results written.
    pub fn finished(&self) -> bool {
        let ck_done = self
            .checkpoint
            .as_ref()
            .is_none_or(|c| c.scheduler.is_done() && c.pending_evals.is_empty());
        ck_done && self.results.is_some()
    }

    /// The text `mop status` prints; `now` is the time "ago" is counted from.
    pub fn render(&self, now: SystemTime) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "run:      {}", self.dir.display());
        let state = if self.finished() {
            "finished".to_string()
        } else if self
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.scheduler.is_done())
        {
            "training done, validation or results pending; `mop train --resume` completes it"
                .to_string()
        } else {
            "not finished: running, or stopped; if no `mop` works on it, \
             `mop train --resume` (or `mop demo --resume`) continues it"
                .to_string()
        };
        let _ = writeln!(s, "state:    {state}");
        if let Some(t) = self.updated {
            let at: chrono::DateTime<chrono::Utc> = t.into();
            let ago = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
            let _ = writeln!(
                s,
                "updated:  {} ({} ago)",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                human(ago)
            );
        }
        match (&self.checkpoint, &self.results) {
            (Some(c), _) => self.render_checkpoint(&mut s, c),
            (None, Some(r)) => {
                let _ = writeln!(
                    s,
                    "units:    all done ({} models × {} epochs on {} trainers, {:.1} s); no checkpoint left",
                    r.models.len(),
                    r.epochs,
                    r.trainers,
                    r.seconds
                );
            }
            (None, None) => {}
        }
        if let Some(r) = &self.results {
            for p in &r.partitions {
                let _ = writeln!(
                    s,
                    "trainer:  partition {} on {} ({}{})",
                    p.partition,
                    p.trainer,
                    if p.device.is_empty() {
                        "device not recorded"
                    } else {
                        &p.device
                    },
                    if p.local { ", local" } else { "" }
                );
            }
            if let Some(b) = r.best() {
                let (split, value) = match b.kept_value(r.metric, Split::Validation) {
                    Some(v) => ("validation", Some(v)),
                    None => ("training", b.kept_value(r.metric, Split::Train)),
                };
                let _ = writeln!(
                    s,
                    "best:     model {} ({}), {split} {} {:.4}",
                    b.model_id,
                    describe(&b.config),
                    r.metric,
                    value.unwrap_or(f64::NAN)
                );
            }
            let _ = writeln!(
                s,
                "results:  {}",
                self.dir.join(report::RESULTS_FILE).display()
            );
            let html = self.dir.join(report::REPORT_FILE);
            if html.is_file() {
                let _ = writeln!(s, "report:   {}", html.display());
            } else {
                let _ = writeln!(
                    s,
                    "report:   `mop report --dir {}` writes it",
                    self.dir.display()
                );
            }
        }
        s
    }

    fn render_checkpoint(&self, s: &mut String, c: &Checkpoint) {
        let sched = &c.scheduler;
        let p = sched.progress();
        let _ = writeln!(
            s,
            "units:    {} / {} done ({:.0}%), {} models × {} partitions × {} epochs, {:.1} s of training{}",
            p.done,
            p.total,
            p.fraction() * 100.0,
            sched.models(),
            sched.partitions(),
            sched.epochs(),
            c.elapsed,
            if sched.is_done() { "" } else { " so far" }
        );
        for e in &c.pending_evals {
            let _ = writeln!(
                s,
                "pending:  validation of model {} after epoch {}",
                e.model,
                e.epoch + 1
            );
        }
        // The best model so far, by its last validated epoch, under the
        // task's default metric (the checkpoint does not name the run's).
        let task = self.configs.first().map(|c| c.task).unwrap_or_default();
        let metric = Metric::default_for(task);
        let best = c
            .metrics
            .iter()
            .enumerate()
            .filter_map(|(m, v)| {
                let last = v
                    .iter()
                    .rev()
                    .find(|e| e.val_samples > 0 || e.train_samples > 0)?;
                let split = if last.val_samples > 0 {
                    Split::Validation
                } else {
                    Split::Train
                };
                let value = last.value(metric, split);
                // A diverged model's NaN ranks last.
                let key = match metric.signed(value) {
                    k if k.is_nan() => f64::NEG_INFINITY,
                    k => k,
                };
                Some((m, value, key, split))
            })
            .max_by(|a, b| a.2.total_cmp(&b.2).then(b.0.cmp(&a.0)));
        if self.results.is_none() {
            if let Some((m, value, _, split)) = best {
                let _ = writeln!(
                    s,
                    "best:     model {m}{} so far, {} {metric} {value:.4}",
                    self.configs
                        .get(m)
                        .map(|c| format!(" ({})", describe(c)))
                        .unwrap_or_default(),
                    if split == Split::Validation {
                        "validation"
                    } else {
                        "training"
                    }
                );
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:>5}  {:<44} {:>7} {:>7}  {:>10} {:>9} {:>9} {:>9}",
            "model", "config", "epochs", "units", "train loss", "train acc", "val loss", "val acc"
        );
        for m in 0..sched.models() {
            let epochs = sched.model_epoch(m).unwrap_or(0);
            // A model a search stopped has its own budget: `1/1`, not `1/9`.
            let budget = match sched.fate(m) {
                Ok(Some(stop)) => stop.epochs,
                _ => sched.epochs(),
            };
            let per_model = (sched.partitions() * budget) as u64;
            let last = c.metrics.get(m).and_then(|v| v.last());
            let f = |x: Option<f64>| match x {
                Some(v) if v.is_finite() => format!("{v:.4}"),
                _ => "–".into(),
            };
            let _ = writeln!(
                s,
                "{:>5}  {:<44} {:>7} {:>7}  {:>10} {:>9} {:>9} {:>9}",
                m,
                self.configs.get(m).map(describe).unwrap_or_default(),
                format!("{epochs}/{budget}"),
                format!("{}/{per_model}", c.units_done.get(m).copied().unwrap_or(0)),
                f(last.map(|e| e.train_loss())),
                f(last.map(|e| e.train_acc())),
                f(last.map(|e| e.val_loss())),
                f(last.map(|e| e.val_acc())),
            );
        }
    }
}

/// `mlp[128,64] adam lr 1e-3 l2 1e-4 batch 32`.
pub fn describe(c: &ModelConfig) -> String {
    format!(
        "{} {} lr {} l2 {} batch {}",
        arch_name(&c.arch),
        optimizer_name(&c.optimizer),
        short_number(c.lr),
        short_number(c.l2),
        c.batch_size
    )
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// One trained model, as `mop models` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    /// Model id.
    pub id: usize,
    /// Its configuration in short form.
    pub config: String,
    /// Epochs trained.
    pub epochs: usize,
    /// Final metrics: train loss, train acc, val loss, val acc.
    pub metrics: [Option<f64>; 4],
    /// Where the weights are: a file path, or the table's `state` column.
    pub location: String,
}

/// The models of a finished run, from its results.json.
pub fn models_from_files(dir: &Path) -> Result<Vec<ModelRow>> {
    let run = report::load(dir)?;
    Ok(run
        .results
        .models
        .iter()
        .map(|m| ModelRow {
            id: m.model_id,
            config: describe(&m.config),
            epochs: m.epochs(),
            metrics: [m.train_loss(), m.train_acc(), m.val_loss(), m.val_acc()],
            location: m
                .model_file
                .as_ref()
                .map(|f| dir.join(f).display().to_string())
                .unwrap_or_else(|| "–".into()),
        })
        .collect())
}

/// The models in a run's result table `table` (written by `mop train` with
/// output.table).
pub async fn models_from_table(database: &str, table: &str) -> Result<Vec<ModelRow>> {
    let table = mop_core::ident::table(table, "--table")?.to_string();
    let table = table.as_str();
    let (client, conn) = tokio_postgres::connect(database, NoTls)
        .await
        .map_err(|e| Error::Database(format!("cannot connect to {database}: {e}")))?;
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!(
                "SELECT model_id, config::text, epochs, train_loss, train_acc, val_loss, val_acc, \
                 octet_length(state)::int8 FROM {table} ORDER BY model_id"
            ),
            &[],
        )
        .await
        .map_err(|e| {
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            Error::Database(format!(
                "reading {table}: {msg}; is it the output.table of a finished `mop train` run?"
            ))
        })?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let config: String = r.get(1);
        let config = serde_json::from_str::<ModelConfig>(&config)
            .map(|c| describe(&c))
            .unwrap_or(config);
        let bytes: Option<i64> = r.get(7);
        out.push(ModelRow {
            id: r.get::<_, i32>(0) as usize,
            config,
            epochs: r.get::<_, i32>(2) as usize,
            metrics: [r.get(3), r.get(4), r.get(5), r.get(6)],
            location: match bytes {
                Some(n) => format!("{table}.state ({n} bytes)"),
                None => "–".into(),
            },
        });
    }
    Ok(out)
}

/// The table `mop models` prints.
pub fn render_models(rows: &[ModelRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>5}  {:<44} {:>6}  {:>10} {:>9} {:>9} {:>9}  weights",
        "model", "config", "epochs", "train loss", "train acc", "val loss", "val acc"
    );
    for r in rows {
        let f = |x: Option<f64>| match x {
            Some(v) if v.is_finite() => format!("{v:.4}"),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "{:>5}  {:<44} {:>6}  {:>10} {:>9} {:>9} {:>9}  {}",
            r.id,
            r.config,
            r.epochs,
            f(r.metrics[0]),
            f(r.metrics[1]),
            f(r.metrics[2]),
            f(r.metrics[3]),
            r.location
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use mop_core::fixture;

    #[test]
    fn status_of_a_finished_run_names_the_best_model_and_the_report() {
        let dir = tempfile::tempdir().unwrap();
        fixture::checkpoint(dir.path(), 24);
        fixture::finished_run(dir.path(), true);
        let st = RunStatus::load(dir.path()).unwrap();
        assert!(st.finished());
        let text = st.render(SystemTime::now());
        assert!(text.contains("state:    finished"), "{text}");
        assert!(text.contains("24 / 24 done (100%)"), "{text}");
        assert!(
            text.contains("best:     model 1 (mlp[16,8] adam lr 1e-3 l2 0 batch 256)"),
            "{text}"
        );
        assert!(text.contains("mop report --dir"), "{text}");
        // Each partition's trainer with the device it computed on.
        assert!(
            text.contains("trainer:  partition 0 on http://127.0.0.2:7000 (cpu, local)"),
            "{text}"
        );
        // One line per model with its epochs and units.
        for m in 0..fixture::MODELS {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{m} ")))
                .unwrap_or_else(|| panic!("no line for model {m}: {text}"));
            assert!(line.contains("3/3") && line.contains("6/6"), "{line}");
        }
    }

    #[test]
    fn status_of_an_unfinished_run_counts_units_and_epochs_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let c = fixture::checkpoint(dir.path(), 10);
        let st = RunStatus::load(dir.path()).unwrap();
        assert!(!st.finished());
        let text = st.render(SystemTime::now());
        assert!(text.contains("10 / 24 done (42%)"), "{text}");
        assert!(
            text.contains("not finished") && text.contains("--resume"),
            "{text}"
        );
        assert!(
            text.contains("updated:") && text.contains(" s ago"),
            "{text}"
        );
        assert!(text.contains("so far"), "{text}");
        let units: u64 = c.units_done.iter().sum();
        assert_eq!(units, 10);
        for m in 0..fixture::MODELS {
            let epochs = c.scheduler.model_epoch(m).unwrap();
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{m} ")))
                .unwrap();
            assert!(
                line.contains(&format!("{epochs}/3"))
                    && line.contains(&format!("{}/6", c.units_done[m])),
                "{line}"
            );
        }
    }

    #[test]
    fn models_lists_every_model_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        fixture::finished_run(dir.path(), true);
        let rows = models_from_files(dir.path()).unwrap();
        assert_eq!(rows.len(), fixture::MODELS);
        let text = render_models(&rows);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.id, i);
            assert_eq!(r.epochs, fixture::EPOCHS);
            assert!(r.metrics.iter().all(Option::is_some));
            assert!(
                std::path::Path::new(&r.location).is_file(),
                "{}",
                r.location
            );
            assert!(text.contains(&r.location));
        }
    }

    #[test]
    fn status_of_a_missing_dir_says_to_pass_a_run_dir() {
        let e = RunStatus::load(Path::new("/nonexistent/run")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/run")
                && msg.contains("does not exist")
                && msg.contains("--dir"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_table_name_is_refused_before_connecting() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(models_from_table(
                "postgresql://127.0.0.1:1/x",
                "t; DROP TABLE x",
            ))
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
}
