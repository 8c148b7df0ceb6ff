//! `input = { kind = "table", … }` end to end over two PostgreSQL segments:
//! a table with NULLs, a categorical column and a float-array column
//! becomes standardized dense features; the statistics are the training
//! rows' (checked against the rows read straight from the segments), are
//! stored with the run and reused by `--resume` and `mop predict`; a
//! TorchScript module (the fixture `table_bn_dropout_37.pt`) and the
//! built-in MLP train on them and learn the planted signal.

use std::path::{Path, PathBuf};
use std::process::Command;

use devcluster::LocalCluster;
use hopper_tests::run::{mop_train, results};
use hopper_tests::{binary, cluster, python_json, segment_args, FlightServer};
use mop_core::config::InputSpec;
use mop_core::run_config::RunConfig;
use mop_core::table::FeaturesFile;

const FIXTURE: &str = "table_bn_dropout_37.pt";

/// `people` on each segment: `rows` rows of id, age (NULL every 7th),
/// income (NULL every 11th), city (4 values, NULL every 13th), emb (a
/// 3-element real[]), target (0/1) and score (a float), both depending on
/// city and age.
async fn people(cluster: &LocalCluster, rows: i64) {
    for segment in 0..2 {
        let client = cluster.client(segment).await.unwrap();
        let (first, last) = (segment as i64 * rows + 1, (segment as i64 + 1) * rows);
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS people;
                 CREATE TABLE people (id bigint, age float8, income int4, city text,
                                      emb real[], target int4, score float8);
                 INSERT INTO people
                 SELECT i, a, inc, c, ARRAY[(i % 5)::real, (i % 3)::real, 1.5::real],
                        ((CASE c WHEN 'oslo' THEN 2.0 WHEN 'lima' THEN -2.0 ELSE 0.0 END)
                          + (coalesce(a, 45) - 45) / 10.0
                          + ((i * 2654435761) % 1000) / 1000.0 - 0.5 > 0)::int,
                        (CASE c WHEN 'oslo' THEN 3.0 WHEN 'lima' THEN -3.0 ELSE 0.0 END)
                          + coalesce(a, 45) / 10.0 + (i % 10) / 20.0
                 FROM (SELECT i,
                              CASE WHEN i % 7 = 0 THEN NULL ELSE 20 + (i * 37) % 50 END::float8 AS a,
                              CASE WHEN i % 11 = 0 THEN NULL ELSE (i * 7919) % 100000 END::int4 AS inc,
                              CASE WHEN i % 13 = 0 THEN NULL
                                   ELSE (ARRAY['oslo', 'lima', 'rome', 'kyiv'])[1 + i % 4] END AS c
                       FROM generate_series({first}, {last}) AS i) AS g;
                 ANALYZE people;"
            ))
            .await
            .unwrap();
    }
}

struct Setup {
    cluster: LocalCluster,
    server: FlightServer,
    dir: tempfile::TempDir,
}

async fn setup(rows: i64) -> Setup {
    let cluster = cluster(2).await.unwrap();
    people(&cluster, rows).await;
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/torchscript");
    std::fs::copy(fixture.join(FIXTURE), dir.path().join(FIXTURE)).unwrap();
    Setup {
        cluster,
        server,
        dir,
    }
}

