"""services/safetyamp_api.py against a fake transport playing SafetyAmp."""

from __future__ import annotations

import re

import pytest

from config.settings import load_settings
from services.http import RequestStats
from services.safetyamp_api import SafetyAmpAPI, build_safetyamp
from tests.fakes.transport import FakeClock, FakeTransport, RecordedRequest, Reply, read_timeout
from utils.errors import AmbiguousWriteError, ConfigurationError, FatalError, RecordError, RetriableError

pytestmark = pytest.mark.unit

TOKEN = "sa-token-0123456789"
URL = "https://api.safetyamp.test"


def settings(**extra: str):
    env = {
        "SAFETYAMP_URL": URL,
        "SAFETYAMP_TOKEN": TOKEN,
        "SAFETYAMP_FQDN": "acme.safetyamp.com",
        "SAFETYAMP_USER_AGENT": "Acme-Sync/2.0",
        "SAFETYAMP_PAGE_SIZE": "100",
        "HTTP_MAX_ATTEMPTS": "3",
        **extra,
    }
    return load_settings(env, dotenv_path=None)


def make_api(t: FakeTransport, **extra: str) -> tuple[SafetyAmpAPI, RequestStats, FakeClock]:
    clock = FakeClock()
    stats = RequestStats()
    api = build_safetyamp(settings(**extra), stats, t.session(), sleep=clock.sleep, clock=clock)
    return api, stats, clock


def paged(records: list[dict], *, cap: int | None = None):
    """A 0-based page/limit handler; ``cap`` mimics a server that silently caps limit."""

    def handler(req: RecordedRequest):
        page = int(req.param("page") or 0)
        limit = int(req.param("limit") or 25)
        if cap is not None:
            limit = min(limit, cap)
        return {"data": records[page * limit : (page + 1) * limit]}

    return handler


def users(n: int) -> list[dict]:
    return [{"id": i + 1, "emp_id": str(1000 + i), "email": f"u{i}@acme.test"} for i in range(n)]


def test_required_headers_on_every_request():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(3)))
    t.script("POST", "/api/users", Reply(503, text="busy"))
    t.route("POST", "/api/users", Reply(201, json={"data": {"id": 9}}))
    t.route("PATCH", "/api/users/9", {"data": {"id": 9}})
    t.route("PUT", "/api/sites/4", {"data": {"id": 4}})
    t.route("GET", "/api/site_clusters", {"data": []})
    api, _, _ = make_api(t)
    api.list("users")
    api.list("site_clusters")
    api.create("users", {"emp_id": "1"})
    api.update("users", 9, {"first_name": "A"})
    api.update("sites", 4, {"name": "S"})
    api.find_by("users", "emp_id", "1000")
    assert len(t.requests) >= 8  # includes the retried POST
    for req in t.requests:
        assert req.headers["Authorization"] == f"Bearer {TOKEN}"
        assert req.headers["Fqdn"] == "acme.safetyamp.com"
        # The configured product name first, then which replica and run sent it.
        assert re.fullmatch(r"Acme-Sync/2\.0 \(instance \S+-\d+; run \S+\)", req.headers["User-Agent"])
        assert req.headers["Accept"] == "application/json"


def test_paging_is_zero_based_and_stops_on_short_page_after_a_full_one():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(250)))
    api, stats, _ = make_api(t)
    rows = api.list("users")
    assert [r["id"] for r in rows] == list(range(1, 251))
    assert [(r.param("page"), r.param("limit")) for r in t.requests] == [("0", "100"), ("1", "100"), ("2", "100")]
    assert stats.counts() == {"safetyamp": {"GET": 3}}


def test_exact_multiple_ends_on_empty_page():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(200)))
    api, _, _ = make_api(t)
    assert len(api.list("users")) == 200
    assert [r.param("page") for r in t.requests] == ["0", "1", "2"]


