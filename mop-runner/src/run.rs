//! The MOP runner (`mop train`): plans the data on flight-server, starts
//! (or connects to) one trainer per partition, and drives the scheduler:
//! every idle trainer gets the next (model, partition) unit, the model's
//! state hops to it from the trainer that trained the model last
//! ([`crate::hops`]), and a checkpoint is committed after every unit so that
//! `--resume` loses no finished epoch.
//!
//! # Design
//!
//! ```text
//!  plan: GetFlightInfo(train SQL) ─► endpoints ─► partition p = endpoints i with i % W == p
//!  trainers 0..W ◄─ OpenPartition(endpoints of p)
//!  loop: Scheduler::next_unit(idle w) ─► TrainUnit(config, from trainer v) on trainer w
//!        (w fetches the state from v; at an epoch's end the result brings a copy)
//!        ◄─ metrics ─► Scheduler::complete ─► checkpoint
//!        model finished an epoch ─► Evaluate on every trainer's validation rows
//!        ◄─ metrics ─► Scheduler::record_score (a search may stop the model)
//!  end: model files, results.json/csv, result tables in the database
//! ```
//!
//! # Search
//! With `[search]` (see [`mop_core::search`]) a model that reaches a decision
//! point waits, handed to no trainer, until its validation pass for that
//! epoch returns; the scheduler's search then lets it go on or stops it.
//! The decision travels in the checkpoint with the scores it came from, so
//! `--resume` neither repeats nor changes it.
//!
//! # Metrics
//! Trainers return each pass's sufficient statistics (loss sum, rows right,
//! a binary task's score counts, a regression's sums); the runner merges
//! them over the partitions of an epoch before it computes any metric
//! (`mop_core::metrics`), so every metric is over all rows. Scores go to
//! the search as `[train] metric` signed higher-is-better. With `[train]
//! keep = "best"` the runner holds, per model, the state of its best
//! validated epoch (the earliest of equals, whatever order the passes end
//! in), checkpointed beside the others.
//!
//! # Failures
//! A unit whose trainer fails is requeued: it runs again from the model's
//! state before it, so a failure changes no weights (the reproducible
//! policy fixes every model's visit order up front). A spawned trainer that
//! died is replaced by a new process that re-opens the same partition; the
//! states it kept for other models' next units are gone with it, so those
//! models go back to the runner's copy of their state (their epoch's start)
//! and run the units since again, to the same weights ([`crate::hops`]).
//! Trainers run with `--exit-with-parent`, so a runner killed outright
//! leaves none behind. Validation passes in flight are checkpointed with
//! the states they validate, so `--resume` still validates every epoch.
//! Tickets that expire or that a flight-server refuses are replaced by
//! planning again ([`plan`]); the unit that met the refusal runs again.
//!
//! # Rows that change between reads
//! Every read over Flight (a unit's or validation pass's with `cache =
//! "none"`, a trainer's filling its cache) reports its rows and their
//! checksum; [`mop_core::run_dir::reads`] compares them, per partition and
//! split, with the partition's first read, before the pass counts. A
//! difference stops the run with [`Error::RowsChanged`] naming the
//! partition, its endpoints and both figures — the checkpoint keeps every
//! unit finished before — or, with `[source] on_change = "warn"`, is
//! reported, kept in the checkpoint and results.json, and the run goes on.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use hopper_proto::{train_event, CacheMode as ProtoCache, TrainUnitRequest};
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::hops::{Hop, StateBook, StateCopy};
use crate::locality;
use crate::mlflow::{End, Tracker};
use crate::pins::Pins;
use crate::plan::Plan;
use crate::progress::{ProgressMode, Reporter};
use crate::trainers;
use crate::trainers::{Client, LocalTrainer};
use hopper_proto::auth::TrainerKey;
use mop_core::metrics::{Metric, RegressionSums, ScoreCounts};
use mop_core::run_config::{Cache, Keep, OnChange, RunConfig};
use mop_core::run_dir::checkpoint::{
    BestRecord, Checkpoint, CheckpointDir, EpochMetrics, EvalRecord, Split, UnitRecord,
};
use mop_core::run_dir::partitions::PartitionRecord;
use mop_core::run_dir::reads::{Checked, Read, ReadKind, RowsRead, SourceReads};
use mop_core::run_dir::results;
pub use mop_core::run_dir::RunOutcome;
use mop_core::schedule::{Decision, Policy, Scheduler, Unit};
use mop_core::search::Reason;

/// How many times a unit may fail in a row on one trainer before the run stops.
const MAX_RETRIES: u32 = 5;

/// Options of one `mop train` invocation (beyond the run configuration).
pub struct TrainOptions {
    /// Continue from the checkpoint in the output directory.
    pub resume: bool,
    /// How to show progress.
    pub progress: ProgressMode,
    /// The `mop` binary to spawn trainers with (default: this executable).
    pub trainer_binary: Option<PathBuf>,
    /// Completes when the run should stop (Ctrl-C); the checkpoint is kept.
    pub interrupt: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            resume: false,
            progress: ProgressMode::Quiet,
            trainer_binary: None,
            interrupt: None,
        }
    }
}

enum Done {
    Unit {
        worker: usize,
        unit: Unit,
        start: f64,
        /// What becomes of the state the unit ends with, and the trainer's
        /// address when it was handed the unit.
        hop: Hop,
        address: String,
        result: Result<hopper_proto::UnitResult>,
    },
    Eval {
        eval: PendingEval,
        result: Result<EvalTotals>,
    },
}

/// A model's best validated epoch so far and the state it ended it with
/// (`[train] keep = "best"`).
type Best = (usize, Bytes);

/// A validation pass's statistics, merged over every trainer's rows.
#[derive(Default)]
struct EvalTotals {
    samples: u64,
    loss_sum: f64,
    correct: u64,
    scores: Option<ScoreCounts>,
    regression: Option<RegressionSums>,
    /// What each trainer's pass read over Flight (cache mode none), by
    /// partition.
    reads: Vec<(usize, hopper_proto::RowsRead)>,
}

/// Adds a pass's optional statistics into a running total.
fn merge_stats(
    scores: &mut Option<ScoreCounts>,
    regression: &mut Option<RegressionSums>,
    more_scores: Option<hopper_proto::ScoreCounts>,
    more_regression: Option<hopper_proto::RegressionSums>,
) -> mop_core::Result<()> {
    if let Some(more) = more_scores {
        let more = ScoreCounts::try_from(more)?;
        *scores = Some(match scores.take() {
            Some(s) => s.merge(&more),
            None => more,
        });
    }
    if let Some(more) = more_regression {
        let more = RegressionSums::from(more);
        *regression = Some(regression.map_or(more, |r| r.merge(&more)));
    }
    Ok(())
}

/// A validation pass of one model after one epoch, with the state it ended
/// the epoch with (the model itself may already be training the next one).
#[derive(Clone)]
struct PendingEval {
    model: usize,
    epoch: usize,
    state: Bytes,
    attempts: u32,
}

