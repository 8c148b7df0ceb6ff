//! The run configuration (`mop train --config grid.toml`): where the data
//! is, which models to try, how to train them, where results go.
//!
//! ```toml
//! [source]
//! flight = "grpc+tcp://127.0.0.1:50051"  # a flight-server, or a list: one per segment
//! sql = "SELECT * FROM criteo"             # or: table = "criteo"
//! validation = { fraction = 0.1, key = "id" } # or: { sql = "SELECT …" }, or none
//! cache = "memory"                         # memory | disk | none
//! on_change = "stop"                       # rows that differ between reads: stop | warn
//!
//! [train]
//! epochs = 10
//! seed = 42
//! trainers = 2              # spawned locally, one per partition…
//! # addresses = ["http://10.0.0.5:7000", …]   # …or already running (matched to partitions by host)
//! threads = 1               # intra-op threads per trainer
//! metric = "auc"            # what ranks models, decides searches and picks `--model best`:
//!                           # loss | accuracy | auc | log_loss | rmse | mae | r2
//!                           # (default: accuracy; loss for regression)
//! keep = "best"             # the model file holds the best epoch's weights under `metric`
//!                           # (default "last": the last epoch's)
//! patience = 3              # stop a model after 3 epochs without improving `metric`
//!
//! [grid]                    # the cross product of these lists
//! arch = [{ kind = "mlp", hidden = [1000, 500] }]
//! optimizer = [{ kind = "adam" }]
//! lr = [1e-3, 1e-4]         # with search.samples also a distribution: { loguniform = [1e-5, 1e-1] }
//! l2 = [1e-4, 1e-5]
//! batch_size = [32, 64, 256, 512]
//! input = { kind = "criteo", sparse = true }
//! classes = 2
//! task = "multiclass"       # binary (one logit, BCE) | multiclass (cross-entropy) |
//!                           # regression (one output, squared error); see `crate::metrics`
//! # table = "mst"           # instead of the lists: a MADlib-style model-selection
//! #                         # table, read through source.flight (see `crate::search::mst`)
//!
//! [search]                  # optional; the default is the full grid
//! kind = "asha"             # grid | random | hyperband | asha (see `crate::search`)
//! max_epochs = 9
//! eta = 3
//!
//! [output]
//! dir = "hopper-out/criteo"     # checkpoint, models, results, report
//! table = "criteo_models"       # result tables <table>, <table>_info, <table>_summary
//! database = "postgresql://hopper@127.0.0.1:5432/hopper"  # where they go (optional)
//! # replace = true              # replace existing tables hopper did not write
//! ```
//!
//! The result tables are dropped and written again when the run ends, so
//! `output.table` may not name a table the run reads, and an existing table
//! hopper did not write is replaced only with `replace = true`
//! ([`crate::run_dir::read_guard`] and the runner's look at the output database,
//! checked before anything trains).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{Arch, InputSpec, ModelConfig, OptimizerKind, Task};
use crate::error::{Error, Result};
use crate::metrics::Metric;
use crate::run_dir::read_guard::{self, relations, Name};
use crate::search::space::{choose, Param};
use crate::search::{Rule, SearchConfig};

/// A whole run: source, grid, training and output settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Where the training data comes from.
    pub source: SourceConfig,
    /// How to train.
    #[serde(default)]
    pub train: TrainConfig,
    /// The model configurations to try.
    pub grid: GridConfig,
    /// How configurations are chosen and how long each trains.
    #[serde(default, skip_serializing_if = "SearchConfig::is_default")]
    pub search: SearchConfig,
    /// Where results go.
    #[serde(default)]
    pub output: OutputConfig,
}

