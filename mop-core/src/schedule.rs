//! The MOP scheduler: a pure, deterministic state machine.
//!
//! # Design
//! The data is split into `W` partitions and worker `w` sits beside partition
//! `w`, so a worker can only ever train on its own partition: the *models*
//! hop, the data never moves. A [`Unit`] is "train model `m` on partition `p`
//! for one pass in epoch `e`". The scheduler hands units to idle workers
//! ([`Scheduler::next_unit`]) and learns when they end ([`Scheduler::complete`])
//! or when a trainer died mid-unit ([`Scheduler::requeue`]: the unit runs again
//! later from the model's state before the unit). A busy worker may also be
//! given the unit it runs next ([`Scheduler::queue_unit`]), so that the
//! model's state travels to it while it still trains: at most
//! [`WORKER_DEPTH`] units per worker. It keeps these invariants:
//!
//! - a model is never on two workers at once;
//! - each model visits each partition exactly once per epoch;
//! - a model starts epoch `e + 1` only after finishing epoch `e`.
//!
//! There is no I/O, no clock and no thread in here: the runner drives it from
//! real trainer events, and [`crate::simulate`] drives it from a simulated
//! clock, which is how its efficiency was tuned and how its properties are
//! tested. The whole state serializes (serde) so the runner can checkpoint it
//! after every unit and `--resume` where it stopped.
//!
//! # Policies
//! - [`Policy::Reproducible`] (the default): the partition order of every
//!   model in every epoch is fixed up front by [`visit_order`], a function of
//!   `(seed, model, epoch)` only. The weights a model ends with therefore do
//!   not depend on timing, failures or resumes — re-running a dead trainer's
//!   unit or resuming a killed run gives bit-identical models. Timing only
//!   decides *which* waiting model a worker takes next: the one with the most
//!   remaining work (so long models do not end up as a tail), ties broken by a
//!   seeded rank. Models may run ahead into later epochs; there is no global
//!   epoch barrier.
//! - [`Policy::Cerebro`]: the randomized policy of the Cerebro paper. An idle
//!   worker takes a uniformly random idle model that still needs its
//!   partition in the current epoch, and all models move in step by epoch (no
//!   model starts epoch `e + 1` before every model finished `e`). Kept as the
//!   baseline the reproducible policy is measured against.
//!
//! # Search
//! A schedule may carry a search ([`crate::search`]) that decides how many
//! epochs each model trains: [`Scheduler::with_search`]. The scheduler only
//! asks it how far a model may go before its next decision; a model that
//! gets there is handed to no worker until its score arrives
//! ([`Scheduler::record_score`]). Stopping a model never changes the units
//! of the others, so every model that trains runs the units it would run
//! without the search. Searches that stop models need the reproducible
//! policy: Cerebro's epoch barrier would wait for models that never come.
//! "Most remaining work" still counts to the last epoch, not to a model's
//! next decision: counting to the next decision was worse in simulation
//! (27 models × 4 workers × 9 epochs, mixed unit times, seeds 0–2:
//! efficiency over the work trained, ASHA 0.70–0.80 against 0.71–0.87,
//! Hyperband 0.81–0.86 against 0.96).
//!
//! # Visit orders of the reproducible policy
//! A Latin-square-like layout: the partitions form a shuffled ring, the
//! models are shuffled and dealt round-robin onto the ring's partitions as
//! their starting points, and in every epoch each model walks the ring once
//! from its starting point. Models that have done the same number of units
//! are therefore spread evenly over the partitions, and the flow of models
//! into every worker is even, which keeps queues short even though a model's next
//! partition is not negotiable. Between epochs the ring drifts by one seeded
//! swap of two neighbouring partitions, so each epoch has its own visit
//! orders while models that straddle an epoch boundary still flow the same
//! way round.
//!
//! Why this and not a fresh random permutation per epoch: simulating 16
//! models × 8 workers × 10 epochs with unit times 1–4× by model (seeds 0..10),
//! independent random permutations reach 0.76 of the lower bound, a ring
//! redrawn every epoch 0.95–0.97, the drifting ring 0.98, and one ring kept
//! for the whole run 0.99 (but the same order every epoch). Weighting
//! "remaining work" by per-model unit times was worse (0.87) than counting
//! remaining units: counting keeps models in step, which is what the ring
//! needs.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::fmt;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::search::{Pruner, Reason, Rule, Stop};

/// What a score made the search decide for one model
/// ([`Scheduler::record_score`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The model goes on: it may train until `until` epochs in all, where
    /// the search decides on it next (or its budget ends).
    Continue {
        /// The model.
        model: usize,
        /// Epochs it may complete before the next decision.
        until: usize,
    },
    /// The model's training is decided: it ends after `stop.epochs`
    /// epochs. A model promoted into its last epochs goes on
    /// ([`Decision::Continue`]); one whose budget the score ends where it
    /// is stops with [`Reason::Finished`].
    Stop {
        /// The model.
        model: usize,
        /// How long it trains in all, and why.
        stop: Stop,
    },
}

/// Units a worker holds at once: the one it trains and the one queued
/// behind it ([`Scheduler::queue_unit`]). Under the reproducible policy
/// the queue changes when a unit runs, never what it computes: a model's
/// visit order is fixed, so its weights are the same.
pub const WORKER_DEPTH: usize = 2;

/// One scheduling unit: one pass of `model` over `partition` in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unit {
    /// Index of the model configuration, `0..models`.
    pub model: usize,
    /// Index of the partition, `0..partitions`; also the worker that runs it.
    pub partition: usize,
    /// Epoch, `0..epochs`.
    pub epoch: usize,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model {} on partition {} in epoch {}",
            self.model, self.partition, self.epoch
        )
    }
}

/// How idle workers pick their next unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Fixed per-(seed, model, epoch) visit orders, most-remaining-work first,
    /// models run ahead across epochs: timing-independent weights.
    #[default]
    Reproducible,
    /// Cerebro's randomized policy with a global epoch barrier.
    Cerebro,
}

impl Policy {
    /// Every policy, in the order reports list them.
    pub const ALL: [Policy; 2] = [Policy::Reproducible, Policy::Cerebro];

    /// The lowercase name used on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Reproducible => "reproducible",
            Policy::Cerebro => "cerebro",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Units done out of units in the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units completed so far.
    pub done: u64,
    /// `models × partitions × epochs`.
    pub total: u64,
}

