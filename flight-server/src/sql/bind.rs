//! Parameters of prepared statements, bound into the SQL text.
//!
//! hopper cannot hand parameters to the database separately: PostgreSQL's
//! `COPY (query) TO STDOUT` and Greenplum's `DECLARE … PARALLEL RETRIEVE
//! CURSOR` take no parameters, and the query is planned once per segment.
//! So a bound statement is the statement's text with every placeholder
//! replaced by a literal of the bound value. The replacement works on
//! tokens (sqlparser's tokenizer), never on raw text, so a `$1` inside a
//! string, a quoted identifier or a comment is left alone; every literal
//! is parenthesized (so `-$1` cannot become a `--` comment) and strings are
//! quoted with doubled quotes, the standard form (PostgreSQL's
//! `standard_conforming_strings`, on by default since 9.1; DataFusion).
//!
//! Placeholders are PostgreSQL's `$1`, `$2`, … (also DataFusion's), or
//! JDBC's `?`, numbered left to right; a statement uses one kind or the
//! other.
//!
//! How values are written: integers and decimals as numbers, booleans as
//! `TRUE`/`FALSE`, text as an untyped string literal (so the database
//! infers its type from where it stands, exactly as for a parameter),
//! floats, dates and timestamps as a cast string (`CAST('1.5' AS DOUBLE
//! PRECISION)`, which also carries `NaN` and infinities), binary as a
//! `bytea` hex literal, nulls as a bare `NULL` (so `IS $1` reads `IS NULL`).

use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Result};

/// A statement's text with its placeholders numbered the PostgreSQL way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholders {
    /// The statement, `?` rewritten to `$1`, `$2`, …
    pub sql: String,
    /// How many distinct parameters it takes.
    pub count: usize,
}

/// Finds the placeholders of `sql` and numbers `?` ones as `$n`.
pub fn placeholders(sql: &str) -> Result<Placeholders> {
    let tokens = tokenize(sql)?;
    let (mut dollar, mut question) = (0usize, 0usize);
    let mut out = String::with_capacity(sql.len());
    for token in &tokens {
        match placeholder(token) {
            Some(Slot::Numbered(n)) => {
                dollar = dollar.max(n);
                out.push_str(&token.to_string());
            }
            Some(Slot::Positional) => {
                question += 1;
                out.push_str(&format!("${question}"));
            }
            None => out.push_str(&token.to_string()),
        }
    }
    if dollar > 0 && question > 0 {
        return Err(Error::InvalidQuery(
            "the statement mixes $n and ? placeholders; use one kind".into(),
        ));
    }
    Ok(Placeholders {
        sql: out,
        count: dollar.max(question),
    })
}

/// `sql` (numbered placeholders, as [`placeholders`] returns it) with
/// every `$n` replaced by the literal of column `n - 1` of `params`' one
/// row.
pub fn bind(sql: &str, params: &RecordBatch) -> Result<String> {
    if params.num_rows() != 1 {
        return Err(Error::BadRequest(format!(
            "bind exactly one row of parameters to a query (got {}); run the query once per row",
            params.num_rows()
        )));
    }
    let literals = (0..params.num_columns())
        .map(|i| literal(params.column(i).as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let mut out = String::with_capacity(sql.len());
    for token in tokenize(sql)? {
        match placeholder(&token) {
            Some(Slot::Numbered(n)) => {
                let value = literals.get(n - 1).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "the statement uses ${n} but {} parameter(s) were bound",
                        literals.len()
                    ))
                })?;
                out.push_str(value);
            }
            Some(Slot::Positional) => {
                return Err(Error::Internal("a ? placeholder was not numbered".into()))
            }
            None => out.push_str(&token.to_string()),
        }
    }
    Ok(out)
}

enum Slot {
    Numbered(usize),
    Positional,
}

fn placeholder(token: &Token) -> Option<Slot> {
    match token {
        Token::Placeholder(p) if p == "?" => Some(Slot::Positional),
        Token::Placeholder(p) => p
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .map(Slot::Numbered),
        Token::Question => Some(Slot::Positional),
        _ => None,
    }
}