impl Setup {
    fn config(&self, name: &str) -> PathBuf {
        self.config_with(
            name,
            &format!(r#"{{ kind = "torchscript", path = "{FIXTURE}" }}, {{ kind = "mlp", hidden = [16] }}"#),
            r#"{ kind = "table", label = "target", categorical = ["city"], exclude = ["score"] }"#,
            "",
            12,
        )
    }

    /// A run of the `arch` list over `input`, with `grid` and `[train]`
    /// extras.
    fn config_with(
        &self,
        name: &str,
        arch: &str,
        input: &str,
        extra: &str,
        epochs: usize,
    ) -> PathBuf {
        let text = format!(
            r#"
[source]
flight = "{flight}"
table = "people"
validation = {{ fraction = 0.2, key = "id" }}

[train]
epochs = {epochs}
seed = 5
threads = 1
{train}

[grid]
arch = [{arch}]
optimizer = [{{ kind = "adam" }}]
lr = [1e-2]
batch_size = [32]
input = {input}
{grid}

[output]
dir = "{out}"
"#,
            flight = self.server.url,
            out = self.out(name).display(),
            train = extra.split_once('|').map_or("", |(t, _)| t),
            grid = extra.split_once('|').map_or(extra, |(_, g)| g),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Mean and population standard deviation of the non-NULL values.
fn moments(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_with_nulls_and_a_categorical_column_trains_on_its_training_rows_statistics() {
    let s = setup(800).await;
    let path = s.config("people");
    mop_train(&path, &[]);
    let out = s.out("people");

    // The features: id and the label left out, arrays flattened, the
    // categorical column in 32 buckets: 2 + 3 + 32 = 37.
    let file = FeaturesFile::read(&out)
        .unwrap()
        .expect("table_features.json");
    let InputSpec::Table {
        features: Some(features),
        categorical,
        buckets,
        ..
    } = &file.input
    else {
        panic!("{:?}", file.input)
    };
    let numeric: Vec<&str> = features.numeric.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(numeric, ["age", "income"]);
    assert_eq!(features.arrays.len(), 1);
    assert_eq!(
        (features.arrays[0].name.as_str(), features.arrays[0].len),
        ("emb", 3)
    );
    assert_eq!(features.dims(categorical.len(), *buckets), 37);

    // The statistics are those of the training rows (not the validation
    // rows), over both segments: read them straight from PostgreSQL.
    let config = RunConfig::load(&path).unwrap();
    let train_sql = config.train_sql().unwrap();
    assert_eq!(file.sql, train_sql);
    let (mut age, mut income, mut rows) = (Vec::new(), Vec::new(), 0u64);
    for segment in 0..2 {
        let client = s.cluster.client(segment).await.unwrap();
        for row in client
            .query(
                &format!("SELECT age, income::float8 FROM ({train_sql}) AS t"),
                &[],
            )
            .await
            .unwrap()
        {
            rows += 1;
            age.extend(row.get::<_, Option<f64>>(0));
            income.extend(row.get::<_, Option<f64>>(1));
        }
    }
    assert!(
        rows < 1600 && rows > 1000,
        "the validation rows are left out: {rows}"
    );
    assert_eq!(features.rows, rows);
    assert!(age.len() < rows as usize, "age has NULLs");
    for (f, values) in features.numeric.iter().zip([&age, &income]) {
        let (mean, std) = moments(values);
        assert!(
            (f.mean - mean).abs() <= 1e-9 * mean.abs(),
            "{}: {} vs {mean}",
            f.name,
            f.mean
        );
        assert!(
            (f.std - std).abs() <= 1e-9 * std,
            "{}: {} vs {std}",
            f.name,
            f.std
        );
    }

    // Every model carries the resolved input, and learned the signal.
    let r = results(&out);
    for m in r["models"].as_array().unwrap() {
        let input: InputSpec = serde_json::from_value(m["config"]["input"].clone()).unwrap();
        assert_eq!(input, file.input);
        let acc = m["val_acc"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_f64()
            .unwrap();
        assert!(acc > 0.8, "model {} reached {acc}", m["model_id"]);
    }

    // `--resume` featurizes as the run did, even after the table changed.
    let before = std::fs::read(out.join("table_features.json")).unwrap();
    let client = s.cluster.client(0).await.unwrap();
    client
        .batch_execute("INSERT INTO people SELECT i, 1000, 1, 'oslo', ARRAY[9, 9, 9]::real[], 1, 0 FROM generate_series(5001, 5400) AS i")
        .await
        .unwrap();
    // The rows changed, which a resumed run stops for unless told to go on.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("[source]\n", "[source]\non_change = \"warn\"\n", 1),
    )
    .unwrap();
    mop_train(&path, &["--resume"]);
    assert_eq!(
        std::fs::read(out.join("table_features.json")).unwrap(),
        before
    );

    // And `mop predict` scores every row, with the stored statistics.
    let status = Command::new(binary("mop").unwrap())
        .args(["predict", "--dir"])
        .arg(&out)
        .args(["--table", "people", "--into", "people_scores", "--replace"])
        .status()
        .unwrap();
    assert!(status.success(), "mop predict failed: {status}");
    for segment in 0..2 {
        let client = s.cluster.client(segment).await.unwrap();
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM people), \
                 (SELECT count(*) FROM people JOIN people_scores USING (id))",
                &[],
            )
            .await
            .unwrap();
        let (rows, joined): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(joined, rows, "segment {segment}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_input_naming_a_missing_column_is_refused_before_training() {
    let s = setup(50).await;
    let path = s.config("bad");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(r#"categorical = ["city"]"#, r#"categorical = ["town"]"#);
    std::fs::write(&path, text).unwrap();
    let output = Command::new(binary("mop").unwrap())
        .args(["train", "--progress", "quiet", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("input.categorical")
            && stderr.contains("\"town\"")
            && stderr.contains("city"),
        "{stderr}"
    );
}

/// `mop predict` of the run's validation rows, each with its `label`:
/// `[probability, predicted, label]` (binary) or `[predicted, label]`.
async fn validation_predictions(
    s: &Setup,
    config: &Path,
    label: &str,
    binary_task: bool,
) -> Vec<Vec<f64>> {
    let run = RunConfig::load(config).unwrap();
    let sql = run.validation_sql().unwrap().unwrap();
    let into = format!("{label}_predictions");
    let status = Command::new(binary("mop").unwrap())
        .args(["predict", "--dir"])
        .arg(&run.output.dir)
        .args(["--sql", &sql, "--into", &into, "--replace"])
        .status()
        .unwrap();
    assert!(status.success(), "mop predict failed: {status}");
    let columns = match binary_task {
        true => "p.probability, p.predicted::float8,",
        false => "p.predicted,",
    };
    let mut rows = Vec::new();
    for segment in 0..2 {
        let client = s.cluster.client(segment).await.unwrap();
        for r in client
            .query(
                &format!(
                    "SELECT {columns} o.{label}::float8 FROM {into} p JOIN people o USING (id)"
                ),
                &[],
            )
            .await
            .unwrap()
        {
            rows.push((0..r.len()).map(|i| r.get::<_, f64>(i)).collect());
        }
    }
    rows
}

/// The metrics numpy computes from `rows` (tests/python/task_metrics.py).
fn numpy(s: &Setup, task: &str, rows: &[Vec<f64>]) -> serde_json::Value {
    let path = s.dir.path().join(format!("{task}-rows.json"));
    let spec = serde_json::json!({ "task": task, "rows": rows });
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    python_json("task_metrics.py", &[&path], &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_and_regression_torchscript_models_on_a_table_report_what_numpy_computes() {
    let s = setup(800).await;
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/torchscript/table_bn_dropout_37_1.pt"),
        s.dir.path().join("one.pt"),
    )
    .unwrap();
    let arch = r#"{ kind = "torchscript", path = "one.pt" }"#;
    for (task, label, exclude, metric) in [
        ("binary", "target", "score", "auc"),
        ("regression", "score", "target", "rmse"),
    ] {
        let input = format!(
            r#"{{ kind = "table", label = "{label}", categorical = ["city"], exclude = ["{exclude}"] }}"#
        );
        let path = s.config_with(
            task,
            arch,
            &input,
            &format!("metric = \"{metric}\"|task = \"{task}\""),
            6,
        );
        mop_train(&path, &[]);
        let r = results(&s.out(task));
        assert_eq!(r["metric"], metric);
        let m = &r["models"][0];
        let series = m[format!("val_{metric}")].as_array().unwrap();
        assert_eq!(series.len(), 6, "one val_{metric} per epoch: {m}");
        let ours = series.last().unwrap().as_f64().unwrap();
        let rows = validation_predictions(&s, &path, label, task == "binary").await;
        let theirs = numpy(&s, task, &rows)[metric].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0),
            "{task}: results.json val_{metric} {ours}, numpy {theirs}"
        );
        match task {
            "binary" => assert!(theirs > 0.85, "the model learned: AUC {theirs}"),
            _ => assert!(theirs < 1.5, "the model learned: RMSE {theirs}"),
        }
    }
}
