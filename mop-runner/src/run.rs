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
//! The loop here is a shell: what a unit's end, a failure or a score means
//! for the run — the scheduler, where each state is, the figures, what to
//! do next — is [`crate::run_state::RunState`], which takes events and
//! answers with actions, and touches neither the network nor the clock.
//! The shell runs the units and passes, carries out the actions, and
//! writes checkpoints ([`crate::checkpoint`]) off the loop.
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

use std::collections::{BTreeMap, VecDeque};
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
use crate::run_state::{
    merge_stats, rows_read, Action, EvalTotals, Event, Note, PendingEval, Records, RunState,
    Settings, Trained,
};
use crate::trainers;
use crate::trainers::{Client, LocalTrainer};
use hopper_proto::auth::TrainerKey;
use mop_core::run_config::{Cache, Keep, RunConfig};
use mop_core::run_dir::checkpoint::{CheckpointDir, Split};
use mop_core::run_dir::partitions::PartitionRecord;
use mop_core::run_dir::reads::{Read, ReadKind, SourceReads};
use mop_core::run_dir::results;
pub use mop_core::run_dir::RunOutcome;
use mop_core::schedule::{Policy, Scheduler, Unit};

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
        Error::trainer(w, message)
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
    let on_change = config.source.on_change;
    let (sched, states, records, elapsed0) = match (opts.resume, existing) {
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
            let mut best = vec![None; models.len()];
            for (m, b) in c.best.iter().enumerate().take(models.len()) {
                if let Some(b) = b {
                    best[m] = Some((b.epoch, Bytes::from(ckdir.read_state(&b.state)?)));
                }
            }
            // Validation passes in flight were checkpointed with their
            // states: a resumed run still validates every epoch.
            let mut evals = BTreeMap::new();
            for e in &c.pending_evals {
                evals.insert((e.model, e.epoch), Bytes::from(ckdir.read_state(&e.state)?));
            }
            let records = Records {
                trained: Trained {
                    units_done: c.units_done,
                    metrics: c.metrics,
                    timeline: c.timeline,
                },
                best,
                evals,
                reads: c.reads,
            };
            (c.scheduler, states, records, c.elapsed)
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
            let records = Records {
                trained: Trained {
                    units_done: vec![0; models.len()],
                    metrics: vec![Vec::new(); models.len()],
                    timeline: Vec::new(),
                },
                best: vec![None; models.len()],
                evals: BTreeMap::new(),
                // What every partition's rows were at their reads (kept in
                // the checkpoint, so a resumed run compares with the reads
                // before it).
                reads: SourceReads::default(),
            };
            (s, vec![None; models.len()], records, 0.0)
        }
    };

    // Where every model's state is: the runner holds a copy of each at its
    // epochs' ends (or after every unit); between, the trainer that trained
    // a model last keeps it, and the model's next trainer fetches it.
    let copies = states
        .into_iter()
        .zip(&records.trained.units_done)
        .map(|(state, &units)| StateCopy { state, units })
        .collect();
    let book = StateBook::new(copies, config.train.checkpoint);

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
    let settings = Settings {
        metric: config.metric(),
        keep_best: config.train.keep == Keep::Best,
        on_change,
        has_validation: plan.has_validation(),
        local: local.clone(),
    };
    let mut state = RunState::new(settings, sched, book, records);
    let cache = match config.source.cache {
        Cache::Memory => ProtoCache::Memory,
        Cache::Disk => ProtoCache::Disk,
        Cache::None => ProtoCache::None,
    };
    let threads = config.train.threads as u32;
    let open_req = move |plan: &Plan, p: usize| hopper_proto::OpenPartitionRequest {
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
        let (p, r) = r.map_err(|e| Error::trainer(0, e))?;
        let opened = r
            .map_err(|s| trainer_status(p, "opening its partition", s))?
            .into_inner();
        partitions[p].rows = opened.train_rows;
        partitions[p].open_bytes = opened.train_bytes + opened.validation_bytes;
        let reads = open_reads(&plan, w, p, opened);
        for a in state
            .on(Event::Opened { reads })
            .inspect_err(|_| reporter.finish())?
        {
            if let Action::Note(note) = a {
                show(&reporter, note);
            }
        }
    }
    for r in partitions.iter().filter(|r| !r.local) {
        reporter.println(format!(
            "partition {}: trainer on {} reads from {} (not local)",
            r.partition,
            r.trainer_host,
            r.endpoint_hosts.join(", ")
        ));
    }

    // Units and validation passes read with the runner's tickets only
    // without a cache; with one, tickets matter when a partition is opened.
    let reads_every_pass = config.source.cache == Cache::None;
    // Each model's configuration as its wire message, built once: every
    // unit and validation pass of the model shares it.
    let wire_configs = crate::torchscript::wire_configs(&models)?;
    crate::torchscript::check_models(&trainers.clients[0], &models, &wire_configs).await?;
    let started = Instant::now();
    let now = |started: &Instant| elapsed0 + started.elapsed().as_secs_f64();
    let mut set: JoinSet<Done> = JoinSet::new();
    let mut interrupt = opts.interrupt.take();
    let mut shell = Shell {
        trainers: &mut trainers,
        plan: &mut plan,
        set: &mut set,
        reporter: &reporter,
        wire_configs: &wire_configs,
        open_req: &open_req,
        w,
    };
    for eval in state.pending_evals() {
        shell.validate(eval).await?;
    }

    let mut writing: Writing = None;
    let mut files = crate::checkpoint::Files::default();
    loop {
        if reads_every_pass && shell.plan.expiring() {
            shell.plan.refresh().await?;
            reporter.replanned("expiring", shell.plan.replans);
        }
        let by_round = shell.plan.by_round();
        for d in state.dispatch(by_round, |t| shell.trainers.proof(t)) {
            let (worker, unit, directive) = (d.worker, d.unit, d.directive);
            let hop = directive.hop;
            let req = TrainUnitRequest {
                model: unit.model as u32,
                config: Some((*wire_configs[unit.model]).clone()),
                state: directive.state,
                epoch: unit.epoch as u32,
                seed: config.train.seed.wrapping_add(unit.model as u64),
                train: shell.plan.train_for(worker, w).await?,
                from: directive.from,
                hold: hop.hold,
                version: hop.version,
                return_state: hop.return_state(),
            };
            let client = shell.trainers.clients[worker].clone();
            let address = shell.trainers.addresses[worker].clone();
            let rep = reporter.clone();
            shell.set.spawn(async move {
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
            finish_write(&mut writing, &mut files).await?;
        }
        if writing.is_none() {
            if let Some(snapshot) = state.checkpoint()? {
                let (ckdir, fp, elapsed) = (ckdir.clone(), fp.clone(), now(&started));
                writing = Some(tokio::task::spawn_blocking(move || {
                    crate::checkpoint::write(snapshot, elapsed, fp, &ckdir)
                }));
            }
        }
        if state.is_done() && shell.set.is_empty() {
            finish_write(&mut writing, &mut files).await?;
            if !state.dirty() {
                break;
            }
            continue;
        }
        let done = match interrupt.as_mut() {
            Some(stop) => tokio::select! {
                d = shell.set.join_next() => d,
                _ = stop => {
                    shell.set.abort_all();
                    finish_write(&mut writing, &mut files).await?;
                    reporter.finish();
                    // Kept for `--resume` (until the servers' idle limit).
                    shell.plan.pins.keep();
                    return Err(Error::Interrupted(format!(
                        "stopped with {} of {} units done; `--resume` continues from {}",
                        state.progress().done, state.progress().total, ckdir.file().display()
                    )));
                }
            },
            None => shell.set.join_next().await,
        };
        let Some(done) = done else {
            return Err(Error::Schedule(
                "no unit is runnable and none is running; the schedule is stuck".into(),
            ));
        };
        let event = match done.map_err(|e| Error::Schedule(format!("unit task: {e}")))? {
            Done::Unit {
                worker,
                unit,
                start,
                hop,
                address,
                result: Ok(result),
            } => Event::UnitDone {
                worker,
                unit,
                start,
                end: now(&started),
                hop,
                address,
                result,
                from: source_of(shell.plan, Split::Train, unit.partition, w),
            },
            Done::Unit {
                worker,
                unit,
                result: Err(error),
                ..
            } => Event::UnitFailed {
                worker,
                unit,
                error,
            },
            Done::Eval {
                eval,
                result: Ok(totals),
            } => Event::EvalDone {
                eval,
                totals,
                sources: (0..w)
                    .map(|p| source_of(shell.plan, Split::Validation, p, w))
                    .collect(),
            },
            Done::Eval {
                eval,
                result: Err(error),
            } => Event::EvalFailed { eval, error },
        };
        // What an action brings back (a fetched state, new trainers, a
        // partition opened again) is taken in before the next dispatch.
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            for action in state.on(event).inspect_err(|_| reporter.finish())? {
                shell.act(action, &mut events).await?;
            }
        }
    }
    reporter.finish();
    let seconds = now(&started);
    // The last checkpoint holds every model's final state: the model files
    // link to its files rather than writing 94 MB (confA) each again.
    let finished = state.finish(&models, |bytes| files.of(bytes));
    reporter.states_moved(&finished.traffic);
    plan.pins.release().await;
    let _ = std::fs::remove_file(ckdir.dir().join(crate::pins::PINS_FILE));
    let outcome = RunOutcome {
        models: finished.models,
        timeline: finished.timeline,
        partitions,
        source_changes: finished.source_changes,
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

/// What the control loop acts with: the trainers, the plan, the units and
/// validation passes running.
struct Shell<'a> {
    trainers: &'a mut Trainers,
    plan: &'a mut Plan,
    set: &'a mut JoinSet<Done>,
    reporter: &'a Reporter,
    wire_configs: &'a [Arc<hopper_proto::ModelConfig>],
    open_req: &'a (dyn Fn(&Plan, usize) -> hopper_proto::OpenPartitionRequest + Sync),
    w: usize,
}

impl Shell<'_> {
    /// Does what `action` says; what it brings back goes to `events`.
    async fn act(&mut self, action: Action, events: &mut VecDeque<Event>) -> Result<()> {
        match action {
            Action::Note(note) => show(self.reporter, note),
            Action::Release { holder, key } => release(&self.trainers.clients[holder], key),
            Action::Validate(eval) => self.validate(eval).await?,
            Action::Fetch {
                model,
                holder,
                worker,
                key,
            } => {
                let state = fetch_state(&self.trainers.clients[holder], key).await.ok();
                events.push_back(Event::StateFetched {
                    model,
                    holder,
                    worker,
                    state,
                });
            }
            Action::Replan => replan(self.plan, self.reporter).await?,
            Action::Recover { worker, backoff } => {
                if !self.trainers.replace_if_dead(worker, self.reporter).await? {
                    tokio::time::sleep(backoff).await;
                }
                // States a replaced trainer kept are gone (this one's, or an
                // earlier one's whose model was handed out then).
                self.recovered(worker, events).await?;
            }
            Action::RetryEval { eval, backoff } => {
                // Replace whichever trainer died (a busy one's unit fails
                // too and is rerun), reopen it, then validate again.
                let mut replaced = false;
                for worker in 0..self.w {
                    if self.trainers.replace_if_dead(worker, self.reporter).await? {
                        replaced = true;
                        self.recovered(worker, events).await?;
                    }
                }
                if !replaced {
                    tokio::time::sleep(backoff).await;
                }
                self.validate(eval).await?;
            }
        }
        Ok(())
    }

    /// After trainer `worker` was recovered: where the trainers are now,
    /// and what its partition read when opened again.
    async fn recovered(&mut self, worker: usize, events: &mut VecDeque<Event>) -> Result<()> {
        events.push_back(Event::TrainersAt {
            addresses: self.trainers.addresses.clone(),
        });
        let (w, open_req) = (self.w, self.open_req);
        if let Some(opened) =
            reopen(self.trainers, self.plan, worker, open_req, self.reporter).await?
        {
            let reads = open_reads(self.plan, w, worker, opened);
            events.push_back(Event::Opened { reads });
        }
        Ok(())
    }

    /// Starts `eval` on every trainer.
    async fn validate(&mut self, eval: PendingEval) -> Result<()> {
        let validation = self.plan.validation_for(self.w).await?;
        spawn_eval(
            self.set,
            &self.trainers.clients,
            validation,
            self.wire_configs[eval.model].clone(),
            eval,
        );
        Ok(())
    }
}

