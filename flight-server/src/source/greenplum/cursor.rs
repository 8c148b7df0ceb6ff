//! Parallel retrieve cursors this server declared: the registry that holds
//! their coordinator sessions, the sweeper that closes cursors left unread,
//! the watch on endpoints read by other servers, and closing a cursor once
//! every endpoint is done.

use super::*;

/// How long, once every endpoint has been drained, the coordinator is given
/// to report the cursor finished (it normally answers at once).
pub(super) const FINISH_WAIT_SECS: u32 = 10;

/// Open cursors by id, and recently closed ids (so that a late second read
/// of an endpoint is told so rather than "unknown cursor").
pub(super) struct Registry {
    pub(super) timeout: Duration,
    pub(super) inner: Mutex<RegistryInner>,
    pub(super) counts: CursorCounts,
}

#[derive(Default)]
pub(super) struct RegistryInner {
    pub(super) open: HashMap<String, Arc<Cursor>>,
    pub(super) closed: HashMap<String, Instant>,
}

/// What this server's cursors did since it started, for `/metrics`: every
/// planned endpoint should be read ([`CursorTotals`]).
#[derive(Default)]
pub(super) struct CursorCounts {
    pub(super) declared: AtomicU64,
    pub(super) endpoints: AtomicU64,
    pub(super) drained: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) evicted: AtomicU64,
}

impl CursorCounts {
    pub(super) fn totals(&self) -> CursorTotals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CursorTotals {
            declared: get(&self.declared),
            endpoints: get(&self.endpoints),
            drained: get(&self.drained),
            expired: get(&self.expired),
            evicted: get(&self.evicted),
        }
    }
}

/// One declared parallel retrieve cursor and the session that holds it.
pub(super) struct Cursor {
    /// The SQL name of the cursor (`hopper_<hex>`), safe to splice into SQL.
    pub(super) name: String,
    /// Who declared it (`None` without authentication).
    pub(super) owner: Option<String>,
    pub(super) schema: SchemaRef,
    /// The cursor session's place under `--max-connections`, returned with it.
    pub(super) _permit: OwnedSemaphorePermit,
    /// The coordinator session in whose transaction the cursor lives; taken
    /// (once) when the cursor is finished.
    pub(super) session: Mutex<Option<Arc<Client>>>,
    pub(super) state: Mutex<CursorState>,
}

pub(super) struct CursorState {
    pub(super) endpoints: BTreeMap<i32, Endpoint>,
    /// When an endpoint last started or stopped being read (or the cursor was declared).
    pub(super) last_activity: Instant,
}

pub(super) struct Endpoint {
    pub(super) status: Status,
}

/// Where and how to retrieve one endpoint (a row of `gp_get_endpoints()`).
#[derive(Clone, Debug)]
pub(super) struct EndpointInfo {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) token: String,
    pub(super) name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// Not claimed yet.
    Ready,
    /// Located at another flight-server: read there, its progress watched
    /// on the coordinator (`gp_get_endpoints().state`).
    Remote,
    /// A `read` is streaming it.
    Reading,
    /// Read to the end.
    Drained,
    /// The read failed or its client went away, or the cursor expired.
    Abandoned,
}

impl Status {
    pub(super) fn is_done(self) -> bool {
        matches!(self, Status::Drained | Status::Abandoned)
    }
}

impl Registry {
    /// Removes an open cursor, remembering its id as closed; `None` if it
    /// was already gone (so exactly one caller closes each cursor).
    pub(super) fn retire(&self, id: &str) -> Option<Arc<Cursor>> {
        let mut inner = lock(&self.inner);
        let cursor = inner.open.remove(id)?;
        inner.closed.insert(id.to_string(), Instant::now());
        Some(cursor)
    }

    /// Retires an idle cursor (no endpoint being read) to make room for one
    /// `requester` plans, marking its unread endpoints abandoned; `None` if
    /// every cursor is being read. The victim belongs to whoever holds the
    /// most cursors (the requester first among equals), idle longest among
    /// theirs: one user planning without reading evicts their own cursors,
    /// never everyone else's.
    pub(super) fn evict_idle(&self, requester: Option<&str>) -> Option<(String, Arc<Cursor>)> {
        let mut inner = lock(&self.inner);
        let mut held: HashMap<Option<&str>, usize> = HashMap::new();
        for c in inner.open.values() {
            *held.entry(c.owner.as_deref()).or_default() += 1;
        }
        let id = inner
            .open
            .iter()
            .filter_map(|(id, c)| {
                let state = lock(&c.state);
                let reading = state
                    .endpoints
                    .values()
                    .any(|e| e.status == Status::Reading);
                let owner = c.owner.as_deref();
                let rank = (
                    std::cmp::Reverse(held.get(&owner).copied().unwrap_or(0)),
                    owner != requester,
                    state.last_activity,
                );
                (!reading).then(|| (rank, id.clone()))
            })
            .min()?
            .1;
        let cursor = inner.open.remove(&id)?;
        inner.closed.insert(id.clone(), Instant::now());
        self.counts.evicted.fetch_add(1, Ordering::Relaxed);
        for e in lock(&cursor.state).endpoints.values_mut() {
            if matches!(e.status, Status::Ready | Status::Remote) {
                e.status = Status::Abandoned;
            }
        }
        Some((id, cursor))
    }

