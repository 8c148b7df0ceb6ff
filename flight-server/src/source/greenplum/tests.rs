//! Unit tests of the Greenplum source; those that need a Greenplum run
//! when `HOPPER_GREENPLUM_URL` names one.

use super::*;
use crate::types::CopyDecoder;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use devcluster::{ClusterOptions, LocalCluster};
use futures::StreamExt;

/// Rows of `batches` as strings, sorted, for order-insensitive comparison.
fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).expect("fmt"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out.sort();
    out
}

/// `sql` read through `COPY … (FORMAT binary)` and the binary decoder —
/// the reference the text route must agree with.
async fn via_copy(client: &Client, sql: &str) -> Vec<RecordBatch> {
    let stmt = client.prepare(sql).await.expect("prepare");
    let schema = Arc::new(arrow_schema(stmt.columns()).expect("schema"));
    let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    let mut dec = CopyDecoder::new(schema, &types, BatchLimits::default()).expect("decoder");
    let stream = client
        .copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))
        .await
        .expect("copy");
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        dec.push(&chunk.expect("chunk")).expect("decode");
    }
    dec.finish().expect("finish");
    let mut out = Vec::new();
    while let Some(b) = dec.take_batch().expect("batch") {
        out.push(b);
    }
    out
}

/// Every type hopper maps, with NULLs and edge values.
const ALL_TYPES: &str = "SELECT g::int2 AS i2, g * 100000 AS i4, g::int8 * 10000000000 AS i8, \
     (g / 3.0)::float4 AS f4, (g / 7.0)::float8 AS f8, g % 2 = 0 AS b, \
     CASE WHEN g % 5 = 0 THEN NULL ELSE 'row ' || g || ' \"q\" é' END AS t, \
     ('{\"g\": ' || g || '}')::jsonb AS j, \
     decode(lpad(to_hex(g * 4099), 8, '0'), 'hex') AS by, \
     (g * 1.25 - 40)::numeric(12,3) AS n, \
     date '2000-02-28' + g * 37 - 4000 AS d, \
     time '00:00:00' + g * interval '1234.567891 seconds' AS tm, \
     timestamp '1999-12-31 23:59:59.999999' + g * interval '17 hours 3 microseconds' AS ts, \
     timestamptz '2024-03-31 01:30:00+02' + g * interval '1 day 1 second' AS tz, \
     md5(g::text)::uuid AS u, \
     ARRAY[g, -g, NULL]::int4[] AS ai, \
     CASE WHEN g % 4 = 0 THEN NULL ELSE ARRAY[(g / 3.0)::float8, 'NaN'::float8, '-Infinity'::float8] END AS af \
     FROM generate_series(1, 200) g";

#[tokio::test]
async fn text_values_match_binary_copy_on_real_postgres() {
    let cluster = LocalCluster::start(1, ClusterOptions::default())
        .await
        .expect("cluster");
    let client = cluster.client(0).await.expect("client");
    let want = sorted_rows(&via_copy(&client, ALL_TYPES).await);

    let stmt = client.prepare(ALL_TYPES).await.expect("prepare");
    let schema = Arc::new(arrow_schema(stmt.columns()).expect("schema"));
    let mut builder = BatchBuilder::new(schema).expect("builder");
    for m in client.simple_query(ALL_TYPES).await.expect("query") {
        if let SimpleQueryMessage::Row(row) = m {
            builder
                .push_row((0..row.len()).map(|i| row.get(i)))
                .expect("parse");
        }
    }
    let got = sorted_rows(&[builder.finish().expect("batch")]);
    assert_eq!(got.len(), 200);
    assert_eq!(got, want);
}

