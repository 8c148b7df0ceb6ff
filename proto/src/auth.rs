//! Which runner a trainer serves: a key the runner and its trainers share,
//! and a proof of it on every call.
//!
//! # Design
//!
//! ```text
//!  runner                                                   trainer (--key-file K)
//!   every call: x-hopper-trainer-proof: v1.<ms>.<nonce>.<mac> ──► MAC matches K? (constant time)
//!      mac = HMAC-SHA256(K, "hopper trainer proof v1\0" ‖ ms ‖ "." ‖ nonce)   ms within ±30 s of its clock?
//!      nonce = 16 random bytes, ms = the runner's clock                        ms not before it started?
//!                                                                              nonce not seen in the window?
//!                                                            ◄── Unauthenticated, saying what to configure
//! ```
//!
//! A proof is made per call, without a round trip: the runner needs no
//! session with a trainer, and a trainer restarted at the same address is
//! dialed again as before. Who may call a trainer is decided when it starts
//! ([`access`]): with a key, only callers that prove it; with
//! `--tls-client-ca`, only callers with a certificate of that CA (checked by
//! TLS itself); on a loopback address, anyone on the host; anywhere else it
//! refuses to start unless told `--no-auth`. `mop train` hands each trainer
//! it spawns a fresh key of its own on the trainer's standard input (never
//! in its arguments or environment), and dials trainers started by hand
//! with the key in the file [`KEY_FILE_ENV`] names.
//!
//! # What the proof does and does not do
//! - Someone without the key cannot call a trainer: no unit, no partition
//!   opened with their endpoints, no health check.
//! - A proof seen on a plaintext link is worth little: the trainer takes
//!   each nonce once, a proof at most [`WINDOW`] old (or as far ahead, for
//!   clocks that differ), and none made before it started (its memory of
//!   nonces starts empty then). It is not bound to one trainer: within the
//!   window, an eavesdropper can present a proof it saw once to *another*
//!   trainer with the same key that has not seen it yet (give trainers keys
//!   of their own, or use TLS, where nothing is seen).
//! - The proof authenticates who calls, not what the call carries: over
//!   plaintext the unit's contents — model states, tickets, the Bearer
//!   tokens the runner hands on — are visible, and a man in the middle can
//!   alter a call it intercepts. Serve trainers on other hosts with
//!   `--tls-cert` (and the runner's certificates with `--tls-client-ca`)
//!   for confidentiality and integrity.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// Environment: the key file `mop train` proves itself with to trainers
/// listed in `[train] addresses` (the file their `--key-file` names); a
/// trainer reads it too when `--key-file` is not given.
pub const KEY_FILE_ENV: &str = "HOPPER_TRAINER_KEY_FILE";

/// gRPC metadata key of the proof every call carries.
pub const PROOF_HEADER: &str = "x-hopper-trainer-proof";

/// The shortest key a trainer accepts.
pub const MIN_KEY_BYTES: usize = 32;

/// How old (or how far ahead of the trainer's clock) a proof may be.
pub const WINDOW: Duration = Duration::from_secs(30);

/// How a key is made, for messages.
const MAKE_KEY: &str = "head -c 32 /dev/urandom > trainer.key";

/// Nonces a trainer remembers at most within one window; past it, calls
/// are refused until the window moves on.
const MAX_NONCES: usize = 1 << 16;

const VERSION: &str = "v1";
const DOMAIN: &[u8] = b"hopper trainer proof v1\0";

/// The secret a runner and its trainers share. `Debug` hides it.
#[derive(Clone)]
pub struct TrainerKey(Arc<[u8]>);

impl std::fmt::Debug for TrainerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrainerKey(<{} bytes>)", self.0.len())
    }
}

