//! The optimizer kernels tch does not expose, through the C++ shim
//! `csrc/optim.cpp` (compiled by `build.rs`): libtorch's fused Adam/AdamW,
//! dropping a gradient, and lazy Adam over the touched rows of a sparse
//! first layer.
//!
//! The shim receives tch's tensor handles, which are `at::Tensor*`, and works
//! on the tensors they point to (taking references, not copies); C++
//! exceptions come back as an error message. The crate's `unsafe` code is
//! here and in the TorchScript shim (`model/torchscript/shim.rs`).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};

use tch::{TchError, Tensor};

use crate::error::Result;

extern "C" {
    fn hopper_fused_adam(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avgs: *const *mut c_void,
        exp_avg_sqs: *const *mut c_void,
        step: *mut c_void,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        decoupled: c_int,
    ) -> *mut c_char;
    fn hopper_set_grad_none(param: *mut c_void);
    fn hopper_lazy_adam_rows(
        w: *mut c_void,
        m: *mut c_void,
        v: *mut c_void,
        indices: *mut c_void,
        bag_grad: *mut c_void,
        step: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
    fn hopper_free_error(message: *mut c_char);
}

/// Adam's hyper-parameters for one step.
pub(super) struct Hyper {
    pub(super) lr: f64,
    pub(super) beta1: f64,
    pub(super) beta2: f64,
    pub(super) weight_decay: f64,
    pub(super) eps: f64,
    pub(super) decoupled: bool,
}

fn handle(t: &Tensor) -> *mut c_void {
    t.as_ptr().cast_mut().cast()
}

/// Turns the shim's return value (null, or a message to free) into a result.
fn checked(what: &str, error: *mut c_char) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string from `strdup`,
    // released exactly once with the shim's `free`.
    let message = unsafe {
        let message = CStr::from_ptr(error).to_string_lossy().into_owned();
        hopper_free_error(error);
        message
    };
    Err(TchError::Torch(format!("{what}: {message}")).into())
}

/// Drops `param`'s gradient, as PyTorch's `zero_grad(set_to_none=True)`: the
/// next backward pass stores its gradient rather than adding it to zeros.
pub(super) fn set_grad_none(param: &Tensor) {
    // SAFETY: `param` is a live `at::Tensor*`; resetting its gradient
    // cannot throw.
    unsafe { hopper_set_grad_none(handle(param)) }
}

/// Lazy Adam on the rows of `w` named in `indices` (`[n, k]`), whose bags'
/// loss gradients are `bag_grad` (`[n, H]`); `m` and `v` are `w`'s moments
/// and `step` the already incremented step count. L2 `weight_decay` is added
/// to the touched rows' gradients.
pub(super) fn lazy_adam_rows(
    w: &Tensor,
    m: &Tensor,
    v: &Tensor,
    indices: &Tensor,
    bag_grad: &Tensor,
    step: i64,
    h: &Hyper,
) -> Result<()> {
    // SAFETY: every pointer is a live `at::Tensor*` borrowed for the call;
    // the shim checks shapes and types, and catches every C++ exception.
    let error = unsafe {
        hopper_lazy_adam_rows(
            handle(w),
            handle(m),
            handle(v),
            handle(indices),
            handle(bag_grad),
            step,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
        )
    };
    checked("lazy Adam", error)
}

/// Parameters updated together by the fused Adam kernel, with their
/// gradients and moments.
#[derive(Default)]
pub(super) struct Group<'a> {
    params: Vec<&'a Tensor>,
    /// Owned: `grad()` returns a fresh handle that must outlive the call.
    grads: Vec<Tensor>,
    exp_avgs: Vec<&'a Tensor>,
    exp_avg_sqs: Vec<&'a Tensor>,
}

impl<'a> Group<'a> {
    pub(super) fn push(&mut self, p: &'a Tensor, g: Tensor, m: &'a Tensor, v: &'a Tensor) {
        self.params.push(p);
        self.grads.push(g);
        self.exp_avgs.push(m);
        self.exp_avg_sqs.push(v);
    }

    /// One Adam step over the group; `step` is the (already incremented)
    /// step count as a float scalar tensor on the parameters' device.
    pub(super) fn adam(&self, step: &Tensor, h: &Hyper) -> Result<()> {
        if self.params.is_empty() {
            return Ok(());
        }
        let params: Vec<_> = self.params.iter().map(|t| handle(t)).collect();
        let grads: Vec<_> = self.grads.iter().map(handle).collect();
        let exp_avgs: Vec<_> = self.exp_avgs.iter().map(|t| handle(t)).collect();
        let exp_avg_sqs: Vec<_> = self.exp_avg_sqs.iter().map(|t| handle(t)).collect();
        // SAFETY: every pointer is a live `at::Tensor*` borrowed from a
        // tch `Tensor` that outlives the call; the four arrays have
        // `params.len()` entries; the shim catches every C++ exception
        // and returns it as a malloc'ed string, or null on success.
        let error = unsafe {
            hopper_fused_adam(
                params.as_ptr(),
                grads.as_ptr(),
                exp_avgs.as_ptr(),
                exp_avg_sqs.as_ptr(),
                handle(step),
                params.len(),
                h.lr,
                h.beta1,
                h.beta2,
                h.weight_decay,
                h.eps,
                c_int::from(h.decoupled),
            )
        };
        checked("fused Adam", error)
    }
}
