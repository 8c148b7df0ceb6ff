//! TorchScript models on the control plane: their modules reach the
//! trainers, and are checked before anything trains.
//!
//! The runner reads each module file once, when the run starts, and ships
//! its bytes inside the model's configuration message (shared, not copied,
//! by every unit and validation pass of the model): trainers started on
//! other hosts (`[train] addresses`) need not see the runner's files, and a
//! file changed during the run changes nothing. A unit then carries the
//! module beside the model's state; the module holds the weights once and a
//! state with Adam's moments three times, so this adds a third at most to
//! what a hop moves.
//!
//! The runner links no libtorch, so it asks a trainer to build each
//! TorchScript model once ([`check_models`]) before the first unit: a file
//! that is no TorchScript module, or a `forward` that does not take the
//! run's features or gives the wrong output shape, stops the run there with
//! the trainer's message (what shape it got and wanted).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::trainers::Client;
use mop_core::config::{Arch, ModelConfig};

/// Each model's configuration as its wire message, TorchScript modules
/// attached, each file read once.
pub fn wire_configs(models: &[ModelConfig]) -> Result<Vec<Arc<hopper_proto::ModelConfig>>> {
    let mut modules: HashMap<&str, Bytes> = HashMap::new();
    models
        .iter()
        .map(|m| {
            let wire = hopper_proto::ModelConfig::from(m);
            let Arch::TorchScript { path } = &m.arch else {
                return Ok(Arc::new(wire));
            };
            let module = match modules.get(path.as_str()) {
                Some(module) => module.clone(),
                None => {
                    let module = Bytes::from(std::fs::read(path).map_err(|e| {
                        Error::Config(format!("cannot read the TorchScript module {path}: {e}"))
                    })?);
                    modules.insert(path, module.clone());
                    module
                }
            };
            Ok(Arc::new(wire.with_module(module)))
        })
        .collect()
}

/// Has `client`'s trainer build every TorchScript model (once per distinct
/// module, input and output), so that one it cannot build stops the run
/// before any unit.
pub async fn check_models(
    client: &Client,
    models: &[ModelConfig],
    wire: &[Arc<hopper_proto::ModelConfig>],
) -> Result<()> {
    let mut checked = Vec::new();
    for (m, (model, wire)) in models.iter().zip(wire).enumerate() {
        if !matches!(model.arch, Arch::TorchScript { .. }) {
            continue;
        }
        // What the check depends on: the module, the input and the outputs.
        let key = ModelConfig {
            lr: 1.0,
            l2: 0.0,
            batch_size: 1,
            optimizer: mop_core::config::OptimizerKind::Adam,
            ..model.clone()
        };
        if checked.contains(&key) {
            continue;
        }
        let request = hopper_proto::CheckModelRequest {
            config: Some((**wire).clone()),
        };
        client
            .clone()
            .check_model(request)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::InvalidArgument => {
                    Error::Config(format!("model {m}: {}", s.message()))
                }
                _ => Error::Trainer {
                    trainer: "0".into(),
                    message: format!("checking model {m}: {}", s.message()),
                },
            })?;
        checked.push(key);
    }
    Ok(())
}
