//! Runs tracked in MLflow, where teams that use it look.
//!
//! `[output] mlflow = "http://HOST:PORT"` (or `mop train --mlflow URL`)
//! makes a search one MLflow run, with a nested run per model: its
//! hyper-parameters as params, every epoch's metrics (`train_loss`,
//! `val_auc`, …, as results.json names them; step = epoch) as the epoch ends, why it stopped as a tag,
//! and at the end its model file as an artifact (and results.json and the
//! report on the parent run). The experiment is `MLFLOW_EXPERIMENT_NAME`
//! (MLflow's own variable), else `hopper`.
//!
//! Everything goes through MLflow's REST API (`/api/2.0/mlflow/…`, and
//! `/api/2.0/mlflow-artifacts/…` for files, which `mlflow server` serves by
//! default) from a task of its own, in the order the run produced it. A
//! tracking server that is down or refuses a request never fails or slows
//! the training: each request is tried [`ATTEMPTS`] times, then the tracker
//! warns once and drops what is left.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use mop_core::config::ModelConfig;
use mop_core::metrics::Metric;
use mop_core::run_dir::checkpoint::{EpochMetrics, Split};
use mop_core::run_dir::results::RunResults;

/// Tries per request before the tracker gives up on the server.
pub const ATTEMPTS: u32 = 3;
/// How long the end of a run waits for the tracker to catch up.
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);
/// One request's limit (an artifact upload included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

enum Event {
    Epoch {
        model: usize,
        epoch: usize,
        metrics: Vec<(String, f64)>,
    },
    Stopped {
        model: usize,
        reason: String,
        epochs: usize,
    },
    Finish {
        status: &'static str,
        results: Option<std::path::PathBuf>,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// A run's link to an MLflow tracking server. Clones share it.
#[derive(Clone)]
pub struct Tracker {
    tx: mpsc::UnboundedSender<Event>,
    models: std::sync::Arc<Vec<ModelConfig>>,
}

/// How a tracked run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End<'a> {
    /// It ended; its `results.json` names the model files.
    Finished(&'a Path),
    /// It was interrupted (Ctrl-C), its checkpoint kept: MLflow's KILLED.
    Interrupted,
    /// It failed.
    Failed,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").finish_non_exhaustive()
    }
}

impl Tracker {
    /// Starts tracking a search of `models` at `url`: the parent run and a
    /// run per model are created by the tracker's task, before any epoch.
    /// Must be called inside a tokio runtime.
    pub fn start(url: &str, run_name: &str, models: &[ModelConfig]) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let experiment =
            std::env::var("MLFLOW_EXPERIMENT_NAME").unwrap_or_else(|_| "hopper".to_string());
        let client = Client::new(url);
        let params: Vec<Vec<(String, String)>> = models.iter().map(params_of).collect();
        let run_name = run_name.to_string();
        tokio::spawn(async move {
            let mut task = Task {
                client,
                parent: None,
                children: Vec::new(),
                failed: false,
            };
            task.open(&experiment, &run_name, &params).await;
            task.drain(rx).await;
        });
        Self {
            tx,
            models: std::sync::Arc::new(models.to_vec()),
        }
    }

    /// A model finished an epoch.
    pub fn epoch(&self, model: usize, epoch: usize, m: &EpochMetrics) {
        let Some(config) = self.models.get(model) else {
            return;
        };
        let metrics = epoch_metrics(m, config);
        let _ = self.tx.send(Event::Epoch {
            model,
            epoch,
            metrics,
        });
    }

    /// The search (or early stopping) stopped a model.
    pub fn stopped(&self, model: usize, reason: &str, epochs: usize) {
        let _ = self.tx.send(Event::Stopped {
            model,
            reason: reason.to_string(),
            epochs,
        });
    }

