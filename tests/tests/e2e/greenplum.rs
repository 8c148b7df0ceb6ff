//! Greenplum end to end: a real Greenplum 7 (coordinator and primaries),
//! a flight-server whose coordinator URL holds no password, pyarrow
//! clients that log in as themselves and read the segments' endpoints in
//! parallel, and `mop train` over those endpoints.
//!
//! `HOPPER_GREENPLUM_URL` is a superuser's URL of the coordinator (the
//! tests create tables and roles with it); `scripts/test.sh` starts
//! `../shared/greenplum` and sets it, or point it at your own Greenplum 7.
//! Without it these tests are ignored; with `scripts/test.sh` under CI they
//! must run.

use std::ops::AsyncFnMut;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use flight_client::connect::{PASSWORD_ENV, USER_ENV};
use flight_client::plan::plan;
use flight_client::read::spawn_reader;
use flight_client::FlightSlice;
use flight_server::batch_limits::BatchLimits;
use flight_server::types::{arrow_schema, CopyDecoder};
use futures::StreamExt;
use hopper_tests::run::{assert_same_models, spawn_mop_train, with_trainers, RUN_TIMEOUT};
use hopper_tests::{
    binary, flight_client, free_ports, metrics_addr, python_json, python_script, status_of,
    trainer_key_file, FlightServer, TrainerProcess, PICKED_PORTS_IP, TRAINER_KEY_ENV,
};
use mop_core::run_config::RunConfig;
use mop_core::schedule::visit_order;
use mop_trainer::device::set_threads;
use mop_trainer::featurize::Featurizer;
use mop_trainer::model::Model;
use mop_trainer::shuffle::{shuffled, unit_seed, WINDOW};
use mop_trainer::train::train_partition;
use tokio_postgres::{Client, Config, NoTls};

/// The role the tests log in as (created by `../shared/greenplum/up.sh`;
/// made here when missing).
const ANALYST: (&str, &str) = ("analyst", "analyst");

fn admin_url() -> String {
    std::env::var("HOPPER_GREENPLUM_URL").expect(
        "HOPPER_GREENPLUM_URL: a Greenplum 7 coordinator's superuser URL (scripts/test.sh sets it)",
    )
}

async fn admin() -> Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .expect("connecting to HOPPER_GREENPLUM_URL");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{0}') THEN
                 CREATE ROLE {0} LOGIN PASSWORD '{1}';
               END IF;
             END $$;",
            ANALYST.0, ANALYST.1
        ))
        .await
        .expect("the analyst role");
    client
}

/// The coordinator's host, port and database — no user, no password: all a
/// server whose callers log in as themselves is given.
fn bare_url() -> String {
    let config: Config = admin_url().parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{host}:{port}/{db}")
}

/// A table name of this test run, dropped when the guard goes.
struct Table {
    name: String,
}

