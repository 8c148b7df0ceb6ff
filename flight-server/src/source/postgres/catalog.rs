//! The catalog of PostgreSQL segments: segment 0 answers for all (the
//! segments hold the same tables), except for row estimates, which are
//! summed over every segment.
use std::collections::HashMap;
use std::sync::Arc;

use futures::future::try_join_all;
use tokio_postgres::types::Type;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::source::{pg_catalog, Catalog, Described, KeyColumn, RoleLogin, TableInfo};
use crate::types::arrow_field;

use super::plan::normalize;
use super::PostgresSource;

#[async_trait::async_trait]
impl Catalog for PostgresSource {
    async fn prepare(&self, caller: &Caller, sql: &str) -> Result<Described> {
        let seg = &self.segments[0];
        let client = seg.connect(caller).await?;
        pg_catalog::prepare(
            &client,
            normalize(sql),
            &format!("segment 0 ({})", seg.display),
        )
        .await
    }

    async fn catalog(&self, caller: &Caller) -> Result<String> {
        let seg = &self.segments[0];
        let client = seg.connect(caller).await?;
        pg_catalog::current_database(&client, &format!("segment 0 ({})", seg.display)).await
    }

    async fn primary_keys(
        &self,
        caller: &Caller,
        db_schema: Option<&str>,
        table: &str,
    ) -> Result<Vec<KeyColumn>> {
        let seg = &self.segments[0];
        let client = seg.connect(caller).await?;
        let on = format!("looking up keys on segment 0 ({})", seg.display);
        pg_catalog::primary_keys(&client, db_schema, table, &on).await
    }

    async fn authenticate(&self, caller: &Caller) -> Result<RoleLogin> {
        // A login to the first segment: the database checks the password.
        let seg = &self.segments[0];
        let client = seg.login(caller).await?;
        pg_catalog::role_login(&client, &format!("segment 0 ({})", seg.display)).await
    }

    async fn admits_without_password(&self, user: &str) -> Result<bool> {
        // The segment that checked the password is the one that must not
        // let the role in without one.
        let seg = &self.segments[0];
        Ok(seg
            .probe(&pg_catalog::without_password(&seg.config, user))
            .await)
    }

    async fn list_tables(&self, caller: &Caller) -> Result<Vec<TableInfo>> {
        let seg0 = &self.segments[0];
        let client = seg0.connect(caller).await?;
        let ctx = format!("listing tables on {}", seg0.display);
        let tables = client
            .query(
                "SELECT c.oid, format('%I.%I', n.nspname, c.relname), current_database()::text, \
                        n.nspname::text, c.relname::text, c.relkind \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' \
                   AND has_table_privilege(c.oid, 'SELECT') \
                 ORDER BY 2",
                &[],
            )
            .await
            .map_err(|e| Error::from_pg(&ctx, e))?;
        let oids: Vec<u32> = tables.iter().map(|r| r.get(0)).collect();
        let columns = client
            .query(
                "SELECT attrelid, attname::text, atttypid, atttypmod FROM pg_attribute \
                 WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped \
                 ORDER BY attrelid, attnum",
                &[&oids],
            )
            .await
            .map_err(|e| Error::from_pg(&ctx, e))?;
        let mut fields: HashMap<u32, Vec<arrow_schema::Field>> = HashMap::new();
        for c in &columns {
            let (rel, name, oid, typmod): (u32, String, u32, i32) =
                (c.get(0), c.get(1), c.get(2), c.get(3));
            // Columns of types hopper cannot stream are left out.
            if let Some(f) = Type::from_oid(oid).and_then(|t| arrow_field(&name, &t, typmod).ok()) {
                fields.entry(rel).or_default().push(f);
            }
        }
        // Return the connection before taking one per segment: holding two
        // on segment 0 could deadlock callers queued at the connection cap.
        drop(client);

        let counts = try_join_all(self.segments.iter().map(|s| async move {
            let client = s.connect(caller).await?;
            let rows = client
                .query(
                    "SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::float8 \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') \
                       AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
                    &[],
                )
                .await
                .map_err(|e| Error::from_pg(&format!("counting rows on {}", s.display), e))?;
            Ok::<_, Error>(
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, f64>(1)))
                    .collect::<HashMap<_, _>>(),
            )
        }))
        .await?;

        Ok(tables
            .iter()
            .map(|r| {
                let (oid, name): (u32, String) = (r.get(0), r.get(1));
                // reltuples is -1 until the table is first analyzed.
                let rows = counts
                    .iter()
                    .map(|c| c.get(&name).copied().filter(|n| *n >= 0.0))
                    .sum::<Option<f64>>()
                    .map(|n| n.round() as i64);
                TableInfo {
                    schema: Arc::new(arrow_schema::Schema::new(
                        fields.remove(&oid).unwrap_or_default(),
                    )),
                    name,
                    catalog: r.get(2),
                    db_schema: r.get(3),
                    table: r.get(4),
                    kind: pg_catalog::table_kind(r.get(5)),
                    rows,
                }
            })
            .collect())
    }
}
