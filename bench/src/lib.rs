//! What hopper's benchmarks share: the median-and-spread of repeated
//! samples, CPU and memory read from `/proc`, a flight-server started over
//! a devcluster, and the readers the data-plane benchmark compares.
//!
//! The benchmarks themselves are the binaries (`data-plane`, `end-to-end`,
//! `greenplum`, `hops`, `quality`, `scale`, `search`, `training`); what they
//! share is compiled and tested once, here. The binaries have no tests of
//! their own (`test = false`): each would otherwise be compiled and linked
//! a second time as a test harness, against libtorch and DataFusion, to run
//! nothing.

pub mod procstat;
pub mod readers;
pub mod samples;
pub mod server;
