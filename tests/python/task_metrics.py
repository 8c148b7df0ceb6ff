"""Metrics of predictions, computed with numpy alone, to check hopper's own.

Usage: task_metrics.py ROWS.json
ROWS.json: {"task": "binary", "rows": [[probability, predicted, label], ...]}
        or {"task": "regression", "rows": [[prediction, label], ...]}
Prints the metrics as JSON: auc (average ranks for ties, as scikit-learn's
roc_auc_score), log_loss (probabilities clipped as scikit-learn does) and
accuracy for binary; rmse, mae and r2 for regression.
"""

import json
import sys

import numpy as np


def average_ranks(x):
    """1-based ranks of x, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def main():
    spec = json.load(open(sys.argv[1]))
    rows = np.array(spec["rows"], dtype=np.float64)
    if spec["task"] == "binary":
        p, predicted, y = rows[:, 0], rows[:, 1], rows[:, 2]
        pos = y == 1
        n_pos, n_neg = pos.sum(), (~pos).sum()
        ranks = average_ranks(p)
        auc = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
        eps = np.finfo(np.float64).eps
        q = np.clip(p, eps, 1 - eps)
        log_loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        accuracy = np.mean(predicted == y)
        out = {"auc": auc, "log_loss": log_loss, "accuracy": accuracy, "rows": len(y)}
    else:
        pred, y = rows[:, 0], rows[:, 1]
        e = pred - y
        out = {
            "rmse": float(np.sqrt(np.mean(e * e))),
            "mae": float(np.mean(np.abs(e))),
            "r2": float(1 - np.sum(e * e) / np.sum((y - y.mean()) ** 2)),
            "rows": len(y),
        }
    print(json.dumps({k: float(v) for k, v in out.items()}))


main()