/// The trainers of a run: their clients, and the processes of the ones this
/// runner spawned (so that a dead one can be replaced).
struct Trainers {
    clients: Vec<Client>,
    /// Each trainer's address.
    addresses: Vec<String>,
    /// The key each trainer takes proofs of, if any.
    keys: Vec<Option<TrainerKey>>,
    local: Vec<Option<LocalTrainer>>,
    binary: PathBuf,
    threads: usize,
}

impl Trainers {
    /// Connects to `addresses` (trainer `p` holds partition `p`), or
    /// spawns `w` local trainers when there are none.
    async fn start(
        config: &RunConfig,
        addresses: &[String],
        w: usize,
        binary: PathBuf,
        reporter: &Reporter,
    ) -> Result<Self> {
        let mut t = Trainers {
            clients: Vec::with_capacity(w),
            addresses: Vec::with_capacity(w),
            keys: Vec::with_capacity(w),
            local: Vec::with_capacity(w),
            binary,
            threads: config.train.threads,
        };
        if addresses.is_empty() {
            for worker in 0..w {
                let lt = LocalTrainer::spawn(&t.binary, t.threads)?;
                reporter.trainer_started(worker, lt.pid(), &lt.address);
                t.clients
                    .push(trainers::connect(&lt.address, Some(lt.key.clone())).await?);
                t.addresses.push(lt.address.clone());
                t.keys.push(Some(lt.key.clone()));
                t.local.push(Some(lt));
            }
        } else {
            // Trainers started by hand share the key in HOPPER_TRAINER_KEY_FILE.
            let key = TrainerKey::from_env()?;
            for a in addresses {
                t.clients.push(trainers::connect(a, key.clone()).await?);
                t.addresses.push(a.clone());
                t.keys.push(key.clone());
                t.local.push(None);
            }
        }
        Ok(t)
    }

    /// A proof for trainer `w`, for another trainer to present to it once
    /// (a state's hop); empty if `w` takes no key.
    fn proof(&self, w: usize) -> String {
        self.keys
            .get(w)
            .and_then(Option::as_ref)
            .map(TrainerKey::proof)
            .unwrap_or_default()
    }

    /// Whether trainer `w` answers a health check.
    async fn alive(&mut self, w: usize) -> bool {
        if let Some(Some(t)) = self.local.get_mut(w) {
            if t.exited() {
                return false;
            }
        }
        let mut c = self.clients[w].clone();
        let check = c.health(hopper_proto::HealthRequest {});
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(10), check).await,
            Ok(Ok(_))
        )
    }

    /// Each trainer's device as its health check describes it.
    async fn devices(&self) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(self.clients.len());
        for (w, c) in self.clients.iter().enumerate() {
            let health = c
                .clone()
                .health(hopper_proto::HealthRequest {})
                .await
                .map_err(|s| trainer_status(w, "answering a health check", s))?;
            out.push(health.into_inner().device);
        }
        Ok(out)
    }

    /// Replaces trainer `w` by a fresh process if it is one of ours and is
    /// dead. Returns whether it did.
    async fn replace_if_dead(&mut self, w: usize, reporter: &Reporter) -> Result<bool> {
        if self.local.get(w).is_none_or(Option::is_none) || self.alive(w).await {
            return Ok(false);
        }
        if let Some(Some(old)) = self.local.get_mut(w) {
            old.kill();
        }
        let t = LocalTrainer::spawn(&self.binary, self.threads)?;
        reporter.println(format!(
            "trainer {w}: replaced by a new process at {}",
            t.address
        ));
        reporter.trainer_started(w, t.pid(), &t.address);
        self.clients[w] = trainers::connect(&t.address, Some(t.key.clone())).await?;
        self.addresses[w] = t.address.clone();
        self.keys[w] = Some(t.key.clone());
        self.local[w] = Some(t);
        Ok(true)
    }
}

