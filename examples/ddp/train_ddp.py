#!/usr/bin/env python3
"""Data-parallel PyTorch training (DistributedDataParallel, gloo, CPU) on UCI digits.

A small MLP (64 -> hidden -> 10) learns the 8x8 digits of
``data/datasets/digits.csv.gz`` (1,797 rows: 64 pixels valued 0..16, then the label),
split 80/20 into training and validation by a fixed seed. Every rank trains on its own
shard of each epoch's shuffled training set (``DistributedSampler``) and DDP averages
the gradients, so all ranks hold the same parameters after every step.

How it is started
-----------------
The process group comes from the environment (``init_method="env://"``), which
torchrun sets and so does runyard for a command run with ``"slots": N``: it starts one
process per rank itself, with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``NODE_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. Without ``WORLD_SIZE`` the script is one process, a group of one on
a free local port:

    torchrun --nproc-per-node 2 examples/ddp/train_ddp.py --epochs 10
    python3 examples/ddp/train_ddp.py --epochs 10
    curl -s localhost:8080/api/v1/runs -H 'content-type: application/json' \\
        -d @examples/ddp/ddp.json                          # a runyard command run

Under runyard (progress protocol v1, see ``python/runyard_report.py``)
--------------------------------------------------------------------------
Every rank has a progress pipe of its own and reports plain progress through it; only
rank 0's epoch summaries and checkpoints count, so only rank 0 sends them. Each epoch
rank 0 reports ``loss`` (the training loss over all ranks), ``accuracy``,
``val_loss``, ``val_metric`` (the validation accuracy) and ``samples_per_s`` (all
ranks' samples over the epoch's wall time), then writes ``ckpt-<step>.pt`` to
``RUNYARD_CHECKPOINT_DIR`` (``./checkpoints`` outside runyard) and reports it. With
``RUNYARD_RESUME_FROM`` set, every rank loads that checkpoint (model, optimizer,
epoch and batch) and goes on from the very batch it names.

SIGTERM (runyard's cancel and pause; every rank gets it) sets a flag. After each step
the ranks take the flag's maximum over the group, so all of them stop after the same
step: rank 0 writes and reports a checkpoint, and every rank exits 0 (a second SIGTERM
before that ends the rank at once, as ``runyard_report`` does). A peer that dies
makes the next collective raise: the rank prints the error and exits 1 rather than
wait (a peer that hangs instead is given ``--collective-timeout`` seconds).

Output
------
Each rank prints ``rank <RANK> of <WORLD_SIZE> on cpu, host <hostname>`` first and, after a run that
completes, ``params-sha256 <hex>``: the SHA-256 of its parameters' bytes in
``named_parameters()`` order, the same on every rank when the all-reduce did its job.
Rank 0 also prints a line per epoch, ``samples_per_s <mean over the epochs>`` and
``final val_accuracy <accuracy>``.

Options: ``--epochs``, ``--hidden`` (the hidden layer's width), ``--lr`` (Adam),
``--batch-size`` (per rank), ``--seed`` (initial weights and data order), ``--data``
(the gzip CSV), ``--collective-timeout`` (seconds), ``--step-delay-ms`` (a sleep after
every step on every rank, to make a short run last), ``--ready-dir`` (each rank writes
``ready-<RANK>`` there, holding ``time.time_ns()``, once the group is up) and
``--exit-when-ready`` (then leave at once, for a start-up latency benchmark).
"""

import argparse
import datetime
import gzip
import hashlib
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

REPO = Path(__file__).resolve().parents[2]

# runyard_report lives in the repository's python/ directory; a project would copy it
# next to its own scripts instead.
sys.path.insert(0, str(REPO / "python"))
import runyard_report  # noqa: E402

# The training/validation split does not move with --seed: every run validates on
# the same rows.
SPLIT_SEED = 0
VALIDATION_FRACTION = 0.2


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(REPO / "data/datasets/digits.csv.gz"))
    parser.add_argument("--collective-timeout", type=float, default=60.0,
                        help="seconds a collective waits for its peers")
    parser.add_argument("--step-delay-ms", type=float, default=0.0)
    parser.add_argument("--ready-dir")
    parser.add_argument("--exit-when-ready", action="store_true")
    return parser.parse_args()


