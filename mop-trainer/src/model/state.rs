//! Model + optimizer state as one safetensors blob: what hops between workers.
//!
//! Names: `w.<variable>` for every `VarStore` variable (trainable or not, so
//! batch-norm statistics hop too), and the optimizer's own names
//! (`opt.step`, `opt.<param>.m`, `opt.<param>.v`). The header's metadata has
//! one entry, the format tag mapped to the configuration as JSON, for
//! inspection; the configuration passed to [`Model::from_state`] is the one
//! that counts. The same state always encodes to the same bytes.
//! Tensors are written bit for bit, so a round trip changes nothing and
//! training continues exactly as if the model had never left.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorInfo, TensorView};
use tch::{Device, Kind, Tensor};

use super::layers::Init;
use super::Model;
use crate::error::{Error, Result};
use crate::optim::{copy_checked, Optimizer};
use mop_core::config::ModelConfig;

use mop_core::model_state::{FORMAT, WEIGHT_PREFIX};

fn dtype(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        other => {
            return Err(Error::State(format!(
                "cannot serialize tensors of {other:?}"
            )))
        }
    })
}

fn kind(dtype: Dtype) -> Result<Kind> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        other => {
            return Err(Error::State(format!(
                "unsupported tensor type {other:?} in state"
            )))
        }
    })
}

/// `t` on the host, contiguous: what [`encode`] copies bytes from.
fn host(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_to_device(Device::Cpu)?.f_contiguous()?)
}

/// The safetensors blob of `tensors` (host, contiguous) with `metadata`.
fn encode(tensors: Vec<(String, Tensor)>, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let mut typed = tensors
        .into_iter()
        .map(|(name, t)| {
            let len = t.numel() * t.kind().elt_size_in_bytes();
            Ok((dtype(t.kind())?, name, t, len))
        })
        .collect::<Result<Vec<_>>>()?;
    // safetensors::serialize's order: descending dtype (its alignment), then name.
    typed.sort_by(|(ld, ln, ..), (rd, rn, ..)| rd.cmp(ld).then(ln.cmp(rn)));
    let mut infos = Vec::with_capacity(typed.len());
    let mut offset = 0;
    for (dtype, name, t, len) in &typed {
        let info = TensorInfo {
            dtype: *dtype,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data_offsets: (offset, offset + *len),
        };
        infos.push((name.clone(), info));
        offset += *len;
    }
    let bad = |e: &dyn std::fmt::Display| Error::State(format!("cannot encode the state: {e}"));
    let header = Metadata::new(Some(metadata), infos).map_err(|e| bad(&e))?;
    let mut header = serde_json::to_vec(&header).map_err(|e| bad(&e))?;
    // The header is padded with spaces to a multiple of 8 bytes, so the data
    // that follows the 8-byte length is aligned.
    header.resize(header.len().next_multiple_of(8), b' ');
    let data_at = 8 + header.len();
    // Zeroed first: cheaper than copying each tensor through a buffer of
    // its own, and free where calloc maps fresh pages.
    let mut blob = vec![0u8; data_at + offset];
    blob[..8].copy_from_slice(&(header.len() as u64).to_le_bytes());
    blob[8..data_at].copy_from_slice(&header);
    let mut at = data_at;
    for (_, _, t, len) in &typed {
        t.f_copy_data_u8(&mut blob[at..at + *len], t.numel())?;
        at += *len;
    }
    Ok(blob)
}

fn to_tensor(view: &TensorView<'_>, device: Device) -> Result<Tensor> {
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    let t = Tensor::f_from_data_size(view.data(), &shape, kind(view.dtype())?)?;
    Ok(t.f_to_device(device)?)
}

