//! Tickets: what a `DoGet` reads, sealed so that a client can neither
//! forge, alter nor read one.
//!
//! A ticket carries the whole [`Partition`] — the SQL and the segment, or
//! for Greenplum where and how to retrieve the endpoint, including the
//! endpoint's retrieve token — so that any server that shares the key can
//! serve it and the sources keep no per-query state a reader depends on.
//! It is bound to the user it was issued to and expires. The body is
//! encrypted and authenticated with ChaCha20-Poly1305 (RFC 8439) under a
//! key derived from the servers' shared key: a client learns nothing from
//! a ticket that it could misuse (a retrieve token, a host), and any change
//! makes it unreadable.
//!
//! Wire form: `b"hop2" | 12-byte random nonce | sealed JSON body (+ 16-byte tag)`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::source::Partition;

const MAGIC: &[u8; 4] = b"hop2";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The sealed content of a ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketBody {
    /// What to read.
    pub partition: Partition,
    /// The user the ticket was issued to (`None` without authentication).
    pub user: Option<String>,
    /// Seconds since the Unix epoch after which the ticket is refused.
    pub expires_at: u64,
}

/// Fewest bytes of secret a shared key may have (`--ticket-key-file`).
pub const MIN_KEY_BYTES: usize = 32;

/// How to make a key, for messages.
pub const KEYGEN_HINT: &str = "make one with `flight-server keygen PATH` (32 random bytes, \
     mode 0600) or `head -c 32 /dev/urandom > PATH`, and give every server the same file";

/// Refuses a shared key too short (or too uniform) to be a secret: an empty
/// file would be a fixed, public key that anyone could seal tickets and
/// sign tokens with. A text key (a passphrase in a file an editor wrote) is
/// measured without the whitespace around it; a binary key (`keygen`,
/// `/dev/urandom`) is measured whole, since its bytes may be anything,
/// newlines and spaces included.
pub fn check_key(key: &[u8]) -> Result<()> {
    let secret = match std::str::from_utf8(key) {
        Ok(text) => text.trim().as_bytes(),
        Err(_) => key,
    };
    if secret.len() < MIN_KEY_BYTES {
        return Err(Error::Config(format!(
            "the ticket key has {} bytes; it needs at least {MIN_KEY_BYTES} bytes of secret: \
             {KEYGEN_HINT}",
            secret.len()
        )));
    }
    if secret.iter().all(|b| *b == secret[0]) {
        return Err(Error::Config(format!(
            "the ticket key repeats one byte ({} times): that is no secret; {KEYGEN_HINT}",
            secret.len()
        )));
    }
    Ok(())
}

/// Writes a fresh random key to `path` (readable by its owner only); refuses
/// to overwrite an existing file, so a running cluster's key is never lost.
pub fn keygen(path: &std::path::Path) -> Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        Error::Config(format!(
            "cannot create {}: {e} (keygen never overwrites a key; remove the old one first if \
             you mean to rotate it)",
            path.display()
        ))
    })?;
    let key: [u8; MIN_KEY_BYTES] = rand::random();
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::Config(format!("writing {}: {e}", path.display())))
}

/// Seals and opens tickets with one secret key.
#[derive(Clone)]
pub struct TicketSigner {
    cipher: ChaCha20Poly1305,
    ttl: Duration,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TicketSigner {
    /// A signer with the given key; tickets live for `ttl`.
    pub fn new(key: impl Into<Vec<u8>>, ttl: Duration) -> Self {
        // Any length of shared secret, one 256-bit cipher key (domain-separated
        // from the Bearer tokens' HMAC key, which derives from the same secret).
        let mut digest = Sha256::new();
        digest.update(b"hopper ticket key v2\0");
        digest.update(key.into());
        let key: [u8; 32] = digest.finalize().into();
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            ttl,
        }
    }

    /// A signer with a fresh random key: tickets are valid on this process only.
    pub fn random(ttl: Duration) -> Self {
        let key: [u8; 32] = rand::random();
        Self::new(key.to_vec(), ttl)
    }

    /// How long issued tickets stay valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a ticket for `partition`, valid for the signer's ttl.
    pub fn sign(&self, partition: &Partition, user: Option<&str>) -> Vec<u8> {
        self.sign_until(partition, user, self.expiry())
    }

    /// The `expires_at` of a ticket issued now: the last second (since the
    /// Unix epoch) in which it is accepted. An endpoint that advertises it
    /// as its expiration time errs on the early side.
    pub fn expiry(&self) -> u64 {
        now_secs() + self.ttl.as_secs()
    }

