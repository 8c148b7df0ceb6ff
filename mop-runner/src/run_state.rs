//! The state of a run, apart from its input and output.
//!
//! # Design
//! [`RunState`] is the control loop's bookkeeping as a machine: events go
//! in ([`Event`]: a unit done or failed, a validation pass done or failed,
//! trainers replaced, a partition opened, a state fetched), actions come
//! out ([`Action`]: release a state, validate an epoch, fetch a state, plan
//! again, recover a trainer, show progress), and an error stops the run.
//! [`RunState::dispatch`] says which unit each trainer runs next and where
//! its state comes from; [`RunState::checkpoint`] gives what a checkpoint
//! holds. The shell in [`crate::run`] turns actions into calls to trainers
//! and flight-servers, and their answers into events.
//!
//! Nothing here waits, reads a clock or touches the network, so the whole
//! protocol — which unit runs where, which trainer a state hops from, what
//! a failure or a lost trainer undoes, what a checkpoint may claim — is
//! tested with simulated trainers whose "weights" record every unit they
//! applied (see the tests): whatever fails, every model ends with the
//! weights of its units applied once each, in its visit order.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hopper_proto::StateKey;
use mop_core::config::ModelConfig;
use mop_core::metrics::{Metric, RegressionSums, ScoreCounts};
use mop_core::run_config::OnChange;
use mop_core::run_dir::checkpoint::{EpochMetrics, Split, UnitRecord};
use mop_core::run_dir::reads::{Checked, Read, ReadKind, RowsRead, SourceChange, SourceReads};
use mop_core::run_dir::results::{ModelResult, StateBlob};
use mop_core::schedule::{Decision, Progress, Scheduler, Unit};
use mop_core::search::Reason;

use crate::error::{Error, Result};
use crate::hops::{Directive, Hop, StateBook, StateCopy, Traffic};

/// How many times a unit may fail in a row on one trainer, or a
/// validation pass at all, before the run stops.
pub const MAX_RETRIES: u32 = 5;

/// A model's best validated epoch so far and the state it ended it with
/// (`[train] keep = "best"`).
pub type Best = (usize, Bytes);

/// What stays the same through a run.
pub struct Settings {
    /// What ranks epochs (for the search and `keep = "best"`).
    pub metric: Metric,
    /// `[train] keep = "best"`.
    pub keep_best: bool,
    /// What rows that changed between reads do.
    pub on_change: OnChange,
    /// Whether every epoch is validated.
    pub has_validation: bool,
    /// Whether each partition's trainer runs on a host of its rows.
    pub local: Vec<bool>,
}

/// What the run recorded of every model's units. A model sent back to the
/// runner's copy of its state forgets the units since.
#[derive(Clone, Default)]
pub struct Trained {
    /// Units each model has done.
    pub units_done: Vec<u64>,
    /// Each model's figures, by epoch.
    pub metrics: Vec<Vec<EpochMetrics>>,
    /// Every unit, as it ran.
    pub timeline: Vec<UnitRecord>,
}

/// What a run starts from: nothing yet, or a checkpoint.
pub struct Records {
    /// Units, figures and timeline so far.
    pub trained: Trained,
    /// Each model's best epoch so far (`keep = "best"`).
    pub best: Vec<Option<Best>>,
    /// Validation passes not finished, by (model, epoch), with their states.
    pub evals: BTreeMap<(usize, usize), Bytes>,
    /// What every partition's reads found.
    pub reads: SourceReads,
}

