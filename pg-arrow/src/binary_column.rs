//! One result column in Arrow's memory layout, filled straight from the
//! values of PostgreSQL's binary format (a binary COPY tuple's fields, a
//! binary `DataRow`'s).
//!
//! # Why not Arrow's builders
//!
//! A decoder appends some forty values per row, hundreds of thousands of
//! rows per second per segment, so the cost per value is what a server
//! beside a segment costs. Arrow's `GenericByteBuilder::append_value` is a
//! call per value (a fifth of a flight-server's CPU on the binary COPY
//! route, profiled), and no builder can take a value back. A
//! [`BinaryColumn`] is plain vectors — values, offsets, and the rows that
//! are NULL, from which the validity bitmap is made per batch — whose
//! pushes inline into the row loop and whose finished arrays take the
//! vectors without copying them.
//! It can also [`truncate`](BinaryColumn::truncate) to a row count, so a
//! row cut off at the end of a chunk is appended in the same single pass
//! and taken back, instead of every row being scanned twice.
//!
//! Text is checked as UTF-8 once per batch: an all-ASCII buffer, the
//! common case, in one vectorized pass; anything else by Arrow's own check
//! of every value.
//!
//! The module's `unsafe` is Arrow's unchecked constructors, for what the
//! column guarantees by construction: offsets that start at 0, never
//! decrease and end at the data's length, and text already checked.

#![allow(unsafe_code)]

use std::sync::Arc;

use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, ListArray, PrimitiveArray,
    StringArray,
};
use arrow_buffer::{
    BooleanBufferBuilder, Buffer, NullBuffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer,
};
use arrow_schema::{DataType, Field, FieldRef, TimeUnit};
use postgres_types::Type;

use crate::error::{Error, Result};

/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL's epoch).
pub(crate) const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A column's values and validity since its last [`finish`](Self::finish).
pub(crate) struct BinaryColumn {
    values: Values,
    /// The rows that are NULL, in order. Most columns have few or none, so
    /// a value costs nothing here (a bitmap would cost a bit per value);
    /// the bitmap is made at `finish`, and only if there is a NULL.
    null_rows: Vec<usize>,
    /// Rows appended since the last `finish`.
    len: usize,
}

/// The values, laid out as the column's Arrow array holds them.
enum Values {
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Bool(BooleanBufferBuilder),
    Bytes(ByteValues),
    /// The unscaled integers, and the scale they are at.
    Numeric(Vec<i128>, i32),
    Date(Vec<i32>),
    Time(Vec<i64>),
    Timestamp(Vec<i64>),
    /// 16 bytes per row.
    Uuid(Vec<u8>),
    List(ListValues),
}

/// What a variable-width column holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ByteKind {
    /// `text` and friends: UTF-8, checked at `finish`.
    Text,
    /// `jsonb`: a version byte (1), then the JSON text.
    Jsonb,
    Bytea,
}

/// Offsets and bytes of a variable-width column.
struct ByteValues {
    kind: ByteKind,
    /// One more than the rows: the first is 0, each next the end of a value.
    offsets: Vec<i32>,
    data: Vec<u8>,
}

/// A one-dimensional array column of fixed-width elements.
struct ListValues {
    /// One more than the rows, into the elements.
    offsets: Vec<i32>,
    items: Items,
    item_nulls: NullBufferBuilder,
    /// The element field of the column's `List` type.
    item_field: FieldRef,
}

/// The elements of every array of a [`ListValues`].
enum Items {
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
}

