//! What a read of a partition got: its rows and a checksum of them that
//! does not depend on their order, so the runner can tell whether a later
//! read of the same partition got the same rows (`RowsRead` in
//! `proto/hopper.proto`; the runner's comparison is
//! `mop_core::run_dir::reads`).
//!
//! # What is hashed
//! The raw Arrow rows as the flight-server sent them, not the featurized
//! tensors a model sees: the rows are the same for every model of a run,
//! whatever its input spec or cache mode, so one figure per partition
//! suffices, and a change in any column the query returns counts — the
//! table changed — even one the features ignore or hash into the same
//! bucket. Each row is encoded with Arrow's row format
//! ([`arrow_row`]: every column's type, value and NULL, one byte string
//! per row, independent of how rows were cut into batches) and hashed
//! with xxHash64 (`twox-hash`, a fixed seed: the same on every process,
//! host and run — unlike a `RandomState`).
//!
//! # How rows combine
//! The checksum is the wrapping sum of the row hashes: addition commutes,
//! so the order the segment returns rows in and the batch boundaries do
//! not matter, while a changed, added or deleted row changes the sum
//! (a duplicated row adds its hash twice, where XOR would cancel it). The
//! row count travels beside it.
//!
//! # Stability
//! Arrow does not promise its row format across releases. [`SCHEME`] names
//! the encoding, and the test `the_checksum_of_known_rows_is_pinned` fails
//! when an upgrade changes it: then [`SCHEME`] must change too, and a run
//! resumed across the upgrade takes the new figures as the first ones
//! instead of taking them for a changed table.

use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_row::{RowConverter, SortField};
use arrow_schema::DataType;
use twox_hash::XxHash64;

use crate::error::{Error, Result};

/// How rows are hashed: bump it whenever the checksum of the same rows
/// changes (a new Arrow row format, another hash or seed).
pub const SCHEME: &str = "xxh64-arrow-row-1";

/// The hash's seed: any fixed value works, it must only never change
/// under one [`SCHEME`].
const SEED: u64 = 0x686f_7070_6572; // "hopper"

/// Rows and their order-independent checksum, added up batch by batch.
#[derive(Default)]
pub struct RowChecksum {
    rows: u64,
    sum: u64,
    /// The converter for the batches' column types, made at the first
    /// batch and again should the types change.
    converter: Option<(Vec<DataType>, RowConverter)>,
}

/// A checksum a pass adds to on its training thread, read when it ends.
pub type SharedChecksum = Arc<Mutex<RowChecksum>>;

impl RowChecksum {
    /// Adds every row of `batch`.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let types: Vec<DataType> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let converter = match &mut self.converter {
            Some((known, c)) if *known == types => c,
            slot => {
                let fields = types.iter().cloned().map(SortField::new).collect();
                let c = RowConverter::new(fields).map_err(|e| {
                    Error::Config(format!("cannot checksum the rows' columns: {e}"))
                })?;
                &mut slot.insert((types, c)).1
            }
        };
        let rows = converter
            .convert_columns(batch.columns())
            .map_err(|e| Error::Config(format!("cannot checksum the rows: {e}")))?;
        for row in rows.iter() {
            self.sum = self.sum.wrapping_add(XxHash64::oneshot(SEED, row.as_ref()));
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows added.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The checksum of the rows added.
    pub fn checksum(&self) -> u64 {
        self.sum
    }

    /// The figures as the runner receives them.
    pub fn figures(&self) -> hopper_proto::RowsRead {
        hopper_proto::RowsRead {
            rows: self.rows,
            checksum: self.sum,
            scheme: SCHEME.to_string(),
        }
    }
}

