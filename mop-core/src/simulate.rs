//! Discrete-event simulation of the MOP scheduler.
//!
//! The simulator plays the runner's part against a simulated clock: every idle
//! worker asks [`Scheduler::next_unit`], a unit of model `m` on partition `p`
//! takes `times[m][p]` time units, and its end calls
//! [`Scheduler::complete`] — or [`Scheduler::requeue`] when the options say
//! that dispatch fails half way (a trainer that died). It is how the policies
//! were compared and tuned, and the trace it records is what the scheduler's
//! property tests check.
//!
//! # Lower bound
//! With `t[m][p]` the time of one unit and `E` epochs, no schedule can finish
//! before
//!
//! ```text
//! E · max( Σ_{m,p} t[m][p] / W,        all work spread perfectly over W workers
//!          max_p Σ_m t[m][p],          worker p alone must train every model on p
//!          max_m Σ_p t[m][p] )         model m trains on one partition at a time
//! ```
//!
//! Efficiency is `bound / makespan` (1.0 = provably optimal). When unit
//! times depend on the model only, the middle term equals the first and the
//! last is `W · max unit time`, which is the bound the design notes quote.
//!
//! # Searches
//! A schedule with a search ([`crate::search`]) needs validation scores:
//! the simulator draws a learning curve per model ([`Curves`]) and reports
//! each model's accuracy the moment it finishes an epoch. The bound is then
//! taken over the units actually trained (the same three terms, summed
//! over completed units only), so efficiency says how well the trainers
//! were kept busy with the work the search left, and
//! [`SimReport::model_epochs`] how much work it left.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::schedule::{Scheduler, Unit};

/// Batch sizes of the paper's Criteo grid, cycled over the models of a
/// `mixed` simulation.
pub const MIXED_BATCH_SIZES: [usize; 4] = [32, 64, 256, 512];

/// Relative time of one unit at each of [`MIXED_BATCH_SIZES`]: small batches
/// are slower per sample (the optimizer step dominates), about 1–4× apart.
pub const MIXED_TIME_FACTORS: [f64; 4] = [4.0, 2.5, 1.25, 1.0];

/// The time of every `(model, partition)` unit; the same in every epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitTimes {
    models: usize,
    partitions: usize,
    times: Vec<f64>,
}

impl UnitTimes {
    /// Unit times from a row-major `models × partitions` matrix of positive,
    /// finite numbers.
    pub fn new(models: usize, partitions: usize, times: Vec<f64>) -> Result<Self> {
        if models == 0 || partitions == 0 {
            return Err(Error::Config(
                "unit times need at least one model and partition".into(),
            ));
        }
        if times.len() != models * partitions {
            return Err(Error::Config(format!(
                "{} unit times given for {models} models × {partitions} partitions",
                times.len()
            )));
        }
        if let Some(t) = times.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
            return Err(Error::Config(format!(
                "unit times must be positive, got {t}"
            )));
        }
        Ok(UnitTimes {
            models,
            partitions,
            times,
        })
    }

    /// Every unit takes 1.
    pub fn equal(models: usize, partitions: usize) -> Result<Self> {
        Self::new(models, partitions, vec![1.0; models * partitions])
    }

    /// Times by model as in a grid over batch sizes 32…512: model `m` has
    /// batch size `MIXED_BATCH_SIZES[m % 4]` and unit time
    /// `MIXED_TIME_FACTORS[m % 4]` on every partition.
    pub fn mixed(models: usize, partitions: usize) -> Result<Self> {
        let times = (0..models)
            .flat_map(|m| std::iter::repeat_n(MIXED_TIME_FACTORS[m % 4], partitions))
            .collect();
        Self::new(models, partitions, times)
    }

    /// Independent uniform times in `[1, 4)` per unit, from `seed`.
    pub fn random(models: usize, partitions: usize, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let times = (0..models * partitions)
            .map(|_| rng.random_range(1.0..4.0))
            .collect();
        Self::new(models, partitions, times)
    }

    /// Number of models.
    pub fn models(&self) -> usize {
        self.models
    }

    /// Number of partitions.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Time of one unit of `model` on `partition`.
    pub fn get(&self, model: usize, partition: usize) -> f64 {
        self.times[model * self.partitions + partition]
    }

    /// Time of one epoch of `model` (all its partitions).
    pub fn model_total(&self, model: usize) -> f64 {
        (0..self.partitions).map(|p| self.get(model, p)).sum()
    }

    /// Work of worker `partition` in one epoch (all models on it).
    pub fn partition_total(&self, partition: usize) -> f64 {
        (0..self.models).map(|m| self.get(m, partition)).sum()
    }

    /// The lower bound on the makespan of `epochs` epochs; see the
    /// [module docs](self).
    pub fn lower_bound(&self, epochs: usize) -> f64 {
        let spread = self.times.iter().sum::<f64>() / self.partitions as f64;
        let worker = (0..self.partitions)
            .map(|p| self.partition_total(p))
            .fold(0.0, f64::max);
        let model = (0..self.models)
            .map(|m| self.model_total(m))
            .fold(0.0, f64::max);
        epochs as f64 * spread.max(worker).max(model)
    }
}