/// A validation pass of one model after one epoch, with the state it ended
/// the epoch with (the model itself may already be training the next one).
#[derive(Clone, Debug)]
pub struct PendingEval {
    /// The model.
    pub model: usize,
    /// The epoch it validates (0-based).
    pub epoch: usize,
    /// The state the model ended the epoch with.
    pub state: Bytes,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A validation pass's statistics, merged over every trainer's rows.
#[derive(Default)]
pub struct EvalTotals {
    /// Rows validated.
    pub samples: u64,
    /// Their loss, summed.
    pub loss_sum: f64,
    /// Rows classified right.
    pub correct: u64,
    /// A binary task's score counts.
    pub scores: Option<ScoreCounts>,
    /// A regression's sums.
    pub regression: Option<RegressionSums>,
    /// What each trainer's pass read over Flight (cache mode none), by
    /// partition.
    pub reads: Vec<(usize, hopper_proto::RowsRead)>,
}

/// What happened.
pub enum Event {
    /// A unit ended on trainer `worker` (at `address` when it was handed
    /// out), between `start` and `end` (seconds into the run).
    UnitDone {
        worker: usize,
        unit: Unit,
        start: f64,
        end: f64,
        hop: Hop,
        address: String,
        result: hopper_proto::UnitResult,
        /// Where the partition's training rows come from, for messages.
        from: String,
    },
    /// A unit failed.
    UnitFailed {
        worker: usize,
        unit: Unit,
        error: Error,
    },
    /// What [`Action::Fetch`] brought: the state, or nothing (its holder
    /// lost it).
    StateFetched {
        model: usize,
        holder: usize,
        worker: usize,
        state: Option<Bytes>,
    },
    /// A validation pass ended.
    EvalDone {
        eval: PendingEval,
        totals: EvalTotals,
        /// Where each partition's validation rows come from, for messages.
        sources: Vec<String>,
    },
    /// A validation pass failed.
    EvalFailed { eval: PendingEval, error: Error },
    /// The trainers are at `addresses` now: those at other addresses than
    /// before are new processes, without the states the old ones kept.
    TrainersAt { addresses: Vec<String> },
    /// A trainer opened its partition and read these rows.
    Opened { reads: Vec<Read> },
}

/// What to do.
#[derive(Debug)]
pub enum Action {
    /// Tell trainer `holder` to forget the state of `key`.
    Release { holder: usize, key: StateKey },
    /// Validate a model's epoch on every trainer; answer with
    /// [`Event::EvalDone`] or [`Event::EvalFailed`].
    Validate(PendingEval),
    /// Fetch `model`'s state from trainer `holder`, which trainer `worker`
    /// could not; answer with [`Event::StateFetched`].
    Fetch {
        model: usize,
        holder: usize,
        worker: usize,
        key: StateKey,
    },
    /// Plan the queries again: a flight-server refused a ticket.
    Replan,
    /// Trainer `worker` failed a unit: replace it if it died, or else pause
    /// for `backoff`; answer with [`Event::TrainersAt`], then open its
    /// partition again ([`Event::Opened`]).
    Recover { worker: usize, backoff: Duration },
    /// A validation pass failed: replace the trainers that died (answering
    /// as [`Action::Recover`] does for each), or else pause for `backoff`;
    /// then validate again.
    RetryEval {
        eval: PendingEval,
        backoff: Duration,
    },
    /// Progress to show.
    Note(Note),
}

/// Progress worth showing.
#[derive(Debug)]
pub enum Note {
    UnitDone {
        unit: Unit,
        samples: u64,
        seconds: f64,
    },
    UnitFailed {
        unit: Unit,
        error: String,
    },
    EpochDone {
        model: usize,
        epoch: usize,
        metrics: EpochMetrics,
    },
    Decided(Decision),
    /// The search changed how many units the run has.
    Total(u64),
    /// A model went back to the runner's copy of its state, `units` back.
    Rewound {
        model: usize,
        units: u64,
    },
    /// Trainer `worker` could not reach trainer `holder`: states go through
    /// the runner from now on.
    ThroughRunner {
        worker: usize,
        holder: usize,
    },
    Line(String),
}

/// A unit to run now: on trainer `worker`, with its state as `directive` says.
pub struct Dispatch {
    pub worker: usize,
    pub unit: Unit,
    pub directive: Directive,
}

/// What a checkpoint holds: no running unit, and every model at the last
/// state the runner has a copy of.
pub struct Snapshot {
    pub sched: Scheduler,
    pub copies: Vec<StateCopy>,
    pub trained: Trained,
    pub evals: BTreeMap<(usize, usize), Bytes>,
    pub best: Vec<Option<Best>>,
    pub reads: SourceReads,
}

/// What a run ended with.
pub struct Finished {
    pub models: Vec<ModelResult>,
    pub timeline: Vec<UnitRecord>,
    pub source_changes: Vec<SourceChange>,
    pub traffic: Traffic,
}

/// The control loop's state; see the module docs.
pub struct RunState {
    settings: Settings,
    sched: Scheduler,
    book: StateBook,
    trained: Trained,
    best: Vec<Option<Best>>,
    evals: BTreeMap<(usize, usize), Bytes>,
    reads: SourceReads,
    /// Units failed in a row, per trainer.
    failures: Vec<u32>,
    /// Whether anything changed since the last checkpoint.
    dirty: bool,
}

impl RunState {
    /// A run over `sched`'s models and partitions, its states in `book`.
    pub fn new(settings: Settings, sched: Scheduler, book: StateBook, records: Records) -> Self {
        let failures = vec![0; sched.partitions()];
        Self {
            settings,
            sched,
            book,
            trained: records.trained,
            best: records.best,
            evals: records.evals,
            reads: records.reads,
            failures,
            dirty: false,
        }
    }

