//! Greenplum parallel retrieve cursors.
//!
//! # Design
//!
//! ```text
//!  plan(sql)   coordinator session as the caller (kept open, in a transaction):
//!                BEGIN; DECLARE hopper_… PARALLEL RETRIEVE CURSOR FOR <sql>;
//!                SELECT … FROM gp_get_endpoints() WHERE <this cursor, this session>
//!              → one Partition per endpoint; its sealed ticket carries the cursor id and a
//!                Retrieve: segment host and port, endpoint name, retrieve token, database, schema
//!  read(p)     on ANY server with the key — this one, or one beside the segment
//!              (--segment-flight) — a retrieve session to the endpoint's host:port
//!                (user = username, password = token, options -c gp_retrieve_conn=true)
//!                RETRIEVE <rows> FROM ENDPOINT <endpointname>   … until 0 rows
//!              → text values parsed into the planned Arrow schema (module `text`)
//!  finish      the planning server sees its own reads end, and watches endpoints read
//!              elsewhere in gp_get_endpoints().state (FINISHED, RELEASED); once every
//!              endpoint is done: gp_wait_parallel_retrieve_cursor(…); CLOSE; COMMIT
//! ```
//!
//! Facts this module relies on (Greenplum 7.0; see DESIGN.md):
//! - The cursor lives in the declaring session's transaction, so that
//!   session is held in a server-side registry until every endpoint has been
//!   read, abandoned, or left idle for the cursor timeout (30 s; at the
//!   `--max-connections` cap the cursor idle longest is closed first).
//! - All endpoints of one cursor carry the same `endpointname`; they differ
//!   by `gp_segment_id`, token and `hostname:port`, so endpoints are keyed by
//!   segment. A superuser's `gp_get_endpoints()` lists every session's
//!   endpoints: filter on cursor name *and* `gp_session_id`.
//! - A retrieve session accepts only `RETRIEVE` — no catalog or type
//!   look-ups — so the schema is fixed on the coordinator (by preparing the
//!   query) and values are read in text form with the simple query protocol.
//! - An endpoint can be read once; there is no rescan. A retrieve that
//!   stops early leaves it RELEASED, and the whole cursor then fails.
//! - After the cursor is closed, a login with an endpoint's token fails.
//!
//! Connections are made without TLS.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use base64::Engine as _;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, SimpleQueryMessage};
use tokio_stream::wrappers::ReceiverStream;

use super::db_tls::{DbTls, DbUrl};
use super::limit::ConnectionLimit;
use super::{
    pg_catalog, BatchLimits, Catalog, Described, KeyColumn, Partition, PartitionSpec, Plan, Reader,
    RecordBatchStreamAdapter, RoleLogin, SendableRecordBatchStream, TableInfo, Writer,
    CHANNEL_DEPTH,
};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::locate::Locator;
use crate::types::{arrow_field, arrow_schema};
use pg_arrow::{BatchBuilder, Ident};

/// How long a cursor may sit with no endpoint being read before the
/// sweeper closes it and releases its coordinator session, snapshot and
/// locks. Readers start within moments of planning (mop plans right before
/// it reads), so half a minute of silence means the plan was abandoned.
pub const DEFAULT_CURSOR_TIMEOUT: Duration = Duration::from_secs(30);

/// Session settings pinned on every coordinator and retrieve session: the
/// text parser reads dates, intervals, times with zones, floats and bytea
/// in exactly these forms, whatever the role's own defaults are.
const PINNED_SETTINGS: &str = "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC \
     -c extra_float_digits=3 -c bytea_output=hex -c standard_conforming_strings=on";

/// How long, once every endpoint has been drained, the coordinator is given
/// to report the cursor finished (it normally answers at once).
const FINISH_WAIT_SECS: u32 = 10;

/// A Greenplum coordinator; query partitions are the segments' endpoints of
/// a parallel retrieve cursor.
pub struct GreenplumSource {
    config: Config,
    /// How coordinator and retrieve sessions use TLS (the URL's `sslmode`,
    /// `sslrootcert`): retrieve sessions to segments as to the coordinator.
    tls: DbTls,
    limits: BatchLimits,
    /// Segment host names mapped to the addresses to dial here (`--host-map`).
    host_map: BTreeMap<String, String>,
    /// Caps on coordinator sessions and on retrieve sessions per segment.
    connections: Connections,
    /// Where endpoints are located: those at another flight-server (beside
    /// their segment) are read there, so their progress is watched on the
    /// coordinator instead of seen here.
    locator: Arc<Locator>,
    /// Shared connection for `describe` and `list_tables` (reconnected when closed).
    coordinator: tokio::sync::Mutex<Option<Arc<Client>>>,
    registry: Arc<Registry>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GreenplumSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreenplumSource")
            .field("limits", &self.limits)
            .field("host_map", &self.host_map)
            .finish_non_exhaustive()
    }
}

impl Drop for GreenplumSource {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// Open cursors by id, and recently closed ids (so that a late second read
/// of an endpoint is told so rather than "unknown cursor").
struct Registry {
    timeout: Duration,
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    open: HashMap<String, Arc<Cursor>>,
    closed: HashMap<String, Instant>,
}

/// `--max-connections` for Greenplum: one cap on the coordinator sessions
/// that hold cursors, and one per segment on its retrieve sessions.
struct Connections {
    max: usize,
    coordinator: ConnectionLimit,
    segments: Mutex<HashMap<i32, ConnectionLimit>>,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            max,
            coordinator: ConnectionLimit::new(max),
            segments: Mutex::new(HashMap::new()),
        }
    }

    fn segment(&self, segment: i32) -> ConnectionLimit {
        lock(&self.segments)
            .entry(segment)
            .or_insert_with(|| ConnectionLimit::new(self.max))
            .clone()
    }
}

/// One declared parallel retrieve cursor and the session that holds it.
struct Cursor {
    /// The SQL name of the cursor (`hopper_<hex>`), safe to splice into SQL.
    name: String,
    /// Who declared it (`None` without authentication).
    owner: Option<String>,
    schema: SchemaRef,
    /// The cursor session's place under `--max-connections`, returned with it.
    _permit: OwnedSemaphorePermit,
    /// The coordinator session in whose transaction the cursor lives; taken
    /// (once) when the cursor is finished.
    session: Mutex<Option<Arc<Client>>>,
    state: Mutex<CursorState>,
}

struct CursorState {
    endpoints: BTreeMap<i32, Endpoint>,
    /// When an endpoint last started or stopped being read (or the cursor was declared).
    last_activity: Instant,
}

struct Endpoint {
    status: Status,
}

