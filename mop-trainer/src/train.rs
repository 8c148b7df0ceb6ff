//! Training one model on one partition (a MOP unit), and evaluation.
//!
//! [`train_partition`] runs plain sequential mini-batch SGD over a stream of
//! featurized Arrow batches. Mini-batches are cut at exact `batch_size`
//! boundaries regardless of how rows arrive grouped (the remainder of one
//! Arrow batch is carried into the next; the final short mini-batch is
//! trained too), so the same rows in the same order always give the same
//! updates — whatever batch size the Flight server chose.
//!
//! Tensor work is synchronous and CPU-heavy: callers on an async runtime run
//! it on a dedicated thread (`spawn_blocking`), feeding it through a bounded
//! channel wrapped as the `batches` iterator. Time spent blocked in that
//! iterator is reported as `wait_seconds`, so a slow source shows up as such.
//!
//! # Tasks
//! The loss follows the model's [`Task`]: cross-entropy over `classes`
//! logits (multiclass), BCE-with-logits of one logit against labels 0/1
//! (binary), squared error of one output (regression). Besides the loss
//! sum and the rows predicted right, every pass returns what the exact
//! metrics of its task need ([`TaskStats`]): every row's score and label
//! (binary, for the AUC) or the error and label sums (regression); the
//! runner merges them over partitions (`mop_core::metrics`). A training
//! pass scores each row before the update its mini-batch makes, as the
//! loss always has.

use std::time::Instant;

use tch::{Kind, Reduction, Tensor};

use crate::error::{Error, Result};
use crate::featurize::Featurized;
use crate::model::Model;
use crate::optim::Optimizer;
use mop_core::config::{ModelConfig, Task};
use mop_core::metrics::{RegressionSums, ScoreCounts};

/// Rows per forward pass in [`evaluate`], bounding memory for dense one-hot
/// input (1024 × 7306 floats ≈ 30 MB).
const EVAL_CHUNK: usize = 1024;

/// What one training unit did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitMetrics {
    /// Rows trained on.
    pub samples: u64,
    /// Sum over rows of the task's loss (before each update).
    pub loss_sum: f64,
    /// Rows whose prediction (before each update) was right.
    pub correct: u64,
    /// Wall-clock seconds of the whole unit.
    pub seconds: f64,
    /// Of `seconds`, the time spent waiting for input batches.
    pub wait_seconds: f64,
    /// The task's statistics of the rows (before each update).
    pub stats: TaskStats,
}

/// What the exact metrics of a task need of a pass, beyond the loss and
/// the rows predicted right (see `mop_core::metrics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskStats {
    /// Binary: every row's score (its logit) with its label.
    pub scores: Option<ScoreCounts>,
    /// Regression: error and label sums.
    pub regression: Option<RegressionSums>,
}

/// Collects a pass's [`TaskStats`] batch by batch.
struct Tally {
    task: Task,
    rows: Vec<(f32, bool)>,
    regression: RegressionSums,
}

impl Tally {
    fn new(task: Task) -> Self {
        Tally {
            task,
            rows: Vec::new(),
            regression: RegressionSums::default(),
        }
    }

    /// Counts a batch's outputs `out` (checked by [`task_loss`]) against
    /// labels `y`; returns the rows predicted right (0 for regression).
    fn add(&mut self, out: &Tensor, y: &Tensor) -> Result<u64> {
        let _no_grad = tch::no_grad_guard();
        let floats = |t: &Tensor| -> Result<Vec<f32>> {
            let t = t
                .f_reshape([-1])?
                .f_to_kind(Kind::Float)?
                .f_to_device(tch::Device::Cpu)?
                .f_contiguous()?;
            Ok(Vec::<f32>::try_from(&t)?)
        };
        match self.task {
            Task::Multiclass => Ok(Model::correct(out, y)? as u64),
            Task::Binary => {
                let (scores, labels) = (floats(out)?, floats(y)?);
                let mut correct = 0;
                for (&s, &l) in scores.iter().zip(&labels) {
                    let positive = l > 0.5;
                    correct += u64::from((s > 0.0) == positive);
                    self.rows.push((s, positive));
                }
                Ok(correct)
            }
            Task::Regression => {
                let (predicted, labels) = (floats(out)?, floats(y)?);
                let r = &mut self.regression;
                for (&p, &l) in predicted.iter().zip(&labels) {
                    let (p, l) = (f64::from(p), f64::from(l));
                    r.abs_error += (p - l).abs();
                    r.squared_error += (p - l) * (p - l);
                    r.label += l;
                    r.label_squared += l * l;
                }
                Ok(0)
            }
        }
    }

