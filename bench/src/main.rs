//! `data-plane`: hopper's Flight read path against PostgreSQL's own export.
//!
//! The question the benchmark answers: how close does a `DoGet` from the
//! flight-server come to the fastest way PostgreSQL can hand a table out
//! (`COPY … TO STDOUT (FORMAT binary)` drained to nowhere), per endpoint and
//! in parallel, and does the server's memory stay flat as the table grows?
//!
//! # Design
//!
//! ```text
//!  LocalCluster (N PostgreSQL 15 segments) ── load_criteo(rows) ──► table `criteo`
//!      │
//!      ├─ baseline: COPY binary / text ──► tokio-postgres copy_out, bytes dropped
//!      ├─ split:    COPY binary ──► CopyDecoder (──► Flight IPC encoder), in this process
//!      └─ hopper:   flight-server process ── DoGet ──► arrow_flight::FlightClient → RecordBatches
//! ```
//!
//! Every measurement is `--repeats` runs after one untimed read of the
//! table (the machine is shared and noisy; ratios are what count): the
//! table shows the median run's rows/s with the spread (min–max), and its
//! ratio to the median of the COPY baseline of the same format and shape
//! (a text-COPY route against text COPY, binary against binary). Besides
//! wall time each run records CPU of PostgreSQL (the segments'
//! postmasters and backends), the flight-server and this process (from
//! `/proc`), shown in µs per row so that the parties add up, and the
//! flight-server's peak RSS (`VmHWM`, reset before each measurement).
//!
//! `--smoke` runs every read once on two tiny tables (seconds; CI's check
//! that the benchmark still works): its numbers are not figures.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncBufReadExt, BufReader};

use devcluster::{load_criteo, ClusterOptions, LocalCluster};
use hopper_bench::procstat::{self, CpuSnapshot};
use hopper_bench::readers::{self, CopyFormat, Stage, Volume};

/// Benchmarks flight-server `DoGet` against PostgreSQL's binary COPY.
#[derive(Debug, Parser)]
#[command(name = "data-plane", about)]
struct Args {
    /// Rows of the main table.
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Rows of the larger table the hopper reads are repeated on (0 skips it).
    #[arg(long, default_value_t = 10_000_000)]
    rows_large: u64,
    /// PostgreSQL segments (at least 2 for the two-segment measurements).
    #[arg(long, default_value_t = 2)]
    segments: usize,
    /// Timed runs per measurement; the median and the spread are reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// The flight-server binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    flight_server: Option<PathBuf>,
    /// Another flight-server binary (e.g. a build before a change) whose
    /// binary-COPY reads of one and two endpoints are measured in the same
    /// run, right after this build's, for a comparison the machine's load
    /// does not skew.
    #[arg(long, value_name = "PATH")]
    compare_server: Option<PathBuf>,
    /// Also reads through a flight-server that reaches the segments over
    /// their unix sockets, as a server on the segment's own host can: its
    /// binary-COPY reads of one and two endpoints, in the same run.
    #[arg(long)]
    unix_socket: bool,
    /// Seed of the generated table.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The largest HTTP/2 frame the Flight reads accept, in bytes (default:
    /// HTTP/2's 16 KiB, as a plain Flight client; hopper's own client
    /// takes 1048576).
    #[arg(long, value_name = "BYTES")]
    client_frame_size: Option<u32>,
    /// A smoke run in seconds: 2 000 and 1 000 rows, one repeat (overrides
    /// --rows, --rows-large and --repeats); the numbers are not figures.
    #[arg(long)]
    smoke: bool,
}

/// A running flight-server process, killed on drop.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    /// RSS right after start, before any request (KiB).
    idle_rss_kib: u64,
    /// Kept open: the server owns its stdout for its lifetime.
    _stdout: BufReader<tokio::process::ChildStdout>,
}