/// A stable fingerprint of what determines a run's results.
fn fingerprint(config: &RunConfig, models: &[mop_core::config::ModelConfig]) -> String {
    // The flight-server's address is left out: a resumed run (e.g. `mop demo
    // --resume`) may reach the same data through a server on another port.
    let base = (
        config.train_sql().ok(),
        config.validation_sql().ok(),
        &config.grid,
        config.train.epochs,
        config.train.seed,
    );
    // Configurations kept in a table are part of what the run is. A run
    // without `[search]` or a table keeps the fingerprint it always had, so
    // its checkpoints stay resumable.
    let table = config.grid.table.as_ref().map(|_| models);
    let text = if config.search.is_default() && table.is_none() {
        serde_json::to_string(&base)
    } else {
        serde_json::to_string(&(base, &config.search, table))
    }
    .unwrap_or_default();
    // What ranks, keeps and stops models changes the results; runs that
    // set none of it keep their old fingerprint.
    let t = &config.train;
    let text = if t.metric.is_none() && t.keep == Keep::Last && t.patience.is_none() {
        text
    } else {
        let ranking = (t.metric, t.keep, t.patience);
        format!(
            "{text}{}",
            serde_json::to_string(&ranking).unwrap_or_default()
        )
    };
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// The MLflow name of a run: its output directory and when it started.
fn run_name(out: &std::path::Path) -> String {
    let dir = out.file_name().map_or_else(
        || out.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    format!("{dir} {}", chrono::Local::now().format("%Y-%m-%d %H:%M:%S"))
}

fn trainer_err(w: usize, m: impl std::fmt::Display) -> Error {
    Error::Trainer {
        trainer: w.to_string(),
        message: m.to_string(),
    }
}

/// A trainer's refusal as an error, `what` naming the call (empty for a
/// unit); a flight-server's refusal of a ticket that the trainer passes on
/// becomes [`Error::TicketRefused`].
fn trainer_status(w: usize, what: &str, s: tonic::Status) -> Error {
    let message = match what {
        "" => s.message().to_string(),
        what => format!("{what}: {}", s.message()),
    };
    if flight_client::refused::is_ticket_refused(&s) {
        Error::TicketRefused(format!("trainer {w}: {message}"))
    } else if hopper_proto::hop::is_state_source_failed(&s) {
        Error::StateSource(format!("trainer {w}: {message}"))
    } else {
        trainer_err(w, message)
    }
}

/// Trains every model of the grid with MOP; see the module docs.
pub async fn train(config: RunConfig, opts: TrainOptions) -> Result<RunOutcome> {
    let mut tracker = None;
    let mut held = crate::pins::Held::default();
    let result = run(config, opts, &mut tracker, &mut held).await;
    // A run that failed releases its pins here (a finished one has, and an
    // interrupted one keeps them for `--resume`).
    held.release().await;
    if let Some(t) = tracker {
        let results = result.as_ref().ok().map(|o| o.dir.join("results.json"));
        t.finish(match (&result, &results) {
            (_, Some(path)) => End::Finished(path),
            (Err(Error::Interrupted(_)), _) => End::Interrupted,
            _ => End::Failed,
        })
        .await;
    }
    result
}

/// [`train`], with the MLflow tracker it starts (`[output] mlflow`) left in
/// `tracker`, and its pinned snapshots in `held`, for `train` to end,
/// whichever way the run ends.
async fn run(
    config: RunConfig,
    mut opts: TrainOptions,
    tracker: &mut Option<Tracker>,
    held: &mut crate::pins::Held,
) -> Result<RunOutcome> {
    // Before any epoch: the result tables must not replace what they must not.
    crate::output_guard::check_output(&config).await?;
    let models = crate::mst_table::load_models(&config).await?;
    let out = config.output.dir.clone();
    std::fs::create_dir_all(&out)?;
    let ckdir = CheckpointDir::new(&out)?;
    let fp = fingerprint(&config, &models);
    // Pin what the run reads first: the table statistics, every epoch and
    // every validation pass then see the same rows.
    let locations: Vec<String> = config
        .source
        .flight
        .locations()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let left = opts
        .resume
        .then(|| crate::pins::load(ckdir.dir()))
        .flatten();
    let pins = Pins::take(&locations, config.source.snapshot_ttl, left).await?;
    *held = pins.handle();
    pins.save(ckdir.dir())?;
    let models = crate::table_stats::resolve(&config, models, opts.resume, &pins).await?;
    *tracker = config
        .output
        .mlflow
        .as_deref()
        .map(|url| Tracker::start(url, &run_name(&out), &models));

    // Plan the data.
    let train_sql = config.train_sql()?;
    let mut plan = Plan::new(
        locations,
        train_sql.clone(),
        config.validation_sql()?,
        pins,
        config.source.cache == Cache::None,
    )
    .await?;
    let w = if !config.train.addresses.is_empty() {
        config.train.addresses.len()
    } else {
        config.train.trainers.unwrap_or(plan.train.len()).max(1)
    };
    if plan.train.is_empty() {
        return Err(Error::Config(format!("{train_sql:?} has no endpoints")));
    }
    if w > plan.train.len() {
        return Err(Error::Config(format!(
            "{w} trainers but the data has {} endpoints: every trainer needs at least one \
             (use fewer trainers, or more segments or --split on the flight-server)",
            plan.train.len()
        )));
    }

    // Resume or start fresh.
    let existing = ckdir.load()?;
    let metric = config.metric();
    let keep_best = config.train.keep == Keep::Best;
    let mut best: Vec<Option<Best>> = vec![None; models.len()];
    // What every partition's rows were at their reads (kept in the
    // checkpoint, so a resumed run compares with the reads before it).
    let mut reads = SourceReads::default();
    let on_change = config.source.on_change;
    let (mut sched, states, mut units_done, mut metrics, mut timeline, elapsed0, resumed_evals) =
        match (opts.resume, existing) {
            (true, Some(c)) => {
                if c.config_fingerprint != fp {
                    return Err(Error::Config(format!(
                        "the checkpoint in {} belongs to a different run configuration; \
                         use another output.dir or delete the checkpoint",
                        out.display()
                    )));
                }
                if c.scheduler.partitions() != w {
                    return Err(Error::Config(format!(
                        "the checkpoint was made with {} trainers, this run has {w}",
                        c.scheduler.partitions()
                    )));
                }
                let mut states = Vec::with_capacity(models.len());
                for s in &c.states {
                    states.push(match s {
                        Some(name) => Some(Bytes::from(ckdir.read_state(name)?)),
                        None => None,
                    });
                }
                for (m, b) in c.best.iter().enumerate().take(models.len()) {
                    if let Some(b) = b {
                        best[m] = Some((b.epoch, Bytes::from(ckdir.read_state(&b.state)?)));
                    }
                }
                reads = c.reads;
                (
                    c.scheduler,
                    states,
                    c.units_done,
                    c.metrics,
                    c.timeline,
                    c.elapsed,
                    c.pending_evals,
                )
            }
            (false, Some(_)) => {
                return Err(Error::Config(format!(
                    "{} already holds a run's checkpoint: pass --resume to continue it, \
                     or choose another output directory",
                    out.display()
                )))
            }
            (_, None) => {
                let s = Scheduler::with_stopping(
                    models.len(),
                    w,
                    config.epochs(),
                    config.train.seed,
                    Policy::Reproducible,
                    config.rule()?,
                    config.train.patience,
                )?;
                (
                    s,
                    vec![None; models.len()],
                    vec![0; models.len()],
                    vec![Vec::new(); models.len()],
                    Vec::new(),
                    0.0,
                    Vec::new(),
                )
            }
        };

    // Where every model's state is: the runner holds a copy of each at its
    // epochs' ends (or after every unit); between, the trainer that trained
    // a model last keeps it, and the model's next trainer fetches it.
    let copies = states
        .into_iter()
        .zip(&units_done)
        .map(|(state, &units)| StateCopy { state, units })
        .collect();
    let mut book = StateBook::new(copies, config.train.checkpoint);
    // The run's records of trained units, lent to what sends a model back
    // to the runner's copy of its state.
    macro_rules! trained {
        () => {
            Trained {
                units_done: &mut units_done,
                metrics: &mut metrics,
                timeline: &mut timeline,
            }
        };
    }

    // Trainers.
    let binary = match &opts.trainer_binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let progress = sched.progress();
    let reporter = Arc::new(
        Reporter::new(opts.progress, w, progress.total, progress.done)
            .with_tracker(tracker.clone()),
    );
    // Given trainers are matched to the hosts of their partitions.
    let partition_hosts: Vec<Vec<String>> = (0..w)
        .map(|p| {
            let eps = plan
                .train_part(p, w)
                .into_iter()
                .chain(plan.validation_part(p, w));
            locality::hosts(&eps.map(|e| e.location).collect::<Vec<_>>())
        })
        .collect();
    let given = &config.train.addresses;
    let given_hosts: Vec<String> = given.iter().map(|a| locality::host_of(a)).collect();
    let addresses: Vec<String> = locality::assign(&given_hosts, &partition_hosts)
        .into_iter()
        .filter_map(|t| given.get(t).cloned())
        .collect();
    let mut trainers = Trainers::start(&config, &addresses, w, binary, &reporter).await?;
    let trainer_hosts: Vec<String> = trainers
        .addresses
        .iter()
        .map(|a| locality::host_of(a))
        .collect();
    let local: Vec<bool> = (0..w)
        .map(|p| locality::is_local(&trainer_hosts[p], &partition_hosts[p]))
        .collect();
    let cache = match config.source.cache {
        Cache::Memory => ProtoCache::Memory,
        Cache::Disk => ProtoCache::Disk,
        Cache::None => ProtoCache::None,
    };
    let threads = config.train.threads as u32;
    let open_req = |plan: &Plan, p: usize| hopper_proto::OpenPartitionRequest {
        partition: p as u32,
        train: plan.train_part(p, w),
        validation: plan.validation_part(p, w),
        cache: cache as i32,
        threads,
    };
    let mut opens = JoinSet::new();
    for (p, c) in trainers.clients.iter().enumerate() {
        let mut c = c.clone();
        let req = open_req(&plan, p);
        opens.spawn(async move { (p, c.open_partition(req).await) });
    }
    let devices = trainers.devices().await?;
    reporter.println(device_summary(&devices));
    let mut partitions: Vec<PartitionRecord> = (0..w)
        .map(|p| PartitionRecord {
            partition: p,
            trainer: trainers.addresses[p].clone(),
            trainer_host: trainer_hosts[p].clone(),
            device: devices[p].clone(),
            endpoint_hosts: partition_hosts[p].clone(),
            local: local[p],
            rows: 0,
            open_bytes: 0,
        })
        .collect();
    while let Some(r) = opens.join_next().await {
        let (p, r) = r.map_err(|e| trainer_err(0, e))?;
        let opened = r
            .map_err(|s| trainer_status(p, "opening its partition", s))?
            .into_inner();
        partitions[p].rows = opened.train_rows;
        partitions[p].open_bytes = opened.train_bytes + opened.validation_bytes;
        check_open(&mut reads, on_change, &plan, w, p, opened, &reporter)?;
    }
    for r in partitions.iter().filter(|r| !r.local) {
        reporter.println(format!(
            "partition {}: trainer on {} reads from {} (not local)",
            r.partition,
            r.trainer_host,
            r.endpoint_hosts.join(", ")
        ));
    }

    let has_validation = plan.has_validation();
    // Units and validation passes read with the runner's tickets only
    // without a cache; with one, tickets matter when a partition is opened.
    let reads_every_pass = config.source.cache == Cache::None;
    // Each model's configuration as its wire message, built once: every
    // unit and validation pass of the model shares it.
    let wire_configs = crate::torchscript::wire_configs(&models)?;
    crate::torchscript::check_models(&trainers.clients[0], &models, &wire_configs).await?;
    let started = Instant::now();
    let now = |started: &Instant| elapsed0 + started.elapsed().as_secs_f64();
    let mut failures = vec![0u32; w];
    let mut set: JoinSet<Done> = JoinSet::new();
    let mut interrupt = opts.interrupt.take();
    // Validation passes in flight, by (model, epoch): checkpointed with their
    // states so that a resumed run still validates every epoch.
    let mut evals: BTreeMap<(usize, usize), Bytes> = BTreeMap::new();
    for e in resumed_evals {
        let state = Bytes::from(ckdir.read_state(&e.state)?);
        evals.insert((e.model, e.epoch), state.clone());
        spawn_eval(
            &mut set,
            &trainers.clients,
            plan.validation_for(w).await?,
            wire_configs[e.model].clone(),
            PendingEval {
                model: e.model,
                epoch: e.epoch,
                state,
                attempts: 0,
            },
        );
    }

    let mut dirty = false;
    let mut writing: Option<tokio::task::JoinHandle<Result<()>>> = None;
    loop {
        if reads_every_pass && plan.expiring() {
            plan.refresh().await?;
            reporter.replanned("expiring", plan.replans);
        }
        for (worker, &failed) in failures.iter().enumerate() {
            // An idle trainer gets a unit; a busy one, the unit it runs
            // next, so the model's state travels while it trains. Not after
            // a failure, until a unit succeeds there again; and not where
            // every unit reads endpoints that can be read once: those are
            // planned as the unit is handed out, and one queued behind a
            // long unit would leave its cursor unread past the server's
            // idle limit.
            let unit = match sched.held(worker) {
                0 => sched.next_unit(worker),
                _ if failed == 0 && !plan.by_round() => sched.queue_unit(worker),
                _ => None,
            };
            let Some(unit) = unit else {
                continue;
            };
            let directive = book.directive(unit.model, worker, sched.ends_epoch(unit), |t| {
                trainers.proof(t)
            });
            let hop = directive.hop;
            let req = TrainUnitRequest {
                model: unit.model as u32,
                config: Some((*wire_configs[unit.model]).clone()),
                state: directive.state,
                epoch: unit.epoch as u32,
                seed: config.train.seed.wrapping_add(unit.model as u64),
                train: plan.train_for(worker, w).await?,
                from: directive.from,
                hold: hop.hold,
                version: hop.version,
                return_state: hop.return_state(),
            };
            let client = trainers.clients[worker].clone();
            let address = trainers.addresses[worker].clone();
            let rep = reporter.clone();
            set.spawn(async move {
                let (began, result) = run_unit(client, req, unit, rep).await;
                let start = elapsed0 + began.saturating_duration_since(started).as_secs_f64();
                Done::Unit {
                    worker,
                    unit,
                    start,
                    hop,
                    address,
                    result,
                }
            });
        }
        // The checkpoint is taken once the freed trainers have their next
        // units, and written off the control loop (a model's state is 94 MB
        // for confA): one write at a time, each of the latest state of the
        // run. It holds no running unit, so units dispatched just now run
        // again on resume.
        if writing.as_ref().is_some_and(|t| t.is_finished()) {
            finish_write(&mut writing).await?;
        }
        if dirty && writing.is_none() {
            let job = CheckpointJob {
                sched: sched.clone(),
                copies: book.copies().to_vec(),
                units_done: units_done.clone(),
                metrics: metrics.clone(),
                timeline: timeline.clone(),
                evals: evals.clone(),
                best: best.clone(),
                reads: reads.clone(),
                elapsed: now(&started),
                fingerprint: fp.clone(),
            };
            let ckdir = ckdir.clone();
            writing = Some(tokio::task::spawn_blocking(move || job.write(&ckdir)));
            dirty = false;
        }
        if sched.is_done() && set.is_empty() {
            finish_write(&mut writing).await?;
            if !dirty {
                break;
            }
            continue;
        }
        let done = match interrupt.as_mut() {
            Some(stop) => tokio::select! {
                d = set.join_next() => d,
                _ = stop => {
                    set.abort_all();
                    finish_write(&mut writing).await?;
                    reporter.finish();
                    // Kept for `--resume` (until the servers' idle limit).
                    plan.pins.keep();
                    return Err(Error::Interrupted(format!(
                        "stopped with {} of {} units done; `--resume` continues from {}",
                        sched.progress().done, sched.progress().total, ckdir.file().display()
                    )));
                }
            },
            None => set.join_next().await,
        };
        let Some(done) = done else {
            return Err(Error::Schedule(
                "no unit is runnable and none is running; the schedule is stuck".into(),
            ));
        };
        match done.map_err(|e| Error::Schedule(format!("unit task: {e}")))? {
            Done::Unit {
                worker,
                unit,
                start,
                hop,
                address,
                result: Ok(r),
            } => {
                // Rows that changed since the partition's earlier reads stop
                // the run before the unit counts (or, warned, are recorded).
                if let Some(got) = r.read.clone() {
                    let from = source_of(&plan, Split::Train, unit.partition, w);
                    let read = Read {
                        partition: unit.partition,
                        split: Split::Train,
                        kind: ReadKind::Unit,
                        model: Some(unit.model),
                        epoch: Some(unit.epoch),
                        from,
                        got: rows_read(got),
                    };
                    check_read(&mut reads, on_change, read, &reporter)?;
                }
                failures[worker] = 0;
                let m = unit.model;
                if hop.copy && r.state.is_empty() {
                    return Err(trainer_err(
                        worker,
                        "the unit's result carries no state though the runner asked for it; \
                         is the trainer older than the runner?",
                    ));
                }
                sched.complete(unit)?;
                units_done[m] += 1;
                // Kept as received: the buffer the message was decoded into,
                // shared with evaluations and the checkpoint.
                let superseded = book.unit_done(m, worker, &address, hop, r.state, units_done[m]);
                if let Some((holder, key)) = superseded {
                    release(&trainers.clients[holder], key);
                }
                release_if_trained_out(&sched, &book, &trainers.clients, m)?;
                let em = epoch_slot(&mut metrics[m], unit.epoch);
                em.train_samples += r.samples;
                em.train_loss_sum += r.loss_sum;
                em.train_correct += r.correct;
                em.seconds += r.seconds;
                em.wait_seconds += r.wait_seconds;
                merge_stats(
                    &mut em.train_scores,
                    &mut em.train_regression,
                    r.scores,
                    r.regression,
                )
                .map_err(|e| trainer_err(worker, format!("its metrics: {e}")))?;
                if sched.model_epoch(m)? > unit.epoch {
                    // The epoch visited every partition: its AUC is final.
                    if let Some(scores) = em.train_scores.take() {
                        em.train_auc = Some(scores.auc());
                    }
                }
                let end = now(&started);
                timeline.push(UnitRecord {
                    model: m,
                    partition: unit.partition,
                    epoch: unit.epoch,
                    start,
                    end,
                    samples: r.samples,
                    wait_seconds: r.wait_seconds,
                    bytes_read: r.bytes_read,
                    local: Some(local[unit.partition]),
                });
                reporter.unit_done(unit, r.samples, r.seconds);
                if sched.model_epoch(m)? > unit.epoch {
                    if has_validation {
                        let state = book.copy(m).state.clone().unwrap_or_default();
                        evals.insert((m, unit.epoch), state.clone());
                        spawn_eval(
                            &mut set,
                            &trainers.clients,
                            plan.validation_for(w).await?,
                            wire_configs[m].clone(),
                            PendingEval {
                                model: m,
                                epoch: unit.epoch,
                                state,
                                attempts: 0,
                            },
                        );
                    } else {
                        reporter.epoch_done(m, unit.epoch, &metrics[m][unit.epoch]);
                    }
                }
                dirty = true;
            }
            Done::Unit {
                worker,
                unit,
                result: Err(e),
                ..
            } => {
                sched.requeue(unit)?;
                reporter.unit_failed(unit, &e.to_string());
                if matches!(e, Error::StateSource(_)) {
                    // Not the trainer's fault: where the state was.
                    let m = unit.model;
                    let fetched = match book.kept_on(m) {
                        Some((holder, key)) => fetch_state(&trainers.clients[holder], key)
                            .await
                            .ok()
                            .map(|s| (holder, s)),
                        None => None,
                    };
                    match fetched {
                        Some((holder, state)) => {
                            if let Some((_, key)) = book.kept_on(m) {
                                release(&trainers.clients[holder], key);
                            }
                            if book.through_runner(m, state) {
                                reporter.states_through_runner(worker, holder);
                            }
                        }
                        None => {
                            rewind(&mut sched, &mut book, trained!(), m, &reporter)?;
                        }
                    }
                    dirty = true;
                    continue;
                }
                failures[worker] += 1;
                if matches!(e, Error::TicketRefused(_)) {
                    replan(&mut plan, &reporter).await?;
                }
                if failures[worker] > MAX_RETRIES {
                    reporter.finish();
                    return Err(trainer_err(worker, format!(
                        "{MAX_RETRIES} units failed in a row; last error: {e}; the checkpoint is kept, fix the trainer and `--resume`"
                    )));
                }
                // A local trainer that died is replaced; the unit then runs
                // again from the model's state before it. A trainer that is
                // alive but failed gets a pause before its next unit.
                if !trainers.replace_if_dead(worker, &reporter).await? {
                    let backoff = std::time::Duration::from_millis(100 << failures[worker].min(6));
                    tokio::time::sleep(backoff).await;
                }
                // States a replaced trainer kept are gone (this one's, or an
                // earlier one's whose model was handed out then).
                states_lost(
                    &trainers.addresses,
                    &mut sched,
                    &mut book,
                    trained!(),
                    &reporter,
                )?;
                dirty = true;
                if let Some(opened) =
                    reopen(&mut trainers, &mut plan, worker, &open_req, &reporter).await?
                {
                    check_open(&mut reads, on_change, &plan, w, worker, opened, &reporter)?;
                }
            }
            Done::Eval {
                eval,
                result: Ok(totals),
            } => {
                let (model, epoch) = (eval.model, eval.epoch);
                for (p, got) in &totals.reads {
                    let read = Read {
                        partition: *p,
                        split: Split::Validation,
                        kind: ReadKind::Validation,
                        model: Some(model),
                        epoch: Some(epoch),
                        from: source_of(&plan, Split::Validation, *p, w),
                        got: rows_read(got.clone()),
                    };
                    check_read(&mut reads, on_change, read, &reporter)?;
                }
                evals.remove(&(model, epoch));
                let em = epoch_slot(&mut metrics[model], epoch);
                em.val_samples = totals.samples;
                em.val_loss_sum = totals.loss_sum;
                em.val_correct = totals.correct;
                em.val_regression = totals.regression;
                em.val_auc = totals.scores.map(|s| s.auc());
                reporter.epoch_done(model, epoch, &metrics[model][epoch]);
                // The search decides from the validation metric, computed
                // from statistics that merge exactly: the same on every run
                // of the same weights.
                let score = signed_score(&metrics[model][epoch], metric);
                if keep_best {
                    let better = match &best[model] {
                        None => true,
                        Some((e, _)) => {
                            let held = signed_score(&metrics[model][*e], metric);
                            score > held || (score == held && epoch < *e)
                        }
                    };
                    if better {
                        best[model] = Some((epoch, eval.state.clone()));
                    }
                }
                // Early stopping moves every model on one epoch at a time:
                // only its stops are news; a budget that ends is no news.
                let patient = sched.search().and_then(|p| p.patience()).is_some();
                for d in sched.record_score(model, epoch, score)? {
                    if let Decision::Stop { model, .. } = d {
                        release_if_trained_out(&sched, &book, &trainers.clients, model)?;
                    }
                    match d {
                        Decision::Stop { stop, .. } if stop.reason == Reason::Finished => {}
                        Decision::Continue { .. } if patient => {}
                        d => reporter.decided(&d),
                    }
                }
                reporter.set_total(sched.progress().total);
                dirty = true;
            }
            Done::Eval {
                mut eval,
                result: Err(e),
            } => {
                eval.attempts += 1;
                if eval.attempts > MAX_RETRIES {
                    reporter.finish();
                    return Err(Error::Trainer {
                        trainer: "validation".into(),
                        message: format!(
                            "validating model {} after epoch {} failed {MAX_RETRIES} times; last error: {e}; \
                             the checkpoint is kept, fix the trainers and `--resume`",
                            eval.model, eval.epoch + 1
                        ),
                    });
                }
                reporter.println(format!(
                    "validating model {} after epoch {} failed, will run again: {e}",
                    eval.model,
                    eval.epoch + 1
                ));
                if matches!(e, Error::TicketRefused(_)) {
                    replan(&mut plan, &reporter).await?;
                }
                // Replace whichever trainer died (a busy one's unit fails
                // too and is rerun), reopen it, then validate again.
                let mut replaced = false;
                for worker in 0..w {
                    if trainers.replace_if_dead(worker, &reporter).await? {
                        replaced = true;
                        states_lost(
                            &trainers.addresses,
                            &mut sched,
                            &mut book,
                            trained!(),
                            &reporter,
                        )?;
                        dirty = true;
                        if let Some(opened) =
                            reopen(&mut trainers, &mut plan, worker, &open_req, &reporter).await?
                        {
                            check_open(&mut reads, on_change, &plan, w, worker, opened, &reporter)?;
                        }
                    }
                }
                if !replaced {
                    tokio::time::sleep(std::time::Duration::from_millis(
                        100 << eval.attempts.min(6),
                    ))
                    .await;
                }
                spawn_eval(
                    &mut set,
                    &trainers.clients,
                    plan.validation_for(w).await?,
                    wire_configs[eval.model].clone(),
                    eval,
                );
            }
        }
    }
    reporter.finish();
    reporter.states_moved(&book.traffic());
    plan.pins.release().await;
    let _ = std::fs::remove_file(ckdir.dir().join(crate::pins::PINS_FILE));
    let seconds = now(&started);
    let model_results = models
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (kept, state) = match &best[i] {
                Some((e, state)) if keep_best => (Some(*e), Some(state)),
                _ => (None, book.copy(i).state.as_ref()),
            };
            let state = state.map(|s| results::StateBlob::new(s.clone()));
            results::ModelResult {
                id: i,
                config: c.clone(),
                metrics: metrics[i].clone(),
                state,
                kept,
                stop: sched.fate(i).ok().flatten(),
            }
        })
        .collect();
    let outcome = RunOutcome {
        models: model_results,
        timeline,
        partitions,
        source_changes: reads.changes.clone(),
        seconds,
        trainers: w,
        dir: out,
    };
    results::write_files(&outcome, &config)?;
    // The report is a picture of files just written; a failure to draw it
    // must not fail a finished run (`mop report` draws it again).
    if let Err(e) = mop_report::write_report(&outcome.dir, None) {
        tracing::warn!("writing the report failed: {e}");
        reporter.println(format!("the report was not written: {e}"));
    }
    if let Some(table) = &config.output.table {
        let db = config.output.database.as_deref().ok_or_else(|| {
            Error::Config("output.table needs output.database (a PostgreSQL URL)".into())
        })?;
        crate::result_tables::write_tables(&outcome, &config, db, table).await?;
    }
    drop(trainers);
    Ok(outcome)
}

