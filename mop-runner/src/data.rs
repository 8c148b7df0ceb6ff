//! Reading a partition from flight-server: Flight `DoGet` streams bridged
//! to the (blocking) training thread through a bounded channel.
//!
//! The reader runs on the async runtime and stays a few batches ahead of
//! training (prefetch), so the network and the database work while the CPU
//! trains; the bound keeps memory flat however large the partition is.

use arrow_array::RecordBatch;
use arrow_flight::{FlightClient, Ticket};
use futures::TryStreamExt;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// Record batches the reader may run ahead of training.
pub const PREFETCH_BATCHES: usize = 4;

/// One Flight endpoint of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightSlice {
    /// `grpc+tcp://host:port` (or `http://host:port`).
    pub location: String,
    /// The opaque ticket.
    pub ticket: Vec<u8>,
}

/// Turns a Flight location into a gRPC URI tonic can dial.
pub fn grpc_uri(location: &str) -> Result<String> {
    let rest = location
        .strip_prefix("grpc+tcp://")
        .or_else(|| location.strip_prefix("grpc://"))
        .or_else(|| location.strip_prefix("http://"));
    match rest {
        Some(hostport) => Ok(format!("http://{hostport}")),
        None => Err(Error::Flight(format!(
            "unsupported Flight location {location:?}; use grpc+tcp://host:port"
        ))),
    }
}

/// A channel to a flight-server.
pub async fn channel(location: &str) -> Result<Channel> {
    let uri = grpc_uri(location)?;
    Endpoint::from_shared(uri.clone())
        .map_err(|e| Error::Flight(format!("bad location {location}: {e}")))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| {
            Error::Flight(format!(
                "cannot reach flight-server at {location}: {e}; is it running?"
            ))
        })
}

/// A Flight client with limits large enough for hopper's batches.
pub async fn client(location: &str) -> Result<FlightClient> {
    Ok(FlightClient::new(channel(location).await?))
}

fn flight_err(context: &str, e: arrow_flight::error::FlightError) -> Error {
    Error::Flight(format!("{context}: {e}"))
}

/// Plans `sql` on a flight-server: one slice per endpoint, in order.
pub async fn plan(location: &str, sql: &str) -> Result<Vec<FlightSlice>> {
    let mut c = client(location).await?;
    let info = c
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(sql.to_string()))
        .await
        .map_err(|e| flight_err(&format!("planning {sql:?}"), e))?;
    Ok(info
        .endpoint
        .into_iter()
        .map(|ep| FlightSlice {
            location: ep
                .location
                .first()
                .map(|l| l.uri.clone())
                .unwrap_or_else(|| location.to_string()),
            ticket: ep.ticket.map(|t| t.ticket.to_vec()).unwrap_or_default(),
        })
        .collect())
}

/// Starts reading `slices` one after another into a bounded channel; the
/// receiver gets every batch in order, then the channel closes (or an
/// `Err` item says why the read stopped).
pub fn spawn_reader(
    runtime: &tokio::runtime::Handle,
    slices: Vec<FlightSlice>,
) -> mpsc::Receiver<Result<RecordBatch>> {
    let (tx, rx) = mpsc::channel(PREFETCH_BATCHES);
    runtime.spawn(async move {
        for slice in slices {
            if let Err(e) = read_slice(&slice, &tx).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    });
    rx
}

async fn read_slice(slice: &FlightSlice, tx: &mpsc::Sender<Result<RecordBatch>>) -> Result<()> {
    let mut c = client(&slice.location).await?;
    let mut stream = c
        .do_get(Ticket::new(slice.ticket.clone()))
        .await
        .map_err(|e| flight_err(&format!("DoGet at {}", slice.location), e))?;
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| flight_err(&format!("reading from {}", slice.location), e))?
    {
        if tx.send(Ok(batch)).await.is_err() {
            // Training stopped; dropping the stream cancels the DoGet.
            return Ok(());
        }
    }
    Ok(())
}
