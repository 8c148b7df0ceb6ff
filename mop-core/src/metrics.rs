//! The metrics a run reports and ranks models by, and the exact arithmetic
//! behind them.
//!
//! Every metric is computed over **all** rows of a pass, never averaged
//! over batches or partitions: trainers return sufficient statistics that
//! merge exactly, and the runner merges the partitions' statistics before
//! it divides.
//!
//! | task | metrics |
//! |---|---|
//! | every task | `loss` (cross-entropy, BCE-with-logits or squared error, mean per row) |
//! | `binary`, `multiclass` | `accuracy` |
//! | `binary` | `auc` (ROC AUC), `log_loss` (the mean BCE, which is the binary loss) |
//! | `regression` | `rmse`, `mae`, `r2` |
//!
//! - **AUC** comes from every row's score: a [`ScoreCounts`] holds, per
//!   distinct score, how many positive and negative rows had it; merging two
//!   is a merge of sorted lists, so the AUC of a union is exact. Ties count
//!   half, as in the Mann–Whitney statistic and scikit-learn's
//!   `roc_auc_score` (average ranks). Its size is the number of distinct
//!   scores of a pass: at most the rows of the pass.
//! - **RMSE, MAE, R²** come from [`RegressionSums`] (Σe², Σ|e|, Σy, Σy²) with
//!   the row count: `R² = 1 − Σe² / (Σy² − (Σy)²/n)`, scikit-learn's
//!   `r2_score` (NaN when every label is the same).
//!
//! A [`Metric`] knows its direction: `loss`, `log_loss`, `rmse` and `mae`
//! are better lower, the others higher; [`Metric::signed`] turns any of them
//! into a score where higher is better, which is what searches compare.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Task;
use crate::error::{Error, Result};

/// A metric a run reports, and may rank models by (`[train] metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Mean loss per row (the task's loss).
    Loss,
    /// Fraction of rows predicted right (classification).
    Accuracy,
    /// Area under the ROC curve (binary).
    Auc,
    /// Mean binary cross-entropy of the predicted probabilities (binary).
    LogLoss,
    /// Root mean squared error (regression).
    Rmse,
    /// Mean absolute error (regression).
    Mae,
    /// Coefficient of determination (regression).
    R2,
}

impl Metric {
    /// Every metric, in the order tables and reports list them.
    pub const ALL: [Metric; 7] = [
        Metric::Loss,
        Metric::Accuracy,
        Metric::Auc,
        Metric::LogLoss,
        Metric::Rmse,
        Metric::Mae,
        Metric::R2,
    ];

