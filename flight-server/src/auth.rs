//! Authentication: Basic credentials at the Flight `Handshake`, checked by
//! the database itself, then a Bearer token on every other call.
//!
//! ```text
//!  client ── Handshake, authorization: Basic base64(user:pass) ──► server
//!                                   server ── login as user ──► segment (the database checks the password)
//!         ◄── authorization: Bearer <token> ───────────────────── (also the handshake payload)
//!  client ── GetFlightInfo / DoGet …, authorization: Bearer <token> ──► runs as that user
//! ```
//!
//! This is what pyarrow's `client.authenticate_basic_token(user, password)`
//! does; it returns the `(b"authorization", b"Bearer …")` header pair to pass
//! in `FlightCallOptions(headers=[pair])`.
//!
//! Queries run with the user's rights: the PostgreSQL source connects to each
//! segment as the user (and the Greenplum source opens the coordinator
//! session as the user), so the database's GRANTs decide what can be read.
//! The files source has no database to ask, so it cannot be served with
//! `--auth database` (there would be nothing to check a password against).
//!
//! # Where the password lives
//! Every query opens new database connections as the user, so the server
//! needs the password for as long as the token lives. The token itself
//! carries only a random id, the user and the expiry, HMAC-signed with the
//! server key; the password stays in this process's memory, in a
//! [`TokenStore`] bounded in size ([`MAX_TOKENS`], at most
//! [`MAX_TOKENS_PER_USER`] of one user; room is made at the expense of the
//! user holding the most) and swept of expired entries. The trade-offs: a token is valid only
//! on the server that issued it and only until that server restarts (the
//! client handshakes again; `Unauthenticated` says so), and a leaked token
//! lets its holder read as the user until it expires (`--token-ttl`) — but
//! no password is ever sent back to a client, written to disk, or put in a
//! ticket, and tickets are bound to the user, so another user's ticket reads
//! nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

/// A database login: the user and the password the database checks.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The database role.
    pub user: String,
    /// The role's password (never logged; `Debug` redacts it).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The identity a request runs with.
///
/// [`Caller::server`] (no authentication) runs queries as the user of the
/// server's own connection strings; [`Caller::login`] runs them as the
/// authenticated database user, so the database's GRANTs decide what it
/// may read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    login: Option<Arc<Credentials>>,
    /// A user proven by a Bearer token another server sharing the key
    /// issued: this server holds no password for it.
    elsewhere: Option<String>,
}

impl Caller {
    /// No authenticated user: the server's configured connections are used.
    pub fn server() -> Self {
        Self::default()
    }

    /// An authenticated database user.
    pub fn login(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            login: Some(Arc::new(Credentials {
                user: user.into(),
                password: password.into(),
            })),
            elsewhere: None,
        }
    }

    /// A user who logged in at another server that shares the key (its
    /// Bearer token proves who they are) but not here: this server can
    /// serve them what needs no database login of theirs — a Greenplum
    /// endpoint, whose retrieve token is in the sealed ticket — and nothing
    /// else until they log in here.
    pub fn logged_in_elsewhere(user: impl Into<String>) -> Self {
        Self {
            login: None,
            elsewhere: Some(user.into()),
        }
    }

    /// The authenticated user's name, if any (tickets are bound to it).
    pub fn user(&self) -> Option<&str> {
        self.login
            .as_deref()
            .map(|c| c.user.as_str())
            .or(self.elsewhere.as_deref())
    }

    /// The login to connect to the database with: the caller's own, or
    /// `None` for the server's configured connections (no authentication).
    /// A caller who logged in at another server has neither here.
    pub fn login_here(&self) -> Result<Option<&Credentials>> {
        match (&self.login, &self.elsewhere) {
            (Some(c), _) => Ok(Some(c)),
            (None, None) => Ok(None),
            (None, Some(user)) => Err(Error::Unauthenticated(format!(
                "{user} logged in at another flight-server (its Bearer token is valid here, \
                 but this server holds no password for it): handshake with this server \
                 too (Basic credentials) to plan or read from the database here"
            ))),
        }
    }

    /// The authenticated user's credentials, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.login.as_deref()
    }
}

/// How the server authenticates its callers (`--auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication: every caller runs as the server's own
    /// connections. Allowed only on a loopback address.
    None,
    /// Basic credentials at the handshake, checked by a login to the
    /// database; a Bearer token on every other call.
    Database,
}

impl std::str::FromStr for AuthMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "database" => Ok(Self::Database),
            other => Err(Error::Config(format!(
                "--auth {other:?}: expected \"none\" or \"database\""
            ))),
        }
    }
}

/// Most tokens one server keeps; past it, the oldest token of the user
/// holding the most is dropped.
pub const MAX_TOKENS: usize = 4096;

/// Most tokens one user holds on one server; past it, that user's oldest
/// is dropped.
pub const MAX_TOKENS_PER_USER: usize = 64;

