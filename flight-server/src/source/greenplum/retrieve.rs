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
pub(super) async fn retrieve(
    config: &Config,
    tls: &DbTls,
    ep: &EndpointInfo,
    schema: SchemaRef,
    limits: BatchLimits,
    tx: &mpsc::Sender<Result<RecordBatch>>,
) -> Result<bool> {
    let where_ = format!("segment endpoint {}:{}", ep.host, ep.port);
    let client = connect(config, tls, &format!("connecting to {where_}")).await?;
    let mut builder = BatchBuilder::new(schema)?;
    // The only statement a retrieve session accepts. `ep.name` was checked
    // to be a plain identifier in `list_endpoints`.
    let statement = format!("RETRIEVE {} FROM ENDPOINT {}", limits.rows, ep.name);
    loop {
        let stream = client
            .simple_query_raw(&statement)
            .await
            .map_err(|e| Error::from_pg(&format!("RETRIEVE from {where_}"), e))?;
        let mut stream = std::pin::pin!(stream);
        let mut got = 0usize;
        while let Some(message) = stream.next().await {
            let message =
                message.map_err(|e| Error::from_pg(&format!("RETRIEVE from {where_}"), e))?;
            if let SimpleQueryMessage::Row(row) = message {
                builder.push_row((0..row.len()).map(|i| row.get(i)))?;
                got += 1;
                let full = builder.rows() >= limits.rows || builder.text_bytes() >= limits.bytes;
                if full && tx.send(Ok(builder.finish()?)).await.is_err() {
                    return Ok(false);
                }
            }
        }
        if got == 0 {
            break;
        }
    }
    // An empty endpoint sends no batch: its stream carries the schema.
    if builder.rows() > 0 && tx.send(Ok(builder.finish()?)).await.is_err() {
        return Ok(false);
    }
    Ok(true)
}
