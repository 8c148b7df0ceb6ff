//! The PostgreSQL → Arrow type mapping, in one place, and a decoder of
//! PostgreSQL's binary `COPY` format straight into Arrow arrays.
//!
//! # Why a hand-written decoder
//!
//! `COPY (<query>) TO STDOUT (FORMAT binary)` is the fastest way out of a
//! PostgreSQL backend; going through `tokio_postgres` rows instead costs an
//! allocation per row and a `FromSql` dispatch per value. [`CopyDecoder`]
//! walks the COPY bytes once and appends every value to its column's Arrow
//! buffers (`binary_column`): no per-value allocation or call, and
//! text is validated as UTF-8 once per batch rather than once per value.
//!
//! # The mapping
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | `int2`, `int4`, `int8` | `Int16`, `Int32`, `Int64` |
//! | `float4`, `float8` | `Float32`, `Float64` |
//! | `bool` | `Boolean` |
//! | `text`, `varchar`, `bpchar`, `name`, `json`, `jsonb` | `Utf8` |
//! | `bytea` | `Binary` |
//! | `numeric(p,s)`, p ≤ 38 | `Decimal128(p,s)` |
//! | `date` | `Date32` |
//! | `time` | `Time64(µs)` |
//! | `timestamp` | `Timestamp(µs, None)` |
//! | `timestamptz` | `Timestamp(µs, "UTC")` |
//! | `uuid` | `FixedSizeBinary(16)`, extension `arrow.uuid` |
//! | `int2[]` … `float8[]` (one dimension) | `List<Int16>` … `List<Float64>` |
//!
//! Every column is nullable (PostgreSQL does not say whether a query's
//! column can be NULL). Anything else is refused up front with
//! [`Error::UnsupportedType`], which tells the user how to cast it.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, SchemaRef, TimeUnit};
use postgres_types::Type;

use crate::batch_limits::BatchLimits;
use crate::binary_column::BinaryColumn;
use crate::error::{Error, Result};

/// Field metadata key of Arrow extension types.
const EXTENSION_NAME: &str = "ARROW:extension:name";
/// The canonical Arrow extension type for UUIDs.
const UUID_EXTENSION: &str = "arrow.uuid";

/// Largest precision a `Decimal128` holds.
const MAX_DECIMAL128_PRECISION: i32 = 38;

/// The Arrow field for a result column of PostgreSQL type `ty` with type
/// modifier `typmod` (as a driver's column description reports it, e.g.
/// `tokio_postgres::Column::type_modifier`;
/// -1 when there is none).
pub fn arrow_field(name: &str, ty: &Type, typmod: i32) -> Result<Field> {
    let list = |dt: DataType| DataType::List(Arc::new(Field::new_list_field(dt, true)));
    let data_type = match *ty {
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::BOOL => DataType::Boolean,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::JSONB => {
            DataType::Utf8
        }
        Type::BYTEA => DataType::Binary,
        Type::NUMERIC => numeric_type(name, typmod)?,
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::UUID => {
            return Ok(Field::new(name, DataType::FixedSizeBinary(16), true)
                .with_metadata([(EXTENSION_NAME.to_owned(), UUID_EXTENSION.to_owned())].into()))
        }
        Type::INT2_ARRAY => list(DataType::Int16),
        Type::INT4_ARRAY => list(DataType::Int32),
        Type::INT8_ARRAY => list(DataType::Int64),
        Type::FLOAT4_ARRAY => list(DataType::Float32),
        Type::FLOAT8_ARRAY => list(DataType::Float64),
        _ => {
            return Err(Error::UnsupportedType {
                column: name.to_owned(),
                type_name: ty.name().to_owned(),
            })
        }
    };
    Ok(Field::new(name, data_type, true))
}

/// `numeric(p,s)` → `Decimal128(p,s)`. An unconstrained `numeric` has no
/// fixed scale, so no Arrow decimal type can hold every value exactly: the
/// user has to choose one.
fn numeric_type(column: &str, typmod: i32) -> Result<DataType> {
    let refuse = |what: String| Error::UnsupportedType {
        column: column.to_owned(),
        type_name: format!(
            "{what} (hopper needs numeric(p,s) with p <= {MAX_DECIMAL128_PRECISION}: \
             cast to numeric(p,s) or float8)"
        ),
    };
    if typmod < 4 {
        return Err(refuse("numeric without precision and scale".into()));
    }
    // PostgreSQL packs ((precision << 16) | (scale & 0x7ff)) + VARHDRSZ; the
    // scale is an 11-bit two's complement number since PostgreSQL 15.
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    if precision > MAX_DECIMAL128_PRECISION || !(-128..=127).contains(&scale) || scale > precision {
        return Err(refuse(format!("numeric({precision},{scale})")));
    }
    Ok(DataType::Decimal128(precision as u8, scale as i8))
}

