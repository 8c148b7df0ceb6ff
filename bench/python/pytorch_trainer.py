"""The training benchmark's PyTorch column: confA steps per second in
PyTorch, on the rows hopper's benchmark trains on, timed the same way.

The rows are featurized Criteo rows (39 slot indices in 7306 slots) written
by `training` as .npy. The model is confA as hopper builds it:

- dense:  one-hot float input, Linear 7306→1000 (hopper multiplies the same
          one-hot matrix), ReLU, Linear 1000→500, ReLU, Linear 500→2;
- sparse: EmbeddingBag sum + bias for the first layer (the same function,
          as hopper's sparse first layer computes it).

Adam with weight_decay = l2 and `fused=True` (PyTorch's fastest on CPU),
gradients dropped between steps (`zero_grad(set_to_none=True)`, PyTorch's
default). Each measurement warms up (≥ 3 steps and 0.3 s), then runs for at
least MIN_SECONDS and MIN_ROWS, or MAX_SECONDS, checked between steps.

Usage: pytorch_trainer.py X.npy Y.npy THREADS MODE BATCH [MODE BATCH ...]
Prints one JSON object per measurement: {"mode", "batch", "threads", "rows", "seconds"}.
"""
import json
import sys
import time

import numpy as np
import torch
from torch import nn

SLOTS, HIDDEN, CLASSES = 7306, (1000, 500), 2
MIN_SECONDS, MIN_ROWS, MAX_SECONDS = 2.0, 3000, 10.0


class ConfA(nn.Module):
    def __init__(self, sparse):
        super().__init__()
        self.sparse = sparse
        if sparse:
            self.first = nn.EmbeddingBag(SLOTS, HIDDEN[0], mode="sum")
            self.bias = nn.Parameter(torch.zeros(HIDDEN[0]))
        else:
            self.first = nn.Linear(SLOTS, HIDDEN[0])
        self.rest = nn.Sequential(
            nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU(), nn.Linear(HIDDEN[1], CLASSES)
        )

    def forward(self, x):
        if self.sparse:
            h = self.first(x) + self.bias
        else:
            h = self.first(x)
        return self.rest(h)


def one_hot(x):
    out = torch.zeros(x.shape[0], SLOTS)
    out.scatter_(1, x, 1.0)
    return out


def measure(x, y, mode, batch):
    sparse = mode == "sparse"
    model = ConfA(sparse)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=True)
    loss_fn = nn.CrossEntropyLoss()
    rows = len(y)

    def steps(until):
        offset, served = 0, 0
        start = time.perf_counter()
        while not until(served, time.perf_counter() - start):
            if offset + batch > rows:
                offset = 0
            xb, yb = x[offset:offset + batch], y[offset:offset + batch]
            offset += batch
            opt.zero_grad(set_to_none=True)
            inp = xb if sparse else one_hot(xb)
            loss_fn(model(inp), yb).backward()
            opt.step()
            served += batch
        return served, time.perf_counter() - start

    steps(lambda n, t: n >= 3 * batch and t > 0.3)
    n, t = steps(lambda n, t: (t >= MIN_SECONDS and n >= MIN_ROWS) or t >= MAX_SECONDS)
    return n, t


def main():
    x = torch.from_numpy(np.load(sys.argv[1]))
    y = torch.from_numpy(np.load(sys.argv[2]))
    threads = int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(7)
    args = sys.argv[4:]
    for mode, batch in zip(args[::2], args[1::2]):
        n, t = measure(x, y, mode, int(batch))
        print(json.dumps({"mode": mode, "batch": int(batch), "threads": threads,
                          "rows": n, "seconds": t}), flush=True)


if __name__ == "__main__":
    main()
