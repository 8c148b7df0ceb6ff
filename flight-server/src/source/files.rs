//! Parquet, CSV and Arrow IPC files through DataFusion.
//!
//! The file source serves two purposes: hopper without a database (train
//! from files on the segment hosts' disks), and the "export first" baseline
//! that direct access is measured against.
//!
//! Every matching file becomes one table named after its file stem, and a
//! query's partitions are the output partitions of DataFusion's physical
//! plan. A ticket carries only the SQL text and a partition number, so the
//! server keeps no state between `GetFlightInfo` and `DoGet`: `read` plans
//! the SQL again and executes the one partition. That is only correct when
//! planning twice yields the same split of rows and a partition never leans
//! on its siblings, so the session turns off round-robin repartitioning
//! (which deals batches to partitions in arrival order), file work stealing
//! (an idle partition reading a sibling's byte ranges) and dynamic filters
//! (which wait for sibling partitions); byte-range file splits and hash
//! repartitioning are deterministic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    BatchLimits, Catalog, Described, Partition, PartitionSpec, Plan, Reader,
    RecordBatchStreamAdapter, SendableRecordBatchStream, TableInfo, TableKind, Writer,
    CHANNEL_DEPTH,
};
use crate::auth::Caller;
use crate::error::{Error, Result};

/// The file formats the source registers, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Format {
    Parquet,
    Csv,
    /// Arrow IPC, file or stream format (DataFusion detects which).
    Arrow,
}

impl Format {
    /// The format a file name's extension (case-insensitive) stands for.
    fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "arrow" | "arrows" | "ipc" => Some(Format::Arrow),
            _ => None,
        }
    }
}

/// One registered file.
#[derive(Clone, Debug)]
struct FileTable {
    /// Table name in SQL (a lower-case identifier).
    name: String,
    /// Row count, when the file states it (Parquet footers do).
    rows: Option<i64>,
}

/// Tables backed by local files, queried with DataFusion SQL.
pub struct FilesSource {
    ctx: SessionContext,
    tables: Vec<FileTable>,
    limits: BatchLimits,
}

impl std::fmt::Debug for FilesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesSource")
            .field("tables", &self.tables)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FilesSource {
    /// Registers every Parquet, CSV (with a header row) and Arrow IPC file
    /// in `path` — a directory (not recursive) or a glob whose last
    /// component holds `*`/`?` wildcards — as a table named by its file stem.
    ///
    /// `target_partitions` is how many partitions DataFusion splits a scan
    /// into, i.e. how many endpoints a query gets.
    pub async fn open(path: &str, limits: BatchLimits, target_partitions: usize) -> Result<Self> {
        if limits.rows == 0 || limits.bytes == 0 {
            return Err(Error::Config(format!(
                "batch limits must be positive, got {} rows / {} bytes",
                limits.rows, limits.bytes
            )));
        }
        let files = matching_files(path)?;
        if files.is_empty() {
            return Err(Error::Config(format!(
                "no *.parquet, *.csv, *.arrow, *.arrows or *.ipc file matches {path:?}"
            )));
        }

        let config = SessionConfig::new()
            .with_target_partitions(target_partitions.max(1))
            .with_round_robin_repartition(false)
            .with_repartition_file_scans(true)
            // Split even small files into `target_partitions` byte ranges:
            // the endpoint count is what spreads a table over workers.
            .with_repartition_file_min_size(0)
            .with_batch_size(limits.rows)
            // Each ticket executes its partition in a plan of its own, so no
            // partition may depend on its siblings being polled: no stealing
            // of a sibling's files (which would read them twice), and no
            // dynamic filters (a partitioned join's filter waits for every
            // partition's build side).
            .set_bool(
                "datafusion.execution.enable_file_stream_work_stealing",
                false,
            )
            .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false)
            // Plain Utf8/Binary, not the view types: every Flight client
            // (pyarrow, Java, ADBC) reads them, and PostgreSQL sources send them too.
            .set_bool(
                "datafusion.execution.parquet.schema_force_view_types",
                false,
            );
        let ctx = SessionContext::new_with_config(config);

        // Two files with one stem would silently shadow each other: refuse.
        let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut tables = Vec::with_capacity(files.len());
        for (file, format) in files {
            let name = table_name(&file);
            if let Some(other) = by_name.get(&name) {
                return Err(Error::Config(format!(
                    "{} and {} would both be table \"{name}\"; rename one",
                    other.display(),
                    file.display()
                )));
            }
            register(&ctx, &name, &file, format).await?;
            let rows = match format {
                Format::Parquet => parquet_rows(&file).await,
                Format::Csv | Format::Arrow => None,
            };
            by_name.insert(name.clone(), file);
            tables.push(FileTable { name, rows });
        }
        Ok(Self {
            ctx,
            tables,
            limits,
        })
    }

    /// The physical plan of a read-only query (no DDL, DML or `SET`).
    async fn physical_plan(&self, sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ctx
            .sql_with_options(sql, options)
            .await
            .map_err(query_error)?;
        let plan = df.create_physical_plan().await.map_err(query_error)?;
        // The optimizer splits file scans only beneath another operator; a
        // bare `SELECT * FROM t` would stay one partition per file. Split
        // the root scan the same (deterministic, byte-range) way.
        let state = self.ctx.state();
        let target = state.config().target_partitions();
        if plan.properties().output_partitioning().partition_count() < target {
            if let Some(split) = plan.repartitioned(target, state.config_options())? {
                return Ok(split);
            }
        }
        Ok(plan)
    }
}

