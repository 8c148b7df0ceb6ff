//! `mop predict`: score a table with a trained model and write the
//! predictions back into the database, next to the rows they score.
//!
//! # Design
//!
//! ```text
//!  GetFlightInfo(SQL) ─► endpoints, each with app_metadata {"segment": i}
//!  per (server, segment):  DoGet(tickets of the segment) ─► bounded channel
//!      ─► scorer thread: featurize (the trainer's Featurizer), forward under no_grad
//!      ─► bounded channel ─► DoPut {"table": OUT, "segment": i, "create": true}
//! ```
//!
//! Predictions of the rows read from segment *i* go back to segment *i*
//! (one `DoPut`, one transaction per segment), keyed by the input's key
//! column: `(<key>, predicted int4, probability float8)`, where
//! `probability` is the probability of class 1 for a two-class or binary
//! model (a binary model's sigmoid of its logit; `predicted` is 1 where the
//! logit is above 0) and the winning class's probability otherwise; a
//! regression model writes `(<key>, predicted float8)`. Nothing is collected: rows
//! flow from the database through the model and back batch by batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use clap::{ArgGroup, Args};
use flight_client::put::{PutCommand, PutMode, PutOutcome};
use futures::TryStreamExt;
use tch::Kind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{Error, Result};
use crate::featurize::Featurizer;
use crate::model::Model;
use flight_client::plan::plan_query;
use flight_client::read::spawn_reader;
use flight_client::FlightSlice;
use mop_core::config::{ModelConfig, Task};
use mop_core::run_dir::results::{RunResults, RESULTS_FILE};

/// Rows per forward pass (bounds the memory of dense or image inputs).
const FORWARD_ROWS: usize = 1024;
/// Scored batches the scorer may run ahead of the upload.
const OUTPUT_DEPTH: usize = 2;

/// `mop predict` options.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["table", "sql"])))]
pub struct PredictArgs {
    /// The run's output directory (results.json and models/).
    #[arg(long)]
    pub dir: PathBuf,
    /// The model: its id, or `best` (the leaderboard's first).
    #[arg(long, default_value = "best")]
    pub model: String,
    /// flight-server location(s), comma separated; default: the run's `source.flight`.
    #[arg(long)]
    pub flight: Option<String>,
    /// The table to score (`SELECT * FROM <table>`).
    #[arg(long)]
    pub table: Option<String>,
    /// The query whose rows to score (instead of --table).
    #[arg(long)]
    pub sql: Option<String>,
    /// The column that identifies a row; copied into the predictions.
    #[arg(long, default_value = "id")]
    pub key: String,
    /// The table that receives the predictions (created on every segment).
    #[arg(long)]
    pub into: String,
    /// Replace the predictions table instead of appending to it.
    #[arg(long)]
    pub replace: bool,
    /// Intra-op threads (libtorch).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What `mop predict` did on one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScore {
    /// The flight-server that holds the segment.
    pub location: String,
    /// The segment.
    pub segment: i32,
    /// Rows scored and written.
    pub rows: u64,
}

/// A trained model as a run left it.
struct RunModel {
    id: usize,
    config: ModelConfig,
    file: PathBuf,
}

/// The model `which` (`best` or an id) of the run in `dir`, and the run's
/// flight-server locations.
fn find_model(dir: &Path, which: &str) -> Result<(RunModel, Vec<String>)> {
    let path = dir.join(RESULTS_FILE);
    if !path.is_file() {
        return Err(Error::Config(format!(
            "cannot read {}: --dir must be the output directory of a finished run",
            path.display()
        )));
    }
    let results = RunResults::read(&path)?;
    let id = match which {
        "best" => results
            .best()
            .map(|m| m.model_id)
            .ok_or_else(|| Error::Config(format!("{} names no best model", path.display())))?,
        n => n.parse::<usize>().map_err(|_| {
            Error::Config(format!("--model must be a model id or `best`, not {n:?}"))
        })?,
    };
    let entry = results
        .models
        .iter()
        .find(|m| m.model_id == id)
        .ok_or_else(|| {
            Error::Config(format!(
                "{} has no model {id} (ids 0..{})",
                path.display(),
                results.models.len()
            ))
        })?;
    let file = entry.model_file.as_deref().ok_or_else(|| {
        Error::Config(format!(
            "model {id} has no weights file in {}",
            path.display()
        ))
    })?;
    Ok((
        RunModel {
            id,
            config: entry.config.clone(),
            file: dir.join(file),
        },
        split_locations(&results.source.flight),
    ))
}

