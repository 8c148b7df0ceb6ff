//! `DoPut` end to end: Arrow batches from a Flight client into a table on
//! the segment the descriptor names, through a real flight-server and real
//! PostgreSQL segments; all or nothing.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use futures::TryStreamExt;
use hopper_tests::{cluster, read_all, segment_args, FlightServer};
use serde_json::{json, Value};
use tonic::Code;

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
        ),
        (
            "score",
            Arc::new(Float64Array::from_iter(
                ids.clone().map(|i| (i % 3 != 0).then_some(i as f64 / 10.0)),
            )),
        ),
        (
            "tag",
            Arc::new(StringArray::from_iter(
                ids.map(|i| (i % 4 != 0).then(|| format!("t{i}"))),
            )),
        ),
    ])
    .unwrap()
}

async fn client(server: &FlightServer) -> FlightClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new(channel)
}

/// Uploads `batches` under `command`; the server's JSON answer or its error.
async fn put(
    server: &FlightServer,
    command: Value,
    batches: Vec<Result<RecordBatch, FlightError>>,
) -> Result<Value, FlightError> {
    let schema = batch(0..1).schema();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_string())))
        .with_schema(schema)
        .build(futures::stream::iter(batches));
    let results: Vec<_> = client(server)
        .await
        .do_put(data)
        .await?
        .try_collect()
        .await?;
    assert_eq!(results.len(), 1, "one PutResult per upload");
    Ok(serde_json::from_slice(&results[0].app_metadata).unwrap())
}

fn code(e: FlightError) -> (Code, String) {
    match e {
        FlightError::Tonic(s) => (s.code(), s.message().to_owned()),
        other => panic!("not a gRPC status: {other}"),
    }
}

