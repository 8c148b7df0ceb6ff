//! `mop demo`: the whole of hopper on one machine, in one command.
//!
//! Starts PostgreSQL instances that play an MPP database's segments,
//! generates the Criteo-like click table (or the image table) on them,
//! starts a flight-server over the segments, and trains the paper's
//! 16-configuration grid with model hopper parallelism — one trainer per
//! segment — then prints the leaderboard and where everything is.
//!
//! With `--greenplum URL` the table is generated into that Greenplum
//! instead (distributed by `id` over its segments) and the flight-server
//! reads it through parallel retrieve cursors, logging the demo in as the
//! URL's user: the server itself is given no password.
//!
//! Ctrl-C stops everything it started; `--resume` continues the run from
//! its checkpoint; `--keep` leaves the database and flight-server running.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use clap::{Args, ValueEnum};
use devcluster::{self as cluster, ClusterOptions, LocalCluster};

use crate::commands::{interrupted, print_leaderboard};
use crate::error::{Error, Result};
use mop_core::run_config::RunConfig;
use mop_runner::progress::ProgressMode;
use mop_runner::run::{train, TrainOptions};

/// Which data set the demo trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoData {
    /// The Criteo-like click table: 16 MLPs (lr × L2 × batch size).
    Criteo,
    /// 3×32×32 images of 10 classes: small CNNs.
    Images,
}

/// `mop demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Database segments (each a PostgreSQL instance with one trainer).
    #[arg(long, default_value_t = 2)]
    pub segments: usize,
    /// Rows to generate.
    #[arg(long, default_value_t = 20_000)]
    pub rows: u64,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// The data set.
    #[arg(long, value_enum, default_value_t = DemoData::Criteo)]
    pub data: DemoData,
    /// Train the paper's full-size confA (7306→1000→500→2) instead of a
    /// narrower MLP that finishes in minutes on 2 cores.
    #[arg(long)]
    pub full: bool,
    /// Output directory (checkpoint, models, results).
    #[arg(long, default_value = "hopper-demo")]
    pub dir: PathBuf,
    /// Continue an interrupted demo from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Leave the segments and the flight-server running and print how to connect.
    #[arg(long)]
    pub keep: bool,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = ProgressMode::Bars)]
    pub progress: ProgressMode,
    /// Use this Greenplum coordinator (a URL with a user allowed to create
    /// tables, and its password) instead of starting PostgreSQL segments.
    #[arg(long, value_name = "URL", conflicts_with = "segments")]
    pub greenplum: Option<String>,
    /// Track the demo's runs in MLflow at this tracking server.
    #[arg(long, value_name = "URL")]
    pub mlflow: Option<String>,
}

/// Where the demo's table lives.
enum Database {
    /// PostgreSQL segments the demo started (or found again).
    Local {
        cluster: LocalCluster,
        base: PathBuf,
    },
    /// A Greenplum the user named.
    Greenplum { url: String },
}

/// A child process killed when dropped.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| Error::Config("no executable dir".into()))?;
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(Error::Config(format!(
        "cannot find the {name} binary next to {}; build the workspace (cargo build --release)",
        exe.display()
    )))
}

/// Where the demo's segments live: a fixed place per output directory, so
/// `--resume` and `--keep` find them again. Under the temp dir because the
/// server runs as an unprivileged user that cannot enter e.g. /root.
fn cluster_dir(out: &Path) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(out)?;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in abs.to_string_lossy().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    Ok(std::env::temp_dir().join(format!("hopper-demo-{:08x}", h as u32)))
}

fn grid_toml(args: &DemoArgs, table: &str, flight: &str, database: &str) -> String {
    let grid = match args.data {
        DemoData::Criteo => {
            let hidden = if args.full {
                "[1000, 500]"
            } else {
                "[128, 64]"
            };
            format!(
                "arch = [{{ kind = \"mlp\", hidden = {hidden} }}]\n\
                 lr = [1e-3, 1e-4]\nl2 = [1e-4, 1e-5]\nbatch_size = [32, 64, 256, 512]\n\
                 input = {{ kind = \"criteo\", sparse = true }}\nclasses = 2\n"
            )
        }
        DemoData::Images => {
            "arch = [{ kind = \"cnn\" }]\nlr = [1e-3, 3e-4]\nl2 = [1e-4]\nbatch_size = [32, 128]\n\
             input = { kind = \"image\", channels = 3, height = 32, width = 32 }\nclasses = 10\n"
                .to_string()
        }
    };
    format!(
        "# Written by `mop demo`; `mop train --config {cfg}` runs it again.\n\
         [source]\nflight = \"{flight}\"\ntable = \"{table}\"\n\
         validation = {{ fraction = 0.2, key = \"id\" }}\ncache = \"memory\"\n\n\
         [train]\nepochs = {epochs}\nseed = 42\nthreads = 1\n\n\
         [grid]\n{grid}\n\
         [output]\ndir = \"{dir}\"\ntable = \"{table}_models\"\ndatabase = \"{database}\"\n",
        cfg = args.dir.join("grid.toml").display(),
        epochs = args.epochs,
        dir = args.dir.display(),
    )
}