    /// Ends the runs: FINISHED with the model files (read from the run's
    /// `results.json`), KILLED or FAILED. Waits for the tracker to catch
    /// up, at most two minutes.
    pub async fn finish(&self, end: End<'_>) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let (status, results) = match end {
            End::Finished(path) => ("FINISHED", Some(path.to_path_buf())),
            End::Interrupted => ("KILLED", None),
            End::Failed => ("FAILED", None),
        };
        if self
            .tx
            .send(Event::Finish {
                status,
                results,
                done,
            })
            .is_ok()
            && tokio::time::timeout(FINISH_TIMEOUT, wait).await.is_err()
        {
            tracing::warn!("MLflow: the tracking server is still busy after {FINISH_TIMEOUT:?}; not waiting for it");
        }
    }
}

/// The metrics of an epoch that apply to the model's task, finite ones only.
fn epoch_metrics(m: &EpochMetrics, config: &ModelConfig) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (split, prefix) in [(Split::Train, "train"), (Split::Validation, "val")] {
        for metric in Metric::ALL {
            if !metric.applies_to(config.task) {
                continue;
            }
            let v = m.value(metric, split);
            if v.is_finite() {
                // results.json's names (`val_acc`, `train_loss`, `val_auc`).
                let name = match metric {
                    Metric::Accuracy => "acc",
                    other => other.name(),
                };
                out.push((format!("{prefix}_{name}"), v));
            }
        }
    }
    out.push(("epoch_seconds".to_string(), m.seconds));
    out
}

