#!/usr/bin/env python3
"""The training script of `cargo bench --bench command`: what reporting progress every
batch costs a PyTorch training loop, through runyard and through MLflow.

It runs as a runyard command run (so `RUNYARD_PROGRESS_FD` is a real server's pipe)
and trains one small MLP in rounds of `--batches` batches. Each round is one arm:

- `none`: no reporting;
- `runyard`: `runyard_report.Reporter.progress(...)` every batch, and
  `Reporter.epoch(...)` at the round's end (a round is an epoch to the server);
- `mlflow`: `mlflow.log_metric("loss", loss, step=step)` every batch, into the MLflow
  tracking server at `--mlflow-uri` (synchronous, MLflow's default);
- `mlflow_async`: the same with `synchronous=False` (MLflow's background logging
  queue), which its documentation suggests for logging every step; the round ends
  when the queue is flushed, so its time holds the sending too.

Every round runs `none` and `runyard` (in alternating order); every `--mlflow-every`
th round also runs the MLflow arms, each right after a `none` round of its own. All
arms do the same tensor work, read the loss back with `loss.item()` (as a loop that
logs it does) and call a reporting function around which the time is taken with
`perf_counter_ns` (the `none` arm's does nothing), so the instrumentation is the same
in all of them. The model, optimizer, data and order are made once; rounds continue
training the same model (the work per batch does not depend on the weights).

Writes one JSON object to `--out`: per arm, each round's wall time, its time inside
the reporting calls and its number of calls; `benches/command.rs` turns them into
figures. With `--smoke` it needs neither torch nor MLflow: a plain-Python "batch"
(a little arithmetic) stands in for the training step, and only `none` and `runyard`
run.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import runyard_report  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--batches", type=int, default=100, help="batches per round")
    parser.add_argument("--mlflow-uri", default=None)
    parser.add_argument("--mlflow-every", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true")
    return parser.parse_args()


class TorchStep:
    """One batch of a small MLP: forward, cross-entropy, backward, Adam step."""

    def __init__(self, threads):
        import torch
        import torch.nn.functional as F
        from torch import nn

        torch.set_num_threads(threads)
        torch.manual_seed(1)
        features, hidden, classes, self.batch_size = 32, 64, 4, 32
        samples = 8192
        g = torch.Generator().manual_seed(7)
        self.xs = torch.randn(samples, features, generator=g)
        teacher = torch.randn(features, classes, generator=g)
        self.ys = (self.xs @ teacher).argmax(-1)
        self.order = torch.randperm(samples, generator=g)
        self.batches_per_pass = samples // self.batch_size
        self.model = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(),
                                   nn.Linear(hidden, classes))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.cross_entropy = F.cross_entropy
        self.threads = torch.get_num_threads()
        self.torch_version = torch.__version__

    def __call__(self, batch):
        start = (batch % self.batches_per_pass) * self.batch_size
        index = self.order[start:start + self.batch_size]
        x, y = self.xs.index_select(0, index), self.ys.index_select(0, index)
        loss = self.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()


class PlainStep:
    """A plain-Python stand-in for a batch (for the smoke run)."""

    batch_size = 32
    threads = 1
    torch_version = None

    def __init__(self):
        self.values = [float(i) for i in range(200)]

    def __call__(self, batch):
        total = 0.0
        for v in self.values:
            total += v * v
        return 1.0 / (1.0 + batch + total * 1e-9)


def make_arms(args, reporter):
    """Each arm's reporting call: (epoch, batch, batches, loss, samples, step)."""

    def none(epoch, batch, batches, loss, samples, step):
        pass

    def runyard(epoch, batch, batches, loss, samples, step):
        reporter.progress(epoch=epoch, batch=batch, batches=batches, loss=loss,
                          samples=samples)

    arms = {"none": none, "runyard": runyard}
    if args.mlflow_uri:
        import mlflow

        mlflow.set_tracking_uri(args.mlflow_uri)
        mlflow.set_experiment("runyard-command-bench")
        mlflow.start_run()
        log_metric = mlflow.log_metric

        def mlflow_sync(epoch, batch, batches, loss, samples, step):
            log_metric("loss", loss, step=step)

        def mlflow_async(epoch, batch, batches, loss, samples, step):
            log_metric("loss_async", loss, step=step, synchronous=False)

        arms["mlflow"] = mlflow_sync
        arms["mlflow_async"] = mlflow_async
    return arms


def main():
    args = parse_args()
    reporter = runyard_report.Reporter()
    if not reporter.active:
        sys.exit("command_report: RUNYARD_PROGRESS_FD is not set; run it as a runyard "
                 "command run (cargo bench --bench command)")
    step_fn = PlainStep() if args.smoke else TorchStep(args.threads)
    arms = make_arms(args, reporter)
    results = {name: {"seconds": [], "inside_ns": [], "calls": []} for name in arms}
    results["none_paired"] = {"seconds": [], "inside_ns": [], "calls": []}
    perf_ns = time.perf_counter_ns
    state = {"step": 0}
    rounds_of = {name: 0 for name in arms}
    flush = None
    if "mlflow_async" in arms:
        import mlflow
        flush = mlflow.flush_async_logging

    parent = os.getppid()

    def run_round(name, record_as):
        if os.getppid() != parent:
            sys.exit("command_report: the server that started this script is gone")
        report = arms[name]
        batches = args.batches
        rounds_of[name] += 1
        epoch = rounds_of[name]  # each arm's rounds are its epochs
        inside = 0
        started = time.perf_counter()
        for batch in range(1, batches + 1):
            loss = step_fn(state["step"])
            state["step"] += 1
            t0 = perf_ns()
            report(epoch, batch, batches, loss, state["step"] * step_fn.batch_size,
                   state["step"])
            inside += perf_ns() - t0
        if name == "runyard":
            reporter.epoch(epoch, loss=loss)  # a round is an epoch: its summary line
        elif name == "mlflow_async":
            flush()  # what the background queue still has to send belongs to this round
        seconds = time.perf_counter() - started
        if record_as is not None:
            entry = results[record_as]
            entry["seconds"].append(seconds)
            entry["inside_ns"].append(inside)
            entry["calls"].append(batches)

    # One untimed round of each arm: imports, allocations, connections.
    for name in arms:
        run_round(name, None)

    for i in range(args.rounds):
        pair = ("none", "runyard") if i % 2 == 0 else ("runyard", "none")
        for name in pair:
            run_round(name, name)
        if args.mlflow_uri and i % args.mlflow_every == 0:
            for name in ("mlflow", "mlflow_async"):
                # Each MLflow round right after a `none` round of its own: the pair's
                # ratio is what the figures take.
                run_round("none", "none_paired")
                run_round(name, name)

    if args.mlflow_uri:
        import mlflow
        mlflow.end_run()
    reporter.close()
    out = {
        "rounds": args.rounds,
        "batches": args.batches,
        "mlflow_every": args.mlflow_every,
        "threads": step_fn.threads,
        "torch": step_fn.torch_version,
        "python": sys.version.split()[0],
        "reporter_lines": reporter.lines,
        "reporter_dropped": reporter.dropped,
        "arms": results,
    }
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
