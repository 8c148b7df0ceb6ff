//! The Arrow Flight service: `GetFlightInfo` plans, `DoGet` streams.
//!
//! The service keeps no state a reader depends on: a ticket is a sealed
//! [`Partition`] (for Greenplum, with the endpoint's retrieve token), so any
//! request can be served by any server that shares the ticket key, and a
//! restart loses nothing but tickets' validity if the key was random.
//!
//! A query is named either by a command (`FlightDescriptor::new_cmd(sql)`)
//! or by a path of one element, a table name (`new_path(["criteo"])`), which
//! reads the whole table.
//!
//! Every endpoint's `app_metadata` is `{"segment": i}` (with
//! `"shared_tables": true` where every segment sees the same tables). `DoPut` writes
//! Arrow batches into a table on the segment its descriptor names — a path
//! `["table"]` (append on segment 0) or a JSON command `{"table": "t",
//! "segment": i, "create": true, "mode": "append" | "replace"}` — with
//! binary `COPY` in one transaction, and answers one `PutResult` whose
//! `app_metadata` is `{"table": "t", "segment": i, "rows": n}` (see
//! [`crate::put`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::SchemaRef;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{parse_basic, parse_bearer, Caller, TokenStore};
use crate::error::Error;
use crate::locate::Locator;
use crate::metrics::Metrics;
use crate::source::{Partition, PartitionSpec, Source};
use crate::ticket::TicketSigner;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Largest `FlightData` message the server sends; arrow-flight splits
/// batches to stay under it (gRPC's default receive limit is 4 MiB).
const MAX_FLIGHT_DATA: usize = 2 * 1024 * 1024;

/// The Flight service over one [`Source`].
pub struct HopperFlightService {
    source: Arc<dyn Source>,
    signer: TicketSigner,
    /// Bearer tokens when callers authenticate (`--auth database`); `None`
    /// runs every call as the server's own connections.
    tokens: Option<Arc<TokenStore>>,
    metrics: Metrics,
    /// Where each endpoint is read: here, or at the flight-server beside
    /// its segment.
    locator: Arc<Locator>,
}

impl HopperFlightService {
    /// A service over `source`; endpoints point clients at `location`
    /// (e.g. `grpc+tcp://10.0.0.5:50051`).
    pub fn new(source: Arc<dyn Source>, signer: TicketSigner, location: String) -> Self {
        Self {
            source,
            signer,
            locator: Arc::new(Locator::here(location)),
            tokens: None,
            metrics: Metrics::new(),
        }
    }

    /// Endpoints are located where `locator` says (at the flight-server
    /// beside their segment) instead of all here.
    pub fn with_locator(mut self, locator: Arc<Locator>) -> Self {
        self.locator = locator;
        self
    }

    /// The same service counting into `metrics` (shared with `/metrics`).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same service requiring a Handshake and a Bearer token from
    /// `tokens` on every other call (see [`crate::auth`]).
    pub fn with_auth(mut self, tokens: Arc<TokenStore>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// The identity `request` runs with: the bearer token's user, or the
    /// server itself without authentication.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
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

    fn flight_info(
        &self,
        caller: &Caller,
        descriptor: FlightDescriptor,
        schema: &SchemaRef,
        partitions: &[Partition],
    ) -> Result<FlightInfo, Status> {
        let expires_at = self.signer.expiry();
        let expiration = prost_types_timestamp(UNIX_EPOCH + Duration::from_secs(expires_at));
        let shared_tables = self.source.shared_tables();
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
                .with_app_metadata(if shared_tables {
                    format!("{{\"segment\":{},\"shared_tables\":true}}", p.segment)
                } else {
                    format!("{{\"segment\":{}}}", p.segment)
                })
        });
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
            .with_descriptor(descriptor)
            .with_endpoints(endpoints.collect());
        Ok(info)
    }
}

fn prost_types_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The SQL a descriptor names: its command, or `SELECT * FROM <path>`.
pub fn descriptor_sql(d: &FlightDescriptor) -> Result<String, Status> {
    match DescriptorType::try_from(d.r#type) {
        Ok(DescriptorType::Cmd) => String::from_utf8(d.cmd.to_vec()).map_err(|_| {
            Status::invalid_argument("the descriptor's command must be UTF-8 SQL text")
        }),
        Ok(DescriptorType::Path) => match d.path.as_slice() {
            [table] if !table.is_empty() => Ok(format!("SELECT * FROM {table}")),
            _ => Err(Status::invalid_argument(
                "a path descriptor names one table, e.g. [\"criteo\"] or [\"public.criteo\"]",
            )),
        },
        _ => Err(Status::invalid_argument(
            "descriptor must be a command (SQL) or a path (a table name)",
        )),
    }
}

