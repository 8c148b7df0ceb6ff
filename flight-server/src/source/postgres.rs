//! PostgreSQL segments read with binary `COPY`.
//!
//! Each segment is a plain PostgreSQL instance holding one shard of the
//! data (the same tables on every instance). A query becomes one partition
//! per segment — or, with `split = K`, up to K partitions per segment, each a
//! range of the table's physical pages (`ctid`), because one backend
//! producing binary COPY is CPU-bound and two backends over disjoint page
//! ranges nearly double the export rate (PostgreSQL 14+ plans them as TID
//! Range Scans, so no range reads another's pages).
//!
//! A partition is read with `COPY (<sql>) TO STDOUT (FORMAT binary)`, the
//! database's own fastest export path, decoded chunk by chunk into Arrow
//! batches by [`CopyDecoder`] in a task that feeds a bounded channel. If
//! the reader goes away the task cancels the query and closes its
//! connection at once, so an abandoned `DoGet` does not keep a backend busy.
//!
//! Connections are opened per request with `application_name =
//! hopper-flight-server` (visible in `pg_stat_activity`) and
//! `default_transaction_read_only = on`: the SQL comes from clients, and
//! `COPY (…)` would otherwise also run `INSERT … RETURNING` and friends.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use futures::future::try_join_all;
use futures::FutureExt;
use futures::StreamExt;
use sqlparser::ast::{
    visit_expressions, Expr, GroupByExpr, SetExpr, Spanned, Statement, TableFactor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;
use tokio::sync::mpsc;
use tokio_postgres::config::Host;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config};
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
use crate::types::{arrow_field, arrow_schema, CopyDecoder};
use pg_arrow::{TextCopyDecoder, TEXT_SETTINGS};

mod copy_format;
mod put;

pub use copy_format::CopyFormat;

/// How long a connection's slot stays taken after its socket closed, for
/// the backend to exit (see [`super::limit`]).
const BACKEND_EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// `application_name` of every connection hopper opens.
pub const APPLICATION_NAME: &str = "hopper-flight-server";

/// One PostgreSQL instance playing a segment.
#[derive(Clone)]
struct Segment {
    config: Config,
    /// How connections to it use TLS (the URL's `sslmode`, `sslrootcert`).
    tls: DbTls,
    /// The segment's address without the password, for messages and logs.
    display: String,
    /// Its position in the server's segment list, for messages.
    index: usize,
    /// The connections this server may hold on it at once.
    limit: ConnectionLimit,
}

impl Segment {
    /// Connects as `caller`'s user when there is one (the database checks
    /// the password and its GRANTs decide what the session may read), else
    /// with the segment's configured connection string; within
    /// `--max-connections`.
    async fn connect(&self, caller: &Caller) -> Result<Client> {
        self.open(caller, true).await
    }

    /// A Handshake's login as `caller`: apart from the data connections'
    /// cap, so that logins never wait behind reads (the login pool of
    /// [`crate::login`] bounds them instead).
    async fn login(&self, caller: &Caller) -> Result<Client> {
        self.open(caller, false).await
    }

    async fn open(&self, caller: &Caller, capped: bool) -> Result<Client> {
        let config = match caller.login_here()? {
            Some(login) => {
                let mut config = self.config.clone();
                config.user(&login.user).password(login.password.as_bytes());
                std::borrow::Cow::Owned(config)
            }
            None => std::borrow::Cow::Borrowed(&self.config),
        };
        // Over the cap, wait in line; the permit then lives in the task
        // that drives the connection, so it is returned when the socket closes.
        let permit = match capped {
            true => Some(self.limit.acquire(&self.display).await?),
            false => None,
        };
        let (client, connection) = self.tls.connect(&config).await.map_err(|e| {
            let context = format!("connecting to {}", self.display);
            match std::error::Error::source(&e) {
                // I/O failures: say why ("Connection refused"), which the
                // error's own message leaves out.
                _ if Error::configuration(&context, &e).is_some() => Error::from_pg(&context, e),
                Some(cause) if e.as_db_error().is_none() => Error::Unavailable(format!(
                    "segment {} at {} is unreachable: {e}: {cause}; \
                     the request can be retried once the segment is back",
                    self.index, self.display
                )),
                _ => Error::from_pg(&context, e),
            }
        })?;
        let name = self.display.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(segment = %name, error = %e, "connection closed with an error");
            }
            // The backend exits a moment after our side closed; a new
            // connection in that moment would briefly exceed the cap.
            tokio::time::sleep(BACKEND_EXIT_GRACE).await;
            drop(permit);
        });
        Ok(client)
    }

    /// Whether a login with `config` succeeds (the connection is closed at
    /// once); any failure, including a server asking for a password the
    /// config lacks, is `false`.
    async fn probe(&self, config: &Config) -> bool {
        self.tls.connect(config).await.is_ok()
    }
}

/// A [`Source`] over one or more PostgreSQL instances, each a segment.
pub struct PostgresSource {
    segments: Vec<Segment>,
    split: usize,
    limits: BatchLimits,
    copy_format: CopyFormat,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field(
                "segments",
                &self.segments.iter().map(|s| &s.display).collect::<Vec<_>>(),
            )
            .field("split", &self.split)
            .field("limits", &self.limits)
            .field("copy_format", &self.copy_format)
            .finish()
    }
}

impl PostgresSource {
    /// A source over `segments` (libpq `key=value` strings or
    /// `postgresql://` URLs), splitting each table scan into up to `split`
    /// ctid ranges per segment, whose callers run as the URLs' own user
    /// (`--auth none`). Logs in to every segment with the URL: fails with
    /// [`Error::Unavailable`] naming the first segment that cannot be
    /// reached, or [`Error::Config`] when a URL cannot log in (no password).
    pub async fn new(segments: Vec<String>, split: usize, limits: BatchLimits) -> Result<Self> {
        let source = Self::for_callers(segments, split, limits).await?;
        try_join_all(source.segments.iter().enumerate().map(|(i, s)| async move {
            s.connect(&Caller::server()).await.map(drop).map_err(|e| {
                // The message already names the segment's address.
                let why = match e {
                    Error::Config(m) => return Error::Config(m),
                    Error::Unavailable(m) if m.starts_with("segment ") => {
                        return Error::Unavailable(m)
                    }
                    Error::Unavailable(m) | Error::Unauthenticated(m) => m,
                    other => other.to_string(),
                };
                Error::Unavailable(format!("segment {i} is unreachable: {why}"))
            })
        }))
        .await?;
        Ok(source)
    }

