//! Model selection with pruning against the full grid, end to end: local
//! PostgreSQL segments, a flight-server, `mop`'s runner and its trainer
//! processes. For each data set (the Criteo-like table, the generated image
//! table) it trains the same configurations three times — the full grid,
//! ASHA and Hyperband — and prints model-epochs trained, wall time and the
//! best validation accuracy of each.
//!
//! ```sh
//! cargo build --bins           # the dev profile is optimized
//! target/debug/search --segments 2 --criteo-rows 20000 --image-rows 3000
//! target/debug/search --smoke  # seconds, tiny tables: its numbers are not figures
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use devcluster::{ClusterOptions, LocalCluster};
use hopper_bench::server::{self, Server};
use mop_core::run_config::RunConfig;
use mop_core::run_dir::results::{leaderboard, Ranked};
use mop_runner::run::{train, TrainOptions};

#[derive(Parser)]
struct Args {
    /// PostgreSQL segments (one trainer each).
    #[arg(long, default_value_t = 2)]
    segments: usize,
    /// Rows of the Criteo-like table (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    criteo_rows: u64,
    /// Rows of the image table (0 skips it).
    #[arg(long, default_value_t = 3_000)]
    image_rows: u64,
    /// The most epochs a model trains.
    #[arg(long, default_value_t = 9)]
    epochs: usize,
    /// Where the runs go (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A smoke run in seconds: 1 000 Criteo-like rows, 100 images, three
    /// epochs (overrides those flags); the numbers are not figures.
    #[arg(long)]
    smoke: bool,
}

/// One data set's grid.
struct DataSet {
    name: &'static str,
    table: &'static str,
    grid: &'static str,
}

const DATA: [DataSet; 2] = [
    DataSet {
        name: "criteo",
        table: "criteo",
        grid: r#"arch = [{ kind = "mlp", hidden = [64, 32] }]
lr = [1e-2, 1e-3, 1e-5]
batch_size = [32, 256]
input = { kind = "criteo", sparse = true }
classes = 2"#,
    },
    DataSet {
        name: "images",
        table: "images",
        grid: r#"arch = [{ kind = "cnn" }]
lr = [3e-3, 1e-3, 1e-5]
batch_size = [32, 128]
input = { kind = "image", channels = 3, height = 32, width = 32 }
classes = 10"#,
    },
];

const SEARCHES: [(&str, &str); 3] = [
    ("grid", ""),
    ("asha", "[search]\nkind = \"asha\"\nmin_epochs = 1\neta = 3"),
    ("hyperband", "[search]\nkind = \"hyperband\"\neta = 3"),
];

fn config(d: &DataSet, search: &str, flight: &str, epochs: usize, out: &Path) -> Result<RunConfig> {
    Ok(RunConfig::parse(&format!(
        "[source]\nflight = \"{flight}\"\ntable = \"{}\"\n\
         validation = {{ fraction = 0.2, key = \"id\" }}\n\n\
         [train]\nepochs = {epochs}\nseed = 42\nthreads = 1\n\n\
         [grid]\n{}\n\n{search}\n\n[output]\ndir = \"{}\"\n",
        d.table,
        d.grid,
        out.display()
    ))?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.criteo_rows = 1_000;
        args.image_rows = 100;
        args.epochs = 3;
        println!(
            "SMOKE RUN (--smoke): tiny tables, three epochs; the numbers below are not figures"
        );
    }
    let tmp = tempfile_dir(args.dir.as_deref())?;
    let (server_bin, mop) =
        server::binaries("cargo build --release -p flight-server -p mop --bins")?;
    let cluster = LocalCluster::start(args.segments, ClusterOptions::default()).await?;
    let rows = [args.criteo_rows, args.image_rows];
    println!(
        "| data | rows | search | model-epochs | of the grid's | wall s | best validation accuracy (final epoch) | (any epoch) |\n\
         |---|---:|---|---:|---:|---:|---:|---:|"
    );
    for (d, &n) in DATA.iter().zip(&rows) {
        if n == 0 {
            continue;
        }
        match d.name {
            "criteo" => devcluster::load_criteo(&cluster, d.table, n, 7).await?,
            _ => devcluster::load_images(&cluster, d.table, n, 7).await?,
        };
        let server = Server::start(&server_bin, &cluster).await?;
        let mut grid_epochs = 0;
        for (name, search) in SEARCHES {
            let out = tmp.join(format!("{}-{name}", d.name));
            let c = config(d, search, &server.url, args.epochs, &out)?;
            let started = Instant::now();
            let outcome = train(
                c,
                TrainOptions {
                    trainer_binary: Some(mop.clone()),
                    ..TrainOptions::default()
                },
            )
            .await?;
            let wall = started.elapsed().as_secs_f64();
            let model_epochs: usize = outcome.models.iter().map(|m| m.metrics.len()).sum();
            if name == "grid" {
                grid_epochs = model_epochs;
            }
            let metric = mop_core::metrics::Metric::Accuracy;
            let best = leaderboard(&outcome.models, metric)
                .first()
                .map(|m| m.score(metric));
            let peak = outcome
                .models
                .iter()
                .flat_map(|m| m.metrics.iter().map(|e| e.val_acc()))
                .fold(f64::NAN, f64::max);
            println!(
                "| {} | {n} | {name} | {model_epochs} | {:.2} | {wall:.1} | {:.4} | {peak:.4} |",
                d.name,
                model_epochs as f64 / grid_epochs.max(1) as f64,
                best.unwrap_or(f64::NAN)
            );
        }
    }
    if args.smoke && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// `dir`, or a fresh directory under the system's temporary directory.
fn tempfile_dir(dir: Option<&Path>) -> Result<PathBuf> {
    let d = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("hopper-search-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