fn signed_score(m: &EpochMetrics, metric: Metric) -> f64 {
    let v = metric.signed(m.value(metric, Split::Validation));
    if m.val_samples == 0 || v.is_finite() {
        v
    } else if v == f64::INFINITY {
        f64::MAX
    } else {
        f64::MIN
    }
}

fn epoch_slot(v: &mut Vec<EpochMetrics>, epoch: usize) -> &mut EpochMetrics {
    if v.len() <= epoch {
        v.resize(epoch + 1, EpochMetrics::default());
    }
    &mut v[epoch]
}

#[allow(clippy::too_many_arguments)]
/// Waits for the checkpoint being written, if one is.
async fn finish_write(writing: &mut Option<tokio::task::JoinHandle<Result<()>>>) -> Result<()> {
    match writing.take() {
        Some(task) => task
            .await
            .map_err(|e| Error::Schedule(format!("checkpoint writer: {e}")))?,
        None => Ok(()),
    }
}

/// A checkpoint as the control loop took it: owned, so that it is written
/// while the loop goes on (states are shared, not copied).
struct CheckpointJob {
    sched: Scheduler,
    copies: Vec<StateCopy>,
    units_done: Vec<u64>,
    metrics: Vec<Vec<EpochMetrics>>,
    timeline: Vec<UnitRecord>,
    evals: BTreeMap<(usize, usize), Bytes>,
    best: Vec<Option<Best>>,
    reads: SourceReads,
    elapsed: f64,
    fingerprint: String,
}

