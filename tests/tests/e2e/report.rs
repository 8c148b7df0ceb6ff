//! `mop report`, `mop status` and `mop models` as a user runs them: the real
//! binary over a run directory written by the runner's own result code, and
//! `mop models` over the result table in a real PostgreSQL.

use std::path::Path;
use std::process::{Command, Output};

use hopper_tests::{binary, cluster};
use mop_core::run_config::RunConfig;
use mop_core::run_dir::checkpoint::{EpochMetrics, UnitRecord};
use mop_core::run_dir::results::{self, ModelResult, StateBlob};
use mop_core::run_dir::RunOutcome;

fn mop(args: &[&str]) -> Output {
    Command::new(binary("mop").unwrap())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Two models on two trainers for one epoch, written as `mop train` writes them.
fn finished_run(dir: &Path) -> (RunOutcome, RunConfig) {
    let config = RunConfig::parse(&format!(
        "[source]\nflight = \"grpc+tcp://127.0.0.1:1\"\ntable = \"criteo\"\n\
         [train]\nepochs = 1\n\
         [grid]\narch = [{{ kind = \"log_reg\" }}]\nlr = [1e-2, 1e-3]\nbatch_size = [64]\n\
         input = {{ kind = \"criteo\", sparse = true }}\n\
         [output]\ndir = \"{}\"\n",
        dir.display()
    ))
    .unwrap();
    let models = config.grid.expand().unwrap();
    let unit = |model, partition, start: f64| UnitRecord {
        model,
        partition,
        epoch: 0,
        start,
        end: start + 1.0,
        samples: 100,
        wait_seconds: 0.0,
        bytes_read: 0,
        local: None,
    };
    let outcome = RunOutcome {
        models: models
            .into_iter()
            .enumerate()
            .map(|(id, c)| ModelResult {
                id,
                config: c,
                metrics: vec![EpochMetrics {
                    train_samples: 200,
                    train_loss_sum: 100.0 + id as f64,
                    train_correct: 150 - id as u64 * 20,
                    seconds: 2.0,
                    ..EpochMetrics::default()
                }],
                state: Some(StateBlob::new(vec![7u8; 32])),
                kept: None,
                stop: None,
            })
            .collect(),
        timeline: vec![
            unit(0, 0, 0.0),
            unit(1, 1, 0.0),
            unit(1, 0, 1.0),
            unit(0, 1, 1.0),
        ],
        partitions: Vec::new(),
        source_changes: Vec::new(),
        seconds: 2.5,
        trainers: 2,
        dir: dir.to_path_buf(),
    };
    results::write_files(&outcome, &config).unwrap();
    (outcome, config)
}

#[test]
fn mop_status_on_a_missing_dir_fails_and_says_to_pass_a_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run");
    let out = mop(&["status", "--dir", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("--dir"), "{err}");
    // A directory that is not a run is refused the same way by all three.
    for cmd in ["status", "report", "models"] {
        let out = mop(&[cmd, "--dir", dir.path().to_str().unwrap()]);
        assert!(!out.status.success(), "{cmd}");
        assert!(
            stderr(&out).contains("not a hopper run directory"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn mop_report_status_and_models_describe_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    finished_run(dir.path());
    let d = dir.path().to_str().unwrap();

    let out = mop(&["report", "--dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(stdout(&out).contains("report.html"));
    assert_eq!(html.matches("<g class=\"unit\">").count(), 2 * 4);

    let out = mop(&["status", "--dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("finished") && text.contains("best:     model 0"),
        "{text}"
    );

    let out = mop(&["models", "--dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for m in 0..2 {
        assert!(
            text.contains(&format!("models/model-{m}.safetensors")),
            "{text}"
        );
    }
}

#[tokio::test]
async fn mop_models_reads_the_result_table_in_the_database() {
    let db = cluster(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (outcome, config) = finished_run(dir.path());
    mop_runner::result_tables::write_tables(&outcome, &config, &db.url(0), "report_models")
        .await
        .unwrap();
    let url = db.url(0);
    let out = tokio::task::spawn_blocking(move || {
        mop(&["models", "--database", &url, "--table", "report_models"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("logreg adam lr 0.01"), "{text}");
    assert!(
        lines[1].contains("report_models.state (32 bytes)"),
        "{text}"
    );

    // A table that is not there: the message says what it expected.
    let url = db.url(0);
    let out = tokio::task::spawn_blocking(move || {
        mop(&["models", "--database", &url, "--table", "no_such_models"])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no_such_models"), "{}", stderr(&out));
}