    /// A source whose callers log in as themselves (`--auth database`):
    /// the URLs name host, port and database and need no password, and
    /// the server never connects but as a caller. Checks only what it can
    /// without a login: that every URL parses and its host resolves.
    pub async fn for_callers(
        segments: Vec<String>,
        split: usize,
        limits: BatchLimits,
    ) -> Result<Self> {
        if segments.is_empty() {
            return Err(Error::Config("no PostgreSQL segment given".into()));
        }
        let segments = segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let DbUrl { mut config, tls } =
                    DbUrl::parse(s, &format!("segment {i} (--segment)"))?;
                config.application_name(APPLICATION_NAME);
                let read_only =
                    "-c default_transaction_read_only=on -c standard_conforming_strings=on";
                let options = match config.get_options() {
                    Some(o) if !o.is_empty() => format!("{o} {read_only}"),
                    _ => read_only.to_owned(),
                };
                config.options(&options);
                let display = redacted(&config);
                Ok(Segment {
                    config,
                    tls,
                    display,
                    index: i,
                    limit: ConnectionLimit::default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for s in &segments {
            crate::source::resolve_hosts(&s.config, &format!("--segment {}", s.display)).await?;
        }
        Ok(Self {
            segments,
            split: split.max(1),
            limits,
            copy_format: CopyFormat::default(),
        })
    }

    /// Chooses how segments export rows (see [`CopyFormat`]; the default
    /// is [`CopyFormat::Binary`]).
    pub fn with_copy_format(mut self, format: CopyFormat) -> Self {
        self.copy_format = format;
        self
    }

    /// Caps the connections held on each segment at `max` (at least one);
    /// requests beyond it wait in line. The default is
    /// [`DEFAULT_MAX_CONNECTIONS`](super::limit::DEFAULT_MAX_CONNECTIONS).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        for s in &mut self.segments {
            s.limit = ConnectionLimit::new(max);
        }
        self
    }

    /// The segments' addresses, without passwords.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.display.clone()).collect()
    }

    fn segment(&self, i: i32) -> Result<&Segment> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.segments.get(i))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "segment {i}: this server has {} segments",
                    self.segments.len()
                ))
            })
    }

    /// The result schema and column types of `sql` on segment `i`.
    async fn describe_on(
        &self,
        caller: &Caller,
        i: usize,
        sql: &str,
    ) -> Result<(SchemaRef, Vec<Type>)> {
        let seg = &self.segments[i];
        let client = seg.connect(caller).await?;
        let described = describe_with(&client, sql, i, &seg.display).await?;
        // PostgreSQL checks privileges when a plan starts, not when it is
        // prepared. EXPLAIN starts one without running it, so a missing
        // SELECT right is refused here, at GetFlightInfo, rather than in
        // the middle of a training run's first DoGet.
        client
            .simple_query(&format!("EXPLAIN {sql}"))
            .await
            .map_err(|e| Error::from_pg(&format!("segment {i} ({})", seg.display), e))?;
        Ok(described)
    }

    /// The partitions of `sql` on segment `seg`: ctid ranges of its one
    /// table when the query allows it, else the whole query. `None` means
    /// "do not split" (the reason is logged).
    async fn split_on(
        &self,
        caller: &Caller,
        seg: usize,
        sql: &str,
        target: &SplitTarget,
        schema: &SchemaRef,
    ) -> Result<Option<Vec<String>>> {
        let segment = &self.segments[seg];
        let client = segment.connect(caller).await?;
        let row = client
            .query_opt(
                "SELECT c.relkind::text, \
                 (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8 \
                 FROM pg_class c WHERE c.oid = to_regclass($1)",
                &[&target.table],
            )
            .await
            .map_err(|e| {
                Error::from_pg(
                    &format!("sizing {} on {}", target.table, segment.display),
                    e,
                )
            })?;
        let Some(row) = row else {
            tracing::info!(table = %target.table, segment = %segment.display, "not split: table not found");
            return Ok(None);
        };
        let relkind: String = row.get(0);
        let pages: i64 = row.get(1);
        if relkind != "r" && relkind != "m" {
            tracing::info!(table = %target.table, %relkind, "not split: not a plain table (ctid ranges need one heap)");
            return Ok(None);
        }
        let ranges = ctid_ranges(pages, self.split);
        if ranges.len() <= 1 {
            return Ok(Some(vec![sql.to_owned()]));
        }
        let sqls: Vec<String> = ranges.iter().map(|r| target.rewrite(sql, *r)).collect();
        // The rewrite keeps the user's text around the table reference;
        // check that PostgreSQL reads it as the same query shape.
        match describe_with(&client, &sqls[0], seg, &segment.display).await {
            Ok((s, _)) if s.fields() == schema.fields() => Ok(Some(sqls)),
            Ok(_) => {
                tracing::info!(
                    sql,
                    "not split: the ctid-range rewrite changes the result schema"
                );
                Ok(None)
            }
            Err(e) => {
                tracing::info!(sql, error = %e, "not split: the ctid-range rewrite is rejected");
                Ok(None)
            }
        }
    }

    /// Whether any of `names` is an aggregate or window function on segment
    /// 0 (splitting would then return one aggregate per range).
    async fn any_aggregate(&self, caller: &Caller, names: &[String]) -> Result<bool> {
        if names.is_empty() {
            return Ok(false);
        }
        let seg = &self.segments[0];
        let client = seg.connect(caller).await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = ANY($1) AND prokind IN ('a', 'w'))",
                &[&names],
            )
            .await
            .map_err(|e| Error::from_pg(&format!("looking up functions on {}", seg.display), e))?;
        Ok(row.get(0))
    }
}

