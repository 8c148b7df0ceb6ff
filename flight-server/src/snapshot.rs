//! Pinned snapshots: what a training run reads, held still while the
//! tables change.
//!
//! A run reads its partitions many times (every epoch with `cache =
//! "none"`, again after a trainer is replaced or the run resumed). Each read
//! is a new database transaction, so without help every read sees the table
//! as it is at that moment, and the models of one search are trained and
//! compared on different rows. A client therefore *pins* a snapshot once:
//!
//! ```text
//!  DoAction pin-snapshot {"ttl_seconds": …}  ─► per segment (the Greenplum coordinator: once)
//!                                                 BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
//!                                                 SELECT pg_export_snapshot();   -- kept open
//!      ◄─ {"snapshot": "<id>", …}
//!  GetFlightInfo(sql), header x-hopper-snapshot: <id>
//!      ─► PostgreSQL: each ticket carries its segment's exported name; DoGet runs
//!           BEGIN …; SET TRANSACTION SNAPSHOT '<name>'; COPY (…) TO STDOUT
//!         Greenplum: the cursor is declared in a transaction importing the
//!           distributed snapshot, so every endpoint reads it
//!  DoAction renew-snapshot <id>   (while the run lives)
//!  DoAction release-snapshot <id> (when it ends)
//! ```
//!
//! # What it costs, and the bounds
//! A pin holds one idle session per PostgreSQL segment (one on the Greenplum
//! coordinator), counted under `--max-connections`, and holds back vacuum
//! for rows deleted or updated after it was taken. So it is bounded three
//! ways: a lifetime (the client's `ttl_seconds`, at most
//! `--snapshot-max-ttl`), an idle limit (`--snapshot-idle`: a pin neither
//! used nor renewed for that long is released — a client that died does not
//! hold vacuum back for long), and a count per user
//! ([`MAX_PER_USER`]). A pin belongs to the user who took it; nobody else can
//! plan with, renew or release it.
//!
//! A pin that is gone (released, expired, the server restarted) is said so
//! with the [`flight_client::snapshot::SNAPSHOT_LOST`] mark: the client can
//! pin again, knowing its rows may have changed since (mop then compares
//! each partition with its first read).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::source::{HeldSnapshot, Reader, SnapshotNames};

pub use flight_client::snapshot::{
    PinRequest, PinResponse, PIN_SNAPSHOT, RELEASE_SNAPSHOT, RENEW_SNAPSHOT, SNAPSHOT_HEADER,
};

/// Pins one user may hold at once.
pub const MAX_PER_USER: usize = 4;

/// Default `--snapshot-max-ttl`: the longest any pin is held.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Default `--snapshot-idle`: a pin neither used nor renewed for this long
/// is released.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// How often expired pins are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// The pins this server holds.
pub struct Snapshots {
    /// The longest a pin lives (`--snapshot-max-ttl`).
    pub max_ttl: Duration,
    /// How long a pin may go unused (`--snapshot-idle`).
    pub idle: Duration,
    metrics: Metrics,
    pins: Mutex<HashMap<String, Arc<Pin>>>,
    /// Whether the sweeper runs (started with the first pin, inside the runtime).
    sweeping: std::sync::Once,
}

struct Pin {
    owner: Option<String>,
    created: Instant,
    ttl: Duration,
    last_used: Mutex<Instant>,
    held: HeldSnapshot,
}

impl Pin {
    fn expired(&self, idle: Duration, now: Instant) -> Option<&'static str> {
        if self
            .held
            .sessions
            .iter()
            .any(|(client, _)| client.is_closed())
        {
            Some("a session holding it ended")
        } else if now.duration_since(self.created) >= self.ttl {
            Some("its TTL passed")
        } else if now.duration_since(*lock(&self.last_used)) >= idle {
            Some("it went unused for --snapshot-idle")
        } else {
            None
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Snapshots {
    /// A store releasing pins after `max_ttl` at most, or `idle` unused
    /// (by a task started with the first pin that ends with the store).
    pub fn new(max_ttl: Duration, idle: Duration, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            max_ttl,
            idle,
            metrics,
            pins: Mutex::new(HashMap::new()),
            sweeping: std::sync::Once::new(),
        })
    }