/// Knobs of one simulation.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Dispatches (0-based, in dispatch order) whose trainer dies half way
    /// through: the worker is busy for half the unit's time, then the unit is
    /// requeued.
    pub failures: BTreeSet<u64>,
    /// Serialize the scheduler to JSON and resume from it after every event,
    /// as the runner's checkpoints do.
    pub checkpoint_roundtrip: bool,
    /// Keep every event in [`SimReport::trace`].
    pub record_trace: bool,
    /// Learning curves that give the search its scores (required when the
    /// schedule has a search that stops models).
    pub curves: Option<Curves>,
}

/// Simulated learning curves: model `m` reaches validation accuracy
/// `plateau[m] · (1 − exp(−e / pace[m]))` after `e` epochs, plus a little
/// seeded noise — models that learn slowly, fast, or to a low ceiling, as
/// a grid over learning rates has.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    plateau: Vec<f64>,
    pace: Vec<f64>,
    seed: u64,
}

impl Curves {
    /// Curves for `models` models, drawn from `seed`: plateaus in
    /// `[0.6, 0.9)`, paces in `[0.5, 4)` epochs.
    pub fn random(models: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1);
        let (plateau, pace) = (0..models)
            .map(|_| (rng.random_range(0.6..0.9), rng.random_range(0.5..4.0)))
            .unzip();
        Curves {
            plateau,
            pace,
            seed,
        }
    }

    /// Accuracy of `model` after `epochs` epochs.
    pub fn accuracy(&self, model: usize, epochs: usize) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(2 + (model as u64) * 10_000 + epochs as u64);
        let noise = rng.random_range(-0.01..0.01);
        self.plateau[model] * (1.0 - (-(epochs as f64) / self.pace[model]).exp()) + noise
    }
}

/// What happened to a unit at a simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum EventKind {
    /// The unit was handed to its worker.
    Start,
    /// The unit finished and was completed.
    Finish,
    /// The unit's trainer died; the unit was requeued.
    Fail,
}

/// One entry of the trace, in the order the scheduler saw them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Event {
    /// Simulated time.
    pub time: f64,
    /// What happened.
    pub kind: EventKind,
    /// To which unit.
    pub unit: Unit,
}

/// The outcome of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Time at which the last unit finished.
    pub makespan: f64,
    /// The lower bound of [`UnitTimes::lower_bound`].
    pub lower_bound: f64,
    /// `lower_bound / makespan`.
    pub efficiency: f64,
    /// Busy time of each worker (failed attempts included).
    pub busy: Vec<f64>,
    /// Units completed.
    pub completed: u64,
    /// Units that failed and were requeued.
    pub failed: u64,
    /// Every event, if [`SimOptions::record_trace`] was set.
    pub trace: Vec<Event>,
    /// Epochs trained, summed over models.
    pub model_epochs: usize,
    /// The best final accuracy of any model, when the simulation had
    /// learning curves.
    pub best_accuracy: Option<f64>,
    /// Every model's fate: how many epochs it trained and why.
    pub stops: Vec<Option<crate::search::Stop>>,
}

/// A unit on a worker: when it ends and whether it fails then.
#[derive(Debug, Clone, Copy)]
struct Running {
    unit: Unit,
    end: f64,
    fails: bool,
}

