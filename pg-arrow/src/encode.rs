//! Arrow → PostgreSQL: the write half of the type mapping, and an encoder
//! of record batches into PostgreSQL's binary `COPY … FROM STDIN` format.
//!
//! `DoPut` streams the client's batches into `COPY <table> (<cols>) FROM
//! STDIN (FORMAT binary)`: [`CopyEncoder`] turns one record batch into one
//! chunk of COPY data, so the upload goes to the database batch by batch
//! and the server never holds more than the batch in flight. Binary COPY
//! is the inverse of what [`crate::CopyDecoder`] reads, and the
//! round-trip tests below hold the two to each other.
//!
//! # The mapping
//!
//! | Arrow | PostgreSQL (`create`) | also accepted by existing columns of type |
//! |---|---|---|
//! | `Int16`, `Int32`, `Int64` | `int2`, `int4`, `int8` | |
//! | `Float32`, `Float64` | `float4`, `float8` | |
//! | `Boolean` | `bool` | |
//! | `Utf8`, `LargeUtf8` | `text` | `varchar`, `bpchar` |
//! | `Binary`, `LargeBinary` | `bytea` | |
//! | `Date32` | `date` | |
//! | `Timestamp(µs, None)` | `timestamp` | |
//! | `Timestamp(µs, tz)` | `timestamptz` | |
//!
//! Anything else is refused with [`Error::Unwritable`] naming the column,
//! before a byte reaches the database.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef, TimeUnit};
use bytes::{BufMut, Bytes, BytesMut};
use postgres_types::Type;

use crate::error::{Error, Result};
use crate::ident::Ident;

/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The 11-byte signature, flags (0) and header-extension length (0).
const HEADER: &[u8; 19] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count -1 that ends the rows.
const TRAILER: &[u8; 2] = b"\xff\xff";

/// The column type `CREATE TABLE` gives an Arrow field (see the module docs).
pub fn pg_type(field: &Field) -> Result<Type> {
    Ok(match field.data_type() {
        DataType::Int16 => Type::INT2,
        DataType::Int32 => Type::INT4,
        DataType::Int64 => Type::INT8,
        DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Boolean => Type::BOOL,
        DataType::Utf8 | DataType::LargeUtf8 => Type::TEXT,
        DataType::Binary | DataType::LargeBinary => Type::BYTEA,
        DataType::Date32 => Type::DATE,
        DataType::Timestamp(TimeUnit::Microsecond, None) => Type::TIMESTAMP,
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => Type::TIMESTAMPTZ,
        other => {
            return Err(Error::Unwritable(format!(
                "column \"{}\" has Arrow type {other}, which hopper cannot write; \
                 send int16/32/64, float32/64, bool, utf8, binary, date32 or \
                 timestamp[us] (cast it before the upload)",
                field.name()
            )))
        }
    })
}

/// Whether a column of Arrow type `field` can be written into an existing
/// column of PostgreSQL type `ty` with binary COPY.
pub fn check_writable(field: &Field, ty: &Type) -> Result<()> {
    let wanted = pg_type(field)?;
    let ok =
        wanted == *ty || (wanted == Type::TEXT && (*ty == Type::VARCHAR || *ty == Type::BPCHAR));
    if ok {
        Ok(())
    } else {
        Err(Error::Unwritable(format!(
            "column \"{}\" is {} in the table but the upload sends Arrow {} (which writes {}); \
             send the table's type or write into a new table",
            field.name(),
            ty.name(),
            field.data_type(),
            wanted.name()
        )))
    }
}

/// `CREATE TABLE`'s column list for `schema`: quoted names and mapped types.
pub fn column_definitions(schema: &SchemaRef) -> Result<String> {
    schema
        .fields()
        .iter()
        .map(|f| Ok(format!("{} {}", Ident::new(f.name())?, pg_type(f)?.name())))
        .collect::<Result<Vec<_>>>()
        .map(|cols| cols.join(", "))
}

/// The schema's column names, quoted, comma separated.
pub fn column_list(schema: &SchemaRef) -> Result<String> {
    schema
        .fields()
        .iter()
        .map(|f| Ident::new(f.name()).map(|i| i.to_string()))
        .collect::<Result<Vec<_>>>()
        .map(|cols| cols.join(", "))
}

