//! Parameters of prepared statements, bound into the SQL text.
//!
//! hopper cannot hand parameters to the database separately: PostgreSQL's
//! `COPY (query) TO STDOUT` and Greenplum's `DECLARE … PARALLEL RETRIEVE
//! CURSOR` take no parameters, and the query is planned once per segment.
//! So a bound statement is the client's statement with the bytes of each
//! placeholder replaced by a literal of the bound value; every other byte
//! stays exactly as the client sent it. Nothing is re-printed, so nothing
//! a printer does not know (`E'\\d'`, `0x1F`, jsonb's `?|`) can change.
//!
//! # Where the placeholders are
//!
//! [`tokens`] reads a statement the way PostgreSQL's lexer (`scan.l`) does
//! with `standard_conforming_strings = on`, which every session hopper
//! opens pins: `--` comments and nested `/* */` comments (also where they
//! cut an operator short: `>--` is `>` and a comment), `'…'` strings with
//! `''`, `E'…'` strings with backslash escapes, `U&'…'`, `B'…'`, `X'…'`,
//! strings continued across a newline (`E'a'⏎'\''` is one escape string),
//! dollar quotes `$tag$…$tag$` (the tag may hold any non-ASCII letter),
//! `"…"` and `U&"…"` identifiers, and identifiers that hold a `$` (`a$1`).
//! Nothing inside those is a placeholder. A statement that ends inside one
//! of them is refused, naming where it starts.
//!
//! Placeholders come in two kinds, and a statement uses one:
//! - **`$n`** (PostgreSQL's and DataFusion's form). If a statement has any
//!   `$n`, those are its placeholders and every `?` is an operator, so
//!   jsonb's `?`, `?|`, `?&` and `@?` work as written.
//! - **`?`** (JDBC's and ADBC's form), numbered `$1`, `$2`, … left to right,
//!   when the statement has no `$n`. A `?` is a placeholder where it stands
//!   alone as an operator (`= ?`, `(?, ?)`), or ends an operator otherwise
//!   made of SQL's comparison and arithmetic characters `+-*/<>=` or of
//!   `!=` (`id=?`, `n<>?`), as JDBC users write them. A `?` joined to other
//!   operator characters is an operator (`?|`, `?&`, `@?`, `?-|`). So with
//!   `?` placeholders jsonb's key-exists operator cannot be written `?`:
//!   write `jsonb_exists(doc, key)`, or number the placeholders `$n`.
//!
//! # How values are written
//!
//! Integers and decimals as numbers, booleans as `TRUE`/`FALSE`, text as an
//! untyped string literal (so the database infers its type from where it
//! stands, exactly as for a parameter), floats, dates and timestamps as a
//! cast string (`CAST('1.5' AS DOUBLE PRECISION)`, which also carries `NaN`
//! and infinities), binary as a `bytea` hex string, nulls as a bare `NULL`
//! (so `IS $1` reads `IS NULL`). Every literal but `NULL` is parenthesized,
//! so `-$1` cannot become a `--` comment. A string is quoted with doubled
//! quotes; one that holds a backslash is an `E'…'` string with doubled
//! backslashes, which reads the same whatever `standard_conforming_strings`
//! says. Text holding a NUL byte is refused: PostgreSQL text cannot hold
//! one. So whatever bytes a value holds, its literal ends where it should.

use std::ops::Range;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::error::{Error, Result};

/// A statement's text with its placeholders numbered the PostgreSQL way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholders {
    /// The statement, `?` placeholders rewritten to `$1`, `$2`, …
    pub sql: String,
    /// How many distinct parameters it takes.
    pub count: usize,
}

/// Finds the placeholders of `sql` and numbers `?` ones as `$n`, changing
/// no other byte (a space is added where a `$n` would otherwise run into a
/// neighbouring word, as in `a?`).
pub fn placeholders(sql: &str) -> Result<Placeholders> {
    match slots(sql)? {
        Slots::Numbered(slots) => Ok(Placeholders {
            sql: sql.to_owned(),
            count: slots.iter().map(|(_, n)| *n).max().unwrap_or(0),
        }),
        Slots::Positional(slots) => Ok(Placeholders {
            sql: splice(
                sql,
                slots
                    .iter()
                    .enumerate()
                    .map(|(i, range)| (range.clone(), format!("${}", i + 1))),
            ),
            count: slots.len(),
        }),
    }
}

