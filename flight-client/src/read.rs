//! Reading a partition from flight-server: Flight `DoGet` streams bridged
//! to the (blocking) training thread through a bounded channel.
//!
//! The reader runs on the async runtime and stays a few batches ahead of
//! training (prefetch), so the network and the database work while the CPU
//! trains; the bound keeps memory flat however large the partition is.
//!
//! # Failures
//! A slice whose flight-server or segment is down (connection refused,
//! `Unavailable`) is retried with exponential backoff for up to
//! [`retry_budget`] — as long as none of its batches has been handed on.
//! A stream that breaks after that is never resumed mid-way (the rows
//! already handed on would be seen twice): the read ends with
//! [`Error::Unavailable`], so that a unit fails and runs again from its
//! starting state and a cache is read again from the beginning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::Ticket;
use futures::TryStreamExt;
use tokio::sync::mpsc;

use crate::connect::{client_with, grpc_uri};
use crate::endpoint::FlightSlice;
use crate::error::{Error, Result};
use crate::retry::{retry_budget, Backoff, RETRY_ENV};

/// Record batches the reader may run ahead of training.
pub const PREFETCH_BATCHES: usize = 4;

/// Starts reading `slices` one after another into a bounded channel; the
/// receiver gets every batch in order, then the channel closes (or an
/// `Err` item says why the read stopped).
/// The error is the receiver's own (anything a [`crate::Error`] converts into).
pub fn spawn_reader<E>(
    runtime: &tokio::runtime::Handle,
    slices: Vec<FlightSlice>,
) -> mpsc::Receiver<std::result::Result<RecordBatch, E>>
where
    E: From<Error> + Send + 'static,
{
    spawn_counted_reader(runtime, slices, Arc::default())
}

/// [`spawn_reader`], adding to `bytes` the Arrow IPC bytes (message headers
/// and bodies, as `hopper_flight_bytes_total` counts them on the server)
/// that arrive over the wire — what a trainer reports as read, local or not.
pub fn spawn_counted_reader<E>(
    runtime: &tokio::runtime::Handle,
    slices: Vec<FlightSlice>,
    bytes: Arc<AtomicU64>,
) -> mpsc::Receiver<std::result::Result<RecordBatch, E>>
where
    E: From<Error> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(PREFETCH_BATCHES);
    runtime.spawn(async move {
        for slice in slices {
            if let Err(e) = read_slice_retrying(&slice, &tx, &bytes, retry_budget()).await {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    });
    rx
}

/// Reads one slice, retrying with backoff while its server or segment is
/// unreachable and nothing of it has been handed on yet.
async fn read_slice_retrying<E: Send>(
    slice: &FlightSlice,
    tx: &mpsc::Sender<std::result::Result<RecordBatch, E>>,
    bytes: &Arc<AtomicU64>,
    budget: Duration,
) -> Result<()> {
    grpc_uri(&slice.location)?; // a bad location is not worth retrying
    let mut backoff = Backoff::new(budget);
    loop {
        let mut sent = 0usize;
        let e = match read_slice(slice, tx, bytes, &mut sent).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let message = match e {
            SliceError::Transient(m) => m,
            SliceError::Fatal(e) => return Err(e),
        };
        if sent > 0 {
            return Err(Error::Unavailable(format!(
                "{message}; the stream broke after {sent} batches, so this read stops \
                 (a unit runs again from its starting state, a cache is read again)"
            )));
        }
        tracing::warn!(location = %slice.location, attempt = backoff.attempts(), error = %message, "retrying");
        if !backoff.wait().await {
            return Err(Error::Unavailable(format!(
                "{message}; gave up after {} attempts in {:.0?} \
                 (raise {RETRY_ENV} to wait longer)",
                backoff.attempts(),
                backoff.budget()
            )));
        }
    }
}

/// Why one attempt at a slice failed.
enum SliceError {
    /// The server or its segment is unreachable or went away: retry may help.
    Transient(String),
    /// The request itself is wrong (bad ticket, bad query): do not retry.
    Fatal(Error),
}

/// `handed` says whether the read used a token it was handed: when the
/// server refuses that token (expired, or the server restarted and forgot
/// it), logging in again is the cure, which whoever handed it does when it
/// plans again — so it is reported like a refused ticket.
fn classify(context: &str, e: FlightError, handed: bool) -> SliceError {
    if let FlightError::Tonic(s) = &e {
        if crate::refused::is_ticket_refused(s) {
            return SliceError::Fatal(Error::TicketRefused(format!("{context}: {}", s.message())));
        }
        if handed && s.code() == tonic::Code::Unauthenticated {
            return SliceError::Fatal(Error::TicketRefused(format!(
                "{context}: the server refused the login token this read was handed \
                 ({}); log in and plan again",
                s.message()
            )));
        }
    }
    let transient = match &e {
        FlightError::Tonic(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        FlightError::ExternalError(_) => true,
        _ => false,
    };
    let message = format!("{context}: {e}");
    if transient {
        SliceError::Transient(message)
    } else {
        SliceError::Fatal(Error::Flight(message))
    }
}

async fn read_slice<E: Send>(
    slice: &FlightSlice,
    tx: &mpsc::Sender<std::result::Result<RecordBatch, E>>,
    bytes: &Arc<AtomicU64>,
    sent: &mut usize,
) -> std::result::Result<(), SliceError> {
    let handed = slice.bearer.is_some();
    let mut c = match client_with(&slice.location, slice.bearer.as_ref()).await {
        Ok(c) => c,
        Err(Error::Flight(m)) => return Err(SliceError::Transient(m)),
        Err(e) => return Err(SliceError::Fatal(e)),
    };
    // FlightClient::do_get, with the raw messages counted on their way to
    // the decoder.
    let mut request = tonic::Request::new(Ticket::new(slice.ticket.clone()));
    *request.metadata_mut() = c.metadata().clone();
    let response = c.inner_mut().do_get(request).await.map_err(|s| {
        classify(
            &format!("DoGet at {}", slice.location),
            FlightError::Tonic(Box::new(s)),
            handed,
        )
    })?;
    let bytes = bytes.clone();
    let messages = response
        .into_inner()
        .map_ok(move |d| {
            bytes.fetch_add(
                (d.data_header.len() + d.data_body.len()) as u64,
                Ordering::Relaxed,
            );
            d
        })
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    let mut stream = FlightRecordBatchStream::new_from_flight_data(messages);
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| classify(&format!("reading from {}", slice.location), e, handed))?
    {
        if tx.send(Ok(batch)).await.is_err() {
            // Training stopped; dropping the stream cancels the DoGet.
            return Ok(());
        }
        *sent += 1;
    }
    Ok(())
}
