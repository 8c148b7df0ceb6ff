//! Flight SQL: the protocol ADBC's Flight SQL driver, the Flight SQL JDBC
//! driver (DBeaver, BI tools) and Go/Rust Flight SQL clients speak, served
//! by the same server, port and tickets as plain Flight.
//!
//! [`crate::service`] hands over every call that carries a Flight SQL
//! message; arrow-flight's [`FlightSqlService`] dispatches it to the methods
//! below. A query's `FlightInfo` is planned exactly like a plain Flight
//! query's: one endpoint per segment (per `--split` range, per file
//! partition, per Greenplum endpoint located beside its segment), each with
//! the usual sealed ticket, so ADBC's `adbc_execute_partitions` reads the
//! segments in parallel and a plain `execute` reads them all. Every call
//! runs as the caller (Handshake with Basic credentials, then the Bearer
//! token), so the database decides what each user may read.
//!
//! # What is implemented, and what is refused
//!
//! | Flight SQL | hopper |
//! |---|---|
//! | `CommandStatementQuery` | planned per segment; `GetSchema` describes it |
//! | `CreatePreparedStatement`, `DoPut` of parameters, `GetFlightInfo` on the handle, `ClosePreparedStatement` | parameter and result schemas from the database; values bound as literals ([`bind`]) |
//! | `GetSqlInfo` | [`info`] |
//! | `GetXdbcTypeInfo` | the types hopper streams, PostgreSQL's names ([`xdbc`]) |
//! | `GetCatalogs`, `GetDbSchemas`, `GetTables` (with schemas), `GetTableTypes`, `GetPrimaryKeys` | what the caller may `SELECT` ([`metadata`]) |
//! | `CommandStatementIngest` (ADBC `adbc_ingest`) | the `DoPut` path: binary `COPY` in one transaction; create / append / replace |
//! | `CommandStatementUpdate`, `CommandPreparedStatementUpdate` | refused: hopper's sessions are read-only; write with ingest, or change data in the database |
//! | transactions, savepoints, `CancelQuery` | refused: each query is one read-only snapshot per segment; a client cancels by dropping its streams |
//! | Substrait plans | refused: SQL only |
//! | `GetExportedKeys`, `GetImportedKeys`, `GetCrossReference` | refused: not needed to read training data |