/// The data source: a flight-server and a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A flight-server location (`grpc+tcp://host:port`), or a list of
    /// them (one flight-server beside each segment): the partitions are the
    /// endpoints of every server, in order.
    pub flight: Flights,
    /// The query whose rows are the training data.
    #[serde(default)]
    pub sql: Option<String>,
    /// Shorthand for `sql = "SELECT * FROM <table>"`.
    #[serde(default)]
    pub table: Option<String>,
    /// Validation rows.
    #[serde(default)]
    pub validation: Validation,
    /// How trainers keep their partition between epochs.
    #[serde(default)]
    pub cache: Cache,
    /// What the run does when a partition's rows differ from one read to
    /// the next ([`crate::run_dir::reads`]).
    #[serde(default, skip_serializing_if = "OnChange::is_stop")]
    pub on_change: OnChange,
    /// The longest, in seconds, the run holds the snapshot it pins on its
    /// flight-servers so that every read sees the same rows (each server
    /// caps it with `--snapshot-max-ttl`, 24 h by default); `0` pins none,
    /// and every read sees the tables as they are then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_ttl: Option<u64>,
}

/// What a run does when a partition's rows differ from its earlier reads
/// (`[source] on_change`): the row count and checksum of every read over
/// Flight are compared with the partition's first read
/// ([`crate::run_dir::reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum OnChange {
    /// Stop the run with an error naming the partition; the checkpoint
    /// keeps every finished unit.
    #[default]
    Stop,
    /// Log a warning, record the change in results.json and the report,
    /// and go on over the changed rows.
    Warn,
}

impl OnChange {
    /// Whether this is the default.
    pub fn is_stop(&self) -> bool {
        *self == OnChange::Stop
    }
}

impl TryFrom<String> for OnChange {
    type Error = String;
    fn try_from(value: String) -> std::result::Result<Self, String> {
        match value.as_str() {
            "stop" => Ok(OnChange::Stop),
            "warn" => Ok(OnChange::Warn),
            other => Err(format!(
                "source.on_change = {other:?}: must be \"stop\" (the default: a partition whose \
                 rows changed between reads stops the run) or \"warn\" (log it, record it in \
                 results.json and go on)"
            )),
        }
    }
}

/// One flight-server, or one per segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Flights {
    /// A single server over every segment.
    One(String),
    /// A server beside each segment.
    Many(Vec<String>),
}

impl Flights {
    /// Every location, in order.
    pub fn locations(&self) -> Vec<&str> {
        match self {
            Flights::One(l) => vec![l.as_str()],
            Flights::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl std::fmt::Display for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.locations().join(","))
    }
}

/// Which rows validate the models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Validation {
    /// No validation.
    #[default]
    None,
    /// Hold out a fraction of the rows, chosen by a hash of a key column
    /// (`hashint8`, so the split is the same on every run and segment).
    Fraction {
        /// Share of rows held out, in (0, 1).
        fraction: f64,
        /// An integer column to hash.
        key: String,
    },
    /// A separate query.
    Sql {
        /// Its SQL.
        sql: String,
    },
}

/// How a trainer keeps its partition between epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Cache {
    /// Featurized tensors in memory (read the database once).
    #[default]
    Memory,
    /// Arrow IPC on local disk.
    Disk,
    /// Re-read from the database every epoch.
    None,
}

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the data per model.
    pub epochs: usize,
    /// Seed of model initialization and visit orders.
    pub seed: u64,
    /// Trainers to spawn locally (default: one per partition).
    pub trainers: Option<usize>,
    /// Addresses of running trainers (instead of spawning), in any order:
    /// each partition goes to a trainer on its endpoints' host if there is
    /// one (see `runner::locality`).
    pub addresses: Vec<String>,
    /// Intra-op threads per trainer.
    pub threads: usize,
    /// The metric that ranks models, decides searches and early stopping,
    /// and picks `mop predict --model best` (default: [`Metric::default_for`]
    /// the task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Which epoch's weights the model file holds.
    #[serde(skip_serializing_if = "Keep::is_last")]
    pub keep: Keep,
    /// Stop a model once this many epochs in a row did not improve its
    /// validation `metric` (see [`crate::search`]); none: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// How often a model's state is copied into the checkpoint.
    #[serde(skip_serializing_if = "Checkpoints::is_epoch")]
    pub checkpoint: Checkpoints,
}

/// Which epoch's weights a model's file holds (`[train] keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The last epoch it trained.
    #[default]
    Last,
    /// The epoch with the best validation score under `[train] metric`
    /// (the earliest of equals).
    Best,
}

