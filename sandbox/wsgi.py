"""The WSGI layer every emulator shares: request log, fault injection, dropped connections.

Why a middleware and not Flask hooks: a dropped connection must leave the server without
any response at all, and a "lost response" must commit the write first and then drop.
Both need the raw socket and must sit outside Flask's error handling, which would turn
them into 500 pages. Doing it once here keeps the three emulators identical in how they
fail, and logs every request (with the status the client saw, 0 for a dropped
connection) so tests can count requests from the server's side.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Response

from sandbox.faults import FaultInjector
from sandbox.store import Store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("sandbox.http")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def json_response(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Response:
    """A JSON response that needs no Flask app context (faults answer outside Flask)."""
    response = Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type=content_type if "charset" in content_type else content_type + "; charset=utf-8",
    )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def bearer_token(authorization: str | None) -> str:
    """The credential of an ``Authorization: Bearer ...`` header value ("" when there is none)."""
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def encode_opaque(payload: Mapping[str, Any]) -> str:
    """An opaque paging token (Samsara cursor, Graph skiptoken): base64url JSON.

    Clients must treat it as opaque, as both vendors say; the emulators read it back with
    :func:`decode_opaque`.
    """
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_opaque(token: str) -> dict[str, Any] | None:
    """The payload of a token from :func:`encode_opaque`, or None when it is not one."""
    try:
        payload = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


class VendorErrors(Protocol):
    """How a vendor answers when it is rate limited or broken (bodies differ per vendor)."""

    def rate_limited(self, retry_after: str) -> Response:
        """A 429 with ``Retry-After`` and the vendor's body."""
        ...

    def server_error(self, status: int) -> Response:
        """A 5xx with the vendor's (or its gateway's) body."""
        ...


def drop_connection(environ: WSGIEnvironment) -> None:
    """Reset the client's TCP connection and abort this request without a response.

    SO_LINGER 0 makes the final close send RST; the ConnectionError tells werkzeug the
    connection is gone so it neither writes a 500 nor logs a traceback.
    """
    sock = environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    raise ConnectionAbortedError("sandbox fault: connection dropped")


class EmulatorMiddleware:
    """Wraps one emulator app: logs each request, injects the configured faults.

    ``route(path)`` returns ``(service_for_the_log, faults_apply)``; the Graph emulator
    uses it to keep its login endpoints (a different Microsoft service) out of the Graph
    faults and counts.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        service: str,
        store: Store,
        injector: FaultInjector,
        errors: VendorErrors,
        route: Callable[[str], tuple[str, bool]] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.store = store
        self.injector = injector
        self.errors = errors
        self.route = route or (lambda _path: (service, True))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        service, faults_apply = self.route(path)
        injector = self.injector if faults_apply else None
        status_seen = [0]

        def logging_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            status_seen[0] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        try:
            if injector is not None and injector.active:
                # The rate limit is counted as requests arrive (an API gateway, or Laravel's
                # throttle middleware, answers 429 before any work); the latency models the
                # server's own time to answer, spikes included, so it comes after. Latency
                # before the count would let one slow request reorder arrivals, which no
                # gateway sees.
                decision = injector.check()
                if decision is None or decision[0] != "rate_limited":
                    delay = injector.latency()
                    if method in WRITE_METHODS and injector.roll(injector.slow_write_rate):
                        delay += injector.slow_write_s  # applied after the client gave up
                    if delay:
                        time.sleep(delay)
                if decision is not None:
                    kind, value = decision
                    if kind == "reset":
                        drop_connection(environ)
                    if kind in ("rate_limited", "throttled"):
                        reply = self.errors.rate_limited(injector.format_retry_after(value))
                    else:
                        reply = self.errors.server_error(int(value))
                    return reply(environ, logging_start_response)
            body = b"".join(self.app(environ, logging_start_response))
            if (
                injector is not None
                and method in WRITE_METHODS
                and status_seen[0] < 400
                and injector.roll(injector.lost_response_rate)
            ):
                drop_connection(environ)
            return [body]
        except ConnectionError:
            status_seen[0] = 0
            raise
        finally:
            try:
                self.store.log_request(service, method, path, status_seen[0])
            except Exception:  # the log must never break a request (e.g. store closing)
                log.warning("could not log %s %s %s", service, method, path, exc_info=True)


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without one stderr line per request (the store logs them)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged in the store instead."""

    def log(self, type: str, message: str, *args: Any) -> None:
        """Route werkzeug's own messages (TLS errors, bad request lines) to logging."""
        log.debug("%s: " + message, type, *args)
