"""Report a training command's progress to runyard (progress protocol v1).

A runyard *command run* starts your script as a child process and hands it the write
end of a pipe in ``RUNYARD_PROGRESS_FD``. This module writes the protocol on that
pipe. It is one file with no dependencies beyond the standard library (Python 3.8
or newer), and importing it imports nothing else of the package (no HTTP library):
``from runyard import report``, or copy this file into your project. The old
``import runyard_report`` (``python/runyard_report.py``) is the same module.

    from runyard import report

    with report.Reporter() as reporter:
        start = load(reporter.resume_from) if reporter.resume_from else 1
        for epoch in range(start, epochs + 1):             # from 1
            for batch, (x, y) in enumerate(loader, 1):      # batches done
                loss = step(x, y)
                reporter.progress(epoch=epoch, epochs=epochs, batch=batch,
                                  batches=len(loader), loss=loss.detach())
                if reporter.should_stop:      # SIGTERM: cancel or pause
                    save_and_report_checkpoint(reporter)
                    sys.exit(0)
            reporter.epoch(epoch, loss=mean_loss, val_loss=val_loss)
            save_and_report_checkpoint(reporter)

Outside runyard (no ``RUNYARD_PROGRESS_FD``) the same calls do nothing, so the
script runs unchanged on a laptop.

Protocol v1
-----------
The server sets, in the command's environment:

``RUNYARD_PROTOCOL``
    ``1``, this protocol's version (:data:`PROTOCOL_VERSION`).
``RUNYARD_PROGRESS_FD``
    the pipe's write end (normally 3).
``RUNYARD_RUN_ID``, ``RUNYARD_ATTEMPT``
    the run and its attempt number.
``RUNYARD_DEVICE``, ``CUDA_VISIBLE_DEVICES``
    the slot's device, ``cpu`` or ``cuda:N``.
``RUNYARD_CHECKPOINT_DIR``
    a directory for the run's checkpoints.
``RUNYARD_RESUME_FROM``
    the last reported checkpoint when the command is resumed (after a pause, a
    retry or a server crash); unset on a fresh start.

The command writes one UTF-8 JSON object per line, at most 64 KiB a line:

- progress (``"type"`` absent or ``"progress"``): ``epoch`` (in progress, from 1),
  ``epochs``, ``batch`` (done in the epoch), ``batches``, ``loss``, ``samples``, and
  any other numeric field as a free-form metric;
- ``{"type": "epoch", "epoch", "loss", "accuracy", "val_loss", "val_metric",
  "duration_ms"}``: an epoch's summary;
- ``{"type": "checkpoint", "path", "epoch", "step", "batch"}``: a checkpoint written
  completely (the path absolute, or relative to ``RUNYARD_CHECKPOINT_DIR``; ``epoch``
  the epochs done);
- ``{"type": "heartbeat"}``: alive, without progress.

The server's own description of the protocol, with every rule it checks, is the
documentation of ``src/train/protocol.rs`` and the README's "Command runs".

The server counts bad lines and never fails a run over one; it drops lines beyond
1,000 a second. On cancel and on pause it sends SIGTERM to the command's process
group, then SIGKILL after the spec's grace period (10 s by default). A command that
is paused should save a checkpoint, report it and exit with status 0; it is started
again later with ``RUNYARD_RESUME_FROM`` set. Exit status 0 completes the run,
anything else fails it (and it is retried as its spec says).

What reporting costs
--------------------
runyard *pulls* progress: the server samples the newest values a few times a second,
so a script need not send every batch. :meth:`Reporter.progress` only stores its
arguments and reads a monotonic clock; it writes a line only when ``interval``
(100 ms by default) has passed since the last one. Values are turned into JSON only
then, so passing a tensor (``loss=loss.detach()``) instead of ``loss.item()`` also
saves the device synchronisation on the batches whose line is not written. Epoch and
checkpoint lines are written at once, after the newest progress. The pipe is
non-blocking: when it is full (the server is not reading) a progress or heartbeat
line is dropped and counted in :attr:`Reporter.dropped`, and epoch and checkpoint
lines wait in a bounded queue that every later write tries first. Training never
waits on the server.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import json
import math
import operator
import os
import select
import signal
import sys
import tempfile
import threading
import time
from types import FrameType
from typing import (Any, Callable, Deque, Dict, Iterator, Literal, Mapping, Optional, Set, Tuple,
                    Union)

__all__ = ["PROTOCOL_VERSION", "Reporter", "atomic_path"]

PROTOCOL_VERSION = 1
"""The version of the progress protocol this module writes."""

MAX_LINE_BYTES = 64 * 1024
"""The longest line the server reads, newline included; longer lines are dropped."""

MAX_QUEUED_LINES = 1024
"""Epoch and checkpoint lines kept while the pipe is full; more are dropped."""

# Bound once: progress() reads the clock on every call.
_monotonic = time.monotonic

_INT_FIELDS = ("epoch", "epochs", "batch", "batches")
_SKIP = object()

# What signal.getsignal answers, and the values progress() keeps until it writes them.
_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]
_Pending = Tuple[Any, Any, Any, Any, Any, Any, Dict[str, Any]]


def _integer(value: Any) -> Any:
    """``value`` as a JSON integer, or ``_SKIP`` when it is not a whole number."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return int(value)
    try:
        return operator.index(value)  # numpy integers, one-element integer tensors
    except TypeError:
        pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _SKIP
    if math.isfinite(number) and number.is_integer():
        return int(number)
    return _SKIP


