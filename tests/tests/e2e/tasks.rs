//! Tasks and the metrics people rank by, end to end: a binary and a
//! regression model trained by `mop train` over two PostgreSQL segments
//! (a table with NULLs and a text column), their results.json metrics
//! checked against the same metrics computed by numpy
//! (`tests/python/task_metrics.py`) on `mop predict`'s predictions of the
//! validation rows; `keep = "best"` keeps the best epoch's weights and
//! `patience` stops a model that stopped improving.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hopper_tests::run::{
    assert_same_models, count, is_event, mop_train, results, spawn_mop_train, wait_for,
};
use hopper_tests::{binary, cluster, python_json, segment_args, FlightServer};
use mop_core::run_config::RunConfig;
use serde_json::Value;

const SEGMENTS: usize = 2;
const ROWS_PER_SEGMENT: i64 = 1500;

struct Setup {
    cluster: devcluster::LocalCluster,
    server: FlightServer,
    dir: tempfile::TempDir,
}

/// `obs` on every segment: three numeric columns (one with NULLs), a text
/// column with NULLs, a 0/1 label `clicked` and a float label `price`, both
/// planted in `x1`.
async fn setup() -> Setup {
    let cluster = cluster(SEGMENTS).await.unwrap();
    for s in 0..SEGMENTS {
        let (lo, hi) = (
            s as i64 * ROWS_PER_SEGMENT,
            (s as i64 + 1) * ROWS_PER_SEGMENT - 1,
        );
        cluster
            .client(s)
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE TABLE obs AS
                 SELECT id, x1, x2, x3, c1,
                        CASE WHEN x1 + 2.5 * sin(id * 1.7) > 5 THEN 1 ELSE 0 END AS clicked,
                        2.0 * x1 + 0.5 * coalesce(x3, 0) / 10.0 + sin(id * 0.3) AS price
                 FROM (SELECT i AS id,
                              (i * 7919 % 1000) / 100.0::float8 AS x1,
                              (i * 104729 % 997) / 99.7::float8 AS x2,
                              CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 31 % 50)::float8 END AS x3,
                              CASE WHEN i % 5 = 0 THEN NULL ELSE 'c' || (i % 4) END AS c1
                       FROM generate_series({lo}::int8, {hi}) AS i) AS g"
            ))
            .await
            .unwrap();
    }
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    Setup {
        cluster,
        server,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// A run named `name` with `label` as the label, `[train]` and
    /// `[grid]` extras; returns the configuration's path.
    fn config(&self, name: &str, label: &str, train: &str, grid: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        let text = format!(
            r#"
[source]
flight = "{flight}"
sql = "SELECT id, {label} AS label, x1, x2, x3, c1 FROM obs"
validation = {{ fraction = 0.3, key = "id" }}

[train]
epochs = 4
seed = 5
{train}

[grid]
arch = [{{ kind = "mlp", hidden = [16] }}]
batch_size = [32]
input = {{ kind = "criteo", sparse = true, numeric = 3, categorical = 1 }}
{grid}

[output]
dir = "{out}"
"#,
            flight = self.server.url,
            out = out.display(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `mop predict --model best` over the run's validation rows into
    /// `into`, then every prediction with its row's `label_column`.
    async fn predictions(&self, config: &Path, into: &str, label_column: &str) -> Vec<Vec<f64>> {
        let run = RunConfig::load(config).unwrap();
        let sql = run.validation_sql().unwrap().unwrap();
        let output = Command::new(binary("mop").unwrap())
            .args(["predict", "--dir"])
            .arg(&run.output.dir)
            .args(["--sql", &sql, "--key", "id", "--into", into, "--replace"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "mop predict failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut rows = Vec::new();
        for s in 0..SEGMENTS {
            let client = self.cluster.client(s).await.unwrap();
            let probability = if label_column == "clicked" {
                "p.probability, p.predicted::float8,"
            } else {
                "p.predicted,"
            };
            for r in client
                .query(
                    &format!(
                        "SELECT {probability} o.{label_column}::float8
                         FROM {into} p JOIN obs o USING (id) ORDER BY id"
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

    /// The metrics numpy computes from `rows` of `task`.
    fn numpy(&self, task: &str, rows: &[Vec<f64>]) -> Value {
        let path = self.dir.path().join(format!("{task}-rows.json"));
        std::fs::write(
            &path,
            serde_json::to_vec(&serde_json::json!({ "task": task, "rows": rows })).unwrap(),
        )
        .unwrap();
        python_json("task_metrics.py", &[&path], &[])
    }
}

fn floats(v: &Value) -> Vec<Option<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(Value::as_f64)
        .collect()
}

fn assert_close(what: &str, ours: f64, numpy: f64, tolerance: f64) {
    assert!(
        (ours - numpy).abs() <= tolerance * numpy.abs().max(1.0),
        "{what}: results.json {ours}, numpy {numpy}"
    );
}

/// The model results.json names best, checked to be the leaderboard's
/// first under `metric` at each model's kept epoch.
fn best_model<'a>(r: &'a Value, metric: &str, higher_is_better: bool) -> &'a Value {
    let models = r["models"].as_array().unwrap();
    let kept_value = |m: &Value| -> f64 {
        let series = floats(&m[format!("val_{metric}")]);
        let e = m["kept_epoch"]
            .as_u64()
            .map_or(series.len(), |e| e as usize);
        let v = series[e - 1].unwrap_or(f64::NAN);
        if higher_is_better {
            v
        } else {
            -v
        }
    };
    let expected = models
        .iter()
        .filter(|m| !kept_value(m).is_nan())
        .max_by(|a, b| kept_value(a).total_cmp(&kept_value(b)))
        .unwrap();
    let best = r["best_model"].as_u64().unwrap();
    assert_eq!(
        expected["model_id"].as_u64(),
        Some(best),
        "best_model is the best under {metric}"
    );
    &models[best as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_and_regression_models_report_the_metrics_numpy_computes_from_their_predictions() {
    let s = setup().await;

    // Binary: one logit, BCE, ranked by AUC, the best epoch's weights kept.
    let bin = s.config(
        "binary",
        "clicked",
        "metric = \"auc\"\nkeep = \"best\"",
        "task = \"binary\"\noptimizer = [{ kind = \"adam\" }]\nlr = [1e-2, 3e-3]",
    );
    mop_train(&bin, &[]);
    let r = results(&s.dir.path().join("binary"));
    assert_eq!(r["metric"], "auc");
    assert_eq!(r["keep"], "best");
    assert_eq!(r["format_version"], 3);
    for m in r["models"].as_array().unwrap() {
        assert_eq!(m["config"]["task"], "binary", "{m}");
        for key in [
            "train_loss",
            "val_loss",
            "train_acc",
            "val_acc",
            "train_auc",
            "val_auc",
            "train_log_loss",
            "val_log_loss",
        ] {
            let v = floats(&m[key]);
            assert_eq!(v.len(), 4, "{key}: one value per epoch: {m}");
            assert!(v.iter().all(Option::is_some), "{key}: {v:?}");
        }
        assert!(m.get("val_rmse").is_none(), "no regression metric: {m}");
        // The kept epoch is the best validation AUC, the earliest of equals.
        let auc: Vec<f64> = floats(&m["val_auc"]).into_iter().flatten().collect();
        let best = (0..auc.len()).fold(0, |b, e| if auc[e] > auc[b] { e } else { b });
        assert_eq!(m["kept_epoch"].as_u64(), Some(best as u64 + 1), "{m}");
        assert_eq!(m["best_epoch"], m["kept_epoch"]);
        // Log loss is the binary loss.
        assert_eq!(m["val_log_loss"], m["val_loss"]);
    }
    let best = best_model(&r, "auc", true);
    let kept = best["kept_epoch"].as_u64().unwrap() as usize - 1;
    let rows = s.predictions(&bin, "binary_predictions", "clicked").await;
    let numpy = s.numpy("binary", &rows);
    println!("binary: results.json {best}\nnumpy {numpy}");
    let at = |key: &str| floats(&best[key])[kept].unwrap();
    assert!(
        numpy["auc"].as_f64().unwrap() > 0.7,
        "the model learned: {numpy}"
    );
    assert_close(
        "val_auc",
        at("val_auc"),
        numpy["auc"].as_f64().unwrap(),
        1e-6,
    );
    assert_close(
        "val_log_loss",
        at("val_log_loss"),
        numpy["log_loss"].as_f64().unwrap(),
        1e-5,
    );
    assert_close(
        "val_acc",
        at("val_acc"),
        numpy["accuracy"].as_f64().unwrap(),
        1e-9,
    );

    // Regression: one output, squared error, ranked by RMSE; a model whose
    // learning rate makes it diverge stops early.
    let reg = s.config(
        "regression",
        "price",
        "metric = \"rmse\"\npatience = 1",
        "task = \"regression\"\noptimizer = [{ kind = \"sgd\" }]\nlr = [3e-3, 1e3]",
    );
    mop_train(&reg, &[]);
    let r = results(&s.dir.path().join("regression"));
    assert_eq!(r["metric"], "rmse");
    let models = r["models"].as_array().unwrap();
    for m in models {
        let trained = floats(&m["val_loss"]).len();
        assert_eq!(m["stopped_at"].as_u64(), Some(trained as u64), "{m}");
        for key in ["train_rmse", "val_rmse", "val_mae", "val_r2", "train_r2"] {
            assert_eq!(floats(&m[key]).len(), trained, "{key}: {m}");
        }
        assert!(floats(&m["val_acc"]).is_empty(), "no accuracy: {m}");
        assert!(m.get("val_auc").is_none(), "no AUC: {m}");
    }
    // The diverging model (lr 1e3) stopped after one epoch without
    // improvement, as its reason says.
    let diverged = &models[1];
    assert_eq!(diverged["stop_reason"]["kind"], "patience", "{diverged}");
    assert_eq!(diverged["stop_reason"]["patience"], 1);
    let stopped = diverged["stopped_at"].as_u64().unwrap();
    assert!(stopped < 4, "{diverged}");
    assert_eq!(
        diverged["stop_reason"]["best_epoch"].as_u64(),
        Some(stopped - 1)
    );
    let best = best_model(&r, "rmse", false);
    assert_eq!(best["model_id"], 0);
    let rows = s.predictions(&reg, "regression_predictions", "price").await;
    let numpy = s.numpy("regression", &rows);
    println!("regression: results.json {best}\nnumpy {numpy}");
    let last = |key: &str| floats(&best[key]).last().copied().flatten().unwrap();
    assert!(
        numpy["r2"].as_f64().unwrap() > 0.5,
        "the model learned: {numpy}"
    );
    for (key, ours) in [("rmse", "val_rmse"), ("mae", "val_mae"), ("r2", "val_r2")] {
        assert_close(ours, last(ours), numpy[key].as_f64().unwrap(), 1e-5);
    }
    // The loss is libtorch's float sum of squared errors, the RMSE comes
    // from the same errors summed in f64: equal to float precision.
    let rmse = last("val_rmse");
    assert_close("val_loss = val_rmse²", last("val_loss"), rmse * rmse, 1e-6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_keeping_best_epochs_with_patience_resumes_to_the_same_files() {
    let s = setup().await;
    let (train, grid) = (
        "metric = \"auc\"\nkeep = \"best\"\npatience = 2",
        "task = \"binary\"\noptimizer = [{ kind = \"adam\" }]\nlr = [1e-2, 3e-3]",
    );
    let interrupted = s.config("interrupted", "clicked", train, grid);
    let straight = s.config("straight", "clicked", train, grid);
    let (mut mop, rx) = spawn_mop_train(&interrupted, &[], &[]);
    let mut seen = Vec::new();
    // Both models validated once (each holds a best epoch), then one more
    // unit; killed once a checkpoint names the best states (checkpoints
    // are written beside the run, so the one after these events may land
    // a moment later; each is replaced atomically).
    while count(&seen, "epoch") < 2 {
        wait_for(&rx, &mut seen, "epoch", |v| is_event(v, "epoch"));
    }
    let units = count(&seen, "unit");
    while count(&seen, "unit") == units {
        wait_for(&rx, &mut seen, "unit", |v| is_event(v, "unit"));
    }
    let out = s.dir.path().join("interrupted");
    let names_best = |c: &Value| {
        c["best"]
            .as_array()
            .is_some_and(|b| b.len() == 2 && b.iter().all(|b| b["state"].is_string()))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let checkpoint: Value =
            serde_json::from_slice(&std::fs::read(out.join("checkpoint/checkpoint.json")).unwrap())
                .unwrap();
        if names_best(&checkpoint) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint named both models' best states: {checkpoint}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    mop.kill();
    assert!(!out.join("results.json").exists());
    mop_train(&interrupted, &["--resume"]);
    mop_train(&straight, &[]);
    assert_same_models(&out, &s.dir.path().join("straight"), 2);
    let (a, b) = (results(&out), results(&s.dir.path().join("straight")));
    for (x, y) in a["models"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["models"].as_array().unwrap())
    {
        for key in ["val_auc", "kept_epoch", "stopped_at", "stop_reason"] {
            assert_eq!(x[key], y[key], "{key}");
        }
    }
}
