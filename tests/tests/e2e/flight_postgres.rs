//! flight-server over real PostgreSQL segments, read by the Rust Flight
//! client and by pyarrow: the union of all endpoints equals the query.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use hopper_tests::{cluster, python_json, read_all, segment_args, FlightServer};

/// Every supported type, NULLs in every column (every 7th row), per segment
/// its own id range.
fn create_all_types(segment: usize) -> String {
    let lo = segment * 1000;
    format!(
        "CREATE TABLE all_types (
            id int8, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, b bool,
            t text, vc varchar(12), ch char(3), by bytea, n numeric(12,4),
            d date, tm time, ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb,
            ra real[], da float8[], ia int4[], ba int8[]);
         INSERT INTO all_types
         SELECT g,
           CASE WHEN g % 7 = 1 THEN NULL ELSE (g % 30000 - 15000)::int2 END,
           CASE WHEN g % 7 = 2 THEN NULL ELSE g * 37 - 5000 END,
           CASE WHEN g % 7 = 3 THEN NULL ELSE g::int8 * 123456789 END,
           CASE WHEN g % 7 = 4 THEN NULL ELSE g / 3.0 END,
           CASE WHEN g % 7 = 5 THEN NULL ELSE g * 1.25e-3 - 1 END,
           CASE WHEN g % 7 = 6 THEN NULL ELSE g % 2 = 0 END,
           CASE WHEN g % 7 = 0 THEN NULL
                WHEN g % 5 = 1 THEN E'tab\\there, new\\nline, back\\\\slash \\\\N ' || g
                WHEN g % 5 = 2 THEN E'\\\\N'
                ELSE 'text ünïcödé ' || g END,
           CASE WHEN g % 7 = 1 THEN NULL ELSE 'vc' || g END,
           CASE WHEN g % 7 = 2 THEN NULL ELSE chr(65 + g % 26) END,
           CASE WHEN g % 7 = 3 THEN NULL ELSE decode(md5(g::text), 'hex') END,
           CASE WHEN g % 7 = 4 THEN NULL ELSE (g * 12.3456 - 4000)::numeric(12,4) END,
           CASE WHEN g % 7 = 5 THEN NULL ELSE date '1999-12-31' + g END,
           CASE WHEN g % 7 = 6 THEN NULL ELSE time '00:00:01.5' + g * interval '17.25 seconds' END,
           CASE WHEN g % 7 = 0 THEN NULL ELSE timestamp '1965-03-04 05:06:07.891011' + g * interval '1 day 3 hours' END,
           CASE WHEN g % 7 = 1 THEN NULL ELSE timestamptz '2020-01-01 00:00:00+00' + g * interval '61 minutes' END,
           CASE WHEN g % 7 = 2 THEN NULL ELSE md5(g::text)::uuid END,
           CASE WHEN g % 7 = 3 THEN NULL ELSE json_build_object('g', g, 's', 'x' || g) END,
           CASE WHEN g % 7 = 4 THEN NULL ELSE jsonb_build_object('g', g, 'a', jsonb_build_array(1, 2)) END,
           CASE WHEN g % 7 = 5 THEN NULL ELSE ARRAY[g::real / 2, NULL, -1.5]::real[] END,
           CASE WHEN g % 7 = 6 THEN NULL ELSE ARRAY[g * 0.1, g * 0.2]::float8[] END,
           CASE WHEN g % 7 = 0 THEN NULL WHEN g % 5 = 0 THEN '{{}}'::int4[] ELSE ARRAY[g, g + 1, NULL]::int4[] END,
           CASE WHEN g % 7 = 1 THEN NULL ELSE ARRAY[g::int8 * 1000000000]::int8[] END
         FROM generate_series({lo}, {hi}) AS g;",
        hi = lo + 299
    )
}

