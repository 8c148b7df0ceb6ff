//! The PostgreSQL → Arrow type mapping as the server's database sources
//! use it: [`pg_arrow`]'s mapping and decoder, and the schema of a
//! prepared statement's columns, which only a driver can describe.
//!
//! The mapping itself (and its table) lives in [`pg_arrow::decode`], a
//! crate without a runtime, so that anything holding COPY bytes can decode
//! them the way the server does.

use arrow_schema::Schema;

pub use pg_arrow::{arrow_field, CopyDecoder};

use crate::error::Result;

/// The Arrow schema of a prepared statement's result columns.
pub fn arrow_schema(columns: &[tokio_postgres::Column]) -> Result<Schema> {
    columns
        .iter()
        .map(|c| arrow_field(c.name(), c.type_(), c.type_modifier()))
        .collect::<pg_arrow::Result<Vec<_>>>()
        .map(Schema::new)
        .map_err(Into::into)
}