impl Table {
    fn new(prefix: &str) -> Self {
        Self {
            name: format!("{prefix}_{:08x}", rand_suffix()),
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let (url, name) = (admin_url(), self.name.clone());
        // A fresh runtime: the test's own may be gone while unwinding.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

/// A generated Criteo-like table the analyst may read.
async fn criteo_table(admin: &Client, prefix: &str, rows: u64, seed: u64) -> Table {
    let table = Table::new(prefix);
    devcluster::load_criteo_into(admin, &table.name, rows, seed)
        .await
        .unwrap();
    admin
        .batch_execute(&format!("GRANT SELECT ON {} TO {}", table.name, ANALYST.0))
        .await
        .unwrap();
    table
}

/// `mop train --config config`, logged in as the analyst; must succeed.
fn train_as_analyst(config: &Path) {
    // Trainers started by hand serve the harness's key.
    let key = trainer_key_file().unwrap();
    let login = [
        (USER_ENV, ANALYST.0),
        (PASSWORD_ENV, ANALYST.1),
        (TRAINER_KEY_ENV, key.to_str().unwrap()),
    ];
    let (mut mop, _events) = spawn_mop_train(config, &[], &login);
    let status = mop.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(status.success(), "mop train {config:?}: {status}");
}

/// Primary segments of the cluster.
async fn primaries(admin: &Client) -> usize {
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM gp_segment_configuration WHERE content >= 0 AND role = 'p'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    n as usize
}

/// A flight-server over the coordinator, callers logging in (the default).
fn server(extra: &[&str]) -> FlightServer {
    let url = bare_url();
    let mut args = vec!["--greenplum", url.as_str(), "--auth", "database"];
    args.extend_from_slice(extra);
    FlightServer::start(&args).unwrap()
}

/// `sql` through the coordinator's binary COPY and the binary decoder: the
/// reference the endpoints must agree with.
async fn via_copy(client: &Client, sql: &str) -> Vec<RecordBatch> {
    let stmt = client.prepare(sql).await.expect("prepare");
    let schema = std::sync::Arc::new(arrow_schema(stmt.columns()).expect("schema"));
    let types: Vec<_> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
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

/// Rows as strings, sorted: an order-insensitive comparison.
fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let row: Vec<String> = fmts.iter().map(|f| f.value(r).to_string()).collect();
            out.push(row.join("|"));
        }
    }
    out.sort();
    out
}

fn read_ipc(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    arrow_ipc::reader::FileReader::try_new(file, None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// A 16-type table with NULLs, NaN and infinities, unicode, numerics,
/// uuids, json and arrays, spread over every segment.
const ALL_TYPES: &str = "
    (k int4, i2 int2, i8 int8, f4 float4, f8 float8, b bool, t text, vc varchar(12),
     by bytea, n numeric(14,4), d date, tm time, ts timestamp, tz timestamptz, u uuid,
     j json, jb jsonb, a4 int4[], af8 float8[]) DISTRIBUTED BY (k)";

const ALL_TYPES_ROWS: &str = "
    SELECT g, (g % 32000)::int2, g::int8 * 3000000000, (g / 7.0)::float4,
           CASE g % 9 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN '-Infinity'::float8 ELSE g / 3.0 END,
           g % 2 = 0,
           CASE WHEN g % 5 = 0 THEN NULL ELSE 'rôw ' || g || ' \"q\" 😀' END,
           left('vc' || g, 12), decode(lpad(to_hex(g * 4099), 8, '0'), 'hex'),
           (g * 1.2345 - 400)::numeric(14,4), date '1999-12-31' + g * 17,
           time '00:00:00' + g * interval '1234.567891 seconds',
           timestamp '2000-02-28 23:59:59.999999' + g * interval '17 hours 3 microseconds',
           timestamptz '2024-03-31 01:30:00+02' + g * interval '1 day 1 second',
           md5(g::text)::uuid, ('{\"g\": ' || g || '}')::json, ('{\"k\": [' || g || ', null]}')::jsonb,
           CASE WHEN g % 4 = 0 THEN NULL ELSE ARRAY[g, -g, NULL]::int4[] END,
           ARRAY[g / 3.0, 'NaN'::float8]
    FROM generate_series(1, 300) g
    UNION ALL SELECT 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_pyarrow_reads_every_type_in_parallel_as_a_user_whose_server_holds_no_password() {
    let admin = admin().await;
    let table = Table::new("hopper_types");
    admin
        .batch_execute(&format!(
            "CREATE TABLE {t} {ALL_TYPES}; INSERT INTO {t} {ALL_TYPES_ROWS};
             GRANT SELECT ON {t} TO {user};",
            t = table.name,
            user = ANALYST.0
        ))
        .await
        .unwrap();
    let server = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("types.arrow");
    let sql = format!("SELECT * FROM {}", table.name);
    let read = python_json(
        "read_to_ipc.py",
        &[&server.url, &ANALYST.0, &"GP_PASSWORD", &sql, &out],
        &[("GP_PASSWORD", ANALYST.1)],
    );
    let segments = primaries(&admin).await;
    assert_eq!(
        read["endpoints"], segments,
        "one endpoint per primary: {read}"
    );
    assert_eq!(read["rows"], 301);

    let got = read_ipc(&out);
    let want = via_copy(&admin, &sql).await;
    // Names and types; pyarrow adds empty extension metadata to the uuid.
    let shape = |b: &RecordBatch| -> Vec<(String, arrow_schema::DataType)> {
        b.schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    assert_eq!(shape(&got[0]), shape(&want[0]));
    let (got, want) = (sorted_rows(&got), sorted_rows(&want));
    assert_eq!(got.len(), 301);
    assert_eq!(got, want, "values differ from the coordinator's");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_adbc_flight_sql_reads_every_segments_endpoint_in_parallel_with_a_bound_parameter(
) {
    let admin = admin().await;
    let table = criteo_table(&admin, "hopper_fsql", 2000, 11).await;
    let server = server(&[]);
    let uri = server.url.replace("grpc+tcp://", "grpc://");
    let dir = tempfile::tempdir().unwrap();
    let segments = primaries(&admin).await;
    for (sql, param) in [
        (format!("SELECT * FROM {}", table.name), None),
        (
            format!("SELECT id, label FROM {} WHERE id < $1", table.name),
            Some(700),
        ),
    ] {
        let out = dir.path().join("adbc.arrow");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&uri, &ANALYST.0, &"GP_PASSWORD", &sql, &out];
        let param_text = param.map(|p: i64| p.to_string());
        if let Some(p) = &param_text {
            args.push(p);
        }
        let read = python_json("adbc_read_to_ipc.py", &args, &[("GP_PASSWORD", ANALYST.1)]);
        assert_eq!(
            read["partitions"], segments,
            "one partition per primary: {read}"
        );
        let reference = match param {
            None => sql.clone(),
            Some(p) => sql.replace("$1", &p.to_string()),
        };
        let want = sorted_rows(&via_copy(&admin, &reference).await);
        assert_eq!(read["rows"], want.len());
        assert_eq!(sorted_rows(&read_ipc(&out)), want, "{sql}");
    }

    // Flight SQL's bulk ingest lands in the one Greenplum table, as the user.
    let mut client = hopper_tests::flight_sql_client(&server.url).await.unwrap();
    client.handshake(ANALYST.0, ANALYST.1).await.unwrap();
    let ingested = Table::new("hopper_ingest");
    admin
        .batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {}", ANALYST.0))
        .await
        .unwrap();
    let batch = RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(arrow_array::Int64Array::from_iter_values(0..500))
            as arrow_array::ArrayRef,
    )])
    .unwrap();
    use arrow_flight::sql::{TableDefinitionOptions, TableExistsOption, TableNotExistOption};
    let command = arrow_flight::sql::CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Create.into(),
            if_exists: TableExistsOption::Fail.into(),
        }),
        table: ingested.name.clone(),
        schema: None,
        catalog: None,
        temporary: false,
        transaction_id: None,
        options: Default::default(),
    };
    let rows = client
        .execute_ingest(command, futures::stream::iter([Ok(batch)]))
        .await
        .unwrap();
    assert_eq!(rows, 500);
    let row = admin
        .query_one(
            &format!(
                "SELECT count(*), sum(x)::int8, (SELECT tableowner FROM pg_tables WHERE tablename = '{0}')::text FROM {0}",
                ingested.name
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 500);
    assert_eq!(row.get::<_, i64>(1), (0..500).sum::<i64>());
    assert_eq!(
        row.get::<_, String>(2),
        ANALYST.0,
        "created as the logged-in user"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_grants_decide_and_bad_logins_are_refused() {
    let admin = admin().await;
    let open = Table::new("hopper_open");
    let closed = Table::new("hopper_closed");
    admin
        .batch_execute(&format!(
            "CREATE TABLE {o} (id int8) DISTRIBUTED BY (id);
             INSERT INTO {o} SELECT generate_series(1, 50);
             GRANT SELECT ON {o} TO {user};
             CREATE TABLE {c} (id int8) DISTRIBUTED BY (id);",
            o = open.name,
            c = closed.name,
            user = ANALYST.0
        ))
        .await
        .unwrap();
    let server = server(&[]);
    let read = |table: &str, password: &str| {
        python_script(
            "auth_read.py",
            &[
                &server.url,
                &ANALYST.0,
                &"GP_PASSWORD",
                &format!("SELECT * FROM {table}"),
            ],
            &[("GP_PASSWORD", password)],
        )
    };
    let ok = read(&open.name, ANALYST.1);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"rows\": 50"));

    let wrong = read(&open.name, "not-the-password");
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");

    let denied = read(&closed.name, ANALYST.1);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("PermissionDenied") || err.contains("permission denied"),
        "{err}"
    );

    // No credentials at all: nothing is planned.
    let mut anonymous = flight_client(&server.url).await.unwrap();
    let status = status_of(
        anonymous
            .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(format!(
                "SELECT * FROM {}",
                open.name
            )))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
}

