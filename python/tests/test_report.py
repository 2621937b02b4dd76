"""Tests of runyard.report (the progress-protocol helper) without a server: a pipe
stands in for the server's.

Standard library only, like the helper: run from ``python/`` with
``python3 -m unittest discover -s tests -p test_report.py`` (the Rust suite does, in
``tests/api/python_helper.rs``, with the system's python3 and no HTTP library).
"""

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from runyard import report as runyard_report

HERE = Path(__file__).resolve().parent.parent  # python/
ROOT = HERE.parent
EXAMPLES = ROOT / "examples" / "command"


class FakeClock:
    """Stands in for the module's monotonic clock."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def read_available(fd):
    """Everything the pipe holds now, without waiting for more."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_lines(data):
    """The JSON objects of newline-terminated lines; fails on anything else."""
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n"), "a line was cut: %r" % text[-80:]
    lines = []
    for line in text.splitlines():
        value = json.loads(line)  # raises on a garbled line
        assert isinstance(value, dict), line
        lines.append(value)
    return lines


class LineReader:
    """Reads whole lines off a pipe, keeping a line cut by a partial write for later."""

    def __init__(self, fd):
        self.fd = fd
        self.tail = b""

    def lines(self):
        data = self.tail + read_available(self.fd)
        whole, _, self.tail = data.rpartition(b"\n")
        return parse_lines(whole + b"\n" if whole else b"")


class PipeCase(unittest.TestCase):
    """A reporter writing into a pipe this test reads."""

    def setUp(self):
        self.read_fd, self.write_fd = os.pipe()
        self.checkpoints = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self._real_clock = runyard_report._monotonic
        runyard_report._monotonic = self.clock
        self.reporters = []

    def tearDown(self):
        for reporter in self.reporters:
            reporter.close(timeout=0)
        runyard_report._monotonic = self._real_clock
        os.close(self.read_fd)
        os.close(self.write_fd)
        self.checkpoints.cleanup()

    def reporter(self, **kwargs):
        environ = {
            "RUNYARD_PROGRESS_FD": str(self.write_fd),
            "RUNYARD_PROTOCOL": "1",
            "RUNYARD_RUN_ID": "0193abcd",
            "RUNYARD_ATTEMPT": "2",
            "RUNYARD_DEVICE": "cpu",
            "RUNYARD_CHECKPOINT_DIR": self.checkpoints.name,
        }
        environ.update(kwargs.pop("environ", {}))
        kwargs.setdefault("handle_sigterm", False)
        reporter = runyard_report.Reporter(environ=environ, **kwargs)
        self.reporters.append(reporter)
        return reporter

    def lines(self):
        return parse_lines(read_available(self.read_fd))