impl Keep {
    /// Whether this is the default.
    pub fn is_last(&self) -> bool {
        *self == Keep::Last
    }
}

/// How often the runner takes a copy of a model's state for its checkpoint
/// (`[train] checkpoint`). Between copies a model's state lives only on
/// the trainer that trained it last: a trainer that dies with it, or a
/// runner killed and resumed, trains the model's units since the copy
/// again (to the same weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoints {
    /// At the end of every epoch of every model, where validation needs the
    /// state anyway: one state in `partitions` crosses to the runner.
    #[default]
    Epoch,
    /// After every unit: a resumed run trains no finished unit again, and
    /// every state crosses the network twice (to the next trainer, and to
    /// the runner).
    Unit,
}

impl Checkpoints {
    /// Whether this is the default.
    pub fn is_epoch(&self) -> bool {
        *self == Checkpoints::Epoch
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            seed: 42,
            trainers: None,
            addresses: Vec::new(),
            threads: 1,
            metric: None,
            keep: Keep::Last,
            patience: None,
            checkpoint: Checkpoints::Epoch,
        }
    }
}

/// Lists whose cross product is the grid, or a table of configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridConfig {
    /// A MADlib-style model-selection table in the source database, one
    /// row per configuration, instead of the lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Architectures.
    #[serde(default)]
    pub arch: Vec<Arch>,
    /// Optimizers.
    #[serde(default = "default_optimizers")]
    pub optimizer: Vec<OptimizerKind>,
    /// Learning rates (a list, or a distribution for random search).
    #[serde(default)]
    pub lr: Param<f64>,
    /// L2 λ values (a list, or a distribution for random search).
    #[serde(default = "default_l2")]
    pub l2: Param<f64>,
    /// Batch sizes (a list, or an integer distribution for random search).
    #[serde(default)]
    pub batch_size: Param<usize>,
    /// The input every model consumes.
    pub input: InputSpec,
    /// Number of classes.
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// What every model predicts (default multiclass over `classes`).
    #[serde(default, skip_serializing_if = "Task::is_multiclass")]
    pub task: Task,
}

impl GridConfig {
    /// Makes every TorchScript module's path absolute, a relative one taken
    /// from the directory of `config_file` (the run configuration), and
    /// checks that the file is there: the run, its resume and `mop predict`
    /// may start elsewhere.
    pub fn resolve_modules(&mut self, config_file: &Path) -> Result<()> {
        let base = config_file.parent().unwrap_or(Path::new(""));
        for arch in &mut self.arch {
            let Arch::TorchScript { path } = arch else {
                continue;
            };
            let resolved = std::path::absolute(base.join(&*path)).map_err(|e| {
                Error::Config(format!(
                    "grid.arch: cannot resolve the module path {path}: {e}"
                ))
            })?;
            if !resolved.is_file() {
                return Err(Error::Config(format!(
                    "grid.arch: the TorchScript module {} is not a file (path = {path:?}, \
                     relative to the configuration's directory {})",
                    resolved.display(),
                    std::path::absolute(base).unwrap_or_default().display()
                )));
            }
            *path = resolved.to_string_lossy().into_owned();
        }
        Ok(())
    }
}

/// An MLflow tracking URL is `http://` or `https://` with a host: anything
/// else would only fail at the first epoch, as a warning.
pub fn check_mlflow_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(Error::Config(format!(
            "output.mlflow = {url:?} is not an MLflow tracking URL: give the server's \
             http://HOST:PORT (as `mlflow server` prints it)"
        ))),
    }
}

fn default_optimizers() -> Vec<OptimizerKind> {
    vec![OptimizerKind::Adam]
}
fn default_l2() -> Param<f64> {
    Param::List(vec![0.0])
}
fn default_classes() -> usize {
    2
}

