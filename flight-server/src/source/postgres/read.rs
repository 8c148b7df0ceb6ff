//! Reading: [`Reader`] for PostgreSQL segments — a partition is a `COPY
//! (…) TO STDOUT`, binary or text, on a session read at the protocol level
//! ([`wire`]): the socket is read into one large buffer and each
//! `CopyData` payload goes from there into the decoder, with no message
//! object per row. A task feeds the batches into a bounded channel and
//! frees its backend the moment the reader goes away.

use arrow_schema::SchemaRef;
use futures::future::try_join_all;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::reader::check_snapshot_name;
use crate::source::wire::{self, Session};
use crate::source::{
    HeldSnapshot, Partition, PartitionSpec, Plan, Reader, RecordBatchStreamAdapter,
    SendableRecordBatchStream, SnapshotNames, CHANNEL_DEPTH,
};
use crate::types::CopyDecoder;
use pg_arrow::{TextCopyDecoder, TEXT_SETTINGS};

use super::plan::{check_same_schema, normalize, split_target};
use super::segment::{Segment, BACKEND_EXIT_GRACE};
use super::{CopyFormat, PostgresSource};

#[async_trait::async_trait]
impl Reader for PostgresSource {
    async fn describe(&self, caller: &Caller, sql: &str) -> Result<SchemaRef> {
        Ok(self.describe_on(caller, 0, normalize(sql)).await?.0)
    }

    async fn plan(&self, caller: &Caller, sql: &str) -> Result<Plan> {
        self.plan_with(caller, sql, None).await
    }

    async fn export_snapshot(&self, caller: &Caller) -> Result<HeldSnapshot> {
        // One session per segment, each in a transaction kept open: the
        // export lives as long as its transaction. REPEATABLE READ, so that
        // the transaction's one snapshot is the exported one.
        let sessions = try_join_all(self.segments.iter().map(|seg| async move {
            let client = seg.connect(caller).await?;
            let ctx = |e| {
                Error::from_pg(
                    &format!("exporting a snapshot on segment {}", seg.display),
                    e,
                )
            };
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(ctx)?;
            let row = client
                .query_one("SELECT pg_export_snapshot()", &[])
                .await
                .map_err(ctx)?;
            let name: String = row.get(0);
            Ok::<_, Error>((seg.index as i32, name, client))
        }))
        .await?;
        let mut held = HeldSnapshot {
            names: SnapshotNames::default(),
            sessions: Vec::with_capacity(sessions.len()),
        };
        for (segment, name, client) in sessions {
            held.names.0.insert(segment, name);
            // The session's place under --max-connections is returned when
            // its connection closes (see `Segment::open`).
            held.sessions.push((client, None));
        }
        Ok(held)
    }

    async fn plan_at(&self, caller: &Caller, sql: &str, snapshot: &SnapshotNames) -> Result<Plan> {
        self.plan_with(caller, sql, Some(snapshot)).await
    }

    async fn read(
        &self,
        caller: &Caller,
        partition: &Partition,
    ) -> Result<SendableRecordBatchStream> {
        let PartitionSpec::Postgres { sql, snapshot } = &partition.spec else {
            return Err(Error::BadTicket(
                "not a PostgreSQL partition; this server streams PostgreSQL segments".into(),
            ));
        };
        let seg = self.segment(partition.segment)?;
        let (mut session, permit) = seg.session(caller).await?;
        if let Some(name) = snapshot {
            import_snapshot(&mut session, name, &seg.display).await?;
        }
        self.copy_out(session, permit, seg, sql).await
    }

    fn connections_in_use(&self) -> Vec<(i32, usize)> {
        self.segments
            .iter()
            .map(|s| (s.index as i32, s.limit.in_use()))
            .collect()
    }
}

/// Starts a transaction on `client` that sees exactly the rows of the
/// exported snapshot `name`; one that is gone (its holder released it,
/// outlived `--snapshot-ttl` or restarted) refuses the ticket, so that the
/// client plans again and learns the snapshot is lost.
async fn import_snapshot(session: &mut Session, name: &str, display: &str) -> Result<()> {
    check_snapshot_name(name)?;
    let begun = session
        .simple_query(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{name}'"
        ))
        .await?;
    match begun {
        Ok(()) => Ok(()),
        Err(e) if e.code() == tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE.code() => {
            Err(Error::BadTicket(format!(
                "the snapshot this ticket reads ({name} on {display}) is no longer held: \
                 its flight-server released it, restarted, or it outlived its TTL; \
                 plan the query again (mop does, and checks the rows against its first read)"
            )))
        }
        Err(e) => Err(e.into_error(&format!("importing the run's snapshot on {display}"))),
    }
}

/// The Arrow schema and PostgreSQL types of `sql`'s result, described on
/// `session` (the one the COPY runs on, in its transaction). Planning
/// described it already with tokio-postgres, naming every type it refuses;
/// this only sees the built-in types hopper maps, so anything else (the
/// table changed since) is refused by its type's oid.
async fn describe_session(
    session: &mut Session,
    sql: &str,
    display: &str,
) -> Result<(SchemaRef, Vec<tokio_postgres::types::Type>)> {
    let columns = session.describe(sql).await?;
    if columns.is_empty() {
        return Err(Error::InvalidQuery(
            "the statement returns no columns; hopper streams the result of a query (SELECT …)"
                .into(),
        ));
    }
    let mut fields = Vec::with_capacity(columns.len());
    let mut types = Vec::with_capacity(columns.len());
    for c in columns {
        let ty = tokio_postgres::types::Type::from_oid(c.type_oid).ok_or_else(|| {
            Error::UnsupportedType {
                column: c.name.clone(),
                type_name: format!("oid {} on {display}", c.type_oid),
            }
        })?;
        fields.push(crate::types::arrow_field(&c.name, &ty, c.type_modifier)?);
        types.push(ty);
    }
    Ok((
        std::sync::Arc::new(arrow_schema::Schema::new(fields)),
        types,
    ))
}

