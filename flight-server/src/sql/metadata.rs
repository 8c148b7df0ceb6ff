//! The metadata result sets of Flight SQL — catalogs, schemas, tables
//! (with their Arrow schemas when asked), table types and primary keys —
//! built from what the source says `caller` may read, so a user sees only
//! the tables the database lets them `SELECT`.
//!
//! arrow-flight's builders apply the commands' filters (catalog, `LIKE`
//! patterns, table types) and sort the rows the way the specification asks.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTableTypes,
    CommandGetTables,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::{Catalog, TableKind};

fn built(e: FlightError) -> Error {
    Error::Internal(format!("building a metadata result: {e}"))
}

/// `GetCatalogs`: the one database the source reads.
pub async fn catalogs(
    source: &dyn Catalog,
    caller: &Caller,
    cmd: CommandGetCatalogs,
) -> Result<RecordBatch> {
    let mut builder = cmd.into_builder();
    builder.append(source.catalog(caller).await?);
    builder.build().map_err(built)
}

/// `GetDbSchemas`: the schemas holding a table `caller` may read.
pub async fn db_schemas(
    source: &dyn Catalog,
    caller: &Caller,
    cmd: CommandGetDbSchemas,
) -> Result<RecordBatch> {
    let tables = source.list_tables(caller).await?;
    let schemas: BTreeSet<(String, String)> = tables
        .into_iter()
        .map(|t| (t.catalog, t.db_schema))
        .collect();
    let mut builder = cmd.into_builder();
    for (catalog, schema) in schemas {
        builder.append(catalog, schema);
    }
    builder.build().map_err(built)
}

/// `GetTables`: the tables `caller` may read, with their columns as Arrow
/// sees them when the command asks for schemas.
pub async fn tables(
    source: &dyn Catalog,
    caller: &Caller,
    cmd: CommandGetTables,
) -> Result<RecordBatch> {
    let tables = source.list_tables(caller).await?;
    let mut builder = cmd.into_builder();
    for t in tables {
        builder
            .append(&t.catalog, &t.db_schema, &t.table, t.kind.name(), &t.schema)
            .map_err(built)?;
    }
    builder.build().map_err(built)
}

/// `GetTableTypes`: the kinds of relation a source lists.
pub fn table_types(cmd: CommandGetTableTypes) -> Result<RecordBatch> {
    let mut builder = cmd.into_builder();
    for kind in TableKind::ALL {
        builder.append(kind.name());
    }
    builder.build().map_err(built)
}

/// The schema of `GetPrimaryKeys` results, as the specification gives it.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// `GetPrimaryKeys`: the key columns of one table `caller` may read.
pub async fn primary_keys(
    source: &dyn Catalog,
    caller: &Caller,
    cmd: CommandGetPrimaryKeys,
) -> Result<RecordBatch> {
    let catalog = source.catalog(caller).await?;
    let keys = match cmd.catalog.as_deref() {
        Some(c) if c != catalog => Vec::new(),
        _ => {
            source
                .primary_keys(caller, cmd.db_schema.as_deref(), &cmd.table)
                .await?
        }
    };
    let (mut cat, mut sch, mut tab, mut col, mut name) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut seq = Int32Builder::new();
    for k in keys {
        cat.append_value(k.catalog);
        sch.append_value(k.db_schema);
        tab.append_value(k.table);
        col.append_value(k.column);
        name.append_value(k.name);
        seq.append_value(k.sequence);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(cat.finish()),
        Arc::new(sch.finish()),
        Arc::new(tab.finish()),
        Arc::new(col.finish()),
        Arc::new(name.finish()),
        Arc::new(seq.finish()),
    ];
    RecordBatch::try_new(primary_keys_schema(), columns).map_err(|e| Error::Internal(e.to_string()))
}
