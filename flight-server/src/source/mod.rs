//! Where record batches come from, and where uploads go.
//!
//! A [`Source`] is three traits, one per concern, so that each caller
//! names what it uses: a [`Reader`] plans queries into [`Partition`]s and
//! streams them (`GetFlightInfo`, `DoGet`); a [`Catalog`] lists tables,
//! keys and statement shapes and checks logins (Flight SQL metadata, the
//! login gate); a [`Writer`] takes uploads (`DoPut`). PostgreSQL segments
//! ([`postgres`]), a Greenplum coordinator ([`greenplum`]) and files
//! ([`files`], read-only) each implement all three.
//!
//! Streams are produced by a task feeding a bounded channel: a client that
//! reads slowly makes the producer wait instead of the server buffering the
//! table, and a client that goes away makes the producer stop and release its
//! database connection.

use crate::error::Result;
pub use pg_arrow::BatchLimits;

pub mod catalog;
pub mod db_tls;
#[cfg(feature = "files")]
pub mod files;
pub mod greenplum;
pub mod limit;
pub mod pg_catalog;
pub mod postgres;
pub mod reader;
pub mod stream;
pub mod tls_refusal;
pub mod upload;
pub(crate) mod wire;
pub mod writer;

pub use catalog::{Catalog, Described, KeyColumn, RoleLogin, TableInfo, TableKind};
pub use reader::{
    CursorTotals, HeldSnapshot, Partition, PartitionSpec, Plan, Reader, SnapshotNames,
};
pub use stream::{RecordBatchStream, RecordBatchStreamAdapter, SendableRecordBatchStream};
pub use writer::Writer;

/// How many finished batches a producer may run ahead of its client.
pub const CHANNEL_DEPTH: usize = 2;

/// A place data is read from and written to: PostgreSQL segments,
/// Greenplum, files. Every type that is a [`Reader`], a [`Catalog`] and a
/// [`Writer`] is one; the server holds it as `Arc<dyn Source>`.
pub trait Source: Reader + Catalog + Writer + 'static {}

impl<T: Reader + Catalog + Writer + 'static> Source for T {}

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
