//! The bad-input matrix: every input hopper must refuse (or, for a row
//! larger than the batch limit and NULL/NaN features, must accept by a
//! documented policy), as one table of cases over a real flight-server, two
//! real PostgreSQL segments and real `mop train` processes.
//!
//! Each case pins the gRPC code (or the CLI's exit status) and a fragment
//! of the message that says what to do; after every case the server still
//! answers `health` (nothing panicked) and no database backend is left
//! open. RELIABILITY.md lists the same cases with what was observed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use devcluster::{load_criteo, LocalCluster};
use flight_server::source::{Partition, PartitionSpec};
use flight_server::ticket::{TicketBody, TicketSigner};
use futures::TryStreamExt;
use hopper_tests::{
    binary, cluster, flight_client, segment_args, status_of, FlightServer, BACKENDS,
};
use tonic::Code;

/// What a case sends.
enum Request {
    /// `GetFlightInfo(cmd = sql)`, then `DoGet` of every endpoint.
    Query(&'static str),
    /// `DoGet` of raw ticket bytes.
    DoGet(Vec<u8>),
    /// `DoAction` of this type.
    Action(&'static str),
    /// `mop train --config` with this run configuration.
    Train(String),
}

/// What must come back.
enum Expect {
    /// This gRPC status code.
    Status(Code),
    /// Success: this many rows, in batches of at most this many rows.
    Rows { rows: usize, max_per_batch: usize },
    /// `mop train` exits non-zero.
    Fails,
    /// `mop train` finishes and writes its results.
    Trains,
}

struct Case {
    name: &'static str,
    request: Request,
    expect: Expect,
    /// Must appear in the status message or in `mop`'s output.
    fragment: &'static str,
}

/// Rows and the largest batch of every endpoint of `sql`, or the status.
async fn query(client: &mut FlightClient, sql: &str) -> Result<(usize, usize), tonic::Status> {
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(sql.to_string()))
        .await
        .map_err(status_of)?;
    let (mut rows, mut max) = (0, 0);
    for ep in info.endpoint {
        let stream = client.do_get(ep.ticket.unwrap()).await.map_err(status_of)?;
        let batches: Vec<_> = stream.try_collect().await.map_err(status_of)?;
        for b in batches {
            rows += b.num_rows();
            max = max.max(b.num_rows());
        }
    }
    Ok((rows, max))
}

/// A run configuration over `table`, with `edit` applied to its text.
fn grid(dir: &Path, name: &str, flight: &str, table: &str, edit: (&str, &str)) -> String {
    let text = format!(
        r#"
[source]
flight = "{flight}"
table = "{table}"
validation = {{ fraction = 0.25, key = "id" }}
cache = "none"

[train]
epochs = 1
seed = 3
threads = 1

[grid]
arch = [{{ kind = "log_reg" }}]
optimizer = [{{ kind = "adam" }}]
lr = [1e-2]
batch_size = [64]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
"#,
        out = dir.join(name).display()
    );
    assert!(text.contains(edit.0), "edit {:?} does not apply", edit.0);
    text.replacen(edit.0, edit.1, 1)
}

/// Runs `mop train`; returns (success, stdout + stderr).
fn train(dir: &Path, name: &str, config: &str) -> (bool, String) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary("mop").unwrap())
        .args(["train", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Waits until no segment has a backend of the flight-server.
async fn no_backend_left(cluster: &LocalCluster, case: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let admins = [
        cluster.client(0).await.unwrap(),
        cluster.client(1).await.unwrap(),
    ];
    loop {
        let mut n = 0;
        for c in &admins {
            n += c.query_one(BACKENDS, &[]).await.unwrap().get::<_, i64>(0);
        }
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: {n} backend(s) still open 10 s later"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_gets_its_code_and_a_message_and_leaves_nothing_open() {
    let cluster = cluster(2).await.unwrap();
    load_criteo(&cluster, "clicks", 600, 5).await.unwrap();
    for i in 0..2 {
        let c = cluster.client(i).await.unwrap();
        // Segment 1 disagrees with segment 0 on a column's type.
        let skew = if i == 0 { "int4" } else { "text" };
        c.batch_execute(&format!(
            "CREATE TABLE skew (id int8, x {skew});
             INSERT INTO skew VALUES (1, '1');
             CREATE TABLE holes AS SELECT * FROM clicks;
             UPDATE holes SET i1 = NULL WHERE id % 3 = 0;
             UPDATE holes SET i2 = 'NaN' WHERE id % 2 = 0;
             UPDATE holes SET i3 = '-Infinity' WHERE id % 5 = 0;
             UPDATE holes SET c1 = NULL WHERE id % 4 = 0;
             CREATE TABLE nolabel AS SELECT * FROM clicks;
             UPDATE nolabel SET label = NULL WHERE id % 7 = 0;"
        ))
        .await
        .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let key = b"bad-input-matrix-ticket-key-of-32-bytes".to_vec();
    let key_file = dir.path().join("ticket.key");
    std::fs::write(&key_file, &key).unwrap();
    let args = segment_args(&cluster);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let key_arg = key_file.display().to_string();
    args.extend(["--ticket-key-file", &key_arg, "--batch-bytes", "4096"]);
    let server = FlightServer::start(&args).unwrap();
    let mut client = flight_client(&server.url).await.unwrap();

    // Tickets made with the server's key (or not).
    let signer = TicketSigner::new(key.clone(), Duration::from_secs(3600));
    let select_one = Partition {
        segment: 0,
        spec: PartitionSpec::Postgres {
            sql: "SELECT 1 AS x".into(),
            snapshot: None,
        },
    };
    // Tickets at a snapshot, as a holder of the key could make them: a name
    // that would splice SQL, and one no session exported.
    let at_snapshot = |name: &str| {
        signer.sign(
            &Partition {
                segment: 0,
                spec: PartitionSpec::Postgres {
                    sql: "SELECT 1 AS x".into(),
                    snapshot: Some(name.into()),
                },
            },
            None,
        )
    };
    let spliced_snapshot = at_snapshot("1'; DROP TABLE clicks; --");
    let unexported_snapshot = at_snapshot("0000000A-0000FFFF-1");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = signer.sign_body(&TicketBody {
        partition: select_one.clone(),
        user: None,
        expires_at: now - 1,
    });
    let forged = TicketSigner::new(b"some other key".to_vec(), Duration::from_secs(3600))
        .sign(&select_one, None);
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd("SELECT id FROM clicks"))
        .await
        .unwrap();
    let mut altered = info.endpoint[0].ticket.clone().unwrap().ticket.to_vec();
    let mid = altered.len() / 2;
    altered[mid] ^= 0x01;
    let no_segment = signer.sign(
        &Partition {
            segment: 7,
            ..select_one.clone()
        },
        None,
    );
    let not_postgres = signer.sign(
        &Partition {
            segment: 0,
            spec: PartitionSpec::Files {
                sql: "SELECT 1".into(),
                partition: 0,
            },
        },
        None,
    );

    let flight = server.url.as_str();
    let d = dir.path();
    let cases = vec![
        Case {
            name: "malformed SQL",
            request: Request::Query("SELEC id FROM clicks"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "syntax error",
        },
        Case {
            name: "unknown table",
            request: Request::Query("SELECT * FROM no_such_table"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "\"no_such_table\" does not exist",
        },
        Case {
            name: "unsupported column type",
            request: Request::Query("SELECT point(1, 2) AS p"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "cast it in the query",
        },
        Case {
            name: "two statements",
            request: Request::Query("SELECT 1 AS a; SELECT 2 AS b"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "multiple commands",
        },
        Case {
            name: "a statement without result columns",
            request: Request::Query("DELETE FROM skew"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "returns no columns",
        },
        Case {
            name: "a write disguised as a query",
            request: Request::Query("DELETE FROM skew RETURNING id"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "read-only transaction",
        },
        Case {
            name: "an error while the query runs",
            request: Request::Query("SELECT 1 / (g - 300) AS x FROM generate_series(1, 600) g"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "division by zero",
        },
        Case {
            name: "schema differs between segments",
            request: Request::Query("SELECT * FROM skew"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "segments disagree on result column 2",
        },
        Case {
            // Policy: a batch closes after the row that crosses the byte
            // limit, so a row larger than the limit travels alone.
            name: "a row bigger than the batch limit",
            request: Request::Query(
                "SELECT g AS n, repeat('x', 100000) AS big FROM generate_series(1, 3) g",
            ),
            expect: Expect::Rows {
                rows: 6,
                max_per_batch: 1,
            },
            fragment: "",
        },
        Case {
            name: "garbage ticket",
            request: Request::DoGet(b"garbage".to_vec()),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "not a hopper ticket",
        },
        Case {
            name: "altered ticket",
            request: Request::DoGet(altered),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "signature does not match",
        },
        Case {
            name: "forged ticket (another key)",
            request: Request::DoGet(forged),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "signature does not match",
        },
        Case {
            name: "expired ticket",
            request: Request::DoGet(expired),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "ticket expired; ask GetFlightInfo for a fresh ticket",
        },
        Case {
            name: "ticket for a segment the server does not have",
            request: Request::DoGet(no_segment),
            expect: Expect::Status(Code::NotFound),
            fragment: "this server has 2 segments",
        },
        Case {
            name: "ticket at a snapshot name that splices SQL",
            request: Request::DoGet(spliced_snapshot),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "is not an exported snapshot's name",
        },
        Case {
            name: "ticket at a snapshot nobody exported",
            request: Request::DoGet(unexported_snapshot),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "is no longer held",
        },
        Case {
            name: "ticket of another source kind",
            request: Request::DoGet(not_postgres),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "not a PostgreSQL partition",
        },
        Case {
            name: "unknown action",
            request: Request::Action("reboot"),
            expect: Expect::Status(Code::InvalidArgument),
            fragment: "ListActions shows the supported ones",
        },
        Case {
            // Policy: a NULL or NaN numeric feature gets its column's
            // "missing" bucket (0), −∞ the "negative" one, a NULL category
            // its own slot 0: the rows are kept and trained on.
            name: "NULL and NaN features during training",
            request: Request::Train(grid(d, "holes", flight, "holes", ("", ""))),
            expect: Expect::Trains,
            fragment: "",
        },
        Case {
            // A NULL label cannot be imputed: the run stops and says how to fix it.
            name: "NULL labels during training",
            request: Request::Train(grid(d, "nolabel", flight, "nolabel", ("", ""))),
            expect: Expect::Fails,
            fragment: "NULLs; filter them out in the query",
        },
        Case {
            name: "grid: unknown architecture",
            request: Request::Train(grid(
                d,
                "arch",
                flight,
                "clicks",
                ("kind = \"log_reg\"", "kind = \"transformer\""),
            )),
            expect: Expect::Fails,
            fragment: "transformer",
        },
        Case {
            name: "grid: negative learning rate",
            request: Request::Train(grid(
                d,
                "lr",
                flight,
                "clicks",
                ("lr = [1e-2]", "lr = [-0.1]"),
            )),
            expect: Expect::Fails,
            fragment: "lr must be a positive finite number, got -0.1",
        },
        Case {
            name: "grid: empty grid",
            request: Request::Train(grid(
                d,
                "empty",
                flight,
                "clicks",
                ("lr = [1e-2]", "lr = []"),
            )),
            expect: Expect::Fails,
            fragment: "the grid is empty",
        },
        Case {
            name: "grid: lazy_adam without a sparse first layer",
            request: Request::Train(grid(
                d,
                "lazy",
                flight,
                "clicks",
                (
                    "optimizer = [{ kind = \"adam\" }]\nlr = [1e-2]\nbatch_size = [64]\ninput = { kind = \"criteo\", sparse = true }",
                    "optimizer = [{ kind = \"lazy_adam\" }]\nlr = [1e-2]\nbatch_size = [64]\ninput = { kind = \"criteo\", sparse = false }",
                ),
            )),
            expect: Expect::Fails,
            fragment: "lazy_adam updates the touched rows of a sparse first layer: set the Criteo input's sparse = true, or use adam",
        },
    ];

    let mut failures = Vec::new();
    for case in cases {
        let name = case.name;
        let outcome: Result<(), String> = match (case.request, case.expect) {
            (request @ (Request::Query(_) | Request::DoGet(_) | Request::Action(_)), expect) => {
                let got = match request {
                    Request::Query(sql) => query(&mut client, sql).await,
                    Request::DoGet(t) => match client.do_get(Ticket::new(t)).await {
                        Ok(s) => s
                            .try_collect::<Vec<_>>()
                            .await
                            .map(|b| {
                                let rows = b.iter().map(|b| b.num_rows());
                                (rows.clone().sum(), rows.max().unwrap_or(0))
                            })
                            .map_err(status_of),
                        Err(e) => Err(status_of(e)),
                    },
                    Request::Action(a) => match client.do_action(Action::new(a, "")).await {
                        Ok(s) => s
                            .try_collect::<Vec<_>>()
                            .await
                            .map(|_| (0, 0))
                            .map_err(status_of),
                        Err(e) => Err(status_of(e)),
                    },
                    Request::Train(_) => unreachable!(),
                };
                match (got, expect) {
                    (Err(s), Expect::Status(code)) if s.code() == code => {
                        if s.message().contains(case.fragment) {
                            println!("{name}: {:?} {}", s.code(), s.message());
                            Ok(())
                        } else {
                            Err(format!(
                                "message {:?} lacks {:?}",
                                s.message(),
                                case.fragment
                            ))
                        }
                    }
                    (
                        Ok((rows, max)),
                        Expect::Rows {
                            rows: r,
                            max_per_batch: m,
                        },
                    ) => {
                        println!("{name}: ok, {rows} rows, batches of at most {max}");
                        if (rows, max) == (r, m) {
                            Ok(())
                        } else {
                            Err(format!(
                                "{rows} rows in batches of ≤ {max}, want {r} in ≤ {m}"
                            ))
                        }
                    }
                    (Err(s), _) => {
                        Err(format!("unexpected status {:?}: {}", s.code(), s.message()))
                    }
                    (Ok(r), _) => Err(format!("unexpected success {r:?}")),
                }
            }
            (Request::Train(config), expect) => {
                let (ok, text) = train(d, &name.replace([' ', ':'], "_"), &config);
                let last = text.lines().last().unwrap_or_default().to_string();
                match expect {
                    Expect::Fails if !ok && text.contains(case.fragment) => {
                        println!("{name}: exit non-zero, {last}");
                        Ok(())
                    }
                    Expect::Trains if ok => {
                        println!("{name}: trained");
                        Ok(())
                    }
                    _ => Err(format!("mop train success={ok}: {text}")),
                }
            }
        };
        if let Err(e) = outcome {
            failures.push(format!("{name}: {e}"));
        }
        // Nothing panicked: the server still answers…
        let health = client
            .do_action(Action::new("health", ""))
            .await
            .map_err(|e| format!("{name}: health after the case: {e}"))
            .unwrap();
        let answer: Vec<_> = health.try_collect().await.unwrap();
        assert_eq!(answer[0].as_ref(), b"ok", "{name}: health");
        // …and no connection is left open.
        no_backend_left(&cluster, name).await;
    }
    // A NULL/NaN run trained on every row it was given.
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.join("holes").join("results.json")).expect("holes results.json"),
    )
    .unwrap();
    let model = &results["models"][0];
    let loss = model["train_loss"][0].as_f64();
    assert!(
        loss.is_some_and(f64::is_finite),
        "NULL and NaN features give a finite training loss: {model}"
    );
    assert!(
        failures.is_empty(),
        "cases failed:\n{}",
        failures.join("\n")
    );
}