impl Progress {
    /// Completed fraction in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.done as f64 / self.total as f64
        }
    }
}

/// RNG streams: the ring drift of epoch `e` uses stream `e`, Cerebro's
/// draw `d` uses `CEREBRO_STREAM + d`; these two are used once each.
const TIE_STREAM: u64 = u64::MAX;
const LAYOUT_STREAM: u64 = u64::MAX - 1;
const CEREBRO_STREAM: u64 = 1 << 62;

/// A seeded, portable RNG for one purpose, so that each decision can be
/// recomputed from `(seed, stream)` alone — nothing but counters needs to be
/// checkpointed.
fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The reproducible policy's visit orders: every model's fixed starting
/// partition and one ring of partitions per epoch.
#[derive(Debug, Clone)]
struct Layout {
    /// Partition each model starts every epoch on.
    start: Vec<usize>,
    /// `rings[e]`: the cyclic order of the partitions in epoch `e`.
    rings: Vec<Vec<usize>>,
    /// `position[e][p]`: where partition `p` sits in `rings[e]`.
    position: Vec<Vec<usize>>,
}

impl Layout {
    fn new(models: usize, partitions: usize, epochs: usize, seed: u64) -> Self {
        let mut rng = rng(seed, LAYOUT_STREAM);
        let mut ring: Vec<usize> = (0..partitions).collect();
        ring.shuffle(&mut rng);
        let mut dealing: Vec<usize> = (0..models).collect();
        dealing.shuffle(&mut rng);
        let mut start = vec![0; models];
        for (i, &m) in dealing.iter().enumerate() {
            start[m] = ring[i % partitions];
        }
        let mut rings = Vec::with_capacity(epochs);
        for epoch in 0..epochs {
            if epoch > 0 && partitions > 2 {
                let i = crate::schedule::rng(seed, epoch as u64).random_range(0..partitions);
                ring.swap(i, (i + 1) % partitions);
            }
            rings.push(ring.clone());
        }
        let position = rings
            .iter()
            .map(|ring| {
                let mut pos = vec![0; partitions];
                for (i, &p) in ring.iter().enumerate() {
                    pos[p] = i;
                }
                pos
            })
            .collect();
        Layout {
            start,
            rings,
            position,
        }
    }

    /// The `step`-th partition `model` visits in `epoch`.
    fn partition(&self, model: usize, epoch: usize, step: usize) -> usize {
        let ring = &self.rings[epoch];
        ring[(self.position[epoch][self.start[model]] + step) % ring.len()]
    }
}

/// The partition order of `model` in `epoch` under [`Policy::Reproducible`]:
/// a permutation of `0..partitions` that depends only on the arguments.
///
/// Training a model sequentially over the partitions in this order, epoch by
/// epoch, gives the same weights as a MOP run with the same seed.
pub fn visit_order(
    models: usize,
    partitions: usize,
    seed: u64,
    model: usize,
    epoch: usize,
) -> Result<Vec<usize>> {
    check_sizes(models, partitions, 1)?;
    if model >= models {
        return Err(Error::Config(format!(
            "model {model} out of range: the grid has {models} models"
        )));
    }
    let layout = Layout::new(models, partitions, epoch + 1, seed);
    Ok((0..partitions)
        .map(|s| layout.partition(model, epoch, s))
        .collect())
}

/// The models in the order of their seeded ranks: the reproducible
/// policy's tie-break among equally advanced models, and so the order in
/// which they tend to reach a search's decision points.
fn arrival_order(models: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..models).collect();
    order.shuffle(&mut rng(seed, TIE_STREAM));
    order
}

fn check_sizes(models: usize, partitions: usize, epochs: usize) -> Result<()> {
    for (what, n) in [
        ("models", models),
        ("partitions", partitions),
        ("epochs", epochs),
    ] {
        if n == 0 {
            return Err(Error::Config(format!(
                "the number of {what} must be at least 1"
            )));
        }
    }
    Ok(())
}

/// What is checkpointed: the minimum from which everything else is rebuilt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    models: usize,
    partitions: usize,
    epochs: usize,
    seed: u64,
    policy: Policy,
    model: Vec<ModelState>,
    /// Random draws made so far by the Cerebro policy.
    draws: u64,
    /// The search that decides how long each model trains; none: every
    /// model trains every epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    search: Option<Pruner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ModelState {
    /// Current epoch; `epochs` once the model is finished.
    epoch: usize,
    /// Partitions completed in the current epoch, in order.
    done: Vec<usize>,
    /// Partition the model is training on right now.
    running: Option<usize>,
}

/// A set of models with O(log n) insert, remove and "k-th smallest" (a
/// Fenwick tree of counts), so the Cerebro policy draws uniformly without
/// scanning all models, and its draw depends only on the set's contents —
/// not on insertion history, which a resume does not reproduce.
#[derive(Debug, Clone, Default)]
struct CountingSet {
    tree: Vec<u32>,
    present: Vec<bool>,
    len: usize,
}

impl CountingSet {
    fn with_capacity(n: usize) -> Self {
        CountingSet {
            tree: vec![0; n + 1],
            present: vec![false; n],
            len: 0,
        }
    }

    fn update(&mut self, x: usize, add: bool) {
        let mut i = x + 1;
        while i < self.tree.len() {
            if add {
                self.tree[i] += 1;
            } else {
                self.tree[i] -= 1;
            }
            i += i & i.wrapping_neg();
        }
    }

    fn insert(&mut self, x: usize) {
        if !std::mem::replace(&mut self.present[x], true) {
            self.len += 1;
            self.update(x, true);
        }
    }

    fn remove(&mut self, x: usize) {
        if std::mem::replace(&mut self.present[x], false) {
            self.len -= 1;
            self.update(x, false);
        }
    }

    /// The `k`-th smallest element (0-based); `k < len`.
    fn nth(&self, k: usize) -> usize {
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut rest = k as u32 + 1;
        let mut step = n.checked_next_power_of_two().unwrap_or(0);
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] < rest {
                pos = next;
                rest -= self.tree[next];
            }
            step >>= 1;
        }
        pos
    }
}

/// Priority key of a waiting model: most remaining units first, then the
/// seeded rank, then the model index (which makes keys unique).
type QueueKey = (Reverse<usize>, usize, usize);

