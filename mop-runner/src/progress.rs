//! What a run shows while it works: progress bars for people, JSON lines
//! for scripts, or nothing.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use mop_core::run_dir::checkpoint::EpochMetrics;
use mop_core::schedule::{Decision, Unit};

/// How progress is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars: overall (units, ETA) and one line per trainer.
    #[default]
    Bars,
    /// One JSON object per line on stdout (trainer, unit, progress, epoch
    /// and replan events).
    Json,
    /// Nothing but errors.
    Quiet,
}

/// Receives a run's events and shows them.
pub struct Reporter {
    mode: ProgressMode,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    workers: Mutex<Vec<ProgressBar>>,
    tracker: Option<crate::mlflow::Tracker>,
}

impl Reporter {
    /// A reporter for `workers` trainers and `total` units (`done` already done).
    pub fn new(mode: ProgressMode, workers: usize, total: u64, done: u64) -> Self {
        if mode != ProgressMode::Bars {
            return Self {
                mode,
                multi: None,
                overall: None,
                workers: Mutex::new(Vec::new()),
                tracker: None,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let overall = multi.add(ProgressBar::new(total));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} units, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.set_prefix("MOP");
        overall.set_position(done);
        let style = ProgressStyle::with_template("{prefix:>10} {spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = (0..workers)
            .map(|w| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(style.clone());
                b.set_prefix(format!("trainer {w}"));
                b.set_message("idle");
                b.enable_steady_tick(Duration::from_millis(250));
                b
            })
            .collect();
        Self {
            mode,
            multi: Some(multi),
            overall: Some(overall),
            workers: Mutex::new(bars),
            tracker: None,
        }
    }

    /// Also tells `tracker` (MLflow) each epoch's metrics and each stop.
    pub fn with_tracker(mut self, tracker: Option<crate::mlflow::Tracker>) -> Self {
        self.tracker = tracker;
        self
    }

    fn json(&self, value: serde_json::Value) {
        if self.mode == ProgressMode::Json {
            println!("{value}");
        }
    }

    /// A trainer process started (also after replacing a dead one).
    pub fn trainer_started(&self, worker: usize, pid: Option<u32>, address: &str) {
        self.json(serde_json::json!({
            "event": "trainer", "trainer": worker, "pid": pid, "address": address,
        }));
    }

    /// A unit started on its worker.
    pub fn unit_started(&self, unit: Unit) {
        self.json(serde_json::json!({
            "event": "unit_start", "model": unit.model, "partition": unit.partition,
            "epoch": unit.epoch,
        }));
        self.set_worker(
            unit.partition,
            format!(
                "model {:>3}  epoch {:>2}  partition {}",
                unit.model,
                unit.epoch + 1,
                unit.partition
            ),
        );
    }

    /// A unit reported progress.
    pub fn unit_progress(&self, unit: Unit, samples: u64, samples_per_second: f64) {
        self.json(serde_json::json!({
            "event": "progress", "model": unit.model, "partition": unit.partition,
            "epoch": unit.epoch, "samples": samples,
            "samples_per_second": finite(samples_per_second),
        }));
        self.set_worker(
            unit.partition,
            format!(
                "model {:>3}  epoch {:>2}  partition {}  {:>8} rows  {:>7.0} samples/s",
                unit.model,
                unit.epoch + 1,
                unit.partition,
                samples,
                samples_per_second
            ),
        );
    }

    /// A unit finished.
    pub fn unit_done(&self, unit: Unit, samples: u64, seconds: f64) {
        if let Some(o) = &self.overall {
            o.inc(1);
        }
        self.set_worker(unit.partition, "idle".into());
        self.json(serde_json::json!({
            "event": "unit", "model": unit.model, "partition": unit.partition,
            "epoch": unit.epoch, "samples": samples, "seconds": seconds,
        }));
    }

    /// A unit failed and will run again.
    pub fn unit_failed(&self, unit: Unit, error: &str) {
        self.println(format!("unit {unit} failed, will run again: {error}"));
        self.json(serde_json::json!({
            "event": "unit_failed", "model": unit.model, "partition": unit.partition,
            "epoch": unit.epoch, "error": error,
        }));
    }

    /// A model finished an epoch (validation included).
    pub fn epoch_done(&self, model: usize, epoch: usize, m: &EpochMetrics) {
        if let Some(t) = &self.tracker {
            t.epoch(model, epoch, m);
        }
        if self.mode == ProgressMode::Bars {
            self.println(format!(
                "model {model:>3} epoch {:>2}: train loss {:.4} acc {:.4} | validation loss {:.4} acc {:.4}",
                epoch + 1,
                m.train_loss(),
                m.train_acc(),
                m.val_loss(),
                m.val_acc()
            ));
        }
        self.json(serde_json::json!({
            "event": "epoch", "model": model, "epoch": epoch,
            "train_loss": m.train_loss(), "train_acc": m.train_acc(),
            "val_loss": finite(m.val_loss()), "val_acc": finite(m.val_acc()),
        }));
    }

    /// The run's units in all changed (a search stopped a model).
    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.overall {
            b.set_length(total);
        }
    }

