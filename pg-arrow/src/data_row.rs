//! The fields of a `DataRow` message, read in place.
//!
//! A query's result rows arrive as `DataRow` messages: a 16-bit field
//! count, then per field a 32-bit length (-1 for NULL) and that many
//! bytes — in the text or the binary format the query asked for. A reader
//! that holds the messages in its own buffer (a Greenplum retrieve session
//! read at the protocol level) hands each body here and gets its fields as
//! slices of that buffer: nothing is copied or allocated per row.
//!
//! Binary rows go to [`crate::CopyDecoder::for_data_rows`] (a binary
//! `DataRow` body is a binary COPY tuple); text rows to
//! [`crate::BatchBuilder::push_data_row`], which uses [`fields`].

use crate::error::{Error, Result};

/// The fields of the `DataRow` body `body`, in order: `None` is NULL. A
/// field count that is negative, or a length that runs past the body, is
/// an error; so are bytes left over after the last field.
pub fn fields(body: &[u8]) -> Result<Fields<'_>> {
    let count = match body {
        [a, b, ..] => i16::from_be_bytes([*a, *b]),
        _ => return Err(malformed(format!("a body of {} bytes", body.len()))),
    };
    let count = usize::try_from(count).map_err(|_| malformed(format!("{count} fields")))?;
    Ok(Fields {
        body,
        pos: 2,
        left: count,
    })
}

/// Iterator over a `DataRow`'s fields (see [`fields`]).
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    body: &'a [u8],
    pos: usize,
    left: usize,
}

impl Fields<'_> {
    /// Fields not yet read.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Option<&'a [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.pos != self.body.len() {
                let extra = self.body.len() - self.pos;
                self.pos = self.body.len();
                return Some(Err(malformed(format!(
                    "{extra} bytes after the last field"
                ))));
            }
            return None;
        }
        self.left -= 1;
        let Some(word) = self.body.get(self.pos..self.pos + 4) else {
            self.left = 0;
            self.pos = self.body.len();
            return Some(Err(malformed("a field length cut short".into())));
        };
        let len = i32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        self.pos += 4;
        if len < 0 {
            if len != -1 {
                self.left = 0;
                self.pos = self.body.len();
                return Some(Err(malformed(format!("field length {len}"))));
            }
            return Some(Ok(None));
        }
        let end = self.pos + len as usize;
        let Some(value) = self.body.get(self.pos..end) else {
            self.left = 0;
            self.pos = self.body.len();
            return Some(Err(malformed(format!(
                "a field of {len} bytes runs past the message"
            ))));
        };
        self.pos = end;
        Some(Ok(Some(value)))
    }
}

#[cold]
fn malformed(message: String) -> Error {
    Error::Decode {
        context: "DataRow message".into(),
        message,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DataRow body of `values`.
    pub(crate) fn body(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b
    }

    #[test]
    fn reads_values_nulls_and_empty_values_in_place() {
        let b = body(&[Some(b"12"), None, Some(b""), Some("é".as_bytes())]);
        let got: Vec<_> = fields(&b).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(
            got,
            vec![Some(&b"12"[..]), None, Some(&b""[..]), Some("é".as_bytes())]
        );
        assert_eq!(fields(&body(&[])).unwrap().count(), 0);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let mut long = body(&[Some(b"abc")]);
        long.truncate(long.len() - 1);
        let mut extra = body(&[Some(b"abc")]);
        extra.push(0);
        let mut bad_len = body(&[None]);
        bad_len[2..6].copy_from_slice(&(-2i32).to_be_bytes());
        for (b, says) in [
            (long, "runs past"),
            (extra, "after the last field"),
            (bad_len, "field length -2"),
            (vec![0, 1, 0], "cut short"),
            (vec![0xff, 0xff], "-1 fields"),
            (vec![7], "a body of 1 bytes"),
        ] {
            let err = match fields(&b) {
                Err(e) => e,
                Ok(f) => f.collect::<Result<Vec<_>>>().expect_err("malformed body"),
            };
            assert!(err.to_string().contains(says), "{err} should say {says}");
        }
    }
}
