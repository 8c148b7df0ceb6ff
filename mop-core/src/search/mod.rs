//! Model selection beyond the full grid: which configurations to try
//! (`[grid]`'s cross product, or `samples` drawn at random from it) and how
//! long each one trains (all `train.epochs`, or until Hyperband or ASHA
//! stops it).
//!
//! ```toml
//! [search]
//! kind = "asha"      # grid (the default) | random | hyperband | asha
//! samples = 12       # draw 12 configurations from [grid] (required by "random");
//!                    # without it, asha and hyperband run over the grid's cross product
//! max_epochs = 9     # the most any model trains (default: train.epochs)
//! min_epochs = 1     # asha: the first rung
//! eta = 3            # asha and hyperband: keep the top 1/eta at each rung or round
//! skip_last = 0      # hyperband: leave out the last rounds of every bracket (MADlib's option)
//! ```
//!
//! # Design
//! The search is a pure policy, a [`Pruner`], that the scheduler consults;
//! it never touches a model. The scheduler asks it how many epochs a model
//! may complete before its next decision ([`Pruner::limit`]); a model that
//! gets there waits (it is handed to no worker) until the runner reports its
//! validation accuracy for that epoch ([`Pruner::record`]), and the pruner
//! then promotes it (a higher limit) or stops it (a [`Stop`] with the
//! reason). Every unit a model does run is the unit it would run without
//! search — same visit order, same state in — so a surviving model's
//! weights are byte-identical to training its configuration alone for the
//! same epochs.
//!
//! - **Early stopping** (`[train] patience = N`, with any rule): every
//!   epoch is a decision point; a model whose validation score has not
//!   improved on its best for `N` epochs stops there
//!   ([`Reason::Patience`]). Improvement is strict, so the best epoch is
//!   the earliest of equals.
//!
//! Scores are the run's `[train] metric` signed so that higher is better
//! ([`crate::metrics::Metric::signed`]): a loss of 0.3 is recorded as −0.3.
//!
//! A decision depends on validation scores and the seed only, never on
//! timing, so a resumed or failure-ridden run takes the same decisions as a
//! clean one; the pruner's state (scores and decisions) is part of the
//! scheduler's checkpoint.
//!
//! - **ASHA** ([`asha`]): rungs at `min_epochs · eta^k` epochs. A model that
//!   reaches a rung goes on if it is in the top `1/eta` of the models that
//!   reached that rung before it (at least the best one goes on), and stops
//!   otherwise — no rung ever has to fill. The first `eta` models at a rung
//!   are compared with one another, since the top third of one model is
//!   not a ranking. "Before it" is a seeded *arrival order* rather than the
//!   clock: a model is decided once every model ahead of it in that order
//!   has reached the rung or been stopped below it. The arrival order is
//!   the scheduler's own tie-break order, so the models ahead are the ones
//!   it runs first.
//! - **Hyperband** ([`hyperband`]): MADlib's schedule. Brackets
//!   `s = s_max..0` with `n_s` configurations starting at `max_epochs ·
//!   eta^-s` epochs; the configurations at hand are dealt to the brackets in
//!   proportion to `n_s`, and every bracket halves synchronously: once all
//!   its models finished round `i`, the best `⌊N_s · eta^-(i+1)⌋` go on.
//!   Brackets run concurrently, as MADlib runs them ("diagonally"), and
//!   one bracket's barrier never holds up another's models.

pub mod asha;
pub mod hyperband;
pub mod mst;
pub mod space;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `[search]` section of a run configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Which search.
    #[serde(default)]
    pub kind: SearchKind,
    /// Configurations drawn at random from `[grid]`'s lists and
    /// distributions (random search); without it, the cross product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    /// The most epochs any model trains (default: `train.epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_epochs: Option<usize>,
    /// ASHA: epochs of the first rung (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_epochs: Option<usize>,
    /// ASHA and Hyperband: the reduction factor (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<usize>,
    /// Hyperband: rounds left out at the end of every bracket (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_last: Option<usize>,
}