mod bind;
mod info;
mod metadata;
mod prepared;
mod xdbc;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, Command, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, DoPutUpdateResult,
    ProstMessageExt, SqlInfo, TableExistsOption, TableNotExistOption,
};
use arrow_flight::{
    Action, ActionType, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage,
    PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{Schema, SchemaRef};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use flight_client::put::{check_table_name, PutCommand, PutMode};

use crate::auth::Caller;
use crate::core::{BoxStream, Core};
use crate::error::Error;
use prepared::{PreparedStatements, Statement};

/// Most bytes of Arrow messages one parameter binding may send.
pub const MAX_BIND_BYTES: usize = 1024 * 1024;

/// Every Flight SQL message's protobuf type starts so.
const TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// The Flight SQL actions hopper answers.
const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";

/// The Flight SQL actions it refuses, with a reason (still routed here so
/// the client hears Flight SQL's answer, not "unknown action").
const REFUSED_ACTIONS: [&str; 6] = [
    "CreatePreparedSubstraitPlan",
    "BeginTransaction",
    "EndTransaction",
    "BeginSavepoint",
    "EndSavepoint",
    "CancelQuery",
];

const UPDATES_REFUSED: &str = "hopper serves reads: its database sessions are read-only, so \
     Flight SQL updates (INSERT, UPDATE, DELETE, DDL) are refused; load rows with bulk ingest \
     (ADBC adbc_ingest), or change data in the database itself";

/// The Flight SQL message `bytes` (a descriptor's command, a ticket) holds,
/// if it is one; SQL text and hopper's sealed tickets are not.
pub fn command(bytes: &[u8]) -> Option<Command> {
    let any = Any::decode(bytes).ok()?;
    if !any.type_url.starts_with(TYPE_PREFIX) {
        return None;
    }
    Command::try_from(any).ok()
}

/// Whether `bytes` hold a Flight SQL message.
pub fn is_command(bytes: &[u8]) -> bool {
    command(bytes).is_some()
}

/// Whether an action of this type is Flight SQL's.
pub fn is_action(kind: &str) -> bool {
    kind == CREATE_PREPARED_STATEMENT
        || kind == CLOSE_PREPARED_STATEMENT
        || REFUSED_ACTIONS.contains(&kind)
}

/// The Flight SQL actions `ListActions` advertises.
pub fn actions() -> Vec<ActionType> {
    vec![
        ActionType {
            r#type: CREATE_PREPARED_STATEMENT.into(),
            description: "Flight SQL: prepares a statement (ActionCreatePreparedStatementRequest)"
                .into(),
        },
        ActionType {
            r#type: CLOSE_PREPARED_STATEMENT.into(),
            description: "Flight SQL: closes a prepared statement".into(),
        },
    ]
}

/// hopper's Flight SQL service over the shared [`Core`].
pub struct FlightSql {
    core: Arc<Core>,
    prepared: Arc<PreparedStatements>,
}

impl FlightSql {
    /// The Flight SQL side of a server.
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            prepared: Arc::new(PreparedStatements::default()),
        }
    }

    /// Serves a `DoPut` whose descriptor holds `command`; `input` is the
    /// whole upload, first message included.
    pub async fn put<S>(
        &self,
        caller: &Caller,
        command: Command,
        input: S,
    ) -> Result<PutResult, Status>
    where
        S: Stream<Item = Result<FlightData, Status>> + Send + 'static,
    {
        let app_metadata = match command {
            Command::CommandStatementIngest(cmd) => {
                let record_count = self.ingest(caller, cmd, input).await?;
                DoPutUpdateResult { record_count }.encode_to_vec()
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                self.bind(caller, cmd, input).await?.encode_to_vec()
            }
            Command::CommandStatementUpdate(_) | Command::CommandPreparedStatementUpdate(_) => {
                return Err(Status::unimplemented(UPDATES_REFUSED))
            }
            other => {
                return Err(Status::unimplemented(format!(
                    "DoPut with {} is not supported by hopper's Flight SQL",
                    other.type_url()
                )))
            }
        };
        Ok(PutResult {
            app_metadata: app_metadata.into(),
        })
    }

    /// Serves a Flight SQL action; the refused ones are answered with why.
    pub async fn action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
        let kind = request.get_ref().r#type.as_str();
        if REFUSED_ACTIONS.contains(&kind) {
            return Err(Status::unimplemented(format!(
                "Flight SQL action {kind:?} is not supported by hopper: each query is one \
                 read-only snapshot per segment (no transactions or savepoints), a client \
                 cancels by dropping its streams, and hopper takes SQL, not Substrait"
            )));
        }
        self.do_action(request).await
    }

    /// `GetSchema` of a Flight SQL command: a query's or a prepared
    /// statement's result columns.
    pub async fn schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let caller = self.core.caller(&request)?;
        let schema = match command(&request.get_ref().cmd) {
            Some(Command::CommandStatementQuery(q)) => self.describe(&caller, &q.query).await?,
            Some(Command::CommandPreparedStatementQuery(q)) => {
                let statement = self
                    .prepared
                    .get(&q.prepared_statement_handle, caller.user())
                    .map_err(Status::from)?;
                self.describe(&caller, &statement.bound_sql().map_err(Status::from)?)
                    .await?
            }
            _ => {
                return Err(Status::unimplemented(
                    "GetSchema answers Flight SQL queries and prepared statements; \
                     for metadata commands, call GetFlightInfo",
                ))
            }
        };
        let options = IpcWriteOptions::default();
        let result: SchemaResult = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e: arrow_schema::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn describe(&self, caller: &Caller, sql: &str) -> Result<SchemaRef, Status> {
        self.core
            .source
            .describe(caller, sql)
            .await
            .map_err(Status::from)
    }

    async fn ingest<S>(
        &self,
        caller: &Caller,
        cmd: CommandStatementIngest,
        input: S,
    ) -> Result<i64, Status>
    where
        S: Stream<Item = Result<FlightData, Status>> + Send + 'static,
    {
        let put = ingest_command(&cmd).map_err(Status::from)?;
        let rows = crate::put::put_batches(self.core.source.as_ref(), caller, &put, input)
            .await
            .map_err(Status::from)?;
        Ok(i64::try_from(rows).unwrap_or(i64::MAX))
    }

    /// Binds the one row of parameters a `DoPut` carries to a prepared
    /// statement (at most [`MAX_BIND_BYTES`] of them on the wire).
    async fn bind<S>(
        &self,
        caller: &Caller,
        cmd: CommandPreparedStatementQuery,
        input: S,
    ) -> Result<DoPutPreparedStatementResult, Status>
    where
        S: Stream<Item = Result<FlightData, Status>> + Send + 'static,
    {
        let handle = cmd.prepared_statement_handle;
        let statement = self
            .prepared
            .get(&handle, caller.user())
            .map_err(Status::from)?;
        // Parameters are held in memory until executed: bounded, counted
        // on the wire before anything is decoded.
        let mut received = 0usize;
        let messages = input
            .map_err(|s| FlightError::Tonic(Box::new(s)))
            .and_then(move |m| {
                received += m.data_header.len() + m.data_body.len() + m.app_metadata.len();
                std::future::ready(if received > MAX_BIND_BYTES {
                    Err(FlightError::Tonic(Box::new(Status::invalid_argument(
                        format!(
                            "the bound parameters exceed {} KiB; bind one row of smaller values \
                         (large data goes in with ingest, not as a parameter)",
                            MAX_BIND_BYTES / 1024
                        ),
                    ))))
                } else {
                    Ok(m)
                })
            });
        let mut stream = FlightRecordBatchStream::new_from_flight_data(messages);
        let mut batches = Vec::new();
        while let Some(b) = stream.next().await {
            batches.push(b.map_err(|e| match e {
                FlightError::Tonic(status) => *status,
                other => Status::from(crate::put::upload_error(other)),
            })?);
        }
        let schema = stream
            .schema()
            .cloned()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let params = arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| Status::invalid_argument(format!("reading the parameters: {e}")))?;
        let expected = statement.parameters.fields().len();
        if params.num_columns() != expected {
            return Err(Status::invalid_argument(format!(
                "the statement takes {expected} parameter(s) but {} column(s) were bound",
                params.num_columns()
            )));
        }
        self.prepared
            .bind(&handle, caller.user(), params)
            .map_err(Status::from)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    /// A `FlightInfo` with one endpoint here whose ticket is the command
    /// itself: how metadata results are fetched.
    fn metadata_info(
        &self,
        command: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = Ticket::new(command.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }
}