/// Encodes record batches of one schema into binary COPY data.
///
/// Send [`header`](Self::header), then [`encode`](Self::encode) of every
/// batch, then [`trailer`](Self::trailer); each is one `CopyData` chunk.
#[derive(Debug, Clone)]
pub struct CopyEncoder {
    schema: SchemaRef,
}

impl CopyEncoder {
    /// An encoder for batches of `schema`; fails if a column's type has
    /// no PostgreSQL counterpart (see the module docs).
    pub fn new(schema: SchemaRef) -> Result<Self> {
        for f in schema.fields() {
            pg_type(f)?;
        }
        if schema.fields().len() > i16::MAX as usize {
            return Err(Error::Unwritable(format!(
                "{} columns; PostgreSQL tables hold at most 1600",
                schema.fields().len()
            )));
        }
        Ok(Self { schema })
    }

    /// The stream's header.
    pub fn header() -> Bytes {
        Bytes::from_static(HEADER)
    }

    /// The stream's end.
    pub fn trailer() -> Bytes {
        Bytes::from_static(TRAILER)
    }

    /// The rows of `batch` as binary COPY tuples.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Bytes> {
        let fields = self.schema.fields();
        let theirs = batch.schema();
        let same = theirs.fields().len() == fields.len()
            && theirs
                .fields()
                .iter()
                .zip(fields)
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same {
            return Err(Error::Unwritable(format!(
                "a record batch's schema ({}) differs from the upload's schema ({}); \
                 every batch of one DoPut must have the same columns",
                describe(&theirs),
                describe(&self.schema)
            )));
        }
        let cols = batch
            .columns()
            .iter()
            .map(Col::new)
            .collect::<Result<Vec<_>>>()?;
        let rows = batch.num_rows();
        let per_row: usize = 2 + cols.iter().map(Col::width).sum::<usize>();
        let mut out = BytesMut::with_capacity(rows * per_row);
        let ncols = cols.len() as i16;
        for row in 0..rows {
            out.put_i16(ncols);
            for col in &cols {
                col.put(row, &mut out);
            }
        }
        Ok(out.freeze())
    }
}

