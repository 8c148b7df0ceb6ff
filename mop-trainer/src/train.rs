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

use std::time::Instant;

use tch::{Kind, Reduction, Tensor};

use crate::error::Result;
use crate::featurize::Featurized;
use crate::model::Model;
use crate::optim::Optimizer;

/// Rows per forward pass in [`evaluate`], bounding memory for dense one-hot
/// input (1024 × 7306 floats ≈ 30 MB).
const EVAL_CHUNK: usize = 1024;

/// What one training unit did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UnitMetrics {
    /// Rows trained on.
    pub samples: u64,
    /// Sum over rows of the cross-entropy loss (before each update).
    pub loss_sum: f64,
    /// Rows whose prediction (before each update) was right.
    pub correct: u64,
    /// Wall-clock seconds of the whole unit.
    pub seconds: f64,
    /// Of `seconds`, the time spent waiting for input batches.
    pub wait_seconds: f64,
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

/// Loss and accuracy on held-out data.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalMetrics {
    /// Mean cross-entropy per row.
    pub loss: f64,
    /// Fraction of rows predicted right.
    pub accuracy: f64,
    /// Rows evaluated.
    pub samples: u64,
}

/// Trains `model` with `opt` on every row of `batches`, in order, in
/// mini-batches of exactly `batch_size` rows (the last one may be shorter).
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
    let mut step = |mb: &Featurized, metrics: &mut UnitMetrics| -> Result<()> {
        train_step(model, opt, mb, metrics)?;
        metrics.seconds = start.elapsed().as_secs_f64();
        progress(metrics);
        Ok(())
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
                &Featurized::concat(&[head, chunk.slice(0, need)?])?,
                &mut metrics,
            )?;
            offset = need;
        }
        while chunk.len() - offset >= bs {
            step(&chunk.slice(offset, bs)?, &mut metrics)?;
            offset += bs;
        }
        if offset < chunk.len() {
            carry = Some(chunk.slice(offset, chunk.len() - offset)?);
        }
    }
    if let Some(tail) = carry {
        step(&tail, &mut metrics)?;
    }
    metrics.seconds = start.elapsed().as_secs_f64();
    Ok(metrics)
}

/// One SGD step on one mini-batch.
fn train_step(
    model: &mut Model,
    opt: &mut Optimizer,
    mb: &Featurized,
    metrics: &mut UnitMetrics,
) -> Result<()> {
    let mb = mb.to_device(model.device());
    opt.zero_grad();
    let logits = model.forward_t(&mb.x, true)?;
    let loss = Model::loss(&logits, &mb.y)?;
    loss.f_backward()?;
    opt.step_with_rows(&model.take_row_grads()?)?;
    let n = mb.len();
    metrics.samples += n as u64;
    metrics.loss_sum += loss.f_double_value(&[])? * n as f64;
    let _no_grad = tch::no_grad_guard();
    metrics.correct += Model::correct(&logits, &mb.y)? as u64;
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
    for chunk in batches {
        let chunk = chunk?;
        let mut offset = 0;
        while offset < chunk.len() {
            let len = EVAL_CHUNK.min(chunk.len() - offset);
            let part = chunk.slice(offset, len)?.to_device(model.device());
            let logits = model.forward_t(&part.x, false)?;
            let loss =
                logits.f_cross_entropy_loss::<Tensor>(&part.y, None, Reduction::Sum, -100, 0.0)?;
            loss_sum += loss.f_to_kind(Kind::Double)?.f_double_value(&[])?;
            correct += Model::correct(&logits, &part.y)? as u64;
            samples += len as u64;
            offset += len;
        }
    }
    Ok(EvalMetrics {
        loss: loss_sum / samples as f64,
        accuracy: correct as f64 / samples as f64,
        samples,
    })
}