class Protocol(PipeCase):
    def test_every_kind_of_line_is_protocol_json(self):
        reporter = self.reporter(interval=0)
        self.assertTrue(reporter.active)
        self.assertFalse(os.get_blocking(self.write_fd), "the pipe must be non-blocking")
        reporter.progress(epoch=2, epochs=10, batch=120, batches=640, loss=0.31,
                          samples=76800, lr=0.001, grad_norm=3)
        self.clock.now += 1.5
        reporter.epoch(2, loss=0.3, accuracy=0.91, val_loss=0.35, val_metric=0.9,
                       lr=0.01)
        Path(self.checkpoints.name, "epoch-2.pt").write_bytes(b"weights")
        reporter.checkpoint("epoch-2.pt", epoch=2, step=1280)
        reporter.checkpoint("epoch-2.pt", epoch=2, step=1300, batch=20)
        reporter.epoch()
        reporter.heartbeat()
        self.assertEqual(self.lines(), [
            {"epoch": 2, "epochs": 10, "batch": 120, "batches": 640, "loss": 0.31,
             "samples": 76800, "lr": 0.001, "grad_norm": 3},
            {"type": "epoch", "epoch": 2, "loss": 0.3, "accuracy": 0.91,
             "val_loss": 0.35, "val_metric": 0.9, "duration_ms": 1500, "lr": 0.01},
            {"type": "checkpoint", "path": "epoch-2.pt", "epoch": 2, "step": 1280},
            {"type": "checkpoint", "path": "epoch-2.pt", "epoch": 2, "step": 1300,
             "batch": 20},
            {"type": "epoch", "duration_ms": 0},
            {"type": "heartbeat"},
        ])
        self.assertEqual((reporter.lines, reporter.dropped), (6, 0))

    def test_values_are_made_json_safe(self):
        class Scalar:
            """A one-element tensor as far as conversion goes."""

            def __init__(self, value):
                self.value = value

            def __float__(self):
                return float(self.value)

        class IntScalar(Scalar):
            def __index__(self):
                return int(self.value)

        reporter = self.reporter(interval=0)
        reporter.progress(epoch=IntScalar(3), batch=4.0, batches=2.5, loss=math.nan,
                          samples=True, up=math.inf, down=-math.inf, t=Scalar(0.25),
                          name="text", type=7, flag=False)
        reporter.epoch(1, loss=Scalar(math.nan), duration_ms=12.0)
        line, epoch = self.lines()
        # A field that is not a number is left out, never sent as a string; a
        # non-integral count is left out; NaN and infinities are null.
        self.assertEqual(line, {"epoch": 3, "batch": 4, "loss": None, "samples": 1,
                                "up": None, "down": None, "t": 0.25, "flag": 0})
        self.assertEqual(epoch, {"type": "epoch", "epoch": 1, "loss": None,
                                 "duration_ms": 12})

    def test_environment_is_read(self):
        reporter = self.reporter(environ={"RUNYARD_RESUME_FROM": "/ck/epoch-3.pt"})
        self.assertEqual(reporter.run_id, "0193abcd")
        self.assertEqual(reporter.attempt, 2)
        self.assertEqual(reporter.device, "cpu")
        self.assertEqual(reporter.checkpoint_dir, self.checkpoints.name)
        self.assertEqual(reporter.resume_from, "/ck/epoch-3.pt")
        self.assertIsNone(self.reporter().resume_from)

    def test_a_checkpoint_must_exist_before_it_is_reported(self):
        reporter = self.reporter()
        with self.assertRaises(FileNotFoundError):
            reporter.checkpoint("missing.pt", epoch=1)
        absolute = Path(self.checkpoints.name, "sub", "ok.pt")
        absolute.parent.mkdir()
        absolute.write_bytes(b"x")
        reporter.checkpoint(absolute, epoch=1)
        self.assertEqual(self.lines(), [{"type": "checkpoint", "path": str(absolute),
                                         "epoch": 1}])


class Throttling(PipeCase):
    def test_progress_writes_at_most_once_an_interval_with_the_newest_values(self):
        reporter = self.reporter(interval=0.1)
        start = self.clock.now
        reporter.progress(batch=0, loss=1.0)   # the first call writes
        for batch in range(1, 50):              # 49 calls within 98 ms
            self.clock.now = start + batch * 0.002
            reporter.progress(batch=batch, loss=1.0 / (batch + 1))
        self.assertEqual([l["batch"] for l in self.lines()], [0])
        self.clock.now = start + 0.1            # 100 ms after the first line
        reporter.progress(batch=50, loss=0.5)
        self.clock.now = start + 0.15
        reporter.progress(batch=51, loss=0.4)
        self.assertEqual(self.lines(), [{"batch": 50, "loss": 0.5}])
        self.assertEqual(reporter.lines, 2)

    def test_each_call_replaces_the_previous_values_whole(self):
        reporter = self.reporter(interval=0.1)
        reporter.progress(epoch=0, epochs=5, batch=0)
        self.clock.now += 0.01
        reporter.progress(batch=1, extra=2.0)
        self.clock.now += 0.01
        reporter.progress(batch=2)
        reporter.close()
        self.assertEqual(self.lines(), [{"epoch": 0, "epochs": 5, "batch": 0},
                                        {"batch": 2}])

    def test_epoch_and_checkpoint_lines_go_at_once_after_the_newest_progress(self):
        reporter = self.reporter(interval=10)
        reporter.progress(epoch=0, batch=0)
        self.clock.now += 0.01
        reporter.progress(epoch=0, batch=9, loss=0.7)
        self.clock.now += 0.01
        reporter.epoch(0, loss=0.8)
        Path(self.checkpoints.name, "e0").write_bytes(b"")
        reporter.checkpoint("e0", epoch=0)
        self.clock.now += 0.01
        reporter.progress(epoch=1, batch=0)
        reporter.checkpoint("e0", epoch=1)
        lines = self.lines()
        self.assertEqual([l.get("type", "progress") for l in lines],
                         ["progress", "progress", "epoch", "checkpoint", "progress",
                          "checkpoint"])
        self.assertEqual(lines[1], {"epoch": 0, "batch": 9, "loss": 0.7})
        self.assertEqual(lines[4], {"epoch": 1, "batch": 0})
        # Nothing newer left to send: the epoch line did not repeat old progress.
        reporter.close()
        self.assertEqual(self.lines(), [])

    def test_epoch_duration_defaults_to_the_time_since_the_last_epoch(self):
        reporter = self.reporter()
        self.clock.now += 2.0
        reporter.epoch(0)
        self.clock.now += 0.25
        reporter.epoch(1)
        self.assertEqual([l["duration_ms"] for l in self.lines()], [2000, 250])

    def test_close_sends_the_newest_progress_and_stops_reporting(self):
        reporter = self.reporter(interval=10)
        reporter.progress(batch=0)
        self.clock.now += 1
        reporter.progress(batch=7)
        reporter.close()
        reporter.progress(batch=8)
        reporter.epoch(1)
        reporter.heartbeat()
        self.assertEqual(self.lines(), [{"batch": 0}, {"batch": 7}])
        self.assertFalse(reporter.active)


