//! # mop-runner
//!
//! Model hopper parallelism (MOP) over database segments: the `mop` binary.
//!
//! # Design
//!
//! ```text
//!  cli ─► commands / demo / predict / report / status
//!  runner (mop train)                                   trainer (mop trainer, one per partition)
//!   ├ plan: flight_client::plan → slices per partition    ├ cache: flight_client::read → memory | disk | none
//!   ├ schedule (pure): next (model, partition) unit ────► ├ train: sequential mini-batch SGD (tch)
//!   ├ trainers: spawn / dial, replace the dead            └ model/, optim, featurize, device
//!   └ run_dir: checkpoint after every unit, results, timeline ─► report (HTML), status, models
//! ```
//!
//! A model's weights and optimizer state travel with each unit, so it trains
//! exactly as it would sequentially; the partitions never move. The runner's
//! modules (`runner`, `schedule`, `run_dir`, `report`) hold no tensors; the
//! trainer's do the libtorch work. Flight is spoken through `flight-client`
//! only: `mop` links no part of the server.

pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod device;
pub mod error;
pub mod featurize;
pub mod grid;
pub mod model;
pub mod optim;
pub mod predict;
pub mod report;
pub mod run_dir;
pub mod runner;
pub mod schedule;
pub mod search;
pub mod simulate;
pub mod status;
pub mod train;
pub mod trainer;

pub use error::{Error, Result};