impl CheckpointJob {
    /// Writes the states the checkpoint names that are not on disk yet,
    /// then the checkpoint itself (atomically: a kill leaves the one before).
    fn write(self, ckdir: &CheckpointDir) -> Result<()> {
        let CheckpointJob {
            sched: mut snapshot,
            copies,
            mut units_done,
            mut metrics,
            mut timeline,
            evals,
            best,
            reads,
            elapsed,
            fingerprint: fp,
        } = self;
        // The checkpoint holds no running unit: what runs now runs again on
        // resume.
        for u in snapshot.running() {
            snapshot.requeue(u)?;
        }
        // It holds the states the runner has copies of: a model that went on
        // since (its state kept by a trainer) starts that epoch again.
        for (m, c) in copies.iter().enumerate() {
            let t = Trained {
                units_done: &mut units_done,
                metrics: &mut metrics,
                timeline: &mut timeline,
            };
            undo_to_copy(&mut snapshot, m, c.units, t)?;
        }
        let mut names = Vec::with_capacity(copies.len());
        for (m, s) in copies.iter().map(|c| &c.state).enumerate() {
            names.push(match s {
                Some(bytes) => {
                    let name = format!("model-{m}.u{}.safetensors", units_done[m]);
                    if !ckdir_has(ckdir, &name) {
                        ckdir.write_state(m, units_done[m], bytes)?;
                    }
                    Some(name)
                }
                None => None,
            });
        }
        let mut pending_evals = Vec::with_capacity(evals.len());
        for (&(model, epoch), bytes) in &evals {
            let name = format!("model-{model}.e{epoch}.safetensors");
            if !ckdir_has(ckdir, &name) {
                mop_core::run_dir::checkpoint::write_atomic(
                    &ckdir.file().with_file_name(&name),
                    bytes,
                )?;
            }
            pending_evals.push(EvalRecord {
                model,
                epoch,
                state: name,
            });
        }
        let mut best_records = Vec::new();
        if best.iter().any(Option::is_some) {
            for (model, b) in best.iter().enumerate() {
                best_records.push(match b {
                    Some((epoch, bytes)) => {
                        let name = format!("model-{model}.best{epoch}.safetensors");
                        if !ckdir_has(ckdir, &name) {
                            mop_core::run_dir::checkpoint::write_atomic(
                                &ckdir.file().with_file_name(&name),
                                bytes,
                            )?;
                        }
                        Some(BestRecord {
                            epoch: *epoch,
                            state: name,
                        })
                    }
                    None => None,
                });
            }
        }
        Ok(ckdir.commit(&Checkpoint {
            format_version: mop_core::run_dir::checkpoint::CHECKPOINT_FORMAT,
            scheduler: snapshot,
            states: names,
            units_done,
            metrics,
            timeline,
            elapsed,
            config_fingerprint: fp,
            pending_evals,
            best: best_records,
            reads,
        })?)
    }
}

