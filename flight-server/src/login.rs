//! Handshake logins: when a Basic `user:password` counts as proof.
//!
//! `--auth database` checks a password by logging in to the database as the
//! caller. That proves the password only where the database checks it:
//! where pg_hba.conf says `trust` (or `peer`, `ident`) for the server's host,
//! the database lets the user in whatever the password — and it matches the
//! *flight-server's* address, not the caller's. initdb trusts 127.0.0.1 by
//! default and gpinitsystem writes a trust line for gpadmin on every
//! coordinator address, so a server on the coordinator would take
//! `gpadmin:anything` for the cluster's superuser.
//!
//! So a login counts only when all of these hold:
//!
//! ```text
//!  1. the source address has not failed too often lately      (FailedLogins)
//!  2. a slot of the small login pool is free (≤ 4 at once,     (LoginGate::pool)
//!     apart from the data connections' --max-connections)
//!  3. the database accepts user:password                       (Catalog::authenticate)
//!  4. the database refuses the same user with NO password      (Catalog::admits_without_password)
//!     — otherwise pg_hba trusts this host for the user: refused, naming the line to change
//!  5. the role is neither superuser nor replication, unless --allow-superuser
//! ```
//!
//! Step 4 connects without a password: a server that asks for one makes
//! the client give up before any password is sent, which PostgreSQL does
//! not log as a failed login (as it does not when psql prompts).
//!
//! A failed login (steps 3–5) counts against the caller's address. Past
//! [`MAX_FAILURES`] within [`FAILURE_WINDOW`], handshakes from that address
//! are refused before anything reaches the database until the window ends,
//! so a flood of bogus handshakes costs the database a handful of logins,
//! not one per request, and other clients keep their connection slots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::Catalog;

/// Database logins the Handshake runs at once; more wait for a slot.
pub const LOGIN_POOL: usize = 4;

/// Longest a Handshake waits for a slot of the login pool.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Failed logins one address may have within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;

/// The window failed logins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose failures are remembered; past it the stalest are
/// forgotten (an attacker with more addresses than this gains a little).
const MAX_ADDRESSES: usize = 16_384;

/// The checks every Handshake goes through before a token is issued.
#[derive(Debug)]
pub struct LoginGate {
    pool: Arc<Semaphore>,
    failures: FailedLogins,
    allow_superuser: bool,
}

impl LoginGate {
    /// A gate refusing superuser and replication roles unless
    /// `allow_superuser`.
    pub fn new(allow_superuser: bool) -> Self {
        Self {
            pool: Arc::new(Semaphore::new(LOGIN_POOL)),
            failures: FailedLogins::default(),
            allow_superuser,
        }
    }

    /// Logs `caller` in against `source`, from `peer` (the caller's address,
    /// when the transport knows it). `Ok` only when the database proved the
    /// password (see the module docs).
    pub async fn login(
        &self,
        source: &dyn Catalog,
        caller: &Caller,
        peer: Option<IpAddr>,
    ) -> Result<()> {
        if let Some(ip) = peer {
            self.failures.check(ip)?;
        }
        let _slot = tokio::time::timeout(POOL_WAIT, self.pool.acquire())
            .await
            .map_err(|_| {
                Error::Exhausted(format!(
                    "{LOGIN_POOL} logins are in progress and none finished within {}s; \
                     retry the handshake in a moment",
                    POOL_WAIT.as_secs()
                ))
            })?
            .map_err(|_| Error::Internal("the login pool is closed".into()))?;
        // Again: handshakes that queued for a slot while others from the
        // same address were failing go no further.
        if let Some(ip) = peer {
            self.failures.check(ip)?;
        }
        let outcome = self.prove(source, caller).await;
        if let (Err(e), Some(ip)) = (&outcome, peer) {
            // Only the caller's own mistakes count against its address; an
            // outage or a full pool is nobody's failed login.
            if matches!(
                e,
                Error::Unauthenticated(_) | Error::PermissionDenied(_) | Error::Config(_)
            ) {
                self.failures.record(ip);
            }
        }
        outcome
    }

    async fn prove(&self, source: &dyn Catalog, caller: &Caller) -> Result<()> {
        let user = caller.user().unwrap_or_default();
        let role = source.authenticate(caller).await.map_err(|e| match e {
            // A refused login, whatever the database's exact SQLSTATE.
            Error::Unauthenticated(m) | Error::PermissionDenied(m) | Error::InvalidQuery(m) => {
                Error::Unauthenticated(format!(
                    "the database refused the login of {user:?}: {m}; check the user and password"
                ))
            }
            other => other,
        })?;
        if source.admits_without_password(user).await? {
            tracing::warn!(
                user,
                database = %role.database,
                server_address = role.server_address.as_deref().unwrap_or("?"),
                "refused a login: the database admits this role from here without a password"
            );
            let from = role
                .server_address
                .as_deref()
                .map(|a| {
                    format!(" from {a} (this flight-server's address as the database sees it)")
                })
                .unwrap_or_default();
            return Err(Error::Config(format!(
                "{} lets {user:?} log in{from} without a password (a pg_hba.conf line with \
                 trust, peer or ident matches), so a password sent here proves nothing and the \
                 login is refused; the DBA should change that line's method to scram-sha-256 \
                 (or md5) and reload, or put a password line for this address above it",
                role.database
            )));
        }
        if role.privileged && !self.allow_superuser {
            return Err(Error::PermissionDenied(format!(
                "{user:?} is a superuser or replication role, which bypasses every GRANT; log \
                 in as a role with only the privileges it needs, or start flight-server with \
                 --allow-superuser"
            )));
        }
        Ok(())
    }
}

/// Failed logins per source address, in a fixed window per address.
#[derive(Debug, Default)]
struct FailedLogins {
    by_address: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailedLogins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses `ip` while it is over its failures.
    fn check(&self, ip: IpAddr) -> Result<()> {
        let now = Instant::now();
        let mut map = self.lock();
        let Some(w) = map.get(&ip).copied() else {
            return Ok(());
        };
        let ends = w.started + FAILURE_WINDOW;
        if now >= ends {
            map.remove(&ip);
            return Ok(());
        }
        if w.failures >= MAX_FAILURES {
            return Err(Error::Exhausted(format!(
                "{} failed logins from {ip} within {}s; handshakes from this address are \
                 refused for another {}s — check the user and password",
                w.failures,
                FAILURE_WINDOW.as_secs(),
                (ends - now).as_secs().max(1)
            )));
        }
        Ok(())
    }

    fn record(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, w| now < w.started + FAILURE_WINDOW);
            if map.len() >= MAX_ADDRESSES {
                if let Some(stalest) = map.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| *k) {
                    map.remove(&stalest);
                }
            }
        }
        let w = map.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= w.started + FAILURE_WINDOW {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_past_its_failures_and_others_are_not() {
        let f = FailedLogins::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            f.check(a).unwrap();
            f.record(a);
        }
        let e = f.check(a).unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)), "{e}");
        assert!(e.to_string().contains("10.0.0.1"), "{e}");
        f.check(b).unwrap();
    }

    #[test]
    fn the_remembered_addresses_stay_bounded() {
        let f = FailedLogins::default();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            f.record(IpAddr::from(i.to_be_bytes()));
        }
        assert!(f.lock().len() <= MAX_ADDRESSES);
    }
}