    /// Validation passes a resumed run runs first.
    pub fn pending_evals(&self) -> Vec<PendingEval> {
        self.evals
            .iter()
            .map(|(&(model, epoch), state)| PendingEval {
                model,
                epoch,
                state: state.clone(),
                attempts: 0,
            })
            .collect()
    }

    /// Units done and in all.
    pub fn progress(&self) -> Progress {
        self.sched.progress()
    }

    /// Whether every model has trained all it will.
    pub fn is_done(&self) -> bool {
        self.sched.is_done()
    }

    /// Whether something happened since the last [`checkpoint`](Self::checkpoint).
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The units to run now. An idle trainer gets a unit; a busy one, the
    /// unit it runs next, so the model's state travels while it trains —
    /// not after a failure, until a unit succeeds there again, and not
    /// `by_round` (every unit reads endpoints that can be read once: those
    /// are planned as the unit is handed out, and one queued behind a long
    /// unit would leave its cursor unread past the server's idle limit).
    /// `proof(w)` makes a proof for trainer `w`'s key.
    pub fn dispatch(&mut self, by_round: bool, proof: impl Fn(usize) -> String) -> Vec<Dispatch> {
        let mut out = Vec::new();
        for worker in 0..self.failures.len() {
            let unit = match self.sched.held(worker) {
                0 => self.sched.next_unit(worker),
                _ if self.failures[worker] == 0 && !by_round => self.sched.queue_unit(worker),
                _ => None,
            };
            let Some(unit) = unit else { continue };
            let ends_epoch = self.sched.ends_epoch(unit);
            let directive = self.book.directive(unit.model, worker, ends_epoch, &proof);
            out.push(Dispatch {
                worker,
                unit,
                directive,
            });
        }
        out
    }

    /// What a checkpoint would hold now, if anything changed since the last.
    /// It holds no running unit (what runs now runs again on resume) and
    /// the states the runner has copies of: a model that went on since (its
    /// state kept by a trainer) starts that epoch again.
    pub fn checkpoint(&mut self) -> Result<Option<Snapshot>> {
        if !self.dirty {
            return Ok(None);
        }
        self.dirty = false;
        let mut sched = self.sched.clone();
        for u in sched.running() {
            sched.requeue(u)?;
        }
        let mut trained = self.trained.clone();
        let copies = self.book.copies().to_vec();
        for (m, c) in copies.iter().enumerate() {
            undo_to_copy(&mut sched, m, c.units, &mut trained)?;
        }
        Ok(Some(Snapshot {
            sched,
            copies,
            trained,
            evals: self.evals.clone(),
            best: self.best.clone(),
            reads: self.reads.clone(),
        }))
    }

