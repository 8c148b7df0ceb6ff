//! PostgreSQL text output → Arrow arrays.
//!
//! Two readers get values in the server's *text* output format:
//!
//! - a Greenplum retrieve session accepts nothing but `RETRIEVE`, and hopper
//!   runs it through the simple query protocol, so every value arrives as
//!   text and no catalog look-up is possible on that connection;
//! - PostgreSQL segments read with `COPY … (FORMAT text)` when that route is
//!   chosen (`--copy-format`), because for integer and text columns the
//!   backend writes text cheaper than binary.
//!
//! The Arrow type of every column is therefore fixed beforehand (by
//! [`crate::arrow_field`], from the catalog) and this module parses
//! each text value into that type — the same Arrow values the binary
//! decoder produces.
//!
//! The parsers follow PostgreSQL's default output settings, which Greenplum
//! 7 (PostgreSQL 12 based) shares and the COPY route sets on its
//! connections: `DateStyle = ISO`, `bytea_output = hex`,
//! `IntervalStyle = postgres`, and shortest-exact float output
//! (`extra_float_digits = 1`). Time zone offsets are read from the value
//! itself, so the session's `TimeZone` does not matter.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Decimal128Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder,
    LargeBinaryBuilder, LargeStringBuilder, StringBuilder, UInt32Builder,
};
use arrow_array::types::IntervalMonthDayNanoType;
use arrow_array::{make_array, Array, ArrayRef, Int32Array, Int64Array, ListArray, RecordBatch};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};
use arrow_schema::{DataType, FieldRef, IntervalUnit, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// Accumulates rows of text values into record batches of a fixed schema.
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<Column>,
    rows: usize,
    text_bytes: usize,
}

