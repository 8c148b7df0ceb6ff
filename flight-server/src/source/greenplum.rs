//! Greenplum parallel retrieve cursors.
//!
//! # Design
//!
//! ```text
//!  plan(sql)   coordinator session (kept open, in a transaction):
//!                BEGIN; DECLARE hopper_… PARALLEL RETRIEVE CURSOR FOR <sql>;
//!                SELECT … FROM gp_get_endpoints() WHERE <this cursor, this session>
//!              → one Partition per endpoint, ticket = "<cursor id>/<gp_segment_id>"
//!  read(p)     retrieve session to the endpoint's hostname:port
//!                (user = username, password = auth_token, options -c gp_retrieve_conn=true)
//!                RETRIEVE <rows> FROM ENDPOINT <endpointname>   … until 0 rows
//!              → text values parsed into the planned Arrow schema (module `text`)
//!  last read   gp_wait_parallel_retrieve_cursor(…); CLOSE; COMMIT on the coordinator session
//! ```
//!
//! Facts this module relies on (Greenplum 7.0; see DESIGN.md):
//! - The cursor lives in the declaring session's transaction, so that
//!   session is held in a server-side registry until every endpoint has been
//!   read, abandoned, or left unclaimed for the cursor timeout.
//! - All endpoints of one cursor carry the same `endpointname`; they differ
//!   by `gp_segment_id`, token and `hostname:port`, so endpoints are keyed by
//!   segment. A superuser's `gp_get_endpoints()` lists every session's
//!   endpoints: filter on cursor name *and* `gp_session_id`.
//! - A retrieve session accepts only `RETRIEVE` — no catalog or type
//!   look-ups — so the schema is fixed on the coordinator (by preparing the
//!   query) and values are read in text form with the simple query protocol.
//! - An endpoint can be read once; there is no rescan.
//!
//! Connections are made without TLS.

mod text;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    BatchLimits, BatchStream, Partition, PartitionSpec, Plan, Source, TableInfo, CHANNEL_DEPTH,
};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::types::{arrow_field, arrow_schema};
use text::BatchBuilder;

/// How long a cursor may sit with no endpoint being read before the
/// sweeper closes it and releases its coordinator session.
pub const DEFAULT_CURSOR_TIMEOUT: Duration = Duration::from_secs(600);

/// How long, once every endpoint has been drained, the coordinator is given
/// to report the cursor finished (it normally answers at once).
const FINISH_WAIT_SECS: u32 = 10;

/// A Greenplum coordinator; query partitions are the segments' endpoints of
/// a parallel retrieve cursor.
pub struct GreenplumSource {
    config: Config,
    /// The coordinator's database: retrieve sessions must name the same one.
    database: String,
    limits: BatchLimits,
    /// Shared connection for `describe` and `list_tables` (reconnected when closed).
    coordinator: tokio::sync::Mutex<Option<Arc<Client>>>,
    registry: Arc<Registry>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GreenplumSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreenplumSource")
            .field("database", &self.database)
            .field("limits", &self.limits)
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

/// One declared parallel retrieve cursor and the session that holds it.
struct Cursor {
    /// The SQL name of the cursor (`hopper_<hex>`), safe to splice into SQL.
    name: String,
    schema: SchemaRef,
    /// The coordinator session in whose transaction the cursor lives; taken
    /// (once) when the cursor is finished.
    session: Mutex<Option<Client>>,
    state: Mutex<CursorState>,
}

struct CursorState {
    endpoints: BTreeMap<i32, Endpoint>,
    /// When an endpoint last started or stopped being read (or the cursor was declared).
    last_activity: Instant,
}

struct Endpoint {
    info: EndpointInfo,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Not claimed yet.
    Ready,
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
    /// key=value string) and checks that it offers parallel retrieve cursors.
    pub async fn new(coordinator_url: &str, limits: BatchLimits) -> Result<Self> {
        Self::with_cursor_timeout(coordinator_url, limits, DEFAULT_CURSOR_TIMEOUT).await
    }

