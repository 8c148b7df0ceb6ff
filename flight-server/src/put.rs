//! `DoPut`: Arrow record batches in, rows into a table on one segment.
//!
//! The first `FlightData` message carries the descriptor, which names the
//! target. Either a path of one element, the table (`["predictions"]`:
//! append to an existing table on segment 0), or a command holding a JSON
//! [`PutCommand`]:
//!
//! ```json
//! {"table": "predictions", "segment": 1, "create": true, "mode": "append"}
//! ```
//!
//! - `table`: a plain identifier, optionally schema-qualified (`public.t`);
//! - `segment`: which segment receives the rows (default 0) — the index an
//!   endpoint's `app_metadata` carries as `{"segment": i}`, so a client that
//!   read endpoint *i* can write its results next to the rows it read;
//! - `create`: create the table from the Arrow schema if it does not exist
//!   (types as [`pg_arrow::encode`] maps them);
//! - `mode`: `append` (default) adds rows; `replace` drops the table if it
//!   exists and creates it from the Arrow schema.
//!
//! The batches are streamed into the database as they arrive (PostgreSQL:
//! `COPY … FROM STDIN (FORMAT binary)`), inside one transaction: an upload
//! that fails half-way leaves the table as it was. The end of the client's
//! stream is what says "complete": a client that gives up must cancel the
//! call (the server then sees an error and rolls back), not just end the
//! stream — arrow-rs's `FlightClient::do_put` ends it when its input yields
//! an error, which commits what was sent before. The one `PutResult`
//! answers with JSON app metadata [`PutOutcome`]:
//! `{"table": "predictions", "segment": 1, "rows": 5000}`.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, PutResult};
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::Status;

pub use flight_client::put::{PutCommand, PutMode, PutOutcome};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::{RecordBatchStreamAdapter, Writer};

/// Serves one `DoPut`: reads the descriptor and schema from the first
/// messages, streams the batches into `source`, answers with the outcome.
pub async fn serve_put<S>(source: &dyn Writer, caller: &Caller, input: S) -> Result<PutResult>
where
    S: Stream<Item = std::result::Result<FlightData, Status>> + Send + 'static,
{
    let mut input = Box::pin(input);
    let first = input
        .next()
        .await
        .ok_or_else(|| Error::BadRequest("DoPut sent no messages".into()))?
        .map_err(|s| Error::BadRequest(format!("reading the upload: {}", s.message())))?;
    let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
        Error::BadRequest("the first DoPut message must carry a descriptor naming the table".into())
    })?;
    let command = PutCommand::from_descriptor(&descriptor)?;
    let input = futures::stream::once(async move { Ok::<_, Status>(first) }).chain(input);
    let rows = put_batches(source, caller, &command, input).await?;
    let outcome = PutOutcome {
        table: command.table,
        segment: command.segment,
        rows,
    };
    let meta = serde_json::to_vec(&outcome).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(PutResult {
        app_metadata: meta.into(),
    })
}

/// Decodes an upload's messages (schema first) and writes its batches into
/// the table `command` names; returns the rows written. Flight SQL's
/// ingest writes through here too.
pub async fn put_batches<S>(
    source: &dyn Writer,
    caller: &Caller,
    command: &PutCommand,
    input: S,
) -> Result<u64>
where
    S: Stream<Item = std::result::Result<FlightData, Status>> + Send + 'static,
{
    let messages = input.map_err(|s| FlightError::Tonic(Box::new(s)));
    let mut batches = FlightRecordBatchStream::new_from_flight_data(messages);
    // Pull until the schema is known; the first batch (if any) is kept.
    let head = batches.next().await.transpose().map_err(upload_error)?;
    let schema = batches.schema().cloned().ok_or_else(|| {
        Error::BadRequest("the upload has no schema message; send the schema first".into())
    })?;
    let rest = batches.map_err(upload_error);
    let stream = futures::stream::iter(head.map(Ok)).chain(rest);
    let rows = source
        .put(
            caller,
            command,
            RecordBatchStreamAdapter::boxed(schema, stream),
        )
        .await?;
    tracing::info!(table = %command.table, segment = command.segment, rows, "put");
    Ok(rows)
}

/// An upload that could not be read or decoded.
pub fn upload_error(e: FlightError) -> Error {
    match e {
        FlightError::Tonic(s) => Error::BadRequest(format!("reading the upload: {}", s.message())),
        other => Error::BadRequest(format!("decoding the upload: {other}")),
    }
}
