//! Where each model's state is between its units, and the copy of it the
//! runner holds.
//!
//! # Design
//! A unit's trainer keeps the state the unit ends with (`hold`), and the
//! trainer of the model's next unit fetches it from there (`from`, see
//! mop-trainer's `held_states`): a state crosses the network once per hop,
//! and the runner's link carries directives and scores. The runner takes a
//! copy of a state only where it needs one ([`Checkpoints`]): at the end of
//! each of the model's epochs — validation, `keep = "best"`, the model's
//! file and the checkpoint all use that state — or after every unit.
//!
//! A model's state since its copy lives only on the trainer that trained
//! its last unit. If that trainer dies, the runner sends the model back to
//! its copy ([`StateBook::rewind`]): under the reproducible policy the lost
//! units run again in the same order from the same state, to the same
//! weights. If a trainer cannot reach another (a network that lets the
//! runner reach every trainer, but not trainers each other), the runner
//! fetches the state itself and from then on states go through it, as
//! they do when direct hops are off.

use bytes::Bytes;
use hopper_proto::{StateKey, StateSource};
use mop_core::run_config::Checkpoints;

/// Where a model's latest state is.
#[derive(Clone, Debug)]
enum Latest {
    /// No unit trained yet: the trainer initializes the model from its seed.
    Fresh,
    /// The runner holds it.
    Here(Bytes),
    /// Trainer `worker`, at `address` then, keeps it under `version`.
    Kept {
        worker: usize,
        address: String,
        version: u64,
    },
}

/// The state the runner holds of a model, and the units it had done then.
#[derive(Clone, Debug, Default)]
pub struct StateCopy {
    /// `None`: the fresh model.
    pub state: Option<Bytes>,
    /// How many units the model had done.
    pub units: u64,
}

/// What one unit's request says about states.
pub struct Directive {
    /// The starting state, when the runner sends it.
    pub state: Bytes,
    /// Where the trainer gets it otherwise.
    pub from: Option<StateSource>,
    /// What becomes of the state the unit ends with.
    pub hop: Hop,
}

/// What becomes of the state a unit ends with.
#[derive(Clone, Copy, Debug)]
pub struct Hop {
    /// The trainer keeps it for the model's next unit.
    pub hold: bool,
    /// The version it is kept under.
    pub version: u64,
    /// It becomes the runner's copy.
    pub copy: bool,
}

impl Hop {
    /// Whether the unit's result carries the state.
    pub fn return_state(&self) -> bool {
        self.copy || !self.hold
    }
}

/// How model states moved in a run, as the runner directed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Units whose state a trainer fetched from another trainer.
    pub direct: u64,
    /// Units whose state their trainer kept itself from the unit before.
    pub same_trainer: u64,
    /// Units the runner sent a state with.
    pub sent: u64,
    /// The bytes of those states.
    pub sent_bytes: u64,
    /// States that came back to the runner: its copies, and every state
    /// once they go through it.
    pub returned: u64,
    /// The bytes of those states.
    pub returned_bytes: u64,
}

/// Every model's state: where the latest is, and the runner's copy.
pub struct StateBook {
    latest: Vec<Latest>,
    copies: Vec<StateCopy>,
    next_version: u64,
    direct: bool,
    checkpoints: Checkpoints,
    traffic: Traffic,
}