#[test]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
fn greenplum_configuration_errors_say_what_to_fix_not_that_a_segment_is_down() {
    let run = |args: &[&str]| {
        let out = Command::new(binary("flight-server").unwrap())
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // --auth none runs queries as the URL's user, which then needs a password.
    let err = run(&["--greenplum", &bare_url(), "--auth", "none"]);
    assert!(err.contains("configuration"), "{err}");
    assert!(err.contains("--auth database"), "{err}");
    assert!(!err.contains("unavailable"), "{err}");
    // A host that does not resolve names the host.
    let err = run(&[
        "--greenplum",
        "postgres://no-such-host.invalid:7000/postgres",
    ]);
    assert!(err.contains("configuration"), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
}

/// The run configuration of a small grid over `table` through `flight`;
/// with `results`, the result tables go to Greenplum under that name.
fn run_config(
    dir: &Path,
    name: &str,
    flight: &str,
    table: &str,
    cache: &str,
    results: Option<&str>,
) -> PathBuf {
    let output = results
        .map(|t| format!("table = \"{t}\"\ndatabase = \"{}\"\n", admin_url()))
        .unwrap_or_default();
    let text = format!(
        r#"
[source]
flight = "{flight}"
table = "{table}"
validation = {{ fraction = 0.2, key = "id" }}
cache = "{cache}"

[train]
epochs = 2
seed = 5
threads = 1

[grid]
arch = [{{ kind = "mlp", hidden = [16] }}]
optimizer = [{{ kind = "adam" }}]
lr = [1e-2, 1e-3]
batch_size = [32]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
{output}"#,
        out = dir.join(name).display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_mop_train_with_every_cache_equals_sequential_training_over_the_same_endpoints() {
    let admin = admin().await;
    let table = criteo_table(&admin, "hopper_criteo", 3000, 7).await;
    let segments = primaries(&admin).await;
    let server = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let login = [(USER_ENV, ANALYST.0), (PASSWORD_ENV, ANALYST.1)];

    let results = Table::new("hopper_models");
    let mut runs = Vec::new();
    for cache in ["none", "memory", "disk"] {
        let tables = (cache == "none").then_some(results.name.as_str());
        train_as_analyst(&run_config(
            dir.path(),
            cache,
            &server.url,
            &table.name,
            cache,
            tables,
        ));
        runs.push(dir.path().join(cache));
    }
    // The result tables, written to the Greenplum coordinator.
    for (suffix, rows) in [("", 2), ("_info", 2), ("_summary", 1)] {
        let n: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM {}{suffix}", results.name),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, rows, "{}{suffix}", results.name);
    }
    admin
        .batch_execute(&format!(
            "DROP TABLE {0}_info; DROP TABLE {0}_summary",
            results.name
        ))
        .await
        .unwrap();
    assert_same_models(&runs[0], &runs[1], 2);
    assert_same_models(&runs[0], &runs[2], 2);
    let mop_state = std::fs::read(runs[0].join("models/model-0.safetensors")).unwrap();

    // The reference: the same endpoints, planned and read as the same user
    // in this process, one model trained sequentially in the visit order.
    for (k, v) in login {
        std::env::set_var(k, v);
    }
    let config = RunConfig::load(&dir.path().join("none.toml")).unwrap();
    let slices = plan(&server.url, &config.train_sql().unwrap())
        .await
        .unwrap();
    assert_eq!(slices.len(), segments, "one endpoint per primary");
    let mut parts = vec![Vec::new(); segments];
    for (p, part) in parts.iter_mut().enumerate() {
        let mine: Vec<FlightSlice> = vec![slices[p].clone()];
        let mut rx = spawn_reader::<flight_client::Error>(&tokio::runtime::Handle::current(), mine);
        while let Some(batch) = rx.recv().await {
            part.push(batch.unwrap());
        }
    }
    let seed = config.train.seed;
    let cfg = config.grid.expand().unwrap().remove(0);
    let w = segments;
    let reference = tokio::task::spawn_blocking(move || {
        set_threads(1);
        let featurizer = Featurizer::new(&cfg);
        let mut model = Model::new(cfg.clone(), seed).unwrap();
        let mut opt = model.optimizer().unwrap();
        for epoch in 0..2 {
            for p in visit_order(2, w, seed, 0, epoch).unwrap() {
                let batches = parts[p].iter().map(|b| featurizer.featurize(b));
                let batches = shuffled(batches, unit_seed(seed, epoch, p), WINDOW);
                train_partition(&mut model, &mut opt, batches, cfg.batch_size, |_| {}).unwrap();
            }
        }
        model.to_state(&opt).unwrap()
    })
    .await
    .unwrap();
    assert!(
        reference == mop_state,
        "MOP over Greenplum differs from sequential training over the same endpoints"
    );

    // mop predict writes one prediction per row into one Greenplum table.
    let predictions = Table::new("hopper_predictions");
    for _ in 0..2 {
        // Twice with --replace: the second run starts the table over.
        let out = Command::new(binary("mop").unwrap())
            .args(["predict", "--dir"])
            .arg(&runs[0])
            .args(["--table", &table.name, "--key", "id", "--into"])
            .arg(&predictions.name)
            .arg("--replace")
            .envs(login)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mop predict: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let row = admin
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT p.id), \
                        count(*) FILTER (WHERE p.predicted IN (0, 1)) \
                 FROM {p} p JOIN {t} t USING (id)",
                p = predictions.name,
                t = table.name
            ),
            &[],
        )
        .await
        .unwrap();
    let (rows, keys, valid): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((rows, keys, valid), (3000, 3000, 3000));
}

/// pyarrow, logged in as the analyst at `url`, reads `sql` from every
/// endpoint where it points; the values must equal the coordinator's COPY.
/// Returns what the script reports (`locations`, `rows`).
async fn pyarrow_reads_as_analyst(
    admin: &Client,
    url: &str,
    sql: &str,
    dir: &Path,
) -> serde_json::Value {
    let out = dir.join(format!("read-{:08x}.arrow", rand_suffix()));
    let read = python_json(
        "read_to_ipc.py",
        &[&url, &ANALYST.0, &"GP_PASSWORD", &sql, &out],
        &[("GP_PASSWORD", ANALYST.1)],
    );
    assert_eq!(
        sorted_rows(&read_ipc(&out)),
        sorted_rows(&via_copy(admin, sql).await),
        "values read through {url}"
    );
    read
}

/// `GET /metrics` of a flight-server.
fn metrics_text(metrics: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(metrics).unwrap();
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {metrics}\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text
}

/// The value of the unlabelled gauge `name` in a flight-server's metrics.
fn gauge(metrics: &str, name: &str) -> i64 {
    metrics_text(metrics)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

/// Each `hopper_flight_rows_total` sample of a flight-server, by segment.
fn rows_sent(metrics: &str) -> std::collections::BTreeMap<i32, u64> {
    per_segment(metrics, "hopper_flight_rows_total")
}

/// Each `hopper_flight_bytes_total` sample of a flight-server, by segment.
fn bytes_sent(metrics: &str) -> std::collections::BTreeMap<i32, u64> {
    per_segment(metrics, "hopper_flight_bytes_total")
}

/// The samples of the per-segment counter `name`, by segment.
fn per_segment(metrics: &str, name: &str) -> std::collections::BTreeMap<i32, u64> {
    let prefix = format!("{name}{{segment=\"");
    metrics_text(metrics)
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|l| {
            let (seg, rest) = l.split_once("\"} ")?;
            Some((seg.parse().ok()?, rest.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_a_server_beside_each_segment_sends_only_its_segments_rows() {
    let admin = admin().await;
    assert_eq!(
        primaries(&admin).await,
        2,
        "the shared cluster has two primaries"
    );
    let table = criteo_table(&admin, "hopper_beside", 2000, 3).await;
    let per_segment: std::collections::BTreeMap<i32, u64> = admin
        .query(
            &format!(
                "SELECT gp_segment_id, count(*) FROM {} GROUP BY 1",
                table.name
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1) as u64))
        .collect();

    // Two "hosts": 127.0.0.2 plans and serves segment 0, 127.0.0.3 serves
    // segment 1; one ticket key; neither URL holds a password.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ticket.key");
    std::fs::write(&key, "a key both servers share, 32 bytes or more").unwrap();
    let key = key.to_str().unwrap().to_string();
    let bare = bare_url();
    let metrics_b = metrics_addr();
    let b = FlightServer::start_on(
        "127.0.0.3:0",
        &[
            "--greenplum",
            &bare,
            "--auth",
            "database",
            "--ticket-key-file",
            &key,
            "--metrics",
            &metrics_b,
        ],
    )
    .unwrap();
    let metrics_a = metrics_addr();
    let beside = format!("1={}", b.url);
    let a = FlightServer::start_on(
        "127.0.0.2:0",
        &[
            "--greenplum",
            &bare,
            "--auth",
            "database",
            "--ticket-key-file",
            &key,
            "--metrics",
            &metrics_a,
            "--segment-flight",
            &beside,
        ],
    )
    .unwrap();

    // A client that logged in at the first server reads each endpoint
    // where it points, with the one Bearer token.
    let sql = format!("SELECT * FROM {} ", table.name);
    let read = pyarrow_reads_as_analyst(&admin, &a.url, &sql, dir.path()).await;
    assert_eq!(
        read["locations"],
        serde_json::json!([a.url, b.url]),
        "{read}"
    );
    assert_eq!(read["rows"], 2000);

    // Each server sent exactly its own segment's rows.
    let sent_a = rows_sent(&metrics_a);
    let sent_b = rows_sent(&metrics_b);
    assert_eq!(sent_a.get(&0), per_segment.get(&0), "server A: {sent_a:?}");
    assert_eq!(
        sent_a.get(&1).copied().unwrap_or(0),
        0,
        "server A: {sent_a:?}"
    );
    assert_eq!(sent_b.get(&1), per_segment.get(&1), "server B: {sent_b:?}");
    assert_eq!(
        sent_b.get(&0).copied().unwrap_or(0),
        0,
        "server B: {sent_b:?}"
    );

    // mop train over the same topology, with a trainer beside each server
    // (listed the other way round: the runner matches them by host), ends
    // with the weights of a run through one server and spawned trainers.
    let before_train_b = bytes_sent(&metrics_b);
    let login = [(USER_ENV, ANALYST.0), (PASSWORD_ENV, ANALYST.1)];
    let trainers: Vec<TrainerProcess> = ["127.0.0.3:0", "127.0.0.2:0"]
        .iter()
        .map(|bind| {
            TrainerProcess::start(bind, &["--threads".as_ref(), "1".as_ref()], &login).unwrap()
        })
        .collect();
    let single = server(&[]);
    let beside = run_config(dir.path(), "beside", &a.url, &table.name, "memory", None);
    let text = with_trainers(&std::fs::read_to_string(&beside).unwrap(), &trainers);
    std::fs::write(&beside, text).unwrap();
    train_as_analyst(&beside);
    train_as_analyst(&run_config(
        dir.path(),
        "single",
        &single.url,
        &table.name,
        "memory",
        None,
    ));
    assert_same_models(&dir.path().join("beside"), &dir.path().join("single"), 2);
    let trained_b = rows_sent(&metrics_b);
    assert!(
        trained_b.get(&1) > sent_b.get(&1) && trained_b.get(&0).copied().unwrap_or(0) == 0,
        "the trainers read segment 1 from the server beside it: {trained_b:?}"
    );

    // Every partition was read by the trainer on its server's host, and the
    // bytes the trainer beside B counts are the bytes B's metrics count.
    let results = hopper_tests::run::results(&dir.path().join("beside"));
    let parts = results["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{results}");
    for p in parts {
        assert_eq!(p["local"], true, "{p}");
        assert_eq!(
            p["endpoint_hosts"],
            serde_json::json!([p["trainer_host"]]),
            "{p}"
        );
    }
    let on_b = parts
        .iter()
        .find(|p| p["trainer_host"] == "127.0.0.3")
        .unwrap();
    let bytes_b = bytes_sent(&metrics_b);
    assert_eq!(
        on_b["open_bytes"].as_u64(),
        Some(bytes_b[&1] - before_train_b[&1]),
        "{on_b}"
    );
    let timeline: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("beside/timeline.json")).unwrap())
            .unwrap();
    assert!(!timeline.is_empty());
    for u in &timeline {
        assert_eq!(u["local"], true, "{u}");
        assert_eq!(u["bytes_read"], 0, "trained from the memory cache: {u}");
    }
    let report = std::fs::read_to_string(dir.path().join("beside/report.html")).unwrap();
    assert!(report.contains("<h2>Data locality</h2>"));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_a_port_convention_locates_every_segment_at_the_server_on_its_host() {
    let admin = admin().await;
    let table = criteo_table(&admin, "hopper_convention", 1000, 4).await;
    let hosts: Vec<String> = admin
        .query(
            "SELECT DISTINCT hostname FROM gp_segment_configuration \
             WHERE content >= 0 AND role = 'p'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        hosts.len(),
        1,
        "the shared cluster runs its primaries on one host"
    );

    // The segment host is "at" PICKED_PORTS_IP, where a server listens on
    // the agreed port; the server clients plan at (127.0.0.2) names no
    // segment.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ticket.key");
    std::fs::write(&key, "one key for the cluster, 32 bytes or more").unwrap();
    let key = key.to_str().unwrap().to_string();
    let bare = bare_url();
    let [port, metrics_port] = free_ports::<2>(PICKED_PORTS_IP);
    let metrics_b = format!("{PICKED_PORTS_IP}:{metrics_port}");
    let common = [
        "--greenplum",
        bare.as_str(),
        "--auth",
        "database",
        "--ticket-key-file",
        key.as_str(),
    ];
    let mut args_b = common.to_vec();
    args_b.extend(["--metrics", metrics_b.as_str()]);
    let b = FlightServer::start_on(&format!("{PICKED_PORTS_IP}:{port}"), &args_b).unwrap();
    let port_arg = port.to_string();
    let host_map = format!("{}={PICKED_PORTS_IP}", hosts[0]);
    let mut args_a = common.to_vec();
    args_a.extend([
        "--segment-flight-port",
        port_arg.as_str(),
        "--host-map",
        host_map.as_str(),
    ]);
    let a = FlightServer::start_on("127.0.0.2:0", &args_a).unwrap();

    let sql = format!("SELECT * FROM {}", table.name);
    let read = pyarrow_reads_as_analyst(&admin, &a.url, &sql, dir.path()).await;
    assert_eq!(
        read["locations"],
        serde_json::json!([b.url, b.url]),
        "{read}"
    );
    assert_eq!(read["rows"], 1000);
    let sent = rows_sent(&metrics_b);
    assert_eq!(sent.values().sum::<u64>(), 1000, "{sent:?}");

    // A configuration that cannot work is refused at start, saying why.
    let out = Command::new(binary("flight-server").unwrap())
        .args(["--bind", "127.0.0.2:0", "--greenplum", bare.as_str()])
        .args(["--segment-flight-port", "50051"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ticket-key-file"), "{stderr}");
}

async fn coordinator_sessions(admin: &Client, user: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND application_name = 'hopper'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls until `done` holds, for at most `secs` seconds.
async fn eventually(secs: u64, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {secs} s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_cursors_left_unread_or_by_a_vanished_client_are_released() {
    let admin = admin().await;
    let table = criteo_table(&admin, "hopper_leave", 60_000, 9).await;
    let metrics = metrics_addr();
    // Small batches: the stream is far from done when its client vanishes.
    let server = server(&[
        "--cursor-idle-timeout",
        "2",
        "--batch-rows",
        "200",
        "--metrics",
        &metrics,
    ]);
    let sql = format!("SELECT * FROM {}", table.name);
    let leave = |mode: &str| {
        python_json(
            "plan_then_leave.py",
            &[&server.url, &ANALYST.0, &"GP_PASSWORD", &sql, &mode],
            &[("GP_PASSWORD", ANALYST.1)],
        )
    };

    // Planned, never read: the cursor and its coordinator session go once
    // the idle time has passed.
    assert_eq!(leave("plan")["endpoints"], 2);
    assert_eq!(gauge(&metrics, "hopper_greenplum_cursors_held"), 1);
    // The cursor's session (and perhaps the login's, on its way out).
    assert!(coordinator_sessions(&admin, ANALYST.0).await >= 1);
    eventually(15, "the unread cursor is closed", async || {
        gauge(&metrics, "hopper_greenplum_cursors_held") == 0
            && coordinator_sessions(&admin, ANALYST.0).await == 0
    })
    .await;

    // A client that vanishes after one batch: its retrieve and the cursor
    // are released.
    leave("one-batch");
    eventually(
        15,
        "the cursor of a vanished client is closed",
        async || {
            gauge(&metrics, "hopper_greenplum_cursors_held") == 0
                && gauge(&metrics, "hopper_flight_streams_open") == 0
                && coordinator_sessions(&admin, ANALYST.0).await == 0
        },
    )
    .await;

    // And the server reads the table whole afterwards.
    let dir = tempfile::tempdir().unwrap();
    let read = python_json(
        "read_to_ipc.py",
        &[
            &server.url,
            &ANALYST.0,
            &"GP_PASSWORD",
            &sql,
            &dir.path().join("t.arrow"),
        ],
        &[("GP_PASSWORD", ANALYST.1)],
    );
    assert_eq!(read["rows"], 60_000);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_mop_demo_generates_its_table_there_and_trains_the_grid() {
    let admin = admin().await;
    let _tables = [
        "hopper_demo_criteo",
        "hopper_demo_criteo_models",
        "hopper_demo_criteo_models_info",
        "hopper_demo_criteo_models_summary",
    ]
    .map(|name| Table {
        name: name.to_string(),
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let status = Command::new(binary("mop").unwrap())
        .args([
            "demo",
            "--greenplum",
            &admin_url(),
            "--rows",
            "3000",
            "--epochs",
            "1",
        ])
        .args(["--progress", "quiet", "--dir"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "mop demo --greenplum: {status}");
    let models = hopper_tests::run::results(&out)["models"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(models, 16);
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM hopper_demo_criteo_models", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 16, "the result table is in Greenplum");
}

/// A line put first in the shared coordinator's pg_hba.conf by
/// `../shared/greenplum/hba.sh`, taken out again when dropped.
struct HbaLine(String);

impl HbaLine {
    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/greenplum/hba.sh");

    fn add(line: String) -> Self {
        Self::run("add", &line);
        Self(line)
    }

    fn run(verb: &str, line: &str) {
        let out = Command::new(Self::SCRIPT)
            .args([verb, line])
            .output()
            .unwrap_or_else(|e| {
                panic!("{} (the shared Greenplum's pg_hba tool): {e}", Self::SCRIPT)
            });
        assert!(
            out.status.success(),
            "hba.sh {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for HbaLine {
    fn drop(&mut self) {
        Self::run("remove", &self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_a_login_proves_its_password_where_pg_hba_trusts_the_role() {
    let admin = admin().await;
    let role = format!("hopper_trusted_{:08x}", rand_suffix());
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'right-pw'"))
        .await
        .unwrap();
    let server = server(&[]);
    let login = |user: String, password: &'static str| {
        let url = server.url.clone();
        async move {
            let channel = hopper_tests::channel_from(&url, None).await.unwrap();
            hopper_tests::handshake_on(channel, &user, password).await
        }
    };
    {
        // As gpinitsystem trusts gpadmin from the coordinator's addresses.
        let _trust = HbaLine::add(format!("host all {role} 127.0.0.1/32 trust"));
        for password in ["wrong", "right-pw"] {
            let e = login(role.clone(), password).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
            assert!(e.message().contains("without a password"), "{e}");
            assert!(e.message().contains("coordinator"), "{e}");
        }
    }
    // The same role once the coordinator checks its password.
    login(role.clone(), "right-pw")
        .await
        .expect("a checked password logs in");
    assert_eq!(
        login(role.clone(), "wrong").await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    // The cluster's superuser, with its real password: refused unless asked.
    let config: Config = admin_url().parse().unwrap();
    let superuser = config.get_user().unwrap().to_string();
    let password: &'static str = String::from_utf8(config.get_password().unwrap().to_vec())
        .unwrap()
        .leak();
    let e = login(superuser, password).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("--allow-superuser"), "{e}");
    admin
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_reads_run_in_read_only_transactions() {
    let admin = admin().await;
    let seq = Table::new("hopper_seq");
    admin
        .batch_execute(&format!(
            "CREATE SEQUENCE {s}; GRANT USAGE, SELECT, UPDATE ON {s} TO {user};",
            s = seq.name,
            user = ANALYST.0
        ))
        .await
        .unwrap();
    let server = server(&[]);
    // A query with a side effect the analyst may otherwise cause.
    let out = python_script(
        "auth_read.py",
        &[
            &server.url,
            &ANALYST.0,
            &"GP_PASSWORD",
            &format!("SELECT nextval('{}') AS n", seq.name),
        ],
        &[("GP_PASSWORD", ANALYST.1)],
    );
    // The cursor fails on the coordinator, and its reader is told why.
    assert!(!out.status.success(), "a write inside a read succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-only transaction"), "{err}");
    let called: bool = admin
        .query_one(&format!("SELECT is_called FROM {}", seq.name), &[])
        .await
        .unwrap()
        .get(0);
    assert!(!called, "the sequence never advanced");
    admin
        .batch_execute(&format!("DROP SEQUENCE {}", seq.name))
        .await
        .unwrap();
}

/// A counter sample `name{label="value"}` of a flight-server's metrics (0
/// when it has none yet).
fn counter(metrics: &str, name: &str, label: &str, value: &str) -> u64 {
    let prefix = format!("{name}{{{label}=\"{value}\"}} ");
    metrics_text(metrics)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str())?.trim().parse().ok())
        .unwrap_or(0)
}

/// What the planning server's cursors did: declared, endpoints planned,
/// endpoints read, cursors closed unread (idle or at the cap).
fn cursor_counts(metrics: &str) -> [u64; 4] {
    let cursors = |e| counter(metrics, "hopper_greenplum_cursors_total", "event", e);
    let endpoints = |s| counter(metrics, "hopper_greenplum_endpoints_total", "state", s);
    [
        cursors("declared"),
        endpoints("planned"),
        endpoints("read"),
        cursors("expired") + cursors("evicted"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Greenplum: HOPPER_GREENPLUM_URL (scripts/test.sh provides one)"]
async fn greenplum_a_run_reads_every_endpoint_it_plans_and_one_snapshot_while_rows_change() {
    let admin = admin().await;
    let table = criteo_table(&admin, "hopper_moving", 2000, 9).await;
    let segments = primaries(&admin).await as u64;
    let metrics = metrics_addr();
    let server = server(&["--metrics", &metrics]);
    let dir = tempfile::tempdir().unwrap();
    let key = trainer_key_file().unwrap();
    let login = [
        (USER_ENV, ANALYST.0),
        (PASSWORD_ENV, ANALYST.1),
        (TRAINER_KEY_ENV, key.to_str().unwrap()),
    ];

    // Over the table as it is, every unit and validation pass reading again.
    let still = run_config(dir.path(), "still", &server.url, &table.name, "none", None);
    train_as_analyst(&still);
    let [declared, planned, read, closed_unread] = cursor_counts(&metrics);
    assert!(
        declared > 4,
        "a run of 2 models × 2 epochs declared {declared} cursors"
    );
    assert_eq!(planned, declared * segments, "one endpoint per primary");
    assert_eq!(read, planned, "every planned endpoint is read");
    assert_eq!(closed_unread, 0, "no cursor closed unread");

    // The same run while rows are inserted, updated and deleted under it.
    let moving = run_config(dir.path(), "moving", &server.url, &table.name, "none", None);
    let (mut mop, events) = spawn_mop_train(&moving, &[], &login);
    for epoch in 0..2 {
        let unit = events
            .iter()
            .find(|v| v["event"] == "unit" && v["epoch"].as_u64() == Some(epoch));
        assert!(
            unit.is_some(),
            "the run ended before a unit of epoch {epoch}"
        );
        admin
            .batch_execute(&format!(
                "INSERT INTO {t} SELECT * FROM {t} WHERE id % 4 = 0;
                 UPDATE {t} SET label = 1 - label WHERE id % 7 = {epoch};
                 DELETE FROM {t} WHERE id % 11 = {epoch};",
                t = table.name
            ))
            .await
            .unwrap();
    }
    let status = mop.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(
        status.success(),
        "mop train over a changing table: {status}"
    );
    assert_same_models(&dir.path().join("still"), &dir.path().join("moving"), 2);
    // Every epoch was validated, on a plan of its own.
    let r = hopper_tests::run::results(&dir.path().join("moving"));
    for m in r["models"].as_array().unwrap() {
        let val = m["val_loss"].as_array().unwrap();
        assert!(
            val.len() == 2 && val.iter().all(|v| v.as_f64().is_some()),
            "{m}"
        );
    }

    let [declared2, planned2, read2, closed_unread2] = cursor_counts(&metrics);
    assert_eq!(planned2 - planned, (declared2 - declared) * segments);
    assert_eq!(
        read2 - read,
        planned2 - planned,
        "every planned endpoint is read"
    );
    assert_eq!(closed_unread2, 0, "no cursor closed unread");
}
