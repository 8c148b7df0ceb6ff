//! TorchScript models: a network written and scripted in PyTorch
//! (`torch.jit.script(MyNet()).save("net.pt")`), trained by hopper like a
//! built-in one.
//!
//! The module's parameters *and* buffers (BatchNorm's running statistics and
//! batch counter) are registered in the model's `VarStore` under PyTorch's
//! own state_dict names (`body.0.weight`, `bn.running_mean`), as tensors that
//! share the module's storage. So everything built on the `VarStore` works
//! unchanged: the optimizer trains the parameters, the state blob carries
//! parameters, buffers and optimizer state bit for bit, and a state loaded
//! into the `VarStore` is the module's. The module's initial weights are the
//! ones saved in the file (the model seed does not redraw them).
//!
//! The module's `forward` takes one float tensor, `[n, …]` with the input's
//! feature shape per row (see [`feature_shape`]), and returns one tensor of
//! outputs, `[n, outputs]` (class logits, one column for a binary or
//! regression task). Both are checked when the model is built, before
//! anything trains, on a batch of zeros in evaluation mode, which neither
//! draws random numbers nor moves BatchNorm's statistics.
//!
//! Dropout draws from libtorch's generator, which the trainer seeds per
//! model, epoch and partition before every unit ([`crate::train::seed_unit`]),
//! so the same unit draws the same masks on whichever trainer runs it.

mod shim;

use std::path::Path;

use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::featurize::one_hot;
use mop_core::config::{InputSpec, ModelConfig, Task};
use shim::ScriptModule;

/// Rows of the batch of zeros the shape check runs (two, so that a
/// BatchNorm in training mode would also accept it).
const CHECK_ROWS: i64 = 2;

/// A scripted module and how to hand it a batch of features.
#[derive(Debug)]
pub(crate) struct Script {
    module: ScriptModule,
    /// Where it was loaded from, for messages.
    path: String,
    /// Criteo slot indices are expanded to a dense one-hot matrix of this
    /// width before `forward`.
    one_hot: Option<usize>,
}

/// The shape of one row of features as a TorchScript module receives it:
/// `[dims]` for Criteo-like tables (one-hot) and `[C, H, W]` for images.
pub fn feature_shape(input: &InputSpec) -> Vec<i64> {
    match *input {
        InputSpec::Image {
            channels,
            height,
            width,
        } => vec![channels as i64, height as i64, width as i64],
        _ => vec![input.dims() as i64],
    }
}

/// The output shape a model of `config` must give for `rows` rows:
/// `[rows, outputs]` (class logits for multiclass, one column for a binary
/// or regression task).
fn output_shape(config: &ModelConfig, rows: i64) -> Vec<i64> {
    vec![rows, config.outputs() as i64]
}

/// What the outputs are, for messages.
fn outputs_meaning(config: &ModelConfig) -> String {
    match config.task {
        Task::Multiclass => format!("one logit per class, classes = {}", config.classes),
        Task::Binary => "one logit, task = \"binary\"".into(),
        Task::Regression => "one value, task = \"regression\"".into(),
    }
}

/// The bytes of the module at `path`, with a message that names it.
pub fn read_module(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the TorchScript module {path}: {e} (arch.path is relative to the run \
             configuration's directory)"
        ))
    })
}

impl Script {
    /// Loads the module in `bytes` (read from `path`) onto `root`'s device,
    /// registers its parameters and buffers under `root`, and checks that
    /// `forward` takes `config`'s features and gives its outputs.
    pub(crate) fn load(
        root: &nn::Path<'_>,
        config: &ModelConfig,
        path: &str,
        bytes: &[u8],
    ) -> Result<Self> {
        let module = ScriptModule::load(bytes, root.device())
            .map_err(|e| Error::Config(format!("{path}: {e}")))?;
        for (buffers, tensors) in [(false, module.named(false)?), (true, module.named(true)?)] {
            for (name, tensor) in tensors {
                let (parents, leaf) = match name.rsplit_once('.') {
                    Some((parents, leaf)) => (Some(parents), leaf),
                    None => (None, name.as_str()),
                };
                let at = parents
                    .into_iter()
                    .flat_map(|p| p.split('.'))
                    .fold(root.clone(), |at, part| at / part);
                let trainable = !buffers && tensor.requires_grad();
                _ = at.add(leaf, tensor, trainable);
            }
        }
        let script = Script {
            module,
            path: path.to_string(),
            one_hot: matches!(config.input, InputSpec::Criteo { .. }).then(|| config.input.dims()),
        };
        script.check(config, root.device())?;
        Ok(script)
    }

    /// Runs `forward` on a batch of zeros in evaluation mode and checks the
    /// output's shape.
    fn check(&self, config: &ModelConfig, device: Device) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        let row = feature_shape(&config.input);
        let input: Vec<i64> = std::iter::once(CHECK_ROWS)
            .chain(row.iter().copied())
            .collect();
        let zeros = Tensor::f_zeros(input.as_slice(), (Kind::Float, device))?;
        self.module.set_train(false)?;
        let out = self.module.forward(&zeros).map_err(|e| {
            Error::Config(format!(
                "the TorchScript module {} does not take this run's features: hopper gives \
                 forward one float tensor of shape [n, {}] (n rows of {:?} input; checked with \
                 n = {CHECK_ROWS}), and forward failed: {e}",
                self.path,
                join(&row),
                config.input,
            ))
        })?;
        let wanted = output_shape(config, CHECK_ROWS);
        if out.size() != wanted || !out.is_floating_point() {
            return Err(Error::Config(format!(
                "the TorchScript module {}: forward on [{}] gave {:?} of shape [{}], wanted \
                 float outputs of shape [{}] ({})",
                self.path,
                join(&input),
                out.kind(),
                join(&out.size()),
                join(&wanted),
                outputs_meaning(config),
            )));
        }
        Ok(())
    }

    /// The outputs for a batch of features as the featurizer produced them,
    /// in training or evaluation mode.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.module.set_train(train)?;
        let x = match (self.one_hot, x.kind()) {
            (Some(dims), Kind::Int64) => one_hot(x, dims)?,
            (_, Kind::Float) => x.shallow_clone(),
            (_, other) => {
                return Err(Error::Data(format!(
                    "the TorchScript module {} takes float features, the featurizer gave {other:?}",
                    self.path
                )))
            }
        };
        self.module.forward(&x)
    }

    /// Writes the module with its current (trained) tensors: PyTorch's
    /// `torch.jit.load` reads it back.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        self.module.save(path)
    }
}

fn join(dims: &[i64]) -> String {
    dims.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
