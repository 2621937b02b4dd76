"""runyard's Python package: a client for a runyard server's REST API
(:class:`Client`), and the progress-protocol helper a training command reports
through (:mod:`runyard.report`).

    import runyard

    with runyard.Client("http://127.0.0.1:8080") as client:
        run = client.submit("examples/digits.json")
        run = client.wait(run)                     # a progress bar in a terminal or notebook
        print(run["state"], run["metrics"]["val_metric"])

The client speaks HTTP through httpx (see :mod:`runyard.client` for why); the report
helper needs the standard library only, because training scripts import it. So this
package imports the client lazily: ``from runyard import report`` (or the old
``import runyard_report``) never imports httpx, and ``runyard.Client`` does on first
use. The exceptions (:mod:`runyard.errors`) are standard library only too.
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    BadRequest,
    Conflict,
    Duplicate,
    Error,
    Forbidden,
    Gone,
    IntegrityError,
    InvalidSpec,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ServerError,
    ServiceUnavailable,
    StreamError,
    Unauthorized,
    UnsupportedMediaType,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .client import Client, Event

__version__ = "0.1.0"
"""The package's version, the server crate's."""

__all__ = [
    "BadRequest",
    "Client",
    "Conflict",
    "Duplicate",
    "Error",
    "Event",
    "Forbidden",
    "Gone",
    "IntegrityError",
    "InvalidSpec",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "ServerError",
    "ServiceUnavailable",
    "StreamError",
    "Unauthorized",
    "UnsupportedMediaType",
    "__version__",
]

_LAZY = {"Client", "Event"}


def __getattr__(name: str) -> Any:
    """Imports :mod:`runyard.client` (and with it httpx) on first use of its names."""
    if name in _LAZY:
        from . import client

        return getattr(client, name)
    raise AttributeError("module 'runyard' has no attribute %r" % name)


def __dir__() -> "list[str]":
    return sorted(set(globals()) | _LAZY)