/// Runs `scheduler` to completion against `times` and reports how well it
/// packed the work.
pub fn simulate(
    mut scheduler: Scheduler,
    times: &UnitTimes,
    options: &SimOptions,
) -> Result<SimReport> {
    let workers = scheduler.partitions();
    if times.models() != scheduler.models() || times.partitions() != workers {
        return Err(Error::Config(format!(
            "unit times are {}×{} but the schedule is {} models × {} partitions",
            times.models(),
            times.partitions(),
            scheduler.models(),
            workers
        )));
    }
    let searching = scheduler.search().is_some();
    if searching && options.curves.is_none() {
        return Err(Error::Config(
            "simulating a search needs learning curves (SimOptions::curves) to score models".into(),
        ));
    }
    // Work done, for the bound over what was trained.
    let mut per_model = vec![0.0; scheduler.models()];
    let mut per_partition = vec![0.0; workers];
    let mut running: Vec<Option<Running>> = vec![None; workers];
    let mut report = SimReport {
        makespan: 0.0,
        lower_bound: times.lower_bound(scheduler.epochs()),
        efficiency: 0.0,
        busy: vec![0.0; workers],
        completed: 0,
        failed: 0,
        trace: Vec::new(),
        model_epochs: 0,
        best_accuracy: None,
        stops: Vec::new(),
    };
    let mut now = 0.0;
    let mut dispatches = 0u64;
    loop {
        for (w, slot) in running.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            if let Some(unit) = scheduler.next_unit(w) {
                let fails = options.failures.contains(&dispatches);
                dispatches += 1;
                let full = times.get(unit.model, unit.partition);
                let took = if fails { full / 2.0 } else { full };
                report.busy[w] += took;
                *slot = Some(Running {
                    unit,
                    end: now + took,
                    fails,
                });
                if options.record_trace {
                    report.trace.push(Event {
                        time: now,
                        kind: EventKind::Start,
                        unit,
                    });
                }
            }
        }
        if scheduler.is_done() {
            break;
        }
        let Some(next) = running
            .iter()
            .flatten()
            .map(|r| r.end)
            .min_by(f64::total_cmp)
        else {
            return Err(Error::Schedule(format!(
                "simulation stalled at time {now} with {:?} units done and no unit running",
                scheduler.progress()
            )));
        };
        now = next;
        for slot in running.iter_mut() {
            let Some(r) = *slot else { continue };
            if r.end != now {
                continue;
            }
            *slot = None;
            let kind = if r.fails {
                scheduler.requeue(r.unit)?;
                report.failed += 1;
                EventKind::Fail
            } else {
                scheduler.complete(r.unit)?;
                report.completed += 1;
                let t = times.get(r.unit.model, r.unit.partition);
                per_model[r.unit.model] += t;
                per_partition[r.unit.partition] += t;
                if scheduler.model_epoch(r.unit.model)? > r.unit.epoch {
                    report.model_epochs += 1;
                    if let Some(curves) = &options.curves {
                        let acc = curves.accuracy(r.unit.model, r.unit.epoch + 1);
                        scheduler.record_score(r.unit.model, r.unit.epoch, acc)?;
                    }
                }
                EventKind::Finish
            };
            if options.record_trace {
                report.trace.push(Event {
                    time: now,
                    kind,
                    unit: r.unit,
                });
            }
            if options.checkpoint_roundtrip {
                scheduler = serde_json::from_str(&serde_json::to_string(&scheduler)?)?;
            }
        }
    }
    report.makespan = now;
    if searching {
        let total: f64 = per_partition.iter().sum();
        report.lower_bound = (total / workers as f64)
            .max(per_partition.iter().copied().fold(0.0, f64::max))
            .max(per_model.iter().copied().fold(0.0, f64::max));
    }
    report.stops = (0..scheduler.models())
        .map(|m| scheduler.fate(m).ok().flatten())
        .collect();
    if let Some(curves) = &options.curves {
        report.best_accuracy = (0..scheduler.models())
            .map(|m| curves.accuracy(m, scheduler.model_epoch(m).unwrap_or(0)))
            .max_by(f64::total_cmp);
    }
    report.efficiency = if now > 0.0 {
        report.lower_bound / now
    } else {
        1.0
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::schedule::Policy;

    /// Replays a trace and checks every scheduling invariant against the
    /// policy's own rules, independently of the scheduler's bookkeeping.
    fn check_trace(sched: &Scheduler, trace: &[Event]) -> std::result::Result<(), String> {
        let (s, w, e) = (sched.models(), sched.partitions(), sched.epochs());
        let policy = sched.policy();
        let orders: Vec<Vec<Vec<usize>>> = (0..s)
            .map(|m| (0..e).map(|ep| sched.visit_order(m, ep).unwrap()).collect())
            .collect();
        let mut epoch = vec![0usize; s];
        let mut done: Vec<Vec<usize>> = vec![Vec::new(); s];
        let mut model_on: Vec<Option<usize>> = vec![None; s];
        let mut worker_has: Vec<Option<usize>> = vec![None; w];
        let mut completions: BTreeMap<Unit, usize> = BTreeMap::new();
        let global = |epoch: &[usize]| epoch.iter().copied().min().unwrap_or(0);
        for (i, ev) in trace.iter().enumerate() {
            let u = ev.unit;
            match ev.kind {
                EventKind::Start => {
                    if model_on[u.model].is_some() {
                        return Err(format!("{u} started while the model runs elsewhere"));
                    }
                    if worker_has[u.partition].is_some() {
                        return Err(format!("{u} started on a busy worker"));
                    }
                    if u.epoch != epoch[u.model] || done[u.model].contains(&u.partition) {
                        return Err(format!("{u} out of epoch order or a repeat visit"));
                    }
                    match policy {
                        Policy::Reproducible => {
                            let next = orders[u.model][u.epoch][done[u.model].len()];
                            if next != u.partition {
                                return Err(format!("{u} left the visit order (next is {next})"));
                            }
                        }
                        Policy::Cerebro => {
                            if u.epoch != global(&epoch) {
                                return Err(format!("{u} crossed the epoch barrier"));
                            }
                        }
                    }
                    model_on[u.model] = Some(u.partition);
                    worker_has[u.partition] = Some(u.model);
                }
                EventKind::Finish | EventKind::Fail => {
                    if model_on[u.model] != Some(u.partition) || u.epoch != epoch[u.model] {
                        return Err(format!("{u} ended without running"));
                    }
                    model_on[u.model] = None;
                    worker_has[u.partition] = None;
                    if ev.kind == EventKind::Finish {
                        *completions.entry(u).or_default() += 1;
                        done[u.model].push(u.partition);
                        if done[u.model].len() == w {
                            done[u.model].clear();
                            epoch[u.model] += 1;
                        }
                    }
                }
            }
            // After all events at one time: no idle worker may have a
            // runnable unit (by the policy's own notion of runnable).
            let group_ends = trace.get(i + 1).is_none_or(|next| next.time != ev.time);
            if group_ends && epoch.iter().any(|&ep| ep < e) {
                for (worker, has) in worker_has.iter().enumerate() {
                    if has.is_some() {
                        continue;
                    }
                    let runnable = (0..s).find(|&m| {
                        model_on[m].is_none()
                            && epoch[m] < e
                            && match policy {
                                Policy::Reproducible => {
                                    orders[m][epoch[m]][done[m].len()] == worker
                                }
                                Policy::Cerebro => {
                                    epoch[m] == global(&epoch) && !done[m].contains(&worker)
                                }
                            }
                    });
                    if let Some(m) = runnable {
                        return Err(format!(
                            "worker {worker} idle at {} while model {m} could run there",
                            ev.time
                        ));
                    }
                }
            }
        }
        if completions.len() != s * w * e || completions.values().any(|&n| n != 1) {
            return Err(format!(
                "{} distinct units completed (of {}), some more than once: {}",
                completions.len(),
                s * w * e,
                completions.values().any(|&n| n != 1)
            ));
        }
        Ok(())
    }

    fn traced(failures: BTreeSet<u64>, checkpoint_roundtrip: bool) -> SimOptions {
        SimOptions {
            failures,
            checkpoint_roundtrip,
            record_trace: true,
            curves: None,
        }
    }

    /// A random grid: sizes, per-unit times in quarter steps, seed, policy,
    /// and dispatches that fail.
    fn grid() -> impl Strategy<Value = (UnitTimes, usize, u64, Policy, BTreeSet<u64>)> {
        (1usize..20, 1usize..8, 1usize..4).prop_flat_map(|(s, w, e)| {
            (
                prop::collection::vec(1u32..=16, s * w).prop_map(move |q| {
                    UnitTimes::new(s, w, q.into_iter().map(|x| f64::from(x) / 4.0).collect())
                        .unwrap()
                }),
                Just(e),
                any::<u64>(),
                prop::sample::select(Policy::ALL.to_vec()),
                prop::collection::btree_set(0u64..(2 * s * w * e) as u64, 0..4),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_invariant_holds_with_and_without_failures(
            (times, epochs, seed, policy, failures) in grid()
        ) {
            let sched =
                Scheduler::new(times.models(), times.partitions(), epochs, seed, policy).unwrap();
            let report = simulate(sched.clone(), &times, &traced(failures.clone(), false)).unwrap();
            prop_assert_eq!(report.failed as usize, failures.iter().filter(|&&d| {
                d < (report.completed + report.failed)
            }).count());
            if let Err(e) = check_trace(&sched, &report.trace) {
                return Err(TestCaseError::fail(e));
            }
            prop_assert!(report.makespan >= report.lower_bound - 1e-9);
        }

        #[test]
        fn checkpoint_after_every_event_changes_nothing(
            (times, epochs, seed, policy, failures) in grid()
        ) {
            let sched =
                Scheduler::new(times.models(), times.partitions(), epochs, seed, policy).unwrap();
            let plain = simulate(sched.clone(), &times, &traced(failures.clone(), false)).unwrap();
            let resumed = simulate(sched, &times, &traced(failures, true)).unwrap();
            prop_assert_eq!(plain, resumed);
        }
    }

    fn efficiency(s: usize, w: usize, e: usize, times: &UnitTimes, policy: Policy) -> f64 {
        let sched = Scheduler::new(s, w, e, 0, policy).unwrap();
        simulate(sched, times, &SimOptions::default())
            .unwrap()
            .efficiency
    }

    #[test]
    fn reproducible_policy_is_near_optimal_at_16_models_on_8_workers() {
        let equal = UnitTimes::equal(16, 8).unwrap();
        let mixed = UnitTimes::mixed(16, 8).unwrap();
        let eq = efficiency(16, 8, 10, &equal, Policy::Reproducible);
        let mx = efficiency(16, 8, 10, &mixed, Policy::Reproducible);
        let cerebro_mx = efficiency(16, 8, 10, &mixed, Policy::Cerebro);
        println!(
            "16x8x10 reproducible: equal {eq:.4}, mixed {mx:.4}; cerebro mixed {cerebro_mx:.4}"
        );
        assert!(eq >= 0.98, "equal times: {eq}");
        assert!(mx >= 0.95, "mixed times: {mx}");
        assert!(mx > cerebro_mx, "reproducible {mx} vs cerebro {cerebro_mx}");
    }

    #[test]
    fn a_thousand_models_on_64_workers_keep_every_worker_busy() {
        // How long this takes is `hopper-bench --bin scale`'s to measure.
        let times = UnitTimes::mixed(1000, 64).unwrap();
        let eff = efficiency(1000, 64, 10, &times, Policy::Reproducible);
        println!("1000x64x10 reproducible mixed: efficiency {eff:.4}");
        assert!(eff >= 0.99, "{eff}");
    }

    #[test]
    fn trace_checker_catches_broken_schedules() {
        let sched = Scheduler::new(3, 2, 2, 7, Policy::Reproducible).unwrap();
        let times = UnitTimes::equal(3, 2).unwrap();
        let report = simulate(sched.clone(), &times, &traced(BTreeSet::new(), false)).unwrap();
        check_trace(&sched, &report.trace).unwrap();
        // A unit done twice (the last start/finish pair replayed).
        let mut doubled = report.trace.clone();
        doubled.extend_from_slice(&report.trace[report.trace.len() - 2..]);
        assert!(check_trace(&sched, &doubled).is_err());
        // A unit lost.
        let mut lost = report.trace.clone();
        lost.truncate(lost.len() - 1);
        assert!(check_trace(&sched, &lost).is_err());
        // Visits in another order than the seeded one.
        let other = Scheduler::new(3, 2, 2, 8, Policy::Reproducible).unwrap();
        let theirs = simulate(other.clone(), &times, &traced(BTreeSet::new(), false)).unwrap();
        assert!(
            check_trace(&sched, &theirs.trace).is_err()
                || (0..3).all(|m| (0..2).all(|e| {
                    sched.visit_order(m, e).unwrap() == other.visit_order(m, e).unwrap()
                }))
        );
    }

    #[test]
    fn lower_bound_takes_the_tightest_of_its_three_terms() {
        // One slow model: its own 3 units bound the run, not the average.
        let t = UnitTimes::new(2, 3, vec![5.0, 5.0, 5.0, 1.0, 1.0, 1.0]).unwrap();
        assert_eq!(t.lower_bound(2), 2.0 * 15.0);
        // One slow partition: its worker bounds the run.
        let t = UnitTimes::new(3, 2, vec![9.0, 1.0, 9.0, 1.0, 9.0, 1.0]).unwrap();
        assert_eq!(t.lower_bound(1), 27.0);
        // Balanced: total work over workers.
        assert_eq!(UnitTimes::equal(16, 8).unwrap().lower_bound(10), 160.0);
    }

    #[test]
    fn bad_unit_times_are_config_errors() {
        assert!(matches!(
            UnitTimes::new(2, 2, vec![1.0; 3]),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            UnitTimes::new(1, 1, vec![0.0]),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            UnitTimes::new(1, 1, vec![f64::NAN]),
            Err(Error::Config(_))
        ));
        let sched = Scheduler::new(2, 2, 1, 0, Policy::Reproducible).unwrap();
        let times = UnitTimes::equal(3, 2).unwrap();
        assert!(matches!(
            simulate(sched, &times, &SimOptions::default()),
            Err(Error::Config(_))
        ));
    }
}