    /// Issues a ticket for `partition` that expires after `expires_at`
    /// (from [`TicketSigner::expiry`], shared by a plan's endpoints).
    pub fn sign_until(
        &self,
        partition: &Partition,
        user: Option<&str>,
        expires_at: u64,
    ) -> Vec<u8> {
        let body = TicketBody {
            partition: partition.clone(),
            user: user.map(str::to_owned),
            expires_at,
        };
        self.sign_body(&body)
    }

    /// Seals an explicit body (tests use it to make expired tickets).
    pub fn sign_body(&self, body: &TicketBody) -> Vec<u8> {
        let payload = serde_json::to_vec(body).expect("ticket body serializes");
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &payload,
                    aad: MAGIC,
                },
            )
            .expect("ChaCha20-Poly1305 seals any message of a ticket's size");
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a ticket and checks its expiry and user; returns its body.
    pub fn verify(&self, ticket: &[u8], user: Option<&str>) -> Result<TicketBody> {
        const HINT: &str = "ask GetFlightInfo for a fresh ticket";
        if ticket.len() < MAGIC.len() + NONCE_LEN + TAG_LEN || &ticket[..4] != MAGIC {
            return Err(Error::BadTicket(format!(
                "not a hopper ticket ({} bytes); {HINT}",
                ticket.len()
            )));
        }
        let (nonce, sealed) = ticket[MAGIC.len()..].split_at(NONCE_LEN);
        let payload = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: MAGIC,
                },
            )
            .map_err(|_| {
                Error::BadTicket(format!(
                    "signature does not match (forged, altered, or issued by a server with another key); {HINT}"
                ))
            })?;
        let body: TicketBody = serde_json::from_slice(&payload)
            .map_err(|e| Error::BadTicket(format!("unreadable payload: {e}; {HINT}")))?;
        if body.expires_at < now_secs() {
            return Err(Error::BadTicket(format!("ticket expired; {HINT}")));
        }
        if body.user.as_deref() != user {
            return Err(Error::PermissionDenied(
                "ticket was issued to another user; request your own with GetFlightInfo".into(),
            ));
        }
        Ok(body)
    }
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
    use crate::source::PartitionSpec;

    #[test]
    fn short_empty_and_uniform_keys_are_refused_with_how_to_make_one() {
        for bad in [
            &b""[..],
            b"\n",
            b"short-key",
            &[0u8; 64],
            b"x123456789012345678901234567890\n",
        ] {
            let e = check_key(bad).unwrap_err().to_string();
            assert!(e.contains("keygen"), "{e}");
        }
        // Random keys end in whitespace bytes often (1 in 25); all are accepted.
        for end in [b'\n', b' ', b'\t', b'\r', 0x0c] {
            let mut key: [u8; 32] = rand::random();
            key[0] = 0xff; // never UTF-8, as nearly every random key
            key[31] = end;
            check_key(&key).unwrap();
        }
        check_key(b"a shared ticket key of at least 32 bytes\n").unwrap();
    }

    #[test]
    fn keygen_writes_a_private_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path).unwrap();
        let key = std::fs::read(&path).unwrap();
        check_key(&key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let e = keygen(&path).unwrap_err().to_string();
        assert!(e.contains("never overwrites"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), key);
    }

    fn partition() -> Partition {
        Partition {
            segment: 2,
            spec: PartitionSpec::Postgres {
                sql: "SELECT 1".into(),
                snapshot: None,
            },
        }
    }

    #[test]
    fn a_ticket_reveals_nothing_of_what_it_carries() {
        let s = TicketSigner::random(Duration::from_secs(60));
        let t = s.sign(&partition(), Some("alice"));
        let text = String::from_utf8_lossy(&t);
        assert!(
            !text.contains("SELECT") && !text.contains("alice"),
            "{text}"
        );
    }

    #[test]
    fn round_trips_a_partition() {
        let s = TicketSigner::random(Duration::from_secs(60));
        let t = s.sign(&partition(), Some("alice"));
        assert_eq!(s.verify(&t, Some("alice")).unwrap().partition, partition());
    }

    #[test]
    fn refuses_altered_forged_expired_and_foreign_tickets() {
        let s = TicketSigner::random(Duration::from_secs(60));
        let mut t = s.sign(&partition(), None);
        let i = t.len() / 2;
        t[i] ^= 1;
        assert!(matches!(s.verify(&t, None), Err(Error::BadTicket(_))));

        let other = TicketSigner::random(Duration::from_secs(60));
        assert!(matches!(
            s.verify(&other.sign(&partition(), None), None),
            Err(Error::BadTicket(_))
        ));

        let expired = s.sign_body(&TicketBody {
            partition: partition(),
            user: None,
            expires_at: 1,
        });
        let e = s.verify(&expired, None).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");

        let t = s.sign(&partition(), Some("alice"));
        assert!(matches!(
            s.verify(&t, Some("bob")),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            s.verify(b"garbage", None),
            Err(Error::BadTicket(_))
        ));
    }
}
