//! Unit tests of the PostgreSQL source, and integration tests against a
//! live PostgreSQL (`live`).

use super::plan::{ctid_ranges, split_target};

#[test]
fn splits_page_counts_into_ranges_with_an_open_end() {
    assert_eq!(ctid_ranges(0, 4), [(0, None)]);
    assert_eq!(ctid_ranges(100, 1), [(0, None)]);
    assert_eq!(ctid_ranges(10, 3), [(0, Some(4)), (4, Some(8)), (8, None)]);
    assert_eq!(ctid_ranges(2, 4), [(0, Some(1)), (1, None)]);
}

#[test]
fn rewrites_the_one_table_keeping_alias_and_text() {
    let sql = "SELECT x.a, lower(x.b) -- note\nFROM public.\"My T\" AS x WHERE x.a > 1";
    let t = split_target(sql).unwrap();
    assert_eq!(t.table, "public.\"My T\"");
    assert_eq!(t.alias, "x");
    assert_eq!(t.functions, ["lower"]);
    assert_eq!(
        t.rewrite(sql, (4, Some(8))),
        "SELECT x.a, lower(x.b) -- note\nFROM (SELECT * FROM public.\"My T\" \
         WHERE ctid >= '(4,0)'::tid AND ctid < '(8,0)'::tid) AS x WHERE x.a > 1"
    );
    let sql = "select * from événements where id < 5";
    let t = split_target(sql).unwrap();
    assert_eq!(
        t.rewrite(sql, (0, Some(3))),
        "select * from (SELECT * FROM événements WHERE ctid < '(3,0)'::tid) AS événements where id < 5"
    );
}

#[test]
fn does_not_split_what_ranges_would_change() {
    for sql in [
        "SELECT * FROM a JOIN b ON a.id = b.id",
        "SELECT * FROM a, b",
        "SELECT k, count(*) FROM a GROUP BY k",
        "SELECT DISTINCT k FROM a",
        "SELECT * FROM a ORDER BY k",
        "SELECT * FROM a LIMIT 10",
        "WITH w AS (SELECT 1) SELECT * FROM w",
        "SELECT * FROM a UNION ALL SELECT * FROM b",
        "SELECT rank() OVER (ORDER BY k) FROM a",
        "SELECT * FROM generate_series(1, 10) g",
        "SELECT * FROM (SELECT * FROM a) s",
        "SELECT 1",
        "SELECT * FROM a; SELECT * FROM b",
    ] {
        assert!(split_target(sql).is_err(), "{sql}");
    }
}

/// A client's SQL is parsed on a tokio worker, whose stack is 2 MiB:
/// nesting deep enough to exhaust it must be refused by the parser's
/// recursion limit, not abort the server (in every build profile).
#[test]
fn deeply_nested_sql_is_refused_without_exhausting_a_workers_stack() {
    let depth = 5_000;
    let nested = [
        format!("SELECT {}1{} FROM a", "(".repeat(depth), ")".repeat(depth)),
        format!("SELECT * FROM a WHERE {}", "NOT ".repeat(depth) + "true"),
        format!(
            "SELECT * FROM {}a{}",
            "(SELECT * FROM ".repeat(depth),
            ") s".repeat(depth)
        ),
        format!("SELECT * FROM a WHERE k = {}1", "-".repeat(depth)),
    ];
    let worker = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            nested
                .iter()
                .map(|sql| split_target(sql).is_err())
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(worker.join().unwrap(), [true; 4]);
}

/// Integration tests against a live server: a local PostgreSQL, or the
/// one `HOPPER_PG_URL` names (14+; the tests create databases on it).
mod live {
    use super::super::*;
    use crate::source::{Catalog, Partition, PartitionSpec, Plan, Reader};
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_array::{Array, RecordBatch};
    use futures::StreamExt;
    use std::time::{Duration, Instant};
    use tokio_postgres::config::Host;
    use tokio_postgres::{Client, Config};

    /// The server to test against: `HOPPER_PG_URL` when set, else a
    /// local PostgreSQL started for the test (kept alive by the guard).
    async fn server() -> (Option<devcluster::LocalCluster>, String) {
        if let Ok(url) = std::env::var("HOPPER_PG_URL") {
            return (None, url);
        }
        let cluster = devcluster::LocalCluster::start(1, Default::default())
            .await
            .expect("a local PostgreSQL (scripts/setup.sh installs it)");
        let url = cluster.url(0);
        (Some(cluster), url)
    }