/// Where results go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Directory for the checkpoint, model files, results and report.
    pub dir: PathBuf,
    /// Base name of the result tables.
    pub table: Option<String>,
    /// Database that receives the result tables.
    pub database: Option<String>,
    /// Replace existing tables of those names that hopper did not write
    /// (never one the run reads).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
    /// An MLflow tracking server (`http://HOST:PORT`) that receives a run
    /// per model, nested under one for the search (see
    /// `mop_runner::mlflow`). Tracking never fails the training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<String>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("hopper-out"),
            table: None,
            database: None,
            replace: false,
            mlflow: None,
        }
    }
}

impl GridConfig {
    /// Every model configuration, in a fixed order (arch, optimizer, lr, l2,
    /// batch size: the last varies fastest). Model ids are indices into it.
    pub fn expand(&self) -> Result<Vec<ModelConfig>> {
        let (lrs, l2s) = (self.lr.values("lr")?, self.l2.values("l2")?);
        let batch_sizes = self.batch_size.values("batch_size")?;
        let mut out = Vec::new();
        for arch in &self.arch {
            for optimizer in &self.optimizer {
                for &lr in &lrs {
                    for &l2 in &l2s {
                        for &batch_size in &batch_sizes {
                            let c = ModelConfig {
                                arch: arch.clone(),
                                optimizer: optimizer.clone(),
                                lr,
                                l2,
                                batch_size,
                                input: self.input.clone(),
                                classes: self.classes,
                                task: self.task,
                            };
                            c.validate()?;
                            out.push(c);
                        }
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(Error::Config(
                "the grid is empty: every list in [grid] needs at least one value".into(),
            ));
        }
        Ok(out)
    }

    /// `samples` configurations drawn at random: lists are uniform choices,
    /// distributions are drawn from (see [`crate::search::space`]). Each
    /// configuration takes its draws in a fixed order (arch, optimizer, lr,
    /// l2, batch size) from one seeded stream, so a seed gives the same
    /// configurations everywhere.
    pub fn sample(&self, samples: usize, seed: u64) -> Result<Vec<ModelConfig>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A stream of its own: the scheduler's streams start at 0.
        rng.set_stream(SAMPLE_STREAM);
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            let c = ModelConfig {
                arch: choose(&self.arch, "arch", &mut rng)?.clone(),
                optimizer: choose(&self.optimizer, "optimizer", &mut rng)?.clone(),
                lr: self.lr.sample_f64("lr", &mut rng)?,
                l2: self.l2.sample_f64("l2", &mut rng)?,
                batch_size: self.batch_size.sample_usize("batch_size", &mut rng)?,
                input: self.input.clone(),
                classes: self.classes,
                task: self.task,
            };
            c.validate()?;
            out.push(c);
        }
        Ok(out)
    }
}

/// The RNG stream random search draws configurations from.
const SAMPLE_STREAM: u64 = u64::MAX - 16;

impl RunConfig {
    /// The model configurations of the run: the grid's cross product, or
    /// `search.samples` random draws from it. Model ids are indices into it.
    pub fn models(&self) -> Result<Vec<ModelConfig>> {
        if let Some(table) = &self.grid.table {
            return Err(Error::Config(format!(
                "the configurations are in the table {table}: they are read through \
                 source.flight when the run starts"
            )));
        }
        match self.search.samples {
            Some(n) => self.grid.sample(n, self.train.seed),
            None => self.grid.expand(),
        }
    }

    /// Epochs of the run: `search.max_epochs` if set, else `train.epochs`.
    pub fn epochs(&self) -> usize {
        self.search.epochs(self.train.epochs)
    }

    /// The metric that ranks the run's models: `train.metric`, else the
    /// task's default.
    pub fn metric(&self) -> Metric {
        self.train
            .metric
            .unwrap_or_else(|| Metric::default_for(self.grid.task))
    }

    /// How long each model trains (every epoch, unless the search stops it).
    pub fn rule(&self) -> Result<Rule> {
        self.search.rule(self.epochs())
    }

    /// Reads and checks a TOML run configuration.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        config.grid.resolve_modules(path)?;
        Ok(config)
    }

