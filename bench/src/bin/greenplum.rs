//! `greenplum`: reading a Greenplum table five ways, side by side in one run.
//!
//! ```text
//!  coordinator COPY     COPY (SELECT * FROM t) TO STDOUT (FORMAT binary) — what users do today;
//!                       every row crosses the coordinator
//!  raw RETRIEVE         DECLARE … PARALLEL RETRIEVE CURSOR; one RETRIEVE ALL per endpoint, in
//!                       parallel, rows counted and dropped — the limit of the retrieve path:
//!                       in text (simple query) and in binary (extended query, binary results,
//!                       hopper's own route)
//!  hopper, one server   flight-server --greenplum; every endpoint read through it (a funnel)
//!  hopper, beside       a flight-server per segment (127.0.0.2, 127.0.0.3, …) with one key;
//!                       endpoints located beside their segments (--segment-flight)
//! ```
//!
//! The Flight reads are real clients: GetFlightInfo, then every endpoint
//! `DoGet` in parallel and decoded into record batches. Each measurement is
//! `--repeats` timed reads after one untimed read; the table prints the
//! median rows/s with the spread (min–max), ratios of medians against the
//! coordinator COPY and against the raw RETRIEVE of the same format (hopper
//! retrieves in binary), and CPU µs per row of every party from
//! `/proc/PID/stat`: the segments (their postmasters, reaped and live
//! backends: query executors and retrieve sessions), the coordinator, the
//! flight-servers and this process (the client), so per-row costs add up.
//! On one machine the segments, servers and client share the cores, so
//! ratios are what count.
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
use hopper_bench::procstat;
use hopper_bench::samples::Samples;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Reads a Greenplum table through the coordinator, raw retrieve, and hopper.
#[derive(Debug, Parser)]
#[command(name = "greenplum", about)]
struct Args {
    /// Rows of the generated Criteo-like table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Timed runs per measurement; the median and the spread are reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// The flight-server binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    flight_server: Option<PathBuf>,
    /// Another flight-server binary (e.g. a build before a change) whose
    /// two hopper reads are measured in the same run, for a comparison the
    /// machine's load does not skew.
    #[arg(long, value_name = "PATH")]
    compare_server: Option<PathBuf>,
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

/// A parallel retrieve cursor, every endpoint retrieved at once; returns
/// rows. `binary`: through the extended protocol with binary results (a
/// prepared `RETRIEVE ALL`), as hopper retrieves; else a simple query, whose
/// rows are text.
async fn raw_retrieve(url: &str, database: &str, binary: bool) -> Result<u64> {
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
            let sql = format!("RETRIEVE ALL FROM ENDPOINT {name}");
            let mut n = 0u64;
            if binary {
                let stmt = c.prepare(&sql).await?;
                let rows = c.query_raw(&stmt, std::iter::empty::<i32>()).await?;
                let mut rows = std::pin::pin!(rows);
                while let Some(row) = rows.next().await {
                    row?;
                    n += 1;
                }
            } else {
                let stream = c.simple_query_raw(&sql).await?;
                let mut stream = std::pin::pin!(stream);
                while let Some(m) = stream.next().await {
                    if let SimpleQueryMessage::Row(_) = m? {
                        n += 1;
                    }
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

/// The database processes whose CPU a read costs, by role.
struct DbPids {
    /// The primary segments' postmasters.
    segments: Vec<u32>,
    /// The coordinator's postmaster.
    coordinator: u32,
}

impl DbPids {
    /// The postmasters of the primaries and the coordinator, from their
    /// data directories' `postmaster.pid` (the benchmark runs beside them).
    async fn find(admin: &Client) -> Result<Self> {
        let rows = admin
            .query(
                "SELECT content, datadir FROM gp_segment_configuration WHERE role = 'p' ORDER BY content",
                &[],
            )
            .await?;
        let (mut segments, mut coordinator) = (Vec::new(), 0);
        for r in rows {
            let content: i16 = r.get(0);
            let dir: String = r.get(1);
            let pid_file = PathBuf::from(&dir).join("postmaster.pid");
            let pid: u32 = std::fs::read_to_string(&pid_file)
                .with_context(|| {
                    format!(
                        "reading {} (the benchmark runs beside its Greenplum)",
                        pid_file.display()
                    )
                })?
                .lines()
                .next()
                .and_then(|l| l.trim().parse().ok())
                .with_context(|| format!("no PID in {}", pid_file.display()))?;
            if content < 0 {
                coordinator = pid;
            } else {
                segments.push(pid);
            }
        }
        Ok(Self {
            segments,
            coordinator,
        })
    }
}

/// CPU ticks of every party, at one moment.
#[derive(Clone, Copy)]
struct Ticks {
    segments: u64,
    coordinator: u64,
    servers: u64,
    client: u64,
}

impl Ticks {
    fn take(db: &DbPids, servers: &[u32]) -> Self {
        Self {
            segments: db
                .segments
                .iter()
                .map(|&p| procstat::postgres_ticks(p))
                .sum(),
            coordinator: procstat::postgres_ticks(db.coordinator),
            servers: servers.iter().map(|&p| procstat::process_ticks(p)).sum(),
            client: procstat::process_ticks(std::process::id()),
        }
    }
}

/// Peak RSS of a process, MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    procstat::peak_rss_kib(pid).map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// One read measured over samples: rows/s and CPU µs per row by party.
struct Row {
    what: String,
    /// Which raw RETRIEVE this read is compared with (None: none).
    format: Option<Format>,
    rows_per_sec: Samples,
    segments_us: Samples,
    coordinator_us: Samples,
    server_us: Option<Samples>,
    client_us: Samples,
    server_rss_mib: Option<f64>,
}

/// The result format of a retrieve route.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Binary,
}

/// `repeats` timed reads (after an untimed one, checked to return `rows`)
/// of `read`; `servers` are the flight-servers taking part.
async fn measure<F, Fut>(
    what: String,
    format: Option<Format>,
    repeats: usize,
    rows: u64,
    db: &DbPids,
    servers: &[u32],
    mut read: F,
) -> Result<Row>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let got = read().await?;
    if got != rows {
        bail!("{what}: read {got} rows, expected {rows}");
    }
    for &p in servers {
        procstat::reset_peak_rss(p);
    }
    let per_row = 1e6 / (procstat::clock_ticks() * rows as f64);
    let mut row = Row {
        what,
        format,
        rows_per_sec: Samples::default(),
        segments_us: Samples::default(),
        coordinator_us: Samples::default(),
        server_us: (!servers.is_empty()).then(Samples::default),
        client_us: Samples::default(),
        server_rss_mib: None,
    };
    for _ in 0..repeats {
        let t0 = Ticks::take(db, servers);
        let t = Instant::now();
        read().await?;
        let secs = t.elapsed().as_secs_f64();
        let t1 = Ticks::take(db, servers);
        row.rows_per_sec.push(rows as f64 / secs);
        // A backend reaped between reading its postmaster and listing its
        // children may count twice or not at all: a rare, small error.
        let d = |a: u64, b: u64| b.saturating_sub(a) as f64 * per_row;
        row.segments_us.push(d(t0.segments, t1.segments));
        row.coordinator_us.push(d(t0.coordinator, t1.coordinator));
        if let Some(s) = row.server_us.as_mut() {
            s.push(d(t0.servers, t1.servers));
        }
        row.client_us.push(d(t0.client, t1.client));
    }
    if !servers.is_empty() {
        row.server_rss_mib = Some(servers.iter().map(|&p| peak_rss_mib(p)).fold(0.0, f64::max));
    }
    Ok(row)
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
    let n = args.rows;
    let db = DbPids::find(&admin).await?;
    let bytes = Arc::new(AtomicU64::new(0));
    let mut results = vec![
        measure(
            "coordinator COPY (binary)".into(),
            None,
            args.repeats,
            n,
            &db,
            &[],
            || async { coordinator_copy(&url).await.map(|_| n) },
        )
        .await?,
        measure(
            "raw RETRIEVE, endpoints in parallel".into(),
            Some(Format::Text),
            args.repeats,
            n,
            &db,
            &[],
            || raw_retrieve(&url, &database, false),
        )
        .await?,
        measure(
            "raw RETRIEVE (binary), endpoints in parallel".into(),
            Some(Format::Binary),
            args.repeats,
            n,
            &db,
            &[],
            || raw_retrieve(&url, &database, true),
        )
        .await?,
    ];
    let mut arrow_bytes = 0.0;
    let mut builds = vec![(bin.clone(), "")];
    if let Some(before) = &args.compare_server {
        builds.push((before.clone(), " (--compare-server build)"));
    }
    for (bin, label) in builds {
        {
            let one = Server::start(&bin, "127.0.0.1:0", &common(&[])).await?;
            bytes.store(0, Ordering::Relaxed);
            let what = format!("hopper, one flight-server{label}");
            results.push(
                measure(
                    what,
                    Some(Format::Binary),
                    args.repeats,
                    n,
                    &db,
                    &[one.pid],
                    || hopper_read(&one.url, &bytes),
                )
                .await?,
            );
            if label.is_empty() {
                arrow_bytes =
                    bytes.load(Ordering::Relaxed) as f64 / (n * (args.repeats as u64 + 1)) as f64;
            }
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
            let what = format!("hopper, a flight-server beside each segment{label}");
            results.push(
                measure(
                    what,
                    Some(Format::Binary),
                    args.repeats,
                    n,
                    &db,
                    &pids,
                    || hopper_read(&planner.url, &bytes),
                )
                .await?,
            );
        }
    }
    admin.batch_execute(&format!("DROP TABLE {TABLE}")).await?;
    let _ = std::fs::remove_file(&key);

    let copy = results[0].rows_per_sec.median();
    let raw = |f: Format| {
        results
            .iter()
            .find(|r| r.format == Some(f) && r.what.starts_with("raw"))
            .map_or(f64::NAN, |r| r.rows_per_sec.median())
    };
    let (raw_text, raw_binary) = (raw(Format::Text), raw(Format::Binary));
    println!(
        "Greenplum 7 read paths, {n} Criteo-like rows over {segments} segments, median [min–max] of {} \
         (load {})",
        args.repeats,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!(
        "| read | rows/s | × coordinator COPY | × raw RETRIEVE, same format | CPU µs/row: segments / \
         coordinator / server / client | server peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---|---:|");
    for r in &results {
        let base = match r.format {
            Some(Format::Text) => raw_text,
            Some(Format::Binary) => raw_binary,
            None => f64::NAN,
        };
        let rps = r.rows_per_sec.median();
        println!(
            "| {} | {} | {:.2} | {} | {:.2} / {:.2} / {} / {:.2} | {} |",
            r.what,
            r.rows_per_sec.show(0),
            rps / copy,
            if base.is_nan() {
                "–".to_string()
            } else {
                format!("{:.2}", rps / base)
            },
            r.segments_us.median(),
            r.coordinator_us.median(),
            r.server_us.as_ref().map_or("–".into(), |s| s.show(2)),
            r.client_us.median(),
            r.server_rss_mib.map_or("–".into(), |m| format!("{m:.0}")),
        );
    }
    // The per-row costs `hopper-bench --bin scale` extrapolates from:
    // the database's for a binary RETRIEVE, one flight-server's, and its
    // Flight client's.
    let of = |what: &str| results.iter().find(|r| r.what == what);
    let segment_us = of("raw RETRIEVE (binary), endpoints in parallel").map_or(f64::NAN, |r| {
        r.segments_us.median() + r.coordinator_us.median()
    });
    let (server_us, client_us) =
        of("hopper, one flight-server").map_or((f64::NAN, f64::NAN), |r| {
            (
                r.server_us.as_ref().map_or(f64::NAN, Samples::median),
                r.client_us.median(),
            )
        });
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
