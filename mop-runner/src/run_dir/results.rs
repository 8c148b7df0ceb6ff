//! Where results land: files in the output directory, and tables in the
//! database shaped like MADlib's model-selection output, so that users find
//! them where they already look.
//!
//! - `<table>`: one row a model — key, architecture, configuration (JSON),
//!   weights and optimizer state (safetensors as `bytea`), final metrics,
//!   the epochs it trained and why it stopped there (a search may stop it
//!   before the last epoch).
//! - `<table>_info`: per-epoch training and validation loss and accuracy
//!   arrays and epoch times, one row a model.
//! - `<table>_summary`: one row for the run — source, grid size, trainers,
//!   epochs, seed, wall time, best model, the search and the model-epochs
//!   it trained.

use serde::Serialize;
use tokio_postgres::NoTls;

use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use crate::grid::RunConfig;
use crate::run_dir::checkpoint::EpochMetrics;
use crate::run_dir::guard;
use crate::run_dir::RunOutcome;
use crate::search::{Reason, SearchKind, Stop};

/// One model's result.
#[derive(Debug, Clone)]
pub struct ModelResult {
    /// Model id (index in the grid).
    pub id: usize,
    /// Its configuration.
    pub config: ModelConfig,
    /// Per-epoch metrics.
    pub metrics: Vec<EpochMetrics>,
    /// Final weights and optimizer state (safetensors).
    pub state: Option<std::sync::Arc<Vec<u8>>>,
    /// Where and why its training ended (`None`: the run did not decide,
    /// as in results written before searches existed).
    pub stop: Option<Stop>,
}

impl ModelResult {
    /// The last epoch's metrics.
    pub fn last(&self) -> EpochMetrics {
        self.metrics.last().cloned().unwrap_or_default()
    }

    /// The score models are ranked by: validation accuracy, else training accuracy.
    pub fn score(&self) -> f64 {
        let m = self.last();
        if m.val_samples > 0 {
            m.val_acc()
        } else {
            m.train_acc()
        }
    }
}

/// A short name of an architecture, e.g. `mlp[1000,500]`.
pub fn arch_name(a: &Arch) -> String {
    match a {
        Arch::Mlp { hidden } => format!(
            "mlp[{}]",
            hidden
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Arch::LogReg => "logreg".into(),
        Arch::Cnn => "cnn".into(),
        Arch::ResNet18 => "resnet18".into(),
    }
}

#[derive(Serialize)]
struct ModelRow<'a> {
    model_id: usize,
    arch: String,
    config: &'a ModelConfig,
    train_loss: Vec<f64>,
    train_acc: Vec<f64>,
    val_loss: Vec<Option<f64>>,
    val_acc: Vec<Option<f64>>,
    epoch_seconds: Vec<f64>,
    wait_seconds: Vec<f64>,
    model_file: Option<String>,
    stopped_at: Option<usize>,
    stop_reason: Option<Reason>,
    stop: Option<String>,
}

/// How the run searched, in results.json.
#[derive(Serialize)]
struct SearchRow {
    kind: SearchKind,
    rule: crate::search::Rule,
    samples: Option<usize>,
    /// Epochs trained, summed over models.
    model_epochs: usize,
    /// What the full grid over the same configurations would train.
    full_model_epochs: usize,
}

/// Epochs trained, summed over the models.
pub fn model_epochs(outcome: &RunOutcome) -> usize {
    outcome.models.iter().map(|m| m.metrics.len()).sum()
}

fn opt(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Models ordered best first.
pub fn leaderboard(outcome: &RunOutcome) -> Vec<&ModelResult> {
    let mut v: Vec<&ModelResult> = outcome.models.iter().collect();
    v.sort_by(|a, b| b.score().total_cmp(&a.score()).then(a.id.cmp(&b.id)));
    v
}

/// Writes `models/model-<id>.safetensors`, `results.json`, `results.csv`,
/// and `timeline.json` into the output directory.
pub fn write_files(outcome: &RunOutcome, config: &RunConfig) -> Result<()> {
    let dir = &outcome.dir;
    let models_dir = dir.join("models");
    std::fs::create_dir_all(&models_dir)?;
    let mut rows = Vec::new();
    let mut csv = String::from(
        "model_id,arch,optimizer,lr,l2,batch_size,epochs,train_loss,train_acc,val_loss,val_acc,seconds\n",
    );
    for m in &outcome.models {
        let file = match &m.state {
            Some(state) => {
                let name = format!("model-{}.safetensors", m.id);
                std::fs::write(models_dir.join(&name), state.as_slice())?;
                Some(format!("models/{name}"))
            }
            None => None,
        };
        let last = m.last();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.3}\n",
            m.id,
            arch_name(&m.config.arch).replace(',', ";"),
            serde_json::to_string(&m.config.optimizer)?
                .replace(',', ";")
                .replace('"', ""),
            m.config.lr,
            m.config.l2,
            m.config.batch_size,
            m.metrics.len(),
            last.train_loss(),
            last.train_acc(),
            last.val_loss(),
            last.val_acc(),
            m.metrics.iter().map(|e| e.seconds).sum::<f64>(),
        ));
        rows.push(ModelRow {
            model_id: m.id,
            arch: arch_name(&m.config.arch),
            config: &m.config,
            train_loss: m.metrics.iter().map(EpochMetrics::train_loss).collect(),
            train_acc: m.metrics.iter().map(EpochMetrics::train_acc).collect(),
            val_loss: m.metrics.iter().map(|e| opt(e.val_loss())).collect(),
            val_acc: m.metrics.iter().map(|e| opt(e.val_acc())).collect(),
            epoch_seconds: m.metrics.iter().map(|e| e.seconds).collect(),
            wait_seconds: m.metrics.iter().map(|e| e.wait_seconds).collect(),
            model_file: file,
            stopped_at: m.stop.map(|s| s.epochs),
            stop_reason: m.stop.map(|s| s.reason),
            stop: m.stop.map(|s| s.reason.to_string()),
        });
    }
    let best = leaderboard(outcome).first().map(|m| m.id);
    let search = SearchRow {
        kind: config.search.kind,
        rule: config.rule()?,
        samples: config.search.samples,
        model_epochs: model_epochs(outcome),
        full_model_epochs: outcome.models.len() * config.epochs(),
    };
    let json = serde_json::json!({
        "source": { "flight": config.source.flight.to_string(), "sql": config.train_sql()? },
        "epochs": config.epochs(),
        "search": search,
        "seed": config.train.seed,
        "trainers": outcome.trainers,
        "seconds": outcome.seconds,
        "best_model": best,
        "models": rows,
        "partitions": outcome.partitions,
    });
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    std::fs::write(dir.join("results.csv"), csv)?;
    std::fs::write(
        dir.join("timeline.json"),
        serde_json::to_vec(&outcome.timeline)?,
    )?;
    Ok(())
}