/// `sql` (numbered placeholders, as [`placeholders`] returns it) with the
/// bytes of every `$n` replaced by the literal of column `n - 1` of
/// `params`' one row.
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
    let slots = match slots(sql)? {
        Slots::Numbered(slots) => slots,
        Slots::Positional(slots) if slots.is_empty() => Vec::new(),
        Slots::Positional(_) => {
            return Err(Error::Internal("a ? placeholder was not numbered".into()))
        }
    };
    let mut replacements = Vec::with_capacity(slots.len());
    for (range, n) in slots {
        let value = literals.get(n - 1).ok_or_else(|| {
            Error::BadRequest(format!(
                "the statement uses ${n} but {} parameter(s) were bound",
                literals.len()
            ))
        })?;
        replacements.push((range, value.clone()));
    }
    Ok(splice(sql, replacements))
}

/// The placeholders of a statement: one kind or the other.
#[derive(Debug, PartialEq, Eq)]
enum Slots {
    /// `$n` placeholders: where each stands and its `n` (≥ 1).
    Numbered(Vec<(Range<usize>, usize)>),
    /// `?` placeholders (none if the statement has no placeholder at all):
    /// where each `?` stands.
    Positional(Vec<Range<usize>>),
}

fn slots(sql: &str) -> Result<Slots> {
    let mut numbered = Vec::new();
    let mut positional = Vec::new();
    for token in tokens(sql)? {
        let text = &sql[token.range.clone()];
        match token.kind {
            Kind::Parameter => {
                let n = text[1..]
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Error::InvalidQuery(format!(
                            "there is no parameter {text} (at character {}); number parameters \
                             from $1",
                            character(sql, token.range.start)
                        ))
                    })?;
                numbered.push((token.range, n));
            }
            Kind::Operator => {
                if let Some(at) = question_placeholder(text) {
                    let at = token.range.start + at;
                    positional.push(at..at + 1);
                }
            }
            _ => {}
        }
    }
    Ok(if numbered.is_empty() {
        Slots::Positional(positional)
    } else {
        Slots::Numbered(numbered)
    })
}

/// Where in operator token `op` a `?` placeholder stands, if one does:
/// `?` alone, or a `?` ending an operator otherwise made of SQL's
/// `+-*/<>=` or of `!=`.
fn question_placeholder(op: &str) -> Option<usize> {
    let rest = op.strip_suffix('?')?;
    (rest == "!=" || rest.bytes().all(|c| b"+-*/<>=".contains(&c))).then_some(rest.len())
}

/// `sql` with each range (in order, not overlapping) replaced by its text,
/// and a space between a replacement and a neighbouring byte that would
/// otherwise make one word with it (`a?` → `a $1`, `1$1` → `1 NULL`).
fn splice(sql: &str, replacements: impl IntoIterator<Item = (Range<usize>, String)>) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut kept = 0;
    for (range, text) in replacements {
        out.push_str(&sql[kept..range.start]);
        let joins = |a: Option<&u8>, b: Option<&u8>| matches!((a, b), (Some(a), Some(b)) if is_ident_cont(*a) && is_ident_cont(*b));
        if joins(
            range.start.checked_sub(1).and_then(|i| bytes.get(i)),
            text.as_bytes().first(),
        ) {
            out.push(' ');
        }
        out.push_str(&text);
        if joins(text.as_bytes().last(), bytes.get(range.end)) {
            out.push(' ');
        }
        kept = range.end;
    }
    out.push_str(&sql[kept..]);
    out
}

/// What a token of a statement is, as far as finding placeholders goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Whitespace or a comment.
    Space,
    /// A quoted literal: `'…'`, `E'…'`, `N'…'`, `U&'…'`, `B'…'`, `X'…'`
    /// (with any continuation lines), or `$tag$…$tag$`.
    Literal,
    /// A quoted identifier: `"…"` or `U&"…"`.
    QuotedIdentifier,
    /// An identifier or keyword (which may hold `$` and digits: `a$1`).
    Word,
    /// The digits of a number.
    Number,
    /// A run of operator characters, cut short where a comment starts.
    Operator,
    /// `$n`.
    Parameter,
    /// Any other single character: `(`, `,`, `:`, `.`, a `$` that starts
    /// nothing, …
    Other,
}

/// One token: its kind and its bytes in the statement.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    kind: Kind,
    range: Range<usize>,
}