/// The 11-byte signature that opens every binary COPY stream.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags and header-extension length.
const HEADER_LEN: usize = 11 + 4 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    Rows,
    Done,
    /// Rows one by one, without COPY's header and trailer
    /// ([`CopyDecoder::for_data_rows`]).
    DataRows,
    /// A row failed to decode part way: the columns no longer line up, so
    /// the decoder takes nothing more (the stream it read is abandoned).
    Failed,
}

/// Decodes PostgreSQL's binary `COPY … TO STDOUT` stream into record batches.
///
/// Feed it the stream chunk by chunk with [`push`](Self::push) (chunks may
/// split rows anywhere); whenever [`ready`](Self::ready) says so, take the
/// finished batches with [`take_batch`](Self::take_batch). At the end of the
/// stream call [`finish`](Self::finish), then drain `take_batch` once more.
/// Batches close as soon as either of the [`BatchLimits`] is reached.
pub struct CopyDecoder {
    schema: SchemaRef,
    cols: Vec<BinaryColumn>,
    limits: BatchLimits,
    state: State,
    /// Bytes of a row (or of the header) that straddles a chunk boundary.
    carry: Vec<u8>,
    rows: usize,
    bytes: usize,
    done: VecDeque<RecordBatch>,
}

impl std::fmt::Debug for CopyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyDecoder")
            .field("schema", &self.schema)
            .field("state", &self.state)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl CopyDecoder {
    /// A decoder for rows of `schema`, whose columns have PostgreSQL types
    /// `types` (the schema must come from [`arrow_field`] for those types).
    pub fn new(schema: SchemaRef, types: &[Type], limits: BatchLimits) -> Result<Self> {
        if schema.fields().len() != types.len() {
            return Err(Error::Internal(format!(
                "decoder built with {} fields but {} PostgreSQL types",
                schema.fields().len(),
                types.len()
            )));
        }
        let cols = schema
            .fields()
            .iter()
            .zip(types)
            .map(|(f, t)| BinaryColumn::new(f, t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema,
            cols,
            limits: BatchLimits {
                rows: limits.rows.max(1),
                bytes: limits.bytes.max(1),
            },
            state: State::Header,
            carry: Vec::new(),
            rows: 0,
            bytes: 0,
            done: VecDeque::new(),
        })
    }

    /// A decoder of rows handed over one at a time with
    /// [`push_data_row`](Self::push_data_row): the bodies of the `DataRow`
    /// messages of a query whose results were asked for in binary format.
    ///
    /// A binary `DataRow` body is laid out exactly as a binary COPY tuple —
    /// a 16-bit field count, then per field a 32-bit length (-1 for NULL)
    /// and the value's `send` bytes — so both go through the same column
    /// decoders and give the same Arrow values. There is no stream header
    /// or trailer: [`finish`](Self::finish) only closes the last batch.
    pub fn for_data_rows(schema: SchemaRef, types: &[Type], limits: BatchLimits) -> Result<Self> {
        let mut decoder = Self::new(schema, types, limits)?;
        decoder.state = State::DataRows;
        Ok(decoder)
    }

    /// Decodes one complete row: a binary `DataRow` message's body. A body
    /// whose fields do not add up to its length, or whose field count is
    /// not the schema's, is an error naming what was wrong.
    pub fn push_data_row(&mut self, body: &[u8]) -> Result<()> {
        if self.state == State::Failed {
            return Err(failed());
        }
        if self.state != State::DataRows {
            return Err(Error::Internal(
                "push_data_row on a decoder of COPY streams (use CopyDecoder::for_data_rows)"
                    .into(),
            ));
        }
        let ncols = self.cols.len();
        let nfields = match body {
            [a, b, ..] => i16::from_be_bytes([*a, *b]),
            _ => return Err(decode_error("DataRow", format!("{} bytes", body.len()))),
        };
        if nfields < 0 || nfields as usize != ncols {
            return Err(decode_error(
                "DataRow",
                format!("row has {nfields} fields, the query {ncols} columns"),
            ));
        }
        match self.append_tuple(body)? {
            Some(len) if len == body.len() => self.end_row(len),
            Some(len) => {
                self.take_back(self.cols.len());
                self.state = State::Failed;
                Err(decode_error(
                    "DataRow",
                    format!("{} bytes after the row's {len}", body.len() - len),
                ))
            }
            None => {
                self.state = State::Failed;
                Err(decode_error(
                    "DataRow",
                    format!("fields run past the row's {} bytes", body.len()),
                ))
            }
        }
    }

    /// The schema of the batches this decoder produces.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes every complete row in `chunk` (plus what earlier chunks left
    /// over); keeps an incomplete trailing row for the next call.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if self.state == State::DataRows {
            return Err(Error::Internal(
                "push on a decoder of DataRow messages (use push_data_row)".into(),
            ));
        }
        if self.state == State::Failed {
            return Err(failed());
        }
        if self.carry.is_empty() {
            let used = self.decode(chunk)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            let used = self.decode(&buf)?;
            buf.drain(..used);
            self.carry = buf;
        }
        Ok(())
    }

    /// Whether a finished batch is waiting in [`take_batch`](Self::take_batch).
    pub fn ready(&self) -> bool {
        !self.done.is_empty()
    }

    /// The oldest finished batch, if any.
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>> {
        Ok(self.done.pop_front())
    }

    /// Ends the stream: checks that it was complete and closes the last,
    /// partial batch (take it with [`take_batch`](Self::take_batch)).
    pub fn finish(&mut self) -> Result<()> {
        if self.state == State::Failed {
            return Err(failed());
        }
        let ended = matches!(self.state, State::Done | State::DataRows);
        if !ended || !self.carry.is_empty() {
            return Err(decode_error(
                "COPY stream",
                format!(
                    "the stream ended early ({} bytes of an unfinished {})",
                    self.carry.len(),
                    if self.state == State::Header {
                        "header"
                    } else {
                        "row"
                    }
                ),
            ));
        }
        if self.rows > 0 {
            self.flush()?;
        }
        Ok(())
    }

    /// Decodes complete rows from `buf`; returns how many bytes were used.
    fn decode(&mut self, buf: &[u8]) -> Result<usize> {
        let mut pos = 0;
        if self.state == State::Header {
            if buf.len() < HEADER_LEN {
                return Ok(0);
            }
            if &buf[..11] != SIGNATURE {
                return Err(decode_error(
                    "COPY header",
                    "not a binary COPY stream".into(),
                ));
            }
            let flags = be_u32(&buf[11..15]);
            if flags & (1 << 16) != 0 {
                return Err(decode_error("COPY header", "rows carry OIDs".into()));
            }
            let ext = be_u32(&buf[15..19]) as usize;
            if buf.len() < HEADER_LEN + ext {
                return Ok(0);
            }
            pos = HEADER_LEN + ext;
            self.state = State::Rows;
        }
        let ncols = self.cols.len();
        while self.state == State::Rows {
            let rest = &buf[pos..];
            if rest.len() < 2 {
                break;
            }
            let nfields = i16::from_be_bytes([rest[0], rest[1]]);
            if nfields == -1 {
                self.state = State::Done;
                pos += 2;
                break;
            }
            if nfields as usize != ncols {
                return Err(decode_error(
                    "COPY row",
                    format!("row has {nfields} fields, the query {ncols} columns"),
                ));
            }
            // One pass: a row cut off at the end of `buf` is taken back
            // and waits for the next chunk.
            let Some(row_len) = self.append_tuple(rest)? else {
                break;
            };
            self.end_row(row_len)?;
            pos += row_len;
        }
        if self.state == State::Done && pos < buf.len() {
            return Err(decode_error(
                "COPY stream",
                format!("{} bytes after the trailer", buf.len() - pos),
            ));
        }
        Ok(pos)
    }

    /// Appends the values of the tuple at the start of `buf` (its field
    /// count already checked): `Some(length)` of the tuple, which
    /// [`end_row`](Self::end_row) then counts, or `None` if it does not end
    /// within `buf` (nothing of it is kept). A value that is malformed
    /// fails the decoder for good ([`State::Failed`]): the stream it came
    /// from cannot be trusted.
    #[inline]
    fn append_tuple(&mut self, buf: &[u8]) -> Result<Option<usize>> {
        let mut p = 2;
        for i in 0..self.cols.len() {
            let Some(word) = buf.get(p..p + 4) else {
                return Ok(self.take_back(i));
            };
            let len = i32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            p += 4;
            let value = if len >= 0 {
                let end = p + len as usize;
                let Some(value) = buf.get(p..end) else {
                    return Ok(self.take_back(i));
                };
                p = end;
                Some(value)
            } else if len == -1 {
                None
            } else {
                self.state = State::Failed;
                return Err(decode_error("row", format!("field length {len}")));
            };
            if let Err(message) = self.cols[i].append(value) {
                self.state = State::Failed;
                return Err(decode_error(
                    &format!("column \"{}\"", self.schema.field(i).name()),
                    message,
                ));
            }
        }
        Ok(Some(p))
    }

    /// Counts the row just appended, of `len` bytes, and closes the batch
    /// at the limits.
    #[inline]
    fn end_row(&mut self, len: usize) -> Result<()> {
        self.rows += 1;
        self.bytes += len;
        if self.rows >= self.limits.rows || self.bytes >= self.limits.bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Takes back the values the first `appended` columns took of a row
    /// that does not end in the bytes at hand.
    #[cold]
    fn take_back(&mut self, appended: usize) -> Option<usize> {
        for col in &mut self.cols[..appended] {
            col.truncate(self.rows);
        }
        None
    }

    /// Closes the current batch and queues it. A batch that cannot be
    /// made (text that is not UTF-8) fails the decoder: its columns were
    /// emptied part way.
    fn flush(&mut self) -> Result<()> {
        let arrays = self
            .cols
            .iter_mut()
            .zip(self.schema.fields())
            .map(|(c, f)| c.finish(f))
            .collect::<Result<Vec<_>>>();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let batch = arrays.and_then(|arrays| {
            Ok(RecordBatch::try_new_with_options(
                self.schema.clone(),
                arrays,
                &options,
            )?)
        });
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                self.state = State::Failed;
                return Err(e);
            }
        };
        self.done.push_back(batch);
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }
}