    /// The name used in configurations and results (`val_<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Accuracy => "accuracy",
            Metric::Auc => "auc",
            Metric::LogLoss => "log_loss",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::R2 => "r2",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Accuracy | Metric::Auc | Metric::R2)
    }

    /// `value` as a score where higher is better (NaN stays NaN).
    pub fn signed(self, value: f64) -> f64 {
        if self.higher_is_better() {
            value
        } else {
            -value
        }
    }

    /// Whether the metric exists for `task`.
    pub fn applies_to(self, task: Task) -> bool {
        match self {
            Metric::Loss => true,
            Metric::Accuracy => task != Task::Regression,
            Metric::Auc | Metric::LogLoss => task == Task::Binary,
            Metric::Rmse | Metric::Mae | Metric::R2 => task == Task::Regression,
        }
    }

    /// The metrics reported for `task`.
    pub fn for_task(task: Task) -> Vec<Metric> {
        Metric::ALL
            .into_iter()
            .filter(|m| m.applies_to(task))
            .collect()
    }

    /// What ranks models when `[train] metric` is not set: accuracy, as
    /// before tasks existed, for classification; the loss (mean squared
    /// error) for regression.
    pub fn default_for(task: Task) -> Metric {
        match task {
            Task::Regression => Metric::Loss,
            Task::Binary | Task::Multiclass => Metric::Accuracy,
        }
    }

    /// Checks that the metric exists for `task`; `setting` names where it
    /// was chosen.
    pub fn check(self, task: Task, setting: &str) -> Result<()> {
        if self.applies_to(task) {
            return Ok(());
        }
        let fits: Vec<&str> = Metric::for_task(task)
            .into_iter()
            .map(Metric::name)
            .collect();
        Err(Error::Config(format!(
            "{setting} = \"{}\" does not apply to task = \"{}\": choose one of {}",
            self.name(),
            task.name(),
            fits.join(", ")
        )))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per distinct score of a binary pass, how many positive and negative
/// rows had it: sorted by score (`f32::total_cmp`), each score once. The
/// exact, mergeable statistic behind the AUC (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScoreCountsRepr", into = "ScoreCountsRepr")]
pub struct ScoreCounts {
    scores: Vec<f32>,
    positives: Vec<u64>,
    negatives: Vec<u64>,
}

/// How a checkpoint holds a [`ScoreCounts`]: scores as their bits, so that
/// every float (NaN from a diverged model included) survives JSON.
#[derive(Serialize, Deserialize)]
struct ScoreCountsRepr {
    bits: Vec<u32>,
    positives: Vec<u64>,
    negatives: Vec<u64>,
}

impl From<ScoreCounts> for ScoreCountsRepr {
    fn from(s: ScoreCounts) -> Self {
        ScoreCountsRepr {
            bits: s.scores.iter().map(|x| x.to_bits()).collect(),
            positives: s.positives,
            negatives: s.negatives,
        }
    }
}

impl TryFrom<ScoreCountsRepr> for ScoreCounts {
    type Error = Error;

    fn try_from(r: ScoreCountsRepr) -> Result<Self> {
        ScoreCounts::from_parts(
            r.bits.into_iter().map(f32::from_bits).collect(),
            r.positives,
            r.negatives,
        )
    }
}

impl ScoreCounts {
    /// Counts rows given as `(score, label)` pairs (label: positive or not).
    pub fn from_rows(rows: impl IntoIterator<Item = (f32, bool)>) -> Self {
        let mut rows: Vec<(f32, bool)> = rows.into_iter().collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out = ScoreCounts::default();
        for (score, positive) in rows {
            if out
                .scores
                .last()
                .is_none_or(|l| l.total_cmp(&score).is_ne())
            {
                out.scores.push(score);
                out.positives.push(0);
                out.negatives.push(0);
            }
            let i = out.scores.len() - 1;
            if positive {
                out.positives[i] += 1;
            } else {
                out.negatives[i] += 1;
            }
        }
        out
    }

    /// Rebuilds counts from their three columns, checking that they have
    /// the same length and that the scores are sorted and distinct.
    pub fn from_parts(scores: Vec<f32>, positives: Vec<u64>, negatives: Vec<u64>) -> Result<Self> {
        if scores.len() != positives.len() || scores.len() != negatives.len() {
            return Err(Error::Config(format!(
                "score counts of {} scores carry {} positive and {} negative counts",
                scores.len(),
                positives.len(),
                negatives.len()
            )));
        }
        if scores.windows(2).any(|w| w[0].total_cmp(&w[1]).is_ge()) {
            return Err(Error::Config(
                "score counts must list distinct scores in ascending order".into(),
            ));
        }
        Ok(ScoreCounts {
            scores,
            positives,
            negatives,
        })
    }

    /// The distinct scores, ascending.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Positive rows per score.
    pub fn positives(&self) -> &[u64] {
        &self.positives
    }

    /// Negative rows per score.
    pub fn negatives(&self) -> &[u64] {
        &self.negatives
    }

    /// Number of distinct scores.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether no row was counted.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The counts of both passes' rows together.
    pub fn merge(&self, other: &ScoreCounts) -> ScoreCounts {
        let (a, b) = (self, other);
        let mut out = ScoreCounts::default();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.scores.get(i), b.scores.get(j)) {
                (Some(x), Some(y)) => x.total_cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (score, p, n) = match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (a.scores[i - 1], a.positives[i - 1], a.negatives[i - 1])
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (b.scores[j - 1], b.positives[j - 1], b.negatives[j - 1])
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (
                        a.scores[i - 1],
                        a.positives[i - 1] + b.positives[j - 1],
                        a.negatives[i - 1] + b.negatives[j - 1],
                    )
                }
            };
            out.scores.push(score);
            out.positives.push(p);
            out.negatives.push(n);
        }
        out
    }

    /// ROC AUC: the chance that a random positive row scores above a random
    /// negative one, ties counting half. NaN without positive or negative
    /// rows.
    pub fn auc(&self) -> f64 {
        let (mut below, mut sum) = (0u64, 0.0f64);
        for (&p, &n) in self.positives.iter().zip(&self.negatives) {
            sum += p as f64 * (below as f64 + n as f64 / 2.0);
            below += n;
        }
        let positives: u64 = self.positives.iter().sum();
        if positives == 0 || below == 0 {
            return f64::NAN;
        }
        sum / (positives as f64 * below as f64)
    }
}