fn schema_ipc(schema: &SchemaRef) -> Result<SchemaResult, Status> {
    let options = IpcWriteOptions::default();
    SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(|e: arrow_schema::ArrowError| Status::internal(format!("encoding schema: {e}")))
}

#[tonic::async_trait]
impl FlightService for HopperFlightService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let Some(tokens) = &self.tokens else {
            // Without authentication there is nothing to exchange: answer with
            // an empty handshake so clients that always handshake still work.
            let out = futures::stream::iter(vec![Ok(HandshakeResponse::default())]);
            return Ok(Response::new(Box::pin(out)));
        };
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (user, password) = parse_basic(header).map_err(Status::from)?;
        let caller = Caller::login(user, password);
        // The database checks the password: a login as the user.
        self.source
            .authenticate(&caller)
            .await
            .map_err(|e| match e {
                // A refused login, whatever the database's exact SQLSTATE.
                Error::Unauthenticated(m) | Error::PermissionDenied(m) | Error::InvalidQuery(m) => {
                    Status::unauthenticated(format!(
                        "the database refused the login of {:?}: {m}; check the user and password",
                        caller.user().unwrap_or_default()
                    ))
                }
                other => Status::from(other),
            })?;
        tracing::info!(user = caller.user().unwrap_or_default(), "authenticated");
        let token = tokens.issue(caller).map_err(Status::from)?;
        let bearer = format!("Bearer {token}");
        let out = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        })]);
        let mut response = Response::new(Box::pin(out) as Self::HandshakeStream);
        response.metadata_mut().insert(
            "authorization",
            bearer
                .parse()
                .map_err(|_| Status::internal("bearer token is not a valid header"))?,
        );
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let caller = self.caller(&request)?;
        let tables = self
            .source
            .list_tables(&caller)
            .await
            .map_err(Status::from)?;
        let mut infos = Vec::with_capacity(tables.len());
        for t in tables {
            let info = FlightInfo::new()
                .try_with_schema(&t.schema)
                .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
                .with_descriptor(FlightDescriptor::new_path(vec![t.name]))
                .with_total_records(t.rows.unwrap_or(-1));
            infos.push(Ok(info));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = std::time::Instant::now();
        let caller = self.caller(&request)?;
        let descriptor = request.into_inner();
        let sql = descriptor_sql(&descriptor)?;
        let plan = self
            .source
            .plan(&caller, &sql)
            .await
            .map_err(Status::from)?;
        tracing::info!(partitions = plan.partitions.len(), %sql, "planned");
        let info = self.flight_info(&caller, descriptor, &plan.schema, &plan.partitions)?;
        self.metrics.observe("GetFlightInfo", started);
        Ok(Response::new(info))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "PollFlightInfo is not supported: planning is fast, use GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let caller = self.caller(&request)?;
        let sql = descriptor_sql(request.get_ref())?;
        let schema = self
            .source
            .describe(&caller, &sql)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(schema_ipc(&schema)?))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let body = self
            .signer
            .verify(&request.get_ref().ticket, caller.user())
            .map_err(Status::from)?;
        let partition = body.partition;
        let stream = self
            .source
            .read(&caller, &partition)
            .await
            .map_err(Status::from)?;

        // Peek at the first batch: an empty partition still has to tell the
        // client its schema, which only the source knows.
        let mut stream = stream.peekable();
        let schema = match Pin::new(&mut stream).peek().await {
            Some(Ok(batch)) => batch.schema(),
            Some(Err(_)) => {
                let err = stream.next().await.and_then(Result::err);
                return Err(err
                    .map(Status::from)
                    .unwrap_or_else(|| Status::internal("lost error")));
            }
            None => self.partition_schema(&caller, &partition).await?,
        };
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
        Ok(Response::new(Box::pin(flight)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let caller = self.caller(&request)?;
        let result = crate::put::serve_put(self.source.as_ref(), &caller, request.into_inner())
            .await
            .map_err(Status::from)?;
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange is not supported"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        match request.get_ref().r#type.as_str() {
            "health" => {
                let ok = arrow_flight::Result::new("ok");
                Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(ok)]))))
            }
            other => Err(Status::invalid_argument(format!(
                "unknown action {other:?}; ListActions shows the supported ones"
            ))),
        }
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = vec![Ok(ActionType {
            r#type: "health".into(),
            description: "answers \"ok\" when the server is up".into(),
        })];
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }
}

impl HopperFlightService {
    async fn partition_schema(
        &self,
        caller: &Caller,
        partition: &Partition,
    ) -> Result<SchemaRef, Status> {
        match &partition.spec {
            PartitionSpec::Postgres { sql } | PartitionSpec::Files { sql, .. } => self
                .source
                .describe(caller, sql)
                .await
                .map_err(Status::from),
            PartitionSpec::Greenplum { .. } => Err(Status::from(Error::Internal(
                "a Greenplum endpoint ended without a schema".into(),
            ))),
        }
    }
}
