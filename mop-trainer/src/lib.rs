//! # mop-trainer
//!
//! The training plane, and the only crate of hopper that links libtorch:
//! models ([`model`]), optimizers ([`optim`]), the featurizer, one pass of
//! training ([`train`]), `mop predict` ([`predict`]), and the trainer process (`mop trainer`): a gRPC service beside one
//! partition that trains whichever model the runner hands it for one pass
//! over that partition, then hands the model's state back.
//!
//! # Design
//!
//! ```text
//!  runner ── OpenPartition(endpoints, cache) ──► trainer ── DoGet ──► flight-server
//!  runner ── TrainUnit(config, state, epoch) ──► trainer: decode state → train pass → encode state
//!         ◄── Progress … UnitResult(state, metrics)
//! ```
//!
//! Tensor work runs on a blocking thread, never on the async runtime that
//! serves gRPC and reads Flight. One unit runs at a time: a trainer owns
//! its cores. The partition is read once (cache `memory` keeps featurized
//! tensors, `disk` keeps Arrow IPC files) or re-read every pass (`none`),
//! always through a bounded prefetch channel. Every read over Flight
//! reports its rows and an order-independent checksum of them
//! ([`row_checksum`]), so the runner can tell when a partition's rows
//! changed between reads.
//!
//! A trainer serves one runner: every call proves the key they share, or
//! comes with a client certificate, or over loopback ([`hopper_proto::auth`]). It reads
//! Flight as the runner's user, with the Bearer token each endpoint
//! carries; only an endpoint without one makes it log in itself
//! (`HOPPER_FLIGHT_USER`), so one fleet of trainers serves many users.

mod cache;
pub mod device;
pub mod error;
pub mod export;
pub mod featurize;
pub mod health;
pub mod held_states;
pub mod model;
pub mod optim;
pub mod predict;
pub mod row_checksum;
mod service;
pub mod shuffle;
pub mod train;

pub use error::{Error, Result};
pub use service::{serve, TrainerService};
