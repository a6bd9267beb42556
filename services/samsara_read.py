"""The saved Samsara read: what the vehicles sync last read from Samsara (every vehicle
and driver), kept on disk so an idle run need not read Samsara again while Samsara's
webhooks say nothing changed (docs/performance.md, "Samsara: events plus a daily read").

On only with SAMSARA_WEBHOOK_SECRET (webhooks configured). Where it lives:
``OUTPUT_DIR/state/samsara-read/<scope>/read.json.gz`` (gzip'd JSON, written with a
temporary file, fsync and rename, mode 0600). The scope is a hash of the Samsara URL (or
SAMSARA_READ_SCOPE), a hash of the API key (never the key) and REDIS_PREFIX.

When it may be used (``usable``):

- it is of this scope;
- the event marker in Redis (``{REDIS_PREFIX}samsara:events``) equals the value the
  saved read recorded. Every accepted, signed webhook event that can change a vehicle or
  a driver, or whose type we do not know, increments the marker (``classify_event``,
  ``note_event``, from main.py); alerts, routes, documents and the other documented
  types do not. The marker is read *before* a full read starts, so an
  event that arrives during the read makes that read stale at once. A marker that is
  missing (never set, or Redis restarted empty) vouches for nothing: a full read sets it
  to a random start value first. Redis unreachable: the saved read is not used;
- it is younger than SAMSARA_FULL_READ_HOURS (deletions have no event: the periodic full
  read finds them, as it finds a change whose event was lost);
- not ``sync_batch.py --full``, and not in a daemon process that has not completed a full
  read yet (events sent while it was down went nowhere).

Everything here degrades to "read Samsara fully".
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from config.settings import Settings
from services.target_shadow import _atomic_write, too_old
from sync.ports import Row

log = logging.getLogger("sync.samsara_read")

READ_DIR = Path("state") / "samsara-read"
FILE = "read.json.gz"
FORMAT = 1


def marker_key(prefix: str) -> str:
    return f"{prefix}samsara:events"


# ---- which events make the saved read stale ------------------------------------------
# Samsara's webhook event types, as its API definition lists them (the generated SDKs:
# samsarahq/samsara-python ``WebhooksPostWebhooksRequestBodyEventTypesItem``, and the
# Ruby gem's twin), plus Webhooks 1.0's ``Alert`` and ``Ping``. Every body carries the
# type in ``eventType`` (developers.samsara.com/docs/webhooks). docs/performance.md,
# "Samsara: events plus a daily read", says why each group is where it is.
VEHICLE_EVENTS = frozenset({"VehicleCreated", "VehicleUpdated", "DriverCreated", "DriverUpdated"})
"""Events about what the vehicles sync reads (vehicles and drivers): the next run reads.
A driver deactivated is a ``DriverUpdated`` (``driverActivationStatus`` is a field of the
driver it carries); a vehicle or driver deleted sends nothing (the periodic full read)."""
OTHER_EVENTS = frozenset(
    {
        "AddressCreated", "AddressDeleted", "AddressUpdated", "Alert", "AlertIncident", "AlertObjectEvent",
        "DocumentSubmitted", "DvirSubmitted", "EngineFaultOff", "EngineFaultOn", "FormSubmitted", "FormUpdated",
        "GatewayUnplugged", "GeofenceEntry", "GeofenceExit", "IssueCreated", "MissingDvirPastDue",
        "PredictiveMaintenanceAlert", "RouteStopArrival", "RouteStopDeparture", "RouteStopEarlyLateArrival",
        "RouteStopEtaUpdated", "RouteStopResequence", "SevereSpeedingEnded", "SevereSpeedingStarted",
        "SpeedingEventEnded", "SpeedingEventStarted", "SuddenFuelLevelDrop", "SuddenFuelLevelRise",
    }
)  # fmt: skip
"""Documented events that cannot change a vehicle or driver record (alerts, routes,
documents, forms, faults, addresses, conditions of a device): acknowledged, counted,
no read and no vehicles run."""
PING = "Ping"

EVENT_READ, EVENT_IGNORED, EVENT_PING = "read", "ignored", "ping"


def classify_event(event: dict[str, Any]) -> tuple[str, str]:
    """(type label, outcome) of a verified event. ``read``: the saved read is stale (a
    vehicle or driver event, and any type we do not know: Samsara adds types, and one we
    cannot name might be about a vehicle); ``ignored``: a documented type that cannot
    change vehicles or drivers; ``ping``: Samsara's test. The label is the documented
    type, ``other`` for an unknown one and ``missing`` when there is no string: a metric
    label never holds a value a sender chose."""
    kind = event.get("eventType")
    if not isinstance(kind, str):
        return "missing", EVENT_READ
    if kind == PING:
        return PING, EVENT_PING
    if kind in VEHICLE_EVENTS:
        return kind, EVENT_READ
    if kind in OTHER_EVENTS:
        return kind, EVENT_IGNORED
    return "other", EVENT_READ


def note_event(redis: Any, prefix: str) -> None:
    """An accepted, signed Samsara webhook event: the saved read is stale (best effort:
    when Redis refuses, the saved read cannot be vouched for either)."""
    if redis is None:
        return
    try:
        redis.incr(marker_key(prefix))
    except Exception as exc:  # redis.RedisError and socket errors alike
        log.warning("could not record the Samsara event in Redis (%s)", type(exc).__name__)


def read_scope(settings: Settings) -> str:
    key = settings.samsara_api_key.get_secret_value() if settings.samsara_api_key else ""
    parts = {
        "url": settings.samsara_read_scope or str(settings.samsara_url).rstrip("/").lower(),
        "key": hashlib.sha256(key.encode()).hexdigest(),
        "prefix": settings.redis_prefix,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class SamsaraReadStore:
    """One runner's saved Samsara read, and the shared event marker. Long-lived (one per
    process and tenant, on the Runtime): it remembers whether this process ran yet."""

    def __init__(
        self, directory: Path, *, scope: str, redis: Any, prefix: str, max_age_seconds: float, clock: Any = time.time
    ) -> None:
        self.directory = Path(directory) / scope
        self.scope = scope
        self.redis = redis
        self.key = marker_key(prefix)
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self.runs = 0
        """Full Samsara reads this process completed (a daemon trusts no saved read before its first)."""

    def marker(self, *, start: bool = False) -> str | None:
        """The event marker (None: Redis cannot be asked, or no marker and not ``start``).
        ``start``: set a random start value when there is none (before a full read)."""
        if self.redis is None:
            return None
        try:
            if start:
                self.redis.set(self.key, random.randrange(1 << 40, 1 << 62), nx=True)
            raw = self.redis.get(self.key)
        except Exception as exc:
            log.warning("Redis did not answer for the Samsara event marker (%s): reading Samsara fully", type(exc).__name__)
            return None
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def load(self) -> dict[str, Any] | None:
        """The saved read, or None (missing, unreadable, another format or scope)."""
        try:
            data = json.loads(gzip.decompress((self.directory / FILE).read_bytes()))
        except (OSError, ValueError, EOFError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("scope") != self.scope:
            return None
        for name in ("vehicles", "drivers"):
            rows = data.get(name)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                return None
        return data

    def unusable(self, saved: dict[str, Any] | None, *, full: bool, first_daemon_run: bool) -> str | None:
        """Why the saved read may not stand in for Samsara now (None: it may)."""
        if full:
            return "a full read was asked for"
        if first_daemon_run:
            return "first vehicles run of this process"
        if saved is None:
            return "no saved read"
        old = too_old(
            saved.get("read_at"), self.clock(), self.max_age_seconds, what="the saved read", setting="SAMSARA_FULL_READ_HOURS"
        )
        if old:
            return old
        current = self.marker()
        if current is None:
            return "Redis cannot vouch for it (no event marker)"
        if current != saved.get("marker"):
            return "Samsara sent events since it was taken"
        return None

    def save(self, vehicles: list[Row], drivers: list[Row], *, marker: str, read_at: float) -> None:
        """Keep this read (best effort: a disk that refuses only costs the next run a full read)."""
        data = {
            "format": FORMAT,
            "scope": self.scope,
            "marker": marker,
            "read_at": read_at,
            "vehicles": vehicles,
            "drivers": drivers,
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            blob = gzip.compress(json.dumps(data, separators=(",", ":"), default=str).encode(), compresslevel=1, mtime=0)
            _atomic_write(self.directory / FILE, blob)
            os.chmod(self.directory / FILE, 0o600)
        except OSError as exc:
            log.warning("could not save the Samsara read (%s); the next vehicles run reads Samsara fully", type(exc).__name__)


def build_samsara_read(settings: Settings, redis: Any) -> SamsaraReadStore | None:
    """The saved Samsara read, or None when webhooks are not configured (every run reads)."""
    if settings.samsara_webhook_secret is None:
        return None
    return SamsaraReadStore(
        Path(settings.output_dir) / READ_DIR,
        scope=read_scope(settings),
        redis=redis,
        prefix=settings.redis_prefix,
        max_age_seconds=settings.samsara_full_read_hours * 3600,
    )