/// The same values, as canonical strings, straight from PostgreSQL.
const CANONICAL_SQL: &str =
    "SELECT id, i2::text, i4::text, i8::text, f4::text, f8::text, b::text, t, vc, ch,
    encode(by, 'hex'), ((n * 10000)::int8)::text, (d - date '1970-01-01')::text,
    ((extract(epoch FROM tm) * 1000000)::int8)::text,
    ((extract(epoch FROM ts) * 1000000)::int8)::text,
    ((extract(epoch FROM tstz) * 1000000)::int8)::text,
    u::text, j::text, jb::text,
    array_to_string(ra, ',', 'null'), array_to_string(da, ',', 'null'),
    array_to_string(ia, ',', 'null'), array_to_string(ba, ',', 'null')
  FROM all_types";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Canonical string of one Arrow value, matching CANONICAL_SQL's forms.
fn canonical(col: &dyn Array, row: usize) -> Option<String> {
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Int16 => col.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float32 => pg_float(col.as_primitive::<Float32Type>().value(row) as f64, true),
        DataType::Float64 => pg_float(col.as_primitive::<Float64Type>().value(row), false),
        DataType::Boolean => col.as_boolean().value(row).to_string(),
        DataType::Utf8 => col.as_string::<i32>().value(row).to_string(),
        DataType::Binary => hex(col.as_binary::<i32>().value(row)),
        DataType::Decimal128(_, _) => col.as_primitive::<Decimal128Type>().value(row).to_string(),
        DataType::Date32 => col.as_primitive::<Date32Type>().value(row).to_string(),
        DataType::Time64(_) => col
            .as_primitive::<Time64MicrosecondType>()
            .value(row)
            .to_string(),
        DataType::Timestamp(_, _) => col
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .to_string(),
        DataType::FixedSizeBinary(16) => {
            uuid::Uuid::from_slice(col.as_fixed_size_binary().value(row))
                .expect("16 bytes")
                .hyphenated()
                .to_string()
        }
        DataType::List(_) => {
            let values = col.as_list::<i32>().value(row);
            (0..values.len())
                .map(|i| canonical(values.as_ref(), i).unwrap_or_else(|| "null".into()))
                .collect::<Vec<_>>()
                .join(",")
        }
        other => panic!("unexpected Arrow type {other}"),
    })
}

/// PostgreSQL's shortest round-trip text form of a float.
fn pg_float(x: f64, single: bool) -> String {
    let s = if single {
        format!("{}", x as f32)
    } else {
        format!("{x}")
    };
    // Rust prints 1e-5 as "0.00001" and PostgreSQL as "1e-05"; normalize
    // both sides through parsing instead of comparing spellings.
    s
}

fn normalize_float_text(s: &str) -> String {
    match s.parse::<f64>() {
        Ok(v) => format!("{v:e}"),
        Err(_) => s.to_string(),
    }
}

type Rows = BTreeMap<i64, Vec<Option<String>>>;

/// f4, f8 and the elements of real[] / float8[] compare by value, not spelling.
fn by_value(mut row: Vec<Option<String>>) -> Vec<Option<String>> {
    for i in [3, 4] {
        row[i] = row[i].as_deref().map(normalize_float_text);
    }
    for i in [18, 19] {
        row[i] = row[i].as_deref().map(|s| {
            s.split(',')
                .map(normalize_float_text)
                .collect::<Vec<_>>()
                .join(",")
        });
    }
    row
}

fn arrow_rows(batches: &[RecordBatch]) -> Rows {
    let mut out = Rows::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let id = b.column(0).as_primitive::<Int64Type>().value(r);
            let row: Vec<Option<String>> = b.columns()[1..]
                .iter()
                .map(|c| canonical(c.as_ref(), r))
                .collect();
            out.insert(id, by_value(row));
        }
    }
    out
}

/// Every row by id as one-row slices of its columns: equal only if every
/// value is the same, floats bit for bit.
fn exact_rows(batches: &[RecordBatch]) -> BTreeMap<i64, Vec<arrow_array::ArrayRef>> {
    let mut out = BTreeMap::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let id = b.column(0).as_primitive::<Int64Type>().value(r);
            out.insert(id, b.columns().iter().map(|c| c.slice(r, 1)).collect());
        }
    }
    out
}

