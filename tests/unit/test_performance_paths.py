"""The request- and memory-saving paths of issue 7 (bench/run.py measures them at scale).

- SafetyAmp paging: a known limit lets a short page end a read; a 422 naming the
  largest accepted limit is read at that size; the limiter spaces requests evenly.
- RunTracker: one read of the tracked records per sync, no delete for records that
  were never tracked.
- TargetCache.prefetch: still one read per collection; a failed background read is
  reported by the sync that needs it, and a later one reads afresh.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from config.settings import load_settings
from services.data_manager import TargetCache
from services.http import RequestStats
from services.safetyamp_api import SafetyAmpAPI, build_safetyamp
from tests.fakes.transport import FakeClock, FakeTransport, RecordedRequest, Reply
from utils.errors import RetriableError
from utils.failed_sync_tracker import InMemoryTracker, RunTracker

pytestmark = pytest.mark.unit

URL = "https://api.safetyamp.test"


def make_api(t: FakeTransport, **extra: str) -> tuple[SafetyAmpAPI, FakeClock]:
    env = {
        "SAFETYAMP_URL": URL,
        "SAFETYAMP_TOKEN": "sa-token-0123456789",
        "SAFETYAMP_FQDN": "acme.safetyamp.com",
        "SAFETYAMP_USER_AGENT": "Acme-Sync/2.0",
        "HTTP_MAX_ATTEMPTS": "2",
        **extra,
    }
    clock = FakeClock()
    api = build_safetyamp(load_settings(env, dotenv_path=None), RequestStats(), t.session(), sleep=clock.sleep, clock=clock)
    return api, clock


def paged(records: list[dict[str, Any]], *, max_limit: int | None = None):
    def handler(req: RecordedRequest) -> Any:
        page, limit = int(req.param("page") or 0), int(req.param("limit") or 25)
        if max_limit is not None and limit > max_limit:
            message = f"The limit field must not be greater than {max_limit}."
            return Reply(422, json={"message": message, "errors": {"limit": [message]}})
        return {"data": records[page * limit : (page + 1) * limit]}

    return handler


def users(n: int) -> list[dict[str, Any]]:
    return [{"id": i + 1, "emp_id": str(1000 + i)} for i in range(n)]


def test_default_page_size_is_the_largest_the_emulator_accepts():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(10)))
    api, _ = make_api(t)
    api.list("users")
    assert t.requests[0].param("limit") == "1000"


def test_short_page_ends_the_read_when_the_limit_is_known_to_be_honoured():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(250)))
    api, _ = make_api(t, SAFETYAMP_PAGE_SIZE="100", SAFETYAMP_MAX_PAGE_SIZE="1000")
    assert len(api.list("users")) == 250
    assert [r.param("page") for r in t.requests] == ["0", "1", "2"]
    t2 = FakeTransport()
    t2.route("GET", "/api/users", paged(users(40)))
    api2, _ = make_api(t2, SAFETYAMP_PAGE_SIZE="100", SAFETYAMP_MAX_PAGE_SIZE="100")
    assert len(api2.list("users")) == 40
    assert len(t2.requests) == 1  # one short page: the end, no empty page asked for


def test_unknown_limit_short_first_page_costs_one_more_request():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(40)))
    api, _ = make_api(t, SAFETYAMP_PAGE_SIZE="100")
    assert len(api.list("users")) == 40
    assert [r.param("page") for r in t.requests] == ["0", "1"]


def test_page_size_above_the_limit_a_422_names_is_read_at_that_limit():
    t = FakeTransport()
    t.route("GET", "/api/users", paged(users(120), max_limit=50))
    api, _ = make_api(t)
    assert len(api.list("users")) == 120
    assert [(r.param("page"), r.param("limit")) for r in t.requests] == [("0", "1000"), ("0", "50"), ("1", "50"), ("2", "50")]
    assert api.page_size == 50 and api.limit_honoured  # remembered: the next list starts at 50
    t.requests.clear()
    api.list("users")
    assert t.requests[0].param("limit") == "50"


def test_a_422_on_another_field_is_not_taken_for_a_limit():
    t = FakeTransport()
    t.route("GET", "/api/users", Reply(422, json={"message": "bad", "errors": {"page": ["The page must be at least 0."]}}))
    api, _ = make_api(t)
    with pytest.raises(Exception, match="422"):
        api.list("users")
    assert len(t.requests) == 1


def test_limiter_spaces_requests_evenly_without_a_burst():
    t = FakeTransport()
    t.route("GET", "/api/sites", {"data": []})
    api, clock = make_api(t, SAFETYAMP_RATE_LIMIT_PER_MINUTE="60")
    for _ in range(3):
        api.list("sites")
    assert clock.sleeps == pytest.approx([1 / 0.975] * 2)  # 97.5 % of the limit, no burst


# --------------------------------------------------------------------------- RunTracker
class CountingTracker(InMemoryTracker):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def list(self, sync: str | None = None) -> list[dict[str, Any]]:
        self.calls.append("list")
        return super().list(sync)

    def should_skip(self, sync: str, key: str, fingerprint: str) -> bool:
        self.calls.append("should_skip")
        return super().should_skip(sync, key, fingerprint)

    def record_success(self, sync: str, key: str) -> None:
        self.calls.append(f"success:{key}")
        super().record_success(sync, key)


def test_run_tracker_reads_each_sync_once_and_answers_like_the_tracker():
    inner = CountingTracker()
    inner.record_failure("employees", "7", "fp", "422 e-mail taken", ["email"])
    run = RunTracker(inner)
    assert run.should_skip("employees", "7", "fp") is True
    assert run.should_skip("employees", "7", "fp-changed") is False  # inputs changed: try again
    assert run.should_skip("employees", "8", "fp") is False
    assert [run.should_skip("employees", str(k), "x") for k in range(100)].count(True) == 0
    assert inner.calls == ["list"]
    assert inner.should_skip("employees", "7", "fp") is True  # same answer as the tracker itself


def test_run_tracker_deletes_only_tracked_records():
    inner = CountingTracker()
    inner.record_failure("employees", "7", "fp", "422", [])
    run = RunTracker(inner)
    run.should_skip("employees", "7", "fp-new")
    run.record_success("employees", "8")  # never tracked: nothing to delete
    run.record_success("employees", "7")
    assert [c for c in inner.calls if c.startswith("success")] == ["success:7"]
    assert inner.count("employees") == 0
    run.record_failure("employees", "9", "fp", "422", [])
    run.record_success("employees", "9")  # failed earlier in this run, then went through
    assert inner.count("employees") == 0
    assert run.count("employees") == 0  # everything else passes through


# --------------------------------------------------------------------------- prefetch
class SlowTarget:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.reads: list[str] = []
        self.fail = set(fail or ())
        self.release = threading.Event()
        self._lock = threading.Lock()

    def list(self, collection: str) -> list[dict[str, Any]]:
        with self._lock:
            self.reads.append(collection)
        self.release.wait(5)
        if collection in self.fail:
            self.fail.discard(collection)
            raise RetriableError(f"{collection} read failed", service="safetyamp")
        return [{"id": 1, "name": collection}]


def test_prefetch_reads_each_collection_once_even_when_a_sync_asks_meanwhile():
    target = SlowTarget()
    cache = TargetCache(target)  # type: ignore[arg-type]
    thread = cache.prefetch(["users", "sites", "users"])
    got: list[Any] = []
    asker = threading.Thread(target=lambda: got.append(cache.get("users")))
    asker.start()
    target.release.set()
    asker.join(5)
    thread.join(5)
    assert got == [[{"id": 1, "name": "users"}]]
    assert cache.get("sites") == [{"id": 1, "name": "sites"}]
    assert target.reads == ["users", "sites"]


def test_failed_prefetch_is_reported_to_the_first_sync_then_read_afresh():
    target = SlowTarget(fail={"users"})
    target.release.set()
    cache = TargetCache(target)  # type: ignore[arg-type]
    cache.prefetch(["users"]).join(5)
    with pytest.raises(RetriableError, match="users read failed"):
        cache.get("users")  # the background read's error, not a second read
    assert target.reads == ["users"]
    assert cache.get("users") == [{"id": 1, "name": "users"}]  # a later sync reads again
    assert target.reads == ["users", "users"]


def test_records_folded_into_the_cache_share_their_field_names():
    """Each create's answer is parsed on its own, so its field names are strings of its
    own (a JSON parser shares them within one document only). The cache keeps every
    created record until the shadow is saved: at 50,000 employees, 70,000 records with
    ~20 private field names each were about 70 MB of a first run's peak. Folded in, a
    record's field names are the cache's shared ones; its values are untouched."""
    import json

    target = SlowTarget()
    target.release.set()
    cache = TargetCache(target)  # type: ignore[arg-type]
    cache.get("users")
    answers = [json.loads(json.dumps({"id": n, "emp_id": str(n), "time_zone": "America/Chicago"})) for n in (2, 3)]
    assert answers[0].keys() == answers[1].keys() and next(iter(answers[0])) is not next(iter(answers[1]))
    for answer in answers:
        cache.put("users", answer)
    cache.merge("users", 3, json.loads('{"emp_id": "30"}'))
    kept = {row["id"]: row for row in cache.get("users")}
    assert kept[2] == {"id": 2, "emp_id": "2", "time_zone": "America/Chicago"} and kept[3]["emp_id"] == "30"
    assert all(a is b for a, b in zip(kept[2], kept[3], strict=True))