/// What the run recorded of every model's units, which a model sent back
/// to the state the runner holds forgets.
struct Trained<'a> {
    units_done: &'a mut [u64],
    metrics: &'a mut [Vec<EpochMetrics>],
    timeline: &'a mut Vec<UnitRecord>,
}

/// Sends model `m` back to the start of its epoch, where the runner's copy
/// of its state (after `to` units) is: the scheduler, the unit count, the
/// epoch's training figures and its units on the timeline. Returns how many
/// units it undid.
fn undo_to_copy(sched: &mut Scheduler, m: usize, to: u64, t: Trained<'_>) -> Result<u64> {
    if t.units_done[m] == to {
        return Ok(0);
    }
    let epoch = sched.model_epoch(m)?;
    let undone = sched.restart_epoch(m)? as u64;
    if t.units_done[m].checked_sub(undone) != Some(to) {
        return Err(Error::Schedule(format!(
            "model {m}: the runner holds its state after {to} units, but its epoch began after {}",
            t.units_done[m].saturating_sub(undone)
        )));
    }
    t.units_done[m] = to;
    if let Some(v) = t.metrics.get_mut(m) {
        v.truncate(epoch);
    }
    t.timeline.retain(|u| u.model != m || u.epoch < epoch);
    Ok(undone)
}

