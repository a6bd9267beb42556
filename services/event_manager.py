"""Per-run change and error files: the audit trail operators read after a sync.

For every sync run (``EventManager.start(sync)`` -> :class:`SyncLog`) this writes, under
``output_dir`` (the ``OUTPUT_DIR`` setting):

* ``logs/<sync>-<ts>.jsonl``: the write-ahead log of the run while it happens. Before a
  write is sent to a target its *intent* (key, action, target collection, record id) is
  appended and fsynced; after the answer its *outcome* (a change or an error, linked to
  the intent by ``seq``) is appended and flushed. A run killed with SIGKILL or OOM, or a
  node that loses power, still leaves on disk every write that may have been sent.
  Lines are whole: a write the disk refuses half-way is cut back to the previous line;
* ``changes/<sync>-<ts>.json``: at the end, one per run: run id, sync, status, start and
  finish times, dry-run flag, counts, every change with key, action and field-level
  before/after, and ``unconfirmed``: intents whose outcome was never recorded;
* ``errors/<sync>-<ts>.json``: at the end, when the run had at least one rejected or
  failed record: key, reason, the target's error body and the payload we sent.

Once both files are written the .jsonl is removed (they hold everything it held), so a
run with nothing to say leaves one small changes file, and a .jsonl left in ``logs/``
always means a run in progress or one that never finished (killed, disk full).

If the log cannot be written (disk full, read-only or missing OUTPUT_DIR) every call
raises :class:`utils.errors.ChangeLogError` ("cannot write the change log: ..."), and
``intent`` keeps raising it for the rest of the run: the sync stops sending, because a
write must never reach a target unrecorded. Cost of the guarantee: one fsync per write
sent, shared by the writes in flight at the same moment (measured about 0.2 ms on the
CI machine's disk; SafetyAmp's default 60 requests/minute leaves a second per write).

``<ts>`` is the run's UTC start, ``20261122T010203Z``; a second run starting in the same
second gets ``-2``, ``-3``... (the name is claimed with an exclusive create, so two
processes sharing OUTPUT_DIR cannot collide either). The .json files are written to a
temporary file and renamed into place (``os.replace``): readers never see half a file,
and nothing is ever overwritten. ``EventManager.prune`` applies the retention settings
(OUTPUT_RETENTION_DAYS, OUTPUT_RETENTION_RUNS) to these three folders.

Nothing secret reaches these files: payload and body keys that look secret (tokens,
passwords, authorization, API keys, SSN, birth date) are removed, and known secret
values plus credential-shaped text are masked (``utils.scrub.Redactor``, which also
honours values registered process-wide with ``utils.scrub.add_secrets``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from utils.errors import ChangeLogError
from utils.scrub import Redactor, default_redactor
from utils.timefmt import iso_z

__all__ = ["ERROR_KINDS", "EventManager", "RunFiles", "SyncLog", "latest_errors"]

log = logging.getLogger("event_manager")

Clock = Callable[[], datetime]
ERROR_KINDS = ("rejected", "failed", "field_dropped")
"""rejected: our validator or the target refused the record (fix the source); failed: the
write did not go through for another reason; field_dropped: one bad value was left out
and the rest of the record synced (still the operator's to fix)."""
MAX_BODY_CHARS = 8000
"""A target's error body longer than this (an HTML error page, say) is cut: the first
8000 characters always hold the message, and error files must stay readable."""
FOLDERS = ("changes", "errors", "logs")
RUN_NAME = re.compile(r"^(?P<sync>[^/\\]+?)-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?$", re.ASCII)
"""``<sync>-<UTC start>[-n]``: the only names ``prune`` ever deletes."""
_FILE = re.compile(r"^(?P<tmp>\.)?(?P<name>.+?)(?:\.jsonl|\.json)(?(tmp)\.[^.]+\.tmp)$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _reason(exc: OSError, path: Path) -> str:
    """``No space left on device (/app/output/logs/jobs-....jsonl)``: what and where."""
    return f"{exc.strerror or type(exc).__name__} ({path})"


def _error_details(
    fields: Iterable[str] | Mapping[str, Any] | None, target_body: Any, payload: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The optional parts of an error entry, as ``SyncLog.error`` records them."""
    out: dict[str, Any] = {}
    if fields is not None:
        out["fields"] = dict(fields) if isinstance(fields, Mapping) else list(fields)
    if target_body is not None:
        out["target_body"] = _truncate(target_body)
    if payload is not None:
        out["payload"] = payload
    return out


@dataclass(frozen=True)
class RunFiles:
    """Where one finished run was written (errors is None when there were none; log is
    None once removed, which a finished run's log is)."""

    changes: Path
    errors: Path | None
    log: Path | None


class EventManager:
    """Creates one :class:`SyncLog` per sync run, all sharing ``run_id`` (one run of
    sync_batch or one daemon cycle covers several syncs)."""

    def __init__(
        self,
        output_dir: Path | str,
        run_id: str,
        *,
        clock: Clock = _utc_now,
        dry_run: bool = False,
        secrets: Iterable[Any] = (),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.run_id = run_id
        self.dry_run = dry_run
        self._clock = clock
        self._redactor = Redactor(secrets, parent=default_redactor())
        self._claimed: set[str] = set()

    def add_secrets(self, values: Iterable[Any]) -> None:
        """Mask more values in this manager's files (e.g. a token obtained mid-run)."""
        self._redactor.add(values)

    def now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            raise ValueError("EventManager clock must return timezone-aware datetimes")
        return moment.astimezone(UTC)

    def start(self, sync: str, *, dry_run: bool | None = None) -> SyncLog:
        """Open the log of one sync run: creates the folders and claims the file name.
        Raises ChangeLogError when OUTPUT_DIR cannot be written."""
        if not sync or any(ch in sync for ch in "/\\\0") or sync.startswith("."):
            raise ValueError(f"invalid sync name {sync!r}")
        slog = SyncLog(self, sync, self.now(), self.dry_run if dry_run is None else dry_run)
        self._claimed.add(slog.name)
        return slog

    def scrub(self, value: Any) -> Any:
        """``value`` with secret keys dropped and secret values masked."""
        return self._redactor.value(value, sensitive_keys="drop")

    def prune(self, max_age_days: float, max_runs: int) -> list[Path]:
        """Delete the files of old runs; returns what was deleted.

        A run (``<sync>-<ts>[-n]``: its changes, errors and log files) goes when it
        started more than ``max_age_days`` ago, or when it is not among the newest
        ``max_runs`` finished runs of its sync (0 switches either rule off). A run
        without a changes file may still be running (another process sharing
        OUTPUT_DIR): it goes only by age, and only when its files have not been written
        to for that long either. Runs of this manager count among the newest and are never
        deleted; files whose names the product does not make are never touched. Never raises: a folder that cannot be read or
        a file that cannot be deleted is logged and left."""
        scanned = _scan_runs(self.output_dir)
        if scanned is None:
            return []
        runs, finished = scanned
        doomed = _doomed_runs(runs, finished, self.now(), max_age_days, max_runs)
        doomed -= self._claimed  # this manager's runs count among the newest, and are never deleted
        deleted = _delete_runs(runs, doomed)
        if deleted:
            log.info(
                "output retention: deleted %d file(s) of %d run(s) (OUTPUT_RETENTION_DAYS=%g, OUTPUT_RETENTION_RUNS=%d)",
                len(deleted),
                len(doomed),
                max_age_days,
                max_runs,
            )
        return deleted


def _scan_runs(output_dir: Path) -> tuple[dict[str, list[Path]], set[str]] | None:
    """The product-named files of each run under ``output_dir``, and the runs that
    finished (their changes file is in place); None (logged) when a folder cannot be read."""
    runs: dict[str, list[Path]] = {}
    finished: set[str] = set()
    for folder in FOLDERS:
        try:
            entries = list(os.scandir(output_dir / folder))
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("output retention skipped: cannot read %s: %s", output_dir / folder, exc.strerror)
            return None
        for entry in entries:
            match = _FILE.match(entry.name)
            if match is None or RUN_NAME.match(match["name"]) is None or not entry.is_file(follow_symlinks=False):
                continue
            name = match["name"]
            runs.setdefault(name, []).append(Path(entry.path))
            if folder == "changes" and not match["tmp"]:
                finished.add(name)
    return runs, finished


def _doomed_runs(runs: dict[str, list[Path]], finished: set[str], now: datetime, max_age_days: float, max_runs: int) -> set[str]:
    """The runs the retention rules (see ``EventManager.prune``) delete."""
    doomed: set[str] = set()
    if max_age_days > 0:
        cutoff = now - timedelta(days=max_age_days)
        for name, files in runs.items():
            if _started(name) >= cutoff:
                continue
            if name in finished or all(_mtime(p) < cutoff for p in files):
                doomed.add(name)
    if max_runs > 0:
        by_sync: dict[str, list[str]] = {}
        for name in finished:
            by_sync.setdefault(RUN_NAME.match(name)["sync"], []).append(name)  # type: ignore[index]
        for names in by_sync.values():
            names.sort(key=_order, reverse=True)
            doomed.update(names[max_runs:])
    return doomed


def _delete_runs(runs: dict[str, list[Path]], doomed: set[str]) -> list[Path]:
    """Delete the files of the ``doomed`` runs; returns what was deleted. A file that
    cannot be deleted is left (the first such failure is logged)."""
    deleted: list[Path] = []
    failures = 0
    for name in doomed:
        for path in runs[name]:
            try:
                path.unlink()
                deleted.append(path)
            except FileNotFoundError:  # another runner pruned it first
                pass
            except OSError as exc:
                failures += 1
                if failures == 1:
                    log.warning("output retention could not delete %s: %s", path, exc.strerror)
    return deleted


def _started(name: str) -> datetime:
    match = RUN_NAME.match(name)
    assert match is not None
    return datetime.strptime(match["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _order(name: str) -> tuple[str, int]:
    match = RUN_NAME.match(name)
    assert match is not None
    return match["ts"], int(match["n"] or 1)


def _mtime(path: Path) -> datetime:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return datetime.max.replace(tzinfo=UTC)  # unknown: treat as fresh, keep it


class SyncLog:
    """The change and error log of one sync run. Thread-safe: workers applying records
    in parallel may call ``intent``/``change``/``error`` concurrently. Use ``finish``
    (or a ``with`` block, which finishes as ``failed`` if the body raised or forgot to).

    Every method that writes raises ChangeLogError when the disk refuses it."""

    def __init__(self, manager: EventManager, sync: str, started_at: datetime, dry_run: bool) -> None:
        self._manager = manager
        self.sync = sync
        self.started_at = started_at
        self.dry_run = dry_run
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # fsync, and closing the file (never held with _lock by fsync)
        # Changes live in the .jsonl log only (a first sync of 50 000 employees records
        # 70 000 of them: hundreds of MB in memory); finish() streams them from there.
        self._errors: list[dict[str, Any]] = []
        self._open_intents: dict[int, dict[str, Any]] = {}
        self._seq = 0
        self._size = 0  # bytes of whole lines in the log
        self._synced = 0  # bytes known to be on disk (fsynced)
        self._broken: str | None = None
        self._finished: RunFiles | None = None
        root = manager.output_dir
        self._dirs = {name: root / name for name in FOLDERS}
        try:
            for folder in self._dirs.values():
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChangeLogError(_reason(exc, folder)) from exc
        self.name, self._fd = self._claim(started_at.strftime("%Y%m%dT%H%M%SZ"))
        self._path = self._dirs["logs"] / f"{self.name}.jsonl"
        try:
            self._line(
                {
                    "type": "start",
                    "run_id": manager.run_id,
                    "sync": sync,
                    "started_at": iso_z(started_at, "milliseconds"),
                    "dry_run": dry_run,
                }
            )
        except ChangeLogError:
            self._close()
            with contextlib.suppress(OSError):  # nothing was recorded: leave no empty file behind
                self._path.unlink()
            raise

    # ------------------------------------------------------------------ public

    @property
    def changes(self) -> list[dict[str, Any]]:
        """A copy of the (scrubbed) changes recorded so far (read back from the log)."""
        with self._lock:
            if self._finished is not None and self._finished.log is None:
                return list(json.loads(self._finished.changes.read_text(encoding="utf-8"))["changes"])
            return list(self._logged_changes())

    @property
    def errors(self) -> list[dict[str, Any]]:
        """A copy of the (scrubbed) errors recorded so far."""
        with self._lock:
            return list(self._errors)

    @property
    def finished(self) -> bool:
        return self._finished is not None

    def intent(self, key: Any, action: str, *, target: str, target_id: Any = None) -> int:
        """Record, durably, that a write is about to be sent: call it before the request
        and pass the returned number as ``intent=`` to the outcome's ``change``/``error``.
        Raises ChangeLogError (and keeps raising it for this run once the log failed):
        the caller must then not send the write."""
        with self._lock:
            if self._finished is not None:
                raise RuntimeError(f"sync log {self.name} is finished; cannot add an intent")
            if self._broken is not None:
                raise ChangeLogError(self._broken)
            self._seq += 1
            entry: dict[str, Any] = {
                "seq": self._seq,
                "key": key,
                "action": action,
                "target": target,
                "at": iso_z(self._manager.now(), "milliseconds"),
            }
            if target_id is not None:
                entry["id"] = target_id
            entry = self._manager.scrub(entry)
            self._write_line({"type": "intent", **entry})
            self._open_intents[entry["seq"]] = entry
            upto = self._size
        self._durable(upto)
        return int(entry["seq"])

    def change(
        self,
        key: Any,
        action: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        fields: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        intent: int | None = None,
    ) -> None:
        """Record one change (``created``, ``updated``, ``deactivated``, ...).

        ``fields`` is the field-level diff ``{field: {"before": x, "after": y}}``; when
        omitted and both ``before`` and ``after`` are given it is computed from them
        (every field whose value differs). ``intent``: what ``intent`` returned for it."""
        if fields is None and before is not None and after is not None:
            fields = {
                name: {"before": before.get(name), "after": after.get(name)}
                for name in dict.fromkeys([*before, *after])
                if before.get(name) != after.get(name)
            }
        entry: dict[str, Any] = {"key": key, "action": action, "at": iso_z(self._manager.now(), "milliseconds")}
        if fields is not None:
            entry["fields"] = fields
        if before is not None:
            entry["before"] = before
        if after is not None:
            entry["after"] = after
        if intent is not None:
            entry["intent"] = intent
        self._record("change", None, self._manager.scrub(entry), intent)

    def error(
        self,
        key: Any,
        reason: str,
        *,
        target_body: Any = None,
        payload: Mapping[str, Any] | None = None,
        fields: Iterable[str] | Mapping[str, Any] | None = None,
        kind: str = "rejected",
        intent: int | None = None,
    ) -> None:
        """Record a record-level problem. ``kind`` is one of ERROR_KINDS (``rejected``,
        ``failed``, ``field_dropped``); another label is recorded as given rather than
        failing a sync over its audit trail. ``fields`` names the fields at fault, or
        maps them to messages (a 422's ``errors``). ``intent``: the write it ends."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty label such as {', '.join(ERROR_KINDS)}; got {kind!r}")
        entry: dict[str, Any] = {"key": key, "kind": kind, "reason": reason, "at": iso_z(self._manager.now(), "milliseconds")}
        entry.update(_error_details(fields, target_body, payload))
        if intent is not None:
            entry["intent"] = intent
        self._record("error", self._errors, self._manager.scrub(entry), intent)

    def rejection(
        self,
        key: Any,
        reason: str,
        *,
        payload: Mapping[str, Any] | None = None,
        fields: Iterable[str] = (),
        kind: str = "rejected",
    ) -> dict[str, Any]:
        """A source record's rejection as ``error`` would record it (scrubbed), without
        its time: an idle cycle records it again with ``errors_again`` (sync/idle.py)."""
        entry: dict[str, Any] = {"key": key, "kind": kind, "reason": reason, **_error_details(fields, None, payload)}
        return dict(self._manager.scrub(entry))

    def errors_again(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Record rejections an earlier run recorded (``rejection``'s entries, already
        scrubbed), each with this run's time, as ``error`` would."""
        at = iso_z(self._manager.now(), "milliseconds")
        for entry in entries:
            self._record("error", self._errors, {**entry, "at": at}, None)

    def settled(self, intent: int, note: str) -> None:
        """Close an intent that ended in neither a change nor an error (e.g. a re-read
        showed nothing left to send)."""
        self._record("settled", None, {"intent": intent, "note": note, "at": iso_z(self._manager.now(), "milliseconds")}, intent)

    def finish(self, counts: Mapping[str, Any], status: str, extra: Mapping[str, Any] | None = None) -> RunFiles:
        """Write the changes file (always) and the errors file (when there were
        errors), atomically, then remove the JSON-lines log they supersede. ``extra``
        adds top-level fields to the changes file (e.g. ``duration_seconds``); it may
        not replace the standard ones. Returns the paths written.

        Raises ChangeLogError when a file cannot be written: the log is then kept (it
        holds every intent and outcome recorded) and the run counts as finished."""
        with self._lock:
            if self._finished is not None:
                raise RuntimeError(f"sync log {self.name} is already finished")
            finished_at = self._manager.now()
            errors_path = self._dirs["errors"] / f"{self.name}.json" if self._errors else None
            document: dict[str, Any] = {
                "run_id": self._manager.run_id,
                "sync": self.sync,
                "status": status,
                "started_at": iso_z(self.started_at, "milliseconds"),
                "finished_at": iso_z(finished_at, "milliseconds"),
                "dry_run": self.dry_run,
                "counts": dict(counts),
                "errors_file": errors_path.name if errors_path else None,
            }
            clash = sorted(set(extra or {}) & (set(document) | {"changes", "unconfirmed"}))
            if clash:
                raise ValueError(f"extra field(s) {', '.join(clash)} would replace standard fields of the changes file")
            document.update(self._manager.scrub(dict(extra or {})))
            document["counts"] = self._manager.scrub(document["counts"])
            # intents without an outcome: writes that may or may not have reached the target
            document["unconfirmed"] = list(self._open_intents.values())
            changes_path = self._dirs["changes"] / f"{self.name}.json"
            writing = changes_path
            try:
                # "changes" last (the long part of the file), streamed from the log
                _write_atomic(changes_path, document, tail=("changes", self._logged_changes()))
                if errors_path is not None:
                    writing = errors_path
                    _write_atomic(
                        errors_path,
                        {"run_id": self._manager.run_id, "sync": self.sync, "status": status, "errors": self._errors},
                    )
            except OSError as exc:
                reason = _reason(exc, writing)
                with contextlib.suppress(ChangeLogError):  # the log keeps what it holds; say how it ended if it can
                    self._write_line(
                        {"type": "finish", "status": status, "finished_at": iso_z(finished_at, "milliseconds"), "error": reason}
                    )
                self._close()
                self._finished = RunFiles(changes_path, None, self._path)
                raise ChangeLogError(reason) from exc
            self._close()
            kept: Path | None = self._path
            if self._broken is None:  # a log that refused a line holds what the files may lack: keep it
                try:
                    self._path.unlink()
                    kept = None
                except OSError as exc:  # harmless: the run's files are complete; retention removes it later
                    log.warning("could not remove %s after writing the changes file: %s", self._path, exc.strerror)
            self._finished = RunFiles(changes_path, errors_path, kept)
            return self._finished

    def __enter__(self) -> SyncLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._finished is None:
            reason = f"{exc_type.__name__}: {exc}" if exc_type else "the run ended without finishing its log"
            counts: dict[str, int] = {}
            for change in self.changes:
                counts[change["action"]] = counts.get(change["action"], 0) + 1
            self.finish(counts, "failed", {"failure": reason})

    # ------------------------------------------------------------------ internals

    def _claim(self, stamp: str) -> tuple[str, int]:
        """Reserve ``<sync>-<stamp>[-n]`` by creating its .jsonl exclusively (also
        skipping names whose .json files exist, e.g. from a cleaned-up logs folder)."""
        n = 1
        while True:
            name = f"{self.sync}-{stamp}" if n == 1 else f"{self.sync}-{stamp}-{n}"
            n += 1
            if (self._dirs["changes"] / f"{name}.json").exists() or (self._dirs["errors"] / f"{name}.json").exists():
                continue
            path = self._dirs["logs"] / f"{name}.jsonl"
            try:
                # O_APPEND: after a refused write is cut back (ftruncate), the next line
                # lands at the new end, not after a hole.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)
            except FileExistsError:
                continue
            except OSError as exc:
                raise ChangeLogError(_reason(exc, path)) from exc
            return name, fd

    def _record(self, kind: str, bucket: list[dict[str, Any]] | None, entry: dict[str, Any], intent: int | None) -> None:
        with self._lock:
            if self._finished is not None:
                raise RuntimeError(f"sync log {self.name} is finished; cannot add a {kind}")
            opened = self._open_intents.pop(intent, None) if intent is not None else None
            if opened is not None and kind != "settled":
                # which collection and record the write went to, kept once the log is gone
                entry = {**entry, "target": opened["target"]}
                for name in ("action", "id"):
                    if name in opened and name not in entry:
                        entry[name] = opened[name]
            if bucket is not None:
                bucket.append(entry)
            self._write_line({"type": kind, **entry})

    def _logged_changes(self) -> Iterable[dict[str, Any]]:
        """The change entries of this run's .jsonl log, in order (caller holds the lock;
        every line was written whole)."""
        with open(self._path, encoding="utf-8") as stream:
            for line in stream:
                if line.startswith('{"type": "change"'):
                    entry = json.loads(line)
                    del entry["type"]
                    yield entry

    def _line(self, entry: Mapping[str, Any]) -> None:
        with self._lock:
            self._write_line(entry)

    def _write_line(self, entry: Mapping[str, Any]) -> None:
        """Append one whole line (caller holds the lock). os.write hands it to the OS:
        it survives the process being killed; ``_durable`` makes it survive the node.
        A refused or short write is cut back, so the log holds whole lines only."""
        data = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode(
            "utf-8", "backslashreplace"
        )  # a lone surrogate (valid JSON) must not fail the run
        start = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            reason = _reason(exc, self._path)
            self._broken = self._broken or reason
            raise ChangeLogError(reason) from exc
        self._size = start + len(data)

    def _durable(self, upto: int) -> None:
        """fsync the log up to byte ``upto``. Group commit: writes in flight together
        share one fsync (whoever syncs covers every line already written)."""
        with self._sync_lock:
            if self._synced >= upto:
                return
            if self._broken is not None:
                raise ChangeLogError(self._broken)
            covered = self._size  # lines are counted only once written whole
            try:
                os.fsync(self._fd)
            except OSError as exc:
                reason = _reason(exc, self._path)
                self._broken = self._broken or reason
                raise ChangeLogError(reason) from exc
            self._synced = covered

    def _close(self) -> None:
        with self._sync_lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1


def _truncate(body: Any) -> Any:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and len(body) > MAX_BODY_CHARS:
        return body[:MAX_BODY_CHARS] + f"... [{len(body) - MAX_BODY_CHARS} more characters cut]"
    return body


def _write_atomic(path: Path, document: Any, tail: tuple[str, Iterable[Any]] | None = None) -> None:
    """Write JSON to a temporary file in the same folder, fsync, then rename over
    ``path``: a reader or a crash sees the whole old state or the whole new one.

    ``tail`` = (key, items): a last key whose list is written item by item from an
    iterable (never held in memory whole); the text is the same as ``json.dump`` of
    the document with that list in it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
            if tail is None:
                json.dump(document, handle, ensure_ascii=False, indent=2, default=str)
            else:
                key, items = tail
                head = json.dumps({**document, key: []}, ensure_ascii=False, indent=2, default=str)
                end = "[]\n}"
                assert head.endswith(end), "the streamed key must be the document's last"
                handle.write(head[: -len(end)] + "[")
                first = True
                for item in items:
                    text = json.dumps(item, ensure_ascii=False, indent=2, default=str)
                    handle.write(("\n    " if first else ",\n    ") + text.replace("\n", "\n    "))
                    first = False
                handle.write("]\n}" if first else "\n  ]\n}")
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable; not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _run_order(path: Path, sync: str) -> tuple[str, int] | None:
    """Sort key of ``<sync>-<ts>[-n].json`` (None for another sync's file)."""
    stem = path.name[: -len(".json")]
    if not stem.startswith(f"{sync}-"):
        return None
    stamp, _, n = stem[len(sync) + 1 :].partition("-")
    if len(stamp) != 16 or not stamp.endswith("Z") or (n and not (n.isascii() and n.isdigit())):
        return None
    return stamp, int(n) if n else 1


def latest_errors(output_dir: Path | str, sync: str) -> tuple[Path, dict[str, Any]] | None:
    """The errors file of ``sync``'s most recent run and its content, or None when that
    run wrote none (it had no rejected or failed record) or no run is on record. Used by
    ``sync_batch.py failed list``: validation rejections are not the failed-record
    tracker's business (only a change in the source fixes them), so they are listed from
    here."""
    root = Path(output_dir)

    def newest(folder: str) -> tuple[tuple[str, int], Path] | None:
        found = [(key, f) for f in (root / folder).glob(f"{sync}-*.json") if (key := _run_order(f, sync)) is not None]
        return max(found) if found else None

    errors = newest("errors")
    if errors is None:
        return None
    changes = newest("changes")
    if changes is not None and changes[0] > errors[0]:
        return None  # a later run had nothing to refuse
    try:
        with open(errors[1], encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    return (errors[1], document) if isinstance(document, dict) else None
