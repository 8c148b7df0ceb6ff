//! The catalog: what a caller can query and who the caller is — tables,
//! keys, a statement's columns and parameters, the database's name, and
//! the database's verdict on a login.
//!
//! Flight SQL's metadata commands and `ListFlights` read it; the login
//! gate ([`crate::login`]) asks it to check a password.

use arrow_schema::SchemaRef;

use crate::auth::Caller;
use crate::error::Result;

/// A table a client may query, for `ListFlights` and Flight SQL's
/// `GetTables`.
#[derive(Clone, Debug)]
pub struct TableInfo {
    /// Qualified name (`schema.table`), usable in SQL as it stands.
    pub name: String,
    /// The database (Flight SQL's catalog) it is in.
    pub catalog: String,
    /// Its schema, unquoted.
    pub db_schema: String,
    /// Its own name, unquoted.
    pub table: String,
    /// What kind of relation it is.
    pub kind: TableKind,
    /// Columns as Arrow sees them (columns of unsupported types are left out).
    pub schema: SchemaRef,
    /// Estimated row count over all segments, if known.
    pub rows: Option<i64>,
}

/// The kinds of relation a source lists, as Flight SQL names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// A table (or a partitioned table).
    Table,
    /// A view.
    View,
    /// A materialized view.
    MaterializedView,
    /// A foreign table.
    ForeignTable,
}

impl TableKind {
    /// Every kind, in the order `GetTableTypes` lists them.
    pub const ALL: [TableKind; 4] = [
        TableKind::Table,
        TableKind::View,
        TableKind::MaterializedView,
        TableKind::ForeignTable,
    ];

    /// The name Flight SQL (and JDBC) use.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Table => "TABLE",
            TableKind::View => "VIEW",
            TableKind::MaterializedView => "MATERIALIZED VIEW",
            TableKind::ForeignTable => "FOREIGN TABLE",
        }
    }
}

/// What a login as a caller showed about its role.
#[derive(Clone, Debug)]
pub struct RoleLogin {
    /// The role is a superuser or may replicate: it bypasses every GRANT.
    pub privileged: bool,
    /// This server's address as the database saw the login
    /// (`inet_client_addr()`), for the pg_hba line a message names.
    pub server_address: Option<String>,
    /// The database logged in to, for messages (`segment 0 (…)`).
    pub database: String,
}

fn no_database() -> crate::Error {
    crate::Error::Config(
        "this source has no database to check passwords against; serve it with \
         --auth none on a loopback address"
            .into(),
    )
}

/// A statement's result columns and parameters, known without running it.
#[derive(Clone, Debug)]
pub struct Described {
    /// The result's columns.
    pub schema: SchemaRef,
    /// One field per parameter (`$1`, `$2`, …), typed as the database
    /// infers them.
    pub parameters: SchemaRef,
}

/// One column of a primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyColumn {
    /// The database.
    pub catalog: String,
    /// The table's schema.
    pub db_schema: String,
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// Its position in the key, from 1.
    pub sequence: i32,
    /// The constraint's name.
    pub name: String,
}

/// What a source knows about its tables and roles. Every call runs as
/// `caller`, like [`super::Reader`]'s.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync {
    /// The tables `caller` can query.
    async fn list_tables(&self, caller: &Caller) -> Result<Vec<TableInfo>>;

    /// The name of the database `caller` reads (Flight SQL's one catalog).
    async fn catalog(&self, caller: &Caller) -> Result<String>;

    /// The primary-key columns of `table` (in `db_schema`, or any schema).
    async fn primary_keys(
        &self,
        caller: &Caller,
        db_schema: Option<&str>,
        table: &str,
    ) -> Result<Vec<KeyColumn>> {
        let _ = (caller, db_schema, table);
        Ok(Vec::new())
    }

    /// The result columns and parameters of `sql` (which may hold `$1`,
    /// `$2`, … placeholders), for a Flight SQL prepared statement.
    async fn prepare(&self, caller: &Caller, sql: &str) -> Result<Described>;

    /// Checks `caller`'s credentials by logging in to the database as it
    /// ([`crate::Error::Unauthenticated`] if the database refuses), and
    /// says what the role may do. A source without a database cannot check
    /// a password and refuses every login. Only part of the proof: see
    /// [`crate::login`].
    async fn authenticate(&self, caller: &Caller) -> Result<RoleLogin> {
        let _ = caller;
        Err(no_database())
    }

    /// Whether the database lets `user` log in from this server with no
    /// password at all (pg_hba `trust`, `peer`, `ident` for this host): then
    /// a successful [`Catalog::authenticate`] proves nothing.
    async fn admits_without_password(&self, user: &str) -> Result<bool> {
        let _ = user;
        Err(no_database())
    }
}