/// A model configuration as MLflow params: its JSON flattened into dotted
/// keys (`arch.kind = mlp`, `arch.hidden = [128,64]`, `lr = 0.001`).
fn params_of(config: &ModelConfig) -> Vec<(String, String)> {
    fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(config) {
        flatten("", &v, &mut out);
    }
    // MLflow keeps a param value up to 6000 characters.
    out.into_iter()
        .map(|(k, mut v)| {
            v.truncate(6000);
            (k, v)
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An MLflow run: its id and where its artifacts go.
struct RunRef {
    id: String,
    artifact_uri: String,
    experiment_id: String,
}

struct Task {
    client: Client,
    parent: Option<RunRef>,
    children: Vec<Option<RunRef>>,
    /// The server failed a request [`ATTEMPTS`] times: drop the rest.
    failed: bool,
}

impl Task {
    async fn open(&mut self, experiment: &str, run_name: &str, params: &[Vec<(String, String)>]) {
        let Some(experiment_id) = self.experiment(experiment).await else {
            return;
        };
        self.parent = self
            .create_run(
                &experiment_id,
                run_name,
                None,
                &[("hopper.models", params.len().to_string())],
            )
            .await;
        let Some(parent_id) = self.parent.as_ref().map(|p| p.id.clone()) else {
            return;
        };
        for (model, params) in params.iter().enumerate() {
            let child = self
                .create_run(
                    &experiment_id,
                    &format!("{run_name}/model-{model}"),
                    Some(&parent_id),
                    &[("hopper.model_id", model.to_string())],
                )
                .await;
            if let Some(c) = &child {
                let body = json!({
                    "run_id": c.id,
                    "params": params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                });
                self.post("runs/log-batch", body).await;
            }
            self.children.push(child);
        }
    }

    async fn drain(&mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = rx.recv().await {
            match event {
                Event::Epoch {
                    model,
                    epoch,
                    metrics,
                } => {
                    let Some(run) = self.child(model) else {
                        continue;
                    };
                    let ts = now_ms();
                    let body = json!({
                        "run_id": run,
                        "metrics": metrics.iter().map(|(k, v)| json!({
                            "key": k, "value": v, "timestamp": ts, "step": epoch,
                        })).collect::<Vec<_>>(),
                    });
                    self.post("runs/log-batch", body).await;
                }
                Event::Stopped {
                    model,
                    reason,
                    epochs,
                } => {
                    let Some(run) = self.child(model) else {
                        continue;
                    };
                    let body = json!({
                        "run_id": run,
                        "tags": [
                            {"key": "hopper.stop_reason", "value": reason},
                            {"key": "hopper.stopped_after_epochs", "value": epochs.to_string()},
                        ],
                    });
                    self.post("runs/log-batch", body).await;
                }
                Event::Finish {
                    status,
                    results,
                    done,
                } => {
                    self.finish(status, results.as_deref()).await;
                    let _ = done.send(());
                }
            }
        }
    }

    fn child(&self, model: usize) -> Option<String> {
        if self.failed {
            return None;
        }
        self.children.get(model)?.as_ref().map(|r| r.id.clone())
    }

    async fn finish(&mut self, status: &str, results: Option<&Path>) {
        if let Some(path) = results {
            self.upload_results(path).await;
        }
        let runs: Vec<String> = self
            .children
            .iter()
            .flatten()
            .chain(self.parent.as_ref())
            .map(|r| r.id.clone())
            .collect();
        for id in runs {
            if self.failed {
                break;
            }
            let body = json!({"run_id": id, "status": status, "end_time": now_ms()});
            self.post("runs/update", body).await;
        }
    }

    /// The model files (and results.json and the report, on the parent).
    async fn upload_results(&mut self, path: &Path) {
        let results = match RunResults::read(path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("MLflow: no artifacts: {e}");
                return;
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        // Every model's last word: why it stopped (its budget, a rung,
        // patience), where the search's decisions told only the early stops.
        for record in &results.models {
            let (Some(stop), Some(Some(run))) = (&record.stop, self.children.get(record.model_id))
            else {
                continue;
            };
            let body = json!({
                "run_id": run.id,
                "tags": [
                    {"key": "hopper.stop_reason", "value": stop},
                    {"key": "hopper.epochs", "value": record.epochs().to_string()},
                ],
            });
            self.post("runs/log-batch", body).await;
        }
        for record in &results.models {
            let (Some(file), Some(Some(run))) = (
                record.model_file.as_deref(),
                self.children.get(record.model_id),
            ) else {
                continue;
            };
            let target = artifact_target(run, "model", file);
            if let Some(target) = target {
                self.put_file(&dir.join(file), &target).await;
            }
        }
        if let Some(parent) = &self.parent {
            let mut files = vec![(path.to_path_buf(), "results.json")];
            let report = dir.join("report.html");
            if report.is_file() {
                files.push((report, "report.html"));
            }
            let targets: Vec<_> = files
                .iter()
                .filter_map(|(p, name)| Some((p.clone(), artifact_target(parent, "", name)?)))
                .collect();
            for (p, target) in targets {
                self.put_file(&p, &target).await;
            }
        }
    }

    async fn experiment(&mut self, name: &str) -> Option<String> {
        let url = format!("experiments/get-by-name?experiment_name={}", encode(name));
        if let Some(v) = self.get(&url).await {
            if let Some(id) = v["experiment"]["experiment_id"].as_str() {
                return Some(id.to_string());
            }
        }
        if self.failed {
            return None;
        }
        let v = self
            .post("experiments/create", json!({ "name": name }))
            .await?;
        v["experiment_id"].as_str().map(str::to_string)
    }

    async fn create_run(
        &mut self,
        experiment_id: &str,
        name: &str,
        parent: Option<&str>,
        tags: &[(&str, String)],
    ) -> Option<RunRef> {
        let mut all: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        all.push(json!({"key": "mlflow.source.name", "value": "hopper mop"}));
        if let Some(p) = parent {
            all.push(json!({"key": "mlflow.parentRunId", "value": p}));
        }
        let body = json!({
            "experiment_id": experiment_id,
            "run_name": name,
            "start_time": now_ms(),
            "tags": all,
        });
        let v = self.post("runs/create", body).await?;
        let info = &v["run"]["info"];
        Some(RunRef {
            id: info["run_id"].as_str()?.to_string(),
            artifact_uri: info["artifact_uri"].as_str().unwrap_or("").to_string(),
            experiment_id: experiment_id.to_string(),
        })
    }

    async fn get(&mut self, path: &str) -> Option<Value> {
        if self.failed {
            return None;
        }
        let url = format!("{}/api/2.0/mlflow/{path}", self.client.base);
        let client = self.client.http.clone();
        self.with_retries(path, || client.get(&url).send()).await
    }

    async fn post(&mut self, path: &str, body: Value) -> Option<Value> {
        if self.failed {
            return None;
        }
        let url = format!("{}/api/2.0/mlflow/{path}", self.client.base);
        let client = self.client.http.clone();
        self.with_retries(path, || client.post(&url).json(&body).send())
            .await
    }

    async fn put_file(&mut self, file: &Path, target: &str) {
        if self.failed {
            return;
        }
        let bytes = match tokio::fs::read(file).await {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::warn!("MLflow: cannot read {}: {e}", file.display());
                return;
            }
        };
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{target}",
            self.client.base
        );
        let client = self.client.http.clone();
        self.with_retries("artifact upload", || {
            client.put(&url).body(bytes.clone()).send()
        })
        .await;
    }

    /// One request, tried [`ATTEMPTS`] times over transport errors and 5xx
    /// answers. A 4xx answer is the request's fault: it is logged and
    /// skipped, the tracker goes on (except a 404 from get-by-name, which
    /// means "create it"). After the last failed try the tracker stops.
    async fn with_retries<F, Fut>(&mut self, what: &str, send: F) -> Option<Value>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            match send().await {
                Ok(resp) if resp.status().is_success() => {
                    return Some(resp.json().await.unwrap_or(Value::Null));
                }
                Ok(resp) if resp.status().is_client_error() => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if status != reqwest::StatusCode::NOT_FOUND {
                        tracing::warn!("MLflow refused {what}: {status}: {text}");
                    }
                    return None;
                }
                Ok(resp) => last = format!("{}", resp.status()),
                Err(e) => last = e.to_string(),
            }
        }
        self.failed = true;
        tracing::warn!(
            "MLflow at {} did not answer {what} after {ATTEMPTS} tries ({last}); \
             the run goes on without tracking (its results are in the output directory)",
            self.client.base
        );
        eprintln!(
            "warning: MLflow at {} is unreachable ({last}); training goes on, untracked",
            self.client.base
        );
        None
    }
}

