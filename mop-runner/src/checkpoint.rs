//! Writes what a checkpoint holds ([`Snapshot`]) to the run directory, off
//! the control loop: the states it names that are not on disk yet, then the
//! checkpoint itself, atomically (a kill leaves the one before).

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use mop_core::run_dir::checkpoint::{
    write_atomic, BestRecord, Checkpoint, CheckpointDir, EvalRecord, CHECKPOINT_FORMAT,
};

use crate::error::Result;
use crate::run_state::Snapshot;

/// The files a checkpoint's states are in, by the buffer they were written
/// from ([`Files::of`]).
#[derive(Default)]
pub struct Files(HashMap<(usize, usize), String>, PathBuf);

impl Files {
    /// The file holding `bytes`, if the checkpoint wrote them from that
    /// very buffer. A buffer the checkpoint held is alive as long as its
    /// holder keeps it, so no other buffer can be at its address: a state
    /// the runner still holds found here is in that file.
    pub fn of(&self, bytes: &Bytes) -> Option<PathBuf> {
        self.0.get(&key(bytes)).map(|name| self.1.join(name))
    }
}

/// Writes `snapshot`, taken `elapsed` seconds into the run whose
/// configuration has `fingerprint`, to `ckdir`; returns where its states
/// are.
pub fn write(
    snapshot: Snapshot,
    elapsed: f64,
    fingerprint: String,
    ckdir: &CheckpointDir,
) -> Result<Files> {
    let Snapshot {
        sched,
        copies,
        trained,
        evals,
        best,
        reads,
    } = snapshot;
    let units_done = trained.units_done;
    // A validation pass in flight, or a kept best epoch, usually holds the
    // very state the runner's copy is (an epoch's end): its record names
    // that file rather than writing the same bytes again.
    let mut written = Written::default();
    let mut names = Vec::with_capacity(copies.len());
    for (m, s) in copies.iter().map(|c| &c.state).enumerate() {
        names.push(match s {
            Some(bytes) => {
                let name = format!("model-{m}.u{}.safetensors", units_done[m]);
                if !has(ckdir, &name) {
                    ckdir.write_state(m, units_done[m], bytes)?;
                }
                written.add(bytes, &name);
                Some(name)
            }
            None => None,
        });
    }
    let mut pending_evals = Vec::with_capacity(evals.len());
    for (&(model, epoch), bytes) in &evals {
        let name = written.name(ckdir, bytes, format!("model-{model}.e{epoch}.safetensors"))?;
        pending_evals.push(EvalRecord {
            model,
            epoch,
            state: name,
        });
    }
    let mut best_records = Vec::new();
    if best.iter().any(Option::is_some) {
        for (model, b) in best.iter().enumerate() {
            best_records.push(match b {
                Some((epoch, bytes)) => Some(BestRecord {
                    epoch: *epoch,
                    state: written.name(
                        ckdir,
                        bytes,
                        format!("model-{model}.best{epoch}.safetensors"),
                    )?,
                }),
                None => None,
            });
        }
    }
    ckdir.commit(&Checkpoint {
        format_version: CHECKPOINT_FORMAT,
        scheduler: sched,
        states: names,
        units_done,
        metrics: trained.metrics,
        timeline: trained.timeline,
        elapsed,
        config_fingerprint: fingerprint,
        pending_evals,
        best: best_records,
        reads,
    })?;
    Ok(Files(written.0, ckdir.dir().to_path_buf()))
}

/// The files of this checkpoint's states, by the buffer they hold.
#[derive(Default)]
struct Written(HashMap<(usize, usize), String>);

impl Written {
    fn add(&mut self, bytes: &Bytes, name: &str) {
        self.0.insert(key(bytes), name.to_string());
    }

    /// The file that holds `bytes`: one this checkpoint already names for
    /// the same buffer, or `name`, written unless it exists.
    fn name(&mut self, ckdir: &CheckpointDir, bytes: &Bytes, name: String) -> Result<String> {
        if let Some(same) = self.0.get(&key(bytes)).filter(|_| !bytes.is_empty()) {
            return Ok(same.clone());
        }
        if !has(ckdir, &name) {
            write_atomic(&ckdir.file().with_file_name(&name), bytes)?;
        }
        self.add(bytes, &name);
        Ok(name)
    }
}

/// A buffer's identity: where it starts and how long it is (states are
/// shared, never copied, between the copies, passes and best epochs).
fn key(bytes: &Bytes) -> (usize, usize) {
    (bytes.as_ptr() as usize, bytes.len())
}

fn has(ckdir: &CheckpointDir, name: &str) -> bool {
    ckdir.file().with_file_name(name).exists()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mop_core::run_dir::reads::SourceReads;
    use mop_core::schedule::{Policy, Scheduler};

    use super::*;
    use crate::hops::StateCopy;
    use crate::run_state::Trained;

    #[test]
    fn a_pass_and_a_best_epoch_of_the_copys_state_name_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let ckdir = CheckpointDir::new(dir.path()).unwrap();
        let state = Bytes::from(vec![7u8; 1000]);
        let other = Bytes::from(vec![7u8; 1000]);
        let unrelated = Bytes::from(vec![7u8; 1000]);
        let snapshot = Snapshot {
            sched: Scheduler::new(2, 1, 1, 0, Policy::Reproducible).unwrap(),
            copies: vec![
                StateCopy {
                    state: Some(state.clone()),
                    units: 1,
                },
                StateCopy::default(),
            ],
            trained: Trained {
                units_done: vec![1, 0],
                metrics: vec![Vec::new(); 2],
                timeline: Vec::new(),
            },
            evals: BTreeMap::from([((0, 0), state.clone()), ((1, 0), other.clone())]),
            best: vec![Some((0, state.clone())), None],
            reads: SourceReads::default(),
        };
        let files = write(snapshot, 1.0, "fp".into(), &ckdir).unwrap();
        let c = ckdir.load().unwrap().unwrap();
        let copy = c.states[0].clone().unwrap();
        assert_eq!(c.pending_evals[0].state, copy);
        assert_eq!(c.best[0].as_ref().unwrap().state, copy);
        // Equal bytes in another buffer are another state.
        assert_eq!(c.pending_evals[1].state, "model-1.e0.safetensors");
        let mut names: Vec<String> = std::fs::read_dir(ckdir.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        names.sort();
        assert_eq!(names, [copy.as_str(), "model-1.e0.safetensors"]);
        assert_eq!(files.of(&state), Some(ckdir.dir().join(&copy)));
        assert_eq!(files.of(&unrelated), None);
        let pass = ckdir.dir().join("model-1.e0.safetensors");
        assert_eq!(files.of(&other), Some(pass));
        assert_eq!(
            ckdir.read_state(&c.pending_evals[0].state).unwrap(),
            vec![7u8; 1000]
        );
    }
}