impl BinaryColumn {
    /// The column for `field`, of PostgreSQL type `ty` (as
    /// [`crate::arrow_field`] maps it).
    pub(crate) fn new(field: &Field, ty: &Type) -> Result<Self> {
        let mismatch = || {
            Error::Internal(format!(
                "field \"{}\" of type {} does not match PostgreSQL type {}",
                field.name(),
                field.data_type(),
                ty.name()
            ))
        };
        let bytes = |kind| {
            Values::Bytes(ByteValues {
                kind,
                offsets: vec![0],
                data: Vec::new(),
            })
        };
        let list = |items| match field.data_type() {
            DataType::List(item_field) => Ok(Values::List(ListValues {
                offsets: vec![0],
                items,
                item_nulls: NullBufferBuilder::new(0),
                item_field: item_field.clone(),
            })),
            _ => Err(mismatch()),
        };
        let values = match (ty, field.data_type()) {
            (&Type::INT2, DataType::Int16) => Values::Int16(Vec::new()),
            (&Type::INT4, DataType::Int32) => Values::Int32(Vec::new()),
            (&Type::INT8, DataType::Int64) => Values::Int64(Vec::new()),
            (&Type::FLOAT4, DataType::Float32) => Values::Float32(Vec::new()),
            (&Type::FLOAT8, DataType::Float64) => Values::Float64(Vec::new()),
            (&Type::BOOL, DataType::Boolean) => Values::Bool(BooleanBufferBuilder::new(0)),
            (&Type::JSONB, DataType::Utf8) => bytes(ByteKind::Jsonb),
            (
                &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::JSON,
                DataType::Utf8,
            ) => bytes(ByteKind::Text),
            (&Type::BYTEA, DataType::Binary) => bytes(ByteKind::Bytea),
            (&Type::NUMERIC, DataType::Decimal128(_, s)) => {
                Values::Numeric(Vec::new(), i32::from(*s))
            }
            (&Type::DATE, DataType::Date32) => Values::Date(Vec::new()),
            (&Type::TIME, DataType::Time64(TimeUnit::Microsecond)) => Values::Time(Vec::new()),
            (
                &Type::TIMESTAMP | &Type::TIMESTAMPTZ,
                DataType::Timestamp(TimeUnit::Microsecond, _),
            ) => Values::Timestamp(Vec::new()),
            (&Type::UUID, DataType::FixedSizeBinary(16)) => Values::Uuid(Vec::new()),
            (&Type::INT2_ARRAY, DataType::List(_)) => list(Items::Int16(Vec::new()))?,
            (&Type::INT4_ARRAY, DataType::List(_)) => list(Items::Int32(Vec::new()))?,
            (&Type::INT8_ARRAY, DataType::List(_)) => list(Items::Int64(Vec::new()))?,
            (&Type::FLOAT4_ARRAY, DataType::List(_)) => list(Items::Float32(Vec::new()))?,
            (&Type::FLOAT8_ARRAY, DataType::List(_)) => list(Items::Float64(Vec::new()))?,
            _ => return Err(mismatch()),
        };
        Ok(Self {
            values,
            null_rows: Vec::new(),
            len: 0,
        })
    }

    /// Appends one value (`None` = NULL). Errors are plain messages; the
    /// caller adds the column's name (kept off the hot path). A value that
    /// fails appends nothing to this column.
    #[inline]
    pub(crate) fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            Some(v) => self.values.push(v)?,
            None => {
                self.values.push_null();
                self.null_rows.push(self.len);
            }
        }
        self.len += 1;
        Ok(())
    }

    /// Takes back every row after the first `len`.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        self.values.truncate(len);
        while self.null_rows.last().is_some_and(|&row| row >= len) {
            self.null_rows.pop();
        }
        self.len = len;
    }

    /// The rows appended since the last call, as one array of `field`'s
    /// type. The vectors start again with room for as many rows (and
    /// bytes): the next batch is most likely alike, and a vector grown
    /// from empty copies itself at every doubling.
    pub(crate) fn finish(&mut self, field: &Field) -> Result<ArrayRef> {
        let n = std::mem::take(&mut self.len);
        let nulls = validity(n, &mut self.null_rows);
        let dt = field.data_type();
        let array: ArrayRef = match &mut self.values {
            Values::Int16(v) => primitive::<Int16Type>(v, nulls, dt),
            Values::Int32(v) => primitive::<Int32Type>(v, nulls, dt),
            Values::Int64(v) => primitive::<Int64Type>(v, nulls, dt),
            Values::Float32(v) => primitive::<Float32Type>(v, nulls, dt),
            Values::Float64(v) => primitive::<Float64Type>(v, nulls, dt),
            Values::Numeric(v, _) => primitive::<Decimal128Type>(v, nulls, dt),
            Values::Date(v) => primitive::<Date32Type>(v, nulls, dt),
            Values::Time(v) => primitive::<Time64MicrosecondType>(v, nulls, dt),
            Values::Timestamp(v) => primitive::<TimestampMicrosecondType>(v, nulls, dt),
            Values::Bool(b) => {
                let values = std::mem::replace(b, BooleanBufferBuilder::new(n)).finish();
                Arc::new(BooleanArray::new(values, nulls))
            }
            Values::Bytes(b) => {
                let kind = b.kind;
                let (offsets, data) = b.take();
                match kind {
                    ByteKind::Bytea => {
                        // SAFETY: the offsets start at 0, never decrease and
                        // end at the data's length (`ByteValues::push`).
                        Arc::new(unsafe { BinaryArray::new_unchecked(offsets, data, nulls) })
                    }
                    ByteKind::Text | ByteKind::Jsonb if data.as_slice().is_ascii() => {
                        // SAFETY: offsets as above; ASCII is UTF-8, and every
                        // byte of it starts a character.
                        Arc::new(unsafe { StringArray::new_unchecked(offsets, data, nulls) })
                    }
                    ByteKind::Text | ByteKind::Jsonb => {
                        Arc::new(StringArray::try_new(offsets, data, nulls).map_err(|e| {
                            Error::Decode {
                                context: format!("column \"{}\"", field.name()),
                                message: format!("text is not UTF-8: {e}"),
                            }
                        })?)
                    }
                }
            }
            Values::Uuid(v) => {
                let data = std::mem::replace(v, Vec::with_capacity(16 * n));
                Arc::new(FixedSizeBinaryArray::try_new(
                    16,
                    Buffer::from_vec(data),
                    nulls,
                )?)
            }
            Values::List(l) => l.finish(nulls)?,
        };
        Ok(array)
    }
}

