"""A TCP proxy that cuts connections for real, to test streams that resume.

Each connection accepted is relayed to the upstream server byte for byte, both ways.
The first ``cuts`` connections are cut once ``cut_after`` bytes of the server's answer
(headers included) have gone through: both sockets are closed mid-answer, so the
client sees its connection drop in the middle of a chunked body, exactly as when a
network path or a proxy dies.
"""

import socket
import threading
from typing import List, Optional, Tuple
from urllib.parse import urlsplit


class CuttingProxy:
    """``with CuttingProxy("http://127.0.0.1:8080", cut_after=1500, cuts=2) as p:``
    then point a client at ``p.url``."""

    def __init__(self, upstream: str, cut_after: int, cuts: int) -> None:
        parts = urlsplit(upstream)
        self._upstream: Tuple[str, int] = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.cut_after = cut_after
        self.cuts = cuts
        self.requests: List[bytes] = []
        """The first bytes each connection sent (its request's head), in order."""
        self.sent: List[int] = []
        """The answer bytes relayed on each connection."""
        self.cut = 0
        """How many connections were cut."""
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self._listener.getsockname()[1]
        self._open: List[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "CuttingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._open:
                _close(sock)

    def last_event_ids(self) -> List[Optional[str]]:
        """The ``Last-Event-ID`` each connection's request carried (``None``: none)."""
        out: List[Optional[str]] = []
        for head in self.requests:
            found = None
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "last-event-id":
                    found = value.strip()
            out.append(found)
        return out

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                index = len(self.requests)
                self.requests.append(b"")
                self.sent.append(0)
                self._open += [downstream, upstream]
            threading.Thread(target=self._to_server, args=(index, downstream, upstream),
                             daemon=True).start()
            threading.Thread(target=self._to_client, args=(index, downstream, upstream),
                             daemon=True).start()

    def _to_server(self, index: int, downstream: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                data = downstream.recv(65536)
                if not data:
                    break
                with self._lock:
                    if len(self.requests[index]) < 8192:
                        self.requests[index] += data
                upstream.sendall(data)
        except OSError:
            pass
        _close(upstream)

    def _to_client(self, index: int, downstream: socket.socket, upstream: socket.socket) -> None:
        limit = self.cut_after if index < self.cuts else None
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if limit is not None and self.sent[index] + len(data) >= limit:
                    downstream.sendall(data[: limit - self.sent[index]])
                    with self._lock:
                        self.sent[index] = limit
                        self.cut += 1
                    break
                downstream.sendall(data)
                with self._lock:
                    self.sent[index] += len(data)
        except OSError:
            pass
        _close(downstream)
        _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