    /// Parses and checks a TOML run configuration.
    pub fn parse(text: &str) -> Result<Self> {
        let config: RunConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.source.flight.locations().is_empty() {
            return Err(Error::Config(
                "source.flight needs at least one location".into(),
            ));
        }
        if self.train.epochs == 0 {
            return Err(Error::Config("train.epochs must be at least 1".into()));
        }
        self.train_sql()?;
        if let Validation::Fraction { fraction, .. } = self.source.validation {
            if !(fraction > 0.0 && fraction < 1.0) {
                return Err(Error::Config(format!(
                    "source.validation.fraction must be in (0, 1), got {fraction}"
                )));
            }
        }
        self.search.validate(self.train.epochs)?;
        let metric = self.metric();
        if let Some(m) = self.train.metric {
            m.check(self.grid.task, "train.metric")?;
        }
        let no_validation = matches!(self.source.validation, Validation::None);
        if self.rule()? != Rule::Full && no_validation {
            return Err(Error::Config(format!(
                "search.kind = \"{}\" ranks models by validation {metric}: \
                 add source.validation (e.g. {{ fraction = 0.1, key = \"id\" }})",
                self.search.kind
            )));
        }
        if self.train.patience == Some(0) {
            return Err(Error::Config(
                "train.patience must be at least 1 (epochs without improvement before a model \
                 stops); drop it to train every epoch"
                    .into(),
            ));
        }
        for (setting, set) in [
            ("train.patience", self.train.patience.is_some()),
            ("train.keep = \"best\"", self.train.keep == Keep::Best),
        ] {
            if set && no_validation {
                return Err(Error::Config(format!(
                    "{setting} follows the validation {metric} of every epoch: add \
                     source.validation (e.g. {{ fraction = 0.1, key = \"id\" }})"
                )));
            }
        }
        match &self.grid.table {
            None => {
                self.models()?;
            }
            Some(table) => {
                crate::search::mst::query(table)?;
                let g = &self.grid;
                if !g.arch.is_empty()
                    || g.lr != Param::default()
                    || g.batch_size != Param::default()
                    || g.optimizer != default_optimizers()
                    || g.l2 != default_l2()
                {
                    return Err(Error::Config(format!(
                        "grid.table = {table:?} holds the configurations: drop the lists \
                         (arch, optimizer, lr, l2, batch_size) from [grid], or drop table"
                    )));
                }
                if self.search.samples.is_some() {
                    return Err(Error::Config(
                        "search.samples draws from [grid]'s lists, and grid.table has none: \
                         drop samples to search over the table's configurations"
                            .into(),
                    ));
                }
            }
        }
        if let Some(table) = &self.output.table {
            // The run writes <table>, <table>_info and <table>_summary: each
            // must be a name PostgreSQL keeps whole.
            for t in read_guard::output_tables(table) {
                crate::ident::table(&t, "output.table")?;
            }
            if self.output.database.is_none() {
                return Err(Error::Config(
                    "output.table needs output.database (a PostgreSQL URL)".into(),
                ));
            }
        }
        if let Some(url) = &self.output.mlflow {
            check_mlflow_url(url)?;
        }
        match &self.output.table {
            Some(table) => read_guard::check_not_read(table, &self.read_names()),
            None => Ok(()),
        }
    }

    /// The relations the run names, with the setting that names each.
    pub fn read_names(&self) -> Vec<(String, Name)> {
        let mut out = Vec::new();
        if let Some(t) = &self.source.table {
            out.extend(Name::parse(t).map(|n| ("source.table".to_string(), n)));
        }
        if let Some(sql) = &self.source.sql {
            out.extend(relations(sql).into_iter().map(|n| ("source.sql".into(), n)));
        }
        if let Validation::Sql { sql } = &self.source.validation {
            out.extend(
                relations(sql)
                    .into_iter()
                    .map(|n| ("source.validation.sql".into(), n)),
            );
        }
        if let Some(t) = &self.grid.table {
            out.extend(Name::parse(t).map(|n| ("grid.table".to_string(), n)));
        }
        out
    }

    fn base_sql(&self) -> Result<String> {
        match (&self.source.sql, &self.source.table) {
            (Some(sql), None) => Ok(sql.trim().trim_end_matches(';').to_string()),
            (None, Some(table)) => Ok(format!("SELECT * FROM {table}")),
            _ => Err(Error::Config(
                "give exactly one of source.sql and source.table".into(),
            )),
        }
    }