/// Default lifetime of a Bearer token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The signed, public part of a Bearer token.
#[derive(Debug, Serialize, Deserialize)]
struct TokenClaims {
    /// Random id: the key of the credentials in the store.
    id: String,
    /// The database user.
    user: String,
    /// Seconds since the Unix epoch after which the token is refused.
    exp: u64,
}

struct Entry {
    caller: Caller,
    expires_at: u64,
}

/// Issues and checks Bearer tokens; keeps each token's credentials in memory.
pub struct TokenStore {
    key: Vec<u8>,
    ttl: Duration,
    capacity: usize,
    per_user: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl TokenStore {
    /// A store signing with `key`; tokens live for `ttl`.
    pub fn new(key: impl Into<Vec<u8>>, ttl: Duration) -> Self {
        Self {
            key: key.into(),
            ttl,
            capacity: MAX_TOKENS,
            per_user: MAX_TOKENS_PER_USER,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The same store holding at most `capacity` tokens, `per_user` of any
    /// one user.
    pub fn with_capacity(mut self, capacity: usize, per_user: usize) -> Self {
        self.capacity = capacity.max(1);
        self.per_user = per_user.max(1);
        self
    }

    /// How many tokens are held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Domain separation from tickets, which share the key.
        mac.update(b"hopper bearer token v1\0");
        mac
    }

    /// Issues a token for an authenticated `caller` (one with credentials).
    pub fn issue(&self, caller: Caller) -> Result<String> {
        let user = caller
            .user()
            .ok_or_else(|| Error::Internal("issuing a token without a user".into()))?
            .to_owned();
        let now = now_secs();
        let claims = TokenClaims {
            id: format!("{:032x}", rand::random::<u128>()),
            user,
            exp: now + self.ttl.as_secs().max(1),
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());

        let mut entries = self.lock();
        entries.retain(|_, e| e.expires_at >= now);
        // Room is made at the expense of whoever holds the most tokens — the
        // caller itself past its own share — so that one user logging in
        // over and over forgets its own passwords, never everyone else's.
        let own = entries
            .values()
            .filter(|e| e.caller.user() == Some(claims.user.as_str()))
            .count();
        let victim_user = if own >= self.per_user {
            Some(claims.user.clone())
        } else if entries.len() >= self.capacity {
            let mut held: HashMap<&str, usize> = HashMap::new();
            for e in entries.values() {
                *held.entry(e.caller.user().unwrap_or_default()).or_default() += 1;
            }
            held.into_iter()
                .max_by_key(|(u, n)| (*n, *u == claims.user))
                .map(|(u, _)| u.to_owned())
        } else {
            None
        };
        if let Some(victim) = victim_user {
            let oldest = entries
                .iter()
                .filter(|(_, e)| e.caller.user() == Some(victim.as_str()))
                .min_by_key(|(_, e)| e.expires_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                entries.remove(&k);
            }
        }
        entries.insert(
            claims.id,
            Entry {
                caller,
                expires_at: claims.exp,
            },
        );
        Ok(format!("{payload}.{tag}"))
    }

    /// The caller a token stands for.
    pub fn verify(&self, token: &str) -> Result<Caller> {
        const AGAIN: &str = "handshake again (Basic credentials) for a new token";
        let (payload, tag) = token
            .split_once('.')
            .ok_or_else(|| Error::Unauthenticated(format!("malformed bearer token; {AGAIN}")))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Error::Unauthenticated(format!("malformed bearer token; {AGAIN}")))?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| {
            Error::Unauthenticated(format!(
                "bearer token signature does not match (forged, or issued by another server); {AGAIN}"
            ))
        })?;
        let claims: TokenClaims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Error::Unauthenticated(format!("malformed bearer token; {AGAIN}")))?;
        if claims.exp < now_secs() {
            self.lock().remove(&claims.id);
            return Err(Error::Unauthenticated(format!(
                "bearer token expired; {AGAIN}"
            )));
        }
        match self.lock().get(&claims.id) {
            Some(e) if e.caller.user() == Some(claims.user.as_str()) => Ok(e.caller.clone()),
            Some(_) => Err(Error::Unauthenticated(format!(
                "bearer token does not match its login; {AGAIN}"
            ))),
            // Signed with the shared key but not issued here (another server,
            // or this one before a restart): who the user is is proven, what
            // they may read is still for the database to say at a login here.
            None => Ok(Caller::logged_in_elsewhere(claims.user)),
        }
    }
}