async fn count(cluster: &devcluster::LocalCluster, seg: usize, table: &str) -> i64 {
    cluster
        .client(seg)
        .await
        .unwrap()
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn do_put_streams_batches_into_the_named_segment_and_reads_back_the_same() {
    let cluster = cluster(2).await.unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();

    let batches = vec![
        Ok(batch(0..1000)),
        Ok(batch(1000..1000)),
        Ok(batch(1000..2500)),
    ];
    let answer = put(
        &server,
        json!({"table": "uploaded", "segment": 1, "create": true}),
        batches,
    )
    .await
    .unwrap();
    assert_eq!(
        answer,
        json!({"table": "uploaded", "segment": 1, "rows": 2500})
    );
    assert_eq!(count(&cluster, 1, "uploaded").await, 2500);
    let seg0 = cluster.client(0).await.unwrap();
    let exists: bool = seg0
        .query_one("SELECT to_regclass('uploaded') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "segment 0 is untouched");
    let types: Vec<String> = cluster
        .client(1)
        .await
        .unwrap()
        .query(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'uploaded'::regclass AND attnum > 0 ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["bigint", "double precision", "text"]);

    // An upload of no batches still creates the table (from its schema).
    let empty = put(
        &server,
        json!({"table": "uploaded", "segment": 0, "create": true}),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(empty["rows"], 0);
    assert_eq!(count(&cluster, 0, "uploaded").await, 0);

    // Appending adds rows; DoGet returns exactly what was sent, NULLs included.
    put(
        &server,
        json!({"table": "uploaded", "segment": 1}),
        vec![Ok(batch(2500..2600))],
    )
    .await
    .unwrap();
    let (_, back, _) = read_all(&server.url, "SELECT * FROM uploaded ORDER BY id")
        .await
        .unwrap();
    let back = arrow_cast::pretty::pretty_format_batches(&back)
        .unwrap()
        .to_string();
    let sent = arrow_cast::pretty::pretty_format_batches(&[batch(0..2600)])
        .unwrap()
        .to_string();
    assert!(back == sent, "read back what was written");

    // Replace starts the table over, with the new upload's schema.
    let answer = put(
        &server,
        json!({"table": "uploaded", "segment": 1, "mode": "replace"}),
        vec![Ok(batch(0..10))],
    )
    .await
    .unwrap();
    assert_eq!(answer["rows"], 10);
    assert_eq!(count(&cluster, 1, "uploaded").await, 10);

    // Endpoints tell the client which segment they read.
    let mut c = client(&server).await;
    let info = c
        .get_flight_info(FlightDescriptor::new_cmd("SELECT 1 AS x"))
        .await
        .unwrap();
    let segments: Vec<Value> = info
        .endpoint
        .iter()
        .map(|e| serde_json::from_slice(&e.app_metadata).unwrap())
        .collect();
    assert_eq!(segments, [json!({"segment": 0}), json!({"segment": 1})]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_do_put_says_why_and_leaves_no_rows() {
    let cluster = cluster(1).await.unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    cluster
        .client(0)
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE capped (id int8 CHECK (id < 1500), score float8, tag text);
             CREATE TABLE typed (id int8, score int4, tag text);",
        )
        .await
        .unwrap();

    let cases = [
        (
            json!({"table": "missing", "segment": 0}),
            Code::NotFound,
            "create",
        ),
        (
            json!({"table": "capped", "segment": 7}),
            Code::NotFound,
            "segment 7",
        ),
        (
            json!({"table": "typed", "segment": 0}),
            Code::InvalidArgument,
            "\"score\"",
        ),
        (
            json!({"table": "capped; DROP TABLE typed"}),
            Code::InvalidArgument,
            "identifier",
        ),
    ];
    for (command, want, needle) in cases {
        let e = put(&server, command.clone(), vec![Ok(batch(0..5))])
            .await
            .unwrap_err();
        let (got, message) = code(e);
        assert_eq!(got, want, "{command}: {message}");
        assert!(message.contains(needle), "{command}: {message}");
    }

    // The second batch violates the table's CHECK: the first, already
    // streamed into COPY, must not stay either.
    let e = put(
        &server,
        json!({"table": "capped"}),
        vec![Ok(batch(0..1000)), Ok(batch(1000..2000))],
    )
    .await
    .unwrap_err();
    let (got, message) = code(e);
    assert_eq!(got, Code::InvalidArgument, "{message}");
    assert_eq!(count(&cluster, 0, "capped").await, 0, "rolled back");

    // A client that goes away mid-upload (the call is cancelled, the
    // stream never ends): neither the rows nor the table it created stay.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<RecordBatch, FlightError>>(1);
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            json!({"table": "fresh", "create": true}).to_string(),
        )))
        .with_schema(batch(0..1).schema())
        .build(rx);
    let mut c = client(&server).await;
    let upload = tokio::spawn(async move { c.do_put(data).await.map(drop) });
    futures::SinkExt::send(&mut tx, Ok(batch(0..100)))
        .await
        .unwrap();
    let admin = cluster.client(0).await.unwrap();
    let copying = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY fresh%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while copying().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the COPY never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The sender stays: were it dropped, the body the cancelled call
    // leaves behind could end cleanly, which says "complete".
    upload.abort();
    let _ = upload.await;
    while copying().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the COPY outlived its client"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let gone: bool = admin
        .query_one("SELECT to_regclass('fresh') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(gone, "the table of the abandoned upload is rolled back");
    drop(tx);

    let ok = put(
        &server,
        json!({"table": "capped"}),
        vec![Ok(batch(0..1499))],
    )
    .await
    .unwrap();
    assert_eq!(ok["rows"], 1499);
    let ids = read_all(&server.url, "SELECT id FROM capped")
        .await
        .unwrap()
        .1;
    let n: usize = ids
        .iter()
        .map(|b| b.column(0).as_primitive::<Int64Type>().len())
        .sum();
    assert_eq!(n, 1499);
}

#[tokio::test(flavor = "multi_thread")]
async fn do_put_into_a_files_source_is_unimplemented_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), "a,b\n1,2\n").unwrap();
    let server = FlightServer::start(&["--files", dir.path().to_str().unwrap()]).unwrap();
    let e = put(&server, json!({"table": "t"}), vec![Ok(batch(0..3))])
        .await
        .unwrap_err();
    let (got, message) = code(e);
    assert_eq!(got, Code::Unimplemented, "{message}");
    assert!(message.contains("PostgreSQL"), "{message}");
}
