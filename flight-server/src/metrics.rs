//! Prometheus metrics (`--metrics HOST:PORT` serves them at `/metrics`).
//!
//! What an operator of a server beside each segment wants to see: how many
//! rows and bytes each server sent for each segment (so that a funnel —
//! one server sending other segments' rows — shows at a glance), what is
//! open right now, and how long requests take.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hopper_flight_rows_total` | counter | `segment` |
//! | `hopper_flight_bytes_total` | counter (Arrow IPC bytes sent) | `segment` |
//! | `hopper_flight_streams_open` | gauge | |
//! | `hopper_greenplum_cursors_held` | gauge (cursors this server declared and holds) | |
//! | `hopper_connections_in_use` | gauge (database connections held) | `segment` |
//! | `hopper_flight_request_duration_seconds` | histogram (a DoGet: to its last batch) | `method` |
//! | `hopper_greenplum_cursors_total` | counter (cursors this server declared, and closed unread) | `event`: `declared`, `expired`, `evicted` |
//! | `hopper_greenplum_endpoints_total` | counter (their endpoints; every planned one should be read) | `state`: `planned`, `read` |
//! | `hopper_snapshots_pinned` | gauge (pinned snapshots held) | |
//! | `hopper_snapshot_sessions` | gauge (database sessions holding them) | |
//! | `hopper_snapshot_oldest_seconds` | gauge (age of the oldest: how long vacuum is held back) | |
//! | `hopper_snapshots_total` | counter (pins taken) | |
//! | `hopper_snapshots_expired_total` | counter (released by TTL or idle limit, not by their client) | |
//!
//! Counters are updated as batches go out; gauges that belong to the
//! source (cursors, connections) are read from it when scraped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::source::{Reader, Source};

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    rows: IntCounterVec,
    bytes: IntCounterVec,
    streams: IntGauge,
    cursors: IntGauge,
    connections: IntGaugeVec,
    durations: HistogramVec,
    cursor_events: IntCounterVec,
    endpoint_states: IntCounterVec,
    snapshots_pinned: IntGauge,
    snapshot_sessions: IntGauge,
    snapshot_oldest: prometheus::Gauge,
    snapshots_total: prometheus::IntCounter,
    snapshots_expired: prometheus::IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let rows = IntCounterVec::new(
            Opts::new(
                "hopper_flight_rows_total",
                "Rows sent by DoGet, per segment",
            ),
            &["segment"],
        )
        .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                "hopper_flight_bytes_total",
                "Arrow IPC bytes sent by DoGet, per segment",
            ),
            &["segment"],
        )
        .expect("valid metric");
        let streams = IntGauge::new("hopper_flight_streams_open", "DoGet streams open now")
            .expect("valid metric");
        let cursors = IntGauge::new(
            "hopper_greenplum_cursors_held",
            "Greenplum parallel retrieve cursors this server declared and holds",
        )
        .expect("valid metric");
        let connections = IntGaugeVec::new(
            Opts::new(
                "hopper_connections_in_use",
                "Database connections this server holds, per segment",
            ),
            &["segment"],
        )
        .expect("valid metric");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "hopper_flight_request_duration_seconds",
                "Flight request durations (a DoGet: until its last batch)",
            )
            .buckets(prometheus::exponential_buckets(0.001, 4.0, 10).expect("buckets")),
            &["method"],
        )
        .expect("valid metric");
        let cursor_events = IntCounterVec::new(
            Opts::new(
                "hopper_greenplum_cursors_total",
                "Greenplum cursors this server declared, and those closed unread (idle or at the cap)",
            ),
            &["event"],
        )
        .expect("valid metric");
        let endpoint_states = IntCounterVec::new(
            Opts::new(
                "hopper_greenplum_endpoints_total",
                "Endpoints of this server's Greenplum cursors: planned, and read to the end",
            ),
            &["state"],
        )
        .expect("valid metric");
        let snapshots_pinned = IntGauge::new(
            "hopper_snapshots_pinned",
            "Pinned snapshots this server holds",
        )
        .expect("valid metric");
        let snapshot_sessions = IntGauge::new(
            "hopper_snapshot_sessions",
            "Database sessions holding pinned snapshots",
        )
        .expect("valid metric");
        let snapshot_oldest = prometheus::Gauge::new(
            "hopper_snapshot_oldest_seconds",
            "Age of the oldest pinned snapshot (vacuum is held back that long)",
        )
        .expect("valid metric");
        let snapshots_total =
            prometheus::IntCounter::new("hopper_snapshots_total", "Snapshots pinned")
                .expect("valid metric");
        let snapshots_expired = prometheus::IntCounter::new(
            "hopper_snapshots_expired_total",
            "Pinned snapshots released by their TTL or idle limit",
        )
        .expect("valid metric");
        for m in [
            Box::new(rows.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(cursor_events.clone()),
            Box::new(endpoint_states.clone()),
            Box::new(snapshots_pinned.clone()),
            Box::new(snapshot_sessions.clone()),
            Box::new(snapshot_oldest.clone()),
            Box::new(snapshots_total.clone()),
            Box::new(snapshots_expired.clone()),
            Box::new(bytes.clone()),
            Box::new(streams.clone()),
            Box::new(cursors.clone()),
            Box::new(connections.clone()),
            Box::new(durations.clone()),
        ] {
            registry.register(m).expect("metric names are distinct");
        }
        Self {
            registry,
            rows,
            bytes,
            streams,
            cursors,
            connections,
            durations,
            cursor_events,
            endpoint_states,
            snapshots_pinned,
            snapshot_sessions,
            snapshot_oldest,
            snapshots_total,
            snapshots_expired,
        }
    }

    /// The pinned snapshots held now, their sessions, the oldest's age.
    pub fn snapshots(&self, pinned: usize, sessions: usize, oldest_seconds: f64) {
        self.snapshots_pinned.set(pinned as i64);
        self.snapshot_sessions.set(sessions as i64);
        self.snapshot_oldest.set(oldest_seconds);
    }

    /// A snapshot was pinned.
    pub fn snapshot_pinned(&self) {
        self.snapshots_total.inc();
    }

    /// A pinned snapshot was released by its TTL or idle limit.
    pub fn snapshot_expired(&self) {
        self.snapshots_expired.inc();
    }

    /// Counts a batch of `rows` rows, `bytes` bytes on the wire, sent for `segment`.
    pub fn sent(&self, segment: i32, rows: u64, bytes: u64) {
        let s = segment.to_string();
        self.rows.with_label_values(&[&s]).inc_by(rows);
        self.bytes.with_label_values(&[&s]).inc_by(bytes);
    }

    /// Marks a stream open until the guard drops, which also records its duration.
    pub fn stream(&self) -> StreamGuard {
        self.streams.inc();
        StreamGuard {
            metrics: self.clone(),
            started: Instant::now(),
        }
    }

    /// Records that a `method` request took since `started`.
    pub fn observe(&self, method: &str, started: Instant) {
        self.durations
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }

    /// The text exposition, with the source's gauges read now.
    pub fn render(&self, source: &dyn Reader) -> String {
        self.cursors.set(source.cursors_held() as i64);
        let totals = source.cursor_totals();
        // The source keeps the totals; the counters catch up to them.
        let catch_up =
            |c: prometheus::IntCounter, total: u64| c.inc_by(total.saturating_sub(c.get()));
        for (event, total) in [
            ("declared", totals.declared),
            ("expired", totals.expired),
            ("evicted", totals.evicted),
        ] {
            catch_up(self.cursor_events.with_label_values(&[event]), total);
        }
        for (state, total) in [("planned", totals.endpoints), ("read", totals.drained)] {
            catch_up(self.endpoint_states.with_label_values(&[state]), total);
        }
        for (segment, n) in source.connections_in_use() {
            self.connections
                .with_label_values(&[&segment.to_string()])
                .set(n as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// An open `DoGet` stream, counted while it lives.
pub struct StreamGuard {
    metrics: Metrics,
    started: Instant,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.streams.dec();
        self.metrics.observe("DoGet", self.started);
    }
}

/// Binds `addr` and serves `GET /metrics` until `shutdown` completes;
/// returns the bound address at once (the serving runs on a task).
pub async fn serve(
    addr: &str,
    metrics: Metrics,
    source: Arc<dyn Source>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot bind --metrics {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("--metrics listener has no address: {e}")))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, source) = (metrics.clone(), source.clone());
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics.render(source.as_ref()),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}
