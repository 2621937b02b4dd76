"""A client of runyard's REST API (``/api/v1``): runs, their events, streams, metrics,
artifacts and logs, and sweeps.

Why httpx
---------
The client speaks HTTP through one library, httpx, because it has what this API
needs and nothing to add on top: one ``httpx.Client`` per :class:`Client` keeps a pool
of keep-alive connections (a ``wait`` or a listing of many pages costs no new TCP
handshake per call); responses can be streamed line by line, which is what
server-sent events need, with a read timeout that notices a dead connection; every
request has connect/read/write timeouts; and it is maintained and ships type hints.
requests would do the first and third but has no per-phase timeouts, no type hints of
its own, and needs care to read a stream without buffering; urllib would mean
writing the pool. httpx is imported only with this module, never by
:mod:`runyard.report`.

Streams
-------
:meth:`Client.stream`, :meth:`Client.stream_all`, :meth:`Client.sweep_stream` and
``logs(..., follow=True)`` are generators over the server's event streams. When a
connection drops (a cut, a proxy's timeout, a server restart) they connect again with
``Last-Event-ID`` set to the last event they yielded, and the server goes on right
after it: no event is skipped and none comes twice (lifecycle events carry their
journal sequence number as id, and an id at or below the last one yielded is dropped
besides). Reconnecting gives up, raising :class:`~runyard.errors.StreamError`, only
after ``reconnect_timeout`` seconds of failures in a row. A run's or a sweep's stream
ends after its end (the run's terminal event and slot release, ``SweepCompleted`` or
``SweepCancelled``); the all-runs stream never ends: stop reading it when you are
done, and close the generator (``break`` out of a ``for`` does) to close its
connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)
from urllib.parse import quote

import httpx

from . import __version__
from ._sse import Parser, RawEvent
from .errors import (
    IntegrityError,
    ProblemError,
    ServiceUnavailable,
    StreamError,
    problem_error,
)

__all__ = ["Client", "Event", "Run", "Sweep", "RunRef"]

Run = Dict[str, Any]
"""A run's view, as ``GET /api/v1/runs/{id}`` answers it (``id``, ``name``, ``state``,
``spec``, ``progress``, ``metrics``, ``epochs``, ``artifacts``, …; see the README)."""

Sweep = Dict[str, Any]
"""A sweep's view, as ``GET /api/v1/sweeps/{id}`` answers it."""

RunRef = Union[str, Mapping[str, Any]]
"""A run's id, or its view (any mapping with an ``"id"``, such as what
:meth:`Client.submit` answers)."""

PathLike = Union[str, "os.PathLike[str]"]

TERMINAL_RUN_STATES = frozenset({"completed", "failed", "cancelled"})
"""The states a run never leaves."""

TERMINAL_RUN_EVENTS = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})
"""The events that end a run (its stream still sends the slot's release after one)."""

ENDED_SWEEP_STATES = frozenset({"completed", "cancelled"})
"""The states a sweep never leaves."""

SWEEP_END_EVENTS = frozenset({"SweepCompleted", "SweepCancelled"})
"""The events that end a sweep's stream."""

SPEC_TYPES = {
    ".json": "application/json",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
}
"""A spec file's media type, by its suffix."""

_EVENTS_PAGE = 10_000  # the server's most events per answer


@dataclass(frozen=True)
class Event:
    """One event of a stream.

    ``event`` is its name: a journaled lifecycle event's type (``"RunStarted"``,
    ``"EpochCompleted"``, ``"TrialPromoted"``, …) or ``"progress"``. ``data`` is its
    JSON: for a lifecycle event the journal's envelope ``{seq, at, run_id, type,
    data}``, for ``progress`` the newest sample ``{run_id, epoch, epochs, batch,
    percent, loss, samples_per_sec, eta_secs, …}``. ``id`` is the journal sequence
    number of a lifecycle event, ``None`` for progress.
    """

    event: str
    data: Any
    id: Optional[int] = None

    @property
    def type(self) -> str:
        """The event's name (the same as :attr:`event`)."""
        return self.event