#[async_trait::async_trait]
impl Reader for FilesSource {
    // Files have no per-user rights: with authentication on, a caller is
    // only checked at the handshake, and every caller reads every file.
    async fn describe(&self, _caller: &Caller, sql: &str) -> Result<SchemaRef> {
        Ok(self.physical_plan(sql).await?.schema())
    }

    async fn plan(&self, _caller: &Caller, sql: &str) -> Result<Plan> {
        let plan = self.physical_plan(sql).await?;
        let count = plan.properties().output_partitioning().partition_count();
        let partitions = (0..count)
            .map(|i| Partition {
                segment: i32::try_from(i).unwrap_or(i32::MAX),
                spec: PartitionSpec::Files {
                    sql: sql.to_string(),
                    partition: i,
                },
            })
            .collect();
        Ok(Plan {
            schema: plan.schema(),
            partitions,
        })
    }

    async fn read(
        &self,
        _caller: &Caller,
        partition: &Partition,
    ) -> Result<SendableRecordBatchStream> {
        let PartitionSpec::Files { sql, partition: i } = &partition.spec else {
            return Err(Error::BadTicket(
                "this server serves files; the ticket is for another kind of source".into(),
            ));
        };
        let plan = self.physical_plan(sql).await?;
        let count = plan.properties().output_partitioning().partition_count();
        if *i >= count {
            return Err(Error::BadTicket(format!(
                "partition {i} does not exist: the query now has {count} partitions \
                 (were files changed or the server restarted with other settings?); plan it again"
            )));
        }
        let mut input = plan.execute(*i, self.ctx.task_ctx())?;
        let schema = input.schema();
        let limits = self.limits;
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(async move {
            while let Some(item) = input.next().await {
                let batch = match item {
                    Ok(batch) => batch,
                    Err(e) => {
                        let _ = tx.send(Err(Error::from(e))).await;
                        return;
                    }
                };
                for chunk in rechunk(&batch, limits) {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return; // the client went away: stop reading files
                    }
                }
            }
        });
        Ok(RecordBatchStreamAdapter::boxed(
            schema,
            ReceiverStream::new(rx),
        ))
    }
}

#[async_trait::async_trait]
impl Catalog for FilesSource {
    async fn list_tables(&self, _caller: &Caller) -> Result<Vec<TableInfo>> {
        let mut out = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            let provider = self.ctx.table_provider(t.name.as_str()).await?;
            let options = self.ctx.state().config_options().catalog.clone();
            out.push(TableInfo {
                name: t.name.clone(),
                catalog: options.default_catalog,
                db_schema: options.default_schema,
                table: t.name.clone(),
                kind: TableKind::Table,
                schema: provider.schema(),
                rows: t.rows,
            });
        }
        Ok(out)
    }

    async fn catalog(&self, _caller: &Caller) -> Result<String> {
        Ok(self
            .ctx
            .state()
            .config_options()
            .catalog
            .default_catalog
            .clone())
    }

    async fn prepare(&self, _caller: &Caller, sql: &str) -> Result<Described> {
        // DataFusion infers placeholders' types from where they stand.
        let plan = self
            .ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(query_error)?;
        let types = plan.get_parameter_types().map_err(query_error)?;
        let mut names: Vec<&String> = types.keys().collect();
        names.sort_by_key(|n| {
            n.trim_start_matches('$')
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let parameters = names
            .into_iter()
            .map(|n| {
                let data_type = types[n].clone().unwrap_or(arrow_schema::DataType::Utf8);
                arrow_schema::Field::new(n, data_type, true)
            })
            .collect::<Vec<_>>();
        Ok(Described {
            schema: Arc::new(plan.schema().as_arrow().clone()),
            parameters: Arc::new(arrow_schema::Schema::new(parameters)),
        })
    }
}

/// Files are read-only: the default refuses every upload.
impl Writer for FilesSource {}

/// Classifies a planning error by its root cause: DataFusion wraps the
/// planner's errors (an unknown table, a bad column) in diagnostics and
/// context, and the client must still be told its query was wrong.
fn query_error(e: datafusion::error::DataFusionError) -> Error {
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::SQL(..) | D::Plan(..) | D::SchemaError(..) | D::NotImplemented(..) => {
            Error::InvalidQuery(e.to_string())
        }
        _ => Error::from(e),
    }
}

