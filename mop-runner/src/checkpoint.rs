//! Writes what a checkpoint holds ([`Snapshot`]) to the run directory, off
//! the control loop: the states it names that are not on disk yet, then the
//! checkpoint itself, atomically (a kill leaves the one before).

use mop_core::run_dir::checkpoint::{
    write_atomic, BestRecord, Checkpoint, CheckpointDir, EvalRecord, CHECKPOINT_FORMAT,
};

use crate::error::Result;
use crate::run_state::Snapshot;

/// Writes `snapshot`, taken `elapsed` seconds into the run whose
/// configuration has `fingerprint`, to `ckdir`.
pub fn write(
    snapshot: Snapshot,
    elapsed: f64,
    fingerprint: String,
    ckdir: &CheckpointDir,
) -> Result<()> {
    let Snapshot {
        sched,
        copies,
        trained,
        evals,
        best,
        reads,
    } = snapshot;
    let units_done = trained.units_done;
    let mut names = Vec::with_capacity(copies.len());
    for (m, s) in copies.iter().map(|c| &c.state).enumerate() {
        names.push(match s {
            Some(bytes) => {
                let name = format!("model-{m}.u{}.safetensors", units_done[m]);
                if !has(ckdir, &name) {
                    ckdir.write_state(m, units_done[m], bytes)?;
                }
                Some(name)
            }
            None => None,
        });
    }
    let mut pending_evals = Vec::with_capacity(evals.len());
    for (&(model, epoch), bytes) in &evals {
        let name = format!("model-{model}.e{epoch}.safetensors");
        if !has(ckdir, &name) {
            write_atomic(&ckdir.file().with_file_name(&name), bytes)?;
        }
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
                Some((epoch, bytes)) => {
                    let name = format!("model-{model}.best{epoch}.safetensors");
                    if !has(ckdir, &name) {
                        write_atomic(&ckdir.file().with_file_name(&name), bytes)?;
                    }
                    Some(BestRecord {
                        epoch: *epoch,
                        state: name,
                    })
                }
                None => None,
            });
        }
    }
    Ok(ckdir.commit(&Checkpoint {
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
    })?)
}

fn has(ckdir: &CheckpointDir, name: &str) -> bool {
    ckdir.file().with_file_name(name).exists()
}
