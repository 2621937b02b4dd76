"""A server-sent events parser (the WHATWG event-stream format), line by line.

Standard library only. It is fed the stream's lines (without their end of line) and
hands back each event when the blank line that ends it arrives; an event cut off by a
dropped connection never comes out, so a resumed stream starts clean.
"""

from dataclasses import dataclass
from typing import List, Optional

__all__ = ["RawEvent", "Parser"]


@dataclass(frozen=True)
class RawEvent:
    """One dispatched event, its fields as sent."""

    event: str
    """The ``event:`` field (``"message"`` when absent)."""
    data: str
    """The ``data:`` fields, joined with newlines."""
    id: Optional[str]
    """This event's own ``id:`` field, or ``None`` when it had none (a ``progress``
    event, a keep-alive)."""


class Parser:
    """Turns lines into :class:`RawEvent` s; remembers the server's ``retry:`` hint."""

    def __init__(self) -> None:
        self.retry_ms: Optional[int] = None
        """The newest ``retry:`` value, in milliseconds, if the server sent one."""
        self._event = ""
        self._data: List[str] = []
        self._id: Optional[str] = None

    def line(self, line: str) -> Optional[RawEvent]:
        """Reads one line; answers the event it completes, if it is the blank line
        that ends one with data."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Optional[RawEvent]:
        event, data, id_ = self._event, self._data, self._id
        self._event, self._data, self._id = "", [], None
        if not data:
            return None
        return RawEvent(event=event or "message", data="\n".join(data), id=id_)