    fn finish(self) -> TaskStats {
        match self.task {
            Task::Multiclass => TaskStats::default(),
            Task::Binary => TaskStats {
                scores: Some(ScoreCounts::from_rows(self.rows)),
                regression: None,
            },
            Task::Regression => TaskStats {
                scores: None,
                regression: Some(self.regression),
            },
        }
    }
}

/// The loss of `config`'s task of outputs `out` against labels `y`:
/// cross-entropy over `[n, classes]` logits, BCE-with-logits of `[n, 1]`
/// logits against 0/1, or squared error of `[n, 1]` outputs. An output of
/// another shape is a configuration error naming both shapes.
pub fn task_loss(
    config: &ModelConfig,
    out: &Tensor,
    y: &Tensor,
    reduction: Reduction,
) -> Result<Tensor> {
    let n = y.size().first().copied().unwrap_or(0);
    let want = config.outputs() as i64;
    let size = out.size();
    let fits = size == [n, want] || (want == 1 && size == [n]);
    if !fits {
        return Err(Error::Config(format!(
            "the model's output is {size:?} for {n} rows; task = \"{}\" needs [{n}, {want}]",
            config.task.name()
        )));
    }
    Ok(match config.task {
        Task::Multiclass => out.f_cross_entropy_loss::<Tensor>(y, None, reduction, -100, 0.0)?,
        Task::Binary => out
            .f_reshape([-1])?
            .f_binary_cross_entropy_with_logits::<Tensor>(y, None, None, reduction)?,
        Task::Regression => out.f_reshape([-1])?.f_mse_loss(y, reduction)?,
    })
}

impl UnitMetrics {
    /// Mean training loss per row (NaN when no rows).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.samples as f64
    }

    /// Training accuracy (NaN when no rows).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.samples as f64
    }
}

/// Loss, accuracy and the task's statistics on held-out data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalMetrics {
    /// Mean loss per row.
    pub loss: f64,
    /// Fraction of rows predicted right.
    pub accuracy: f64,
    /// Rows evaluated.
    pub samples: u64,
    /// Sum over rows of the loss.
    pub loss_sum: f64,
    /// Rows predicted right.
    pub correct: u64,
    /// The task's statistics of the rows.
    pub stats: TaskStats,
}

/// Seeds libtorch's generator for one unit: model seed, epoch and
/// partition, mixed (SplitMix64's finalizer). Dropout and any other random
/// op inside a model draw from it, so a unit draws the same numbers on
/// whichever trainer runs it and after any number of hops; trainers call it
/// after building the unit's model and before its first step.
pub fn seed_unit(model_seed: u64, epoch: usize, partition: usize) {
    let seed = crate::shuffle::unit_seed(model_seed, epoch, partition);
    // libtorch takes the seed as a 64-bit pattern.
    tch::manual_seed(seed as i64);
}

/// Trains `model` with `opt` on every row of `batches`, in order, in
/// mini-batches of exactly `batch_size` rows (the last one may be shorter;
/// a last one of a single row joins the one before it, as PyTorch's
/// BatchNorm cannot train on one row and a one-row step is mostly noise).
/// `progress` is called after every mini-batch with the totals so far.
pub fn train_partition<I, P>(
    model: &mut Model,
    opt: &mut Optimizer,
    batches: I,
    batch_size: usize,
    mut progress: P,
) -> Result<UnitMetrics>
where
    I: IntoIterator<Item = Result<Featurized>>,
    P: FnMut(&UnitMetrics),
{
    let start = Instant::now();
    let bs = batch_size.max(1);
    let mut metrics = UnitMetrics::default();
    let mut carry: Option<Featurized> = None;
    let mut batches = batches.into_iter();
    let mut tally = Tally::new(model.config().task);
    let mut train = |mb: &Featurized, metrics: &mut UnitMetrics| -> Result<()> {
        train_step(model, opt, mb, metrics, &mut tally)?;
        metrics.seconds = start.elapsed().as_secs_f64();
        progress(metrics);
        Ok(())
    };
    // Each full mini-batch waits for the next before it trains, so that a
    // one-row tail can still join it.
    let mut pending: Option<Featurized> = None;
    let mut step = |mb: Featurized, metrics: &mut UnitMetrics| -> Result<()> {
        match pending.replace(mb) {
            Some(ready) => train(&ready, metrics),
            None => Ok(()),
        }
    };
    loop {
        let waiting = Instant::now();
        let next = batches.next();
        metrics.wait_seconds += waiting.elapsed().as_secs_f64();
        let Some(chunk) = next else { break };
        let chunk = chunk?;
        if chunk.is_empty() {
            continue;
        }
        let mut offset = 0;
        if let Some(head) = carry.take() {
            let need = bs - head.len();
            if chunk.len() < need {
                carry = Some(Featurized::concat(&[head, chunk])?);
                continue;
            }
            step(
                Featurized::concat(&[head, chunk.slice(0, need)?])?,
                &mut metrics,
            )?;
            offset = need;
        }
        while chunk.len() - offset >= bs {
            step(chunk.slice(offset, bs)?, &mut metrics)?;
            offset += bs;
        }
        if offset < chunk.len() {
            carry = Some(chunk.slice(offset, chunk.len() - offset)?);
        }
    }
    match (pending, carry) {
        (Some(last), Some(tail)) if tail.len() == 1 => {
            train(&Featurized::concat(&[last, tail])?, &mut metrics)?;
        }
        (last, tail) => {
            for mb in last.into_iter().chain(tail) {
                train(&mb, &mut metrics)?;
            }
        }
    }
    metrics.seconds = start.elapsed().as_secs_f64();
    metrics.stats = tally.finish();
    Ok(metrics)
}

