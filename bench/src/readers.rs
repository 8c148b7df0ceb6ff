//! The reads being compared: PostgreSQL's COPY drained to nowhere, the same
//! COPY decoded (and IPC-encoded) in-process the way the flight-server does,
//! and a real Flight `DoGet` into Rust's `FlightClient`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use arrow::array::{Array, ArrayData, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

use flight_server::source::BatchLimits;
use flight_server::types::{arrow_schema, CopyDecoder};

/// What one read moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Volume {
    /// Rows read (counted from the data where the format allows, else the
    /// known row count of the query).
    pub rows: u64,
    /// Bytes, in the unit of the read: COPY stream bytes for COPY, Arrow
    /// buffer bytes for decoded batches, IPC bytes for encoded messages.
    pub bytes: u64,
}

impl std::ops::Add for Volume {
    type Output = Volume;
    fn add(self, o: Volume) -> Volume {
        Volume {
            rows: self.rows + o.rows,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// The wire format of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// `FORMAT binary`: what the flight-server reads.
    Binary,
    /// `FORMAT text`: the default, for reference.
    Text,
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Rows `sql` returns on the segment at `url` (untimed; COPY binary cannot
/// be counted without decoding it).
pub async fn count_rows(url: &str, sql: &str) -> Result<u64> {
    let client = connect(url).await?;
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM ({sql}) AS q"), &[])
        .await
        .with_context(|| format!("counting {sql}"))?
        .get(0);
    Ok(n as u64)
}

/// Heap pages of `table` on the segment at `url`.
pub async fn table_pages(url: &str, table: &str) -> Result<i64> {
    let client = connect(url).await?;
    let row = client
        .query_one(
            "SELECT (pg_relation_size(to_regclass($1)) / current_setting('block_size')::int8)::int8",
            &[&table],
        )
        .await
        .with_context(|| format!("sizing {table}"))?;
    Ok(row.get(0))
}

/// `SELECT * FROM table` restricted to two halves of its pages, split the
/// way the flight-server's `--split 2` splits them (TID range scans; the
/// last range is open-ended).
pub fn ctid_halves(table: &str, pages: i64) -> [String; 2] {
    let mid = (pages + 1) / 2;
    [
        format!("SELECT * FROM {table} WHERE ctid >= '(0,0)'::tid AND ctid < '({mid},0)'::tid"),
        format!("SELECT * FROM {table} WHERE ctid >= '({mid},0)'::tid"),
    ]
}

/// `COPY (sql) TO STDOUT` drained to nowhere: the database's export speed.
pub async fn copy_drain(url: &str, sql: &str, format: CopyFormat, rows: u64) -> Result<Volume> {
    let client = connect(url).await?;
    let fmt = match format {
        CopyFormat::Binary => "binary",
        CopyFormat::Text => "text",
    };
    let stream = client
        .copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT {fmt})"))
        .await
        .with_context(|| format!("starting COPY of {sql}"))?;
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.context("reading COPY")?.len() as u64;
    }
    Ok(Volume { rows, bytes })
}

/// A binary COPY of `sql` held in memory, in the chunks it arrived in.
pub struct Captured {
    chunks: Vec<bytes::Bytes>,
    schema: SchemaRef,
    types: Vec<Type>,
    /// Bytes of the COPY stream.
    pub bytes: u64,
}

/// Reads `COPY (sql) TO STDOUT (FORMAT binary)` into memory (untimed), so
/// that the decoder can be timed alone, on one core, without PostgreSQL.
pub async fn copy_capture(url: &str, sql: &str) -> Result<Captured> {
    let client = connect(url).await?;
    let stmt = client.prepare(sql).await.context("describing the query")?;
    let schema = Arc::new(arrow_schema(stmt.columns())?);
    let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    let copy = client
        .copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))
        .await
        .context("starting COPY")?;
    let chunks: Vec<bytes::Bytes> = copy.try_collect().await.context("reading COPY")?;
    let bytes = chunks.iter().map(|c| c.len() as u64).sum();
    Ok(Captured {
        chunks,
        schema,
        types,
        bytes,
    })
}

/// Decodes a captured COPY with [`CopyDecoder`] (default [`BatchLimits`])
/// and drops the batches; bytes are Arrow buffer bytes.
pub fn decode_captured(captured: &Captured) -> Result<Volume> {
    let mut decoder = CopyDecoder::new(
        captured.schema.clone(),
        &captured.types,
        BatchLimits::default(),
    )?;
    let mut vol = Volume::default();
    let mut drain = |d: &mut CopyDecoder| -> Result<()> {
        while let Some(b) = d.take_batch()? {
            vol.rows += b.num_rows() as u64;
            vol.bytes += arrow_bytes(&b);
        }
        Ok(())
    };
    for chunk in &captured.chunks {
        decoder.push(chunk)?;
        drain(&mut decoder)?;
    }
    decoder.finish()?;
    drain(&mut decoder)?;
    Ok(vol)
}

/// How far [`copy_decode`] takes the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// COPY binary decoded into Arrow batches ([`CopyDecoder`]).
    Decode,
    /// … and encoded into Flight IPC messages ([`FlightDataEncoderBuilder`]),
    /// everything the flight-server does short of gRPC.
    Encode,
}

