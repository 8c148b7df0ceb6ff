//! Runs tracked in MLflow, against a real `mlflow server` (PyPI's, in the
//! venv `scripts/mlflow-venv.sh` makes; `HOPPER_MLFLOW_PYTHON` names its
//! python) and read back with MLflow's own Python client: a parent run for
//! the search, a nested run per model with its hyper-parameters, every
//! epoch's metrics, its stop reason and its model file, byte for byte. And
//! a tracking server that is not there fails nothing.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devcluster::load_criteo;
use hopper_tests::run::{mop_train, results};
use hopper_tests::{cluster, free_port, segment_args, ChildGuard, FlightServer, PICKED_PORTS_IP};
use serde_json::Value;
use sha2::{Digest, Sha256};

const EPOCHS: usize = 4;

/// The python of the MLflow venv; the tests cannot run without it.
fn mlflow_python() -> PathBuf {
    std::env::var_os("HOPPER_MLFLOW_PYTHON")
        .map(PathBuf::from)
        .expect(
            "HOPPER_MLFLOW_PYTHON is not set: run the tests through scripts/test.sh, or \
             export HOPPER_MLFLOW_PYTHON=$(scripts/mlflow-venv.sh)",
        )
}

/// `mlflow server` and the workers it forks (uvicorn, huey consumers), in
/// a process group of their own: killed as a group when dropped, since
/// killing the server alone leaves its workers running after the test.
struct MlflowServer {
    server: ChildGuard,
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.server.pid() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        self.server.kill();
    }
}

