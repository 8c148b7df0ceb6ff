//! Concurrent load on one flight-server: 32 `DoGet` streams on a 2-core
//! machine against a server capped at 4 database connections per segment.
//! Every stream must complete with the right rows, the server's memory must
//! stay flat (it streams, it does not buffer), the cap must hold, and
//! clients that vanish must leave no backend behind.
//!
//! The figures are printed (`--nocapture`) and recorded in RELIABILITY.md.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_flight::{FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use hopper_tests::{cluster, flight_client, segment_args, FlightServer, BACKENDS};

/// Concurrent streams.
const STREAMS: usize = 32;
/// `--max-connections` of the server under test.
const CAP: i64 = 4;
/// Rows per segment.
const ROWS: i64 = 20_000;
/// Bytes of padding per row: 32 streams move ~32 × 20 000 × 260 B ≈ 165 MB.
const PAD: usize = 250;

/// A value of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Polls every segment's backend count until `stop`; returns the largest
/// count seen on any one segment.
fn watch_backends(
    clients: Vec<tokio_postgres::Client>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    let max = Arc::new(AtomicI64::new(0));
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for c in &clients {
                let n: i64 = c.query_one(BACKENDS, &[]).await.unwrap().get(0);
                max.fetch_max(n, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max.load(Ordering::Relaxed)
    })
}

async fn backends(clients: &[tokio_postgres::Client]) -> i64 {
    let mut total = 0;
    for c in clients {
        total += c.query_one(BACKENDS, &[]).await.unwrap().get::<_, i64>(0);
    }
    total
}

/// Reads one endpoint to the end: (rows, sum of ids, bytes of padding).
async fn read_endpoint(url: String, ticket: Ticket) -> (i64, i64, usize) {
    let mut client = flight_client(&url).await.unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let (mut rows, mut sum, mut bytes) = (0i64, 0i64, 0usize);
    while let Some(batch) = stream.try_next().await.unwrap() {
        rows += batch.num_rows() as i64;
        sum += batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .sum::<i64>();
        bytes += batch.column(1).as_string::<i32>().values().len();
    }
    (rows, sum, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_streams_complete_within_the_connection_cap_and_bounded_memory() {
    let cluster = cluster(2).await.unwrap();
    let mut admins = Vec::new();
    let mut expected = Vec::new();
    for i in 0..2 {
        let c = cluster.client(i).await.unwrap();
        let base = i as i64 * ROWS;
        c.batch_execute(&format!(
            "CREATE TABLE load_t AS SELECT g::int8 AS id, repeat(md5(g::text), {}) AS pad \
             FROM generate_series({}, {}) g",
            PAD / 32 + 1,
            base + 1,
            base + ROWS
        ))
        .await
        .unwrap();
        // The checksum the streams must reproduce, computed by the segment.
        let row = c
            .query_one(
                "SELECT count(*), sum(id)::int8, sum(length(pad))::int8 FROM load_t",
                &[],
            )
            .await
            .unwrap();
        expected.push((
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
        ));
        admins.push(c);
    }
    let args = segment_args(&cluster);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--max-connections", "4", "--batch-rows", "1000"]);
    let server = FlightServer::start(&args).unwrap();
    let pid = server.process.pid();

    let mut client = flight_client(&server.url).await.unwrap();
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd("SELECT id, pad FROM load_t"))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 2, "one endpoint per segment");
    let tickets: Vec<Ticket> = info
        .endpoint
        .iter()
        .map(|e| e.ticket.clone().unwrap())
        .collect();
    // Warm up (first-use allocations), then take the baseline.
    read_endpoint(server.url.clone(), tickets[0].clone()).await;
    let baseline_kib = status_kib(pid, "VmRSS");

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_backends(
        vec![
            cluster.client(0).await.unwrap(),
            cluster.client(1).await.unwrap(),
        ],
        stop.clone(),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let seg = i % 2;
            let (url, ticket) = (server.url.clone(), tickets[seg].clone());
            tokio::spawn(async move { (seg, read_endpoint(url, ticket).await) })
        })
        .collect();
    let mut streamed = 0usize;
    for t in tasks {
        let (seg, (rows, sum, bytes)) = t.await.unwrap();
        let (want_rows, want_sum, want_bytes) = expected[seg];
        assert_eq!((rows, sum), (want_rows, want_sum), "segment {seg} contents");
        assert_eq!(bytes as i64, want_bytes, "segment {seg} padding");
        streamed += bytes;
    }
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let max_backends = watcher.await.unwrap();
    let peak_kib = status_kib(pid, "VmHWM");
    let growth_mib = peak_kib.saturating_sub(baseline_kib) as f64 / 1024.0;
    let streamed_mib = streamed as f64 / (1024.0 * 1024.0);
    println!(
        "load: {STREAMS} streams, {streamed_mib:.0} MiB of rows in {wall:.2?}; \
         server RSS baseline {:.1} MiB, peak {:.1} MiB (+{growth_mib:.1} MiB); \
         max backends on one segment {max_backends} (cap {CAP})",
        baseline_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
    );
    assert!(max_backends >= 1, "the watcher saw the streams");
    assert!(
        max_backends <= CAP,
        "{max_backends} backends on one segment, over the cap of {CAP}"
    );
    // In flight at once: CAP streams per segment, each holding at most
    // CHANNEL_DEPTH + 1 batches of 1000 rows × ~270 B (~0.8 MiB) plus the
    // encoder's and HTTP/2's buffers; queued streams hold nothing. 64 MiB
    // is several times that, and a fraction of the ~165 MiB streamed, so a
    // server that buffered whole streams would fail.
    assert!(
        streamed_mib > 2.0 * 64.0,
        "the load is big enough to tell ({streamed_mib:.0} MiB)"
    );
    assert!(
        growth_mib < 64.0,
        "the server grew by {growth_mib:.1} MiB while streaming {streamed_mib:.0} MiB"
    );

    // Clients that vanish: 32 streams opened (some streaming, the rest
    // queued behind the cap), then every client dropped at once.
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let (url, ticket) = (server.url.clone(), tickets[i % 2].clone());
            tokio::spawn(async move {
                let mut client = flight_client(&url).await.unwrap();
                let mut stream = client.do_get(ticket).await.unwrap();
                let _ = stream.next().await;
                // Hold the stream without reading until aborted.
                std::future::pending::<()>().await;
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backends(&admins).await < 2 * CAP {
        assert!(Instant::now() < deadline, "the streams did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let left = Instant::now();
    let deadline = left + Duration::from_secs(10);
    loop {
        let n = backends(&admins).await;
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} backend(s) still open 10 s after {STREAMS} clients vanished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "load: {STREAMS} vanished clients left no backend after {:.2?}",
        left.elapsed()
    );
    // Their permits came back: a full round at the cap still completes.
    let tasks: Vec<_> = (0..2 * CAP as usize)
        .map(|i| {
            let (url, ticket) = (server.url.clone(), tickets[i % 2].clone());
            tokio::spawn(async move { (i % 2, read_endpoint(url, ticket).await) })
        })
        .collect();
    for t in tasks {
        let (seg, (rows, sum, _)) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("streams after the vanished clients complete")
            .unwrap();
        assert_eq!((rows, sum), (expected[seg].0, expected[seg].1));
    }
}
