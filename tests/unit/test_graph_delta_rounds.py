"""GraphAPI.delta against a fake transport (refused tokens, malformed rounds, a deltaLink
leaving Graph) and how a round is applied to the kept users (services/graph_delta.py)."""

from __future__ import annotations

import pytest

from services.graph_api import DeltaRound, DeltaTokenRefused
from services.graph_delta import _apply, decode_users, encode_users
from tests.fakes.transport import FakeTransport, Reply
from tests.unit.test_graph_api import GRAPH, FakeEntra, make_api
from utils.errors import FatalError

pytestmark = pytest.mark.unit

DELTA = f"{GRAPH}/v1.0/users/delta"


def graph_error(status: int, code: str) -> Reply:
    return Reply(status, json={"error": {"code": code, "message": "m", "innerError": {}}})


def test_a_round_follows_next_links_to_the_delta_link_and_splits_removals() -> None:
    t = FakeTransport()
    FakeEntra(t)

    def handler(req):  # type: ignore[no-untyped-def]
        if req.param("$skiptoken") is None:
            return {"value": [{"id": "u1", "mail": "a@x.test"}], "@odata.nextLink": f"{DELTA}?$skiptoken=p2"}
        return {"value": [{"id": "u2", "@removed": {"reason": "changed"}}], "@odata.deltaLink": f"{DELTA}?$deltatoken=d1"}

    t.route("GET", "/v1.0/users/delta", handler)
    api, _stats, _clock = make_api(t)
    round_ = api.delta(None)
    assert (round_.full, round_.pages, round_.delta_link) == (True, 2, f"{DELTA}?$deltatoken=d1")
    assert round_.changed == [{"id": "u1", "mail": "a@x.test"}] and round_.removed == ["u2"]
    first = t.sent("GET", "/v1.0/users/delta")[0].url
    assert "$select=id,employeeId,mail,userPrincipalName,accountEnabled" in first


@pytest.mark.parametrize(
    ("reply", "refused"),
    [
        (graph_error(410, "resyncRequired"), True),
        (graph_error(400, "syncStateNotFound"), True),
        (graph_error(400, "Request_BadRequest"), False),
        (graph_error(403, "Authorization_RequestDenied"), False),
    ],
)
def test_only_a_refused_sync_state_asks_for_a_new_round(reply: Reply, refused: bool) -> None:
    t = FakeTransport()
    FakeEntra(t)
    t.route("GET", "/v1.0/users/delta", reply)
    api, _stats, _clock = make_api(t)
    with pytest.raises(DeltaTokenRefused if refused else FatalError):
        api.delta(f"{DELTA}?$deltatoken=old")
    with pytest.raises(FatalError):  # a first round that fails is an error, never a loop
        api.delta(None)


@pytest.mark.parametrize(
    "last_page",
    [
        {"value": []},  # no deltaLink at all
        {"value": [{"mail": "no-id@x.test"}], "@odata.deltaLink": f"{DELTA}?$deltatoken=d"},
        {"value": [], "@odata.deltaLink": 7},
    ],
)
def test_malformed_rounds_are_fatal(last_page: dict) -> None:
    t = FakeTransport()
    FakeEntra(t)
    t.route("GET", "/v1.0/users/delta", last_page)
    api, _stats, _clock = make_api(t)
    with pytest.raises(FatalError):
        api.delta(None)


def test_a_next_link_leaving_graph_is_never_followed() -> None:
    t = FakeTransport()
    FakeEntra(t)
    t.route("GET", "/v1.0/users/delta", {"value": [], "@odata.nextLink": "https://evil.test/v1.0/users/delta?x=1"})
    api, _stats, _clock = make_api(t)
    with pytest.raises(FatalError, match="leaves"):
        api.delta(None)
    assert not [r for r in t.requests if "evil.test" in r.url]


def test_apply_replaces_present_properties_keeps_absent_ones_and_drops_removed() -> None:
    users = {"u1": ["1", "a@x.test", "a@x.test", True], "u2": ["2", "b@x.test", "b@x.test", True]}
    round_ = DeltaRound(
        full=False,
        changed=[
            {"id": "u1", "mail": None},  # set to null: replaced; the rest absent: kept
            {"id": "u3", "employeeId": "3", "mail": "c@x.test", "userPrincipalName": "c@x.test", "accountEnabled": True},
            {"id": "u3", "accountEnabled": False},  # the same user twice in a round: the later wins
        ],
        removed=["u2", "never-seen"],
    )
    assert _apply(users, round_) is True
    assert users == {"u1": ["1", None, "a@x.test", True], "u3": ["3", "c@x.test", "c@x.test", False]}
    assert _apply(users, DeltaRound(full=False, changed=[{"id": "u1", "mail": None}])) is False


