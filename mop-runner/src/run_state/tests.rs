//! [`RunState`] driven by simulated trainers. A simulated model's "weights"
//! are the list of units applied to it, in order, so a run is right when
//! every model ends with exactly the units of sequential training, each
//! once, in its visit order — whatever failed, died or was fetched on the
//! way — and every checkpoint and validation pass holds the state after
//! exactly the units it claims.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use mop_core::run_config::Checkpoints;
use mop_core::run_dir::reads::RowsRead;
use mop_core::schedule::Policy;
use mop_core::search::Rule;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// The state after `unit` on top of `state`: the units so far, two bytes
/// each.
fn apply(state: &[u8], unit: Unit) -> Bytes {
    let mut v = state.to_vec();
    v.extend_from_slice(&[unit.epoch as u8, unit.partition as u8]);
    Bytes::from(v)
}

/// `n` model configurations (what they say does not matter here).
fn configs(n: usize) -> Vec<mop_core::config::ModelConfig> {
    let grid = mop_core::fixture::config(std::path::Path::new("run")).models();
    vec![grid.unwrap()[0].clone(); n]
}

/// A validation loss that depends on the weights only.
fn loss_of(state: &[u8]) -> f64 {
    (state.iter().map(|&b| b as u64).sum::<u64>() * 7919 % 97) as f64
}

/// What may go wrong in a simulated run, and how often.
#[derive(Clone, Copy, Debug)]
struct Faults {
    /// A unit fails on a live trainer.
    unit: f64,
    /// A trainer dies, with the states it keeps.
    death: f64,
    /// A validation pass fails.
    eval: f64,
}

const NO_FAULTS: Faults = Faults {
    unit: 0.0,
    death: 0.0,
    eval: 0.0,
};

/// A simulated trainer process.
struct Trainer {
    address: String,
    /// Which process this is: units handed to an earlier one fail.
    generation: u32,
    alive: bool,
    /// States kept for models' next units: model → (version, state).
    kept: BTreeMap<u32, (u64, Bytes)>,
    /// Units handed to it, the running one first.
    queue: VecDeque<(Unit, Directive, u32)>,
    /// Units failed in a row here.
    failing: u32,
}

impl Trainer {
    fn new(w: usize) -> Self {
        Self {
            address: format!("http://trainer-{w}.0"),
            generation: 0,
            alive: true,
            kept: BTreeMap::new(),
            queue: VecDeque::new(),
            failing: 0,
        }
    }

    /// A new process in the dead one's place.
    fn replace(&mut self, w: usize) {
        self.generation += 1;
        self.address = format!("http://trainer-{w}.{}", self.generation);
        self.alive = true;
        self.kept.clear();
    }
}

struct Sim {
    rng: StdRng,
    state: RunState,
    trainers: Vec<Trainer>,
    evals: Vec<PendingEval>,
    faults: Faults,
    by_round: bool,
    /// Units that failed because their state was not where the runner said.
    state_misses: u32,
    deaths: u32,
}

fn settings(workers: usize, has_validation: bool, keep_best: bool) -> Settings {
    Settings {
        metric: Metric::Loss,
        keep_best,
        on_change: OnChange::Stop,
        has_validation,
        local: vec![true; workers],
    }
}

fn fresh_state(sched: Scheduler, checkpoints: Checkpoints, settings: Settings) -> RunState {
    let models = sched.models();
    let copies = vec![StateCopy::default(); models];
    let records = Records {
        trained: Trained {
            units_done: vec![0; models],
            metrics: vec![Vec::new(); models],
            timeline: Vec::new(),
        },
        best: vec![None; models],
        evals: BTreeMap::new(),
        reads: SourceReads::default(),
    };
    RunState::new(
        settings,
        sched,
        StateBook::new(copies, checkpoints),
        records,
    )
}

impl Sim {
    fn new(state: RunState, seed: u64, faults: Faults, by_round: bool) -> Self {
        let trainers = (0..state.sched.partitions()).map(Trainer::new).collect();
        Self {
            rng: StdRng::seed_from_u64(seed),
            state,
            trainers,
            evals: Vec::new(),
            faults,
            by_round,
            state_misses: 0,
            deaths: 0,
        }
    }

