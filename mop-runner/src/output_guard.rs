//! The output database's word on `[output] table`: the pure name checks
//! are [`mop_core::run_dir::read_guard`]'s; here the database is asked which
//! tables the run's queries scan (so a view over the training table counts
//! too) and whether an existing result table carries hopper's marker.

use std::collections::BTreeSet;

use tokio_postgres::GenericClient;

use mop_core::run_config::RunConfig;
use mop_core::run_dir::read_guard::{check_not_read, output_tables, reads_it, MARKER};

use crate::error::{Error, Result};

/// What the output database says about the tables `output.table` would
/// replace: refuses one the run's queries scan, and one hopper did not
/// write unless `output.replace`.
pub async fn check_database(
    db: &impl GenericClient,
    config: &RunConfig,
    table: &str,
) -> Result<()> {
    let mut existing = Vec::new();
    for name in output_tables(table) {
        let row = db
            .query_opt(
                "SELECT c.oid::int8, obj_description(c.oid, 'pg_class') \
                 FROM pg_class c WHERE c.oid = to_regclass($1)",
                &[&name],
            )
            .await
            .map_err(|e| Error::Database(format!("looking up {name}: {e}")))?;
        if let Some(row) = row {
            existing.push((name, row.get::<_, i64>(0), row.get::<_, Option<String>>(1)));
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    let scanned = scanned(db, config).await?;
    for (name, oid, _) in &existing {
        if let Some(what) = scanned.iter().find(|(o, _)| o == oid).map(|(_, w)| w) {
            return Err(reads_it(table, name, what).into());
        }
    }
    if config.output.replace {
        return Ok(());
    }
    for (name, _, comment) in &existing {
        if !comment.as_deref().is_some_and(|c| c.starts_with(MARKER)) {
            return Err(Error::Config(format!(
                "output.table = {table:?} would drop the table {name}, which exists and was \
                 not written by hopper (it has no '{MARKER} …' comment): choose another \
                 output.table, or set replace = true in [output] to replace it"
            )));
        }
    }
    Ok(())
}

/// The tables the run's queries scan in this database (by oid), with the
/// setting of each query; a query this database cannot plan (its tables
/// live elsewhere) scans none here.
async fn scanned(db: &impl GenericClient, config: &RunConfig) -> Result<Vec<(i64, String)>> {
    let mut queries = vec![("source".to_string(), config.train_sql()?)];
    if let Some(sql) = config.validation_sql()? {
        queries.push(("source.validation".into(), sql));
    }
    if let Some(t) = &config.grid.table {
        queries.push(("grid.table".into(), mop_core::search::mst::query(t)?));
    }
    let mut out = Vec::new();
    for (what, sql) in queries {
        let plan = match db
            .query_one(&format!("EXPLAIN (FORMAT JSON, VERBOSE) {sql}"), &[])
            .await
        {
            Ok(row) => row.get::<_, serde_json::Value>(0),
            Err(e) => {
                tracing::debug!(error = %e, "the output database cannot plan the run's query");
                continue;
            }
        };
        let mut names = BTreeSet::new();
        collect_relations(&plan, &mut names);
        for (schema, rel) in names {
            let oid = db
                .query_opt(
                    "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2",
                    &[&schema, &rel],
                )
                .await
                .map_err(|e| Error::Database(format!("looking up {schema}.{rel}: {e}")))?;
            if let Some(row) = oid {
                out.push((row.get(0), what.clone()));
            }
        }
    }
    Ok(out)
}

/// Every `(Schema, Relation Name)` in an `EXPLAIN (FORMAT JSON, VERBOSE)` plan.
fn collect_relations(v: &serde_json::Value, out: &mut BTreeSet<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(schema), Some(rel)) = (
                m.get("Schema").and_then(|s| s.as_str()),
                m.get("Relation Name").and_then(|s| s.as_str()),
            ) {
                out.insert((schema.to_string(), rel.to_string()));
            }
            m.values().for_each(|v| collect_relations(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_relations(v, out)),
        _ => {}
    }
}

/// Before a run trains: refuses an `output.table` that would replace what
/// it must not (see the module docs).
pub async fn check_output(config: &RunConfig) -> Result<()> {
    let (Some(table), Some(database)) = (&config.output.table, &config.output.database) else {
        return Ok(());
    };
    check_not_read(table, &config.read_names())?;
    let (client, conn) = tokio_postgres::connect(database, tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::Database(format!("cannot connect to output.database: {e}")))?;
    let conn = tokio::spawn(conn);
    let checked = check_database(&client, config, table).await;
    drop(client);
    let _ = conn.await;
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_in_a_plan_are_collected_with_their_schema() {
        let plan = serde_json::json!([{ "Plan": {
            "Node Type": "Hash Join",
            "Plans": [
                { "Node Type": "Seq Scan", "Relation Name": "clicks", "Schema": "public" },
                { "Node Type": "Hash", "Plans": [
                    { "Node Type": "Seq Scan", "Relation Name": "users", "Schema": "s" }
                ]}
            ]
        }}]);
        let mut out = BTreeSet::new();
        collect_relations(&plan, &mut out);
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            [
                ("public".to_string(), "clicks".to_string()),
                ("s".to_string(), "users".to_string())
            ]
        );
    }
}