impl BatchBuilder {
    /// A builder for `schema`; fails up front if a column's type has no text parser.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(f.name(), f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema,
            columns,
            rows: 0,
            text_bytes: 0,
        })
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of text appended since the last [`finish`](Self::finish): a
    /// stand-in for the batch's size.
    pub fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    /// Appends one row; `None` is SQL NULL.
    pub fn push_row<'a>(
        &mut self,
        values: impl ExactSizeIterator<Item = Option<&'a str>>,
    ) -> Result<()> {
        if values.len() != self.columns.len() {
            return Err(Error::Decode {
                context: "retrieved row".into(),
                message: format!(
                    "{} values for {} planned columns",
                    values.len(),
                    self.columns.len()
                ),
            });
        }
        for (i, value) in values.enumerate() {
            self.text_bytes += value.map_or(1, str::len);
            if let Err(message) = self.columns[i].append(value) {
                let field = self.schema.field(i);
                return Err(Error::Decode {
                    context: format!("column \"{}\" ({})", field.name(), field.data_type()),
                    message,
                });
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends one row from its fields in order (`None` is SQL NULL), for
    /// readers that split a line themselves; a field is owned only when it
    /// had to be unescaped. On an error the builder is left mid-row: the
    /// stream it reads is failed anyway.
    pub fn push_fields<'a>(
        &mut self,
        fields: impl Iterator<Item = Result<Option<std::borrow::Cow<'a, str>>>>,
    ) -> Result<()> {
        let mut n = 0;
        for value in fields {
            let value = value?;
            let Some(column) = self.columns.get_mut(n) else {
                n += 1;
                continue;
            };
            self.text_bytes += value.as_deref().map_or(1, str::len);
            if let Err(message) = column.append(value.as_deref()) {
                let field = self.schema.field(n);
                return Err(Error::Decode {
                    context: format!("column \"{}\" ({})", field.name(), field.data_type()),
                    message,
                });
            }
            n += 1;
        }
        if n != self.columns.len() {
            return Err(Error::Decode {
                context: "text row".into(),
                message: format!("{n} values for {} planned columns", self.columns.len()),
            });
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends one row from a text-format `DataRow` message's body (a
    /// protocol-level reader's buffer): the fields are read in place and
    /// each is checked as UTF-8 once, where it lies.
    pub fn push_data_row(&mut self, body: &[u8]) -> Result<()> {
        let fields = crate::data_row::fields(body)?;
        self.push_fields(fields.map(|f| {
            let Some(bytes) = f? else {
                return Ok(None);
            };
            std::str::from_utf8(bytes)
                .map(|s| Some(std::borrow::Cow::Borrowed(s)))
                .map_err(|e| Error::Decode {
                    context: "DataRow field".into(),
                    message: format!(
                        "not UTF-8 ({e}); the retrieve session's client_encoding is UTF8"
                    ),
                })
        }))
    }

    /// The rows appended so far as one batch; the builder starts over empty.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays = self
            .columns
            .iter_mut()
            .map(Column::finish)
            .collect::<Result<Vec<_>>>()?;
        self.rows = 0;
        self.text_bytes = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

/// One column being built; each variant knows how to parse its text form.
enum Column {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    /// `oid`, `xid` and the like.
    U32(UInt32Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    /// text, varchar, json(b), uuid-as-text, anything kept as its text form.
    Utf8(StringBuilder),
    LargeUtf8(LargeStringBuilder),
    /// bytea in hex output (`\x0a0b`).
    Binary(BinaryBuilder),
    LargeBinary(LargeBinaryBuilder),
    /// uuid as 16 bytes.
    Uuid(FixedSizeBinaryBuilder),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    /// `date` as days since 1970-01-01.
    Date(Vec<Option<i32>>),
    /// `time`, `timestamp`, `timestamptz`: 64-bit values of `data_type`.
    Temporal {
        kind: Temporal,
        data_type: DataType,
        values: Vec<Option<i64>>,
    },
    Interval(IntervalMonthDayNanoBuilder),
    /// A one-dimensional array `{…}`.
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<Column>,
    },
}

/// Which text form a 64-bit temporal column parses, and its Arrow unit.
#[derive(Clone, Copy)]
enum Temporal {
    Time(TimeUnit),
    Timestamp(TimeUnit),
}

impl Column {
    fn new(name: &str, data_type: &DataType) -> Result<Self> {
        Ok(match data_type {
            DataType::Boolean => Column::Bool(BooleanBuilder::new()),
            DataType::Int16 => Column::I16(Int16Builder::new()),
            DataType::Int32 => Column::I32(Int32Builder::new()),
            DataType::Int64 => Column::I64(Int64Builder::new()),
            DataType::UInt32 => Column::U32(UInt32Builder::new()),
            DataType::Float32 => Column::F32(Float32Builder::new()),
            DataType::Float64 => Column::F64(Float64Builder::new()),
            DataType::Utf8 => Column::Utf8(StringBuilder::new()),
            DataType::LargeUtf8 => Column::LargeUtf8(LargeStringBuilder::new()),
            DataType::Binary => Column::Binary(BinaryBuilder::new()),
            DataType::LargeBinary => Column::LargeBinary(LargeBinaryBuilder::new()),
            DataType::FixedSizeBinary(16) => Column::Uuid(FixedSizeBinaryBuilder::new(16)),
            DataType::Decimal128(precision, scale) => Column::Decimal {
                builder: Decimal128Builder::new().with_precision_and_scale(*precision, *scale)?,
                precision: *precision,
                scale: *scale,
            },
            DataType::Date32 => Column::Date(Vec::new()),
            DataType::Time64(unit) => Column::Temporal {
                kind: Temporal::Time(*unit),
                data_type: data_type.clone(),
                values: Vec::new(),
            },
            DataType::Timestamp(unit, _) => Column::Temporal {
                kind: Temporal::Timestamp(*unit),
                data_type: data_type.clone(),
                values: Vec::new(),
            },
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                Column::Interval(IntervalMonthDayNanoBuilder::new())
            }
            DataType::List(field) if !matches!(field.data_type(), DataType::List(_)) => {
                Column::List {
                    field: field.clone(),
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(0),
                    child: Box::new(Column::new(name, field.data_type())?),
                }
            }
            other => {
                return Err(Error::UnsupportedType {
                    column: name.to_string(),
                    type_name: format!("{other} (no text parser for Greenplum retrieval)"),
                })
            }
        })
    }

    /// Parses and appends one value; the error is a message for [`Error::Decode`].
    fn append(&mut self, value: Option<&str>) -> std::result::Result<(), String> {
        let Some(s) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            Column::Bool(b) => b.append_value(parse_bool(s)?),
            Column::I16(b) => b.append_value(parse_num(s)?),
            Column::I32(b) => b.append_value(parse_num(s)?),
            Column::I64(b) => b.append_value(parse_num(s)?),
            Column::U32(b) => b.append_value(parse_num(s)?),
            Column::F32(b) => b.append_value(parse_float(s)?),
            Column::F64(b) => b.append_value(parse_float(s)?),
            Column::Utf8(b) => b.append_value(s),
            Column::LargeUtf8(b) => b.append_value(s),
            Column::Binary(b) => b.append_value(parse_bytea(s)?),
            Column::LargeBinary(b) => b.append_value(parse_bytea(s)?),
            Column::Uuid(b) => {
                let u = uuid::Uuid::parse_str(s).map_err(|e| format!("bad uuid {s:?}: {e}"))?;
                b.append_value(u.as_bytes()).map_err(|e| e.to_string())?;
            }
            Column::Decimal {
                builder,
                precision,
                scale,
            } => builder.append_value(parse_decimal(s, *precision, *scale)?),
            Column::Date(v) => v.push(Some(parse_date(s)?)),
            Column::Temporal { kind, values, .. } => {
                let (micros, unit) = match kind {
                    Temporal::Time(unit) => (parse_time(s)?, *unit),
                    Temporal::Timestamp(unit) => (parse_timestamp(s)?, *unit),
                };
                values.push(Some(micros_to_unit(micros, unit, s)?));
            }
            Column::Interval(b) => b.append_value(parse_interval(s)?),
            Column::List {
                offsets,
                nulls,
                child,
                ..
            } => {
                let elements = parse_array(s)?;
                for e in &elements {
                    child.append(e.as_deref())?;
                }
                let last = offsets.last().copied().unwrap_or(0);
                let len = i32::try_from(elements.len()).map_err(|_| "array too long")?;
                offsets.push(
                    last.checked_add(len)
                        .ok_or("arrays too long for one batch")?,
                );
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Column::Bool(b) => b.append_null(),
            Column::I16(b) => b.append_null(),
            Column::I32(b) => b.append_null(),
            Column::I64(b) => b.append_null(),
            Column::U32(b) => b.append_null(),
            Column::F32(b) => b.append_null(),
            Column::F64(b) => b.append_null(),
            Column::Utf8(b) => b.append_null(),
            Column::LargeUtf8(b) => b.append_null(),
            Column::Binary(b) => b.append_null(),
            Column::LargeBinary(b) => b.append_null(),
            Column::Uuid(b) => b.append_null(),
            Column::Decimal { builder, .. } => builder.append_null(),
            Column::Date(v) => v.push(None),
            Column::Temporal { values, .. } => values.push(None),
            Column::Interval(b) => b.append_null(),
            Column::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// The values appended so far; the column starts over empty.
    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::U32(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::LargeUtf8(b) => Arc::new(b.finish()),
            Column::Binary(b) => Arc::new(b.finish()),
            Column::LargeBinary(b) => Arc::new(b.finish()),
            Column::Uuid(b) => Arc::new(b.finish()),
            Column::Decimal { builder, .. } => Arc::new(builder.finish()),
            Column::Date(v) => {
                let ints = Int32Array::from(std::mem::take(v));
                make_array(
                    ints.into_data()
                        .into_builder()
                        .data_type(DataType::Date32)
                        .build()?,
                )
            }
            Column::Temporal {
                data_type, values, ..
            } => {
                let ints = Int64Array::from(std::mem::take(values));
                make_array(
                    ints.into_data()
                        .into_builder()
                        .data_type(data_type.clone())
                        .build()?,
                )
            }
            Column::Interval(b) => Arc::new(b.finish()),
            Column::List {
                field,
                offsets,
                nulls,
                child,
            } => {
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let values = child.finish()?;
                Arc::new(ListArray::try_new(
                    field.clone(),
                    offsets,
                    values,
                    nulls.finish(),
                )?)
            }
        })
    }
}

fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s {
        "t" | "true" => Ok(true),
        "f" | "false" => Ok(false),
        _ => Err(format!("bad boolean {s:?} (expected t or f)")),
    }
}

fn parse_num<T: std::str::FromStr>(s: &str) -> std::result::Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.trim()
        .parse()
        .map_err(|e| format!("bad number {s:?}: {e}"))
}

/// Floats, including PostgreSQL's `NaN`, `Infinity` and `-Infinity`.
fn parse_float<T: std::str::FromStr>(s: &str) -> std::result::Result<T, String>
where
    T::Err: std::fmt::Display,
{
    // Rust accepts "NaN", "inf" and "infinity" in any case, which covers
    // PostgreSQL's spellings.
    parse_num(s)
}

/// bytea in hex output format: `\x` followed by two hex digits per byte.
fn parse_bytea(s: &str) -> std::result::Result<Vec<u8>, String> {
    let hex = s.strip_prefix("\\x").ok_or_else(|| {
        format!("bytea value does not start with \\x (is bytea_output = escape?): {s:.20?}")
    })?;
    if hex.len() % 2 != 0 {
        return Err(format!("odd number of hex digits in bytea {s:.20?}"));
    }
    let digit = |c: u8| -> std::result::Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("bad hex digit {:?} in bytea", c as char)),
        }
    };
    hex.as_bytes()
        .chunks_exact(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// `numeric` text (`-12.3400`) as a Decimal128 of the given scale, rounding
/// half away from zero like PostgreSQL when there are more fraction digits.
fn parse_decimal(s: &str, precision: u8, scale: i8) -> std::result::Result<i128, String> {
    let overflow = || format!("numeric {s:?} does not fit decimal({precision},{scale})");
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(format!(
            "bad numeric {s:?} (NaN and Infinity have no decimal form; cast or filter them)"
        ));
    }
    // Digits kept: the integer part and up to `scale` fraction digits (none
    // and fewer integer digits when the scale is negative).
    let mut value: i128 = 0;
    let mut push = |d: u8| -> std::result::Result<(), String> {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(d - b'0')))
            .ok_or_else(overflow)?;
        Ok(())
    };
    let int_bytes = int_part.as_bytes();
    let frac_bytes = frac_part.as_bytes();
    let (round_digit, pad) = if scale >= 0 {
        let keep = scale as usize;
        for &d in int_bytes {
            push(d)?;
        }
        for &d in frac_bytes.iter().take(keep) {
            push(d)?;
        }
        (
            frac_bytes.get(keep).copied(),
            keep.saturating_sub(frac_bytes.len()),
        )
    } else {
        let drop = scale.unsigned_abs() as usize;
        let keep = int_bytes.len().saturating_sub(drop);
        for &d in &int_bytes[..keep] {
            push(d)?;
        }
        let next = if drop <= int_bytes.len() {
            int_bytes.get(keep).copied()
        } else {
            None
        };
        (next, 0)
    };
    for _ in 0..pad {
        push(b'0')?;
    }
    if matches!(round_digit, Some(d) if d >= b'5') {
        value = value.checked_add(1).ok_or_else(overflow)?;
    }
    let limit = 10i128
        .checked_pow(u32::from(precision))
        .ok_or_else(overflow)?;
    if value >= limit {
        return Err(overflow());
    }
    Ok(if negative { -value } else { value })
}