/// The error of a decoder used after a row failed.
#[cold]
fn failed() -> Error {
    Error::Internal("the decoder failed on an earlier row; its stream cannot go on".into())
}

#[cold]
fn decode_error(context: &str, message: String) -> Error {
    Error::Decode {
        context: context.to_owned(),
        message,
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary_column::{numeric_to_i128, PG_EPOCH_DAYS, PG_EPOCH_MICROS, POW10};
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Decimal128Type, TimestampMicrosecondType};
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};
    use arrow_array::Array;
    use arrow_schema::Schema;

    /// Builds binary COPY bytes from rows of optional raw field values.
    fn copy_bytes(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u32.to_be_bytes());
        out.extend_from_slice(b"ext!");
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// A binary `numeric` from sign, weight, dscale and base-10000 digits.
    fn numeric(neg: bool, weight: i16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&(if neg { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    /// The length of the (whole, well-formed) tuple at the start of `buf`.
    fn tuple_len(buf: &[u8], ncols: usize) -> usize {
        let mut p = 2;
        for _ in 0..ncols {
            let len = i32::from_be_bytes(buf[p..p + 4].try_into().unwrap());
            p += 4 + len.max(0) as usize;
        }
        p
    }

    fn typmod(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    fn decoder(cols: &[(&str, Type, i32)], limits: BatchLimits) -> CopyDecoder {
        let fields = cols
            .iter()
            .map(|(n, t, m)| arrow_field(n, t, *m).unwrap())
            .collect::<Vec<_>>();
        let types = cols.iter().map(|c| c.1.clone()).collect::<Vec<_>>();
        CopyDecoder::new(Arc::new(Schema::new(fields)), &types, limits).unwrap()
    }

    fn decode_all(d: &mut CopyDecoder, chunks: &[&[u8]]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for c in chunks {
            d.push(c)?;
            while let Some(b) = d.take_batch()? {
                out.push(b);
            }
        }
        d.finish()?;
        while let Some(b) = d.take_batch()? {
            out.push(b);
        }
        Ok(out)
    }

    fn array(elem_oid: u32, elems: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&1i32.to_be_bytes());
        v.extend_from_slice(&(elems.iter().any(Option::is_none) as i32).to_be_bytes());
        v.extend_from_slice(&elem_oid.to_be_bytes());
        v.extend_from_slice(&(elems.len() as i32).to_be_bytes());
        v.extend_from_slice(&1i32.to_be_bytes());
        for e in elems {
            match e {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    fn small_input() -> (Vec<(&'static str, Type, i32)>, Vec<u8>) {
        let cols = vec![
            ("i", Type::INT4, -1),
            ("t", Type::TEXT, -1),
            ("n", Type::NUMERIC, typmod(10, 4)),
            ("a", Type::INT8_ARRAY, -1),
            ("j", Type::JSONB, -1),
        ];
        let rows = vec![
            vec![
                Some(7i32.to_be_bytes().to_vec()),
                Some("héllo".as_bytes().to_vec()),
                Some(numeric(false, 1, 4, &[1, 2345, 6789])),
                Some(array(
                    Type::INT8.oid(),
                    &[Some(5i64.to_be_bytes().to_vec()), None],
                )),
                Some(b"\x01{\"a\": 1}".to_vec()),
            ],
            vec![None, None, None, None, None],
            vec![
                Some((-1i32).to_be_bytes().to_vec()),
                Some(Vec::new()),
                Some(numeric(true, 0, 4, &[3, 1400])),
                Some(array(Type::INT8.oid(), &[])),
                Some(b"\x01[]".to_vec()),
            ],
        ];
        (cols, copy_bytes(&rows))
    }

    fn check_small(batches: &[RecordBatch]) {
        let batch = arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap();
        assert_eq!(batch.num_rows(), 3);
        let i = batch.column(0).as_primitive::<Int32Type>();
        assert_eq!((i.value(0), i.is_null(1), i.value(2)), (7, true, -1));
        let t = batch.column(1).as_string::<i32>();
        assert_eq!((t.value(0), t.is_null(1), t.value(2)), ("héllo", true, ""));
        let n = batch.column(2).as_primitive::<Decimal128Type>();
        assert_eq!(n.value_as_string(0), "12345.6789");
        assert!(n.is_null(1));
        assert_eq!(n.value_as_string(2), "-3.1400");
        let a = batch.column(3).as_list::<i32>();
        let first = a.value(0);
        let first = first.as_primitive::<Int64Type>();
        assert_eq!(
            (first.len(), first.value(0), first.is_null(1)),
            (2, 5, true)
        );
        assert!(a.is_null(1));
        assert_eq!(a.value(2).len(), 0);
        let j = batch.column(4).as_string::<i32>();
        assert_eq!(
            (j.value(0), j.is_null(1), j.value(2)),
            ("{\"a\": 1}", true, "[]")
        );
    }

    #[test]
    fn decodes_rows_split_at_every_byte_offset() {
        let (cols, bytes) = small_input();
        for cut in 0..=bytes.len() {
            let mut d = decoder(&cols, BatchLimits::default());
            let batches = decode_all(&mut d, &[&bytes[..cut], &bytes[cut..]]).unwrap();
            check_small(&batches);
        }
        // And one byte at a time.
        let mut d = decoder(&cols, BatchLimits::default());
        let chunks = bytes.chunks(1).collect::<Vec<_>>();
        check_small(&decode_all(&mut d, &chunks).unwrap());
    }

    #[test]
    fn data_row_bodies_decode_as_the_copy_tuples_they_equal() {
        let (cols, bytes) = small_input();
        let fields = cols
            .iter()
            .map(|(n, t, m)| arrow_field(n, t, *m).unwrap())
            .collect::<Vec<_>>();
        let types = cols.iter().map(|c| c.1.clone()).collect::<Vec<_>>();
        let schema = Arc::new(Schema::new(fields));
        let limits = BatchLimits {
            rows: 2,
            ..BatchLimits::default()
        };
        let mut d = CopyDecoder::for_data_rows(schema.clone(), &types, limits).unwrap();
        // The tuples between the header (with its 4-byte extension) and
        // the trailer, one DataRow body each.
        let mut rest = &bytes[HEADER_LEN + 4..bytes.len() - 2];
        while !rest.is_empty() {
            let len = tuple_len(rest, cols.len());
            d.push_data_row(&rest[..len]).unwrap();
            rest = &rest[len..];
        }
        d.finish().unwrap();
        let mut batches = Vec::new();
        while let Some(b) = d.take_batch().unwrap() {
            batches.push(b);
        }
        assert_eq!(batches.len(), 2, "closed at the row limit");
        check_small(&batches);

        // A body that is not one whole row says so; COPY bytes are refused.
        let mut d = CopyDecoder::for_data_rows(schema.clone(), &types, limits).unwrap();
        let row = &bytes[HEADER_LEN + 4..];
        let first = tuple_len(row, cols.len());
        let short = d.push_data_row(&row[..first - 1]).unwrap_err().to_string();
        assert!(short.contains("run past"), "{short}");
        // Columns filled part way: the decoder takes nothing more.
        let after = d.push_data_row(&row[..first]).unwrap_err().to_string();
        assert!(after.contains("failed on an earlier row"), "{after}");
        assert!(d.finish().is_err());
        let mut d = CopyDecoder::for_data_rows(schema.clone(), &types, limits).unwrap();
        d.push_data_row(&row[..first]).unwrap();
        let long = d.push_data_row(&row[..first + 1]).unwrap_err().to_string();
        assert!(long.contains("bytes after the row"), "{long}");
        assert!(!d.ready(), "the row with bytes after it closed no batch");
        let mut d = CopyDecoder::for_data_rows(schema, &types, limits).unwrap();
        let count = d.push_data_row(&[0, 2]).unwrap_err().to_string();
        assert!(count.contains("2 fields, the query 5 columns"), "{count}");
        assert!(d.push(&bytes).is_err());
    }

    #[test]
    fn closes_batches_at_the_row_limit() {
        let (cols, bytes) = small_input();
        let mut d = decoder(
            &cols,
            BatchLimits {
                rows: 2,
                bytes: usize::MAX,
            },
        );
        let batches = decode_all(&mut d, &[&bytes]).unwrap();
        assert_eq!(
            batches
                .iter()
                .map(RecordBatch::num_rows)
                .collect::<Vec<_>>(),
            [2, 1]
        );
        check_small(&batches);

        let mut d = decoder(
            &cols,
            BatchLimits {
                rows: 100,
                bytes: 1,
            },
        );
        let batches = decode_all(&mut d, &[&bytes]).unwrap();
        assert_eq!(batches.len(), 3, "the byte limit closes a batch per row");
    }

    #[test]
    fn numeric_converts_exactly() {
        // (value as PostgreSQL sends it, scale, expected unscaled integer)
        let cases: Vec<(Vec<u8>, i32, i128)> = vec![
            (numeric(false, 0, 0, &[]), 2, 0),
            (numeric(false, 1, 4, &[1, 2345, 6789]), 4, 123_456_789),
            (numeric(true, 1, 4, &[1, 2345, 6789]), 4, -123_456_789),
            // 1e-5 = 0.0000|1000 → weight -2, digit 1000; at scale 6 it is 10.
            (numeric(false, -2, 5, &[1000]), 6, 10),
            (numeric(true, 0, 0, &[42]), 0, -42),
            // 10000 = one digit of weight 1.
            (numeric(false, 1, 0, &[1]), 3, 10_000_000),
            // 0.5 at scale 1: the digit 5000 loses three trailing zeros.
            (numeric(false, -1, 1, &[5000]), 1, 5),
            // 10^36 + 0.5 at numeric(38,1): 38 digits, the top of Decimal128.
            (
                numeric(false, 9, 1, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5000]),
                1,
                POW10[37] + 5,
            ),
        ];
        for (v, scale, want) in cases {
            assert_eq!(numeric_to_i128(&v, scale), Ok(want), "scale {scale}");
        }
        assert!(numeric_to_i128(&numeric(false, -1, 2, &[1234]), 1)
            .unwrap_err()
            .contains("fractional"));
        let mut nan = numeric(false, 0, 0, &[]);
        nan[4..6].copy_from_slice(&0xC000u16.to_be_bytes());
        assert!(numeric_to_i128(&nan, 2).unwrap_err().contains("NaN"));
        assert!(numeric_to_i128(&numeric(false, 12, 0, &[1]), 0)
            .unwrap_err()
            .contains("does not fit"));
    }

    #[test]
    fn nan_names_the_column() {
        let mut nan = numeric(false, 0, 0, &[]);
        nan[4..6].copy_from_slice(&0xC000u16.to_be_bytes());
        let mut d = decoder(
            &[("price", Type::NUMERIC, typmod(10, 2))],
            BatchLimits::default(),
        );
        let e = decode_all(&mut d, &[&copy_bytes(&[vec![Some(nan)]])]).unwrap_err();
        assert!(
            e.to_string().contains("\"price\"") && e.to_string().contains("NaN"),
            "{e}"
        );
    }

    /// Rows of every column kind, NULLs among them, so that a row cut off
    /// at any byte is taken back from every kind of column, its validity
    /// bitmap included.
    fn every_kind_input() -> (Vec<(&'static str, Type, i32)>, Vec<u8>) {
        let cols = vec![
            ("b", Type::BOOL, -1),
            ("s", Type::INT2, -1),
            ("t", Type::TEXT, -1),
            ("u", Type::UUID, -1),
            ("y", Type::BYTEA, -1),
            ("d", Type::DATE, -1),
            ("f", Type::FLOAT4_ARRAY, -1),
            ("n", Type::NUMERIC, typmod(6, 2)),
        ];
        let value_row = |k: u8| {
            vec![
                Some(vec![k % 2]),
                Some(i16::from(k).to_be_bytes().to_vec()),
                Some(format!("ü{k}").into_bytes()),
                Some(vec![k; 16]),
                Some(vec![0, k, 255]),
                Some(i32::from(k).to_be_bytes().to_vec()),
                Some(array(
                    Type::FLOAT4.oid(),
                    &[None, Some(f32::from(k).to_be_bytes().to_vec())],
                )),
                Some(numeric(false, 0, 2, &[i16::from(k), 5000])),
            ]
        };
        let rows = vec![value_row(1), vec![None; 8], value_row(2), value_row(3)];
        (cols, copy_bytes(&rows))
    }

    #[test]
    fn every_kind_of_column_decodes_the_same_wherever_the_chunks_end() {
        let (cols, bytes) = every_kind_input();
        let whole = decode_all(&mut decoder(&cols, BatchLimits::default()), &[&bytes]).unwrap();
        assert_eq!(whole.len(), 1);
        let want = &whole[0];
        assert_eq!(want.num_rows(), 4);
        assert_eq!(want.column(2).as_string::<i32>().value(3), "ü3");
        assert_eq!(want.column(4).as_binary::<i32>().value(2), &[0, 2, 255]);
        assert!(want.columns().iter().all(|c| c.is_null(1)));
        for cut in 0..=bytes.len() {
            let mut d = decoder(&cols, BatchLimits::default());
            let got = decode_all(&mut d, &[&bytes[..cut], &bytes[cut..]]).unwrap();
            let got = arrow::compute::concat_batches(&want.schema(), &got).unwrap();
            assert_eq!(&got, want, "cut at byte {cut}");
        }
        // Batches of one row each, cut one byte at a time.
        let mut d = decoder(
            &cols,
            BatchLimits {
                rows: 1,
                bytes: usize::MAX,
            },
        );
        let got = decode_all(&mut d, &bytes.chunks(1).collect::<Vec<_>>()).unwrap();
        assert_eq!(got.len(), 4);
        let got = arrow::compute::concat_batches(&want.schema(), &got).unwrap();
        assert_eq!(&got, want);
    }

    #[test]
    fn text_that_is_not_utf8_names_its_column() {
        let cols = [("i", Type::INT4, -1), ("t", Type::TEXT, -1)];
        for bad in [&b"\xff"[..], b"ok\xc3", b"\xc3\xa9\xe9"] {
            let rows = vec![
                vec![Some(1i32.to_be_bytes().to_vec()), Some(b"fine".to_vec())],
                vec![Some(2i32.to_be_bytes().to_vec()), Some(bad.to_vec())],
            ];
            let mut d = decoder(&cols, BatchLimits::default());
            let err = decode_all(&mut d, &[&copy_bytes(&rows)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("column \"t\"") && err.contains("not UTF-8"),
                "{err}"
            );
            let after = d.push(&copy_bytes(&rows)[..20]).unwrap_err().to_string();
            assert!(after.contains("failed on an earlier row"), "{after}");
        }
    }

    #[test]
    fn maps_dates_times_uuids_and_nulls() {
        let cols = [
            ("d", Type::DATE, -1),
            ("ts", Type::TIMESTAMP, -1),
            ("tz", Type::TIMESTAMPTZ, -1),
            ("u", Type::UUID, -1),
            ("b", Type::BOOL, -1),
            ("f", Type::FLOAT8, -1),
            ("tm", Type::TIME, -1),
        ];
        let uuid: Vec<u8> = (0u8..16).collect();
        let rows = vec![
            vec![
                Some(1i32.to_be_bytes().to_vec()),
                Some(1_000_000i64.to_be_bytes().to_vec()),
                Some((-1i64).to_be_bytes().to_vec()),
                Some(uuid.clone()),
                Some(vec![1]),
                Some(2.5f64.to_be_bytes().to_vec()),
                Some(3_600_000_000i64.to_be_bytes().to_vec()),
            ],
            vec![None; 7],
        ];
        let mut d = decoder(&cols, BatchLimits::default());
        let b = &decode_all(&mut d, &[&copy_bytes(&rows)]).unwrap()[0];
        assert_eq!(
            b.column(0).as_primitive::<Date32Type>().value(0),
            PG_EPOCH_DAYS + 1
        );
        let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), PG_EPOCH_MICROS + 1_000_000);
        assert_eq!(
            b.column(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(b.column(3).as_fixed_size_binary().value(0), &uuid[..]);
        assert_eq!(
            b.schema()
                .field(3)
                .metadata()
                .get(EXTENSION_NAME)
                .map(String::as_str),
            Some(UUID_EXTENSION)
        );
        assert!(b.column(4).as_boolean().value(0));
        assert_eq!(b.column(5).as_primitive::<Float64Type>().value(0), 2.5);
        for c in b.columns() {
            assert!(c.is_null(1), "{}", c.data_type());
        }
    }

    #[test]
    fn refuses_unsupported_types_clearly() {
        let e = arrow_field("n", &Type::NUMERIC, -1).unwrap_err();
        assert!(matches!(e, Error::UnsupportedType { .. }));
        assert!(e.to_string().contains("numeric(p,s)"), "{e}");
        assert!(arrow_field("n", &Type::NUMERIC, typmod(39, 0)).is_err());
        assert_eq!(
            arrow_field("n", &Type::NUMERIC, typmod(12, 3))
                .unwrap()
                .data_type(),
            &DataType::Decimal128(12, 3)
        );
        let e = arrow_field("iv", &Type::INTERVAL, -1).unwrap_err();
        assert!(e.to_string().contains("interval") && e.to_string().contains("\"iv\""));
    }

    #[test]
    fn rejects_multidimensional_arrays_and_bad_input() {
        let mut two_d = Vec::new();
        for w in [2i32, 0, Type::INT4.oid() as i32, 1, 1, 1, 1] {
            two_d.extend_from_slice(&w.to_be_bytes());
        }
        let mut d = decoder(&[("m", Type::INT4_ARRAY, -1)], BatchLimits::default());
        let e = decode_all(&mut d, &[&copy_bytes(&[vec![Some(two_d)]])]).unwrap_err();
        assert!(e.to_string().contains("one-dimensional"), "{e}");

        let mut d = decoder(&[("i", Type::INT4, -1)], BatchLimits::default());
        let e = decode_all(&mut d, &[&copy_bytes(&[vec![Some(vec![1, 2])]])]).unwrap_err();
        assert!(e.to_string().contains("\"i\""), "{e}");

        let mut d = decoder(&[("i", Type::INT4, -1)], BatchLimits::default());
        assert!(d.push(b"COPY 1\n\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").is_err());

        let (cols, bytes) = small_input();
        let mut d = decoder(&cols, BatchLimits::default());
        let e = decode_all(&mut d, &[&bytes[..bytes.len() - 3]]).unwrap_err();
        assert!(e.to_string().contains("ended early"), "{e}");

        let mut d = decoder(&[("t", Type::TEXT, -1)], BatchLimits::default());
        let e = decode_all(&mut d, &[&copy_bytes(&[vec![Some(vec![0xff, 0xfe])]])]).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }
}
