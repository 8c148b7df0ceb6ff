//! Arrow record batches → tensors.
//!
//! Trainers receive Arrow record batches straight from the segments; this
//! module turns each batch into a [`Featurized`] pair `(x, y)` of tensors with
//! vectorized loops over the Arrow buffers (no allocation per value).
//!
//! # Criteo-like tables
//! Columns are found by type, in schema order: the label column (default
//! `label`, any integer type) gives `y`; columns named `id` are ignored; every
//! other integer, float or decimal column is *numeric*, every string column is
//! *categorical*. The paper's featurization maps each row to 39 active slots of
//! a 7306-wide one-hot vector (13 numeric · 50 + 26 categorical · 256):
//!
//! * numeric column `j` → slot `j·50 + b`, with bucket `b` (log-scale):
//!   `0` NULL or NaN; `1` negative (including −∞); `2 + ⌊2·log₂(1 + x)⌋` for
//!   `x ≥ 0`, capped at `49` — so bucket `2 + k` holds
//!   `2^(k/2) − 1 ≤ x < 2^((k+1)/2) − 1` and bucket 49 everything from about
//!   1.2·10⁷ up (and +∞).
//! * categorical column `k` → slot `13·50 + k·256 + s`, with `s = 0` for NULL
//!   and `s = 1 + FNV-1a-64(utf8 bytes) mod 255` otherwise. FNV-1a is fixed and
//!   platform independent, so every worker featurizes a value identically.
//!
//! The default output keeps the 39 global slot indices per row (`[n, 39]`
//! `i64`, 312 bytes a row instead of 29 kB one-hot) and the model expands them
//! per mini-batch, either as an `embedding_bag` (sparse path) or as a dense
//! one-hot matrix. [`Featurizer::featurize_dense`] gives the `[n, 7306]` `f32`
//! one-hot matrix directly.
//!
//! # Images
//! A `pixels` column per row of `C·H·W` values, either a list of floats
//! (`real[]`; `List`, `LargeList` or `FixedSizeList` of `Float32`/`Float64`)
//! or bytes (`bytea`, scaled to `[0, 1]` by `/255`), becomes `[n, C, H, W]`
//! `f32`. Nulls inside a list read as whatever the buffer holds (PostgreSQL
//! writes 0); a NULL row is an error.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, OffsetSizeTrait, RecordBatch};
use arrow_schema::DataType;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use mop_core::config::{InputSpec, ModelConfig, Task, CATEGORICAL_SLOTS, NUMERIC_BUCKETS};

mod table;

/// Default name of the label column.
pub const DEFAULT_LABEL_COLUMN: &str = "label";
/// Default name of the image column.
pub const DEFAULT_PIXELS_COLUMN: &str = "pixels";
/// Columns never used as features (row identifiers).
const IGNORED_COLUMNS: &[&str] = &["id"];

/// Features and labels of a run of rows, ready for a model.
///
/// `x` is `[n, slots]` `i64` (Criteo slot indices), `[n, dims]` `f32` (dense
/// features) or `[n, C, H, W]` `f32` (images); `y` is `[n]` `i64`.
#[derive(Debug)]
pub struct Featurized {
    /// Features, first dimension = rows.
    pub x: Tensor,
    /// Labels: class indices in `0..classes` (`i64`, multiclass), 0/1
    /// (`f32`, binary) or values (`f32`, regression).
    pub y: Tensor,
}