/// Model `m`'s latest state is lost (the trainer that kept it died): it
/// goes back to the runner's copy, and the units since run again.
fn rewind(
    sched: &mut Scheduler,
    book: &mut StateBook,
    t: Trained<'_>,
    m: usize,
    reporter: &Reporter,
) -> Result<()> {
    let undone = undo_to_copy(sched, m, book.copy(m).units, t)?;
    book.rewind(m);
    if undone > 0 {
        reporter.rewound(m, undone);
    }
    Ok(())
}

/// States kept by trainers since replaced (now at `addresses`) are gone.
/// Models not handed out go back to the runner's copies now; a handed-out
/// one goes back once its unit fails (it fails if its trainer had not
/// fetched the state yet).
fn states_lost(
    addresses: &[String],
    sched: &mut Scheduler,
    book: &mut StateBook,
    t: Trained<'_>,
    reporter: &Reporter,
) -> Result<()> {
    let handed: Vec<usize> = sched.running().iter().map(|u| u.model).collect();
    for m in 0..t.units_done.len() {
        if book.lost(m, addresses) && !handed.contains(&m) {
            let again = Trained {
                units_done: &mut *t.units_done,
                metrics: &mut *t.metrics,
                timeline: &mut *t.timeline,
            };
            rewind(sched, book, again, m, reporter)?;
        }
    }
    Ok(())
}

/// Fetches the state of `key` from the trainer `client` reaches.
async fn fetch_state(client: &Client, key: hopper_proto::StateKey) -> Result<Bytes> {
    let mut stream = client
        .clone()
        .fetch_state(hopper_proto::FetchStateRequest { key: Some(key) })
        .await
        .map_err(|s| trainer_err(0, s.message()))?
        .into_inner();
    hopper_proto::hop::collect(&mut stream, &key)
        .await
        .map_err(|s| trainer_err(0, s.message()))
}

/// Tells the trainer that keeps model `m`'s state to forget it once the
/// model trains no more (the runner holds its last state).
fn release_if_trained_out(
    sched: &Scheduler,
    book: &StateBook,
    clients: &[Client],
    m: usize,
) -> Result<()> {
    let out = match sched.fate(m)? {
        Some(fate) => sched.model_epoch(m)? >= fate.epochs,
        None => false,
    };
    if let Some((holder, key)) = book.kept_on(m).filter(|_| out) {
        release(&clients[holder], key);
    }
    Ok(())
}

/// Tells the trainer `client` reaches to forget the state of `key`, in the
/// background: a trainer that does not hear it keeps a state until the
/// model's next version replaces it.
fn release(client: &Client, key: hopper_proto::StateKey) {
    let mut client = client.clone();
    tokio::spawn(async move {
        let _ = client
            .release_states(hopper_proto::ReleaseStatesRequest { keys: vec![key] })
            .await;
    });
}

fn ckdir_has(ckdir: &CheckpointDir, name: &str) -> bool {
    ckdir.file().with_file_name(name).exists()
}

/// Runs `unit` on its trainer. Returns when it started there (the trainer
/// answers once the unit holds its partition: a unit handed out ahead of
/// time waits there for the one before it) with its result.
async fn run_unit(
    client: Client,
    req: TrainUnitRequest,
    unit: Unit,
    reporter: Arc<Reporter>,
) -> (Instant, Result<hopper_proto::UnitResult>) {
    let mut began = Instant::now();
    let result = unit_result(client, req, unit, &reporter, &mut began).await;
    (began, result)
}

async fn unit_result(
    mut client: Client,
    req: TrainUnitRequest,
    unit: Unit,
    reporter: &Reporter,
    began: &mut Instant,
) -> Result<hopper_proto::UnitResult> {
    let w = unit.partition;
    let mut stream = client
        .train_unit(req)
        .await
        .map_err(|s| trainer_status(w, "", s))?
        .into_inner();
    *began = Instant::now();
    reporter.unit_started(unit);
    loop {
        match stream.message().await {
            Ok(Some(ev)) => match ev.event {
                Some(train_event::Event::Progress(p)) => {
                    reporter.unit_progress(unit, p.samples, p.samples_per_second)
                }
                Some(train_event::Event::Result(r)) => return Ok(r),
                None => {}
            },
            Ok(None) => return Err(trainer_err(w, "the unit ended without a result")),
            Err(s) => return Err(trainer_status(w, "", s)),
        }
    }
}

/// Plans the run's queries again after a flight-server refused a ticket.
async fn replan(plan: &mut Plan, reporter: &Reporter) -> Result<()> {
    plan.refresh().await?;
    reporter.replanned("refused", plan.replans);
    Ok(())
}