impl Server {
    async fn start(bin: &Path, args: &[String], log: &Path) -> Result<Server> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = tokio::process::Command::new(bin)
            .args(["--bind", "127.0.0.1:0", "--auth", "none"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("flight-server exited at once")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line))
            .await
            .context("flight-server printed no address within 60 s")??;
        let Some(url) = line.trim().strip_prefix("flight-server listening on ") else {
            bail!(
                "flight-server did not start (it printed {line:?}); see {}",
                log.display()
            );
        };
        Ok(Server {
            pid,
            url: url.to_string(),
            idle_rss_kib: procstat::rss_kib(pid)?,
            child,
            _stdout: stdout,
        })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One line of the results table.
struct Row {
    name: String,
    /// What `bytes` counts.
    unit: &'static str,
    vol: Volume,
    /// Median wall time, seconds.
    secs: f64,
    /// Rows/s of the fastest and the slowest run.
    spread: (f64, f64),
    /// CPU of the median run.
    cpu: CpuSnapshot,
    /// The flight-server's peak RSS over the measurement, KiB.
    rss_kib: Option<u64>,
    /// Index of the COPY row this one is compared with.
    baseline: Option<usize>,
}

impl Row {
    fn rows_per_sec(&self) -> f64 {
        self.vol.rows as f64 / self.secs
    }
}

/// What every measurement needs.
struct Bench {
    repeats: usize,
    postmasters: Vec<u32>,
    ticks: f64,
    rows: Vec<Row>,
}

impl Bench {
    /// Runs `read` `repeats` times and records the median run.
    async fn measure<F, Fut>(
        &mut self,
        name: &str,
        unit: &'static str,
        server: Option<&Server>,
        baseline: Option<usize>,
        read: F,
    ) -> Result<usize>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Volume>>,
    {
        let pid = server.map(|s| s.pid);
        let rss_reset = pid.map(procstat::reset_peak_rss).unwrap_or(false);
        let mut runs: Vec<(f64, Volume, CpuSnapshot)> = Vec::new();
        for _ in 0..self.repeats.max(1) {
            let before = CpuSnapshot::take(&self.postmasters, pid);
            let start = Instant::now();
            let vol = read().await.with_context(|| format!("measuring {name}"))?;
            let secs = start.elapsed().as_secs_f64();
            let cpu = CpuSnapshot::take(&self.postmasters, pid).since(&before);
            runs.push((secs, vol, cpu));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let rate = |r: &(f64, Volume, CpuSnapshot)| r.1.rows as f64 / r.0;
        let spread = (
            runs.last().map_or(0.0, rate),
            runs.first().map_or(0.0, rate),
        );
        let (secs, vol, cpu) = runs[(runs.len() - 1) / 2];
        let rss_kib = match pid {
            Some(p) => {
                if !rss_reset {
                    eprintln!("note: could not reset VmHWM of {p}; peak RSS is since start");
                }
                Some(procstat::peak_rss_kib(p)?)
            }
            None => None,
        };
        let row = Row {
            name: name.to_string(),
            unit,
            vol,
            secs,
            spread,
            cpu,
            rss_kib,
            baseline,
        };
        eprintln!(
            "  {name}: {:.2} s, {:.0} rows/s, {:.1} MB/s ({unit})",
            secs,
            row.rows_per_sec(),
            vol.bytes as f64 / 1e6 / secs
        );
        self.rows.push(row);
        Ok(self.rows.len() - 1)
    }

    /// The results table in Markdown.
    fn table(&self, rows: std::ops::Range<usize>) -> String {
        let mut out = String::from(
            "| read | rows | bytes counted | MB/s | rows/s, median [min–max] | × COPY | median s | CPU µs/row: pg / server (sys) / client | server peak RSS |\n\
             |---|---:|---|---:|---:|---:|---:|---|---:|\n",
        );
        for r in &self.rows[rows] {
            let ratio = r
                .baseline
                .map(|b| format!("{:.2}", r.rows_per_sec() / self.rows[b].rows_per_sec()))
                .unwrap_or_else(|| {
                    // Only COPY reads are baselines; a row with nothing to
                    // divide by shows no ratio.
                    if r.unit == "COPY" { "1 (base)" } else { "–" }.into()
                });
            let cpu = |t: u64| t as f64 / self.ticks * 1e6 / r.vol.rows.max(1) as f64;
            let pg_cpu = match r.cpu.postgres {
                procstat::UNKNOWN => "?".to_string(),
                t => format!("{:.2}", cpu(t)),
            };
            let server_cpu = if r.rss_kib.is_some() {
                format!("{:.2} ({:.2})", cpu(r.cpu.server), cpu(r.cpu.server_sys))
            } else {
                "–".into()
            };
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.0} [{:.0}–{:.0}] | {} | {:.2} | {} / {} / {:.2} | {} |\n",
                r.name,
                r.vol.rows,
                r.unit,
                r.vol.bytes as f64 / 1e6 / r.secs,
                r.rows_per_sec(),
                r.spread.0,
                r.spread.1,
                ratio,
                r.secs,
                pg_cpu,
                server_cpu,
                cpu(r.cpu.client),
                r.rss_kib
                    .map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "–".into()),
            ));
        }
        out
    }
}

