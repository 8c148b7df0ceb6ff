//! Reading: [`Reader`] for PostgreSQL segments — a partition is a `COPY
//! (…) TO STDOUT`, binary or text, decoded chunk by chunk into Arrow
//! batches by a task that feeds a bounded channel and frees its backend
//! the moment the reader goes away.

use arrow_schema::SchemaRef;
use futures::future::try_join_all;
use futures::FutureExt;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::db_tls::DbTls;
use crate::source::reader::check_snapshot_name;
use crate::source::{
    HeldSnapshot, Partition, PartitionSpec, Plan, Reader, RecordBatchStreamAdapter,
    SendableRecordBatchStream, SnapshotNames, CHANNEL_DEPTH,
};
use crate::types::CopyDecoder;
use pg_arrow::{TextCopyDecoder, TEXT_SETTINGS};

use super::plan::{check_same_schema, describe_with, normalize, split_target};
use super::segment::Segment;
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
        let client = seg.connect(caller).await?;
        if let Some(name) = snapshot {
            import_snapshot(&client, name, &seg.display).await?;
        }
        self.copy_out(client, seg, partition.segment, sql).await
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
async fn import_snapshot(client: &Client, name: &str, display: &str) -> Result<()> {
    check_snapshot_name(name)?;
    let begun = client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{name}'"
        ))
        .await;
    match begun {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) => {
            Err(Error::BadTicket(format!(
                "the snapshot this ticket reads ({name} on {display}) is no longer held: \
                 its flight-server released it, restarted, or it outlived its TTL; \
                 plan the query again (mop does, and checks the rows against its first read)"
            )))
        }
        Err(e) => Err(Error::from_pg(
            &format!("importing the run's snapshot on {display}"),
            e,
        )),
    }
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

    /// Streams `COPY (sql) TO STDOUT` on `client`, in whatever transaction
    /// it has begun.
    async fn copy_out(
        &self,
        client: Client,
        seg: &Segment,
        segment: i32,
        sql: &str,
    ) -> Result<SendableRecordBatchStream> {
        let sql = normalize(sql);
        let (schema, types) = describe_with(&client, sql, segment as usize, &seg.display).await?;
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
}

/// Why [`pump`] stopped early.
pub(super) enum Stop {
    /// The reader dropped the stream.
    Cancelled,
    /// The database or the decoder failed.
    Failed(Error),
}

/// Feeds `tx` with the batches of one COPY stream; on the way out frees
/// the backend, by cancelling its query unless it finished.
pub(super) async fn stream_copy(
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

/// Rows (COPY messages) taken from the connection's buffer in one go
/// before the stream looks at its reader again.
pub(super) const DRAIN_ROWS: usize = 1024;

pub(super) async fn pump(
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