/// Derived lookup structures, rebuilt from [`State`] on resume.
#[derive(Debug, Clone)]
struct Index {
    /// The models each worker holds, in the order it runs them (at most
    /// [`WORKER_DEPTH`]).
    on_worker: Vec<Vec<usize>>,
    units_done: u64,
    // Reproducible policy.
    layout: Option<Layout>,
    rank: Vec<usize>,
    queues: Vec<BTreeSet<QueueKey>>,
    // Cerebro policy.
    candidates: Vec<CountingSet>,
    global_epoch: usize,
    behind: usize,
}

/// The MOP scheduler. See the [module docs](self) for the model and policies.
#[derive(Debug, Clone)]
pub struct Scheduler {
    state: State,
    index: Index,
}

impl Scheduler {
    /// A fresh schedule of `models × partitions × epochs` units.
    pub fn new(
        models: usize,
        partitions: usize,
        epochs: usize,
        seed: u64,
        policy: Policy,
    ) -> Result<Self> {
        Self::with_search(models, partitions, epochs, seed, policy, Rule::Full)
    }

    /// A fresh schedule in which `rule` decides how many of the `epochs`
    /// each model trains (see [`crate::search`]): a model that reaches a
    /// decision point waits for its score ([`record_score`](Self::record_score)).
    pub fn with_search(
        models: usize,
        partitions: usize,
        epochs: usize,
        seed: u64,
        policy: Policy,
        rule: Rule,
    ) -> Result<Self> {
        Self::with_stopping(models, partitions, epochs, seed, policy, rule, None)
    }

    /// [`with_search`](Self::with_search), with early stopping after
    /// `patience` epochs without improvement (see [`crate::search`]): a
    /// model then waits for its score after every epoch.
    pub fn with_stopping(
        models: usize,
        partitions: usize,
        epochs: usize,
        seed: u64,
        policy: Policy,
        rule: Rule,
        patience: Option<usize>,
    ) -> Result<Self> {
        check_sizes(models, partitions, epochs)?;
        let search = match rule {
            Rule::Full if patience.is_none() => None,
            rule if policy == Policy::Reproducible => Some(
                Pruner::new(rule, epochs, arrival_order(models, seed))?.with_patience(patience),
            ),
            _ => {
                return Err(Error::Config(format!(
                    "a search that stops models needs the reproducible policy, not {policy}: \
                     the {policy} policy's epoch barrier would wait for stopped models"
                )))
            }
        };
        let state = State {
            models,
            partitions,
            epochs,
            seed,
            policy,
            model: vec![
                ModelState {
                    epoch: 0,
                    done: Vec::new(),
                    running: None
                };
                models
            ],
            draws: 0,
            search,
        };
        Self::from_state(state)
    }

    /// Number of models.
    pub fn models(&self) -> usize {
        self.state.models
    }

    /// Number of partitions (= workers).
    pub fn partitions(&self) -> usize {
        self.state.partitions
    }

    /// Number of epochs.
    pub fn epochs(&self) -> usize {
        self.state.epochs
    }

    /// Seed of every random choice.
    pub fn seed(&self) -> u64 {
        self.state.seed
    }

    /// The policy this schedule follows.
    pub fn policy(&self) -> Policy {
        self.state.policy
    }

    /// The partition order of `model` in `epoch` under the reproducible
    /// policy (see the free function [`visit_order`]).
    pub fn visit_order(&self, model: usize, epoch: usize) -> Result<Vec<usize>> {
        visit_order(
            self.state.models,
            self.state.partitions,
            self.state.seed,
            model,
            epoch,
        )
    }

    /// The epoch `model` is in (`epochs` once it finished).
    pub fn model_epoch(&self, model: usize) -> Result<usize> {
        self.check_model(model)?;
        Ok(self.state.model[model].epoch)
    }

    /// Units handed out and neither completed nor requeued, by worker (a
    /// worker's queued unit after the one it runs).
    pub fn running(&self) -> Vec<Unit> {
        self.index
            .on_worker
            .iter()
            .enumerate()
            .flat_map(|(partition, models)| {
                models.iter().map(move |&model| Unit {
                    model,
                    partition,
                    epoch: self.state.model[model].epoch,
                })
            })
            .collect()
    }

    /// Units worker `w` holds: the one it runs and any queued behind it.
    pub fn held(&self, w: usize) -> usize {
        self.index.on_worker.get(w).map_or(0, Vec::len)
    }

    /// Units done out of the total.
    pub fn progress(&self) -> Progress {
        Progress {
            done: self.index.units_done,
            total: self.total_units(),
        }
    }

    /// Whether every model finished every epoch.
    pub fn is_done(&self) -> bool {
        self.index.units_done == self.total_units()
    }

    /// Units of the whole run: every epoch of every model, less those a
    /// search has already ruled out.
    fn total_units(&self) -> u64 {
        let epochs: u64 = match &self.state.search {
            None => (self.state.models as u64) * (self.state.epochs as u64),
            Some(p) => (0..self.state.models)
                .map(|m| p.fate(m).map_or(self.state.epochs, |f| f.epochs) as u64)
                .sum(),
        };
        epochs * self.state.partitions as u64
    }

    /// Epochs `model` may complete before the search decides on it (all
    /// epochs without a search).
    fn limit(&self, model: usize) -> usize {
        self.state
            .search
            .as_ref()
            .map_or(self.state.epochs, |p| p.limit(model))
    }

    /// The search's state, if the schedule has one that stops models.
    pub fn search(&self) -> Option<&Pruner> {
        self.state.search.as_ref()
    }

    /// How long `model` trains in all and why, once decided (always, without
    /// a search).
    pub fn fate(&self, model: usize) -> Result<Option<Stop>> {
        self.check_model(model)?;
        Ok(match &self.state.search {
            None => Some(Stop {
                epochs: self.state.epochs,
                reason: crate::search::Reason::Finished,
            }),
            Some(p) => p.fate(model),
        })
    }

    /// Whether `model` waits for its score before it can go on.
    pub fn waits_for_score(&self, model: usize) -> bool {
        let m = &self.state.model[model];
        self.state
            .search
            .as_ref()
            .is_some_and(|p| m.running.is_none() && p.waits(model, m.epoch))
    }