    fn proof(&self, w: usize) -> String {
        format!("proof-{w}-{}", self.trainers[w].generation)
    }

    /// The state model `m` has after its first `units` units, trained
    /// sequentially.
    fn expected(&self, m: usize, units: u64) -> Bytes {
        let sched = &self.state.sched;
        let mut state = Bytes::new();
        let mut left = units;
        'epochs: for epoch in 0..sched.epochs() {
            for partition in sched.visit_order(m, epoch).unwrap() {
                if left == 0 {
                    break 'epochs;
                }
                state = apply(
                    &state,
                    Unit {
                        model: m,
                        partition,
                        epoch,
                    },
                );
                left -= 1;
            }
        }
        assert_eq!(left, 0, "model {m} has fewer than {units} units");
        state
    }

    /// Runs until every model has trained all it will.
    fn run(mut self) -> (Finished, Sim) {
        for _ in 0..100_000 {
            self.dispatch();
            if self.rng.random_bool(0.3) {
                if let Some(snapshot) = self.state.checkpoint().unwrap() {
                    self.check_snapshot(&snapshot);
                }
            }
            let busy: Vec<usize> = (0..self.trainers.len())
                .filter(|&w| !self.trainers[w].queue.is_empty())
                .collect();
            if self.state.is_done() && busy.is_empty() && self.evals.is_empty() {
                let mut last = fresh_state(
                    self.state.sched.clone(),
                    Checkpoints::Epoch,
                    settings(1, false, false),
                );
                std::mem::swap(&mut last, &mut self.state);
                let models = configs(last.sched.models());
                return (last.finish(&models, |_| None), self);
            }
            assert!(
                !busy.is_empty() || !self.evals.is_empty(),
                "nothing runs and the run is not done"
            );
            let roll: f64 = self.rng.random();
            if roll < self.faults.death {
                let w = self.rng.random_range(0..self.trainers.len());
                if self.trainers[w].failing == 0 && self.trainers[w].alive {
                    self.trainers[w].alive = false;
                    self.trainers[w].kept.clear();
                    self.deaths += 1;
                }
                continue;
            }
            let event = if !self.evals.is_empty() && (busy.is_empty() || self.rng.random_bool(0.3))
            {
                let i = self.rng.random_range(0..self.evals.len());
                let eval = self.evals.swap_remove(i);
                self.evaluate(eval)
            } else {
                let w = busy[self.rng.random_range(0..busy.len())];
                self.train(w)
            };
            self.handle(event);
        }
        panic!("the run did not end");
    }

    fn dispatch(&mut self) {
        let proofs: Vec<String> = (0..self.trainers.len()).map(|w| self.proof(w)).collect();
        for d in self.state.dispatch(self.by_round, |w| proofs[w].clone()) {
            assert_eq!(
                d.unit.partition, d.worker,
                "a unit runs on its partition's trainer"
            );
            let t = &self.trainers[d.worker];
            assert!(t.queue.len() < 2, "a trainer holds at most two units");
            assert!(
                !self
                    .trainers
                    .iter()
                    .any(|t| t.queue.iter().any(|(u, ..)| u.model == d.unit.model)),
                "model {} is handed out twice",
                d.unit.model
            );
            if self.by_round {
                assert!(t.queue.is_empty(), "by round, nothing is queued");
            }
            let generation = t.generation;
            self.trainers[d.worker]
                .queue
                .push_back((d.unit, d.directive, generation));
        }
    }

    /// Trainer `w` runs its next unit.
    fn train(&mut self, w: usize) -> Event {
        let (unit, d, generation) = self.trainers[w].queue.pop_front().unwrap();
        let t = &self.trainers[w];
        let failed = |message: &str| Event::UnitFailed {
            worker: w,
            unit,
            error: Error::trainer(w, message),
        };
        if !t.alive || t.generation != generation {
            self.trainers[w].failing += 1;
            return failed("the trainer died");
        }
        if t.failing < 2 && self.rng.random_bool(self.faults.unit) {
            self.trainers[w].failing += 1;
            return failed("injected");
        }
        let start = match &d.from {
            Some(source) => {
                let key = source.key.unwrap();
                let holder = match source.peer.is_empty() {
                    true => Some(w),
                    false => self
                        .trainers
                        .iter()
                        .position(|t| t.alive && t.address == source.peer),
                };
                if let Some(h) = holder.filter(|&h| h != w) {
                    assert_eq!(
                        source.proof,
                        self.proof(h),
                        "a hop proves itself to its holder"
                    );
                }
                let kept = holder.and_then(|h| {
                    self.trainers[h]
                        .kept
                        .get(&key.model)
                        .filter(|(v, _)| *v == key.version)
                });
                match kept {
                    Some((_, s)) => s.clone(),
                    None => {
                        self.state_misses += 1;
                        return Event::UnitFailed {
                            worker: w,
                            unit,
                            error: Error::StateSource(format!("no state {key:?}")),
                        };
                    }
                }
            }
            None => d.state.clone(),
        };
        let end = apply(&start, unit);
        let t = &mut self.trainers[w];
        t.failing = 0;
        if d.hop.hold {
            t.kept
                .insert(unit.model as u32, (d.hop.version, end.clone()));
        }
        Event::UnitDone {
            worker: w,
            unit,
            start: 0.0,
            end: 0.0,
            hop: d.hop,
            address: t.address.clone(),
            result: hopper_proto::UnitResult {
                state: match d.hop.return_state() {
                    true => end,
                    false => Bytes::new(),
                },
                samples: 1,
                ..Default::default()
            },
            from: String::new(),
        }
    }

    /// Every trainer validates `eval`.
    fn evaluate(&mut self, eval: PendingEval) -> Event {
        let w = self.trainers.len() as u64;
        assert_eq!(
            eval.state,
            self.expected(eval.model, (eval.epoch as u64 + 1) * w),
            "model {} is validated with its state after epoch {}",
            eval.model,
            eval.epoch
        );
        if eval.attempts < 2 && self.rng.random_bool(self.faults.eval) {
            return Event::EvalFailed {
                eval,
                error: Error::trainer(0, "injected"),
            };
        }
        let totals = EvalTotals {
            samples: 10,
            loss_sum: loss_of(&eval.state) * 10.0,
            ..Default::default()
        };
        Event::EvalDone {
            eval,
            totals,
            sources: Vec::new(),
        }
    }

    /// Gives `event` to the run, and does what it says.
    fn handle(&mut self, event: Event) {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            for action in self.state.on(event).unwrap() {
                match action {
                    Action::Release { holder, key } => {
                        let kept = &mut self.trainers[holder].kept;
                        if kept.get(&key.model).is_some_and(|(v, _)| *v == key.version) {
                            kept.remove(&key.model);
                        }
                    }
                    Action::Validate(eval) => self.evals.push(eval),
                    Action::Fetch {
                        model,
                        holder,
                        worker,
                        key,
                    } => {
                        let t = &self.trainers[holder];
                        let state = t
                            .kept
                            .get(&key.model)
                            .filter(|(v, _)| t.alive && *v == key.version)
                            .map(|(_, s)| s.clone());
                        events.push_back(Event::StateFetched {
                            model,
                            holder,
                            worker,
                            state,
                        });
                    }
                    Action::Replan => {}
                    Action::Recover { worker, .. } => {
                        if !self.trainers[worker].alive {
                            self.trainers[worker].replace(worker);
                        }
                        events.push_back(self.trainers_at());
                        events.push_back(Event::Opened { reads: Vec::new() });
                    }
                    Action::RetryEval { eval, .. } => {
                        for w in 0..self.trainers.len() {
                            if !self.trainers[w].alive {
                                self.trainers[w].replace(w);
                                events.push_back(self.trainers_at());
                            }
                        }
                        self.evals.push(eval);
                    }
                    Action::Note(_) => {}
                }
            }
        }
    }

    fn trainers_at(&self) -> Event {
        Event::TrainersAt {
            addresses: self.trainers.iter().map(|t| t.address.clone()).collect(),
        }
    }

    /// A checkpoint holds no running unit, and for every model the state
    /// after exactly the units it counts.
    fn check_snapshot(&self, s: &Snapshot) {
        assert!(s.sched.running().is_empty());
        for (m, copy) in s.copies.iter().enumerate() {
            let units = s.trained.units_done[m];
            assert_eq!(copy.units, units, "model {m}'s copy and its unit count");
            let state = copy.state.clone().unwrap_or_default();
            assert_eq!(
                state,
                self.expected(m, units),
                "model {m}'s checkpointed state"
            );
            let on_timeline = s.trained.timeline.iter().filter(|u| u.model == m).count();
            assert_eq!(
                on_timeline as u64, units,
                "model {m}'s units on the timeline"
            );
        }
        let w = self.trainers.len() as u64;
        for (&(m, epoch), state) in &s.evals {
            assert_eq!(*state, self.expected(m, (epoch as u64 + 1) * w));
        }
    }
}

