"""The `quality` benchmark's PyTorch leg: the scripted module hopper trains,
trained by PyTorch sequentially on the same rows, scored on the same
validation rows with the same metric definitions.

The rows are those of the hopper run's own split queries, read from every
segment by `quality` (JSON columns, NULL as null). They are featurized here
from the raw values as hopper's table input specifies (mop_core::table),
with the statistics of the hopper run's `table_features.json` — so the
means, standard deviations and buckets are the run's — and those
statistics are checked against the training rows first; when the manifest
names `hopper_features` (hopper's own featurizer's output for the training
rows, read over Flight), the features made here must equal it bit for bit:

  numeric column  (x - mean) * (1 / std) in float64, then float32; NULL -> 0
  categorical     one-hot over `buckets` slots, slot = FNV-1a 64 of the
                  UTF-8 text mod buckets; NULL -> none set

Training: torch.jit.load of the module file hopper trained (its initial
weights), Adam (PyTorch defaults, weight decay 0, fused as hopper's is),
each learning rate from a fresh copy, BCE-with-logits (binary) or MSE
(regression) averaged over mini-batches of `batch_size` rows, in two row
orders, each a leg of its own:

  shuffled      a fresh permutation of all training rows every epoch: the
                usual sequential training (a DataLoader with shuffle=True)
  hopper_order  the order hopper trains in: each epoch visits the segments'
                partitions in the order hopper's scheduler gives the model
                (`orders`, from mop_core::schedule::visit_order), each
                partition's rows in the order hopper's unit shuffles them
                (`units`: per model, epoch and partition the unit's seed and
                its rows' positions in the partition as the segment returns
                them, computed by hopper's own mop_trainer::shuffle), a
                partition's last batch shorter — the same mini-batches as
                hopper's — and before each partition torch's generator
                seeded with the unit's seed, as hopper seeds libtorch's for
                Dropout
  partitions_shuffled  hopper's partition order, each partition's rows
                reshuffled every epoch by torch's own generator: another
                draw of the same kind of order

BatchNorm cannot train on one row, so a batch of one row is left out.
After every epoch, in eval mode, the validation rows are scored: AUC from
the logits with ties counted half (scikit-learn's roc_auc_score), or RMSE.

Usage: quality_torch.py MANIFEST.json  (prints JSON: per leg, `curves` —
one list of the validation metric per epoch per learning rate — and its
`seconds`; torch's version)
"""
import json
import sys
import time

import numpy as np
import torch
from torch import nn


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def featurize(columns, spec):
    """[n, dims] float32 features of `columns` as the table input `spec` says."""
    features = spec["features"]
    if features.get("arrays"):
        raise SystemExit("quality_torch.py featurizes numeric and categorical columns only")
    categorical, buckets = spec.get("categorical", []), spec["buckets"]
    n = len(columns["id"])
    width = len(features["numeric"]) + len(categorical) * buckets
    x = np.zeros((n, width), dtype=np.float32)
    for j, f in enumerate(features["numeric"]):
        v = np.array([np.nan if a is None else a for a in columns[f["name"]]], dtype=np.float64)
        scale = 1.0 / f["std"] if f["std"] > 0 and np.isfinite(f["std"]) else 0.0
        ok = ~np.isnan(v)
        x[ok, j] = ((v[ok] - f["mean"]) * scale).astype(np.float32)
    at = len(features["numeric"])
    for name in categorical:
        for r, text in enumerate(columns[name]):
            if text is not None:
                x[r, at + fnv1a64(text.encode()) % buckets] = 1.0
        at += buckets
    return x


def check_statistics(columns, spec):
    """The run's statistics are the training rows' mean and population std."""
    for f in spec["features"]["numeric"]:
        v = np.array([a for a in columns[f["name"]] if a is not None], dtype=np.float64)
        mean, std = v.mean(), v.std()
        if abs(mean - f["mean"]) > 1e-9 * max(1.0, abs(mean)) or abs(std - f["std"]) > 1e-9 * max(1.0, std):
            raise SystemExit(
                f"{f['name']}: table_features.json has mean {f['mean']} std {f['std']}, "
                f"the training rows {mean} {std}"
            )
    if spec["features"]["rows"] != len(columns["id"]):
        raise SystemExit(
            f"table_features.json counts {spec['features']['rows']} training rows, "
            f"the segments returned {len(columns['id'])}"
        )