class FullPipe(PipeCase):
    def setUp(self):
        super().setUp()
        # A write that blocks would hang the suite: fail it instead.
        def blocked(signum, frame):
            raise AssertionError("a reporter call blocked on a full pipe")
        self._previous_alarm = signal.signal(signal.SIGALRM, blocked)
        signal.alarm(20)

    def tearDown(self):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._previous_alarm)
        super().tearDown()

    def test_a_full_pipe_drops_progress_queues_epochs_and_never_garbles(self):
        reporter = self.reporter(interval=0)
        # Lines of ~10 KiB: more than PIPE_BUF, so the kernel may take part of one.
        wide = {"m%04d" % i: float(i) for i in range(600)}
        attempts = 0
        for batch in range(200):
            reporter.progress(batch=batch, **wide)
            attempts += 1
        self.assertGreater(reporter.dropped, 0, "the pipe (64 KiB) must have filled")
        for epoch in range(100):
            reporter.epoch(epoch, loss=0.5)
            attempts += 1
        reporter.heartbeat()  # dropped: the queue still waits
        attempts += 1
        queued = len(reporter._queue)
        self.assertGreater(queued, 100 - 1, "epoch lines wait for room, not dropped")

        reader = LineReader(self.read_fd)
        received = reader.lines()
        reporter.heartbeat()  # room again: the queue goes first, then this line
        attempts += 1
        received += reader.lines()
        reporter.close()
        received += reader.lines()
        self.assertEqual(reader.tail, b"", "the line cut by a partial write was completed")

        epochs = [l["epoch"] for l in received if l.get("type") == "epoch"]
        self.assertEqual(epochs, list(range(100)), "every epoch line, in order")
        batches = [l["batch"] for l in received if "batch" in l]
        self.assertEqual(batches, sorted(batches))
        self.assertEqual(received[-1], {"type": "heartbeat"})
        self.assertEqual(len(received), reporter.lines)
        self.assertEqual(reporter.lines + reporter.dropped, attempts)

    def test_a_full_queue_drops_the_newest_epoch_lines(self):
        reporter = self.reporter(interval=0)
        # Lines under PIPE_BUF: the kernel takes each whole or not at all.
        filler = {"m%04d" % i: 1.5 for i in range(200)}
        while reporter.dropped == 0:
            reporter.progress(**filler)
        while reporter.dropped == 1:  # the last bytes of room, with short lines
            reporter.progress(batch=1)
        dropped = reporter.dropped
        for epoch in range(runyard_report.MAX_QUEUED_LINES + 10):
            reporter.epoch(epoch)
        self.assertEqual(reporter.dropped - dropped, 10)
        reporter.close(timeout=0)
        self.assertEqual(reporter.dropped - dropped, 10 + runyard_report.MAX_QUEUED_LINES)

    def test_a_pipe_closed_by_the_server_is_never_an_error(self):
        reporter = self.reporter(interval=0)
        os.close(self.read_fd)
        self.read_fd = os.open(os.devnull, os.O_RDONLY)  # for tearDown to close
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            reporter.progress(batch=1)
            reporter.epoch(1)
            reporter.heartbeat()
        self.assertIn("progress pipe closed", stderr.getvalue())
        self.assertFalse(reporter.active)
        self.assertEqual((reporter.lines, reporter.dropped), (0, 1))

    def test_an_oversized_line_is_dropped(self):
        reporter = self.reporter(interval=0)
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            reporter.progress(**{"metric_with_a_long_name_%05d" % i: 0.5
                                 for i in range(3000)})
            reporter.progress(batch=1)
        self.assertIn("over the protocol's 64 KiB", stderr.getvalue())
        self.assertEqual(self.lines(), [{"batch": 1}])
        self.assertEqual(reporter.dropped, 1)