impl Model {
    /// Serializes every weight and `opt`'s whole state into one safetensors
    /// blob, laid out as [`safetensors::serialize`] lays it out (tensors by
    /// descending alignment, then by name), so the bytes are those it would
    /// write. Each tensor is copied once, from its own memory into its
    /// place in the blob: a state hops at every unit, and confA's is 94 MB.
    pub fn to_state(&self, opt: &Optimizer) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for (name, t) in self.vs.variables() {
            tensors.push((format!("{WEIGHT_PREFIX}{name}"), host(&t)?));
        }
        for (name, t) in opt.state_tensors()? {
            tensors.push((name, host(&t)?));
        }
        let config = serde_json::to_string(&self.config)
            .map_err(|e| Error::State(format!("cannot encode the configuration: {e}")))?;
        // One metadata entry: the header is JSON written in map order, and
        // a single key keeps the blob's bytes a function of the state alone.
        encode(tensors, HashMap::from([(FORMAT.to_string(), config)]))
    }

    /// Rebuilds a model and its optimizer from [`to_state`](Self::to_state)'s
    /// blob, on [`crate::device::default_device`].
    pub fn from_state(config: ModelConfig, bytes: &[u8]) -> Result<(Model, Optimizer)> {
        Self::from_state_on(config, bytes, crate::device::default_device())
    }

    /// [`from_state`](Self::from_state) for a TorchScript model whose
    /// module comes as bytes rather than from its file.
    pub fn from_state_with_module(
        config: ModelConfig,
        module: &[u8],
        bytes: &[u8],
    ) -> Result<(Model, Optimizer)> {
        Self::load_state(config, bytes, crate::device::default_device(), Some(module))
    }

    /// Rebuilds a model and its optimizer from a state blob, on `device`.
    /// Every weight and optimizer tensor of `config`'s model must be in the
    /// blob with the right shape, and nothing else.
    pub fn from_state_on(
        config: ModelConfig,
        bytes: &[u8],
        device: Device,
    ) -> Result<(Model, Optimizer)> {
        Self::load_state(config, bytes, device, None)
    }

    /// The model of a state blob without its optimizer, for evaluating:
    /// the blob's weights alone
    /// ([`mop_core::model_state::weights_only`]) are enough, and any
    /// optimizer state in it is not even decoded.
    pub fn from_weights(config: ModelConfig, module: Option<&[u8]>, bytes: &[u8]) -> Result<Model> {
        let device = crate::device::default_device();
        Ok(Self::load(config, bytes, device, module, false)?.0)
    }

    fn load_state(
        config: ModelConfig,
        bytes: &[u8],
        device: Device,
        module: Option<&[u8]>,
    ) -> Result<(Model, Optimizer)> {
        let (model, opt_state) = Self::load(config, bytes, device, module, true)?;
        let c = &model.config;
        let opt = Optimizer::from_state(&model.vs, &c.optimizer, c.lr, c.l2, opt_state)?;
        Ok((model, opt))
    }

    /// The model with the blob's weights, and (if `optimizer`) the
    /// optimizer tensors for [`Optimizer::load_state`].
    fn load(
        config: ModelConfig,
        bytes: &[u8],
        device: Device,
        module: Option<&[u8]>,
        optimizer: bool,
    ) -> Result<(Model, HashMap<String, Tensor>)> {
        let blob = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::State(format!("not a safetensors model state: {e}")))?;
        let model = Model::build(config, device, Init::unfilled(), module)?;
        let mut weights = HashMap::new();
        let mut opt_state = HashMap::new();
        for (name, view) in blob.tensors() {
            if let Some(var) = name.strip_prefix(WEIGHT_PREFIX) {
                weights.insert(var.to_string(), view);
            } else if optimizer {
                opt_state.insert(name, to_tensor(&view, device)?);
            }
        }
        {
            let _no_grad = tch::no_grad_guard();
            for (name, mut var) in model.vs.variables() {
                let view = weights.remove(&name).ok_or_else(|| {
                    Error::State(format!(
                        "weight {name} is missing (state of a different architecture?)"
                    ))
                })?;
                copy_checked(&name, &mut var, &to_tensor(&view, device)?)?;
            }
        }
        if let Some(extra) = weights.keys().next() {
            return Err(Error::State(format!(
                "unexpected weight {extra} (state of a different architecture?)"
            )));
        }
        Ok((model, opt_state))
    }

    /// A fresh optimizer for this model as its configuration specifies.
    pub fn optimizer(&self) -> Result<Optimizer> {
        let c = &self.config;
        Optimizer::new(&self.vs, &c.optimizer, c.lr, c.l2)
    }
}