/// Splits `batch` into slices that respect both limits (zero-copy).
///
/// The byte limit is applied through the batch's average row size; a single
/// row larger than the limit still goes out alone.
fn rechunk(batch: &RecordBatch, limits: BatchLimits) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Vec::new();
    }
    let bytes_per_row = batch.get_array_memory_size().div_ceil(rows).max(1);
    let step = limits.rows.min(limits.bytes / bytes_per_row).max(1);
    if rows <= step {
        return vec![batch.clone()];
    }
    (0..rows)
        .step_by(step)
        .map(|off| batch.slice(off, step.min(rows - off)))
        .collect()
}

/// The files `path` names, with their formats, sorted by path.
fn matching_files(path: &str) -> Result<Vec<(PathBuf, Format)>> {
    let p = Path::new(path);
    let (dir, pattern): (PathBuf, Option<String>) = if p.is_dir() {
        (p.to_path_buf(), None)
    } else if p.is_file() {
        let format = Format::of(p).ok_or_else(|| {
            Error::Config(format!(
                "{path:?} is not a .parquet, .csv, .arrow, .arrows or .ipc file"
            ))
        })?;
        let abs =
            std::fs::canonicalize(p).map_err(|e| Error::Unavailable(format!("{path:?}: {e}")))?;
        return Ok(vec![(abs, format)]);
    } else {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Config(format!("{path:?} names no directory, file or glob")))?;
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !name.contains(['*', '?']) {
            return Err(Error::Config(format!(
                "{path:?} does not exist (give a directory, a file or a glob like dir/*.parquet)"
            )));
        }
        (parent, Some(name.to_string()))
    };
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| Error::Config(format!("cannot list {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::Unavailable(format!("{}: {e}", dir.display())))?;
        let file = entry.path();
        if !file.is_file() {
            continue;
        }
        let Some(format) = Format::of(&file) else {
            continue;
        };
        if let Some(pattern) = &pattern {
            let name = entry.file_name();
            match name.to_str() {
                Some(name) if wildcard_match(pattern, name) => {}
                _ => continue,
            }
        }
        let abs = std::fs::canonicalize(&file)
            .map_err(|e| Error::Unavailable(format!("{}: {e}", file.display())))?;
        files.push((abs, format));
    }
    files.sort();
    Ok(files)
}

/// Shell-style match of `name` against `pattern` (`*` any run, `?` one char).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Greedy matching with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The SQL identifier for a file: its stem, lower-cased (DataFusion folds
/// unquoted identifiers to lower case), other characters than `[a-z0-9_]`
/// replaced by `_`, and a leading `_` if it would start with a digit.
fn table_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Registers one file as table `name` with the reader for its format.
async fn register(ctx: &SessionContext, name: &str, file: &Path, format: Format) -> Result<()> {
    let location = file
        .to_str()
        .ok_or_else(|| Error::Config(format!("{} is not a UTF-8 path", file.display())))?;
    // The listing table filters files by extension even when given one file,
    // so pass the file's own extension (".ipc", ".CSV", …) rather than the default.
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    let context = |e: datafusion::error::DataFusionError| match Error::from(e) {
        Error::InvalidQuery(m) | Error::Internal(m) => {
            Error::Config(format!("cannot read {}: {m}", file.display()))
        }
        other => other,
    };
    match format {
        Format::Parquet => {
            let opts = ParquetReadOptions {
                file_extension: &ext,
                ..Default::default()
            };
            ctx.register_parquet(name, location, opts)
                .await
                .map_err(context)
        }
        Format::Csv => {
            let opts = CsvReadOptions::new().has_header(true).file_extension(&ext);
            ctx.register_csv(name, location, opts)
                .await
                .map_err(context)
        }
        Format::Arrow => {
            let opts = ArrowReadOptions {
                file_extension: &ext,
                ..Default::default()
            };
            ctx.register_arrow(name, location, opts)
                .await
                .map_err(context)
        }
    }
}