/// One SGD step on one mini-batch.
fn train_step(
    model: &mut Model,
    opt: &mut Optimizer,
    mb: &Featurized,
    metrics: &mut UnitMetrics,
    tally: &mut Tally,
) -> Result<()> {
    let mb = mb.to_device(model.device());
    opt.zero_grad();
    let logits = model.forward_t(&mb.x, true)?;
    let loss = task_loss(model.config(), &logits, &mb.y, Reduction::Mean)?;
    loss.f_backward()?;
    opt.step_with_rows(&model.take_row_grads()?)?;
    let n = mb.len();
    metrics.samples += n as u64;
    metrics.loss_sum += loss.f_double_value(&[])? * n as f64;
    metrics.correct += tally.add(&logits.f_detach()?, &mb.y)?;
    Ok(())
}

/// Loss and accuracy of `model` over every row of `batches`, without
/// training (no gradients, batch norm in inference mode).
pub fn evaluate<I>(model: &Model, batches: I) -> Result<EvalMetrics>
where
    I: IntoIterator<Item = Result<Featurized>>,
{
    let _no_grad = tch::no_grad_guard();
    let (mut loss_sum, mut correct, mut samples) = (0.0, 0u64, 0u64);
    let mut tally = Tally::new(model.config().task);
    for chunk in batches {
        let chunk = chunk?;
        let mut offset = 0;
        while offset < chunk.len() {
            let len = EVAL_CHUNK.min(chunk.len() - offset);
            let part = chunk.slice(offset, len)?.to_device(model.device());
            let logits = model.forward_t(&part.x, false)?;
            let loss = task_loss(model.config(), &logits, &part.y, Reduction::Sum)?;
            loss_sum += loss.f_to_kind(Kind::Double)?.f_double_value(&[])?;
            correct += tally.add(&logits, &part.y)?;
            samples += len as u64;
            offset += len;
        }
    }
    Ok(EvalMetrics {
        loss: loss_sum / samples as f64,
        accuracy: correct as f64 / samples as f64,
        samples,
        loss_sum,
        correct,
        stats: tally.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mop_core::config::{Arch, InputSpec, OptimizerKind};
    use tch::Device;

    /// 240 rows of one numeric column bucketed into slots 0..50: a binary
    /// label (slot below 25) and a float one (slot / 10) planted in it.
    fn rows(task: Task) -> (ModelConfig, Featurized) {
        let config = ModelConfig {
            arch: Arch::Mlp { hidden: vec![8] },
            optimizer: OptimizerKind::Adam,
            lr: 3e-2,
            l2: 0.0,
            batch_size: 16,
            input: InputSpec::Criteo {
                sparse: false,
                numeric: 1,
                categorical: 0,
            },
            classes: 2,
            task,
        };
        let slots: Vec<i64> = (0..240).map(|i| (i * 7) % 50).collect();
        let x = Tensor::from_slice(&slots).view([240, 1]);
        let y = match task {
            Task::Binary => Tensor::from_slice(
                &slots
                    .iter()
                    .map(|&s| f32::from(u8::from(s < 25)))
                    .collect::<Vec<_>>(),
            ),
            Task::Regression => {
                Tensor::from_slice(&slots.iter().map(|&s| s as f32 / 10.0).collect::<Vec<_>>())
            }
            Task::Multiclass => {
                Tensor::from_slice(&slots.iter().map(|&s| i64::from(s < 25)).collect::<Vec<_>>())
            }
        };
        (config, Featurized::new(x, y).unwrap())
    }

    fn trained(task: Task) -> (Model, Featurized, UnitMetrics) {
        let (config, data) = rows(task);
        let mut model = Model::new_on(config, 3, Device::Cpu).unwrap();
        let mut opt = model.optimizer().unwrap();
        let mut last = UnitMetrics::default();
        for _ in 0..15 {
            let batches = [Ok(data.shallow_clone())];
            last = train_partition(&mut model, &mut opt, batches, 16, |_| {}).unwrap();
        }
        (model, data, last)
    }

    #[test]
    fn a_binary_model_has_one_logit_and_counts_every_rows_score() {
        let (model, data, unit) = trained(Task::Binary);
        let scores = unit.stats.scores.as_ref().unwrap();
        let rows: u64 = scores.positives().iter().chain(scores.negatives()).sum();
        assert_eq!(rows, 240);
        assert!(unit.stats.regression.is_none());
        let eval = evaluate(&model, [Ok(data.shallow_clone())]).unwrap();
        let out = model.forward_t(&data.x, false).unwrap();
        assert_eq!(out.size(), [240, 1]);
        // The loss is BCE-with-logits over all rows; accuracy counts
        // logits above 0 against labels 1.
        let bce = out
            .view([-1])
            .binary_cross_entropy_with_logits::<Tensor>(&data.y, None, None, Reduction::Mean)
            .double_value(&[]);
        assert!((eval.loss - bce).abs() < 1e-5, "{} vs {bce}", eval.loss);
        let hits = out
            .view([-1])
            .gt(0.0)
            .eq_tensor(&data.y.gt(0.5))
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(eval.correct, hits as u64);
        let auc = eval.stats.scores.as_ref().unwrap().auc();
        assert!(auc > 0.95, "the planted label is learned: AUC {auc}");
    }

    #[test]
    fn a_regression_has_one_output_and_sums_its_errors() {
        let (model, data, unit) = trained(Task::Regression);
        assert!(unit.stats.scores.is_none());
        assert_eq!(unit.correct, 0);
        let eval = evaluate(&model, [Ok(data.shallow_clone())]).unwrap();
        let sums = eval.stats.regression.unwrap();
        // The loss is the mean squared error the sums give.
        let mse = sums.squared_error / 240.0;
        assert!(
            (eval.loss - mse).abs() < 1e-5 * mse.max(1.0),
            "{} vs {mse}",
            eval.loss
        );
        let labels = Vec::<f32>::try_from(&data.y).unwrap();
        let sum: f64 = labels.iter().map(|&y| f64::from(y)).sum();
        assert!((sums.label - sum).abs() < 1e-9);
        assert!(
            sums.r2(240) > 0.9,
            "the planted value is learned: R² {}",
            sums.r2(240)
        );
    }

    #[test]
    fn a_one_row_tail_joins_the_mini_batch_before_it_and_every_row_trains_once() {
        let (config, data) = rows(Task::Binary);
        // 33 rows in chunks that cut across mini-batches of 16: 16, 17.
        let rows33 = data.slice(0, 33).unwrap();
        let chunks = [(0, 10), (10, 13), (23, 10)].map(|(at, n)| Ok(rows33.slice(at, n).unwrap()));
        let mut model = Model::new_on(config.clone(), 3, Device::Cpu).unwrap();
        let mut opt = model.optimizer().unwrap();
        let mut sizes = Vec::new();
        let mut seen = 0;
        let unit = train_partition(&mut model, &mut opt, chunks, 16, |m| {
            sizes.push(m.samples - seen);
            seen = m.samples;
        })
        .unwrap();
        assert_eq!(sizes, [16, 17]);
        assert_eq!(unit.samples, 33);
        assert_eq!(opt.steps(), 2);
        // Two rows left over stay a mini-batch of their own.
        let mut opt = model.optimizer().unwrap();
        let mut steps = Vec::new();
        let mut seen = 0;
        train_partition(
            &mut model,
            &mut opt,
            [Ok(data.slice(0, 34).unwrap())],
            16,
            |m| {
                steps.push(m.samples - seen);
                seen = m.samples;
            },
        )
        .unwrap();
        assert_eq!(steps, [16, 16, 2]);
    }

    #[test]
    fn an_output_of_the_wrong_width_is_refused_with_both_shapes() {
        let (config, data) = rows(Task::Binary);
        let two = Tensor::zeros([240, 2], (Kind::Float, Device::Cpu));
        let e = task_loss(&config, &two, &data.y, Reduction::Mean).unwrap_err();
        assert!(
            e.to_string().contains("[240, 2]") && e.to_string().contains("[240, 1]"),
            "{e}"
        );
    }
}