class Imports(unittest.TestCase):
    """Training scripts import the helper: it must not pull in the HTTP client."""

    def test_the_old_name_is_the_same_module_and_neither_imports_an_http_library(self):
        script = textwrap.dedent("""
            import sys
            import runyard_report
            from runyard import report
            import runyard
            print(runyard_report is report, runyard_report.Reporter is report.Reporter,
                  sorted(m for m in ("httpx", "runyard.client", "tqdm") if m in sys.modules))
        """)
        out = run_python(script, {})
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "True True []")


class OutsideRunyard(unittest.TestCase):
    def test_without_the_variable_every_call_does_nothing(self):
        reporter = runyard_report.Reporter(environ={}, handle_sigterm=False)
        self.assertFalse(reporter.active)
        for name in ("run_id", "attempt", "device", "checkpoint_dir", "resume_from"):
            self.assertIsNone(getattr(reporter, name), name)
        reporter.progress(epoch=0, batch=0, loss=1.0)
        reporter.epoch(0, loss=1.0)
        reporter.checkpoint("not-written.pt", epoch=0)  # not checked: nothing reads it
        reporter.heartbeat()
        with reporter:
            pass
        self.assertEqual((reporter.lines, reporter.dropped), (0, 0))

    def test_resume_from_is_read_outside_runyard_too(self):
        reporter = runyard_report.Reporter(environ={"RUNYARD_RESUME_FROM": "/x/ck.pt"},
                                           handle_sigterm=False)
        self.assertEqual(reporter.resume_from, "/x/ck.pt")
        reporter.close()

    def test_a_descriptor_that_is_not_open_warns_and_does_nothing(self):
        script = textwrap.dedent("""
            import runyard_report
            r = runyard_report.Reporter()
            r.progress(batch=1)
            r.epoch(1)
            print(r.active, r.lines, r.dropped)
        """)
        out = run_python(script, {"RUNYARD_PROGRESS_FD": "987"})
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "False 0 0")
        self.assertIn("RUNYARD_PROGRESS_FD='987' is not an open file descriptor", out.stderr)


class Sigterm(unittest.TestCase):
    def setUp(self):
        self.previous = signal.getsignal(signal.SIGTERM)

    def tearDown(self):
        signal.signal(signal.SIGTERM, self.previous)

    def test_sigterm_sets_should_stop_and_chains_the_previous_handler(self):
        seen = []
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        earlier = signal.getsignal(signal.SIGTERM)
        reporter = runyard_report.Reporter(environ={})
        self.assertFalse(reporter.should_stop)
        os.kill(os.getpid(), signal.SIGTERM)
        self.assertTrue(reporter.should_stop)
        self.assertEqual(seen, [signal.SIGTERM])
        os.kill(os.getpid(), signal.SIGTERM)  # a handler of the user's: no default kill
        self.assertEqual(seen, [signal.SIGTERM, signal.SIGTERM])
        reporter.close()
        self.assertIs(signal.getsignal(signal.SIGTERM), earlier)

    def test_without_handle_sigterm_nothing_is_installed(self):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        reporter = runyard_report.Reporter(environ={}, handle_sigterm=False)
        self.assertEqual(signal.getsignal(signal.SIGTERM), signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGTERM)
        self.assertFalse(reporter.should_stop)
        reporter.close()

    def test_the_first_sigterm_lets_the_script_finish_and_a_second_ends_it(self):
        script = textwrap.dedent("""
            import os, signal, sys
            import runyard_report
            r = runyard_report.Reporter()
            os.kill(os.getpid(), signal.SIGTERM)
            print("stop requested:", r.should_stop, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            print("still running", flush=True)
        """)
        out = run_python(script, {})
        self.assertEqual(out.stdout, "stop requested: True\n")
        self.assertEqual(out.returncode, -signal.SIGTERM, out.stderr)

    def test_a_forked_child_keeps_the_default_action(self):
        script = textwrap.dedent("""
            import os, signal, sys
            import runyard_report
            r = runyard_report.Reporter()
            pid = os.fork()
            if pid == 0:
                os.kill(os.getpid(), signal.SIGTERM)
                os._exit(3)  # not reached: the default action ends the child
            _, status = os.waitpid(pid, 0)
            print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM,
                  r.should_stop)
        """)
        out = run_python(script, {})
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "True False")


