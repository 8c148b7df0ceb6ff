//! The result tables, where users already look: shaped like MADlib's
//! model-selection output.
//!
//! - `<table>`: one row a model — key, architecture, configuration (JSON),
//!   weights and optimizer state (safetensors as `bytea`), the metrics of
//!   the epoch those weights are from (the last, or the best with `keep =
//!   "best"`, `kept_epoch`), the epochs it trained and why it stopped there
//!   (a search or early stopping may stop it before the last epoch).
//! - `<table>_info`: per-epoch training and validation arrays of every
//!   metric (loss, accuracy; AUC for binary; RMSE, MAE, R² for regression;
//!   NULL where the task has none) and epoch times, one row a model.
//! - `<table>_summary`: one row for the run — source, grid size, trainers,
//!   epochs, seed, wall time, the metric that ranks, the best model and its
//!   value, the search and the model-epochs it trained.

use tokio_postgres::NoTls;

use mop_core::metrics::Metric;
use mop_core::run_config::RunConfig;
use mop_core::run_dir::checkpoint::{EpochMetrics, Split};
use mop_core::run_dir::read_guard::{marker_comment, output_tables};
use mop_core::run_dir::results::{arch_name, leaderboard, model_epochs, Ranked};
use mop_core::run_dir::RunOutcome;

use crate::error::{Error, Result};
use crate::output_guard;

fn opt(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn db_err(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(d) => Error::Database(d.message().to_string()),
        None => Error::Database(e.to_string()),
    }
}

/// Writes the three result tables, replacing earlier ones of the same name
/// that [`output_guard::check_database`] lets it replace (checked again here, just
/// before), and marks them as hopper's.
pub async fn write_tables(
    outcome: &RunOutcome,
    config: &RunConfig,
    database: &str,
    table: &str,
) -> Result<()> {
    let table = mop_core::ident::table(table, "output.table")?.to_string();
    let table = table.as_str();
    let (mut client, conn) = tokio_postgres::connect(database, NoTls)
        .await
        .map_err(|e| Error::Database(format!("cannot connect to {database}: {e}")))?;
    tokio::spawn(conn);
    // Outside the transaction: a query this database cannot plan must not
    // abort it.
    output_guard::check_database(&client, config, table).await?;
    let tx = client.transaction().await.map_err(db_err)?;
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}, {table}_info, {table}_summary;
         CREATE TABLE {table} (
             model_id int PRIMARY KEY, arch text NOT NULL, config jsonb NOT NULL,
             state bytea, epochs int NOT NULL,
             train_loss float8, train_acc float8, val_loss float8, val_acc float8,
             stopped_at int, stop_reason text,
             val_auc float8, val_rmse float8, val_mae float8, val_r2 float8, kept_epoch int);
         CREATE TABLE {table}_info (
             model_id int PRIMARY KEY, arch text NOT NULL, config jsonb NOT NULL,
             train_loss float8[], train_acc float8[], val_loss float8[], val_acc float8[],
             epoch_seconds float8[], wait_seconds float8[],
             train_auc float8[], val_auc float8[], train_rmse float8[], val_rmse float8[],
             train_mae float8[], val_mae float8[], train_r2 float8[], val_r2 float8[]);
         CREATE TABLE {table}_summary (
             source text, flight text, models int, trainers int, epochs int, seed int8,
             seconds float8, best_model_id int, best_val_acc float8,
             search text, model_epochs int, full_model_epochs int,
             finished_at timestamptz DEFAULT now(), metric text, best_value float8);"
    ))
    .await
    .map_err(db_err)?;
    let comment = marker_comment(table).replace('\'', "''");
    for t in output_tables(table) {
        tx.batch_execute(&format!("COMMENT ON TABLE {t} IS '{comment}'"))
            .await
            .map_err(db_err)?;
    }
    let ins = tx
        .prepare(&format!(
            "INSERT INTO {table} VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8, $9, $10, $11,
                                        $12, $13, $14, $15, $16)"
        ))
        .await
        .map_err(db_err)?;
    let ins_info = tx
        .prepare(&format!(
            "INSERT INTO {table}_info VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8, $9,
                                             $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .await
        .map_err(db_err)?;
    let metric = config.metric();
    for m in &outcome.models {
        // The metrics of the epoch whose weights go into `state`.
        let last = m.kept_metrics();
        let task = m.config.task;
        let val = |x: Metric| -> Option<f64> {
            x.applies_to(task)
                .then(|| opt(last.value(x, Split::Validation)))
                .flatten()
        };
        let cfg = serde_json::to_string(&m.config)?;
        let arch = arch_name(&m.config.arch);
        let state: Option<&[u8]> = m.state_bytes();
        tx.execute(
            &ins,
            &[
                &(m.id as i32),
                &arch,
                &cfg,
                &state,
                &(m.metrics.len() as i32),
                &opt(last.train_loss()),
                &opt(last.train_acc()),
                &opt(last.val_loss()),
                &opt(last.val_acc()),
                &m.stop.map(|s| s.epochs as i32),
                &m.stop.map(|s| s.reason.to_string()),
                &val(Metric::Auc),
                &val(Metric::Rmse),
                &val(Metric::Mae),
                &val(Metric::R2),
                &m.kept.map(|e| e as i32 + 1),
            ],
        )
        .await
        .map_err(db_err)?;
        let col = |f: fn(&EpochMetrics) -> f64| -> Vec<Option<f64>> {
            m.metrics.iter().map(|e| opt(f(e))).collect()
        };
        let series = |x: Metric, split: Split| -> Option<Vec<Option<f64>>> {
            x.applies_to(task)
                .then(|| m.metrics.iter().map(|e| opt(e.value(x, split))).collect())
        };
        let (t, v) = (Split::Train, Split::Validation);
        tx.execute(
            &ins_info,
            &[
                &(m.id as i32),
                &arch,
                &cfg,
                &col(EpochMetrics::train_loss),
                &col(EpochMetrics::train_acc),
                &col(EpochMetrics::val_loss),
                &col(EpochMetrics::val_acc),
                &col(|e| e.seconds),
                &col(|e| e.wait_seconds),
                &series(Metric::Auc, t),
                &series(Metric::Auc, v),
                &series(Metric::Rmse, t),
                &series(Metric::Rmse, v),
                &series(Metric::Mae, t),
                &series(Metric::Mae, v),
                &series(Metric::R2, t),
                &series(Metric::R2, v),
            ],
        )
        .await
        .map_err(db_err)?;
    }
    let best = leaderboard(&outcome.models, metric).first().map(|m| {
        let kept = m.kept_metrics();
        (
            m.id as i32,
            opt(kept.val_acc()),
            m.kept_value(metric, Split::Validation)
                .or_else(|| m.kept_value(metric, Split::Train)),
        )
    });
    tx.execute(
        &format!(
            "INSERT INTO {table}_summary (source, flight, models, trainers, epochs, seed, seconds, best_model_id, best_val_acc,
                                          search, model_epochs, full_model_epochs, metric, best_value)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ),
        &[
            &config.train_sql()?,
            &config.source.flight.to_string(),
            &(outcome.models.len() as i32),
            &(outcome.trainers as i32),
            &(config.epochs() as i32),
            &(config.train.seed as i64),
            &outcome.seconds,
            &best.map(|b| b.0),
            &best.and_then(|b| b.1),
            &config.search.kind.name(),
            &(model_epochs(outcome) as i32),
            &((outcome.models.len() * config.epochs()) as i32),
            &metric.name(),
            &best.and_then(|b| b.2),
        ],
    )
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(())
}
