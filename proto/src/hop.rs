//! What trainers and the runner share about a state's hop from the trainer
//! that holds it to the trainer of the model's next unit (`FetchState`).

use bytes::Bytes;
use tonic::Status;

use crate::{StateChunk, StateKey, StateSource, MAX_MESSAGE};

/// Bytes per `StateChunk`: big enough that a 94 MB state is two dozen
/// messages, small enough that the receiver copies each chunk into place
/// while the next one is on the wire.
pub const CHUNK: usize = 4 << 20;

/// Status metadata key a trainer sets when a unit failed because its
/// starting state could not be had from where the runner said it is (the
/// peer unreachable, or holding no such state). The runner then fetches the
/// state itself, or goes back to the last state it holds.
pub const STATE_SOURCE_FAILED: &str = "x-hopper-state-source-failed";

/// Marks `status` with [`STATE_SOURCE_FAILED`].
pub fn mark_state_source_failed(status: &mut Status) {
    status.metadata_mut().insert(
        STATE_SOURCE_FAILED,
        tonic::metadata::MetadataValue::from_static("1"),
    );
}

/// Whether `status` carries the [`STATE_SOURCE_FAILED`] mark.
pub fn is_state_source_failed(status: &Status) -> bool {
    status.metadata().contains_key(STATE_SOURCE_FAILED)
}

/// `state` cut into [`CHUNK`]s that share its buffer, the first saying the
/// whole size.
pub fn chunks(state: Bytes) -> Vec<StateChunk> {
    let total = state.len() as u64;
    let mut out = Vec::with_capacity(state.len().div_ceil(CHUNK).max(1));
    let mut at = 0;
    loop {
        let end = (at + CHUNK).min(state.len());
        out.push(StateChunk {
            data: state.slice(at..end),
            total: if at == 0 { total } else { 0 },
        });
        at = end;
        if at == state.len() {
            return out;
        }
    }
}

/// Reads a `FetchState` stream of `key` into one buffer ([`Assembler`]).
pub async fn collect(
    stream: &mut tonic::Streaming<StateChunk>,
    key: &StateKey,
) -> Result<Bytes, Status> {
    let mut state = Assembler::new(*key);
    while let Some(chunk) = stream.message().await? {
        state.push(chunk)?;
    }
    state.finish()
}

/// A state put together from its chunks, in one buffer sized once from the
/// first chunk. A stream that announces more than a message may hold, or
/// sends other than it announced, is refused: the sender is a trainer, but
/// its bytes become a model.
pub struct Assembler {
    key: StateKey,
    total: Option<usize>,
    state: Vec<u8>,
}

impl Assembler {
    /// Nothing of `key` yet.
    pub fn new(key: StateKey) -> Self {
        Self {
            key,
            total: None,
            state: Vec::new(),
        }
    }

    fn bad(&self, what: String) -> Status {
        Status::data_loss(format!("the state of {}: {what}", self.key))
    }

    /// Adds the next chunk.
    pub fn push(&mut self, chunk: StateChunk) -> Result<(), Status> {
        let total = match self.total {
            Some(t) => t,
            None => {
                let t = usize::try_from(chunk.total)
                    .ok()
                    .filter(|&t| t <= MAX_MESSAGE)
                    .ok_or_else(|| {
                        self.bad(format!(
                            "{} bytes announced, more than a state may be ({MAX_MESSAGE})",
                            chunk.total
                        ))
                    })?;
                self.state.reserve_exact(t);
                self.total = Some(t);
                t
            }
        };
        if self.state.len() + chunk.data.len() > total {
            return Err(self.bad(format!("more than the {total} bytes announced")));
        }
        self.state.extend_from_slice(&chunk.data);
        Ok(())
    }

    /// The whole state, once every byte announced arrived.
    pub fn finish(self) -> Result<Bytes, Status> {
        match self.total {
            None => Err(self.bad("the stream was empty".into())),
            Some(t) if t != self.state.len() => {
                Err(self.bad(format!("{} of the {t} bytes announced", self.state.len())))
            }
            Some(_) => Ok(self.state.into()),
        }
    }
}

impl std::fmt::Display for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "model {} version {}", self.model, self.version)
    }
}

/// The proof it carries is a credential for the peer: never printed.
impl std::fmt::Debug for StateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSource")
            .field("key", &self.key)
            .field("peer", &self.peer)
            .field("proof", &crate::redacted(&self.proof))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sources_proof_is_never_printed() {
        let s = StateSource {
            key: Some(StateKey {
                model: 3,
                version: 9,
            }),
            peer: "http://127.0.0.1:1".into(),
            proof: "v1.1.secret.mac".into(),
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("redacted") && shown.contains("127.0.0.1"),
            "{shown}"
        );
    }

    #[test]
    fn chunks_cover_the_state_once_and_announce_its_size() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let state = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
            let cs = chunks(state.clone());
            assert_eq!(cs[0].total, len as u64);
            assert!(cs[1..].iter().all(|c| c.total == 0 && !c.data.is_empty()));
            let joined: Vec<u8> = cs.iter().flat_map(|c| c.data.iter().copied()).collect();
            assert_eq!(joined, state.to_vec(), "len {len}");
        }
    }

    fn key() -> StateKey {
        StateKey {
            model: 1,
            version: 2,
        }
    }

    #[test]
    fn chunks_put_back_together_give_the_state() {
        let state = Bytes::from(
            (0..3 * CHUNK + 5)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let mut a = Assembler::new(key());
        for c in chunks(state.clone()) {
            a.push(c).unwrap();
        }
        assert_eq!(a.finish().unwrap(), state);
        let mut a = Assembler::new(key());
        a.push(chunks(Bytes::new()).remove(0)).unwrap();
        assert!(a.finish().unwrap().is_empty(), "an empty state is a state");
    }

    #[test]
    fn a_stream_that_lies_about_its_size_is_refused() {
        let chunk = |data: &'static [u8], total| StateChunk {
            data: Bytes::from_static(data),
            total,
        };
        // More announced than any state may be: refused before allocating.
        let mut a = Assembler::new(key());
        let e = a.push(chunk(b"x", u64::MAX)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::DataLoss);
        assert!(e.message().contains("model 1 version 2"), "{}", e.message());
        let e = Assembler::new(key())
            .push(chunk(b"", MAX_MESSAGE as u64 + 1))
            .unwrap_err();
        assert!(
            e.message().contains("more than a state may be"),
            "{}",
            e.message()
        );
        // More sent than announced.
        let mut a = Assembler::new(key());
        a.push(chunk(b"abc", 4)).unwrap();
        let e = a.push(chunk(b"de", 0)).unwrap_err();
        assert!(
            e.message().contains("more than the 4 bytes"),
            "{}",
            e.message()
        );
        // Less sent than announced, or nothing at all.
        let mut a = Assembler::new(key());
        a.push(chunk(b"abc", 4)).unwrap();
        let e = a.finish().unwrap_err();
        assert!(e.message().contains("3 of the 4 bytes"), "{}", e.message());
        let e = Assembler::new(key()).finish().unwrap_err();
        assert!(e.message().contains("empty"), "{}", e.message());
    }

    #[test]
    fn the_mark_is_found_on_the_status_it_was_set_on_only() {
        let mut s = Status::unavailable("peer down");
        assert!(!is_state_source_failed(&s));
        mark_state_source_failed(&mut s);
        assert!(is_state_source_failed(&s));
    }
}