async fn postgres_rows(cluster: &devcluster::LocalCluster) -> Rows {
    let mut out = Rows::new();
    for i in 0..cluster.len() {
        let client = cluster.client(i).await.unwrap();
        for row in client.query(CANONICAL_SQL, &[]).await.unwrap() {
            let id: i64 = row.get(0);
            let v: Vec<Option<String>> = (1..row.len()).map(|c| row.get(c)).collect();
            out.insert(id, by_value(v));
        }
    }
    out
}

async fn setup(segments: usize) -> (devcluster::LocalCluster, FlightServer) {
    let cluster = cluster(segments).await.unwrap();
    for i in 0..segments {
        cluster
            .client(i)
            .await
            .unwrap()
            .batch_execute(&create_all_types(i))
            .await
            .unwrap();
    }
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Small batches so that every segment sends several.
    let mut all = args.clone();
    all.extend(["--batch-rows", "64"]);
    let server = FlightServer::start(&all).unwrap();
    (cluster, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn union_of_endpoints_equals_the_query_for_every_type_with_nulls() {
    let (cluster, server) = setup(3).await;
    let (schema, batches, endpoints) = read_all(&server.url, "SELECT * FROM all_types")
        .await
        .unwrap();
    // The same rows through the text COPY route, forced for every type:
    // the same schema and the same values.
    let args = segment_args(&cluster);
    let mut text_args: Vec<&str> = args.iter().map(String::as_str).collect();
    text_args.extend(["--batch-rows", "64", "--copy-format", "text"]);
    let text_server = FlightServer::start(&text_args).unwrap();
    let (text_schema, text_batches, _) = read_all(&text_server.url, "SELECT * FROM all_types")
        .await
        .unwrap();
    assert_eq!(text_schema, schema, "the text route changes no type");
    assert!(
        exact_rows(&text_batches) == exact_rows(&batches),
        "the text route read other values"
    );
    // Integer and text columns only: `auto` reads them as text; the
    // default server (binary) reads the same values.
    text_args.truncate(text_args.len() - 2);
    text_args.extend(["--copy-format", "auto"]);
    let auto_server = FlightServer::start(&text_args).unwrap();
    let cheap = "SELECT id, i2, i4, i8, b, t, vc, ch FROM all_types";
    let (auto_schema, auto_batches, _) = read_all(&auto_server.url, cheap).await.unwrap();
    let (bin_schema, bin_batches, _) = read_all(&server.url, cheap).await.unwrap();
    assert_eq!(auto_schema, bin_schema);
    let auto_rows = exact_rows(&auto_batches);
    assert_eq!(auto_rows.len(), 900);
    assert!(
        auto_rows == exact_rows(&bin_batches),
        "auto and binary differ"
    );
    assert_eq!(endpoints, 3, "one endpoint per segment");
    assert_eq!(schema.fields().len(), 23);
    assert!(
        batches.len() >= 3 * 300 / 64,
        "batches are cut at --batch-rows"
    );
    let got = arrow_rows(&batches);
    let want = postgres_rows(&cluster).await;
    assert_eq!(got.len(), 900);
    for (id, row) in &want {
        assert_eq!(got.get(id), Some(row), "row id {id} differs");
    }
    // NULLs arrive as NULLs in every column.
    for (i, f) in schema.fields().iter().enumerate().skip(1) {
        let nulls: usize = batches.iter().map(|b| b.column(i).null_count()).sum();
        assert!(nulls > 0, "column {} has no NULLs", f.name());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn split_reads_each_segment_through_several_endpoints() {
    let cluster = cluster(2).await.unwrap();
    for i in 0..2 {
        let c = cluster.client(i).await.unwrap();
        c.batch_execute(&create_all_types(i)).await.unwrap();
        // Enough pages to split.
        c.batch_execute(&format!(
            "INSERT INTO all_types (id, t) SELECT {} + g, repeat('x', 500) FROM generate_series(1, 2000) g; ANALYZE all_types",
            100_000 * (i + 1)
        ))
        .await
        .unwrap();
    }
    let mut args = segment_args(&cluster);
    args.extend(["--split".into(), "3".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    let (_, batches, endpoints) = read_all(
        &server.url,
        "SELECT id, t FROM all_types AS a WHERE id >= 0",
    )
    .await
    .unwrap();
    assert_eq!(endpoints, 6, "3 ctid ranges on each of 2 segments");
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "no row read twice");
    assert_eq!(n, 2 * (300 + 2000), "no row lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn pyarrow_reads_every_endpoint_in_parallel() {
    let (cluster, server) = setup(3).await;
    let summary = python_json(
        "read_flight.py",
        &[&server.url, &"SELECT * FROM all_types"],
        &[],
    );
    let c = cluster.client(0).await.unwrap();
    let mut rows = 0i64;
    let mut sum_i8 = 0i64;
    let mut texts = Vec::new();
    let mut null_f8 = 0i64;
    for i in 0..cluster.len() {
        let c = cluster.client(i).await.unwrap();
        let r = c
            .query_one(
                "SELECT count(*), sum(i8)::int8, count(*) - count(f8) FROM all_types",
                &[],
            )
            .await
            .unwrap();
        rows += r.get::<_, i64>(0);
        sum_i8 += r.get::<_, i64>(1);
        null_f8 += r.get::<_, i64>(2);
        for row in c
            .query("SELECT t FROM all_types WHERE t IS NOT NULL", &[])
            .await
            .unwrap()
        {
            texts.push(row.get::<_, String>(0));
        }
    }
    drop(c);
    texts.sort();
    assert_eq!(summary["endpoints"], 3);
    assert_eq!(summary["rows"], rows);
    assert_eq!(summary["sum_i8"], sum_i8);
    assert_eq!(summary["nulls"]["f8"], null_f8);
    assert_eq!(summary["texts"], serde_json::json!(texts));
    assert_eq!(summary["types"]["u"], "extension<arrow.uuid>");
    assert_eq!(summary["types"]["ra"], "list<item: float>");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_queries_and_tickets_are_invalid_argument_with_the_databases_message() {
    let (_cluster, server) = setup(2).await;
    let mut client = hopper_tests::flight_client(&server.url).await.unwrap();
    let cases = [
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELECT point(1, 2) AS p", "point"),
        ("SELECT 1::numeric AS n", "numeric"),
    ];
    for (sql, needle) in cases {
        let err = client
            .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(sql.to_string()))
            .await
            .expect_err(sql);
        let arrow_flight::error::FlightError::Tonic(status) = err else {
            panic!("{sql}: not a gRPC status: {err}");
        };
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{sql}: {status}"
        );
        assert!(
            status.message().contains(needle),
            "{sql}: {}",
            status.message()
        );
    }
    let err = client
        .do_get(arrow_flight::Ticket::new("garbage"))
        .await
        .expect_err("garbage ticket");
    let arrow_flight::error::FlightError::Tonic(status) = err else {
        panic!("not a gRPC status: {err}");
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("ticket"), "{}", status.message());
    // The server survived all of it.
    let (_, batches, _) = read_all(&server.url, "SELECT id FROM all_types")
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_stream_leaves_no_backend_behind() {
    use futures::StreamExt;
    let cluster = cluster(1).await.unwrap();
    let c = cluster.client(0).await.unwrap();
    c.batch_execute(
        "CREATE TABLE big AS SELECT g AS id, repeat('y', 200) AS pad FROM generate_series(1, 300000) g",
    )
    .await
    .unwrap();
    let args = segment_args(&cluster);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--batch-rows", "1000"]);
    let server = FlightServer::start(&args).unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(server.url.replace("grpc+tcp://", "http://"))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = arrow_flight::FlightClient::new(channel);
    let info = client
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd("SELECT * FROM big"))
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    let count =
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hopper-flight-server'";
    // The planning session's backend may still be on its way out.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let busy: i64 = c.query_one(count, &[]).await.unwrap().get(0);
        if busy == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{busy} backends 10 s into the stream: it holds one while it runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = c.query_one(count, &[]).await.unwrap().get(0);
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} backend(s) still open 10 s after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