    /// The query of the training rows (validation rows excluded).
    pub fn train_sql(&self) -> Result<String> {
        let base = self.base_sql()?;
        Ok(match &self.source.validation {
            Validation::Fraction { fraction, key } => format!(
                "SELECT * FROM ({base}) AS hopper_train WHERE {} >= {}",
                holdout_expr(key),
                (fraction * 1000.0).round() as i64
            ),
            _ => base,
        })
    }

    /// The query of the validation rows, if any.
    pub fn validation_sql(&self) -> Result<Option<String>> {
        let base = self.base_sql()?;
        Ok(match &self.source.validation {
            Validation::None => None,
            Validation::Sql { sql } => Some(sql.clone()),
            Validation::Fraction { fraction, key } => Some(format!(
                "SELECT * FROM ({base}) AS hopper_validation WHERE {} < {}",
                holdout_expr(key),
                (fraction * 1000.0).round() as i64
            )),
        })
    }
}

/// A stable per-row number in 0..1000 from an integer key.
fn holdout_expr(key: &str) -> String {
    format!("mod(abs(hashint8(({key})::int8)::int8), 1000)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: &str = r#"
        [source]
        flight = "grpc+tcp://127.0.0.1:1"
        table = "criteo"
        validation = { fraction = 0.1, key = "id" }
        [train]
        epochs = 3
        seed = 7
        [grid]
        arch = [{ kind = "mlp", hidden = [1000, 500] }]
        lr = [1e-3, 1e-4]
        l2 = [1e-4, 1e-5]
        batch_size = [32, 64, 256, 512]
        input = { kind = "criteo", sparse = true }
    "#;

    #[test]
    fn the_papers_grid_has_16_configurations() {
        let c = RunConfig::parse(GRID).unwrap();
        let models = c.grid.expand().unwrap();
        assert_eq!(models.len(), 16);
        assert_eq!(models[0].batch_size, 32);
        assert_eq!(models[1].batch_size, 64);
        assert!(c.train_sql().unwrap().contains(">= 100"));
        assert!(c.validation_sql().unwrap().unwrap().contains("< 100"));
    }

    #[test]
    fn on_change_is_stop_by_default_warn_when_asked_and_nothing_else() {
        assert_eq!(
            RunConfig::parse(GRID).unwrap().source.on_change,
            OnChange::Stop
        );
        let with = |v: &str| GRID.replace("[train]", &format!("on_change = {v}\n[train]"));
        let warn = RunConfig::parse(&with("\"warn\"")).unwrap();
        assert_eq!(warn.source.on_change, OnChange::Warn);
        let stop = RunConfig::parse(&with("\"stop\"")).unwrap();
        assert_eq!(stop.source.on_change, OnChange::Stop);
        let e = RunConfig::parse(&with("\"halt\"")).unwrap_err().to_string();
        assert!(
            e.contains("source.on_change = \"halt\"")
                && e.contains("\"stop\"")
                && e.contains("\"warn\""),
            "{e}"
        );
    }

    #[test]
    fn flight_may_list_one_server_per_segment() {
        let text = GRID.replace(
            "flight = \"grpc+tcp://127.0.0.1:1\"",
            "flight = [\"grpc+tcp://a:1\", \"grpc+tcp://b:1\"]",
        );
        let c = RunConfig::parse(&text).unwrap();
        assert_eq!(
            c.source.flight.locations(),
            ["grpc+tcp://a:1", "grpc+tcp://b:1"]
        );
        assert_eq!(
            RunConfig::parse(GRID).unwrap().source.flight.locations(),
            ["grpc+tcp://127.0.0.1:1"]
        );
    }

    #[test]
    fn random_search_draws_the_same_configurations_from_the_same_seed() {
        let text = GRID
            .replace("lr = [1e-3, 1e-4]", "lr = { loguniform = [1e-5, 1e-1] }")
            .replace(
                "batch_size = [32, 64, 256, 512]",
                "batch_size = { log_int = [16, 512] }",
            )
            + "[search]\nkind = \"random\"\nsamples = 20\n";
        let c = RunConfig::parse(&text).unwrap();
        let a = c.models().unwrap();
        assert_eq!(a.len(), 20);
        assert_eq!(a, c.models().unwrap());
        assert!(a.iter().all(|m| (1e-5..=1e-1).contains(&m.lr)));
        assert!(a.iter().all(|m| (16..=512).contains(&m.batch_size)));
        assert!(a.iter().any(|m| m.lr != a[0].lr), "the draws differ");
        let other = RunConfig::parse(&text.replace("seed = 7", "seed = 8")).unwrap();
        assert_ne!(a, other.models().unwrap());
        assert_eq!(c.rule().unwrap(), Rule::Full);
        assert_eq!(c.epochs(), 3);
    }

    #[test]
    fn asha_and_hyperband_run_over_the_grid_or_random_draws() {
        let asha = format!("{GRID}[search]\nkind = \"asha\"\nmax_epochs = 9\neta = 3\n");
        let c = RunConfig::parse(&asha).unwrap();
        assert_eq!(c.models().unwrap().len(), 16);
        assert_eq!(c.epochs(), 9);
        assert!(matches!(c.rule().unwrap(), Rule::Asha(a) if a.rungs() == vec![1, 3]));
        let hb = format!("{GRID}[search]\nkind = \"hyperband\"\nsamples = 6\nmax_epochs = 9\n");
        let c = RunConfig::parse(&hb).unwrap();
        assert_eq!(c.models().unwrap().len(), 6);
        assert!(matches!(c.rule().unwrap(), Rule::Hyperband(_)));
        // A config without [search] is the grid it always was.
        assert!(RunConfig::parse(GRID).unwrap().search.is_default());
    }

    #[test]
    fn a_grid_kept_in_a_table_takes_no_lists() {
        let lists = "arch = [{ kind = \"mlp\", hidden = [1000, 500] }]\n        lr = [1e-3, 1e-4]\n        l2 = [1e-4, 1e-5]\n        batch_size = [32, 64, 256, 512]";
        assert!(GRID.contains(lists));
        let table = GRID.replace(lists, "table = \"mst\"");
        let c = RunConfig::parse(&table).unwrap();
        assert_eq!(c.grid.table.as_deref(), Some("mst"));
        assert!(matches!(c.models(), Err(Error::Config(m)) if m.contains("table mst")));
        let both = GRID.replace("[grid]", "[grid]\ntable = \"mst\"");
        assert!(
            matches!(RunConfig::parse(&both), Err(Error::Config(m)) if m.contains("drop the lists"))
        );
        let bad = table.replace("\"mst\"", "\"mst; drop\"");
        assert!(
            matches!(RunConfig::parse(&bad), Err(Error::Config(m)) if m.contains("grid.table"))
        );
    }

    #[test]
    fn bad_searches_are_config_errors_that_say_what_to_do() {
        for (search, needle) in [
            ("kind = \"random\"", "samples"),
            ("kind = \"grid\"\nsamples = 4", "kind = \"random\""),
            (
                "kind = \"asha\"\nmax_epochs = 4\nmin_epochs = 4",
                "min_epochs",
            ),
            ("kind = \"asha\"\neta = 1", "eta"),
            ("kind = \"random\"\nsamples = 2\neta = 3", "does not apply"),
            (
                "kind = \"hyperband\"\nmax_epochs = 9\nskip_last = 3",
                "skip_last",
            ),
            ("kind = \"tpe\"", "tpe"),
            ("kind = \"asha\"\nbrackets = 2", "brackets"),
        ] {
            let text = format!("{GRID}[search]\n{search}\n");
            match RunConfig::parse(&text) {
                Err(Error::Config(m)) => assert!(m.contains(needle), "{needle}: {m}"),
                other => panic!("expected a config error about {needle}, got {other:?}"),
            }
        }
        let no_validation = GRID.replace("validation = { fraction = 0.1, key = \"id\" }", "");
        match RunConfig::parse(&format!("{no_validation}[search]\nkind = \"asha\"\n")) {
            Err(Error::Config(m)) => assert!(m.contains("source.validation"), "{m}"),
            other => panic!("{other:?}"),
        }
        let dist = GRID.replace("lr = [1e-3, 1e-4]", "lr = { loguniform = [1e-5, 1e-1] }");
        match RunConfig::parse(&dist) {
            Err(Error::Config(m)) => assert!(m.contains("search.samples"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn task_metric_keep_and_patience_are_read_and_checked() {
        let c = RunConfig::parse(GRID).unwrap();
        assert_eq!(c.metric(), Metric::Accuracy);
        assert_eq!((c.train.keep, c.train.patience), (Keep::Last, None));
        assert!(c
            .models()
            .unwrap()
            .iter()
            .all(|m| m.task == Task::Multiclass));
        let binary = GRID.replace("[grid]", "[grid]\ntask = \"binary\"").replace(
            "seed = 7",
            "seed = 7\nmetric = \"auc\"\nkeep = \"best\"\npatience = 2",
        );
        let c = RunConfig::parse(&binary).unwrap();
        assert_eq!(c.metric(), Metric::Auc);
        assert_eq!((c.train.keep, c.train.patience), (Keep::Best, Some(2)));
        assert!(c
            .models()
            .unwrap()
            .iter()
            .all(|m| m.task == Task::Binary && m.outputs() == 1));
        let regression = GRID.replace("[grid]", "[grid]\ntask = \"regression\"");
        assert_eq!(
            RunConfig::parse(&regression).unwrap().metric(),
            Metric::Loss
        );
        let rmse = regression.replace("seed = 7", "seed = 7\nmetric = \"rmse\"");
        assert_eq!(RunConfig::parse(&rmse).unwrap().metric(), Metric::Rmse);
        let no_validation = "validation = { fraction = 0.1, key = \"id\" }";
        for (text, needle) in [
            (
                regression.replace("seed = 7", "seed = 7\nmetric = \"auc\""),
                "train.metric = \"auc\"",
            ),
            (
                GRID.replace("seed = 7", "seed = 7\nmetric = \"r2\""),
                "task = \"multiclass\"",
            ),
            (
                regression.replace("seed = 7", "seed = 7\nmetric = \"accuracy\""),
                "rmse",
            ),
            (GRID.replace("seed = 7", "seed = 7\nmetric = \"f1\""), "f1"),
            (
                GRID.replace("seed = 7", "seed = 7\npatience = 0"),
                "train.patience",
            ),
            (
                GRID.replace("seed = 7", "seed = 7\nkeep = \"first\""),
                "first",
            ),
            (
                GRID.replace("seed = 7", "seed = 7\npatience = 2")
                    .replace(no_validation, ""),
                "source.validation",
            ),
            (
                GRID.replace("seed = 7", "seed = 7\nkeep = \"best\"")
                    .replace(no_validation, ""),
                "train.keep",
            ),
            (
                GRID.replace("[grid]", "[grid]\ntask = \"binary\"\nclasses = 3"),
                "binary",
            ),
        ] {
            match RunConfig::parse(&text) {
                Err(Error::Config(m)) => assert!(m.contains(needle), "{needle}: {m}"),
                other => panic!("expected a config error about {needle}, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_grids_are_config_errors_that_say_what_is_wrong() {
        for (edit, needle) in [
            (("lr = [1e-3, 1e-4]", "lr = [-1.0]"), "lr"),
            (("lr = [1e-3, 1e-4]", "lr = []"), "empty"),
            (
                (
                    "kind = \"mlp\", hidden = [1000, 500]",
                    "kind = \"transformer\"",
                ),
                "transformer",
            ),
            (("epochs = 3", "epochs = 0"), "epochs"),
        ] {
            let text = GRID.replace(edit.0, edit.1);
            match RunConfig::parse(&text) {
                Err(Error::Config(m)) => assert!(m.contains(needle), "{needle}: {m}"),
                other => panic!("expected a config error about {needle}, got {other:?}"),
            }
        }
    }
}
