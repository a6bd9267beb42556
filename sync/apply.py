"""The applier: how every sync sends its planned writes and records what became of them.

One path for the SafetyAmp syncs (BaseSync) and the rosters sync:

- write-ahead: each write's intent is in the change log before its request goes out
  (the log refuses: ChangeLogError, nothing is sent);
- no write starts once shutdown is requested, a write lock of the runner is lost (the
  fence is checked before every write; see utils/locks.py) or a write failed fatally;
- a record-level refusal (RecordError: validation, 422, 409, ...) is recorded in the
  errors file and the failed-record tracker, and the run goes on;
- a write that failed after its retries (RetriableError) is recorded too; a run of
  CONSECUTIVE_ERROR_LIMIT of them stops the sync (FatalError): the target is down;
- a write that went through clears the record from the tracker and is recorded in the
  changes file with its field-level diff;
- a dry run sends nothing and records every planned write as it would go.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from utils.errors import ChangeLogError, FatalError, RecordError, RetriableError
from utils.locks import fenced
from utils.logger import in_context
from utils.request_log import current_request_log, recording

if TYPE_CHECKING:
    from sync.base import RunResult, SyncContext

T = TypeVar("T")
R = TypeVar("R")

COUNTED = {"create": "created", "update": "updated", "deactivate": "deactivated"}
"""The count a write of each kind adds when it goes through."""


@dataclass(frozen=True)
class Entry:
    """One planned write as the change log, the errors file and the tracker see it."""

    key: str
    kind: str  # create | update | deactivate
    target: str
    """The collection or resource written."""
    target_id: str | None = None
    fingerprint: str = ""
    payload: Mapping[str, Any] | None = None
    """What the errors file shows when the write fails."""
    changes: Mapping[str, Any] = field(default_factory=dict)
    """The field-level diff ``{field: {"before": x, "after": y}}``."""


@dataclass(frozen=True)
class Done(Generic[R]):
    """What a write that went through did."""

    outcome: str
    """created | updated | deactivated, or unchanged (a re-read showed nothing to send)."""
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    logged_as: str | None = None
    """The change log's action when it is not the planned kind (``adopted``)."""
    value: R | None = None
    """What the caller needs back (the new record's id), or None: the applier keeps this
    alone of a settled write, until the end of the apply phase, so it must stay small."""