    /// Reports `model`'s validation score (higher is better) after epoch
    /// `epoch` (0-based). The search takes every decision that becomes
    /// possible; models it lets go on become runnable. Returns those
    /// decisions, in model order (a score may decide for other models too:
    /// the one that completes a rung ranks all of it). Scores of epochs that
    /// decide nothing are ignored; a score for an epoch the model has not
    /// finished is an error.
    pub fn record_score(
        &mut self,
        model: usize,
        epoch: usize,
        score: f64,
    ) -> Result<Vec<Decision>> {
        self.check_model(model)?;
        if self.state.model[model].epoch <= epoch {
            return Err(Error::Schedule(format!(
                "a score for model {model} after epoch {epoch}, which it has not finished"
            )));
        }
        let Some(p) = self.state.search.as_mut() else {
            return Ok(Vec::new());
        };
        let before: Vec<(usize, Option<Stop>)> = (0..self.state.models)
            .map(|m| (p.limit(m), p.fate(m)))
            .collect();
        for m in p.record(model, epoch + 1, score)? {
            self.enqueue(m);
        }
        let Some(p) = self.state.search.as_ref() else {
            return Ok(Vec::new());
        };
        let decisions = before
            .into_iter()
            .enumerate()
            .filter_map(|(m, (limit, fate))| match p.fate(m) {
                Some(stop) if fate != Some(stop) && stop.reason != Reason::Finished => {
                    Some(Decision::Stop { model: m, stop })
                }
                _ if p.limit(m) > limit => Some(Decision::Continue {
                    model: m,
                    until: p.limit(m),
                }),
                Some(stop) if fate != Some(stop) => Some(Decision::Stop { model: m, stop }),
                _ => None,
            })
            .collect();
        Ok(decisions)
    }

    /// The next unit for `idle_worker`, or `None` if none is runnable for it
    /// now (ask again after the next [`complete`](Self::complete) or
    /// [`requeue`](Self::requeue)) — also `None` if that worker already runs a
    /// unit or does not exist.
    pub fn next_unit(&mut self, idle_worker: usize) -> Option<Unit> {
        if self.held(idle_worker) != 0 {
            return None;
        }
        self.hand_out(idle_worker)
    }

    /// The unit `busy_worker` runs after the one it runs now, handed out
    /// ahead of time so that the model's state reaches the worker while it
    /// trains; `None` if none is runnable for it now, or if the worker is
    /// idle (ask [`next_unit`](Self::next_unit)) or already has one queued.
    ///
    /// The queued model is taken off the other workers' queues until its
    /// unit ends, exactly as a running one is.
    pub fn queue_unit(&mut self, busy_worker: usize) -> Option<Unit> {
        let held = self.held(busy_worker);
        if held == 0 || held >= WORKER_DEPTH {
            return None;
        }
        self.hand_out(busy_worker)
    }

    /// Picks the next model for worker `w` by the policy and hands it out.
    fn hand_out(&mut self, w: usize) -> Option<Unit> {
        if w >= self.state.partitions {
            return None;
        }
        let model = match self.state.policy {
            Policy::Reproducible => {
                let key = self.index.queues[w].pop_first()?;
                key.2
            }
            Policy::Cerebro => {
                let n = self.index.candidates[w].len;
                if n == 0 {
                    return None;
                }
                let k = rng(
                    self.state.seed,
                    CEREBRO_STREAM.wrapping_add(self.state.draws),
                )
                .random_range(0..n);
                self.state.draws += 1;
                let model = self.index.candidates[w].nth(k);
                for set in &mut self.index.candidates {
                    set.remove(model);
                }
                model
            }
        };
        let m = &mut self.state.model[model];
        m.running = Some(w);
        self.index.on_worker[w].push(model);
        Some(Unit {
            model,
            partition: w,
            epoch: m.epoch,
        })
    }

    /// Records that `unit` finished: the model moves on to its next
    /// partition (or epoch). Errors if `unit` is not running.
    pub fn complete(&mut self, unit: Unit) -> Result<()> {
        self.stop(unit)?;
        let partitions = self.state.partitions;
        let m = &mut self.state.model[unit.model];
        m.done.push(unit.partition);
        if m.done.len() == partitions {
            m.done.clear();
            m.epoch += 1;
        }
        self.index.units_done += 1;
        if self.state.policy == Policy::Cerebro && m.epoch > self.index.global_epoch {
            self.index.behind -= 1;
            if self.index.behind == 0 && self.index.global_epoch + 1 < self.state.epochs {
                self.index.global_epoch += 1;
                self.index.behind = self.state.models;
                for model in 0..self.state.models {
                    self.enqueue(model);
                }
            }
            return Ok(());
        }
        self.enqueue(unit.model);
        Ok(())
    }

    /// Whether `unit`, handed out now, is its model's last of its epoch:
    /// the model's state after it is the state the epoch ends with.
    pub fn ends_epoch(&self, unit: Unit) -> bool {
        self.state
            .model
            .get(unit.model)
            .is_some_and(|m| m.epoch == unit.epoch && m.done.len() + 1 == self.state.partitions)
    }

    /// Sends `model` back to the start of its current epoch, so the units it
    /// did in this epoch run again; returns how many. For a runner that
    /// lost the model's state since (the trainer that kept it died) and
    /// holds the one the epoch began with: under the reproducible policy
    /// the units run again in the same order from the same state, so the
    /// weights come out the same. Errors if the model is handed out.
    pub fn restart_epoch(&mut self, model: usize) -> Result<usize> {
        self.check_model(model)?;
        let m = &self.state.model[model];
        if let Some(w) = m.running {
            return Err(Error::Schedule(format!(
                "model {model} cannot restart its epoch while worker {w} holds it"
            )));
        }
        let undone = m.done.len();
        if undone > 0 {
            let mut state = self.state.clone();
            state.model[model].done.clear();
            *self = Self::from_state(state)?;
        }
        Ok(undone)
    }

    /// Records that `unit` failed (its trainer died): the unit runs again
    /// later, starting from the model's state before it. Errors if `unit` is
    /// not running.
    pub fn requeue(&mut self, unit: Unit) -> Result<()> {
        self.stop(unit)?;
        self.enqueue(unit.model);
        Ok(())
    }

    fn check_model(&self, model: usize) -> Result<()> {
        if model >= self.state.models {
            return Err(Error::Schedule(format!(
                "model {model} out of range: the schedule has {} models",
                self.state.models
            )));
        }
        Ok(())
    }