fn describe(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One column of a batch, downcast once per batch.
enum Col<'a> {
    I16(&'a arrow_array::Int16Array),
    I32(&'a arrow_array::Int32Array),
    I64(&'a arrow_array::Int64Array),
    F32(&'a arrow_array::Float32Array),
    F64(&'a arrow_array::Float64Array),
    Bool(&'a arrow_array::BooleanArray),
    Str(&'a arrow_array::StringArray),
    LargeStr(&'a arrow_array::LargeStringArray),
    Bin(&'a arrow_array::BinaryArray),
    LargeBin(&'a arrow_array::LargeBinaryArray),
    Date(&'a arrow_array::Date32Array),
    Ts(&'a arrow_array::TimestampMicrosecondArray),
}

impl<'a> Col<'a> {
    fn new(a: &'a ArrayRef) -> Result<Self> {
        Ok(match a.data_type() {
            DataType::Int16 => Col::I16(a.as_primitive::<Int16Type>()),
            DataType::Int32 => Col::I32(a.as_primitive::<Int32Type>()),
            DataType::Int64 => Col::I64(a.as_primitive::<Int64Type>()),
            DataType::Float32 => Col::F32(a.as_primitive::<Float32Type>()),
            DataType::Float64 => Col::F64(a.as_primitive::<Float64Type>()),
            DataType::Boolean => Col::Bool(a.as_boolean()),
            DataType::Utf8 => Col::Str(a.as_string::<i32>()),
            DataType::LargeUtf8 => Col::LargeStr(a.as_string::<i64>()),
            DataType::Binary => Col::Bin(a.as_binary::<i32>()),
            DataType::LargeBinary => Col::LargeBin(a.as_binary::<i64>()),
            DataType::Date32 => Col::Date(a.as_primitive::<Date32Type>()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Col::Ts(a.as_primitive::<TimestampMicrosecondType>())
            }
            other => {
                return Err(Error::Internal(format!(
                    "encoder built for a schema without {other}"
                )))
            }
        })
    }

    /// Average bytes a value takes (length word included), for sizing.
    fn width(&self) -> usize {
        let var = |bytes: usize, n: usize| 4 + bytes / n.max(1);
        4 + match self {
            Col::I16(_) => 2,
            Col::I32(_) | Col::F32(_) | Col::Date(_) => 4,
            Col::I64(_) | Col::F64(_) | Col::Ts(_) => 8,
            Col::Bool(_) => 1,
            Col::Str(a) => var(a.values().len(), a.len()),
            Col::LargeStr(a) => var(a.values().len(), a.len()),
            Col::Bin(a) => var(a.values().len(), a.len()),
            Col::LargeBin(a) => var(a.values().len(), a.len()),
        }
    }

    /// Appends row `i`'s field: length word and value, or -1 for NULL.
    #[inline]
    fn put(&self, i: usize, out: &mut BytesMut) {
        fn fixed<const N: usize>(out: &mut BytesMut, v: [u8; N]) {
            out.put_i32(N as i32);
            out.put_slice(&v);
        }
        fn var(out: &mut BytesMut, v: &[u8]) {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
        let null = match self {
            Col::I16(a) => a.is_null(i),
            Col::I32(a) => a.is_null(i),
            Col::I64(a) => a.is_null(i),
            Col::F32(a) => a.is_null(i),
            Col::F64(a) => a.is_null(i),
            Col::Bool(a) => a.is_null(i),
            Col::Str(a) => a.is_null(i),
            Col::LargeStr(a) => a.is_null(i),
            Col::Bin(a) => a.is_null(i),
            Col::LargeBin(a) => a.is_null(i),
            Col::Date(a) => a.is_null(i),
            Col::Ts(a) => a.is_null(i),
        };
        if null {
            out.put_i32(-1);
            return;
        }
        match self {
            Col::I16(a) => fixed(out, a.value(i).to_be_bytes()),
            Col::I32(a) => fixed(out, a.value(i).to_be_bytes()),
            Col::I64(a) => fixed(out, a.value(i).to_be_bytes()),
            Col::F32(a) => fixed(out, a.value(i).to_be_bytes()),
            Col::F64(a) => fixed(out, a.value(i).to_be_bytes()),
            Col::Bool(a) => fixed(out, [a.value(i) as u8]),
            Col::Str(a) => var(out, a.value(i).as_bytes()),
            Col::LargeStr(a) => var(out, a.value(i).as_bytes()),
            Col::Bin(a) => var(out, a.value(i)),
            Col::LargeBin(a) => var(out, a.value(i)),
            Col::Date(a) => fixed(out, (a.value(i) - PG_EPOCH_DAYS).to_be_bytes()),
            Col::Ts(a) => fixed(out, (a.value(i) - PG_EPOCH_MICROS).to_be_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array, Int32Array,
        Int64Array, LargeStringArray, StringArray, TimestampMicrosecondArray,
    };
    use arrow_schema::Schema;

    use super::*;
    use crate::{BatchLimits, CopyDecoder};

    /// A batch with a NULL in every column, edge values, and empty strings.
    fn sample(offset: i64) -> RecordBatch {
        let o = offset;
        RecordBatch::try_from_iter([
            (
                "i2",
                Arc::new(Int16Array::from(vec![Some(i16::MIN), None, Some(7)])) as ArrayRef,
            ),
            (
                "i4",
                Arc::new(Int32Array::from(vec![None, Some(i32::MAX), Some(-1)])),
            ),
            (
                "i8",
                Arc::new(Int64Array::from(vec![Some(o), Some(i64::MIN), None])),
            ),
            (
                "f4",
                Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-0.0)])),
            ),
            (
                "f8",
                Arc::new(Float64Array::from(vec![None, Some(f64::MAX), Some(1e-300)])),
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            ),
            (
                "t",
                Arc::new(StringArray::from(vec![Some("héllo"), None, Some("")])),
            ),
            (
                "by",
                Arc::new(BinaryArray::from_opt_vec(vec![
                    Some(&[0u8, 255, 16][..]),
                    Some(&[][..]),
                    None,
                ])),
            ),
            (
                "d",
                Arc::new(Date32Array::from(vec![Some(0), None, Some(-25_567)])),
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(1_700_000_000_123_456),
                    Some(-1),
                    None,
                ])),
            ),
        ])
        .unwrap()
    }

    fn pg_types(schema: &SchemaRef) -> Vec<Type> {
        schema
            .fields()
            .iter()
            .map(|f| pg_type(f).unwrap())
            .collect()
    }

    /// Encodes `batches`, decodes the bytes in chunks of `chunk` bytes.
    fn round_trip(batches: &[RecordBatch], chunk: usize) -> Vec<RecordBatch> {
        let schema = batches[0].schema();
        let enc = CopyEncoder::new(schema.clone()).unwrap();
        let mut bytes = CopyEncoder::header().to_vec();
        for b in batches {
            bytes.extend_from_slice(&enc.encode(b).unwrap());
        }
        bytes.extend_from_slice(&CopyEncoder::trailer());
        // The decoder's schema comes from the PostgreSQL types, as on read.
        let fields = schema
            .fields()
            .iter()
            .zip(pg_types(&schema))
            .map(|(f, t)| crate::arrow_field(f.name(), &t, -1).unwrap())
            .collect::<Vec<_>>();
        let mut dec = CopyDecoder::new(
            Arc::new(Schema::new(fields)),
            &pg_types(&schema),
            BatchLimits::default(),
        )
        .unwrap();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            dec.push(c).unwrap();
            while let Some(b) = dec.take_batch().unwrap() {
                out.push(b);
            }
        }
        dec.finish().unwrap();
        while let Some(b) = dec.take_batch().unwrap() {
            out.push(b);
        }
        out
    }

    #[test]
    fn encoded_batches_decode_to_the_same_values_nulls_included() {
        let batches = [sample(1), sample(2), sample(3)];
        for chunk in [1, 7, 1 << 20] {
            let back = round_trip(&batches, chunk);
            let back = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
            let sent = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
            assert_eq!(back.num_rows(), 9);
            for (k, (a, b)) in sent.columns().iter().zip(back.columns()).enumerate() {
                // Timestamps decode without a time zone and dates stay Date32:
                // compare the data, not the field metadata.
                assert_eq!(a.to_data(), b.to_data(), "column {k}, chunk {chunk}");
            }
        }
    }

    #[test]
    fn large_strings_write_as_text_and_an_empty_batch_is_no_rows() {
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(LargeStringArray::from(vec![Some("a"), None])) as ArrayRef,
        )])
        .unwrap();
        let enc = CopyEncoder::new(batch.schema()).unwrap();
        assert!(enc.encode(&batch.slice(0, 0)).unwrap().is_empty());
        let back = round_trip(&[batch], 3);
        let s = back[0].column(0).as_string::<i32>();
        assert_eq!((s.value(0), s.is_null(1)), ("a", true));
    }

    #[test]
    fn refuses_types_and_schemas_it_cannot_write_naming_the_column() {
        let f = Field::new("when", DataType::Time32(TimeUnit::Second), true);
        let e = pg_type(&f).unwrap_err();
        assert!(
            matches!(e, Error::Unwritable(_)) && e.to_string().contains("\"when\""),
            "{e}"
        );
        let schema = Arc::new(Schema::new(vec![f]));
        assert!(CopyEncoder::new(schema).is_err());

        let enc = CopyEncoder::new(sample(0).schema()).unwrap();
        let other =
            RecordBatch::try_from_iter([("i2", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        let e = enc.encode(&other).unwrap_err();
        assert!(e.to_string().contains("same columns"), "{e}");

        let text = Field::new("t", DataType::Utf8, true);
        assert!(check_writable(&text, &Type::VARCHAR).is_ok());
        let e = check_writable(&text, &Type::INT4).unwrap_err();
        assert!(
            e.to_string().contains("int4") && e.to_string().contains("\"t\""),
            "{e}"
        );
    }

    #[test]
    fn create_table_columns_are_quoted_and_mapped() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("Odd \"name\"", DataType::Float32, true),
        ]));
        assert_eq!(
            column_definitions(&schema).unwrap(),
            "\"id\" int8, \"Odd \"\"name\"\"\" float4"
        );
        assert_eq!(
            column_list(&schema).unwrap(),
            "\"id\", \"Odd \"\"name\"\"\""
        );
    }
}
