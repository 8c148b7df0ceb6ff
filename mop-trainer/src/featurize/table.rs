//! A table input's rows → dense `f32` features `[n, dims]`, as
//! [`mop_core::table`] specifies: standardized numeric columns (NULL and NaN
//! → 0, the mean), float-array columns flattened, categorical columns one-hot
//! over FNV-1a hash buckets. Vectorized over the Arrow buffers; a value
//! costs one multiply-add or one hash.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field};
use tch::Tensor;

use super::fnv1a64;
use crate::error::{Error, Result};
use mop_core::table::TableFeatures;

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        Error::Data(format!(
            "no column {name:?} in the batch, which the model's table input was trained with"
        ))
    })
}

/// The features of `batch`'s rows.
pub(super) fn features(
    batch: &RecordBatch,
    features: &TableFeatures,
    categorical: &[String],
    buckets: usize,
) -> Result<Tensor> {
    let rows = batch.num_rows();
    let width = features.dims(categorical.len(), buckets);
    let mut x = vec![0f32; rows * width];
    let mut at = 0;
    for f in &features.numeric {
        let floats = arrow_cast::cast(column(batch, &f.name)?, &DataType::Float64)?;
        let floats = floats.as_primitive::<Float64Type>();
        // A constant column (std 0) carries nothing: every row gets 0.
        let scale = if f.std > 0.0 && f.std.is_finite() {
            1.0 / f.std
        } else {
            0.0
        };
        for (r, v) in floats.iter().enumerate() {
            if let Some(v) = v.filter(|v| !v.is_nan()) {
                x[r * width + at] = ((v - f.mean) * scale) as f32;
            }
        }
        at += 1;
    }
    for a in &features.arrays {
        let list_type = DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)));
        let list = arrow_cast::cast(column(batch, &a.name)?, &list_type)?;
        let list = list.as_list::<i32>();
        let values = list.values().as_primitive::<Float32Type>();
        let offsets = list.value_offsets();
        for r in 0..rows {
            if list.is_null(r) {
                continue;
            }
            let (start, end) = (offsets[r] as usize, offsets[r + 1] as usize);
            if end - start != a.len {
                return Err(Error::Data(format!(
                    "array column {:?} has a row of {} elements; the training rows had {}",
                    a.name,
                    end - start,
                    a.len
                )));
            }
            for (i, v) in (start..end).enumerate() {
                if values.is_valid(v) && !values.value(v).is_nan() {
                    x[r * width + at + i] = values.value(v);
                }
            }
        }
        at += a.len;
    }
    for name in categorical {
        let text = arrow_cast::cast(column(batch, name)?, &DataType::Utf8)?;
        for (r, v) in text.as_string::<i32>().iter().enumerate() {
            if let Some(v) = v {
                let bucket = (fnv1a64(v.as_bytes()) % buckets as u64) as usize;
                x[r * width + at + bucket] = 1.0;
            }
        }
        at += buckets;
    }
    debug_assert_eq!(at, width);
    Ok(Tensor::f_from_slice(&x)?.f_view([rows as i64, width as i64])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Float32Builder, ListBuilder};
    use arrow_array::{Int32Array, StringArray};
    use mop_core::table::{ArrayFeature, NumericFeature};

    #[test]
    fn rows_become_standardized_flattened_and_hashed_features() {
        let mut emb = ListBuilder::new(Float32Builder::new());
        emb.values().append_slice(&[1.0, 2.0]);
        emb.append(true);
        emb.append(false);
        emb.values().append_value(3.0);
        emb.values().append_null();
        emb.append(true);
        let batch = RecordBatch::try_from_iter([
            (
                "age",
                Arc::new(Int32Array::from(vec![Some(30), None, Some(50)])) as ArrayRef,
            ),
            ("emb", Arc::new(emb.finish())),
            (
                "city",
                Arc::new(StringArray::from(vec![Some("oslo"), None, Some("oslo")])),
            ),
        ])
        .unwrap();
        let spec = TableFeatures {
            numeric: vec![NumericFeature {
                name: "age".into(),
                mean: 40.0,
                std: 10.0,
            }],
            arrays: vec![ArrayFeature {
                name: "emb".into(),
                len: 2,
            }],
            rows: 3,
        };
        let x = features(&batch, &spec, &["city".into()], 4).unwrap();
        assert_eq!(x.size(), [3, 1 + 2 + 4]);
        let x = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
        let bucket = (fnv1a64(b"oslo") % 4) as usize;
        let mut row0 = vec![-1.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0];
        row0[3 + bucket] = 1.0;
        let row1 = vec![0.0; 7];
        let mut row2 = vec![1.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        row2[3 + bucket] = 1.0;
        assert_eq!(x, [row0, row1, row2].concat());
    }

    #[test]
    fn an_array_of_another_length_is_a_data_error() {
        let mut emb = ListBuilder::new(Float32Builder::new());
        emb.values().append_slice(&[1.0, 2.0, 3.0]);
        emb.append(true);
        let batch =
            RecordBatch::try_from_iter([("emb", Arc::new(emb.finish()) as ArrayRef)]).unwrap();
        let spec = TableFeatures {
            numeric: vec![],
            arrays: vec![ArrayFeature {
                name: "emb".into(),
                len: 2,
            }],
            rows: 1,
        };
        let err = features(&batch, &spec, &[], 4);
        assert!(matches!(err, Err(Error::Data(m)) if m.contains("3 elements")));
    }
}