class Applier(Generic[T, R]):
    """Sends one run's writes for ``sync`` and records them in ``slog`` and ``result``.

    ``entry(item)`` describes a write; ``send(item)`` sends it and returns ``Done``
    (RecordError, RetriableError and FatalError pass through it to the applier). One
    Applier per run: it counts consecutive failures across every batch of the run."""

    def __init__(self, sync: str, ctx: SyncContext, slog: Any, result: RunResult, *, workers: int) -> None:
        self.sync = sync
        self.ctx = ctx
        self.slog = slog
        self.result = result
        self.workers = workers
        self._lock = threading.Lock()
        self._consecutive_errors = 0

    def apply(self, items: Sequence[T], entry: Callable[[T], Entry], send: Callable[[T], Done[R]]) -> list[R | None]:
        """Apply ``items`` in order (bounded concurrency); per item the ``value`` of its
        ``Done``, or None when it failed, was abandoned, (dry run) was not sent, or its
        ``Done`` had no value.

        Only the value is kept: a settled write's ``Done`` (and the records its before and
        after hold, already in the change log) is let go at once. Kept until the end of
        the apply phase, 70,000 of them were tens of MB at the peak of a 50,000-employee
        first run (docs/performance.md)."""
        values: list[R | None] = [None] * len(items)
        if self.ctx.dry_run:
            for item in items:
                e = entry(item)
                self.result.counts[COUNTED[e.kind]] += 1
                self.slog.change(e.key, e.kind, None, None, dict(e.changes))
            return values
        indexed = list(enumerate(items))

        def settle(pair: tuple[int, T], outcome: Done[R] | str, count: int, total: int) -> None:
            name = outcome.outcome if isinstance(outcome, Done) else outcome
            if name in self.result.counts:
                self.result.counts[name] += 1
            if isinstance(outcome, Done):
                values[pair[0]] = outcome.value
            if self.ctx.progress:
                self.ctx.progress(self.sync, count, total)

        apply_in_order(self.sync, self.ctx, indexed, lambda pair: self._one(pair[1], entry, send), settle, self.workers)
        return values

    def apply_batches(
        self,
        items: Sequence[T],
        next_batch: Callable[[int], int],
        entry: Callable[[T], Entry],
        send_batch: Callable[[Sequence[T]], Sequence[Done[R] | Exception]],
    ) -> list[R | None]:
        """Apply ``items`` in batches (one request each, e.g. SCIM Bulk), one batch at a
        time and in order: ``next_batch(start)`` says how many items from ``start`` go in
        the next one (a later batch may name what an earlier one created, so its size is
        known only then). Each write's intent is in the change log before its batch goes
        out; ``send_batch`` returns per write its ``Done`` or the error it met, settled as
        ``apply`` settles a single write (RecordError: refused, tracked; RetriableError:
        failed, counted towards the consecutive-error limit; FatalError: stops the sync).
        Returns per item the value of its ``Done`` (None otherwise), as ``apply`` does."""
        values: list[R | None] = [None] * len(items)
        if self.ctx.dry_run:
            return self.apply(items, entry, lambda item: Done("unchanged"))
        fatal: list[FatalError] = []

        def one(batch: Sequence[int]) -> list[Done[R] | str]:
            if fatal:
                return ["abandoned"] * len(batch)
            logged = []
            for i in batch:
                e = entry(items[i])
                logged.append((e, self.slog.intent(e.key, e.kind, target=e.target, target_id=e.target_id)))
            got = send_batch([items[i] for i in batch])
            out: list[Done[R] | str] = []
            for (e, intent), g in zip(logged, got, strict=True):
                if isinstance(g, FatalError):
                    self.slog.error(e.key, g.message, payload=e.payload, kind="failed", intent=intent)
                    fatal.append(g)
                    out.append("failed")
                elif isinstance(g, (RecordError, RetriableError)):
                    out.append(self._failed(e, g, intent))
                elif isinstance(g, Exception):
                    raise g
                else:
                    out.append(self._went_through(e, g, intent))
            return out

        start = 0

        def settle(batch: Sequence[int], outcome: list[Done[R] | str] | str, _count: int, _total: int) -> None:
            for pos, i in enumerate(batch):
                got = outcome[pos] if isinstance(outcome, list) else outcome
                name = got.outcome if isinstance(got, Done) else got
                if name in self.result.counts:
                    self.result.counts[name] += 1
                if isinstance(got, Done):
                    values[i] = got.value
            if self.ctx.progress:
                self.ctx.progress(self.sync, start + len(batch), len(items))

        while start < len(items):
            if self.ctx.stop.is_set():
                raise FatalError(f"stopped by shutdown request after {start} of {len(items)} writes")
            batch = list(range(start, min(len(items), start + max(1, next_batch(start)))))
            apply_in_order(self.sync, self.ctx, [batch], one, settle, 1)
            if fatal:
                raise fatal[0]
            start += len(batch)
        return values

    def _one(self, item: T, entry: Callable[[T], Entry], send: Callable[[T], Done[R]]) -> Done[R] | str:
        e = entry(item)
        # Write-ahead: on disk before the request, or ChangeLogError and nothing is sent.
        intent = self.slog.intent(e.key, e.kind, target=e.target, target_id=e.target_id)
        try:
            got = send(item)
        except (RecordError, RetriableError) as exc:
            return self._failed(e, exc, intent)
        return self._went_through(e, got, intent)

    def _failed(self, e: Entry, exc: RecordError | RetriableError, intent: int) -> str:
        if isinstance(exc, RecordError):
            self._refused(e, exc, intent)
            return "failed"
        self.slog.error(e.key, f"gave up after retries: {exc.message}", payload=e.payload, kind="failed", intent=intent)
        self._count_failure(exc)
        return "failed"

    def _went_through(self, e: Entry, got: Done[R], intent: int) -> Done[R]:
        with self._lock:
            self._consecutive_errors = 0
        self.ctx.tracker.record_success(self.sync, e.key)
        if got.outcome == "unchanged":
            self.slog.settled(intent, "nothing left to change after re-reading the record")
        else:
            self.slog.change(e.key, got.logged_as or e.kind, got.before, got.after, dict(e.changes), intent=intent)
        return got

    def _refused(self, e: Entry, exc: RecordError, intent: int) -> None:
        """The target answered and refused this record: record it, go on (the target is up)."""
        reason = exc.message
        if exc.field_errors:
            reason = "; ".join(f"{f}: {' '.join(m)}" for f, m in exc.field_errors.items())
        self.ctx.tracker.record_failure(self.sync, e.key, e.fingerprint, reason, list(exc.field_errors))
        self.slog.error(
            e.key,
            reason,
            target_body=exc.body,
            payload=e.payload,
            fields=list(exc.field_errors),
            kind="failed",
            intent=intent,
        )
        with self._lock:
            self._consecutive_errors = 0

    def _count_failure(self, exc: RetriableError) -> None:
        with self._lock:
            self._consecutive_errors += 1
            count = self._consecutive_errors
        if count >= int(self.ctx.settings.consecutive_error_limit):
            raise FatalError(f"{count} consecutive requests failed; stopping the {self.sync} sync", service=exc.service) from exc


