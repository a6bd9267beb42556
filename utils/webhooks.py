"""Samsara webhook signature check.

Samsara signs each webhook (developers.samsara.com/docs/webhooks): headers
``X-Samsara-Timestamp`` (Unix seconds) and ``X-Samsara-Signature: v1=<hex>``, where the
hex is HMAC-SHA256, keyed with the webhook's base64-decoded secret key, over
``"v1:" + timestamp + ":" + raw body``. We accept a timestamp at most ``max_skew``
seconds from our clock and refuse a signature already seen within that window, so a
captured request cannot be replayed. Comparison is constant-time.

Both headers are read strictly, because whatever is tolerated must also be remembered:

* the timestamp is whole Unix seconds in ASCII digits, as Samsara sends it. ``float()``
  would take ``nan`` (which passes any window check: ``abs(now - nan) > x`` is false, so
  a request signed with it could be replayed forever), ``inf``, ``1e9``, ``1_7..``,
  full-width digits and other spellings of one instant;
* the signature is ``v1=`` and 64 hex digits, after removing only HTTP's optional
  whitespace (space, tab) around the header value. ``str.strip()`` also removes
  ``\xa0``, ``\x85`` and other Unicode spaces, so a captured signature with one of
  them appended compared equal but was remembered as a different string: a replay.
  The replay memory holds the signature we computed and compared, in one spelling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
"""Whole seconds, ASCII digits only (``str.isdigit`` accepts "²"); 12 digits reach the
year 33658, and cap the work a hostile header can cause."""
_SIGNATURE = re.compile(r"v1=([0-9a-fA-F]{64})")
_HTTP_OWS = " \t"
"""RFC 9110 section 5.6.3: optional whitespace is space and horizontal tab, nothing else."""


def sign(secret_b64: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret_b64)
    digest = hmac.new(key, b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def parse_event(body: bytes) -> dict[str, Any]:
    """The event of an already verified body. Samsara sends a JSON object (``eventId``,
    ``eventType``, ...); anything else is the sender's error, a ValueError whose message
    is safe to return to it."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError("body is not JSON") from exc
    if not isinstance(event, dict):
        raise ValueError(f"body is not a JSON object (got {type(event).__name__})")
    return event


class WebhookVerifier:
    def __init__(self, secret_b64: str, *, max_skew: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        try:
            base64.b64decode(secret_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("SAMSARA_WEBHOOK_SECRET is not valid base64") from exc
        self._secret = secret_b64
        self._max_skew = max_skew
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify(self, timestamp: str | None, signature: str | None, body: bytes) -> tuple[bool, str]:
        """(ok, reason). Never says which part of a signature was wrong."""
        if not timestamp or not signature:
            return False, "missing X-Samsara-Timestamp or X-Samsara-Signature"
        if _TIMESTAMP.fullmatch(timestamp) is None:
            return False, "bad timestamp"
        now = self._clock()
        if abs(now - int(timestamp)) > self._max_skew:
            return False, "timestamp outside the accepted window"
        expected = sign(self._secret, timestamp, body)
        sent = _SIGNATURE.fullmatch(signature.strip(_HTTP_OWS))
        presented = f"v1={sent.group(1).lower()}" if sent else ""
        if not hmac.compare_digest(expected.encode(), presented.encode()):
            return False, "bad signature"
        with self._lock:
            self._seen = {s: t for s, t in self._seen.items() if now - t <= self._max_skew}
            if expected in self._seen:
                return False, "replayed request"
            self._seen[expected] = now
        return True, "ok"
