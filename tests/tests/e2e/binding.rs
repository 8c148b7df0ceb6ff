//! Bound parameters end to end: arrow-flight's `FlightSqlServiceClient`
//! prepares statements on a flight-server with `--auth database` over a
//! real PostgreSQL, binds text values, and reads the rows back.
//!
//! Statements full of what a re-printer gets wrong (doubled quotes, escape
//! strings, jsonb's `?` operators, comments that cut an operator short,
//! dollar quotes) must return exactly what PostgreSQL returns for them, and
//! random values built from quotes, backslashes, dollar quotes and comment
//! openers must come back unchanged — also for a role whose own setting is
//! `standard_conforming_strings = off`, which hopper's sessions override.

use std::cell::RefCell;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_flight::sql::client::{FlightSqlServiceClient, PreparedStatement};
use futures::TryStreamExt;
use hopper_tests::{cluster, flight_sql_client, segment_args, FlightServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tonic::transport::Channel;

/// A role with PostgreSQL's defaults.
const READER: (&str, &str) = ("reader", "reader-pw");

/// A role whose sessions default to `standard_conforming_strings = off`,
/// where `'\'` would not be a whole string.
const LEGACY: (&str, &str) = ("legacy", "legacy-pw");

/// Rows as text, `None` for NULL.
type Rows = Vec<Vec<Option<String>>>;

/// One PostgreSQL segment with both roles, and a flight-server over it.
async fn setup() -> (devcluster::LocalCluster, FlightServer) {
    let c = cluster(1).await.unwrap();
    let db = c.client(0).await.unwrap();
    db.batch_execute(&format!(
        "CREATE ROLE {} LOGIN PASSWORD '{}';
         CREATE ROLE {} LOGIN PASSWORD '{}';
         ALTER ROLE {} SET standard_conforming_strings = off;",
        READER.0, READER.1, LEGACY.0, LEGACY.1, LEGACY.0
    ))
    .await
    .unwrap();
    let mut args = segment_args(&c);
    args.extend(["--auth", "database"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    (c, server)
}

/// The legacy role's own sessions do read `'\'` the old way, so a test
/// that passes as that role shows hopper's sessions pin the setting.
async fn assert_legacy_role_defaults_off(c: &devcluster::LocalCluster) {
    let mut config: tokio_postgres::Config = c.url(0).parse().unwrap();
    config.user(LEGACY.0).password(LEGACY.1);
    let (db, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = db
        .query_one("SELECT current_setting('standard_conforming_strings')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "off");
}

async fn login(
    server: &FlightServer,
    (user, password): (&str, &str),
) -> FlightSqlServiceClient<Channel> {
    let mut client = flight_sql_client(&server.url).await.unwrap();
    client.handshake(user, password).await.unwrap();
    client
}

/// Binds `values` (as text) to `prepared`, executes it and reads every
/// endpoint; the error message if any step fails.
async fn execute(
    client: &mut FlightSqlServiceClient<Channel>,
    prepared: &mut PreparedStatement<Channel>,
    values: &[&str],
) -> Result<Rows, String> {
    let params = prepared
        .parameter_schema()
        .map_err(|e| e.to_string())?
        .clone();
    if !params.fields().is_empty() {
        let columns: Vec<ArrayRef> = params
            .fields()
            .iter()
            .zip(values)
            .map(|(f, v)| {
                assert_eq!(f.data_type(), &arrow_schema::DataType::Utf8, "{f:?}");
                Arc::new(StringArray::from(vec![*v])) as ArrayRef
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::new(params), columns).map_err(|e| e.to_string())?;
        prepared.set_parameters(batch).map_err(|e| e.to_string())?;
    }
    let info = prepared.execute().await.map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for endpoint in info.endpoint {
        let batches: Vec<RecordBatch> = client
            .do_get(endpoint.ticket.unwrap())
            .await
            .map_err(|e| e.to_string())?
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        for b in &batches {
            for i in 0..b.num_rows() {
                rows.push(
                    b.columns()
                        .iter()
                        .map(|c| {
                            let c = c.as_string::<i32>();
                            c.is_valid(i).then(|| c.value(i).to_owned())
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(rows)
}

/// Prepares `sql` through hopper, binds `values`, reads it, closes it.
async fn through_hopper(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
    values: &[&str],
) -> Result<Rows, String> {
    let mut prepared = client
        .prepare(sql.to_owned(), None)
        .await
        .map_err(|e| e.to_string())?;
    let rows = execute(client, &mut prepared, values).await;
    prepared.close().await.unwrap();
    rows
}

/// What PostgreSQL itself returns for `sql` with `values` as its
/// parameters; its error message if it refuses.
async fn in_postgres(
    db: &tokio_postgres::Client,
    sql: &str,
    values: &[&str],
) -> Result<Rows, String> {
    let message = |e: tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string())
    };
    let statement = db.prepare(sql).await.map_err(message)?;
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
        [..statement.params().len()]
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = db.query(&statement, &params).await.map_err(message)?;
    Ok(rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect())
}

/// Statements a token re-printer corrupted, as sent to hopper and (where
/// hopper numbers `?`) as PostgreSQL takes them.
const TRICKY: &[(&str, &str)] = &[
    // Doubled quotes stay doubled.
    ("SELECT 'a''''b' AS s, $1::text AS p", ""),
    // An escape string keeps its backslashes and hides its `$1`.
    (r"SELECT E'\\d+' AS s, E'\'$1' AS e, $1::text AS p", ""),
    // A string continued on the next line stays an escape string.
    ("SELECT E'x'\n'\\' $1 ' AS s, $1::text AS p", ""),
    // A standard string ends at its second quote, backslash or not.
    (r"SELECT '\' AS s, $1::text AS p, '\' AS t", ""),
    // A quoted identifier with a doubled quote.
    (
        r#"SELECT "a""b" AS s, $1::text AS p FROM (SELECT 'q'::text AS "a""b") t"#,
        "",
    ),
    // jsonb's `?` operators beside `$n` placeholders.
    (
        r#"SELECT ('{"a":1}'::jsonb ? 'a')::text AS k, ('{"a":1}'::jsonb ?| array['b','a'])::text AS any_,
                  ('{"a":1}'::jsonb @? '$.a')::text AS path, $1::text AS p"#,
        "",
    ),
    // ... and joined to other operator characters beside `?` ones.
    (
        r#"SELECT ('{"a":1}'::jsonb ?| array['b'])::text AS any_, ('{"a":1}'::jsonb ?& array['a'])::text AS all_, ?::text AS p"#,
        r#"SELECT ('{"a":1}'::jsonb ?| array['b'])::text AS any_, ('{"a":1}'::jsonb ?& array['a'])::text AS all_, $1::text AS p"#,
    ),
    // Comments cut operators short: `>--`, `|--`, `>/*`.
    (
        "SELECT (2>--$1\n1)::text AS gt, (B'1'|--$1\nB'0')::text AS bits, (2>/* $1 */1)::text AS c, $1::text AS p",
        "",
    ),
    // Dollar quotes, with a tag PostgreSQL reads as a letter.
    (
        "SELECT $€$ $1 ' ? $$ $€$ AS s, $a$ $1 $b$ $a$ AS t, $1::text AS p",
        "",
    ),
    // Comments nest.
    ("SELECT /* a /* $1 */ $1 */ $1::text AS p", ""),
    // `a$1` is an identifier.
    (
        "SELECT a$1, $1::text AS p FROM (SELECT 'ident'::text AS a$1) t",
        "",
    ),
    // Unicode-escape strings and bit strings.
    (
        r"SELECT U&'\0041 $1' AS u, b'01'::text AS b, x'1F'::text AS x, $1::text AS p",
        "",
    ),
    // JDBC's `?` written against an operator.
    (
        "SELECT v FROM (VALUES ('a'), ('it''s'), ('c')) t(v) WHERE v<>? ORDER BY v",
        "SELECT v FROM (VALUES ('a'), ('it''s'), ('c')) t(v) WHERE v<>$1 ORDER BY v",
    ),
    // PostgreSQL's own verdict on `0x1F` (before 16: trailing junk)
    // reaches the client: the statement arrives as written.
    ("SELECT 0x1F::text AS h, $1::text AS p", ""),
    // The session reads strings the standard way, whatever the role says.
    (
        "SELECT current_setting('standard_conforming_strings') AS scs, $1::text AS p",
        "",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn tricky_statements_return_what_postgresql_returns_for_them_as_any_role() {
    let (c, server) = setup().await;
    assert_legacy_role_defaults_off(&c).await;
    let db = c.client(0).await.unwrap();
    let value = r"it's \ $1 ? -- /* $$ €";
    for role in [READER, LEGACY] {
        let mut client = login(&server, role).await;
        for (sql, in_pg) in TRICKY {
            let in_pg = if in_pg.is_empty() { sql } else { in_pg };
            let expected = in_postgres(&db, in_pg, &[value]).await;
            let got = through_hopper(&mut client, sql, &[value]).await;
            match (&got, &expected) {
                (Ok(got), Ok(expected)) => {
                    assert_eq!(got, expected, "{sql} as {}", role.0);
                    assert!(!expected.is_empty(), "{sql}: no rows to compare");
                }
                (Err(got), Err(expected)) => {
                    // The client prints the status message with its quotes escaped.
                    let got = got.replace("\\\"", "\"");
                    assert!(
                        got.contains(expected.as_str()),
                        "{sql}: {got} vs {expected}"
                    )
                }
                _ => panic!(
                    "{sql} as {}: hopper {got:?}, PostgreSQL {expected:?}",
                    role.0
                ),
            }
        }
    }
}

/// Pieces of random values: whatever could end a literal early, and text.
const PIECES: &[&str] = &[
    "'", "''", "\\", "\\'", "\\\\", "$$", "$a$", "$1", "?", "--", "/*", "*/", "\"", "E'", "€", "ß",
    "😀", "\n", "\r\n", "\t", ")", ";", " ",
];

fn value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(PIECES).prop_map(str::to_owned),
        proptest::char::range(' ', '~').prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

#[test]
fn random_values_come_back_unchanged_as_a_role_with_standard_strings_off() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (c, server) = rt.block_on(setup());
    rt.block_on(assert_legacy_role_defaults_off(&c));
    // Each statement also holds `'\'`, which a session reading strings the
    // old way would not end where it does.
    let statements = [
        r"SELECT '\' AS a, $1::text AS v, E'\\' AS b",
        r"SELECT '\' AS a, ?::text AS v, E'\\' AS b",
    ];
    let sessions = rt.block_on(async {
        let mut sessions = Vec::new();
        for role in [READER, LEGACY] {
            let mut client = login(&server, role).await;
            for sql in statements {
                let prepared = client.prepare(sql.to_owned(), None).await.unwrap();
                sessions.push((role.0, sql, client.clone(), prepared));
            }
        }
        RefCell::new(sessions)
    });
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&value(), |value| {
            for (role, sql, client, prepared) in sessions.borrow_mut().iter_mut() {
                let rows = rt.block_on(execute(client, prepared, &[value.as_str()]));
                let expected = vec![vec![
                    Some("\\".to_owned()),
                    Some(value.clone()),
                    Some("\\".to_owned()),
                ]];
                if rows.as_ref() != Ok(&expected) {
                    return Err(TestCaseError::fail(format!(
                        "{sql} as {role} with {value:?}: {rows:?}"
                    )));
                }
            }
            Ok(())
        })
        .unwrap();
}
