//! Whether a partition's rows stayed the same from one read to the next.
//!
//! A run reads each partition many times: with `cache = "none"` every
//! training unit and validation pass reads it again, and with a cache a
//! trainer that is replaced fills it again. Where the flight-server can
//! hold the run's snapshot, every read sees the same rows; where it cannot
//! (the snapshot expired, the server restarted, the database keeps none),
//! the rows may change under the run. So every read over Flight reports
//! its row count and an order-independent checksum of its rows (the
//! trainer's `row_checksum`), and [`SourceReads`] holds, per partition and
//! split (training or validation rows), the figures the next read must
//! match: its first read's. A read that differs is a [`SourceChange`]: the
//! runner stops (`[source] on_change = "stop"`, the default) or records it
//! and goes on (`"warn"`), after which later reads are compared with the
//! rows after the change, so each change is recorded once.
//!
//! The ledger travels in the checkpoint, so a run resumed over a table
//! that changed while it was stopped is caught at its first read; the
//! changes a run went on after are listed in `results.json`
//! (`source_changes`) and in the report. Reads served from a trainer's
//! cache report nothing: they cannot see the database change, and the
//! read that filled the cache was compared when it was made.

use serde::{Deserialize, Serialize};

use crate::run_dir::checkpoint::Split;

/// What one read of a partition got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowsRead {
    /// Rows read.
    pub rows: u64,
    /// The wrapping sum of a hash of every row (the trainer's
    /// `row_checksum`).
    pub checksum: u64,
    /// How the rows were hashed: figures of different schemes are not
    /// compared.
    pub scheme: String,
}

/// Which read found rows: the one that filled a trainer's cache, a
/// training unit, or a validation pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// A trainer opened (or, replaced, opened again) its partition and
    /// filled its cache.
    Open,
    /// A training unit.
    Unit,
    /// A validation pass.
    Validation,
}

/// One read, as the runner reports it to [`SourceReads::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// The partition (= trainer) index.
    pub partition: usize,
    /// Its training or validation rows.
    pub split: Split,
    /// What read them.
    pub kind: ReadKind,
    /// The model of the unit or validation pass.
    pub model: Option<usize>,
    /// The epoch (0-based) of the unit or validation pass.
    pub epoch: Option<usize>,
    /// Where the rows come from, for messages: the query's endpoints and
    /// their flight-servers.
    pub from: String,
    /// What it got.
    pub got: RowsRead,
}

/// The figures the next read of a partition's rows must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// The partition (= trainer) index.
    pub partition: usize,
    /// Its training or validation rows.
    pub split: Split,
    /// The figures.
    #[serde(flatten)]
    pub rows: RowsRead,
}

/// A read whose rows differed from the partition's earlier reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceChange {
    /// The partition (= trainer) index.
    pub partition: usize,
    /// Its training or validation rows.
    pub split: Split,
    /// What read them.
    pub read: ReadKind,
    /// The model of the unit or validation pass that found the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<usize>,
    /// Its epoch, counted from 1 (as `kept_epoch` and `stopped_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<usize>,
    /// Where the rows come from.
    pub from: String,
    /// Rows before the change.
    pub rows_before: u64,
    /// Rows after it.
    pub rows_after: u64,
    /// The checksum before.
    pub checksum_before: u64,
    /// The checksum after.
    pub checksum_after: u64,
}

/// The ledger of a run's reads: what each partition's rows were, and the
/// changes the run went on after.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReads {
    /// Per partition and split, the figures the next read must match.
    #[serde(default)]
    pub expected: Vec<Expected>,
    /// The changes the run went on after (`on_change = "warn"`), in the
    /// order they were found.
    #[serde(default)]
    pub changes: Vec<SourceChange>,
}

/// What [`SourceReads::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The first read of these rows: its figures are what later reads
    /// must match.
    First,
    /// The same rows as before.
    Same,
    /// The figures were made another way than the expected ones (a
    /// trainer of another hopper version): they become the expected ones.
    NewScheme {
        /// The scheme expected until now.
        was: String,
    },
    /// Different rows: the run stops, or [`SourceReads::accept`]s it.
    Changed(SourceChange),
}

impl SourceReads {
    /// Whether nothing was read yet.
    pub fn is_empty(&self) -> bool {
        self.expected.is_empty() && self.changes.is_empty()
    }

    /// Compares `read` with the earlier reads of its rows; a first read
    /// (or one of a new scheme) is recorded, a change is not (see
    /// [`SourceReads::accept`]).
    pub fn check(&mut self, read: &Read) -> Checked {
        let slot = self
            .expected
            .iter_mut()
            .find(|e| e.partition == read.partition && e.split == read.split);
        let Some(slot) = slot else {
            self.expected.push(Expected {
                partition: read.partition,
                split: read.split,
                rows: read.got.clone(),
            });
            return Checked::First;
        };
        let before = &slot.rows;
        if before.scheme != read.got.scheme {
            let was = std::mem::replace(&mut slot.rows, read.got.clone()).scheme;
            return Checked::NewScheme { was };
        }
        if before.rows == read.got.rows && before.checksum == read.got.checksum {
            return Checked::Same;
        }
        Checked::Changed(SourceChange {
            partition: read.partition,
            split: read.split,
            read: read.kind,
            model: read.model,
            epoch: read.epoch.map(|e| e + 1),
            from: read.from.clone(),
            rows_before: before.rows,
            rows_after: read.got.rows,
            checksum_before: before.checksum,
            checksum_after: read.got.checksum,
        })
    }

