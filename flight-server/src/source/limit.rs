//! A cap on the database connections one segment gets from this server.
//!
//! PostgreSQL refuses connections beyond its `max_connections` with
//! "sorry, too many clients already", which a client can only retry
//! blindly. So the server keeps its own, smaller budget per segment: a
//! request that needs a connection while the budget is spent waits in a
//! FIFO queue (tokio's semaphore is fair) until one is returned. A permit
//! lives exactly as long as the connection — it is handed to the task that
//! drives the connection and released when that task ends, i.e. when the
//! socket is closed, plus a short grace for the backend process to exit
//! (PostgreSQL ends a backend a moment after the client hung up) — so the
//! number of backends this server holds on a segment stays within the cap,
//! whether a stream ends, fails, or is abandoned by its client.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Default connections per segment (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

/// A per-segment budget of open database connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    /// A budget of `max` connections (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections in use now.
    pub fn in_use(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A permit if one is free now, without waiting.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Waits (first come, first served) for a connection slot on `segment`.
    pub async fn acquire(&self, segment: &str) -> Result<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let start = Instant::now();
        tracing::debug!(%segment, max = self.max, "connection cap reached; queued");
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("connection limit closed".into()))?;
        tracing::debug!(%segment, waited_ms = start.elapsed().as_millis() as u64, "dequeued");
        Ok(permit)
    }
}

impl Default for ConnectionLimit {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CONNECTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_served_in_order_once_a_permit_returns() {
        let limit = ConnectionLimit::new(1);
        let first = limit.acquire("s").await.unwrap();
        assert_eq!(limit.in_use(), 1);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let (l, tx) = (limit.clone(), tx.clone());
            tokio::spawn(async move {
                let p = l.acquire("s").await.unwrap();
                tx.send(i).unwrap();
                drop(p);
            });
            // Let each waiter queue before the next one.
            tokio::task::yield_now().await;
        }
        assert!(
            rx.try_recv().is_err(),
            "nobody passes while the cap is spent"
        );
        drop(first);
        let order: Vec<i32> = vec![
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ];
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(limit.in_use(), 0);
    }
}
