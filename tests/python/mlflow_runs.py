"""What an MLflow tracking server holds of hopper's runs, read with MLflow's
own client: every parent run of an experiment with its nested runs, their
params, metric histories, tags, status and artifacts (each artifact's
SHA-256, downloaded through the server).

    python mlflow_runs.py TRACKING_URI EXPERIMENT
"""

import hashlib
import json
import os
import sys
import tempfile

import mlflow
from mlflow.tracking import MlflowClient


def main():
    uri, experiment = sys.argv[1], sys.argv[2]
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        print(json.dumps({"parents": []}))
        return
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    out = []
    for p in parents:
        children = [
            r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id
        ]
        out.append(
            {
                "run": describe(client, p),
                "children": [describe(client, c) for c in children],
            }
        )
    print(json.dumps({"parents": out}))


def describe(client, run):
    metrics = {}
    for key in run.data.metrics:
        history = client.get_metric_history(run.info.run_id, key)
        metrics[key] = [
            [m.step, m.value] for m in sorted(history, key=lambda m: m.step)
        ]
    artifacts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in walk(client, run.info.run_id, ""):
            local = client.download_artifacts(run.info.run_id, path, tmp)
            with open(local, "rb") as f:
                artifacts[path] = hashlib.sha256(f.read()).hexdigest()
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "status": run.info.status,
        "params": dict(run.data.params),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "metrics": metrics,
        "artifacts": artifacts,
    }


def walk(client, run_id, path):
    for f in client.list_artifacts(run_id, path or None):
        if f.is_dir:
            yield from walk(client, run_id, f.path)
        else:
            yield f.path


if __name__ == "__main__":
    main()
