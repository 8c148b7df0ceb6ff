//! Writing an upload into a table: `COPY <table> (<cols>) FROM STDIN
//! (FORMAT binary)`, fed batch by batch, in one read-write transaction —
//! the one write path of every database source (a PostgreSQL segment, a
//! Greenplum coordinator).
//!
//! Reads run in read-only sessions; an upload starts its transaction
//! explicitly `READ WRITE`, so only this path can write, and only into the
//! table the descriptor names. Any failure — a type that does not match
//! the table, a constraint the rows violate, a client that goes away —
//! drops the transaction, which rolls back the table, the rows and a table
//! it created.

use flight_client::put::{PutCommand, PutMode};
use futures::{SinkExt, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::source::SendableRecordBatchStream;
use pg_arrow::{check_writable, column_definitions, column_list, CopyEncoder, Ident};

/// Writes `batches` into `command.table` over `client`, all
/// or nothing; `on` names the target in messages, `create_suffix` ends a
/// `CREATE TABLE` (Greenplum's `DISTRIBUTED BY`). Returns the rows written.
pub async fn copy_upload(
    client: &mut Client,
    on: &str,
    command: &PutCommand,
    mut batches: SendableRecordBatchStream,
    create_suffix: &str,
) -> Result<u64> {
    let schema = batches.schema();
    if schema.fields().is_empty() {
        return Err(Error::BadRequest("the upload has no columns".into()));
    }
    let encoder = CopyEncoder::new(schema.clone())?;
    let table = Ident::parse_plain(&command.table)?;
    let tx = client
        .build_transaction()
        .read_only(false)
        .start()
        .await
        .map_err(|e| Error::from_pg(&format!("starting the upload into {on}"), e))?;
    let create = match command.mode {
        PutMode::Replace => Some(format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({}){create_suffix}",
            column_definitions(&schema)?
        )),
        PutMode::Append if command.create => Some(format!(
            "CREATE TABLE IF NOT EXISTS {table} ({}){create_suffix}",
            column_definitions(&schema)?
        )),
        PutMode::Create => Some(format!(
            "CREATE TABLE {table} ({}){create_suffix}",
            column_definitions(&schema)?
        )),
        PutMode::Append => None,
    };
    if let Some(sql) = create {
        tx.batch_execute(&sql).await.map_err(|e| match e.code() {
            Some(c) if *c == SqlState::DUPLICATE_TABLE => Error::BadRequest(format!(
                "table {on} already exists; append to it or replace it instead"
            )),
            _ => Error::from_pg(&format!("creating {on}"), e),
        })?;
    }

    // The table's types of the uploaded columns, checked before any row.
    let columns = column_list(&schema)?;
    let probe = tx
        .prepare(&format!("SELECT {columns} FROM {table} LIMIT 0"))
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == SqlState::UNDEFINED_TABLE => Error::NotFound(format!(
                "table {on} does not exist; send \"create\": true to create it \
                 from the upload's schema"
            )),
            Some(c) if *c == SqlState::UNDEFINED_COLUMN => Error::BadRequest(format!(
                "the upload's columns do not all exist in {on}: {}",
                e.as_db_error().map(|d| d.message()).unwrap_or_default()
            )),
            _ => Error::from_pg(&format!("looking up {on}"), e),
        })?;
    for (field, col) in schema.fields().iter().zip(probe.columns()) {
        check_writable(field, col.type_()).map_err(|e| match e {
            pg_arrow::Error::Unwritable(m) => Error::BadRequest(format!("{on}: {m}")),
            other => other.into(),
        })?;
    }

    let copy = format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)");
    let sink = tx
        .copy_in::<_, bytes::Bytes>(&copy)
        .await
        .map_err(|e| Error::from_pg(&format!("COPY into {on}"), e))?;
    let mut sink = Box::pin(sink);
    let copy_err = |e| Error::from_pg(&format!("COPY into {on}"), e);
    sink.send(CopyEncoder::header()).await.map_err(copy_err)?;
    while let Some(batch) = batches.next().await {
        // An error here drops the sink (the COPY is aborted) and the
        // transaction (rolled back).
        let chunk = encoder.encode(&batch?)?;
        if !chunk.is_empty() {
            sink.send(chunk).await.map_err(copy_err)?;
        }
    }
    sink.send(CopyEncoder::trailer()).await.map_err(copy_err)?;
    let rows = sink.as_mut().finish().await.map_err(copy_err)?;
    tx.commit()
        .await
        .map_err(|e| Error::from_pg(&format!("committing the upload into {on}"), e))?;
    Ok(rows)
}