/// The `DoPut` target of an ingest command.
fn ingest_command(cmd: &CommandStatementIngest) -> Result<PutCommand, Error> {
    if cmd.temporary {
        return Err(Error::BadRequest(
            "temporary tables cannot be ingested into: each upload runs in its own session, \
             which ends with the upload; ingest into a regular table"
                .into(),
        ));
    }
    if cmd.transaction_id.is_some() {
        return Err(Error::BadRequest(
            "hopper does not run transactions across calls; every ingest is one transaction".into(),
        ));
    }
    let table = match &cmd.schema {
        Some(schema) if !schema.is_empty() => format!("{schema}.{}", cmd.table),
        _ => cmd.table.clone(),
    };
    check_table_name(&table)?;
    let options = cmd.table_definition_options.unwrap_or_default();
    let if_missing = TableNotExistOption::try_from(options.if_not_exist)
        .unwrap_or(TableNotExistOption::Unspecified);
    let if_exists =
        TableExistsOption::try_from(options.if_exists).unwrap_or(TableExistsOption::Unspecified);
    let create = match if_missing {
        TableNotExistOption::Create => true,
        TableNotExistOption::Fail => false,
        TableNotExistOption::Unspecified => {
            return Err(Error::BadRequest(
                "the ingest command must say what to do when the table does not exist \
                 (create or fail)"
                    .into(),
            ))
        }
    };
    let mode = match (if_exists, create) {
        (TableExistsOption::Replace, _) => PutMode::Replace,
        (TableExistsOption::Append, _) => PutMode::Append,
        (TableExistsOption::Fail, true) => PutMode::Create,
        (TableExistsOption::Fail, false) => {
            return Err(Error::BadRequest(
                "the ingest command fails both when the table exists and when it does not; \
                 choose create, append or replace"
                    .into(),
            ))
        }
        (TableExistsOption::Unspecified, _) => {
            return Err(Error::BadRequest(
                "the ingest command must say what to do when the table exists \
                 (fail, append or replace)"
                    .into(),
            ))
        }
    };
    let segment = match cmd.options.get("hopper.segment") {
        None => 0,
        Some(s) => s.parse().map_err(|_| {
            Error::BadRequest(format!(
                "option hopper.segment must be a segment number, not {s:?}"
            ))
        })?,
    };
    Ok(PutCommand::new(table, segment)
        .with_create(create)
        .with_mode(mode))
}

