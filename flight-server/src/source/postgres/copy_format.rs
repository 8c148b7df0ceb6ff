//! How a PostgreSQL segment exports rows for `DoGet`: binary or text
//! `COPY`, chosen per query from its column types.
//!
//! Both routes decode into the same Arrow batches (pg-arrow's
//! [`CopyDecoder`](pg_arrow::CopyDecoder) and [`TextCopyDecoder`]); this
//! is only the server's choice between them, a command-line setting.

use arrow_schema::SchemaRef;
use pg_arrow::{BatchLimits, TextCopyDecoder};
use tokio_postgres::types::Type;

/// How a PostgreSQL segment exports rows for `DoGet`.
///
/// Text costs the backend less and hopper more (parsing text is dearer
/// than reading binary): on the Criteo-like table one endpoint reads 394 k
/// rows/s by text against 322 k by binary, where a core was free for the
/// server, but two endpoints on two busy cores read 430 k by text against
/// 446 k by binary (BENCHMARKS.md, data-plane run 6). Binary is therefore
/// the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CopyFormat {
    /// Text for queries whose every column PostgreSQL writes cheaper as text
    /// (integers, booleans, text types), binary otherwise.
    Auto,
    /// Always binary COPY.
    #[default]
    Binary,
    /// Text COPY for every query whose column types the text parsers know
    /// (all hopper streams but a few; binary for the rest).
    Text,
}

/// Types whose text output costs the backend less than their binary form.
fn cheap_as_text(t: &Type) -> bool {
    [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::BOOL,
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::CHAR,
    ]
    .contains(t)
}

impl CopyFormat {
    /// The text decoder for a query with columns of `types` (and
    /// `schema`), if this format reads it as text: `None` means binary.
    pub(crate) fn text_decoder(
        self,
        schema: &SchemaRef,
        types: &[Type],
        limits: BatchLimits,
    ) -> Option<TextCopyDecoder> {
        let wanted = match self {
            CopyFormat::Binary => false,
            CopyFormat::Text => true,
            CopyFormat::Auto => !types.is_empty() && types.iter().all(cheap_as_text),
        };
        // A type the text parsers do not know falls back to binary.
        wanted
            .then(|| TextCopyDecoder::new(schema.clone(), limits).ok())
            .flatten()
    }

    /// The `COPY` option naming the format.
    pub(crate) fn statement(text: bool, sql: &str) -> String {
        // The newlines matter: a trailing `-- comment` in `sql` must not
        // swallow the closing parenthesis.
        let format = if text { "text" } else { "binary" };
        format!("COPY (\n{sql}\n) TO STDOUT (FORMAT {format})")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn auto_reads_integer_and_text_columns_as_text_only() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("t", DataType::Utf8, true),
        ]));
        let types = [Type::INT8, Type::TEXT];
        let limits = BatchLimits::default();
        assert!(CopyFormat::Auto
            .text_decoder(&schema, &types, limits)
            .is_some());
        assert!(CopyFormat::Binary
            .text_decoder(&schema, &types, limits)
            .is_none());
        let floats = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        assert!(CopyFormat::Auto
            .text_decoder(&floats, &[Type::FLOAT8], limits)
            .is_none());
        assert!(CopyFormat::Text
            .text_decoder(&floats, &[Type::FLOAT8], limits)
            .is_some());
    }
}
