"""Who is asking, and what they may do: the console's sign-in, sessions and CSRF tokens.

Two ways in (both may be configured at once):

* **the console password** (``CONSOLE_TOKEN``): ``/console/login`` takes it and answers
  with a session cookie; whoever holds the token is an operator;
* **single sign-on behind a proxy** (``CONSOLE_TRUSTED_PROXY``): oauth2-proxy, or any
  proxy that authenticates people against Entra ID, forwards ``X-Forwarded-User`` /
  ``-Email`` / ``-Groups``. Those headers are believed only when the request comes from
  one of the configured addresses (a sidecar: 127.0.0.1); from anywhere else they are
  ignored, so a client reaching the port directly cannot claim to be anyone. Groups map
  to a role (``CONSOLE_OPERATOR_GROUPS``, ``CONSOLE_VIEWER_GROUPS``).

The session is a cookie signed with itsdangerous (Flask's own signer). Its key is an
HMAC of ``CONSOLE_TOKEN``, so every replica accepts every replica's cookies and changing
the token signs everyone out; without a token (single sign-on only) the key is a random
value shared through Redis (``{prefix}console:session-key``), or this process's own
while Redis does not answer. The cookie holds no secret: a random session id, who, the
role, when it was issued and last used. A session unused for
``CONSOLE_SESSION_IDLE_MINUTES`` ends; none lives longer than MAX_SESSION_SECONDS; a
signed-out session id is remembered (Redis, with expiry) so the cookie stops working
at once, not just in the browser that signed out.

CSRF: every form carries ``HMAC(key, session id)``, and every POST must send it back
(form field or ``X-CSRF-Token`` header). A visitor who has not signed in gets an
anonymous session for the login form, so the login itself is protected too. With
``SameSite=Strict`` cookies this is belt and braces; it is also what keeps a page on a
sibling host (same site, other origin) from posting.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

log = logging.getLogger("console.auth")

COOKIE = "console_session"
COOKIE_PATH = "/console"
MAX_SESSION_SECONDS = 12 * 3600
"""However busy, a session ends after this long (a working day and a half)."""
LOGIN_FAILURES_ALLOWED = 10
LOGIN_FAILURE_WINDOW_SECONDS = 300.0
"""Wrong passwords allowed per client address within the window before further attempts
are refused until it has passed. The token is long enough that guessing is hopeless;
this keeps a script from filling the logs and the CPU trying."""
ROLES = ("viewer", "operator")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Identity:
    """A signed-in person (or the token holder)."""

    name: str
    role: str  # viewer | operator
    via: str  # token | proxy
    email: str | None = None
    groups: tuple[str, ...] = ()

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    @property
    def actor(self) -> str:
        """Who, in the audit log."""
        return self.name if self.via == "proxy" else f"console-token:{self.name}"


@dataclass(frozen=True)
class Session:
    sid: str
    issued: float
    seen: float
    identity: Identity | None  # None: anonymous (the login form's CSRF session)


class Refused(Exception):
    """A person the proxy vouches for who is in none of the console's groups."""


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def from_networks(remote_addr: str | None, networks: tuple[Network, ...]) -> bool:
    if not remote_addr or not networks:
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return any(address in net or (mapped is not None and mapped in net) for net in networks)


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def proxy_role(groups: Iterable[str], operator_groups: Iterable[str], viewer_groups: Iterable[str]) -> str:
    """The role of a person the proxy signed in, from their groups. Group names and Entra
    object ids compare without regard to case. Raises Refused when viewer groups are
    configured and the person is in none of the console's groups."""
    have = {g.casefold() for g in groups}
    if have & {g.casefold() for g in operator_groups}:
        return "operator"
    viewers = {g.casefold() for g in viewer_groups}
    if not viewers or have & viewers:
        return "viewer"
    raise Refused("your account is in none of the groups allowed to use the console (CONSOLE_VIEWER_GROUPS)")