/// Where and how to retrieve one endpoint (a row of `gp_get_endpoints()`).
#[derive(Clone, Debug)]
struct EndpointInfo {
    host: String,
    port: u16,
    user: String,
    token: String,
    name: String,
}

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
    fn new(info: &EndpointInfo, database: &str, schema: &SchemaRef) -> Result<Self> {
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

    fn info(&self) -> EndpointInfo {
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
fn encode_schema(schema: &SchemaRef) -> Result<String> {
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    w.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(w.into_inner()?))
}

/// The schema [`encode_schema`] wrote.
fn decode_schema(text: &str) -> Result<SchemaRef> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::BadTicket(format!("the ticket's schema is not base64: {e}")))?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| Error::BadTicket(format!("the ticket's schema does not decode: {e}")))?;
    Ok(reader.schema())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Not claimed yet.
    Ready,
    /// Located at another flight-server: read there, its progress watched
    /// on the coordinator (`gp_get_endpoints().state`).
    Remote,
    /// A `read` is streaming it.
    Reading,
    /// Read to the end.
    Drained,
    /// The read failed or its client went away, or the cursor expired.
    Abandoned,
}

impl Status {
    fn is_done(self) -> bool {
        matches!(self, Status::Drained | Status::Abandoned)
    }
}

impl GreenplumSource {
    /// Connects to the coordinator at `coordinator_url` (a libpq URL or
    /// key=value string) with its own login and checks that it offers
    /// parallel retrieve cursors.
    pub async fn new(coordinator_url: &str, limits: BatchLimits) -> Result<Self> {
        Self::open(coordinator_url, limits, true).await
    }

    /// A source over the coordinator at `coordinator_url`. With
    /// `server_login` (`--auth none`) it logs in with the URL now and checks
    /// that this is a Greenplum with parallel retrieve cursors; without, the
    /// URL needs no password: the server connects only as its callers, and
    /// checks the coordinator at each caller's login.
    pub async fn open(
        coordinator_url: &str,
        limits: BatchLimits,
        server_login: bool,
    ) -> Result<Self> {
        if limits.rows == 0 || limits.bytes == 0 {
            return Err(Error::Config(format!(
                "batch limits must be positive, got {} rows / {} bytes",
                limits.rows, limits.bytes
            )));
        }
        let DbUrl { mut config, tls } = DbUrl::parse(coordinator_url, "--greenplum URL")?;
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {PINNED_SETTINGS}"),
            _ => PINNED_SETTINGS.to_owned(),
        };
        config.options(&options).application_name("hopper");
        super::resolve_hosts(&config, "--greenplum").await?;
        let coordinator = if server_login {
            let client = connect(&config, &tls, "connecting to the Greenplum coordinator").await?;
            check_greenplum(&client).await?;
            Some(Arc::new(client))
        } else {
            None
        };
        let registry = Arc::new(Registry {
            timeout: DEFAULT_CURSOR_TIMEOUT,
            inner: Mutex::new(RegistryInner::default()),
        });
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&registry)));
        Ok(Self {
            config,
            tls,
            limits,
            host_map: BTreeMap::new(),
            locator: Arc::new(Locator::default()),
            connections: Connections::new(super::limit::DEFAULT_MAX_CONNECTIONS),
            coordinator: tokio::sync::Mutex::new(coordinator),
            registry,
            sweeper,
        })
    }

    /// Closes cursors left with no endpoint being read for `timeout`.
    pub fn with_cursor_timeout(mut self, timeout: Duration) -> Self {
        self.sweeper.abort();
        self.registry = Arc::new(Registry {
            timeout,
            inner: Mutex::new(RegistryInner::default()),
        });
        self.sweeper = tokio::spawn(sweep(Arc::downgrade(&self.registry)));
        self
    }

    /// Dials `address` for the segment host `name` (as
    /// `gp_segment_configuration` knows it) — `--host-map NAME=ADDRESS`.
    pub fn with_host_map(mut self, map: BTreeMap<String, String>) -> Self {
        self.host_map = map;
        self
    }

    /// Endpoints `locator` places at other flight-servers
    /// (`--segment-flight`, `--segment-flight-port`) are read there: this
    /// server watches their progress on the coordinator instead of seeing
    /// their reads.
    pub fn with_locator(mut self, locator: Arc<Locator>) -> Self {
        self.locator = locator;
        self
    }

    /// Caps coordinator sessions, and retrieve sessions per segment, at `max`.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.connections = Connections::new(max.max(1));
        self
    }

    /// A coordinator connection for `caller`: a fresh session as the
    /// caller's user (its GRANTs apply), or the shared server connection.
    async fn coordinator_for(&self, caller: &Caller) -> Result<Arc<Client>> {
        match caller.login_here()? {
            Some(_) => Ok(Arc::new(
                connect(
                    &self.config_for(caller)?,
                    &self.tls,
                    "connecting to the Greenplum coordinator",
                )
                .await?,
            )),
            None => self.coordinator().await,
        }
    }

    /// The coordinator's connection parameters with `caller`'s login.
    fn config_for(&self, caller: &Caller) -> Result<Config> {
        let mut config = self.config.clone();
        if let Some(login) = caller.login_here()? {
            config.user(&login.user).password(login.password.as_bytes());
        }
        Ok(config)
    }

    /// The shared coordinator connection, reconnecting if it was lost.
    async fn coordinator(&self) -> Result<Arc<Client>> {
        let mut guard = self.coordinator.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            connect(
                &self.config,
                &self.tls,
                "connecting to the Greenplum coordinator",
            )
            .await?,
        );
        *guard = Some(c.clone());
        Ok(c)
    }

    /// How many cursors are open (declared and not yet closed).
    pub fn open_cursors(&self) -> usize {
        lock(&self.registry.inner).open.len()
    }

    /// The connection parameters of a retrieve session to `ep` of a cursor
    /// declared in `database`.
    fn retrieve_config(&self, ep: &EndpointInfo, database: &str) -> Config {
        let host = self.host_map.get(&ep.host).unwrap_or(&ep.host);
        let mut c = Config::new();
        c.host(host)
            .port(ep.port)
            .user(&ep.user)
            .password(ep.token.as_bytes())
            .dbname(database)
            .options(format!("-c gp_retrieve_conn=true {PINNED_SETTINGS}"))
            .application_name("hopper-retrieve");
        if let Some(t) = self.config.get_connect_timeout() {
            c.connect_timeout(*t);
        }
        c
    }
}

#[async_trait::async_trait]
impl Reader for GreenplumSource {
    async fn describe(&self, caller: &Caller, sql: &str) -> Result<SchemaRef> {
        let client = self.coordinator_for(caller).await?;
        // Preparing also proves `sql` is a single statement, which `plan`
        // relies on before splicing it into DECLARE.
        let stmt = client
            .prepare(sql)
            .await
            .map_err(|e| Error::from_pg("preparing the query on the coordinator", e))?;
        Ok(Arc::new(arrow_schema(stmt.columns())?))
    }

