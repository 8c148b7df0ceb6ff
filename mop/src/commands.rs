//! The `mop train` and `mop trainer` commands: argument types and the
//! glue from the command line to [`mop_runner`], [`mop_trainer`] and [`mop_report`].

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use hopper_proto::auth::{access, Guard, TrainerKey, KEY_FILE_ENV};
use mop_core::run_config::RunConfig;
use mop_core::run_dir::checkpoint::Split;
use mop_core::run_dir::{results, RunOutcome};
use mop_runner::progress::ProgressMode;
use mop_runner::run::{train, TrainOptions};
use mop_runner::status;

/// `mop train`: train a grid of models with model hopper parallelism.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run configuration (TOML): source, grid, training, output.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Continue the run from the checkpoint in its output directory.
    #[arg(long)]
    pub resume: bool,
    /// Override `output.dir`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override `train.epochs` (and `search.max_epochs`, if set).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = ProgressMode::Bars)]
    pub progress: ProgressMode,
    /// Track the run in MLflow at this tracking server (overrides
    /// `output.mlflow`): a run per model, nested under one for the search.
    #[arg(long, value_name = "URL")]
    pub mlflow: Option<String>,
}

/// `mop trainer`: serve one partition's training units.
#[derive(Debug, Args)]
pub struct TrainerArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// Intra-op threads (libtorch); pin it so trainers sharing a host do not
    /// fight. A run's `[train] threads` wins for its units (the trainer
    /// warns when they differ).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Exit when standard input closes (the runner that spawned this trainer
    /// holds the other end, so a runner killed with SIGKILL leaves no
    /// orphaned trainers behind).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
    /// PEM certificate to serve TLS with (the runner then dials `https://`
    /// and trusts the CA in `HOPPER_TLS_CA`).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require runners to present a certificate signed by this CA (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve only runners that prove this key on every call (at least 32
    /// bytes: `head -c 32 /dev/urandom > trainer.key`); `mop train` dials
    /// with the file `HOPPER_TRAINER_KEY_FILE` names.
    #[arg(long, value_name = "PATH", env = KEY_FILE_ENV)]
    pub key_file: Option<PathBuf>,
    /// Read the key as one hex line from standard input (how `mop train`
    /// hands a key to the trainers it spawns).
    #[arg(long, hide = true, conflicts_with = "key_file")]
    pub key_stdin: bool,
    /// Serve anyone who can reach `--bind`, on any address, without a key
    /// or client certificates.
    #[arg(long)]
    pub no_auth: bool,
}

/// The one async runtime of a `mop` command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Io)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Runs `mop train`.
pub fn run_train(args: TrainArgs) -> Result<()> {
    let mut config = RunConfig::load(&args.config)?;
    if let Some(out) = args.out {
        config.output.dir = out;
    }
    if let Some(url) = args.mlflow {
        config.output.mlflow = Some(url);
        config.validate()?;
    }
    if let Some(e) = args.epochs {
        config.train.epochs = e;
        if config.search.max_epochs.is_some() {
            config.search.max_epochs = Some(e);
        }
        config.validate()?;
    }
    let rt = runtime()?;
    let outcome = rt.block_on(train(
        config.clone(),
        TrainOptions {
            resume: args.resume,
            progress: args.progress,
            trainer_binary: None,
            interrupt: Some(Box::pin(interrupted())),
        },
    ))?;
    // TorchScript models also as TorchScript files, for PyTorch.
    mop_trainer::export::export_torchscript(&config.output.dir)?;
    if args.progress != ProgressMode::Json {
        print_leaderboard(&outcome, &config);
    }
    Ok(())
}

/// Prints the models best first, and where the results are.
pub fn print_leaderboard(outcome: &RunOutcome, config: &RunConfig) {
    println!();
    // The run's ranking metric, at the epoch each model file holds.
    let metric = config.metric();
    let name = |split: &str| {
        let n = format!("{split} {metric}");
        n.chars().take(9).collect::<String>()
    };
    println!(
        "{:>4}  {:<16} {:<8} {:>8} {:>8} {:>6}  {:>9} {:>9} {:>9}",
        "rank",
        "arch",
        "optim",
        "lr",
        "l2",
        "batch",
        name("train"),
        name("val"),
        "val loss"
    );
    for (rank, m) in results::leaderboard(&outcome.models, metric)
        .iter()
        .enumerate()
    {
        let last = m.kept_metrics();
        let optim = serde_json::to_value(&m.config.optimizer)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:>4}  {:<16} {:<8} {:>8.0e} {:>8.0e} {:>6}  {:>9.4} {:>9.4} {:>9.4}",
            rank + 1,
            results::arch_name(&m.config.arch),
            optim,
            m.config.lr,
            m.config.l2,
            m.config.batch_size,
            last.value(metric, Split::Train),
            last.value(metric, Split::Validation),
            last.val_loss()
        );
    }
    println!();
    let trained = results::model_epochs(outcome);
    let full = outcome.models.len() * config.epochs();
    println!(
        "{} models × {} epochs on {} trainers in {:.1} s{}",
        outcome.models.len(),
        config.epochs(),
        outcome.trainers,
        outcome.seconds,
        if trained < full {
            format!(
                ": the {} search trained {trained} of {full} model-epochs",
                config.search.kind
            )
        } else {
            String::new()
        }
    );
    println!("results: {}", outcome.dir.join("results.json").display());
    let report = outcome.dir.join(mop_report::REPORT_FILE);
    if report.is_file() {
        println!("report:  {}", report.display());
    }
    println!("models:  {}", outcome.dir.join("models").display());
    if let (Some(t), Some(db)) = (&config.output.table, &config.output.database) {
        println!(
            "tables:  {t}, {t}_info, {t}_summary  (psql '{db}' -c 'SELECT * FROM {t}_summary')"
        );
    }
}

