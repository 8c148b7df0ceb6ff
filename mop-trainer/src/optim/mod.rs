//! Optimizers whose state we own, so it can hop with the model.
//!
//! tch's `nn::Optimizer` keeps its moments inside libtorch where they cannot
//! be read out or restored, which MOP needs: a model's Adam moments must move
//! to the next worker with its weights. Here every piece of state (momentum
//! buffers, first and second moments, the step count) is a tensor we hold,
//! named after the parameter it belongs to, and
//! [`Optimizer::state_tensors`] / [`Optimizer::load_state`] expose them.
//!
//! The updates follow PyTorch's `torch.optim` (non-fused, single tensor)
//! semantics: L2 λ is added to the gradient for SGD and Adam
//! (`weight_decay`), and applied as decoupled decay `p ← p·(1 − lr·λ)` for
//! AdamW. [`OptimizerKind::LazyAdam`] is Adam except on a sparse first
//! layer, whose rows are updated only when a batch touches them (see
//! [`RowGrad`]). They run in place under `no_grad` and allocate nothing per step:
//! tch's `addcmul_`/`addcdiv_` take no scalar `value`, so scalars are folded
//! into 0-dim tensors or into the denominator, and the gradient buffer —
//! which is zeroed before the next backward pass anyway — doubles as scratch
//! space. Consequently **the gradients are garbage after [`Optimizer::step`]**;
//! call [`Optimizer::zero_grad`] before every backward pass. It drops the
//! gradients (PyTorch's `set_to_none=True`), so the backward pass stores
//! fresh ones instead of adding them to zeros.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use mop_core::config::OptimizerKind;

mod shim;

/// Adam's β₁ (PyTorch default).
pub const ADAM_BETA1: f64 = 0.9;
/// Adam's β₂ (PyTorch default).
pub const ADAM_BETA2: f64 = 0.999;
/// Adam's ε (PyTorch default).
pub const ADAM_EPS: f64 = 1e-8;

/// Name of the step counter in [`Optimizer::state_tensors`].
pub const STEP_KEY: &str = "opt.step";

/// The gradient of a sparse first layer's weight, as the rows a batch
/// touched and the gradients of its bags, for [`OptimizerKind::LazyAdam`].
///
/// The layer computes `Σ_j W[indices[i, j]]` for each of `n` bags (rows of
/// input); row `r`'s gradient is the sum of `bag_grad[i]` over the bags that
/// hold `r`. Handing over the `[n, H]` bag gradients instead of a dense
/// `[rows, H]` gradient is what makes the update cost proportional to the
/// touched rows.
pub struct RowGrad {
    /// The weight's name in the `VarStore` (e.g. `fc0.weight`).
    pub param: String,
    /// `[n, k]` int64: the rows each bag sums.
    pub indices: Tensor,
    /// `[n, H]` float: the loss gradient of each bag's sum.
    pub bag_grad: Tensor,
}

/// One parameter with its optimizer state.
struct Param {
    name: String,
    p: Tensor,
    /// SGD momentum buffer, or Adam's first moment.
    m: Option<Tensor>,
    /// Adam's second moment.
    v: Option<Tensor>,
}

/// SGD with momentum, Adam or AdamW over a `VarStore`'s trainable variables.
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    l2: f64,
    step: i64,
    params: Vec<Param>,
    /// `λ` as a 0-dim tensor (for `g += λ·p` via `addcmul_`).
    l2_t: Tensor,
    /// `−lr` as a 0-dim tensor (for SGD's `p += −lr·buf`).
    neg_lr_t: Tensor,
    /// Adam/AdamW through libtorch's fused kernel (see [`shim`]).
    fused: bool,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("kind", &self.kind)
            .field("lr", &self.lr)
            .field("l2", &self.l2)
            .field("step", &self.step)
            .field("params", &self.params.len())
            .field("fused", &self.fused)
            .finish()
    }
}

fn scalar(x: f64, device: Device) -> Result<Tensor> {
    Ok(Tensor::f_scalar_tensor(x, (Kind::Float, device))?)
}