/// The kinds of search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchKind {
    /// Every configuration of the grid, every epoch.
    #[default]
    Grid,
    /// `samples` configurations drawn at random, every epoch.
    Random,
    /// Hyperband's brackets of synchronous successive halving.
    Hyperband,
    /// Asynchronous successive halving.
    Asha,
}

impl SearchKind {
    /// The lowercase name used in configurations and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SearchKind::Grid => "grid",
            SearchKind::Random => "random",
            SearchKind::Hyperband => "hyperband",
            SearchKind::Asha => "asha",
        }
    }
}

impl fmt::Display for SearchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl SearchConfig {
    /// Whether this is the default (the full grid): old configurations and
    /// checkpoints stay as they were.
    pub fn is_default(&self) -> bool {
        *self == SearchConfig::default()
    }

    /// The epochs of a run whose `[train]` says `train_epochs`.
    pub fn epochs(&self, train_epochs: usize) -> usize {
        self.max_epochs.unwrap_or(train_epochs)
    }

    /// Checks the section; errors say which key is wrong and what to do.
    pub fn validate(&self, train_epochs: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let kind = self.kind;
        if kind == SearchKind::Random && self.samples.is_none() {
            return bad(
                "search.kind = \"random\" needs search.samples = N (how many configurations to draw)"
                    .into(),
            );
        }
        if kind == SearchKind::Grid && self.samples.is_some() {
            return bad(
                "search.samples draws configurations at random: use kind = \"random\" \
                 (or \"asha\" / \"hyperband\"), or drop samples for the full grid"
                    .into(),
            );
        }
        if self.samples == Some(0) {
            return bad("search.samples must be at least 1".into());
        }
        let pruning = matches!(kind, SearchKind::Asha | SearchKind::Hyperband);
        for (key, set, allowed) in [
            ("max_epochs", self.max_epochs.is_some(), pruning),
            ("eta", self.eta.is_some(), pruning),
            (
                "min_epochs",
                self.min_epochs.is_some(),
                kind == SearchKind::Asha,
            ),
            (
                "skip_last",
                self.skip_last.is_some(),
                kind == SearchKind::Hyperband,
            ),
        ] {
            if set && !allowed {
                return bad(format!(
                    "search.{key} does not apply to kind = \"{kind}\" \
                     (max_epochs and eta are for asha and hyperband, min_epochs for asha, \
                     skip_last for hyperband); for a fixed number of epochs use train.epochs"
                ));
            }
        }
        if self.max_epochs == Some(0) {
            return bad("search.max_epochs must be at least 1".into());
        }
        if self.eta.is_some_and(|e| e < 2) {
            return bad(format!(
                "search.eta must be at least 2 (it keeps the top 1/eta), got {}",
                self.eta.unwrap_or_default()
            ));
        }
        self.rule(self.epochs(train_epochs)).map(|_| ())
    }

    /// The pruning rule over `epochs` epochs.
    pub fn rule(&self, epochs: usize) -> Result<Rule> {
        let eta = self.eta.unwrap_or(3);
        Ok(match self.kind {
            SearchKind::Grid | SearchKind::Random => Rule::Full,
            SearchKind::Asha => {
                let min_epochs = self.min_epochs.unwrap_or(1);
                if min_epochs == 0 || min_epochs >= epochs {
                    return Err(Error::Config(format!(
                        "search.min_epochs must be at least 1 and below max_epochs ({epochs}), \
                         got {min_epochs}: the first rung comes before the last epoch"
                    )));
                }
                Rule::Asha(asha::Asha {
                    min_epochs,
                    eta,
                    max_epochs: epochs,
                })
            }
            SearchKind::Hyperband => {
                let hb = hyperband::Hyperband {
                    max_epochs: epochs,
                    eta,
                    skip_last: self.skip_last.unwrap_or(0),
                };
                hb.brackets()?;
                Rule::Hyperband(hb)
            }
        })
    }
}

