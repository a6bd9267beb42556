from __future__ import annotations

import base64

import pytest

from utils.webhooks import WebhookVerifier, sign

pytestmark = pytest.mark.unit
SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = b'{"eventId":"e1","eventType":"Alert"}'


class Clock:
    t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def test_known_vector_and_accept():
    # Computed outside Python:
    # printf 'v1:1700000000:%s' "$BODY" | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
    expected = "ce5bb2caa7ceaeb533f841ca83f8cae732bd458744b219187a978fc24e18f75c"
    assert sign(SECRET, "1700000000", BODY) == f"v1={expected}"
    v = WebhookVerifier(SECRET, clock=Clock())
    assert v.verify("1700000000", f"v1={expected}", BODY) == (True, "ok")


@pytest.mark.parametrize(
    ("ts", "sig_ts", "body", "reason"),
    [
        ("1700000000", "1700000000", BODY + b" ", "bad signature"),  # tampered body
        ("1699999000", "1699999000", BODY, "timestamp outside the accepted window"),  # too old
        ("1700000000", "1700000001", BODY, "bad signature"),  # signature for another timestamp
        ("abc", "abc", BODY, "bad timestamp"),
    ],
)
def test_refusals(ts, sig_ts, body, reason):
    v = WebhookVerifier(SECRET, clock=Clock())
    signature = sign(SECRET, sig_ts, BODY) if sig_ts != "abc" else "v1=00"
    assert v.verify(ts, signature, body) == (False, reason)


def test_replay_refused_and_missing_headers():
    v = WebhookVerifier(SECRET, clock=Clock())
    signature = sign(SECRET, "1700000000", BODY)
    assert v.verify("1700000000", signature, BODY)[0]
    assert v.verify("1700000000", signature, BODY) == (False, "replayed request")
    assert v.verify(None, signature, BODY)[0] is False


def test_wrong_secret_and_bad_config():
    other = base64.b64encode(b"x" * 32).decode()
    v = WebhookVerifier(SECRET, clock=Clock())
    assert v.verify("1700000000", sign(other, "1700000000", BODY), BODY) == (False, "bad signature")
    with pytest.raises(ValueError):
        WebhookVerifier("not base64!!")
