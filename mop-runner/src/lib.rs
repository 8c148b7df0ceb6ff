//! # mop-runner
//!
//! Model hopper parallelism (MOP) over database segments.

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
pub mod simulate;
pub mod status;
pub mod train;
pub mod trainer;

pub use error::{Error, Result};
