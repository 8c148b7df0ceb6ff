//! `DoPut` into a PostgreSQL segment: the upload of [`copy_upload`] over a
//! connection to the segment the command names, as the caller.
//!
//! Reads run in read-only sessions (`default_transaction_read_only = on`);
//! an upload opens its own connection and starts its transaction
//! explicitly `READ WRITE`, so only this path can write, and only into the
//! table the descriptor names. Any failure — a type that does not match
//! the table, a constraint the rows violate, a client that goes away —
//! drops the transaction, which rolls back the table, the rows and a table
//! it created.

use flight_client::put::PutCommand;

use super::PostgresSource;
use crate::auth::Caller;
use crate::error::Result;
use crate::source::upload::copy_upload;
use crate::source::{SendableRecordBatchStream, Writer};

impl PostgresSource {
    /// Writes `batches` into `command.table` on
    /// `command.segment`; returns the rows written.
    pub(super) async fn put_rows(
        &self,
        caller: &Caller,
        command: &PutCommand,
        batches: SendableRecordBatchStream,
    ) -> Result<u64> {
        let seg = self.segment(command.segment)?;
        let on = format!(
            "{} on segment {} ({})",
            command.table, command.segment, seg.display
        );
        let mut client = seg.connect(caller).await?;
        copy_upload(&mut client, &on, command, batches, "").await
    }
}

#[async_trait::async_trait]
impl Writer for PostgresSource {
    async fn put(
        &self,
        caller: &Caller,
        command: &flight_client::put::PutCommand,
        batches: SendableRecordBatchStream,
    ) -> Result<u64> {
        self.put_rows(caller, command, batches).await
    }
}