def _number(value: Any) -> Any:
    """``value`` as a JSON number; ``None`` (null) for NaN and infinities;
    ``_SKIP`` when it is not a number at all."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    try:
        number = float(value)  # numpy scalars, one-element tensors
    except (TypeError, ValueError):
        return _SKIP
    return number if math.isfinite(number) else None


def _put(line: Dict[str, Any], key: str, value: Any, convert: Callable[[Any], Any]) -> None:
    if value is None:
        return
    value = convert(value)
    if value is not _SKIP:
        line[key] = value


class Reporter:
    """Writes progress protocol v1 to ``RUNYARD_PROGRESS_FD``.

    Outside runyard (the variable unset) every method does nothing and the properties
    read what the environment has, so a script runs unchanged. Creating a reporter
    also installs a SIGTERM handler (see :attr:`should_stop`), unless
    ``handle_sigterm`` is false. Use it as a context manager, or call :meth:`close`;
    the newest progress is also written when the interpreter exits.

    :param interval: seconds between two progress lines (``progress()`` calls in
        between only replace the values to send). 0 writes every call.
    :param handle_sigterm: install the SIGTERM handler behind :attr:`should_stop`.
    :param environ: the environment to read (``os.environ`` by default).
    """

    def __init__(self, interval: float = 0.1, handle_sigterm: bool = True,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        self._env: Mapping[str, str] = env
        self._interval = math.inf
        self._last = -math.inf
        self._pending: Optional[_Pending] = None
        self._fd: Optional[int] = None
        self._lock = threading.Lock()
        self._queue: Deque[bytes] = collections.deque()
        self._epoch_started = _monotonic()
        self._stop = False
        self._previous_handler: _Handler = None
        self._handler: _Handler = None
        self._closed = False
        self._warned: Set[str] = set()
        self._pid = os.getpid()
        self.lines = 0
        """Lines written whole to the pipe."""
        self.dropped = 0
        """Lines not delivered: the pipe was full or gone, or the line too long."""

        fd = env.get("RUNYARD_PROGRESS_FD")
        if fd:
            self._open(fd)
            if self._fd is not None:
                self._interval = max(0.0, float(interval))
        if handle_sigterm:
            self._install_sigterm()
        atexit.register(self.close)

    def _open(self, text: str) -> None:
        try:
            fd = int(text)
            os.fstat(fd)
            os.set_blocking(fd, False)
        except (ValueError, OSError) as e:
            self._warn_once(
                "fd",
                "RUNYARD_PROGRESS_FD=%r is not an open file descriptor (%s); progress "
                "is not reported (was the command started through a wrapper that "
                "closes inherited descriptors?)" % (text, e),
            )
            return
        self._fd = fd

    # ---- what the environment says ------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether lines go to a runyard server (``RUNYARD_PROGRESS_FD`` is usable)."""
        return self._fd is not None

    @property
    def run_id(self) -> Optional[str]:
        """The run's id (``RUNYARD_RUN_ID``), or ``None`` outside runyard."""
        return self._env.get("RUNYARD_RUN_ID") or None

    @property
    def attempt(self) -> Optional[int]:
        """The attempt number (``RUNYARD_ATTEMPT``), or ``None`` outside runyard."""
        text = self._env.get("RUNYARD_ATTEMPT")
        try:
            return int(text) if text else None
        except ValueError:
            return None

    @property
    def device(self) -> Optional[str]:
        """The slot's device, ``"cpu"`` or ``"cuda:N"`` (``RUNYARD_DEVICE``), or
        ``None`` outside runyard: choose one yourself then. ``CUDA_VISIBLE_DEVICES``
        shows the process that GPU alone, so in PyTorch it is ``"cuda"`` (``cuda:0``),
        whatever N is."""
        return self._env.get("RUNYARD_DEVICE") or None

    @property
    def checkpoint_dir(self) -> Optional[str]:
        """The directory for checkpoints (``RUNYARD_CHECKPOINT_DIR``), or ``None``
        outside runyard: choose one yourself then."""
        return self._env.get("RUNYARD_CHECKPOINT_DIR") or None

    @property
    def resume_from(self) -> Optional[str]:
        """The checkpoint to resume from (``RUNYARD_RESUME_FROM``), or ``None`` on a
        fresh start."""
        return self._env.get("RUNYARD_RESUME_FROM") or None

    @property
    def should_stop(self) -> bool:
        """True once the process got SIGTERM: runyard cancels or pauses the run.

        Save a checkpoint, report it with :meth:`checkpoint` and exit with status 0
        before the grace period ends (10 s by default), after which runyard sends
        SIGKILL. A second SIGTERM, when SIGTERM had its default action before, ends
        the process as that default would, so a script that never looks at this flag
        can still be stopped by hand.
        """
        return self._stop

    # ---- reporting ---------------------------------------------------------------

    def progress(self, epoch: Any = None, epochs: Any = None, batch: Any = None,
                 batches: Any = None, loss: Any = None, samples: Any = None,
                 **metrics: Any) -> None:
        """Reports where training is: call it every batch, it is cheap.

        ``epoch`` is the epoch in progress, counted from 1 as in runyard's own runs;
        ``batch`` the batches finished in it; ``epochs`` and ``batches`` the totals
        (of the run, of an epoch); ``samples`` the examples seen so far. Any other
        keyword is a free-form numeric metric (the server keeps 32 names of at most
        64 bytes). Values may be Python numbers, numpy scalars or one-element
        tensors; NaN and infinities are sent as null. A line with the newest call's
        values is written when ``interval`` has passed since the last line, before
        the next epoch or checkpoint line, or at :meth:`close`; it holds that call's
        fields only, and the server keeps its last value of a field a line leaves
        out.
        """
        self._pending = (epoch, epochs, batch, batches, loss, samples, metrics)
        now = _monotonic()
        if now - self._last >= self._interval:
            self._send_progress(now)

    def epoch(self, epoch: Any = None, loss: Any = None, accuracy: Any = None,
              val_loss: Any = None, val_metric: Any = None, duration_ms: Any = None,
              **metrics: Any) -> None:
        """Reports a finished epoch's summary, at once (after the newest progress).

        ``epoch`` is the finished epoch's number, from 1, and must be the one after
        the previous summary's (or after the resumed checkpoint's); left out, the
        server takes that one. ``accuracy`` is the training accuracy, ``val_metric``
        the validation accuracy (or whatever the script validates with); any other
        keyword is a numeric metric. ``duration_ms`` defaults to the time since the
        previous epoch line (or since the reporter was created).
        """
        now = _monotonic()
        if duration_ms is None:
            duration_ms = int(round((now - self._epoch_started) * 1000))
        self._epoch_started = now
        if self._fd is None:
            return
        self._flush_progress(now)
        line = {"type": "epoch"}
        _put(line, "epoch", epoch, _integer)
        _put(line, "loss", loss, _number)
        _put(line, "accuracy", accuracy, _number)
        _put(line, "val_loss", val_loss, _number)
        _put(line, "val_metric", val_metric, _number)
        _put(line, "duration_ms", duration_ms, _integer)
        for key, value in metrics.items():
            if key != "type":
                _put(line, key, value, _number)
        self._emit(line, keep=True)

    def checkpoint(self, path: Union[str, os.PathLike[str]], epoch: Any = None,
                   step: Any = None, batch: Any = None) -> None:
        """Reports a checkpoint, at once (after the newest progress).

        Report a file only once it is written completely (see :func:`atomic_path`),
        and an epoch's summary before the checkpoint taken at its end: runyard
        resumes from the newest reported one. ``path`` is absolute or relative to
        :attr:`checkpoint_dir`, and must be inside the run's directory (the
        checkpoint directory is). ``epoch`` is the epochs fully done, ``batch`` the
        batches done in the next one (for a checkpoint taken mid-epoch), ``step`` a
        number that grows with every checkpoint (optimizer steps, say). A path that
        does not exist is a ``FileNotFoundError`` here rather than a failed resume.
        """
        path = os.fspath(path)
        if self._fd is None:
            return
        full = path
        if not os.path.isabs(path) and self.checkpoint_dir is not None:
            full = os.path.join(self.checkpoint_dir, path)
        if not os.path.exists(full):
            raise FileNotFoundError(errno.ENOENT, "checkpoint not written", full)
        self._flush_progress(_monotonic())
        line = {"type": "checkpoint", "path": path}
        _put(line, "epoch", epoch, _integer)
        _put(line, "step", step, _integer)
        _put(line, "batch", batch, _integer)
        self._emit(line, keep=True)

    def heartbeat(self) -> None:
        """Says the command is alive without progress (in a long evaluation, say), so
        runyard does not take it for stalled. Dropped when the pipe is full."""
        if self._fd is not None:
            self._emit({"type": "heartbeat"}, keep=False)

    def close(self, timeout: float = 2.0) -> None:
        """Writes the newest progress and what is queued, waiting at most ``timeout``
        seconds for room in the pipe, and restores the previous SIGTERM handler.
        Reporting after this does nothing. Called at interpreter exit too."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._fd is not None:
            self._flush_progress(_monotonic())
            deadline = _monotonic() + timeout
            with self._lock:
                while self._queue and self._fd is not None:
                    left = deadline - _monotonic()
                    if left <= 0:
                        break
                    try:
                        select.select([], [self._fd], [], left)
                    except (OSError, ValueError):
                        break
                    self._drain()
                self.dropped += len(self._queue)
                self._queue.clear()
            self._fd = None
        self._interval = math.inf
        self._restore_sigterm()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    # ---- lines ---------------------------------------------------------------------

    def _send_progress(self, now: float) -> None:
        self._last = now
        pending = self._pending
        if pending is None or self._fd is None:
            return
        epoch, epochs, batch, batches, loss, samples, metrics = pending
        line: Dict[str, Any] = {}
        for key, value in zip(_INT_FIELDS, (epoch, epochs, batch, batches)):
            _put(line, key, value, _integer)
        _put(line, "loss", loss, _number)
        _put(line, "samples", samples, _integer)
        for key, value in metrics.items():
            if key != "type":
                _put(line, key, value, _number)
        # Sent or dropped, these values are done with: a dropped line is replaced by
        # the next call's, never retried (the pipe is full; newer values will come).
        self._pending = None
        self._emit(line, keep=False)

    def _flush_progress(self, now: float) -> None:
        if self._pending is not None:
            self._send_progress(now)

    def _emit(self, line: Dict[str, Any], keep: bool) -> bool:
        """Writes one line; queues it (``keep``) or drops it when the pipe is full.
        Returns whether it went out (or is on its way, after a partial write)."""
        data = (json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n").encode()
        if len(data) > MAX_LINE_BYTES:
            self.dropped += 1
            self._warn_once("long", "a line of %d bytes is over the protocol's 64 KiB; "
                            "dropped" % len(data))
            return False
        with self._lock:
            if self._fd is None:
                return False
            if self._queue and not self._drain():
                return self._hold(data, keep)
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                return self._hold(data, keep)
            except OSError as e:
                self._lost(e)
                return False
            if written < len(data):
                # The rest must go before any other line, or both would be garbled.
                self._queue.append(data[written:])
            else:
                self.lines += 1
            return True

    def _hold(self, data: bytes, keep: bool) -> bool:
        if keep and len(self._queue) < MAX_QUEUED_LINES:
            self._queue.append(data)
            return True
        self.dropped += 1
        return False

    def _drain(self) -> bool:
        """Writes queued lines while the pipe takes them; whether it emptied."""
        queue = self._queue
        while queue:
            data = queue[0]
            fd = self._fd
            if fd is None:
                return False
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                return False
            except OSError as e:
                self._lost(e)
                return False
            if written < len(data):
                queue[0] = data[written:]
                return False
            queue.popleft()
            self.lines += 1
        return True

    def _lost(self, error: BaseException) -> None:
        """The pipe is gone (the server closed its end): stop writing."""
        self.dropped += 1 + len(self._queue)
        self._queue.clear()
        self._fd = None
        self._interval = math.inf
        self._warn_once("lost", "progress pipe closed (%s); no more progress is "
                        "reported" % error)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            try:
                sys.stderr.write("runyard.report: %s\n" % message)
            except (OSError, ValueError):
                pass

    # ---- SIGTERM -------------------------------------------------------------------

    def _install_sigterm(self) -> None:
        try:
            previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:
            # Not the main thread: Python takes signal handlers there only.
            self._warn_once("signal", "Reporter created outside the main thread: "
                            "should_stop does not see SIGTERM")
            return
        self._previous_handler = previous
        self._handler = self._on_sigterm

    def _on_sigterm(self, signum: int, frame: Optional[FrameType]) -> None:
        previous = self._previous_handler
        if os.getpid() != self._pid:
            # A forked child (a data-loader worker): it was not asked to save
            # anything, so SIGTERM does to it what it did before.
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if self._stop and (previous is None or previous == signal.SIG_DFL):
            # Asked twice and nobody else handles it: the default action, as before.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self._stop = True
        if callable(previous):
            previous(signum, frame)

    def _restore_sigterm(self) -> None:
        if self._handler is None:
            return
        try:
            if signal.getsignal(signal.SIGTERM) == self._handler:
                previous = self._previous_handler
                signal.signal(signal.SIGTERM,
                              signal.SIG_DFL if previous is None else previous)
        except ValueError:
            pass
        self._handler = None


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike[str]]) -> Iterator[str]:
    """Yields a temporary path beside ``path``; when the block ends without an
    exception the file written there is synced and renamed to ``path``, so ``path``
    is never seen half-written (a crash leaves the previous file or nothing).

        with report.atomic_path(final) as tmp:
            torch.save(state, tmp)
        reporter.checkpoint(final, epoch=epoch)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