/// The tokens of `sql`, covering every byte, as PostgreSQL's lexer splits
/// it where that matters for placeholders (it does not tell keywords,
/// numbers' fractions or `::` apart).
fn tokens(sql: &str) -> Result<Vec<Token>> {
    let b = sql.as_bytes();
    if let Some(i) = memchr::memchr(0, b) {
        // The protocol ends a statement at its first NUL: the database
        // would read less than was scanned here.
        return Err(Error::InvalidQuery(format!(
            "the statement holds a NUL byte at character {}, which PostgreSQL cannot read; \
             remove it",
            character(sql, i)
        )));
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let next = b.get(i + 1).copied();
        let (kind, end) = match b[i] {
            c if is_space(c) => (Kind::Space, skip(b, i, is_space)),
            b'-' if next == Some(b'-') => (Kind::Space, line_end(b, i)),
            b'/' if next == Some(b'*') => (Kind::Space, block_comment_end(sql, i)?),
            b'\'' => (Kind::Literal, string_end(sql, i, i, Quoted::Standard)?),
            b'"' => (Kind::QuotedIdentifier, identifier_end(sql, i, i)?),
            b'$' => dollar(sql, i)?,
            c if is_op_char(c) => (Kind::Operator, operator_end(b, i)),
            c if c.is_ascii_digit() => (Kind::Number, skip(b, i, |c| c.is_ascii_digit())),
            c if is_ident_start(c) => word(sql, i)?,
            _ => (Kind::Other, i + 1),
        };
        out.push(Token {
            kind,
            range: i..end,
        });
        i = end;
    }
    Ok(out)
}

/// What is between the quotes of a string literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quoted {
    /// `'…'`, `N'…'`, `U&'…'`: `''` is a quote.
    Standard,
    /// `E'…'`: `''` is a quote, and a backslash escapes the next byte.
    Escape,
    /// `B'…'`, `X'…'`: the first quote ends it.
    Bits,
}

/// A word starting at `i`: a string with a prefix (`E'`, `B'`, `X'`, `N'`,
/// `U&'`), a `U&"…"` identifier, or an identifier.
fn word(sql: &str, i: usize) -> Result<(Kind, usize)> {
    let b = sql.as_bytes();
    let quote_at = |j: usize| b.get(j) == Some(&b'\'');
    Ok(match b[i].to_ascii_lowercase() {
        b'b' | b'x' if quote_at(i + 1) => (Kind::Literal, string_end(sql, i, i + 1, Quoted::Bits)?),
        b'e' if quote_at(i + 1) => (Kind::Literal, string_end(sql, i, i + 1, Quoted::Escape)?),
        b'n' if quote_at(i + 1) => (Kind::Literal, string_end(sql, i, i + 1, Quoted::Standard)?),
        b'u' if b.get(i + 1) == Some(&b'&') => match b.get(i + 2) {
            Some(b'\'') => (Kind::Literal, string_end(sql, i, i + 2, Quoted::Standard)?),
            Some(b'"') => (Kind::QuotedIdentifier, identifier_end(sql, i, i + 2)?),
            // `u&x` is the identifier `u`, then `&`.
            _ => (Kind::Word, i + 1),
        },
        _ => (Kind::Word, skip(b, i, is_ident_cont)),
    })
}

/// The end of a string literal whose token starts at `start` and whose
/// opening quote is at `quote`, continuation lines included: a closing
/// quote followed by whitespace with a newline (and `--` comments) and
/// another quote continues the same string, escapes and all.
fn string_end(sql: &str, start: usize, quote: usize, quoted: Quoted) -> Result<usize> {
    let b = sql.as_bytes();
    let mut j = quote + 1;
    loop {
        match b.get(j) {
            None => {
                let what = match quoted {
                    Quoted::Standard => "a quoted string",
                    Quoted::Escape => "an escape string (E'…')",
                    Quoted::Bits => "a bit string",
                };
                return Err(unterminated(sql, start, what));
            }
            Some(b'\\') if quoted == Quoted::Escape => j += 2,
            Some(b'\'') if quoted != Quoted::Bits && b.get(j + 1) == Some(&b'\'') => j += 2,
            Some(b'\'') => {
                // PostgreSQL 16 reads a vertical tab as whitespace, earlier
                // versions as a character: refuse the one place where that
                // changes where a string ends.
                let continued = continuation(b, j + 1, true);
                if continued != continuation(b, j + 1, false) {
                    return Err(Error::InvalidQuery(format!(
                        "a vertical tab after the string at character {} reads differently in \
                         PostgreSQL versions; replace it with a space",
                        character(sql, start)
                    )));
                }
                match continued {
                    Some(next_quote) => j = next_quote + 1,
                    None => return Ok(j + 1),
                }
            }
            Some(_) => j += 1,
        }
    }
}

