//! One source of truth for a trainer's threads: a run's `[train] threads`
//! is what its units use, and a trainer started with other `--threads`
//! says so on its standard error; one started with the same says nothing.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use hopper_tests::run::{spawn_mop_train, with_trainers, RUN_TIMEOUT};
use hopper_tests::{
    binary, cluster, segment_args, trainer_key_file, ChildGuard, FlightServer, TrainerProcess,
    TRAINER_KEY_ENV,
};

/// `mop trainer --threads N` on loopback with the harness's key, and a
/// thread that returns everything it writes to standard error.
fn trainer(threads: &str) -> (TrainerProcess, JoinHandle<String>) {
    let mut child = Command::new(binary("mop").unwrap())
        .args(["trainer", "--bind", "127.0.0.1:0", "--threads", threads])
        .arg("--key-file")
        .arg(trainer_key_file().unwrap())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let stdout = child.stdout.take().unwrap();
    let process = ChildGuard::new(format!("trainer --threads {threads}"), child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("mop trainer listening on ")
        .unwrap_or_else(|| panic!("the trainer printed {line:?}"))
        .to_string();
    (TrainerProcess { process, address }, said)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trainer_started_with_other_threads_warns_that_the_run_decides() {
    let cluster = cluster(2).await.unwrap();
    devcluster::load_criteo(&cluster, "criteo", 600, 5)
        .await
        .unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    let (other, other_said) = trainer("2");
    let (same, same_said) = trainer("1");
    let mut trainers = [other, same];
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[source]
flight = "{url}"
table = "criteo"

[train]
epochs = 1
seed = 3
threads = 1

[grid]
arch = [{{ kind = "log_reg" }}]
lr = [1e-2]
batch_size = [64]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
"#,
        url = server.url,
        out = dir.path().join("out").display()
    );
    let config = dir.path().join("run.toml");
    std::fs::write(&config, with_trainers(&text, &trainers)).unwrap();
    let key = trainer_key_file().unwrap().display().to_string();
    let (mut run, _events) = spawn_mop_train(&config, &[], &[(TRAINER_KEY_ENV, &key)]);
    assert!(run.wait_timeout(RUN_TIMEOUT).unwrap().success());
    // Their standard error ends with them.
    for t in &mut trainers {
        t.process.kill();
    }
    let other_said = other_said.join().unwrap();
    assert!(
        other_said.contains("the run's [train] threads = 1 overrides this trainer's --threads 2"),
        "{other_said}"
    );
    let same_said = same_said.join().unwrap();
    assert!(!same_said.contains("overrides"), "{same_said}");
}
