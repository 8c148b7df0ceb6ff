"""Bring your own model: a PyTorch network, scripted for hopper.

hopper trains any TorchScript module whose forward takes one float tensor
of features, [n, features] for a table (or [n, C, H, W] for images), and
returns [n, outputs]: one logit per class (multiclass), or one column for
a binary or regression task. Parameters and buffers (BatchNorm's running
statistics) are trained and hop between trainers; Dropout and BatchNorm
follow hopper's training and evaluation modes.

    python examples/torchscript/net.py --features 40 --outputs 1 net.pt
    # then in the run configuration's [grid]:
    #   arch = [{ kind = "torchscript", path = "net.pt" }]

--features is the width of the run's input: for input.kind = "table", the
numeric columns plus buckets per categorical column plus the elements of
array columns (`mop train` says the width it wants if it does not match);
--image C,H,W builds the small convolutional network instead.
"""

import argparse

import torch
from torch import nn


class TableNet(nn.Module):
    """Linear → BatchNorm → ReLU → Dropout, twice, then the output layer."""

    def __init__(self, features: int, outputs: int, hidden: int = 32, dropout: float = 0.2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ImageNet(nn.Module):
    """A small convolutional network with BatchNorm and Dropout."""

    def __init__(self, channels: int, outputs: int, width: int = 4, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.head(h.mean(dim=(2, 3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the module file to write (e.g. net.pt)")
    parser.add_argument("--features", type=int, help="input width of a table model")
    parser.add_argument("--image", help="C,H,W of an image model instead")
    parser.add_argument("--outputs", type=int, default=2, help="classes, or 1 (binary, regression)")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.image:
        channels = int(args.image.split(",")[0])
        net = ImageNet(channels, args.outputs)
    elif args.features:
        net = TableNet(args.features, args.outputs, args.hidden)
    else:
        parser.error("give --features N or --image C,H,W")
    # The initial weights travel in the file: hopper starts every model of
    # the grid that names it from them.
    torch.jit.script(net).save(args.out)


if __name__ == "__main__":
    main()