/// Where the quote that continues a string stands, if the text from `i`
/// (just after a closing quote) is whitespace holding a newline, possibly
/// with `--` comments, and then a quote.
fn continuation(b: &[u8], mut i: usize, vertical_tab_is_space: bool) -> Option<usize> {
    let mut newline = false;
    while let Some(&c) = b.get(i) {
        match c {
            b'\n' | b'\r' => {
                newline = true;
                i += 1;
            }
            b' ' | b'\t' | 0x0c => i += 1,
            0x0b if vertical_tab_is_space => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => i = line_end(b, i),
            b'\'' if newline => return Some(i),
            _ => return None,
        }
    }
    None
}

/// The end of a quoted identifier whose token starts at `start` and whose
/// opening `"` is at `quote`; `""` is a `"`.
fn identifier_end(sql: &str, start: usize, quote: usize) -> Result<usize> {
    let b = sql.as_bytes();
    let mut j = quote + 1;
    loop {
        match b.get(j) {
            None => return Err(unterminated(sql, start, "a quoted identifier")),
            Some(b'"') if b.get(j + 1) == Some(&b'"') => j += 2,
            Some(b'"') => return Ok(j + 1),
            Some(_) => j += 1,
        }
    }
}

/// A token starting with `$` at `i`: a parameter `$n`, a dollar-quoted
/// string `$tag$…$tag$`, or a lone `$`.
fn dollar(sql: &str, i: usize) -> Result<(Kind, usize)> {
    let b = sql.as_bytes();
    match b.get(i + 1) {
        Some(c) if c.is_ascii_digit() => {
            let end = skip(b, i + 1, |c| c.is_ascii_digit());
            if b.get(end).is_some_and(|c| is_ident_start(*c)) {
                // PostgreSQL 15 and later refuse `$1abc` too.
                return Err(Error::InvalidQuery(format!(
                    "trailing junk after parameter {} at character {}; put a space after it",
                    &sql[i..end],
                    character(sql, i)
                )));
            }
            Ok((Kind::Parameter, end))
        }
        Some(&c) if c == b'$' || is_ident_start(c) => {
            let tag_end = skip(b, i + 1, is_dollar_tag_cont);
            if b.get(tag_end) != Some(&b'$') {
                // `$abc` with no closing `$`: a lone `$`, then a word.
                return Ok((Kind::Other, i + 1));
            }
            let delimiter = &b[i..=tag_end];
            let body = tag_end + 1;
            match memchr::memmem::find(&b[body..], delimiter) {
                Some(at) => Ok((Kind::Literal, body + at + delimiter.len())),
                None => Err(unterminated(sql, i, "a dollar-quoted string")),
            }
        }
        _ => Ok((Kind::Other, i + 1)),
    }
}

/// The end of the `/* */` comment at `i`; comments nest.
fn block_comment_end(sql: &str, i: usize) -> Result<usize> {
    let b = sql.as_bytes();
    let mut depth = 0usize;
    let mut j = i + 2;
    while j < b.len() {
        if b[j..].starts_with(b"/*") {
            depth += 1;
            j += 2;
        } else if b[j..].starts_with(b"*/") {
            if depth == 0 {
                return Ok(j + 2);
            }
            depth -= 1;
            j += 2;
        } else {
            j += 1;
        }
    }
    Err(unterminated(sql, i, "a /* comment"))
}

/// The end of the operator at `i`: its run of operator characters, cut
/// where `--` or `/*` starts a comment.
fn operator_end(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() && is_op_char(b[j]) {
        if b[j..].starts_with(b"--") || b[j..].starts_with(b"/*") {
            break;
        }
        j += 1;
    }
    j
}

/// The end of the `--` comment at `i` (before its newline).
fn line_end(b: &[u8], i: usize) -> usize {
    skip(b, i, |c| c != b'\n' && c != b'\r')
}

fn skip(b: &[u8], i: usize, keep: impl Fn(u8) -> bool) -> usize {
    i + b[i..].iter().take_while(|c| keep(**c)).count()
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_op_char(c: u8) -> bool {
    b"~!@#^&|`?+-*/%<>=".contains(&c)
}

/// `scan.l`'s `ident_start`, which is also `dolq_start`.
fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    is_dollar_tag_cont(c) || c == b'$'
}