impl PostgresSource {
    async fn plan_with(
        &self,
        caller: &Caller,
        sql: &str,
        snapshot: Option<&SnapshotNames>,
    ) -> Result<Plan> {
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
            .map(|(i, sqls)| {
                let snapshot = snapshot
                    .map(|s| s.of(i as i32).map(str::to_owned))
                    .transpose()?;
                Ok(sqls.into_iter().map(move |sql| Partition {
                    segment: i as i32,
                    spec: PartitionSpec::Postgres {
                        sql,
                        snapshot: snapshot.clone(),
                    },
                }))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        Ok(Plan { schema, partitions })
    }

    /// Streams `COPY (sql) TO STDOUT` on `session`, in whatever
    /// transaction it has begun; `permit` is its place under
    /// `--max-connections`, returned once the session is closed.
    async fn copy_out(
        &self,
        mut session: Session,
        permit: tokio::sync::OwnedSemaphorePermit,
        seg: &Segment,
        sql: &str,
    ) -> Result<SendableRecordBatchStream> {
        let sql = normalize(sql);
        let (schema, types) = describe_session(&mut session, sql, &seg.display).await?;
        let on_segment = |e: wire::ServerError| e.into_error(&format!("segment {}", seg.display));
        let decoder = match self.copy_format.text_decoder(&schema, &types, self.limits) {
            Some(text) => {
                session
                    .simple_query(TEXT_SETTINGS)
                    .await?
                    .map_err(on_segment)?;
                RowDecoder::Text(text)
            }
            None => RowDecoder::Binary(CopyDecoder::new(schema.clone(), &types, self.limits)?),
        };
        let text = matches!(decoder, RowDecoder::Text(_));
        session.copy_out(&CopyFormat::statement(text, sql)).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let name = seg.display.clone();
        tokio::spawn(async move {
            stream_copy(session, decoder, tx, name).await;
            // The backend exits a moment after our side closed; a new
            // connection in that moment would briefly exceed the cap.
            tokio::time::sleep(BACKEND_EXIT_GRACE).await;
            drop(permit);
        });
        Ok(RecordBatchStreamAdapter::boxed(
            schema,
            ReceiverStream::new(rx),
        ))
    }
}

/// Why [`pump`] stopped early.
pub(super) enum Stop {
    /// The reader dropped the stream.
    Cancelled,
    /// The database or the decoder failed.
    Failed(Error),
}

/// Feeds `tx` with the batches of one COPY stream; on the way out frees
/// the backend, by cancelling its query unless it finished, and closes
/// the session.
pub(super) async fn stream_copy(
    mut session: Session,
    decoder: RowDecoder,
    tx: mpsc::Sender<Result<arrow_array::RecordBatch>>,
    name: String,
) {
    let cancel = session.canceller();
    let outcome = pump(&mut session, decoder, &tx).await;
    if let Err(stop) = outcome {
        if let Stop::Failed(e) = stop {
            let _ = tx.send(Err(e)).await;
        } else {
            tracing::debug!(segment = %name, "reader went away; cancelling the query");
        }
        // Whatever the backend is still doing for us is wasted work.
        if let Some(cancel) = cancel {
            if let Err(e) = cancel.cancel().await {
                tracing::debug!(segment = %name, error = %e, "cancel request failed");
            }
        }
    }
    // Dropping the session closes the connection (the backend exits).
    drop(session);
}

/// A COPY stream's decoder: binary or text, the same batches.
pub(super) enum RowDecoder {
    Binary(CopyDecoder),
    Text(TextCopyDecoder),
}

impl RowDecoder {
    pub(super) fn push(&mut self, chunk: &[u8]) -> pg_arrow::Result<()> {
        match self {
            RowDecoder::Binary(d) => d.push(chunk),
            RowDecoder::Text(d) => d.push(chunk),
        }
    }

    pub(super) fn finish(&mut self) -> pg_arrow::Result<()> {
        match self {
            RowDecoder::Binary(d) => d.finish(),
            RowDecoder::Text(d) => d.finish(),
        }
    }

    pub(super) fn take_batch(&mut self) -> pg_arrow::Result<Option<arrow_array::RecordBatch>> {
        match self {
            RowDecoder::Binary(d) => d.take_batch(),
            RowDecoder::Text(d) => d.take_batch(),
        }
    }
}

/// Reads the COPY stream of `session` into `decoder` and its batches into
/// `tx`: every payload already buffered is decoded, the batches it closed
/// are sent (waiting while the reader is behind: backpressure), and only
/// then is the socket read again, in large reads.
pub(super) async fn pump(
    session: &mut Session,
    mut decoder: RowDecoder,
    tx: &mpsc::Sender<Result<arrow_array::RecordBatch>>,
) -> std::result::Result<(), Stop> {
    loop {
        let done = session
            .read_data(true, |payload| decoder.push(payload))
            .map_err(Stop::Failed)?;
        if done {
            decoder.finish().map_err(|e| Stop::Failed(e.into()))?;
        }
        while let Some(batch) = decoder.take_batch().map_err(|e| Stop::Failed(e.into()))? {
            tx.send(Ok(batch)).await.map_err(|_| Stop::Cancelled)?;
        }
        if done {
            return Ok(());
        }
        // Waiting for the database, notice a reader that went away.
        tokio::select! {
            biased;
            _ = tx.closed() => return Err(Stop::Cancelled),
            filled = session.fill() => filled.map_err(Stop::Failed)?,
        }
    }
}