/// How long each model trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Rule {
    /// Every model trains every epoch.
    Full,
    /// Asynchronous successive halving.
    Asha(asha::Asha),
    /// Hyperband.
    Hyperband(hyperband::Hyperband),
}

impl Rule {
    /// Epochs after which some model may be stopped: ASHA's rungs, or
    /// every Hyperband round but a bracket's last.
    pub fn decision_epochs(&self) -> Vec<usize> {
        let mut v = match self {
            Rule::Full => Vec::new(),
            Rule::Asha(a) => a.rungs(),
            Rule::Hyperband(h) => h
                .brackets()
                .unwrap_or_default()
                .iter()
                .flat_map(|b| b.rounds[..b.rounds.len() - 1].to_vec())
                .collect(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    /// A one-line description, e.g. `ASHA: rungs at 1, 3 epochs, eta 3`.
    pub fn describe(&self) -> String {
        let list = |v: &[usize]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Rule::Full => "every model trains every epoch".into(),
            Rule::Asha(a) => format!(
                "ASHA: rungs at {} epochs, keep the top 1/{} at each, at most {} epochs",
                list(&a.rungs()),
                a.eta,
                a.max_epochs
            ),
            Rule::Hyperband(h) => format!(
                "Hyperband: R = {} epochs, eta {}, brackets {}",
                h.max_epochs,
                h.eta,
                h.brackets()
                    .unwrap_or_default()
                    .iter()
                    .map(|b| format!("s={} (rounds at {} epochs)", b.s, list(&b.rounds)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Why a model trained as long as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// It trained its whole budget (`max_epochs`, or the last round of its
    /// Hyperband bracket).
    Finished,
    /// ASHA stopped it at a rung: it was `place` (1 = best) of the `of`
    /// models that had reached the rung, and only the top `keep` went on.
    Rung {
        /// Rung index (0 = the first, at `min_epochs`).
        rung: usize,
        /// Its place, 1-based.
        place: usize,
        /// Models compared.
        of: usize,
        /// How many of them went on.
        keep: usize,
    },
    /// Early stopping: its validation score had not improved on the best,
    /// after epoch `best_epoch`, for `patience` epochs.
    Patience {
        /// The epoch (counted from 1) of its best score.
        best_epoch: usize,
        /// `[train] patience`.
        patience: usize,
    },
    /// Hyperband stopped it at the end of a round of its bracket.
    Round {
        /// The bracket's `s`.
        bracket: usize,
        /// Round index within the bracket.
        round: usize,
        /// Its place, 1-based.
        place: usize,
        /// Models in the round.
        of: usize,
        /// How many of them went on.
        keep: usize,
    },
}

/// Where and why a model's training ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// Epochs it trains in all.
    pub epochs: usize,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Finished => f.write_str("finished its budget"),
            Reason::Rung {
                rung,
                place,
                of,
                keep,
            } => write!(
                f,
                "stopped at rung {rung}: place {place} of {of}, the top {keep} went on"
            ),
            Reason::Patience {
                best_epoch,
                patience,
            } => write!(
                f,
                "stopped early: no improvement for {patience} epochs after its best, epoch {best_epoch}"
            ),
            Reason::Round {
                bracket,
                round,
                place,
                of,
                keep,
            } => write!(
                f,
                "stopped after round {round} of bracket {bracket}: place {place} of {of}, \
                 the top {keep} went on"
            ),
        }
    }
}

/// The search as a pure policy: per model, how far it may train before
/// its next decision, and the decisions taken. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PrunerState", into = "PrunerState")]
pub struct Pruner {
    rule: Rule,
    epochs: usize,
    /// Models in arrival order (ASHA's "before", Hyperband's dealing).
    order: Vec<usize>,
    /// `rank[m]`: position of `m` in `order`.
    rank: Vec<usize>,
    /// Per model: validation score (higher is better) after `e` epochs,
    /// at decision points only.
    scores: Vec<BTreeMap<usize, f64>>,
    /// Per model: epochs it may complete before its next decision.
    until: Vec<usize>,
    /// Per model: its final budget once decided.
    fate: Vec<Option<Stop>>,
    /// Hyperband: per model, its bracket (an index into the schedule).
    bracket: Vec<usize>,
    /// Early stopping: epochs without improvement before a model stops.
    patience: Option<usize>,
}

/// What a checkpoint holds of a [`Pruner`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PrunerState {
    rule: Rule,
    epochs: usize,
    order: Vec<usize>,
    scores: Vec<BTreeMap<usize, f64>>,
    until: Vec<usize>,
    fate: Vec<Option<Stop>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patience: Option<usize>,
}

impl From<Pruner> for PrunerState {
    fn from(p: Pruner) -> Self {
        PrunerState {
            rule: p.rule,
            epochs: p.epochs,
            order: p.order,
            scores: p.scores,
            until: p.until,
            fate: p.fate,
            patience: p.patience,
        }
    }
}

impl TryFrom<PrunerState> for Pruner {
    type Error = Error;

    fn try_from(s: PrunerState) -> Result<Self> {
        let models = s.order.len();
        let mut p = Pruner::new(s.rule, s.epochs, s.order)?.with_patience(s.patience);
        let corrupt = |m: &str| Error::Schedule(format!("corrupt checkpoint: search {m}"));
        if s.scores.len() != models || s.until.len() != models || s.fate.len() != models {
            return Err(corrupt("state is not one entry a model"));
        }
        for m in 0..models {
            if s.until[m] == 0 || s.until[m] > s.epochs {
                return Err(corrupt("limit out of range"));
            }
            if s.fate[m].is_some_and(|f| f.epochs != s.until[m]) {
                return Err(corrupt("decision disagrees with its limit"));
            }
        }
        p.scores = s.scores;
        p.until = s.until;
        p.fate = s.fate;
        Ok(p)
    }
}

impl Pruner {
    /// A fresh search over `order.len()` models (given in arrival order,
    /// a permutation of `0..models`) for at most `epochs` epochs.
    pub fn new(rule: Rule, epochs: usize, order: Vec<usize>) -> Result<Self> {
        let models = order.len();
        let mut rank = vec![usize::MAX; models];
        for (r, &m) in order.iter().enumerate() {
            if m >= models || rank[m] != usize::MAX {
                return Err(Error::Schedule(format!(
                    "the arrival order {order:?} is not a permutation of the models"
                )));
            }
            rank[m] = r;
        }
        let mut p = Pruner {
            rule,
            epochs,
            order,
            rank,
            scores: vec![BTreeMap::new(); models],
            until: vec![epochs; models],
            fate: vec![None; models],
            bracket: Vec::new(),
            patience: None,
        };
        match p.rule.clone() {
            Rule::Full => {
                p.fate = vec![Some(p.finished(epochs)); models];
            }
            Rule::Asha(a) => a.start(&mut p),
            Rule::Hyperband(h) => h.start(&mut p)?,
        }
        Ok(p)
    }

    /// The same search, with early stopping after `patience` epochs
    /// without improvement (none: without).
    pub fn with_patience(mut self, patience: Option<usize>) -> Self {
        self.patience = patience.filter(|&p| p > 0);
        self
    }

    /// Early stopping's patience, if any.
    pub fn patience(&self) -> Option<usize> {
        self.patience
    }

    /// Whether `model` was stopped before its budget (by the rule or by
    /// early stopping).
    fn stopped(&self, model: usize) -> bool {
        self.fate[model].is_some_and(|f| f.reason != Reason::Finished)
    }

    fn finished(&self, epochs: usize) -> Stop {
        Stop {
            epochs,
            reason: Reason::Finished,
        }
    }

    /// Number of models.
    pub fn models(&self) -> usize {
        self.order.len()
    }

    /// The rule it follows.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Epochs `model` may complete before its next decision (its whole
    /// budget once [`fate`](Self::fate) is known).
    pub fn limit(&self, model: usize) -> usize {
        let until = self.until[model];
        if self.patience.is_none() || self.stopped(model) {
            return until;
        }
        // Early stopping decides after every epoch: one past the last score.
        let scored = self.scores[model].keys().next_back().copied().unwrap_or(0);
        until.min(scored + 1)
    }

    /// The final budget of `model`, once decided.
    pub fn fate(&self, model: usize) -> Option<Stop> {
        self.fate[model]
    }

    /// Whether `model`, having completed `completed` epochs, waits for a
    /// decision (that is, for its score after them).
    pub fn waits(&self, model: usize, completed: usize) -> bool {
        let rule = self.fate[model].is_none() && completed == self.until[model];
        let patience = self.patience.is_some()
            && !self.stopped(model)
            && completed < self.until[model]
            && completed == self.limit(model);
        rule || patience
    }

    /// Records `model`'s score after `completed` epochs (higher is better;
    /// ties go to the model earlier in arrival order) and takes every
    /// decision that becomes possible. Scores of epochs that decide nothing
    /// are ignored. Returns the models that may train further now.
    pub fn record(&mut self, model: usize, completed: usize, score: f64) -> Result<Vec<usize>> {
        if model >= self.until.len() {
            return Err(Error::Schedule(format!("model {model} out of range")));
        }
        if !self.waits(model, completed) {
            return Ok(Vec::new());
        }
        if score.is_nan() {
            return Err(Error::Schedule(format!(
                "model {model} has no validation score after {completed} epochs: \
                 the search ranks models by their validation metric"
            )));
        }
        let before: Vec<usize> = (0..self.until.len()).map(|m| self.limit(m)).collect();
        self.scores[model].insert(completed, score);
        if let Some(patience) = self.patience {
            self.stop_if_stale(model, completed, patience);
        }
        match self.rule.clone() {
            Rule::Full => {}
            Rule::Asha(a) => a.decide(self),
            Rule::Hyperband(h) => h.decide(self),
        }
        Ok((0..self.until.len())
            .filter(|&m| self.limit(m) > before[m])
            .collect())
    }

    /// Early stopping: stops `model` after `completed` epochs if its best
    /// score (the earliest of equals) is `patience` or more epochs old.
    fn stop_if_stale(&mut self, model: usize, completed: usize, patience: usize) {
        if self.stopped(model) || (completed >= self.until[model] && self.fate[model].is_some()) {
            return;
        }
        let mut best: Option<(usize, f64)> = None;
        for (&e, &s) in &self.scores[model] {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((e, s));
            }
        }
        let Some((best_epoch, _)) = best else { return };
        if completed - best_epoch >= patience {
            self.until[model] = completed;
            self.fate[model] = Some(Stop {
                epochs: completed,
                reason: Reason::Patience {
                    best_epoch,
                    patience,
                },
            });
        }
    }

    /// `model`'s score after `epochs` epochs, if it was a decision point.
    pub fn score(&self, model: usize, epochs: usize) -> Option<f64> {
        self.scores[model].get(&epochs).copied()
    }

    /// Models among `candidates` ordered best first: score, then arrival.
    fn ranked(&self, candidates: &[usize], epochs: usize) -> Vec<usize> {
        let mut v = candidates.to_vec();
        v.sort_by(|&a, &b| {
            let (sa, sb) = (self.scores[a][&epochs], self.scores[b][&epochs]);
            sb.total_cmp(&sa).then(self.rank[a].cmp(&self.rank[b]))
        });
        v
    }

    /// Epochs after which `model` may be decided on (the rungs, or its
    /// bracket's rounds but the last).
    pub fn points(&self, model: usize) -> Vec<usize> {
        match &self.rule {
            Rule::Full => Vec::new(),
            Rule::Asha(a) => a.rungs(),
            Rule::Hyperband(h) => h
                .brackets()
                .ok()
                .and_then(|bs| bs.get(self.bracket[model]).cloned())
                .map(|b| b.rounds[..b.rounds.len() - 1].to_vec())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Policy, Scheduler};

    #[test]
    fn patience_stops_a_model_whose_score_stalls_and_ties_do_not_improve() {
        let mut p = Pruner::new(Rule::Full, 10, vec![0, 1])
            .unwrap()
            .with_patience(Some(2));
        // Every epoch is a decision point: limits move one epoch at a time.
        assert_eq!((p.limit(0), p.limit(1)), (1, 1));
        assert!(p.waits(0, 1));
        assert_eq!(p.record(0, 1, -0.5).unwrap(), vec![0]);
        assert_eq!(p.limit(0), 2);
        assert_eq!(p.record(0, 2, -0.4).unwrap(), vec![0]); // better
        assert_eq!(p.record(0, 3, -0.4).unwrap(), vec![0]); // a tie is no improvement
        assert!(p.record(0, 4, -0.45).unwrap().is_empty()); // two epochs after epoch 2
        assert_eq!(
            p.fate(0),
            Some(Stop {
                epochs: 4,
                reason: Reason::Patience {
                    best_epoch: 2,
                    patience: 2
                }
            })
        );
        assert_eq!(p.limit(0), 4);
        assert!(!p.waits(0, 4));
        // Model 1 improves every epoch and trains its budget.
        for e in 1..10 {
            assert_eq!(p.record(1, e, e as f64).unwrap(), vec![1]);
        }
        assert_eq!(p.limit(1), 10);
        assert_eq!(p.fate(1).unwrap().reason, Reason::Finished);
        // The decision and the scores survive a checkpoint.
        let back: Pruner = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.patience(), Some(2));
    }

    #[test]
    fn a_model_stopped_early_below_a_rung_does_not_hold_asha_up() {
        let rule = Rule::Asha(asha::Asha {
            min_epochs: 3,
            eta: 3,
            max_epochs: 9,
        });
        let mut p = Pruner::new(rule, 9, vec![0, 1])
            .unwrap()
            .with_patience(Some(1));
        p.record(0, 1, 0.5).unwrap();
        p.record(0, 2, 0.4).unwrap(); // stops model 0 at epoch 2, below the rung
        assert_eq!(p.fate(0).unwrap().epochs, 2);
        p.record(1, 1, 0.1).unwrap();
        p.record(1, 2, 0.2).unwrap();
        // Model 1 reaches rung 3 and, the only one there, goes on.
        assert_eq!(p.record(1, 3, 0.3).unwrap(), vec![1]);
        assert_eq!(p.limit(1), 4);
    }

    #[test]
    fn the_scheduler_holds_a_patient_model_until_its_score_arrives() {
        let mut s = Scheduler::with_stopping(1, 1, 5, 0, Policy::Reproducible, Rule::Full, Some(1))
            .unwrap();
        let u = s.next_unit(0).unwrap();
        s.complete(u).unwrap();
        assert!(s.waits_for_score(0));
        assert!(s.next_unit(0).is_none());
        s.record_score(0, 0, 0.5).unwrap();
        let u = s.next_unit(0).unwrap();
        assert_eq!(u.epoch, 1);
        s.complete(u).unwrap();
        s.record_score(0, 1, 0.4).unwrap();
        assert!(s.is_done(), "stopped after epoch 2: {:?}", s.progress());
        assert_eq!(s.fate(0).unwrap().unwrap().epochs, 2);
        assert!(
            Scheduler::with_stopping(1, 1, 5, 0, Policy::Cerebro, Rule::Full, Some(1)).is_err()
        );
    }
}