/// Runs `jobs` as concurrent tasks (so that their CPU work can use both
/// cores) and adds up what they read.
async fn parallel(jobs: Vec<BoxFuture<'static, Result<Volume>>>) -> Result<Volume> {
    let handles: Vec<_> = jobs.into_iter().map(tokio::spawn).collect();
    let mut total = Volume::default();
    for h in handles {
        total = total + h.await.context("reader task panicked")??;
    }
    Ok(total)
}

fn copy_job(
    url: &str,
    sql: &str,
    format: CopyFormat,
    rows: u64,
) -> BoxFuture<'static, Result<Volume>> {
    let (url, sql) = (url.to_string(), sql.to_string());
    async move { readers::copy_drain(&url, &sql, format, rows).await }.boxed()
}

fn flight_job(url: &str, ticket: &arrow_flight::Ticket) -> BoxFuture<'static, Result<Volume>> {
    let (url, ticket) = (url.to_string(), ticket.clone());
    async move { readers::flight_read(&url, ticket).await }.boxed()
}

fn check_rows(what: &str, got: u64, want: u64) -> Result<()> {
    if got != want {
        bail!("{what} returned {got} rows, the table holds {want}");
    }
    Ok(())
}

/// Which measurements a table gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Suite {
    /// Everything: baselines, text COPY, in-process split, Flight.
    Full,
    /// The matching binary-COPY baselines and the Flight reads only.
    Growth,
}