/// The sums regression metrics come from, over the rows of a pass (the row
/// count is kept beside them): they add up exactly across partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RegressionSums {
    /// Σ |prediction − label|.
    pub abs_error: f64,
    /// Σ (prediction − label)².
    pub squared_error: f64,
    /// Σ label.
    pub label: f64,
    /// Σ label².
    pub label_squared: f64,
}

impl RegressionSums {
    /// The sums of both passes' rows together.
    pub fn merge(&self, o: &RegressionSums) -> RegressionSums {
        RegressionSums {
            abs_error: self.abs_error + o.abs_error,
            squared_error: self.squared_error + o.squared_error,
            label: self.label + o.label,
            label_squared: self.label_squared + o.label_squared,
        }
    }

    /// Root mean squared error over `n` rows (NaN for none).
    pub fn rmse(&self, n: u64) -> f64 {
        (self.squared_error / n as f64).sqrt()
    }

    /// Mean absolute error over `n` rows (NaN for none).
    pub fn mae(&self, n: u64) -> f64 {
        self.abs_error / n as f64
    }

    /// R² over `n` rows: `1 − Σe² / Σ(y − ȳ)²` (NaN for no rows or
    /// constant labels).
    pub fn r2(&self, n: u64) -> f64 {
        let n = n as f64;
        let total = self.label_squared - self.label * self.label / n;
        if total.is_nan() || total <= 0.0 {
            return f64::NAN;
        }
        1.0 - self.squared_error / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_of_a_hand_computed_example() {
        // Positives score 0.9, 0.4; negatives 0.5, 0.1. Pairs (p > n):
        // 0.9>0.5, 0.9>0.1, 0.4>0.1 → 3 of 4.
        let c = ScoreCounts::from_rows([(0.9, true), (0.5, false), (0.4, true), (0.1, false)]);
        assert!(close(c.auc(), 0.75), "{}", c.auc());
    }

    #[test]
    fn ties_count_half_as_average_ranks_do() {
        // sklearn: roc_auc_score([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.2]) = 0.875:
        // pairs: 0.5 vs 0.5 tie (½), 0.5 > 0.2, 0.7 > 0.5, 0.7 > 0.2 → 3.5 / 4.
        let c = ScoreCounts::from_rows([(0.5, true), (0.5, false), (0.7, true), (0.2, false)]);
        assert!(close(c.auc(), 0.875), "{}", c.auc());
        // Every score tied: 0.5.
        let flat = ScoreCounts::from_rows([(1.0, true), (1.0, false), (1.0, false)]);
        assert!(close(flat.auc(), 0.5));
        // Perfect and reversed rankings.
        let perfect = ScoreCounts::from_rows([(2.0, true), (1.0, false)]);
        assert!(close(perfect.auc(), 1.0));
        let reversed = ScoreCounts::from_rows([(1.0, true), (2.0, false)]);
        assert!(close(reversed.auc(), 0.0));
    }

    #[test]
    fn auc_without_both_classes_is_nan() {
        assert!(ScoreCounts::from_rows([(0.3, true)]).auc().is_nan());
        assert!(ScoreCounts::from_rows([(0.3, false)]).auc().is_nan());
        assert!(ScoreCounts::default().auc().is_nan());
    }

    #[test]
    fn merging_partitions_gives_the_auc_of_all_rows() {
        let rows: Vec<(f32, bool)> = (0..200)
            .map(|i| {
                let s = ((i * 37) % 101) as f32 / 10.0;
                (s, (i * 13) % 7 < 3)
            })
            .collect();
        let whole = ScoreCounts::from_rows(rows.iter().copied());
        let a = ScoreCounts::from_rows(rows[..77].iter().copied());
        let b = ScoreCounts::from_rows(rows[77..].iter().copied());
        let merged = a.merge(&b);
        assert_eq!(merged, whole);
        assert_eq!(b.merge(&a), whole);
        // And it differs from averaging the two partitions' AUCs.
        assert!((whole.auc() - (a.auc() + b.auc()) / 2.0).abs() > 1e-6);
    }

    #[test]
    fn score_counts_survive_json_with_nan_and_refuse_unsorted_parts() {
        let c = ScoreCounts::from_rows([(f32::NAN, true), (0.25, false), (-1.0, true)]);
        let text = serde_json::to_string(&c).unwrap();
        let back: ScoreCounts = serde_json::from_str(&text).unwrap();
        assert_eq!(back.len(), 3);
        assert!(back.scores()[2].is_nan());
        assert_eq!(back.positives(), c.positives());
        assert!(ScoreCounts::from_parts(vec![1.0, 0.5], vec![1, 1], vec![0, 0]).is_err());
        assert!(ScoreCounts::from_parts(vec![1.0], vec![1, 1], vec![0]).is_err());
    }

    #[test]
    fn regression_metrics_from_sums_match_hand_computed_values() {
        // Labels 1, 2, 3, 4; predictions 1.5, 2, 2, 5: errors 0.5, 0, -1, 1.
        let rows = [(1.5, 1.0), (2.0, 2.0), (2.0, 3.0), (5.0, 4.0)];
        let mut s = RegressionSums::default();
        for (p, y) in rows {
            let part = RegressionSums {
                abs_error: f64::abs(p - y),
                squared_error: (p - y) * (p - y),
                label: y,
                label_squared: y * y,
            };
            s = s.merge(&part);
        }
        // Σe² = 0.25 + 0 + 1 + 1 = 2.25; MSE 0.5625; RMSE 0.75.
        assert!(close(s.rmse(4), 0.75));
        // Σ|e| = 2.5; MAE 0.625.
        assert!(close(s.mae(4), 0.625));
        // Σ(y − ȳ)² = 5; R² = 1 − 2.25 / 5 = 0.55 (sklearn's r2_score).
        assert!(close(s.r2(4), 0.55));
        let constant = RegressionSums {
            abs_error: 1.0,
            squared_error: 1.0,
            label: 2.0,
            label_squared: 2.0,
        };
        assert!(constant.r2(2).is_nan());
    }

    #[test]
    fn metrics_know_their_direction_and_task() {
        assert!(Metric::Auc.higher_is_better() && Metric::R2.higher_is_better());
        assert!(!Metric::Rmse.higher_is_better() && !Metric::Loss.higher_is_better());
        assert_eq!(Metric::Mae.signed(0.5), -0.5);
        assert_eq!(Metric::Accuracy.signed(0.5), 0.5);
        assert_eq!(
            Metric::for_task(Task::Binary),
            [Metric::Loss, Metric::Accuracy, Metric::Auc, Metric::LogLoss]
        );
        assert_eq!(
            Metric::for_task(Task::Regression),
            [Metric::Loss, Metric::Rmse, Metric::Mae, Metric::R2]
        );
        assert_eq!(
            Metric::for_task(Task::Multiclass),
            [Metric::Loss, Metric::Accuracy]
        );
        let e = Metric::Auc
            .check(Task::Regression, "train.metric")
            .unwrap_err();
        assert!(
            e.to_string().contains("train.metric = \"auc\"") && e.to_string().contains("rmse"),
            "{e}"
        );
        let parsed: Metric = serde_json::from_str("\"r2\"").unwrap();
        assert_eq!(parsed, Metric::R2);
    }
}
