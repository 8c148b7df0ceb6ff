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
    pub(super) fn decide(&self, p: &mut Pruner) {
        let rungs = self.rungs();
        for (k, &r) in rungs.iter().enumerate() {
            for pos in 0..p.order.len() {
                let m = p.order[pos];
                if p.waits(m, r) && p.scores[m].contains_key(&r) {
                    let reached: Vec<usize> = p.order[..=pos]
                        .iter()
                        .copied()
                        .filter(|&q| p.scores[q].contains_key(&r))
                        .collect();
                    let keep = (reached.len() / self.eta).max(1);
                    let place = p.ranked(&reached, r).iter().position(|&q| q == m);
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
                let settled =
                    p.scores[m].contains_key(&r) || p.fate[m].is_some_and(|f| f.epochs < r);
                if !settled {
                    break;
                }
            }
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
    fn the_first_model_goes_on_and_later_ones_only_if_in_the_top_third() {
        let mut p = asha(6);
        // Model 0 is alone at rung 0: it is the best so far and goes on.
        assert_eq!(p.record(0, 1, 0.5).unwrap(), vec![0]);
        assert_eq!(p.limit(0), 3);
        // Model 1 is worse than model 0: 2 reached, keep 1, it stops.
        assert_eq!(p.record(1, 1, 0.4).unwrap(), Vec::<usize>::new());
        assert_eq!(
            p.fate(1).unwrap().reason,
            Reason::Rung {
                rung: 0,
                place: 2,
                of: 2,
                keep: 1
            }
        );
        // Model 3 reports before model 2: it waits for model 2 to arrive.
        assert_eq!(p.record(3, 1, 0.9).unwrap(), Vec::<usize>::new());
        assert!(p.waits(3, 1) && p.fate(3).is_none());
        // Model 2 arrives: 3 reached (keep 1), it is best of 0, 1, 2 -> on;
        // then model 3 is best of four (keep 1) -> on as well.
        assert_eq!(p.record(2, 1, 0.6).unwrap(), vec![2, 3]);
        // Ties go to the model ahead in arrival order.
        assert_eq!(p.record(4, 1, 0.9).unwrap(), Vec::<usize>::new());
        assert_eq!(p.fate(4).unwrap().epochs, 1);
    }

    #[test]
    fn a_model_promoted_past_the_last_rung_finishes_the_budget() {
        let mut p = asha(1);
        p.record(0, 1, 0.1).unwrap();
        assert_eq!(p.record(0, 3, 0.2).unwrap(), vec![0]);
        assert_eq!(p.limit(0), 9);
        assert_eq!(p.fate(0).unwrap().reason, Reason::Finished);
    }
}
