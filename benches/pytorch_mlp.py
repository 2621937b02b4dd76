#!/usr/bin/env python3
"""The PyTorch side of `tch_vs_pytorch_speed_ratio`: the MLP that `benches/training.rs`
trains through runyard, trained by the loop a PyTorch user would write.

The parameters come from the `training_param_*` entries the Rust bench writes to
`target/bench-figures/training-params.json`, so both sides train the same model
(features -> hidden -> ReLU -> classes), on data of the same shape (Gaussian features
labelled by a random linear teacher, as runyard's synthetic data, from a seeded torch
generator: the same shapes and work, not the same values), with the same batch size,
Adam with PyTorch's defaults and the same learning rate, and the same thread count.

The work per batch is runyard's: an `index_select` of the batch from a shuffled order,
forward, cross-entropy, zero_grad, backward, Adam step, then the loss and the number
of hits read back as Python numbers (runyard sums both for the epoch's figures). Like
the Rust bench, one untimed warm-up run comes first, then `runs` runs of `epochs`
epochs, each with a fresh model and optimizer; each epoch is timed from
drawing its order to its last step, and samples/s is all timed samples over all
timed epochs.

Prints one JSON object: {"samples_per_s": ..., ...}.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = "training_param_"


def load_params(path: Path) -> dict:
    figures = json.loads(path.read_text())
    params = {}
    for name, figure in figures.items():
        if name.startswith(PREFIX):
            params[name[len(PREFIX):]] = figure["value"]
    wanted = ["samples", "features", "classes", "hidden", "batch_size", "epochs", "runs", "threads", "lr"]
    missing = [w for w in wanted if w not in params]
    if missing:
        sys.exit(f"pytorch_mlp: {path} lacks {', '.join(PREFIX + m for m in missing)}")
    return {k: (params[k] if k == "lr" else int(params[k])) for k in wanted}


def synthetic(samples: int, features: int, classes: int, seed: int):
    """Gaussian features labelled by a random linear teacher with a little noise."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(samples, features, generator=g)
    teacher = torch.randn(features, classes, generator=g)
    noise = torch.randn(samples, classes, generator=g)
    ys = (xs @ teacher + 0.5 * noise).argmax(-1)
    return xs, ys


def train_epoch(model, optimizer, xs, ys, batch_size, order_gen):
    n = xs.shape[0]
    order = torch.randperm(n, generator=order_gen)
    loss_sum = 0.0
    correct = 0
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        xb = xs.index_select(0, index)
        yb = ys.index_select(0, index)
        outputs = model(xb)
        loss = F.cross_entropy(outputs, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(index)
        correct += (outputs.argmax(-1) == yb).sum().item()
    return loss_sum / n, correct / n


def run(p: dict, xs, ys, seed: int):
    """One training run with a fresh model; returns (seconds per epoch, last accuracy)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(p["features"], p["hidden"]),
        nn.ReLU(),
        nn.Linear(p["hidden"], p["classes"]),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=p["lr"])
    order_gen = torch.Generator().manual_seed(seed)
    times = []
    accuracy = float("nan")
    for _ in range(p["epochs"]):
        start = time.perf_counter()
        _, accuracy = train_epoch(model, optimizer, xs, ys, p["batch_size"], order_gen)
        times.append(time.perf_counter() - start)
    return times, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True, help="training-params.json")
    args = parser.parse_args()
    p = load_params(args.params)
    torch.set_num_threads(p["threads"])
    xs, ys = synthetic(p["samples"], p["features"], p["classes"], seed=7)

    run(p, xs, ys, seed=1)  # warm-up, untimed
    epoch_times = []
    accuracy = float("nan")
    for _ in range(p["runs"]):
        times, accuracy = run(p, xs, ys, seed=1)
        epoch_times.extend(times)
    samples = p["samples"] * len(epoch_times)
    print(json.dumps({
        "samples_per_s": samples / sum(epoch_times),
        "timed_epochs": len(epoch_times),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "last_train_accuracy": accuracy,
    }))


if __name__ == "__main__":
    main()
