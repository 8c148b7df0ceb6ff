//! One endpoint, as a ticket carries it and as any server with the key
//! reads it: where the segment is, the retrieve token, the planned schema,
//! and the `RETRIEVE` loop that parses its text rows into Arrow batches.

use super::*;

/// Everything a server needs to read one endpoint without the server that
/// planned it: carried in the (sealed) ticket, so that a flight-server
/// beside the segment serves it and rows never pass through the planner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retrieve {
    /// The segment host as Greenplum knows it (`--host-map` may redirect it).
    pub host: String,
    /// The segment's port.
    pub port: u16,
    /// The user the cursor was declared by.
    pub user: String,
    /// The endpoint's retrieve token: the password of a retrieve session.
    pub token: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The database the cursor lives in.
    pub database: String,
    /// The result schema: an Arrow IPC schema message, base64.
    pub schema: String,
}

impl Retrieve {
    pub(super) fn new(info: &EndpointInfo, database: &str, schema: &SchemaRef) -> Result<Self> {
        Ok(Self {
            host: info.host.clone(),
            port: info.port,
            user: info.user.clone(),
            token: info.token.clone(),
            endpoint: info.name.clone(),
            database: database.to_string(),
            schema: encode_schema(schema)?,
        })
    }

    pub(super) fn info(&self) -> EndpointInfo {
        EndpointInfo {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            token: self.token.clone(),
            name: self.endpoint.clone(),
        }
    }
}

/// `schema` as base64 of an Arrow IPC stream holding only the schema.
pub(super) fn encode_schema(schema: &SchemaRef) -> Result<String> {
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    w.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(w.into_inner()?))
}

/// The schema [`encode_schema`] wrote.
pub(super) fn decode_schema(text: &str) -> Result<SchemaRef> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::BadTicket(format!("the ticket's schema is not base64: {e}")))?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| Error::BadTicket(format!("the ticket's schema does not decode: {e}")))?;
    Ok(reader.schema())
}