    /// Takes `unit` off its worker after checking it is the one running there.
    fn stop(&mut self, unit: Unit) -> Result<()> {
        self.check_model(unit.model)?;
        let m = &mut self.state.model[unit.model];
        if m.running != Some(unit.partition) || m.epoch != unit.epoch {
            return Err(Error::Schedule(format!(
                "{unit} is not running (stale or duplicate report?)"
            )));
        }
        m.running = None;
        self.index.on_worker[unit.partition].retain(|&held| held != unit.model);
        Ok(())
    }

    /// Makes an idle model available to the workers it may go to next.
    fn enqueue(&mut self, model: usize) {
        let m = &self.state.model[model];
        if m.epoch >= self.limit(model) || m.running.is_some() {
            return;
        }
        match self.state.policy {
            Policy::Reproducible => {
                let Some(layout) = &self.index.layout else {
                    return;
                };
                let partition = layout.partition(model, m.epoch, m.done.len());
                let remaining =
                    (self.state.epochs - m.epoch) * self.state.partitions - m.done.len();
                let key = (Reverse(remaining), self.index.rank[model], model);
                self.index.queues[partition].insert(key);
            }
            Policy::Cerebro => {
                if m.epoch != self.index.global_epoch {
                    return;
                }
                for p in 0..self.state.partitions {
                    if !m.done.contains(&p) {
                        self.index.candidates[p].insert(model);
                    }
                }
            }
        }
    }

    /// Validates a (possibly deserialized) state and builds its index.
    fn from_state(state: State) -> Result<Self> {
        let State {
            models,
            partitions,
            epochs,
            seed,
            policy,
            ..
        } = state;
        check_sizes(models, partitions, epochs)?;
        let corrupt = |what: String| Err(Error::Schedule(format!("corrupt checkpoint: {what}")));
        if state.model.len() != models {
            return corrupt(format!(
                "state for {} models, expected {models}",
                state.model.len()
            ));
        }
        let layout = match policy {
            Policy::Reproducible => Some(Layout::new(models, partitions, epochs, seed)),
            Policy::Cerebro => None,
        };
        let global_epoch = state.model.iter().map(|m| m.epoch).min().unwrap_or(0);
        let mut on_worker = vec![Vec::new(); partitions];
        let mut units_done = 0u64;
        for (i, m) in state.model.iter().enumerate() {
            if m.epoch > epochs
                || (m.epoch == epochs && (!m.done.is_empty() || m.running.is_some()))
            {
                return corrupt(format!("model {i} is past the last epoch"));
            }
            let mut seen = vec![false; partitions];
            for (step, &p) in m.done.iter().chain(m.running.iter()).enumerate() {
                if p >= partitions || std::mem::replace(&mut seen[p], true) {
                    return corrupt(format!(
                        "model {i} visits partition {p} twice or out of range"
                    ));
                }
                if layout
                    .as_ref()
                    .is_some_and(|l| l.partition(i, m.epoch, step) != p)
                {
                    return corrupt(format!("model {i} left its visit order at partition {p}"));
                }
            }
            if m.done.len() == partitions {
                return corrupt(format!(
                    "model {i} finished epoch {} without moving on",
                    m.epoch
                ));
            }
            if let Some(p) = &state.search {
                let limit = p.limit(i);
                if m.epoch > limit
                    || (m.epoch == limit && (!m.done.is_empty() || m.running.is_some()))
                {
                    return corrupt(format!("model {i} trained past its search limit"));
                }
            }
            if policy == Policy::Cerebro
                && m.epoch > global_epoch
                && (m.epoch > global_epoch + 1 || !m.done.is_empty() || m.running.is_some())
            {
                return corrupt(format!("model {i} is ahead of the epoch barrier"));
            }
            if let Some(p) = m.running {
                if on_worker[p].len() >= WORKER_DEPTH {
                    return corrupt(format!(
                        "more than {WORKER_DEPTH} models held by worker {p}"
                    ));
                }
                on_worker[p].push(i);
            }
            units_done += (m.epoch * partitions + m.done.len()) as u64;
        }
        if state.search.is_some() && policy != Policy::Reproducible {
            return corrupt("a search under the cerebro policy".into());
        }
        if state.search.as_ref().is_some_and(|p| p.models() != models) {
            return corrupt("a search over another number of models".into());
        }
        let mut rank = vec![0; models];
        for (r, &m) in arrival_order(models, seed).iter().enumerate() {
            rank[m] = r;
        }
        let behind = state
            .model
            .iter()
            .filter(|m| m.epoch == global_epoch)
            .count();
        let index = Index {
            on_worker,
            units_done,
            layout,
            rank,
            queues: vec![BTreeSet::new(); partitions],
            candidates: match policy {
                Policy::Cerebro => vec![CountingSet::with_capacity(models); partitions],
                Policy::Reproducible => Vec::new(),
            },
            global_epoch,
            behind,
        };
        let mut scheduler = Scheduler { state, index };
        // Models are enqueued in model order on a fresh start and on resume
        // alike, so a resumed run makes exactly the choices of an
        // uninterrupted one.
        for model in 0..models {
            scheduler.enqueue(model);
        }
        Ok(scheduler)
    }
}

impl Serialize for Scheduler {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Scheduler {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = State::deserialize(deserializer)?;
        Scheduler::from_state(state).map_err(serde::de::Error::custom)
    }
}

impl PartialEq for Scheduler {
    /// Two schedulers are equal when their checkpoints are.
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::Rng;

    use super::*;

    fn drain(sched: &mut Scheduler) -> Vec<Unit> {
        let mut order = Vec::new();
        while !sched.is_done() {
            let running: Vec<Unit> = (0..sched.partitions())
                .filter_map(|w| sched.next_unit(w))
                .collect();
            assert!(!running.is_empty(), "stalled at {:?}", sched.progress());
            for unit in running {
                sched.complete(unit).unwrap();
                order.push(unit);
            }
        }
        order
    }