def test_server_capping_the_limit_does_not_truncate_the_list():
    # The server silently caps at 30: every page is "short", none proves the limit is
    # honoured, so reading continues until the empty page.
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(75), cap=30))
    api, _, _ = make_api(t)
    assert len(api.list("users")) == 75
    assert [r.param("page") for r in t.requests] == ["0", "1", "2", "3"]


def test_empty_collection_is_one_request():
    t = FakeTransport()
    t.route("GET", "/api/sites", {"data": []})
    api, _, _ = make_api(t)
    assert api.list("sites") == []
    assert len(t.requests) == 1


def test_failed_page_raises_never_partial():
    t = FakeTransport()
    records = users(250)

    def handler(req):
        if req.param("page") == "1":
            return Reply(500, text="<html>Server Error</html>")
        return paged(records)(req)

    t.route("GET", "/api/users", handler)
    api, _, _ = make_api(t)
    with pytest.raises(RetriableError):
        api.list("users")
    assert len(t.sent("GET", "/api/users")) == 1 + 3  # page 0, then page 1 three times


def test_malformed_page_is_fatal():
    t = FakeTransport()
    t.script("GET", "/api/users", {"data": users(100)}, {"data": {"oops": 1}})
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="malformed"):
        api.list("users")


def test_one_based_server_repeating_page_zero_is_fatal():
    t = FakeTransport()
    records = users(150)

    def one_based(req):  # pages 0 and 1 are the same page
        page = max(1, int(req.param("page"))) - 1
        return {"data": records[page * 100 : (page + 1) * 100]}

    t.route("GET", "/api/users", one_based)
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="0-based"):
        api.list("users")


def test_site_clusters_tree_is_flattened():
    tree = [
        {
            "id": 1,
            "name": "Root",
            "external_code": "VISTA",
            "children": [
                {"id": 2, "name": "East", "children": [{"id": 4, "name": "10 - Ops", "external_code": "10", "children": []}]},
                {"id": 3, "name": "West", "parent_cluster_id": 1},
            ],
        }
    ]
    t = FakeTransport()
    t.route("GET", "/api/site_clusters", {"data": tree})
    api, _, _ = make_api(t)
    rows = api.list("site_clusters")
    assert [(r["id"], r["depth"], r["parent_cluster_id"]) for r in rows] == [(1, 0, None), (2, 1, 1), (4, 2, 2), (3, 1, 1)]
    assert all("children" not in r for r in rows)
    assert t.requests[0].param("page") is None  # no paging on the tree
    assert api.find_by("site_clusters", "external_code", "10")["id"] == 4


def test_create_returns_data_and_sends_bare_payload():
    t = FakeTransport()
    t.route("POST", "/api/users", Reply(201, json={"data": {"id": 42, "emp_id": "7"}}))
    api, stats, _ = make_api(t)
    assert api.create("users", {"emp_id": "7", "first_name": "Ann"}) == {"id": 42, "emp_id": "7"}
    assert t.requests[0].json == {"emp_id": "7", "first_name": "Ann"}
    assert stats.counts() == {"safetyamp": {"POST": 1}}


def test_create_422_is_record_error_with_fields():
    t = FakeTransport()
    t.route(
        "POST",
        "/api/users",
        Reply(
            422,
            json={
                "message": "The mobile phone format is invalid.",
                "errors": {"mobile_phone": ["The mobile phone format is invalid."]},
            },
        ),
    )
    api, _, _ = make_api(t)
    with pytest.raises(RecordError) as info:
        api.create("users", {"mobile_phone": "12"})
    assert info.value.field_errors == {"mobile_phone": ["The mobile phone format is invalid."]}
    assert info.value.service == "safetyamp"


def test_create_timeout_is_ambiguous_and_sent_once():
    t = FakeTransport()
    t.route("POST", "/api/users", read_timeout())
    api, _, _ = make_api(t)
    with pytest.raises(AmbiguousWriteError):
        api.create("users", {"emp_id": "7"})
    assert len(t.requests) == 1


def test_create_with_wrong_shape_is_fatal():
    t = FakeTransport()
    t.route("POST", "/api/users", Reply(201, json={"id": 1}))
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="may have been applied"):
        api.create("users", {})


