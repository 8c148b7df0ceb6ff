//! Asynchronous successive halving (ASHA, Li et al. 2020) inside MOP's
//! rotation: a model is decided the moment it and the models ahead of it in
//! arrival order have reached its rung; no rung waits to fill.

use serde::{Deserialize, Serialize};

use super::{Pruner, Reason, Stop};

/// ASHA's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asha {
    /// Epochs of the first rung.
    pub min_epochs: usize,
    /// Keep the top `1/eta` at each rung.
    pub eta: usize,
    /// Epochs of a model that is never stopped.
    pub max_epochs: usize,
}

impl Asha {
    /// The rungs, in epochs: `min_epochs · eta^k` below `max_epochs`.
    pub fn rungs(&self) -> Vec<usize> {
        let mut rungs = Vec::new();
        let mut r = self.min_epochs.max(1);
        while r < self.max_epochs {
            rungs.push(r);
            r = r.saturating_mul(self.eta.max(2));
        }
        rungs
    }

    /// Every model starts towards the first rung.
    pub(super) fn start(&self, p: &mut Pruner) {
        match self.rungs().first() {
            Some(&r) => p.until.iter_mut().for_each(|u| *u = r),
            None => {
                let done = p.finished(self.max_epochs);
                p.fate.iter_mut().for_each(|f| *f = Some(done));
            }
        }
    }

    /// Takes every decision the scores allow. Rungs go bottom up, so a
    /// model stopped at rung `k` counts as settled for rung `k + 1` in the
    /// same pass; within a rung, models go in arrival order and the first
    /// one that has not settled there blocks the ones behind it.
    ///
    /// The first `eta` models to reach a rung are compared with one another
    /// (the top `1/eta` of fewer than `eta` models is no model): they wait
    /// for each other, then the best of them goes on. Optuna and Ray
    /// promote every first arrival instead, which lets the first model
    /// through whatever its score; in MOP's rotation all models reach a rung
    /// within a few units of one another, so the wait is short.
    pub(super) fn decide(&self, p: &mut Pruner) {
        let rungs = self.rungs();
        let eta = self.eta.max(2);
        for (k, &r) in rungs.iter().enumerate() {
            let settled = |p: &Pruner, m: usize| {
                p.scores[m].contains_key(&r) || p.fate[m].is_some_and(|f| f.epochs < r)
            };
            // The first arrivals: complete once there are eta of them, or
            // once every model has settled (fewer ever reach the rung).
            let mut first = Vec::new();
            let mut complete = true;
            for &m in &p.order {
                if first.len() == eta {
                    break;
                }
                if p.scores[m].contains_key(&r) {
                    first.push(m);
                } else if !settled(p, m) {
                    complete = false;
                    break;
                }
            }
            for pos in 0..p.order.len() {
                let m = p.order[pos];
                let in_first = first.contains(&m);
                if p.waits(m, r) && p.scores[m].contains_key(&r) && (complete || !in_first) {
                    let reached: Vec<usize> = if in_first {
                        first.clone()
                    } else {
                        p.order[..=pos]
                            .iter()
                            .copied()
                            .filter(|&q| p.scores[q].contains_key(&r))
                            .collect()
                    };
                    self.promote_or_stop(p, m, k, &reached);
                }
                if !settled(p, m) {
                    break;
                }
            }
        }
    }

    /// Promotes `m` from rung `k` if it is in the top `1/eta` (at least
    /// one) of `reached`, else stops it there.
    fn promote_or_stop(&self, p: &mut Pruner, m: usize, k: usize, reached: &[usize]) {
        let rungs = self.rungs();
        let r = rungs[k];
        let keep = (reached.len() / self.eta.max(2)).max(1);
        let place = p.ranked(reached, r).iter().position(|&q| q == m);
        let place = place.unwrap_or(usize::MAX);
        if place < keep {
            let next = rungs.get(k + 1).copied().unwrap_or(self.max_epochs);
            p.until[m] = next;
            if next == self.max_epochs {
                p.fate[m] = Some(p.finished(next));
            }
        } else {
            p.fate[m] = Some(Stop {
                epochs: r,
                reason: Reason::Rung {
                    rung: k,
                    place: place + 1,
                    of: reached.len(),
                    keep,
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Rule;
    use super::*;

    fn asha(models: usize) -> Pruner {
        let rule = Rule::Asha(Asha {
            min_epochs: 1,
            eta: 3,
            max_epochs: 9,
        });
        Pruner::new(rule, 9, (0..models).collect()).unwrap()
    }

    #[test]
    fn rungs_grow_by_eta_below_the_last_epoch() {
        let a = |min, eta, max| Asha {
            min_epochs: min,
            eta,
            max_epochs: max,
        };
        assert_eq!(a(1, 3, 9).rungs(), vec![1, 3]);
        assert_eq!(a(1, 3, 10).rungs(), vec![1, 3, 9]);
        assert_eq!(a(2, 2, 16).rungs(), vec![2, 4, 8]);
    }

    #[test]
    fn the_first_eta_models_are_compared_together_then_each_with_those_ahead() {
        let mut p = asha(6);
        // Models 0 and 1 wait for a third to compare with.
        assert!(p.record(0, 1, 0.5).unwrap().is_empty());
        assert!(p.record(1, 1, 0.4).unwrap().is_empty());
        assert!(p.fate(0).is_none() && p.fate(1).is_none());
        // Model 3 reports before model 2: it waits for model 2 to arrive.
        assert!(p.record(3, 1, 0.9).unwrap().is_empty());
        assert!(p.waits(3, 1) && p.fate(3).is_none());
        // Model 2 completes the first three: the best of them (2) goes on,
        // then model 3 is the best of four (keep 1) and goes on as well.
        assert_eq!(p.record(2, 1, 0.6).unwrap(), vec![2, 3]);
        assert_eq!(p.limit(2), 3);
        assert_eq!(
            p.fate(1).unwrap().reason,
            Reason::Rung {
                rung: 0,
                place: 3,
                of: 3,
                keep: 1
            }
        );
        assert_eq!(p.fate(0).unwrap().epochs, 1);
        // Ties go to the model ahead in arrival order.
        assert!(p.record(4, 1, 0.9).unwrap().is_empty());
        assert_eq!(p.fate(4).unwrap().epochs, 1);
        // Six reached, keep two: the sixth is the best and goes on.
        assert_eq!(p.record(5, 1, 0.95).unwrap(), vec![5]);
        // At rung 1 only three arrive (2, 3, 5): they are compared together.
        assert!(p.record(3, 3, 0.7).unwrap().is_empty());
        assert!(p.record(5, 3, 0.9).unwrap().is_empty());
        assert_eq!(p.record(2, 3, 0.1).unwrap(), vec![5]);
        assert_eq!(p.fate(5).unwrap().reason, Reason::Finished);
    }

    #[test]
    fn fewer_than_eta_at_a_rung_are_compared_once_all_have_settled() {
        let mut p = asha(2);
        assert!(p.record(1, 1, 0.3).unwrap().is_empty());
        assert_eq!(p.record(0, 1, 0.2).unwrap(), vec![1]);
        assert_eq!(p.fate(0).unwrap().epochs, 1);
    }

    #[test]
    fn a_model_promoted_past_the_last_rung_finishes_the_budget() {
        let mut p = asha(1);
        assert_eq!(p.record(0, 1, 0.1).unwrap(), vec![0]);
        assert_eq!(p.record(0, 3, 0.2).unwrap(), vec![0]);
        assert_eq!(p.limit(0), 9);
        assert_eq!(p.fate(0).unwrap().reason, Reason::Finished);
    }
}
