//! The catalog of a Greenplum coordinator: tables, keys, statement shapes
//! and logins, all answered by the coordinator.

use super::*;

#[async_trait::async_trait]
impl Catalog for GreenplumSource {
    async fn prepare(&self, caller: &Caller, sql: &str) -> Result<Described> {
        let client = self.coordinator_for(caller).await?;
        pg_catalog::prepare(&client, sql, "preparing the query on the coordinator").await
    }

    async fn catalog(&self, caller: &Caller) -> Result<String> {
        let client = self.coordinator_for(caller).await?;
        pg_catalog::current_database(&client, "asking the coordinator").await
    }

    async fn primary_keys(
        &self,
        caller: &Caller,
        db_schema: Option<&str>,
        table: &str,
    ) -> Result<Vec<KeyColumn>> {
        let client = self.coordinator_for(caller).await?;
        pg_catalog::primary_keys(
            &client,
            db_schema,
            table,
            "looking up keys on the coordinator",
        )
        .await
    }

    async fn authenticate(&self, caller: &Caller) -> Result<RoleLogin> {
        let client = self.coordinator_for(caller).await?;
        check_greenplum(&client).await?;
        pg_catalog::role_login(&client, "the Greenplum coordinator").await
    }

    async fn admits_without_password(&self, user: &str) -> Result<bool> {
        let config = pg_catalog::without_password(&self.config, user);
        Ok(
            connect(&config, &self.tls, "probing a login without password")
                .await
                .is_ok(),
        )
    }

    async fn list_tables(&self, caller: &Caller) -> Result<Vec<TableInfo>> {
        let client = self.coordinator_for(caller).await?;
        let ctx = "listing tables on the coordinator";
        // reltuples on the coordinator is the whole table's estimate (-1 or
        // 0 before the first ANALYZE).
        let rows = client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::float8, \
                        a.attname::text, a.atttypid, a.atttypmod, current_database()::text, \
                        n.nspname::text, c.relname::text, c.relkind \
                 FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'gp_toolkit') \
                   AND n.nspname NOT LIKE 'pg\\_%' \
                   AND has_table_privilege(c.oid, 'SELECT') \
                 ORDER BY 1, a.attnum",
                &[],
            )
            .await
            .map_err(|e| Error::from_pg(ctx, e))?;
        let mut tables: Vec<(TableInfo, Vec<arrow_schema::Field>)> = Vec::new();
        for r in &rows {
            let name: String = r.try_get(0).map_err(|e| Error::from_pg(ctx, e))?;
            let reltuples: f64 = r.try_get(1).map_err(|e| Error::from_pg(ctx, e))?;
            let column: String = r.try_get(2).map_err(|e| Error::from_pg(ctx, e))?;
            let oid: u32 = r.try_get(3).map_err(|e| Error::from_pg(ctx, e))?;
            let typmod: i32 = r.try_get(4).map_err(|e| Error::from_pg(ctx, e))?;
            if tables.last().is_none_or(|t| t.0.name != name) {
                let estimate = (reltuples > 0.0).then_some(reltuples.round() as i64);
                let info = TableInfo {
                    name,
                    catalog: r.try_get(5).map_err(|e| Error::from_pg(ctx, e))?,
                    db_schema: r.try_get(6).map_err(|e| Error::from_pg(ctx, e))?,
                    table: r.try_get(7).map_err(|e| Error::from_pg(ctx, e))?,
                    kind: pg_catalog::table_kind(r.try_get(8).map_err(|e| Error::from_pg(ctx, e))?),
                    schema: Arc::new(arrow_schema::Schema::empty()),
                    rows: estimate,
                };
                tables.push((info, Vec::new()));
            }
            // Columns of types hopper cannot stream are left out.
            let field = Type::from_oid(oid).and_then(|t| arrow_field(&column, &t, typmod).ok());
            if let (Some(f), Some(t)) = (field, tables.last_mut()) {
                t.1.push(f);
            }
        }
        Ok(tables
            .into_iter()
            .map(|(info, fields)| TableInfo {
                schema: Arc::new(arrow_schema::Schema::new(fields)),
                ..info
            })
            .collect())
    }
}
