//! The text `COPY` route: `COPY (…) TO STDOUT (FORMAT text)` decoded into
//! the same Arrow batches as the binary route.
//!
//! For integer and text columns a PostgreSQL backend writes text COPY
//! cheaper than binary (no per-value length words, no `send` function
//! allocating a buffer per value), and the backend is the bottleneck of a
//! read on a machine whose cores it shares with the server. Each row is a
//! line; fields are separated by tabs, `\N` is NULL, and a backslash escapes
//! the rest (`\t`, `\n`, `\\`, octal and hex bytes). The values are then
//! parsed by their catalog types ([`crate::text::BatchBuilder`]), under
//! the output settings [`TEXT_SETTINGS`] fixes on the connection.

use std::borrow::Cow;
use std::collections::VecDeque;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::batch_limits::BatchLimits;
use crate::error::{Error, Result};
use crate::text::BatchBuilder;

/// The session settings the text parsers rely on, whatever the role's or
/// database's defaults: ISO dates, hex bytea, PostgreSQL intervals, and
/// shortest-exact floats (so a parsed float is the stored one, bit for bit).
pub const TEXT_SETTINGS: &str = "SET DateStyle = ISO; SET IntervalStyle = postgres; \
     SET bytea_output = hex; SET extra_float_digits = 1";

/// Decodes a text COPY stream into record batches of a fixed schema; the
/// same interface as the binary [`crate::CopyDecoder`].
pub struct TextCopyDecoder {
    builder: BatchBuilder,
    limits: BatchLimits,
    /// The start of a line that straddles a chunk boundary.
    carry: Vec<u8>,
    done: VecDeque<RecordBatch>,
}

impl TextCopyDecoder {
    /// A decoder for rows of `schema` (from [`crate::arrow_field`]).
    pub fn new(schema: SchemaRef, limits: BatchLimits) -> Result<Self> {
        Ok(Self {
            builder: BatchBuilder::new(schema)?,
            limits,
            carry: Vec::new(),
            done: VecDeque::new(),
        })
    }

    /// Feeds the next chunk of the stream (chunks may split lines anywhere).
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if self.carry.is_empty() {
            let used = self.lines(chunk)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            let used = self.lines(&buf)?;
            buf.drain(..used);
            self.carry = buf;
        }
        Ok(())
    }

    /// The next finished batch, if any.
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>> {
        Ok(self.done.pop_front())
    }

    /// Ends the stream: checks that its last line was complete and closes
    /// the last, partial batch.
    pub fn finish(&mut self) -> Result<()> {
        if !self.carry.is_empty() {
            return Err(Error::Decode {
                context: "text COPY stream".into(),
                message: format!(
                    "the stream ended inside a row ({} bytes without a newline)",
                    self.carry.len()
                ),
            });
        }
        if self.builder.rows() > 0 {
            self.done.push_back(self.builder.finish()?);
        }
        Ok(())
    }

    /// Decodes every complete line of `buf`; returns the bytes used.
    fn lines(&mut self, buf: &[u8]) -> Result<usize> {
        let mut used = 0;
        while let Some(end) = memchr::memchr(b'\n', &buf[used..]) {
            self.row(&buf[used..used + end])?;
            used += end + 1;
            if self.builder.rows() >= self.limits.rows
                || self.builder.text_bytes() >= self.limits.bytes
            {
                self.done.push_back(self.builder.finish()?);
            }
        }
        Ok(used)
    }

    fn row(&mut self, line: &[u8]) -> Result<()> {
        // One UTF-8 check per line (fast for ASCII) instead of per field.
        let line = std::str::from_utf8(line).map_err(|e| not_utf8(&e.to_string()))?;
        self.builder.push_fields(line.split('\t').map(field))
    }
}

/// One field of a text COPY line: `\N` is NULL; escapes are undone.
fn field(raw: &str) -> Result<Option<Cow<'_, str>>> {
    if raw == "\\N" {
        return Ok(None);
    }
    if !raw.contains('\\') {
        return Ok(Some(Cow::Borrowed(raw)));
    }
    let bytes = unescape(raw.as_bytes());
    String::from_utf8(bytes)
        .map(|s| Some(Cow::Owned(s)))
        .map_err(|e| not_utf8(&e.to_string()))
}

fn not_utf8(message: &str) -> Error {
    Error::Decode {
        context: "text COPY field".into(),
        message: format!("not UTF-8 ({message}); the connection's client_encoding is UTF8"),
    }
}

/// PostgreSQL's COPY text escapes: `\b \f \n \r \t \v`, `\` and 1–3 octal
/// digits, `\x` and 1–2 hex digits; any other escaped byte stands for itself.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        out.push(match c {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                v as u8
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                v as u8
            }
            other => other,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn unescapes_what_copy_escapes() {
        assert_eq!(unescape(br"a\tb\nc\\d"), b"a\tb\nc\\d");
        assert_eq!(unescape(br"\101\x42\x4z\q"), b"AB\x04zq");
        assert_eq!(unescape(br"end\"), b"end\\");
        assert_eq!(field(r"\N").unwrap(), None);
        assert_eq!(field(r"\\N").unwrap().as_deref(), Some(r"\N"));
        assert_eq!(field("").unwrap().as_deref(), Some(""));
    }

    #[test]
    fn decodes_lines_split_anywhere_into_batches_at_the_row_limit() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("t", DataType::Utf8, true),
        ]));
        let limits = BatchLimits {
            rows: 2,
            ..BatchLimits::default()
        };
        let mut d = TextCopyDecoder::new(schema, limits).unwrap();
        let stream = b"1\tone\n2\t\\N\n3\ttab\\there\n";
        for chunk in stream.chunks(5) {
            d.push(chunk).unwrap();
        }
        d.finish().unwrap();
        let first = d.take_batch().unwrap().unwrap();
        let second = d.take_batch().unwrap().unwrap();
        assert!(d.take_batch().unwrap().is_none());
        assert_eq!((first.num_rows(), second.num_rows()), (2, 1));
        assert_eq!(
            first.column(0).as_primitive::<Int64Type>().values(),
            &[1, 2]
        );
        assert!(first.column(1).is_null(1));
        assert_eq!(second.column(1).as_string::<i32>().value(0), "tab\there");
    }

    #[test]
    fn a_stream_cut_inside_a_row_is_an_error() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut d = TextCopyDecoder::new(schema, BatchLimits::default()).unwrap();
        d.push(b"1\n2").unwrap();
        let err = d.finish().unwrap_err().to_string();
        assert!(err.contains("ended inside a row"), "{err}");
    }
}