/// Days since 1970-01-01 of an ISO date (`2024-02-29`, `0044-03-15 BC`).
fn parse_date(s: &str) -> std::result::Result<i32, String> {
    let days = date_days(s)?;
    i32::try_from(days).map_err(|_| format!("date {s:?} out of range"))
}

fn date_days(s: &str) -> std::result::Result<i64, String> {
    let bad = || {
        format!("bad date {s:?} (expected YYYY-MM-DD; infinite dates have no Arrow form, and DateStyle must be ISO)")
    };
    let (text, bc) = match s.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (s, false),
    };
    let mut parts = text.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    let d: u32 = d.parse().map_err(|_| bad())?;
    // There is no year 0: 1 BC is astronomical year 0.
    let year = if bc { 1 - y } else { y };
    let date = chrono::NaiveDate::from_ymd_opt(year, m, d).ok_or_else(bad)?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(bad)?;
    Ok(date.signed_duration_since(epoch).num_days())
}

/// Microseconds since midnight of `HH:MM:SS[.ffffff]` (`24:00:00` allowed).
fn parse_time(s: &str) -> std::result::Result<i64, String> {
    let bad = || format!("bad time {s:?} (expected HH:MM:SS[.ffffff])");
    let mut parts = s.splitn(3, ':');
    let (Some(h), Some(m), Some(sec)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let frac_micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || !(0..=60).contains(&whole) {
        return Err(bad());
    }
    let micros = ((h * 60 + m) * 60 + whole) * MICROS_PER_SEC + frac_micros;
    if micros > MICROS_PER_DAY {
        return Err(bad());
    }
    Ok(micros)
}

/// Microseconds since the Unix epoch (UTC for values with an offset) of
/// `YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM[:SS]]][ BC]`.
fn parse_timestamp(s: &str) -> std::result::Result<i64, String> {
    let bad = || {
        format!(
            "bad timestamp {s:?} (expected ISO DateStyle; infinite timestamps have no Arrow form)"
        )
    };
    let (text, bc) = match s.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (s, false),
    };
    let (date, time) = text.split_once([' ', 'T']).ok_or_else(bad)?;
    // The offset starts at the first sign after the time of day.
    let (clock, offset) = match time.find(['+', '-']) {
        Some(i) => (&time[..i], Some(&time[i..])),
        None => (time, None),
    };
    let days = date_days(&if bc {
        format!("{date} BC")
    } else {
        date.to_string()
    })?;
    let mut micros = days
        .checked_mul(MICROS_PER_DAY)
        .and_then(|d| d.checked_add(parse_time(clock).ok()?))
        .ok_or_else(bad)?;
    if let Some(offset) = offset {
        let negative = offset.starts_with('-');
        let mut secs = 0i64;
        for (i, part) in offset[1..].split(':').enumerate() {
            let n: i64 = part.parse().map_err(|_| bad())?;
            if i > 2 || part.len() != 2 {
                return Err(bad());
            }
            secs += n * [3600, 60, 1][i];
        }
        // Local time = UTC + offset, so UTC = local − offset.
        let delta = if negative { -secs } else { secs } * MICROS_PER_SEC;
        micros = micros.checked_sub(delta).ok_or_else(bad)?;
    }
    Ok(micros)
}

