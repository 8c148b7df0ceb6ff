//! Writing: `DoPut`'s rows into a table.
//!
//! Only database segments write (through [`super::upload`]); a source that
//! cannot takes the default and refuses with a message that says which can.

use flight_client::put::PutCommand;

use super::SendableRecordBatchStream;
use crate::auth::Caller;
use crate::error::Result;

/// Writes uploads into tables.
#[async_trait::async_trait]
pub trait Writer: Send + Sync {
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
