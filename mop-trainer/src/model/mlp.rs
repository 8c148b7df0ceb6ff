//! Fully connected networks: the paper's Criteo models and logistic regression.
//!
//! Layers are `fc0 … fcL` (ReLU between them, none after the last). For
//! Criteo-like input given as slot indices, `fc0` runs either as a dense
//! one-hot product or, when the input is configured `sparse`, as an
//! `embedding_bag` sum of the 39 active rows of the same weight: the same
//! function, computed without touching the 7267 inactive inputs. Trained
//! with lazy Adam, the sparse `fc0` keeps its weight outside autograd and
//! hands the optimizer the rows each training batch touched with their bags'
//! gradients ([`RowGrad`]).

use std::sync::Mutex;

use tch::{nn, Kind, Tensor};

use super::layers::{Init, Linear};
use crate::error::{Error, Result};
use crate::featurize::one_hot;
use crate::optim::RowGrad;

/// The name of the first layer's weight in the `VarStore`.
const FIRST_WEIGHT: &str = "fc0.weight";

/// An MLP (or, without hidden layers, a multinomial logistic regression).
#[derive(Debug)]
pub(crate) struct Mlp {
    layers: Vec<Linear>,
    inputs: usize,
    sparse: bool,
    /// With lazy Adam: the last training batch's indices and the leaf whose
    /// gradient is its bags' gradient, until [`Mlp::take_row_grads`].
    rows: Option<Mutex<Option<(Tensor, Tensor)>>>,
}

impl Mlp {
    pub(crate) fn new(
        p: &nn::Path<'_>,
        init: &mut Init,
        inputs: usize,
        hidden: &[usize],
        classes: usize,
        sparse: bool,
        lazy: bool,
    ) -> Result<Self> {
        let widths: Vec<usize> = std::iter::once(inputs)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(classes))
            .collect();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(&(p / format!("fc{i}")), init, w[0], w[1]))
            .collect::<Result<Vec<_>>>()?;
        Ok(Mlp {
            layers,
            inputs,
            sparse,
            rows: (sparse && lazy).then(|| Mutex::new(None)),
        })
    }

    /// Logits for `x`; `train` records a lazy first layer's rows for
    /// [`take_row_grads`](Self::take_row_grads).
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let first = &self.layers[0];
        let mut h = match x.kind() {
            Kind::Int64 if self.sparse => match &self.rows {
                Some(slot) if train => {
                    let (h, leaf) = first.forward_indices_rows(x)?;
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((x.shallow_clone(), leaf));
                    h
                }
                _ => first.forward_indices(x)?,
            },
            Kind::Int64 => first.forward(&one_hot(x, self.inputs)?)?,
            Kind::Float => first.forward(&x.f_flatten(1, -1)?)?,
            other => {
                return Err(Error::Data(format!(
                    "MLP input must be float features or int64 slot indices, got {other:?}"
                )))
            }
        };
        for layer in &self.layers[1..] {
            h = layer.forward(&h.f_relu()?)?;
        }
        Ok(h)
    }

    /// The lazy first layer's row gradients from the last training forward
    /// and backward pass (none for other layers and optimizers).
    pub(crate) fn take_row_grads(&self) -> Result<Vec<RowGrad>> {
        let Some(slot) = &self.rows else {
            return Ok(Vec::new());
        };
        let Some((indices, leaf)) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(Vec::new());
        };
        let bag_grad = leaf.f_grad()?;
        if !bag_grad.defined() {
            return Err(Error::State(
                "the sparse first layer has no gradient: run the backward pass before the step"
                    .into(),
            ));
        }
        Ok(vec![RowGrad {
            param: FIRST_WEIGHT.to_string(),
            indices,
            bag_grad,
        }])
    }
}
