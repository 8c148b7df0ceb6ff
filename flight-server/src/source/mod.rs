//! Where record batches come from.
//!
//! A [`Source`] knows how to split a query into [`Partition`]s — one per
//! database segment, or finer — and how to stream one partition as Arrow
//! record batches. The Flight service turns each partition into a
//! `FlightEndpoint` whose ticket carries the partition, so `DoGet` needs no
//! server-side state for the PostgreSQL and file sources (a Greenplum
//! cursor, which lives in a coordinator session, is the exception).
//!
//! Streams are produced by a task feeding a bounded channel: a client that
//! reads slowly makes the producer wait instead of the server buffering the
//! table, and a client that goes away makes the producer stop and release its
//! database connection.

use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

use flight_client::put::PutCommand;

use crate::auth::Caller;
use crate::error::Result;
pub use pg_arrow::BatchLimits;

pub mod db_tls;
#[cfg(feature = "files")]
pub mod files;
pub mod greenplum;
pub mod limit;
pub mod pg_catalog;
pub mod postgres;
pub mod stream;
pub mod upload;

pub use stream::{RecordBatchStream, RecordBatchStreamAdapter, SendableRecordBatchStream};

/// How many finished batches a producer may run ahead of its client.
pub const CHANNEL_DEPTH: usize = 2;

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

/// A table a client may query, for `ListFlights` and Flight SQL's
/// `GetTables`.
#[derive(Clone, Debug)]
pub struct TableInfo {
    /// Qualified name (`schema.table`), usable in SQL as it stands.
    pub name: String,
    /// The database (Flight SQL's catalog) it is in.
    pub catalog: String,
    /// Its schema, unquoted.
    pub db_schema: String,
    /// Its own name, unquoted.
    pub table: String,
    /// What kind of relation it is.
    pub kind: TableKind,
    /// Columns as Arrow sees them (columns of unsupported types are left out).
    pub schema: SchemaRef,
    /// Estimated row count over all segments, if known.
    pub rows: Option<i64>,
}

/// The kinds of relation a source lists, as Flight SQL names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// A table (or a partitioned table).
    Table,
    /// A view.
    View,
    /// A materialized view.
    MaterializedView,
    /// A foreign table.
    ForeignTable,
}

impl TableKind {
    /// Every kind, in the order `GetTableTypes` lists them.
    pub const ALL: [TableKind; 4] = [
        TableKind::Table,
        TableKind::View,
        TableKind::MaterializedView,
        TableKind::ForeignTable,
    ];

    /// The name Flight SQL (and JDBC) use.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Table => "TABLE",
            TableKind::View => "VIEW",
            TableKind::MaterializedView => "MATERIALIZED VIEW",
            TableKind::ForeignTable => "FOREIGN TABLE",
        }
    }
}

/// What a login as a caller showed about its role.
#[derive(Clone, Debug)]
pub struct RoleLogin {
    /// The role is a superuser or may replicate: it bypasses every GRANT.
    pub privileged: bool,
    /// This server's address as the database saw the login
    /// (`inet_client_addr()`), for the pg_hba line a message names.
    pub server_address: Option<String>,
    /// The database logged in to, for messages (`segment 0 (…)`).
    pub database: String,
}

fn no_database() -> crate::Error {
    crate::Error::Config(
        "this source has no database to check passwords against; serve it with \
         --auth none on a loopback address"
            .into(),
    )
}

/// A statement's result columns and parameters, known without running it.
#[derive(Clone, Debug)]
pub struct Described {
    /// The result's columns.
    pub schema: SchemaRef,
    /// One field per parameter (`$1`, `$2`, …), typed as the database
    /// infers them.
    pub parameters: SchemaRef,
}

/// One column of a primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyColumn {
    /// The database.
    pub catalog: String,
    /// The table's schema.
    pub db_schema: String,
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// Its position in the key, from 1.
    pub sequence: i32,
    /// The constraint's name.
    pub name: String,
}

/// A place data can be read from: PostgreSQL segments, Greenplum, files.
///
/// Every call runs as `caller`: a database source connects as the caller's
/// user (so the database's own privileges apply); [`Caller::server`] uses
/// the server's configured connections.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
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

    /// The tables `caller` can query.
    async fn list_tables(&self, caller: &Caller) -> Result<Vec<TableInfo>>;

    /// Checks `caller`'s credentials by logging in to the database as it
    /// ([`crate::Error::Unauthenticated`] if the database refuses), and
    /// says what the role may do. A source without a database cannot check
    /// a password and refuses every login. Only part of the proof: see
    /// [`crate::login`].
    async fn authenticate(&self, caller: &Caller) -> Result<RoleLogin> {
        let _ = caller;
        Err(no_database())
    }

    /// Whether the database lets `user` log in from this server with no
    /// password at all (pg_hba `trust`, `peer`, `ident` for this host): then
    /// a successful [`Source::authenticate`] proves nothing.
    async fn admits_without_password(&self, user: &str) -> Result<bool> {
        let _ = user;
        Err(no_database())
    }

    /// The result columns and parameters of `sql` (which may hold `$1`,
    /// `$2`, … placeholders), for a Flight SQL prepared statement. A source
    /// that cannot infer parameter types describes statements without any.
    async fn prepare(&self, caller: &Caller, sql: &str) -> Result<Described> {
        Ok(Described {
            schema: self.describe(caller, sql).await?,
            parameters: std::sync::Arc::new(arrow_schema::Schema::empty()),
        })
    }

    /// The name of the database `caller` reads (Flight SQL's one catalog).
    async fn catalog(&self, caller: &Caller) -> Result<String>;

    /// The primary-key columns of `table` (in `db_schema`, or any schema).
    async fn primary_keys(
        &self,
        caller: &Caller,
        db_schema: Option<&str>,
        table: &str,
    ) -> Result<Vec<KeyColumn>> {
        let _ = (caller, db_schema, table);
        Ok(Vec::new())
    }

    /// Greenplum cursors this server declared and holds open (metrics).
    fn cursors_held(&self) -> usize {
        0
    }

    /// Database connections held now, per segment (the Greenplum
    /// coordinator as segment -1), for metrics.
    fn connections_in_use(&self) -> Vec<(i32, usize)> {
        Vec::new()
    }

    /// Whether every segment sees the same tables (one database: Greenplum),
    /// so that a `DoPut` writes one table whatever segment it names, rather
    /// than one table per segment (PostgreSQL segments). Endpoints say so in
    /// their `app_metadata` (`"shared_tables": true`).
    fn shared_tables(&self) -> bool {
        false
    }

    /// Writes `batches` into the table `command` names, on its segment,
    /// all or nothing (`DoPut`); returns the rows written.
    async fn put(
        &self,
        caller: &Caller,
        command: &PutCommand,
        batches: SendableRecordBatchStream,
    ) -> Result<u64> {
        let _ = (caller, batches);
        Err(crate::error::Error::Unimplemented(format!(
            "DoPut into {} is not supported by this source; \
             only PostgreSQL segments (--segment) accept uploads",
            command.table
        )))
    }
}

/// Checks that every TCP host of `config` resolves here: a name that does
/// not is a configuration error naming `what` (the flag that gave it), not
/// an outage.
pub async fn resolve_hosts(config: &tokio_postgres::Config, what: &str) -> Result<()> {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let Host::Tcp(name) = host else { continue };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        if let Err(e) = tokio::net::lookup_host((name.as_str(), port)).await {
            return Err(crate::Error::Config(format!(
                "{what}: host {name:?} does not resolve here ({e}); fix the host in the URL"
            )));
        }
    }
    Ok(())
}