fn tokenize(sql: &str) -> Result<Vec<Token>> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| Error::InvalidQuery(format!("reading the statement: {e}")))
}

/// The SQL literal of the one value in `array`.
fn literal(array: &dyn Array) -> Result<String> {
    if array.is_null(0) {
        return Ok("NULL".into());
    }
    let options = FormatOptions::default();
    let text = ArrayFormatter::try_new(array, &options)
        .map_err(|e| Error::BadRequest(format!("formatting a parameter: {e}")))?
        .value(0)
        .to_string();
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let value = match array.data_type() {
        DataType::Boolean => {
            if text == "true" {
                "TRUE".into()
            } else {
                "FALSE".into()
            }
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => text,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            format!("CAST({} AS DOUBLE PRECISION)", quoted(&text))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => quoted(&text),
        DataType::Date32 | DataType::Date64 => format!("CAST({} AS DATE)", quoted(&text)),
        DataType::Timestamp(_, None) => format!("CAST({} AS TIMESTAMP)", quoted(&text)),
        DataType::Timestamp(_, Some(_)) => {
            format!("CAST({} AS TIMESTAMP WITH TIME ZONE)", quoted(&text))
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            format!("CAST({} AS BYTEA)", quoted(&format!("\\x{text}")))
        }
        other => {
            return Err(Error::BadRequest(format!(
                "a parameter of type {other} cannot be bound; bind numbers, booleans, text, \
                 dates, timestamps or binary"
            )))
        }
    };
    Ok(format!("({value})"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };

    use super::*;

    fn row(columns: Vec<ArrayRef>) -> RecordBatch {
        let fields: Vec<_> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| arrow_schema::Field::new(format!("p{i}"), c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn numbers_question_marks_and_leaves_strings_and_comments_alone() {
        let p = placeholders("SELECT '?', \"$1\" FROM t WHERE a = ? AND b > ? -- ?").unwrap();
        assert_eq!(
            p.sql,
            "SELECT '?', \"$1\" FROM t WHERE a = $1 AND b > $2 -- ?"
        );
        assert_eq!(p.count, 2);
        let p = placeholders("SELECT * FROM t WHERE a = $2 OR b = $1 OR c = $2").unwrap();
        assert_eq!(p.count, 2);
        assert_eq!(placeholders("SELECT 1").unwrap().count, 0);
        assert!(placeholders("SELECT $1, ?").is_err());
    }

    #[test]
    fn binds_literals_that_cannot_escape_their_place() {
        let params = row(vec![
            Arc::new(Int64Array::from(vec![-5])),
            Arc::new(StringArray::from(vec!["it's'; DROP TABLE t; --"])),
            Arc::new(Float64Array::from(vec![f64::NAN])),
            Arc::new(BooleanArray::from(vec![true])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(BinaryArray::from(vec![&b"\x01\xff"[..]])),
            Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_000_000])),
        ]);
        let sql = "SELECT * FROM t WHERE a = -$1 AND b = $2 AND c <> $3 AND d = $4 \
                   AND e IS $5 AND f = $6 AND g < $7 AND h = '$1'";
        assert_eq!(
            bind(sql, &params).unwrap(),
            "SELECT * FROM t WHERE a = -(-5) AND b = ('it''s''; DROP TABLE t; --') \
             AND c <> (CAST('NaN' AS DOUBLE PRECISION)) AND d = (TRUE) AND e IS NULL \
             AND f = (CAST('\\x01ff' AS BYTEA)) AND g < (CAST('2023-11-14T22:13:20' AS TIMESTAMP)) \
             AND h = '$1'"
        );
    }

    #[test]
    fn refuses_missing_parameters_and_many_rows() {
        let one = row(vec![Arc::new(Int64Array::from(vec![1]))]);
        assert!(bind("SELECT $2", &one).is_err());
        let two = row(vec![Arc::new(Int64Array::from(vec![1, 2]))]);
        assert!(bind("SELECT $1", &two).is_err());
    }
}
