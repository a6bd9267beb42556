"""What one piece of work sent to the outside systems, request by request.

The console's "sync this record now" shows the requests its one-record run sent
(method, path, status), like Entra's provision-on-demand. The run happens on the
daemon's shared HTTP clients while the scheduled cycle may use them too, so the
requests are not told apart by client but by *context*: ``recording(log)`` activates a
:class:`RequestLog` for this thread (a context variable, like the write fence in
utils/locks.py), the HTTP adapters call :func:`note_request` after each attempt, and
``sync.base.apply_in_order`` re-activates the log in its worker threads.

Only the method, the URL's path (no query string: it may carry a secret or a filter
with personal data), the status (or a short error label) and the time are kept; the
path is scrubbed all the same.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from utils.scrub import scrub

__all__ = ["RequestLog", "current_request_log", "note_request", "recording"]


class RequestLog:
    """Requests noted while it was active (thread-safe); at most ``limit`` kept, all counted."""

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self.total = 0
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, service: str, method: str, url: str, status: int | str, seconds: float) -> None:
        entry = {
            "service": service,
            "method": method.upper(),
            "path": scrub(urlsplit(url).path or "/"),
            "status": status,
            "ms": round(seconds * 1000, 1),
        }
        with self._lock:
            self.total += 1
            if len(self._entries) < self.limit:
                self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries]

    def writes(self) -> list[dict[str, Any]]:
        """The requests that were not reads."""
        return [e for e in self.entries() if e["method"] not in ("GET", "HEAD", "OPTIONS")]


_LOG: ContextVar[RequestLog | None] = ContextVar("safetyamp_sync_request_log", default=None)


def current_request_log() -> RequestLog | None:
    return _LOG.get()


@contextlib.contextmanager
def recording(log: RequestLog | None) -> Iterator[RequestLog | None]:
    """Within this block (this thread), requests are noted in ``log`` (None: not noted)."""
    token = _LOG.set(log)
    try:
        yield log
    finally:
        _LOG.reset(token)


def note_request(service: str, method: str, url: str, status: int | str, seconds: float) -> None:
    """Called by the HTTP adapters after every attempt; costs one lookup when nothing records."""
    log = _LOG.get()
    if log is not None:
        log.add(service, method, url, status, seconds)