#[tokio::test]
async fn plain_postgres_is_not_taken_for_greenplum() {
    let cluster = LocalCluster::start(1, ClusterOptions::default())
        .await
        .expect("cluster");
    match GreenplumSource::new(&cluster.url(0), BatchLimits::default()).await {
        Err(Error::Config(m)) => assert!(m.contains("not Greenplum"), "{m}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// A source whose registry is real but which has no coordinator: its
/// cursors point at a port nothing listens on.
fn offline_source(timeout: Duration) -> GreenplumSource {
    let registry = Arc::new(Registry {
        timeout,
        inner: Mutex::new(RegistryInner::default()),
        counts: CursorCounts::default(),
    });
    let sweeper = tokio::spawn(sweep(Arc::downgrade(&registry)));
    GreenplumSource {
        config: Config::new(),
        tls: DbTls::new(super::super::db_tls::SslMode::Disable, None, "test").expect("tls"),
        limits: BatchLimits::default(),
        host_map: BTreeMap::new(),
        locator: Arc::new(Locator::default()),
        connections: Connections::new(2),
        coordinator: tokio::sync::Mutex::new(None),
        registry,
        sweeper,
    }
}

/// Registers a cursor with endpoints on `segments`, as `plan` would.
fn add_cursor(source: &GreenplumSource, segments: &[i32]) -> Vec<Partition> {
    add_cursor_of(source, segments, None)
}

/// [`add_cursor`] declared by `owner`.
fn add_cursor_of(
    source: &GreenplumSource,
    segments: &[i32],
    owner: Option<&str>,
) -> Vec<Partition> {
    // A port that was free a moment ago: connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let id = format!("{:032x}", rand::random::<u128>());
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "x",
        arrow_schema::DataType::Int64,
        true,
    )]));
    let info = EndpointInfo {
        host: "127.0.0.1".into(),
        port,
        user: "hopper".into(),
        token: "token".into(),
        name: "prc_test".into(),
    };
    let retrieve = Retrieve::new(&info, "hopper", &schema).expect("retrieve");
    let endpoints = segments
        .iter()
        .map(|&seg| {
            (
                seg,
                Endpoint {
                    status: Status::Ready,
                },
            )
        })
        .collect();
    let permit = Arc::new(tokio::sync::Semaphore::new(1))
        .try_acquire_owned()
        .expect("permit");
    let cursor = Arc::new(Cursor {
        name: "hopper_test".into(),
        owner: owner.map(str::to_owned),
        schema,
        _permit: permit,
        session: Mutex::new(None),
        state: Mutex::new(CursorState {
            endpoints,
            last_activity: Instant::now(),
        }),
    });
    lock(&source.registry.inner).open.insert(id.clone(), cursor);
    segments
        .iter()
        .map(|&segment| Partition {
            segment,
            spec: PartitionSpec::Greenplum {
                cursor: format!("{id}/{segment}"),
                retrieve: retrieve.clone(),
            },
        })
        .collect()
}

#[tokio::test]
async fn eviction_takes_from_whoever_holds_the_most_cursors() {
    let source = offline_source(Duration::from_secs(60));
    for _ in 0..3 {
        add_cursor_of(&source, &[0], Some("mallory"));
    }
    add_cursor_of(&source, &[0], Some("alice"));
    let owner = |c: &Arc<Cursor>| c.owner.clone();
    // Alice, who holds one, plans: Mallory, who holds three, loses one.
    let (_, c) = source.registry.evict_idle(Some("alice")).unwrap();
    assert_eq!(owner(&c).as_deref(), Some("mallory"));
    // Two each: the requester's own goes first.
    add_cursor_of(&source, &[0], Some("alice"));
    let (_, c) = source.registry.evict_idle(Some("alice")).unwrap();
    assert_eq!(owner(&c).as_deref(), Some("alice"));
    let (_, c) = source.registry.evict_idle(Some("bob")).unwrap();
    assert_eq!(owner(&c).as_deref(), Some("mallory"));
}

fn bad_ticket(r: Result<SendableRecordBatchStream>) -> String {
    match r {
        Err(Error::BadTicket(m)) => m,
        Err(e) => panic!("expected BadTicket, got {e}"),
        Ok(_) => panic!("expected BadTicket, got a stream"),
    }
}

#[tokio::test]
async fn an_endpoint_is_read_once_even_when_its_read_fails() {
    let source = offline_source(DEFAULT_CURSOR_TIMEOUT);
    let parts = add_cursor(&source, &[0, 1]);
    let mut s = source
        .read(&Caller::server(), &parts[0])
        .await
        .expect("first read starts");
    match s.next().await {
        Some(Err(Error::Unavailable(m))) => assert!(m.contains("127.0.0.1"), "{m}"),
        other => panic!("expected the refused connection, got {other:?}"),
    }
    assert!(s.next().await.is_none());
    assert!(bad_ticket(source.read(&Caller::server(), &parts[0]).await)
        .contains("endpoint already read"));
    assert_eq!(source.open_cursors(), 1, "segment 1 is still unread");

    let mut s = source
        .read(&Caller::server(), &parts[1])
        .await
        .expect("read starts");
    while s.next().await.is_some() {}
    assert_eq!(
        source.open_cursors(),
        0,
        "the last endpoint closes the cursor"
    );
    assert!(bad_ticket(source.read(&Caller::server(), &parts[1]).await)
        .contains("endpoint already read"));
}

