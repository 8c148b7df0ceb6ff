//! # flight-server
//!
//! An Apache Arrow Flight service that streams query results straight out of
//! database segments — so that trainers (and any Flight client: pyarrow,
//! Java, ADBC, Rust) read training data where it lives instead of from an
//! exported copy.
//!
//! # Design
//!
//! ```text
//!  client ── GetFlightInfo(SQL) ──► Service ── Source::plan ──► one Partition per segment
//!         ◄── FlightInfo: schema + one endpoint per partition (ticket = signed Partition)
//!  client ── DoGet(ticket) ───────► Service ── Source::read ──► bounded channel of RecordBatch
//!         ◄── FlightData stream (FlightDataEncoder, sized for the wire)
//! ```
//!
//! Three sources implement [`source::Source`]:
//! - [`source::postgres`]: one or more PostgreSQL instances, each a segment,
//!   read with `COPY (…) TO STDOUT (FORMAT binary)` — the database's own
//!   fastest export path — decoded straight into Arrow builders
//!   ([`types`] holds the whole type mapping);
//! - [`source::greenplum`]: a Greenplum coordinator; endpoints are the
//!   segments' endpoints of a parallel retrieve cursor;
//! - [`source::files`]: Parquet, CSV and Arrow IPC files through DataFusion.
//!
//! [`cluster`] starts local PostgreSQL instances that play the segments of
//! an MPP database (tests, benchmarks and the demo use it).

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod copy_in;
pub mod error;
pub mod put;
pub mod server;
pub mod service;
pub mod source;
pub mod ticket;
pub mod tls;
pub mod types;

pub use error::{Error, Result};
