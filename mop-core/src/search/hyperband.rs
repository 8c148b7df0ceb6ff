//! Hyperband (Li et al. 2018) with MADlib's schedule: brackets of
//! synchronous successive halving, run side by side in one MOP rotation.
//!
//! For `R = max_epochs` and `eta`: `s_max = ⌊log_eta R⌋`; bracket `s`
//! (from `s_max` down to 0) nominally holds `n_s = ⌈(s_max + 1) / (s + 1) ·
//! eta^s⌉` configurations, whose round `i` trains them to `R · eta^(i - s)`
//! epochs (rounded) and keeps the best `⌊n_s · eta^-(i+1)⌋` for the next.
//! hopper searches over a given set of configurations, so it deals them to
//! the brackets in proportion to `n_s` (largest remainder, in the seeded
//! arrival order) and applies the same formula — MADlib's and the paper's
//! `⌊n_i / eta⌋`, rounded down — to the `N_s` each bracket got. A bracket
//! dealt as many configurations as nominal always has one left for its
//! last round; one dealt fewer may halve to none before `R` and end there,
//! as MADlib's schedule would with that many configurations. Bracket
//! `s = 0` trains its configurations to `R` without halving, so some model
//! always gets there; when too few configurations were dealt for it to get
//! any, every bracket keeps at least one in each round instead.
//!
//! Six configurations at `R = 9, eta = 3` are dealt 3, 2 and 1: bracket
//! `s = 2` keeps one after epoch 1 and none after epoch 3, bracket `s = 1`
//! none after epoch 3, and bracket `s = 0` trains its one configuration to
//! 9 — 20 of the grid's 54 model-epochs.

use serde::{Deserialize, Serialize};

use super::{Pruner, Reason, Stop};
use crate::error::{Error, Result};

/// Hyperband's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hyperband {
    /// `R`: the most epochs a model trains.
    pub max_epochs: usize,
    /// The reduction factor.
    pub eta: usize,
    /// Rounds left out at the end of every bracket (MADlib's `skip_last`).
    pub skip_last: usize,
}

/// One bracket of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bracket {
    /// Its `s`.
    pub s: usize,
    /// Nominal configurations `n_s`.
    pub n: usize,
    /// Epochs at the end of each round.
    pub rounds: Vec<usize>,
}

impl Hyperband {
    /// The brackets that run (`skip_last` applied), largest `s` first.
    pub fn brackets(&self) -> Result<Vec<Bracket>> {
        let (r, eta) = (self.max_epochs, self.eta.max(2));
        let mut s_max = 0;
        while eta.checked_pow(s_max as u32 + 1).is_some_and(|p| p <= r) {
            s_max += 1;
        }
        let mut out = Vec::new();
        for s in (0..=s_max).rev() {
            let pow = eta.pow(s as u32);
            let n = ((s_max + 1) * pow).div_ceil(s + 1);
            let rounds: Vec<usize> = (0..=s)
                .map(|i| {
                    let e = r as f64 * (eta as f64).powi(i as i32 - s as i32);
                    (e.round() as usize).clamp(1, r)
                })
                .collect();
            let keep = rounds.len().saturating_sub(self.skip_last);
            if keep > 0 {
                out.push(Bracket {
                    s,
                    n,
                    rounds: rounds[..keep].to_vec(),
                });
            }
        }
        if out.is_empty() {
            return Err(Error::Config(format!(
                "search.skip_last = {} leaves no round of any bracket to run \
                 (max_epochs {r}, eta {eta} make {} brackets of at most {} rounds): lower it",
                self.skip_last,
                s_max + 1,
                s_max + 1
            )));
        }
        Ok(out)
    }

    /// How many of `models` configurations each bracket gets: in
    /// proportion to `n_s`, by largest remainder (ties to larger `s`).
    pub fn deal(brackets: &[Bracket], models: usize) -> Vec<usize> {
        let total: usize = brackets.iter().map(|b| b.n).sum();
        let mut got: Vec<usize> = brackets.iter().map(|b| models * b.n / total).collect();
        let mut rest: Vec<usize> = (0..brackets.len()).collect();
        rest.sort_by_key(|&i| std::cmp::Reverse((models * brackets[i].n) % total));
        let left = models - got.iter().sum::<usize>();
        for &i in rest.iter().take(left) {
            got[i] += 1;
        }
        got
    }

    /// Deals the models to brackets in arrival order; each starts its
    /// bracket's first round.
    pub(super) fn start(&self, p: &mut Pruner) -> Result<()> {
        let brackets = self.brackets()?;
        let sizes = Self::deal(&brackets, p.order.len());
        p.bracket = vec![0; p.order.len()];
        let mut next = p.order.iter().copied();
        for (b, &size) in sizes.iter().enumerate() {
            for m in next.by_ref().take(size) {
                p.bracket[m] = b;
                let rounds = &brackets[b].rounds;
                p.until[m] = rounds[0];
                if rounds.len() == 1 {
                    p.fate[m] = Some(p.finished(rounds[0]));
                }
            }
        }
        Ok(())
    }

