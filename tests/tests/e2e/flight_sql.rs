//! Flight SQL end to end: clients we did not write — ADBC's Flight SQL
//! driver from PyPI through its DBAPI, and arrow-flight's
//! `FlightSqlServiceClient` — against a flight-server with `--auth database`
//! over two real PostgreSQL segments whose URLs hold no password. Every
//! value is checked against what PostgreSQL itself returns.

use std::collections::BTreeSet;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use hopper_tests::{cluster, flight_sql_client, python_json, segment_args, FlightServer};

/// Rows of `typed` on each segment.
const ROWS_PER_SEGMENT: i64 = 40;

/// Two segments, each with `typed` (readable by `reader`, with a primary
/// key) and `secret` (readable by nobody but its owner); `reader` may
/// create tables in `public` (for ingest).
async fn segments() -> devcluster::LocalCluster {
    let c = cluster(2).await.unwrap();
    for i in 0..c.len() {
        let db = c.client(i).await.unwrap();
        let lo = i as i64 * 1000;
        db.batch_execute(&format!(
            "CREATE ROLE reader LOGIN PASSWORD 'reader-pw';
             GRANT CREATE ON SCHEMA public TO reader;
             CREATE TABLE typed (id int8 PRIMARY KEY, v text NOT NULL, f float8, b bool,
                                 ts timestamp, note text);
             INSERT INTO typed
               SELECT g, 'v' || g, g / 7.0, g % 2 = 0,
                      timestamp '2024-02-29 12:34:56.789012' + g * interval '1 hour',
                      CASE WHEN g % 3 = 0 THEN NULL ELSE 'n''' || g END
               FROM generate_series({lo}, {lo} + {n} - 1) g;
             GRANT SELECT ON typed TO reader;
             CREATE TABLE secret (x int);",
            n = ROWS_PER_SEGMENT
        ))
        .await
        .unwrap();
    }
    c
}