/// `url` with its password replaced, for messages.
fn redact(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => format!(
            "{}@{}",
            c.get_user().unwrap_or("?"),
            without_login(url).unwrap_or_default()
        ),
        Err(_) => "<unparsable URL>".into(),
    }
}

/// `url`'s host, port and database, without user or password: what a
/// flight-server whose callers log in as themselves is given.
fn without_login(url: &str) -> Result<String> {
    let c: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Config(format!("--greenplum: {e}")))?;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => {
            return Err(Error::Config(
                "--greenplum needs a TCP host (host:port), not a socket".into(),
            ))
        }
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let db = c.get_dbname().or(c.get_user()).unwrap_or("postgres");
    Ok(format!("postgres://{host}:{port}/{db}"))
}

/// Runs the demo.
pub fn run_demo(args: DemoArgs) -> Result<()> {
    if args.segments == 0 || args.rows == 0 {
        return Err(Error::Config(
            "--segments and --rows must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(&args.dir)?;
    if let Some(url) = &args.greenplum {
        // The runner and the trainers it spawns log in to the flight-server
        // as the URL's user (set before any thread starts).
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Config(format!("--greenplum {}: {e}", redact(url))))?;
        let (Some(user), Some(password)) = (config.get_user(), config.get_password()) else {
            return Err(Error::Config(
                "--greenplum needs a URL with a user and its password, e.g. \
                 postgres://gpadmin:PASSWORD@mdw:5432/postgres"
                    .into(),
            ));
        };
        std::env::set_var(flight_client::connect::USER_ENV, user);
        std::env::set_var(
            flight_client::connect::PASSWORD_ENV,
            String::from_utf8_lossy(password).as_ref(),
        );
    }
    let rt = crate::commands::runtime()?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> Result<()> {
    let say = |s: String| {
        if args.progress != ProgressMode::Quiet {
            eprintln!("{s}");
        }
    };
    let fs = |e: devcluster::Error| Error::Config(e.to_string());
    // In a Greenplum of the user's, a name of the demo's own: it is
    // dropped and generated again.
    let table = match (args.data, &args.greenplum) {
        (DemoData::Criteo, Some(_)) => "hopper_demo_criteo",
        (DemoData::Criteo, None) => "criteo",
        (DemoData::Images, _) => "images",
    };
    let exists_sql = format!("SELECT to_regclass('{table}') IS NOT NULL");
    let db = match &args.greenplum {
        Some(url) => {
            if args.data != DemoData::Criteo {
                return Err(Error::Config(
                    "--greenplum runs the demo on the criteo data (leave out --data)".into(),
                ));
            }
            Database::Greenplum { url: url.clone() }
        }
        None => {
            let base = cluster_dir(&args.dir)?;
            let cluster = if base.join(cluster::MANIFEST_FILE).exists() {
                say(format!("reusing the segments in {}", base.display()));
                LocalCluster::attach(&base).await.map_err(fs)?
            } else {
                say(format!(
                    "starting {} PostgreSQL segments in {}",
                    args.segments,
                    base.display()
                ));
                LocalCluster::start(
                    args.segments,
                    ClusterOptions::default().with_base_dir(&base),
                )
                .await
                .map_err(fs)?
            };
            Database::Local { cluster, base }
        }
    };
    let client = match &db {
        Database::Local { cluster, .. } => cluster.client(0).await.map_err(fs)?,
        Database::Greenplum { url } => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .map_err(|e| {
                    Error::Config(format!("connecting to --greenplum {}: {e}", redact(url)))
                })?;
            tokio::spawn(conn);
            client
        }
    };
    let exists: bool = client
        .query_one(&exists_sql, &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(false);
    if !exists || !args.resume {
        let stats = match &db {
            Database::Local { cluster, .. } => {
                say(format!(
                    "generating {} {table} rows over {} segments",
                    args.rows,
                    cluster.len()
                ));
                match args.data {
                    DemoData::Criteo => cluster::load_criteo(cluster, table, args.rows, 7).await,
                    DemoData::Images => cluster::load_images(cluster, table, args.rows, 7).await,
                }
            }
            Database::Greenplum { .. } => {
                say(format!(
                    "generating {} {table} rows into Greenplum (distributed by id)",
                    args.rows
                ));
                cluster::load_criteo_into(&client, table, args.rows, 7).await
            }
        }
        .map_err(fs)?;
        say(format!(
            "  {} rows in {:.1} s ({:.0} rows/s)",
            stats.rows,
            stats.elapsed.as_secs_f64(),
            stats.rows_per_sec()
        ));
    }

    let mut cmd = Command::new(sibling_binary("flight-server")?);
    cmd.args(["--bind", "127.0.0.1:0"]);
    if std::env::var_os("RUST_LOG").is_none() {
        // Its per-query log lines would interleave with the progress bars.
        cmd.env("RUST_LOG", "flight_server=warn");
    }
    let auth_note = match &db {
        // The demo's segments trust local connections and the server
        // listens on loopback only, so it runs without logins — asked for
        // explicitly, as authentication is on unless turned off.
        Database::Local { cluster, .. } => {
            cmd.args(["--auth", "none"]);
            for url in cluster.segment_urls() {
                cmd.args(["--segment", &url]);
            }
            "--auth none: loopback only, no logins; real deployments log callers in"
        }
        // The server gets host, port and database only; the demo's runner
        // and trainers log in as the URL's user (set in run_demo), often
        // gpadmin: the demo lets a superuser in, real deployments should not.
        Database::Greenplum { url } => {
            cmd.args(["--auth", "database", "--allow-superuser"]);
            cmd.args(["--greenplum", &without_login(url)?]);
            "--auth database: the demo logs in as the URL's user; the server holds no password"
        }
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Config(format!("cannot start flight-server: {e}")))?;
    let stdout = child.stdout.take();
    let server = Guard(Some(child));
    let mut line = String::new();
    if let Some(out) = stdout {
        BufReader::new(out).read_line(&mut line)?;
    }
    let flight = line
        .trim()
        .strip_prefix("flight-server listening on ")
        .ok_or_else(|| Error::Config(format!("flight-server did not start: {line:?}")))?
        .to_string();
    say(format!("flight-server at {flight} ({auth_note})"));

    let database = match &db {
        Database::Local { cluster, .. } => cluster.url(0),
        Database::Greenplum { url } => url.clone(),
    };
    // A demo started without --resume is a new run (its table was just
    // generated anew): the checkpoint of an earlier demo in the same
    // directory belongs to other data, so it goes, and the command works
    // the second time as it did the first.
    let checkpoint = args.dir.join("checkpoint");
    if !args.resume && checkpoint.exists() {
        say(format!(
            "starting afresh: removing the earlier demo's checkpoint in {} \
             (`mop demo --resume` continues an interrupted one instead)",
            checkpoint.display()
        ));
        std::fs::remove_dir_all(&checkpoint)?;
    }
    let toml = grid_toml(&args, table, &flight, &database);
    let grid_path = args.dir.join("grid.toml");
    std::fs::write(&grid_path, &toml)?;
    let mut config = RunConfig::parse(&toml)?;
    if let Some(url) = &args.mlflow {
        config.output.mlflow = Some(url.clone());
        config.validate()?;
    }
    let n = config.models()?.len();
    say(format!(
        "training {n} models × {} epochs with model hopper parallelism, one trainer per segment",
        args.epochs
    ));
    let result = train(
        config.clone(),
        TrainOptions {
            resume: args.resume,
            progress: args.progress,
            trainer_binary: Some(std::env::current_exe()?),
            interrupt: Some(Box::pin(interrupted())),
        },
    )
    .await;
    match result {
        Ok(outcome) => {
            if args.progress != ProgressMode::Json {
                print_leaderboard(&outcome, &config);
            }
        }
        Err(e) => {
            if matches!(e, mop_runner::Error::Interrupted(_)) {
                eprintln!(
                    "{e}\nrun `mop demo --resume --dir {}` to continue",
                    args.dir.display()
                );
            }
            return Err(e.into());
        }
    }
    let pid = server.0.as_ref().map(Child::id).unwrap_or_default();
    match (db, args.keep) {
        (Database::Local { cluster, .. }, true) => {
            let kept = cluster.keep();
            println!();
            println!("kept running (stop them with `kill {pid}` and `pg_ctl stop -D <segments>/seg<i>/data`):");
            println!("  flight:  {flight}");
            println!("  server:  pid {pid}");
            println!("  segments: {}", kept.base_dir().display());
            for (i, url) in kept.segment_urls().iter().enumerate() {
                println!("  psql:    psql '{url}'   # segment {i}");
            }
            std::mem::forget(server);
        }
        (Database::Greenplum { url }, true) => {
            println!();
            println!("kept running (stop it with `kill {pid}`):");
            println!("  flight:  {flight}  (log in as the --greenplum URL's user)");
            println!("  tables:  {table}, {table}_models* in {}", redact(&url));
            std::mem::forget(server);
        }
        (Database::Local { cluster, base }, false) => {
            drop(server);
            drop(cluster);
            std::fs::remove_dir_all(&base).ok();
            println!("(the segments are stopped; run with --keep to query the result tables with psql afterwards)");
        }
        (Database::Greenplum { .. }, false) => drop(server),
    }
    Ok(())
}
