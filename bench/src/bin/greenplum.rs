//! `greenplum`: reading a Greenplum table four ways, side by side in one run.
//!
//! ```text
//!  coordinator COPY     COPY (SELECT * FROM t) TO STDOUT (FORMAT binary) — what users do today;
//!                       every row crosses the coordinator
//!  raw RETRIEVE         DECLARE … PARALLEL RETRIEVE CURSOR; one libpq RETRIEVE ALL per endpoint,
//!                       in parallel, rows dropped — the limit of the retrieve path
//!  hopper, one server   flight-server --greenplum; every endpoint read through it (a funnel)
//!  hopper, beside       a flight-server per segment (127.0.0.2, 127.0.0.3, …) with one key;
//!                       endpoints located beside their segments (--segment-flight)
//! ```
//!
//! The Flight reads are real clients: GetFlightInfo, then every endpoint
//! `DoGet` in parallel and decoded into record batches. Each measurement is
//! the best of `--repeats` after one untimed read; the table prints rows/s,
//! ratios against the coordinator COPY and the raw RETRIEVE, and the
//! flight-servers' CPU per row and peak RSS. On one machine the segments,
//! servers and client share the cores, so ratios are what count.
//!
//! `HOPPER_GREENPLUM_URL` is a superuser's URL (it creates the table).
//! `--smoke` reads a tiny table once each way (seconds; CI's check that the
//! benchmark still works): its numbers are not figures.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Reads a Greenplum table through the coordinator, raw retrieve, and hopper.
#[derive(Debug, Parser)]
#[command(name = "greenplum", about)]
struct Args {
    /// Rows of the generated Criteo-like table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Timed runs per measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// The flight-server binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    flight_server: Option<PathBuf>,
    /// A smoke run in seconds: 2 000 rows, one repeat (overrides --rows
    /// and --repeats); the numbers are not figures.
    #[arg(long)]
    smoke: bool,
}

const TABLE: &str = "hopper_bench_criteo";

async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| "connecting to HOPPER_GREENPLUM_URL")?;
    tokio::spawn(conn);
    Ok(client)
}

/// The coordinator's binary COPY, drained: returns bytes.
async fn coordinator_copy(url: &str) -> Result<u64> {
    let client = connect(url).await?;
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT * FROM {TABLE}) TO STDOUT (FORMAT binary)"
        ))
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok(bytes)
}

