"""Samsara webhook signature check.

Samsara signs each webhook (developers.samsara.com/docs/webhooks): headers
``X-Samsara-Timestamp`` (Unix seconds) and ``X-Samsara-Signature: v1=<hex>``, where the
hex is HMAC-SHA256, keyed with the webhook's base64-decoded secret key, over
``"v1:" + timestamp + ":" + raw body``. We accept a timestamp at most ``max_skew``
seconds from our clock and refuse a signature already seen within that window, so a
captured request cannot be replayed. Comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections.abc import Callable


def sign(secret_b64: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret_b64)
    digest = hmac.new(key, b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


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
        try:
            sent = float(timestamp)
        except ValueError:
            return False, "bad timestamp"
        now = self._clock()
        if abs(now - sent) > self._max_skew:
            return False, "timestamp outside the accepted window"
        expected = sign(self._secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            return False, "bad signature"
        with self._lock:
            self._seen = {s: t for s, t in self._seen.items() if now - t <= self._max_skew}
            if signature in self._seen:
                return False, "replayed request"
            self._seen[signature] = now
        return True, "ok"