impl Featurized {
    /// Pairs features with labels, checking they have the same number of rows.
    pub fn new(x: Tensor, y: Tensor) -> Result<Self> {
        let (nx, ny) = (x.size().first().copied(), y.size());
        if nx != ny.first().copied() || ny.len() != 1 {
            return Err(Error::Data(format!(
                "features {:?} and labels {ny:?} disagree on the number of rows",
                x.size()
            )));
        }
        Ok(Featurized { x, y })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.size()[0] as usize
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `start..start + len` as views (no copy).
    pub fn slice(&self, start: usize, len: usize) -> Result<Featurized> {
        let (s, l) = (start as i64, len as i64);
        Ok(Featurized {
            x: self.x.f_narrow(0, s, l)?,
            y: self.y.f_narrow(0, s, l)?,
        })
    }

    /// Concatenates runs of rows, in order.
    pub fn concat(parts: &[Featurized]) -> Result<Featurized> {
        if parts.is_empty() {
            return Err(Error::Data(
                "cannot concatenate zero feature batches".into(),
            ));
        }
        let xs: Vec<&Tensor> = parts.iter().map(|p| &p.x).collect();
        let ys: Vec<&Tensor> = parts.iter().map(|p| &p.y).collect();
        Ok(Featurized {
            x: Tensor::f_cat(&xs, 0)?,
            y: Tensor::f_cat(&ys, 0)?,
        })
    }

    /// A second handle on the same tensors (no copy).
    pub fn shallow_clone(&self) -> Featurized {
        Featurized {
            x: self.x.shallow_clone(),
            y: self.y.shallow_clone(),
        }
    }

    /// Moves both tensors to `device` (a no-op when already there).
    pub fn to_device(&self, device: Device) -> Featurized {
        Featurized {
            x: self.x.to_device(device),
            y: self.y.to_device(device),
        }
    }
}

/// Expands `[n, k]` slot indices into a `[n, dims]` `f32` one-hot (k-hot) matrix.
pub fn one_hot(indices: &Tensor, dims: usize) -> Result<Tensor> {
    let size = indices.size();
    if size.len() != 2 || indices.kind() != Kind::Int64 {
        return Err(Error::Data(format!(
            "one-hot expansion needs [n, k] int64 slot indices, got {size:?} {:?}",
            indices.kind()
        )));
    }
    let mut dense = Tensor::f_zeros([size[0], dims as i64], (Kind::Float, indices.device()))?;
    _ = dense.f_scatter_value_(1, indices, 1.0)?;
    Ok(dense)
}

/// FNV-1a, 64 bit: the fixed hash of categorical values.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Bucket of a numeric value in `0..50` (see the module docs).
pub fn numeric_bucket(x: f64) -> i64 {
    if x.is_nan() {
        0
    } else if x < 0.0 {
        1
    } else {
        let k = (2.0 * (x + 1.0).log2()).floor();
        (2.0 + k).min((NUMERIC_BUCKETS - 1) as f64) as i64
    }
}

/// Slot of a categorical value in `0..256` (`None` is NULL).
pub fn categorical_slot(value: Option<&[u8]>) -> i64 {
    match value {
        None => 0,
        Some(bytes) => 1 + (fnv1a64(bytes) % (CATEGORICAL_SLOTS as u64 - 1)) as i64,
    }
}

/// Turns record batches into tensors for one model configuration's input.
#[derive(Debug, Clone)]
pub struct Featurizer {
    input: InputSpec,
    classes: usize,
    task: Task,
    label: String,
    pixels: String,
}

impl Featurizer {
    /// A featurizer for `config`'s input, reading labels from `label`.
    pub fn new(config: &ModelConfig) -> Self {
        Featurizer {
            input: config.input.clone(),
            classes: config.classes,
            task: config.task,
            label: match &config.input {
                InputSpec::Table { label, .. } => label.clone(),
                _ => DEFAULT_LABEL_COLUMN.into(),
            },
            pixels: DEFAULT_PIXELS_COLUMN.into(),
        }
    }

    /// The column labels are read from.
    pub fn label_column(&self) -> &str {
        &self.label
    }

    /// Reads labels from column `name` instead of `label`.
    pub fn with_label_column(mut self, name: impl Into<String>) -> Self {
        self.label = name.into();
        self
    }

    /// Reads images from column `name` instead of `pixels`.
    pub fn with_pixels_column(mut self, name: impl Into<String>) -> Self {
        self.pixels = name.into();
        self
    }

    /// Compact features: Criteo slot indices `[n, 39]` `i64`, or images
    /// `[n, C, H, W]` `f32`. This is what the training loop consumes.
    pub fn featurize(&self, batch: &RecordBatch) -> Result<Featurized> {
        let y = self.labels(batch)?;
        let x = match self.input {
            InputSpec::Criteo {
                numeric,
                categorical,
                ..
            } => criteo_indices(batch, &self.label, numeric, categorical)?,
            InputSpec::Image {
                channels,
                height,
                width,
            } => self.pixels(batch, [channels, height, width])?,
            InputSpec::Table {
                ref features,
                ref categorical,
                buckets,
                ..
            } => {
                let features = features.as_ref().ok_or_else(|| {
                    Error::Config(
                        "the table input carries no column statistics: the runner resolves \
                         them when the run starts (mop train), and mop predict reads them from \
                         the run's results.json"
                            .into(),
                    )
                })?;
                table::features(batch, features, categorical, buckets)?
            }
        };
        Featurized::new(x, y)
    }