    async fn connect(url: &str) -> Client {
        let (client, conn) = url
            .parse::<Config>()
            .unwrap()
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// A fresh database `name` on the server; returns its connection string.
    async fn fresh_db(base: &str, name: &str) -> String {
        let admin = connect(base).await;
        // Separate statements: DROP/CREATE DATABASE refuse to run in
        // the implicit transaction of a multi-statement query.
        for stmt in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.batch_execute(&stmt).await.unwrap();
        }
        let mut config: Config = base.parse().unwrap();
        config.dbname(name);
        let host = match &config.get_hosts()[0] {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        let mut s = format!(
            "host={host} port={} dbname={name}",
            config.get_ports().first().copied().unwrap_or(5432)
        );
        if let Some(u) = config.get_user() {
            s += &format!(" user={u}");
        }
        if let Some(p) = config.get_password() {
            s += &format!(" password={}", String::from_utf8_lossy(p));
        }
        s
    }

    async fn read_all(src: &PostgresSource, plan: &Plan) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        for p in &plan.partitions {
            let mut s = src.read(&Caller::server(), p).await.unwrap();
            while let Some(b) = s.next().await {
                out.push(b.unwrap());
            }
        }
        out
    }

    fn prim<T: ArrowPrimitiveType>(a: &dyn Array, i: usize) -> Option<T::Native> {
        let a = a.as_primitive::<T>();
        (!a.is_null(i)).then(|| a.value(i))
    }

    fn list<T: ArrowPrimitiveType>(a: &dyn Array, i: usize) -> Option<Vec<Option<T::Native>>> {
        let a = a.as_list::<i32>();
        (!a.is_null(i)).then(|| a.value(i).as_primitive::<T>().iter().collect())
    }

    fn text(a: &dyn Array, i: usize) -> Option<String> {
        let a = a.as_string::<i32>();
        (!a.is_null(i)).then(|| a.value(i).to_owned())
    }

    const ALL_TYPES: &str = "
        CREATE TABLE all_types (
            k int4 PRIMARY KEY, i2 int2, i8 int8, f4 float4, f8 float8, b bool,
            t text, vc varchar(10), bc char(3), nm name, by bytea, n numeric(12,4),
            d date, tm time, ts timestamp, tz timestamptz, u uuid, j json, jb jsonb,
            a2 int2[], a4 int4[], a8 int8[], af4 float4[], af8 float8[]);
        INSERT INTO all_types VALUES
          (1, 32767, -9223372036854775808, 1.5, -2.25e300, true, 'héllo', 'abc', 'x',
           'nm', '\\x00ff10', 12345.6789, '2024-02-29', '13:45:01.123456',
           '1999-12-31 23:59:59.999999', '2024-01-01 12:00:00+02',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"b\": null}',
           '{1,NULL,-3}', '{}', '{9223372036854775807}', '{1.5,NULL}', '{-0.5}'),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (3, -1, 0, -0.0, 0, false, '', '', '', '', '', -0.0001, '1900-01-01', '00:00',
           '1800-06-01 00:00:00', '1970-01-01 00:00:00+00',
           '00000000-0000-0000-0000-000000000000', '[]', '[]',
           '{NULL}', '{NULL,NULL}', '{}', '{}', '{NULL}');
        INSERT INTO all_types (k, i8, t, n, a4)
          SELECT g, g * 1000, repeat('z', g % 50), g / 7.0, ARRAY[g, g + 1]
          FROM generate_series(4, 5000) g;";

