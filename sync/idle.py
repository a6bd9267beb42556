"""Idle cycles: a sync whose inputs did not change since a plan that found nothing to
write does not plan again (issue 14; docs/performance.md, "Idle cycles").

A plan is a function of what it reads: the source rows, the target as the cycle sees
it, the failed-record tracker, the settings, the day and the code. When a run plans
against the target shadow and writes nothing, the key of those inputs is saved with
the shadow (``TargetCache.save_unchanged_plan``) together with what the run reported
(records unchanged, records rejected). The next run with the same key reports the same
(the rejections are recorded again, so the errors file and the console show them)
without mapping, loading the shadow or planning.

The key, and why each part is in it:

- **sources**: a digest of every source value the sync reads (``BaseSync.inputs``),
  read as usual (Vista is local SQL; Graph through its delta, Samsara from the saved
  read when webhooks say nothing changed). Vista's bPREH has no reliable row-modified
  time, so the rows themselves are hashed;
- **target**: ``TargetCache.identity()``: the shadow's generation and file names, only
  while this cycle plans against the shadow and nothing has written to, re-read or
  invalidated it. A full read (start, TARGET_FULL_READ_HOURS, ``--full``, a stale
  shadow) gives new files, so the daily reconciliation always plans;
- **tracker**: what the failed-record tracker holds back for this sync (each record
  waiting or quarantined, its fingerprint and next retry): a plan skips exactly those.
  A record due for retry makes the sync plan (the plan retries it);
- **settings, day, code**: every setting a plan follows (``settings_digest``: not the
  endpoints, credentials, rate limits or operational ones), ``today`` (scheduled
  terminations), a hash of the product's own source files (a new release with other
  rules plans again) and the Python version with its Unicode tables (a new image with
  another Python validates names and e-mails by other tables).

A run saves a key only when it is sure the key describes everything it read: no write
planned or sent, no guard refusal or held deactivation, the tracker as it was at the start,
no source read that ``inputs`` does not name (a sync whose ``load`` reads more than it
declares never skips), and the target identity the same at the end as at the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sync.base import BaseSync, Desired, Rejected, RunResult

log = logging.getLogger("sync")

FORMAT = 2
_CHUNK = 2000
_CODE_DIRS = ("config", "services", "sync", "utils")
_TRANSPORT = re.compile(
    r"(_url|_token|_secret|_password|_api_key|_timeout_seconds|_page_size|_max_concurrency|_rate_limit_per_minute"
    r"|_rate_limit_per_second|_user_agent|_ca_bundle|_full_read_hours|_scope)$"
    r"|^(console_|breaker_|azure_key_vault_|lock_|log_|output_|http_|sql_server$|sql_auth_mode$|sql_username$|sql_driver$)"
)
_OPERATIONS = frozenset(
    {
        "sync_types", "sync_interval_minutes", "port", "host", "liveness_stale_seconds", "audit_retention_days",
        "run_history_length", "keyvault_ttl_seconds", "secrets_dir", "tenants_dir", "tenant_workers",
        "consecutive_error_limit", "webhook_debounce_seconds", "target_shadow",
    }
)  # fmt: skip
"""Settings that say where and how fast to reach a system, or how to operate, not what a
plan wants: left out of the key, so a sandbox whose emulators change ports at every start,
a rotated token or a new rate limit do not cost a plan. What they reach is in the key
anyway (the source rows are hashed; the shadow's scope is the SafetyAmp account). Every
other setting is in the key: a new one is, until it is listed here."""


def settings_digest(settings: Any) -> str:
    """A hash of the settings a plan follows (every setting less the transport and
    operations ones above)."""
    values = {k: v for k, v in settings.model_dump(mode="json").items() if k not in _OPERATIONS and not _TRANSPORT.search(k)}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


@cache
def code_version() -> str:
    """A hash of the product's own Python files (read once per process)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for folder in _CODE_DIRS:
        for path in sorted((root / folder).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def digest(value: Any) -> str:
    """A hash of a source value (rows, a mapping, anything with a stable ``repr``).

    ``repr`` of dicts, lists, text, numbers, dates and Decimals is the same for equal
    values read in the same order, and costs about as much as pickling (0.3 s for 50,000
    bPREH rows here); hashed a chunk at a time so no copy of the whole value is held.
    A value whose ``repr`` is not stable (an object showing its address) hashes
    differently each time: that sync plans every cycle, which is safe."""
    h = hashlib.sha256(type(value).__name__.encode())
    if isinstance(value, Mapping):
        items: list[Any] = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = value if isinstance(value, list) else list(value)
    else:
        items = [value]
    for i in range(0, len(items), _CHUNK):
        h.update(repr(items[i : i + _CHUNK]).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class IdleCheck:
    """One run's view of "did anything this plan reads change?"."""

    def __init__(self, sync: BaseSync, key: str, identity: str, tracked: str) -> None:
        self.sync = sync
        self.key = key
        self.identity = identity
        self.tracked = tracked

    @classmethod
    def start(cls, sync: BaseSync) -> IdleCheck | None:
        """Read the sync's inputs and build the key; None when this run must plan anyway
        (a dry run, a one-record run, ``--full``, no shadow, records in the tracker, a
        sync that declares no inputs)."""
        ctx = sync.ctx
        if ctx.dry_run or ctx.only_key is not None or ctx.full or not ctx.settings.target_shadow:
            return None
        targets = ctx.targets
        identity_of: Callable[[], str | None] | None = getattr(targets, "identity", None)
        inputs = sync.inputs()
        if identity_of is None or not inputs:
            return None
        identity = identity_of()
        if identity is None:
            return None
        tracked = _held_back(sync)
        if tracked is None:
            return None
        sources = {name: ctx.source_digest(name, loader) for name, loader in inputs.items()}
        parts = {
            "format": FORMAT,
            "sync": sync.name,
            "code": code_version(),
            # the interpreter is part of the rules: its Unicode tables decide what validates
            "python": [sys.version, unicodedata.unidata_version],
            "settings": settings_digest(ctx.settings),
            "today": ctx.today.isoformat(),
            "target": identity,
            "sources": sources,
            "tracker": tracked,
        }
        key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        ctx.track_reads(set(inputs))
        return cls(sync, key, identity, tracked)

    def replay(self, result: RunResult, slog: Any) -> bool:
        """When the last plan that wrote nothing had this key: report what it reported
        (records unchanged; rejections recorded again) and return True."""
        from sync.base import count_rejection
        from sync.guard import nothing_held

        saved = self.sync.ctx.targets.unchanged_plan(self.sync.name)  # type: ignore[attr-defined]
        if not saved or saved.get("format") != FORMAT or saved.get("key") != self.key:
            return False
        entries = saved.get("rejected")
        try:
            unchanged = int(saved["unchanged"])
            skipped = int(saved.get("skipped", 0))
        except (KeyError, TypeError, ValueError):
            return False
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "key" in e and "reason" in e for e in entries):
            return False
        self.sync.ctx.track_reads(None)
        # The saved plan held nothing (a run that holds never saves): as that run did, this
        # one clears a hold an earlier run left (the console must not offer an obsolete batch).
        nothing_held(self.sync.ctx, self.sync.name)
        slog.errors_again(entries)  # scrubbed when saved: recorded as they are
        for entry in entries:
            count_rejection(str(entry.get("kind", "rejected")), result)
        result.counts["unchanged"] += unchanged
        result.counts["skipped"] += skipped  # the records the tracker holds back, as then
        if result.counts["failed"]:
            result.status = "partial"
        log.info(
            "%s: nothing it reads changed since its last plan (same sources, same target shadow, "
            "no record due for retry): %d unchanged, %d rejected, %d held back by the tracker, not planned again",
            self.sync.name,
            unchanged,
            result.rejected,
            skipped,
            extra={"sync": self.sync.name},
        )
        return True

    def finish(self, result: RunResult, desired: Desired, writes: int, refused: bool) -> None:
        """After a planned run: save the key when the run wrote nothing and read nothing
        the key does not describe."""
        ctx = self.sync.ctx
        undeclared = ctx.track_reads(None)
        targets = ctx.targets
        quiet = (
            writes == 0
            and not refused
            and not result.guard_tripped
            and not result.held
            and result.counts["failed"] == result.rejected
            and not undeclared
            and getattr(targets, "identity", lambda: None)() == self.identity
            and _held_back(self.sync) == self.tracked
        )
        if undeclared:
            log.warning("%s read sources its inputs() does not name (%s): it plans every cycle", self.sync.name, undeclared)
        if not quiet:
            return
        targets.save_unchanged_plan(  # type: ignore[attr-defined]
            self.sync.name,
            {
                "format": FORMAT,
                "key": self.key,
                "unchanged": result.counts["unchanged"],
                "skipped": result.counts["skipped"],
                "rejected": [_rejection(self.sync._slog, r) for r in desired.rejected],
            },
        )


def _rejection(slog: Any, r: Rejected) -> dict[str, Any]:
    """``r`` as the change log records it (scrubbed), to be recorded again as it is."""
    return dict(slog.rejection(r.key, r.reason, payload=r.payload, fields=r.fields, kind=r.kind))


def _held_back(sync: BaseSync) -> str | None:
    """What the failed-record tracker holds back for this sync, as one value: each record
    waiting for its retry or quarantined, with the inputs it failed with and its next
    retry. While it stays the same, every plan skips the same records (a record is held
    back only with the fingerprint it failed with: any other comes with a source change,
    which is in the key). None: a record is due (this plan retries it) or the tracker
    cannot say: plan."""
    try:
        rows = sync.ctx.tracker.list(sync.name)
    except Exception:  # the tracker unreachable: plan, as always
        return None
    held = []
    for row in rows:
        if row.get("status") not in ("waiting", "quarantined"):
            return None
        held.append([str(row.get("key")), row.get("fingerprint"), row.get("status"), row.get("next_retry")])
    return digest(sorted(held, key=repr))