    /// Retires every cursor that has been idle (no endpoint being read) for
    /// longer than the timeout; marks their unread endpoints abandoned so
    /// that a racing `read` is refused.
    pub(super) fn expired(&self) -> Vec<(String, Arc<Cursor>)> {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        let timeout = self.timeout;
        // Remember closed ids for a while longer than tickets usually live.
        let memory = timeout.max(Duration::from_secs(3600));
        inner
            .closed
            .retain(|_, at| now.duration_since(*at) < memory);
        let ids: Vec<String> = inner
            .open
            .iter()
            .filter(|(_, c)| {
                let mut state = lock(&c.state);
                let idle = now.duration_since(state.last_activity) >= timeout;
                let reading = state
                    .endpoints
                    .values()
                    .any(|e| e.status == Status::Reading);
                if idle && !reading {
                    self.counts.expired.fetch_add(1, Ordering::Relaxed);
                    for e in state.endpoints.values_mut() {
                        if matches!(e.status, Status::Ready | Status::Remote) {
                            e.status = Status::Abandoned;
                        }
                    }
                    true
                } else {
                    false
                }
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let c = inner.open.remove(&id)?;
                inner.closed.insert(id.clone(), now);
                Some((id, c))
            })
            .collect()
    }
}

/// Background task: closes idle cursors until the source is dropped.
pub(super) async fn sweep(registry: Weak<Registry>) {
    let period = match registry.upgrade() {
        Some(r) => (r.timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        for (id, cursor) in registry.expired() {
            tracing::info!(cursor = %id, "closing a parallel retrieve cursor left unread");
            if let Err(e) = close(&cursor).await {
                tracing::warn!(cursor = %id, error = %e, "closing an expired cursor failed");
            }
        }
    }
}

/// A retrieve of an endpoint this server did not plan that failed because
/// the endpoint is gone — the login with its token refused, or the
/// endpoint already used — is a refused ticket: planning again is the cure.
pub(super) fn gone_endpoint(e: Error) -> Error {
    match e {
        Error::Unauthenticated(m) | Error::InvalidQuery(m) => Error::BadTicket(format!(
            "the endpoint is no longer there ({m}): its cursor was closed, or the endpoint \
             was read already (an endpoint can be read once); plan the query again"
        )),
        other => other,
    }
}

/// How often the planning server looks at endpoints read elsewhere.
pub(super) const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// Watches a cursor some of whose endpoints other flight-servers read: asks
/// the coordinator for their states (`gp_get_endpoints()`: READY, ATTACHED,
/// RETRIEVING, FINISHED, RELEASED) until every endpoint is done, then
/// closes the cursor — no message from the other servers needed. A reader
/// that let go mid-way (RELEASED) abandons the cursor, as Greenplum does.
pub(super) async fn watch_remote(registry: Weak<Registry>, id: String, cursor: Arc<Cursor>) {
    let mut tick = tokio::time::interval(WATCH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(reg) = registry.upgrade() else {
            return;
        };
        if !lock(&reg.inner).open.contains_key(&id) {
            return; // closed by a local read or the sweeper
        }
        let Some(session) = lock(&cursor.session).clone() else {
            return;
        };
        let states = session
            .simple_query(&format!(
                "SELECT gp_segment_id::text, state::text FROM gp_get_endpoints() \
                 WHERE cursorname::text = '{}' \
                   AND sessionid::text = current_setting('gp_session_id')",
                cursor.name
            ))
            .await;
        drop(session);
        let finished = match states {
            Ok(messages) => {
                let mut state = lock(&cursor.state);
                let mut active = false;
                for m in &messages {
                    let SimpleQueryMessage::Row(row) = m else {
                        continue;
                    };
                    let (Some(seg), Some(st)) = (row.get(0), row.get(1)) else {
                        continue;
                    };
                    let Some(ep) = seg
                        .parse::<i32>()
                        .ok()
                        .and_then(|s| state.endpoints.get_mut(&s))
                    else {
                        continue;
                    };
                    if ep.status == Status::Remote {
                        match st {
                            "FINISHED" => {
                                ep.status = Status::Drained;
                                reg.counts.drained.fetch_add(1, Ordering::Relaxed);
                            }
                            "RELEASED" => ep.status = Status::Abandoned,
                            "ATTACHED" | "RETRIEVING" => active = true,
                            _ => {}
                        }
                    }
                }
                if active {
                    state.last_activity = Instant::now();
                }
                state.endpoints.values().all(|e| e.status.is_done())
            }
            Err(e) => {
                // The cursor's transaction failed (a reader let go, a segment
                // restarted): nothing more can be read from it.
                tracing::info!(cursor = %id, error = %e, "a watched cursor failed; closing it");
                true
            }
        };
        if finished {
            if reg.retire(&id).is_some() {
                if let Err(e) = close(&cursor).await {
                    tracing::info!(cursor = %id, error = %e, "closing a watched cursor");
                }
            }
            return;
        }
    }
}

/// Ends a cursor on its coordinator session: waits for Greenplum to report
/// the cursor finished (which surfaces any error a segment hit), then
/// `CLOSE` and `COMMIT`. The session is dropped either way.
/// The error the cursor failed with on the coordinator, if it failed
/// (looked up without waiting; the session is left for [`close`]).
pub(super) async fn cursor_failure(cursor: &Cursor) -> Option<Error> {
    let session = lock(&cursor.session).clone()?;
    let name = &cursor.name;
    session
        .simple_query(&format!(
            "SELECT gp_wait_parallel_retrieve_cursor('{name}', 0)"
        ))
        .await
        .err()
        .map(|e| Error::from_pg("the parallel retrieve cursor failed on the coordinator", e))
}

pub(super) async fn close(cursor: &Cursor) -> Result<()> {
    let Some(session) = lock(&cursor.session).take() else {
        return Ok(());
    };
    let name = &cursor.name;
    let drained = lock(&cursor.state)
        .endpoints
        .values()
        .all(|e| e.status == Status::Drained);
    // When every endpoint was read to the end the cursor is finished, so a
    // short wait only covers the segments reporting it; when some were
    // abandoned it never will be, so just look (timeout 0).
    let timeout = if drained { FINISH_WAIT_SECS } else { 0 };
    let wait = session
        .simple_query(&format!(
            "SELECT gp_wait_parallel_retrieve_cursor('{name}', {timeout})"
        ))
        .await;
    match wait {
        Err(e) => {
            // The transaction is aborted now, so CLOSE would fail; ROLLBACK
            // closes the cursor as well.
            let _ = session.batch_execute("ROLLBACK").await;
            Err(Error::from_pg(
                "the parallel retrieve cursor failed on the coordinator",
                e,
            ))
        }
        Ok(messages) => {
            let finished = first_value(&messages).is_some_and(|v| v == "t");
            if drained && !finished {
                tracing::warn!(cursor = %name, "every endpoint was drained but the cursor is not reported finished");
            }
            session
                .batch_execute(&format!("CLOSE {name}; COMMIT"))
                .await
                .map_err(|e| Error::from_pg("closing the parallel retrieve cursor", e))
        }
    }
}

/// This session's endpoints of cursor `name`, by `gp_segment_id`.
pub(super) async fn list_endpoints(
    session: &Client,
    name: &str,
) -> Result<BTreeMap<i32, EndpointInfo>> {
    let ctx = "listing the cursor's endpoints (gp_get_endpoints)";
    // Everything is cast to text: the simple protocol returns text anyway,
    // and this does not depend on the exact column types of the function.
    let messages = session
        .simple_query(&format!(
            "SELECT gp_segment_id::text, hostname::text, port::text, username::text, \
                    auth_token::text, endpointname::text \
             FROM gp_get_endpoints() \
             WHERE cursorname::text = '{name}' \
               AND sessionid::text = current_setting('gp_session_id')"
        ))
        .await
        .map_err(|e| Error::from_pg(ctx, e))?;
    let mut out = BTreeMap::new();
    for m in &messages {
        let SimpleQueryMessage::Row(row) = m else {
            continue;
        };
        let field = |i: usize, what: &str| -> Result<String> {
            row.get(i).map(str::to_string).ok_or_else(|| {
                Error::Internal(format!("gp_get_endpoints() returned a NULL {what}"))
            })
        };
        let segment: i32 = field(0, "gp_segment_id")?
            .parse()
            .map_err(|e| Error::Internal(format!("gp_get_endpoints() gp_segment_id: {e}")))?;
        let port: u16 = field(2, "port")?
            .parse()
            .map_err(|e| Error::Internal(format!("gp_get_endpoints() port: {e}")))?;
        let info = EndpointInfo {
            host: field(1, "hostname")?,
            port,
            user: field(3, "username")?,
            token: field(4, "auth_token")?,
            name: field(5, "endpointname")?,
        };
        if info.name.is_empty()
            || !info
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Error::Internal(format!(
                "unexpected endpoint name {:?} from gp_get_endpoints()",
                info.name
            )));
        }
        if out.insert(segment, info).is_some() {
            return Err(Error::Internal(format!(
                "cursor {name} has two endpoints on segment {segment}"
            )));
        }
    }
    Ok(out)
}

/// The first column of the first row of a simple query's result.
pub(super) fn first_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0),
        _ => None,
    })
}