    /// Dense features: Criteo one-hot `[n, 7306]` `f32`, images as
    /// [`featurize`](Self::featurize).
    pub fn featurize_dense(&self, batch: &RecordBatch) -> Result<Featurized> {
        let f = self.featurize(batch)?;
        if f.x.kind() == Kind::Int64 {
            return Featurized::new(one_hot(&f.x, self.input.dims())?, f.y);
        }
        Ok(f)
    }

    fn column<'b>(&self, batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
        batch.column_by_name(name).ok_or_else(|| {
            let names: Vec<&str> = batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            Error::Data(format!(
                "no column {name:?} in the batch (columns: {names:?}); name the column in the query or configure it"
            ))
        })
    }

    fn labels(&self, batch: &RecordBatch) -> Result<Tensor> {
        let column = self.column(batch, &self.label)?;
        if self.task != Task::Multiclass {
            return self.float_labels(column);
        }
        if !column.data_type().is_integer() {
            return Err(Error::Data(format!(
                "label column {:?} must be an integer type, got {}",
                self.label,
                column.data_type()
            )));
        }
        if column.null_count() > 0 {
            return Err(Error::Data(format!(
                "label column {:?} has {} NULLs; filter them out in the query",
                self.label,
                column.null_count()
            )));
        }
        let labels = arrow_cast::cast(column, &DataType::Int64)?;
        let values = labels.as_primitive::<Int64Type>().values();
        let classes = self.classes as i64;
        if let Some(bad) = values.iter().find(|&&v| !(0..classes).contains(&v)) {
            return Err(Error::Data(format!(
                "label {bad} in column {:?} is outside 0..{classes}",
                self.label
            )));
        }
        Ok(Tensor::f_from_slice(values)?)
    }

    /// Labels of a binary task (0/1 from an integer or boolean column) or
    /// of a regression (any numeric column), as `f32`.
    fn float_labels(&self, column: &ArrayRef) -> Result<Tensor> {
        let (task, label) = (self.task.name(), &self.label);
        if column.null_count() > 0 {
            return Err(Error::Data(format!(
                "label column {label:?} has {} NULLs; filter them out in the query",
                column.null_count()
            )));
        }
        let t = column.data_type();
        let fits = match self.task {
            Task::Binary => t.is_integer() || *t == DataType::Boolean,
            _ => t.is_numeric() || *t == DataType::Boolean,
        };
        if !fits {
            let want = match self.task {
                Task::Binary => "an integer or boolean type (labels 0 and 1)",
                _ => "a numeric type",
            };
            return Err(Error::Data(format!(
                "label column {label:?} must be {want} for task = \"{task}\", got {t}"
            )));
        }
        let values = arrow_cast::cast(column, &DataType::Float32)?;
        let values = values.as_primitive::<Float32Type>().values();
        if self.task == Task::Binary {
            if let Some(bad) = values.iter().find(|&&v| v != 0.0 && v != 1.0) {
                return Err(Error::Data(format!(
                    "label {bad} in column {label:?} is neither 0 nor 1 (task = \"binary\")"
                )));
            }
        }
        Ok(Tensor::f_from_slice(values)?)
    }

    fn pixels(&self, batch: &RecordBatch, shape: [usize; 3]) -> Result<Tensor> {
        let column = self.column(batch, &self.pixels)?;
        let per_row = shape.iter().product::<usize>();
        if column.null_count() > 0 {
            return Err(Error::Data(format!(
                "image column {:?} has NULL rows",
                self.pixels
            )));
        }
        let n = column.len();
        let floats: Vec<f32> = match column.data_type() {
            DataType::List(_) => {
                let list = column.as_list::<i32>();
                list_values(list.offsets(), list.values(), per_row, &self.pixels)?
            }
            DataType::LargeList(_) => {
                let list = column.as_list::<i64>();
                list_values(list.offsets(), list.values(), per_row, &self.pixels)?
            }
            DataType::FixedSizeList(_, len) => {
                let list = column.as_fixed_size_list();
                check_row_len(*len as usize, per_row, &self.pixels)?;
                let start = list.offset() * per_row;
                float_values(&list.values().slice(start, n * per_row))?
            }
            DataType::Binary => bytes_values(column.as_binary::<i32>(), per_row, &self.pixels)?,
            DataType::LargeBinary => {
                bytes_values(column.as_binary::<i64>(), per_row, &self.pixels)?
            }
            other => {
                return Err(Error::Data(format!(
                    "image column {:?} must be a list of floats or bytes, got {other}",
                    self.pixels
                )))
            }
        };
        let [c, h, w] = shape.map(|d| d as i64);
        Ok(Tensor::f_from_slice(&floats)?.f_view([n as i64, c, h, w])?)
    }
}