def test_the_users_encoding_round_trips_and_refuses_garbage() -> None:
    users = {"u1": ["1", "a@x.test", "a@x.test", True], "u2": [None, None, "svc@x.test", False]}
    assert decode_users(encode_users(users)) == users
    with pytest.raises(ValueError):
        decode_users(encode_users({"u1": ["too", "short"]}))  # type: ignore[dict-item]


class _Entry(dict):  # what Graph answered for one user (a plain dict cannot be weakly referenced)
    pass


class _Graph:
    """A GraphAPI whose delta rounds answer ``_Entry`` objects we can watch."""

    base = "https://graph.test"

    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries
        self.http = self

    @property
    def base_url(self) -> str:
        return self.base

    def url_for(self, path: str) -> str:
        return self.base + path

    def delta(self, link: str | None) -> DeltaRound:
        changed, self.entries = self.entries, []
        return DeltaRound(full=link is None, changed=changed, delta_link=f"{self.base}/v1.0/users/delta?$deltatoken=d", pages=1)


class _Hash:
    """The few Redis hash commands RedisGraphDeltaStore uses, in memory."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}

    def hget(self, key: str, field: str) -> str | None:
        return self.data.get(key, {}).get(field)

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        self.data.setdefault(key, {}).update(mapping)


def test_the_directory_keeps_no_answer_of_graph_after_a_round() -> None:
    """The users a round returned are kept once, as the compact users map; the raw
    entries of Graph's pages are let go (a full round at 50,000 employees held them,
    for a log line, through the whole run); the round's summary stays."""
    import gc
    import weakref

    from services.graph_delta import DeltaUserDirectory, RedisGraphDeltaStore

    entries = [
        _Entry(id=f"u{n}", employeeId=str(n), mail=f"p{n}@x.test", userPrincipalName=f"p{n}@x.test", accountEnabled=True)
        for n in range(50)
    ]
    refs = [weakref.ref(e) for e in entries]
    directory = DeltaUserDirectory(_Graph(entries), RedisGraphDeltaStore(_Hash(), "t:"))  # type: ignore[arg-type]
    del entries
    rows = directory.users()
    assert sorted(r["id"] for r in rows) == sorted(f"u{n}" for n in range(50))
    gc.collect()
    assert sum(1 for ref in refs if ref() is not None) == 0
    summary = directory.last_round
    assert summary is not None and (summary.full, summary.pages, summary.removed) == (True, 1, [])
    assert sorted(summary.changed_ids) == sorted(f"u{n}" for n in range(50))


def test_between_rounds_the_store_keeps_the_users_compressed_and_reads_redis_only_for_a_new_version() -> None:
    """The users map of 50,000 employees is about 22 MB decoded and 2 MB as the text
    saved in Redis: the store keeps that text between cycles (not the map, which would
    sit through every apply phase) and decodes it when the kept version is current;
    another replica's save (a new version) is read from Redis."""
    from services.graph_delta import DeltaState, RedisGraphDeltaStore

    class Counting(_Hash):
        def __init__(self) -> None:
            super().__init__()
            self.user_reads = 0

        def hget(self, key: str, field: str) -> str | None:
            self.user_reads += field == "users"
            return super().hget(key, field)

    redis = Counting()
    store = RedisGraphDeltaStore(redis, "t:")
    users = {"u1": ["1", "a@x.test", "a@x.test", True]}
    store.save(DeltaState("/v1.0/users/delta?$deltatoken=d", 1.0, users), users_changed=True)
    first, second = store.load(), store.load()
    assert first is not None and second is not None and first.users == second.users == users
    assert first.users is not second.users and first.users is not users  # decoded afresh, not kept
    assert redis.user_reads == 0

    other = RedisGraphDeltaStore(redis, "t:")  # another replica saves a change
    other.save(DeltaState("/v1.0/users/delta?$deltatoken=e", 1.0, {"u2": ["2", None, "b@x.test", True]}), users_changed=True)
    third = store.load()
    assert third is not None and list(third.users) == ["u2"] and redis.user_reads == 1
    assert store.load() is not None and redis.user_reads == 1
