//! What the plain Flight API and the Flight SQL API share: the source, the
//! ticket key, the callers' tokens, the metrics and where endpoints are
//! located — and the three things both APIs do with them: tell who is
//! calling, turn a query into a `FlightInfo` with one endpoint per
//! partition, and stream the partition a ticket names.
//!
//! Both APIs hand out the same sealed tickets, so a Flight SQL client's
//! endpoints are read by the same `DoGet` (on this server or the one beside
//! the segment) as a plain Flight client's.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use arrow_schema::SchemaRef;
use flight_client::endpoint::EndpointMetadata;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Status};

use crate::auth::{parse_bearer, Caller, TokenStore};
use crate::locate::Locator;
use crate::login::LoginGate;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshots, SNAPSHOT_HEADER};
use crate::source::{Partition, Source};
use crate::ticket::TicketSigner;

/// A stream of Flight messages, the body of every streaming answer.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Largest `FlightData` message the server sends; arrow-flight splits
/// batches to stay under it (gRPC's default receive limit is 4 MiB).
const MAX_FLIGHT_DATA: usize = 2 * 1024 * 1024;

/// The state both Flight APIs serve from.
#[derive(Clone)]
pub struct Core {
    /// Where the rows come from.
    pub source: Arc<dyn Source>,
    /// Seals and opens tickets.
    pub signer: TicketSigner,
    /// Bearer tokens when callers authenticate (`--auth database`); `None`
    /// runs every call as the server's own connections.
    pub tokens: Option<Arc<TokenStore>>,
    /// What a Handshake must prove before a token is issued.
    pub login: Arc<LoginGate>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Where each endpoint is read: here, or at the flight-server beside
    /// its segment.
    pub locator: Arc<Locator>,
    /// Snapshots pinned for runs that read many times.
    pub snapshots: Arc<Snapshots>,
}

impl Core {
    /// The identity `request` runs with: the bearer token's user, or the
    /// server itself without authentication.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller::server());
        };
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = parse_bearer(header).map_err(Status::from)?;
        tokens.verify(token).map_err(Status::from)
    }

    /// The pin a request plans at (its [`SNAPSHOT_HEADER`]), if any.
    pub fn snapshot_of<T>(request: &Request<T>) -> Result<Option<String>, Status> {
        match request.metadata().get(SNAPSHOT_HEADER) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.to_owned()))
                .map_err(|_| Status::invalid_argument(format!("{SNAPSHOT_HEADER} is not text"))),
        }
    }

    /// Plans `sql` as `caller` (at pinned snapshot `snapshot`, if given) and
    /// answers with one endpoint per partition.
    pub async fn plan_info(
        &self,
        caller: &Caller,
        descriptor: FlightDescriptor,
        sql: &str,
        snapshot: Option<&str>,
    ) -> Result<FlightInfo, Status> {
        let started = Instant::now();
        let plan = match snapshot {
            Some(id) => {
                let names = self.snapshots.names(id, caller).map_err(Status::from)?;
                self.source.plan_at(caller, sql, &names).await
            }
            None => self.source.plan(caller, sql).await,
        }
        .map_err(Status::from)?;
        tracing::info!(partitions = plan.partitions.len(), %sql, "planned");
        let info = self.flight_info(caller, descriptor, &plan.schema, &plan.partitions)?;
        self.metrics.observe("GetFlightInfo", started);
        Ok(info)
    }

    /// A `FlightInfo` whose endpoints carry sealed tickets for `partitions`.
    pub fn flight_info(
        &self,
        caller: &Caller,
        descriptor: FlightDescriptor,
        schema: &SchemaRef,
        partitions: &[Partition],
    ) -> Result<FlightInfo, Status> {
        let expires_at = self.signer.expiry();
        let expiration = timestamp(UNIX_EPOCH + Duration::from_secs(expires_at));
        let shared_tables = self.source.shared_tables();
        let single_read = self.source.single_read();
        let endpoints = partitions.iter().map(|p| {
            FlightEndpoint::new()
                .with_ticket(Ticket::new(self.signer.sign_until(
                    p,
                    caller.user(),
                    expires_at,
                )))
                .with_location(self.locator.locate(p.segment, p.host()))
                .with_expiration_time(expiration)
                // The segment, so that a client can DoPut results next to the
                // rows (or, with shared tables, into the one table).
                .with_app_metadata(
                    EndpointMetadata {
                        segment: p.segment,
                        shared_tables,
                        single_read,
                    }
                    .to_bytes(),
                )
        });
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
            .with_descriptor(descriptor)
            .with_endpoints(endpoints.collect());
        Ok(info)
    }

    /// Streams the partition a sealed ticket names, as `caller`.
    pub async fn stream(
        &self,
        caller: &Caller,
        ticket: &[u8],
    ) -> Result<BoxStream<FlightData>, Status> {
        let body = self
            .signer
            .verify(ticket, caller.user())
            .map_err(Status::from)?;
        let partition = body.partition;
        let stream = self
            .source
            .read(caller, &partition)
            .await
            .map_err(Status::from)?;

        // The schema goes first, even for a partition without rows. A read
        // that fails before its first batch fails the call itself.
        let schema = stream.schema();
        let mut stream = stream.peekable();
        if let Some(Err(_)) = Pin::new(&mut stream).peek().await {
            let err = stream.next().await.and_then(Result::err);
            return Err(err
                .map(Status::from)
                .unwrap_or_else(|| Status::internal("lost error")));
        }
        tracing::debug!(segment = partition.segment, "streaming");

        // Rows are counted as batches leave the source, bytes as messages
        // leave the encoder; the guard counts the stream open until the
        // response stream is dropped (finished or cancelled).
        let (metrics, segment) = (self.metrics.clone(), partition.segment);
        let guard = self.metrics.stream();
        let batches = stream
            .inspect_ok(move |b| metrics.sent(segment, b.num_rows() as u64, 0))
            .map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
        let metrics = self.metrics.clone();
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(MAX_FLIGHT_DATA)
            .build(batches)
            .map_err(Status::from)
            .inspect_ok(move |d| {
                let _open = &guard;
                metrics.sent(segment, 0, (d.data_header.len() + d.data_body.len()) as u64);
            });
        Ok(Box::pin(flight))
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