def auc(scores, labels):
    """Area under the ROC curve, ties counted half (Mann-Whitney U)."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]
    pos = labels == 1
    npos, nneg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def rmse(predictions, targets):
    return float(np.sqrt(np.mean((predictions.astype(np.float64) - targets) ** 2)))


def units(order, units, n, partitions, batch):
    """The units of one epoch, each a seed for torch's generator (or None)
    and its mini-batches as index tensors: all rows shuffled (`order`
    None), or the partitions in `order`, each in hopper's unit's order
    (`units` given) or shuffled by torch."""
    if order is None:
        perm = torch.randperm(n)
        return [(None, [perm[i:i + batch] for i in range(0, n, batch)])]
    out = []
    for p in order:
        rows, seed = partitions[p], None
        if units is None:
            rows = rows[torch.randperm(len(rows))]
        else:
            seed = units[p]["seed"]
            rows = rows[torch.tensor(units[p]["rows"])]
        out.append((seed, [rows[i:i + batch] for i in range(0, len(rows), batch)]))
    return out


def train(manifest, data, order_of, hoppers, seed_offset):
    """Validation curves, one per learning rate; `order_of(m, epoch)` gives
    the partition order, or None for a shuffle; `hoppers` whether the
    partitions' rows go in hopper's units' order."""
    binary = manifest["task"] == "binary"
    loss_fn = nn.BCEWithLogitsLoss() if binary else nn.MSELoss()
    train_x, train_y, val_x, val_y, segment = data
    n = len(train_y)
    partitions = [torch.nonzero(segment == p).flatten() for p in range(int(segment.max()) + 1)]
    curves = []
    for m, lr in enumerate(manifest["lrs"]):
        torch.manual_seed(manifest["seed"] * 1000 + seed_offset + m)
        model = torch.jit.load(manifest["module"])
        opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
        curve = []
        for epoch in range(manifest["epochs"]):
            model.train()
            hopper_units = manifest["units"][m][epoch] if hoppers else None
            for seed, minibatches in units(order_of(m, epoch), hopper_units, n, partitions, manifest["batch_size"]):
                if seed is not None:
                    torch.manual_seed(seed)
                for rows in minibatches:
                    if len(rows) < 2:
                        continue
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(train_x[rows]), train_y[rows])
                    loss.backward()
                    opt.step()
            model.eval()
            with torch.no_grad():
                out = model(val_x)[:, 0].numpy()
            curve.append(auc(out, val_y) if binary else rmse(out, val_y))
        curves.append(curve)
    return curves


def main():
    manifest = json.load(open(sys.argv[1]))
    torch.set_num_threads(manifest["threads"])
    rows = json.load(open(manifest["rows"]))
    spec = json.load(open(manifest["features"]))["input"]
    check_statistics(rows["train"], spec)
    train_x = featurize(rows["train"], spec)
    checked = None
    if manifest.get("hopper_features"):
        theirs = np.load(manifest["hopper_features"])
        if theirs.shape != train_x.shape or not np.array_equal(theirs, train_x):
            raise SystemExit(
                f"the features made here {train_x.shape} differ from hopper's {theirs.shape}: "
                f"{np.sum(theirs != train_x) if theirs.shape == train_x.shape else 'shapes'} values differ"
            )
        checked = "the PyTorch leg's features of the {} x {} training rows equal hopper's featurizer's, bit for bit".format(*train_x.shape)
    data = (
        torch.from_numpy(train_x),
        torch.tensor(rows["train"]["target"], dtype=torch.float32).unsqueeze(1),
        torch.from_numpy(featurize(rows["validation"], spec)),
        np.array(rows["validation"]["target"], dtype=np.float64),
        torch.tensor(rows["train"]["segment"]),
    )
    legs = {}
    hopper_order = lambda m, e: manifest["orders"][m][e]
    for name, order_of, hoppers, offset in [
        ("shuffled", lambda m, e: None, False, 0),
        ("hopper_order", hopper_order, True, 300),
        ("partitions_shuffled", hopper_order, False, 600),
    ]:
        start = time.perf_counter()
        curves = train(manifest, data, order_of, hoppers, offset)
        legs[name] = {"curves": curves, "seconds": time.perf_counter() - start}
    print(json.dumps({"legs": legs, "features_checked": checked, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