#[tokio::test]
async fn a_read_cancelled_while_waiting_for_a_retrieve_slot_claims_nothing() {
    let source = offline_source(Duration::from_millis(300));
    let parts = add_cursor(&source, &[0, 1]);
    // Every retrieve slot of segment 0 taken (offline_source caps at 2).
    let slots = source.connections.segment(0);
    let held = [slots.try_acquire().unwrap(), slots.try_acquire().unwrap()];
    // A DoGet that waits in line, and whose client gives up.
    let waiting = tokio::time::timeout(
        Duration::from_millis(100),
        source.read(&Caller::server(), &parts[0]),
    )
    .await;
    assert!(waiting.is_err(), "the read waits for a slot");
    drop(held);
    assert_eq!(slots.in_use(), 0, "the cancelled read holds no slot");
    // Its endpoint was never claimed, so the sweeper closes the idle
    // cursor (and with it, in a real cluster, its coordinator session).
    let deadline = Instant::now() + Duration::from_secs(30);
    while source.open_cursors() > 0 {
        assert!(Instant::now() < deadline, "the cursor was never swept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_sweeper_closes_cursors_left_unread() {
    let source = offline_source(Duration::from_millis(200));
    let parts = add_cursor(&source, &[0, 1, 2]);
    assert_eq!(source.open_cursors(), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while source.open_cursors() > 0 {
        assert!(Instant::now() < deadline, "the cursor was never swept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(bad_ticket(source.read(&Caller::server(), &parts[2]).await)
        .contains("endpoint already read"));
}

#[tokio::test]
async fn malformed_and_foreign_tickets_are_refused() {
    let source = offline_source(DEFAULT_CURSOR_TIMEOUT);
    let parts = add_cursor(&source, &[3]);
    let files = Partition {
        segment: 0,
        spec: PartitionSpec::Files {
            sql: "SELECT 1".into(),
            partition: 0,
        },
    };
    assert!(
        bad_ticket(source.read(&Caller::server(), &files).await).contains("another kind of source")
    );
    let mut wrong_segment = parts[0].clone();
    wrong_segment.segment = 4;
    assert!(
        bad_ticket(source.read(&Caller::server(), &wrong_segment).await)
            .contains("does not belong")
    );
    let retrieve = match &parts[0].spec {
        PartitionSpec::Greenplum { retrieve, .. } => retrieve.clone(),
        _ => unreachable!(),
    };
    let garbage = Partition {
        segment: 3,
        spec: PartitionSpec::Greenplum {
            cursor: "no-slash".into(),
            retrieve,
        },
    };
    assert!(bad_ticket(source.read(&Caller::server(), &garbage).await).contains("malformed"));
    assert_eq!(source.open_cursors(), 1, "refused reads claim nothing");
}

#[tokio::test]
async fn a_cursor_planned_elsewhere_is_read_from_the_ticket_alone() {
    // This server never saw cursor "feed": the ticket says where its
    // endpoint is, and the read goes there (here: a closed port).
    let source = offline_source(DEFAULT_CURSOR_TIMEOUT);
    let planner = offline_source(DEFAULT_CURSOR_TIMEOUT);
    let mut part = add_cursor(&planner, &[3]).remove(0);
    if let PartitionSpec::Greenplum { cursor, .. } = &mut part.spec {
        *cursor = "feed/3".into();
    }
    let mut s = source
        .read(&Caller::server(), &part)
        .await
        .expect("a read of another server's cursor starts");
    match s.next().await {
        Some(Err(Error::Unavailable(m))) => assert!(m.contains("127.0.0.1"), "{m}"),
        other => panic!("expected the segment's refused connection, got {other:?}"),
    }
    assert_eq!(source.open_cursors(), 0, "nothing is tracked for it here");
}

#[test]
fn a_schema_travels_through_the_ticket_unchanged() {
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("n", arrow_schema::DataType::Decimal128(12, 3), true),
        arrow_schema::Field::new("t", arrow_schema::DataType::Utf8, false),
    ]));
    assert_eq!(
        decode_schema(&encode_schema(&schema).unwrap()).unwrap(),
        schema
    );
}

/// Against a live Greenplum: every endpoint read once, together, equals
/// the query on the coordinator; a second read is refused; the cursor
/// is closed afterwards.
#[tokio::test]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_endpoints_together_return_the_query_result() {
    let url = std::env::var("HOPPER_GREENPLUM_URL")
        .expect("HOPPER_GREENPLUM_URL: a Greenplum 7 coordinator's superuser URL");
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let table = format!("hopper_gp_test_{:016x}", rand::random::<u64>());
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} AS {ALL_TYPES} DISTRIBUTED RANDOMLY; \
             INSERT INTO {table} SELECT * FROM {table}"
        ))
        .await
        .expect("create test table");
    let sql = format!("SELECT * FROM {table}");

    let limits = BatchLimits {
        rows: 37,
        bytes: 1 << 20,
    };
    let source = GreenplumSource::new(&url, limits).await.expect("source");
    let plan = source.plan(&Caller::server(), &sql).await.expect("plan");
    assert!(!plan.partitions.is_empty());
    assert_eq!(source.open_cursors(), 1);
    let mut got = Vec::new();
    for p in &plan.partitions {
        let mut s = source.read(&Caller::server(), p).await.expect("read");
        while let Some(b) = s.next().await {
            let b = b.expect("batch");
            assert!(b.num_rows() <= 37);
            assert_eq!(b.schema().fields(), plan.schema.fields());
            got.push(b);
        }
    }
    assert_eq!(source.open_cursors(), 0, "the last read closes the cursor");
    match source.read(&Caller::server(), &plan.partitions[0]).await {
        Err(Error::BadTicket(m)) => assert!(m.contains("already read"), "{m}"),
        Err(e) => panic!("expected BadTicket, got {e}"),
        Ok(_) => panic!("a second read of an endpoint must be refused"),
    }
    let want = via_copy(&admin, &sql).await;
    admin
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop test table");
    let got = sorted_rows(&got);
    assert_eq!(got.len(), 400);
    assert_eq!(got, sorted_rows(&want));
}