fn split_locations(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Scores the input with the chosen model; returns the model id and what
/// was written per segment.
pub async fn predict(args: &PredictArgs) -> Result<(usize, Vec<SegmentScore>)> {
    let (run_model, run_flights) = find_model(&args.dir, &args.model)?;
    let locations = match &args.flight {
        Some(f) => split_locations(f),
        None => run_flights,
    };
    if locations.is_empty() {
        return Err(Error::Config(
            "no flight-server: pass --flight grpc+tcp://HOST:PORT".into(),
        ));
    }
    let sql = match (&args.table, &args.sql) {
        (Some(t), None) => format!("SELECT * FROM {t}"),
        (None, Some(s)) => s.trim().trim_end_matches(';').to_owned(),
        _ => {
            return Err(Error::Config(
                "give exactly one of --table and --sql".into(),
            ))
        }
    };
    let bytes = std::fs::read(&run_model.file)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", run_model.file.display())))?;
    let config = run_model.config.clone();
    // A TorchScript model's module: the trained one `mop train` exported
    // into the run directory (so the module file may since have changed
    // or moved), else the file the configuration names.
    let module = crate::export::torchscript_file(&args.dir, run_model.id);
    let module = match &config.arch {
        mop_core::config::Arch::TorchScript { .. } if module.is_file() => {
            Some(std::fs::read(&module)?)
        }
        _ => None,
    };
    let mut model = tokio::task::spawn_blocking(move || {
        match module {
            Some(module) => Model::from_state_with_module(config, &module, &bytes),
            None => Model::from_state(config, &bytes),
        }
        .map(|(model, _optimizer)| model)
    })
    .await
    .map_err(|e| Error::Config(format!("loading the model: {e}")))??;

    let mut scores = Vec::new();
    for location in &locations {
        let planned = plan_query(location, &sql).await?;
        let schema = planned.schema;
        let key = schema.field_with_name(&args.key).map_err(|_| {
            Error::Data(format!(
                "the input has no key column {:?} (columns: {:?}); pass --key",
                args.key,
                schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
            ))
        })?;
        let out_schema = Arc::new(Schema::new(match model.config().task {
            Task::Regression => vec![
                Field::new(key.name(), key.data_type().clone(), true),
                Field::new("predicted", DataType::Float64, false),
            ],
            Task::Binary | Task::Multiclass => vec![
                Field::new(key.name(), key.data_type().clone(), true),
                Field::new("predicted", DataType::Int32, false),
                Field::new("probability", DataType::Float64, false),
            ],
        }));
        // One upload per segment, however many endpoints it was split into;
        // where every segment sees the same tables (Greenplum), one upload
        // of every segment's predictions into the one table.
        let mut groups: BTreeMap<(String, i32), Vec<FlightSlice>> = BTreeMap::new();
        for (slice, segment) in planned.slices.into_iter().zip(planned.segments) {
            let segment = if planned.shared_tables { 0 } else { segment };
            groups
                .entry((slice.location.clone(), segment))
                .or_default()
                .push(slice);
        }
        for ((put_location, segment), slices) in groups {
            let command = PutCommand::new(args.into.clone(), segment)
                .with_create(true)
                .with_mode(if args.replace {
                    PutMode::Replace
                } else {
                    PutMode::Append
                });
            let (back, rows) = score_segment(
                model,
                &args.key,
                slices,
                &put_location,
                command,
                out_schema.clone(),
            )
            .await?;
            model = back;
            scores.push(SegmentScore {
                location: put_location,
                segment,
                rows,
            });
        }
    }
    Ok((run_model.id, scores))
}

/// Why the scorer stopped early.
enum ScoreStop {
    /// Featurizing or the forward pass failed; the sender keeps the upload
    /// open so that it can be cancelled instead of committed.
    Failed(Error, mpsc::Sender<Result<RecordBatch, FlightError>>),
    /// The upload went away (its error says why).
    UploadClosed,
    /// Reading the input failed.
    Input(Error, mpsc::Sender<Result<RecordBatch, FlightError>>),
}

/// Reads one segment's endpoints, scores them on a blocking thread and
/// uploads the predictions to the same segment; returns the model (for
/// the next segment) and the rows the server wrote.
async fn score_segment(
    model: Model,
    key: &str,
    slices: Vec<FlightSlice>,
    location: &str,
    command: PutCommand,
    out_schema: SchemaRef,
) -> Result<(Model, u64)> {
    let input = spawn_reader(&tokio::runtime::Handle::current(), slices);
    let (tx, rx) = mpsc::channel(OUTPUT_DEPTH);
    // Logged in like every other client of mop (HOPPER_FLIGHT_USER).
    let mut client = flight_client::connect::client(location).await?;
    let upload = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(command.descriptor()))
        .with_schema(out_schema.clone())
        .build(ReceiverStream::new(rx));
    let put_err = |e: FlightError| {
        Error::Flight(format!(
            "DoPut of {} to segment {} at {location}: {e}",
            command.table, command.segment
        ))
    };
    let mut put = Box::pin(async move {
        let results: Vec<arrow_flight::PutResult> =
            client.do_put(upload).await?.try_collect().await?;
        Ok::<_, FlightError>(results)
    });
    let key = key.to_owned();
    let mut scorer =
        tokio::task::spawn_blocking(move || score_loop(model, &key, out_schema, input, tx));
    let (scored, put_early) = tokio::select! {
        s = &mut scorer => (s, None),
        p = &mut put => (scorer.await, Some(p)),
    };
    let (model, scored) = scored.map_err(|e| Error::Data(format!("the scorer failed: {e}")))?;
    match scored {
        Ok(_) => {}
        Err(ScoreStop::UploadClosed) => {
            let p = match put_early {
                Some(p) => p,
                None => put.await,
            };
            return Err(match p {
                Err(e) => put_err(e),
                Ok(_) => Error::Flight("the upload ended before the input".into()),
            });
        }
        Err(ScoreStop::Failed(e, tx)) | Err(ScoreStop::Input(e, tx)) => {
            // Cancel the DoPut while its stream is still open: the server
            // sees an aborted upload and rolls back, instead of a clean
            // end that it would commit.
            drop(put);
            drop(tx);
            return Err(e);
        }
    }
    let results = match put_early {
        Some(p) => p,
        None => put.await,
    }
    .map_err(put_err)?;
    let outcome = results
        .first()
        .and_then(|r| serde_json::from_slice::<PutOutcome>(&r.app_metadata).ok())
        .ok_or_else(|| Error::Flight(format!("DoPut at {location} answered no row count")))?;
    Ok((model, outcome.rows))
}