fn db_err(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(d) => Error::Database(d.message().to_string()),
        None => Error::Database(e.to_string()),
    }
}

/// Checks that `name` is a plain SQL identifier (optionally schema-qualified).
pub(crate) fn check_ident(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "output.table {name:?} must be a plain identifier like criteo_models or myschema.criteo_models"
        )))
    }
}

/// Writes the three result tables, replacing earlier ones of the same name
/// that [`guard::check_database`] lets it replace (checked again here, just
/// before), and marks them as hopper's.
pub async fn write_tables(
    outcome: &RunOutcome,
    config: &RunConfig,
    database: &str,
    table: &str,
) -> Result<()> {
    check_ident(table)?;
    let (mut client, conn) = tokio_postgres::connect(database, NoTls)
        .await
        .map_err(|e| Error::Database(format!("cannot connect to {database}: {e}")))?;
    tokio::spawn(conn);
    // Outside the transaction: a query this database cannot plan must not
    // abort it.
    guard::check_database(&client, config, table).await?;
    let tx = client.transaction().await.map_err(db_err)?;
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}, {table}_info, {table}_summary;
         CREATE TABLE {table} (
             model_id int PRIMARY KEY, arch text NOT NULL, config jsonb NOT NULL,
             state bytea, epochs int NOT NULL,
             train_loss float8, train_acc float8, val_loss float8, val_acc float8,
             stopped_at int, stop_reason text);
         CREATE TABLE {table}_info (
             model_id int PRIMARY KEY, arch text NOT NULL, config jsonb NOT NULL,
             train_loss float8[], train_acc float8[], val_loss float8[], val_acc float8[],
             epoch_seconds float8[], wait_seconds float8[]);
         CREATE TABLE {table}_summary (
             source text, flight text, models int, trainers int, epochs int, seed int8,
             seconds float8, best_model_id int, best_val_acc float8,
             search text, model_epochs int, full_model_epochs int,
             finished_at timestamptz DEFAULT now());"
    ))
    .await
    .map_err(db_err)?;
    let comment = guard::marker_comment(table).replace('\'', "''");
    for t in guard::output_tables(table) {
        tx.batch_execute(&format!("COMMENT ON TABLE {t} IS '{comment}'"))
            .await
            .map_err(db_err)?;
    }
    let ins = tx
        .prepare(&format!(
            "INSERT INTO {table} VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .await
        .map_err(db_err)?;
    let ins_info = tx
        .prepare(&format!(
            "INSERT INTO {table}_info VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8, $9)"
        ))
        .await
        .map_err(db_err)?;
    for m in &outcome.models {
        let last = m.last();
        let cfg = serde_json::to_string(&m.config)?;
        let arch = arch_name(&m.config.arch);
        let state: Option<&[u8]> = m.state.as_ref().map(|s| s.as_slice());
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
            ],
        )
        .await
        .map_err(db_err)?;
        let col = |f: fn(&EpochMetrics) -> f64| -> Vec<Option<f64>> {
            m.metrics.iter().map(|e| opt(f(e))).collect()
        };
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
            ],
        )
        .await
        .map_err(db_err)?;
    }
    let best = leaderboard(outcome)
        .first()
        .map(|m| (m.id as i32, opt(m.score())));
    tx.execute(
        &format!(
            "INSERT INTO {table}_summary (source, flight, models, trainers, epochs, seed, seconds, best_model_id, best_val_acc,
                                          search, model_epochs, full_model_epochs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
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
        ],
    )
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(())
}
