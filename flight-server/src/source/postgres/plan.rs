//! Planning a query over the segments: its schema (the same on every
//! segment), and its partitions — one per segment, or several page
//! ranges (`ctid`) of the one table a simple query reads, when `--split`
//! asks for them and the split cannot change the result.
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use sqlparser::ast::{
    visit_expressions, Expr, GroupByExpr, SetExpr, Spanned, Statement, TableFactor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::types::arrow_schema;

use super::PostgresSource;

impl PostgresSource {
    /// The result schema and column types of `sql` on segment `i`.
    pub(super) async fn describe_on(
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
    pub(super) async fn split_on(
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
    pub(super) async fn any_aggregate(&self, caller: &Caller, names: &[String]) -> Result<bool> {
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
pub(super) async fn describe_with(
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

/// The user's SQL without trailing semicolons, so that it can be wrapped.
pub(super) fn normalize(sql: &str) -> &str {
    sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// Page ranges `[start, end)` splitting `pages` pages into at most `k`
/// parts; the last is open-ended so that rows added since planning are read.
pub(super) fn ctid_ranges(pages: i64, k: usize) -> Vec<(i64, Option<i64>)> {
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
pub(super) struct SplitTarget {
    /// The table name as written (quotes and schema included).
    pub(super) table: String,
    /// The alias the rewritten query must keep (the user's, or the table's
    /// own last name part).
    pub(super) alias: String,
    /// Byte range of the table reference (name and alias) in the SQL.
    pub(super) span: (usize, usize),
    /// Functions the query calls (lower-cased), to rule out aggregates.
    pub(super) functions: Vec<String>,
}

impl SplitTarget {
    /// `sql` with the table reference replaced by one ctid range of it.
    pub(super) fn rewrite(&self, sql: &str, (start, end): (i64, Option<i64>)) -> String {
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
pub(super) fn split_target(sql: &str) -> std::result::Result<SplitTarget, String> {
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
pub(super) fn byte_offset(sql: &str, loc: Location) -> Option<usize> {
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

/// Checks that segment `i` returns the same columns as segment 0.
pub(super) fn check_same_schema(
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
