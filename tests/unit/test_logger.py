"""utils.logger: JSON lines, text lines, secret scrubbing, idempotent set-up."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from utils.logger import bind, configure_logging
from utils.scrub import MASK, Redactor, add_secrets, scrub

pytestmark = pytest.mark.unit

# Secrets are registered process-wide and never forgotten, so each test uses its own.
SAFETYAMP_TOKEN = "sa-tok-7f3a9c1e5b2d4a68"
GRAPH_SECRET = "gr~Secret.Value_9911"


@pytest.fixture
def root_state() -> Iterator[None]:
    """configure_logging changes the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks


@pytest.fixture
def json_lines(root_state: None) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream, secrets=[SAFETYAMP_TOKEN, SecretStr(GRAPH_SECRET)])
    return stream, logging.getLogger("test.sync")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_line_has_the_contract_fields(json_lines: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = json_lines
    log.info("created %d users", 3, extra={"run_id": "r-1", "sync": "employees", "key": 123, "event": "created"})
    (line,) = lines(stream)
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
    stamp = datetime.fromisoformat(line["timestamp"])
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert line["level"] == "INFO"
    assert line["logger"] == "test.sync"
    assert line["message"] == "created 3 users"
    assert line["run_id"] == "r-1" and line["sync"] == "employees" and line["key"] == 123 and line["event"] == "created"
    assert "exception" not in line


def test_every_line_is_one_json_object_even_with_newlines_and_unicode(
    json_lines: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, log = json_lines
    log.warning("name 'Nguyễn 🚀'\nsecond line")
    log.debug("debug too")
    parsed = lines(stream)
    assert len(stream.getvalue().splitlines()) == 2
    assert parsed[0]["message"] == "name 'Nguyễn 🚀'\nsecond line"
    assert parsed[1]["level"] == "DEBUG"


def test_registered_secrets_are_masked_in_message_args_and_extras(
    json_lines: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, log = json_lines
    log.info(f"token is {SAFETYAMP_TOKEN}")
    log.info("graph secret %s and %r", GRAPH_SECRET, {"nested": [SAFETYAMP_TOKEN]})
    log.info(
        "extras",
        extra={"headers": {"X-Debug": f"via {SAFETYAMP_TOKEN}"}, "items": [GRAPH_SECRET, 1], "note": SAFETYAMP_TOKEN},
    )
    text = stream.getvalue()
    assert SAFETYAMP_TOKEN not in text and GRAPH_SECRET not in text
    first, second, third = lines(stream)
    assert first["message"] == f"token is {MASK}"
    assert second["message"] == f"graph secret {MASK} and {{'nested': ['{MASK}']}}"
    assert third["headers"] == {"X-Debug": f"via {MASK}"}
    assert third["items"] == [MASK, 1]
    assert third["note"] == MASK


def test_secrets_in_exception_and_stack_text_are_masked(json_lines: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = json_lines
    try:
        raise ConnectionError(f"GET https://api.example/users failed with token {SAFETYAMP_TOKEN}")
    except ConnectionError:
        log.exception("request failed")
    log.info("where", stack_info=True, extra={"hint": GRAPH_SECRET})
    text = stream.getvalue()
    assert SAFETYAMP_TOKEN not in text and GRAPH_SECRET not in text
    error, info = lines(stream)
    assert error["level"] == "ERROR"
    assert "Traceback (most recent call last)" in error["exception"]
    assert f"failed with token {MASK}" in error["exception"]
    assert list(error)[-1] == "exception"
    assert "stack" in info


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.abc-def_ghi", "Authorization: ***"),
        ("sent Bearer eyJhbGciOi.abc-def_ghi to graph", "sent Bearer *** to graph"),
        ("curl -H 'Authorization: Basic dXNlcjpwYXNz' x", "curl -H 'Authorization: ***' x"),
        (
            "{'Authorization': 'Bearer abc.def', 'Fqdn': 'x.safetyamp.com'}",
            "{'Authorization': '***', 'Fqdn': 'x.safetyamp.com'}",
        ),
        ("X-Api-Key: 0123456789abcdef", "X-Api-Key: ***"),
        ("redis://:hunter2pw@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("rediss://default:hunter2pw@cache.windows.net:6380", "rediss://default:***@cache.windows.net:6380"),
        ("mssql+pyodbc://svc:P%40ss@sql/db?driver=x", "mssql+pyodbc://svc:***@sql/db?driver=x"),
        ("https://x/cb?code=1234&password=hunter2pw&user=u", "https://x/cb?code=***&password=***&user=u"),
        ("https://vault/s?sv=2024&sig=abc%2Bdef&se=1", "https://vault/s?sv=2024&sig=***&se=1"),
        ("Server=tcp:sql;UID=svc;PWD=P@ss;Encrypt=yes", "Server=tcp:sql;UID=svc;PWD=***;Encrypt=yes"),
        ("Server=tcp:sql;PWD={P@ss w;rd};Encrypt=yes", "Server=tcp:sql;PWD=***;Encrypt=yes"),
        ("client_secret=abc123&grant_type=client_credentials", "client_secret=***&grant_type=client_credentials"),
        ('{"access_token": "eyJ0eXAi", "expires_in": 3599}', '{"access_token": "***", "expires_in": 3599}'),
        ('{"password": "a\\"b", "user": "u"}', '{"password": "***", "user": "u"}'),
        # no false positives on ordinary text
        ("http://host:8080/path@x", "http://host:8080/path@x"),
        ("design=nice, tokens are counted", "design=nice, tokens are counted"),
        ("employee 123 created", "employee 123 created"),
    ],
)
def test_credential_shapes_are_masked_without_registration(raw: str, expected: str) -> None:
    assert Redactor().text(raw) == expected


def test_add_secrets_at_runtime_and_url_encoded_forms(json_lines: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = json_lines
    late = "late/token+value=42"
    log.info("before %s", late)
    add_secrets([late])
    log.info("after %s and encoded %s", late, "late%2Ftoken%2Bvalue%3D42")
    before, after = lines(stream)
    assert late in before["message"]  # not yet known: nothing to mask
    assert after["message"] == f"after {MASK} and encoded {MASK}"
    assert scrub(f"x {late} y") == f"x {MASK} y"


def test_short_and_blank_secrets_are_ignored() -> None:
    redactor = Redactor(["", None, "ab", "   "])  # type: ignore[list-item]
    assert redactor.text("ab abc") == "ab abc"
    redactor.add("abcd")  # one string is one secret, not four characters
    assert redactor.text("xabcdx a b") == f"x{MASK}x a b"


def test_longest_secret_wins_when_secrets_overlap() -> None:
    redactor = Redactor(["secret-one", "secret-one-and-more"])
    assert redactor.text("v=secret-one-and-more;") == f"v={MASK};"


def test_child_redactor_honours_parent_values() -> None:
    parent = Redactor(["parent-secret-1"])
    child = Redactor(["child-secret-1"], parent=parent)
    assert child.text("parent-secret-1 child-secret-1") == f"{MASK} {MASK}"
    parent.add(["added-later-1"])
    assert child.text("added-later-1") == MASK


def test_secret_named_extras_and_dict_messages_are_masked_by_key(
    json_lines: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, log = json_lines
    log.info("login", extra={"password": "whatever-it-is", "api_key": "k-123456", "user": "svc"})
    log.info({"event": "token_refreshed", "access_token": "eyJraWQiOi", "expires_in": 3600})
    first, second = lines(stream)
    assert first["password"] == MASK and first["api_key"] == MASK and first["user"] == "svc"
    assert second["event"] == "token_refreshed" and second["access_token"] == MASK and second["expires_in"] == 3600


def test_broken_args_or_objects_never_crash_the_caller(json_lines: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = json_lines

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    log.info("two %s %s", "one")
    log.info("object", extra={"thing": Unprintable()})
    first, second = lines(stream)
    assert "unformattable args" in first["message"]
    assert second["message"] == "log record withheld: secret scrubbing failed"
    assert second["thing"] == MASK


def test_configure_twice_installs_one_handler(root_state: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", first)
    configure_logging("INFO", "json", second)
    configure_logging("INFO", "json", second)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_sync_daemon_handler", False)]
    assert len(ours) == 1
    logging.getLogger("test.once").warning("exactly once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_level_filters_and_bad_settings_are_refused(root_state: None) -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    logging.getLogger("test.level").info("hidden")
    logging.getLogger("test.level").warning("shown")
    assert [line["message"] for line in lines(stream)] == ["shown"]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", "json", stream)
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("INFO", "xml", stream)  # type: ignore[arg-type]


def test_default_stream_is_stderr_at_call_time(root_state: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("test.stderr").info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err.strip().splitlines()[-1])["message"] == "to stderr"


def test_text_format_for_humans(root_state: None) -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", "text", stream)
    record = logging.makeLogRecord(
        {
            "name": "sync.employees",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "updated %s",
            "args": ("mobile_phone",),
            "created": datetime(2026, 11, 22, 1, 2, 3, 456000, tzinfo=UTC).timestamp(),
            "run_id": "r-1",
            "sync": "employees",
            "key": 123,
            "event": "updated",
            "note": "two words",
        }
    )
    handler.handle(record)
    assert stream.getvalue() == (
        '2026-11-22T01:02:03Z INFO sync=employees key=123 updated mobile_phone event=updated note="two words"\n'
    )


def test_text_format_scrubs_and_shows_tracebacks(root_state: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream, secrets=["text-format-secret"])
    log = bind(logging.getLogger("test.text"), sync="vehicles")
    try:
        raise ValueError("bad text-format-secret")
    except ValueError:
        log.exception("failed with Bearer abc.def")
    out = stream.getvalue()
    assert "text-format-secret" not in out and "abc.def" not in out
    first, *rest = out.splitlines()
    assert re.fullmatch(r"\S+Z ERROR sync=vehicles failed with Bearer \*\*\*", first)
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: bad ***"


def test_bind_adds_context_and_call_extras_win(json_lines: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = json_lines
    run_log = bind(log, run_id="r-9", sync="employees")
    record_log = run_log.bind(key="123")
    record_log.info("updated", extra={"event": "updated"})
    record_log.info("override", extra={"sync": "jobs"})
    run_log.info("no key")
    again = bind(record_log, event="x")
    again.info("nested")
    first, second, third, fourth = lines(stream)
    assert (first["run_id"], first["sync"], first["key"], first["event"]) == ("r-9", "employees", "123", "updated")
    assert second["sync"] == "jobs"
    assert "key" not in third
    assert (fourth["key"], fourth["event"]) == ("123", "x")


def test_an_uncaught_exception_is_printed_scrubbed(root_state: None, capsys: pytest.CaptureFixture[str]) -> None:
    # Python prints a crash's traceback itself, past every logging handler.
    configure_logging("INFO", "json", io.StringIO(), secrets=[SAFETYAMP_TOKEN])
    url = "https://h/api?api_key=uncaught-key-123"
    try:
        raise RuntimeError(f"failed {url} with {SAFETYAMP_TOKEN}")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    worker = threading.Thread(target=lambda: (_ for _ in ()).throw(ValueError(url)), name="worker-1")
    worker.start()
    worker.join()
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "Exception in thread worker-1" in err
    assert "uncaught-key-123" not in err and SAFETYAMP_TOKEN not in err
    assert err.count("api_key=***") == 2