/// Streams one endpoint into `tx`. `Ok(true)`: read to the end;
/// `Ok(false)`: the client went away first.
///
/// The retrieve session is read at the protocol level ([`wire`]): the
/// statement is prepared and described first (a retrieve session accepts
/// the extended protocol for `RETRIEVE`), and when every result column has
/// a binary decoder for its planned Arrow type the rows are asked for in
/// binary — numbers need no parsing and the segment no text output
/// functions — else in text, parsed as the coordinator's types say. One
/// `RETRIEVE ALL`: the socket's own backpressure paces the segment.
pub(super) async fn retrieve(
    config: &Config,
    tls: &DbTls,
    ep: &EndpointInfo,
    schema: SchemaRef,
    limits: BatchLimits,
    tx: &mpsc::Sender<Result<RecordBatch>>,
) -> Result<bool> {
    let where_ = format!("segment endpoint {}:{}", ep.host, ep.port);
    let mut session = wire::Session::connect(config, tls, &where_).await?;
    // The only statement a retrieve session accepts. `ep.name` was checked
    // to be a plain identifier in `list_endpoints`.
    let statement = format!("RETRIEVE ALL FROM ENDPOINT {}", ep.name);
    let columns = session.describe(&statement).await?;
    let mut rows = Rows::new(schema, &columns, limits, &where_)?;
    session.execute(rows.is_binary()).await?;
    loop {
        let done = session.read_rows(|row| rows.push(row))?;
        while let Some(batch) = rows.take_batch() {
            if tx.send(Ok(batch)).await.is_err() {
                return Ok(false);
            }
        }
        if done {
            break;
        }
        session.fill().await?;
    }
    // An empty endpoint sends no batch: its stream carries the schema.
    rows.finish()?;
    while let Some(batch) = rows.take_batch() {
        if tx.send(Ok(batch)).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An endpoint's rows into batches of the planned schema: binary
/// `DataRow`s through the binary decoder, or text ones through the text
/// parsers.
enum Rows {
    Binary(pg_arrow::CopyDecoder),
    Text {
        builder: BatchBuilder,
        limits: BatchLimits,
        done: std::collections::VecDeque<RecordBatch>,
    },
}

impl Rows {
    fn new(
        schema: SchemaRef,
        columns: &[wire::ColumnDesc],
        limits: BatchLimits,
        where_: &str,
    ) -> Result<Self> {
        if columns.len() != schema.fields().len() {
            return Err(Error::Decode {
                context: where_.to_owned(),
                message: format!(
                    "the endpoint returns {} columns, the query was planned with {}",
                    columns.len(),
                    schema.fields().len()
                ),
            });
        }
        Ok(match binary_types(&schema, columns) {
            Some(types) => Rows::Binary(pg_arrow::CopyDecoder::for_data_rows(
                schema, &types, limits,
            )?),
            None => {
                tracing::debug!(endpoint = %where_, "retrieving in text: a column's binary form does not match its plan");
                Rows::Text {
                    builder: BatchBuilder::new(schema)?,
                    limits,
                    done: Default::default(),
                }
            }
        })
    }

    fn is_binary(&self) -> bool {
        matches!(self, Rows::Binary(_))
    }

    fn push(&mut self, row: &[u8]) -> pg_arrow::Result<()> {
        match self {
            Rows::Binary(d) => d.push_data_row(row),
            Rows::Text {
                builder,
                limits,
                done,
            } => {
                builder.push_data_row(row)?;
                if builder.rows() >= limits.rows || builder.text_bytes() >= limits.bytes {
                    done.push_back(builder.finish()?);
                }
                Ok(())
            }
        }
    }

    fn take_batch(&mut self) -> Option<RecordBatch> {
        match self {
            Rows::Binary(d) => d.take_batch().ok().flatten(),
            Rows::Text { done, .. } => done.pop_front(),
        }
    }

    /// Closes the last, partial batch, if it has rows (for `take_batch`).
    fn finish(&mut self) -> Result<()> {
        match self {
            Rows::Binary(d) => d.finish()?,
            Rows::Text { builder, done, .. } => {
                if builder.rows() > 0 {
                    done.push_back(builder.finish()?);
                }
            }
        }
        Ok(())
    }
}

/// The PostgreSQL types of `columns` when each is a built-in type whose
/// Arrow form is the planned field's (so its binary `DataRow` values
/// decode into exactly the planned arrays); `None` otherwise.
fn binary_types(schema: &SchemaRef, columns: &[wire::ColumnDesc]) -> Option<Vec<Type>> {
    schema
        .fields()
        .iter()
        .zip(columns)
        .map(|(planned, c)| {
            let ty = Type::from_oid(c.type_oid)?;
            let field = arrow_field(&c.name, &ty, c.type_modifier).ok()?;
            (field.data_type() == planned.data_type()).then_some(ty)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn col(name: &str, ty: &Type, type_modifier: i32) -> wire::ColumnDesc {
        wire::ColumnDesc {
            name: name.into(),
            type_oid: ty.oid(),
            type_modifier,
        }
    }

    #[test]
    fn binary_only_when_every_column_decodes_into_its_plan() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("j", DataType::Utf8, true),
        ]));
        let planned = [col("id", &Type::INT8, -1), col("j", &Type::JSONB, -1)];
        assert_eq!(
            binary_types(&schema, &planned),
            Some(vec![Type::INT8, Type::JSONB])
        );
        // A type the plan saw otherwise, or one without a binary decoder.
        let other = [col("id", &Type::INT4, -1), col("j", &Type::JSONB, -1)];
        assert_eq!(binary_types(&schema, &other), None);
        let unknown = [
            col("id", &Type::INT8, -1),
            wire::ColumnDesc {
                name: "j".into(),
                type_oid: 999_999,
                type_modifier: -1,
            },
        ];
        assert_eq!(binary_types(&schema, &unknown), None);
        assert!(Rows::new(schema, &planned[..1], BatchLimits::default(), "here").is_err());
    }
}
