//! The run's pinned snapshots: one per flight-server it plans on, so that
//! every read of the run — every epoch, validation pass, replaced trainer —
//! sees the rows as they were when the run began, however the tables change
//! meanwhile (see `flight_client::snapshot`).
//!
//! A pin costs the database one idle session per segment (one on a
//! Greenplum coordinator) and holds back vacuum for rows changed after it,
//! so it is bounded: `[source] snapshot_ttl` (capped by each server's
//! `--snapshot-max-ttl`), renewed while the run lives (a server releases a
//! pin left unused for its `--snapshot-idle`), released when the run ends.
//!
//! A pin can still be lost: its server restarted, or the TTL passed. Then
//! the run pins again and says so, and the rows it reads from then on may
//! differ; each partition's reads are compared with its first
//! (`[source] on_change`), so a change never goes unnoticed. A server that
//! holds no snapshots (files) is read as it is.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flight_client::snapshot::{self as pin, PinRequest};

use crate::error::{Error, Result};

/// The file in a run's checkpoint directory naming its pins, by location,
/// for `--resume` to take up while their servers still hold them. A pin's id
/// reads nothing by itself: it is bound to the user who took it.
pub const PINS_FILE: &str = "pins.json";

/// The pins a stopped run left in `checkpoint_dir` (none when it left no
/// file or one that does not parse).
pub fn load(checkpoint_dir: &Path) -> Option<BTreeMap<String, String>> {
    let bytes = std::fs::read(checkpoint_dir.join(PINS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The snapshots pinned for a run, by planning location.
pub struct Pins {
    request: Option<PinRequest>,
    ids: Arc<Mutex<BTreeMap<String, String>>>,
    keepalive: Option<tokio::task::JoinHandle<()>>,
    /// How many times a pin was found gone and taken again.
    pub lost: u32,
}

impl Drop for Pins {
    /// Stops renewing. Pins not released by then stay in the [`Held`]
    /// handle that [`crate::run::train`] releases, awaited, whichever way
    /// the run ended (a task spawned here would not outlive the process).
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
    }
}

/// The pins a run holds, shared with whoever releases them at its end.
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<BTreeMap<String, String>>>);

impl Held {
    /// Releases every pin still held (none after [`Pins::release`] or
    /// [`Pins::keep`]).
    pub async fn release(&self) {
        let ids = std::mem::take(&mut *lock(&self.0));
        release_all(ids).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pins {
    /// No pins: every read sees the tables as they are then.
    pub fn none() -> Self {
        Self {
            request: None,
            ids: Arc::default(),
            keepalive: None,
            lost: 0,
        }
    }

    /// Pins a snapshot on each of `locations` for at most `ttl_seconds`
    /// (the servers' cap when `None`; `Some(0)` pins nothing), and keeps
    /// them from going idle while the value lives. `resumed`: the pins a
    /// stopped run left ([`Pins::save`]), taken up again where their
    /// servers still hold them, so a resumed run reads the rows it read
    /// before.
    pub async fn take(
        locations: &[String],
        ttl_seconds: Option<u64>,
        resumed: Option<BTreeMap<String, String>>,
    ) -> Result<Self> {
        if ttl_seconds == Some(0) {
            tracing::info!("source.snapshot_ttl = 0: reads see the tables as they are when read");
            return Ok(Self::none());
        }
        let request = PinRequest { ttl_seconds };
        let mut pins = Self::none();
        let mut idle = Duration::from_secs(600);
        let resumed = resumed.unwrap_or_default();
        for location in locations {
            if let Some(id) = resumed.get(location) {
                match pin::renew(location, None, id).await {
                    Ok(()) => {
                        tracing::info!(%location, "the run's snapshot is still held: resuming at it");
                        lock(&pins.ids).insert(location.clone(), id.clone());
                        continue;
                    }
                    Err(e) => tracing::warn!(
                        %location,
                        error = %e,
                        "the stopped run's snapshot is gone; pinning a new one — each partition \
                         is checked against its first read"
                    ),
                }
            }
            if let Some(p) = pin::pin(location, None, &request).await? {
                tracing::info!(%location, ttl_seconds = p.ttl_seconds, "snapshot pinned: every read of the run sees the same rows");
                idle = idle.min(Duration::from_secs(p.idle_seconds.max(3)));
                lock(&pins.ids).insert(location.clone(), p.snapshot);
            } else {
                tracing::warn!(%location, "this flight-server holds no snapshot: its rows are read as they are at each read, and checked against the first read");
            }
        }
        pins.request = Some(request);
        if !lock(&pins.ids).is_empty() {
            pins.keepalive = Some(tokio::spawn(keep_alive(pins.ids.clone(), idle / 3)));
        }
        Ok(pins)
    }

    /// A handle on the pins, to release them after the run whichever way
    /// it ends.
    pub fn handle(&self) -> Held {
        Held(self.ids.clone())
    }

    /// The pins, by location, for a resumed run to take up
    /// ([`PINS_FILE`] in the run's directory).
    pub fn held(&self) -> BTreeMap<String, String> {
        lock(&self.ids).clone()
    }

    /// Writes the pins into `checkpoint_dir` ([`PINS_FILE`]).
    pub fn save(&self, checkpoint_dir: &Path) -> Result<()> {
        let path = checkpoint_dir.join(PINS_FILE);
        std::fs::write(&path, serde_json::to_vec(&self.held())?)?;
        Ok(())
    }

    /// Lets the pins go without releasing them: a run that stops to be
    /// resumed leaves them to their servers' `--snapshot-idle`, so that a
    /// `--resume` soon after reads the same rows.
    pub fn keep(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
        lock(&self.ids).clear();
    }

    /// The pin to plan at on `location`, if it holds one.
    pub fn id(&self, location: &str) -> Option<String> {
        lock(&self.ids).get(location).cloned()
    }

    /// Pins again on `location` after its pin was found gone (`why`); the
    /// rows read from now on may differ from earlier reads.
    pub async fn repin(&mut self, location: &str, why: &str) -> Result<()> {
        let Some(request) = &self.request else {
            return Err(Error::Flight(format!(
                "{location} planned at a snapshot this run never pinned: {why}"
            )));
        };
        self.lost += 1;
        tracing::warn!(
            %location,
            reason = why,
            "the run's snapshot is lost; pinning a new one — rows read from now on may differ \
             from earlier reads, and each partition is checked against its first read"
        );
        match pin::pin(location, None, request).await? {
            Some(p) => {
                lock(&self.ids).insert(location.to_owned(), p.snapshot);
            }
            None => {
                lock(&self.ids).remove(location);
            }
        }
        Ok(())
    }

    /// Releases every pin: the databases may vacuum again. A failure is
    /// only logged (the servers release an unused pin by themselves).
    pub async fn release(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
        self.handle().release().await;
    }
}

async fn release_all(ids: BTreeMap<String, String>) {
    for (location, id) in ids {
        match pin::release(&location, None, &id).await {
            Ok(()) => tracing::debug!(%location, "snapshot released"),
            Err(e) => tracing::debug!(%location, error = %e, "releasing the snapshot"),
        }
    }
}

/// Renews every pin each `every` until aborted; a pin found gone is only
/// logged here (the next plan at it pins again).
async fn keep_alive(ids: Arc<Mutex<BTreeMap<String, String>>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let now: Vec<(String, String)> = lock(&ids)
            .iter()
            .map(|(l, i)| (l.clone(), i.clone()))
            .collect();
        for (location, id) in now {
            if let Err(e) = pin::renew(&location, None, &id).await {
                tracing::warn!(%location, error = %e, "renewing the run's snapshot");
            }
        }
    }
}