/// Where an artifact of `run` goes under the tracking server's artifact
/// proxy, or `None` (with a warning) when the server stores artifacts
/// elsewhere and hopper cannot write there.
fn artifact_target(run: &RunRef, subdir: &str, file: &str) -> Option<String> {
    let Some(rest) = run.artifact_uri.strip_prefix("mlflow-artifacts:") else {
        tracing::warn!(
            "MLflow: run {}'s artifacts go to {} (not served by the tracking server); \
             start it with --serve-artifacts to receive model files",
            run.id,
            run.artifact_uri
        );
        return None;
    };
    let name = Path::new(file).file_name()?.to_string_lossy().into_owned();
    let base = rest.trim_start_matches('/');
    let base = if base.is_empty() {
        format!("{}/{}/artifacts", run.experiment_id, run.id)
    } else {
        base.to_string()
    };
    Some(if subdir.is_empty() {
        format!("{base}/{}", encode(&name))
    } else {
        format!("{base}/{subdir}/{}", encode(&name))
    })
}

/// Percent-encodes what a URL path segment or query value cannot hold.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            base: url.trim_end_matches('/').to_string(),
            http,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_the_configuration_flattened() {
        let config = ModelConfig::conf_a(1e-3, 1e-5, 64, true);
        let params: BTreeMap<_, _> = params_of(&config).into_iter().collect();
        assert_eq!(params["lr"], "0.001");
        assert_eq!(params["batch_size"], "64");
        assert_eq!(params["arch.kind"], "mlp");
        assert_eq!(params["arch.hidden"], "[1000,500]");
        assert_eq!(params["input.kind"], "criteo");
        assert_eq!(params["optimizer.kind"], "adam");
    }

    #[test]
    fn artifacts_go_under_the_runs_proxied_uri() {
        let run = RunRef {
            id: "abc".into(),
            artifact_uri: "mlflow-artifacts:/7/abc/artifacts".into(),
            experiment_id: "7".into(),
        };
        assert_eq!(
            artifact_target(&run, "model", "models/model-3.pt").as_deref(),
            Some("7/abc/artifacts/model/model-3.pt")
        );
        let elsewhere = RunRef {
            artifact_uri: "s3://bucket/x".into(),
            ..run
        };
        assert_eq!(artifact_target(&elsewhere, "", "results.json"), None);
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