/// Runs `mop trainer`: prints its address, serves until Ctrl-C or SIGTERM.
pub fn run_trainer(args: TrainerArgs) -> Result<()> {
    // The key line comes first on standard input, before its end is watched.
    let key = if args.key_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Some(TrainerKey::from_hex(&line)?)
    } else {
        args.key_file
            .as_deref()
            .map(TrainerKey::from_file)
            .transpose()?
    };
    if args.exit_with_parent {
        exit_with_parent();
    }
    // The trainer's warnings (its threads overridden, its device failing
    // the health check, a partition read again) on standard error;
    // RUST_LOG=mop_trainer=info adds its health changes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mop_trainer=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    mop_trainer::device::set_trainer_threads(args.threads);
    let tls = flight_client::tls::ServerTls::from_flags(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_client_ca.as_deref(),
    )
    .and_then(|t| t.map(|t| t.config()).transpose())
    .map_err(|e| Error::Config(e.to_string()))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.bind)
            .await
            .map_err(|e| Error::Config(format!("cannot bind {}: {e}", args.bind)))?;
        let addr = listener.local_addr()?;
        let access = access(addr, key, args.tls_client_ca.is_some(), args.no_auth)?;
        // Before the address is printed: a runner proves itself from then on.
        let guard = Guard::new(&access);
        println!("{}{scheme}://{addr}", mop_runner::trainers::LISTENING);
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if !args.exit_with_parent {
            // A trainer the runner spawned is named by the runner instead.
            // Whoever started it may have read the address and closed the
            // pipe: a line no one reads is not an error.
            let _ = writeln!(out, "device: {}", mop_trainer::device::describe());
            let _ = writeln!(out, "serves: {}", access.describe());
        }
        let _ = out.flush();
        drop(out);
        Ok(mop_trainer::serve(listener, tls, guard, interrupted()).await?)
    })
}

/// Makes this process exit when the process that spawned it dies.
///
/// Two mechanisms, because each has a gap: the kernel's parent-death signal
/// fires when the spawning *thread* exits (and not at all if the parent died
/// before it was set), and end-of-file on standard input comes only once every
/// holder of the pipe's other end is gone. Either ends the trainer.
fn exit_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    std::thread::spawn(|| {
        use std::io::Read;
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut sink) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
}

/// `mop report` options.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run's output directory (default: ./hopper-demo, else ./hopper-out).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where to write the report (default: <dir>/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `mop report`.
pub fn run_report(args: ReportArgs) -> Result<()> {
    let dir = mop_report::resolve_dir(args.dir.as_deref())?;
    let path = mop_report::write_report(&dir, args.out.as_deref())?;
    println!("report: {}", path.display());
    Ok(())
}

/// Runs `mop predict`.
pub fn run_predict(args: mop_trainer::predict::PredictArgs) -> Result<()> {
    mop_trainer::device::set_threads(args.threads);
    let rt = runtime()?;
    let (model, scores) = rt.block_on(mop_trainer::predict::predict(&args))?;
    let total: u64 = scores.iter().map(|s| s.rows).sum();
    for s in &scores {
        println!(
            "segment {} at {}: {} rows scored",
            s.segment, s.location, s.rows
        );
    }
    println!(
        "predictions of model {model}: {total} rows in {} on {} segments",
        args.into,
        scores.len()
    );
    Ok(())
}

/// `mop status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run's output directory (default: ./hopper-demo, else ./hopper-out).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `mop models` options.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// The run's output directory (default: ./hopper-demo, else ./hopper-out).
    #[arg(long, conflicts_with = "database")]
    pub dir: Option<PathBuf>,
    /// Read the models from this database (a PostgreSQL URL) instead of results.json.
    #[arg(long, requires = "table")]
    pub database: Option<String>,
    /// The result table (output.table of the run), with --database.
    #[arg(long, requires = "database")]
    pub table: Option<String>,
}

/// Runs `mop status`.
pub fn run_status(args: StatusArgs) -> Result<()> {
    let dir = mop_report::resolve_dir(args.dir.as_deref())?;
    print!(
        "{}",
        status::RunStatus::load(&dir)?.render(std::time::SystemTime::now())
    );
    Ok(())
}

/// Runs `mop models`.
pub fn run_models(args: ModelsArgs) -> Result<()> {
    let rows = match (&args.database, &args.table) {
        (Some(db), Some(t)) => runtime()?.block_on(status::models_from_table(db, t))?,
        _ => status::models_from_files(&mop_report::resolve_dir(args.dir.as_deref())?)?,
    };
    print!("{}", status::render_models(&rows));
    Ok(())
}