    #[test]
    fn a_busy_worker_gets_one_unit_queued_and_keeps_its_model_from_the_others() {
        let mut sched = Scheduler::new(6, 2, 2, 3, Policy::Reproducible).unwrap();
        assert_eq!(sched.queue_unit(0), None, "an idle worker asks next_unit");
        let first = sched.next_unit(0).unwrap();
        let queued = sched.queue_unit(0).unwrap();
        assert_eq!(queued.partition, 0);
        assert_ne!(queued.model, first.model);
        assert_eq!(sched.queue_unit(0), None, "one queued unit per worker");
        assert_eq!(sched.next_unit(0), None);
        assert_eq!(sched.held(0), WORKER_DEPTH);
        assert_eq!(sched.running(), vec![first, queued]);
        // Neither model is offered to the other worker while worker 0 holds it.
        while let Some(u) = sched.next_unit(1) {
            assert!(u.model != first.model && u.model != queued.model, "{u}");
            sched.complete(u).unwrap();
        }
        sched.complete(first).unwrap();
        assert_eq!(sched.running(), vec![queued]);
        assert!(sched.queue_unit(0).is_some());
        // A checkpoint requeues both; resumed, they are handed out again.
        for u in sched.running() {
            sched.requeue(u).unwrap();
        }
        let back: Scheduler =
            serde_json::from_str(&serde_json::to_string(&sched).unwrap()).unwrap();
        assert_eq!(back, sched);
        assert_eq!(back.held(0), 0);
    }

    #[test]
    fn a_restarted_epoch_runs_its_units_again_in_the_same_order() {
        for policy in [Policy::Reproducible, Policy::Cerebro] {
            let (models, w, epochs) = (4, 3, 2);
            let mut sched = Scheduler::new(models, w, epochs, 5, policy).unwrap();
            // Every model's partitions, per epoch, in the order they ended.
            let mut visits = vec![vec![Vec::new(); epochs]; models];
            let mut restarted = false;
            let mut turn = 0;
            while !sched.is_done() {
                let Some(u) = sched.next_unit(turn % w) else {
                    turn += 1;
                    continue;
                };
                turn += 1;
                assert!(sched.restart_epoch(u.model).is_err(), "handed out: {u}");
                let ends = sched.ends_epoch(u);
                sched.complete(u).unwrap();
                assert_eq!(ends, sched.model_epoch(u.model).unwrap() > u.epoch, "{u}");
                visits[u.model][u.epoch].push(u.partition);
                // Model 0 loses the state of its first two units of epoch 1.
                if !restarted && u.model == 0 && u.epoch == 1 && visits[0][1].len() == 2 {
                    let before = sched.progress().done;
                    assert_eq!(sched.restart_epoch(0).unwrap(), 2);
                    assert_eq!(sched.progress().done, before - 2);
                    assert_eq!(sched.model_epoch(0).unwrap(), 1);
                    let lost = std::mem::take(&mut visits[0][1]);
                    if policy == Policy::Reproducible {
                        assert_eq!(lost, sched.visit_order(0, 1).unwrap()[..2]);
                    }
                    restarted = true;
                }
            }
            assert!(restarted, "{policy}");
            for (m, epochs) in visits.iter().enumerate() {
                for (e, ps) in epochs.iter().enumerate() {
                    let mut sorted = ps.clone();
                    sorted.sort();
                    assert_eq!(
                        sorted,
                        (0..w).collect::<Vec<_>>(),
                        "{policy} model {m} epoch {e}"
                    );
                    if policy == Policy::Reproducible {
                        assert_eq!(*ps, sched.visit_order(m, e).unwrap(), "model {m} epoch {e}");
                    }
                }
            }
            assert_eq!(
                sched.restart_epoch(0).unwrap(),
                0,
                "a finished model has nothing to undo"
            );
        }
    }