impl TrainerKey {
    /// A key of at least [`MIN_KEY_BYTES`] bytes; `what` names where it
    /// came from in the refusal.
    pub fn new(bytes: Vec<u8>, what: &str) -> Result<Self> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(Error::Config(format!(
                "{what} holds {} bytes; a trainer key needs at least {MIN_KEY_BYTES} \
                 (make one with `{MAKE_KEY}`)",
                bytes.len()
            )));
        }
        Ok(Self(bytes.into()))
    }

    /// A fresh random key ([`MIN_KEY_BYTES`] bytes), for a trainer the
    /// runner spawns.
    pub fn generate() -> Self {
        let bytes: [u8; MIN_KEY_BYTES] = rand::random();
        Self(bytes.to_vec().into())
    }

    /// The key in the file at `path`: its bytes as they are.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "reading the trainer key file {}: {e} (make one with `{MAKE_KEY}`)",
                path.display()
            ))
        })?;
        Self::new(bytes, &format!("the trainer key file {}", path.display()))
    }

    /// The key in the file [`KEY_FILE_ENV`] names, if it is set.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var_os(KEY_FILE_ENV).filter(|p| !p.is_empty()) {
            Some(path) => Self::from_file(Path::new(&path))
                .map(Some)
                .map_err(|Error::Config(m)| Error::Config(format!("{KEY_FILE_ENV}: {m}"))),
            None => Ok(None),
        }
    }

    /// The key as one line of hex: how the runner hands it to a trainer it
    /// spawns (on the trainer's standard input).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The key of a line written by [`TrainerKey::to_hex`].
    pub fn from_hex(line: &str) -> Result<Self> {
        let bytes = unhex(line.trim())
            .ok_or_else(|| Error::Config("the trainer key on standard input is not hex".into()))?;
        Self::new(bytes, "the trainer key on standard input")
    }

    /// A proof for one call, made now with a fresh nonce.
    pub fn proof(&self) -> String {
        self.proof_at(now_millis(), rand::random())
    }

    /// The proof of a call made at `millis` (since the Unix epoch) with
    /// `nonce`; [`TrainerKey::proof`] is what callers want.
    pub fn proof_at(&self, millis: u64, nonce: [u8; 16]) -> String {
        let nonce = hex(&nonce);
        let tag = self.mac(millis, &nonce).finalize().into_bytes();
        format!("{VERSION}.{millis}.{nonce}.{}", hex(&tag))
    }

    fn mac(&self, millis: u64, nonce: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(format!("{millis}.{nonce}").as_bytes());
        mac
    }
}

/// Who may call a trainer, decided when it starts.
#[derive(Clone, Debug)]
pub enum Access {
    /// Callers that prove the key.
    Key(TrainerKey),
    /// Callers that present a certificate of `--tls-client-ca` (TLS checks it).
    ClientCertificates,
    /// Anyone on this host: the trainer listens on a loopback address.
    Loopback,
    /// Anyone who can reach it (`--no-auth`).
    Anyone,
}

impl Access {
    /// Who that is, in words (`mop trainer` prints it).
    pub fn describe(&self) -> &'static str {
        match self {
            Access::Key(_) => "runners that prove its key",
            Access::ClientCertificates => "runners with a certificate of --tls-client-ca",
            Access::Loopback => "anyone on this host (a loopback address)",
            Access::Anyone => "anyone who can reach it (--no-auth)",
        }
    }
}

/// Who may call a trainer listening on `addr`, given its key, whether it
/// requires client certificates, and `--no-auth`. Refuses a trainer that
/// anyone on the network could use without having been told so.
pub fn access(
    addr: SocketAddr,
    key: Option<TrainerKey>,
    client_certificates: bool,
    no_auth: bool,
) -> Result<Access> {
    match key {
        Some(_) if no_auth => Err(Error::Config(
            "--no-auth contradicts the trainer key (--key-file, or HOPPER_TRAINER_KEY_FILE \
             in the environment): give one or the other"
                .into(),
        )),
        Some(key) => Ok(Access::Key(key)),
        None if client_certificates => Ok(Access::ClientCertificates),
        None if no_auth => Ok(Access::Anyone),
        None if addr.ip().is_loopback() => Ok(Access::Loopback),
        None => Err(Error::Config(format!(
            "a trainer on {addr} would train for anyone who can reach it; give it a key \
             (`{MAKE_KEY}`, then `mop trainer --key-file trainer.key`, and \
             {KEY_FILE_ENV}=trainer.key for mop train), or require the runner's certificate \
             (--tls-client-ca), or bind a loopback address; --no-auth serves anyone"
        ))),
    }
}

/// The runner's side: puts a fresh proof on every call (nothing without a key).
#[derive(Clone, Debug, Default)]
pub struct Prover(Option<TrainerKey>);

impl Prover {
    /// Proves `key` on every call, or nothing.
    pub fn new(key: Option<TrainerKey>) -> Self {
        Self(key)
    }
}

