//! A run's TorchScript models as TorchScript files: beside each model's
//! state (`models/model-<id>.safetensors`), `models/model-<id>.pt`, the
//! module with its trained parameters and buffers, which PyTorch loads
//! with `torch.jit.load` and `mop predict` scores with.
//!
//! The runner links no libtorch, so `mop train` writes these files once the
//! run is over, from the states the run left.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Model;
use mop_core::config::Arch;
use mop_core::run_dir::results::{RunResults, RESULTS_FILE};

/// The TorchScript file of model `id` in the run directory `dir`.
pub fn torchscript_file(dir: &Path, id: usize) -> PathBuf {
    dir.join("models").join(format!("model-{id}.pt"))
}

/// Writes `models/model-<id>.pt` for every TorchScript model of the run in
/// `dir` that has a state file; returns the files written.
pub fn export_torchscript(dir: &Path) -> Result<Vec<PathBuf>> {
    let results = RunResults::read(&dir.join(RESULTS_FILE))?;
    let mut written = Vec::new();
    for entry in &results.models {
        let (Arch::TorchScript { .. }, Some(file)) = (&entry.config.arch, &entry.model_file) else {
            continue;
        };
        let state_file = dir.join(file);
        let state = std::fs::read(&state_file)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", state_file.display())))?;
        let (model, _opt) = Model::from_state(entry.config.clone(), &state)?;
        let out = torchscript_file(dir, entry.model_id);
        model.save_torchscript(&out)?;
        written.push(out);
    }
    Ok(written)
}
