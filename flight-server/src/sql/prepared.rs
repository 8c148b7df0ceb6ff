//! Prepared statements: what `CreatePreparedStatement` describes, a
//! parameter `DoPut` binds, and `GetFlightInfo` on the handle plans.
//!
//! The statements live in this server's memory, bounded in number (the
//! oldest goes when the store is full, and its client gets a clear
//! `NotFound` that says to prepare again), and each belongs to the user who
//! prepared it: another user's handle finds nothing. The endpoints a
//! prepared statement's `GetFlightInfo` returns carry the same sealed
//! tickets as any query's, so they are read anywhere the key is shared;
//! only the prepare, bind and plan calls must reach the same server, which
//! is what Flight SQL clients do.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::sql::bind;

/// How many prepared statements a server keeps; past it, the oldest of
/// the user holding the most is forgotten.
const CAPACITY: usize = 4096;

/// How many prepared statements one user keeps; past it, that user's
/// oldest is forgotten (one client leaking handles evicts only its own).
const PER_USER: usize = 256;

/// One prepared statement.
#[derive(Clone, Debug)]
pub struct Statement {
    /// Who prepared it (`None` without authentication).
    pub user: Option<String>,
    /// The statement, placeholders numbered `$1`, `$2`, …
    pub sql: String,
    /// The parameters the database inferred.
    pub parameters: SchemaRef,
    /// The values bound last, if any.
    pub bound: Option<RecordBatch>,
}

impl Statement {
    /// The SQL to plan: the statement with its bound values in place.
    pub fn bound_sql(&self) -> Result<String> {
        let expected = self.parameters.fields().len();
        match &self.bound {
            None if expected == 0 => Ok(self.sql.clone()),
            None => Err(Error::BadRequest(format!(
                "the prepared statement takes {expected} parameter(s) and none were bound; \
                 bind them before executing"
            ))),
            Some(params) => bind::bind(&self.sql, params),
        }
    }
}

/// The prepared statements of one server.
#[derive(Debug, Default)]
pub struct PreparedStatements {
    inner: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    by_handle: HashMap<Bytes, Statement>,
    order: VecDeque<Bytes>,
}

impl Store {
    /// Forgets one statement if `user` holds `per_user` of them (its own
    /// oldest) or the store holds `capacity` (the oldest of the user holding
    /// the most).
    fn make_room(&mut self, user: Option<&str>, capacity: usize, per_user: usize) {
        let mut held: HashMap<Option<&str>, usize> = HashMap::new();
        for s in self.by_handle.values() {
            *held.entry(s.user.as_deref()).or_default() += 1;
        }
        let victim = if held.get(&user).copied().unwrap_or(0) >= per_user {
            user
        } else if self.by_handle.len() >= capacity {
            match held.into_iter().max_by_key(|(u, n)| (*n, *u == user)) {
                Some((u, _)) => u,
                None => return,
            }
        } else {
            return;
        };
        let victim = victim.map(str::to_owned);
        let position = self.order.iter().position(|h| {
            self.by_handle
                .get(h)
                .is_some_and(|s| s.user.as_deref() == victim.as_deref())
        });
        if let Some(i) = position {
            if let Some(h) = self.order.remove(i) {
                self.by_handle.remove(&h);
            }
        }
    }
}

impl PreparedStatements {
    /// Keeps `statement`; returns its handle.
    pub fn insert(&self, statement: Statement) -> Bytes {
        let handle = Bytes::from(format!("{:032x}", rand::random::<u128>()));
        let mut store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        store.make_room(statement.user.as_deref(), CAPACITY, PER_USER);
        store.order.push_back(handle.clone());
        store.by_handle.insert(handle.clone(), statement);
        handle
    }

    /// The statement `handle` names, if `user` prepared it.
    pub fn get(&self, handle: &[u8], user: Option<&str>) -> Result<Statement> {
        let store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match store.by_handle.get(handle) {
            Some(s) if s.user.as_deref() == user => Ok(s.clone()),
            _ => Err(not_found()),
        }
    }

    /// Binds `params` to the statement `handle` names.
    pub fn bind(&self, handle: &[u8], user: Option<&str>, params: RecordBatch) -> Result<()> {
        let mut store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match store.by_handle.get_mut(handle) {
            Some(s) if s.user.as_deref() == user => {
                s.bound = Some(params);
                Ok(())
            }
            _ => Err(not_found()),
        }
    }

    /// Forgets the statement `handle` names.
    pub fn close(&self, handle: &[u8], user: Option<&str>) -> Result<()> {
        let mut store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match store.by_handle.get(handle) {
            Some(s) if s.user.as_deref() == user => {
                store.by_handle.remove(handle);
                store.order.retain(|h| h.as_ref() != handle);
                Ok(())
            }
            _ => Err(not_found()),
        }
    }
}

fn not_found() -> Error {
    Error::NotFound(
        "no such prepared statement on this server (closed, forgotten to make room, \
         prepared by another user or on another server, or the server restarted); prepare it again"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn statement(user: Option<&str>) -> Statement {
        Statement {
            user: user.map(str::to_owned),
            sql: "SELECT 1".into(),
            parameters: Arc::new(arrow_schema::Schema::empty()),
            bound: None,
        }
    }

    #[test]
    fn a_handle_belongs_to_its_user_until_closed() {
        let store = PreparedStatements::default();
        let h = store.insert(statement(Some("alice")));
        assert_eq!(store.get(&h, Some("alice")).unwrap().sql, "SELECT 1");
        assert!(matches!(
            store.get(&h, Some("bob")),
            Err(Error::NotFound(_))
        ));
        assert!(store.close(&h, Some("bob")).is_err());
        store.close(&h, Some("alice")).unwrap();
        assert!(store.get(&h, Some("alice")).is_err());
    }

    #[test]
    fn a_user_over_its_share_forgets_its_own_statements_only() {
        let store = PreparedStatements::default();
        let alice = store.insert(statement(Some("alice")));
        let mallory = store.insert(statement(Some("mallory")));
        for _ in 0..PER_USER + 10 {
            store.insert(statement(Some("mallory")));
        }
        assert!(store.get(&alice, Some("alice")).is_ok());
        assert!(store.get(&mallory, Some("mallory")).is_err());
    }

    #[test]
    fn the_oldest_goes_when_full() {
        let store = PreparedStatements::default();
        let first = store.insert(statement(None));
        for _ in 0..CAPACITY {
            store.insert(statement(None));
        }
        assert!(store.get(&first, None).is_err());
    }
}