/// The validity of `rows` rows of which `null_rows` are NULL (`None` if
/// none is); empties `null_rows`.
fn validity(rows: usize, null_rows: &mut Vec<usize>) -> Option<NullBuffer> {
    if null_rows.is_empty() {
        return None;
    }
    let mut bits = BooleanBufferBuilder::new(rows);
    bits.append_n(rows, true);
    for row in null_rows.drain(..) {
        bits.set_bit(row, false);
    }
    Some(NullBuffer::new(bits.finish()))
}

/// `values` as an array of `data_type` (a timestamp's zone, a decimal's
/// precision and scale); `values` starts again with room for as many.
fn primitive<T: ArrowPrimitiveType>(
    values: &mut Vec<T::Native>,
    nulls: Option<NullBuffer>,
    data_type: &DataType,
) -> ArrayRef {
    let taken = std::mem::replace(values, Vec::with_capacity(values.len()));
    Arc::new(
        PrimitiveArray::<T>::new(ScalarBuffer::from(taken), nulls)
            .with_data_type(data_type.clone()),
    )
}

impl Values {
    /// Appends the value `v`, or nothing if it is malformed.
    #[inline]
    fn push(&mut self, v: &[u8]) -> Result<(), String> {
        match self {
            Values::Int16(out) => out.push(i16::from_be_bytes(exact(v)?)),
            Values::Int32(out) => out.push(i32::from_be_bytes(exact(v)?)),
            Values::Int64(out) => out.push(i64::from_be_bytes(exact(v)?)),
            Values::Float32(out) => out.push(f32::from_be_bytes(exact(v)?)),
            Values::Float64(out) => out.push(f64::from_be_bytes(exact(v)?)),
            Values::Bool(out) => out.append(exact::<1>(v)?[0] != 0),
            Values::Bytes(b) => b.push(v)?,
            Values::Numeric(out, scale) => out.push(numeric_to_i128(v, *scale)?),
            Values::Date(out) => {
                let days = i32::from_be_bytes(exact(v)?);
                if days == i32::MAX || days == i32::MIN {
                    return Err(infinity("date"));
                }
                let days = days
                    .checked_add(PG_EPOCH_DAYS)
                    .ok_or_else(|| format!("date {days} days from 2000-01-01 is out of range"))?;
                out.push(days)
            }
            Values::Time(out) => out.push(i64::from_be_bytes(exact(v)?)),
            Values::Timestamp(out) => {
                let us = i64::from_be_bytes(exact(v)?);
                if us == i64::MAX || us == i64::MIN {
                    return Err(infinity("timestamp"));
                }
                let us = us
                    .checked_add(PG_EPOCH_MICROS)
                    .ok_or_else(|| format!("timestamp {us} µs from 2000-01-01 is out of range"))?;
                out.push(us)
            }
            Values::Uuid(out) => out.extend_from_slice(&exact::<16>(v)?),
            Values::List(l) => l.push(v)?,
        }
        Ok(())
    }