/// The figures of a shared checksum (none if its lock was poisoned by a
/// pass that panicked, whose result is not sent anyway).
pub fn figures(shared: &SharedChecksum) -> Option<hopper_proto::RowsRead> {
    shared.lock().ok().map(|c| c.figures())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use proptest::prelude::*;

    /// A batch of `ids` with a float, a nullable text and a list column.
    fn batch(ids: &[i64]) -> RecordBatch {
        let f =
            Float64Array::from_iter(ids.iter().map(|&i| (i % 7 == 0).then_some(i as f64 / 3.0)));
        let t = StringArray::from_iter(ids.iter().map(|&i| (i % 5 != 0).then(|| format!("c{i}"))));
        let mut l = ListBuilder::new(StringBuilder::new());
        for &i in ids {
            for j in 0..i % 3 {
                l.values().append_value(format!("{i}.{j}"));
            }
            l.append(i % 4 != 0);
        }
        RecordBatch::try_from_iter([
            (
                "id",
                std::sync::Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
            ),
            ("x", std::sync::Arc::new(f) as ArrayRef),
            ("c", std::sync::Arc::new(t) as ArrayRef),
            ("l", std::sync::Arc::new(l.finish()) as ArrayRef),
        ])
        .unwrap()
    }

    /// The checksum of `ids` arriving in batches cut at `cuts`.
    fn of(ids: &[i64], cuts: &[usize]) -> (u64, u64) {
        let mut c = RowChecksum::default();
        let mut start = 0;
        for &end in cuts.iter().chain([&ids.len()]) {
            let end = end.clamp(start, ids.len());
            c.add(&batch(&ids[start..end])).unwrap();
            start = end;
        }
        (c.rows(), c.checksum())
    }

    #[test]
    fn the_same_rows_in_another_order_and_other_batches_give_the_same_checksum() {
        let ids: Vec<i64> = (1..=500).collect();
        let mut shuffled = ids.clone();
        shuffled.reverse();
        shuffled.swap(3, 400);
        let one = of(&ids, &[]);
        assert_eq!(one.0, 500);
        assert_eq!(one, of(&shuffled, &[1, 2, 100, 333]));
        assert_eq!(one, of(&ids, &[250]));
    }

    #[test]
    fn a_changed_added_deleted_or_duplicated_row_changes_the_checksum() {
        let ids: Vec<i64> = (1..=200).collect();
        let base = of(&ids, &[]).1;
        let mut changed = ids.clone();
        changed[17] = 10_000; // one row's values
        assert_ne!(of(&changed, &[]).1, base);
        assert_ne!(of(&ids[1..], &[]).1, base, "a row deleted");
        let mut more = ids.clone();
        more.push(201);
        assert_ne!(of(&more, &[]).1, base, "a row added");
        let mut twice = ids.clone();
        twice.extend([5, 5]);
        assert_ne!(
            of(&twice, &[]).1,
            base,
            "a row twice more (XOR would cancel)"
        );
        // The same values under a NULL instead: the row format tells them apart.
        let mut c = RowChecksum::default();
        let nulls = RecordBatch::try_from_iter([(
            "c",
            std::sync::Arc::new(StringArray::from(vec![None::<&str>])) as ArrayRef,
        )])
        .unwrap();
        let empty = RecordBatch::try_from_iter([(
            "c",
            std::sync::Arc::new(StringArray::from(vec![Some("")])) as ArrayRef,
        )])
        .unwrap();
        c.add(&nulls).unwrap();
        let null_sum = c.checksum();
        let mut d = RowChecksum::default();
        d.add(&empty).unwrap();
        assert_ne!(null_sum, d.checksum(), "NULL and '' differ");
    }

    /// A known batch's checksum, pinned: if an upgrade of Arrow (its row
    /// format) or of the hash changes it, bump [`SCHEME`] with the new
    /// value, so that runs resumed across the upgrade are not stopped as
    /// if their tables had changed.
    #[test]
    fn the_checksum_of_known_rows_is_pinned() {
        let ids: Vec<i64> = (1..=64).collect();
        let (rows, sum) = of(&ids, &[10]);
        assert_eq!(rows, 64);
        assert_eq!(
            sum, PINNED,
            "the checksum of the same rows changed ({sum:#018x}): bump SCHEME ({SCHEME}) and PINNED"
        );
    }

    const PINNED: u64 = 0x7e5f_6d29_08de_c7ce;

    proptest! {
        #[test]
        fn any_order_and_batching_of_the_rows_give_the_same_checksum(
            ids in proptest::collection::vec(-1000i64..1000, 0..200),
            seed in any::<u64>(),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let mut shuffled = ids.clone();
            // A seeded Fisher–Yates shuffle.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(of(&ids, &[]), of(&shuffled, &cuts));
        }
    }
}