/// The scorer thread: batches in, `(key, predicted, probability)` batches out.
fn score_loop(
    model: Model,
    key: &str,
    out_schema: SchemaRef,
    mut input: mpsc::Receiver<Result<RecordBatch>>,
    tx: mpsc::Sender<Result<RecordBatch, FlightError>>,
) -> (Model, std::result::Result<u64, ScoreStop>) {
    let featurizer = Featurizer::new(model.config());
    let mut rows = 0u64;
    while let Some(batch) = input.blocking_recv() {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return (model, Err(ScoreStop::Input(e, tx))),
        };
        let out = match score_batch(&model, &featurizer, key, &out_schema, &batch) {
            Ok(out) => out,
            Err(e) => return (model, Err(ScoreStop::Failed(e, tx))),
        };
        rows += out.num_rows() as u64;
        if tx.blocking_send(Ok(out)).is_err() {
            return (model, Err(ScoreStop::UploadClosed));
        }
    }
    (model, Ok(rows))
}

/// Scores one batch.
fn score_batch(
    model: &Model,
    featurizer: &Featurizer,
    key: &str,
    out_schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let keys = batch
        .column_by_name(key)
        .ok_or_else(|| Error::Data(format!("a batch has no key column {key:?}")))?
        .clone();
    let batch = with_label(batch, featurizer.label_column())?;
    let features = featurizer.featurize(&batch)?;
    let _no_grad = tch::no_grad_guard();
    let n = features.len();
    let (mut predicted, mut probability) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let task = model.config().task;
    let mut start = 0;
    while start < n {
        let len = FORWARD_ROWS.min(n - start);
        let part = features.slice(start, len)?.to_device(model.device());
        let out = model.forward_t(&part.x, false)?;
        if task != Task::Multiclass {
            // One output: a binary model's logit, a regression's value.
            let out = out
                .f_reshape([-1])?
                .f_to_kind(Kind::Double)?
                .f_to_device(tch::Device::Cpu)?
                .f_contiguous()?;
            let values = Vec::<f64>::try_from(&out)?;
            if task == Task::Binary {
                predicted.extend(values.iter().map(|&l| i32::from(l > 0.0)));
                probability.extend(values.iter().map(|&l| 1.0 / (1.0 + (-l).exp())));
            } else {
                probability.extend(values);
            }
            start += len;
            continue;
        }
        let probs = out.f_softmax(-1, Kind::Double)?;
        let (top, class) = probs.f_max_dim(-1, false)?;
        let p = if model.config().classes == 2 {
            probs.f_select(1, 1)?
        } else {
            top
        };
        let p = p.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
        let class = class.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
        probability.extend(Vec::<f64>::try_from(&p)?);
        predicted.extend(Vec::<i64>::try_from(&class)?.into_iter().map(|c| c as i32));
        start += len;
    }
    let columns: Vec<ArrayRef> = match task {
        Task::Regression => vec![keys, Arc::new(Float64Array::from(probability))],
        Task::Binary | Task::Multiclass => vec![
            keys,
            Arc::new(Int32Array::from(predicted)),
            Arc::new(Float64Array::from(probability)),
        ],
    };
    Ok(RecordBatch::try_new(out_schema.clone(), columns)?)
}

