"""Requests for a run between the daemon's scheduled cycles, as its worker collects them.

Operators (``POST /sync``, ``POST /sync/<name>`` with the bearer token) and outside
events (a signed Samsara webhook) ask for runs. The worker runs one cycle at a time and
takes every request that arrived meanwhile in one go, so requests coalesce as a union:
"all" absorbs any named sync, named syncs add up, and an event's run joins whatever else
is pending. Nothing asked for is dropped because something else was asked for too.

Each request also says who asked. Only an operator's request *forces* its syncs past
quarantine; an event's never does (a burst of webhooks must not hammer a sync that is
backing off), and the worker holds an event's run back while the sync is quarantined or
a breaker it needs is open.

Thread-safe: the HTTP handlers run on waitress's threads, the worker on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Pending", "TriggerQueue"]


@dataclass(frozen=True)
class Pending:
    """What the worker should run now (empty: nothing was asked for)."""

    syncs: tuple[str, ...] = ()
    """Enabled syncs asked for, in run order."""
    forced: frozenset[str] = frozenset()
    """Those an operator asked for: quarantine does not hold them back."""
    everything: bool = False
    """Every enabled sync was asked for (a full cycle: the interval starts again)."""
    requested_by: Mapping[str, str] = field(default_factory=dict)
    """sync -> who asked for it (console operators, "trigger token"), for the run history."""

    def __bool__(self) -> bool:
        return bool(self.syncs)


class TriggerQueue:
    """Pending run requests. ``clock`` is monotonic seconds (tests inject one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._all = False
        self._all_forced = False
        self._named: dict[str, bool] = {}  # sync -> asked for by an operator
        self._due: dict[str, float] = {}  # debounced event runs: sync -> when
        self._by: dict[str | None, list[str]] = {}  # sync (None: all) -> who asked

    def request(self, sync: str | None = None, *, operator: bool, by: str | None = None) -> None:
        """Ask for ``sync`` (None: every enabled sync) at the worker's next turn; ``by``
        names who asked (kept for the run history)."""
        with self._lock:
            if by and by not in self._by.setdefault(sync, []):
                self._by[sync].append(by)
            if sync is None:
                self._all = True
                self._all_forced = self._all_forced or operator
            else:
                self._named[sync] = self._named.get(sync, False) or operator

    def request_after(self, sync: str, delay: float) -> bool:
        """An event's run of ``sync``, ``delay`` seconds after the first event of a burst
        (later events of the burst join it). Never forced. False if one was pending."""
        with self._lock:
            if sync in self._due:
                return False
            self._due[sync] = self._clock() + max(0.0, delay)
        return True

    def waiting(self) -> bool:
        """Something was asked for that ``take`` would return now (without taking it)."""
        now = self._clock()
        with self._lock:
            return self._all or bool(self._named) or any(due <= now for due in self._due.values())

    def take(self, enabled: Sequence[str]) -> Pending:
        """Everything asked for so far (events whose delay has passed included), and
        forget it. Syncs that are not enabled are dropped."""
        now = self._clock()
        with self._lock:
            for sync, due in list(self._due.items()):
                if due <= now:
                    del self._due[sync]
                    self._named.setdefault(sync, False)
            if self._all:
                syncs = tuple(enabled)
                forced = {s for s in enabled if self._all_forced or self._named.get(s)}
            else:
                syncs = tuple(s for s in enabled if s in self._named)
                forced = {s for s in syncs if self._named[s]}
            everything = self._all or (bool(syncs) and set(syncs) == set(enabled))
            by = {s: ", ".join(dict.fromkeys(self._by.get(s, []) + self._by.get(None, []))) for s in syncs}
            self._all = self._all_forced = False
            self._named.clear()
            self._by.clear()
        return Pending(syncs, frozenset(forced), everything and bool(syncs), {s: who for s, who in by.items() if who})
