//! # mop-runner
//!
//! The control plane of model hopper parallelism (`mop train`): plans the
//! data on flight-server, starts or dials one trainer per partition, drives
//! [`mop_core::schedule`]'s scheduler over them, checkpoints after every
//! unit, and writes the results where users look. It holds no tensors and
//! links no libtorch: trainers (`mop-trainer`) do the tensor work, behind
//! the gRPC contract of `hopper-proto`.
//!
//! # Design
//!
//! ```text
//!  run (mop train)                                        trainer (mop trainer, one per partition)
//!   ├ plan: flight_client::plan → slices per partition     │
//!   ├ mop_core::schedule: next (model, partition) unit ──► │ TrainUnit(config, state) → state', metrics
//!   ├ run_state: unit done, failed, scored ─► what to do (pure: events in, actions out)
//!   ├ trainers: spawn / dial, replace the dead             │
//!   ├ locality: which trainer reads which partition        │
//!   ├ checkpoint after every unit; at the end results.json, result_tables, report
//!   └ mlflow: each model's params, epochs and file to an MLflow tracking server
//!  status (mop status, mop models): what a run directory and its tables hold
//! ```
//!
//! A model's weights and optimizer state travel with each unit, so it trains
//! exactly as it would sequentially; the partitions never move. Flight is
//! spoken through `flight-client` only: `mop` links no part of the server.

mod checkpoint;
pub mod error;
pub mod hops;
pub mod locality;
pub mod mlflow;
pub mod mst_table;
pub mod output_guard;
pub mod pins;
pub mod plan;
pub mod progress;
pub mod result_tables;
pub mod run;
mod run_state;
pub mod status;
pub mod table_stats;
pub mod torchscript;
pub mod trainers;

pub use error::{Error, Result};