/// A parallel retrieve cursor, every endpoint retrieved at once; returns rows.
async fn raw_retrieve(url: &str, database: &str) -> Result<u64> {
    let session = connect(url).await?;
    session
        .batch_execute(&format!(
            "BEGIN; DECLARE hopper_bench PARALLEL RETRIEVE CURSOR FOR SELECT * FROM {TABLE}"
        ))
        .await?;
    let rows = session
        .simple_query(
            "SELECT hostname::text, port::text, username::text, auth_token::text, endpointname::text \
             FROM gp_get_endpoints() WHERE cursorname::text = 'hopper_bench' \
               AND sessionid::text = current_setting('gp_session_id')",
        )
        .await?;
    let mut reads = Vec::new();
    for m in rows {
        let SimpleQueryMessage::Row(r) = m else {
            continue;
        };
        let [host, port, user, token, name] =
            [0, 1, 2, 3, 4].map(|i| r.get(i).unwrap_or_default().to_string());
        let conninfo = format!(
            "host={host} port={port} user={user} password={token} dbname={database} \
             options='-c gp_retrieve_conn=true'"
        );
        reads.push(tokio::spawn(async move {
            let c = connect(&conninfo).await?;
            let stream = c
                .simple_query_raw(&format!("RETRIEVE ALL FROM ENDPOINT {name}"))
                .await?;
            let mut stream = std::pin::pin!(stream);
            let mut n = 0u64;
            while let Some(m) = stream.next().await {
                if let SimpleQueryMessage::Row(_) = m? {
                    n += 1;
                }
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for r in reads {
        total += r.await??;
    }
    session.batch_execute("CLOSE hopper_bench; COMMIT").await?;
    Ok(total)
}

/// GetFlightInfo at `location`, then every endpoint read in parallel where
/// it points; returns rows, and adds the Arrow IPC bytes received to `bytes`.
async fn hopper_read(location: &str, bytes: &Arc<AtomicU64>) -> Result<u64> {
    let planned =
        flight_client::plan::plan_query(location, &format!("SELECT * FROM {TABLE}")).await?;
    let handle = tokio::runtime::Handle::current();
    let reads: Vec<_> = planned
        .slices
        .into_iter()
        .map(|slice| {
            let mut rx = flight_client::read::spawn_counted_reader::<flight_client::Error>(
                &handle,
                vec![slice],
                bytes.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(b) = rx.recv().await {
                    n += b?.num_rows() as u64;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for r in reads {
        total += r.await??;
    }
    Ok(total)
}

/// A flight-server process, killed on drop.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Server {
    async fn start(bin: &PathBuf, bind: &str, args: &[String]) -> Result<Server> {
        let mut child = tokio::process::Command::new(bin)
            .args(["--bind", bind])
            .args(args)
            .env("RUST_LOG", "flight_server=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("flight-server exited at once")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let line = lines.next_line().await?.unwrap_or_default();
        let Some(url) = line.strip_prefix("flight-server listening on ") else {
            bail!("flight-server did not start: {line:?}");
        };
        Ok(Server {
            url: url.to_string(),
            child,
            pid,
            _stdout: lines,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// CPU seconds the whole machine has been busy (every core; idle and
/// iowait excluded), from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| cpu.get(i)).sum();
    busy / 100.0
}

/// Peak RSS of a process, MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

struct Row {
    what: &'static str,
    rows_per_sec: f64,
    server_cpu_us_per_row: Option<f64>,
    server_rss_mib: Option<f64>,
}

/// Best of `repeats` (after a warm-up) of `read`, which returns rows read.
async fn best<F, Fut>(repeats: usize, rows: u64, pids: &[u32], mut read: F) -> Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let got = read().await?;
    if got != rows {
        bail!("read {got} rows, expected {rows}");
    }
    let (mut best, mut cpu_at_best) = (f64::MAX, 0.0);
    for _ in 0..repeats {
        let cpu0: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
        let t = Instant::now();
        read().await?;
        let secs = t.elapsed().as_secs_f64();
        let cpu: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>() - cpu0;
        if secs < best {
            (best, cpu_at_best) = (secs, cpu);
        }
    }
    Ok((rows as f64 / best, cpu_at_best))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.rows = 2_000;
        args.repeats = 1;
        println!(
            "SMOKE RUN (--smoke): a tiny table, one repeat; the numbers below are not figures"
        );
    }
    let url = std::env::var("HOPPER_GREENPLUM_URL")
        .context("set HOPPER_GREENPLUM_URL to a Greenplum 7 superuser's URL (../shared/greenplum/up.sh prints one)")?;
    let config: tokio_postgres::Config = url.parse()?;
    let (Some(user), Some(password)) = (config.get_user(), config.get_password()) else {
        bail!("HOPPER_GREENPLUM_URL needs a user and a password");
    };
    std::env::set_var(flight_client::connect::USER_ENV, user);
    std::env::set_var(
        flight_client::connect::PASSWORD_ENV,
        String::from_utf8_lossy(password).as_ref(),
    );
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => bail!("HOPPER_GREENPLUM_URL needs a TCP host"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("postgres").to_string();
    let bare = format!("postgres://{host}:{port}/{database}");
    let bin = match args.flight_server {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("no executable dir")?
            .join("flight-server"),
    };

    let admin = connect(&url).await?;
    let segments: i64 = admin
        .query_one(
            "SELECT count(*) FROM gp_segment_configuration WHERE content >= 0 AND role = 'p'",
            &[],
        )
        .await?
        .get(0);
    eprintln!(
        "loading {} rows into {TABLE} over {segments} segments",
        args.rows
    );
    let stats = devcluster::load_criteo_into(&admin, TABLE, args.rows, 42).await?;
    eprintln!("  loaded in {:.1} s", stats.elapsed.as_secs_f64());

    let key = std::env::temp_dir().join(format!("hopper-bench-key-{}", std::process::id()));
    std::fs::write(&key, rand_key())?;
    let common = |extra: &[String]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--greenplum",
            &bare,
            "--auth",
            "database",
            // The bench logs in with HOPPER_GREENPLUM_URL's superuser.
            "--allow-superuser",
            "--ticket-key-file",
            key.to_str().unwrap_or_default(),
        ]
        .map(String::from)
        .to_vec();
        v.extend_from_slice(extra);
        v
    };
    let mut results = Vec::new();
    let n = args.rows;
    let bytes = Arc::new(AtomicU64::new(0));
    let (client_us, arrow_bytes, server_us);

    let (rps, _) = best(args.repeats, n, &[], || async {
        coordinator_copy(&url).await.map(|_| n)
    })
    .await?;
    results.push(Row {
        what: "coordinator COPY (binary)",
        rows_per_sec: rps,
        server_cpu_us_per_row: None,
        server_rss_mib: None,
    });
    let me = std::process::id();
    let (busy0, self0) = (machine_busy_seconds(), cpu_seconds(me));
    let (rps, _) = best(args.repeats, n, &[], || raw_retrieve(&url, &database)).await?;
    // Every RETRIEVE pass (warm-up included) made the segments produce n rows.
    let database_cpu = (machine_busy_seconds() - busy0) - (cpu_seconds(me) - self0);
    let segment_us = database_cpu * 1e6 / (n as f64 * (args.repeats + 1) as f64);
    results.push(Row {
        what: "raw RETRIEVE, endpoints in parallel",
        rows_per_sec: rps,
        server_cpu_us_per_row: None,
        server_rss_mib: None,
    });

    {
        let one = Server::start(&bin, "127.0.0.1:0", &common(&[])).await?;
        let self0 = cpu_seconds(me);
        bytes.store(0, Ordering::Relaxed);
        let (rps, cpu) = best(args.repeats, n, &[one.pid], || {
            hopper_read(&one.url, &bytes)
        })
        .await?;
        let passes = (n * (args.repeats as u64 + 1)) as f64;
        client_us = (cpu_seconds(me) - self0) * 1e6 / passes;
        arrow_bytes = bytes.load(Ordering::Relaxed) as f64 / passes;
        server_us = cpu * 1e6 / n as f64;
        results.push(Row {
            what: "hopper, one flight-server",
            rows_per_sec: rps,
            server_cpu_us_per_row: Some(cpu * 1e6 / n as f64),
            server_rss_mib: Some(peak_rss_mib(one.pid)),
        });
    }
    {
        let mut beside = Vec::new();
        for s in 1..segments {
            let ip = format!("127.0.0.{}", s + 2);
            beside.push(Server::start(&bin, &format!("{ip}:0"), &common(&[])).await?);
        }
        let flags: Vec<String> = beside
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                [
                    "--segment-flight".to_string(),
                    format!("{}={}", i + 1, s.url),
                ]
            })
            .collect();
        let planner = Server::start(&bin, "127.0.0.2:0", &common(&flags)).await?;
        let pids: Vec<u32> = std::iter::once(planner.pid)
            .chain(beside.iter().map(|s| s.pid))
            .collect();
        let (rps, cpu) = best(args.repeats, n, &pids, || hopper_read(&planner.url, &bytes)).await?;
        let rss = pids.iter().map(|&p| peak_rss_mib(p)).fold(0.0, f64::max);
        results.push(Row {
            what: "hopper, a flight-server beside each segment",
            rows_per_sec: rps,
            server_cpu_us_per_row: Some(cpu * 1e6 / n as f64),
            server_rss_mib: Some(rss),
        });
    }
    admin.batch_execute(&format!("DROP TABLE {TABLE}")).await?;
    let _ = std::fs::remove_file(&key);

    let (copy, raw) = (results[0].rows_per_sec, results[1].rows_per_sec);
    println!(
        "Greenplum 7 read paths, {n} Criteo-like rows over {segments} segments, best of {} (load {})",
        args.repeats,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!("| read | rows/s | × coordinator COPY | × raw RETRIEVE | server CPU µs/row | server peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} |",
            r.what,
            r.rows_per_sec,
            r.rows_per_sec / copy,
            r.rows_per_sec / raw,
            r.server_cpu_us_per_row
                .map_or("–".into(), |c| format!("{c:.2}")),
            r.server_rss_mib.map_or("–".into(), |m| format!("{m:.0}")),
        );
    }
    // The per-row costs `hopper-bench --bin scale` extrapolates from.
    println!(
        "\nper-row costs (CPU µs; bytes): segments for RETRIEVE {segment_us:.2}, flight-server \
         {server_us:.2}, Flight client decode {client_us:.2}; text rows as loaded {:.0} B, Arrow IPC \
         {arrow_bytes:.0} B",
        stats.bytes as f64 / stats.rows.max(1) as f64
    );
    println!(
        "scale inputs: --segment-us {segment_us:.2} --server-us {server_us:.2} --client-us \
         {client_us:.2} --text-bytes {:.0} --arrow-bytes {arrow_bytes:.0}",
        stats.bytes as f64 / stats.rows.max(1) as f64
    );
    Ok(())
}

/// A fresh random key for the run's servers.
fn rand_key() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("hopper-bench-key-{t:032x}-{}", std::process::id())
}
