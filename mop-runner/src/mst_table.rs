//! `[grid] table`: the configurations of a run read from a MADlib-style
//! model-selection table through the run's flight-server, so `mop` still
//! speaks Flight only. The table's format is [`mop_core::search::mst`]'s.

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use mop_core::config::ModelConfig;
use mop_core::run_config::RunConfig;
use mop_core::search::mst;

use crate::error::{Error, Result};

/// The model configurations of the run, reading `grid.table` through
/// the (first) flight-server when the grid is kept in the database.
pub async fn load_models(config: &RunConfig) -> Result<Vec<ModelConfig>> {
    let Some(table) = &config.grid.table else {
        return Ok(config.models()?);
    };
    let sql = mst::query(table)?;
    let location = config.source.flight.locations()[0].to_string();
    let slices = flight_client::plan::plan(&location, &sql).await?;
    let mut rx =
        flight_client::read::spawn_reader::<Error>(&tokio::runtime::Handle::current(), slices);
    let mut batches = Vec::new();
    while let Some(b) = rx.recv().await {
        batches.push(b?);
    }
    Ok(rows(&batches)?
        .iter()
        .map(|row| {
            mst::config(
                row,
                &config.grid.input,
                config.grid.classes,
                config.grid.task,
            )
        })
        .collect::<mop_core::Result<_>>()?)
}

/// The rows of record batches read from the table.
fn rows(batches: &[RecordBatch]) -> Result<Vec<mst::Row>> {
    let mut out = Vec::new();
    for b in batches {
        let col = |name: &str, to: &DataType| -> Result<arrow_array::ArrayRef> {
            let c = b.column_by_name(name).ok_or_else(|| {
                Error::Config(format!(
                    "the model-selection table has no column {name}: it needs {}",
                    mst::COLUMNS.join(", ")
                ))
            })?;
            Ok(arrow_cast::cast(c, to)?)
        };
        let key = col("mst_key", &DataType::Int64)?;
        let key = key.as_primitive::<arrow_array::types::Int64Type>();
        let text: Vec<arrow_array::ArrayRef> = mst::COLUMNS[1..]
            .iter()
            .map(|c| col(c, &DataType::Utf8))
            .collect::<Result<_>>()?;
        let text: Vec<_> = text.iter().map(|a| a.as_string::<i32>()).collect();
        for i in 0..b.num_rows() {
            if key.is_null(i) {
                return Err(Error::Config(
                    "the model-selection table has a row without an mst_key".into(),
                ));
            }
            let get = |c: usize| {
                if text[c].is_null(i) {
                    String::new()
                } else {
                    text[c].value(i).to_string()
                }
            };
            out.push(mst::Row {
                key: key.value(i),
                arch: get(0),
                compile_params: get(1),
                fit_params: get(2),
            });
        }
    }
    Ok(mst::ordered(out)?)
}
