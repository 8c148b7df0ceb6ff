//! The model state blob, the one thing that hops between trainers: a
//! safetensors file whose tensors are the model's weights (`w.<variable>`,
//! batch-norm statistics included) and its optimizer's state (`opt.step`,
//! `opt.<param>.m`, `opt.<param>.v`), with one metadata entry
//! ([`FORMAT`] → the configuration as JSON). The trainer writes and reads it
//! (`mop_trainer::model`); the runner only moves it — and, for an
//! evaluation, cuts it down to [`weights_only`]: evaluating needs no
//! optimizer, and Adam's two moments are two thirds of the bytes.

use std::collections::HashMap;

use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// The blob's one metadata key (its value is the configuration as JSON).
pub const FORMAT: &str = "hopper-model-state-v1";

/// Prefix of the weights' names.
pub const WEIGHT_PREFIX: &str = "w.";

/// Prefix of the optimizer state's names.
pub const OPTIMIZER_PREFIX: &str = "opt.";

/// The weights of a state blob alone (its metadata kept), for a trainer
/// that only evaluates the model; bit for bit the same tensors.
pub fn weights_only(state: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: safetensors::SafeTensorError| {
        Error::Schedule(format!("a model state that is not safetensors: {e}"))
    };
    let blob = SafeTensors::deserialize(state).map_err(bad)?;
    let (_, header) = SafeTensors::read_metadata(state).map_err(bad)?;
    let metadata: Option<HashMap<String, String>> = header.metadata().clone();
    let weights = blob
        .tensors()
        .into_iter()
        .filter(|(name, _)| name.starts_with(WEIGHT_PREFIX));
    safetensors::serialize(weights, metadata).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    fn blob(names: &[&str]) -> Vec<u8> {
        let data: Vec<Vec<u8>> = names
            .iter()
            .enumerate()
            .map(|(i, _)| (0..8).map(|b| (i * 8 + b) as u8).collect())
            .collect();
        let views: Vec<(&str, TensorView<'_>)> = names
            .iter()
            .zip(&data)
            .map(|(n, d)| (*n, TensorView::new(Dtype::F32, vec![2], d).unwrap()))
            .collect();
        let meta = HashMap::from([(FORMAT.to_string(), "{}".to_string())]);
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    #[test]
    fn an_evaluation_gets_the_weights_bit_for_bit_and_no_optimizer_state() {
        let full = blob(&["w.l.w", "w.l.b", "opt.step", "opt.l.w.m", "opt.l.w.v"]);
        let cut = weights_only(&full).unwrap();
        let (a, b) = (
            SafeTensors::deserialize(&full).unwrap(),
            SafeTensors::deserialize(&cut).unwrap(),
        );
        let mut names = b.names();
        names.sort();
        assert_eq!(names, ["w.l.b", "w.l.w"]);
        for n in names {
            assert_eq!(a.tensor(n).unwrap().data(), b.tensor(n).unwrap().data());
        }
        let (_, meta) = SafeTensors::read_metadata(&cut).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()[FORMAT], "{}");
        assert!(cut.len() < full.len());
        // Already cut: the same bytes again.
        assert_eq!(weights_only(&cut).unwrap(), cut);
        assert!(weights_only(b"not a state").is_err());
    }
}
