"""Hostile vendor responses against the real adapters (real requests stack, fake transport).

Truncated JSON, wrong types, HTML error pages, huge bodies, missing fields, on reads and
on writes, from SafetyAmp, Samsara and Microsoft Graph. For each one:

* the adapter raises an error of the taxonomy (utils/errors.py), never a raw
  ValueError/KeyError/TypeError, so the sync fails or records the record cleanly;
* a list read is whole or raises (never a partial list that would plan deactivations);
* error messages stay bounded however big the body (they end up in logs and files);
* through the engine (a real SafetyAmpAPI inside a JobSync run), the process does not
  crash: the sync ends ``failed`` with a reason, and nothing is written after a read
  that could not be trusted.

The source-row corpus (tests/data/bad_source_rows.json) is tested end to end in
tests/e2e/test_reliability_bad_input.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from config.settings import load_settings
from services.http import RequestStats
from services.safetyamp_api import build_safetyamp
from services.samsara_api import build_samsara
from tests.fakes.transport import FakeClock, FakeTransport, Reply
from utils.errors import SyncError

pytestmark = pytest.mark.unit

SA = "https://api.safetyamp.test"
SAM = "https://api.samsara.test"
HUGE = 5_000_000
MESSAGE_LIMIT = 2_000


def settings(**extra: str):
    return load_settings(
        {"SAFETYAMP_URL": SA, "SAFETYAMP_TOKEN": "sa-token-0123456789", "SAFETYAMP_FQDN": "acme.safetyamp.com",
         "SAMSARA_URL": SAM, "SAMSARA_API_KEY": "samsara-key-0123456789", "HTTP_MAX_ATTEMPTS": "2",
         "VIEWPOINT_DB_URL": "sqlite://", **extra},
        dotenv_path=None,
    )  # fmt: skip


def safetyamp(t: FakeTransport):
    clock = FakeClock()
    return build_safetyamp(settings(), RequestStats(), t.session(), sleep=clock.sleep, clock=clock)


def samsara(t: FakeTransport):
    clock = FakeClock()
    return build_samsara(settings(), RequestStats(), t.session(), sleep=clock.sleep, clock=clock)


HTML_PAGE = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>502</h1>nginx</body></html>"

# (name, reply): every one of them is a hostile answer to a *read* that claims success or fails oddly.
READ_REPLIES: list[tuple[str, Reply]] = [
    ("truncated json", Reply(200, text='{"data": [{"id": 1, "emp_id": "10', headers={"Content-Type": "application/json"})),
    ("html 200", Reply(200, text=HTML_PAGE, headers={"Content-Type": "text/html"})),
    ("html 404", Reply(404, text=HTML_PAGE, headers={"Content-Type": "text/html"})),
    ("html 502", Reply(502, text=HTML_PAGE, headers={"Content-Type": "text/html"})),
    ("empty body 200", Reply(200, text="")),
    ("json null", Reply(200, json=None)),
    ("json string", Reply(200, json="ok")),
    ("json number", Reply(200, json=42)),
    ("json list", Reply(200, json=[{"id": 1}])),
    ("data missing", Reply(200, json={"items": [{"id": 1}]})),
    ("data null", Reply(200, json={"data": None})),
    ("data string", Reply(200, json={"data": "users"})),
    ("data object", Reply(200, json={"data": {"id": 1}})),
    ("rows not objects", Reply(200, json={"data": [1, "two", None]})),
    ("mixed rows", Reply(200, json={"data": [{"id": 1}, ["nested"]]})),
    ("huge html 500", Reply(500, text="<html>" + "x" * HUGE + "</html>")),
    ("huge json 200 of junk", Reply(200, json={"data": "y" * HUGE})),
    ("nan body", Reply(200, text='{"data": [NaN]}', headers={"Content-Type": "application/json"})),
    ("bom and garbage", Reply(200, text="\ufeff\x00\x01garbage", headers={"Content-Type": "application/json"})),
    ("redirect", Reply(302, text="", headers={"Location": "https://evil.test/api/users"})),
    ("401 html", Reply(401, text=HTML_PAGE)),
    ("429 bad retry-after", Reply(429, text="slow down", headers={"Retry-After": "tomorrow"})),
]


def _raises_cleanly(fn: Any) -> SyncError:
    try:
        value = fn()
    except SyncError as exc:
        assert len(str(exc)) <= MESSAGE_LIMIT, f"unbounded error message ({len(str(exc))} chars)"
        return exc
    raise AssertionError(f"no error raised; got {str(value)[:200]!r}")


@pytest.mark.parametrize(("name", "reply"), READ_REPLIES, ids=[n for n, _ in READ_REPLIES])
def test_safetyamp_list_read_is_whole_or_raises_a_taxonomy_error(name: str, reply: Reply) -> None:
    t = FakeTransport()
    t.route("GET", "/api/users", reply)
    _raises_cleanly(lambda: safetyamp(t).list("users"))


@pytest.mark.parametrize(("name", "reply"), READ_REPLIES, ids=[n for n, _ in READ_REPLIES])
def test_safetyamp_second_page_hostile_gives_no_partial_list(name: str, reply: Reply) -> None:
    t = FakeTransport()
    first = {"data": [{"id": i, "emp_id": str(i)} for i in range(100)]}
    t.script("GET", "/api/users", Reply(200, json=first))
    t.route("GET", "/api/users", reply)
    _raises_cleanly(lambda: safetyamp(t).list("users"))


@pytest.mark.parametrize(("name", "reply"), READ_REPLIES, ids=[n for n, _ in READ_REPLIES])
def test_samsara_page_hostile_raises_a_taxonomy_error(name: str, reply: Reply) -> None:
    t = FakeTransport()
    t.route("GET", "/fleet/vehicles", reply)
    _raises_cleanly(lambda: samsara(t).vehicles())


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("pagination missing", Reply(200, json={"data": [{"id": "1"}]})),
        ("pagination a list", Reply(200, json={"data": [], "pagination": []})),
        ("next page without cursor", Reply(200, json={"data": [], "pagination": {"hasNextPage": True}})),
        ("cursor a number", Reply(200, json={"data": [], "pagination": {"hasNextPage": True, "endCursor": 7}})),
    ],
)
def test_samsara_missing_or_wrong_pagination(name: str, reply: Reply) -> None:
    t = FakeTransport()
    t.route("GET", "/fleet/vehicles", reply)
    _raises_cleanly(lambda: samsara(t).vehicles())


GRAPH_REPLIES = [(n, r) for n, r in READ_REPLIES if n not in ("json list",)] + [
    ("value missing", Reply(200, json={"data": []})),
    ("value not a list", Reply(200, json={"value": {"id": "u1"}})),
    ("nextLink a number", Reply(200, json={"value": [], "@odata.nextLink": 5})),
    ("nextLink elsewhere", Reply(200, json={"value": [], "@odata.nextLink": "https://evil.test/v1.0/users"})),
]


@pytest.mark.parametrize(("name", "reply"), GRAPH_REPLIES, ids=[n for n, _ in GRAPH_REPLIES])
def test_graph_users_page_hostile_raises_a_taxonomy_error(name: str, reply: Reply) -> None:
    from tests.unit.test_graph_api import GRAPH, FakeEntra, make_api

    t = FakeTransport()
    FakeEntra(t)
    t.route("GET", f"{GRAPH}/v1.0/users", reply)
    api, _stats, _clock = make_api(t)
    _raises_cleanly(api.users)


def test_graph_mail_map_ignores_hostile_user_objects() -> None:
    from sync.sync_employees import mail_by_employee_id

    users = [{"employeeId": ["1"], "mail": "a@x.co", "accountEnabled": True}, {"employeeId": "2", "mail": 7, "accountEnabled": True},
             {"employeeId": "3", "mail": "c@x.co", "accountEnabled": "yes"}, {"employeeId": None, "mail": "d@x.co", "accountEnabled": True},
             {"employeeId": " 004 ", "mail": " e@x.co ", "accountEnabled": True}]  # fmt: skip
    mails, dupes = mail_by_employee_id(users)
    assert mails == {"4": "e@x.co"} and dupes == {}  # a list is not an employee number


WRITE_REPLIES: list[tuple[str, Reply]] = [
    ("truncated json 201", Reply(201, text='{"data": {"id": 9', headers={"Content-Type": "application/json"})),
    ("html 200", Reply(200, text=HTML_PAGE)),
    ("data missing", Reply(201, json={"ok": True})),
    ("data a list", Reply(201, json={"data": [{"id": 1}]})),
    ("422 html", Reply(422, text=HTML_PAGE)),
    ("422 errors not a dict", Reply(422, json={"message": "bad", "errors": ["email"]})),
    ("422 huge errors", Reply(422, json={"message": "m" * HUGE, "errors": {f"f{i}": ["x" * 10_000] * 50 for i in range(200)}})),
    ("409 text", Reply(409, text="conflict")),
    ("400 huge html", Reply(400, text="<p>" + "z" * HUGE)),
    ("500 html", Reply(500, text=HTML_PAGE)),
]


@pytest.mark.parametrize(("name", "reply"), WRITE_REPLIES, ids=[n for n, _ in WRITE_REPLIES])
def test_safetyamp_create_hostile_answers_raise_taxonomy_errors_with_bounded_bodies(name: str, reply: Reply) -> None:
    t = FakeTransport()
    t.route("POST", "/api/users", reply)
    exc = _raises_cleanly(lambda: safetyamp(t).create("users", {"emp_id": "1", "email": "a@b.co"}))
    body = getattr(exc, "body", None)
    assert body is None or len(str(body)) <= 3 * MESSAGE_LIMIT
    fields = getattr(exc, "field_errors", None) or {}
    assert sum(len(f) + sum(len(m) for m in ms) for f, ms in fields.items()) <= 100_000


def test_find_by_with_hostile_rows_matches_nothing_rather_than_guessing() -> None:
    t = FakeTransport()
    t.route(
        "GET",
        "/api/users",
        {"data": [{"id": 1, "emp_id": None}, {"id": 2}, {"id": 3, "emp_id": ["1"]}, {"id": 4, "emp_id": {"v": 1}}]},
    )
    assert safetyamp(t).find_by("users", "emp_id", "1") is None


# ---- through the engine: the process never crashes, nothing written after a bad read --------------
def test_jobs_sync_over_hostile_safetyamp_fails_cleanly_and_writes_nothing(tmp_path) -> None:
    from services.data_manager import TargetCache
    from services.event_manager import EventManager
    from sync.base import SyncContext
    from sync.runner import run_syncs
    from tests.fakes.ports import FakeViewpoint
    from utils.failed_sync_tracker import InMemoryTracker
    from utils.metrics import Metrics

    jobs = [{"Job": "J1", "Description": "Bridge", "JobStatus": 1, "Department": "100"},
            {"Job": "J2", "Description": "Old", "JobStatus": 3, "Department": "100"}]  # fmt: skip
    outcomes = {}
    for name, reply in READ_REPLIES:
        t = FakeTransport()
        t.route("GET", "/api/site_clusters", {"data": [{"id": 1, "name": "Root", "external_code": "ROOT", "children": []}]})
        t.route("GET", "/api/sites", reply)
        api = safetyamp(t)
        s = settings(OUTPUT_DIR=str(tmp_path))
        ctx = SyncContext(settings=s, targets=TargetCache(api), tracker=InMemoryTracker(), events=EventManager(tmp_path, f"run-{len(outcomes)}"),
                          metrics=Metrics(), today=__import__("datetime").date(2026, 11, 22),
                          viewpoint=FakeViewpoint([], jobs, []), max_workers=2)  # fmt: skip
        (result,) = run_syncs(ctx, ["jobs"])
        outcomes[name] = (result.status, result.error)
        assert result.status == "failed" and result.error, (name, result)
        assert not result.error.startswith("internal error"), (name, result.error)
        assert [r.method for r in t.requests if r.method != "GET"] == [], f"{name}: wrote after a bad read"
    assert len(outcomes) == len(READ_REPLIES)