impl StateBook {
    /// The states of a run that starts from `copies` (fresh, or resumed
    /// from a checkpoint). States hop trainer to trainer until a trainer
    /// cannot reach another ([`through_runner`](Self::through_runner)).
    pub fn new(copies: Vec<StateCopy>, checkpoints: Checkpoints) -> Self {
        let latest = copies
            .iter()
            .map(|c| match &c.state {
                Some(s) => Latest::Here(s.clone()),
                None => Latest::Fresh,
            })
            .collect();
        // Versions unique to this run: a trainer started by hand may still
        // keep states of an earlier run of the same models.
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            latest,
            copies,
            next_version: base,
            direct: true,
            checkpoints,
            traffic: Traffic::default(),
        }
    }

    /// How states moved so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Whether states hop from trainer to trainer.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// The request fields of model `model`'s next unit on trainer `worker`
    /// (`addresses` now), `ends_epoch` if the unit is the model's last of
    /// its epoch; `proof(w)` makes a proof for trainer `w`'s key.
    pub fn directive(
        &mut self,
        model: usize,
        worker: usize,
        ends_epoch: bool,
        proof: impl Fn(usize) -> String,
    ) -> Directive {
        self.next_version += 1;
        let (state, from) = match &self.latest[model] {
            Latest::Fresh => (Bytes::new(), None),
            Latest::Here(s) => (s.clone(), None),
            Latest::Kept {
                worker: holder,
                address,
                version,
            } => {
                let key = StateKey {
                    model: model as u32,
                    version: *version,
                };
                let (peer, proof) = match *holder == worker {
                    true => (String::new(), String::new()),
                    false => (address.clone(), proof(*holder)),
                };
                let from = StateSource {
                    key: Some(key),
                    peer,
                    proof,
                };
                (Bytes::new(), Some(from))
            }
        };
        let t = &mut self.traffic;
        match &from {
            Some(f) if f.peer.is_empty() => t.same_trainer += 1,
            Some(_) => t.direct += 1,
            None if !state.is_empty() => {
                t.sent += 1;
                t.sent_bytes += state.len() as u64;
            }
            None => {}
        }
        Directive {
            state,
            from,
            hop: Hop {
                hold: self.direct,
                version: self.next_version,
                copy: ends_epoch || self.checkpoints == Checkpoints::Unit,
            },
        }
    }

    /// Model `model`'s unit on trainer `worker` (at `address`) ended as
    /// `hop` said, with `returned` the state its result carried; the model
    /// has done `units` units now. Returns the state the runner may tell
    /// its holder to forget, now that the model has moved past it.
    pub fn unit_done(
        &mut self,
        model: usize,
        worker: usize,
        address: &str,
        hop: Hop,
        returned: Bytes,
        units: u64,
    ) -> Option<(usize, StateKey)> {
        if !returned.is_empty() {
            self.traffic.returned += 1;
            self.traffic.returned_bytes += returned.len() as u64;
        }
        let superseded = self.kept_on(model);
        self.latest[model] = match hop.hold {
            true => Latest::Kept {
                worker,
                address: address.to_string(),
                version: hop.version,
            },
            false => Latest::Here(returned.clone()),
        };
        if hop.copy {
            self.copies[model] = StateCopy {
                state: Some(returned),
                units,
            };
        }
        // A holder that kept this unit's state replaced its older version.
        superseded.filter(|(w, _)| *w != worker || !hop.hold)
    }

    /// The runner's copy of model `model`'s state.
    pub fn copy(&self, model: usize) -> &StateCopy {
        &self.copies[model]
    }

    /// Every model's copy.
    pub fn copies(&self) -> &[StateCopy] {
        &self.copies
    }

    /// The trainer that keeps model `model`'s latest state, and its key.
    pub fn kept_on(&self, model: usize) -> Option<(usize, StateKey)> {
        match &self.latest[model] {
            Latest::Kept {
                worker, version, ..
            } => Some((
                *worker,
                StateKey {
                    model: model as u32,
                    version: *version,
                },
            )),
            _ => None,
        }
    }

    /// Whether model `model`'s latest state is kept by a trainer that was
    /// at another address than it is now (`addresses`): a process that has
    /// since been replaced.
    pub fn lost(&self, model: usize, addresses: &[String]) -> bool {
        matches!(&self.latest[model], Latest::Kept { worker, address, .. }
            if addresses.get(*worker) != Some(address))
    }

    /// Model `model`'s latest state is the runner's copy again (its holder
    /// lost it); the units since run again.
    pub fn rewind(&mut self, model: usize) {
        self.latest[model] = match &self.copies[model].state {
            Some(s) => Latest::Here(s.clone()),
            None => Latest::Fresh,
        };
    }

    /// The runner fetched model `model`'s latest state from its holder
    /// because another trainer could not: from now on states go through
    /// the runner. Returns whether hops were direct until now.
    pub fn through_runner(&mut self, model: usize, state: Bytes) -> bool {
        self.latest[model] = Latest::Here(state);
        std::mem::replace(&mut self.direct, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "http://127.0.0.1:1";
    const B: &str = "http://127.0.0.1:2";

    fn proof(w: usize) -> String {
        format!("proof-for-{w}")
    }

    fn fresh(models: usize, checkpoints: Checkpoints) -> StateBook {
        StateBook::new(vec![StateCopy::default(); models], checkpoints)
    }

    #[test]
    fn a_state_hops_from_the_trainer_that_keeps_it_and_the_runner_copies_epoch_ends() {
        let mut book = fresh(1, Checkpoints::Epoch);
        // Unit 1 on trainer 0: a fresh model, its state kept there.
        let d = book.directive(0, 0, false, proof);
        assert!(d.state.is_empty() && d.from.is_none());
        assert!(d.hop.hold && !d.hop.copy && !d.hop.return_state());
        let v1 = d.hop.version;
        assert_eq!(book.unit_done(0, 0, A, d.hop, Bytes::new(), 1), None);
        assert_eq!(book.kept_on(0).map(|(w, k)| (w, k.version)), Some((0, v1)));
        // Unit 2 on trainer 1 fetches it from trainer 0 with a proof for 0,
        // and ends the epoch: the runner asks for a copy.
        let d = book.directive(0, 1, true, proof);
        let from = d.from.clone().unwrap();
        assert_eq!(
            (from.peer.as_str(), from.proof.as_str()),
            (A, "proof-for-0")
        );
        assert_eq!(from.key.unwrap().version, v1);
        assert!(d.hop.copy && d.hop.return_state() && d.hop.version > v1);
        let released = book.unit_done(0, 1, B, d.hop, Bytes::from_static(b"e1"), 2);
        assert_eq!(released.map(|(w, k)| (w, k.version)), Some((0, v1)));
        assert_eq!(book.copy(0).units, 2);
        assert_eq!(book.copy(0).state.as_deref(), Some(&b"e1"[..]));
        // Unit 3 on the same trainer takes the state it keeps itself.
        let d = book.directive(0, 1, false, proof);
        let from = d.from.clone().unwrap();
        assert!(from.peer.is_empty() && from.proof.is_empty());
        assert_eq!(book.unit_done(0, 1, B, d.hop, Bytes::new(), 3), None);
        assert_eq!(book.copy(0).units, 2, "mid-epoch: no copy");
        let t = book.traffic();
        assert_eq!((t.direct, t.same_trainer, t.sent, t.returned), (1, 1, 0, 1));
        assert_eq!(t.returned_bytes, 2);
    }

    #[test]
    fn per_unit_checkpoints_copy_every_state() {
        let mut book = fresh(1, Checkpoints::Unit);
        for units in 1..=3 {
            let d = book.directive(0, units as usize % 2, false, proof);
            assert!(d.hop.copy && d.hop.return_state());
            book.unit_done(
                0,
                units as usize % 2,
                A,
                d.hop,
                Bytes::from(vec![units as u8]),
                units,
            );
            assert_eq!(book.copy(0).units, units);
        }
    }

    #[test]
    fn a_state_lost_with_its_trainer_goes_back_to_the_runners_copy() {
        let mut book = fresh(2, Checkpoints::Epoch);
        let d = book.directive(0, 0, true, proof);
        book.unit_done(0, 0, A, d.hop, Bytes::from_static(b"epoch"), 1);
        let d = book.directive(0, 0, false, proof);
        book.unit_done(0, 0, A, d.hop, Bytes::new(), 2);
        let d = book.directive(1, 1, false, proof);
        book.unit_done(1, 1, B, d.hop, Bytes::new(), 1);
        // Trainer 0 was replaced: a new process at another address.
        let now = vec!["http://127.0.0.1:3".to_string(), B.to_string()];
        assert!(book.lost(0, &now));
        assert!(!book.lost(1, &now), "trainer 1 is the same process");
        book.rewind(0);
        assert_eq!(book.kept_on(0), None);
        let d = book.directive(0, 1, false, proof);
        assert_eq!(&d.state[..], b"epoch");
        assert!(d.from.is_none());
        // A model with no copy yet starts fresh again.
        book.rewind(1);
        let d = book.directive(1, 1, false, proof);
        assert!(d.state.is_empty() && d.from.is_none());
    }

    #[test]
    fn once_a_trainer_cannot_reach_another_states_go_through_the_runner() {
        let mut book = fresh(1, Checkpoints::Epoch);
        let d = book.directive(0, 0, false, proof);
        book.unit_done(0, 0, A, d.hop, Bytes::new(), 1);
        assert!(book.through_runner(0, Bytes::from_static(b"s1")));
        assert!(!book.direct());
        let d = book.directive(0, 1, false, proof);
        assert_eq!(&d.state[..], b"s1");
        assert!(d.from.is_none());
        assert!(!d.hop.hold && !d.hop.copy && d.hop.return_state());
        book.unit_done(0, 1, B, d.hop, Bytes::from_static(b"s2"), 2);
        assert_eq!(book.copy(0).units, 0, "mid-epoch: the copy stays");
        let d = book.directive(0, 0, false, proof);
        assert_eq!(&d.state[..], b"s2");
        assert!(
            !book.through_runner(0, Bytes::new()),
            "already through the runner"
        );
    }
}