    async fn plan(&self, caller: &Caller, sql: &str) -> Result<Plan> {
        let schema = self.describe(caller, sql).await?;
        // Refuse types without a text parser now, not at the first DoGet.
        BatchBuilder::new(schema.clone())?;

        let id = format!("{:032x}", rand::random::<u128>());
        let name = format!("hopper_{}", &id[..16]);
        // The cursor's session counts under --max-connections until it
        // closes. At the cap, the cursor idle longest (none of its
        // endpoints being read) makes room: a plan nobody reads from must
        // not hold up the ones people do.
        let permit = match self.connections.coordinator.try_acquire() {
            Some(p) => p,
            None => {
                if let Some((old, cursor)) = self.registry.evict_idle(caller.user()) {
                    tracing::info!(cursor = %old, "closing the longest-idle cursor to stay within --max-connections");
                    if let Err(e) = close(&cursor).await {
                        tracing::debug!(cursor = %old, error = %e, "closing an evicted cursor");
                    }
                }
                self.connections
                    .coordinator
                    .acquire("the Greenplum coordinator")
                    .await?
            }
        };
        // A dedicated session: the cursor lives in its transaction. If
        // anything below fails, dropping `session` ends the connection and
        // the server rolls the transaction back.
        let session = connect(
            &self.config_for(caller)?,
            &self.tls,
            "opening a coordinator session for the cursor",
        )
        .await?;
        let ctx = "declaring the parallel retrieve cursor";
        // Read-only: a cursor's query cannot write, whatever it calls.
        session
            .batch_execute("BEGIN READ ONLY")
            .await
            .map_err(|e| Error::from_pg(ctx, e))?;
        // `sql` was accepted by `prepare` above, so it is exactly one
        // statement; DECLARE itself only accepts SELECT/VALUES.
        session
            .batch_execute(&format!(
                "DECLARE {name} PARALLEL RETRIEVE CURSOR FOR {sql}"
            ))
            .await
            .map_err(|e| Error::from_pg(ctx, e))?;
        let endpoints = list_endpoints(&session, &name).await?;
        let database = first_value(
            &session
                .simple_query("SELECT current_database()")
                .await
                .map_err(|e| Error::from_pg(ctx, e))?,
        )
        .unwrap_or_default()
        .to_string();
        if endpoints.is_empty() {
            // A cursor that failed at once (on the coordinator's entry db)
            // lists no endpoint: its own error says why.
            if let Err(e) = session
                .simple_query(&format!(
                    "SELECT gp_wait_parallel_retrieve_cursor('{name}', 0)"
                ))
                .await
            {
                return Err(Error::from_pg(
                    "the parallel retrieve cursor failed on the coordinator",
                    e,
                ));
            }
            return Err(Error::Internal(format!(
                "gp_get_endpoints() lists no endpoint for cursor {name} in this session"
            )));
        }

        let partitions = endpoints
            .iter()
            .map(|(&segment, info)| {
                Ok(Partition {
                    segment,
                    spec: PartitionSpec::Greenplum {
                        cursor: format!("{id}/{segment}"),
                        retrieve: Retrieve::new(info, &database, &schema)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Endpoints read at another server are watched on the coordinator.
        let statuses: BTreeMap<i32, Endpoint> = endpoints
            .iter()
            .map(|(&seg, info)| {
                let status = if self.locator.is_elsewhere(seg, Some(&info.host)) {
                    Status::Remote
                } else {
                    Status::Ready
                };
                (seg, Endpoint { status })
            })
            .collect();
        let watch = statuses.values().any(|e| e.status == Status::Remote);
        let cursor = Arc::new(Cursor {
            name,
            owner: caller.user().map(str::to_owned),
            schema: schema.clone(),
            _permit: permit,
            session: Mutex::new(Some(Arc::new(session))),
            state: Mutex::new(CursorState {
                endpoints: statuses,
                last_activity: Instant::now(),
            }),
        });
        lock(&self.registry.inner)
            .open
            .insert(id.clone(), cursor.clone());
        if watch {
            tokio::spawn(watch_remote(Arc::downgrade(&self.registry), id, cursor));
        }
        Ok(Plan { schema, partitions })
    }

    // The endpoint's token is the credential of a retrieve session; the
    // ticket, sealed and bound to the user who declared the cursor, guards
    // it. A cursor this server declared is tracked here; one another server
    // declared (or this one before a restart) is read from the ticket alone.
    async fn read(
        &self,
        _caller: &Caller,
        partition: &Partition,
    ) -> Result<SendableRecordBatchStream> {
        let PartitionSpec::Greenplum {
            cursor: spec,
            retrieve: ticket,
        } = &partition.spec
        else {
            return Err(Error::BadTicket(
                "this server serves Greenplum cursors; the ticket is for another kind of source"
                    .into(),
            ));
        };
        let (id, segment) = spec
            .split_once('/')
            .and_then(|(id, seg)| Some((id, seg.parse::<i32>().ok()?)))
            .ok_or_else(|| Error::BadTicket(format!("malformed Greenplum endpoint {spec:?}")))?;
        if segment != partition.segment {
            return Err(Error::BadTicket(format!(
                "endpoint {spec:?} does not belong to segment {}",
                partition.segment
            )));
        }
        let tracked = {
            let reg = lock(&self.registry.inner);
            match reg.open.get(id) {
                Some(c) => Some(c.clone()),
                None if reg.closed.contains_key(id) => {
                    return Err(Error::BadTicket(format!(
                        "endpoint already read: cursor {id} was closed once all its endpoints \
                         were read; an endpoint can be read once, plan the query again"
                    )))
                }
                None => None,
            }
        };
        // The retrieve slot first: a DoGet cancelled while it waits in line
        // has claimed nothing, so its endpoint stays readable and its cursor
        // stays sweepable. From here to the spawned task nothing awaits.
        let permit = self
            .connections
            .segment(segment)
            .acquire(&format!("segment {segment}"))
            .await?;
        if let Some(cursor) = &tracked {
            let mut state = lock(&cursor.state);
            let ep = state.endpoints.get_mut(&segment).ok_or_else(|| {
                Error::BadTicket(format!("cursor {id} has no endpoint on segment {segment}"))
            })?;
            if !matches!(ep.status, Status::Ready | Status::Remote) {
                return Err(Error::BadTicket(format!(
                    "endpoint already read (segment {segment} of cursor {id} is {:?}); \
                     a Greenplum endpoint can be read once, plan the query again",
                    ep.status
                )));
            }
            ep.status = Status::Reading;
            state.last_activity = Instant::now();
        }
        let info = ticket.info();
        let schema = match &tracked {
            Some(c) => c.schema.clone(),
            None => decode_schema(&ticket.schema)?,
        };
        let config = self.retrieve_config(&info, &ticket.database);
        let tls = self.tls.clone();
        let limits = self.limits;
        let registry = self.registry.clone();
        let id = id.to_string();
        let batch_schema = schema.clone();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(async move {
            // Stop RETRIEVE as soon as the client goes away, even while
            // waiting for the segment: dropping the future closes the
            // retrieve connection.
            let outcome = tokio::select! {
                r = retrieve(&config, &tls, &info, batch_schema, limits, &tx) => r,
                () = tx.closed() => Ok(false),
            };
            drop(permit);
            let Some(cursor) = tracked else {
                // Another server holds the cursor and watches its endpoints;
                // an endpoint that is gone means its cursor was closed.
                if let Err(e) = outcome {
                    let _ = tx.send(Err(gone_endpoint(e))).await;
                }
                return;
            };
            let status = match outcome {
                Ok(true) => Status::Drained,
                Ok(false) => Status::Abandoned,
                Err(e) => {
                    // A cursor that failed on the coordinator takes its
                    // endpoints with it, and the retrieve only sees them
                    // gone: the cursor's own error says why.
                    let e = cursor_failure(&cursor).await.unwrap_or(e);
                    let _ = tx.send(Err(e)).await;
                    Status::Abandoned
                }
            };
            let finished = {
                let mut state = lock(&cursor.state);
                if let Some(ep) = state.endpoints.get_mut(&segment) {
                    ep.status = status;
                }
                state.last_activity = Instant::now();
                state.endpoints.values().all(|e| e.status.is_done())
            };
            // The last endpoint to finish closes the cursor. When every
            // endpoint was read to the end, its stream carries whatever error
            // the coordinator reports (the data may be incomplete); when some
            // reader gave up, the cursor's error is about that reader, not
            // this complete stream, and is only logged.
            if finished && registry.retire(&id).is_some() {
                let all_drained = lock(&cursor.state)
                    .endpoints
                    .values()
                    .all(|e| e.status == Status::Drained);
                if let Err(e) = close(&cursor).await {
                    if all_drained {
                        let _ = tx.send(Err(e)).await;
                    } else {
                        tracing::info!(cursor = %id, error = %e, "closed a cursor one of whose readers gave up");
                    }
                }
            }
        });
        Ok(RecordBatchStreamAdapter::boxed(
            schema,
            ReceiverStream::new(rx),
        ))
    }

    fn cursors_held(&self) -> usize {
        self.open_cursors()
    }

    fn connections_in_use(&self) -> Vec<(i32, usize)> {
        let mut out = vec![(-1, self.connections.coordinator.in_use())];
        let mut segments: Vec<(i32, usize)> = lock(&self.connections.segments)
            .iter()
            .map(|(s, l)| (*s, l.in_use()))
            .collect();
        segments.sort_unstable();
        out.extend(segments);
        out
    }
}

#[async_trait::async_trait]
impl Catalog for GreenplumSource {
    async fn prepare(&self, caller: &Caller, sql: &str) -> Result<Described> {
        let client = self.coordinator_for(caller).await?;
        pg_catalog::prepare(&client, sql, "preparing the query on the coordinator").await
    }

    async fn catalog(&self, caller: &Caller) -> Result<String> {
        let client = self.coordinator_for(caller).await?;
        pg_catalog::current_database(&client, "asking the coordinator").await
    }

    async fn primary_keys(
        &self,
        caller: &Caller,
        db_schema: Option<&str>,
        table: &str,
    ) -> Result<Vec<KeyColumn>> {
        let client = self.coordinator_for(caller).await?;
        pg_catalog::primary_keys(
            &client,
            db_schema,
            table,
            "looking up keys on the coordinator",
        )
        .await
    }

    async fn authenticate(&self, caller: &Caller) -> Result<RoleLogin> {
        let client = self.coordinator_for(caller).await?;
        check_greenplum(&client).await?;
        pg_catalog::role_login(&client, "the Greenplum coordinator").await
    }

    async fn admits_without_password(&self, user: &str) -> Result<bool> {
        let config = pg_catalog::without_password(&self.config, user);
        Ok(
            connect(&config, &self.tls, "probing a login without password")
                .await
                .is_ok(),
        )
    }

    async fn list_tables(&self, caller: &Caller) -> Result<Vec<TableInfo>> {
        let client = self.coordinator_for(caller).await?;
        let ctx = "listing tables on the coordinator";
        // reltuples on the coordinator is the whole table's estimate (-1 or
        // 0 before the first ANALYZE).
        let rows = client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::float8, \
                        a.attname::text, a.atttypid, a.atttypmod, current_database()::text, \
                        n.nspname::text, c.relname::text, c.relkind \
                 FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'gp_toolkit') \
                   AND n.nspname NOT LIKE 'pg\\_%' \
                   AND has_table_privilege(c.oid, 'SELECT') \
                 ORDER BY 1, a.attnum",
                &[],
            )
            .await
            .map_err(|e| Error::from_pg(ctx, e))?;
        let mut tables: Vec<(TableInfo, Vec<arrow_schema::Field>)> = Vec::new();
        for r in &rows {
            let name: String = r.try_get(0).map_err(|e| Error::from_pg(ctx, e))?;
            let reltuples: f64 = r.try_get(1).map_err(|e| Error::from_pg(ctx, e))?;
            let column: String = r.try_get(2).map_err(|e| Error::from_pg(ctx, e))?;
            let oid: u32 = r.try_get(3).map_err(|e| Error::from_pg(ctx, e))?;
            let typmod: i32 = r.try_get(4).map_err(|e| Error::from_pg(ctx, e))?;
            if tables.last().is_none_or(|t| t.0.name != name) {
                let estimate = (reltuples > 0.0).then_some(reltuples.round() as i64);
                let info = TableInfo {
                    name,
                    catalog: r.try_get(5).map_err(|e| Error::from_pg(ctx, e))?,
                    db_schema: r.try_get(6).map_err(|e| Error::from_pg(ctx, e))?,
                    table: r.try_get(7).map_err(|e| Error::from_pg(ctx, e))?,
                    kind: pg_catalog::table_kind(r.try_get(8).map_err(|e| Error::from_pg(ctx, e))?),
                    schema: Arc::new(arrow_schema::Schema::empty()),
                    rows: estimate,
                };
                tables.push((info, Vec::new()));
            }
            // Columns of types hopper cannot stream are left out.
            let field = Type::from_oid(oid).and_then(|t| arrow_field(&column, &t, typmod).ok());
            if let (Some(f), Some(t)) = (field, tables.last_mut()) {
                t.1.push(f);
            }
        }
        Ok(tables
            .into_iter()
            .map(|(info, fields)| TableInfo {
                schema: Arc::new(arrow_schema::Schema::new(fields)),
                ..info
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Writer for GreenplumSource {
    fn shared_tables(&self) -> bool {
        true
    }

    /// Through the coordinator (which distributes the rows), into a table
    /// created `DISTRIBUTED BY` the upload's first column — the key a
    /// writer like `mop predict` puts first. The command's segment means
    /// nothing here: every segment sees the one table.
    async fn put(
        &self,
        caller: &Caller,
        command: &flight_client::put::PutCommand,
        batches: SendableRecordBatchStream,
    ) -> Result<u64> {
        let first = batches
            .schema()
            .fields()
            .first()
            .map(|f| f.name().clone())
            .ok_or_else(|| Error::BadRequest("the upload has no columns".into()))?;
        let _permit = self
            .connections
            .coordinator
            .acquire("the Greenplum coordinator")
            .await?;
        let mut client = connect(
            &self.config_for(caller)?,
            &self.tls,
            "connecting to the Greenplum coordinator",
        )
        .await?;
        let on = format!("{} on the Greenplum coordinator", command.table);
        let distributed = format!(" DISTRIBUTED BY ({})", Ident::new(first)?);
        super::upload::copy_upload(&mut client, &on, command, batches, &distributed).await
    }
}

impl Registry {
    /// Removes an open cursor, remembering its id as closed; `None` if it
    /// was already gone (so exactly one caller closes each cursor).
    fn retire(&self, id: &str) -> Option<Arc<Cursor>> {
        let mut inner = lock(&self.inner);
        let cursor = inner.open.remove(id)?;
        inner.closed.insert(id.to_string(), Instant::now());
        Some(cursor)
    }

    /// Retires an idle cursor (no endpoint being read) to make room for one
    /// `requester` plans, marking its unread endpoints abandoned; `None` if
    /// every cursor is being read. The victim belongs to whoever holds the
    /// most cursors (the requester first among equals), idle longest among
    /// theirs: one user planning without reading evicts their own cursors,
    /// never everyone else's.
    fn evict_idle(&self, requester: Option<&str>) -> Option<(String, Arc<Cursor>)> {
        let mut inner = lock(&self.inner);
        let mut held: HashMap<Option<&str>, usize> = HashMap::new();
        for c in inner.open.values() {
            *held.entry(c.owner.as_deref()).or_default() += 1;
        }
        let id = inner
            .open
            .iter()
            .filter_map(|(id, c)| {
                let state = lock(&c.state);
                let reading = state
                    .endpoints
                    .values()
                    .any(|e| e.status == Status::Reading);
                let owner = c.owner.as_deref();
                let rank = (
                    std::cmp::Reverse(held.get(&owner).copied().unwrap_or(0)),
                    owner != requester,
                    state.last_activity,
                );
                (!reading).then(|| (rank, id.clone()))
            })
            .min()?
            .1;
        let cursor = inner.open.remove(&id)?;
        inner.closed.insert(id.clone(), Instant::now());
        for e in lock(&cursor.state).endpoints.values_mut() {
            if matches!(e.status, Status::Ready | Status::Remote) {
                e.status = Status::Abandoned;
            }
        }
        Some((id, cursor))
    }

    /// Retires every cursor that has been idle (no endpoint being read) for
    /// longer than the timeout; marks their unread endpoints abandoned so
    /// that a racing `read` is refused.
    fn expired(&self) -> Vec<(String, Arc<Cursor>)> {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        let timeout = self.timeout;
        // Remember closed ids for a while longer than tickets usually live.
        let memory = timeout.max(Duration::from_secs(3600));
        inner
            .closed
            .retain(|_, at| now.duration_since(*at) < memory);
        let ids: Vec<String> = inner
            .open
            .iter()
            .filter(|(_, c)| {
                let mut state = lock(&c.state);
                let idle = now.duration_since(state.last_activity) >= timeout;
                let reading = state
                    .endpoints
                    .values()
                    .any(|e| e.status == Status::Reading);
                if idle && !reading {
                    for e in state.endpoints.values_mut() {
                        if matches!(e.status, Status::Ready | Status::Remote) {
                            e.status = Status::Abandoned;
                        }
                    }
                    true
                } else {
                    false
                }
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let c = inner.open.remove(&id)?;
                inner.closed.insert(id.clone(), now);
                Some((id, c))
            })
            .collect()
    }
}

/// Background task: closes idle cursors until the source is dropped.
async fn sweep(registry: Weak<Registry>) {
    let period = match registry.upgrade() {
        Some(r) => (r.timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        for (id, cursor) in registry.expired() {
            tracing::info!(cursor = %id, "closing a parallel retrieve cursor left unread");
            if let Err(e) = close(&cursor).await {
                tracing::warn!(cursor = %id, error = %e, "closing an expired cursor failed");
            }
        }
    }
}

/// A retrieve of an endpoint this server did not plan that failed because
/// the endpoint is gone — the login with its token refused, or the
/// endpoint already used — is a refused ticket: planning again is the cure.
fn gone_endpoint(e: Error) -> Error {
    match e {
        Error::Unauthenticated(m) | Error::InvalidQuery(m) => Error::BadTicket(format!(
            "the endpoint is no longer there ({m}): its cursor was closed, or the endpoint \
             was read already (an endpoint can be read once); plan the query again"
        )),
        other => other,
    }
}

/// How often the planning server looks at endpoints read elsewhere.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// Watches a cursor some of whose endpoints other flight-servers read: asks
/// the coordinator for their states (`gp_get_endpoints()`: READY, ATTACHED,
/// RETRIEVING, FINISHED, RELEASED) until every endpoint is done, then
/// closes the cursor — no message from the other servers needed. A reader
/// that let go mid-way (RELEASED) abandons the cursor, as Greenplum does.
async fn watch_remote(registry: Weak<Registry>, id: String, cursor: Arc<Cursor>) {
    let mut tick = tokio::time::interval(WATCH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(reg) = registry.upgrade() else {
            return;
        };
        if !lock(&reg.inner).open.contains_key(&id) {
            return; // closed by a local read or the sweeper
        }
        let Some(session) = lock(&cursor.session).clone() else {
            return;
        };
        let states = session
            .simple_query(&format!(
                "SELECT gp_segment_id::text, state::text FROM gp_get_endpoints() \
                 WHERE cursorname::text = '{}' \
                   AND sessionid::text = current_setting('gp_session_id')",
                cursor.name
            ))
            .await;
        drop(session);
        let finished = match states {
            Ok(messages) => {
                let mut state = lock(&cursor.state);
                let mut active = false;
                for m in &messages {
                    let SimpleQueryMessage::Row(row) = m else {
                        continue;
                    };
                    let (Some(seg), Some(st)) = (row.get(0), row.get(1)) else {
                        continue;
                    };
                    let Some(ep) = seg
                        .parse::<i32>()
                        .ok()
                        .and_then(|s| state.endpoints.get_mut(&s))
                    else {
                        continue;
                    };
                    if ep.status == Status::Remote {
                        match st {
                            "FINISHED" => ep.status = Status::Drained,
                            "RELEASED" => ep.status = Status::Abandoned,
                            "ATTACHED" | "RETRIEVING" => active = true,
                            _ => {}
                        }
                    }
                }
                if active {
                    state.last_activity = Instant::now();
                }
                state.endpoints.values().all(|e| e.status.is_done())
            }
            Err(e) => {
                // The cursor's transaction failed (a reader let go, a segment
                // restarted): nothing more can be read from it.
                tracing::info!(cursor = %id, error = %e, "a watched cursor failed; closing it");
                true
            }
        };
        if finished {
            if reg.retire(&id).is_some() {
                if let Err(e) = close(&cursor).await {
                    tracing::info!(cursor = %id, error = %e, "closing a watched cursor");
                }
            }
            return;
        }
    }
}

/// Ends a cursor on its coordinator session: waits for Greenplum to report
/// the cursor finished (which surfaces any error a segment hit), then
/// `CLOSE` and `COMMIT`. The session is dropped either way.
/// The error the cursor failed with on the coordinator, if it failed
/// (looked up without waiting; the session is left for [`close`]).
async fn cursor_failure(cursor: &Cursor) -> Option<Error> {
    let session = lock(&cursor.session).clone()?;
    let name = &cursor.name;
    session
        .simple_query(&format!(
            "SELECT gp_wait_parallel_retrieve_cursor('{name}', 0)"
        ))
        .await
        .err()
        .map(|e| Error::from_pg("the parallel retrieve cursor failed on the coordinator", e))
}

async fn close(cursor: &Cursor) -> Result<()> {
    let Some(session) = lock(&cursor.session).take() else {
        return Ok(());
    };
    let name = &cursor.name;
    let drained = lock(&cursor.state)
        .endpoints
        .values()
        .all(|e| e.status == Status::Drained);
    // When every endpoint was read to the end the cursor is finished, so a
    // short wait only covers the segments reporting it; when some were
    // abandoned it never will be, so just look (timeout 0).
    let timeout = if drained { FINISH_WAIT_SECS } else { 0 };
    let wait = session
        .simple_query(&format!(
            "SELECT gp_wait_parallel_retrieve_cursor('{name}', {timeout})"
        ))
        .await;
    match wait {
        Err(e) => {
            // The transaction is aborted now, so CLOSE would fail; ROLLBACK
            // closes the cursor as well.
            let _ = session.batch_execute("ROLLBACK").await;
            Err(Error::from_pg(
                "the parallel retrieve cursor failed on the coordinator",
                e,
            ))
        }
        Ok(messages) => {
            let finished = first_value(&messages).is_some_and(|v| v == "t");
            if drained && !finished {
                tracing::warn!(cursor = %name, "every endpoint was drained but the cursor is not reported finished");
            }
            session
                .batch_execute(&format!("CLOSE {name}; COMMIT"))
                .await
                .map_err(|e| Error::from_pg("closing the parallel retrieve cursor", e))
        }
    }
}

/// Streams one endpoint into `tx`. `Ok(true)`: read to the end;
/// `Ok(false)`: the client went away first.
async fn retrieve(
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

/// Checks that `client` is connected to a Greenplum coordinator that
/// offers parallel retrieve cursors; a configuration error says what it is
/// instead.
async fn check_greenplum(client: &Client) -> Result<()> {
    let ctx = "checking the Greenplum coordinator";
    let row = client
        .query_one(
            "SELECT current_setting('gp_session_id', true), \
                    EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'gp_get_endpoints')",
            &[],
        )
        .await
        .map_err(|e| Error::from_pg(ctx, e))?;
    let session: Option<String> = row.try_get(0).map_err(|e| Error::from_pg(ctx, e))?;
    let has_endpoints: bool = row.try_get(1).map_err(|e| Error::from_pg(ctx, e))?;
    if session.is_none() {
        return Err(Error::Config(
            "the coordinator URL points at a server without gp_session_id: \
             not Greenplum (use --segment for plain PostgreSQL)"
                .into(),
        ));
    }
    if !has_endpoints {
        return Err(Error::Config(
            "this Greenplum has no gp_get_endpoints(): parallel retrieve cursors need \
             Greenplum 7 (or Apache Cloudberry)"
                .into(),
        ));
    }
    Ok(())
}

/// This session's endpoints of cursor `name`, by `gp_segment_id`.
async fn list_endpoints(session: &Client, name: &str) -> Result<BTreeMap<i32, EndpointInfo>> {
    let ctx = "listing the cursor's endpoints (gp_get_endpoints)";
    // Everything is cast to text: the simple protocol returns text anyway,
    // and this does not depend on the exact column types of the function.
    let messages = session
        .simple_query(&format!(
            "SELECT gp_segment_id::text, hostname::text, port::text, username::text, \
                    auth_token::text, endpointname::text \
             FROM gp_get_endpoints() \
             WHERE cursorname::text = '{name}' \
               AND sessionid::text = current_setting('gp_session_id')"
        ))
        .await
        .map_err(|e| Error::from_pg(ctx, e))?;
    let mut out = BTreeMap::new();
    for m in &messages {
        let SimpleQueryMessage::Row(row) = m else {
            continue;
        };
        let field = |i: usize, what: &str| -> Result<String> {
            row.get(i).map(str::to_string).ok_or_else(|| {
                Error::Internal(format!("gp_get_endpoints() returned a NULL {what}"))
            })
        };
        let segment: i32 = field(0, "gp_segment_id")?
            .parse()
            .map_err(|e| Error::Internal(format!("gp_get_endpoints() gp_segment_id: {e}")))?;
        let port: u16 = field(2, "port")?
            .parse()
            .map_err(|e| Error::Internal(format!("gp_get_endpoints() port: {e}")))?;
        let info = EndpointInfo {
            host: field(1, "hostname")?,
            port,
            user: field(3, "username")?,
            token: field(4, "auth_token")?,
            name: field(5, "endpointname")?,
        };
        if info.name.is_empty()
            || !info
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Error::Internal(format!(
                "unexpected endpoint name {:?} from gp_get_endpoints()",
                info.name
            )));
        }
        if out.insert(segment, info).is_some() {
            return Err(Error::Internal(format!(
                "cursor {name} has two endpoints on segment {segment}"
            )));
        }
    }
    Ok(out)
}

/// The first column of the first row of a simple query's result.
fn first_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0),
        _ => None,
    })
}

/// Opens a connection and drives it on a background task.
async fn connect(config: &Config, tls: &DbTls, context: &str) -> Result<Client> {
    let (client, connection) = tls
        .connect(config)
        .await
        .map_err(|e| Error::from_pg(context, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Greenplum connection ended");
        }
    });
    Ok(client)
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it
/// (every critical section here leaves the state consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::CopyDecoder;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use devcluster::{ClusterOptions, LocalCluster};

    /// Rows of `batches` as strings, sorted, for order-insensitive comparison.
    fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
        let mut out = Vec::new();
        for b in batches {
            let fmts: Vec<_> = b
                .columns()
                .iter()
                .map(|c| {
                    ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).expect("fmt")
                })
                .collect();
            for r in 0..b.num_rows() {
                out.push(
                    fmts.iter()
                        .map(|f| f.value(r).to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                );
            }
        }
        out.sort();
        out
    }

    /// `sql` read through `COPY … (FORMAT binary)` and the binary decoder —
    /// the reference the text route must agree with.
    async fn via_copy(client: &Client, sql: &str) -> Vec<RecordBatch> {
        let stmt = client.prepare(sql).await.expect("prepare");
        let schema = Arc::new(arrow_schema(stmt.columns()).expect("schema"));
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        let mut dec = CopyDecoder::new(schema, &types, BatchLimits::default()).expect("decoder");
        let stream = client
            .copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))
            .await
            .expect("copy");
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            dec.push(&chunk.expect("chunk")).expect("decode");
        }
        dec.finish().expect("finish");
        let mut out = Vec::new();
        while let Some(b) = dec.take_batch().expect("batch") {
            out.push(b);
        }
        out
    }

    /// Every type hopper maps, with NULLs and edge values.
    const ALL_TYPES: &str = "SELECT g::int2 AS i2, g * 100000 AS i4, g::int8 * 10000000000 AS i8, \
         (g / 3.0)::float4 AS f4, (g / 7.0)::float8 AS f8, g % 2 = 0 AS b, \
         CASE WHEN g % 5 = 0 THEN NULL ELSE 'row ' || g || ' \"q\" é' END AS t, \
         ('{\"g\": ' || g || '}')::jsonb AS j, \
         decode(lpad(to_hex(g * 4099), 8, '0'), 'hex') AS by, \
         (g * 1.25 - 40)::numeric(12,3) AS n, \
         date '2000-02-28' + g * 37 - 4000 AS d, \
         time '00:00:00' + g * interval '1234.567891 seconds' AS tm, \
         timestamp '1999-12-31 23:59:59.999999' + g * interval '17 hours 3 microseconds' AS ts, \
         timestamptz '2024-03-31 01:30:00+02' + g * interval '1 day 1 second' AS tz, \
         md5(g::text)::uuid AS u, \
         ARRAY[g, -g, NULL]::int4[] AS ai, \
         CASE WHEN g % 4 = 0 THEN NULL ELSE ARRAY[(g / 3.0)::float8, 'NaN'::float8, '-Infinity'::float8] END AS af \
         FROM generate_series(1, 200) g";

    #[tokio::test]
    async fn text_values_match_binary_copy_on_real_postgres() {
        let cluster = LocalCluster::start(1, ClusterOptions::default())
            .await
            .expect("cluster");
        let client = cluster.client(0).await.expect("client");
        let want = sorted_rows(&via_copy(&client, ALL_TYPES).await);

        let stmt = client.prepare(ALL_TYPES).await.expect("prepare");
        let schema = Arc::new(arrow_schema(stmt.columns()).expect("schema"));
        let mut builder = BatchBuilder::new(schema).expect("builder");
        for m in client.simple_query(ALL_TYPES).await.expect("query") {
            if let SimpleQueryMessage::Row(row) = m {
                builder
                    .push_row((0..row.len()).map(|i| row.get(i)))
                    .expect("parse");
            }
        }
        let got = sorted_rows(&[builder.finish().expect("batch")]);
        assert_eq!(got.len(), 200);
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn plain_postgres_is_not_taken_for_greenplum() {
        let cluster = LocalCluster::start(1, ClusterOptions::default())
            .await
            .expect("cluster");
        match GreenplumSource::new(&cluster.url(0), BatchLimits::default()).await {
            Err(Error::Config(m)) => assert!(m.contains("not Greenplum"), "{m}"),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    /// A source whose registry is real but which has no coordinator: its
    /// cursors point at a port nothing listens on.
    fn offline_source(timeout: Duration) -> GreenplumSource {
        let registry = Arc::new(Registry {
            timeout,
            inner: Mutex::new(RegistryInner::default()),
        });
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&registry)));
        GreenplumSource {
            config: Config::new(),
            tls: DbTls::new(super::super::db_tls::SslMode::Disable, None, "test").expect("tls"),
            limits: BatchLimits::default(),
            host_map: BTreeMap::new(),
            locator: Arc::new(Locator::default()),
            connections: Connections::new(2),
            coordinator: tokio::sync::Mutex::new(None),
            registry,
            sweeper,
        }
    }

    /// Registers a cursor with endpoints on `segments`, as `plan` would.
    fn add_cursor(source: &GreenplumSource, segments: &[i32]) -> Vec<Partition> {
        add_cursor_of(source, segments, None)
    }

    /// [`add_cursor`] declared by `owner`.
    fn add_cursor_of(
        source: &GreenplumSource,
        segments: &[i32],
        owner: Option<&str>,
    ) -> Vec<Partition> {
        // A port that was free a moment ago: connecting is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let id = format!("{:032x}", rand::random::<u128>());
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "x",
            arrow_schema::DataType::Int64,
            true,
        )]));
        let info = EndpointInfo {
            host: "127.0.0.1".into(),
            port,
            user: "hopper".into(),
            token: "token".into(),
            name: "prc_test".into(),
        };
        let retrieve = Retrieve::new(&info, "hopper", &schema).expect("retrieve");
        let endpoints = segments
            .iter()
            .map(|&seg| {
                (
                    seg,
                    Endpoint {
                        status: Status::Ready,
                    },
                )
            })
            .collect();
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("permit");
        let cursor = Arc::new(Cursor {
            name: "hopper_test".into(),
            owner: owner.map(str::to_owned),
            schema,
            _permit: permit,
            session: Mutex::new(None),
            state: Mutex::new(CursorState {
                endpoints,
                last_activity: Instant::now(),
            }),
        });
        lock(&source.registry.inner).open.insert(id.clone(), cursor);
        segments
            .iter()
            .map(|&segment| Partition {
                segment,
                spec: PartitionSpec::Greenplum {
                    cursor: format!("{id}/{segment}"),
                    retrieve: retrieve.clone(),
                },
            })
            .collect()
    }

    #[tokio::test]
    async fn eviction_takes_from_whoever_holds_the_most_cursors() {
        let source = offline_source(Duration::from_secs(60));
        for _ in 0..3 {
            add_cursor_of(&source, &[0], Some("mallory"));
        }
        add_cursor_of(&source, &[0], Some("alice"));
        let owner = |c: &Arc<Cursor>| c.owner.clone();
        // Alice, who holds one, plans: Mallory, who holds three, loses one.
        let (_, c) = source.registry.evict_idle(Some("alice")).unwrap();
        assert_eq!(owner(&c).as_deref(), Some("mallory"));
        // Two each: the requester's own goes first.
        add_cursor_of(&source, &[0], Some("alice"));
        let (_, c) = source.registry.evict_idle(Some("alice")).unwrap();
        assert_eq!(owner(&c).as_deref(), Some("alice"));
        let (_, c) = source.registry.evict_idle(Some("bob")).unwrap();
        assert_eq!(owner(&c).as_deref(), Some("mallory"));
    }

    fn bad_ticket(r: Result<SendableRecordBatchStream>) -> String {
        match r {
            Err(Error::BadTicket(m)) => m,
            Err(e) => panic!("expected BadTicket, got {e}"),
            Ok(_) => panic!("expected BadTicket, got a stream"),
        }
    }

    #[tokio::test]
    async fn an_endpoint_is_read_once_even_when_its_read_fails() {
        let source = offline_source(DEFAULT_CURSOR_TIMEOUT);
        let parts = add_cursor(&source, &[0, 1]);
        let mut s = source
            .read(&Caller::server(), &parts[0])
            .await
            .expect("first read starts");
        match s.next().await {
            Some(Err(Error::Unavailable(m))) => assert!(m.contains("127.0.0.1"), "{m}"),
            other => panic!("expected the refused connection, got {other:?}"),
        }
        assert!(s.next().await.is_none());
        assert!(bad_ticket(source.read(&Caller::server(), &parts[0]).await)
            .contains("endpoint already read"));
        assert_eq!(source.open_cursors(), 1, "segment 1 is still unread");

        let mut s = source
            .read(&Caller::server(), &parts[1])
            .await
            .expect("read starts");
        while s.next().await.is_some() {}
        assert_eq!(
            source.open_cursors(),
            0,
            "the last endpoint closes the cursor"
        );
        assert!(bad_ticket(source.read(&Caller::server(), &parts[1]).await)
            .contains("endpoint already read"));
    }

    #[tokio::test]
    async fn a_read_cancelled_while_waiting_for_a_retrieve_slot_claims_nothing() {
        let source = offline_source(Duration::from_millis(300));
        let parts = add_cursor(&source, &[0, 1]);
        // Every retrieve slot of segment 0 taken (offline_source caps at 2).
        let slots = source.connections.segment(0);
        let held = [slots.try_acquire().unwrap(), slots.try_acquire().unwrap()];
        // A DoGet that waits in line, and whose client gives up.
        let waiting = tokio::time::timeout(
            Duration::from_millis(100),
            source.read(&Caller::server(), &parts[0]),
        )
        .await;
        assert!(waiting.is_err(), "the read waits for a slot");
        drop(held);
        assert_eq!(slots.in_use(), 0, "the cancelled read holds no slot");
        // Its endpoint was never claimed, so the sweeper closes the idle
        // cursor (and with it, in a real cluster, its coordinator session).
        let deadline = Instant::now() + Duration::from_secs(30);
        while source.open_cursors() > 0 {
            assert!(Instant::now() < deadline, "the cursor was never swept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_sweeper_closes_cursors_left_unread() {
        let source = offline_source(Duration::from_millis(200));
        let parts = add_cursor(&source, &[0, 1, 2]);
        assert_eq!(source.open_cursors(), 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while source.open_cursors() > 0 {
            assert!(Instant::now() < deadline, "the cursor was never swept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(bad_ticket(source.read(&Caller::server(), &parts[2]).await)
            .contains("endpoint already read"));
    }

    #[tokio::test]
    async fn malformed_and_foreign_tickets_are_refused() {
        let source = offline_source(DEFAULT_CURSOR_TIMEOUT);
        let parts = add_cursor(&source, &[3]);
        let files = Partition {
            segment: 0,
            spec: PartitionSpec::Files {
                sql: "SELECT 1".into(),
                partition: 0,
            },
        };
        assert!(bad_ticket(source.read(&Caller::server(), &files).await)
            .contains("another kind of source"));
        let mut wrong_segment = parts[0].clone();
        wrong_segment.segment = 4;
        assert!(
            bad_ticket(source.read(&Caller::server(), &wrong_segment).await)
                .contains("does not belong")
        );
        let retrieve = match &parts[0].spec {
            PartitionSpec::Greenplum { retrieve, .. } => retrieve.clone(),
            _ => unreachable!(),
        };
        let garbage = Partition {
            segment: 3,
            spec: PartitionSpec::Greenplum {
                cursor: "no-slash".into(),
                retrieve,
            },
        };
        assert!(bad_ticket(source.read(&Caller::server(), &garbage).await).contains("malformed"));
        assert_eq!(source.open_cursors(), 1, "refused reads claim nothing");
    }

    #[tokio::test]
    async fn a_cursor_planned_elsewhere_is_read_from_the_ticket_alone() {
        // This server never saw cursor "feed": the ticket says where its
        // endpoint is, and the read goes there (here: a closed port).
        let source = offline_source(DEFAULT_CURSOR_TIMEOUT);
        let planner = offline_source(DEFAULT_CURSOR_TIMEOUT);
        let mut part = add_cursor(&planner, &[3]).remove(0);
        if let PartitionSpec::Greenplum { cursor, .. } = &mut part.spec {
            *cursor = "feed/3".into();
        }
        let mut s = source
            .read(&Caller::server(), &part)
            .await
            .expect("a read of another server's cursor starts");
        match s.next().await {
            Some(Err(Error::Unavailable(m))) => assert!(m.contains("127.0.0.1"), "{m}"),
            other => panic!("expected the segment's refused connection, got {other:?}"),
        }
        assert_eq!(source.open_cursors(), 0, "nothing is tracked for it here");
    }

    #[test]
    fn a_schema_travels_through_the_ticket_unchanged() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("n", arrow_schema::DataType::Decimal128(12, 3), true),
            arrow_schema::Field::new("t", arrow_schema::DataType::Utf8, false),
        ]));
        assert_eq!(
            decode_schema(&encode_schema(&schema).unwrap()).unwrap(),
            schema
        );
    }

    /// Against a live Greenplum: every endpoint read once, together, equals
    /// the query on the coordinator; a second read is refused; the cursor
    /// is closed afterwards.
    #[tokio::test]
    #[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
    async fn greenplum_endpoints_together_return_the_query_result() {
        let url = std::env::var("HOPPER_GREENPLUM_URL")
            .expect("HOPPER_GREENPLUM_URL: a Greenplum 7 coordinator's superuser URL");
        let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let table = format!("hopper_gp_test_{:016x}", rand::random::<u64>());
        admin
            .batch_execute(&format!(
                "CREATE TABLE {table} AS {ALL_TYPES} DISTRIBUTED RANDOMLY; \
                 INSERT INTO {table} SELECT * FROM {table}"
            ))
            .await
            .expect("create test table");
        let sql = format!("SELECT * FROM {table}");

        let limits = BatchLimits {
            rows: 37,
            bytes: 1 << 20,
        };
        let source = GreenplumSource::new(&url, limits).await.expect("source");
        let plan = source.plan(&Caller::server(), &sql).await.expect("plan");
        assert!(!plan.partitions.is_empty());
        assert_eq!(source.open_cursors(), 1);
        let mut got = Vec::new();
        for p in &plan.partitions {
            let mut s = source.read(&Caller::server(), p).await.expect("read");
            while let Some(b) = s.next().await {
                let b = b.expect("batch");
                assert!(b.num_rows() <= 37);
                assert_eq!(b.schema().fields(), plan.schema.fields());
                got.push(b);
            }
        }
        assert_eq!(source.open_cursors(), 0, "the last read closes the cursor");
        match source.read(&Caller::server(), &plan.partitions[0]).await {
            Err(Error::BadTicket(m)) => assert!(m.contains("already read"), "{m}"),
            Err(e) => panic!("expected BadTicket, got {e}"),
            Ok(_) => panic!("a second read of an endpoint must be refused"),
        }
        let want = via_copy(&admin, &sql).await;
        admin
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .expect("drop test table");
        let got = sorted_rows(&got);
        assert_eq!(got.len(), 400);
        assert_eq!(got, sorted_rows(&want));
    }
}