/// Converts microseconds into `unit`, refusing to drop precision silently
/// only for overflow (seconds and milliseconds truncate like a cast).
fn micros_to_unit(micros: i64, unit: TimeUnit, s: &str) -> std::result::Result<i64, String> {
    match unit {
        TimeUnit::Second => Ok(micros.div_euclid(MICROS_PER_SEC)),
        TimeUnit::Millisecond => Ok(micros.div_euclid(1000)),
        TimeUnit::Microsecond => Ok(micros),
        TimeUnit::Nanosecond => micros
            .checked_mul(1000)
            .ok_or_else(|| format!("{s:?} is out of range for nanoseconds")),
    }
}

/// `interval` in the `postgres` IntervalStyle, e.g.
/// `1 year 2 mons -3 days +04:05:06.5`, as (months, days, nanoseconds).
fn parse_interval(
    s: &str,
) -> std::result::Result<
    <IntervalMonthDayNanoType as arrow_array::ArrowPrimitiveType>::Native,
    String,
> {
    let bad = || format!("bad interval {s:?} (expected IntervalStyle postgres)");
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    let mut tokens = s.split_whitespace();
    while let Some(tok) = tokens.next() {
        if tok.contains(':') {
            let (negative, clock) = match tok.as_bytes().first() {
                Some(b'-') => (true, &tok[1..]),
                Some(b'+') => (false, &tok[1..]),
                _ => (false, tok),
            };
            // Hours may exceed 24 in an interval: parse them separately.
            let (h, rest) = clock.split_once(':').ok_or_else(bad)?;
            let h: i64 = h.parse().map_err(|_| bad())?;
            let t = parse_time(&format!("00:{rest}"))?;
            let v = h * 3600 * MICROS_PER_SEC + t;
            micros += if negative { -v } else { v };
        } else {
            let n: i64 = tok.parse().map_err(|_| bad())?;
            match tokens.next().ok_or_else(bad)? {
                "year" | "years" => months += 12 * n,
                "mon" | "mons" => months += n,
                "day" | "days" => days += n,
                _ => return Err(bad()),
            }
        }
    }
    let months = i32::try_from(months).map_err(|_| bad())?;
    let days = i32::try_from(days).map_err(|_| bad())?;
    let nanos = micros.checked_mul(1000).ok_or_else(bad)?;
    Ok(IntervalMonthDayNanoType::make_value(months, days, nanos))
}

