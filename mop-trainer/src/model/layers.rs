//! The few layers the zoo is built from, with hopper's own initialization.
//!
//! Initial weights come from a ChaCha8 stream seeded by the model seed, not
//! from libtorch's global generator: a model built on a CUDA worker and on a
//! CPU worker starts from the same bits, and building models concurrently on
//! several threads cannot interleave their random draws. Bounds follow
//! PyTorch's defaults (uniform ±1/√fan_in for linear and convolution weights
//! and biases).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Kind, Tensor};

use crate::error::Result;

/// Source of initial values: seeded uniform draws, or none at all for a model
/// whose weights are about to be replaced by a saved state's.
pub(crate) struct Init {
    rng: Option<ChaCha8Rng>,
}

impl Init {
    /// Draws from a ChaCha8 stream seeded with `seed`.
    pub(crate) fn seeded(seed: u64) -> Self {
        Init {
            rng: Some(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// Variables left unfilled (nothing is drawn or written): for a model
    /// built to take a state's tensors, every one of which replaces a
    /// variable's storage (`Model::from_state` refuses a state that misses
    /// one), so filling them first would only cost a pass over the memory.
    pub(crate) fn unfilled() -> Self {
        Init { rng: None }
    }

    /// A trainable variable `name` under `p`, uniform in `±bound`.
    pub(crate) fn uniform(
        &mut self,
        p: &nn::Path<'_>,
        name: &str,
        dims: &[i64],
        bound: f64,
    ) -> Result<Tensor> {
        let Some(rng) = self.rng.as_mut() else {
            let t = Tensor::f_empty(dims, (p.kind(), p.device()))?;
            return Ok(p.add(name, t, true));
        };
        let n: i64 = dims.iter().product();
        let bound = bound as f32;
        let values: Vec<f32> = (0..n)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
            .collect();
        let t = Tensor::f_from_slice(&values)?.f_view(dims)?;
        Ok(p.f_var_copy(name, &t)?)
    }
}

/// A fully connected layer with its weight stored `[in, out]`.
///
/// The transposed layout (PyTorch stores `[out, in]`) lets the same weight
/// serve as an `embedding_bag` table for one-hot input without a copy.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) w: Tensor,
    pub(crate) b: Tensor,
}

impl Linear {
    pub(crate) fn new(
        p: &nn::Path<'_>,
        init: &mut Init,
        inputs: usize,
        outputs: usize,
    ) -> Result<Self> {
        let bound = 1.0 / (inputs as f64).sqrt();
        let (i, o) = (inputs as i64, outputs as i64);
        Ok(Linear {
            w: init.uniform(p, "weight", &[i, o], bound)?,
            b: init.uniform(p, "bias", &[o], bound)?,
        })
    }

    /// `x · W + b` for dense `[n, in]` input.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.b.f_addmm(x, &self.w)?)
    }

    /// The same function for k-hot input given as `[n, k]` active indices:
    /// the sum of the `k` selected rows of `W`, plus `b`.
    pub(crate) fn forward_indices(&self, indices: &Tensor) -> Result<Tensor> {
        Ok(self.bag_sums(indices)?.f_add(&self.b)?)
    }

    /// [`forward_indices`](Self::forward_indices) with `W` outside autograd,
    /// for lazy Adam: returns the output and the leaf holding the bag sums,
    /// whose gradient after the backward pass is each bag's gradient — from
    /// which the optimizer updates just the rows the bags hold. No dense
    /// `[in, out]` gradient is ever built.
    pub(crate) fn forward_indices_rows(&self, indices: &Tensor) -> Result<(Tensor, Tensor)> {
        let sums = tch::no_grad(|| self.bag_sums(indices))?;
        let leaf = sums.f_detach()?.f_set_requires_grad(true)?;
        Ok((leaf.f_add(&self.b)?, leaf))
    }

    /// `Σ_j W[indices[i, j]]` for every row `i`, as an `embedding_bag` sum.
    fn bag_sums(&self, indices: &Tensor) -> Result<Tensor> {
        let size = indices.size();
        let (n, k) = (size[0], size[1]);
        let offsets = Tensor::f_arange_start_step(0, n * k, k, (Kind::Int64, indices.device()))?;
        let flat = indices.f_reshape([-1])?;
        let (sum, _, _, _) = Tensor::f_embedding_bag(
            &self.w,
            &flat,
            &offsets,
            false,
            0,
            false,
            None::<Tensor>,
            false,
        )?;
        Ok(sum)
    }
}

/// A 2-D convolution, square kernel, "same" padding for odd kernels.
#[derive(Debug)]
pub(crate) struct Conv2d {
    w: Tensor,
    b: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub(crate) fn new(
        p: &nn::Path<'_>,
        init: &mut Init,
        inputs: usize,
        outputs: usize,
        kernel: usize,
        stride: usize,
        bias: bool,
    ) -> Result<Self> {
        let fan_in = inputs * kernel * kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let (i, o, k) = (inputs as i64, outputs as i64, kernel as i64);
        let w = init.uniform(p, "weight", &[o, i, k, k], bound)?;
        let b = if bias {
            Some(init.uniform(p, "bias", &[o], bound)?)
        } else {
            None
        };
        Ok(Conv2d {
            w,
            b,
            stride: stride as i64,
            padding: k / 2,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(
            &self.w,
            self.b.as_ref(),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )?)
    }
}

/// Batch normalization over channels, with running statistics kept in the
/// `VarStore` (as non-trainable variables) so they hop with the model.
#[derive(Debug)]
pub(crate) struct BatchNorm {
    w: Tensor,
    b: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl BatchNorm {
    pub(crate) fn new(p: &nn::Path<'_>, channels: usize) -> Result<Self> {
        let c = [channels as i64];
        Ok(BatchNorm {
            w: p.f_ones("weight", &c)?,
            b: p.f_zeros("bias", &c)?,
            running_mean: p.f_zeros_no_train("running_mean", &c)?,
            running_var: p.f_ones_no_train("running_var", &c)?,
        })
    }

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(x.f_batch_norm(
            Some(&self.w),
            Some(&self.b),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            true,
        )?)
    }
}