    /// Takes in what happened; returns what to do about it.
    pub fn on(&mut self, event: Event) -> Result<Vec<Action>> {
        let mut actions = Vec::new();
        match event {
            Event::UnitDone {
                worker,
                unit,
                start,
                end,
                hop,
                address,
                result,
                from,
            } => self.unit_done(
                worker,
                unit,
                (start, end),
                hop,
                &address,
                result,
                from,
                &mut actions,
            )?,
            Event::UnitFailed {
                worker,
                unit,
                error,
            } => self.unit_failed(worker, unit, error, &mut actions)?,
            Event::StateFetched {
                model,
                holder,
                worker,
                state,
            } => {
                match state {
                    Some(state) => {
                        if let Some((_, key)) = self.book.kept_on(model) {
                            actions.push(Action::Release { holder, key });
                        }
                        if self.book.through_runner(model, state) {
                            actions.push(Action::Note(Note::ThroughRunner { worker, holder }));
                        }
                    }
                    None => self.rewind(model, &mut actions)?,
                }
                self.dirty = true;
            }
            Event::EvalDone {
                eval,
                totals,
                sources,
            } => self.eval_done(eval, totals, &sources, &mut actions)?,
            Event::EvalFailed { mut eval, error } => {
                eval.attempts += 1;
                if eval.attempts > MAX_RETRIES {
                    return Err(Error::Trainer {
                        trainer: "validation".into(),
                        message: format!(
                            "validating model {} after epoch {} failed {MAX_RETRIES} times; \
                             last error: {error}; the checkpoint is kept, fix the trainers \
                             and `--resume`",
                            eval.model,
                            eval.epoch + 1
                        ),
                    });
                }
                actions.push(Action::Note(Note::Line(format!(
                    "validating model {} after epoch {} failed, will run again: {error}",
                    eval.model,
                    eval.epoch + 1
                ))));
                if matches!(error, Error::TicketRefused(_)) {
                    actions.push(Action::Replan);
                }
                let backoff = Duration::from_millis(100 << eval.attempts.min(6));
                actions.push(Action::RetryEval { eval, backoff });
            }
            Event::TrainersAt { addresses } => {
                self.states_lost(&addresses, &mut actions)?;
                self.dirty = true;
            }
            Event::Opened { reads } => {
                for read in reads {
                    self.check_read(read, &mut actions)?;
                }
            }
        }
        Ok(actions)
    }