fn check_row_len(len: usize, per_row: usize, column: &str) -> Result<()> {
    if len != per_row {
        return Err(Error::Data(format!(
            "image column {column:?} has rows of {len} values, the model expects C·H·W = {per_row}"
        )));
    }
    Ok(())
}

fn list_values<O: OffsetSizeTrait>(
    offsets: &[O],
    values: &ArrayRef,
    per_row: usize,
    column: &str,
) -> Result<Vec<f32>> {
    if let Some(w) = offsets
        .windows(2)
        .find(|w| (w[1] - w[0]).as_usize() != per_row)
    {
        check_row_len((w[1] - w[0]).as_usize(), per_row, column)?;
    }
    let (first, last) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
    float_values(&values.slice(first, last - first))
}

fn float_values(values: &ArrayRef) -> Result<Vec<f32>> {
    Ok(match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().values().to_vec(),
        DataType::Float64 => {
            let v = values.as_primitive::<Float64Type>().values();
            v.iter().map(|&x| x as f32).collect()
        }
        _ => {
            let cast = arrow_cast::cast(values, &DataType::Float32)?;
            cast.as_primitive::<Float32Type>().values().to_vec()
        }
    })
}

fn bytes_values<O: OffsetSizeTrait>(
    array: &arrow_array::GenericBinaryArray<O>,
    per_row: usize,
    column: &str,
) -> Result<Vec<f32>> {
    let offsets = array.value_offsets();
    if let Some(w) = offsets
        .windows(2)
        .find(|w| (w[1] - w[0]).as_usize() != per_row)
    {
        check_row_len((w[1] - w[0]).as_usize(), per_row, column)?;
    }
    let (first, last) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
    Ok(array.value_data()[first..last]
        .iter()
        .map(|&b| f32::from(b) / 255.0)
        .collect())
}

/// The numeric and categorical columns of a Criteo-like batch, in schema order.
fn criteo_columns<'b>(
    batch: &'b RecordBatch,
    label: &str,
) -> Result<(Vec<&'b ArrayRef>, Vec<ArrayRef>)> {
    let mut numeric = Vec::new();
    let mut categorical = Vec::new();
    for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        if name == label || IGNORED_COLUMNS.contains(&name) {
            continue;
        }
        match field.data_type() {
            t if t.is_numeric() => numeric.push(column),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                categorical.push(Arc::clone(column))
            }
            DataType::Dictionary(_, v)
                if matches!(
                    **v,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) =>
            {
                categorical.push(arrow_cast::cast(column, &DataType::Utf8)?)
            }
            other => {
                return Err(Error::Data(format!(
                    "column {name:?} has type {other}, which is neither numeric nor text; \
                     leave it out of the query"
                )))
            }
        }
    }
    Ok((numeric, categorical))
}