/// Measures every read of `table` and returns the index of its first row.
async fn run_suite(
    bench: &mut Bench,
    cluster: &LocalCluster,
    server_bin: &Path,
    compare_bin: Option<&Path>,
    unix_socket: bool,
    table: &str,
    suite: Suite,
) -> Result<usize> {
    let first = bench.rows.len();
    let urls = cluster.segment_urls();
    let two_segments = urls.len() >= 2;
    let sql = format!("SELECT * FROM {table}");

    // Row counts (COPY binary cannot be counted without decoding it) and
    // the page halves of segment 0 that `--split 2` reads.
    let mut seg_rows = Vec::new();
    for url in &urls {
        seg_rows.push(readers::count_rows(url, &sql).await?);
    }
    let pages = readers::table_pages(&urls[0], table).await?;
    let halves = readers::ctid_halves(table, pages);
    let half_rows = [
        readers::count_rows(&urls[0], &halves[0]).await?,
        readers::count_rows(&urls[0], &halves[1]).await?,
    ];
    check_rows(
        "the two ctid halves",
        half_rows[0] + half_rows[1],
        seg_rows[0],
    )?;

    // Warm the OS page cache: one untimed read of every segment.
    let warm = Instant::now();
    parallel(
        urls.iter()
            .zip(&seg_rows)
            .map(|(u, r)| copy_job(u, &sql, CopyFormat::Binary, *r))
            .collect(),
    )
    .await?;
    eprintln!("{table}: warmed in {:.1} s", warm.elapsed().as_secs_f64());

    let bin = CopyFormat::Binary;
    let copy1 = bench
        .measure("COPY binary, 1 conn (seg 0)", "COPY", None, None, || {
            parallel(vec![copy_job(&urls[0], &sql, bin, seg_rows[0])])
        })
        .await?;
    let copy2 = if two_segments {
        Some(
            bench
                .measure(
                    "COPY binary, 2 conns (seg 0 ∥ seg 1)",
                    "COPY",
                    None,
                    None,
                    || {
                        parallel(vec![
                            copy_job(&urls[0], &sql, bin, seg_rows[0]),
                            copy_job(&urls[1], &sql, bin, seg_rows[1]),
                        ])
                    },
                )
                .await?,
        )
    } else {
        None
    };
    let copy_halves = bench
        .measure(
            "COPY binary, 2 conns (2 ctid halves of seg 0)",
            "COPY",
            None,
            None,
            || {
                parallel(vec![
                    copy_job(&urls[0], &halves[0], bin, half_rows[0]),
                    copy_job(&urls[0], &halves[1], bin, half_rows[1]),
                ])
            },
        )
        .await?;

    // The baselines of the text-COPY route: the same reads as text.
    let text = CopyFormat::Text;
    let text1 = bench
        .measure(
            "COPY text, 1 conn (seg 0)",
            "COPY",
            None,
            Some(copy1),
            || parallel(vec![copy_job(&urls[0], &sql, text, seg_rows[0])]),
        )
        .await?;
    let text2 = if two_segments {
        Some(
            bench
                .measure(
                    "COPY text, 2 conns (seg 0 ∥ seg 1)",
                    "COPY",
                    None,
                    copy2,
                    || {
                        parallel(vec![
                            copy_job(&urls[0], &sql, text, seg_rows[0]),
                            copy_job(&urls[1], &sql, text, seg_rows[1]),
                        ])
                    },
                )
                .await?,
        )
    } else {
        None
    };
    let text_halves = bench
        .measure(
            "COPY text, 2 conns (2 ctid halves of seg 0)",
            "COPY",
            None,
            Some(copy_halves),
            || {
                parallel(vec![
                    copy_job(&urls[0], &halves[0], text, half_rows[0]),
                    copy_job(&urls[0], &halves[1], text, half_rows[1]),
                ])
            },
        )
        .await?;

    if suite == Suite::Full {
        for (name, unit, stage) in [
            (
                "in-process COPY → CopyDecoder (seg 0)",
                "Arrow",
                Stage::Decode,
            ),
            (
                "in-process COPY → CopyDecoder → IPC encoder (seg 0)",
                "IPC",
                Stage::Encode,
            ),
        ] {
            let i = bench
                .measure(name, unit, None, Some(copy1), || {
                    readers::copy_decode(&urls[0], &sql, stage)
                })
                .await?;
            check_rows(name, bench.rows[i].vol.rows, seg_rows[0])?;
        }
        // The decoder alone, on one core, over COPY data already in memory:
        // all columns, then the numeric and the text columns apart.
        let numeric = std::iter::once("id, label".to_string())
            .chain((1..=13).map(|j| format!("i{j}")))
            .collect::<Vec<_>>()
            .join(", ");
        let text = (1..=26)
            .map(|j| format!("c{j}"))
            .collect::<Vec<_>>()
            .join(", ");
        for (name, cols) in [
            (
                "decode only, in memory, 1 core: all 41 columns",
                "*".to_string(),
            ),
            (
                "decode only, in memory, 1 core: 15 numeric columns",
                numeric,
            ),
            ("decode only, in memory, 1 core: 26 text columns", text),
        ] {
            let captured =
                readers::copy_capture(&urls[0], &format!("SELECT {cols} FROM {table}")).await?;
            eprintln!(
                "  ({name}: {:.0} MB of COPY data)",
                captured.bytes as f64 / 1e6
            );
            let i = bench
                // No ratio: decoding bytes already in memory is not the
                // work a live COPY does.
                .measure(name, "Arrow", None, None, || async {
                    readers::decode_captured(&captured)
                })
                .await?;
            check_rows(name, bench.rows[i].vol.rows, seg_rows[0])?;
        }
    }

    // hopper: one flight-server over every segment, and one with `--split
    // 2` over segment 0 alone, each reading with binary and with text COPY.
    for format in ["binary", "text"] {
        let tag = format!("{format} COPY");
        // Each route against the COPY baseline of its own format.
        let (copy1, copy2, copy_halves) = match format {
            "text" => (text1, text2, text_halves),
            _ => (copy1, copy2, copy_halves),
        };
        let server_args = |segments: &[String]| {
            let mut args: Vec<String> = segments
                .iter()
                .flat_map(|s| ["--segment".to_string(), s.clone()])
                .collect();
            args.extend(["--copy-format".to_string(), format.to_string()]);
            args
        };
        let log = cluster
            .base_dir()
            .join(format!("flight-server-{table}-{format}.log"));
        let mut builds = vec![(server_bin, "", log, server_args(&urls))];
        if let (Some(compare), "binary") = (compare_bin, format) {
            let log = cluster
                .base_dir()
                .join(format!("flight-server-{table}-{format}-compare.log"));
            let args = server_args(&urls);
            builds.push((compare, " (--compare-server build)", log, args));
        }
        if unix_socket && format == "binary" {
            let sockets = (0..cluster.len())
                .map(|i| cluster.socket_conninfo(i))
                .collect::<Option<Vec<_>>>()
                .context("the cluster's directory is too long a path for a unix socket")?;
            let log = cluster
                .base_dir()
                .join(format!("flight-server-{table}-{format}-socket.log"));
            let args = server_args(&sockets);
            builds.push((server_bin, ", segments over unix sockets", log, args));
        }
        for (bin, label, log, args) in builds {
            let server = Server::start(bin, &args, &log).await?;
            eprintln!(
                "{table}: flight-server {} (pid {}, {tag}{label}), idle RSS {} KiB",
                server.url, server.pid, server.idle_rss_kib
            );
            let tickets = readers::plan(&server.url, &sql).await?;
            if tickets.len() != urls.len() {
                bail!("expected one endpoint per segment, got {}", tickets.len());
            }
            let name = format!("Flight DoGet, 1 endpoint (seg 0), {tag}{label}");
            let i = bench
                .measure(&name, "Arrow", Some(&server), Some(copy1), || {
                    parallel(vec![flight_job(&server.url, &tickets[0])])
                })
                .await?;
            check_rows("endpoint 0", bench.rows[i].vol.rows, seg_rows[0])?;
            if let Some(copy2) = copy2 {
                let name = format!("Flight DoGet, 2 endpoints (seg 0 ∥ seg 1), {tag}{label}");
                let want = ("endpoints 0 and 1", seg_rows[0] + seg_rows[1]);
                read_two(bench, &name, &server, &tickets, copy2, want).await?;
            }
            server.stop().await;
        }

        let mut split_args = vec!["--segment".to_string(), urls[0].clone()];
        split_args.extend(["--split".to_string(), "2".to_string()]);
        split_args.extend(["--copy-format".to_string(), format.to_string()]);
        let log = cluster
            .base_dir()
            .join(format!("flight-server-{table}-split-{format}.log"));
        let server = Server::start(server_bin, &split_args, &log).await?;
        let tickets = readers::plan(&server.url, &sql).await?;
        if tickets.len() != 2 {
            bail!("--split 2 planned {} endpoints, expected 2", tickets.len());
        }
        let name = format!("Flight DoGet, --split 2 (2 ctid ranges of seg 0), {tag}");
        let want = ("the split endpoints", seg_rows[0]);
        read_two(bench, &name, &server, &tickets, copy_halves, want).await?;
        server.stop().await;
    }
    Ok(first)
}