def join_group(timeout):
    """Joins the process group the environment describes; without WORLD_SIZE, a
    group of one on a free local port. Returns (rank, world size, store): rank 0's
    process serves the store the group met through, so it is the last to leave (see
    leave_group)."""
    if "WORLD_SIZE" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    wait = datetime.timedelta(seconds=timeout)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          world, is_master=rank == 0, timeout=wait)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=wait)
    return rank, world, store


def leave_group(store, rank, world, timeout):
    """Leaves the group once every rank is done with it, rank 0 last: the others
    destroy their part and say so through the store, and rank 0, whose process
    serves the store and every peer's first connection, waits for them all before
    it destroys its own and exits. Leaving together instead, a rank could still be
    tearing down when rank 0's process was gone, and abort (SIGABRT) for it."""
    if rank != 0:
        dist.destroy_process_group()
        store.add("left", 1)
        return
    deadline = time.monotonic() + timeout
    while store.add("left", 0) < world - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    dist.destroy_process_group()


def write_ready(directory, rank):
    """Writes DIR/ready-<rank> whole (a temporary name, then a rename)."""
    path = Path(directory, f"ready-{rank}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(str(time.time_ns()))
    os.replace(tmp, path)


def load_digits(path):
    """(train_x, train_y, val_x, val_y): pixels scaled to [0, 1], labels 0..9."""
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    xs = torch.from_numpy(table[:, :64] / 16.0)
    ys = torch.from_numpy(table[:, 64].astype(np.int64))
    order = torch.randperm(len(ys), generator=torch.Generator().manual_seed(SPLIT_SEED))
    held_out = int(len(ys) * VALIDATION_FRACTION)
    val, train = order[:held_out], order[held_out:]
    return xs[train], ys[train], xs[val], ys[val]


def params_sha256(model):
    digest = hashlib.sha256()
    for _, p in model.named_parameters():
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def evaluate(model, xs, ys):
    outputs = model(xs)
    loss = F.cross_entropy(outputs, ys).item()
    accuracy = (outputs.argmax(-1) == ys).float().mean().item()
    return loss, accuracy


def agree(flag):
    """Whether any rank's flag is set; every rank gets the same answer."""
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def save(reporter, directory, state):
    """Rank 0: writes ckpt-<step>.pt whole, then reports it."""
    path = Path(directory, f"ckpt-{state['step']}.pt").absolute()
    with runyard_report.atomic_path(path) as tmp:
        torch.save(state, tmp)
    # Epochs fully done, and batches done in the next one.
    reporter.checkpoint(path, epoch=state["epoch"] - 1, batch=state["batch"],
                        step=state["step"])
    return path


def train(args, reporter, rank, world):
    torch.manual_seed(args.seed)
    train_x, train_y, val_x, val_y = load_digits(args.data)
    sampler = DistributedSampler(range(len(train_y)), num_replicas=world, rank=rank,
                                 shuffle=True, seed=args.seed)
    # The sampler pads every rank to the same number of rows, so every rank runs the
    # same number of steps, and collectives pair up.
    batches = (len(sampler) + args.batch_size - 1) // args.batch_size

    module = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(),
                           nn.Linear(args.hidden, 10))
    optimizer = torch.optim.Adam(module.parameters(), lr=args.lr)

    # `epoch` counts from 1, as in runyard's own runs; `batch` is batches done in it;
    # `totals` this rank's (loss sum, correct, rows) of the epoch so far; `rates` the
    # finished epochs' samples per second.
    epoch, batch, step, samples = 1, 0, 0, 0
    totals = torch.zeros(3, dtype=torch.float64)
    rates = []
    if reporter.resume_from:
        state = torch.load(reporter.resume_from, map_location="cpu")
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, batch, step = state["epoch"], state["batch"], state["step"]
        samples, rates = state["samples"], state["rates"]
        if state["world_size"] != world or state["batch_size"] != args.batch_size:
            # The shards and batches differ: the position within the epoch is lost.
            print(f"rank {rank}: the checkpoint is from {state['world_size']} ranks of "
                  f"batch {state['batch_size']}; epoch {epoch} starts over",
                  file=sys.stderr)
            batch = 0
        elif rank == 0:
            # The epoch's totals so far, summed over the ranks when it was saved.
            totals = state["totals"]
        if rank == 0:
            print(f"resumed from {reporter.resume_from}: epoch {epoch}, batch {batch}")
    model = DistributedDataParallel(module)

    def state_at(epoch, batch, totals):
        return {
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,  # the epoch to go on with
            "batch": batch,  # batches of it already done
            "step": step,
            "samples": samples,
            "totals": totals,
            "rates": rates,
            "world_size": world,
            "batch_size": args.batch_size,
            "args": vars(args),
        }

    checkpoints = reporter.checkpoint_dir or "checkpoints"
    stop = False
    while epoch <= args.epochs:
        started = time.monotonic()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        epoch_samples = 0
        model.train()
        while batch < batches:
            index = order[batch * args.batch_size:(batch + 1) * args.batch_size]
            x, y = train_x[index], train_y[index]
            outputs = model(x)
            loss = F.cross_entropy(outputs, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch += 1
            step += 1
            samples += len(index) * world  # every rank's batch has this many rows
            epoch_samples += len(index) * world
            loss = loss.detach()
            totals += torch.stack([loss.double() * len(index),
                                   (outputs.argmax(-1) == y).sum().double(),
                                   torch.tensor(float(len(index)), dtype=torch.float64)])
            reporter.progress(epoch=epoch, epochs=args.epochs, batch=batch,
                              batches=batches, loss=loss, samples=samples)
            if args.step_delay_ms:
                time.sleep(args.step_delay_ms / 1000)
            stop = agree(reporter.should_stop)
            if stop and batch < batches:
                # Cancel or pause: save this very point; a resume goes on from here.
                dist.all_reduce(totals)
                if rank == 0:
                    path = save(reporter, checkpoints, state_at(epoch, batch, totals))
                    print(f"SIGTERM: saved {path} at epoch {epoch}, batch {batch}")
                return

        dist.all_reduce(totals)
        elapsed = time.monotonic() - started
        rates.append(epoch_samples / elapsed)
        if rank == 0:
            loss_sum, correct, rows = totals.tolist()
            model.eval()
            val_loss, val_accuracy = evaluate(module, val_x, val_y)
            reporter.epoch(epoch, loss=loss_sum / rows, accuracy=correct / rows,
                           val_loss=val_loss, val_metric=val_accuracy,
                           samples_per_s=rates[-1],
                           duration_ms=int((time.monotonic() - started) * 1000))
            print(f"epoch {epoch}/{args.epochs}: loss {loss_sum / rows:.4f}, "
                  f"accuracy {correct / rows:.3f}, val loss {val_loss:.4f}, "
                  f"val accuracy {val_accuracy:.3f}, {rates[-1]:.0f} samples/s")
        epoch, batch = epoch + 1, 0
        totals = torch.zeros(3, dtype=torch.float64)
        if rank == 0:
            save(reporter, checkpoints, state_at(epoch, 0, totals))
        if stop:
            # SIGTERM came during the epoch's last step: its checkpoint is the one.
            if rank == 0:
                print(f"SIGTERM: stopped after epoch {epoch - 1}")
            return

    print(f"params-sha256 {params_sha256(module)}")
    if rank == 0:
        mean_rate = sum(rates) / len(rates) if rates else float("nan")
        print(f"samples_per_s {mean_rate:.1f}")
        print(f"final val_accuracy {evaluate(module, val_x, val_y)[1]:.4f}")


def main():
    args = parse_args()
    # stdout goes to a log file under runyard: a line at a time, so none is lost.
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(1)
    # First, so that a SIGTERM from here on is a request to stop.
    reporter = runyard_report.Reporter()
    rank, world, store = join_group(args.collective_timeout)
    print(f"rank {rank} of {world} on cpu, host {socket.gethostname()}")
    try:
        dist.barrier()
        if args.ready_dir:
            write_ready(args.ready_dir, rank)
        if not args.exit_when_ready:
            with reporter:
                train(args, reporter, rank, world)
            dist.barrier()
    except RuntimeError:
        # Collectives raise when a peer dies (its connection closes) or hangs past
        # --collective-timeout: fail this rank too, rather than wait.
        traceback.print_exc()
        print(f"rank {rank}: exiting with status 1", file=sys.stderr)
        return 1
    leave_group(store, rank, world, args.collective_timeout)
    print(f"rank {rank}: left the group")
    return 0


if __name__ == "__main__":
    sys.exit(main())