    /// Halves every bracket whose current round all its models finished.
    pub(super) fn decide(&self, p: &mut Pruner) {
        let Ok(brackets) = self.brackets() else {
            return;
        };
        let sizes = Self::deal(&brackets, p.order.len());
        // Bracket s = 0 trains its models to R without halving; if it was
        // dealt none, every bracket keeps one so that some model gets there.
        let floor = usize::from(
            brackets
                .iter()
                .zip(&sizes)
                .all(|(bracket, &n)| bracket.s != 0 || n == 0),
        );
        for (b, bracket) in brackets.iter().enumerate() {
            for (i, &r) in bracket.rounds.iter().enumerate() {
                let Some(&next) = bracket.rounds.get(i + 1) else {
                    continue;
                };
                let round: Vec<usize> = (0..p.order.len())
                    .filter(|&m| p.bracket[m] == b && p.waits(m, r))
                    .collect();
                let all_in = (0..p.order.len())
                    .filter(|&m| p.bracket[m] == b && p.fate[m].is_none() && p.until[m] == r)
                    .all(|m| p.scores[m].contains_key(&r));
                if round.is_empty() || !all_in {
                    continue;
                }
                let keep = (sizes[b] / self.eta.max(2).pow(i as u32 + 1)).max(floor);
                let ranked = p.ranked(&round, r);
                let last = i + 2 == bracket.rounds.len();
                for (place, &m) in ranked.iter().enumerate() {
                    if place < keep {
                        p.until[m] = next;
                        if last {
                            p.fate[m] = Some(p.finished(next));
                        }
                    } else {
                        p.fate[m] = Some(Stop {
                            epochs: r,
                            reason: Reason::Round {
                                bracket: bracket.s,
                                round: i,
                                place: place + 1,
                                of: round.len(),
                                keep,
                            },
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Rule;
    use super::*;

    fn hb(r: usize, eta: usize, skip_last: usize) -> Hyperband {
        Hyperband {
            max_epochs: r,
            eta,
            skip_last,
        }
    }

    #[test]
    fn the_schedule_is_madlibs() {
        // R = 81, eta = 3: the Hyperband paper's and MADlib's example.
        let b = hb(81, 3, 0).brackets().unwrap();
        let n: Vec<usize> = b.iter().map(|b| b.n).collect();
        assert_eq!(n, vec![81, 34, 15, 8, 5]);
        assert_eq!(b[0].rounds, vec![1, 3, 9, 27, 81]);
        assert_eq!(b[2].rounds, vec![9, 27, 81]);
        assert_eq!(b[4].rounds, vec![81]);
        let b = hb(9, 3, 1).brackets().unwrap();
        assert_eq!(
            b.iter().map(|b| b.rounds.clone()).collect::<Vec<_>>(),
            vec![vec![1, 3], vec![3]]
        );
        assert!(matches!(hb(9, 3, 3).brackets(), Err(Error::Config(m)) if m.contains("skip_last")));
    }

    #[test]
    fn configurations_are_dealt_in_proportion_to_the_nominal_sizes() {
        let b = hb(9, 3, 0).brackets().unwrap(); // n = 9, 5, 3
        assert_eq!(Hyperband::deal(&b, 17), vec![9, 5, 3]);
        assert_eq!(Hyperband::deal(&b, 6), vec![3, 2, 1]);
        assert_eq!(Hyperband::deal(&b, 1).iter().sum::<usize>(), 1);
    }

    #[test]
    fn a_bracket_halves_only_when_its_whole_round_is_in() {
        // Six models: bracket s=2 gets 0,1,2 (rounds 1,3,9), s=1 gets 3,4
        // (rounds 3,9), s=0 gets 5 (9 epochs, decided from the start).
        // ⌊n_i / eta⌋ rounds down: 3 + 2 + 6 + 9 = 20 model-epochs of the
        // grid's 54.
        let mut p = Pruner::new(Rule::Hyperband(hb(9, 3, 0)), 9, (0..6).collect()).unwrap();
        assert_eq!(
            (0..6).map(|m| p.limit(m)).collect::<Vec<_>>(),
            vec![1, 1, 1, 3, 3, 9]
        );
        assert_eq!(p.fate(5).unwrap().reason, Reason::Finished);
        assert!(p.record(0, 1, 0.2).unwrap().is_empty());
        assert!(p.record(1, 1, 0.7).unwrap().is_empty());
        // The third score completes the round: keep ⌊3/3⌋ = 1.
        assert_eq!(p.record(2, 1, 0.5).unwrap(), vec![1]);
        assert_eq!(p.limit(1), 3);
        assert_eq!(p.fate(0).unwrap().epochs, 1);
        // Round 1 of bracket 2 keeps ⌊3/9⌋ = 0: the bracket ends at 3.
        assert!(p.record(1, 3, 0.8).unwrap().is_empty());
        assert_eq!(p.fate(1).unwrap().epochs, 3);
        // Bracket 1 keeps ⌊2/3⌋ = 0 after its first round, once both are in.
        assert!(p.record(4, 3, 0.1).unwrap().is_empty());
        assert!(p.fate(3).is_none(), "decided before its round was in");
        assert!(p.record(3, 3, 0.1).unwrap().is_empty());
        assert_eq!(
            p.fate(4).unwrap().reason,
            Reason::Round {
                bracket: 1,
                round: 0,
                place: 2,
                of: 2,
                keep: 0
            }
        );
        let epochs: usize = (0..6).map(|m| p.fate(m).unwrap().epochs).sum();
        assert_eq!(epochs, 1 + 3 + 1 + 3 + 3 + 9);
    }

    #[test]
    fn a_search_too_small_to_fill_the_last_bracket_still_trains_one_model_to_the_end() {
        // One configuration is dealt to bracket s = 2: ⌊1/3⌋ would stop it
        // after one epoch, so it keeps going as the bracket's one survivor.
        let mut p = Pruner::new(Rule::Hyperband(hb(9, 3, 0)), 9, vec![0]).unwrap();
        assert_eq!(p.limit(0), 1);
        assert_eq!(p.record(0, 1, 0.5).unwrap(), vec![0]);
        assert_eq!(p.record(0, 3, 0.5).unwrap(), vec![0]);
        assert_eq!(p.fate(0).unwrap().epochs, 9);
    }
}