def apply_in_order(
    name: str,
    ctx: SyncContext,
    items: Sequence[T],
    write: Callable[[T], R],
    settle: Callable[[T, R | str, int, int], None],
    workers: int,
) -> None:
    """Apply ``write`` to every item on a bounded thread pool (the rate limiter paces the
    requests; threads only hide the target's latency), settling results in item order.

    ``settle(item, outcome, done, total)`` runs in the calling thread with what ``write``
    returned, or ``"failed"`` when it raised FatalError, or ``"abandoned"`` when it never
    ran or its change log refused it (ChangeLogError). No new write starts once shutdown
    is requested (``ctx.stop``), a lock of ``ctx.fence`` was lost (another runner may own
    the target now: every write request is checked, see utils/locks.py) or a write raised
    FatalError; the first such reason is raised when the in-flight writes have settled."""
    total = len(items)
    if not total:
        return
    abort: list[BaseException] = []
    requests_log = current_request_log()  # a one-record run shows what it sent (utils/request_log.py)

    def one(item: T) -> R | str:
        if abort or ctx.stop.is_set():
            return "abandoned"
        return _fenced_write(ctx, requests_log, write, item)

    done = 0

    def settle_next(item: T, fut: Future[R | str]) -> None:
        nonlocal done
        try:
            outcome = fut.result()
        except FatalError as exc:
            if not abort:
                abort.append(exc)
            # a write stopped by its change log was not sent, or its outcome is unknown: not a failed record
            outcome = "abandoned" if isinstance(exc, ChangeLogError) else "failed"
        done += 1
        settle(item, outcome, done, total)

    size = max(1, min(workers, total))
    with ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"apply-{name}") as pool:
        # A bounded window of submitted writes: 70 000 futures submitted at once held tens
        # of MB for nothing (the rate limit paces them anyway).
        pending: deque[tuple[T, Future[R | str]]] = deque()
        run_one = in_context(one)  # the run and tenant of the caller, for the logs and the User-Agent
        for item in items:
            pending.append((item, pool.submit(run_one, item)))
            if len(pending) >= size * 4:
                settle_next(*pending.popleft())
        while pending:
            settle_next(*pending.popleft())
    if abort:
        raise abort[0]
    if ctx.stop.is_set() and done < total:
        raise FatalError(f"stopped by shutdown request after {done} of {total} writes")


def _fenced_write(ctx: SyncContext, requests_log: Any, write: Callable[[T], R], item: T) -> R:
    """``write(item)`` on a worker thread: only while this runner still holds its write
    locks (``ctx.fence``), with the run's request log."""
    fence = ctx.fence
    with recording(requests_log):
        if fence is None:
            return write(item)
        fence.raise_if_lost()
        with fenced(fence):  # worker threads do not inherit the runner's context
            return write(item)