class Client:
    """A runyard server's API, over one pool of keep-alive connections.

    :param url: the server, ``http://127.0.0.1:8080`` (the API is under ``/api/v1``).
    :param token: a bearer token (``runyard token create``), sent as
        ``Authorization: Bearer``; ``None`` for a server without tokens.
    :param timeout: seconds for connecting, and for each read and write of a request
        (not the whole of a stream).
    :param reconnect_timeout: how long a stream keeps trying to reconnect after its
        connection dropped before it raises :class:`~runyard.errors.StreamError`.
    :param stream_read_timeout: the longest silence on a stream before its
        connection is taken for dead and opened again (the server sends a keep-alive
        comment every 15 s by default).
    :param transport: an ``httpx`` transport, for tests or unusual set-ups.

    Use it as a context manager, or call :meth:`close`, to close its connections.
    Every error answer raises a :class:`~runyard.errors.ProblemError` subclass.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        timeout: float = 30.0,
        *,
        reconnect_timeout: float = 60.0,
        stream_read_timeout: float = 60.0,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        headers = {"user-agent": "runyard-python/%s" % __version__}
        if token:
            headers["authorization"] = "Bearer %s" % token
        self.url = url.rstrip("/")
        self.reconnect_timeout = reconnect_timeout
        self.stream_read_timeout = stream_read_timeout
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    # ---- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """Closes the pooled connections."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "runyard.Client(%r)" % self.url

    # ---- runs -----------------------------------------------------------------------

    def submit(
        self,
        spec_or_path: Union[Mapping[str, Any], PathLike],
        *,
        on_duplicate: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Run:
        """Submits a run and answers its view, once ``RunSubmitted`` is durable.

        :param spec_or_path: the spec as a mapping (sent as JSON), or the path of a
            ``.json``, ``.yaml``/``.yml`` or ``.toml`` file, sent as it is with that
            media type (the server reads all three).
        :param on_duplicate: what a spec a run already has does:
            ``"return_existing"`` (the server's default: that run is answered),
            ``"rerun"`` (a new run) or ``"reject"`` (raises
            :class:`~runyard.errors.Duplicate`).
        :param idempotency_key: makes the call safe to retry: the same key and body
            within 24 hours get the first answer again, without a second run.
        """
        body, content_type = _spec_body(spec_or_path)
        params = {"on_duplicate": on_duplicate} if on_duplicate else None
        headers = {"content-type": content_type}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        return self._object("POST", "/api/v1/runs", content=body, params=params, headers=headers)

    def runs(
        self,
        state: Optional[str] = None,
        label: Union[None, str, Sequence[str], Mapping[str, Optional[str]]] = None,
        *,
        name_prefix: Optional[str] = None,
        sort: Optional[str] = None,
        page_size: int = 100,
    ) -> Iterator[Run]:
        """Every run matching the filters, fetched a page at a time as the iterator
        is read, following the API's cursor (a run is never skipped or repeated
        across pages in ``created_at`` or ``name`` order).

        :param state: ``"queued"``, ``"running"``, ``"completed"``, …
        :param label: ``"key=value"`` or ``"key"``, several of them, or a mapping
            ``{key: value or None}``; a run must have all.
        :param sort: ``"-created_at"`` (the default, newest first), ``"created_at"``,
            ``"updated_at"``, ``"-updated_at"``, ``"name"``, ``"-name"``.
        :param page_size: runs per request (1–1,000).
        """
        params = [("limit", str(page_size))] + _run_filters(state, label, name_prefix)
        if sort:
            params.append(("sort", sort))
        cursor: Optional[str] = None
        while True:
            page = params + ([("cursor", cursor)] if cursor else [])
            response = self._request("GET", "/api/v1/runs", params=page)
            yield from response.json()
            cursor = response.headers.get("x-next-cursor")
            if not cursor:
                return

    def count_runs(
        self,
        state: Optional[str] = None,
        label: Union[None, str, Sequence[str], Mapping[str, Optional[str]]] = None,
        *,
        name_prefix: Optional[str] = None,
    ) -> int:
        """How many runs match the filters (those of :meth:`runs`), in one request
        that reads one run: the list's ``X-Total-Count``."""
        params = [("limit", "1")] + _run_filters(state, label, name_prefix)
        response = self._request("GET", "/api/v1/runs", params=params)
        return int(response.headers["x-total-count"])

    def run(self, run: RunRef, *, at_seq: Optional[int] = None) -> Run:
        """The run's view now, or as it was right after event ``at_seq``."""
        params = {"at_seq": str(at_seq)} if at_seq is not None else None
        return self._object("GET", _run_path(run), params=params)

    def events(
        self,
        run: RunRef,
        after: Optional[int] = None,
        *,
        types: Union[None, str, Sequence[str]] = None,
    ) -> List[Dict[str, Any]]:
        """The run's journaled events after sequence number ``after`` (all of them
        by default), in journal order: ``{seq, at, run_id, type, data}`` each.

        :param types: only events of this name (``"EpochEvaluated"``), or of these.
        """
        out: List[Dict[str, Any]] = []
        cursor = after
        kinds = [("type", kind) for kind in _many(types)]
        while True:
            params = [("limit", str(_EVENTS_PAGE))] + kinds
            if cursor is not None:
                params.append(("after", str(cursor)))
            page = self._json("GET", _run_path(run, "events"), params=params)
            out.extend(page)
            if len(page) < _EVENTS_PAGE:
                return out
            cursor = page[-1]["seq"]

    def wait(
        self,
        run: RunRef,
        *,
        timeout: Optional[float] = None,
        progress: Optional[bool] = None,
    ) -> Run:
        """Follows the run's stream until it has ended (completed, failed or
        cancelled) and answers its final view.

        :param timeout: seconds to wait at most, then :class:`TimeoutError`.
        :param progress: draw a progress bar (``tqdm.auto``: a text bar in a
            terminal, a widget in a notebook). ``None``, the default, draws it when
            stderr is a terminal or the code runs in a notebook; ``False`` never.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        view = dict(run) if isinstance(run, Mapping) else self.run(run)
        run_id = _run_id(view)
        if view.get("state") in TERMINAL_RUN_STATES:
            return view if not isinstance(run, Mapping) else self.run(run_id)
        bar = _ProgressBar(view, _show_progress(progress))
        try:
            for event in self._run_events(run_id, view.get("last_seq"), None, deadline):
                if event.event == "progress":
                    bar.update(event.data)
                elif event.event in TERMINAL_RUN_EVENTS:
                    bar.finish(event.event)
            final = self.run(run_id)
        finally:
            bar.close()
        return final

    def stream(
        self,
        run: RunRef,
        *,
        after: Optional[int] = None,
        every: Optional[str] = None,
    ) -> Iterator[Event]:
        """The run's events, live, until its end: its journaled history after
        ``after`` (all of it by default), then each new event and the coalesced
        ``progress`` samples (at most one per ``every``, e.g. ``"500ms"``). Reconnects
        after a dropped connection without skipping or repeating an event."""
        return self._run_events(_run_id(run), after, every, None)

    def stream_all(
        self,
        *,
        run: Union[None, str, Sequence[str]] = None,
        state: Union[None, str, Sequence[str]] = None,
        type: Union[None, str, Sequence[str]] = None,
        after: Optional[int] = None,
        every: Optional[str] = None,
    ) -> Iterator[Event]:
        """Every run's events, filtered on the server, never ending: ``run`` (ids),
        ``type`` (event names; ``"progress"`` must be named to get progress) and
        ``state`` (runs whose current state is one of these). Starts after journal
        sequence number ``after`` (0 by default: the whole journal, then the live
        tail). Reconnects after a dropped connection without skipping or repeating
        an event."""
        params: List[Tuple[str, str]] = []
        for name, values in (("run", run), ("state", state), ("type", type)):
            params.extend((name, v) for v in _many(values))
        if every:
            params.append(("every", every))
        return self._events("/api/v1/stream", params, after, frozenset(), None, None)

    def cancel(self, run: RunRef, *, idempotency_key: Optional[str] = None) -> Run:
        """Cancels the run (at once when queued or paused; at the next batch when
        live); answers its view. :class:`~runyard.errors.Conflict` once it ended."""
        return self._control(_run_path(run, "cancel"), idempotency_key)

    def pause(self, run: RunRef, *, idempotency_key: Optional[str] = None) -> Run:
        """Pauses the run (a running one checkpoints and frees its slot); answers
        its view."""
        return self._control(_run_path(run, "pause"), idempotency_key)

    def resume(self, run: RunRef, *, idempotency_key: Optional[str] = None) -> Run:
        """Puts a paused run back in the queue, to go on from its checkpoint."""
        return self._control(_run_path(run, "resume"), idempotency_key)

    def metrics(
        self,
        run: RunRef,
        name: str = "loss",
        *,
        from_step: Optional[int] = None,
        to_step: Optional[int] = None,
        points: Optional[int] = None,
        as_frame: bool = False,
    ) -> Any:
        """The sampled history of one metric of the run: ``loss``,
        ``samples_per_sec``, ``percent``, ``epoch`` or ``eta_secs``.

        Answers a list of points ``{"step", "time", "value"}`` (``step`` the batch
        across the run), at most ``points`` of them (the server's default 500), for
        steps ``from_step``..``to_step``. With ``as_frame=True``, a pandas
        ``DataFrame`` with columns ``step``, ``time`` (UTC datetimes) and ``value``
        instead (pandas must be installed: ``pip install runyard[pandas]``).
        """
        params = {"name": name}
        for key, value in (("from", from_step), ("to", to_step), ("points", points)):
            if value is not None:
                params[key] = str(value)
        answer = self._json("GET", _run_path(run, "metrics"), params=params)
        points_: List[Dict[str, Any]] = answer["points"]
        if not as_frame:
            return points_
        try:
            import pandas as pd  # type: ignore[import-untyped,unused-ignore]
        except ImportError as e:
            raise ImportError(
                "metrics(..., as_frame=True) needs pandas: pip install 'runyard[pandas]'"
            ) from e
        frame = pd.DataFrame(points_, columns=["step", "time", "value"])
        frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
        frame.attrs.update(run_id=answer.get("run_id"), name=name)
        return frame

    def download(
        self,
        run: RunRef,
        artifact: str = "final.safetensors",
        path: Optional[PathLike] = None,
    ) -> Path:
        """Downloads an artifact (``final.safetensors``) or a kept checkpoint (by
        file name) and checks it against the SHA-256 its journaled
        ``ArtifactSaved``/``CheckpointSaved`` event holds (the run's view lists
        them). Answers where the file is.

        :param path: the file to write, or a directory to write ``artifact`` into
            (the current directory by default).

        The bytes go to a temporary file beside the destination, which is renamed
        into place only when its SHA-256 matches: on a mismatch
        :class:`~runyard.errors.IntegrityError` is raised and nothing is left at
        ``path`` (a file that was there before stays as it was).
        """
        run_id = _run_id(run)
        target = Path(path) if path is not None else Path.cwd()
        if target.is_dir():
            target = target / artifact
        expected = _journaled_sha256(self.run(run_id), artifact)
        directory = target.parent
        directory.mkdir(parents=True, exist_ok=True)
        # Not mkstemp: its file is 0600, and the download should have the umask's mode.
        tmp = directory / (".%s.%s.part" % (target.name, uuid.uuid4().hex[:12]))
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                with self._http.stream("GET", _run_path(run_id, "artifacts", artifact)) as response:
                    if response.is_error:
                        response.read()
                        raise _problem(response)
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected is None:
                # Journaled after the view was read (a checkpoint that new).
                expected = _journaled_sha256(self.run(run_id), artifact)
            actual = digest.hexdigest()
            if expected is None:
                raise IntegrityError(
                    "run %s: the journal holds no SHA-256 for %r" % (run_id, artifact),
                    expected="",
                    actual=actual,
                )
            if actual != expected:
                raise IntegrityError(
                    "run %s: %r has SHA-256 %s, the journal says %s; not written to %s"
                    % (run_id, artifact, actual, expected, target),
                    expected=expected,
                    actual=actual,
                )
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def delete_artifacts(self, run: RunRef) -> Run:
        """Removes an ended run's files (its history stays); answers its view."""
        return self._object("DELETE", _run_path(run, "artifacts"))

    def logs(
        self,
        run: RunRef,
        follow: bool = False,
        *,
        stream: str = "stdout",
        tail: Optional[int] = None,
        rank: Union[None, int, str] = None,
    ) -> Iterator[str]:
        """A command run's log lines (without their newlines).

        :param follow: ``False``: the last ``tail`` lines now (the server's default
            100). ``True``: those, then every line as it is written, until the run
            has ended and its log is read to the end (reconnecting after a dropped
            connection, going on right after the last line yielded).
        :param stream: ``"stdout"`` or ``"stderr"``.
        :param rank: a rank of a run on several slots, or ``"all"`` (each line tagged
            ``[rank R]``).
        """
        params = {"stream": stream}
        if tail is not None:
            params["tail"] = str(tail)
        if rank is not None:
            params["rank"] = str(rank)
        run_id = _run_id(run)
        if not follow:
            text = self._request("GET", _run_path(run_id, "logs"), params=params).text
            return iter(text.splitlines())
        return self._log_lines(run_id, params)

    def _log_lines(self, run_id: str, params: Dict[str, str]) -> Iterator[str]:
        ended = lambda: self.run(run_id).get("state") in TERMINAL_RUN_STATES  # noqa: E731
        for raw in self._follow(
            _run_path(run_id, "logs", "stream"), list(params.items()), None,
            numeric=False, end_events=frozenset(), ended=ended, deadline=None,
        ):
            if raw.event == "line":
                yield raw.data

    # ---- sweeps ---------------------------------------------------------------------

    def submit_sweep(
        self,
        spec_or_path: Union[Mapping[str, Any], PathLike],
        *,
        idempotency_key: Optional[str] = None,
    ) -> Sweep:
        """Submits a sweep (a mapping, or a ``.json``/``.yaml``/``.toml`` file) and
        answers its view; its first trials start at once."""
        body, content_type = _spec_body(spec_or_path)
        headers = {"content-type": content_type}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        return self._object("POST", "/api/v1/sweeps", content=body, headers=headers)

    def sweeps(self) -> List[Sweep]:
        """Every sweep, newest first (without their trials: see :meth:`sweep`)."""
        answer: List[Sweep] = self._json("GET", "/api/v1/sweeps")
        return answer

    def sweep(self, sweep: RunRef) -> Sweep:
        """The sweep's view, with its trials and results."""
        return self._object("GET", _sweep_path(sweep))

    def sweep_stream(
        self,
        sweep: RunRef,
        *,
        after: Optional[int] = None,
        every: Optional[str] = None,
    ) -> Iterator[Event]:
        """The sweep's events and its trials' (with their progress), live, until
        ``SweepCompleted`` or ``SweepCancelled``; reconnects as :meth:`stream`."""
        path = _sweep_path(sweep)
        params = [("every", every)] if every else []
        ended = lambda: self._json("GET", path).get("state") in ENDED_SWEEP_STATES  # noqa: E731
        return self._events(path + "/stream", params, after, SWEEP_END_EVENTS, ended, None)

    def cancel_sweep(self, sweep: RunRef) -> Sweep:
        """Cancels the sweep: no more trials, and its trial runs are cancelled."""
        return self._object("POST", _sweep_path(sweep, "cancel"))

    def pause_sweep(self, sweep: RunRef) -> Sweep:
        """Pauses the sweep: nothing more is decided, its live trials are paused."""
        return self._object("POST", _sweep_path(sweep, "pause"))

    def resume_sweep(self, sweep: RunRef) -> Sweep:
        """Resumes a paused sweep and the trials its pause stopped."""
        return self._object("POST", _sweep_path(sweep, "resume"))

    # ---- plumbing -------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise _problem(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _object(self, method: str, path: str, **kwargs: Any) -> Dict[str, Any]:
        """A JSON object answer (a run's or a sweep's view)."""
        return cast(Dict[str, Any], self._json(method, path, **kwargs))

    def _control(self, path: str, idempotency_key: Optional[str]) -> Run:
        headers = {"idempotency-key": idempotency_key} if idempotency_key is not None else None
        # The server answers once the run has stopped, within 30 s.
        timeout = httpx.Timeout(self._timeout, read=max(self._timeout, 40.0))
        return self._object("POST", path, headers=headers, timeout=timeout)

    def _run_events(
        self,
        run_id: str,
        after: Optional[int],
        every: Optional[str],
        deadline: Optional[float],
    ) -> Iterator[Event]:
        path = _run_path(run_id, "stream")
        params = [("every", every)] if every else []
        ended = lambda: self.run(run_id).get("state") in TERMINAL_RUN_STATES  # noqa: E731
        return self._events(path, params, after, TERMINAL_RUN_EVENTS, ended, deadline)

    def _events(
        self,
        path: str,
        params: List[Tuple[str, str]],
        after: Optional[int],
        end_events: FrozenSet[str],
        ended: Optional[Callable[[], bool]],
        deadline: Optional[float],
    ) -> Iterator[Event]:
        last = None if after is None else str(after)
        for raw in self._follow(path, params, last, numeric=True, end_events=end_events,
                                ended=ended, deadline=deadline):
            yield Event(event=raw.event, data=_json_or_text(raw.data),
                        id=int(raw.id) if raw.id is not None else None)

    def _follow(
        self,
        path: str,
        params: List[Tuple[str, str]],
        last_id: Optional[str],
        *,
        numeric: bool,
        end_events: FrozenSet[str],
        ended: Optional[Callable[[], bool]],
        deadline: Optional[float],
    ) -> Iterator[RawEvent]:
        """The events of the stream at ``path``, across as many connections as it
        takes: each one opened with ``Last-Event-ID`` at the last event yielded.

        A connection that ends cleanly ends the stream when an ``end_events`` event
        was seen, or when it brought nothing new and ``ended()`` says the run or
        sweep has ended (``ended`` is ``None`` for a stream that never ends). A
        ``resume`` event (the server dropped a client too slow to read) names the
        cursor to go on from. Failures in a row are retried with a growing pause,
        for ``reconnect_timeout`` seconds.
        """
        last_number = int(last_id) if numeric and last_id is not None else None
        retry_s = 1.0
        failures = 0
        failing_since: Optional[float] = None
        seen_end = False
        while True:
            headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
            if last_id is not None:
                headers["last-event-id"] = last_id
            read_timeout = self.stream_read_timeout
            if deadline is not None:
                read_timeout = max(0.001, min(read_timeout, deadline - time.monotonic()))
            timeout = httpx.Timeout(self._timeout, read=read_timeout)
            new = 0
            resumed = False
            failure: Optional[BaseException] = None
            try:
                with self._http.stream("GET", path, params=tuple(params),
                                       headers=headers, timeout=timeout) as response:
                    if response.is_error:
                        response.read()
                        error = _problem(response)
                        if not isinstance(error, ServiceUnavailable):
                            raise error
                        failure = error  # a server starting up: try again
                    else:
                        parser = Parser()
                        for line in response.iter_lines():
                            raw = parser.line(line)
                            if parser.retry_ms is not None:
                                retry_s = parser.retry_ms / 1000.0
                            if raw is None:
                                if deadline is not None and time.monotonic() > deadline:
                                    raise TimeoutError("%s: not ended in time" % path)
                                continue
                            if raw.event == "resume":
                                resumed = True
                                after = _json_or_text(raw.data)
                                if isinstance(after, dict) and after.get("after") is not None:
                                    last_id = str(after["after"])
                                continue
                            if raw.id is not None:
                                if numeric:
                                    number = int(raw.id)
                                    if last_number is not None and number <= last_number:
                                        continue  # already yielded
                                    last_number = number
                                last_id = raw.id
                            new += 1
                            failures, failing_since = 0, None
                            if raw.event in end_events:
                                seen_end = True
                            yield raw
                            if deadline is not None and time.monotonic() > deadline:
                                raise TimeoutError("%s: not ended in time" % path)
            except httpx.TransportError as e:
                failure = e
            if failure is None:
                if resumed:
                    continue
                if seen_end:
                    return
                if new == 0 and ended is not None and _ended(ended):
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("%s: not ended in time" % path)
            if new > 0:
                continue  # the connection brought events: go on from them at once
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
            elif now - failing_since > self.reconnect_timeout:
                raise StreamError(
                    "%s: could not reconnect for %.0f s (last: %s)"
                    % (path, self.reconnect_timeout, failure or "the stream ended early")
                ) from failure
            time.sleep(min(retry_s, 0.05 * (2 ** failures)))
            failures += 1


# ---- helpers ------------------------------------------------------------------------


def _ended(ended: Callable[[], bool]) -> bool:
    """``ended()``, with a connection failure read as "not known to have ended" (the
    stream is then opened again, and asks again)."""
    try:
        return ended()
    except httpx.TransportError:
        return False


def _run_id(run: RunRef) -> str:
    if isinstance(run, str):
        return run
    value = run.get("id")
    if not isinstance(value, str):
        raise TypeError("a run is its id or a view with an \"id\", not %r" % (run,))
    return value


def _run_path(run: RunRef, *parts: str) -> str:
    return "/".join(["/api/v1/runs", quote(_run_id(run), safe="")] + [quote(p, safe="") for p in parts])


def _sweep_path(sweep: RunRef, *parts: str) -> str:
    return "/".join(["/api/v1/sweeps", quote(_run_id(sweep), safe="")] + list(parts))


def _spec_body(spec: Union[Mapping[str, Any], PathLike]) -> Tuple[bytes, str]:
    """The request body and its media type for a spec given as a mapping or a file."""
    if isinstance(spec, Mapping):
        return json.dumps(spec).encode(), "application/json"
    path = Path(spec)
    content_type = SPEC_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise ValueError(
            "%s: a spec file ends in %s (its suffix says how the server reads it)"
            % (path, ", ".join(sorted(SPEC_TYPES)))
        )
    return path.read_bytes(), content_type


def _labels(label: Union[None, str, Sequence[str], Mapping[str, Optional[str]]]) -> List[str]:
    if label is None:
        return []
    if isinstance(label, str):
        return [label]
    if isinstance(label, Mapping):
        return [k if v is None else "%s=%s" % (k, v) for k, v in label.items()]
    return list(label)


def _run_filters(
    state: Optional[str],
    label: Union[None, str, Sequence[str], Mapping[str, Optional[str]]],
    name_prefix: Optional[str],
) -> List[Tuple[str, str]]:
    params: List[Tuple[str, str]] = []
    if state:
        params.append(("state", state))
    params.extend(("label", value) for value in _labels(label))
    if name_prefix:
        params.append(("name_prefix", name_prefix))
    return params


def _many(values: Union[None, str, Sequence[str]]) -> Iterable[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return values


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _problem(response: httpx.Response) -> ProblemError:
    """The exception for an error answer (its body already read)."""
    problem: Mapping[str, Any]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("code" in body or "status" in body):
        problem = body
    else:
        problem = {
            "status": response.status_code,
            "title": response.reason_phrase,
            "detail": response.text[:1000],
        }
    return problem_error(response.status_code, problem)


def _journaled_sha256(view: Mapping[str, Any], name: str) -> Optional[str]:
    """The SHA-256 the run's journal holds for artifact or checkpoint ``name``."""
    for artifact in view.get("artifacts") or []:
        if artifact.get("name") == name:
            return str(artifact["sha256"])
    checkpoints = list(view.get("checkpoints_kept") or [])
    if view.get("checkpoint"):
        checkpoints.append(view["checkpoint"])
    for checkpoint in checkpoints:
        if str(checkpoint.get("path", "")).rsplit("/", 1)[-1] == name and checkpoint.get("sha256"):
            return str(checkpoint["sha256"])
    return None


def _show_progress(progress: Optional[bool]) -> bool:
    """Whether to draw a bar: as asked, else in a terminal or a notebook."""
    if progress is not None:
        return progress
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get_ipython = getattr(shell, "get_ipython", None)
    ip = get_ipython() if callable(get_ipython) else None
    return ip is not None and hasattr(ip, "kernel")


class _ProgressBar:
    """wait()'s bar: the run's percent, with its epoch and loss; nothing when off."""

    def __init__(self, view: Mapping[str, Any], enabled: bool) -> None:
        self._bar: Any = None
        if not enabled:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=100.0,
            desc=str(view.get("name") or _run_id(view)),
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
            leave=True,
        )
        if view.get("progress"):
            self.update(view["progress"])

    def update(self, sample: Any) -> None:
        if self._bar is None or not isinstance(sample, dict):
            return
        percent = sample.get("percent")
        if isinstance(percent, (int, float)):
            self._bar.n = min(100.0, max(0.0, float(percent)))
        postfix: Dict[str, str] = {}
        if sample.get("epoch") is not None:
            postfix["epoch"] = "%s/%s" % (sample.get("epoch"), sample.get("epochs", "?"))
        if isinstance(sample.get("loss"), (int, float)):
            postfix["loss"] = "%.4g" % sample["loss"]
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()

    def finish(self, event: str) -> None:
        if self._bar is None:
            return
        if event == "RunCompleted":
            self._bar.n = 100.0
        self._bar.set_postfix_str(event, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

