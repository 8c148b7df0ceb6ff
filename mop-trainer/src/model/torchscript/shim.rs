//! A scripted PyTorch module through the C++ shim `csrc/torchscript.cpp`:
//! loading from bytes, its parameters *and buffers* as tch tensors that share
//! the module's storage, mode switches, forward and save.
//!
//! tch's `CModule` keeps its module pointer private and lists parameters
//! only; BatchNorm's running statistics are buffers, and they must hop with
//! the model. The shim returns new `at::Tensor*` handles on the module's own
//! tensors, which become tch [`Tensor`]s (tch's handles are `at::Tensor*`
//! too, freed with `delete`), so an optimizer step or a state copy into one
//! of them is the module's tensor changing.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;

use tch::{Device, TchError, Tensor};

use crate::error::{Error, Result};

/// libtorch's `torch::jit::Module`, opaque here.
#[repr(C)]
struct RawModule {
    _private: [u8; 0],
}

type NamedTensor = extern "C" fn(data: *mut c_void, name: *const c_char, tensor: *mut c_void);

extern "C" {
    fn hopper_script_load(
        data: *const c_char,
        len: usize,
        device: c_int,
        out: *mut *mut RawModule,
    ) -> *mut c_char;
    fn hopper_script_free(module: *mut RawModule);
    fn hopper_script_named(
        module: *mut RawModule,
        buffers: c_int,
        data: *mut c_void,
        each: NamedTensor,
    ) -> *mut c_char;
    fn hopper_script_train(module: *mut RawModule, on: c_int) -> *mut c_char;
    fn hopper_script_forward(
        module: *mut RawModule,
        x: *mut c_void,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn hopper_script_save(module: *mut RawModule, path: *const c_char) -> *mut c_char;
    fn hopper_free_error(message: *mut c_char);
}

/// Turns the shim's return value (null, or a message to free) into a result.
fn checked(error: *mut c_char) -> Result<()> {
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
    Err(TchError::Torch(message).into())
}

/// A loaded TorchScript module. Not `Sync`: a model is used by one thread
/// at a time (a unit, an evaluation, a prediction pass).
pub(crate) struct ScriptModule {
    raw: *mut RawModule,
}

// SAFETY: the module is plain heap data of libtorch's with no affinity to
// the thread that loaded it; hopper moves a model to a blocking thread and
// uses it there only.
unsafe impl Send for ScriptModule {}

impl Drop for ScriptModule {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `hopper_script_load` and is freed once.
        unsafe { hopper_script_free(self.raw) }
    }
}

impl std::fmt::Debug for ScriptModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptModule")
    }
}

extern "C" fn collect(data: *mut c_void, name: *const c_char, tensor: *mut c_void) {
    // SAFETY: `data` is the `Vec` `named` passes for this call only; `name`
    // is a NUL-terminated string alive for the callback; `tensor` is a new
    // `at::Tensor*` whose ownership passes to the tch `Tensor`.
    unsafe {
        let out = &mut *data.cast::<Vec<(String, Tensor)>>();
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        out.push((name, Tensor::from_ptr(tensor.cast())));
    }
}

impl ScriptModule {
    /// Loads a module saved by `torch.jit.save` onto `device`.
    pub(crate) fn load(bytes: &[u8], device: Device) -> Result<Self> {
        let device = match device {
            Device::Cpu => -1,
            Device::Cuda(i) => i as c_int,
            other => {
                return Err(Error::Config(format!(
                    "TorchScript modules run on CPU or CUDA, not {other:?}"
                )))
            }
        };
        let mut raw = std::ptr::null_mut();
        // SAFETY: `bytes` is read for the call only; `raw` is written once
        // when the call succeeds.
        checked(unsafe {
            hopper_script_load(bytes.as_ptr().cast(), bytes.len(), device, &mut raw)
        })?;
        Ok(ScriptModule { raw })
    }

    /// Every parameter (`buffers = false`) or buffer, by PyTorch's dotted
    /// state_dict name, sharing the module's storage.
    pub(crate) fn named(&self, buffers: bool) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        // SAFETY: `out` outlives the call, and `collect` is the only code
        // that touches it meanwhile.
        checked(unsafe {
            hopper_script_named(
                self.raw,
                c_int::from(buffers),
                (&mut out as *mut Vec<(String, Tensor)>).cast(),
                collect,
            )
        })?;
        Ok(out)
    }

    /// Training mode (Dropout drops, BatchNorm updates its statistics) or
    /// evaluation mode.
    pub(crate) fn set_train(&self, on: bool) -> Result<()> {
        // SAFETY: `raw` is live for `self`'s lifetime.
        checked(unsafe { hopper_script_train(self.raw, c_int::from(on)) })
    }

    /// `forward(x)`, which must return one tensor.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `x` is a live `at::Tensor*` borrowed for the call; `out`
        // is a new handle whose ownership passes to the returned `Tensor`.
        checked(unsafe {
            hopper_script_forward(self.raw, x.as_ptr().cast_mut().cast(), &mut out)
        })?;
        // SAFETY: as above: a fresh `at::Tensor*` owned by nobody else.
        Ok(unsafe { Tensor::from_ptr(out.cast()) })
    }

    /// Writes the module with its current tensors, as `torch.jit.save`.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| Error::Config(format!("{} has a NUL byte in its name", path.display())))?;
        // SAFETY: `c_path` outlives the call.
        checked(unsafe { hopper_script_save(self.raw, c_path.as_ptr()) })
    }
}
