//! What Flight SQL's metadata calls ask a PostgreSQL or Greenplum database:
//! the tables a user may read, their primary keys, and the parameters of
//! a statement. Both database sources ask the same catalog, one through a
//! segment, the other through the coordinator.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::source::{Described, KeyColumn, TableKind};
use crate::types::{arrow_field, arrow_schema};

/// The table type Flight SQL names for a `pg_class.relkind`.
pub fn table_kind(relkind: i8) -> TableKind {
    match relkind as u8 {
        b'v' => TableKind::View,
        b'm' => TableKind::MaterializedView,
        b'f' => TableKind::ForeignTable,
        _ => TableKind::Table,
    }
}

/// The database `client` is connected to.
pub async fn current_database(client: &Client, on: &str) -> Result<String> {
    let row = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(|e| Error::from_pg(on, e))?;
    Ok(row.get(0))
}

/// The result columns and parameters of `sql`, prepared but not run.
pub async fn prepare(client: &Client, sql: &str, on: &str) -> Result<Described> {
    let stmt = client
        .prepare(sql)
        .await
        .map_err(|e| Error::from_pg(on, e))?;
    let schema = Arc::new(arrow_schema(stmt.columns())?);
    // A parameter whose type hopper cannot stream is still bound as text.
    let parameters = stmt
        .params()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = format!("${}", i + 1);
            arrow_field(&name, t, -1)
                .unwrap_or_else(|_| Field::new(&name, DataType::Utf8, true))
                .with_nullable(true)
        })
        .collect::<Vec<_>>();
    Ok(Described {
        schema,
        parameters: Arc::new(Schema::new(parameters)),
    })
}

/// The primary-key columns of the tables `caller` may read, optionally of
/// one schema and one table, in key order.
pub async fn primary_keys(
    client: &Client,
    db_schema: Option<&str>,
    table: &str,
    on: &str,
) -> Result<Vec<KeyColumn>> {
    let rows = client
        .query(
            "SELECT current_database()::text, n.nspname::text, c.relname::text, a.attname::text, \
                    k.ord::int4, con.conname::text \
             FROM pg_constraint con \
             JOIN pg_class c ON c.oid = con.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE con.contype = 'p' AND c.relname = $1 \
               AND ($2::text IS NULL OR n.nspname = $2) \
               AND has_table_privilege(c.oid, 'SELECT') \
             ORDER BY 2, 3, 5",
            &[&table, &db_schema],
        )
        .await
        .map_err(|e| Error::from_pg(on, e))?;
    Ok(rows
        .iter()
        .map(|r| KeyColumn {
            catalog: r.get(0),
            db_schema: r.get(1),
            table: r.get(2),
            column: r.get(3),
            sequence: r.get(4),
            name: r.get(5),
        })
        .collect())
}

/// What the database says of the role `client` logged in as, on `database`
/// (named in messages).
pub async fn role_login(client: &Client, database: &str) -> Result<super::RoleLogin> {
    let on = format!("looking up the login's role on {database}");
    let row = client
        .query_one(
            "SELECT r.rolsuper OR r.rolreplication, host(inet_client_addr()) \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::from_pg(&on, e))?;
    Ok(super::RoleLogin {
        privileged: row.get(0),
        server_address: row.get(1),
        database: database.to_owned(),
    })
}

/// `config` logging in as `user` with no password: everything else —
/// hosts, ports, database, options, TLS mode, timeouts — as `config` has it.
/// (`Config` can set a password but not unset one.)
pub fn without_password(config: &tokio_postgres::Config, user: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.user(user);
    for host in config.get_hosts() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => c.host(h),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => c.host_path(p),
        };
    }
    for addr in config.get_hostaddrs() {
        c.hostaddr(*addr);
    }
    for port in config.get_ports() {
        c.port(*port);
    }
    if let Some(db) = config.get_dbname() {
        c.dbname(db);
    }
    if let Some(o) = config.get_options() {
        c.options(o);
    }
    if let Some(a) = config.get_application_name() {
        c.application_name(a);
    }
    if let Some(t) = config.get_connect_timeout() {
        c.connect_timeout(*t);
    }
    c.ssl_mode(config.get_ssl_mode());
    c
}