impl tonic::service::Interceptor for Prover {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(key) = &self.0 {
            let proof: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = key
                .proof()
                .parse()
                .map_err(|_| Status::internal("a trainer proof is ASCII"))?;
            request.metadata_mut().insert(PROOF_HEADER, proof);
        }
        Ok(request)
    }
}

/// The trainer's side: refuses calls without a valid, fresh, unused proof
/// (lets every call through when it has no key).
#[derive(Clone, Debug)]
pub struct Guard(Option<Arc<Verifier>>);

impl Guard {
    /// The guard of a trainer with `access`, starting now: it takes no
    /// proof made before.
    pub fn new(access: &Access) -> Self {
        match access {
            Access::Key(key) => Self(Some(Arc::new(Verifier::new(key.clone(), now_millis())))),
            _ => Self(None),
        }
    }
}

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            let proof = request
                .metadata()
                .get(PROOF_HEADER)
                .map(|p| p.to_str().unwrap_or(""));
            v.check(proof, now_millis())?;
        }
        Ok(request)
    }
}

/// Checks proofs against one key and remembers the nonces it took.
#[derive(Debug)]
pub struct Verifier {
    key: TrainerKey,
    started: u64,
    /// Nonce → when it may be forgotten (ms): its proof is stale by then.
    seen: Mutex<HashMap<String, u64>>,
}

