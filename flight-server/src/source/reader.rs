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
use crate::error::Result;

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

/// Reads queries: every call runs as `caller` (a database source connects
/// as the caller's user, so the database's own privileges apply;
/// [`Caller::server`] uses the server's configured connections).
#[async_trait::async_trait]
pub trait Reader: Send + Sync {
    /// The schema `sql` would return, without reserving anything.
    async fn describe(&self, caller: &Caller, sql: &str) -> Result<SchemaRef>;

    /// Splits `sql` into partitions. For Greenplum this declares the cursor.
    async fn plan(&self, caller: &Caller, sql: &str) -> Result<Plan>;

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

    /// Database connections held now, per segment (the Greenplum
    /// coordinator as segment -1), for metrics.
    fn connections_in_use(&self) -> Vec<(i32, usize)> {
        Vec::new()
    }
}
