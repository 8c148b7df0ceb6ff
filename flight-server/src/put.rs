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
//!   (types as [`crate::copy_in`] maps them);
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
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightData, FlightDescriptor, PutResult};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::Source;

/// Where a `DoPut` writes (the descriptor's JSON command).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutCommand {
    /// The table, `name` or `schema.name`.
    pub table: String,
    /// The segment that receives the rows.
    #[serde(default)]
    pub segment: i32,
    /// Create the table from the upload's schema if it does not exist.
    #[serde(default)]
    pub create: bool,
    /// Append to the table, or replace it.
    #[serde(default)]
    pub mode: PutMode,
}

/// What happens to rows already in the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PutMode {
    /// Keep them; add the upload.
    #[default]
    Append,
    /// Drop the table (if any) and create it from the upload's schema.
    Replace,
}

/// The `PutResult` app metadata of a finished upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOutcome {
    /// The table written.
    pub table: String,
    /// The segment written.
    pub segment: i32,
    /// Rows written.
    pub rows: u64,
}

impl PutCommand {
    /// Append to `table` on `segment`.
    pub fn new(table: impl Into<String>, segment: i32) -> Self {
        Self {
            table: table.into(),
            segment,
            create: false,
            mode: PutMode::Append,
        }
    }

    /// Creates the table if it does not exist.
    pub fn with_create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: PutMode) -> Self {
        self.mode = mode;
        self
    }

    /// The descriptor a client sends (a JSON command).
    pub fn descriptor(&self) -> FlightDescriptor {
        // Serializing a struct of strings and integers cannot fail.
        FlightDescriptor::new_cmd(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads the target from a `DoPut` descriptor and checks the table name.
    pub fn from_descriptor(d: &FlightDescriptor) -> Result<Self> {
        let cmd = match DescriptorType::try_from(d.r#type) {
            Ok(DescriptorType::Path) => match d.path.as_slice() {
                [table] => PutCommand::new(table.clone(), 0),
                _ => {
                    return Err(Error::BadRequest(
                        "a DoPut path descriptor names one table, e.g. [\"predictions\"]".into(),
                    ))
                }
            },
            Ok(DescriptorType::Cmd) => serde_json::from_slice(&d.cmd).map_err(|e| {
                Error::BadRequest(format!(
                    "the DoPut command must be JSON like {{\"table\": \"t\", \"segment\": 0, \
                     \"create\": true, \"mode\": \"append\"}}: {e}"
                ))
            })?,
            _ => {
                return Err(Error::BadRequest(
                    "a DoPut descriptor is a path [\"table\"] or a JSON command".into(),
                ))
            }
        };
        check_table_name(&cmd.table)?;
        Ok(cmd)
    }
}

/// A plain identifier, optionally schema-qualified: what hopper splices
/// into `CREATE TABLE` and `COPY` unquoted (PostgreSQL folds it to lower case).
fn check_table_name(name: &str) -> Result<()> {
    let part_ok = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() <= 2 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "table {name:?} must be a plain identifier like predictions or myschema.predictions"
        )))
    }
}

/// Serves one `DoPut`: reads the descriptor and schema from the first
/// messages, streams the batches into `source`, answers with the outcome.
pub async fn serve_put<S>(source: &dyn Source, caller: &Caller, input: S) -> Result<PutResult>
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
    let messages = futures::stream::once(async move { Ok::<_, Status>(first) })
        .chain(input)
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    let mut batches = FlightRecordBatchStream::new_from_flight_data(messages);
    // Pull until the schema is known; the first batch (if any) is kept.
    let head = batches.next().await.transpose().map_err(upload_error)?;
    let schema = batches.schema().cloned().ok_or_else(|| {
        Error::BadRequest("the upload has no schema message; send the schema first".into())
    })?;
    let rest = batches.map_err(upload_error);
    let stream = futures::stream::iter(head.map(Ok)).chain(rest);
    let rows = source
        .put(caller, &command, schema, Box::pin(stream))
        .await?;
    tracing::info!(table = %command.table, segment = command.segment, rows, "put");
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

fn upload_error(e: FlightError) -> Error {
    match e {
        FlightError::Tonic(s) => Error::BadRequest(format!("reading the upload: {}", s.message())),
        other => Error::BadRequest(format!("decoding the upload: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_name_the_table_segment_and_mode() {
        let d = FlightDescriptor::new_cmd(
            r#"{"table": "public.preds", "segment": 1, "create": true, "mode": "replace"}"#,
        );
        let c = PutCommand::from_descriptor(&d).unwrap();
        assert_eq!(
            c,
            PutCommand::new("public.preds", 1)
                .with_create(true)
                .with_mode(PutMode::Replace)
        );
        assert_eq!(PutCommand::from_descriptor(&c.descriptor()).unwrap(), c);
        let p = PutCommand::from_descriptor(&FlightDescriptor::new_path(vec!["t".into()]));
        assert_eq!(p.unwrap(), PutCommand::new("t", 0));
    }

    #[test]
    fn bad_descriptors_say_what_a_good_one_looks_like() {
        for (d, needle) in [
            (FlightDescriptor::new_cmd("SELECT 1"), "JSON"),
            (
                FlightDescriptor::new_cmd(r#"{"table": "t; DROP"}"#),
                "identifier",
            ),
            (FlightDescriptor::new_cmd(r#"{"tabel": "t"}"#), "tabel"),
            (
                FlightDescriptor::new_path(vec!["a".into(), "b".into()]),
                "one table",
            ),
        ] {
            let e = PutCommand::from_descriptor(&d).unwrap_err();
            assert!(
                matches!(e, Error::BadRequest(_)) && e.to_string().contains(needle),
                "{needle}: {e}"
            );
        }
    }
}
