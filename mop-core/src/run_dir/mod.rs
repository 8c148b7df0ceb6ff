//! What a run leaves in its directory, one serde type per file format:
//! [`checkpoint`] (`checkpoint.json` and the model states it names, the
//! unit timeline inside it) and [`results`] (`results.json`, `results.csv`,
//! `timeline.json` and the model files), [`reads`] (what each partition's
//! rows were at every read, in the checkpoint, and the changes found, in
//! `results.json`); and [`read_guard`], which keeps
//! `[output] table` from naming a table the run reads. The runner writes
//! them through these types; `mop report`, `mop status`, `mop models` and
//! `mop predict` read them back through the same types.

pub mod checkpoint;
pub mod partitions;
pub mod read_guard;
pub mod reads;
pub mod results;

use std::path::PathBuf;

use checkpoint::UnitRecord;

/// The outcome of a finished run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Per model: configuration and per-epoch metrics.
    pub models: Vec<results::ModelResult>,
    /// Every unit as it ran.
    pub timeline: Vec<UnitRecord>,
    /// Every partition: its trainer, where it was read from, what was read.
    pub partitions: Vec<partitions::PartitionRecord>,
    /// Partitions whose rows changed between reads, and the run went on
    /// (`[source] on_change = "warn"`).
    pub source_changes: Vec<reads::SourceChange>,
    /// Wall seconds of the run (over resumes).
    pub seconds: f64,
    /// Number of trainers.
    pub trainers: usize,
    /// The output directory.
    pub dir: PathBuf,
}