    /// Records a change the run goes on after: later reads of its rows are
    /// compared with the rows after it.
    pub fn accept(&mut self, change: SourceChange) {
        if let Some(slot) = self
            .expected
            .iter_mut()
            .find(|e| e.partition == change.partition && e.split == change.split)
        {
            slot.rows.rows = change.rows_after;
            slot.rows.checksum = change.checksum_after;
        }
        self.changes.push(change);
    }
}

/// "training" or "validation".
pub fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "training",
        Split::Validation => "validation",
    }
}

impl SourceChange {
    /// What changed, where, and which read found it.
    pub fn describe(&self) -> String {
        let by = match (self.read, self.model, self.epoch) {
            (ReadKind::Unit, Some(m), Some(e)) => format!("model {m}'s unit of epoch {e}"),
            (ReadKind::Validation, Some(m), Some(e)) => {
                format!("the validation of model {m} after epoch {e}")
            }
            _ => "the trainer filling its cache".to_string(),
        };
        format!(
            "the {} rows of partition {} ({}) changed during the run: {} rows \
             (checksum {:016x}) at the earlier reads, {} rows (checksum {:016x}) \
             as {by} read them",
            split_name(self.split),
            self.partition,
            self.from,
            self.rows_before,
            self.checksum_before,
            self.rows_after,
            self.checksum_after,
        )
    }

    /// The error that stops a run (`on_change = "stop"`).
    pub fn stop_message(&self) -> String {
        format!(
            "{}. The run stopped so that no model trains or validates on other rows \
             than the others did; every finished unit and epoch is kept in the checkpoint. \
             To go on over the changed rows, set `on_change = \"warn\"` under [source] and \
             `mop train --resume` (the change is recorded in results.json); to compare every \
             model on the same rows, restore the table or start the run again in a new \
             output.dir",
            self.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(partition: usize, split: Split, rows: u64, checksum: u64) -> Read {
        Read {
            partition,
            split,
            kind: ReadKind::Unit,
            model: Some(2),
            epoch: Some(4),
            from: format!("endpoint {partition}"),
            got: RowsRead {
                rows,
                checksum,
                scheme: "s1".into(),
            },
        }
    }

    #[test]
    fn the_first_read_is_what_later_reads_must_match_per_partition_and_split() {
        let mut r = SourceReads::default();
        assert_eq!(r.check(&read(0, Split::Train, 10, 7)), Checked::First);
        assert_eq!(r.check(&read(1, Split::Train, 12, 9)), Checked::First);
        assert_eq!(r.check(&read(0, Split::Validation, 3, 1)), Checked::First);
        assert_eq!(r.check(&read(0, Split::Train, 10, 7)), Checked::Same);
        assert_eq!(r.check(&read(0, Split::Validation, 3, 1)), Checked::Same);
        let Checked::Changed(c) = r.check(&read(1, Split::Train, 12, 8)) else {
            panic!("a checksum that differs is a change");
        };
        assert_eq!((c.partition, c.rows_before, c.rows_after), (1, 12, 12));
        assert_eq!(c.epoch, Some(5), "epochs counted from 1");
        let m = c.stop_message();
        assert!(
            m.contains("training rows of partition 1 (endpoint 1)"),
            "{m}"
        );
        assert!(m.contains("on_change = \"warn\""), "{m}");
        // Not accepted: the next read is compared with the first one still.
        assert!(matches!(
            r.check(&read(1, Split::Train, 13, 9)),
            Checked::Changed(_)
        ));
    }

    #[test]
    fn an_accepted_change_is_recorded_once_and_later_reads_compare_with_it() {
        let mut r = SourceReads::default();
        r.check(&read(1, Split::Validation, 5, 50));
        let Checked::Changed(c) = r.check(&read(1, Split::Validation, 6, 60)) else {
            panic!("a row more is a change");
        };
        r.accept(c);
        assert_eq!(r.check(&read(1, Split::Validation, 6, 60)), Checked::Same);
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].rows_before, 5);
        assert_eq!(r.changes[0].rows_after, 6);
        // The ledger survives a checkpoint's JSON.
        let back: SourceReads = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let mut back = back;
        assert!(matches!(
            back.check(&read(1, Split::Validation, 6, 61)),
            Checked::Changed(_)
        ));
    }

    #[test]
    fn figures_of_another_scheme_replace_the_expected_ones_without_a_change() {
        let mut r = SourceReads::default();
        r.check(&read(0, Split::Train, 10, 7));
        let mut other = read(0, Split::Train, 10, 99);
        other.got.scheme = "s2".into();
        assert_eq!(r.check(&other), Checked::NewScheme { was: "s1".into() });
        assert_eq!(r.check(&other), Checked::Same);
    }
}