/// The elements of a one-dimensional array literal `{a,"b c",NULL}`
/// (optionally prefixed by bounds such as `[0:2]=`); `None` is NULL.
fn parse_array(s: &str) -> std::result::Result<Vec<Option<String>>, String> {
    let body = match s.strip_prefix('[') {
        Some(_) => s.split_once('=').map(|(_, b)| b).unwrap_or(s),
        None => s,
    };
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| format!("bad array {s:.40?} (expected {{…}})"))?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            Some('{') => {
                return Err(format!(
                    "multi-dimensional array {s:.40?}: only one-dimensional arrays are streamed"
                ))
            }
            Some('"') => {
                chars.next();
                let mut element = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => element.push(chars.next().ok_or("unterminated escape")?),
                        Some('"') => break,
                        Some(c) => element.push(c),
                        None => return Err(format!("unterminated quote in array {s:.40?}")),
                    }
                }
                out.push(Some(element));
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
            }
            _ => {
                let mut element = String::new();
                while let Some(c) = chars.next_if(|&c| c != ',') {
                    element.push(c);
                }
                let element = element.trim_end();
                if element.is_empty() {
                    return Err(format!("empty element in array {s:.40?}"));
                }
                out.push((!element.eq_ignore_ascii_case("NULL")).then(|| element.to_string()));
            }
        }
        match chars.next() {
            Some(',') => continue,
            None => return Ok(out),
            Some(c) => return Err(format!("unexpected {c:?} in array {s:.40?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int32Type};
    use arrow_array::Array;
    use arrow_schema::{Field, Schema};

    /// Builds a one-column batch of `data_type` from PostgreSQL text values.
    fn column(data_type: DataType, values: &[Option<&str>]) -> ArrayRef {
        let schema = Arc::new(Schema::new(vec![Field::new("c", data_type, true)]));
        let mut b = BatchBuilder::new(schema).expect("supported type");
        for v in values {
            b.push_row(std::iter::once(*v)).expect("parses");
        }
        b.finish().expect("batch").column(0).clone()
    }

    fn fails(data_type: DataType, value: &str) -> String {
        let schema = Arc::new(Schema::new(vec![Field::new("c", data_type, true)]));
        let mut b = BatchBuilder::new(schema).expect("supported type");
        match b.push_row(std::iter::once(Some(value))) {
            Err(Error::Decode { context, message }) => format!("{context}: {message}"),
            other => panic!("expected a decode error for {value:?}, got {other:?}"),
        }
    }

    #[test]
    fn integers_floats_booleans_and_nulls() {
        let a = column(DataType::Int32, &[Some("42"), None, Some("-2147483648")]);
        let a = a.as_primitive::<Int32Type>();
        assert_eq!(a.value(0), 42);
        assert!(a.is_null(1));
        assert_eq!(a.value(2), i32::MIN);
        let a = column(DataType::Int64, &[Some("9223372036854775807")]);
        assert_eq!(
            a.as_primitive::<arrow_array::types::Int64Type>().value(0),
            i64::MAX
        );
        let a = column(
            DataType::Float64,
            &[
                Some("0.1"),
                Some("-1.5e-300"),
                Some("NaN"),
                Some("Infinity"),
                Some("-Infinity"),
            ],
        );
        let a = a.as_primitive::<arrow_array::types::Float64Type>();
        assert_eq!(a.value(0), 0.1);
        assert_eq!(a.value(1), -1.5e-300);
        assert!(a.value(2).is_nan());
        assert_eq!(a.value(3), f64::INFINITY);
        assert_eq!(a.value(4), f64::NEG_INFINITY);
        let a = column(DataType::Boolean, &[Some("t"), Some("f"), None]);
        let a = a.as_boolean();
        assert!(a.value(0) && !a.value(1) && a.is_null(2));
        assert!(fails(DataType::Boolean, "yes").contains("bad boolean"));
        assert!(fails(DataType::Int16, "40000").contains("column \"c\""));
    }

    #[test]
    fn text_json_bytea_and_uuid() {
        let a = column(
            DataType::Utf8,
            &[Some("héllo, \"world\""), Some(r#"{"a": [1, 2]}"#)],
        );
        assert_eq!(a.as_string::<i32>().value(0), "héllo, \"world\"");
        assert_eq!(a.as_string::<i32>().value(1), r#"{"a": [1, 2]}"#);
        let a = column(DataType::Binary, &[Some("\\x00ff10Ab"), Some("\\x")]);
        assert_eq!(a.as_binary::<i32>().value(0), &[0x00, 0xff, 0x10, 0xab]);
        assert_eq!(a.as_binary::<i32>().value(1), &[] as &[u8]);
        assert!(fails(DataType::Binary, "\\001").contains("escape"));
        assert!(fails(DataType::Binary, "\\x0g").contains("hex digit"));
        let a = column(
            DataType::FixedSizeBinary(16),
            &[Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")],
        );
        let bytes = a.as_fixed_size_binary().value(0);
        assert_eq!(bytes[0], 0xa0);
        assert_eq!(bytes[15], 0x11);
    }

    #[test]
    fn numeric_to_decimal() {
        let dt = DataType::Decimal128(10, 2);
        let a = column(
            dt.clone(),
            &[
                Some("12.34"),
                Some("-0.5"),
                Some("7"),
                Some("1.005"),
                Some("-1.004"),
                Some(".25"),
            ],
        );
        let a = a.as_primitive::<arrow_array::types::Decimal128Type>();
        let got: Vec<i128> = (0..a.len()).map(|i| a.value(i)).collect();
        assert_eq!(got, [1234, -50, 700, 101, -100, 25]);
        assert!(fails(dt.clone(), "NaN").contains("NaN"));
        assert!(fails(dt.clone(), "123456789.00").contains("does not fit"));
        assert!(fails(dt, "1e5").contains("bad numeric"));
        // A negative scale keeps tens, hundreds, …
        assert_eq!(parse_decimal("1250", 5, -2), Ok(13));
        assert_eq!(parse_decimal("49", 5, -2), Ok(0));
        assert_eq!(
            parse_decimal("99999999999999999999999999999999999999", 38, 0),
            Ok(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
        assert!(parse_decimal("999999999999999999999999999999999999999", 38, 0).is_err());
    }

    #[test]
    fn dates_times_timestamps_and_intervals() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2024-02-29"), Ok(19782));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        // 1 BC is year 0 (a leap year); 0001-01-01 is 366 days later.
        assert_eq!(
            parse_date("0001-12-31 BC").map(|d| d + 1),
            parse_date("0001-01-01")
        );
        assert!(parse_date("infinity").is_err());
        assert!(parse_date("01/02/2024").is_err());

        assert_eq!(parse_time("00:00:00"), Ok(0));
        assert_eq!(
            parse_time("13:45:06.5"),
            Ok(((13 * 60 + 45) * 60 + 6) * 1_000_000 + 500_000)
        );
        assert_eq!(parse_time("24:00:00"), Ok(MICROS_PER_DAY));
        assert!(parse_time("25:00:00").is_err());
        assert!(parse_time("12:00:00.1234567").is_err());

        assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Ok(1_000_000));
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:00.000001"),
            Ok(946_684_800_000_001)
        );
        // The same instant written in three zones.
        let utc = parse_timestamp("2024-06-01 12:00:00+00");
        assert_eq!(parse_timestamp("2024-06-01 17:30:00+05:30"), utc);
        assert_eq!(parse_timestamp("2024-06-01 08:00:00-04"), utc);
        assert_eq!(parse_timestamp("1969-12-31 23:59:59.5"), Ok(-500_000));
        assert!(parse_timestamp("-infinity").is_err());
        let a = column(
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            &[Some("2024-06-01 12:00:00+00"), None],
        );
        assert_eq!(
            a.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            a.as_primitive::<arrow_array::types::TimestampMicrosecondType>()
                .value(0),
            utc.expect("parses")
        );
        assert!(a.is_null(1));
        let a = column(DataType::Date32, &[Some("2024-02-29")]);
        assert_eq!(
            a.as_primitive::<arrow_array::types::Date32Type>().value(0),
            19782
        );
        let a = column(DataType::Time64(TimeUnit::Microsecond), &[Some("00:00:01")]);
        assert_eq!(
            a.as_primitive::<arrow_array::types::Time64MicrosecondType>()
                .value(0),
            1_000_000
        );

        let v = parse_interval("1 year 2 mons -3 days +04:05:06.5").expect("parses");
        assert_eq!((v.months, v.days), (14, -3));
        assert_eq!(
            v.nanoseconds,
            ((4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000) * 1000
        );
        let v = parse_interval("-100:00:00").expect("parses");
        assert_eq!(v.nanoseconds, -100 * 3600 * 1_000_000_000);
        assert_eq!(parse_interval("00:00:00").map(|v| v.nanoseconds), Ok(0));
        assert!(parse_interval("P1Y").is_err());
    }

    #[test]
    fn one_dimensional_arrays() {
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let a = column(
            DataType::List(item),
            &[
                Some("{1.5,-2,NULL,NaN}"),
                None,
                Some("{}"),
                Some("[0:1]={3,4}"),
            ],
        );
        let list = a.as_list::<i32>();
        assert_eq!(list.len(), 4);
        let first = list.value(0);
        let first = first.as_primitive::<Float32Type>();
        assert_eq!(first.len(), 4);
        assert_eq!(first.value(0), 1.5);
        assert_eq!(first.value(1), -2.0);
        assert!(first.is_null(2));
        assert!(first.value(3).is_nan());
        assert!(list.is_null(1));
        assert_eq!(list.value(2).len(), 0);
        assert_eq!(
            list.value(3).as_primitive::<Float32Type>().values(),
            &[3.0, 4.0]
        );

        assert_eq!(
            parse_array(r#"{"a,b","say \"hi\"",NULL,"NULL", plain }"#),
            Ok(vec![
                Some("a,b".to_string()),
                Some("say \"hi\"".to_string()),
                None,
                Some("NULL".to_string()),
                Some("plain".to_string()),
            ])
        );
        assert!(parse_array("{{1,2},{3,4}}").is_err());
        assert!(parse_array("1,2").is_err());
        let ints = Arc::new(Field::new("item", DataType::Int32, true));
        assert!(fails(DataType::List(ints), "{1,x}").contains("bad number"));
    }

    #[test]
    fn text_data_rows_are_read_in_place_and_checked() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        use crate::data_row::tests::body;
        let mut b = BatchBuilder::new(schema.clone()).expect("builder");
        b.push_data_row(&body(&[Some(b"-7"), Some("é".as_bytes())]))
            .expect("row");
        b.push_data_row(&body(&[None, None])).expect("row");
        let batch = b.finish().expect("batch");
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(0),
            -7
        );
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "é");
        assert!(batch.column(0).is_null(1) && batch.column(1).is_null(1));
        let bad = b
            .push_data_row(&body(&[Some(b"1"), Some(b"\xff\xfe")]))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("not UTF-8"), "{bad}");
        let mut b = BatchBuilder::new(schema).expect("builder");
        let short = b
            .push_data_row(&body(&[Some(b"1")]))
            .unwrap_err()
            .to_string();
        assert!(short.contains("1 values for 2 planned columns"), "{short}");
    }

    #[test]
    fn batches_start_over_after_finish() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut b = BatchBuilder::new(schema.clone()).expect("builder");
        b.push_row([Some("1"), Some("a")].into_iter()).expect("row");
        b.push_row([Some("2"), None].into_iter()).expect("row");
        assert_eq!((b.rows(), b.text_bytes()), (2, 4));
        let first = b.finish().expect("batch");
        assert_eq!(first.num_rows(), 2);
        assert_eq!(b.rows(), 0);
        b.push_row([Some("3"), Some("c")].into_iter()).expect("row");
        let second = b.finish().expect("batch");
        assert_eq!(second.num_rows(), 1);
        assert_eq!(second.schema(), schema);
        assert!(
            b.push_row([Some("1")].into_iter()).is_err(),
            "wrong arity is an error"
        );
        let unsupported = Arc::new(Schema::new(vec![Field::new("x", DataType::Float16, true)]));
        assert!(matches!(
            BatchBuilder::new(unsupported),
            Err(Error::UnsupportedType { .. })
        ));
    }
}
