//! # flight-client
//!
//! What both of hopper's planes agree on when they speak Arrow Flight, and
//! the client side of it: the data plane (`flight-server`) and its clients
//! (`mop`'s runner and trainers, `mop predict`, tests and benchmarks).
//! Keeping these pieces here lets a client link them without the server —
//! and without the server's DataFusion, PostgreSQL drivers and decoders.
//!
//! # Design
//!
//! ```text
//!  runner ── plan(location, sql) ──► GetFlightInfo ──► Vec<FlightSlice> (location, ticket)
//!  trainer ─ spawn_reader(slices) ─► DoGet per slice ─► bounded channel of RecordBatch
//!                 │ connect: grpc+tcp / grpc+tls (HOPPER_TLS_*), Handshake (HOPPER_FLIGHT_USER),
//!                 │          or the Bearer token a slice carries (the runner's login)
//!                 │ retry:   one Backoff (100 ms … 5 s) within HOPPER_READ_RETRY_SECONDS,
//!                 │          only while nothing of a stream has been handed on
//!  flight-server ─ tls::ServerTls, put::PutCommand, refused::mark_ticket_refused
//! ```
//!
//! - [`connect`]: locations to gRPC URIs, client TLS from the environment,
//!   the Flight Handshake that logs a client in, and clients that read with
//!   a [`connect::Bearer`] token someone else logged in for;
//! - [`plan`] and [`read`]: `GetFlightInfo` into [`FlightSlice`]s, and
//!   `DoGet` streams into a bounded channel with [`retry::Backoff`];
//! - [`tls`]: PEM files in, tonic's rustls configuration out, for servers
//!   and clients alike;
//! - [`put`]: the JSON command that names a `DoPut`'s target table and
//!   segment, and the outcome the server answers with;
//! - [`refused`]: the status mark that says "this ticket is refused: plan
//!   again", set by the server and read by the client;
//! - [`snapshot`]: pinning a snapshot so that every read of a plan sees the
//!   same rows — the actions, their bodies, the header, the lost mark.

pub mod connect;
pub mod endpoint;
pub mod error;
pub mod plan;
pub mod put;
pub mod read;
pub mod refused;
pub mod retry;
pub mod snapshot;
pub mod tls;

pub use endpoint::{EndpointMetadata, FlightSlice};
pub use error::{Error, Result};