/// `mlflow server` on a free loopback port with its store and artifacts
/// in `dir`; returns once it answers `/health`.
fn mlflow_server(dir: &Path) -> (MlflowServer, String) {
    let python = mlflow_python();
    let mlflow = python.with_file_name("mlflow");
    let port = free_port(PICKED_PORTS_IP);
    let child = Command::new(&mlflow)
        .args([
            "server",
            "--host",
            PICKED_PORTS_IP,
            "--port",
            &port.to_string(),
        ])
        // Its default allows the Host headers of 127.0.0.1 and localhost only.
        .arg("--allowed-hosts")
        .arg(format!("{PICKED_PORTS_IP},{PICKED_PORTS_IP}:{port}"))
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        .args(["--workers", "1"])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mlflow-server.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", mlflow.display()));
    let guard = MlflowServer {
        server: ChildGuard::new("mlflow server", child),
    };
    let url = format!("http://{PICKED_PORTS_IP}:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let health = Command::new(&python)
            .args([
                "-c",
                "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)",
            ])
            .arg(format!("{url}/health"))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if health.success() {
            return (guard, url);
        }
        assert!(
            Instant::now() < deadline,
            "mlflow server did not answer /health in 120 s: {}",
            std::fs::read_to_string(dir.join("mlflow-server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the server holds, read by MLflow's client (tests/python/mlflow_runs.py).
fn tracked(url: &str, experiment: &str) -> Value {
    let out = Command::new(mlflow_python())
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("python")
                .join("mlflow_runs.py"),
        )
        .args([url, experiment])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mlflow_runs.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn config(dir: &Path, flight: &str, name: &str, mlflow: Option<&str>) -> PathBuf {
    let out = dir.join(name);
    let mlflow = mlflow
        .map(|u| format!("mlflow = \"{u}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"
[source]
flight = "{flight}"
table = "criteo"
validation = {{ fraction = 0.2, key = "id" }}

[train]
epochs = {EPOCHS}
seed = 3
threads = 1

[search]
kind = "asha"
max_epochs = {EPOCHS}
min_epochs = 1
eta = 2

[grid]
arch = [{{ kind = "log_reg" }}]
lr = [1e-2, 1e-3, 1e-4, 1e-5]
batch_size = [64]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
{mlflow}"#,
        out = out.display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_is_a_parent_run_with_a_nested_run_per_model_its_epochs_stop_and_file() {
    let cluster = cluster(2).await.unwrap();
    load_criteo(&cluster, "criteo", 2000, 5).await.unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_mlflow, url) = mlflow_server(dir.path());

    // The URL from the configuration file.
    let path = config(dir.path(), &server.url, "run", Some(&url));
    mop_train(&path, &[]);
    let r = results(&dir.path().join("run"));
    let models = r["models"].as_array().unwrap();
    assert_eq!(models.len(), 4);

    let held = tracked(&url, "hopper");
    let parents = held["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1, "one parent run per search: {held}");
    let parent = &parents[0];
    assert_eq!(parent["run"]["status"], "FINISHED");
    assert_eq!(
        parent["run"]["artifacts"]["results.json"],
        sha256(&dir.path().join("run/results.json")),
        "results.json on the parent run, byte for byte"
    );
    let children = parent["children"].as_array().unwrap();
    assert_eq!(children.len(), 4, "a nested run per model: {parent}");
    for model in models {
        let id = model["model_id"].as_u64().unwrap().to_string();
        let child = children
            .iter()
            .find(|c| c["tags"]["hopper.model_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no run for model {id}: {parent}"));
        assert_eq!(child["status"], "FINISHED");
        let lr = model["config"]["lr"].as_f64().unwrap();
        assert_eq!(
            child["params"]["lr"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap(),
            lr
        );
        assert_eq!(child["params"]["arch.kind"], "log_reg");
        assert_eq!(child["params"]["batch_size"], "64");
        // Every trained epoch's metrics, step = epoch, the values results.json has.
        for key in ["train_loss", "val_loss", "val_acc"] {
            let ours: Vec<f64> = model[key]
                .as_array()
                .unwrap()
                .iter()
                .map_while(Value::as_f64)
                .collect();
            let theirs: Vec<(u64, f64)> = child["metrics"][key]
                .as_array()
                .unwrap_or_else(|| panic!("no {key} in {child}"))
                .iter()
                .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
                .collect();
            assert_eq!(
                theirs.len(),
                ours.len(),
                "{key}: one value per trained epoch"
            );
            for (e, ((step, v), ours)) in theirs.iter().zip(&ours).enumerate() {
                assert_eq!(*step, e as u64);
                assert!((v - ours).abs() <= 1e-9 * ours.abs().max(1.0), "{key}[{e}]");
            }
        }
        // Why it stopped: its budget, or the search's rung.
        assert_eq!(
            child["tags"]["hopper.stop_reason"], model["stop"],
            "{child}"
        );
        // The model file, byte for byte.
        let file = model["model_file"].as_str().unwrap();
        let name = Path::new(file).file_name().unwrap().to_string_lossy();
        assert_eq!(
            child["artifacts"][format!("model/{name}")],
            sha256(&dir.path().join("run").join(file)),
            "{child}"
        );
    }
    let stopped = models
        .iter()
        .filter(|m| m["stop_reason"]["kind"] != "finished")
        .count();
    assert!(stopped >= 1, "ASHA stops some of four models: {r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tracking_server_that_is_down_fails_nothing_and_says_so() {
    let cluster = cluster(2).await.unwrap();
    load_criteo(&cluster, "criteo", 1000, 6).await.unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let url = format!("http://{PICKED_PORTS_IP}:{}", free_port(PICKED_PORTS_IP));
    let path = config(dir.path(), &server.url, "down", None);
    let out = Command::new(hopper_tests::binary("mop").unwrap())
        .args(["train", "--progress", "quiet", "--config"])
        .arg(&path)
        .args(["--mlflow", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "training fails with MLflow down: {stderr}"
    );
    assert!(
        stderr.contains("MLflow") && stderr.contains("unreachable"),
        "the user is told the run is not tracked: {stderr}"
    );
    let r = results(&dir.path().join("down"));
    assert_eq!(r["models"].as_array().unwrap().len(), 4);
    assert!(r["models"][0]["model_file"].is_string());

    // A URL that is no URL is a configuration error before any training.
    let out = Command::new(hopper_tests::binary("mop").unwrap())
        .args(["train", "--progress", "quiet", "--config"])
        .arg(&path)
        .args(["--mlflow", "127.0.0.1:5000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("output.mlflow") && stderr.contains("http://HOST:PORT"),
        "{stderr}"
    );
}