class Authenticator:
    """Signs sessions, checks CSRF tokens, reads the proxy's headers. One per blueprint."""

    def __init__(
        self,
        settings: Any,
        *,
        shared_key: Callable[[], bytes | None] | None = None,
        revocations: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token: str | None = settings.console_token.get_secret_value() if settings.console_token else None
        self.networks = parse_networks(settings.console_trusted_proxy)
        self.operator_groups = tuple(settings.console_operator_groups)
        self.viewer_groups = tuple(settings.console_viewer_groups)
        self.idle_seconds = float(settings.console_session_idle_minutes) * 60.0
        self._shared_key = shared_key
        self._revocations = revocations
        self._clock = clock
        self._key: bytes | None = None
        self._key_lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._failures_lock = threading.Lock()

    # ---- keys -------------------------------------------------------------------------
    def key(self) -> bytes:
        if self._key is not None:
            return self._key
        with self._key_lock:
            if self._key is None:
                if self.token is not None:
                    self._key = hmac.new(self.token.encode(), b"safetyamp-sync console session key v1", hashlib.sha256).digest()
                else:
                    shared = None
                    try:
                        shared = self._shared_key() if self._shared_key is not None else None
                    except Exception as exc:  # Redis down: this process's own key
                        log.warning(
                            "console session key not shared through Redis (%s): sessions stay on this replica", type(exc).__name__
                        )
                    self._key = shared or secrets.token_bytes(32)
            return self._key

    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.key(), salt="console-session")

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self.key(), b"csrf:" + session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session | None, sent: str | None) -> bool:
        if session is None or not sent:
            return False
        return hmac.compare_digest(self.csrf_token(session).encode(), sent.encode())

    # ---- sessions ---------------------------------------------------------------------
    def new_session(self, identity: Identity | None) -> Session:
        now = self._clock()
        return Session(secrets.token_urlsafe(18), now, now, identity)

    def dump(self, session: Session) -> str:
        ident = session.identity
        payload: dict[str, Any] = {"s": session.sid, "i": session.issued, "t": session.seen}
        if ident is not None:
            payload.update(u=ident.name, r=ident.role, v=ident.via)
            if ident.email:
                payload["e"] = ident.email
        return self._serializer().dumps(payload)

    def why_text(self, code: str | None) -> str | None:
        """The sentence for a ``load`` reason code; None for anything else (the sign-in
        page takes the code from its URL and shows only these fixed sentences)."""
        texts = {
            "ended": "Your session has ended. Sign in again.",
            "idle": f"You were signed out after {int(self.idle_seconds // 60)} minutes without activity. Sign in again.",
            "signed-out": "You signed out. Sign in again.",
        }
        return texts.get(code or "")

    def load(self, cookie: str | None) -> tuple[Session | None, str | None]:
        """The session a cookie holds, or (None, a code for why it is not valid any
        more: ``why_text`` says it in words)."""
        if not cookie:
            return None, None
        try:
            payload = self._serializer().loads(cookie, max_age=MAX_SESSION_SECONDS)
        except BadSignature:  # forged, from an older token, or past MAX_SESSION_SECONDS
            return None, "ended"
        if not isinstance(payload, dict) or not isinstance(payload.get("s"), str):
            return None, None
        now = self._clock()
        try:
            issued, seen = float(payload["i"]), float(payload["t"])
        except (KeyError, TypeError, ValueError):
            return None, None
        identity = None
        if payload.get("u") is not None:
            role = payload.get("r")
            if role not in ROLES:
                return None, None
            identity = Identity(str(payload["u"]), str(role), str(payload.get("v") or "token"), payload.get("e"))
            if now - seen > self.idle_seconds and identity.via == "token":
                return None, "idle"
            if self.revoked(payload["s"]):
                return None, "signed-out"
        if now - issued > MAX_SESSION_SECONDS:
            return None, "ended"
        return Session(payload["s"], issued, seen, identity), None

    def touched(self, session: Session) -> Session:
        return Session(session.sid, session.issued, self._clock(), session.identity)

    def revoke(self, session: Session) -> None:
        if self._revocations is not None:
            try:
                self._revocations.add(session.sid, MAX_SESSION_SECONDS)
            except Exception:
                log.warning("console sign-out not shared through Redis: the session ends in this replica only", exc_info=True)

    def revoked(self, sid: str) -> bool:
        if self._revocations is None:
            return False
        try:
            return bool(self._revocations.contains(sid))
        except Exception:
            return False  # Redis down: the local memory of sign-outs still answers (Revocations)

    # ---- the console password -----------------------------------------------------------
    def throttled(self, client: str) -> bool:
        now = self._clock()
        with self._failures_lock:
            recent = [t for t in self._failures.get(client, []) if now - t < LOGIN_FAILURE_WINDOW_SECONDS]
            self._failures[client] = recent
            return len(recent) >= LOGIN_FAILURES_ALLOWED

    def check_token(self, client: str, sent: str) -> bool:
        if self.token is None:
            return False
        # Digests of both sides: compare_digest's time then says nothing about the length.
        ok = hmac.compare_digest(hashlib.sha256(sent.encode()).digest(), hashlib.sha256(self.token.encode()).digest())
        if not ok:
            with self._failures_lock:
                self._failures.setdefault(client, []).append(self._clock())
                if len(self._failures) > 10_000:  # bounded: a spray from many addresses cannot grow it forever
                    self._failures.pop(next(iter(self._failures)))
        return ok

    # ---- single sign-on ---------------------------------------------------------------
    def trusted(self, remote_addr: str | None) -> bool:
        return from_networks(remote_addr, self.networks)

    def proxy_identity(self, remote_addr: str | None, headers: Any) -> Identity | None:
        """The person the proxy signed in, when the request came from the proxy and names
        one; None otherwise (headers from anywhere else are ignored). Raises Refused."""
        user = (headers.get("X-Forwarded-User") or "").strip()
        email = (headers.get("X-Forwarded-Email") or "").strip()
        if not (user or email):
            return None
        if not self.trusted(remote_addr):
            log.debug("X-Forwarded-User from %s ignored: not a CONSOLE_TRUSTED_PROXY address", remote_addr)
            return None
        groups = tuple(_names(headers.get("X-Forwarded-Groups")))
        role = proxy_role(groups, self.operator_groups, self.viewer_groups)
        return Identity(email or user, role, "proxy", email or None, groups)


