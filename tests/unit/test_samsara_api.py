"""services/samsara_api.py against a fake transport playing Samsara's cursor paging."""

from __future__ import annotations

import pytest

from config.settings import load_settings
from services.http import RequestStats
from services.samsara_api import SamsaraAPI, build_samsara
from tests.fakes.transport import FakeClock, FakeTransport, RecordedRequest, Reply
from utils.errors import ConfigurationError, FatalError

pytestmark = pytest.mark.unit

KEY = "samsara-key-abcdef123456"
URL = "https://api.samsara.test"


def make_api(t: FakeTransport, **extra: str) -> tuple[SamsaraAPI, RequestStats, FakeClock]:
    env = {"SAMSARA_URL": URL, "SAMSARA_API_KEY": KEY, "SAMSARA_PAGE_SIZE": "2", "HTTP_MAX_ATTEMPTS": "3", **extra}
    clock = FakeClock()
    stats = RequestStats()
    api = build_samsara(load_settings(env, dotenv_path=None), stats, t.session(), sleep=clock.sleep, clock=clock)
    return api, stats, clock


def cursor_pages(pages: list[list[dict]]):
    """Page i is answered for after=c{i} (page 0 without after)."""

    def handler(req: RecordedRequest):
        after = req.param("after")
        i = 0 if after is None else int(after[1:])
        return {
            "data": pages[i],
            "pagination": {"endCursor": f"c{i + 1}" if i + 1 < len(pages) else "", "hasNextPage": i + 1 < len(pages)},
        }

    return handler


def test_follows_cursors_repeating_params_until_has_next_page_false():
    t = FakeTransport()
    t.route("GET", "/fleet/vehicles", cursor_pages([[{"id": "1"}, {"id": "2"}], [{"id": "3"}]]))
    api, stats, _ = make_api(t)
    assert [v["id"] for v in api.vehicles()] == ["1", "2", "3"]
    assert [(r.param("limit"), r.param("after")) for r in t.requests] == [("2", None), ("2", "c1")]
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in t.requests)
    assert stats.counts() == {"samsara": {"GET": 2}}


def test_empty_page_with_has_next_page_true_continues():
    t = FakeTransport()
    t.route("GET", "/fleet/drivers", cursor_pages([[{"id": "d1"}], [], [], [{"id": "d2"}]]))
    api, _, _ = make_api(t)
    assert [d["id"] for d in api.drivers()] == ["d1", "d2"]
    assert len(t.requests) == 4


def test_cursor_loop_is_fatal():
    t = FakeTransport()
    t.route("GET", "/fleet/vehicles", {"data": [{"id": "1"}], "pagination": {"endCursor": "same", "hasNextPage": True}})
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="twice"):
        api.vehicles()
    assert len(t.requests) == 2


def test_has_next_page_without_cursor_is_fatal():
    t = FakeTransport()
    t.route("GET", "/fleet/vehicles", {"data": [], "pagination": {"endCursor": "", "hasNextPage": True}})
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="endCursor"):
        api.vehicles()


def test_malformed_page_is_fatal():
    t = FakeTransport()
    t.route("GET", "/fleet/vehicles", {"vehicles": []})
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="malformed"):
        api.vehicles()


def test_429_fractional_retry_after_is_honoured():
    t = FakeTransport()
    t.script("GET", "/fleet/vehicles", Reply(429, json={"message": "rate limited"}, headers={"Retry-After": "0.40235"}))
    t.route("GET", "/fleet/vehicles", cursor_pages([[{"id": "1"}]]))
    api, stats, clock = make_api(t)
    assert api.vehicles() == [{"id": "1"}]
    assert pytest.approx(0.40235) in clock.sleeps
    assert stats.counts() == {"samsara": {"GET": 2}}
    assert stats.waits()["samsara"] >= 0.40235


def test_own_rate_limit_per_second():
    t = FakeTransport()
    t.route("GET", "/fleet/vehicles", cursor_pages([[{"id": str(i)}] for i in range(6)]))
    api, _, clock = make_api(t, SAMSARA_RATE_LIMIT_PER_SECOND="2")
    start = clock()
    assert len(api.vehicles()) == 6
    # burst 2, then one every 0.5 s
    assert clock() - start == pytest.approx(2.0)


def test_factory_requires_key_and_caps_page_size():
    with pytest.raises(ConfigurationError, match="SAMSARA_API_KEY"):
        build_samsara(load_settings({}, dotenv_path=None), RequestStats())
    api = build_samsara(load_settings({"SAMSARA_API_KEY": KEY}, dotenv_path=None), RequestStats(), FakeTransport().session())
    assert api.page_size == 512


def test_key_not_in_errors():
    t = FakeTransport()
    t.route("GET", "/fleet/vehicles", lambda req: Reply(401, json={"message": f"bad {req.headers['Authorization']}"}))
    api, _, _ = make_api(t)
    with pytest.raises(FatalError) as info:
        api.vehicles()
    assert KEY not in str(info.value)
