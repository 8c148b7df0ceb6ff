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
//! Every endpoint's `app_metadata` is a [`flight_client::EndpointMetadata`],
//! `{"segment": i}` (with `"shared_tables": true` where every segment sees
//! the same tables). `DoPut` writes
//! Arrow batches into a table on the segment its descriptor names — a path
//! `["table"]` (append on segment 0) or a JSON command `{"table": "t",
//! "segment": i, "create": true, "mode": "append" | "replace"}` — with
//! binary `COPY` in one transaction, and answers one `PutResult` whose
//! `app_metadata` is `{"table": "t", "segment": i, "rows": n}` (see
//! [`crate::put`]).
//!
//! Flight SQL rides on the same service: a descriptor, ticket, upload or
//! action that carries a Flight SQL message (a protobuf `Any` whose type is
//! `arrow.flight.protocol.sql.*`) goes to [`crate::sql`], anything else is
//! served as plain Flight, unchanged. SQL text is never mistaken for a
//! Flight SQL message: it does not decode as an `Any` of that type.

use std::sync::Arc;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{parse_basic, Caller, TokenStore};
use crate::core::{BoxStream, Core};
use crate::locate::Locator;
use crate::login::LoginGate;
use crate::metrics::Metrics;
use crate::snapshot::{PinRequest, Snapshots, PIN_SNAPSHOT, RELEASE_SNAPSHOT, RENEW_SNAPSHOT};
use crate::source::Source;
use crate::sql::{self, FlightSql};
use crate::ticket::TicketSigner;

/// The Flight service over one [`Source`], plain Flight and Flight SQL.
pub struct HopperFlightService {
    core: Arc<Core>,
    sql: FlightSql,
}

impl HopperFlightService {
    /// A service over `source`; endpoints point clients at `location`
    /// (e.g. `grpc+tcp://10.0.0.5:50051`).
    pub fn new(source: Arc<dyn Source>, signer: TicketSigner, location: String) -> Self {
        Self::from_core(Core {
            source,
            signer,
            locator: Arc::new(Locator::here(location)),
            tokens: None,
            login: Arc::new(LoginGate::new(false)),
            metrics: Metrics::new(),
            snapshots: Snapshots::new(
                crate::snapshot::DEFAULT_MAX_TTL,
                crate::snapshot::DEFAULT_IDLE,
                Metrics::new(),
            ),
        })
    }

    fn from_core(core: Core) -> Self {
        let core = Arc::new(core);
        Self {
            sql: FlightSql::new(core.clone()),
            core,
        }
    }

    fn with_core(self, change: impl FnOnce(&mut Core)) -> Self {
        let mut core = (*self.core).clone();
        change(&mut core);
        Self::from_core(core)
    }

    /// Endpoints are located where `locator` says (at the flight-server
    /// beside their segment) instead of all here.
    pub fn with_locator(self, locator: Arc<Locator>) -> Self {
        self.with_core(|c| c.locator = locator)
    }

    /// The same service counting into `metrics` (shared with `/metrics`).
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        self.with_core(|c| {
            c.snapshots = Snapshots::new(c.snapshots.max_ttl, c.snapshots.idle, metrics.clone());
            c.metrics = metrics;
        })
    }

    /// Pinned snapshots live at most `max_ttl`, and `idle` unused
    /// (`--snapshot-max-ttl`, `--snapshot-idle`).
    pub fn with_snapshot_limits(
        self,
        max_ttl: std::time::Duration,
        idle: std::time::Duration,
    ) -> Self {
        self.with_core(|c| c.snapshots = Snapshots::new(max_ttl, idle, c.metrics.clone()))
    }

    /// The same service requiring a Handshake and a Bearer token from
    /// `tokens` on every other call (see [`crate::auth`]).
    pub fn with_auth(self, tokens: Arc<TokenStore>) -> Self {
        self.with_core(|c| c.tokens = Some(tokens))
    }

    /// The same service proving logins through `gate` (which says whether
    /// superuser roles may log in).
    pub fn with_login_gate(self, gate: LoginGate) -> Self {
        self.with_core(|c| c.login = Arc::new(gate))
    }
}