/// Measures `name`: the first two of `tickets` read in parallel from
/// `server`, against the `baseline` row; `want` names the endpoints and
/// the rows they must hold.
async fn read_two(
    bench: &mut Bench,
    name: &str,
    server: &Server,
    tickets: &[arrow_flight::Ticket],
    baseline: usize,
    want: (&str, u64),
) -> Result<()> {
    let i = bench
        .measure(name, "Arrow", Some(server), Some(baseline), || {
            parallel(vec![
                flight_job(&server.url, &tickets[0]),
                flight_job(&server.url, &tickets[1]),
            ])
        })
        .await?;
    check_rows(want.0, bench.rows[i].vol.rows, want.1)
}

/// The flight-server binary: the flag, else next to this executable.
fn locate_server(flag: Option<PathBuf>) -> Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("executable without a directory")?
            .join("flight-server"),
    };
    if !path.is_file() {
        bail!(
            "no flight-server at {}; build it with `cargo build --release -p flight-server` \
             or pass --flight-server PATH",
            path.display()
        );
    }
    Ok(path)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpus} vCPU ({model}); load average at start {}",
        load_average()
    )
}

/// The 1, 5 and 15 minute load averages: how shared the machine was.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.rows = 2_000;
        args.rows_large = 1_000;
        args.repeats = 1;
        println!(
            "SMOKE RUN (--smoke): every read once on tiny tables; the numbers below are not figures"
        );
    }
    if args.segments == 0 || args.rows == 0 {
        bail!("--segments and --rows must be at least 1");
    }
    if let Some(bytes) = args.client_frame_size {
        if !(16_384..=16_777_215).contains(&bytes) {
            bail!("--client-frame-size must be between 16384 and 16777215 (HTTP/2's limits)");
        }
        readers::set_client_frame_size(bytes);
    }
    let server_bin = locate_server(args.flight_server.clone())?;
    let compare_bin = args
        .compare_server
        .clone()
        .map(|p| locate_server(Some(p)))
        .transpose()?;
    let started = Instant::now();
    let machine = machine();
    eprintln!("machine: {machine}");

    let cluster = LocalCluster::start(args.segments, ClusterOptions::default()).await?;
    let postmasters: Vec<u32> = (0..cluster.len())
        .filter_map(|i| cluster.postmaster_pid(i))
        .collect();
    let version: String = cluster
        .client(0)
        .await?
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    let mut bench = Bench {
        repeats: args.repeats,
        postmasters,
        ticks: procstat::clock_ticks(),
        rows: Vec::new(),
    };

    let mut sections = Vec::new();
    for (table, rows, suite) in [
        ("criteo", args.rows, Suite::Full),
        ("criteo_large", args.rows_large, Suite::Growth),
    ] {
        if rows == 0 {
            continue;
        }
        let stats = load_criteo(&cluster, table, rows, args.seed).await?;
        let size: i64 = cluster
            .client(0)
            .await?
            .query_one("SELECT pg_total_relation_size(to_regclass($1))", &[&table])
            .await?
            .get(0);
        let header = format!(
            "### `{table}`: {rows} rows on {} segments ({:?} per segment; seg 0 on disk {:.0} MiB; loaded in {:.1} s)",
            cluster.len(),
            stats.rows_per_segment,
            size as f64 / (1 << 20) as f64,
            stats.elapsed.as_secs_f64()
        );
        eprintln!("{header}");
        let first = run_suite(
            &mut bench,
            &cluster,
            &server_bin,
            compare_bin.as_deref(),
            args.unix_socket,
            table,
            suite,
        )
        .await?;
        sections.push((header, first));
        if table == "criteo" && args.rows_large > 0 {
            // Keep the disk footprint to one table at a time.
            for i in 0..cluster.len() {
                cluster
                    .client(i)
                    .await?
                    .batch_execute("DROP TABLE criteo")
                    .await?;
            }
        }
    }

    println!("## data-plane results\n");
    println!(
        "machine: {machine}; load average at end {}; PostgreSQL {version}",
        load_average()
    );
    println!(
        "median of {} runs after one untimed warm-up read, [fastest–slowest]; MB = 10^6 bytes; \
         \"bytes counted\": COPY = bytes of the COPY stream, Arrow = Arrow buffer bytes of the \
         decoded batches, IPC = encoded Flight messages; × COPY = median rows/s over the median \
         of the matching COPY baseline of the same format (text COPY's own rows: over binary); \
         CPU µs per row of the median run\n",
        args.repeats
    );
    let bounds: Vec<usize> = sections.iter().map(|(_, f)| *f).collect();
    for (k, (header, first)) in sections.iter().enumerate() {
        println!("{header}\n");
        let end = bounds.get(k + 1).copied().unwrap_or(bench.rows.len());
        println!("{}", bench.table(*first..end));
    }
    println!("total run time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