    /// Appends the placeholder under a NULL.
    #[inline]
    fn push_null(&mut self) {
        match self {
            Values::Int16(out) => out.push(0),
            Values::Int32(out) | Values::Date(out) => out.push(0),
            Values::Int64(out) | Values::Time(out) | Values::Timestamp(out) => out.push(0),
            Values::Float32(out) => out.push(0.0),
            Values::Float64(out) => out.push(0.0),
            Values::Bool(out) => out.append(false),
            Values::Bytes(b) => b.offsets.push(b.data.len() as i32),
            Values::Numeric(out, _) => out.push(0),
            Values::Uuid(out) => out.extend_from_slice(&[0; 16]),
            Values::List(l) => l.offsets.push(l.items.len() as i32),
        }
    }

    fn truncate(&mut self, len: usize) {
        match self {
            Values::Int16(v) => v.truncate(len),
            Values::Int32(v) | Values::Date(v) => v.truncate(len),
            Values::Int64(v) | Values::Time(v) | Values::Timestamp(v) => v.truncate(len),
            Values::Float32(v) => v.truncate(len),
            Values::Float64(v) => v.truncate(len),
            Values::Bool(b) => b.truncate(len),
            Values::Bytes(b) => {
                b.offsets.truncate(len + 1);
                b.data.truncate(b.offsets[len] as usize);
            }
            Values::Numeric(v, _) => v.truncate(len),
            Values::Uuid(v) => v.truncate(16 * len),
            Values::List(l) => {
                l.offsets.truncate(len + 1);
                let items = l.offsets[len] as usize;
                l.items.truncate(items);
                l.item_nulls.truncate(items);
            }
        }
    }
}

impl ByteValues {
    #[inline]
    fn push(&mut self, v: &[u8]) -> Result<(), String> {
        let v = match self.kind {
            ByteKind::Jsonb => match v.split_first() {
                Some((1, json)) => json,
                Some((version, _)) => return Err(format!("unknown jsonb version {version}")),
                None => return Err("empty jsonb value".into()),
            },
            ByteKind::Text | ByteKind::Bytea => v,
        };
        let end = self.data.len() + v.len();
        let Ok(end) = i32::try_from(end) else {
            return Err(format!(
                "a batch's values of this column exceed {} bytes; lower the batch size",
                i32::MAX
            ));
        };
        extend_short(&mut self.data, v);
        self.offsets.push(end);
        Ok(())
    }

    /// The offsets and bytes so far; starts again with room for as many.
    fn take(&mut self) -> (OffsetBuffer<i32>, Buffer) {
        let offsets = take_offsets(&mut self.offsets);
        let bytes = self.data.len();
        let data = std::mem::replace(&mut self.data, Vec::with_capacity(bytes));
        (offsets, Buffer::from_vec(data))
    }
}

/// The offsets so far, as Arrow's; `offsets` starts again at `[0]` with
/// room for as many.
fn take_offsets(offsets: &mut Vec<i32>) -> OffsetBuffer<i32> {
    let mut next = Vec::with_capacity(offsets.len());
    next.push(0);
    let taken = std::mem::replace(offsets, next);
    // SAFETY: the first offset is 0 and each next one is the length of the
    // data (or the elements) after a push or a NULL's, so they never
    // decrease; truncation keeps a prefix.
    unsafe { OffsetBuffer::new_unchecked(ScalarBuffer::from(taken)) }
}