/// The featurizer reads labels; rows to score may have none, so a batch
/// without a label column gets a constant one (it does not enter the
/// forward pass).
fn with_label(batch: &RecordBatch, label: &str) -> Result<RecordBatch> {
    if batch.column_by_name(label).is_some() {
        return Ok(batch.clone());
    }
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(label, DataType::Int64, false)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(vec![0i64; batch.num_rows()])));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_run_or_model_is_a_config_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = find_model(dir.path(), "best").err().unwrap();
        assert!(e.to_string().contains("results.json"), "{e}");
        std::fs::write(
            dir.path().join("results.json"),
            r#"{"format_version": 2, "best_model": 0, "models": [], "epochs": 1, "seed": 0,
                "trainers": 1, "seconds": 0, "source": {"flight": "grpc+tcp://a:1,grpc+tcp://b:2", "sql": "SELECT 1"}}"#,
        )
        .unwrap();
        let e = find_model(dir.path(), "3").err().unwrap();
        assert!(e.to_string().contains("no model 3"), "{e}");
        let e = find_model(dir.path(), "first").err().unwrap();
        assert!(e.to_string().contains("`best`"), "{e}");
        assert_eq!(
            split_locations("grpc+tcp://a:1, grpc+tcp://b:2"),
            ["grpc+tcp://a:1", "grpc+tcp://b:2"]
        );
    }
}