/// Prepares `sql` on `client` and maps its result columns.
async fn describe_with(
    client: &Client,
    sql: &str,
    i: usize,
    display: &str,
) -> Result<(SchemaRef, Vec<Type>)> {
    let stmt = client
        .prepare(sql)
        .await
        .map_err(|e| Error::from_pg(&format!("segment {i} ({display})"), e))?;
    if stmt.columns().is_empty() {
        return Err(Error::InvalidQuery(
            "the statement returns no columns; hopper streams the result of a query (SELECT …)"
                .into(),
        ));
    }
    let schema = arrow_schema(stmt.columns())?;
    let types = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    Ok((Arc::new(schema), types))
}

/// `postgresql://user@host:port/db` — enough to find the segment, never
/// the password.
fn redacted(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgresql://{user}{hosts}/{db}")
}

/// The user's SQL without trailing semicolons, so that it can be wrapped.
fn normalize(sql: &str) -> &str {
    sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// Page ranges `[start, end)` splitting `pages` pages into at most `k`
/// parts; the last is open-ended so that rows added since planning are read.
fn ctid_ranges(pages: i64, k: usize) -> Vec<(i64, Option<i64>)> {
    let k = k.max(1) as i64;
    if pages <= 1 || k == 1 {
        return vec![(0, None)];
    }
    let step = (pages + k - 1) / k;
    let mut out = Vec::new();
    let mut start = 0;
    while start < pages {
        let end = start + step;
        out.push((start, (end < pages).then_some(end)));
        start = end;
    }
    out
}

/// Where the one table of a splittable query is, in the user's SQL text.
#[derive(Debug, PartialEq, Eq)]
struct SplitTarget {
    /// The table name as written (quotes and schema included).
    table: String,
    /// The alias the rewritten query must keep (the user's, or the table's
    /// own last name part).
    alias: String,
    /// Byte range of the table reference (name and alias) in the SQL.
    span: (usize, usize),
    /// Functions the query calls (lower-cased), to rule out aggregates.
    functions: Vec<String>,
}

impl SplitTarget {
    /// `sql` with the table reference replaced by one ctid range of it.
    fn rewrite(&self, sql: &str, (start, end): (i64, Option<i64>)) -> String {
        let mut cond = Vec::new();
        if start > 0 {
            cond.push(format!("ctid >= '({start},0)'::tid"));
        }
        if let Some(end) = end {
            cond.push(format!("ctid < '({end},0)'::tid"));
        }
        let filter = if cond.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", cond.join(" AND "))
        };
        format!(
            "{}(SELECT * FROM {}{filter}) AS {}{}",
            &sql[..self.span.0],
            self.table,
            self.alias,
            &sql[self.span.1..]
        )
    }
}

