//! Tickets: what a `DoGet` reads, signed so that a client can neither forge
//! nor alter one.
//!
//! A ticket carries the whole [`Partition`] (the SQL and the segment), so
//! any server that shares the key can serve it and the PostgreSQL and file
//! sources keep no per-query state. It is bound to the user it was issued
//! to and expires; the signature is an HMAC-SHA256 over everything else.
//!
//! Wire form: `b"hop1" | u32 payload length (BE) | JSON payload | 32-byte MAC`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::source::Partition;

const MAGIC: &[u8; 4] = b"hop1";
const MAC_LEN: usize = 32;

/// The signed content of a ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketBody {
    /// What to read.
    pub partition: Partition,
    /// The user the ticket was issued to (`None` without authentication).
    pub user: Option<String>,
    /// Seconds since the Unix epoch after which the ticket is refused.
    pub expires_at: u64,
}

/// Signs and verifies tickets with one secret key.
#[derive(Clone)]
pub struct TicketSigner {
    key: Vec<u8>,
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
        Self {
            key: key.into(),
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

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
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

    /// Signs an explicit body (tests use it to make expired tickets).
    pub fn sign_body(&self, body: &TicketBody) -> Vec<u8> {
        let payload = serde_json::to_vec(body).expect("ticket body serializes");
        let mut out = Vec::with_capacity(8 + payload.len() + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Checks a ticket's form, signature, expiry and user; returns its body.
    pub fn verify(&self, ticket: &[u8], user: Option<&str>) -> Result<TicketBody> {
        const HINT: &str = "ask GetFlightInfo for a fresh ticket";
        if ticket.len() < 8 + MAC_LEN || &ticket[..4] != MAGIC {
            return Err(Error::BadTicket(format!(
                "not a hopper ticket ({} bytes); {HINT}",
                ticket.len()
            )));
        }
        let len = u32::from_be_bytes(ticket[4..8].try_into().expect("4 bytes")) as usize;
        if ticket.len() != 8 + len + MAC_LEN {
            return Err(Error::BadTicket(format!(
                "truncated or padded ticket; {HINT}"
            )));
        }
        let (signed, tag) = ticket.split_at(8 + len);
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| {
            Error::BadTicket(format!(
                "signature does not match (forged, altered, or issued by a server with another key); {HINT}"
            ))
        })?;
        let body: TicketBody = serde_json::from_slice(&signed[8..])
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

    fn partition() -> Partition {
        Partition {
            segment: 2,
            spec: PartitionSpec::Postgres {
                sql: "SELECT 1".into(),
            },
        }
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
