"""services.oneroster_api through the sandbox's OneRoster emulator (both versions), and the
delta cursor in real Redis.

Redis: redis://127.0.0.1:6379/15 (TEST_REDIS_URL overrides), a unique key prefix per test,
removed afterwards; unreachable Redis fails the test in CI (CI=true) and skips it elsewhere.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.serving import make_server

from config.settings import load_settings
from sandbox import oneroster
from sandbox.faults import FaultInjector
from sandbox.roster_seed import ensure_roster, iso, load_credentials, open_roster
from sandbox.store import open_store
from sandbox.wsgi import EmulatorMiddleware, QuietRequestHandler
from services.http import RequestStats
from services.oneroster_api import OneRosterAPI, RedisCursorStore, build_cursor_store, build_oneroster, parse_link_header
from utils.errors import FatalError, SourceUnavailableError

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
Wrap = Callable[[Any], Any]


class District:
    def __init__(self, root: Path, url: str) -> None:
        self.root, self.url = root, url
        self.creds = load_credentials(root)
        self.db = open_roster(root)

    def count(self, kind: str, where: str = "") -> int:
        return len(self.db.all(kind, where))

    def source(self, version: str = "1.2", page_size: int = 7, **env: str) -> OneRosterAPI:
        settings = load_settings(
            {"ONEROSTER_URL": self.url, "ONEROSTER_VERSION": version, "ONEROSTER_CLIENT_ID": self.creds.client_id,
             "ONEROSTER_CLIENT_SECRET": self.creds.client_secret, "ONEROSTER_PAGE_SIZE": str(page_size),
             "HTTP_MAX_ATTEMPTS": "2", **env},
            dotenv_path=None,
        )  # fmt: skip
        return build_oneroster(settings, RequestStats(), sleep=lambda _s: None)


def start(root: Path, wrap: Wrap | None = None, faults: dict[str, float] | None = None) -> Iterator[District]:
    root.mkdir(parents=True, exist_ok=True)
    ensure_roster(root, size=30, seed=5)
    store = open_store(root)
    app: Any = oneroster.create_app(root, creds=load_credentials(root), seed="5")
    if wrap is not None:
        app = wrap(app)
    app = EmulatorMiddleware(
        app, service="oneroster", store=store, injector=FaultInjector("oneroster", faults, 1), errors=oneroster.OneRosterErrors()
    )
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    district = District(root, f"http://127.0.0.1:{server.server_port}")
    try:
        yield district
    finally:
        server.shutdown()
        server.server_close()
        district.db.close()
        store.close()


@pytest.fixture
def district(tmp_path: Path) -> Iterator[District]:
    yield from start(tmp_path / "district")


@pytest.mark.parametrize(("version", "auth"), [("1.2", "oauth2"), ("1.1", "oauth2"), ("1.1", "oauth1")])
def test_full_read_pages_through_short_pages_in_both_versions(district: District, version: str, auth: str) -> None:
    api = district.source(version, ONEROSTER_AUTH=auth)
    snap = api.read(None, ())
    assert snap.source == f"oneroster-rest-{version}" and not snap.is_delta
    assert len(snap.users) == district.count("users")
    assert len(snap.classes) == district.count("classes")
    assert len(snap.enrollments) == district.count("enrollments")
    teacher = next(u for u in snap.users.values() if u.primary_role == "teacher")
    assert teacher.orgs and teacher.email and teacher.username
    # tobedeleted records are listed like the others
    assert any(u.status == "tobedeleted" for u in snap.users.values())
    assert any(e.status == "tobedeleted" for e in snap.enrollments.values())
    assert any(c.sourced_id.startswith("{cls:") for c in snap.classes.values())  # braces and colons survive


def test_short_pages_happen_and_link_and_total_headers_are_served(district: District) -> None:
    api = district.source("1.2", page_size=7)
    resp = api.http.request("GET", "/ims/oneroster/rostering/v1p2/enrollments", params={"limit": 7, "offset": 0})
    total = int(resp.headers["X-Total-Count"])
    links = parse_link_header(resp.headers["Link"])
    assert total == district.count("enrollments") and {"next", "first", "last"} <= set(links)
    sizes = []
    offset = 0
    while offset < total:
        page = api.http.request("GET", "/ims/oneroster/rostering/v1p2/enrollments", params={"limit": 7, "offset": offset}).json()
        sizes.append(len(page["enrollments"]))
        offset += sizes[-1]
    assert any(0 < n < 7 for n in sizes[:-1]), "the emulator should serve some short pages before the end"


def test_delta_reads_only_what_changed_since_the_cursor(district: District) -> None:
    now = datetime.now(UTC)
    student = next(u for u in district.db.all("users") if u["role"] == "student" and u["status"] == "active")
    student.update(status="tobedeleted", dateLastModified=iso(now))
    district.db.put("users", student)
    snap = district.source("1.1").read(now - timedelta(minutes=1), ())
    assert snap.is_delta and (snap.users_full, snap.enrollments_full) == (False, False)
    assert list(snap.users) == [student["sourcedId"]] and snap.users[student["sourcedId"]].status == "tobedeleted"
    assert snap.classes == {} and snap.enrollments == {}


def test_schools_are_read_one_by_one_and_a_failed_school_is_a_gap(tmp_path: Path) -> None:
    def fail_school_2(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
            if "/schools/school-02/" in environ["PATH_INFO"]:
                start_response("503 Service Unavailable", [("Content-Type", "application/json")])
                return [b"{}"]
            return app(environ, start_response)

        return wrapped

    for d in start(tmp_path / "d", wrap=fail_school_2):
        snap = d.source("1.2").read(None, ("school-01", "school-02"))
        assert snap.enrollment_gaps == {"school-02"}
        assert {e.school for e in snap.enrollments.values()} == {"school-01"}


def test_a_failed_page_is_never_the_end_of_a_collection(tmp_path: Path) -> None:
    def fail_second_page(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
            if environ["PATH_INFO"].endswith("/users") and "offset=0" not in environ.get("QUERY_STRING", ""):
                start_response("500 Internal Server Error", [("Content-Type", "application/json")])
                return [b"{}"]
            return app(environ, start_response)

        return wrapped

    for d in start(tmp_path / "d", wrap=fail_second_page):
        with pytest.raises(SourceUnavailableError, match="users could not be read completely"):
            d.source("1.2").read(None, ())


def test_an_empty_page_while_the_count_says_more_is_incomplete(tmp_path: Path) -> None:
    def empty_third_page(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
            if environ["PATH_INFO"].endswith("/classes") and "offset=0" not in environ.get("QUERY_STRING", ""):

                def strip(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
                    return start_response(
                        status, [(k, v) for k, v in headers if k.lower() not in ("link", "content-length")], exc
                    )

                body = b"".join(app(environ, strip))
                data = json.loads(body)
                data["classes"] = []
                return [json.dumps(data).encode()]
            return app(environ, start_response)

        return wrapped

    for d in start(tmp_path / "d", wrap=empty_third_page):
        with pytest.raises(SourceUnavailableError, match="empty page"):
            d.source("1.2").read(None, ())


def test_without_headers_the_walk_goes_on_until_an_empty_page(tmp_path: Path) -> None:
    def no_headers(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
            def strip(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
                return start_response(status, [(k, v) for k, v in headers if k.lower() not in ("link", "x-total-count")], exc)

            return app(environ, strip)

        return wrapped

    for d in start(tmp_path / "d", wrap=no_headers):
        snap = d.source("1.2", page_size=7).read(None, ())
        assert len(snap.users) == d.count("users")  # short pages did not end the walk


def test_tokens_scopes_and_a_revoked_token(district: District) -> None:
    api = district.source("1.2")
    api.read(None, ())
    assert api.tokens is not None and api.tokens.fetched == 1  # one token for the whole read
    api.tokens._token = "revoked"  # the server no longer knows it: 401, one new token, go on
    api.collection("/orgs", "orgs")
    assert api.tokens.fetched == 2
    posted = district.source("1.2", ONEROSTER_TOKEN_AUTH_METHOD="post")  # client_id/secret in the body
    assert posted.collection("/orgs", "orgs")
    with pytest.raises(SourceUnavailableError, match="refused the client credentials"):
        district.source("1.2", ONEROSTER_SCOPES="https://example.com/not-a-scope").read(None, ())
    with pytest.raises(SourceUnavailableError, match="refused the client credentials"):
        district.source("1.2", ONEROSTER_CLIENT_SECRET="wrong").read(None, ())
    with pytest.raises(SourceUnavailableError, match="401"):
        district.source("1.1", ONEROSTER_AUTH="oauth1", ONEROSTER_CLIENT_SECRET="wrong").read(None, ())
    # OAuth 1.0a is a 1.1 binding: the 1.2 paths refuse it
    with pytest.raises(SourceUnavailableError, match="401"):
        district.source("1.2", ONEROSTER_AUTH="oauth1").read(None, ())


def test_link_to_another_origin_is_not_followed(tmp_path: Path) -> None:
    def evil_link(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
            def swap(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
                out = [(k, v) for k, v in headers if k.lower() != "link"] + [
                    ("Link", '<https://evil.example/steal?offset=7>; rel="next"')
                ]
                return start_response(status, out, exc)

            return app(environ, swap)

        return wrapped

    for d in start(tmp_path / "d", wrap=evil_link):
        with pytest.raises(FatalError, match="another origin"):
            d.source("1.2").collection("/users", "users")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required in CI and did not answer: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    yield client
    client.close()


def test_cursor_store_in_real_redis(redis_client: redis.Redis) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    settings = load_settings({"REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix}, dotenv_path=None)
    store = build_cursor_store(settings)
    try:
        assert store.load() is None
        store.save({"cursor": "2026-11-22T01:00:00Z", "last_full": "2026-11-21T01:00:00Z"})
        assert store.load() == {"cursor": "2026-11-22T01:00:00Z", "last_full": "2026-11-21T01:00:00Z"}
        assert redis_client.exists(f"{prefix}rosters:cursor")
        # another SIS, SCIM tenant or school selection: that cursor is not used (full read)
        moved = load_settings(
            {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix, "SCIM_URL": "https://other-tenant.example/scim/v2"},
            dotenv_path=None,
        )
        assert build_cursor_store(moved).load() is None
        assert store.load() is not None  # the original scope still has its cursor
        redis_client.set(f"{prefix}rosters:cursor", "not json")
        assert store.load() is None  # unreadable: a full run, never a crash
    finally:
        for key in redis_client.scan_iter(f"{prefix}*"):
            redis_client.delete(key)
    down = RedisCursorStore(
        redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)), prefix
    )
    assert down.load() is None  # Redis down: full read
    down.save({"cursor": "x", "last_full": "x"})  # logged, not raised