@pytest.mark.parametrize(
    ("collection", "method"), [("users", "PATCH"), ("site_clusters", "PATCH"), ("sites", "PUT"), ("assets", "PUT")]
)
def test_update_uses_the_collection_method(collection, method):
    t = FakeTransport()
    t.route(method, f"/api/{collection}/5", {"data": {"id": 5, "name": "n"}})
    api, _, _ = make_api(t)
    assert api.update(collection, 5, {"name": "n"}) == {"id": 5, "name": "n"}
    assert (t.requests[0].method, t.requests[0].json) == (method, {"name": "n"})


def test_user_titles_cannot_be_updated():
    t = FakeTransport()
    api, _, _ = make_api(t)
    with pytest.raises(FatalError):
        api.update("user_titles", 1, {"name": "x"})
    assert t.requests == []


def test_find_by_uses_the_filter_and_checks_the_answer():
    t = FakeTransport()
    records = users(3)

    def filtering(req):
        return {"data": [r for r in records if r["emp_id"] == req.param("emp_id")]}

    t.route("GET", "/api/users", filtering)
    api, _, _ = make_api(t)
    assert api.find_by("users", "emp_id", 1001)["id"] == 2  # int vs "1001"
    assert api.find_by("users", "emp_id", "9999") is None
    assert t.requests[0].param("emp_id") == "1001"
    assert len(t.requests) == 2


def test_find_by_with_an_ignored_filter_and_short_page_finds_nothing_wrong():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(3)))  # ignores the emp_id filter
    api, _, _ = make_api(t)
    assert api.find_by("users", "emp_id", "1002")["id"] == 3
    assert api.find_by("users", "emp_id", "5555") is None  # the arbitrary row is not taken


def test_find_by_with_an_ignored_filter_and_full_page_reads_everything():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(230)))  # ignores the filter
    api, _, _ = make_api(t)
    assert api.find_by("users", "emp_id", "1225")["id"] == 226
    pages = [r.param("page") for r in t.requests]
    assert pages == ["0", "0", "1", "2"]  # the filtered probe, then the full read


def test_list_of_non_list_data_is_fatal():
    t = FakeTransport()
    t.route("GET", "/api/roles", {"data": {"id": 1}})
    api, _, _ = make_api(t)
    with pytest.raises(FatalError):
        api.list("roles")


def test_unknown_collection_is_a_programming_error():
    api, _, _ = make_api(FakeTransport())
    with pytest.raises(ValueError):
        api.list("people")


def test_factory_requires_token_and_fqdn():
    s = load_settings({"SAFETYAMP_URL": URL}, dotenv_path=None)
    with pytest.raises(ConfigurationError) as info:
        build_safetyamp(s, RequestStats())
    assert "SAFETYAMP_TOKEN" in str(info.value) and "SAFETYAMP_FQDN" in str(info.value)


def test_factory_applies_the_rate_limit():
    t = FakeTransport()
    t.route("GET", "/api/sites", {"data": []})
    api, stats, clock = make_api(t, SAFETYAMP_RATE_LIMIT_PER_MINUTE="30")
    for _ in range(4):
        api.list("sites")
    # 30/min = one every 2 s, evenly spaced (burst 1: a burst would empty SafetyAmp's
    # bucket and earn 429s from jitter) and paced at 97.5 % of the limit: the 2nd, 3rd
    # and 4th wait 2 / 0.975 s each
    assert clock.sleeps == pytest.approx([2 / 0.975] * 3)
    assert stats.waits()["safetyamp"] == pytest.approx(6 / 0.975)


def test_token_not_in_errors():
    t = FakeTransport()
    t.route("GET", "/api/users", lambda req: Reply(401, text=f"invalid token {req.headers['Authorization']}"))
    api, _, _ = make_api(t)
    with pytest.raises(FatalError) as info:
        api.list("users")
    assert TOKEN not in str(info.value)