impl Verifier {
    /// A verifier of `key` in a trainer that started at `started` (ms).
    pub fn new(key: TrainerKey, started: u64) -> Self {
        Self {
            key,
            started,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts `proof` at `now` (ms) once, or says why not.
    pub fn check(&self, proof: Option<&str>, now: u64) -> std::result::Result<(), Status> {
        const HOW: &str = "give mop train this trainer's key: set HOPPER_TRAINER_KEY_FILE \
                           to the file its --key-file names";
        let refuse = |why: String| Err(Status::unauthenticated(format!("{why}; {HOW}")));
        let Some(proof) = proof else {
            return refuse(format!(
                "this trainer serves only its runner, and the call carried no proof \
                 ({PROOF_HEADER})"
            ));
        };
        let mut parts = proof.split('.');
        let (Some(VERSION), Some(millis), Some(nonce), Some(tag), None) = (
            parts.next(),
            parts.next().and_then(|m| m.parse::<u64>().ok()),
            parts.next().filter(|n| n.len() == 32),
            parts.next().and_then(unhex),
            parts.next(),
        ) else {
            return refuse(format!("the call's proof ({PROOF_HEADER}) is malformed"));
        };
        if self.key.mac(millis, nonce).verify_slice(&tag).is_err() {
            return refuse("the call's proof was made with another key than this trainer's".into());
        }
        let window = WINDOW.as_millis() as u64;
        if millis + window < now {
            return refuse(format!(
                "the call's proof is {:.0} s old, and a trainer takes proofs up to {} s old \
                 (a replayed call, or clocks that differ: synchronize the runner's and \
                 the trainer's)",
                (now - millis) as f64 / 1000.0,
                WINDOW.as_secs()
            ));
        }
        if millis > now + window {
            return refuse(format!(
                "the call's proof is dated {:.0} s ahead of this trainer's clock \
                 (synchronize the runner's and the trainer's clocks)",
                (millis - now) as f64 / 1000.0
            ));
        }
        if millis < self.started {
            return refuse(
                "the call's proof was made before this trainer started (a replayed call, \
                 or a runner whose clock is behind the trainer's)"
                    .into(),
            );
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= 1024 {
            seen.retain(|_, forget| *forget >= now);
        }
        if seen.contains_key(nonce) {
            return refuse("the call's proof was used before (a replayed call)".into());
        }
        if seen.len() >= MAX_NONCES {
            return Err(Status::unavailable(format!(
                "this trainer took {MAX_NONCES} calls within {} s; call again shortly",
                WINDOW.as_secs()
            )));
        }
        seen.insert(nonce.to_string(), millis + window);
        Ok(())
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> TrainerKey {
        TrainerKey::new(vec![b; 32], "test").unwrap()
    }

    const T0: u64 = 1_700_000_000_000;

    fn refused(r: std::result::Result<(), Status>, words: &str) {
        let s = r.expect_err("refused");
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        assert!(s.message().contains(words), "{}", s.message());
        assert!(s.message().contains(KEY_FILE_ENV), "{}", s.message());
    }

    #[test]
    fn a_fresh_proof_of_the_key_is_taken_once() {
        let v = Verifier::new(key(1), T0);
        let p = key(1).proof_at(T0 + 5, [7; 16]);
        v.check(Some(&p), T0 + 10).unwrap();
        refused(v.check(Some(&p), T0 + 20), "used before");
        // Another nonce at the same moment is another call.
        v.check(Some(&key(1).proof_at(T0 + 5, [8; 16])), T0 + 20)
            .unwrap();
    }

    #[test]
    fn missing_malformed_and_foreign_proofs_are_refused_saying_what_to_configure() {
        let v = Verifier::new(key(1), T0);
        refused(v.check(None, T0), "no proof");
        refused(v.check(Some("v1.12.zz"), T0), "malformed");
        refused(v.check(Some(""), T0), "malformed");
        refused(
            v.check(Some(&key(2).proof_at(T0 + 1, [1; 16])), T0 + 2),
            "another key",
        );
        // A proof altered in its time or nonce no longer matches its MAC.
        let p = key(1).proof_at(T0 + 1, [1; 16]);
        let later = p.replacen(&format!(".{}.", T0 + 1), &format!(".{}.", T0 + 2), 1);
        refused(v.check(Some(&later), T0 + 3), "another key");
    }

    #[test]
    fn stale_future_and_pre_start_proofs_are_refused() {
        let v = Verifier::new(key(1), T0);
        let window = WINDOW.as_millis() as u64;
        let p = key(1).proof_at(T0 + 1, [3; 16]);
        refused(v.check(Some(&p), T0 + 1 + window + 1), "s old");
        let ahead = key(1).proof_at(T0 + 2 * window, [4; 16]);
        refused(v.check(Some(&ahead), T0 + 1), "ahead");
        let before = key(1).proof_at(T0 - 1, [5; 16]);
        refused(
            v.check(Some(&before), T0 + 1),
            "before this trainer started",
        );
        // Within the window either way is fine (clocks differ a little).
        let skewed = key(1).proof_at(T0 + 1000 + window / 2, [6; 16]);
        v.check(Some(&skewed), T0 + 1000).unwrap();
    }

    #[test]
    fn nonces_are_forgotten_once_their_proofs_are_stale() {
        let v = Verifier::new(key(1), T0);
        let window = WINDOW.as_millis() as u64;
        for i in 0..2000u64 {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&i.to_le_bytes());
            v.check(Some(&key(1).proof_at(T0 + i, nonce)), T0 + i)
                .unwrap();
        }
        let later = T0 + 3000 + window;
        v.check(Some(&key(1).proof_at(later, [9; 16])), later)
            .unwrap();
        assert!(v.seen.lock().unwrap().len() < 1100);
    }

    #[test]
    fn short_keys_are_refused_with_how_to_make_one() {
        let e = TrainerKey::new(vec![0; 16], "the trainer key file k").unwrap_err();
        assert!(e.to_string().contains("16 bytes"), "{e}");
        assert!(e.to_string().contains("head -c 32 /dev/urandom"), "{e}");
        let k = TrainerKey::generate();
        let again = TrainerKey::from_hex(&format!("{}\n", k.to_hex())).unwrap();
        assert_eq!(again.0, k.0);
        assert!(TrainerKey::from_hex("zz").is_err());
        assert!(!format!("{k:?}").contains(&k.to_hex()[..8]));
    }

    #[test]
    fn only_loopback_trainers_may_start_without_a_key_or_client_certificates() {
        let lo: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let lo6: SocketAddr = "[::1]:7000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        let lan: SocketAddr = "10.0.0.5:7000".parse().unwrap();
        assert!(matches!(
            access(lo, None, false, false),
            Ok(Access::Loopback)
        ));
        assert!(matches!(
            access(lo6, None, false, false),
            Ok(Access::Loopback)
        ));
        for addr in [any, lan] {
            let e = access(addr, None, false, false).unwrap_err().to_string();
            assert!(
                e.contains("--key-file") && e.contains("--tls-client-ca") && e.contains(MAKE_KEY),
                "{e}"
            );
            assert!(matches!(
                access(addr, Some(key(1)), false, false),
                Ok(Access::Key(_))
            ));
            assert!(matches!(
                access(addr, None, true, false),
                Ok(Access::ClientCertificates)
            ));
            assert!(matches!(
                access(addr, None, false, true),
                Ok(Access::Anyone)
            ));
        }
        assert!(access(lan, Some(key(1)), false, true).is_err());
    }
}