    #[tokio::test]
    async fn reads_every_type_as_tokio_postgres_query_returns_it() {
        let (_cluster, base) = server().await;
        let url = fresh_db(&base, "hopper_t_types").await;
        let c = connect(&url).await;
        c.batch_execute(ALL_TYPES).await.unwrap();
        let limits = BatchLimits {
            rows: 700,
            bytes: 1 << 20,
        };
        let src = PostgresSource::new(vec![url], 1, limits).await.unwrap();
        let sql = "SELECT * FROM all_types ORDER BY k";
        let plan = src.plan(&Caller::server(), sql).await.unwrap();
        assert_eq!(plan.partitions.len(), 1);
        let batches = read_all(&src, &plan).await;
        assert!(batches.len() > 1, "batches close at the row limit");
        assert!(batches.iter().all(|b| b.num_rows() <= 700));
        let batch = arrow::compute::concat_batches(&plan.schema, &batches).unwrap();
        let rows = c
            .query("SELECT *, n::text FROM all_types ORDER BY k", &[])
            .await
            .unwrap();
        assert_eq!(batch.num_rows(), rows.len());
        let col = |k: usize| batch.column(k).as_ref();
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(prim::<Int32Type>(col(0), i), r.get::<_, Option<i32>>(0));
            assert_eq!(prim::<Int16Type>(col(1), i), r.get::<_, Option<i16>>(1));
            assert_eq!(prim::<Int64Type>(col(2), i), r.get::<_, Option<i64>>(2));
            assert_eq!(prim::<Float32Type>(col(3), i), r.get::<_, Option<f32>>(3));
            assert_eq!(prim::<Float64Type>(col(4), i), r.get::<_, Option<f64>>(4));
            let b = col(5).as_boolean();
            assert_eq!(
                (!b.is_null(i)).then(|| b.value(i)),
                r.get::<_, Option<bool>>(5)
            );
            for k in [6, 7, 8, 9] {
                assert_eq!(
                    text(col(k), i),
                    r.get::<_, Option<String>>(k),
                    "row {i} col {k}"
                );
            }
            let by = col(10).as_binary::<i32>();
            assert_eq!(
                (!by.is_null(i)).then(|| by.value(i).to_vec()),
                r.get::<_, Option<Vec<u8>>>(10)
            );
            let n = col(11).as_primitive::<Decimal128Type>();
            assert_eq!(
                (!n.is_null(i)).then(|| n.value_as_string(i)),
                r.get::<_, Option<String>>(24)
            );
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
            let d = r.get::<_, Option<chrono::NaiveDate>>(12);
            assert_eq!(
                prim::<Date32Type>(col(12), i),
                d.map(|d| (d - epoch).num_days() as i32)
            );
            let tm = r.get::<_, Option<chrono::NaiveTime>>(13);
            assert_eq!(
                prim::<Time64MicrosecondType>(col(13), i),
                tm.map(|t| (t - chrono::NaiveTime::MIN).num_microseconds().unwrap())
            );
            let ts = r.get::<_, Option<chrono::NaiveDateTime>>(14);
            assert_eq!(
                prim::<TimestampMicrosecondType>(col(14), i),
                ts.map(|t| t.and_utc().timestamp_micros())
            );
            let tz = r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(15);
            assert_eq!(
                prim::<TimestampMicrosecondType>(col(15), i),
                tz.map(|t| t.timestamp_micros())
            );
            let u = col(16).as_fixed_size_binary();
            assert_eq!(
                (!u.is_null(i)).then(|| u.value(i).to_vec()),
                r.get::<_, Option<uuid::Uuid>>(16)
                    .map(|u| u.as_bytes().to_vec())
            );
            for k in [17, 18] {
                let parsed =
                    text(col(k), i).map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap());
                assert_eq!(
                    parsed,
                    r.get::<_, Option<serde_json::Value>>(k),
                    "row {i} col {k}"
                );
            }
            assert_eq!(
                list::<Int16Type>(col(19), i),
                r.get::<_, Option<Vec<Option<i16>>>>(19)
            );
            assert_eq!(
                list::<Int32Type>(col(20), i),
                r.get::<_, Option<Vec<Option<i32>>>>(20)
            );
            assert_eq!(
                list::<Int64Type>(col(21), i),
                r.get::<_, Option<Vec<Option<i64>>>>(21)
            );
            assert_eq!(
                list::<Float32Type>(col(22), i),
                r.get::<_, Option<Vec<Option<f32>>>>(22)
            );
            assert_eq!(
                list::<Float64Type>(col(23), i),
                r.get::<_, Option<Vec<Option<f64>>>>(23)
            );
        }
        // The null row is null in every column.
        assert!(batch.columns()[1..].iter().all(|c| c.is_null(1)));
    }

    #[tokio::test]
    async fn dropping_the_stream_cancels_the_query_and_frees_the_backend() {
        let (_cluster, base) = server().await;
        let src = PostgresSource::new(
            vec![base.clone()],
            1,
            BatchLimits {
                rows: 100,
                bytes: 1 << 20,
            },
        )
        .await
        .unwrap();
        let tag = "hopper_drop_probe";
        let plan = src
            .plan(
                &Caller::server(),
                &format!("SELECT g AS {tag}, repeat('x', 200) FROM generate_series(1, 50000000) g"),
            )
            .await
            .unwrap();
        let mut stream = src
            .read(&Caller::server(), &plan.partitions[0])
            .await
            .unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().num_rows(), 100);
        let admin = connect(&base).await;
        let backends = || async {
            admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid() \
                       AND application_name = $2",
                    &[&tag, &APPLICATION_NAME],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        assert_eq!(
            backends().await,
            1,
            "the COPY runs while the stream is open"
        );
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(10);
        while backends().await > 0 {
            assert!(
                Instant::now() < deadline,
                "backend still there 10 s after the drop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn splits_one_table_by_ctid_without_losing_rows_added_later() {
        let (_cluster, base) = server().await;
        let url = fresh_db(&base, "hopper_t_split").await;
        let c = connect(&url).await;
        c.batch_execute(
            "CREATE TABLE big (id int8, pad text);
             INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
        let src = PostgresSource::new(vec![url.clone(), url], 3, BatchLimits::default())
            .await
            .unwrap();
        let plan = src
            .plan(
                &Caller::server(),
                "SELECT b.id FROM big AS b WHERE b.id % 2 = 0;",
            )
            .await
            .unwrap();
        assert_eq!(plan.partitions.len(), 6, "{:?}", plan.partitions);
        assert_eq!(plan.partitions.iter().filter(|p| p.segment == 1).count(), 3);
        // Rows appended after planning land in the open-ended last range.
        c.batch_execute("INSERT INTO big SELECT g, 'late' FROM generate_series(20001, 20010) g")
            .await
            .unwrap();
        let batches = read_all(&src, &plan).await;
        let ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        // Both "segments" are the same database, so every row twice.
        assert_eq!(ids.len(), 2 * 10005);
        assert_eq!(
            ids.iter().sum::<i64>(),
            2 * (2..=20010).step_by(2).sum::<i64>()
        );

        for sql in [
            "SELECT count(*) FROM big",
            "SELECT max(id) FROM big WHERE id > 3",
        ] {
            let plan = src.plan(&Caller::server(), sql).await.unwrap();
            assert_eq!(plan.partitions.len(), 2, "{sql} must not be split");
        }
    }

    #[tokio::test]
    async fn refuses_segments_whose_schemas_differ_and_bad_queries() {
        let (_cluster, base) = server().await;
        let a = fresh_db(&base, "hopper_t_seg_a").await;
        let b = fresh_db(&base, "hopper_t_seg_b").await;
        connect(&a)
            .await
            .batch_execute("CREATE TABLE t (x int4, y text)")
            .await
            .unwrap();
        connect(&b)
            .await
            .batch_execute("CREATE TABLE t (x int8, y text)")
            .await
            .unwrap();
        let src = PostgresSource::new(vec![a, b], 1, BatchLimits::default())
            .await
            .unwrap();
        let e = src
            .plan(&Caller::server(), "SELECT * FROM t")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidQuery(_)), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("segment 1") && msg.contains("\"x\""), "{msg}");

        let e = src
            .describe(&Caller::server(), "SELECT * FROM missing")
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidQuery(_)) && e.to_string().contains("missing"),
            "{e}"
        );
        let e = src
            .describe(&Caller::server(), "SELECT 1.5::numeric AS n")
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedType { .. }) && e.to_string().contains("float8"),
            "{e}"
        );
        // Reads run read-only: COPY must not become a way to write.
        let plan = src
            .plan(&Caller::server(), "SELECT y FROM t")
            .await
            .unwrap();
        let dml = Partition {
            segment: 0,
            spec: PartitionSpec::Postgres {
                sql: "INSERT INTO t VALUES (1, 'a') RETURNING y".into(),
                snapshot: None,
            },
        };
        assert!(src.read(&Caller::server(), &dml).await.is_err());
        assert_eq!(
            read_all(&src, &plan)
                .await
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            0
        );
    }

    #[tokio::test]
    async fn lists_readable_tables_with_supported_columns_and_row_estimates() {
        let (_cluster, base) = server().await;
        let a = fresh_db(&base, "hopper_t_list_a").await;
        let b = fresh_db(&base, "hopper_t_list_b").await;
        for (url, n) in [(&a, 30), (&b, 12)] {
            connect(url)
                .await
                .batch_execute(&format!(
                    "CREATE TABLE clicks (label int4, gap interval, feat float8);
                     INSERT INTO clicks SELECT 1, '1 day', 0.5 FROM generate_series(1, {n});
                     ANALYZE clicks;
                     CREATE TABLE \"Fresh\" (id int8);
                     CREATE VIEW v AS SELECT label FROM clicks;"
                ))
                .await
                .unwrap();
        }
        let src = PostgresSource::new(vec![a, b], 1, BatchLimits::default())
            .await
            .unwrap();
        let tables = src.list_tables(&Caller::server()).await.unwrap();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["public.\"Fresh\"", "public.clicks", "public.v"]);
        let clicks = &tables[1];
        let cols: Vec<&str> = clicks
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(cols, ["label", "feat"], "interval is left out");
        assert_eq!(clicks.rows, Some(42));
        assert_eq!(tables[0].rows, None, "never analyzed");
    }

    #[tokio::test]
    async fn an_unreachable_segment_is_named_without_its_password() {
        let e = PostgresSource::new(
            vec!["postgresql://alice:s3cret@127.0.0.1:1/db".into()],
            1,
            BatchLimits::default(),
        )
        .await
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Unavailable(_)), "{msg}");
        assert!(
            msg.contains("127.0.0.1:1") && !msg.contains("s3cret"),
            "{msg}"
        );
        assert!(msg.to_lowercase().contains("refused"), "says why: {msg}");
    }
}