    #[test]
    fn units_queued_ahead_keep_every_model_on_its_visit_order() {
        for (s, w) in [(1, 1), (2, 4), (5, 3), (16, 2)] {
            let mut sched = Scheduler::new(s, w, 3, 11, Policy::Reproducible).unwrap();
            let mut units = Vec::new();
            // Each worker runs its units in the order handed out, the
            // queued one after the running one; workers take turns.
            let mut held: Vec<std::collections::VecDeque<Unit>> = vec![Default::default(); w];
            let mut turn = 0;
            while !sched.is_done() {
                for (q, queue) in held.iter_mut().enumerate() {
                    if queue.is_empty() {
                        queue.extend(sched.next_unit(q));
                    }
                    if queue.len() == 1 {
                        queue.extend(sched.queue_unit(q));
                    }
                }
                let q = (0..w)
                    .map(|k| (turn + k) % w)
                    .find(|&q| !held[q].is_empty())
                    .expect("stalled");
                turn += 1;
                let u = held[q].pop_front().unwrap();
                sched.complete(u).unwrap();
                units.push(u);
            }
            assert_eq!(units.len(), s * w * 3);
            for m in 0..s {
                for e in 0..3 {
                    let visited: Vec<usize> = units
                        .iter()
                        .filter(|u| u.model == m && u.epoch == e)
                        .map(|u| u.partition)
                        .collect();
                    assert_eq!(
                        visited,
                        visit_order(s, w, 11, m, e).unwrap(),
                        "model {m} epoch {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn visit_orders_are_permutations_that_change_between_epochs() {
        for (models, partitions) in [(1, 1), (3, 8), (16, 8), (20, 3)] {
            for model in 0..models {
                for epoch in 0..5 {
                    let mut order = visit_order(models, partitions, 42, model, epoch).unwrap();
                    order.sort_unstable();
                    assert_eq!(order, (0..partitions).collect::<Vec<_>>());
                }
            }
        }
        let orders: Vec<_> = (0..10)
            .map(|e| visit_order(16, 8, 42, 0, e).unwrap())
            .collect();
        assert!(orders.windows(2).any(|w| w[0] != w[1]), "{orders:?}");
        assert_ne!(
            visit_order(16, 8, 1, 0, 0).unwrap(),
            visit_order(16, 8, 2, 0, 0).unwrap()
        );
    }

    #[test]
    fn models_follow_their_visit_order_and_finish_every_unit() {
        for (s, w) in [(1, 4), (3, 8), (8, 8), (20, 4)] {
            let mut sched = Scheduler::new(s, w, 3, 9, Policy::Reproducible).unwrap();
            let units = drain(&mut sched);
            assert_eq!(units.len(), s * w * 3);
            assert_eq!(
                sched.progress(),
                Progress {
                    done: (s * w * 3) as u64,
                    total: (s * w * 3) as u64
                }
            );
            for m in 0..s {
                let visited: Vec<usize> = units
                    .iter()
                    .filter(|u| u.model == m)
                    .map(|u| u.partition)
                    .collect();
                let expected: Vec<usize> = (0..3)
                    .flat_map(|e| sched.visit_order(m, e).unwrap())
                    .collect();
                assert_eq!(visited, expected, "model {m}");
            }
        }
    }

    #[test]
    fn a_busy_or_unknown_worker_gets_nothing() {
        let mut sched = Scheduler::new(4, 2, 1, 0, Policy::Cerebro).unwrap();
        let unit = sched.next_unit(0).unwrap();
        assert_eq!(sched.next_unit(0), None);
        assert_eq!(sched.next_unit(2), None);
        assert_eq!(sched.running(), vec![unit]);
    }

    #[test]
    fn stale_reports_are_rejected_without_changing_state() {
        let mut sched = Scheduler::new(2, 2, 1, 0, Policy::Reproducible).unwrap();
        let unit = sched.next_unit(0).unwrap();
        let before = sched.clone();
        let wrong = Unit {
            partition: 1,
            ..unit
        };
        assert!(matches!(sched.complete(wrong), Err(Error::Schedule(_))));
        assert!(matches!(
            sched.requeue(Unit { model: 9, ..unit }),
            Err(Error::Schedule(_))
        ));
        assert_eq!(sched, before);
        sched.complete(unit).unwrap();
        assert!(matches!(sched.complete(unit), Err(Error::Schedule(_))));
    }

    #[test]
    fn requeued_unit_runs_again_from_the_same_place() {
        let mut sched = Scheduler::new(1, 3, 1, 5, Policy::Reproducible).unwrap();
        let unit = sched
            .next_unit(sched.visit_order(0, 0).unwrap()[0])
            .unwrap();
        sched.requeue(unit).unwrap();
        assert_eq!(sched.progress().done, 0);
        assert_eq!(sched.next_unit(unit.partition), Some(unit));
    }

    #[test]
    fn empty_grids_are_config_errors() {
        for (s, w, e) in [(0, 1, 1), (1, 0, 1), (1, 1, 0)] {
            assert!(matches!(
                Scheduler::new(s, w, e, 0, Policy::Reproducible),
                Err(Error::Config(_))
            ));
        }
        assert!(matches!(visit_order(2, 2, 0, 2, 0), Err(Error::Config(_))));
    }

    #[test]
    fn resume_continues_exactly_where_the_checkpoint_was_taken() {
        for policy in Policy::ALL {
            let mut sched = Scheduler::new(5, 3, 2, 11, policy).unwrap();
            let mut full = sched.clone();
            let full_order = drain(&mut full);
            let first: Vec<Unit> = (0..3).filter_map(|w| sched.next_unit(w)).collect();
            sched.complete(first[0]).unwrap();
            let json = serde_json::to_string(&sched).unwrap();
            let mut resumed: Scheduler = serde_json::from_str(&json).unwrap();
            assert_eq!(resumed, sched);
            assert_eq!(resumed.running(), first[1..].to_vec());
            for unit in &first[1..] {
                resumed.complete(*unit).unwrap();
            }
            let mut order = first.clone();
            order.extend(drain(&mut resumed));
            assert_eq!(order, full_order, "{policy}");
            assert!(resumed.is_done());
        }
    }

    #[test]
    fn corrupt_checkpoints_are_refused() {
        let sched = Scheduler::new(2, 2, 1, 0, Policy::Reproducible).unwrap();
        let mut json: serde_json::Value = serde_json::to_value(&sched).unwrap();
        json["model"][0]["done"] = serde_json::json!([1, 1]);
        assert!(serde_json::from_value::<Scheduler>(json.clone()).is_err());
        json["model"][0]["done"] = serde_json::json!([]);
        json["model"][0]["running"] = serde_json::json!(0);
        json["model"][1]["running"] = serde_json::json!(0);
        assert!(serde_json::from_value::<Scheduler>(json).is_err());
        assert!(serde_json::from_str::<Scheduler>("{}").is_err());
    }

    /// A score per (model, epochs): coarse, so that ties happen.
    fn score(seed: u64, model: usize, epochs: usize) -> f64 {
        let mut r = rng(seed ^ 0x5c0e, (model * 1000 + epochs) as u64);
        (r.random_range(0..20u32) as f64) / 20.0
    }

    /// Drives a searching schedule with events in a random order: units
    /// complete in any order, scores arrive late and out of order, and the
    /// schedule may go through a checkpoint (running units requeued) at any
    /// point. Returns every unit run and each model's fate, after checking
    /// that no unit ran twice, that no model trained past its stop, and that
    /// no model went past a decision point before its score was in.
    fn drive(
        mut sched: Scheduler,
        scores: u64,
        events: u64,
        resume_at: Option<usize>,
        ahead: bool,
    ) -> std::result::Result<(Vec<Unit>, Vec<Stop>), String> {
        let mut ev = rng(events, 7);
        let mut running: Vec<Unit> = Vec::new();
        let mut pending: Vec<(usize, usize)> = Vec::new();
        let mut delivered: BTreeSet<(usize, usize)> = BTreeSet::new();
        let mut units: Vec<Unit> = Vec::new();
        let mut seen: BTreeSet<Unit> = BTreeSet::new();
        let mut step = 0;
        while !(sched.is_done() && running.is_empty() && pending.is_empty()) {
            step += 1;
            if step > 100_000 {
                return Err("no end".into());
            }
            if resume_at == Some(step) {
                for u in running.drain(..) {
                    sched.requeue(u).map_err(|e| e.to_string())?;
                }
                let json = serde_json::to_string(&sched).map_err(|e| e.to_string())?;
                let back: Scheduler = serde_json::from_str(&json).map_err(|e| e.to_string())?;
                if back != sched {
                    return Err("the checkpoint changed the schedule".into());
                }
                sched = back;
            }
            for w in 0..sched.partitions() {
                if let Some(u) = sched.next_unit(w) {
                    let p = sched.search().unwrap();
                    for d in p.points(u.model) {
                        if d <= u.epoch && !delivered.contains(&(u.model, d)) {
                            return Err(format!("{u} started before its score after {d} epochs"));
                        }
                    }
                    running.push(u);
                }
                if let Some(u) = ahead.then(|| sched.queue_unit(w)).flatten() {
                    running.push(u);
                }
            }
            let n = running.len() + pending.len();
            if n == 0 {
                return Err(format!("stalled at {:?}", sched.progress()));
            }
            let pick = ev.random_range(0..n);
            if pick < running.len() {
                let u = running.swap_remove(pick);
                sched.complete(u).map_err(|e| e.to_string())?;
                if !seen.insert(u) {
                    return Err(format!("{u} ran twice"));
                }
                units.push(u);
                if sched.model_epoch(u.model).unwrap() > u.epoch {
                    pending.push((u.model, u.epoch + 1));
                }
            } else {
                let (m, done) = pending.swap_remove(pick - running.len());
                delivered.insert((m, done));
                sched
                    .record_score(m, done - 1, score(scores, m, done))
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut fates = Vec::new();
        for m in 0..sched.models() {
            let fate = sched
                .fate(m)
                .unwrap()
                .ok_or(format!("model {m} undecided"))?;
            let mut trained: Vec<(usize, usize)> = units
                .iter()
                .filter(|u| u.model == m)
                .map(|u| (u.epoch, u.partition))
                .collect();
            trained.sort_unstable();
            let expected: Vec<(usize, usize)> = (0..fate.epochs)
                .flat_map(|e| (0..sched.partitions()).map(move |p| (e, p)))
                .collect();
            if trained != expected {
                return Err(format!(
                    "model {m} stopped at {fate:?} but trained {trained:?}"
                ));
            }
            fates.push(fate);
        }
        Ok((units, fates))
    }

    fn searches() -> impl Strategy<Value = (usize, usize, usize, Rule)> {
        (
            1usize..12,
            1usize..4,
            2usize..10,
            0usize..2,
            1usize..3,
            2usize..4,
            0usize..2,
        )
            .prop_map(|(s, w, e, kind, min, eta, skip)| {
                let rule = if kind == 0 {
                    Rule::Asha(crate::search::asha::Asha {
                        min_epochs: min.min(e - 1),
                        eta,
                        max_epochs: e,
                    })
                } else {
                    let h = crate::search::hyperband::Hyperband {
                        max_epochs: e,
                        eta,
                        skip_last: skip,
                    };
                    if h.brackets().is_ok() {
                        Rule::Hyperband(h)
                    } else {
                        Rule::Hyperband(crate::search::hyperband::Hyperband { skip_last: 0, ..h })
                    }
                };
                (s, w, e, rule)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Exactly-once units, no model past its stop, no promotion before
        /// its rung is complete, and decisions that depend on the scores
        /// only: another event order, or a checkpoint and resume on the way,
        /// ends with the same fates.
        #[test]
        fn searches_decide_from_scores_alone_and_run_every_unit_once(
            (s, w, e, rule) in searches(),
            seed in 0u64..1000,
            scores in 0u64..1000,
            events in 0u64..1000,
            resume_at in 1usize..200,
        ) {
            let sched = Scheduler::with_search(s, w, e, seed, Policy::Reproducible, rule).unwrap();
            let (_, fates) = drive(sched.clone(), scores, events, None, false)
                .map_err(TestCaseError::fail)?;
            let (_, again) = drive(sched.clone(), scores, events + 1, Some(resume_at), false)
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(&fates, &again);
            // Units handed out ahead of time change when units run, not
            // what the search decides.
            let (_, ahead) = drive(sched.clone(), scores, events + 2, Some(resume_at), true)
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(&fates, &ahead);
            prop_assert!(fates.iter().any(|f| f.reason == crate::search::Reason::Finished));
            prop_assert!(fates.iter().all(|f| f.epochs >= 1 && f.epochs <= e));
        }
    }

    #[test]
    fn the_score_that_completes_a_rung_returns_the_rungs_decisions() {
        // ASHA over 3 models, eta 3: after one epoch the best of the three
        // goes on, the other two stop at the rung.
        let rule = Rule::Asha(crate::search::asha::Asha {
            min_epochs: 1,
            eta: 3,
            max_epochs: 3,
        });
        let mut sched = Scheduler::with_search(3, 1, 3, 0, Policy::Reproducible, rule).unwrap();
        for _ in 0..3 {
            let u = sched.next_unit(0).unwrap();
            sched.complete(u).unwrap();
        }
        assert_eq!(sched.record_score(0, 0, 0.2).unwrap(), vec![]);
        assert_eq!(sched.record_score(1, 0, 0.9).unwrap(), vec![]);
        let decided = sched.record_score(2, 0, 0.5).unwrap();
        assert_eq!(decided.len(), 3, "{decided:?}");
        assert!(decided.contains(&Decision::Continue { model: 1, until: 3 }));
        for model in [0, 2] {
            assert!(
                decided.iter().any(|d| matches!(d,
                    Decision::Stop { model: m, stop } if *m == model && stop.epochs == 1)),
                "model {model} stops at the rung: {decided:?}"
            );
        }
        assert_eq!(
            sched.record_score(2, 0, 0.5).unwrap(),
            vec![],
            "decided once"
        );
    }

    #[test]
    fn a_search_needs_the_reproducible_policy() {
        let rule = Rule::Asha(crate::search::asha::Asha {
            min_epochs: 1,
            eta: 3,
            max_epochs: 4,
        });
        assert!(matches!(
            Scheduler::with_search(4, 2, 4, 0, Policy::Cerebro, rule),
            Err(Error::Config(m)) if m.contains("reproducible")
        ));
    }

    #[test]
    fn a_score_for_an_unfinished_epoch_is_refused() {
        let rule = Rule::Asha(crate::search::asha::Asha {
            min_epochs: 1,
            eta: 3,
            max_epochs: 4,
        });
        let mut sched = Scheduler::with_search(2, 1, 4, 0, Policy::Reproducible, rule).unwrap();
        assert!(matches!(
            sched.record_score(0, 0, 0.5),
            Err(Error::Schedule(_))
        ));
    }

    #[test]
    fn counting_set_picks_by_rank() {
        let mut set = CountingSet::with_capacity(10);
        for x in [7, 2, 9, 4] {
            set.insert(x);
        }
        set.remove(2);
        set.insert(7);
        assert_eq!(set.len, 3);
        assert_eq!(
            (0..3).map(|k| set.nth(k)).collect::<Vec<_>>(),
            vec![4, 7, 9]
        );
    }
}