impl ListValues {
    /// Appends one binary-format PostgreSQL array of fixed-width elements.
    ///
    /// Wire form: ndim, has-nulls flag, element type oid (i32 each), then
    /// per dimension size and lower bound (i32 each), then per element an
    /// i32 length (-1 = NULL) and the element's bytes. A malformed array
    /// appends nothing.
    fn push(&mut self, v: &[u8]) -> Result<(), String> {
        let before = self.items.len();
        let nulls = &mut self.item_nulls;
        let pushed = match &mut self.items {
            Items::Int16(out) => push_array(v, &Type::INT2, out, nulls, i16::from_be_bytes),
            Items::Int32(out) => push_array(v, &Type::INT4, out, nulls, i32::from_be_bytes),
            Items::Int64(out) => push_array(v, &Type::INT8, out, nulls, i64::from_be_bytes),
            Items::Float32(out) => push_array(v, &Type::FLOAT4, out, nulls, f32::from_be_bytes),
            Items::Float64(out) => push_array(v, &Type::FLOAT8, out, nulls, f64::from_be_bytes),
        };
        let end = pushed.and_then(|()| {
            i32::try_from(self.items.len()).map_err(|_| {
                "a batch's array elements exceed 2^31; lower the batch size".to_owned()
            })
        });
        match end {
            Ok(end) => {
                self.offsets.push(end);
                Ok(())
            }
            Err(message) => {
                self.items.truncate(before);
                self.item_nulls.truncate(before);
                Err(message)
            }
        }
    }

    fn finish(&mut self, nulls: Option<NullBuffer>) -> Result<ArrayRef> {
        let item_nulls = self.item_nulls.finish();
        let items = self.items.len();
        self.item_nulls = NullBufferBuilder::new(items);
        let dt = self.item_field.data_type();
        let values = match &mut self.items {
            Items::Int16(v) => primitive::<Int16Type>(v, item_nulls, dt),
            Items::Int32(v) => primitive::<Int32Type>(v, item_nulls, dt),
            Items::Int64(v) => primitive::<Int64Type>(v, item_nulls, dt),
            Items::Float32(v) => primitive::<Float32Type>(v, item_nulls, dt),
            Items::Float64(v) => primitive::<Float64Type>(v, item_nulls, dt),
        };
        Ok(Arc::new(ListArray::try_new(
            self.item_field.clone(),
            take_offsets(&mut self.offsets),
            values,
            nulls,
        )?))
    }
}

impl Items {
    fn len(&self) -> usize {
        match self {
            Items::Int16(v) => v.len(),
            Items::Int32(v) => v.len(),
            Items::Int64(v) => v.len(),
            Items::Float32(v) => v.len(),
            Items::Float64(v) => v.len(),
        }
    }

    fn truncate(&mut self, len: usize) {
        match self {
            Items::Int16(v) => v.truncate(len),
            Items::Int32(v) => v.truncate(len),
            Items::Int64(v) => v.truncate(len),
            Items::Float32(v) => v.truncate(len),
            Items::Float64(v) => v.truncate(len),
        }
    }
}