fn is_dollar_tag_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

/// The 1-based character position of byte `at`, as PostgreSQL reports it.
fn character(sql: &str, at: usize) -> usize {
    sql.get(..at).map_or(at, |s| s.chars().count()) + 1
}

fn unterminated(sql: &str, start: usize, what: &str) -> Error {
    Error::InvalidQuery(format!(
        "the statement ends inside {what} that starts at character {}; close it",
        character(sql, start)
    ))
}

/// The SQL text that replaces a placeholder bound to the one value in
/// `array`.
fn literal(array: &dyn Array) -> Result<String> {
    if array.is_null(0) {
        return Ok("NULL".into());
    }
    let options = FormatOptions::default();
    let text = ArrayFormatter::try_new(array, &options)
        .map_err(|e| Error::BadRequest(format!("formatting a parameter: {e}")))?
        .value(0)
        .to_string();
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
            format!("CAST({} AS DOUBLE PRECISION)", string_literal(&text)?)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => string_literal(&text)?,
        DataType::Date32 | DataType::Date64 => {
            format!("CAST({} AS DATE)", string_literal(&text)?)
        }
        DataType::Timestamp(_, None) => format!("CAST({} AS TIMESTAMP)", string_literal(&text)?),
        DataType::Timestamp(_, Some(_)) => format!(
            "CAST({} AS TIMESTAMP WITH TIME ZONE)",
            string_literal(&text)?
        ),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            format!("CAST({} AS BYTEA)", string_literal(&format!("\\x{text}"))?)
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

/// `s` as a string literal that reads the same whatever
/// `standard_conforming_strings` says: `'…'` with doubled quotes, or, if
/// `s` holds a backslash, `E'…'` with doubled quotes and backslashes.
fn string_literal(s: &str) -> Result<String> {
    if s.contains('\0') {
        return Err(Error::BadRequest(
            "a text parameter holds a NUL byte (\\0), which PostgreSQL text cannot store; \
             remove it or bind the value as binary"
                .into(),
        ));
    }
    Ok(if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use proptest::prelude::*;

    use super::*;

    fn row(columns: Vec<ArrayRef>) -> RecordBatch {
        let fields: Vec<_> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| arrow_schema::Field::new(format!("p{i}"), c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap()
    }

    fn texts(values: &[&str]) -> RecordBatch {
        row(values
            .iter()
            .map(|v| Arc::new(StringArray::from(vec![*v])) as ArrayRef)
            .collect())
    }

    /// `sql` bound to `'x'` for `$1` and `'y'` for `$2`.
    fn bound(sql: &str) -> String {
        bind(sql, &texts(&["x", "y"])).unwrap()
    }

    fn refusal(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidQuery(m)) => m,
            other => panic!("expected InvalidQuery, got {other:?}"),
        }
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
    }

    #[test]
    fn doubled_quotes_stay_doubled() {
        assert_eq!(
            bound("SELECT 'a''''b', $1, '$1''$2'"),
            "SELECT 'a''''b', ('x'), '$1''$2'"
        );
    }

    #[test]
    fn escape_strings_keep_their_backslashes_and_hide_placeholders() {
        assert_eq!(
            bound(r"SELECT E'\\d+', e'\'$1', E'\\', $1"),
            r"SELECT E'\\d+', e'\'$1', E'\\', ('x')"
        );
        // A backslash escapes a quote only in an escape string.
        assert_eq!(bound(r"SELECT '\', $1"), r"SELECT '\', ('x')");
    }

    #[test]
    fn a_continued_escape_string_stays_an_escape_string() {
        let sql = "SELECT E'a'\n'\\' $1 ' -- c\n  '$2', $1";
        assert_eq!(bound(sql), "SELECT E'a'\n'\\' $1 ' -- c\n  '$2', ('x')");
        // Without a newline between them, two strings are two strings.
        assert_eq!(bound("SELECT 'a' '$1'"), "SELECT 'a' '$1'");
        assert_eq!(
            bound("SELECT E'a' /* c */\n'\\', $1"),
            "SELECT E'a' /* c */\n'\\', ('x')"
        );
    }

    #[test]
    fn quoted_identifiers_keep_doubled_quotes() {
        assert_eq!(
            bound(r#"SELECT "a""b", "$1""?", U&"$1" FROM t WHERE c = $1"#),
            r#"SELECT "a""b", "$1""?", U&"$1" FROM t WHERE c = ('x')"#
        );
    }

    #[test]
    fn numbers_bit_strings_and_prefixed_strings_stay_as_written() {
        assert_eq!(
            bound("SELECT 0x1F, 1e5, b'01', X'1F', n'$1', U&'d\\0061t $1', $1"),
            "SELECT 0x1F, 1e5, b'01', X'1F', n'$1', U&'d\\0061t $1', ('x')"
        );
        // A prefix letter inside a word is part of the word.
        assert_eq!(bound("SELECT abe'$1', $1"), "SELECT abe'$1', ('x')");
    }

    #[test]
    fn jsonb_question_operators_are_operators_beside_numbered_placeholders() {
        let sql = "SELECT d ? 'k', d ?| array['a'], d ?& array['b'], d @? '$.a', p ?-| q \
                   FROM t WHERE id = $1";
        let p = placeholders(sql).unwrap();
        assert_eq!((p.sql.as_str(), p.count), (sql, 1));
        assert_eq!(
            bound(sql),
            "SELECT d ? 'k', d ?| array['a'], d ?& array['b'], d @? '$.a', p ?-| q \
             FROM t WHERE id = ('x')"
        );
    }

    #[test]
    fn a_question_mark_joined_to_an_operator_is_the_operator() {
        let p = placeholders("SELECT d ?| array['a'], d @? '$.a' FROM t WHERE id = ?").unwrap();
        assert_eq!(
            p.sql,
            "SELECT d ?| array['a'], d @? '$.a' FROM t WHERE id = $1"
        );
        assert_eq!(p.count, 1);
    }

    #[test]
    fn jdbc_style_comparisons_without_spaces_are_placeholders() {
        let p =
            placeholders("SELECT * FROM t WHERE a=? AND b<>? AND c!=? AND d>=-? AND e IN (?,?)")
                .unwrap();
        assert_eq!(
            p.sql,
            "SELECT * FROM t WHERE a=$1 AND b<>$2 AND c!=$3 AND d>=-$4 AND e IN ($5,$6)"
        );
        assert_eq!(p.count, 6);
    }

    #[test]
    fn a_numbered_question_mark_does_not_run_into_its_neighbours() {
        let p = placeholders("SELECT ?1, a?, ?b, $$x$$?").unwrap();
        assert_eq!(p.sql, "SELECT $1 1, a $2, $3 b, $$x$$ $4");
        assert_eq!(p.count, 4);
    }

    #[test]
    fn comments_cut_operators_short() {
        assert_eq!(
            bound("SELECT 2>--$1\n1, B'1'|--$1\nB'0', 2>/* $1 */1, $1"),
            "SELECT 2>--$1\n1, B'1'|--$1\nB'0', 2>/* $1 */1, ('x')"
        );
        let p = placeholders("SELECT 2>--?\n1, 3>/*?*/?").unwrap();
        assert_eq!(p.sql, "SELECT 2>--?\n1, 3>/*?*/$1");
    }

    #[test]
    fn block_comments_nest() {
        assert_eq!(
            bound("SELECT /* a /* $1 */ $1 ' */ $1 /**/ $2 /*/ $1 */"),
            "SELECT /* a /* $1 */ $1 ' */ ('x') /**/ ('y') /*/ $1 */"
        );
    }

    #[test]
    fn dollar_quotes_hide_placeholders_whatever_their_tag() {
        assert_eq!(
            bound("SELECT $€$ $1 ' ? $$ $€$, $$ $1 $$, $a$ $b$ $1 $a$, $_1$$1$_1$, $1"),
            "SELECT $€$ $1 ' ? $$ $€$, $$ $1 $$, $a$ $b$ $1 $a$, $_1$$1$_1$, ('x')"
        );
        // `$a` without a closing `$` starts nothing.
        assert_eq!(bound("SELECT $a + $1"), "SELECT $a + ('x')");
    }

    #[test]
    fn a_dollar_inside_an_identifier_is_part_of_it() {
        assert_eq!(
            bound("SELECT a$1, a$$1$$, $1 FROM t$2"),
            "SELECT a$1, a$$1$$, ('x') FROM t$2"
        );
        assert_eq!(placeholders("SELECT a$1 FROM t").unwrap().count, 0);
    }

    #[test]
    fn unterminated_quotes_and_comments_say_where_they_start() {
        for (sql, what, at) in [
            ("SELECT 'abc", "a quoted string", 8),
            ("SELECT E'ab\\'", "an escape string", 8),
            ("SELECT b'01", "a bit string", 8),
            ("SELECT U&'x", "a quoted string", 8),
            ("SELECT 'a'\n'b", "a quoted string", 8),
            ("SELECT \"x", "a quoted identifier", 8),
            ("SELECT €, U&\"x", "a quoted identifier", 11),
            ("SELECT /* /* */", "a /* comment", 8),
            ("SELECT $a$ x $a", "a dollar-quoted string", 8),
        ] {
            let m = refusal(placeholders(sql));
            assert!(
                m.contains(what) && m.contains(&format!("character {at};")),
                "{sql}: {m}"
            );
        }
    }

    #[test]
    fn malformed_parameters_are_refused() {
        assert!(refusal(placeholders("SELECT $1abc")).contains("trailing junk after parameter $1"));
        assert!(refusal(placeholders("SELECT $0")).contains("no parameter $0"));
        assert!(refusal(placeholders("SELECT $99999999999999999999999")).contains("no parameter"));
        assert!(refusal(placeholders("SELECT 'a\0'")).contains("NUL"));
        assert!(refusal(placeholders("SELECT 'a'\x0b\n'b'")).contains("vertical tab"));
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
            Arc::new(StringArray::from(vec![r"\'); DROP TABLE t; --"])),
        ]);
        let sql = "SELECT * FROM t WHERE a = -$1 AND b = $2 AND c <> $3 AND d = $4 \
                   AND e IS $5 AND f = $6 AND g < $7 AND h = '$1' AND i = $8";
        assert_eq!(
            bind(sql, &params).unwrap(),
            "SELECT * FROM t WHERE a = -(-5) AND b = ('it''s''; DROP TABLE t; --') \
             AND c <> (CAST('NaN' AS DOUBLE PRECISION)) AND d = (TRUE) AND e IS NULL \
             AND f = (CAST(E'\\\\x01ff' AS BYTEA)) AND g < (CAST('2023-11-14T22:13:20' AS TIMESTAMP)) \
             AND h = '$1' AND i = (E'\\\\''); DROP TABLE t; --')"
        );
        assert_eq!(
            bind(
                "SELECT 1$1",
                &row(vec![Arc::new(StringArray::from(vec![None::<&str>]))])
            )
            .unwrap(),
            "SELECT 1 NULL"
        );
    }

    #[test]
    fn refuses_missing_parameters_many_rows_and_nul_text() {
        let one = row(vec![Arc::new(Int64Array::from(vec![1]))]);
        assert!(bind("SELECT $2", &one).is_err());
        let two = row(vec![Arc::new(Int64Array::from(vec![1, 2]))]);
        assert!(bind("SELECT $1", &two).is_err());
        match bind("SELECT $1", &texts(&["a\0b"])) {
            Err(Error::BadRequest(m)) => assert!(m.contains("NUL"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// The value a string literal token reads as.
    fn read_literal(token: &str) -> String {
        match token.strip_prefix('E') {
            Some(e) => e[1..e.len() - 1].replace("''", "'").replace("\\\\", "\\"),
            None => token[1..token.len() - 1].replace("''", "'"),
        }
    }

    /// Pieces of statements: every form the scanner knows, each whole.
    const PIECES: &[&str] = &[
        " ",
        "\n",
        "\r",
        "\t",
        "?|",
        "?&",
        "@?",
        "?-|",
        "=",
        "<>",
        "-",
        "+",
        "*",
        "/",
        "|",
        ">",
        "(",
        ")",
        ",",
        "::",
        ".",
        ";",
        "a",
        "E",
        "e",
        "b",
        "x",
        "N",
        "U",
        "u&",
        "_",
        "1",
        "0x1F",
        "a$1",
        "'a''''b'",
        "'$1 ? -- /*'",
        "E'\\\\d+'",
        "E'\\''",
        "\"a\"\"b\"",
        "\"$1\"",
        "U&'$1'",
        "U&\"?\"",
        "b'01'",
        "X'1F'",
        "'x'\n'y'",
        "E'a'\n'\\''",
        "--",
        "-- $1 ?\n",
        "*/",
        "/* $1 /* ? */ */",
        "$$ $1 $$",
        "$a$ ? $a$",
        "$€$ $1 $€$",
        "€",
        "ß",
        "😀",
        "\\",
        "%",
        "^",
        "#",
        "~",
    ];

    /// Pieces that leave something open, unless a later piece closes it.
    const OPEN: &[&str] = &["'", "E'\\", "\"", "/*", "$$", "$a$", "U&'", "b'"];

    /// Placeholders of each kind, and of both.
    const NUMBERED: &[&str] = &["$1", "$2", "$3"];
    const POSITIONAL: &[&str] = &["?", "=?", "<>?", "-?"];
    const BOTH: &[&str] = &["$1", "$2", "?", "=?"];

    /// Statements of [`PIECES`], some [`OPEN`] ones, and `placeholders`.
    fn statement(placeholders: &'static [&'static str]) -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            12 => prop::sample::select(PIECES),
            1 => prop::sample::select(OPEN),
            3 => prop::sample::select(placeholders),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    /// Pieces of bound values: whatever could end a literal early.
    const VALUE_PIECES: &[&str] = &[
        "'", "''", "\\", "\\'", "$$", "$a$", "--", "/*", "*/", "?", "\"", "€", "ß", "😀", "\n",
        "E'", ")", ";",
    ];

    fn value() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(VALUE_PIECES).prop_map(str::to_owned),
            any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|p| p.concat().replace('\0', ""))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_scanner_never_panics_and_covers_every_byte(sql in prop_oneof![statement(BOTH), any::<String>()]) {
            if let Ok(tokens) = tokens(&sql) {
                let mut at = 0;
                for t in &tokens {
                    prop_assert_eq!(t.range.start, at);
                    prop_assert!(t.range.end > at);
                    at = t.range.end;
                }
                prop_assert_eq!(at, sql.len());
            }
            let _ = placeholders(&sql);
        }

        /// Binding changes the bytes of the placeholders only: the bound
        /// statement's tokens are the statement's, each `$n` become `(`, one
        /// literal that reads back as the value, `)`.
        #[test]
        fn binding_changes_nothing_but_the_placeholders(sql in prop_oneof![statement(NUMBERED), statement(POSITIONAL)], values in prop::collection::vec(value(), 8)) {
            let Ok(found) = placeholders(&sql) else { return Ok(()) };
            if found.count > values.len() {
                return Ok(());
            }
            let Ok(Slots::Numbered(slots)) = slots(&found.sql) else { return Ok(()) };
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let out = bind(&found.sql, &texts(&refs)).unwrap();
            let before = tokens(&found.sql).unwrap();
            let after = tokens(&out).unwrap();
            let mut after = after.iter();
            for t in before {
                if t.kind != Kind::Parameter {
                    let a = after.next().unwrap();
                    prop_assert_eq!(a.kind, t.kind);
                    prop_assert_eq!(&out[a.range.clone()], &found.sql[t.range.clone()]);
                    continue;
                }
                let n = slots.iter().find(|(r, _)| *r == t.range).unwrap().1;
                let (open, lit, close) = (after.next().unwrap(), after.next().unwrap(), after.next().unwrap());
                prop_assert_eq!(&out[open.range.clone()], "(");
                prop_assert_eq!(lit.kind, Kind::Literal);
                prop_assert_eq!(read_literal(&out[lit.range.clone()]), values[n - 1].clone());
                prop_assert_eq!(&out[close.range.clone()], ")");
            }
            prop_assert!(after.next().is_none());
        }

        /// Numbering `?` changes nothing but the `?`s (and spaces around
        /// them): the other tokens are the statement's.
        #[test]
        fn numbering_changes_nothing_but_the_question_marks(sql in statement(POSITIONAL)) {
            let Ok(Slots::Positional(slots)) = slots(&sql) else { return Ok(()) };
            let out = placeholders(&sql).unwrap().sql;
            let solid = |s: &str| -> Vec<(Kind, String)> {
                tokens(s)
                    .unwrap()
                    .into_iter()
                    .filter(|t| t.kind != Kind::Space)
                    .map(|t| (t.kind, s[t.range].to_owned()))
                    .collect()
            };
            let mut expected = Vec::new();
            let mut n = 0;
            for t in tokens(&sql).unwrap().into_iter().filter(|t| t.kind != Kind::Space) {
                match slots.iter().find(|s| t.range.contains(&s.start)) {
                    Some(s) => {
                        if s.start > t.range.start {
                            expected.push((Kind::Operator, sql[t.range.start..s.start].to_owned()));
                        }
                        n += 1;
                        expected.push((Kind::Parameter, format!("${n}")));
                    }
                    None => expected.push((t.kind, sql[t.range].to_owned())),
                }
            }
            prop_assert_eq!(solid(&out), expected);
        }
    }
}
