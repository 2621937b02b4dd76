#!/usr/bin/env python3
"""A PyTorch training script run by runyard as a command run.

A small MLP learns a synthetic classification task (Gaussian features labelled by a
random linear teacher). Through ``runyard_report`` it reports progress every batch
(the helper sends the newest a few times a second), a summary every epoch, and a
checkpoint at every epoch's end; it resumes from ``RUNYARD_RESUME_FROM``, and on
SIGTERM (runyard's cancel or pause) it saves where it is, mid-epoch, and exits 0, so a
resumed run goes on from the very batch it stopped at.

Outside runyard it runs the same (checkpoints in ./checkpoints):

    python3 examples/command/train_torch.py --epochs 3

How to submit it: examples/command/README.md.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# runyard_report lives in the repository's python/ directory; a project would copy it
# next to its own scripts instead.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
import runyard_report  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def synthetic(samples, features, classes, seed):
    """Gaussian features labelled by a random linear teacher with a little noise."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(samples, features, generator=g)
    teacher = torch.randn(features, classes, generator=g)
    ys = (xs @ teacher + 0.5 * torch.randn(samples, classes, generator=g)).argmax(-1)
    return xs, ys


def epoch_order(n, seed, epoch):
    """The data order of an epoch, a function of (seed, epoch): a run resumed
    mid-epoch sees the rest of the very order it stopped in."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def save(reporter, directory, name, state):
    """Writes a checkpoint whole (temporary file, fsync, rename), then reports it."""
    path = Path(directory, name)
    with runyard_report.atomic_path(path) as tmp:
        torch.save(state, tmp)
    # Epochs fully done, and batches done in the next one.
    reporter.checkpoint(path, epoch=state["epoch"] - 1, batch=state["batch"],
                        step=state["step"])


@torch.no_grad()
def evaluate(model, xs, ys, device):
    outputs = model(xs.to(device))
    targets = ys.to(device)
    loss = F.cross_entropy(outputs, targets).item()
    accuracy = (outputs.argmax(-1) == targets).float().mean().item()
    return loss, accuracy


def main():
    args = parse_args()
    reporter = runyard_report.Reporter()
    # runyard shows the slot's GPU alone (CUDA_VISIBLE_DEVICES), so it is "cuda".
    wanted = reporter.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda" if wanted.startswith("cuda") else "cpu")
    checkpoints = reporter.checkpoint_dir or "checkpoints"
    torch.manual_seed(args.seed)

    xs, ys = synthetic(args.samples, args.features, args.classes, seed=7)
    held_out = args.samples // 5
    train_x, train_y = xs[held_out:], ys[held_out:]
    val_x, val_y = xs[:held_out], ys[:held_out]
    n = train_x.shape[0]
    batches = (n + args.batch_size - 1) // args.batch_size

    model = nn.Sequential(
        nn.Linear(args.features, args.hidden),
        nn.ReLU(),
        nn.Linear(args.hidden, args.classes),
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    # Epochs count from 1, as in runyard's own runs; `batch` is batches done in it.
    epoch, batch, step = 1, 0, 0
    if reporter.resume_from:
        state = torch.load(reporter.resume_from, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        epoch, batch, step = state["epoch"], state["batch"], state["step"]
        print(f"resumed from {reporter.resume_from}: epoch {epoch}, batch {batch}")

    def state_at(epoch, batch):
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": epoch,  # the epoch to go on with
            "batch": batch,  # batches of it already done
            "step": step,
            "args": vars(args),
        }

    with reporter:
        while epoch <= args.epochs:
            started = time.monotonic()
            order = epoch_order(n, args.seed, epoch)
            model.train()
            loss_sum = torch.zeros((), device=device)
            hits = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            while batch < batches:
                index = order[batch * args.batch_size:(batch + 1) * args.batch_size]
                x, y = train_x[index].to(device), train_y[index].to(device)
                outputs = model(x)
                loss = F.cross_entropy(outputs, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                batch += 1
                step += 1
                seen += len(index)
                loss = loss.detach()
                loss_sum += loss * len(index)
                hits += (outputs.argmax(-1) == y).sum()
                # A tensor, not loss.item(): it is read (a device sync) only for the
                # few batches whose line is written.
                reporter.progress(epoch=epoch, epochs=args.epochs, batch=batch,
                                  batches=batches, loss=loss, samples=step * args.batch_size)
                if reporter.should_stop:
                    # Cancel or pause: save this very point and exit 0 before the
                    # grace period ends; a resume goes on from here.
                    save(reporter, checkpoints, f"step-{step}.pt", state_at(epoch, batch))
                    print(f"SIGTERM: saved at epoch {epoch}, batch {batch}; exiting")
                    return 0

            model.eval()
            val_loss, val_accuracy = evaluate(model, val_x, val_y, device)
            train_loss = (loss_sum / max(seen, 1)).item()
            reporter.epoch(epoch, loss=train_loss, accuracy=hits.item() / max(seen, 1),
                           val_loss=val_loss, val_metric=val_accuracy,
                           duration_ms=int((time.monotonic() - started) * 1000))
            print(f"epoch {epoch}/{args.epochs}: loss {train_loss:.4f}, "
                  f"val loss {val_loss:.4f}, val accuracy {val_accuracy:.3f}")
            epoch, batch = epoch + 1, 0
            save(reporter, checkpoints, f"epoch-{epoch - 1}.pt", state_at(epoch, 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