/// `[n, numeric + categorical]` global slot indices of a Criteo-like batch.
fn criteo_indices(
    batch: &RecordBatch,
    label: &str,
    n_numeric: usize,
    n_categorical: usize,
) -> Result<Tensor> {
    let (numeric, categorical) = criteo_columns(batch, label)?;
    if numeric.len() != n_numeric || categorical.len() != n_categorical {
        return Err(Error::Data(format!(
            "the model expects {n_numeric} numeric and {n_categorical} text columns besides \
             {label:?} and \"id\", the batch has {} and {}",
            numeric.len(),
            categorical.len()
        )));
    }
    let rows = batch.num_rows();
    let width = n_numeric + n_categorical;
    let mut indices = vec![0i64; rows * width];
    for (j, column) in numeric.iter().enumerate() {
        let floats = arrow_cast::cast(column, &DataType::Float64)?;
        let floats = floats.as_primitive::<Float64Type>();
        let base = (j * NUMERIC_BUCKETS) as i64;
        let nulls = floats.nulls();
        for (r, &x) in floats.values().iter().enumerate() {
            let bucket = if nulls.is_some_and(|n| n.is_null(r)) {
                0
            } else {
                numeric_bucket(x)
            };
            indices[r * width + j] = base + bucket;
        }
    }
    let numeric_width = n_numeric * NUMERIC_BUCKETS;
    for (k, column) in categorical.iter().enumerate() {
        let base = (numeric_width + k * CATEGORICAL_SLOTS) as i64;
        let col = n_numeric + k;
        let mut put = |r: usize, v: Option<&str>| {
            indices[r * width + col] = base + categorical_slot(v.map(str::as_bytes));
        };
        match column.data_type() {
            DataType::Utf8 => column
                .as_string::<i32>()
                .iter()
                .enumerate()
                .for_each(|(r, v)| put(r, v)),
            DataType::LargeUtf8 => column
                .as_string::<i64>()
                .iter()
                .enumerate()
                .for_each(|(r, v)| put(r, v)),
            _ => column
                .as_string_view()
                .iter()
                .enumerate()
                .for_each(|(r, v)| put(r, v)),
        }
    }
    Ok(Tensor::f_from_slice(&indices)?.f_view([rows as i64, width as i64])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, ListBuilder};
    use arrow_array::{Float64Array, Int32Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};

    /// A tiny Criteo-like batch: id, label, 13 numeric, 26 categorical.
    fn criteo_batch(rows: usize) -> RecordBatch {
        let mut fields = vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Int32, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            Arc::new(Int32Array::from_iter_values(
                (0..rows).map(|r| (r % 2) as i32),
            )),
        ];
        for j in 0..13 {
            fields.push(Field::new(format!("i{j}"), DataType::Float64, true));
            let values = (0..rows).map(|r| match r {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(-3.0),
                _ => Some((r * (j + 1)) as f64),
            });
            columns.push(Arc::new(Float64Array::from_iter(values)));
        }
        for k in 0..26 {
            fields.push(Field::new(format!("c{k}"), DataType::Utf8, true));
            let values = (0..rows).map(|r| (r != 0).then(|| format!("v{}", r % 5 + k)));
            columns.push(Arc::new(StringArray::from_iter(values)));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn numeric_buckets_follow_the_documented_log_scale() {
        assert_eq!(numeric_bucket(f64::NAN), 0);
        assert_eq!(numeric_bucket(-1.0), 1);
        assert_eq!(numeric_bucket(f64::NEG_INFINITY), 1);
        assert_eq!(numeric_bucket(0.0), 2);
        assert_eq!(numeric_bucket(1.0), 4); // 2·log2(2) = 2
        assert_eq!(numeric_bucket(3.0), 6); // 2·log2(4) = 4
        assert_eq!(numeric_bucket(1e7), 48);
        assert_eq!(numeric_bucket(1e12), 49);
        assert_eq!(numeric_bucket(f64::INFINITY), 49);
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn criteo_rows_become_39_slots_inside_7306_dims() {
        let batch = criteo_batch(10);
        let config = ModelConfig::conf_a(1e-3, 0.0, 4, true);
        let f = Featurizer::new(&config).featurize(&batch).unwrap();
        assert_eq!(f.x.size(), [10, 39]);
        assert_eq!(f.len(), 10);
        let x = Vec::<i64>::try_from(f.x.flatten(0, -1)).unwrap();
        // Row 0: NULLs everywhere → bucket 0 / slot 0 of each column.
        let row0: Vec<i64> = (0..13)
            .map(|j| j * 50)
            .chain((0..26).map(|k| 650 + k * 256))
            .collect();
        assert_eq!(x[..39], row0);
        // Row 1 is NaN → bucket 0; row 2 negative → bucket 1.
        assert_eq!(x[39], 0);
        assert_eq!(x[2 * 39], 1);
        // Every index of column c lies in that column's range.
        for (i, &v) in x.iter().enumerate() {
            let c = i % 39;
            let (lo, hi) = if c < 13 {
                (c * 50, c * 50 + 50)
            } else {
                (650 + (c - 13) * 256, 650 + (c - 12) * 256)
            };
            assert!(
                (lo as i64..hi as i64).contains(&v),
                "{v} outside column {c}"
            );
        }
        let y = Vec::<i64>::try_from(f.y).unwrap();
        assert_eq!(y, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn dense_one_hot_has_exactly_39_ones_per_row() {
        let batch = criteo_batch(6);
        let config = ModelConfig::conf_a(1e-3, 0.0, 4, false);
        let f = Featurizer::new(&config).featurize_dense(&batch).unwrap();
        assert_eq!(f.x.size(), [6, 7306]);
        let per_row = Vec::<f32>::try_from(f.x.sum_dim_intlist(1, false, Kind::Float)).unwrap();
        assert!(per_row.iter().all(|&s| s == 39.0), "{per_row:?}");
    }

    #[test]
    fn featurizing_a_slice_equals_slicing_the_features() {
        let batch = criteo_batch(12);
        let fz = Featurizer::new(&ModelConfig::conf_a(1e-3, 0.0, 4, true));
        let whole = fz.featurize(&batch).unwrap();
        let part = fz.featurize(&batch.slice(5, 4)).unwrap();
        assert!(part.x.equal(&whole.slice(5, 4).unwrap().x));
        let back = Featurized::concat(&[whole.slice(0, 5).unwrap(), whole.slice(5, 7).unwrap()]);
        assert!(back.unwrap().x.equal(&whole.x));
    }

    #[test]
    fn wrong_columns_and_labels_are_data_errors() {
        let batch = criteo_batch(4);
        let fz = Featurizer::new(&ModelConfig::conf_a(1e-3, 0.0, 4, true));
        let missing = fz.clone().with_label_column("clicked").featurize(&batch);
        assert!(matches!(missing, Err(Error::Data(m)) if m.contains("clicked")));
        let narrow = batch.project(&(0..20).collect::<Vec<_>>()).unwrap();
        assert!(matches!(fz.featurize(&narrow), Err(Error::Data(m)) if m.contains("13 numeric")));
        let mut one_class = ModelConfig::conf_a(1e-3, 0.0, 4, true);
        one_class.classes = 2;
        let bad_label = RecordBatch::try_new(
            batch.schema(),
            std::iter::once(Arc::clone(batch.column(0)))
                .chain(std::iter::once(
                    Arc::new(Int32Array::from(vec![0, 1, 2, 0])) as ArrayRef,
                ))
                .chain(batch.columns()[2..].iter().cloned())
                .collect(),
        )
        .unwrap();
        let err = Featurizer::new(&one_class).featurize(&bad_label);
        assert!(matches!(err, Err(Error::Data(m)) if m.contains("outside 0..2")));
    }

    fn image_config() -> ModelConfig {
        ModelConfig {
            arch: mop_core::config::Arch::Cnn,
            optimizer: mop_core::config::OptimizerKind::Adam,
            lr: 1e-3,
            l2: 0.0,
            batch_size: 2,
            input: InputSpec::Image {
                channels: 2,
                height: 2,
                width: 3,
            },
            classes: 10,
            task: Task::Multiclass,
        }
    }

    #[test]
    fn image_lists_become_nchw_tensors() {
        let mut pixels = ListBuilder::new(Float32Builder::new());
        let mut fixed = FixedSizeListBuilder::new(Float32Builder::new(), 12);
        for r in 0..3 {
            for i in 0..12 {
                pixels.values().append_value((r * 100 + i) as f32);
                fixed.values().append_value((r * 100 + i) as f32);
            }
            pixels.append(true);
            fixed.append(true);
        }
        let labels: ArrayRef = Arc::new(Int64Array::from(vec![3, 9, 0]));
        for column in [
            Arc::new(pixels.finish()) as ArrayRef,
            Arc::new(fixed.finish()),
        ] {
            let batch =
                RecordBatch::try_from_iter([("label", Arc::clone(&labels)), ("pixels", column)])
                    .unwrap();
            let f = Featurizer::new(&image_config())
                .featurize(&batch.slice(1, 2))
                .unwrap();
            assert_eq!(f.x.size(), [2, 2, 2, 3]);
            assert_eq!(f.x.double_value(&[0, 0, 0, 0]), 100.0);
            assert_eq!(f.x.double_value(&[1, 1, 1, 2]), 211.0);
            assert_eq!(Vec::<i64>::try_from(&f.y).unwrap(), [9, 0]);
        }
    }

    #[test]
    fn image_of_the_wrong_size_is_a_data_error() {
        let mut pixels = ListBuilder::new(Float32Builder::new());
        pixels.values().append_slice(&[0.0; 11]);
        pixels.append(true);
        let batch = RecordBatch::try_from_iter([
            ("label", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("pixels", Arc::new(pixels.finish())),
        ])
        .unwrap();
        let err = Featurizer::new(&image_config()).featurize(&batch);
        assert!(matches!(err, Err(Error::Data(m)) if m.contains("11 values")));
    }
}