/// Every model ended with the units of its epochs applied once each, in
/// its visit order, and each of its epochs was validated.
fn check_finished(f: &Finished, sim: &Sim, epochs_of: impl Fn(usize) -> usize, validated: bool) {
    let w = sim.trainers.len();
    for r in &f.models {
        let m = r.id;
        let epochs = epochs_of(m);
        let units = (epochs * w) as u64;
        let state = r.state_bytes().map(<[u8]>::to_vec).unwrap_or_default();
        assert_eq!(
            state,
            sim.expected(m, units).to_vec(),
            "model {m}'s final state"
        );
        let mut seen: Vec<(usize, usize)> = f
            .timeline
            .iter()
            .filter(|u| u.model == m)
            .map(|u| (u.epoch, u.partition))
            .collect();
        seen.sort_unstable();
        let all: Vec<(usize, usize)> = (0..epochs)
            .flat_map(|e| (0..w).map(move |p| (e, p)))
            .collect();
        assert_eq!(seen, all, "model {m}'s units on the timeline, each once");
        if validated {
            assert_eq!(r.metrics.len(), epochs);
            assert!(
                r.metrics.iter().all(|e| e.val_samples == 10),
                "model {m}: {:?}",
                r.metrics
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever fails and whoever dies, every model trains exactly as it
    /// would sequentially; checkpoints and validation passes hold the
    /// states they claim; with nothing failing, every state is where the
    /// runner says it is.
    #[test]
    fn every_model_trains_as_sequentially_whatever_fails(
        models in 1usize..5,
        workers in 1usize..4,
        epochs in 1usize..4,
        seed in any::<u64>(),
        per_unit in any::<bool>(),
        patience in proptest::option::of(1usize..3),
        faults in prop_oneof![
            Just(NO_FAULTS),
            Just(Faults { unit: 0.15, death: 0.0, eval: 0.1 }),
            Just(Faults { unit: 0.1, death: 0.03, eval: 0.1 }),
        ],
        by_round in any::<bool>(),
    ) {
        let sched = Scheduler::with_stopping(
            models, workers, epochs, seed, Policy::Reproducible, Rule::Full, patience,
        ).unwrap();
        let checkpoints = if per_unit { Checkpoints::Unit } else { Checkpoints::Epoch };
        let state = fresh_state(sched, checkpoints, settings(workers, true, false));
        let (finished, sim) = Sim::new(state, seed, faults, by_round).run();
        let fates: Vec<usize> = (0..models)
            .map(|m| sim.state.sched.fate(m).unwrap().map_or(epochs, |f| f.epochs))
            .collect();
        check_finished(&finished, &sim, |m| fates[m], true);
        if faults.death == 0.0 {
            prop_assert_eq!(sim.state_misses, 0, "a state was not where the runner said");
        }
        let t = finished.traffic;
        let units: u64 = fates.iter().map(|&e| (e * workers) as u64).sum();
        if faults.unit == 0.0 && faults.death == 0.0 {
            // One hop per unit after a model's first: none through the runner.
            prop_assert_eq!(t.sent, 0);
            prop_assert_eq!(t.direct + t.same_trainer, units - models as u64);
        }
    }
}

/// `d` ended on its trainer (at address "a"), its result carrying `state`.
fn done(d: &Dispatch, state: Bytes) -> Event {
    Event::UnitDone {
        worker: d.worker,
        unit: d.unit,
        start: 0.0,
        end: 0.0,
        hop: d.directive.hop,
        address: "a".into(),
        result: hopper_proto::UnitResult {
            state,
            samples: 1,
            ..Default::default()
        },
        from: String::new(),
    }
}

/// `d` failed on its trainer with `error`.
fn failed(d: &Dispatch, error: Error) -> Event {
    Event::UnitFailed {
        worker: d.worker,
        unit: d.unit,
        error,
    }
}

/// One model, one trainer, `epochs` epochs, validated with `losses`.
fn validated_run(epochs: usize, losses: &[f64], keep_best: bool) -> Result<Finished> {
    let sched = Scheduler::new(1, 1, epochs, 7, Policy::Reproducible).unwrap();
    let mut state = fresh_state(sched, Checkpoints::Epoch, settings(1, true, keep_best));
    for &loss in losses {
        let d = state.dispatch(false, |_| String::new()).pop().unwrap();
        let actions = state.on(done(&d, Bytes::from(vec![d.unit.epoch as u8])))?;
        let eval = actions
            .into_iter()
            .find_map(|a| match a {
                Action::Validate(e) => Some(e),
                _ => None,
            })
            .expect("an epoch's end is validated");
        state.on(Event::EvalDone {
            eval,
            totals: EvalTotals {
                samples: 1,
                loss_sum: loss,
                ..Default::default()
            },
            sources: Vec::new(),
        })?;
    }
    Ok(state.finish(&configs(1), |_| None))
}

#[test]
fn keep_best_holds_the_earliest_of_equal_epochs_whatever_comes_after() {
    let f = validated_run(4, &[5.0, 3.0, 3.0, 4.0], true).unwrap();
    assert_eq!(f.models[0].kept, Some(1));
    assert_eq!(f.models[0].state_bytes(), Some(&[1u8][..]));
    let f = validated_run(4, &[5.0, 3.0, 3.0, 4.0], false).unwrap();
    assert_eq!(f.models[0].kept, None);
    assert_eq!(f.models[0].state_bytes(), Some(&[3u8][..]));
}

#[test]
fn a_trainer_failing_too_often_stops_the_run_naming_it_and_what_to_do() {
    let sched = Scheduler::new(2, 2, 1, 1, Policy::Reproducible).unwrap();
    let mut state = fresh_state(sched, Checkpoints::Epoch, settings(2, false, false));
    let mut outcome = Ok(Vec::new());
    for attempt in 0..=MAX_RETRIES {
        let d = state
            .dispatch(false, |_| String::new())
            .into_iter()
            .find(|d| d.worker == 1)
            .expect("the failed unit is handed out again");
        if attempt > 0 {
            // After a failure, no unit is queued behind the one it runs.
            let more = state.dispatch(false, |_| String::new());
            assert!(more.iter().all(|d| d.worker != 1));
        }
        outcome = state.on(failed(&d, Error::trainer(1, format!("boom {attempt}"))));
        if attempt < MAX_RETRIES {
            let actions = outcome.as_ref().unwrap();
            assert!(
                actions
                    .iter()
                    .any(|a| matches!(a, Action::Recover { worker: 1, .. })),
                "{actions:?}"
            );
        }
    }
    let e = outcome.unwrap_err().to_string();
    assert!(e.contains("trainer 1"), "{e}");
    assert!(e.contains("5 units failed in a row"), "{e}");
    assert!(e.contains("boom 5"), "{e}");
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn a_refused_ticket_plans_again_and_a_lost_state_is_fetched_by_the_runner() {
    let sched = Scheduler::new(1, 2, 1, 3, Policy::Reproducible).unwrap();
    let mut state = fresh_state(sched, Checkpoints::Epoch, settings(2, false, false));
    let d = state.dispatch(false, |_| String::new()).pop().unwrap();
    let actions = state
        .on(failed(&d, Error::TicketRefused("expired".into())))
        .unwrap();
    assert!(matches!(actions[1], Action::Replan), "{actions:?}");

    // The first unit ends, kept where it ran; the next trainer cannot get
    // the state: the runner fetches it and from then on states go through it.
    let d = state.dispatch(false, |_| String::new()).pop().unwrap();
    state.on(done(&d, Bytes::new())).unwrap();
    let next = state.dispatch(false, |_| "p".into()).pop().unwrap();
    assert!(next.directive.from.is_some());
    let actions = state
        .on(failed(&next, Error::StateSource("unreachable".into())))
        .unwrap();
    let Some(Action::Fetch { holder, model, .. }) =
        actions.iter().find(|a| matches!(a, Action::Fetch { .. }))
    else {
        panic!("{actions:?}")
    };
    assert_eq!((*holder, *model), (d.worker, 0));
    let actions = state
        .on(Event::StateFetched {
            model: 0,
            holder: d.worker,
            worker: next.worker,
            state: Some(Bytes::from_static(b"w")),
        })
        .unwrap();
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Note(Note::ThroughRunner { .. }))));
    let again = state.dispatch(false, |_| "p".into()).pop().unwrap();
    assert!(again.directive.from.is_none());
    assert_eq!(again.directive.state, Bytes::from_static(b"w"));
    assert!(
        !again.directive.hop.hold,
        "states go through the runner now"
    );
}

#[test]
fn rows_that_changed_stop_the_run_or_with_warn_are_recorded() {
    let read = |checksum: u64| Read {
        partition: 0,
        split: Split::Train,
        kind: ReadKind::Open,
        model: None,
        epoch: None,
        from: "endpoint 0 of the training query, at grpc+tcp://db:1".into(),
        got: RowsRead {
            rows: 10,
            checksum,
            scheme: String::new(),
        },
    };
    for on_change in [OnChange::Stop, OnChange::Warn] {
        let sched = Scheduler::new(1, 1, 1, 0, Policy::Reproducible).unwrap();
        let mut s = settings(1, false, false);
        s.on_change = on_change;
        let mut state = fresh_state(sched, Checkpoints::Epoch, s);
        state
            .on(Event::Opened {
                reads: vec![read(1)],
            })
            .unwrap();
        state
            .on(Event::Opened {
                reads: vec![read(1)],
            })
            .unwrap();
        let changed = state.on(Event::Opened {
            reads: vec![read(2)],
        });
        match on_change {
            OnChange::Stop => {
                let e = changed.unwrap_err();
                assert!(matches!(e, Error::RowsChanged(_)), "{e}");
                assert!(e.to_string().contains("partition 0"), "{e}");
            }
            OnChange::Warn => {
                let actions = changed.unwrap();
                assert!(
                    matches!(&actions[..], [Action::Note(Note::Line(l))] if l.starts_with("warning")),
                    "{actions:?}"
                );
                let f = state.finish(&configs(1), |_| None);
                assert_eq!(f.source_changes.len(), 1);
            }
        }
    }
}

#[test]
fn a_validation_pass_failing_too_often_stops_the_run() {
    let sched = Scheduler::new(1, 1, 1, 0, Policy::Reproducible).unwrap();
    let mut state = fresh_state(sched, Checkpoints::Epoch, settings(1, true, false));
    let mut eval = PendingEval {
        model: 0,
        epoch: 0,
        state: Bytes::new(),
        attempts: 0,
    };
    for _ in 0..MAX_RETRIES {
        let actions = state
            .on(Event::EvalFailed {
                eval,
                error: Error::trainer(0, "down"),
            })
            .unwrap();
        eval = actions
            .into_iter()
            .find_map(|a| match a {
                Action::RetryEval { eval, .. } => Some(eval),
                _ => None,
            })
            .unwrap();
    }
    let e = state
        .on(Event::EvalFailed {
            eval,
            error: Error::trainer(0, "down"),
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("validating model 0 after epoch 1 failed 5 times"),
        "{e}"
    );
}