class InheritedDescriptor(unittest.TestCase):
    """The way runyard runs a command: the pipe is inherited, its number in the
    environment."""

    def test_the_newest_progress_is_written_at_exit_without_close(self):
        read_fd, write_fd = os.pipe()
        try:
            script = textwrap.dedent("""
                import runyard_report
                r = runyard_report.Reporter(interval=3600)
                for batch in range(1000):
                    r.progress(epoch=0, batch=batch, batches=1000, loss=1.0 / (batch + 1))
            """)
            out = run_python(script, {"RUNYARD_PROGRESS_FD": str(write_fd),
                                      "RUNYARD_PROTOCOL": "1"}, pass_fds=(write_fd,))
            self.assertEqual(out.returncode, 0, out.stderr)
            os.close(write_fd)
            write_fd = None
            with os.fdopen(read_fd, "rb") as pipe:
                read_fd = None
                lines = parse_lines(pipe.read())
        finally:
            for fd in (read_fd, write_fd):
                if fd is not None:
                    os.close(fd)
        self.assertEqual([l["batch"] for l in lines], [0, 999])
        self.assertEqual(lines[1]["loss"], 0.001)


class AtomicPath(unittest.TestCase):
    def test_the_file_appears_whole_or_not_at_all(self):
        with tempfile.TemporaryDirectory() as directory:
            final = Path(directory, "ck", "epoch-1.pt")
            with runyard_report.atomic_path(final) as tmp:
                self.assertFalse(final.exists())
                self.assertEqual(Path(tmp).parent, final.parent)
                Path(tmp).write_bytes(b"first")
            self.assertEqual(final.read_bytes(), b"first")
            with self.assertRaises(RuntimeError):
                with runyard_report.atomic_path(final) as tmp:
                    Path(tmp).write_bytes(b"half")
                    raise RuntimeError("crashed mid-save")
            self.assertEqual(final.read_bytes(), b"first")
            self.assertEqual(sorted(p.name for p in final.parent.iterdir()), ["epoch-1.pt"])


class ShellExample(unittest.TestCase):
    """examples/command/train.sh speaks the same protocol with printf."""

    def run_shell(self, extra_env, stop_after_lines=None):
        read_fd, write_fd = os.pipe()
        checkpoints = tempfile.mkdtemp()
        env = dict(os.environ, RUNYARD_PROGRESS_FD=str(write_fd), RUNYARD_PROTOCOL="1",
                   RUNYARD_CHECKPOINT_DIR=checkpoints, EPOCHS="3", BATCHES="4",
                   BATCH_SECONDS="0.01")
        env.update(extra_env)
        child = subprocess.Popen(["bash", str(EXAMPLES / "train.sh")], env=env,
                                 pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True)
        os.close(write_fd)
        lines = []
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                lines.append(json.loads(raw))
                if stop_after_lines is not None and len(lines) == stop_after_lines:
                    os.killpg(child.pid, signal.SIGTERM)  # as runyard stops a command
        _, stderr = child.communicate(timeout=60)
        return child.returncode, lines, checkpoints, stderr.decode()

    def test_train_sh_reports_progress_epochs_and_checkpoints(self):
        code, lines, checkpoints, stderr = self.run_shell({})
        self.assertEqual(code, 0, stderr)
        kinds = [l.get("type", "progress") for l in lines]
        self.assertEqual(kinds.count("epoch"), 3)
        self.assertEqual(kinds.count("checkpoint"), 3)
        self.assertEqual(kinds.count("progress"), 12)
        self.assertIn("heartbeat", kinds)
        last = lines[-1]
        self.assertEqual(last["type"], "checkpoint")
        self.assertTrue(Path(checkpoints, last["path"]).is_file())

    def test_train_sh_checkpoints_on_sigterm_and_resumes(self):
        # Stopped after its first epoch's seven lines, in a second epoch of 1.2 s.
        code, lines, checkpoints, stderr = self.run_shell({"BATCH_SECONDS": "0.3"},
                                                          stop_after_lines=7)
        self.assertEqual(code, 0, stderr)
        done = [l["epoch"] for l in lines if l.get("type") == "epoch"]
        self.assertEqual(done, [1], "stopped in the second epoch")
        checkpoint = lines[-1]
        self.assertEqual(checkpoint["type"], "checkpoint", "the last line saves the state")
        self.assertEqual(checkpoint["epoch"], 1)
        resume = str(Path(checkpoints, checkpoint["path"]))
        code, lines, _, stderr = self.run_shell({"RUNYARD_RESUME_FROM": resume})
        self.assertEqual(code, 0, stderr)
        epochs = [l["epoch"] for l in lines if l.get("type") == "epoch"]
        self.assertEqual(epochs, [2, 3])