impl Optimizer {
    /// An optimizer with fresh (zero) state over `vs`'s trainable variables,
    /// visited in name order.
    pub fn new(vs: &VarStore, kind: &OptimizerKind, lr: f64, l2: f64) -> Result<Self> {
        Self::with_moments(vs, kind, lr, l2, Tensor::f_zeros_like)
    }

    /// An optimizer over `vs`'s trainable variables with the state of
    /// [`state_tensors`](Self::state_tensors), as [`load_state`](Self::load_state)
    /// checks it. Its moments are never zeroed first: the state's tensors
    /// replace them, and a model that hops rebuilds its optimizer at every
    /// unit (two thirds of its state are Adam's moments).
    pub fn from_state(
        vs: &VarStore,
        kind: &OptimizerKind,
        lr: f64,
        l2: f64,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self> {
        let mut opt = Self::with_moments(vs, kind, lr, l2, Tensor::f_empty_like)?;
        opt.load_state(tensors)?;
        Ok(opt)
    }

    /// An optimizer whose moments (where its kind keeps them) are
    /// `moment(param)`.
    fn with_moments(
        vs: &VarStore,
        kind: &OptimizerKind,
        lr: f64,
        l2: f64,
        moment: fn(&Tensor) -> std::result::Result<Tensor, tch::TchError>,
    ) -> Result<Self> {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (needs_m, needs_v) = match *kind {
            OptimizerKind::Sgd { momentum } => (momentum != 0.0, false),
            OptimizerKind::Adam | OptimizerKind::AdamW | OptimizerKind::LazyAdam => (true, true),
        };
        let params = vars
            .into_iter()
            .map(|(name, p)| {
                let moment = || moment(&p);
                Ok(Param {
                    m: needs_m.then(moment).transpose()?,
                    v: needs_v.then(moment).transpose()?,
                    name,
                    p,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let device = vs.device();
        Ok(Optimizer {
            kind: kind.clone(),
            lr,
            l2,
            step: 0,
            params,
            l2_t: scalar(l2, device)?,
            neg_lr_t: scalar(-lr, device)?,
            fused: true,
        })
    }

    /// Chooses libtorch's fused Adam/AdamW kernel (the default; about twice
    /// as fast when the step dominates) or the unfused in-place sequence.
    /// Both compute PyTorch's update; results differ only in rounding, and
    /// the state is the same, so a model may switch between them.
    pub fn with_fused(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
    }

    /// Number of steps taken so far.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Changes the learning rate (e.g. for a schedule) from the next step on.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        self.neg_lr_t = scalar(-lr, self.neg_lr_t.device())?;
        self.lr = lr;
        Ok(())
    }

    /// Drops every parameter's gradient; call before each backward pass.
    pub fn zero_grad(&mut self) {
        for param in &self.params {
            shim::set_grad_none(&param.p);
        }
    }

    /// One update from the gradients of the last backward pass. Parameters
    /// without a gradient (unused by the loss) are skipped, as in PyTorch.
    pub fn step(&mut self) -> Result<()> {
        self.step_with_rows(&[])
    }

    /// [`step`](Self::step), with the row gradients of sparse layers (for
    /// [`OptimizerKind::LazyAdam`]; other optimizers refuse them).
    pub fn step_with_rows(&mut self, rows: &[RowGrad]) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        self.step += 1;
        match self.kind {
            OptimizerKind::Sgd { momentum } if rows.is_empty() => self.sgd_step(momentum),
            OptimizerKind::Adam if rows.is_empty() => self.adam_step(false),
            OptimizerKind::AdamW if rows.is_empty() => self.adam_step(true),
            OptimizerKind::LazyAdam => {
                self.adam_step(false)?;
                self.lazy_rows_step(rows)
            }
            _ => Err(Error::State(format!(
                "{:?} cannot take row gradients (only lazy_adam does)",
                self.kind
            ))),
        }
    }

    /// Lazy Adam on each sparse layer's touched rows: their moments and
    /// weights are updated with the step's bias correction; untouched rows
    /// keep theirs (their moments do not decay, which is what makes this a
    /// different optimizer from Adam).
    fn lazy_rows_step(&mut self, rows: &[RowGrad]) -> Result<()> {
        let hyper = self.hyper(false);
        for r in rows {
            let param = self
                .params
                .iter()
                .find(|p| p.name == r.param)
                .ok_or_else(|| Error::State(format!("no parameter {} to update", r.param)))?;
            let (Some(m), Some(v)) = (&param.m, &param.v) else {
                return Err(Error::State(format!(
                    "Adam state of {} is missing",
                    param.name
                )));
            };
            shim::lazy_adam_rows(&param.p, m, v, &r.indices, &r.bag_grad, self.step, &hyper)?;
        }
        Ok(())
    }

    fn hyper(&self, decoupled: bool) -> shim::Hyper {
        shim::Hyper {
            lr: self.lr,
            beta1: ADAM_BETA1,
            beta2: ADAM_BETA2,
            weight_decay: self.l2,
            eps: ADAM_EPS,
            decoupled,
        }
    }

    fn sgd_step(&mut self, momentum: f64) -> Result<()> {
        for param in &mut self.params {
            let mut g = param.p.f_grad()?;
            if !g.defined() {
                continue;
            }
            if self.l2 != 0.0 {
                _ = g.f_addcmul_(&param.p, &self.l2_t)?;
            }
            // PyTorch starts the buffer as a copy of the first gradient; a
            // zero buffer times momentum plus the gradient is the same value.
            let direction = match param.m.as_mut() {
                Some(buf) => {
                    _ = buf.f_mul_scalar_(momentum)?.f_add_(&g)?;
                    buf.shallow_clone()
                }
                None => g,
            };
            _ = param.p.f_addcmul_(&direction, &self.neg_lr_t)?;
        }
        Ok(())
    }

    fn adam_step(&mut self, decoupled: bool) -> Result<()> {
        if self.fused {
            return self.fused_adam_step(decoupled);
        }
        let t = self.step as i32;
        let bc1 = 1.0 - ADAM_BETA1.powi(t);
        let bc2 = 1.0 - ADAM_BETA2.powi(t);
        // p ← p − lr/bc1 · m / (√v/√bc2 + ε)  is computed as  p ← p + m / d
        // with d = √v · (−bc1/(lr·√bc2)) − bc1·ε/lr, built in the grad buffer.
        let d_scale = -bc1 / (self.lr * bc2.sqrt());
        let d_shift = -bc1 * ADAM_EPS / self.lr;
        for param in &mut self.params {
            let mut g = param.p.f_grad()?;
            if !g.defined() {
                continue;
            }
            let (Some(m), Some(v)) = (param.m.as_mut(), param.v.as_mut()) else {
                return Err(Error::State(format!(
                    "Adam state of {} is missing",
                    param.name
                )));
            };
            if self.l2 != 0.0 {
                if decoupled {
                    _ = param.p.f_mul_scalar_(1.0 - self.lr * self.l2)?;
                } else {
                    _ = g.f_addcmul_(&param.p, &self.l2_t)?;
                }
            }
            _ = m.f_lerp_(&g, 1.0 - ADAM_BETA1)?;
            _ = g.f_square_()?;
            _ = v.f_lerp_(&g, 1.0 - ADAM_BETA2)?;
            _ = v.f_sqrt_out(&g)?;
            _ = g.f_mul_scalar_(d_scale)?.f_add_scalar_(d_shift)?;
            _ = param.p.f_addcdiv_(m, &g)?;
        }
        Ok(())
    }

    fn fused_adam_step(&mut self, decoupled: bool) -> Result<()> {
        let mut group = shim::Group::default();
        for param in &self.params {
            let g = param.p.f_grad()?;
            if !g.defined() {
                continue;
            }
            let (Some(m), Some(v)) = (&param.m, &param.v) else {
                return Err(Error::State(format!(
                    "Adam state of {} is missing",
                    param.name
                )));
            };
            group.push(&param.p, g, m, v);
        }
        let step = scalar(self.step as f64, self.l2_t.device())?;
        group.adam(&step, &self.hyper(decoupled))
    }

    /// Every state tensor under its state name: `opt.step` (`[1]` `i64`),
    /// `opt.<param>.m` and `opt.<param>.v`. The tensors share storage with
    /// the optimizer (no copy).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![(STEP_KEY.to_string(), Tensor::f_from_slice(&[self.step])?)];
        for param in &self.params {
            if let Some(m) = &param.m {
                out.push((format!("opt.{}.m", param.name), m.shallow_clone()));
            }
            if let Some(v) = &param.v {
                out.push((format!("opt.{}.v", param.name), v.shallow_clone()));
            }
        }
        Ok(out)
    }

    /// Restores the state from tensors named as in
    /// [`state_tensors`](Self::state_tensors). Every expected tensor must be
    /// present with the right shape; unknown `opt.*` names are errors too
    /// (the state belongs to another optimizer or architecture).
    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        let step = tensors
            .remove(STEP_KEY)
            .ok_or_else(|| Error::State(format!("{STEP_KEY} is missing")))?;
        if step.kind() != Kind::Int64 || step.numel() != 1 {
            return Err(Error::State(format!(
                "{STEP_KEY} must be one int64, got {:?} {:?}",
                step.kind(),
                step.size()
            )));
        }
        self.step = step.f_int64_value(&[0])?;
        for param in &mut self.params {
            for (suffix, slot) in [("m", &mut param.m), ("v", &mut param.v)] {
                let Some(dst) = slot.as_mut() else { continue };
                let key = format!("opt.{}.{suffix}", param.name);
                let src = tensors
                    .remove(&key)
                    .ok_or_else(|| Error::State(format!("{key} is missing")))?;
                copy_checked(&key, dst, &src)?;
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::State(format!(
                "unexpected optimizer tensor {extra} (state of a different optimizer or model?)"
            )));
        }
        Ok(())
    }
}

/// Gives `dst` the values of `src` (its storage: no copy) after checking
/// shape and type agree.
pub(crate) fn copy_checked(name: &str, dst: &mut Tensor, src: &Tensor) -> Result<()> {
    if dst.size() != src.size() || dst.kind() != src.kind() {
        return Err(Error::State(format!(
            "{name} is {:?} {:?} in the state but {:?} {:?} in the model",
            src.kind(),
            src.size(),
            dst.kind(),
            dst.size()
        )));
    }
    // `src` is a tensor of its own, just decoded from a state: `dst` takes
    // its storage instead of a copy of it (a copy of confA's 94 MB state
    // is ~55 ms, mostly page faults). Every holder of `dst` sees the new
    // storage, as it would the copied values.
    dst.f_set_data(src)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-parameter store with `p = [1, -2, 3]` and gradient `g`.
    fn store_with_grad(g: [f32; 3]) -> (VarStore, Tensor) {
        let vs = VarStore::new(Device::Cpu);
        let p = (vs.root() / "layer").var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 3.0]));
        set_grad(&p, g);
        (vs, p)
    }

    /// Makes `p.grad()` equal `g` through a backward pass of `Σ g·p`.
    fn set_grad(p: &Tensor, g: [f32; 3]) {
        let mut p = p.shallow_clone();
        p.zero_grad();
        (&p * Tensor::from_slice(&g)).sum(Kind::Float).backward();
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f32>::try_from(t)
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "got {got:?}, want {want:?}"
            );
        }
    }

    /// Reference Adam/AdamW in f64, written from PyTorch's documentation.
    fn reference_adam(
        p0: &[f64],
        grads: &[[f32; 3]],
        lr: f64,
        l2: f64,
        decoupled: bool,
    ) -> Vec<f64> {
        let (mut p, mut m, mut v) = (p0.to_vec(), vec![0.0; 3], vec![0.0; 3]);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..3 {
                let mut gi = f64::from(g[i]);
                if decoupled {
                    p[i] *= 1.0 - lr * l2;
                } else {
                    gi += l2 * p[i];
                }
                m[i] = ADAM_BETA1 * m[i] + (1.0 - ADAM_BETA1) * gi;
                v[i] = ADAM_BETA2 * v[i] + (1.0 - ADAM_BETA2) * gi * gi;
                let mh = m[i] / (1.0 - ADAM_BETA1.powi(t));
                let vh = v[i] / (1.0 - ADAM_BETA2.powi(t));
                p[i] -= lr * mh / (vh.sqrt() + ADAM_EPS);
            }
        }
        p
    }

    fn run(kind: OptimizerKind, lr: f64, l2: f64, grads: &[[f32; 3]]) -> Vec<f64> {
        run_fused(kind, lr, l2, grads, true)
    }

    fn run_fused(
        kind: OptimizerKind,
        lr: f64,
        l2: f64,
        grads: &[[f32; 3]],
        fused: bool,
    ) -> Vec<f64> {
        let (vs, p) = store_with_grad(grads[0]);
        let mut opt = Optimizer::new(&vs, &kind, lr, l2)
            .unwrap()
            .with_fused(fused);
        for (i, g) in grads.iter().enumerate() {
            if i > 0 {
                opt.zero_grad();
                set_grad(&p, *g);
            }
            opt.step().unwrap();
        }
        assert_eq!(opt.steps(), grads.len() as i64);
        values(&p)
    }

    const GRADS: [[f32; 3]; 3] = [[0.5, -1.0, 2.0], [0.25, 0.5, -4.0], [-1.0, 1e-3, 0.0]];

    #[test]
    fn adam_matches_a_hand_computation_fused_and_unfused() {
        let want = reference_adam(&[1.0, -2.0, 3.0], &GRADS, 0.1, 0.01, false);
        for fused in [true, false] {
            assert_close(
                &run_fused(OptimizerKind::Adam, 0.1, 0.01, &GRADS, fused),
                &want,
            );
        }
    }

    #[test]
    fn adamw_decouples_weight_decay() {
        let want = reference_adam(&[1.0, -2.0, 3.0], &GRADS, 0.1, 0.05, true);
        assert_close(
            &run_fused(OptimizerKind::AdamW, 0.1, 0.05, &GRADS, false),
            &want,
        );
        let got = run(OptimizerKind::AdamW, 0.1, 0.05, &GRADS);
        assert_close(&got, &want);
        let coupled = run(OptimizerKind::Adam, 0.1, 0.05, &GRADS);
        assert!(got.iter().zip(&coupled).any(|(a, b)| (a - b).abs() > 1e-4));
    }

    #[test]
    fn sgd_with_momentum_matches_a_hand_computation() {
        let (lr, l2, mu) = (0.1, 0.01, 0.9);
        let got = run(OptimizerKind::Sgd { momentum: mu }, lr, l2, &GRADS);
        let (mut p, mut buf) = (vec![1.0f64, -2.0, 3.0], vec![0.0f64; 3]);
        for g in GRADS {
            for i in 0..3 {
                let gi = f64::from(g[i]) + l2 * p[i];
                buf[i] = mu * buf[i] + gi;
                p[i] -= lr * buf[i];
            }
        }
        assert_close(&got, &p);
        let plain = run(OptimizerKind::Sgd { momentum: 0.0 }, 0.5, 0.0, &GRADS[..1]);
        assert_close(&plain, &[0.75, -1.5, 2.0]);
    }

    /// Lazy Adam against a reference in f64 written from its definition:
    /// a touched row's gradient is the sum of the gradients of the bags
    /// holding it (twice if a bag holds it twice) plus L2; it gets Adam's
    /// update with the global step's bias correction; untouched rows, and
    /// their moments, do not change. `Float` runs the CPU row kernel,
    /// `Double` the ATen path other devices take.
    #[test]
    fn lazy_adam_updates_only_the_touched_rows() {
        let (lr, l2) = (0.1, 0.01);
        let w0 = [1.0, -2.0, 0.5, 0.25, 3.0, -1.0, -0.5, 2.0];
        let steps: [(&[i64], &[f32]); 2] = [
            (&[0, 2, 2, 2], &[0.5, -1.0, 0.25, 2.0]),
            (&[1, 1], &[1.0, -0.5]),
        ];
        for kind in [Kind::Float, Kind::Double] {
            let vs = VarStore::new(Device::Cpu);
            let init = Tensor::from_slice(&w0).view([4, 2]).to_kind(kind);
            let w = (vs.root() / "fc0").var_copy("weight", &init);
            let mut opt = Optimizer::new(&vs, &OptimizerKind::LazyAdam, lr, l2).unwrap();
            let (mut p, mut m, mut v) = (w0.to_vec(), [0.0f64; 8], [0.0f64; 8]);
            for (t, (indices, grads)) in steps.iter().enumerate() {
                let n = grads.len() as i64 / 2;
                let rows = [RowGrad {
                    param: "fc0.weight".into(),
                    indices: Tensor::from_slice(indices).view([n, -1]),
                    bag_grad: Tensor::from_slice(grads).view([n, 2]).to_kind(kind),
                }];
                opt.step_with_rows(&rows).unwrap();
                let k = indices.len() / n as usize;
                let t = (t + 1) as i32;
                let mut g = [0.0f64; 8];
                let mut touched = [false; 4];
                for (e, &r) in indices.iter().enumerate() {
                    let (r, bag) = (r as usize, e / k);
                    touched[r] = true;
                    for j in 0..2 {
                        g[r * 2 + j] += f64::from(grads[bag * 2 + j]);
                    }
                }
                for i in (0..8).filter(|i| touched[i / 2]) {
                    let gi = g[i] + l2 * p[i];
                    m[i] = ADAM_BETA1 * m[i] + (1.0 - ADAM_BETA1) * gi;
                    v[i] = ADAM_BETA2 * v[i] + (1.0 - ADAM_BETA2) * gi * gi;
                    let denom = (v[i] / (1.0 - ADAM_BETA2.powi(t))).sqrt() + ADAM_EPS;
                    p[i] -= lr * m[i] / (1.0 - ADAM_BETA1.powi(t)) / denom;
                }
            }
            let got: Vec<f64> = Vec::<f64>::try_from(w.to_kind(Kind::Double).view([-1])).unwrap();
            assert_close(&got, &p);
            // Row 3 was never touched: neither weights nor moments moved.
            assert_eq!(&got[6..], &w0[6..]);
            let state = opt.state_tensors().unwrap();
            let moments =
                Vec::<f64>::try_from(state[1].1.to_kind(Kind::Double).view([-1])).unwrap();
            assert_eq!(&moments[6..], &[0.0, 0.0]);
        }
    }

    #[test]
    fn only_lazy_adam_takes_row_gradients() {
        let (vs, _p) = store_with_grad([1.0, 2.0, 3.0]);
        let mut opt = Optimizer::new(&vs, &OptimizerKind::Adam, 0.1, 0.0).unwrap();
        let rows = [RowGrad {
            param: "layer.w".into(),
            indices: Tensor::from_slice(&[0i64]).view([1, 1]),
            bag_grad: Tensor::from_slice(&[1.0f32]).view([1, 1]),
        }];
        let err = opt.step_with_rows(&rows).unwrap_err();
        assert!(err.to_string().contains("only lazy_adam"), "{err}");
    }

    #[test]
    fn state_names_and_restore_round_trip() {
        let (vs, _p) = store_with_grad([1.0, 2.0, 3.0]);
        let mut opt = Optimizer::new(&vs, &OptimizerKind::Adam, 0.1, 0.0).unwrap();
        opt.step().unwrap();
        let state = opt.state_tensors().unwrap();
        let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["opt.step", "opt.layer.w.m", "opt.layer.w.v"]);
        let copies: HashMap<String, Tensor> =
            state.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        let mut fresh = Optimizer::new(&vs, &OptimizerKind::Adam, 0.1, 0.0).unwrap();
        fresh.load_state(copies).unwrap();
        assert_eq!(fresh.steps(), 1);
        for ((_, a), (_, b)) in fresh.state_tensors().unwrap().iter().zip(&state) {
            assert!(a.equal(b));
        }
        let sgd_state = HashMap::from([(STEP_KEY.to_string(), Tensor::from_slice(&[3i64]))]);
        let err = fresh.load_state(sgd_state);
        assert!(matches!(err, Err(Error::State(m)) if m.contains("opt.layer.w.m")));
    }
}
