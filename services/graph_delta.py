"""Entra users through Graph delta query, kept in Redis (issue 14: an idle cycle costs one
Graph request instead of reading every user).

``DeltaUserDirectory`` implements ``sync.ports.GraphDirectory``: ``users()`` answers the
same rows ``GraphAPI.users()`` does (id, employeeId, mail, userPrincipalName,
accountEnabled), so the employees sync applies its one mail rule
(``sync.sync_employees.mail_by_employee_id``) unchanged. Behind it:

- the first cycle runs a full delta round (``GraphAPI.delta(None)``: every user, then a
  deltaLink); later cycles call the stored deltaLink and apply what it returns (users
  added or changed: their selected properties replace the kept ones; ``@removed``: the
  user is dropped);
- a full round runs again when Graph refuses the deltaLink (410 Gone, or
  ``syncStateNotFound``/``resyncRequired``: deltaLinks of directory objects live seven
  days), when the kept state is missing, unreadable, of another scope
  (``graph_scope``: tenant, client id, REDIS_PREFIX), every GRAPH_FULL_READ_HOURS (a
  repair for anything a delta round could miss), and on a run asked to read everything
  (``sync_batch.py --full``: ``forced_full``);
- the deltaLink is kept relative to MS_GRAPH_URL (a deltaLink outside it is refused like
  a nextLink leaving Graph): the sandbox's Graph gets a new port at every start, and a
  token Graph no longer knows is refused by Graph, which means a full round;
- the state (deltaLink and users) is one Redis hash, ``{prefix}graph:delta``: field
  ``meta`` (JSON: scope, deltaLink, time of the last full round, version) and field
  ``users`` (zlib-compressed JSON, base64: the client answers text), written together
  in one HSET so a deltaLink is never stored without the users it belongs to. A round
  with no change rewrites ``meta`` only. The process keeps the ``users`` text it last
  loaded or saved (compressed: the decoded map of 50,000 users is ten times its size),
  decodes it on each load, and reads the field again only when ``meta`` names another
  version (another replica saved since).

Redis trouble never fails a run: when Redis cannot be reached the cycle reads every user
as GRAPH_DELTA=false does (pages of 999), and a failed save is logged (the next cycle
repeats the round).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from config.settings import Settings
from services.graph_api import DeltaRound, DeltaTokenRefused, GraphAPI
from sync.ports import Row
from utils.errors import FatalError

log = logging.getLogger("services.graph_delta")

# What the employees sync reads of a user (services.graph_api.USER_FIELDS without id).
KEPT_FIELDS = ("employeeId", "mail", "userPrincipalName", "accountEnabled")
STATE_FORMAT = 1


def graph_scope(settings: Settings) -> str:
    """What kept Graph state is valid for: the tenant, the app registration (client id)
    and REDIS_PREFIX. State of another scope is not used (a full round instead)."""
    parts = {
        "tenant": settings.ms_graph_tenant_id or "",
        "client": settings.ms_graph_client_id or "",
        "prefix": settings.redis_prefix,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class DeltaState:
    """The deltaLink, when the last full round ran (epoch seconds), and the users by id
    (``[employeeId, mail, userPrincipalName, accountEnabled]``)."""

    delta_link: str
    full_at: float
    users: dict[str, list[Any]] = field(default_factory=dict)
    version: str = ""


def encode_users(users: Mapping[str, list[Any]]) -> str:
    raw = json.dumps(users, separators=(",", ":")).encode()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def decode_users(text: str) -> dict[str, list[Any]]:
    users = json.loads(zlib.decompress(base64.b64decode(text)))
    if not isinstance(users, dict) or not all(isinstance(v, list) and len(v) == len(KEPT_FIELDS) for v in users.values()):
        raise ValueError("not a users map")
    return users


@dataclass(frozen=True)
class RoundSeen:
    """What the last round did, for logs and tests: the ids of the users it added or
    changed and of those it removed (not Graph's entries: the users map holds what is
    kept of them; a full round's pages, held for a log line, were about 9 MB at 50,000
    employees through the whole run)."""

    full: bool
    pages: int
    changed_ids: list[str]
    removed: list[str]


class RedisGraphDeltaStore:
    """The Graph delta state in one Redis hash, tagged with its scope (``graph_scope``)."""

    def __init__(self, client: Any, prefix: str, scope: str = "") -> None:
        self.client = client
        self.key = f"{prefix}graph:delta"
        self.scope = scope
        # The users last loaded or saved here, as the text Redis holds (version, text):
        # about 2 MB at 50,000 users where the decoded map is 22 MB, which would otherwise
        # sit in memory through every apply phase of the process (docs/performance.md).
        self._cached: tuple[str, str] | None = None
        self.unavailable = False  # the last load could not reach Redis

    def load(self) -> DeltaState | None:
        """The kept state, or None (missing, unreadable, another scope, Redis down: then
        ``unavailable`` is set)."""
        self.unavailable = False
        try:
            raw_meta = self.client.hget(self.key, "meta")
            meta = json.loads(raw_meta) if raw_meta else None
            if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
                return None
            if meta.get("scope", "") != self.scope:
                log.info("graph: the kept delta state is for another tenant, client or prefix; running a full round")
                return None
            link, full_at, version = meta.get("delta_link"), meta.get("full_at"), meta.get("version")
            if not isinstance(link, str) or not isinstance(full_at, (int, float)) or not isinstance(version, str):
                return None
            cached = self._cached
            if cached is not None and cached[0] == version:
                text = cached[1]
            else:
                text = self.client.hget(self.key, "users")
                if not text:
                    return None
            users = decode_users(text)
        except (ValueError, zlib.error) as exc:
            log.warning("graph: the kept delta state is unreadable (%s); running a full round", type(exc).__name__)
            return None
        except Exception as exc:  # redis.RedisError and socket errors alike
            log.warning("graph: delta state unavailable (%s); reading every user", type(exc).__name__)
            self.unavailable = True
            return None
        self._cached = (version, text)
        return DeltaState(delta_link=link, full_at=float(full_at), users=users, version=version)

    def save(self, state: DeltaState, *, users_changed: bool) -> None:
        """Store ``state``; the users field is rewritten only when ``users_changed``."""
        if users_changed or not state.version:
            state.version = uuid.uuid4().hex
        meta = {
            "format": STATE_FORMAT,
            "scope": self.scope,
            "delta_link": state.delta_link,
            "full_at": state.full_at,
            "version": state.version,
            "users": len(state.users),
        }
        mapping = {"meta": json.dumps(meta, separators=(",", ":"))}
        if users_changed:
            mapping["users"] = encode_users(state.users)
        try:
            self.client.hset(self.key, mapping=mapping)
        except Exception as exc:
            log.warning("graph: could not save the delta state (%s); the next cycle repeats this round", type(exc).__name__)
            self._cached = None
            return
        if users_changed:
            self._cached = (state.version, mapping["users"])


class DeltaUserDirectory:
    """``sync.ports.GraphDirectory`` over Graph delta query and a ``RedisGraphDeltaStore``."""

    def __init__(
        self,
        graph: GraphAPI,
        store: RedisGraphDeltaStore,
        *,
        full_read_hours: float = 24.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.graph = graph
        self.store = store
        self.full_read_seconds = full_read_hours * 3600.0
        self.clock = clock
        self.last_round: RoundSeen | None = None  # for tests and logs
        self.last_reason = ""

    def forced_full(self) -> FullRoundDirectory:
        """This directory for a run asked to read everything (``sync_batch.py --full``)."""
        return FullRoundDirectory(self)

    def users(self, *, full: bool = False) -> list[Row]:
        """Every user, as ``GraphAPI.users()`` answers them (from the kept state). Without
        Redis nothing can be kept, so the plain read runs (``GraphAPI.users()``: pages
        of 999, fewer requests than a delta round of pages of about 200)."""
        state = self.store.load()
        if state is None and self.store.unavailable:
            self.last_round, self.last_reason = None, "full read (Redis unavailable)"
            return self.graph.users()
        state = self.refresh(state, full=full)
        return [{"id": uid, **dict(zip(KEPT_FIELDS, values, strict=True))} for uid, values in state.users.items()]

    def refresh(self, state: DeltaState | None, *, full: bool = False) -> DeltaState:
        """Bring the kept ``state`` up to date with one delta round (or a full one)."""
        reason = "requested" if full else self._full_reason(state)
        if state is not None and not reason:
            try:
                round_ = self.graph.delta(self.graph.http.url_for(state.delta_link))
            except DeltaTokenRefused as exc:
                log.info("graph: the deltaLink was refused (%s); running a full round", str(exc)[:200])
                reason = "token refused"
            else:
                changed = _apply(state.users, round_)
                state.delta_link = self._relative(round_.delta_link)
                self.store.save(state, users_changed=changed)
                self._done(round_, "delta")
                return state
        round_ = self.graph.delta(None)
        users: dict[str, list[Any]] = {}
        _apply(users, round_)
        fresh = DeltaState(delta_link=self._relative(round_.delta_link), full_at=self.clock(), users=users)
        self.store.save(fresh, users_changed=True)
        self._done(round_, f"full ({reason})")
        return fresh

    def _full_reason(self, state: DeltaState | None) -> str:
        if state is None:
            return "no kept state"
        if self.clock() - state.full_at >= self.full_read_seconds:
            return "GRAPH_FULL_READ_HOURS elapsed"
        if not state.delta_link.startswith("/"):
            return "the kept deltaLink is not a Graph path"
        return ""

    def _relative(self, link: str) -> str:
        """The deltaLink as a path below MS_GRAPH_URL (the bearer token goes nowhere else)."""
        base = self.graph.http.base_url.rstrip("/")
        if not link.startswith(base + "/"):
            raise FatalError(f"graph: deltaLink leaves {base}: {urlsplit(link).netloc}", service="graph")
        return link[len(base) :]

    def _done(self, round_: DeltaRound, reason: str) -> None:
        changed = [str(entry["id"]) for entry in round_.changed]
        self.last_round = RoundSeen(round_.full, round_.pages, changed, list(round_.removed))
        self.last_reason = reason
        log.info(
            "graph users %s round: %d pages, %d added or changed, %d removed",
            reason,
            round_.pages,
            len(changed),
            len(round_.removed),
        )


class FullRoundDirectory:
    """``sync.ports.GraphDirectory`` for one run that must read every user: a full round."""

    def __init__(self, directory: DeltaUserDirectory) -> None:
        self.directory = directory

    def users(self) -> list[Row]:
        return self.directory.users(full=True)


def _apply(users: dict[str, list[Any]], round_: DeltaRound) -> bool:
    """Apply a round to the users map; True when the map changed. A property absent from
    an entry keeps its kept value (Graph omits properties never set, and with
    ``Prefer: return=minimal`` unchanged ones); one present (null included) replaces it."""
    changed = False
    for entry in round_.changed:
        uid = str(entry["id"])
        old = users.get(uid)
        new = [entry[f] if f in entry else (old[i] if old else None) for i, f in enumerate(KEPT_FIELDS)]
        if new != old:
            users[uid] = new
            changed = True
    for uid in round_.removed:
        if users.pop(uid, None) is not None:
            changed = True
    return changed


def build_graph_directory(settings: Settings, graph: GraphAPI, redis_client: Any) -> DeltaUserDirectory:
    """The delta directory for ``graph`` (GRAPH_DELTA), its state in ``redis_client``."""
    store = RedisGraphDeltaStore(redis_client, settings.redis_prefix, scope=graph_scope(settings))
    return DeltaUserDirectory(graph, store, full_read_hours=settings.graph_full_read_hours)
