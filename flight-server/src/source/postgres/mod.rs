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

use futures::future::try_join_all;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::db_tls::DbUrl;
use crate::source::limit::ConnectionLimit;
use crate::source::BatchLimits;
use segment::{redacted, Segment};

mod catalog;
mod copy_format;
mod plan;
mod put;
mod read;
mod segment;
#[cfg(test)]
mod tests;

pub use copy_format::CopyFormat;

/// `application_name` of every connection hopper opens.
pub const APPLICATION_NAME: &str = "hopper-flight-server";

/// A [`Source`](crate::source::Source) over one or more PostgreSQL
/// instances, each a segment.
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
}
