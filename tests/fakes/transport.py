"""A fake HTTP transport for the real ``requests`` stack (httpx-style testing, no mock.patch).

``FakeTransport`` is a ``requests.adapters.BaseAdapter``: mount it on a real
``requests.Session`` (``transport.session()`` does) and every request goes through the
real requests machinery (URL/param encoding, headers, JSON bodies, redirects) until the
point where bytes would hit a socket. There it is recorded and answered by:

1. scripted outcomes queued with ``script(method, path, *outcomes)`` (consumed in order),
2. else the route handler registered with ``route(method, path, handler)``,
3. else 404.

An outcome is a ``Reply`` (status, headers, json or text body), a plain dict/list (a 200
JSON answer), or an exception instance to raise. The builders below produce exceptions
shaped exactly as ``requests.adapters.HTTPAdapter`` raises them, so the code under test
sees the same wrapping as in production (a refused connection is a ConnectionError
around MaxRetryError(NewConnectionError); a reset after sending wraps ProtocolError).

``FakeClock`` is a monotonic clock whose ``sleep`` advances it: inject both into the
rate limiter / retry policy and no test sleeps for real.
"""

from __future__ import annotations

import http
import json as jsonlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

_MISSING = object()


@dataclass
class Reply:
    """A scripted HTTP answer. Give ``json`` (serialised) or ``text`` (sent as-is)."""

    status: int = 200
    json: Any = _MISSING
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    """What reached the (fake) wire."""

    method: str
    url: str
    headers: CaseInsensitiveDict[str]
    body: bytes | None
    timeout: Any = None
    verify: Any = True

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def json(self) -> Any:
        return jsonlib.loads(self.body) if self.body else None

    @property
    def form(self) -> dict[str, list[str]]:
        raw = self.body.decode() if isinstance(self.body, bytes) else (self.body or "")
        return parse_qs(raw)


Outcome = Reply | dict[str, Any] | list[Any] | BaseException
Handler = Callable[[RecordedRequest], Outcome]


# -- exceptions shaped like requests.adapters.HTTPAdapter raises them --------------------
def connect_refused(url: str = "http://fake") -> requests.exceptions.ConnectionError:
    """Connection refused before anything was sent."""
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(MaxRetryError(None, url, reason))  # type: ignore[arg-type]


def connect_timeout(url: str = "http://fake") -> requests.exceptions.ConnectTimeout:
    """TCP/TLS connect did not finish in time: nothing was sent."""
    reason = ConnectTimeoutError(None, "Connection to fake timed out. (connect timeout=5)")
    return requests.exceptions.ConnectTimeout(MaxRetryError(None, url, reason))  # type: ignore[arg-type]


def read_timeout(url: str = "http://fake") -> requests.exceptions.ReadTimeout:
    """The request was sent; no answer in time."""
    return requests.exceptions.ReadTimeout(ReadTimeoutError(None, url, "Read timed out. (read timeout=30)"))  # type: ignore[arg-type]


def connection_reset() -> requests.exceptions.ConnectionError:
    """The peer dropped the connection after the request was sent."""
    return requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    )


class FakeTransport(BaseAdapter):
    """Routes requests to handlers, plays scripts and records everything sent."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RecordedRequest] = []
        self._routes: dict[tuple[str, str], Handler] = {}
        self._scripts: dict[tuple[str, str], deque[Outcome]] = {}

    # -- setup -------------------------------------------------------------------
    def session(self) -> requests.Session:
        """A real Session with this transport mounted for http:// and https://."""
        s = requests.Session()
        s.trust_env = False  # no proxy / netrc from the developer's environment
        s.mount("http://", self)
        s.mount("https://", self)
        return s

    def route(self, method: str, path: str, handler: Handler | Outcome) -> None:
        """``path`` is a URL path ("/api/users") or a full URL without query. ``handler``
        is a function of the RecordedRequest, or a fixed outcome."""
        fn: Handler = handler if callable(handler) and not isinstance(handler, BaseException) else (lambda _r, h=handler: h)  # type: ignore[misc]
        self._routes[(method.upper(), path)] = fn

    def script(self, method: str, path: str, *outcomes: Outcome) -> None:
        """Queue outcomes answered (in order) before the route handler is used."""
        self._scripts.setdefault((method.upper(), path), deque()).extend(outcomes)

    # -- inspection --------------------------------------------------------------
    def sent(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and (path is None or path in (r.path, _no_query(r.url)))
        ]

    # -- BaseAdapter -------------------------------------------------------------
    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        rec = RecordedRequest(
            request.method or "GET", request.url or "", CaseInsensitiveDict(request.headers), body, timeout, verify
        )
        self.requests.append(rec)
        outcome = self._outcome(rec)
        if isinstance(outcome, BaseException):
            if isinstance(outcome, requests.RequestException):
                outcome.request = request
            raise outcome
        return self._response(request, outcome)

    def close(self) -> None:
        pass

    # -- internals ---------------------------------------------------------------
    def _outcome(self, rec: RecordedRequest) -> Outcome:
        for key in ((rec.method, rec.path), (rec.method, _no_query(rec.url))):
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
        for key in ((rec.method, rec.path), (rec.method, _no_query(rec.url))):
            handler = self._routes.get(key)
            if handler is not None:
                return handler(rec)
        return Reply(404, json={"message": f"no fake route for {rec.method} {rec.path}"})

    def _response(self, request: requests.PreparedRequest, outcome: Outcome) -> requests.Response:
        reply = outcome if isinstance(outcome, Reply) else Reply(200, json=outcome)
        headers = CaseInsensitiveDict(reply.headers)
        if reply.json is not _MISSING:
            content = jsonlib.dumps(reply.json).encode()
            headers.setdefault("Content-Type", "application/json")
        else:
            content = (reply.text or "").encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        resp = requests.Response()
        resp.status_code = reply.status
        resp.headers = headers
        resp._content = content
        resp.encoding = "utf-8"
        resp.url = request.url or ""
        resp.request = request
        try:
            resp.reason = http.HTTPStatus(reply.status).phrase
        except ValueError:
            resp.reason = "Unknown"
        resp.connection = self
        return resp


class LosingAdapter(HTTPAdapter):
    """The real HTTP adapter, except that it can lose answers: a request armed with
    ``lose(method, path_suffix)`` reaches the server (which applies it), then its
    answer is dropped as a connection reset after sending (``connection_reset``). For
    the ambiguous-write rules against a real server; ``session()`` mounts it."""

    def __init__(self) -> None:
        super().__init__()
        self._armed: list[tuple[str, str]] = []
        self.lost: list[str] = []

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.mount("http://", self)
        s.mount("https://", self)
        return s

    def lose(self, method: str, path_suffix: str) -> None:
        """Drop the answer of the next ``method`` request whose path ends with ``path_suffix``."""
        self._armed.append((method.upper(), path_suffix))

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        resp = super().send(request, *args, **kwargs)
        path = urlsplit(request.url or "").path
        for armed in self._armed:
            if request.method == armed[0] and path.endswith(armed[1]):
                self._armed.remove(armed)
                resp.close()
                self.lost.append(f"{request.method} {path}")
                lost = connection_reset()
                lost.request = request
                raise lost
        return resp


def _no_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class FakeClock:
    """Monotonic fake time; ``sleep`` records the wait and advances the clock."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds
