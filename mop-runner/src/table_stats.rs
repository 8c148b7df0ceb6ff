//! A table input's features, resolved from the data before anything trains
//! (see [`mop_core::table`]): the columns, from the training query's
//! schema, and each numeric column's mean and population standard
//! deviation over the **training** rows, computed by the database — one
//! aggregate query, which every segment answers for its own rows through
//! the flight-server, the answers combined exactly by the runner.
//!
//! The resolved input goes into every model's configuration (so trainers
//! and `results.json` carry it) and into the run directory's
//! `table_features.json`, which `--resume` reads instead of asking again:
//! a resumed run featurizes as the run it continues did, whatever rows were
//! added since.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema};

use crate::error::{Error, Result};
use crate::pins::Pins;
use mop_core::config::{InputSpec, ModelConfig};
use mop_core::run_config::RunConfig;
use mop_core::table::{
    self, ArrayFeature, ColumnKind, FeaturesFile, Moments, NumericFeature, TableFeatures,
};

/// Returns `models` with a table input's features resolved: read from the
/// run directory when resuming a run that resolved them, else computed
/// through the flight-server(s) and written there. Other inputs pass as
/// they are.
pub async fn resolve(
    config: &RunConfig,
    mut models: Vec<ModelConfig>,
    resume: bool,
    pins: &Pins,
) -> Result<Vec<ModelConfig>> {
    let InputSpec::Table { features: None, .. } = &config.grid.input else {
        return Ok(models);
    };
    let dir = &config.output.dir;
    let sql = config.train_sql()?;
    let saved = match resume {
        true => FeaturesFile::read(dir)?,
        false => None,
    };
    let input = match saved {
        Some(file) if file.sql == sql => file.input,
        Some(file) => {
            return Err(Error::Config(format!(
                "{}: the table statistics were computed over {:?}, this run trains on {sql:?}; \
                 start the run over without --resume",
                dir.join(table::FEATURES_FILE).display(),
                file.sql
            )))
        }
        None => {
            let input = compute(config, &sql, pins).await?;
            FeaturesFile {
                format_version: table::FORMAT_VERSION,
                sql: sql.clone(),
                input: input.clone(),
            }
            .write(dir)?;
            input
        }
    };
    for m in &mut models {
        m.input = input.clone();
        m.validate()?;
    }
    Ok(models)
}

/// The table input of `config` with its features computed over `sql`.
async fn compute(config: &RunConfig, sql: &str, pins: &Pins) -> Result<InputSpec> {
    let InputSpec::Table {
        label,
        columns,
        exclude,
        categorical,
        ..
    } = &config.grid.input
    else {
        return Err(Error::Config("not a table input".into()));
    };
    let locations = config.source.flight.locations();
    let first = locations
        .first()
        .ok_or_else(|| Error::Config("source.flight names no flight-server".into()))?;
    let schema = schema(first, sql, pins).await?;
    let kinds: Vec<(String, ColumnKind)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), kind(f.data_type())))
        .collect();
    let (numeric, arrays) = table::choose(
        &kinds,
        table::Choice {
            label,
            columns,
            exclude,
            categorical,
        },
    )?;
    let stats_sql = table::stats_sql(sql, &numeric, &arrays);
    let mut rows = 0u64;
    let mut moments = vec![Vec::new(); numeric.len()];
    let mut lengths = vec![(u64::MAX, 0u64); arrays.len()];
    for location in locations {
        for batch in read_all(location, &stats_sql, pins).await? {
            rows += sum_i64(&batch, "n")?;
            for (j, parts) in moments.iter_mut().enumerate() {
                parts.extend(segment_moments(&batch, j)?);
            }
            for (k, (lo, hi)) in lengths.iter_mut().enumerate() {
                for (name, keep_min) in [
                    (format!("min_len_{k}"), true),
                    (format!("max_len_{k}"), false),
                ] {
                    let c = int64(&batch, &name)?;
                    for v in c.iter().flatten() {
                        let v = v.max(0) as u64;
                        if keep_min {
                            *lo = (*lo).min(v);
                        } else {
                            *hi = (*hi).max(v);
                        }
                    }
                }
            }
        }
    }
    if rows == 0 {
        return Err(Error::Config(format!(
            "the training query returns no rows, so the table input has no statistics: {sql}"
        )));
    }
    let numeric = numeric
        .into_iter()
        .zip(&moments)
        .map(|(name, parts)| {
            let m = table::combine(parts);
            if !(m.mean.is_finite() && m.var.is_finite()) {
                return Err(Error::Config(format!(
                    "column {name:?} has NaN or infinite values over the training rows (mean {}, \
                     variance {}): filter them out in source.sql, or exclude the column",
                    m.mean, m.var
                )));
            }
            Ok(NumericFeature {
                name,
                mean: m.mean,
                std: m.var.max(0.0).sqrt(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let arrays = arrays
        .into_iter()
        .zip(lengths)
        .map(|(name, (lo, hi))| match (lo, hi) {
            (lo, hi) if lo == hi && hi > 0 => Ok(ArrayFeature {
                name,
                len: hi as usize,
            }),
            (u64::MAX, _) => Err(Error::Config(format!(
                "array column {name:?} is NULL in every training row: exclude it"
            ))),
            (lo, hi) => Err(Error::Config(format!(
                "array column {name:?} holds arrays of {lo} to {hi} elements: a table input \
                 flattens arrays of one length (exclude the column, or make them equal)"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut input = config.grid.input.clone();
    if let InputSpec::Table { features, .. } = &mut input {
        *features = Some(TableFeatures {
            numeric,
            arrays,
            rows,
        });
    }
    Ok(input)
}

/// What a column of the training query can be as a feature.
fn kind(t: &DataType) -> ColumnKind {
    match t {
        t if t.is_numeric() => ColumnKind::Numeric,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
            if f.data_type().is_numeric() =>
        {
            ColumnKind::Array
        }
        _ => ColumnKind::Other,
    }
}

/// The training query's schema (planned with `LIMIT 0`; its empty
/// endpoints are read, so no cursor waits for a reader).
async fn schema(location: &str, sql: &str, pins: &Pins) -> Result<Schema> {
    let probe = format!(
        "SELECT * FROM ({}) AS hopper_rows LIMIT 0",
        sql.trim().trim_end_matches(';')
    );
    let planned = plan_at(location, &probe, pins).await?;
    let schema = planned.schema.as_ref().clone();
    drain(planned.slices).await?;
    Ok(schema)
}

/// Every batch of `sql` at `location`.
async fn read_all(location: &str, sql: &str, pins: &Pins) -> Result<Vec<RecordBatch>> {
    drain(plan_at(location, sql, pins).await?.slices).await
}

/// Plans `sql` at `location` at the run's pinned snapshot there.
async fn plan_at(location: &str, sql: &str, pins: &Pins) -> Result<flight_client::plan::Planned> {
    let id = pins.id(location);
    Ok(flight_client::plan::plan_query_at(location, None, sql, id.as_deref()).await?)
}

async fn drain(slices: Vec<flight_client::FlightSlice>) -> Result<Vec<RecordBatch>> {
    let mut rx =
        flight_client::read::spawn_reader::<Error>(&tokio::runtime::Handle::current(), slices);
    let mut batches = Vec::new();
    while let Some(b) = rx.recv().await {
        batches.push(b?);
    }
    Ok(batches)
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b arrow_array::ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Flight(format!("the statistics query returned no column {name}")))
}

fn int64(batch: &RecordBatch, name: &str) -> Result<arrow_array::Int64Array> {
    let c = arrow_cast::cast(column(batch, name)?, &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().clone())
}

fn sum_i64(batch: &RecordBatch, name: &str) -> Result<u64> {
    Ok(int64(batch, name)?
        .iter()
        .flatten()
        .map(|v| v.max(0) as u64)
        .sum())
}

/// Numeric column `j`'s moments on each segment (row) of `batch`.
fn segment_moments(batch: &RecordBatch, j: usize) -> Result<Vec<Moments>> {
    let n = int64(batch, &format!("n_{j}"))?;
    let float = |name: String| -> Result<arrow_array::Float64Array> {
        let c = arrow_cast::cast(column(batch, &name)?, &DataType::Float64)?;
        Ok(c.as_primitive::<Float64Type>().clone())
    };
    let (mean, var) = (float(format!("mean_{j}"))?, float(format!("var_{j}"))?);
    Ok((0..batch.num_rows())
        .filter(|&r| n.is_valid(r) && n.value(r) > 0)
        .map(|r| Moments {
            n: n.value(r) as u64,
            mean: mean.value(r),
            var: if var.is_valid(r) { var.value(r) } else { 0.0 },
        })
        .collect())
}
