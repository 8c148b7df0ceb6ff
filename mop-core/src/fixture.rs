//! A small run directory for tests (feature `fixture`), written by the
//! run directory's own serialization code (results, timeline, checkpoint), so the fixtures
//! cannot drift from what `mop train` writes.

use std::path::Path;

use crate::run_config::RunConfig;
use crate::run_dir::checkpoint::{Checkpoint, CheckpointDir, EpochMetrics, UnitRecord};
use crate::run_dir::partitions::PartitionRecord;
use crate::run_dir::results::{self, ModelResult, StateBlob};
use crate::run_dir::RunOutcome;
use crate::schedule::{Policy, Scheduler};
use crate::simulate::{simulate, Curves, EventKind, SimOptions, SimReport, UnitTimes};

/// Models, trainers and epochs of the fixture run.
pub const MODELS: usize = 4;
/// Trainers (= partitions).
pub const TRAINERS: usize = 2;
/// Epochs.
pub const EPOCHS: usize = 3;

/// A 4-model grid (2 learning rates × 2 batch sizes) over 2 trainers.
pub fn config(dir: &Path) -> RunConfig {
    RunConfig::parse(&format!(
        r#"
        [source]
        flight = "grpc+tcp://127.0.0.1:1"
        table = "criteo"
        validation = {{ fraction = 0.2, key = "id" }}
        [train]
        epochs = {EPOCHS}
        seed = 42
        trainers = {TRAINERS}
        [grid]
        arch = [{{ kind = "mlp", hidden = [16, 8] }}]
        lr = [1e-3, 1e-4]
        batch_size = [32, 256]
        input = {{ kind = "criteo", sparse = true }}
        [output]
        dir = "{}"
        "#,
        dir.display()
    ))
    .unwrap()
}

/// The units of a real MOP schedule (the simulator's, with the mixed unit
/// times), as the runner records them.
pub fn timeline() -> Vec<UnitRecord> {
    let sched = Scheduler::new(MODELS, TRAINERS, EPOCHS, 42, Policy::Reproducible).unwrap();
    let times = UnitTimes::mixed(MODELS, TRAINERS).unwrap();
    let report = simulate(
        sched,
        &times,
        &SimOptions {
            record_trace: true,
            ..SimOptions::default()
        },
    )
    .unwrap();
    records(report)
}

/// A simulation's trace as the runner's unit records.
fn records(report: SimReport) -> Vec<UnitRecord> {
    let mut starts = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in report.trace {
        match e.kind {
            EventKind::Start => {
                starts.insert(e.unit, e.time);
            }
            EventKind::Finish => out.push(UnitRecord {
                model: e.unit.model,
                partition: e.unit.partition,
                epoch: e.unit.epoch,
                start: starts[&e.unit] + 0.5,
                end: e.time + 0.5,
                samples: 1000,
                wait_seconds: 0.05,
                bytes_read: 0,
                local: None,
            }),
            EventKind::Fail => {}
        }
    }
    out
}

/// Plausible metrics: model `m` learns at its own pace; model 1 is best.
pub fn metrics(m: usize, epochs: usize, validation: bool) -> Vec<EpochMetrics> {
    (0..epochs)
        .map(|e| {
            let skill = 0.6 + 0.05 * (e as f64 + 1.0) + if m == 1 { 0.1 } else { 0.02 * m as f64 };
            let n = 2000u64;
            EpochMetrics {
                train_samples: n,
                train_loss_sum: n as f64 * (1.0 - skill),
                train_correct: (n as f64 * skill) as u64,
                seconds: 1.5,
                wait_seconds: 0.1,
                val_samples: if validation { 500 } else { 0 },
                val_loss_sum: if validation {
                    500.0 * (1.05 - skill)
                } else {
                    0.0
                },
                val_correct: if validation {
                    (500.0 * (skill - 0.01)) as u64
                } else {
                    0
                },
                ..EpochMetrics::default()
            }
        })
        .collect()
}

/// Writes a finished run's files into `dir` with `write_files`, as `mop
/// train` does at its end; returns the outcome.
pub fn finished_run(dir: &Path, validation: bool) -> RunOutcome {
    let config = config(dir);
    let models = config.models().unwrap();
    let timeline = timeline();
    let seconds = timeline.iter().map(|u| u.end).fold(0.0, f64::max) + 1.0;
    let outcome = RunOutcome {
        models: models
            .into_iter()
            .enumerate()
            .map(|(id, c)| ModelResult {
                id,
                config: c,
                metrics: metrics(id, EPOCHS, validation),
                state: Some(StateBlob::new(vec![id as u8; 16])),
                kept: None,
                stop: None,
            })
            .collect(),
        timeline,
        partitions: (0..TRAINERS)
            .map(|p| PartitionRecord {
                partition: p,
                trainer: format!("http://127.0.0.{}:7000", p + 2),
                trainer_host: format!("127.0.0.{}", p + 2),
                device: "cpu".into(),
                endpoint_hosts: vec!["127.0.0.2".into()],
                local: p == 0,
                rows: 500,
                open_bytes: 123_456,
            })
            .collect(),
        source_changes: Vec::new(),
        seconds,
        trainers: TRAINERS,
        dir: dir.to_path_buf(),
    };
    results::write_files(&outcome, &config).unwrap();
    outcome
}

