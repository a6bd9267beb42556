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


@pytest.mark.parametrize(
    "ts",
    ["nan", "NaN", "inf", "-inf", "infinity", "1e9", "1700000000.0", "1_700_000_000", " 1700000000", "1700000000\n",
     "+1700000000", "-1", "0x6553f100", "１７００００００００", "²", "1" * 5000],
    ids=lambda v: repr(v)[:16],
)  # fmt: skip
def test_timestamp_must_be_plain_unix_seconds(ts):
    # Samsara sends X-Samsara-Timestamp as whole Unix seconds; anything else, NaN above all
    # (abs(now - nan) > window is False), would pass the window check or be ambiguous.
    v = WebhookVerifier(SECRET, clock=Clock())
    assert v.verify(ts, sign(SECRET, ts, BODY), BODY) == (False, "bad timestamp")


def test_a_nan_timestamp_cannot_replay_after_the_window():
    clock = Clock()
    v = WebhookVerifier(SECRET, clock=clock)
    signature = sign(SECRET, "nan", BODY)
    assert v.verify("nan", signature, BODY)[0] is False
    clock.t += 600
    assert v.verify("nan", signature, BODY)[0] is False


@pytest.mark.parametrize("suffix", ["\xa0", "\x85", "\u2028", "\u3000", " ", "\t", "\x0b", "\x1c"])
def test_a_replay_with_whitespace_added_to_the_signature_is_still_a_replay(suffix):
    v = WebhookVerifier(SECRET, clock=Clock())
    signature = sign(SECRET, "1700000000", BODY)
    assert v.verify("1700000000", signature, BODY) == (True, "ok")
    assert v.verify("1700000000", signature + suffix, BODY)[0] is False
    assert v.verify("1700000000", suffix + signature, BODY)[0] is False
    assert v.verify("1700000000", signature.upper().replace("V1=", "v1="), BODY)[0] is False


def test_signature_header_is_normalised_once_http_whitespace_only():
    v = WebhookVerifier(SECRET, clock=Clock())
    signature = sign(SECRET, "1700000000", BODY)
    # HTTP optional whitespace around a header value is not part of it...
    assert v.verify("1700000000", f" {signature}\t", BODY) == (True, "ok")
    # ...but nothing else is tolerated, so there is one spelling to remember
    v2 = WebhookVerifier(SECRET, clock=Clock())
    assert v2.verify("1700000000", signature + "\xa0", BODY) == (False, "bad signature")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
    ids=lambda v: repr(v)[:16],
)
def test_event_must_be_a_json_object(body, why):
    from utils.webhooks import parse_event

    with pytest.raises(ValueError, match=why):
        parse_event(body)


def test_event_parses_an_object():
    from utils.webhooks import parse_event

    assert parse_event(BODY) == {"eventId": "e1", "eventType": "Alert"}


def _app_and_client(tmp_path):
    from config.settings import load_settings
    from main import Daemon, create_app

    settings = load_settings(
        {
            "SAMSARA_WEBHOOK_SECRET": SECRET,
            "SYNC_TRIGGER_TOKEN": "operator-token-1234567-0123456789abcdef",
            "OUTPUT_DIR": str(tmp_path),
        },
        dotenv_path=None,
    )
    daemon = Daemon(None, ())
    daemon.state.settings = settings
    return daemon, create_app(daemon).test_client()


@pytest.mark.parametrize("body", [b"[1,2]", b'"x"', b"{oops", b"null"])
def test_endpoint_answers_400_for_a_signed_body_that_is_not_an_event(tmp_path, body):
    import time as _time

    daemon, client = _app_and_client(tmp_path)
    ts = str(int(_time.time()))
    resp = client.post(
        "/webhooks/samsara",
        data=body,
        headers={"X-Samsara-Timestamp": ts, "X-Samsara-Signature": sign(SECRET, ts, body)},
    )
    assert resp.status_code == 400, resp.data
    assert "error" in resp.get_json()
    assert daemon.state.triggers.request_after("vehicles", 0) is True  # no event run was pending


def test_endpoint_refuses_a_body_over_the_limit_with_413_before_reading_it(tmp_path):
    import main

    _daemon, client = _app_and_client(tmp_path)
    big = b"{" + b" " * (main.MAX_REQUEST_BODY_BYTES + 1) + b"}"
    for path in ("/webhooks/samsara", "/sync", "/sync/vehicles"):
        resp = client.post(path, data=big, headers={"Authorization": "Bearer operator-token-1234567-0123456789abcdef"})
        assert resp.status_code == 413, (path, resp.status_code)
        assert "limit" in resp.get_json()["error"]


def test_the_sandbox_delivers_events_in_samsaras_shape_and_the_product_accepts_its_signature():
    import json
    import re

    from sandbox.samsara import signed_delivery, webhook_event

    event = webhook_event("VehicleUpdated", {"vehicle": {"id": "281474976710001", "name": "Truck 1"}})
    assert set(event) == {"eventId", "eventTime", "eventType", "orgId", "webhookId", "data"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["eventTime"])
    body, headers = signed_delivery(SECRET, event, timestamp=1_700_000_000)
    assert json.loads(body) == event and headers["X-Samsara-Timestamp"] == "1700000000"
    v = WebhookVerifier(SECRET, clock=Clock())
    assert v.verify(headers["X-Samsara-Timestamp"], headers["X-Samsara-Signature"], body) == (True, "ok")
    other = base64.b64encode(b"y" * 32).decode()
    _, forged = signed_delivery(other, event, timestamp=1_700_000_000)
    assert v.verify(forged["X-Samsara-Timestamp"], forged["X-Samsara-Signature"], body) == (False, "bad signature")