def python_with_torch():
    """This interpreter if it has torch, else the bench's virtual environment's
    (scripts/setup-mlflow.sh), else None."""
    candidates = [sys.executable, str(ROOT / "target" / "bench-venv" / "bin" / "python")]
    for python in candidates:
        if os.path.exists(python) and subprocess.run(
                [python, "-c", "import torch"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL).returncode == 0:
            return python
    return None


TORCH_PYTHON = python_with_torch()


@unittest.skipIf(TORCH_PYTHON is None, "no Python with torch here")
class TorchExample(unittest.TestCase):
    """examples/command/train_torch.py: stopped by SIGTERM mid-epoch, resumed."""

    def run_script(self, checkpoints, extra_env, stop_in_epoch=None):
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, RUNYARD_PROGRESS_FD=str(write_fd), RUNYARD_PROTOCOL="1",
                   RUNYARD_CHECKPOINT_DIR=checkpoints, RUNYARD_DEVICE="cpu",
                   OMP_NUM_THREADS="1")
        env.update(extra_env)
        child = subprocess.Popen(
            [TORCH_PYTHON, str(EXAMPLES / "train_torch.py"), "--epochs", "2",
             "--samples", "50000"],
            env=env, pass_fds=(write_fd,), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True)
        os.close(write_fd)
        lines = []
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                line = json.loads(raw)
                lines.append(line)
                if stop_in_epoch is not None and line.get("epoch") == stop_in_epoch \
                        and "type" not in line:
                    os.killpg(child.pid, signal.SIGTERM)
                    stop_in_epoch = None
        stdout, stderr = child.communicate(timeout=300)
        self.assertEqual(child.returncode, 0, stderr.decode())
        return lines, stdout.decode()

    def test_train_torch_saves_mid_epoch_on_sigterm_and_resumes_there(self):
        with tempfile.TemporaryDirectory() as checkpoints:
            lines, stdout = self.run_script(checkpoints, {}, stop_in_epoch=2)
            self.assertIn("SIGTERM: saved at epoch 2", stdout)
            self.assertEqual([l["epoch"] for l in lines if l.get("type") == "epoch"], [1])
            saved = lines[-1]
            self.assertEqual(saved["type"], "checkpoint")
            self.assertEqual(saved["epoch"], 1, "one epoch fully done")
            self.assertGreater(saved["batch"], 0, "saved mid-epoch")
            self.assertTrue(os.path.isfile(saved["path"]))

            lines, stdout = self.run_script(checkpoints,
                                            {"RUNYARD_RESUME_FROM": saved["path"]})
            self.assertIn("resumed from", stdout)
            first = lines[0]
            self.assertEqual(first["epoch"], 2)
            self.assertEqual(first["batch"], saved["batch"] + 1, "the very next batch")
            self.assertEqual([l["epoch"] for l in lines if l.get("type") == "epoch"], [2])
            self.assertEqual(lines[-1]["type"], "checkpoint")
            self.assertEqual(lines[-1]["epoch"], 2)


def run_python(script, env, pass_fds=()):
    """Runs ``script`` in a fresh interpreter that imports this directory's module."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(HERE)
    return subprocess.run([sys.executable, "-c", script], env=full_env, pass_fds=pass_fds,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


if __name__ == "__main__":
    unittest.main()