    /// Pins a snapshot of every segment of `source` as `caller`.
    pub async fn pin(
        self: &Arc<Self>,
        source: &dyn Reader,
        caller: &Caller,
        request: &PinRequest,
    ) -> Result<PinResponse> {
        let owner = caller.user().map(str::to_owned);
        let mine = || {
            lock(&self.pins)
                .values()
                .filter(|p| p.owner == owner)
                .count()
        };
        if mine() >= MAX_PER_USER {
            return Err(too_many(&owner));
        }
        let ttl = request
            .ttl_seconds
            .map_or(self.max_ttl, Duration::from_secs)
            .min(self.max_ttl);
        if ttl.is_zero() {
            return Err(Error::BadRequest(
                "ttl_seconds must be at least 1 (omit it for the server's --snapshot-max-ttl)"
                    .into(),
            ));
        }
        self.sweeping
            .call_once(|| drop(tokio::spawn(sweep(Arc::downgrade(self)))));
        let held = source.export_snapshot(caller).await?;
        let id = format!("{:032x}", rand::random::<u128>());
        let now = Instant::now();
        {
            // Checked again: pins taken meanwhile count too.
            let mut pins = lock(&self.pins);
            if pins.values().filter(|p| p.owner == owner).count() >= MAX_PER_USER {
                return Err(too_many(&owner));
            }
            pins.insert(
                id.clone(),
                Arc::new(Pin {
                    owner,
                    created: now,
                    ttl,
                    last_used: Mutex::new(now),
                    held,
                }),
            );
        }
        self.metrics.snapshot_pinned();
        self.update_gauges();
        tracing::info!(snapshot = %id, ttl_seconds = ttl.as_secs(), "snapshot pinned");
        Ok(PinResponse {
            snapshot: id,
            ttl_seconds: ttl.as_secs(),
            idle_seconds: self.idle.as_secs(),
        })
    }

    /// The exported names of pin `id`, which `caller` must own; counts as a
    /// use.
    pub fn names(&self, id: &str, caller: &Caller) -> Result<SnapshotNames> {
        let pin = self.get(id, caller)?;
        *lock(&pin.last_used) = Instant::now();
        Ok(pin.held.names.clone())
    }

    /// Keeps pin `id` from going idle.
    pub fn renew(&self, id: &str, caller: &Caller) -> Result<()> {
        self.names(id, caller).map(drop)
    }

    /// Releases pin `id` now: its sessions end, and vacuum may proceed.
    pub fn release(&self, id: &str, caller: &Caller) -> Result<()> {
        self.get(id, caller)?;
        lock(&self.pins).remove(id);
        self.update_gauges();
        tracing::info!(snapshot = %id, "snapshot released");
        Ok(())
    }

    fn get(&self, id: &str, caller: &Caller) -> Result<Arc<Pin>> {
        let pin = lock(&self.pins).get(id).cloned();
        let Some(pin) = pin else {
            return Err(Error::SnapshotLost(format!(
                "snapshot {:?} is not held by this server: it was released, outlived its TTL \
                 or --snapshot-idle, or the server restarted; pin a new one (the rows may have \
                 changed since)",
                truncate(id)
            )));
        };
        // A session that ended (a segment restarted, its backend was
        // terminated) took the export with its transaction.
        if let Some(why) = pin.expired(self.idle, Instant::now()) {
            lock(&self.pins).remove(id);
            self.update_gauges();
            return Err(Error::SnapshotLost(format!(
                "snapshot {id} is gone ({why}); pin a new one (the rows may have changed since)"
            )));
        }
        if pin.owner.as_deref() != caller.user() {
            return Err(Error::PermissionDenied(format!(
                "snapshot {id} was pinned by another user; pin your own"
            )));
        }
        Ok(pin)
    }

    /// Pins held now.
    pub fn held(&self) -> usize {
        lock(&self.pins).len()
    }

    fn update_gauges(&self) {
        let pins = lock(&self.pins);
        let now = Instant::now();
        let oldest = pins
            .values()
            .map(|p| now.duration_since(p.created))
            .max()
            .unwrap_or_default();
        let sessions = pins.values().map(|p| p.held.sessions.len()).sum();
        self.metrics
            .snapshots(pins.len(), sessions, oldest.as_secs_f64());
    }
}

fn too_many(owner: &Option<String>) -> Error {
    Error::Exhausted(format!(
        "{} already holds {MAX_PER_USER} pinned snapshots, the most one user may; \
         release one (mop releases its run's when the run ends) or wait for one to expire",
        owner.as_deref().unwrap_or("this server's user")
    ))
}

/// An id as a client sent it, cut short for messages.
fn truncate(id: &str) -> String {
    id.chars().take(40).collect()
}

/// Releases expired pins until the store is gone.
async fn sweep(store: Weak<Snapshots>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(store) = store.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<(String, &'static str)> = lock(&store.pins)
            .iter()
            .filter_map(|(id, p)| p.expired(store.idle, now).map(|why| (id.clone(), why)))
            .collect();
        for (id, why) in expired {
            lock(&store.pins).remove(&id);
            store.metrics.snapshot_expired();
            tracing::warn!(snapshot = %id, reason = why, "pinned snapshot released");
        }
        store.update_gauges();
    }
}