/// Decides whether `sql` is a single SELECT over exactly one plain table
/// whose rows can be split by page range without changing the result; the
/// error is the reason it cannot.
fn split_target(sql: &str) -> std::result::Result<SplitTarget, String> {
    let statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| format!("not parsed: {e}"))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err("not a single SELECT statement".into());
    };
    if query.with.is_some() {
        return Err("has a WITH clause".into());
    }
    if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Err("has ORDER BY, LIMIT, OFFSET or FETCH".into());
    }
    if !query.locks.is_empty() {
        return Err("has a locking clause".into());
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err("not a plain SELECT (set operation or VALUES)".into());
    };
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, _) => !e.is_empty(),
    };
    if select.distinct.is_some()
        || grouped
        || select.having.is_some()
        || !select.named_window.is_empty()
        || select.qualify.is_some()
        || select.into.is_some()
        || select.top.is_some()
        || !select.connect_by.is_empty()
        || !select.lateral_views.is_empty()
    {
        return Err("has DISTINCT, GROUP BY, HAVING, WINDOW or INTO".into());
    }
    let [from] = select.from.as_slice() else {
        return Err("does not read exactly one relation".into());
    };
    if !from.joins.is_empty() {
        return Err("has a join".into());
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
    } = &from.relation
    else {
        return Err("does not read from a plain table".into());
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return Err("has table hints".into());
    }
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return Err("renames the table's columns in its alias".into());
    }
    let mut functions = Vec::new();
    let mut window = false;
    let _ = visit_expressions(&statements, |e| {
        if let Expr::Function(f) = e {
            window |= f.over.is_some();
            if let Some(id) = f.name.0.last().and_then(|p| p.as_ident()) {
                functions.push(if id.quote_style.is_some() {
                    id.value.clone()
                } else {
                    id.value.to_lowercase()
                });
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if window {
        return Err("calls a window function".into());
    }
    let offset = |l: Location| byte_offset(sql, l).ok_or("no source location".to_string());
    let span = from.relation.span();
    let (start, end) = (offset(span.start)?, offset(span.end)?);
    let name_span = name.span();
    let table = sql[offset(name_span.start)?..offset(name_span.end)?].to_owned();
    let alias = match alias {
        Some(a) => sql[offset(a.name.span.start)?..offset(a.name.span.end)?].to_owned(),
        None => {
            let last = name.0.last().ok_or("empty table name")?.span();
            sql[offset(last.start)?..offset(last.end)?].to_owned()
        }
    };
    Ok(SplitTarget {
        table,
        alias,
        span: (start, end),
        functions,
    })
}

/// The byte offset of a parser location (1-based line and character column).
fn byte_offset(sql: &str, loc: Location) -> Option<usize> {
    if loc.line == 0 || loc.column == 0 {
        return None;
    }
    let mut line_start = 0;
    for _ in 1..loc.line {
        line_start += sql[line_start..].find('\n')? + 1;
    }
    let line = &sql[line_start..];
    let col = (loc.column - 1) as usize;
    line.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(line.len()))
        .nth(col)
        .map(|i| line_start + i)
}

#[async_trait::async_trait]
impl Reader for PostgresSource {
    async fn describe(&self, caller: &Caller, sql: &str) -> Result<SchemaRef> {
        Ok(self.describe_on(caller, 0, normalize(sql)).await?.0)
    }

    async fn plan(&self, caller: &Caller, sql: &str) -> Result<Plan> {
        let sql = normalize(sql);
        let described =
            try_join_all((0..self.segments.len()).map(|i| self.describe_on(caller, i, sql)))
                .await?;
        let schema = described[0].0.clone();
        for (i, (other, _)) in described.iter().enumerate().skip(1) {
            check_same_schema(
                &schema,
                other,
                &self.segments[0].display,
                i,
                &self.segments[i].display,
            )?;
        }

        let mut per_segment: Vec<Vec<String>> = vec![vec![sql.to_owned()]; self.segments.len()];
        if self.split > 1 {
            match split_target(sql) {
                Err(reason) => tracing::info!(sql, %reason, "query not split into ctid ranges"),
                Ok(target) if self.any_aggregate(caller, &target.functions).await? => {
                    tracing::info!(sql, "query not split into ctid ranges: it aggregates");
                }
                Ok(target) => {
                    let splits = try_join_all(
                        (0..self.segments.len())
                            .map(|i| self.split_on(caller, i, sql, &target, &schema)),
                    )
                    .await?;
                    for (slot, split) in per_segment.iter_mut().zip(splits) {
                        if let Some(sqls) = split {
                            *slot = sqls;
                        }
                    }
                }
            }
        }
        let partitions = per_segment
            .into_iter()
            .enumerate()
            .flat_map(|(i, sqls)| {
                sqls.into_iter().map(move |sql| Partition {
                    segment: i as i32,
                    spec: PartitionSpec::Postgres { sql },
                })
            })
            .collect();
        Ok(Plan { schema, partitions })
    }

    async fn read(
        &self,
        caller: &Caller,
        partition: &Partition,
    ) -> Result<SendableRecordBatchStream> {
        let PartitionSpec::Postgres { sql } = &partition.spec else {
            return Err(Error::BadTicket(
                "not a PostgreSQL partition; this server streams PostgreSQL segments".into(),
            ));
        };
        let seg = self.segment(partition.segment)?;
        let client = seg.connect(caller).await?;
        let sql = normalize(sql);
        let (schema, types) =
            describe_with(&client, sql, partition.segment as usize, &seg.display).await?;
        let on_segment = |e| Error::from_pg(&format!("segment {}", seg.display), e);
        let decoder = match self.copy_format.text_decoder(&schema, &types, self.limits) {
            Some(text) => {
                client
                    .batch_execute(TEXT_SETTINGS)
                    .await
                    .map_err(on_segment)?;
                RowDecoder::Text(text)
            }
            None => RowDecoder::Binary(CopyDecoder::new(schema.clone(), &types, self.limits)?),
        };
        let text = matches!(decoder, RowDecoder::Text(_));
        let copy = client
            .copy_out(&CopyFormat::statement(text, sql))
            .await
            .map_err(on_segment)?;
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let (tls, name) = (seg.tls.clone(), seg.display.clone());
        tokio::spawn(stream_copy(client, tls, copy, decoder, tx, name));
        Ok(RecordBatchStreamAdapter::boxed(
            schema,
            ReceiverStream::new(rx),
        ))
    }

    fn connections_in_use(&self) -> Vec<(i32, usize)> {
        self.segments
            .iter()
            .map(|s| (s.index as i32, s.limit.in_use()))
            .collect()
    }
}

#[async_trait::async_trait]
impl Catalog for PostgresSource {
    async fn prepare(&self, caller: &Caller, sql: &str) -> Result<Described> {
        let seg = &self.segments[0];
        let client = seg.connect(caller).await?;
        pg_catalog::prepare(
            &client,
            normalize(sql),
            &format!("segment 0 ({})", seg.display),
        )
        .await
    }

    async fn catalog(&self, caller: &Caller) -> Result<String> {
        let seg = &self.segments[0];
        let client = seg.connect(caller).await?;
        pg_catalog::current_database(&client, &format!("segment 0 ({})", seg.display)).await
    }

    async fn primary_keys(
        &self,
        caller: &Caller,
        db_schema: Option<&str>,
        table: &str,
    ) -> Result<Vec<KeyColumn>> {
        let seg = &self.segments[0];
        let client = seg.connect(caller).await?;
        let on = format!("looking up keys on segment 0 ({})", seg.display);
        pg_catalog::primary_keys(&client, db_schema, table, &on).await
    }

    async fn authenticate(&self, caller: &Caller) -> Result<RoleLogin> {
        // A login to the first segment: the database checks the password.
        let seg = &self.segments[0];
        let client = seg.login(caller).await?;
        pg_catalog::role_login(&client, &format!("segment 0 ({})", seg.display)).await
    }

    async fn admits_without_password(&self, user: &str) -> Result<bool> {
        // The segment that checked the password is the one that must not
        // let the role in without one.
        let seg = &self.segments[0];
        Ok(seg
            .probe(&pg_catalog::without_password(&seg.config, user))
            .await)
    }

    async fn list_tables(&self, caller: &Caller) -> Result<Vec<TableInfo>> {
        let seg0 = &self.segments[0];
        let client = seg0.connect(caller).await?;
        let ctx = format!("listing tables on {}", seg0.display);
        let tables = client
            .query(
                "SELECT c.oid, format('%I.%I', n.nspname, c.relname), current_database()::text, \
                        n.nspname::text, c.relname::text, c.relkind \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' \
                   AND has_table_privilege(c.oid, 'SELECT') \
                 ORDER BY 2",
                &[],
            )
            .await
            .map_err(|e| Error::from_pg(&ctx, e))?;
        let oids: Vec<u32> = tables.iter().map(|r| r.get(0)).collect();
        let columns = client
            .query(
                "SELECT attrelid, attname::text, atttypid, atttypmod FROM pg_attribute \
                 WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped \
                 ORDER BY attrelid, attnum",
                &[&oids],
            )
            .await
            .map_err(|e| Error::from_pg(&ctx, e))?;
        let mut fields: HashMap<u32, Vec<arrow_schema::Field>> = HashMap::new();
        for c in &columns {
            let (rel, name, oid, typmod): (u32, String, u32, i32) =
                (c.get(0), c.get(1), c.get(2), c.get(3));
            // Columns of types hopper cannot stream are left out.
            if let Some(f) = Type::from_oid(oid).and_then(|t| arrow_field(&name, &t, typmod).ok()) {
                fields.entry(rel).or_default().push(f);
            }
        }
        // Return the connection before taking one per segment: holding two
        // on segment 0 could deadlock callers queued at the connection cap.
        drop(client);

        let counts = try_join_all(self.segments.iter().map(|s| async move {
            let client = s.connect(caller).await?;
            let rows = client
                .query(
                    "SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::float8 \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') \
                       AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
                    &[],
                )
                .await
                .map_err(|e| Error::from_pg(&format!("counting rows on {}", s.display), e))?;
            Ok::<_, Error>(
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, f64>(1)))
                    .collect::<HashMap<_, _>>(),
            )
        }))
        .await?;

        Ok(tables
            .iter()
            .map(|r| {
                let (oid, name): (u32, String) = (r.get(0), r.get(1));
                // reltuples is -1 until the table is first analyzed.
                let rows = counts
                    .iter()
                    .map(|c| c.get(&name).copied().filter(|n| *n >= 0.0))
                    .sum::<Option<f64>>()
                    .map(|n| n.round() as i64);
                TableInfo {
                    schema: Arc::new(arrow_schema::Schema::new(
                        fields.remove(&oid).unwrap_or_default(),
                    )),
                    name,
                    catalog: r.get(2),
                    db_schema: r.get(3),
                    table: r.get(4),
                    kind: pg_catalog::table_kind(r.get(5)),
                    rows,
                }
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Writer for PostgresSource {
    async fn put(
        &self,
        caller: &Caller,
        command: &flight_client::put::PutCommand,
        batches: SendableRecordBatchStream,
    ) -> Result<u64> {
        self.put_rows(caller, command, batches).await
    }
}

/// Checks that segment `i` returns the same columns as segment 0.
fn check_same_schema(
    first: &SchemaRef,
    other: &SchemaRef,
    first_name: &str,
    i: usize,
    other_name: &str,
) -> Result<()> {
    let (a, b) = (first.fields(), other.fields());
    for k in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(k), b.get(k));
        if x.map(|f| (f.name(), f.data_type())) != y.map(|f| (f.name(), f.data_type())) {
            let show = |f: Option<&Arc<arrow_schema::Field>>| {
                f.map_or("no column".to_owned(), |f| {
                    format!("\"{}\" {}", f.name(), f.data_type())
                })
            };
            return Err(Error::InvalidQuery(format!(
                "segments disagree on result column {}: segment 0 ({first_name}) has {}, \
                 segment {i} ({other_name}) has {}; make the tables identical on every segment",
                k + 1,
                show(x),
                show(y)
            )));
        }
    }
    Ok(())
}

/// Why [`pump`] stopped early.
enum Stop {
    /// The reader dropped the stream.
    Cancelled,
    /// The database or the decoder failed.
    Failed(Error),
}

/// Feeds `tx` with the batches of one COPY stream; on the way out frees
/// the backend, by cancelling its query unless it finished.
async fn stream_copy(
    client: Client,
    tls: DbTls,
    copy: tokio_postgres::CopyOutStream,
    decoder: RowDecoder,
    tx: mpsc::Sender<Result<arrow_array::RecordBatch>>,
    name: String,
) {
    let cancel = client.cancel_token();
    let copy = Box::pin(copy);
    let outcome = pump(copy, decoder, &tx, &name).await;
    if let Err(stop) = outcome {
        if let Stop::Failed(e) = stop {
            let _ = tx.send(Err(e)).await;
        } else {
            tracing::debug!(segment = %name, "reader went away; cancelling the query");
        }
        // Whatever the backend is still doing for us is wasted work.
        if let Err(e) = cancel.cancel_query(tls).await {
            tracing::debug!(segment = %name, error = %e, "cancel request failed");
        }
    }
    // Dropping the client closes the connection (the backend exits).
    drop(client);
}

/// A COPY stream's decoder: binary or text, the same batches.
enum RowDecoder {
    Binary(CopyDecoder),
    Text(TextCopyDecoder),
}

impl RowDecoder {
    fn push(&mut self, chunk: &[u8]) -> pg_arrow::Result<()> {
        match self {
            RowDecoder::Binary(d) => d.push(chunk),
            RowDecoder::Text(d) => d.push(chunk),
        }
    }

    fn finish(&mut self) -> pg_arrow::Result<()> {
        match self {
            RowDecoder::Binary(d) => d.finish(),
            RowDecoder::Text(d) => d.finish(),
        }
    }

    fn take_batch(&mut self) -> pg_arrow::Result<Option<arrow_array::RecordBatch>> {
        match self {
            RowDecoder::Binary(d) => d.take_batch(),
            RowDecoder::Text(d) => d.take_batch(),
        }
    }
}

/// Rows (COPY messages) taken from the connection's buffer in one go
/// before the stream looks at its reader again.
const DRAIN_ROWS: usize = 1024;

async fn pump(
    mut copy: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    mut decoder: RowDecoder,
    tx: &mpsc::Sender<Result<arrow_array::RecordBatch>>,
    display: &str,
) -> std::result::Result<(), Stop> {
    type Chunk = Option<std::result::Result<bytes::Bytes, tokio_postgres::Error>>;
    let push = |decoder: &mut RowDecoder, chunk: Chunk| -> std::result::Result<bool, Stop> {
        match chunk {
            Some(Ok(bytes)) => decoder
                .push(&bytes)
                .map(|()| false)
                .map_err(|e| Stop::Failed(e.into())),
            Some(Err(e)) => Err(Stop::Failed(Error::from_pg(
                &format!("segment {display}"),
                e,
            ))),
            None => decoder
                .finish()
                .map(|()| true)
                .map_err(|e| Stop::Failed(e.into())),
        }
    };
    loop {
        // Waiting for the database, notice a reader that went away.
        let chunk = tokio::select! {
            biased;
            _ = tx.closed() => return Err(Stop::Cancelled),
            chunk = copy.next() => chunk,
        };
        let mut last = push(&mut decoder, chunk)?;
        // Then take what the connection already holds (one message per
        // row) without arming that check again for every row; a reader
        // that went away still fails the next send.
        for _ in 0..DRAIN_ROWS {
            if last {
                break;
            }
            match copy.next().now_or_never() {
                Some(chunk) => last = push(&mut decoder, chunk)?,
                None => break,
            }
        }
        while let Some(batch) = decoder.take_batch().map_err(|e| Stop::Failed(e.into()))? {
            tx.send(Ok(batch)).await.map_err(|_| Stop::Cancelled)?;
        }
        if last {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_page_counts_into_ranges_with_an_open_end() {
        assert_eq!(ctid_ranges(0, 4), [(0, None)]);
        assert_eq!(ctid_ranges(100, 1), [(0, None)]);
        assert_eq!(ctid_ranges(10, 3), [(0, Some(4)), (4, Some(8)), (8, None)]);
        assert_eq!(ctid_ranges(2, 4), [(0, Some(1)), (1, None)]);
    }

    #[test]
    fn rewrites_the_one_table_keeping_alias_and_text() {
        let sql = "SELECT x.a, lower(x.b) -- note\nFROM public.\"My T\" AS x WHERE x.a > 1";
        let t = split_target(sql).unwrap();
        assert_eq!(t.table, "public.\"My T\"");
        assert_eq!(t.alias, "x");
        assert_eq!(t.functions, ["lower"]);
        assert_eq!(
            t.rewrite(sql, (4, Some(8))),
            "SELECT x.a, lower(x.b) -- note\nFROM (SELECT * FROM public.\"My T\" \
             WHERE ctid >= '(4,0)'::tid AND ctid < '(8,0)'::tid) AS x WHERE x.a > 1"
        );
        let sql = "select * from événements where id < 5";
        let t = split_target(sql).unwrap();
        assert_eq!(
            t.rewrite(sql, (0, Some(3))),
            "select * from (SELECT * FROM événements WHERE ctid < '(3,0)'::tid) AS événements where id < 5"
        );
    }

    #[test]
    fn does_not_split_what_ranges_would_change() {
        for sql in [
            "SELECT * FROM a JOIN b ON a.id = b.id",
            "SELECT * FROM a, b",
            "SELECT k, count(*) FROM a GROUP BY k",
            "SELECT DISTINCT k FROM a",
            "SELECT * FROM a ORDER BY k",
            "SELECT * FROM a LIMIT 10",
            "WITH w AS (SELECT 1) SELECT * FROM w",
            "SELECT * FROM a UNION ALL SELECT * FROM b",
            "SELECT rank() OVER (ORDER BY k) FROM a",
            "SELECT * FROM generate_series(1, 10) g",
            "SELECT * FROM (SELECT * FROM a) s",
            "SELECT 1",
            "SELECT * FROM a; SELECT * FROM b",
        ] {
            assert!(split_target(sql).is_err(), "{sql}");
        }
    }

    /// Integration tests against a live server: a local PostgreSQL, or the
    /// one `HOPPER_PG_URL` names (14+; the tests create databases on it).
    mod live {
        use super::super::*;
        use arrow_array::cast::AsArray;
        use arrow_array::types::*;
        use arrow_array::{Array, RecordBatch};
        use std::time::{Duration, Instant};

        /// The server to test against: `HOPPER_PG_URL` when set, else a
        /// local PostgreSQL started for the test (kept alive by the guard).
        async fn server() -> (Option<devcluster::LocalCluster>, String) {
            if let Ok(url) = std::env::var("HOPPER_PG_URL") {
                return (None, url);
            }
            let cluster = devcluster::LocalCluster::start(1, Default::default())
                .await
                .expect("a local PostgreSQL (scripts/setup.sh installs it)");
            let url = cluster.url(0);
            (Some(cluster), url)
        }

        async fn connect(url: &str) -> Client {
            let (client, conn) = url
                .parse::<Config>()
                .unwrap()
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
        }

        /// A fresh database `name` on the server; returns its connection string.
        async fn fresh_db(base: &str, name: &str) -> String {
            let admin = connect(base).await;
            // Separate statements: DROP/CREATE DATABASE refuse to run in
            // the implicit transaction of a multi-statement query.
            for stmt in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                admin.batch_execute(&stmt).await.unwrap();
            }
            let mut config: Config = base.parse().unwrap();
            config.dbname(name);
            let host = match &config.get_hosts()[0] {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            };
            let mut s = format!(
                "host={host} port={} dbname={name}",
                config.get_ports().first().copied().unwrap_or(5432)
            );
            if let Some(u) = config.get_user() {
                s += &format!(" user={u}");
            }
            if let Some(p) = config.get_password() {
                s += &format!(" password={}", String::from_utf8_lossy(p));
            }
            s
        }

        async fn read_all(src: &PostgresSource, plan: &Plan) -> Vec<RecordBatch> {
            let mut out = Vec::new();
            for p in &plan.partitions {
                let mut s = src.read(&Caller::server(), p).await.unwrap();
                while let Some(b) = s.next().await {
                    out.push(b.unwrap());
                }
            }
            out
        }

        fn prim<T: ArrowPrimitiveType>(a: &dyn Array, i: usize) -> Option<T::Native> {
            let a = a.as_primitive::<T>();
            (!a.is_null(i)).then(|| a.value(i))
        }

        fn list<T: ArrowPrimitiveType>(a: &dyn Array, i: usize) -> Option<Vec<Option<T::Native>>> {
            let a = a.as_list::<i32>();
            (!a.is_null(i)).then(|| a.value(i).as_primitive::<T>().iter().collect())
        }

        fn text(a: &dyn Array, i: usize) -> Option<String> {
            let a = a.as_string::<i32>();
            (!a.is_null(i)).then(|| a.value(i).to_owned())
        }

        const ALL_TYPES: &str = "
            CREATE TABLE all_types (
                k int4 PRIMARY KEY, i2 int2, i8 int8, f4 float4, f8 float8, b bool,
                t text, vc varchar(10), bc char(3), nm name, by bytea, n numeric(12,4),
                d date, tm time, ts timestamp, tz timestamptz, u uuid, j json, jb jsonb,
                a2 int2[], a4 int4[], a8 int8[], af4 float4[], af8 float8[]);
            INSERT INTO all_types VALUES
              (1, 32767, -9223372036854775808, 1.5, -2.25e300, true, 'héllo', 'abc', 'x',
               'nm', '\\x00ff10', 12345.6789, '2024-02-29', '13:45:01.123456',
               '1999-12-31 23:59:59.999999', '2024-01-01 12:00:00+02',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"b\": null}',
               '{1,NULL,-3}', '{}', '{9223372036854775807}', '{1.5,NULL}', '{-0.5}'),
              (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
              (3, -1, 0, -0.0, 0, false, '', '', '', '', '', -0.0001, '1900-01-01', '00:00',
               '1800-06-01 00:00:00', '1970-01-01 00:00:00+00',
               '00000000-0000-0000-0000-000000000000', '[]', '[]',
               '{NULL}', '{NULL,NULL}', '{}', '{}', '{NULL}');
            INSERT INTO all_types (k, i8, t, n, a4)
              SELECT g, g * 1000, repeat('z', g % 50), g / 7.0, ARRAY[g, g + 1]
              FROM generate_series(4, 5000) g;";

        #[tokio::test]
        async fn reads_every_type_as_tokio_postgres_query_returns_it() {
            let (_cluster, base) = server().await;
            let url = fresh_db(&base, "hopper_t_types").await;
            let c = connect(&url).await;
            c.batch_execute(ALL_TYPES).await.unwrap();
            let limits = BatchLimits {
                rows: 700,
                bytes: 1 << 20,
            };
            let src = PostgresSource::new(vec![url], 1, limits).await.unwrap();
            let sql = "SELECT * FROM all_types ORDER BY k";
            let plan = src.plan(&Caller::server(), sql).await.unwrap();
            assert_eq!(plan.partitions.len(), 1);
            let batches = read_all(&src, &plan).await;
            assert!(batches.len() > 1, "batches close at the row limit");
            assert!(batches.iter().all(|b| b.num_rows() <= 700));
            let batch = arrow::compute::concat_batches(&plan.schema, &batches).unwrap();
            let rows = c
                .query("SELECT *, n::text FROM all_types ORDER BY k", &[])
                .await
                .unwrap();
            assert_eq!(batch.num_rows(), rows.len());
            let col = |k: usize| batch.column(k).as_ref();
            for (i, r) in rows.iter().enumerate() {
                assert_eq!(prim::<Int32Type>(col(0), i), r.get::<_, Option<i32>>(0));
                assert_eq!(prim::<Int16Type>(col(1), i), r.get::<_, Option<i16>>(1));
                assert_eq!(prim::<Int64Type>(col(2), i), r.get::<_, Option<i64>>(2));
                assert_eq!(prim::<Float32Type>(col(3), i), r.get::<_, Option<f32>>(3));
                assert_eq!(prim::<Float64Type>(col(4), i), r.get::<_, Option<f64>>(4));
                let b = col(5).as_boolean();
                assert_eq!(
                    (!b.is_null(i)).then(|| b.value(i)),
                    r.get::<_, Option<bool>>(5)
                );
                for k in [6, 7, 8, 9] {
                    assert_eq!(
                        text(col(k), i),
                        r.get::<_, Option<String>>(k),
                        "row {i} col {k}"
                    );
                }
                let by = col(10).as_binary::<i32>();
                assert_eq!(
                    (!by.is_null(i)).then(|| by.value(i).to_vec()),
                    r.get::<_, Option<Vec<u8>>>(10)
                );
                let n = col(11).as_primitive::<Decimal128Type>();
                assert_eq!(
                    (!n.is_null(i)).then(|| n.value_as_string(i)),
                    r.get::<_, Option<String>>(24)
                );
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
                let d = r.get::<_, Option<chrono::NaiveDate>>(12);
                assert_eq!(
                    prim::<Date32Type>(col(12), i),
                    d.map(|d| (d - epoch).num_days() as i32)
                );
                let tm = r.get::<_, Option<chrono::NaiveTime>>(13);
                assert_eq!(
                    prim::<Time64MicrosecondType>(col(13), i),
                    tm.map(|t| (t - chrono::NaiveTime::MIN).num_microseconds().unwrap())
                );
                let ts = r.get::<_, Option<chrono::NaiveDateTime>>(14);
                assert_eq!(
                    prim::<TimestampMicrosecondType>(col(14), i),
                    ts.map(|t| t.and_utc().timestamp_micros())
                );
                let tz = r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(15);
                assert_eq!(
                    prim::<TimestampMicrosecondType>(col(15), i),
                    tz.map(|t| t.timestamp_micros())
                );
                let u = col(16).as_fixed_size_binary();
                assert_eq!(
                    (!u.is_null(i)).then(|| u.value(i).to_vec()),
                    r.get::<_, Option<uuid::Uuid>>(16)
                        .map(|u| u.as_bytes().to_vec())
                );
                for k in [17, 18] {
                    let parsed = text(col(k), i)
                        .map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap());
                    assert_eq!(
                        parsed,
                        r.get::<_, Option<serde_json::Value>>(k),
                        "row {i} col {k}"
                    );
                }
                assert_eq!(
                    list::<Int16Type>(col(19), i),
                    r.get::<_, Option<Vec<Option<i16>>>>(19)
                );
                assert_eq!(
                    list::<Int32Type>(col(20), i),
                    r.get::<_, Option<Vec<Option<i32>>>>(20)
                );
                assert_eq!(
                    list::<Int64Type>(col(21), i),
                    r.get::<_, Option<Vec<Option<i64>>>>(21)
                );
                assert_eq!(
                    list::<Float32Type>(col(22), i),
                    r.get::<_, Option<Vec<Option<f32>>>>(22)
                );
                assert_eq!(
                    list::<Float64Type>(col(23), i),
                    r.get::<_, Option<Vec<Option<f64>>>>(23)
                );
            }
            // The null row is null in every column.
            assert!(batch.columns()[1..].iter().all(|c| c.is_null(1)));
        }

        #[tokio::test]
        async fn dropping_the_stream_cancels_the_query_and_frees_the_backend() {
            let (_cluster, base) = server().await;
            let src = PostgresSource::new(
                vec![base.clone()],
                1,
                BatchLimits {
                    rows: 100,
                    bytes: 1 << 20,
                },
            )
            .await
            .unwrap();
            let tag = "hopper_drop_probe";
            let plan = src
                .plan(
                    &Caller::server(),
                    &format!(
                        "SELECT g AS {tag}, repeat('x', 200) FROM generate_series(1, 50000000) g"
                    ),
                )
                .await
                .unwrap();
            let mut stream = src
                .read(&Caller::server(), &plan.partitions[0])
                .await
                .unwrap();
            assert_eq!(stream.next().await.unwrap().unwrap().num_rows(), 100);
            let admin = connect(&base).await;
            let backends = || async {
                admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid() \
                           AND application_name = $2",
                        &[&tag, &APPLICATION_NAME],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
            };
            assert_eq!(
                backends().await,
                1,
                "the COPY runs while the stream is open"
            );
            drop(stream);
            let deadline = Instant::now() + Duration::from_secs(10);
            while backends().await > 0 {
                assert!(
                    Instant::now() < deadline,
                    "backend still there 10 s after the drop"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        #[tokio::test]
        async fn splits_one_table_by_ctid_without_losing_rows_added_later() {
            let (_cluster, base) = server().await;
            let url = fresh_db(&base, "hopper_t_split").await;
            let c = connect(&url).await;
            c.batch_execute(
                "CREATE TABLE big (id int8, pad text);
                 INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 20000) g;",
            )
            .await
            .unwrap();
            let src = PostgresSource::new(vec![url.clone(), url], 3, BatchLimits::default())
                .await
                .unwrap();
            let plan = src
                .plan(
                    &Caller::server(),
                    "SELECT b.id FROM big AS b WHERE b.id % 2 = 0;",
                )
                .await
                .unwrap();
            assert_eq!(plan.partitions.len(), 6, "{:?}", plan.partitions);
            assert_eq!(plan.partitions.iter().filter(|p| p.segment == 1).count(), 3);
            // Rows appended after planning land in the open-ended last range.
            c.batch_execute(
                "INSERT INTO big SELECT g, 'late' FROM generate_series(20001, 20010) g",
            )
            .await
            .unwrap();
            let batches = read_all(&src, &plan).await;
            let ids: Vec<i64> = batches
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect();
            // Both "segments" are the same database, so every row twice.
            assert_eq!(ids.len(), 2 * 10005);
            assert_eq!(
                ids.iter().sum::<i64>(),
                2 * (2..=20010).step_by(2).sum::<i64>()
            );

            for sql in [
                "SELECT count(*) FROM big",
                "SELECT max(id) FROM big WHERE id > 3",
            ] {
                let plan = src.plan(&Caller::server(), sql).await.unwrap();
                assert_eq!(plan.partitions.len(), 2, "{sql} must not be split");
            }
        }

        #[tokio::test]
        async fn refuses_segments_whose_schemas_differ_and_bad_queries() {
            let (_cluster, base) = server().await;
            let a = fresh_db(&base, "hopper_t_seg_a").await;
            let b = fresh_db(&base, "hopper_t_seg_b").await;
            connect(&a)
                .await
                .batch_execute("CREATE TABLE t (x int4, y text)")
                .await
                .unwrap();
            connect(&b)
                .await
                .batch_execute("CREATE TABLE t (x int8, y text)")
                .await
                .unwrap();
            let src = PostgresSource::new(vec![a, b], 1, BatchLimits::default())
                .await
                .unwrap();
            let e = src
                .plan(&Caller::server(), "SELECT * FROM t")
                .await
                .unwrap_err();
            assert!(matches!(e, Error::InvalidQuery(_)), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("segment 1") && msg.contains("\"x\""), "{msg}");

            let e = src
                .describe(&Caller::server(), "SELECT * FROM missing")
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::InvalidQuery(_)) && e.to_string().contains("missing"),
                "{e}"
            );
            let e = src
                .describe(&Caller::server(), "SELECT 1.5::numeric AS n")
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::UnsupportedType { .. }) && e.to_string().contains("float8"),
                "{e}"
            );
            // Reads run read-only: COPY must not become a way to write.
            let plan = src
                .plan(&Caller::server(), "SELECT y FROM t")
                .await
                .unwrap();
            let dml = Partition {
                segment: 0,
                spec: PartitionSpec::Postgres {
                    sql: "INSERT INTO t VALUES (1, 'a') RETURNING y".into(),
                },
            };
            assert!(src.read(&Caller::server(), &dml).await.is_err());
            assert_eq!(
                read_all(&src, &plan)
                    .await
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>(),
                0
            );
        }

        #[tokio::test]
        async fn lists_readable_tables_with_supported_columns_and_row_estimates() {
            let (_cluster, base) = server().await;
            let a = fresh_db(&base, "hopper_t_list_a").await;
            let b = fresh_db(&base, "hopper_t_list_b").await;
            for (url, n) in [(&a, 30), (&b, 12)] {
                connect(url)
                    .await
                    .batch_execute(&format!(
                        "CREATE TABLE clicks (label int4, gap interval, feat float8);
                         INSERT INTO clicks SELECT 1, '1 day', 0.5 FROM generate_series(1, {n});
                         ANALYZE clicks;
                         CREATE TABLE \"Fresh\" (id int8);
                         CREATE VIEW v AS SELECT label FROM clicks;"
                    ))
                    .await
                    .unwrap();
            }
            let src = PostgresSource::new(vec![a, b], 1, BatchLimits::default())
                .await
                .unwrap();
            let tables = src.list_tables(&Caller::server()).await.unwrap();
            let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["public.\"Fresh\"", "public.clicks", "public.v"]);
            let clicks = &tables[1];
            let cols: Vec<&str> = clicks
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            assert_eq!(cols, ["label", "feat"], "interval is left out");
            assert_eq!(clicks.rows, Some(42));
            assert_eq!(tables[0].rows, None, "never analyzed");
        }

        #[tokio::test]
        async fn an_unreachable_segment_is_named_without_its_password() {
            let e = PostgresSource::new(
                vec!["postgresql://alice:s3cret@127.0.0.1:1/db".into()],
                1,
                BatchLimits::default(),
            )
            .await
            .unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Unavailable(_)), "{msg}");
            assert!(
                msg.contains("127.0.0.1:1") && !msg.contains("s3cret"),
                "{msg}"
            );
            assert!(msg.to_lowercase().contains("refused"), "says why: {msg}");
        }
    }
}