    /// What the run ended with: each model's figures and state (its best
    /// epoch's with `keep = "best"`), the units, the changes its reads saw.
    /// `file_of` says which file already holds a state, if one does.
    pub fn finish(
        self,
        models: &[ModelConfig],
        file_of: impl Fn(&Bytes) -> Option<std::path::PathBuf>,
    ) -> Finished {
        let traffic = self.book.traffic();
        let results = models
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (kept, state) = match &self.best[i] {
                    Some((e, state)) if self.settings.keep_best => (Some(*e), Some(state)),
                    _ => (None, self.book.copy(i).state.as_ref()),
                };
                ModelResult {
                    id: i,
                    config: c.clone(),
                    metrics: self.trained.metrics[i].clone(),
                    state: state.map(|s| {
                        let blob = StateBlob::new(s.clone());
                        match file_of(s) {
                            Some(file) => blob.in_file(file),
                            None => blob,
                        }
                    }),
                    kept,
                    stop: self.sched.fate(i).ok().flatten(),
                }
            })
            .collect();
        Finished {
            models: results,
            timeline: self.trained.timeline,
            source_changes: self.reads.changes,
            traffic,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn unit_done(
        &mut self,
        worker: usize,
        unit: Unit,
        (start, end): (f64, f64),
        hop: Hop,
        address: &str,
        r: hopper_proto::UnitResult,
        from: String,
        actions: &mut Vec<Action>,
    ) -> Result<()> {
        // Rows that changed since the partition's earlier reads stop the
        // run before the unit counts (or, warned, are recorded).
        if let Some(got) = r.read {
            let read = Read {
                partition: unit.partition,
                split: Split::Train,
                kind: ReadKind::Unit,
                model: Some(unit.model),
                epoch: Some(unit.epoch),
                from,
                got: rows_read(got),
            };
            self.check_read(read, actions)?;
        }
        self.failures[worker] = 0;
        let m = unit.model;
        if hop.copy && r.state.is_empty() {
            return Err(Error::trainer(
                worker,
                "the unit's result carries no state though the runner asked for it; \
                 is the trainer older than the runner?",
            ));
        }
        self.sched.complete(unit)?;
        let t = &mut self.trained;
        t.units_done[m] += 1;
        // Kept as received: the buffer the message was decoded into,
        // shared with evaluations and the checkpoint.
        let superseded = self
            .book
            .unit_done(m, worker, address, hop, r.state, t.units_done[m]);
        if let Some((holder, key)) = superseded {
            actions.push(Action::Release { holder, key });
        }
        self.release_if_trained_out(m, actions)?;
        let epoch_over = self.sched.model_epoch(m)? > unit.epoch;
        let t = &mut self.trained;
        let em = epoch_slot(&mut t.metrics[m], unit.epoch);
        em.train_samples += r.samples;
        em.train_loss_sum += r.loss_sum;
        em.train_correct += r.correct;
        em.seconds += r.seconds;
        em.wait_seconds += r.wait_seconds;
        merge_stats(
            &mut em.train_scores,
            &mut em.train_regression,
            r.scores,
            r.regression,
        )
        .map_err(|e| Error::trainer(worker, format!("its metrics: {e}")))?;
        if epoch_over {
            // The epoch visited every partition: its AUC is final.
            if let Some(scores) = em.train_scores.take() {
                em.train_auc = Some(scores.auc());
            }
        }
        t.timeline.push(UnitRecord {
            model: m,
            partition: unit.partition,
            epoch: unit.epoch,
            start,
            end,
            samples: r.samples,
            wait_seconds: r.wait_seconds,
            bytes_read: r.bytes_read,
            local: self.settings.local.get(unit.partition).copied(),
        });
        actions.push(Action::Note(Note::UnitDone {
            unit,
            samples: r.samples,
            seconds: r.seconds,
        }));
        if epoch_over {
            if self.settings.has_validation {
                let state = self.book.copy(m).state.clone().unwrap_or_default();
                self.evals.insert((m, unit.epoch), state.clone());
                actions.push(Action::Validate(PendingEval {
                    model: m,
                    epoch: unit.epoch,
                    state,
                    attempts: 0,
                }));
            } else {
                actions.push(Action::Note(Note::EpochDone {
                    model: m,
                    epoch: unit.epoch,
                    metrics: t.metrics[m][unit.epoch].clone(),
                }));
            }
        }
        self.dirty = true;
        Ok(())
    }

    fn unit_failed(
        &mut self,
        worker: usize,
        unit: Unit,
        error: Error,
        actions: &mut Vec<Action>,
    ) -> Result<()> {
        self.sched.requeue(unit)?;
        actions.push(Action::Note(Note::UnitFailed {
            unit,
            error: error.to_string(),
        }));
        self.dirty = true;
        if matches!(error, Error::StateSource(_)) {
            // Not the trainer's fault: where the state was. The runner
            // fetches it itself, or the model goes back to its copy.
            let m = unit.model;
            match self.book.kept_on(m) {
                Some((holder, key)) => actions.push(Action::Fetch {
                    model: m,
                    holder,
                    worker,
                    key,
                }),
                None => self.rewind(m, actions)?,
            }
            return Ok(());
        }
        self.failures[worker] += 1;
        if matches!(error, Error::TicketRefused(_)) {
            actions.push(Action::Replan);
        }
        if self.failures[worker] > MAX_RETRIES {
            return Err(Error::trainer(
                worker,
                format!(
                    "{MAX_RETRIES} units failed in a row; last error: {error}; the checkpoint \
                     is kept, fix the trainer and `--resume`"
                ),
            ));
        }
        // A trainer that died is replaced; the unit then runs again from
        // the model's state before it. One alive but failing pauses first.
        let backoff = Duration::from_millis(100 << self.failures[worker].min(6));
        actions.push(Action::Recover { worker, backoff });
        Ok(())
    }

    fn eval_done(
        &mut self,
        eval: PendingEval,
        totals: EvalTotals,
        sources: &[String],
        actions: &mut Vec<Action>,
    ) -> Result<()> {
        let (model, epoch) = (eval.model, eval.epoch);
        for (p, got) in totals.reads {
            let read = Read {
                partition: p,
                split: Split::Validation,
                kind: ReadKind::Validation,
                model: Some(model),
                epoch: Some(epoch),
                from: sources.get(p).cloned().unwrap_or_default(),
                got: rows_read(got),
            };
            self.check_read(read, actions)?;
        }
        self.evals.remove(&(model, epoch));
        let metrics = &mut self.trained.metrics[model];
        let em = epoch_slot(metrics, epoch);
        em.val_samples = totals.samples;
        em.val_loss_sum = totals.loss_sum;
        em.val_correct = totals.correct;
        em.val_regression = totals.regression;
        em.val_auc = totals.scores.map(|s| s.auc());
        actions.push(Action::Note(Note::EpochDone {
            model,
            epoch,
            metrics: em.clone(),
        }));
        // The search decides from the validation metric, computed from
        // statistics that merge exactly: the same on every run of the same
        // weights.
        let metric = self.settings.metric;
        let score = signed_score(&metrics[epoch], metric);
        if self.settings.keep_best {
            let better = match &self.best[model] {
                None => true,
                Some((e, _)) => {
                    let held = signed_score(&metrics[*e], metric);
                    score > held || (score == held && epoch < *e)
                }
            };
            if better {
                self.best[model] = Some((epoch, eval.state));
            }
        }
        // Early stopping moves every model on one epoch at a time: only its
        // stops are news; a budget that ends is no news.
        let patient = self.sched.search().and_then(|p| p.patience()).is_some();
        for d in self.sched.record_score(model, epoch, score)? {
            if let Decision::Stop { model, .. } = d {
                self.release_if_trained_out(model, actions)?;
            }
            match d {
                Decision::Stop { stop, .. } if stop.reason == Reason::Finished => {}
                Decision::Continue { .. } if patient => {}
                d => actions.push(Action::Note(Note::Decided(d))),
            }
        }
        actions.push(Action::Note(Note::Total(self.sched.progress().total)));
        self.dirty = true;
        Ok(())
    }

    /// Model `m`'s latest state is lost (the trainer that kept it died): it
    /// goes back to the runner's copy, and the units since run again.
    fn rewind(&mut self, m: usize, actions: &mut Vec<Action>) -> Result<()> {
        let to = self.book.copy(m).units;
        let undone = undo_to_copy(&mut self.sched, m, to, &mut self.trained)?;
        self.book.rewind(m);
        if undone > 0 {
            actions.push(Action::Note(Note::Rewound {
                model: m,
                units: undone,
            }));
        }
        Ok(())
    }

    /// States kept by trainers since replaced (now at `addresses`) are gone.
    /// Models not handed out go back to the runner's copies now; a
    /// handed-out one goes back once its unit fails (it fails if its
    /// trainer had not fetched the state yet).
    fn states_lost(&mut self, addresses: &[String], actions: &mut Vec<Action>) -> Result<()> {
        let handed: Vec<usize> = self.sched.running().iter().map(|u| u.model).collect();
        for m in 0..self.trained.units_done.len() {
            if self.book.lost(m, addresses) && !handed.contains(&m) {
                self.rewind(m, actions)?;
            }
        }
        Ok(())
    }

    /// Tells the trainer that keeps model `m`'s state to forget it once the
    /// model trains no more (the runner holds its last state).
    fn release_if_trained_out(&self, m: usize, actions: &mut Vec<Action>) -> Result<()> {
        let out = match self.sched.fate(m)? {
            Some(fate) => self.sched.model_epoch(m)? >= fate.epochs,
            None => false,
        };
        if let Some((holder, key)) = self.book.kept_on(m).filter(|_| out) {
            actions.push(Action::Release { holder, key });
        }
        Ok(())
    }

    /// Compares a read with the partition's earlier reads
    /// (`mop_core::run_dir::reads`): different rows stop the run with an
    /// error naming the partition, or with `[source] on_change = "warn"`
    /// are reported and recorded, and the run goes on.
    fn check_read(&mut self, read: Read, actions: &mut Vec<Action>) -> Result<()> {
        match self.reads.check(&read) {
            Checked::First | Checked::Same => Ok(()),
            Checked::NewScheme { was } => {
                actions.push(Action::Note(Note::Line(format!(
                    "partition {}: the trainer checksums rows as {} where the run's earlier \
                     reads used {was}; its figures are the ones later reads must match",
                    read.partition, read.got.scheme
                ))));
                Ok(())
            }
            Checked::Changed(change) => match self.settings.on_change {
                OnChange::Stop => Err(Error::RowsChanged(change.stop_message())),
                OnChange::Warn => {
                    let what = change.describe();
                    tracing::warn!("{what}");
                    actions.push(Action::Note(Note::Line(format!(
                        "warning: {what}; going on over the new rows (on_change = \"warn\"), \
                         recorded in results.json"
                    ))));
                    self.reads.accept(change);
                    Ok(())
                }
            },
        }
    }
}

/// Sends model `m` back to the start of its epoch, where the runner's copy
/// of its state (after `to` units) is: the scheduler, the unit count, the
/// epoch's training figures and its units on the timeline. Returns how many
/// units it undid.
fn undo_to_copy(sched: &mut Scheduler, m: usize, to: u64, t: &mut Trained) -> Result<u64> {
    if t.units_done[m] == to {
        return Ok(0);
    }
    let epoch = sched.model_epoch(m)?;
    let undone = sched.restart_epoch(m)? as u64;
    if t.units_done[m].checked_sub(undone) != Some(to) {
        return Err(Error::Schedule(format!(
            "model {m}: the runner holds its state after {to} units, but its epoch began after {}",
            t.units_done[m].saturating_sub(undone)
        )));
    }
    t.units_done[m] = to;
    if let Some(v) = t.metrics.get_mut(m) {
        v.truncate(epoch);
    }
    t.timeline.retain(|u| u.model != m || u.epoch < epoch);
    Ok(undone)
}

/// Adds a pass's optional statistics into a running total.
pub fn merge_stats(
    scores: &mut Option<ScoreCounts>,
    regression: &mut Option<RegressionSums>,
    more_scores: Option<hopper_proto::ScoreCounts>,
    more_regression: Option<hopper_proto::RegressionSums>,
) -> mop_core::Result<()> {
    if let Some(more) = more_scores {
        let more = ScoreCounts::try_from(more)?;
        *scores = Some(match scores.take() {
            Some(s) => s.merge(&more),
            None => more,
        });
    }
    if let Some(more) = more_regression {
        let more = RegressionSums::from(more);
        *regression = Some(regression.map_or(more, |r| r.merge(&more)));
    }
    Ok(())
}

/// A validation score, higher is better, finite unless nothing was
/// validated.
fn signed_score(m: &EpochMetrics, metric: Metric) -> f64 {
    let v = metric.signed(m.value(metric, Split::Validation));
    if m.val_samples == 0 || v.is_finite() {
        v
    } else if v == f64::INFINITY {
        f64::MAX
    } else {
        f64::MIN
    }
}

fn epoch_slot(v: &mut Vec<EpochMetrics>, epoch: usize) -> &mut EpochMetrics {
    if v.len() <= epoch {
        v.resize(epoch + 1, EpochMetrics::default());
    }
    &mut v[epoch]
}

/// The figures of a read as the run directory keeps them.
pub fn rows_read(r: hopper_proto::RowsRead) -> RowsRead {
    RowsRead {
        rows: r.rows,
        checksum: r.checksum,
        scheme: r.scheme,
    }
}

#[cfg(test)]
mod tests;
