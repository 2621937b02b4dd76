"""Fixtures of the client's tests, which run against a real runyard server.

``tests/api/python_client.rs`` starts one (one CPU slot, command runs allowed) and a
second with tokens, and runs ``python -m pytest python/tests`` with:

- ``RUNYARD_URL``: the server; without it every test here is skipped;
- ``RUNYARD_DATA_DIR``: its data directory (to tamper with an artifact on disk);
- ``RUNYARD_AUTH_URL``, ``RUNYARD_READ_TOKEN``, ``RUNYARD_WRITE_TOKEN``: the server
  with tokens, and a ``read`` and a ``write`` token of it.

Every test leaves no run live behind it: after each, any run still queued, running
or paused is cancelled and waited for (the server has one slot, so a run left
training would hold up the next test).
"""

import os
import uuid
from typing import Any, Callable, Dict, Iterator

import pytest

import runyard

# The helper's own tests need no server: tests/api/python_helper.rs runs them with
# the system's python3 and the standard library only.
collect_ignore = ["test_report.py"]

LIVE = ("queued", "starting", "running", "pausing", "paused")


def pytest_report_header() -> str:
    return "runyard from %s; server %s" % (
        os.path.dirname(runyard.__file__),
        os.environ.get("RUNYARD_URL", "(none: RUNYARD_URL unset, tests skipped)"),
    )


def pytest_collection_modifyitems(items: Any) -> None:
    if os.environ.get("RUNYARD_URL"):
        return
    skip = pytest.mark.skip(reason="RUNYARD_URL is not set: no server to test against")
    for item in items:
        item.add_marker(skip)


@pytest.fixture
def url() -> str:
    return os.environ["RUNYARD_URL"]


@pytest.fixture
def client(url: str) -> Iterator[runyard.Client]:
    with runyard.Client(url, timeout=60) as c:
        yield c
        for run in list(c.runs()):
            if run["state"] in LIVE:
                try:
                    c.cancel(run)
                except runyard.Conflict:
                    pass  # ended meanwhile
                c.wait(run, timeout=120, progress=False)


@pytest.fixture
def spec() -> Callable[..., Dict[str, Any]]:
    """A tiny synthetic classification run (well under a second of training on the
    test server), its name unique so its digest is too; keywords override fields."""

    def make(**fields: Any) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "name": "py-%s" % uuid.uuid4().hex[:12],
            "model": {"kind": "mlp", "hidden": [8]},
            "data": {"kind": "synthetic", "samples": 200, "features": 8, "classes": 2,
                     "seed": 3},
            "optimizer": {"kind": "adam", "lr": 0.01},
            "epochs": 1,
            "batch_size": 32,
            "seed": 1,
        }
        body.update(fields)
        return body

    return make
