//! States this trainer keeps for the models' next units, and how it gets a
//! unit's starting state from the trainer that keeps it.
//!
//! # Design
//!
//! ```text
//!  runner: TrainUnit(m, hold, version v) ──► trainer A: trains, keeps (m, v)
//!  runner: TrainUnit(m, from {(m, v), A, proof for A}) ──► trainer B
//!          B ── FetchState(m, v) + proof ──► A      (chunks, straight into one buffer)
//!  runner: ReleaseStates((m, v)) ──► A              once (m, v + 1) is done
//! ```
//!
//! The runner's link carries directives and scores; a state crosses the
//! network once per hop, and B fetches it while it still trains the unit
//! before (the runner hands units out ahead of time). A keeps (m, v) until
//! the runner releases it, so a unit that fails on B runs again from the
//! same state. A trainer keeps one version per model: a newer one replaces
//! it, since the model has moved past it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hopper_proto::auth::PROOF_HEADER;
use hopper_proto::hop::{collect, mark_state_source_failed};
use hopper_proto::trainer_client::TrainerClient;
use hopper_proto::{FetchStateRequest, StateKey, StateSource};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use hopper_proto::{CONNECTION_WINDOW, MAX_MESSAGE, STREAM_WINDOW};

/// The states a trainer keeps, by model: at most one version each.
#[derive(Clone, Default)]
pub struct HeldStates {
    states: Arc<Mutex<HashMap<u32, (u64, Bytes)>>>,
    /// Channels to the peers this trainer fetched from, by address.
    peers: Arc<tokio::sync::Mutex<HashMap<String, Channel>>>,
}

impl HeldStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (u64, Bytes)>> {
        // A panic while holding this map cannot leave it half-updated.
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `state` as model `model`'s at `version`, replacing an older one.
    pub fn keep(&self, model: u32, version: u64, state: Bytes) {
        let mut states = self.lock();
        match states.get(&model) {
            Some((held, _)) if *held > version => {}
            _ => {
                states.insert(model, (version, state));
            }
        }
    }

    /// The state of `key`, if this trainer keeps it.
    pub fn get(&self, key: &StateKey) -> Option<Bytes> {
        self.lock()
            .get(&key.model)
            .filter(|(v, _)| *v == key.version)
            .map(|(_, s)| s.clone())
    }

    /// Forgets the states of `keys` (an older or newer version stays).
    pub fn release(&self, keys: &[StateKey]) {
        let mut states = self.lock();
        for k in keys {
            if states.get(&k.model).is_some_and(|(v, _)| *v == k.version) {
                states.remove(&k.model);
            }
        }
    }

    /// How many states this trainer keeps, and their bytes.
    pub fn footprint(&self) -> (usize, usize) {
        let states = self.lock();
        (states.len(), states.values().map(|(_, s)| s.len()).sum())
    }

    /// A unit's starting state from `source`: kept here, or fetched from
    /// the peer that keeps it. A failure is marked
    /// [`STATE_SOURCE_FAILED`](hopper_proto::hop::STATE_SOURCE_FAILED), so
    /// the runner knows the unit failed for its state, not its data.
    pub async fn obtain(&self, source: StateSource) -> Result<Bytes, Status> {
        let key = source
            .key
            .ok_or_else(|| Status::invalid_argument("the unit's state source names no state"))?;
        let got = match source.peer.is_empty() {
            true => self.get(&key).ok_or_else(|| {
                Status::not_found(format!(
                    "this trainer keeps no state of {key} (it was restarted, or released it)"
                ))
            }),
            false => self.fetch(&source.peer, &source.proof, &key).await,
        };
        got.map_err(|mut s| {
            mark_state_source_failed(&mut s);
            s
        })
    }

    async fn fetch(&self, peer: &str, proof: &str, key: &StateKey) -> Result<Bytes, Status> {
        let from =
            |what: String| format!("fetching the state of {key} from trainer {peer}: {what}");
        let channel = self
            .channel(peer)
            .await
            .map_err(|m| Status::unavailable(from(m)))?;
        let mut client = TrainerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut request = tonic::Request::new(FetchStateRequest { key: Some(*key) });
        if !proof.is_empty() {
            let value = proof
                .parse()
                .map_err(|_| Status::invalid_argument("the peer's proof is not a header value"))?;
            request.metadata_mut().insert(PROOF_HEADER, value);
        }
        let answer = async {
            let mut stream = client.fetch_state(request).await?.into_inner();
            collect(&mut stream, key).await
        };
        answer.await.map_err(|s| {
            let message = from(s.message().to_string());
            Status::new(s.code(), message)
        })
    }

    async fn channel(&self, peer: &str) -> Result<Channel, String> {
        let mut peers = self.peers.lock().await;
        if let Some(c) = peers.get(peer) {
            return Ok(c.clone());
        }
        let mut endpoint = Endpoint::from_shared(peer.to_string())
            .map_err(|e| format!("bad address: {e}"))?
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .connect_timeout(std::time::Duration::from_secs(10));
        if peer.starts_with("https://") {
            let tls = flight_client::connect::tls_config(peer).map_err(|e| e.to_string())?;
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS settings: {e}"))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        peers.insert(peer.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: u32, version: u64) -> StateKey {
        StateKey { model, version }
    }

    #[test]
    fn a_newer_version_replaces_the_older_and_release_takes_only_its_own() {
        let held = HeldStates::default();
        held.keep(1, 5, Bytes::from_static(b"five"));
        held.keep(1, 7, Bytes::from_static(b"seven"));
        held.keep(1, 6, Bytes::from_static(b"six")); // late: the model is past it
        assert_eq!(held.get(&key(1, 5)), None);
        assert_eq!(held.get(&key(1, 6)), None);
        assert_eq!(held.get(&key(1, 7)).as_deref(), Some(&b"seven"[..]));
        held.keep(2, 1, Bytes::from_static(b"two"));
        held.release(&[key(1, 5), key(2, 1)]);
        assert_eq!(held.footprint(), (1, 5));
        held.release(&[key(1, 7)]);
        assert_eq!(held.footprint(), (0, 0));
    }

    #[tokio::test]
    async fn a_state_not_kept_here_is_refused_with_the_mark() {
        let held = HeldStates::default();
        let source = StateSource {
            key: Some(key(3, 4)),
            peer: String::new(),
            proof: String::new(),
        };
        let s = held.obtain(source).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert!(hopper_proto::hop::is_state_source_failed(&s));
        assert!(s.message().contains("model 3 version 4"), "{}", s.message());
    }
}
