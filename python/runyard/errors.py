"""The exceptions of the runyard client, standard library only.

Every error answer of the server is ``application/problem+json``
(``{"type", "title", "status", "detail", "code"}``); the client raises it as a
:class:`ProblemError` of the subclass its ``code`` (or, for a code this version does
not know, its status) picks, so a caller catches what it can handle::

    try:
        client.cancel(run_id)
    except runyard.Conflict as e:     # the run has already ended
        print(e.code, e.detail)
    except runyard.NotFound:
        ...
"""

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "BadRequest",
    "Conflict",
    "Duplicate",
    "Error",
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
    "problem_error",
]


class Error(Exception):
    """The base of every exception the runyard client raises itself (transport
    failures outside streams are httpx's own ``httpx.TransportError``)."""


class ProblemError(Error):
    """The server answered an error: a problem+json document (or, from something
    that is not runyard, a bare error status, whose ``code`` is then ``None``).

    :ivar status: the HTTP status (``404``).
    :ivar code: runyard's error code (``"run_not_found"``), the stable thing to test.
    :ivar detail: what is wrong, naming the field or state at fault.
    :ivar title: the code's title (``"Run not found"``).
    :ivar problem: the whole document, as sent.
    """

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem: Dict[str, Any] = dict(problem)
        code = self.problem.get("code")
        self.code: Optional[str] = code if isinstance(code, str) else None
        self.detail: str = str(self.problem.get("detail") or "")
        self.title: str = str(self.problem.get("title") or "")
        super().__init__(self._message())

    def _message(self) -> str:
        what = self.code or self.title or "error"
        return "%s %s: %s" % (self.status, what, self.detail) if self.detail else "%s %s" % (
            self.status,
            what,
        )


class BadRequest(ProblemError):
    """400: ``malformed_body``, ``invalid_query``, ``invalid_header``."""


class Unauthorized(ProblemError):
    """401 ``unauthorized``: no token, or an unknown or revoked one."""


class Forbidden(ProblemError):
    """403: ``forbidden`` (the token's role is too small), ``commands_disabled``."""


class NotFound(ProblemError):
    """404: ``run_not_found``, ``sweep_not_found``, ``artifact_not_found``,
    ``route_not_found``."""


class MethodNotAllowed(ProblemError):
    """405 ``method_not_allowed``: the route has no such method (its ``Allow``
    header, in the answer, lists those it has)."""


class Conflict(ProblemError):
    """409: ``conflict`` (the run's or sweep's state does not allow the request),
    ``idempotency_key_reused``; and :class:`Duplicate`."""


class Duplicate(Conflict):
    """409 ``duplicate``: ``on_duplicate="reject"`` and a run with the same spec
    exists (``detail`` names it)."""


class Gone(ProblemError):
    """410 ``artifact_deleted``: the run's files were deleted."""


class PayloadTooLarge(ProblemError):
    """413 ``body_too_large``."""


class UnsupportedMediaType(ProblemError):
    """415 ``unsupported_media_type``."""


class InvalidSpec(ProblemError):
    """422: ``invalid_spec``, ``invalid_sweep``, ``executor_disabled`` (``detail``
    names the field or path at fault)."""


class ServerError(ProblemError):
    """500 ``internal``, and any other 5xx but 503."""


class ServiceUnavailable(ProblemError):
    """503: ``not_ready`` (replaying at start), ``journal_unavailable`` (nothing was
    written; retry)."""


class IntegrityError(Error):
    """A downloaded file's SHA-256 is not the one the journal holds for it; nothing
    was written at the destination.

    :ivar expected: the journaled SHA-256 (hex).
    :ivar actual: the downloaded bytes' SHA-256 (hex).
    """

    def __init__(self, message: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class StreamError(Error):
    """A stream could not be resumed: every reconnection failed for the client's
    ``reconnect_timeout``. ``__cause__`` is the last failure."""


_BY_CODE: Dict[str, Type[ProblemError]] = {
    "malformed_body": BadRequest,
    "invalid_query": BadRequest,
    "invalid_header": BadRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "commands_disabled": Forbidden,
    "run_not_found": NotFound,
    "sweep_not_found": NotFound,
    "artifact_not_found": NotFound,
    "route_not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "idempotency_key_reused": Conflict,
    "duplicate": Duplicate,
    "artifact_deleted": Gone,
    "body_too_large": PayloadTooLarge,
    "unsupported_media_type": UnsupportedMediaType,
    "invalid_spec": InvalidSpec,
    "invalid_sweep": InvalidSpec,
    "executor_disabled": InvalidSpec,
    "internal": ServerError,
    "not_ready": ServiceUnavailable,
    "journal_unavailable": ServiceUnavailable,
}

_BY_STATUS: Dict[int, Type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidSpec,
    503: ServiceUnavailable,
}


def problem_error(status: int, problem: Mapping[str, Any]) -> ProblemError:
    """The exception for an error answer: by its ``code``, else by its status."""
    code = problem.get("code")
    kind = _BY_CODE.get(code) if isinstance(code, str) else None
    if kind is None:
        kind = _BY_STATUS.get(status, ServerError if status >= 500 else ProblemError)
    return kind(status, problem)
