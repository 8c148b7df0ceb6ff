//! Greenplum parallel retrieve cursors.
//!
//! # Design
//!
//! ```text
//!  plan(sql)   coordinator session as the caller (kept open, in a transaction):
//!                BEGIN; DECLARE hopper_… PARALLEL RETRIEVE CURSOR FOR <sql>;
//!                SELECT … FROM gp_get_endpoints() WHERE <this cursor, this session>
//!              → one Partition per endpoint; its sealed ticket carries the cursor id and a
//!                Retrieve: segment host and port, endpoint name, retrieve token, database, schema
//!  read(p)     on ANY server with the key — this one, or one beside the segment
//!              (--segment-flight) — a retrieve session to the endpoint's host:port
//!                (user = username, password = token, options -c gp_retrieve_conn=true)
//!                RETRIEVE ALL FROM ENDPOINT <endpointname>: prepared, described, executed
//!                with binary results, read at the protocol level (`source/wire.rs`)
//!              → DataRow bodies decoded in place into the planned Arrow schema
//!                (pg_arrow's binary tuple decoder; its text parsers where a column's
//!                binary form does not match the plan)
//!  finish      the planning server sees its own reads end, and watches endpoints read
//!              elsewhere in gp_get_endpoints().state (FINISHED, RELEASED); once every
//!              endpoint is done: gp_wait_parallel_retrieve_cursor(…); CLOSE; COMMIT
//! ```
//!
//! Facts this module relies on (Greenplum 7.0):
//! - The cursor lives in the declaring session's transaction, so that
//!   session is held in a server-side registry until every endpoint has been
//!   read, abandoned, or left idle for the cursor timeout (30 s; at the
//!   `--max-connections` cap the cursor idle longest is closed first).
//! - All endpoints of one cursor carry the same `endpointname`; they differ
//!   by `gp_segment_id`, token and `hostname:port`, so endpoints are keyed by
//!   segment. A superuser's `gp_get_endpoints()` lists every session's
//!   endpoints: filter on cursor name *and* `gp_session_id`.
//! - A retrieve session accepts only `RETRIEVE` — no catalog or type
//!   look-ups — so the schema is fixed on the coordinator (by preparing the
//!   query). It does accept `RETRIEVE` through the extended protocol
//!   (Parse, Describe, Bind with result formats, Execute), and binary
//!   results then come in each type's `send` form, as in binary COPY: the
//!   `RowDescription` gives the built-in type of every column, which is
//!   checked against the plan before the rows are asked for in binary.
//! - An endpoint can be read once; there is no rescan. A retrieve that
//!   stops early leaves it RELEASED, and the whole cursor then fails.
//! - After the cursor is closed, a login with an endpoint's token fails.
//!
//! Coordinator and retrieve sessions use TLS as the URL's `sslmode` says.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, SimpleQueryMessage};
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::locate::Locator;
use crate::source::db_tls::{DbTls, DbUrl};
use crate::source::limit::ConnectionLimit;
use crate::source::wire;
use crate::source::{
    pg_catalog, BatchLimits, Catalog, CursorTotals, Described, HeldSnapshot, KeyColumn, Partition,
    PartitionSpec, Plan, Reader, RecordBatchStreamAdapter, RoleLogin, SendableRecordBatchStream,
    SnapshotNames, TableInfo, Writer, CHANNEL_DEPTH,
};
use crate::types::{arrow_field, arrow_schema};
use pg_arrow::{BatchBuilder, Ident};

mod catalog;
mod cursor;
mod put;
mod read;
mod retrieve;
mod session;
#[cfg(test)]
mod tests;

use cursor::*;
pub use retrieve::Retrieve;
use retrieve::*;
use session::*;

/// How long a cursor may sit with no endpoint being read before the
/// sweeper closes it and releases its coordinator session, snapshot and
/// locks. Readers start within moments of planning (mop plans right before
/// it reads), so half a minute of silence means the plan was abandoned.
pub const DEFAULT_CURSOR_TIMEOUT: Duration = Duration::from_secs(30);

/// The coordinator's key in [`SnapshotNames`]: one distributed snapshot
/// covers every segment.
const COORDINATOR: i32 = -1;

/// A Greenplum coordinator; query partitions are the segments' endpoints of
/// a parallel retrieve cursor.
pub struct GreenplumSource {
    config: Config,
    /// How coordinator and retrieve sessions use TLS (the URL's `sslmode`,
    /// `sslrootcert`): retrieve sessions to segments as to the coordinator.
    tls: DbTls,
    limits: BatchLimits,
    /// Segment host names mapped to the addresses to dial here (`--host-map`).
    host_map: BTreeMap<String, String>,
    /// Caps on coordinator sessions and on retrieve sessions per segment.
    connections: Connections,
    /// Where endpoints are located: those at another flight-server (beside
    /// their segment) are read there, so their progress is watched on the
    /// coordinator instead of seen here.
    locator: Arc<Locator>,
    /// Shared connection for `describe` and `list_tables` (reconnected when closed).
    coordinator: tokio::sync::Mutex<Option<Arc<Client>>>,
    registry: Arc<Registry>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GreenplumSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreenplumSource")
            .field("limits", &self.limits)
            .field("host_map", &self.host_map)
            .finish_non_exhaustive()
    }
}

impl Drop for GreenplumSource {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it
/// (every critical section here leaves the state consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