/// The flight-server's per-partition work, in this process and without
/// gRPC: COPY binary → [`CopyDecoder`] (same default [`BatchLimits`]) →
/// optionally the Flight IPC encoder. Bytes are Arrow buffer bytes for
/// [`Stage::Decode`] and encoded IPC bytes for [`Stage::Encode`].
pub async fn copy_decode(url: &str, sql: &str, stage: Stage) -> Result<Volume> {
    let client = connect(url).await?;
    let stmt = client.prepare(sql).await.context("describing the query")?;
    let schema = Arc::new(arrow_schema(stmt.columns())?);
    let types: Vec<_> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    let mut decoder = CopyDecoder::new(schema.clone(), &types, BatchLimits::default())?;
    let copy = client
        .copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))
        .await
        .context("starting COPY")?;
    // The decoder runs on the COPY stream's task, as in the server; batches
    // go through a small channel so that encoding is a separate stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let producer = async move {
        let mut copy = std::pin::pin!(copy);
        while let Some(chunk) = copy.next().await {
            decoder.push(&chunk.context("reading COPY")?)?;
            while let Some(b) = decoder.take_batch()? {
                if tx.send(b).await.is_err() {
                    return Ok(());
                }
            }
        }
        decoder.finish()?;
        while let Some(b) = decoder.take_batch()? {
            if tx.send(b).await.is_err() {
                return Ok(());
            }
        }
        anyhow::Ok(())
    };
    let batches = tokio_stream_of(rx);
    let consumer = async move {
        let mut vol = Volume::default();
        match stage {
            Stage::Decode => {
                let mut batches = std::pin::pin!(batches);
                while let Some(b) = batches.next().await {
                    vol.rows += b.num_rows() as u64;
                    vol.bytes += arrow_bytes(&b);
                }
            }
            Stage::Encode => {
                let rows = Arc::new(AtomicU64::new(0));
                let seen = rows.clone();
                let counted = batches.map(move |b| {
                    seen.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    Ok(b)
                });
                let mut flight = FlightDataEncoderBuilder::new()
                    .with_schema(schema)
                    .with_max_flight_data_size(2 * 1024 * 1024)
                    .build(counted);
                while let Some(fd) = flight.next().await {
                    let fd = fd?;
                    vol.bytes += (fd.data_header.len() + fd.data_body.len()) as u64;
                }
                vol.rows = rows.load(Ordering::Relaxed);
            }
        }
        anyhow::Ok(vol)
    };
    let (produced, consumed) = tokio::join!(producer, consumer);
    produced?;
    consumed
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<RecordBatch>,
) -> impl futures::Stream<Item = RecordBatch> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Bytes of the Arrow buffers a batch references (lengths, not capacities:
/// batches decoded from IPC are slices of one message body).
pub fn arrow_bytes(batch: &RecordBatch) -> u64 {
    fn data_bytes(d: &ArrayData) -> u64 {
        let buffers: usize = d.buffers().iter().map(|b| b.len()).sum();
        let nulls = d.nulls().map(|n| n.buffer().len()).unwrap_or(0);
        (buffers + nulls) as u64 + d.child_data().iter().map(data_bytes).sum::<u64>()
    }
    batch
        .columns()
        .iter()
        .map(|c| data_bytes(&c.to_data()))
        .sum()
}

/// The largest HTTP/2 frame the Flight clients of [`flight_client`]
/// accept; unset, HTTP/2's default (16 KiB), what a plain Flight client
/// asks for.
static CLIENT_FRAME_SIZE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Makes every later [`flight_client`] accept HTTP/2 frames of up to
/// `bytes`, as hopper's own client does (`data-plane --client-frame-size`).
pub fn set_client_frame_size(bytes: u32) {
    let _ = CLIENT_FRAME_SIZE.set(bytes);
}

/// A Flight client connected to `url` (`grpc+tcp://host:port`).
pub async fn flight_client(url: &str) -> Result<FlightClient> {
    let http = url.replace("grpc+tcp://", "http://");
    let channel = tonic::transport::Endpoint::from_shared(http)?
        .max_frame_size(CLIENT_FRAME_SIZE.get().copied())
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(FlightClient::new(channel))
}

/// The endpoints' tickets for `sql`, in the server's order (segment by
/// segment, ctid ranges in page order).
pub async fn plan(url: &str, sql: &str) -> Result<Vec<Ticket>> {
    let mut client = flight_client(url).await?;
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(sql.to_string()))
        .await
        .context("GetFlightInfo")?;
    info.endpoint
        .into_iter()
        .map(|ep| {
            ep.ticket
                .ok_or_else(|| anyhow!("endpoint without a ticket"))
        })
        .collect()
}

/// One `DoGet`, decoded into record batches and dropped; bytes are Arrow
/// buffer bytes. A fresh connection per read, like a trainer's.
pub async fn flight_read(url: &str, ticket: Ticket) -> Result<Volume> {
    let mut client = flight_client(url).await?;
    let mut stream = client.do_get(ticket).await.context("DoGet")?;
    let mut vol = Volume::default();
    while let Some(batch) = stream.try_next().await.context("reading DoGet")? {
        vol.rows += batch.num_rows() as u64;
        vol.bytes += arrow_bytes(&batch);
    }
    Ok(vol)
}
