"""The end-to-end benchmark's PyTorch leg: the grid hopper trains, in
PyTorch, one model after another from data in memory.

The rows are the ones hopper's featurizer produced (39 slot indices per
Criteo row, in 7306 slots), written by `end-to-end` as .npy files per
partition; the model is confA as hopper builds it (an EmbeddingBag sum over
the slots plus a bias = the first Linear on one-hot input, then ReLU,
Linear 1000→500, ReLU, Linear 500→2), Adam with weight_decay = l2 (fused,
PyTorch's fastest on CPU, as hopper's is), the same batch sizes, each epoch visiting the partitions in the order hopper's
scheduler gave that model. Initial weights differ (PyTorch's own), so the
accuracies are close, not equal.

Usage: pytorch_grid.py MANIFEST.json   (prints JSON: wall, cpu, samples, accuracies)
"""
import json
import sys
import time

import numpy as np
import torch
from torch import nn


class ConfA(nn.Module):
    def __init__(self, slots, hidden, classes):
        super().__init__()
        self.first = nn.EmbeddingBag(slots, hidden[0], mode="sum")
        self.bias = nn.Parameter(torch.zeros(hidden[0]))
        layers, width = [], hidden[0]
        for h in hidden[1:]:
            layers += [nn.ReLU(), nn.Linear(width, h)]
            width = h
        layers += [nn.ReLU(), nn.Linear(width, classes)]
        self.rest = nn.Sequential(*layers)

    def forward(self, x):
        return self.rest(self.first(x) + self.bias)


def main():
    manifest = json.load(open(sys.argv[1]))
    torch.set_num_threads(manifest["threads"])
    torch.manual_seed(0)
    parts = [
        (torch.from_numpy(np.load(p["x"])), torch.from_numpy(np.load(p["y"])))
        for p in manifest["partitions"]
    ]
    val_x = torch.from_numpy(np.load(manifest["validation"]["x"]))
    val_y = torch.from_numpy(np.load(manifest["validation"]["y"]))
    loss_fn = nn.CrossEntropyLoss()
    cpu0, start = time.process_time(), time.perf_counter()
    accuracies, samples = [], 0
    for m, cfg in enumerate(manifest["models"]):
        model = ConfA(manifest["slots"], cfg["hidden"], manifest["classes"])
        opt = torch.optim.Adam(
            model.parameters(), lr=cfg["lr"], weight_decay=cfg["l2"], fused=True
        )
        b = cfg["batch_size"]
        acc = float("nan")
        for order in manifest["orders"][m]:
            model.train()
            for p in order:
                x, y = parts[p]
                for i in range(0, len(y), b):
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x[i:i + b]), y[i:i + b])
                    loss.backward()
                    opt.step()
                    samples += len(y[i:i + b])
            model.eval()
            with torch.no_grad():
                correct = 0
                for i in range(0, len(val_y), 4096):
                    correct += (model(val_x[i:i + 4096]).argmax(1) == val_y[i:i + 4096]).sum().item()
            acc = correct / len(val_y)
        accuracies.append(acc)
    print(json.dumps({
        "wall": time.perf_counter() - start,
        "cpu": time.process_time() - cpu0,
        "samples": samples,
        "accuracies": accuracies,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
