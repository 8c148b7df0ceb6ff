//! Reading: a query's schema, its split into partitions, and the stream of
//! one partition.
//!
//! A [`Reader`] knows how to split a query into [`Partition`]s — one per
//! database segment, or finer — and how to stream one partition as Arrow
//! record batches. The Flight service turns each partition into a
//! `FlightEndpoint` whose ticket carries the partition, so `DoGet` needs no
//! server-side state for the PostgreSQL and file sources (a Greenplum
//! cursor, which lives in a coordinator session, is the exception).

use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

use super::{greenplum, SendableRecordBatchStream};
use crate::auth::Caller;
use crate::error::{Error, Result};

/// What one endpoint reads. Serialized into the (signed) ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The segment this partition lives on (index into the server's
    /// segment list, `gp_segment_id` for Greenplum, plan partition for files).
    pub segment: i32,
    /// Source-specific description of the read.
    pub spec: PartitionSpec,
}

impl Partition {
    /// The segment's host as the database names it, where the source
    /// knows it (Greenplum): what `--segment-flight-port` locates by.
    pub fn host(&self) -> Option<&str> {
        match &self.spec {
            PartitionSpec::Greenplum { retrieve, .. } => Some(&retrieve.host),
            _ => None,
        }
    }
}

/// Source-specific part of a [`Partition`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartitionSpec {
    /// `COPY (<sql>) TO STDOUT (FORMAT binary)` on one PostgreSQL segment;
    /// `sql` may already be restricted to a ctid range by `--split`.
    Postgres {
        /// The statement to run on the segment.
        sql: String,
        /// The exported snapshot the read imports (`SET TRANSACTION
        /// SNAPSHOT`), when the plan was made at a pinned snapshot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<String>,
    },
    /// One endpoint of a Greenplum parallel retrieve cursor.
    Greenplum {
        /// `<cursor id>/<gp_segment_id>`: the planning server's name for it.
        cursor: String,
        /// Where and how any server with the key retrieves it.
        retrieve: greenplum::Retrieve,
    },
    /// One output partition of a DataFusion plan over files.
    Files {
        /// The query.
        sql: String,
        /// Output partition of the physical plan.
        partition: usize,
    },
}

/// A planned query: its schema and the partitions whose union is its result.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Arrow schema of every partition's batches.
    pub schema: SchemaRef,
    /// The partitions, in segment order.
    pub partitions: Vec<Partition>,
}

/// Running totals of the Greenplum cursors a server declared: with every
/// planned endpoint read, `drained == endpoints`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorTotals {
    /// Cursors declared.
    pub declared: u64,
    /// Their endpoints.
    pub endpoints: u64,
    /// Endpoints read to the end (here, or seen finished at another server).
    pub drained: u64,
    /// Cursors closed for sitting unread past the cursor timeout.
    pub expired: u64,
    /// Cursors closed to make room under `--max-connections`.
    pub evicted: u64,
}

/// Snapshots exported by database sessions held open: each segment's
/// snapshot name (`pg_export_snapshot()`), which any session of the same
/// database imports to see exactly the rows the export saw. The Greenplum
/// coordinator's is segment -1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotNames(pub std::collections::BTreeMap<i32, String>);

impl SnapshotNames {
    /// The snapshot of `segment`, checked to be what PostgreSQL exports
    /// (hex digits and dashes), so that it can be spliced into SQL.
    pub fn of(&self, segment: i32) -> Result<&str> {
        let name = self.0.get(&segment).ok_or_else(|| {
            Error::Internal(format!(
                "the pinned snapshot has no session on segment {segment}"
            ))
        })?;
        check_snapshot_name(name)?;
        Ok(name)
    }
}

/// Refuses anything but an exported snapshot's name (`0000000A-0000001B-1`):
/// names travel in tickets and are spliced into `SET TRANSACTION SNAPSHOT`.
pub fn check_snapshot_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        return Err(Error::BadTicket(format!(
            "{name:?} is not an exported snapshot's name"
        )));
    }
    Ok(())
}

/// A snapshot held still: the sessions whose open transactions exported it
/// (dropping them ends the transactions and frees what they held back).
pub struct HeldSnapshot {
    /// What readers import, per segment.
    pub names: SnapshotNames,
    /// The exporting sessions, with their places under `--max-connections`.
    pub sessions: Vec<(
        tokio_postgres::Client,
        Option<tokio::sync::OwnedSemaphorePermit>,
    )>,
}

/// Reads queries: every call runs as `caller` (a database source connects
/// as the caller's user, so the database's own privileges apply;
/// [`Caller::server`] uses the server's configured connections).
#[async_trait::async_trait]
pub trait Reader: Send + Sync {
    /// The schema `sql` would return, without reserving anything.
    async fn describe(&self, caller: &Caller, sql: &str) -> Result<SchemaRef>;

    /// Splits `sql` into partitions. For Greenplum this declares the cursor.
    async fn plan(&self, caller: &Caller, sql: &str) -> Result<Plan>;

    /// Exports a snapshot of every segment as `caller`, in transactions
    /// kept open until the returned value is dropped; see
    /// [`crate::snapshot`].
    async fn export_snapshot(&self, caller: &Caller) -> Result<HeldSnapshot> {
        let _ = caller;
        Err(Error::Unimplemented(
            "this source cannot hold a snapshot (files are read as they are when read)".into(),
        ))
    }

    /// [`Reader::plan`] at a snapshot [`Reader::export_snapshot`] holds:
    /// every read of the plan sees exactly the rows the export saw.
    async fn plan_at(&self, caller: &Caller, sql: &str, snapshot: &SnapshotNames) -> Result<Plan> {
        let _ = (caller, sql, snapshot);
        Err(Error::Unimplemented(
            "this source cannot plan at a snapshot".into(),
        ))
    }

    /// Streams one partition of an earlier plan.
    async fn read(
        &self,
        caller: &Caller,
        partition: &Partition,
    ) -> Result<SendableRecordBatchStream>;

    /// Greenplum cursors this server declared and holds open (metrics).
    fn cursors_held(&self) -> usize {
        0
    }

    /// What the Greenplum cursors this server declared did (metrics).
    fn cursor_totals(&self) -> CursorTotals {
        CursorTotals::default()
    }

    /// Whether an endpoint can be read once only (a Greenplum cursor's):
    /// a client that reads a query many times plans it for every read.
    fn single_read(&self) -> bool {
        false
    }

    /// Database connections held now, per segment (the Greenplum
    /// coordinator as segment -1), for metrics.
    fn connections_in_use(&self) -> Vec<(i32, usize)> {
        Vec::new()
    }
}