class Revocations:
    """Signed-out session ids: in Redis with an expiry (every replica sees them), and in
    this process's memory too (Redis may be down when someone signs out)."""

    def __init__(self, redis_client: Any, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis_client
        self._prefix = f"{prefix}console:signed-out:"
        self._clock = clock
        self._local: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, sid: str, ttl_seconds: float) -> None:
        with self._lock:
            now = self._clock()
            self._local = {k: v for k, v in self._local.items() if v > now}
            self._local[sid] = now + ttl_seconds
        if self._redis is not None:
            self._redis.set(self._prefix + sid, "1", ex=int(ttl_seconds))

    def contains(self, sid: str) -> bool:
        with self._lock:
            if self._local.get(sid, 0) > self._clock():
                return True
        if self._redis is None:
            return False
        try:
            return bool(self._redis.exists(self._prefix + sid))
        except Exception:
            return False


def shared_key_from_redis(redis_client: Any, prefix: str) -> Callable[[], bytes | None]:
    """The session key of a console without CONSOLE_TOKEN: one random value per Redis
    (SET NX: the first replica creates it, the others read it)."""

    def fetch() -> bytes | None:
        if redis_client is None:
            return None
        name = f"{prefix}console:session-key"
        redis_client.set(name, secrets.token_hex(32), nx=True)
        value = redis_client.get(name)
        if value is None:
            return None
        return bytes.fromhex(value.decode() if isinstance(value, bytes) else str(value))

    return fetch