/// The elements of the one-dimensional binary array `v`, whose element
/// type must be `elem`, onto `out` and `nulls`. On error, part of the
/// array may have been pushed; the caller takes it back.
fn push_array<T: Default, const N: usize>(
    v: &[u8],
    elem: &Type,
    out: &mut Vec<T>,
    nulls: &mut NullBufferBuilder,
    from_be: fn([u8; N]) -> T,
) -> Result<(), String> {
    let word = |at: usize| -> Result<i32, String> {
        v.get(at..at + 4)
            .map(|w| i32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .ok_or_else(|| format!("array value truncated at byte {at}"))
    };
    let (ndim, elem_oid) = (word(0)?, elem.oid());
    let oid = word(8)? as u32;
    if oid != elem_oid {
        return Err(format!("array element type oid {oid}, expected {elem_oid}"));
    }
    if ndim == 0 {
        return Ok(());
    }
    if ndim != 1 {
        return Err(format!(
            "{ndim}-dimensional arrays are not supported; hopper streams one-dimensional \
             arrays only (flatten it in the query, e.g. ARRAY(SELECT unnest(col)))"
        ));
    }
    let size = word(12)?;
    let mut p = 20;
    for _ in 0..size.max(0) {
        let len = word(p)?;
        p += 4;
        if len == -1 {
            out.push(T::default());
            nulls.append_null();
        } else {
            let bytes = v
                .get(p..p + N)
                .filter(|_| len as usize == N)
                .ok_or_else(|| format!("array element of {len} bytes, expected {N}"))?;
            out.push(from_be(exact(bytes)?));
            nulls.append_non_null();
            p += N;
        }
    }
    if p != v.len() {
        return Err(format!("array value has {} trailing bytes", v.len() - p));
    }
    Ok(())
}

/// Appends `v` to `data`. A value of 4 to 16 bytes, what most text columns
/// hold, is copied as two overlapping moves of a fixed size rather than by
/// a call to `memcpy`: that call was most of the cost of a short value.
#[inline]
fn extend_short(data: &mut Vec<u8>, v: &[u8]) {
    let n = v.len();
    if !(4..=16).contains(&n) {
        data.extend_from_slice(v);
        return;
    }
    data.reserve(n);
    let len = data.len();
    let src = v.as_ptr();
    // SAFETY: `reserve` made room for `n` more bytes after `len`. Each move
    // reads within `v` (its size is at most `n`) and writes within those
    // `n` bytes, which the two cover, so `set_len` exposes written bytes.
    unsafe {
        let dst = data.as_mut_ptr().add(len);
        if n >= 8 {
            std::ptr::copy_nonoverlapping(src, dst, 8);
            std::ptr::copy_nonoverlapping(src.add(n - 8), dst.add(n - 8), 8);
        } else {
            std::ptr::copy_nonoverlapping(src, dst, 4);
            std::ptr::copy_nonoverlapping(src.add(n - 4), dst.add(n - 4), 4);
        }
        data.set_len(len + n);
    }
}

/// `b` as a fixed-size array, or a message naming the size mismatch.
#[inline]
fn exact<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", b.len()))
}

#[cold]
fn infinity(what: &str) -> String {
    format!("{what} 'infinity' has no Arrow representation; filter it out or cast the column")
}

/// Powers of ten that fit an `i128`.
pub(crate) const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// A binary-format `numeric` as the unscaled integer of a decimal with
/// `scale` digits after the point, exactly.
///
/// Wire form: ndigits, weight (i16), sign (u16), dscale (i16), then
/// `ndigits` base-10000 digits (i16); the value is
/// Σ digit\[i\] · 10000^(weight − i).
pub(crate) fn numeric_to_i128(v: &[u8], scale: i32) -> Result<i128, String> {
    if v.len() < 8 {
        return Err(format!("numeric value of {} bytes", v.len()));
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]) as usize;
    let weight = i32::from(i16::from_be_bytes([v[2], v[3]]));
    let sign = u16::from_be_bytes([v[4], v[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN has no decimal representation; filter it out".into()),
        0xD000 | 0xF000 => {
            return Err("infinity has no decimal representation; filter it out".into())
        }
        _ => return Err(format!("numeric sign word {sign:#x}")),
    }
    if v.len() != 8 + 2 * ndigits {
        return Err(format!(
            "numeric with {ndigits} digits in {} bytes",
            v.len()
        ));
    }
    let overflow = || format!("numeric does not fit Decimal128 at scale {scale}");
    let mut acc: i128 = 0;
    for (i, d) in v[8..].chunks_exact(2).enumerate() {
        let digit = i128::from(i16::from_be_bytes([d[0], d[1]]));
        if digit == 0 {
            continue;
        }
        // This digit's power of ten in the unscaled integer.
        let e = 4 * (weight - i as i32) + scale;
        let term = if e >= 0 {
            let pow = *POW10.get(e as usize).ok_or_else(overflow)?;
            digit.checked_mul(pow).ok_or_else(overflow)?
        } else {
            // Digits below the scale: only zeros may fall off, anything
            // else would silently round.
            let pow = POW10.get((-e) as usize).copied().unwrap_or(i128::MAX);
            if digit % pow != 0 {
                return Err(format!("numeric has more than {scale} fractional digits"));
            }
            digit / pow
        };
        acc = acc.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_append_exactly_whatever_their_length() {
        let source: Vec<u8> = (0..128).collect();
        let mut data = vec![0xAA; 3];
        let mut want = data.clone();
        for n in 0..=40 {
            let v = &source[n..2 * n];
            extend_short(&mut data, v);
            want.extend_from_slice(v);
            assert_eq!(data, want, "after a value of {n} bytes");
        }
    }
}