    /// The search decided on a model: it goes on, or it stops.
    pub fn decided(&self, decision: &Decision) {
        let (model, limit, stop) = match decision {
            Decision::Continue { model, until } => (*model, *until, None),
            Decision::Stop { model, stop } => (*model, stop.epochs, Some(stop)),
        };
        if let (Some(t), Some(s)) = (&self.tracker, stop) {
            t.stopped(model, &s.reason.to_string(), s.epochs);
        }
        let line = match stop {
            Some(s) => format!("model {model:>3}: {} after {} epochs", s.reason, s.epochs),
            None => format!("model {model:>3}: goes on to {limit} epochs"),
        };
        if self.mode == ProgressMode::Bars {
            self.println(line);
        }
        self.json(serde_json::json!({
            "event": "decision", "model": model,
            "epochs": stop.map_or(limit, |s| s.epochs),
            "stopped": stop.is_some(),
            "reason": stop.map(|s| s.reason.to_string()),
        }));
    }

    /// The run planned its queries again (`why`: "expiring" or "refused").
    pub fn replanned(&self, why: &str, count: u32) {
        let line = match why {
            "expiring" => "the tickets were about to expire",
            _ => "a flight-server refused a ticket",
        };
        self.println(format!(
            "{line}: planned the queries again ({count} times so far)"
        ));
        self.json(serde_json::json!({ "event": "replan", "reason": why, "count": count }));
    }

    /// Model `model`'s latest state was lost with the trainer that kept it:
    /// its last `units` units run again from the runner's copy.
    pub fn rewound(&self, model: usize, units: u64) {
        self.println(format!(
            "model {model}: its state after {units} units of this epoch was lost with the \
             trainer that kept it; they run again from the epoch's start"
        ));
        self.json(serde_json::json!({ "event": "rewound", "model": model, "units": units }));
    }

    /// Trainer `worker` could not fetch a state from trainer `holder`, which
    /// the runner reached: states go through the runner from now on.
    pub fn states_through_runner(&self, worker: usize, holder: usize) {
        self.println(format!(
            "trainer {worker} could not fetch a model's state from trainer {holder}, which the \
             runner reaches: states go through the runner from now on (let trainers reach each \
             other's addresses, and trust each other's certificates, for hops at network speed)"
        ));
        self.json(serde_json::json!({
            "event": "states_through_runner", "trainer": worker, "holder": holder,
        }));
    }

    /// How the run's model states moved (at its end).
    pub fn states_moved(&self, t: &crate::hops::Traffic) {
        let mb = |b: u64| b as f64 / 1e6;
        self.println(format!(
            "model states: {} hops trainer to trainer, {} kept on the same trainer, \
             {} sent by the runner ({:.0} MB), {} returned to it ({:.0} MB)",
            t.direct,
            t.same_trainer,
            t.sent,
            mb(t.sent_bytes),
            t.returned,
            mb(t.returned_bytes)
        ));
        self.json(serde_json::json!({
            "event": "states", "direct": t.direct, "same_trainer": t.same_trainer,
            "sent": t.sent, "sent_bytes": t.sent_bytes,
            "returned": t.returned, "returned_bytes": t.returned_bytes,
        }));
    }

    /// A line above the bars (or on stderr).
    pub fn println(&self, line: String) {
        match (&self.multi, self.mode) {
            // Bars print above themselves; without a terminal they are
            // hidden and would swallow the line, so it goes to stderr.
            (Some(m), _) if !m.is_hidden() => {
                let _ = m.println(line);
            }
            (Some(_), _) => eprintln!("{line}"),
            (None, ProgressMode::Quiet) => {}
            (None, _) => eprintln!("{line}"),
        }
    }

    fn set_worker(&self, w: usize, msg: String) {
        if let Ok(bars) = self.workers.lock() {
            if let Some(b) = bars.get(w) {
                b.set_message(msg);
            }
        }
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Ok(bars) = self.workers.lock() {
            for b in bars.iter() {
                b.finish_and_clear();
            }
        }
        if let Some(o) = &self.overall {
            o.finish();
        }
    }
}

fn finite(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}
