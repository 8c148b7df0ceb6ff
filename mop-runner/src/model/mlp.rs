//! Fully connected networks: the paper's Criteo models and logistic regression.
//!
//! Layers are `fc0 … fcL` (ReLU between them, none after the last). For
//! Criteo-like input given as slot indices, `fc0` runs either as a dense
//! one-hot product or, when the input is configured `sparse`, as an
//! `embedding_bag` sum of the 39 active rows of the same weight: the same
//! function, computed without touching the 7267 inactive inputs.

use tch::{nn, Kind, Tensor};

use super::layers::{Init, Linear};
use crate::error::{Error, Result};
use crate::featurize::one_hot;

/// An MLP (or, without hidden layers, a multinomial logistic regression).
#[derive(Debug)]
pub(crate) struct Mlp {
    layers: Vec<Linear>,
    inputs: usize,
    sparse: bool,
}

impl Mlp {
    pub(crate) fn new(
        p: &nn::Path<'_>,
        init: &mut Init,
        inputs: usize,
        hidden: &[usize],
        classes: usize,
        sparse: bool,
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
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let first = &self.layers[0];
        let mut h = match x.kind() {
            Kind::Int64 if self.sparse => first.forward_indices(x)?,
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
}