/// One record batch as a `DoGet` answer.
fn batch_stream(batch: RecordBatch) -> BoxStream<FlightData> {
    let schema = batch.schema();
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async { Ok(batch) }))
            .map_err(Status::from),
    )
}

type DoGetResponse = Result<Response<<FlightSql as FlightService>::DoGetStream>, Status>;

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.core.caller(&request)?;
        if query.transaction_id.is_some() {
            return Err(Status::invalid_argument(
                "hopper does not run transactions; send the query without a transaction id",
            ));
        }
        let info = self
            .core
            .plan_info(&caller, request.into_inner(), &query.query, None)
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.core.caller(&request)?;
        let statement = self
            .prepared
            .get(&cmd.prepared_statement_handle, caller.user())
            .map_err(Status::from)?;
        let sql = statement.bound_sql().map_err(Status::from)?;
        let info = self
            .core
            .plan_info(&caller, request.into_inner(), &sql, None)
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.core.caller(&request)?;
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.core.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.core.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.core.caller(&request)?;
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.core.caller(&request)?;
        let schema = query.clone().into_builder(&info::SQL_INFO).schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.core.caller(&request)?;
        let schema = metadata::primary_keys_schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.core.caller(&request)?;
        let schema = query.into_builder(&xdbc::XDBC_TYPES).schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        self.core.caller(&request)?;
        let batch = query
            .into_builder(&xdbc::XDBC_TYPES)
            .build()
            .map_err(|e| Status::internal(format!("building XdbcTypeInfo: {e}")))?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let caller = self.core.caller(&request)?;
        let batch = metadata::catalogs(self.core.source.as_ref(), &caller, query).await?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let caller = self.core.caller(&request)?;
        let batch = metadata::db_schemas(self.core.source.as_ref(), &caller, query).await?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let caller = self.core.caller(&request)?;
        let batch = metadata::tables(self.core.source.as_ref(), &caller, query).await?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        self.core.caller(&request)?;
        Ok(Response::new(batch_stream(metadata::table_types(query)?)))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        self.core.caller(&request)?;
        let batch = query
            .into_builder(&info::SQL_INFO)
            .build()
            .map_err(|e| Status::internal(format!("building SqlInfo: {e}")))?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let caller = self.core.caller(&request)?;
        let batch = metadata::primary_keys(self.core.source.as_ref(), &caller, query).await?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::unimplemented(UPDATES_REFUSED))
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.core.caller(&request)?;
        self.ingest(&caller, cmd, request.into_inner()).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.core.caller(&request)?;
        self.bind(&caller, cmd, request.into_inner()).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.core.caller(&request)?;
        if query.transaction_id.is_some() {
            return Err(Status::invalid_argument(
                "hopper does not run transactions; prepare without a transaction id",
            ));
        }
        let found = bind::placeholders(&query.query).map_err(Status::from)?;
        let described = self
            .core
            .source
            .prepare(&caller, &found.sql)
            .await
            .map_err(Status::from)?;
        if described.parameters.fields().len() != found.count {
            return Err(Status::invalid_argument(format!(
                "the statement has {} placeholder(s) but the database sees {} parameter(s); \
                 number them $1, $2, … without gaps",
                found.count,
                described.parameters.fields().len()
            )));
        }
        let options = IpcWriteOptions::default();
        let ipc = |schema: &Schema| -> Result<bytes::Bytes, Status> {
            let IpcMessage(bytes) = SchemaAsIpc::new(schema, &options)
                .try_into()
                .map_err(|e: arrow_schema::ArrowError| Status::internal(e.to_string()))?;
            Ok(bytes)
        };
        let dataset_schema = ipc(&described.schema)?;
        let parameter_schema = ipc(&described.parameters)?;
        let handle = self.prepared.insert(Statement {
            user: caller.user().map(str::to_owned),
            sql: found.sql,
            parameters: described.parameters,
            bound: None,
        });
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = self.core.caller(&request)?;
        self.prepared
            .close(&query.prepared_statement_handle, caller.user())
            .map_err(Status::from)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