fn server(c: &devcluster::LocalCluster) -> FlightServer {
    let mut args = segment_args(c);
    for url in &args {
        assert!(
            !url.contains(":reader-pw@"),
            "segment URLs must hold no password"
        );
    }
    args.extend(["--auth", "database"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    FlightServer::start(&args).unwrap()
}

/// `typed` as PostgreSQL returns it, over both segments, in the shape the
/// Python script prints (timestamps as epoch microseconds).
async fn typed_from_postgres(c: &devcluster::LocalCluster) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for i in 0..c.len() {
        let db = c.client(i).await.unwrap();
        for r in db
            .query(
                "SELECT id, v, f, b, (extract(epoch FROM ts) * 1000000)::int8, note \
                 FROM typed ORDER BY id",
                &[],
            )
            .await
            .unwrap()
        {
            rows.push(serde_json::json!([
                r.get::<_, i64>(0),
                r.get::<_, String>(1),
                r.get::<_, f64>(2),
                r.get::<_, bool>(3),
                r.get::<_, i64>(4),
                r.get::<_, Option<String>>(5),
            ]));
        }
    }
    rows.sort_by_key(|r| r[0].as_i64());
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn adbc_flight_sql_driver_queries_binds_lists_ingests_and_recovers_from_errors() {
    let c = segments().await;
    let server = server(&c);
    let uri = server.url.replace("grpc+tcp://", "grpc://");
    let out = python_json(
        "adbc_flightsql.py",
        &[&uri, &"reader", &"HOPPER_TEST_PASSWORD"],
        &[("HOPPER_TEST_PASSWORD", "reader-pw")],
    );

    // A query, value for value, over both segments.
    let mut typed: Vec<serde_json::Value> = out["typed"].as_array().unwrap().clone();
    typed.sort_by_key(|r| r[0].as_i64());
    assert_eq!(typed.len() as i64, 2 * ROWS_PER_SEGMENT);
    assert_eq!(typed, typed_from_postgres(&c).await);

    // Bound parameters, PostgreSQL's $n and JDBC's ?.
    let bound: Vec<i64> = out["bound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1005..1000 + ROWS_PER_SEGMENT)
        .filter(|i| *i != 1007)
        .collect();
    assert_eq!(bound, expected);
    assert_eq!(out["bound_question"], 1);

    // One partition per segment, read in parallel on their own connections.
    assert_eq!(out["partitions"], 2);
    assert_eq!(out["partition_schema"], serde_json::json!(["id"]));
    let ids: Vec<BTreeSet<i64>> = out["partition_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        })
        .collect();
    let seg0: BTreeSet<i64> = (0..ROWS_PER_SEGMENT).collect();
    let seg1: BTreeSet<i64> = (1000..1000 + ROWS_PER_SEGMENT).collect();
    assert!(ids.contains(&seg0) && ids.contains(&seg1), "{ids:?}");

    // Metadata down to columns, only what reader may read.
    let objects = out["objects"].as_object().unwrap();
    let typed_obj = &objects["hopper.public.typed"];
    assert_eq!(typed_obj["type"], "TABLE");
    assert_eq!(
        typed_obj["columns"],
        serde_json::json!(["id", "v", "f", "b", "ts", "note"])
    );
    assert!(
        !objects.keys().any(|k| k.ends_with(".secret")),
        "reader sees a table it may not read: {objects:?}"
    );
    assert!(out["table_types"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("TABLE")));
    assert_eq!(
        out["table_schema"],
        serde_json::json!([
            ["id", "int64"],
            ["v", "string"],
            ["f", "double"],
            ["b", "bool"],
            ["ts", "timestamp[us]"],
            ["note", "string"]
        ])
    );
    assert_eq!(out["vendor"], "hopper");

    // Ingest: create, append, and a create that finds the table.
    assert_eq!(out["ingest_create"], 3);
    assert_eq!(out["ingest_append"], 3);
    let again = &out["ingest_again"];
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{again}"
    );
    let seg0 = c.client(0).await.unwrap();
    let n: i64 = seg0
        .query_one("SELECT count(*) FROM ingested WHERE label IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);

    // Errors carry PostgreSQL's words and the right status, and the
    // connection goes on.
    let bad = out["bad"]["message"].as_str().unwrap();
    assert!(bad.contains("syntax error"), "{bad}");
    assert!(bad.contains("InvalidArgument"), "{bad}");
    let denied = out["denied"]["message"].as_str().unwrap();
    assert!(denied.contains("permission denied"), "{denied}");
    assert!(denied.contains("PermissionDenied"), "{denied}");
    assert_eq!(out["after_errors"], 2 * ROWS_PER_SEGMENT);

    // README's example: polars over the same driver, partitions in parallel.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flight_sql.py");
    let run = std::process::Command::new(hopper_tests::python().unwrap())
        .arg(example)
        .args([uri.as_str(), "reader", "SELECT id, v FROM typed"])
        .env("HOPPER_PASSWORD", "reader-pw")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        printed.contains(&format!(
            "polars: {} rows, columns ['id', 'v']",
            2 * ROWS_PER_SEGMENT
        )),
        "{printed}"
    );
    assert!(
        printed.contains(&format!(
            "partitions: 2 read in parallel, rows [{ROWS_PER_SEGMENT}, {ROWS_PER_SEGMENT}]"
        )),
        "{printed}"
    );
}

/// Every batch of one endpoint.
async fn fetch(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    endpoint: &arrow_flight::FlightEndpoint,
) -> Vec<RecordBatch> {
    let ticket = endpoint.ticket.clone().unwrap();
    client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The strings of `column` in the one endpoint of a metadata `FlightInfo`.
async fn strings(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    info: &arrow_flight::FlightInfo,
    column: &str,
) -> Vec<String> {
    fetch(client, &info.endpoint[0])
        .await
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name(column)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..a.len()).map(move |i| a.value(i).to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_flight_sql_client_prepares_binds_and_reads_every_endpoint() {
    let c = segments().await;
    let server = server(&c);
    let mut client = flight_sql_client(&server.url).await.unwrap();

    // Without logging in, nothing.
    let e = client
        .execute("SELECT id FROM typed".into(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authorization"), "{e}");
    client.handshake("reader", "reader-pw").await.unwrap();

    let mut prepared = client
        .prepare(
            "SELECT id, v FROM typed WHERE id < $1 ORDER BY id".into(),
            None,
        )
        .await
        .unwrap();
    let params = prepared.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 1);
    assert_eq!(params.field(0).data_type(), &arrow_schema::DataType::Int64);
    let dataset = prepared.dataset_schema().unwrap().clone();
    assert_eq!(
        dataset
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["id", "v"]
    );
    for limit in [5i64, 1010] {
        let batch = RecordBatch::try_new(
            params.clone().into(),
            vec![std::sync::Arc::new(Int64Array::from(vec![limit]))],
        )
        .unwrap();
        prepared.set_parameters(batch).unwrap();
        let info = prepared.execute().await.unwrap();
        assert_eq!(info.endpoint.len(), 2, "one endpoint per segment");
        let mut ids = Vec::new();
        for endpoint in &info.endpoint {
            for b in &fetch(&mut client, endpoint).await {
                let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                let v = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                for i in 0..b.num_rows() {
                    assert_eq!(v.value(i), format!("v{}", id.value(i)));
                    ids.push(id.value(i));
                }
            }
        }
        ids.sort();
        let expected: Vec<i64> = (0..ROWS_PER_SEGMENT)
            .chain(1000..1000 + ROWS_PER_SEGMENT)
            .filter(|i| *i < limit)
            .collect();
        assert_eq!(ids, expected, "bound {limit}");
    }
    prepared.close().await.unwrap();

    // Primary keys from the catalog.
    let info = client
        .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("public".into()),
            table: "typed".into(),
        })
        .await
        .unwrap();
    let column = strings(&mut client, &info, "column_name").await;
    assert_eq!(column, ["id"]);

    // The types, as JDBC's getTypeInfo reads them.
    let info = client
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let names = strings(&mut client, &info, "type_name").await;
    for t in ["int8", "float8", "text", "timestamp"] {
        assert!(names.iter().any(|n| n == t), "{names:?}");
    }

    // Updates are refused with why; the plain Flight API is unchanged.
    let e = client
        .execute_update("DELETE FROM typed".into(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
}
