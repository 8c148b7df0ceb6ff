//! The model zoo: one [`Model`] type over several architectures.
//!
//! A [`Model`] is its [`ModelConfig`], a `tch` `VarStore` holding every
//! weight, and the network that reads them. Building is deterministic: the
//! same configuration and seed give bit-identical initial weights on any
//! device (see `layers::Init`). The weights and the optimizer state travel
//! between workers as one safetensors blob ([`Model::to_state`],
//! [`Model::from_state`]).
//!
//! Weight names are the `VarStore` paths, e.g. `fc0.weight`; linear weights
//! are stored `[in, out]` (transposed relative to PyTorch) so that the first
//! layer of a Criteo model can double as an `embedding_bag` table.

mod cnn;
mod layers;
mod mlp;
mod resnet;
mod state;
pub mod torchscript;

use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use crate::error::{Error, Result};
use crate::optim::RowGrad;
use layers::Init;
use mop_core::config::{Arch, InputSpec, ModelConfig, OptimizerKind};

/// The network behind a [`Model`], one variant per architecture.
#[derive(Debug)]
enum Net {
    Mlp(mlp::Mlp),
    Cnn(cnn::Cnn),
    ResNet18(resnet::ResNet18),
    Script(torchscript::Script),
}

/// A model: configuration, weights and network.
pub struct Model {
    config: ModelConfig,
    vs: VarStore,
    net: Net,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("device", &self.vs.device())
            .field("parameters", &self.parameter_count())
            .finish()
    }
}

impl Model {
    /// Builds `config`'s network with weights drawn from `seed`, on
    /// [`crate::device::default_device`].
    pub fn new(config: ModelConfig, seed: u64) -> Result<Self> {
        Self::new_on(config, seed, crate::device::default_device())
    }

    /// Builds `config`'s network with weights drawn from `seed`, on `device`.
    pub fn new_on(config: ModelConfig, seed: u64, device: Device) -> Result<Self> {
        // libtorch's own generator is not used for initialization, but seed
        // it anyway so any randomness inside kernels is reproducible.
        tch::manual_seed(seed as i64);
        Self::build(config, device, Init::seeded(seed), None)
    }

    /// Builds a TorchScript model from the module's bytes (as the runner
    /// ships them to trainers that may not have its file), on
    /// [`crate::device::default_device`]. Its initial weights are the
    /// module's; for other architectures `module` is ignored and this is
    /// [`Model::new`].
    pub fn new_with_module(config: ModelConfig, module: &[u8], seed: u64) -> Result<Self> {
        tch::manual_seed(seed as i64);
        let device = crate::device::default_device();
        Self::build(config, device, Init::seeded(seed), Some(module))
    }

    /// Builds the network: built-in architectures with weights from `init`
    /// (all zero when they are to be overwritten), a TorchScript one from
    /// `module`'s bytes, or else its file.
    fn build(
        config: ModelConfig,
        device: Device,
        mut init: Init,
        module: Option<&[u8]>,
    ) -> Result<Self> {
        config.validate()?;
        let vs = VarStore::new(device);
        let root = vs.root();
        let lazy = config.optimizer == OptimizerKind::LazyAdam;
        let net = match (&config.arch, &config.input) {
            (Arch::TorchScript { path }, _) => {
                let file;
                let bytes = match module {
                    Some(bytes) => bytes,
                    None => {
                        file = torchscript::read_module(path)?;
                        &file
                    }
                };
                Net::Script(torchscript::Script::load(&root, &config, path, bytes)?)
            }
            (Arch::Mlp { hidden }, input) => Net::Mlp(mlp::Mlp::new(
                &root,
                &mut init,
                input.dims(),
                hidden,
                config.outputs(),
                input.is_sparse(),
                lazy,
            )?),
            (Arch::LogReg, input) => Net::Mlp(mlp::Mlp::new(
                &root,
                &mut init,
                input.dims(),
                &[],
                config.outputs(),
                input.is_sparse(),
                lazy,
            )?),
            (
                Arch::Cnn,
                &InputSpec::Image {
                    channels,
                    height,
                    width,
                },
            ) => Net::Cnn(cnn::Cnn::new(
                &root,
                &mut init,
                [channels, height, width],
                config.outputs(),
            )?),
            (Arch::ResNet18, &InputSpec::Image { channels, .. }) => Net::ResNet18(
                resnet::ResNet18::new(&root, &mut init, channels, config.outputs())?,
            ),
            (arch, input) => {
                return Err(Error::Config(format!(
                    "architecture {arch:?} cannot take input {input:?}"
                )))
            }
        };
        Ok(Model { config, vs, net })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device holding the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The weights (trainable and not, e.g. batch-norm statistics).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Number of trainable scalars.
    pub fn parameter_count(&self) -> usize {
        self.vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum()
    }

    /// Outputs `[n, outputs]` (class logits `[n, classes]` for multiclass,
    /// see `ModelConfig::outputs`) for a batch of features as produced by
    /// [`crate::featurize::Featurizer`] (already on [`Model::device`]).
    /// `train` selects training behaviour (batch statistics in batch norm).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.net {
            Net::Mlp(net) => net.forward(x, train),
            Net::Cnn(net) => net.forward(&self.image_input(x)?),
            Net::ResNet18(net) => net.forward_t(&self.image_input(x)?, train),
            Net::Script(net) => net.forward_t(x, train),
        }
    }

    /// Writes a TorchScript model as a TorchScript file with its current
    /// weights and buffers, which PyTorch's `torch.jit.load` reads back.
    pub fn save_torchscript(&self, path: &std::path::Path) -> Result<()> {
        match &self.net {
            Net::Script(net) => net.save(path),
            _ => Err(Error::Config(format!(
                "only TorchScript models save as TorchScript, this one is {:?}",
                self.config.arch
            ))),
        }
    }

    /// The row gradients of sparse layers trained with lazy Adam, from the
    /// last training forward and backward pass; pass them to
    /// [`crate::optim::Optimizer::step_with_rows`]. Empty for other models.
    pub fn take_row_grads(&self) -> Result<Vec<RowGrad>> {
        match &self.net {
            Net::Mlp(net) => net.take_row_grads(),
            Net::Cnn(_) | Net::ResNet18(_) | Net::Script(_) => Ok(Vec::new()),
        }
    }

    fn image_input(&self, x: &Tensor) -> Result<Tensor> {
        if x.dim() != 4 || x.kind() != Kind::Float {
            return Err(Error::Data(format!(
                "{:?} needs [n, C, H, W] float images, got {:?} {:?}",
                self.config.arch,
                x.size(),
                x.kind()
            )));
        }
        Ok(x.shallow_clone())
    }

    /// Mean cross-entropy of `logits` against class labels `y`.
    pub fn loss(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
        Ok(logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)?)
    }

    /// Number of rows whose arg-max logit is the label.
    pub fn correct(logits: &Tensor, y: &Tensor) -> Result<i64> {
        let hits = logits.f_argmax(-1, false)?.f_eq_tensor(y)?;
        Ok(hits.f_sum(Kind::Int64)?.f_int64_value(&[])?)
    }
}

#[cfg(test)]
mod tests;
