//! # flight-server
//!
//! An Apache Arrow Flight service that streams query results straight out of
//! database segments — so that trainers (and any Flight client: pyarrow,
//! Java, ADBC, Rust) read training data where it lives instead of from an
//! exported copy. This crate is the data plane only; what its clients share
//! with it (TLS files, the DoPut command, the ticket-refused mark) is in
//! `flight-client`.
//!
//! # Design
//!
//! ```text
//!  client ── GetFlightInfo(SQL) ──► Service ── Reader::plan ──► one Partition per segment
//!         ◄── FlightInfo: schema + one endpoint per partition (ticket = sealed Partition,
//!             location = this server, or the server beside the segment: --segment-flight)
//!  client ── DoGet(ticket) ───────► Service ── Reader::read ──► RecordBatchStream (schema + bounded channel)
//!         ◄── FlightData stream (FlightDataEncoder, sized for the wire; counted in metrics)
//! ```
//!
//! Three sources implement [`source::Source`] — a [`source::Reader`], a
//! [`source::Catalog`] and a [`source::Writer`]:
//! - [`source::postgres`]: one or more PostgreSQL instances, each a segment,
//!   read with `COPY (…) TO STDOUT (FORMAT binary)` — the database's own
//!   fastest export path — decoded straight into Arrow buffers by the
//!   `pg-arrow` crate, which holds the whole type mapping ([`types`]);
//! - [`source::greenplum`]: a Greenplum coordinator; endpoints are the
//!   segments' endpoints of a parallel retrieve cursor, and a ticket carries
//!   all a server beside the segment needs to retrieve one;
//! - [`source::files`]: Parquet, CSV and Arrow IPC files through DataFusion.
//!
//! The same service speaks Flight SQL ([`sql`]) for ADBC, JDBC and other
//! Flight SQL clients: queries are planned the same way ([`core`]), and
//! the same tickets are read by the same `DoGet`.
//!
//! Callers log in as themselves ([`auth`]): the server holds no database
//! password of its own, and the database's GRANTs decide what each reads.

pub mod auth;
pub mod cli;
pub mod core;
pub mod error;
pub mod health;
pub mod listener;
pub mod locate;
pub mod login;
pub mod metrics;
pub mod put;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod source;
pub mod sql;
pub mod ticket;
pub mod types;

pub use error::{Error, Result};

/// How big a record batch may grow ([`pg_arrow::BatchLimits`]), where
/// callers of this crate have found it.
pub mod batch_limits {
    pub use pg_arrow::BatchLimits;
}