/// The row count a Parquet footer states, or `None` if it cannot be read.
async fn parquet_rows(file: &Path) -> Option<i64> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&file).ok()?;
        let reader = SerializedFileReader::new(f).ok()?;
        Some(reader.metadata().file_metadata().num_rows())
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Float64Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use datafusion::physical_plan::execute_stream_partitioned;
    use parquet::arrow::ArrowWriter;

    /// Runs every partition of `sql` and returns all batches.
    async fn collect_all(source: &FilesSource, sql: &str) -> Result<Vec<RecordBatch>> {
        let plan = source.physical_plan(sql).await?;
        let mut out = Vec::new();
        for mut s in execute_stream_partitioned(plan, source.ctx.task_ctx())? {
            while let Some(b) = s.next().await {
                out.push(b?);
            }
        }
        Ok(out)
    }

    /// A table of `n` rows: id, x = id / 2, name = "n{id}" (null for id % 7 == 0).
    fn sample(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let ids: Vec<i64> = (0..n).collect();
        let xs: Vec<f64> = ids.iter().map(|&i| i as f64 / 2.0).collect();
        let names: Vec<Option<String>> = ids
            .iter()
            .map(|&i| (i % 7 != 0).then(|| format!("n{i}")))
            .collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Float64Array::from(xs)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .expect("valid batch")
    }

    fn write_parquet(path: &Path, batch: &RecordBatch) {
        let file = std::fs::File::create(path).expect("create parquet");
        // Small row groups so that the file splits into several partitions.
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .build();
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
        w.write(batch).expect("write");
        w.close().expect("close");
    }

    fn write_csv(path: &Path, batch: &RecordBatch) {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("ids");
        let xs = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("xs");
        let mut text = String::from("id,x,label\n");
        for i in 0..batch.num_rows() {
            text.push_str(&format!(
                "{},{},l{}\n",
                ids.value(i),
                xs.value(i),
                ids.value(i) % 3
            ));
        }
        std::fs::write(path, text).expect("write csv");
    }

    /// Every row of every partition of `sql`, read through `Reader::read`, as
    /// sorted debug strings, plus the largest batch seen.
    async fn read_all(source: &FilesSource, sql: &str) -> (Vec<String>, usize, usize) {
        let plan = source.plan(&Caller::server(), sql).await.expect("plan");
        let mut rows = Vec::new();
        let mut largest = 0;
        for p in &plan.partitions {
            let mut stream = source.read(&Caller::server(), p).await.expect("read");
            while let Some(batch) = stream.next().await {
                let batch = batch.expect("batch");
                assert_eq!(
                    batch.schema(),
                    plan.schema,
                    "batches carry the planned schema"
                );
                largest = largest.max(batch.num_rows());
                rows.extend(rows_of(&batch));
            }
        }
        rows.sort();
        (rows, largest, plan.partitions.len())
    }

    fn rows_of(batch: &RecordBatch) -> Vec<String> {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                    .expect("formatter")
            })
            .collect();
        (0..batch.num_rows())
            .map(|r| {
                formatters
                    .iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    #[tokio::test]
    async fn every_partition_together_returns_the_files_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batch = sample(10_000);
        write_parquet(&dir.path().join("Events-2024.parquet"), &batch);
        write_csv(&dir.path().join("labels.csv"), &batch);
        std::fs::write(dir.path().join("README.txt"), "not a table").expect("write");

        let limits = BatchLimits {
            rows: 300,
            bytes: 1 << 20,
        };
        let source = FilesSource::open(dir.path().to_str().expect("utf8"), limits, 4)
            .await
            .expect("open");

        let tables = source.list_tables(&Caller::server()).await.expect("list");
        let names: Vec<_> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["events_2024", "labels"]);
        assert_eq!(tables[0].rows, Some(10_000));
        assert_eq!(tables[1].rows, None);
        assert_eq!(tables[1].schema.field(0).data_type(), &DataType::Int64);

        let (got, largest, parts) = read_all(&source, "SELECT * FROM events_2024").await;
        assert!(
            parts > 1,
            "a 10-row-group file splits into partitions, got {parts}"
        );
        assert!(largest <= 300, "batches obey the row limit, got {largest}");
        let mut want = rows_of(&batch);
        want.sort();
        assert_eq!(got, want);

        let (got, _, _) = read_all(&source, "SELECT id, label FROM labels").await;
        let mut want: Vec<String> = (0..10_000).map(|i| format!("{i}|l{}", i % 3)).collect();
        want.sort();
        assert_eq!(got, want);

        // Hash-repartitioned plans (aggregates, joins) read partition by
        // partition add up too, and no partition waits for a sibling.
        let within = std::time::Duration::from_secs(60);
        let sql = "SELECT label, count(*) AS n FROM labels GROUP BY label";
        let (got, _, _) = tokio::time::timeout(within, read_all(&source, sql))
            .await
            .expect("no partition waits for its siblings");
        assert_eq!(got, ["l0|3334", "l1|3333", "l2|3333"]);
        let sql = "SELECT e.id, l.label FROM events_2024 e JOIN labels l ON e.id = l.id \
                   WHERE e.x < 50";
        let (got, _, _) = tokio::time::timeout(within, read_all(&source, sql))
            .await
            .expect("no partition waits for its siblings");
        let mut want: Vec<String> = (0..100).map(|i| format!("{i}|l{}", i % 3)).collect();
        want.sort();
        assert_eq!(got, want);

        // Planning twice splits rows the same way: a partition read twice is equal.
        let plan = source
            .plan(&Caller::server(), "SELECT * FROM labels")
            .await
            .expect("plan");
        let last = plan.partitions.last().expect("a partition");
        let mut a = Vec::new();
        let mut b = Vec::new();
        for out in [&mut a, &mut b] {
            let mut s = source.read(&Caller::server(), last).await.expect("read");
            while let Some(batch) = s.next().await {
                out.extend(rows_of(&batch.expect("batch")));
            }
            out.sort();
        }
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn where_and_projection_are_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_parquet(&dir.path().join("t.parquet"), &sample(5_000));
        let glob = format!("{}/*.parquet", dir.path().display());
        let source = FilesSource::open(&glob, BatchLimits::default(), 3)
            .await
            .expect("open");
        let sql = "SELECT name, id * 2 AS twice FROM t WHERE id >= 4990 AND name IS NOT NULL";
        let schema = source
            .describe(&Caller::server(), sql)
            .await
            .expect("describe");
        let cols: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(cols, ["name", "twice"]);
        let (got, _, _) = read_all(&source, sql).await;
        let mut want: Vec<String> = (4990..5000)
            .filter(|i| i % 7 != 0)
            .map(|i| format!("n{i}|{}", i * 2))
            .collect();
        want.sort();
        assert_eq!(got, want);

        let all = collect_all(&source, "SELECT count(*) FROM t")
            .await
            .expect("count");
        let n = all[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert_eq!(n.value(0), 5_000);
        assert!(!n.is_null(0));
    }

    #[tokio::test]
    async fn arrow_ipc_files_are_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batch = sample(100);
        let f = std::fs::File::create(dir.path().join("feat.arrow")).expect("create");
        let mut w = arrow::ipc::writer::FileWriter::try_new(f, &batch.schema()).expect("ipc");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
        let f = std::fs::File::create(dir.path().join("more.arrows")).expect("create");
        let mut w = arrow::ipc::writer::StreamWriter::try_new(f, &batch.schema()).expect("ipc");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
        let source = FilesSource::open(
            dir.path().to_str().expect("utf8"),
            BatchLimits::default(),
            2,
        )
        .await
        .expect("open");
        let (got, _, _) =
            read_all(&source, "SELECT * FROM feat UNION ALL SELECT * FROM more").await;
        let mut want = rows_of(&batch);
        want.extend(rows_of(&batch));
        want.sort();
        assert_eq!(got, want);
    }

    /// A source over one Parquet table `t` of 10 rows, in a directory
    /// that lives as long as the returned guard.
    async fn ten_rows_in_t() -> (tempfile::TempDir, FilesSource) {
        let dir = tempfile::tempdir().expect("tempdir");
        write_parquet(&dir.path().join("t.parquet"), &sample(10));
        let source = FilesSource::open(
            dir.path().to_str().expect("utf8"),
            BatchLimits::default(),
            2,
        )
        .await
        .expect("open");
        (dir, source)
    }

    #[tokio::test]
    async fn unknown_tables_and_writes_are_invalid_queries() {
        let (_dir, source) = ten_rows_in_t().await;
        match source.plan(&Caller::server(), "SELECT * FROM nope").await {
            Err(Error::InvalidQuery(m)) => assert!(m.contains("nope"), "{m}"),
            other => panic!("expected InvalidQuery, got {other:?}"),
        }
        match source.plan(&Caller::server(), "SELEC 1").await {
            Err(Error::InvalidQuery(_)) => {}
            other => panic!("expected InvalidQuery, got {other:?}"),
        }
        match source.plan(&Caller::server(), "DROP TABLE t").await {
            Err(Error::InvalidQuery(_)) => {}
            other => panic!("expected InvalidQuery, got {other:?}"),
        }
        let bad = Partition {
            segment: 0,
            spec: PartitionSpec::Files {
                sql: "SELECT * FROM t".into(),
                partition: 999,
            },
        };
        assert!(matches!(
            source.read(&Caller::server(), &bad).await,
            Err(Error::BadTicket(_))
        ));
    }

    #[tokio::test]
    async fn nothing_matching_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        let err = FilesSource::open(
            dir.path().to_str().expect("utf8"),
            BatchLimits::default(),
            2,
        )
        .await
        .expect_err("no tables");
        assert!(err.to_string().contains("no *.parquet"), "{err}");
        let missing = dir.path().join("missing");
        let err = FilesSource::open(missing.to_str().expect("utf8"), BatchLimits::default(), 2)
            .await
            .expect_err("missing");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn names_and_globs() {
        assert_eq!(
            table_name(Path::new("/d/Events-2024.v2.parquet")),
            "events_2024_v2"
        );
        assert_eq!(table_name(Path::new("/d/2024.csv")), "_2024");
        assert!(wildcard_match("*.parquet", "a.parquet"));
        assert!(wildcard_match("part-??.csv", "part-01.csv"));
        assert!(!wildcard_match("part-??.csv", "part-1.csv"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn rechunk_respects_both_limits() {
        let batch = sample(1000);
        let by_rows = rechunk(
            &batch,
            BatchLimits {
                rows: 300,
                bytes: usize::MAX,
            },
        );
        let sizes: Vec<_> = by_rows.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [300, 300, 300, 100]);
        let per_row = batch.get_array_memory_size().div_ceil(1000);
        let by_bytes = rechunk(
            &batch,
            BatchLimits {
                rows: 10_000,
                bytes: per_row * 100,
            },
        );
        assert_eq!(by_bytes.len(), 10);
        assert_eq!(
            by_bytes.iter().map(RecordBatch::num_rows).sum::<usize>(),
            1000
        );
    }

    /// A client's SQL is planned on a tokio worker, whose stack is 2 MiB:
    /// nesting just under the parser's recursion limit must plan or be
    /// refused, and nesting far over it be refused, without exhausting it
    /// (in every build profile: the tests run the dev profile's).
    #[test]
    fn deeply_nested_sql_is_planned_or_refused_within_a_workers_stack() {
        let worker = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let (_dir, source) = ten_rows_in_t().await;
                    let mut refused = Vec::new();
                    for depth in [40, 5_000] {
                        for sql in [
                            format!("SELECT {}id{} FROM t", "(".repeat(depth), ")".repeat(depth)),
                            format!("SELECT * FROM t WHERE {}true", "NOT ".repeat(depth)),
                            format!("SELECT {}id FROM t", "-".repeat(depth)),
                            format!(
                                "SELECT * FROM {}t{}",
                                "(SELECT * FROM ".repeat(depth),
                                ") s".repeat(depth)
                            ),
                        ] {
                            let described = source.describe(&Caller::server(), &sql).await;
                            let planned = source.plan(&Caller::server(), &sql).await;
                            refused.push((depth, described.is_err() && planned.is_err()));
                        }
                    }
                    refused
                })
            })
            .expect("thread");
        let refused = worker.join().expect("the planner stayed within the stack");
        for (depth, was_refused) in refused {
            if depth > 100 {
                assert!(was_refused, "nesting {depth} deep was planned");
            }
        }
    }
}