/// Opens trainer `w`'s partition again (after a failed unit or a new
/// process), planning again first if the tickets expire soon or are refused.
/// Returns what the trainer read, if it opened the partition.
async fn reopen(
    trainers: &mut Trainers,
    plan: &mut Plan,
    w: usize,
    open_req: &impl Fn(&Plan, usize) -> hopper_proto::OpenPartitionRequest,
    reporter: &Reporter,
) -> Result<Option<hopper_proto::OpenPartitionResponse>> {
    if plan.expiring() {
        plan.refresh().await?;
        reporter.replanned("expiring", plan.replans);
    }
    let mut refused_once = false;
    loop {
        match trainers.clients[w].open_partition(open_req(plan, w)).await {
            Ok(opened) => return Ok(Some(opened.into_inner())),
            Err(s) => match trainer_status(w, "opening its partition", s) {
                Error::TicketRefused(_) if !refused_once => {
                    refused_once = true;
                    replan(plan, reporter).await?;
                }
                e => {
                    // The next unit on this trainer fails and brings it back here.
                    reporter.println(format!("reopening a partition failed: {e}"));
                    return Ok(None);
                }
            },
        }
    }
}

/// Starts `eval` on every trainer, each reading its `validation`
/// endpoints ([`Plan::validation_for`]).
fn spawn_eval(
    set: &mut JoinSet<Done>,
    clients: &[Client],
    validation: Vec<Vec<hopper_proto::FlightEndpoint>>,
    config: Arc<hopper_proto::ModelConfig>,
    eval: PendingEval,
) {
    let work: Vec<_> = clients.iter().cloned().zip(validation).collect();
    set.spawn(async move {
        let result = evaluate_everywhere(work, config, eval.state.clone()).await;
        Done::Eval { eval, result }
    });
}

async fn evaluate_everywhere(
    work: Vec<(Client, Vec<hopper_proto::FlightEndpoint>)>,
    config: Arc<hopper_proto::ModelConfig>,
    state: Bytes,
) -> Result<EvalTotals> {
    // Weights only: an evaluation needs no optimizer state (two thirds of
    // an Adam model's state), and every trainer gets a copy.
    let weights = match state.is_empty() {
        true => Bytes::new(),
        false => Bytes::from(mop_core::model_state::weights_only(&state)?),
    };
    let mut set = JoinSet::new();
    for (w, (mut c, validation)) in work.into_iter().enumerate() {
        let req = hopper_proto::EvaluateRequest {
            config: Some((*config).clone()),
            state: weights.clone(),
            validation,
        };
        set.spawn(async move { (w, c.evaluate(req).await) });
    }
    let mut t = EvalTotals::default();
    while let Some(r) = set.join_next().await {
        let (w, r) = r.map_err(|e| trainer_err(0, e))?;
        let r = r
            .map_err(|s| trainer_status(w, "evaluating", s))?
            .into_inner();
        t.samples += r.samples;
        t.loss_sum += r.loss_sum;
        t.correct += r.correct;
        if let Some(read) = r.read {
            t.reads.push((w, read));
        }
        merge_stats(&mut t.scores, &mut t.regression, r.scores, r.regression)
            .map_err(|e| trainer_err(w, format!("its metrics: {e}")))?;
    }
    Ok(t)
}

/// The figures of a read as the run directory keeps them.
fn rows_read(r: hopper_proto::RowsRead) -> RowsRead {
    RowsRead {
        rows: r.rows,
        checksum: r.checksum,
        scheme: r.scheme,
    }
}

/// Where partition `p`'s rows of `split` come from, for messages: its
/// endpoints' indices in the query's plan and their flight-servers.
fn source_of(plan: &Plan, split: Split, p: usize, w: usize) -> String {
    let (query, slices) = match split {
        Split::Train => ("training", &plan.train),
        Split::Validation => ("validation", &plan.validation),
    };
    let mine: Vec<usize> = (0..slices.len()).filter(|i| i % w == p).collect();
    let mut at: Vec<&str> = mine.iter().map(|&i| slices[i].location.as_str()).collect();
    at.dedup();
    let indices: Vec<String> = mine.iter().map(usize::to_string).collect();
    format!(
        "endpoint{} {} of the {query} query, at {}",
        if mine.len() == 1 { "" } else { "s" },
        indices.join(", "),
        at.join(", ")
    )
}

/// Compares a read with the partition's earlier reads
/// (`mop_core::run_dir::reads`): different rows stop the run with an error
/// naming the partition, or with `[source] on_change = "warn"` are
/// reported and recorded, and the run goes on.
fn check_read(
    reads: &mut SourceReads,
    on_change: OnChange,
    read: Read,
    reporter: &Reporter,
) -> Result<()> {
    match reads.check(&read) {
        Checked::First | Checked::Same => Ok(()),
        Checked::NewScheme { was } => {
            reporter.println(format!(
                "partition {}: the trainer checksums rows as {} where the run's earlier reads                  used {was}; its figures are the ones later reads must match",
                read.partition, read.got.scheme
            ));
            Ok(())
        }
        Checked::Changed(change) => match on_change {
            OnChange::Stop => {
                reporter.finish();
                Err(Error::RowsChanged(change.stop_message()))
            }
            OnChange::Warn => {
                let what = change.describe();
                tracing::warn!("{what}");
                reporter.println(format!(
                    "warning: {what}; going on over the new rows (on_change = \"warn\"), \
                     recorded in results.json"
                ));
                reads.accept(change);
                Ok(())
            }
        },
    }
}

/// [`check_read`] for what trainer `p` read when it filled its cache.
fn check_open(
    reads: &mut SourceReads,
    on_change: OnChange,
    plan: &Plan,
    w: usize,
    p: usize,
    opened: hopper_proto::OpenPartitionResponse,
    reporter: &Reporter,
) -> Result<()> {
    for (split, got) in [
        (Split::Train, opened.train_read),
        (Split::Validation, opened.validation_read),
    ] {
        let Some(got) = got else { continue };
        let read = Read {
            partition: p,
            split,
            kind: ReadKind::Open,
            model: None,
            epoch: None,
            from: source_of(plan, split, p, w),
            got: rows_read(got),
        };
        check_read(reads, on_change, read, reporter)?;
    }
    Ok(())
}

/// One line naming the trainers' devices: `devices: cpu (2 trainers)`, or
/// each trainer's when they differ.
fn device_summary(devices: &[String]) -> String {
    match devices {
        [first, rest @ ..] if rest.iter().all(|d| d == first) => {
            let n = devices.len();
            format!(
                "devices: {first} ({n} trainer{})",
                if n == 1 { "" } else { "s" }
            )
        }
        _ => {
            let each: Vec<String> = devices
                .iter()
                .enumerate()
                .map(|(w, d)| format!("trainer {w} {d}"))
                .collect();
            format!("devices: {}", each.join(", "))
        }
    }
}