/// Models and epochs of the searched fixture run.
pub const SEARCH_MODELS: usize = 6;
/// The searched run's `max_epochs`.
pub const SEARCH_EPOCHS: usize = 9;

/// A finished ASHA run over six configurations (rungs at 1 and 3 epochs)
/// in `dir`: the simulator's schedule and decisions on simulated learning
/// curves, written by `write_files` as `mop train` does.
pub fn searched_run(dir: &Path) -> RunOutcome {
    let config = RunConfig::parse(&format!(
        r#"
        [source]
        flight = "grpc+tcp://127.0.0.1:1"
        table = "criteo"
        validation = {{ fraction = 0.2, key = "id" }}
        [train]
        seed = 3
        [grid]
        arch = [{{ kind = "mlp", hidden = [16] }}]
        lr = [1e-2, 1e-3, 1e-4]
        batch_size = [32, 256]
        input = {{ kind = "criteo", sparse = true }}
        [search]
        kind = "asha"
        max_epochs = {SEARCH_EPOCHS}
        [output]
        dir = "{}"
        "#,
        dir.display()
    ))
    .unwrap();
    let sched = Scheduler::with_search(
        SEARCH_MODELS,
        TRAINERS,
        SEARCH_EPOCHS,
        3,
        Policy::Reproducible,
        config.rule().unwrap(),
    )
    .unwrap();
    let curves = Curves::random(SEARCH_MODELS, 3);
    let times = UnitTimes::mixed(SEARCH_MODELS, TRAINERS).unwrap();
    let report = simulate(
        sched,
        &times,
        &SimOptions {
            record_trace: true,
            curves: Some(curves.clone()),
            ..SimOptions::default()
        },
    )
    .unwrap();
    let stops = report.stops.clone();
    let timeline = records(report);
    let seconds = timeline.iter().map(|u| u.end).fold(0.0, f64::max) + 1.0;
    let outcome = RunOutcome {
        models: config
            .models()
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(id, c)| {
                let epochs = stops[id].map_or(0, |s| s.epochs);
                let metrics = (1..=epochs)
                    .map(|e| {
                        let acc = curves.accuracy(id, e).clamp(0.0, 1.0);
                        EpochMetrics {
                            train_samples: 2000,
                            train_loss_sum: 2000.0 * (1.0 - acc),
                            train_correct: (2000.0 * acc) as u64,
                            seconds: 1.0,
                            wait_seconds: 0.0,
                            val_samples: 500,
                            val_loss_sum: 500.0 * (1.0 - acc),
                            val_correct: (500.0 * acc) as u64,
                            ..EpochMetrics::default()
                        }
                    })
                    .collect();
                ModelResult {
                    id,
                    config: c,
                    metrics,
                    state: Some(StateBlob::new(vec![id as u8; 16])),
                    kept: None,
                    stop: stops[id],
                }
            })
            .collect(),
        timeline,
        partitions: Vec::new(),
        source_changes: Vec::new(),
        seconds,
        trainers: TRAINERS,
        dir: dir.to_path_buf(),
    };
    results::write_files(&outcome, &config).unwrap();
    outcome
}

/// Commits a checkpoint in `dir` after the first `units` units of the
/// schedule, as the runner does after every unit.
pub fn checkpoint(dir: &Path, units: usize) -> Checkpoint {
    let mut sched = Scheduler::new(MODELS, TRAINERS, EPOCHS, 42, Policy::Reproducible).unwrap();
    let mut units_done = vec![0u64; MODELS];
    let mut timeline = Vec::new();
    let mut t = 0.0;
    'outer: while timeline.len() < units {
        let mut progressed = false;
        for w in 0..TRAINERS {
            if let Some(u) = sched.next_unit(w) {
                sched.complete(u).unwrap();
                units_done[u.model] += 1;
                timeline.push(UnitRecord {
                    model: u.model,
                    partition: u.partition,
                    epoch: u.epoch,
                    start: t,
                    end: t + 1.0,
                    samples: 100,
                    wait_seconds: 0.0,
                    bytes_read: 0,
                    local: None,
                });
                t += 1.0;
                progressed = true;
                if timeline.len() == units {
                    break 'outer;
                }
            }
        }
        assert!(progressed, "the schedule got stuck");
    }
    let metrics = (0..MODELS)
        .map(|m| metrics(m, sched.model_epoch(m).unwrap(), true))
        .collect();
    let c = Checkpoint {
        format_version: crate::run_dir::checkpoint::CHECKPOINT_FORMAT,
        scheduler: sched,
        states: vec![None; MODELS],
        units_done,
        metrics,
        timeline,
        elapsed: t,
        config_fingerprint: "fixture".into(),
        pending_evals: Vec::new(),
        best: Vec::new(),
        reads: Default::default(),
    };
    CheckpointDir::new(dir).unwrap().commit(&c).unwrap();
    c
}
