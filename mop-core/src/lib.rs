//! # mop-core
//!
//! The pure core of model hopper parallelism: what a run is and how it is
//! scheduled, with no libtorch, no async runtime, no gRPC and no Arrow, so
//! it builds and tests in seconds anywhere.
//!
//! ```text
//!  run_config (mop train --config) ─► search (grid, random, Hyperband, ASHA; mst)
//!        │                                   │ Pruner
//!        ▼                                   ▼
//!  config (ModelConfig) ──────────► schedule (Scheduler: next (model, partition) unit)
//!                                            │                 simulate (the same scheduler, simulated time)
//!                                            ▼
//!  run_dir: checkpoint.json after every unit; results.json, timeline.json at the end
//! ```
//!
//! The runner (`mop-runner`) drives the scheduler over real trainers
//! (`mop-trainer`); the report (`mop-report`) reads the run directory
//! through the types here. Every file format a run writes has one
//! definition, in [`run_dir`], used both to write and to read it.

pub mod config;
pub mod error;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod ident;
pub mod metrics;
pub mod model_state;
pub mod run_config;
pub mod run_dir;
pub mod schedule;
pub mod search;
pub mod simulate;
pub mod table;

pub use error::{Error, Result};