/// The credentials of an `authorization: Basic base64(user:password)` header.
pub fn parse_basic(header: &str) -> Result<(String, String)> {
    const HOW: &str = "send `authorization: Basic base64(user:password)` in the Handshake \
                       (pyarrow: client.authenticate_basic_token(user, password))";
    let encoded = strip_scheme(header, "Basic").ok_or_else(|| {
        Error::Unauthenticated(format!("handshake without Basic credentials; {HOW}"))
    })?;
    // Padding is optional: Arrow's Go client (ADBC's Flight SQL driver)
    // sends the credentials unpadded.
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let decoded = BASE64
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Error::Unauthenticated(format!("Basic credentials are not base64 UTF-8; {HOW}"))
        })?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| Error::Unauthenticated(format!("Basic credentials lack the ':'; {HOW}")))?;
    if user.is_empty() {
        return Err(Error::Unauthenticated(format!("empty user name; {HOW}")));
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// The token of an `authorization: Bearer <token>` header.
pub fn parse_bearer(header: Option<&str>) -> Result<&str> {
    const HOW: &str = "handshake first with Basic credentials (pyarrow: \
                       client.authenticate_basic_token(user, password)) and send the \
                       `authorization: Bearer <token>` header it returns on every call";
    let header = header.ok_or_else(|| Error::Unauthenticated(format!("no bearer token; {HOW}")))?;
    strip_scheme(header, "Bearer")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated(format!(
                "the authorization header is not a bearer token; {HOW}"
            ))
        })
}

/// `header` without its `scheme ` prefix (the scheme is case-insensitive).
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_at_checked(scheme.len())?;
    (s.eq_ignore_ascii_case(scheme) && rest.starts_with(' ')).then(|| &rest[1..])
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn issued_tokens_verify_to_their_caller_and_forgeries_do_not() {
        let store = TokenStore::new(b"k".to_vec(), Duration::from_secs(60));
        let t = store.issue(Caller::login("alice", "pw")).unwrap();
        assert_eq!(store.verify(&t).unwrap().user(), Some("alice"));
        let mut forged = t.clone();
        forged.insert(0, 'x');
        assert!(matches!(
            store.verify(&forged),
            Err(Error::Unauthenticated(_))
        ));
        let other = TokenStore::new(b"other".to_vec(), Duration::from_secs(60));
        assert!(other
            .verify(&t)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        assert!(store.verify("garbage").is_err());
    }

    #[test]
    fn one_user_logging_in_again_and_again_evicts_only_its_own_tokens() {
        let store = TokenStore::new(b"k".to_vec(), Duration::from_secs(60)).with_capacity(8, 3);
        let alice = store.issue(Caller::login("alice", "pw")).unwrap();
        for _ in 0..100 {
            store.issue(Caller::login("mallory", "x")).unwrap();
        }
        // Alice's token still holds her password: it was never evicted.
        assert!(store.verify(&alice).unwrap().credentials().is_some());
        assert_eq!(store.len(), 4);
        // The store full of many users: the heaviest holder pays.
        for u in ["b", "c", "d", "e"] {
            store.issue(Caller::login(u, "pw")).unwrap();
        }
        assert_eq!(store.len(), 8);
        store.issue(Caller::login("f", "pw")).unwrap();
        assert_eq!(store.len(), 8);
        assert!(store.verify(&alice).unwrap().credentials().is_some());
    }

    #[test]
    fn the_store_stays_within_its_capacity() {
        let store = TokenStore::new(b"k".to_vec(), Duration::from_secs(60)).with_capacity(2, 2);
        let first = store.issue(Caller::login("a", "1")).unwrap();
        store.issue(Caller::login("b", "2")).unwrap();
        store.issue(Caller::login("c", "3")).unwrap();
        assert_eq!(store.len(), 2);
        // Equal expiries: any one of the three may have been dropped; a
        // dropped token still proves its user, but holds no password here.
        let caller = store.verify(&first).unwrap();
        assert_eq!(caller.user(), Some("a"));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_token_of_another_server_with_the_key_proves_the_user_but_logs_in_nowhere() {
        let issuer = TokenStore::new(b"shared".to_vec(), Duration::from_secs(60));
        let t = issuer.issue(Caller::login("alice", "pw")).unwrap();
        let here = TokenStore::new(b"shared".to_vec(), Duration::from_secs(60));
        let caller = here.verify(&t).unwrap();
        assert_eq!(caller.user(), Some("alice"));
        assert!(caller.credentials().is_none());
        let e = caller.login_here().unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
        assert!(e.to_string().contains("handshake with this server"), "{e}");
        assert_eq!(Caller::server().login_here().unwrap(), None);
    }

    #[test]
    fn parses_basic_and_bearer_headers() {
        let h = format!("Basic {}", STANDARD.encode("bob:s:cret"));
        assert_eq!(parse_basic(&h).unwrap(), ("bob".into(), "s:cret".into()));
        assert!(parse_basic("Bearer x").is_err());
        assert!(parse_basic(&format!("Basic {}", STANDARD.encode(":pw"))).is_err());
        // Unpadded, as Arrow's Go client sends it.
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("bob:pw");
        assert_eq!(
            parse_basic(&format!("Basic {unpadded}")).unwrap(),
            ("bob".to_string(), "pw".to_string())
        );
        assert_eq!(parse_bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(parse_bearer(Some("bearer abc")).unwrap(), "abc");
        let e = parse_bearer(None).unwrap_err().to_string();
        assert!(e.contains("handshake first"), "{e}");
    }
}