/// A `DoAction` answer of one result.
fn one_result(body: impl Into<bytes::Bytes>) -> Response<BoxStream<arrow_flight::Result>> {
    let result = arrow_flight::Result { body: body.into() };
    Response::new(Box::pin(futures::stream::iter(vec![Ok(result)])))
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
        let Some(tokens) = &self.core.tokens else {
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
        let peer = request.remote_addr().map(|a| a.ip());
        self.core
            .login
            .login(self.core.source.as_ref(), &caller, peer)
            .await
            .map_err(Status::from)?;
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
        let caller = self.core.caller(&request)?;
        let tables = self
            .core
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
        if sql::is_command(&request.get_ref().cmd) {
            return self.sql.get_flight_info(request).await;
        }
        let caller = self.core.caller(&request)?;
        let snapshot = Core::snapshot_of(&request)?;
        let descriptor = request.into_inner();
        let sql = descriptor_sql(&descriptor)?;
        let info = self
            .core
            .plan_info(&caller, descriptor, &sql, snapshot.as_deref())
            .await?;
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
        if sql::is_command(&request.get_ref().cmd) {
            return self.sql.schema(request).await;
        }
        let caller = self.core.caller(&request)?;
        let sql = descriptor_sql(request.get_ref())?;
        let schema = self
            .core
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
        if sql::is_command(&request.get_ref().ticket) {
            return self.sql.do_get(request).await;
        }
        let caller = self.core.caller(&request)?;
        let stream = self.core.stream(&caller, &request.get_ref().ticket).await?;
        Ok(Response::new(stream))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let caller = self.core.caller(&request)?;
        let mut input = request.into_inner();
        // The first message's descriptor says which API the upload is for.
        let first = input
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("DoPut sent no messages"))??;
        let command = first
            .flight_descriptor
            .as_ref()
            .and_then(|d| sql::command(&d.cmd));
        let input = futures::stream::once(async move { Ok(first) }).chain(input);
        let result = match command {
            Some(command) => self.sql.put(&caller, command, input).await?,
            None => crate::put::serve_put(self.core.source.as_ref(), &caller, input)
                .await
                .map_err(Status::from)?,
        };
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
        if sql::is_action(&request.get_ref().r#type) {
            return self.sql.action(request).await;
        }
        match request.get_ref().r#type.as_str() {
            "health" => Ok(one_result("ok")),
            kind @ (PIN_SNAPSHOT | RENEW_SNAPSHOT | RELEASE_SNAPSHOT) => {
                let caller = self.core.caller(&request)?;
                let body = &request.get_ref().body;
                let snapshots = &self.core.snapshots;
                let answer = match kind {
                    PIN_SNAPSHOT => {
                        let ask: PinRequest = if body.is_empty() {
                            PinRequest::default()
                        } else {
                            serde_json::from_slice(body).map_err(|e| {
                                Status::invalid_argument(format!(
                                    "{PIN_SNAPSHOT}: the body is not {{\"ttl_seconds\": N}}: {e}"
                                ))
                            })?
                        };
                        let pinned = snapshots
                            .pin(self.core.source.as_ref(), &caller, &ask)
                            .await
                            .map_err(Status::from)?;
                        serde_json::to_vec(&pinned)
                            .map_err(|e| Status::internal(format!("encoding the pin: {e}")))?
                    }
                    _ => {
                        let id = std::str::from_utf8(body).map_err(|_| {
                            Status::invalid_argument(format!("{kind}: the body is a pin's id"))
                        })?;
                        match kind {
                            RENEW_SNAPSHOT => snapshots.renew(id, &caller),
                            _ => snapshots.release(id, &caller),
                        }
                        .map_err(Status::from)?;
                        b"ok".to_vec()
                    }
                };
                Ok(one_result(answer))
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
        let mut actions = vec![Ok(ActionType {
            r#type: "health".into(),
            description: "answers \"ok\" when the server is up".into(),
        })];
        actions.extend(
            [
                (
                    PIN_SNAPSHOT,
                    "pins a snapshot of every segment ({\"ttl_seconds\": N}, optional); \
                     GetFlightInfo with the x-hopper-snapshot header plans at it",
                ),
                (
                    RENEW_SNAPSHOT,
                    "keeps a pinned snapshot (body: its id) from going idle",
                ),
                (
                    RELEASE_SNAPSHOT,
                    "releases a pinned snapshot (body: its id)",
                ),
            ]
            .map(|(kind, what)| {
                Ok(ActionType {
                    r#type: kind.into(),
                    description: what.into(),
                })
            }),
        );
        actions.extend(sql::actions().into_iter().map(Ok));
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }
}