    /// Like [`new`](Self::new), closing cursors left unread for `timeout`.
    pub async fn with_cursor_timeout(
        coordinator_url: &str,
        limits: BatchLimits,
        timeout: Duration,
    ) -> Result<Self> {
        if limits.rows == 0 || limits.bytes == 0 {
            return Err(Error::Config(format!(
                "batch limits must be positive, got {} rows / {} bytes",
                limits.rows, limits.bytes
            )));
        }
        let config: Config = coordinator_url
            .parse()
            .map_err(|e| Error::Config(format!("bad Greenplum coordinator URL: {e}")))?;
        let client = connect(&config, "connecting to the Greenplum coordinator").await?;
        let ctx = "checking the Greenplum coordinator";
        let row = client
            .query_one(
                "SELECT current_database()::text, \
                        current_setting('gp_session_id', true), \
                        EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'gp_get_endpoints')",
                &[],
            )
            .await
            .map_err(|e| Error::from_pg(ctx, e))?;
        let database: String = row.try_get(0).map_err(|e| Error::from_pg(ctx, e))?;
        let session: Option<String> = row.try_get(1).map_err(|e| Error::from_pg(ctx, e))?;
        let has_endpoints: bool = row.try_get(2).map_err(|e| Error::from_pg(ctx, e))?;
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
                 Greenplum 7, or CREATE EXTENSION gp_parallel_retrieve_cursor on Greenplum 6"
                    .into(),
            ));
        }

        let registry = Arc::new(Registry {
            timeout,
            inner: Mutex::new(RegistryInner::default()),
        });
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&registry)));
        Ok(Self {
            config,
            database,
            limits,
            coordinator: tokio::sync::Mutex::new(Some(Arc::new(client))),
            registry,
            sweeper,
        })
    }

    /// A coordinator connection for `caller`: a fresh session as the
    /// caller's user (its GRANTs apply), or the shared server connection.
    async fn coordinator_for(&self, caller: &Caller) -> Result<Arc<Client>> {
        match caller.credentials() {
            Some(_) => Ok(Arc::new(
                connect(
                    &self.config_for(caller),
                    "connecting to the Greenplum coordinator",
                )
                .await?,
            )),
            None => self.coordinator().await,
        }
    }

    /// The coordinator's connection parameters with `caller`'s login.
    fn config_for(&self, caller: &Caller) -> Config {
        let mut config = self.config.clone();
        if let Some(login) = caller.credentials() {
            config.user(&login.user).password(login.password.as_bytes());
        }
        config
    }

    /// The shared coordinator connection, reconnecting if it was lost.
    async fn coordinator(&self) -> Result<Arc<Client>> {
        let mut guard = self.coordinator.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(connect(&self.config, "connecting to the Greenplum coordinator").await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    /// How many cursors are open (declared and not yet closed).
    pub fn open_cursors(&self) -> usize {
        lock(&self.registry.inner).open.len()
    }

    /// The connection parameters of a retrieve session to `ep`.
    fn retrieve_config(&self, ep: &EndpointInfo) -> Config {
        let mut c = Config::new();
        c.host(&ep.host)
            .port(ep.port)
            .user(&ep.user)
            .password(ep.token.as_bytes())
            .dbname(&self.database)
            .options("-c gp_retrieve_conn=true")
            .application_name("hopper-retrieve");
        if let Some(t) = self.config.get_connect_timeout() {
            c.connect_timeout(*t);
        }
        c
    }
}

#[async_trait::async_trait]
impl Source for GreenplumSource {
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
        // A dedicated session: the cursor lives in its transaction. If
        // anything below fails, dropping `session` ends the connection and
        // the server rolls the transaction back.
        let session = connect(
            &self.config_for(caller),
            "opening a coordinator session for the cursor",
        )
        .await?;
        let ctx = "declaring the parallel retrieve cursor";
        session
            .batch_execute("BEGIN")
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
        if endpoints.is_empty() {
            return Err(Error::Internal(format!(
                "gp_get_endpoints() lists no endpoint for cursor {name} in this session"
            )));
        }

        let partitions = endpoints
            .keys()
            .map(|&segment| Partition {
                segment,
                spec: PartitionSpec::Greenplum {
                    cursor: format!("{id}/{segment}"),
                },
            })
            .collect();
        let cursor = Arc::new(Cursor {
            name,
            schema: schema.clone(),
            session: Mutex::new(Some(session)),
            state: Mutex::new(CursorState {
                endpoints: endpoints
                    .into_iter()
                    .map(|(seg, info)| {
                        (
                            seg,
                            Endpoint {
                                info,
                                status: Status::Ready,
                            },
                        )
                    })
                    .collect(),
                last_activity: Instant::now(),
            }),
        });
        lock(&self.registry.inner).open.insert(id, cursor);
        Ok(Plan { schema, partitions })
    }

    // The endpoint's token is the credential of a retrieve session; the
    // ticket, bound to the user who declared the cursor, guards it.
    async fn read(&self, _caller: &Caller, partition: &Partition) -> Result<BatchStream> {
        let PartitionSpec::Greenplum { cursor: spec } = &partition.spec else {
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
        let cursor = {
            let reg = lock(&self.registry.inner);
            match reg.open.get(id) {
                Some(c) => c.clone(),
                None if reg.closed.contains_key(id) => {
                    return Err(Error::BadTicket(format!(
                        "endpoint already read: cursor {id} was closed once all its endpoints \
                         were read; an endpoint can be read once, plan the query again"
                    )))
                }
                None => {
                    return Err(Error::BadTicket(format!(
                        "no open cursor {id} on this server (it expired after {:?} unread, or \
                         the server restarted); plan the query again",
                        self.registry.timeout
                    )))
                }
            }
        };
        let info = {
            let mut state = lock(&cursor.state);
            let ep = state.endpoints.get_mut(&segment).ok_or_else(|| {
                Error::BadTicket(format!("cursor {id} has no endpoint on segment {segment}"))
            })?;
            if ep.status != Status::Ready {
                return Err(Error::BadTicket(format!(
                    "endpoint already read (segment {segment} of cursor {id} is {:?}); \
                     a Greenplum endpoint can be read once, plan the query again",
                    ep.status
                )));
            }
            ep.status = Status::Reading;
            let info = ep.info.clone();
            state.last_activity = Instant::now();
            info
        };

        let config = self.retrieve_config(&info);
        let limits = self.limits;
        let registry = self.registry.clone();
        let id = id.to_string();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(async move {
            let schema = cursor.schema.clone();
            // Stop RETRIEVE as soon as the client goes away, even while
            // waiting for the segment: dropping the future closes the
            // retrieve connection.
            let outcome = tokio::select! {
                r = retrieve(&config, &info, schema, limits, &tx) => r,
                () = tx.closed() => Ok(false),
            };
            let status = match outcome {
                Ok(true) => Status::Drained,
                Ok(false) => Status::Abandoned,
                Err(e) => {
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
            // The last endpoint to finish closes the cursor, and its stream
            // carries whatever error the coordinator reports.
            if finished && registry.retire(&id).is_some() {
                if let Err(e) = close(&cursor).await {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn authenticate(&self, caller: &Caller) -> Result<()> {
        self.coordinator_for(caller).await.map(drop)
    }

    async fn list_tables(&self, caller: &Caller) -> Result<Vec<TableInfo>> {
        let client = self.coordinator_for(caller).await?;
        let ctx = "listing tables on the coordinator";
        // reltuples on the coordinator is the whole table's estimate (-1 or
        // 0 before the first ANALYZE).
        let rows = client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::float8, \
                        a.attname::text, a.atttypid, a.atttypmod \
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
        let mut tables: Vec<(String, Option<i64>, Vec<arrow_schema::Field>)> = Vec::new();
        for r in &rows {
            let name: String = r.try_get(0).map_err(|e| Error::from_pg(ctx, e))?;
            let reltuples: f64 = r.try_get(1).map_err(|e| Error::from_pg(ctx, e))?;
            let column: String = r.try_get(2).map_err(|e| Error::from_pg(ctx, e))?;
            let oid: u32 = r.try_get(3).map_err(|e| Error::from_pg(ctx, e))?;
            let typmod: i32 = r.try_get(4).map_err(|e| Error::from_pg(ctx, e))?;
            if tables.last().is_none_or(|t| t.0 != name) {
                let estimate = (reltuples > 0.0).then_some(reltuples.round() as i64);
                tables.push((name, estimate, Vec::new()));
            }
            // Columns of types hopper cannot stream are left out.
            let field = Type::from_oid(oid).and_then(|t| arrow_field(&column, &t, typmod).ok());
            if let (Some(f), Some(t)) = (field, tables.last_mut()) {
                t.2.push(f);
            }
        }
        Ok(tables
            .into_iter()
            .map(|(name, rows, fields)| TableInfo {
                name,
                schema: Arc::new(arrow_schema::Schema::new(fields)),
                rows,
            })
            .collect())
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
                        if e.status == Status::Ready {
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

/// Ends a cursor on its coordinator session: waits for Greenplum to report
/// the cursor finished (which surfaces any error a segment hit), then
/// `CLOSE` and `COMMIT`. The session is dropped either way.
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
    ep: &EndpointInfo,
    schema: SchemaRef,
    limits: BatchLimits,
    tx: &mpsc::Sender<Result<RecordBatch>>,
) -> Result<bool> {
    let where_ = format!("segment endpoint {}:{}", ep.host, ep.port);
    let client = connect(config, &format!("connecting to {where_}")).await?;
    let mut builder = BatchBuilder::new(schema)?;
    let mut sent_any = false;
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
                if builder.rows() >= limits.rows || builder.text_bytes() >= limits.bytes {
                    if tx.send(Ok(builder.finish()?)).await.is_err() {
                        return Ok(false);
                    }
                    sent_any = true;
                }
            }
        }
        if got == 0 {
            break;
        }
    }
    // An empty endpoint still sends one (empty) batch: it carries the schema.
    if (builder.rows() > 0 || !sent_any) && tx.send(Ok(builder.finish()?)).await.is_err() {
        return Ok(false);
    }
    Ok(true)
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
async fn connect(config: &Config, context: &str) -> Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
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
    use crate::cluster::{postgres_available, ClusterOptions, LocalCluster};
    use crate::types::CopyDecoder;
    use arrow::util::display::{ArrayFormatter, FormatOptions};

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
        if !postgres_available() {
            println!("skipped: PostgreSQL binaries not found");
            return;
        }
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
        if !postgres_available() {
            println!("skipped: PostgreSQL binaries not found");
            return;
        }
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
            database: "hopper".into(),
            limits: BatchLimits::default(),
            coordinator: tokio::sync::Mutex::new(None),
            registry,
            sweeper,
        }
    }

    /// Registers a cursor with endpoints on `segments`, as `plan` would.
    fn add_cursor(source: &GreenplumSource, segments: &[i32]) -> Vec<Partition> {
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
        let endpoints = segments
            .iter()
            .map(|&seg| {
                let info = EndpointInfo {
                    host: "127.0.0.1".into(),
                    port,
                    user: "hopper".into(),
                    token: "token".into(),
                    name: "prc_test".into(),
                };
                (
                    seg,
                    Endpoint {
                        info,
                        status: Status::Ready,
                    },
                )
            })
            .collect();
        let cursor = Arc::new(Cursor {
            name: "hopper_test".into(),
            schema,
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
                },
            })
            .collect()
    }

    fn bad_ticket(r: Result<BatchStream>) -> String {
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
        let unknown = Partition {
            segment: 3,
            spec: PartitionSpec::Greenplum {
                cursor: "feed/3".into(),
            },
        };
        assert!(
            bad_ticket(source.read(&Caller::server(), &unknown).await).contains("no open cursor")
        );
        let garbage = Partition {
            segment: 3,
            spec: PartitionSpec::Greenplum {
                cursor: "no-slash".into(),
            },
        };
        assert!(bad_ticket(source.read(&Caller::server(), &garbage).await).contains("malformed"));
        assert_eq!(source.open_cursors(), 1, "refused reads claim nothing");
    }

    /// Against a live Greenplum: every endpoint read once, together, equals
    /// the query on the coordinator; a second read is refused; the cursor
    /// is closed afterwards.
    #[tokio::test]
    async fn endpoints_together_return_the_query_result() {
        let Ok(url) = std::env::var("HOPPER_GREENPLUM_URL") else {
            println!("skipped: HOPPER_GREENPLUM_URL not set");
            return;
        };
        let (admin, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
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