/// Shows `note` as progress.
fn show(reporter: &Reporter, note: Note) {
    match note {
        Note::UnitDone {
            unit,
            samples,
            seconds,
        } => reporter.unit_done(unit, samples, seconds),
        Note::UnitFailed { unit, error } => reporter.unit_failed(unit, &error),
        Note::EpochDone {
            model,
            epoch,
            metrics,
        } => reporter.epoch_done(model, epoch, &metrics),
        Note::Decided(d) => reporter.decided(&d),
        Note::Total(total) => reporter.set_total(total),
        Note::Rewound { model, units } => reporter.rewound(model, units),
        Note::ThroughRunner { worker, holder } => reporter.states_through_runner(worker, holder),
        Note::Line(line) => reporter.println(line),
    }
}

/// A checkpoint being written.
type Writing = Option<tokio::task::JoinHandle<Result<crate::checkpoint::Files>>>;

/// Waits for the checkpoint being written, if one is; keeps where its
/// states are in `files`.
async fn finish_write(writing: &mut Writing, files: &mut crate::checkpoint::Files) -> Result<()> {
    if let Some(task) = writing.take() {
        *files = task
            .await
            .map_err(|e| Error::Schedule(format!("checkpoint writer: {e}")))??;
    }
    Ok(())
}

/// Fetches the state of `key` from the trainer `client` reaches.
async fn fetch_state(client: &Client, key: hopper_proto::StateKey) -> Result<Bytes> {
    let mut stream = client
        .clone()
        .fetch_state(hopper_proto::FetchStateRequest { key: Some(key) })
        .await
        .map_err(|s| Error::trainer(0, s.message()))?
        .into_inner();
    hopper_proto::hop::collect(&mut stream, &key)
        .await
        .map_err(|s| Error::trainer(0, s.message()))
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
            Ok(None) => return Err(Error::trainer(w, "the unit ended without a result")),
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
    open_req: &dyn Fn(&Plan, usize) -> hopper_proto::OpenPartitionRequest,
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
        let (w, r) = r.map_err(|e| Error::trainer(0, e))?;
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
            .map_err(|e| Error::trainer(w, format!("its metrics: {e}")))?;
    }
    Ok(t)
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

/// What trainer `p` read when it filled its cache, to compare with the
/// partition's earlier reads.
fn open_reads(
    plan: &Plan,
    w: usize,
    p: usize,
    opened: hopper_proto::OpenPartitionResponse,
) -> Vec<Read> {
    [
        (Split::Train, opened.train_read),
        (Split::Validation, opened.validation_read),
    ]
    .into_iter()
    .filter_map(|(split, got)| {
        Some(Read {
            partition: p,
            split,
            kind: ReadKind::Open,
            model: None,
            epoch: None,
            from: source_of(plan, split, p, w),
            got: rows_read(got?),
        })
    })
    .collect()
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
