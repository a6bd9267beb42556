"""Per-run change and error files: the audit trail operators read after a sync.

For every sync run (``EventManager.start(sync)`` -> :class:`SyncLog`) this writes, under
``output_dir`` (the ``OUTPUT_DIR`` setting):

* ``changes/<sync>-<ts>.json``: always, one per run: run id, sync, status, start and
  finish times, dry-run flag, counts and every change with key, action and field-level
  before/after;
* ``errors/<sync>-<ts>.json``: when the run had at least one rejected or failed record:
  key, reason, the target's error body and the payload we sent;
* ``logs/<sync>-<ts>.jsonl``: the same changes and errors appended as JSON lines while
  they happen (flushed each line), so a run killed with SIGKILL or OOM still leaves
  evidence of what it already did to the target.

``<ts>`` is the run's UTC start, ``20261122T010203Z``; a second run starting in the same
second gets ``-2``, ``-3``... (the name is claimed with an exclusive create, so two
processes sharing OUTPUT_DIR cannot collide either). The .json files are written to a
temporary file and renamed into place (``os.replace``): readers never see half a file,
and nothing is ever overwritten.

Nothing secret reaches these files: payload and body keys that look secret (tokens,
passwords, authorization, API keys, SSN, birth date) are removed, and known secret
values plus credential-shaped text are masked (``utils.logger.Redactor``, which also
honours values registered process-wide with ``utils.logger.add_secrets``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from utils.logger import Redactor, default_redactor

__all__ = ["ERROR_KINDS", "EventManager", "RunFiles", "SyncLog"]

Clock = Callable[[], datetime]
ERROR_KINDS = ("rejected", "failed", "field_dropped")
"""rejected: our validator or the target refused the record (fix the source); failed: the
write did not go through for another reason; field_dropped: one bad value was left out
and the rest of the record synced (still the operator's to fix)."""
MAX_BODY_CHARS = 8000
"""A target's error body longer than this (an HTML error page, say) is cut: the first
8000 characters always hold the message, and error files must stay readable."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RunFiles:
    """Where one finished run was written (errors is None when there were none)."""

    changes: Path
    errors: Path | None
    log: Path


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

    def add_secrets(self, values: Iterable[Any]) -> None:
        """Mask more values in this manager's files (e.g. a token obtained mid-run)."""
        self._redactor.add(values)

    def now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            raise ValueError("EventManager clock must return timezone-aware datetimes")
        return moment.astimezone(UTC)

    def start(self, sync: str, *, dry_run: bool | None = None) -> SyncLog:
        """Open the log of one sync run: creates the folders and claims the file name."""
        if not sync or any(ch in sync for ch in "/\\\0") or sync.startswith("."):
            raise ValueError(f"invalid sync name {sync!r}")
        return SyncLog(self, sync, self.now(), self.dry_run if dry_run is None else dry_run)

    def scrub(self, value: Any) -> Any:
        """``value`` with secret keys dropped and secret values masked."""
        return self._redactor.value(value, sensitive_keys="drop")


class SyncLog:
    """The change and error log of one sync run. Thread-safe: workers applying records
    in parallel may call ``change``/``error`` concurrently. Use ``finish`` (or a
    ``with`` block, which finishes as ``failed`` if the body raised or forgot to)."""

    def __init__(self, manager: EventManager, sync: str, started_at: datetime, dry_run: bool) -> None:
        self._manager = manager
        self.sync = sync
        self.started_at = started_at
        self.dry_run = dry_run
        self._lock = threading.Lock()
        # Changes live in the .jsonl log only (a first sync of 50 000 employees records
        # 70 000 of them: hundreds of MB in memory); finish() streams them from there.
        self._errors: list[dict[str, Any]] = []
        self._finished: RunFiles | None = None
        root = manager.output_dir
        self._dirs = {name: root / name for name in ("changes", "errors", "logs")}
        for folder in self._dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.name, self._stream = self._claim(started_at.strftime("%Y%m%dT%H%M%SZ"))
        self._line(
            {
                "type": "start",
                "run_id": manager.run_id,
                "sync": sync,
                "started_at": _iso(started_at),
                "dry_run": dry_run,
            }
        )

    # ------------------------------------------------------------------ public

    @property
    def changes(self) -> list[dict[str, Any]]:
        """A copy of the (scrubbed) changes recorded so far (read back from the log)."""
        with self._lock:
            return list(self._logged_changes())

    @property
    def errors(self) -> list[dict[str, Any]]:
        """A copy of the (scrubbed) errors recorded so far."""
        with self._lock:
            return list(self._errors)

    @property
    def finished(self) -> bool:
        return self._finished is not None

    def change(
        self,
        key: Any,
        action: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        fields: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Record one change (``created``, ``updated``, ``deactivated``, ...).

        ``fields`` is the field-level diff ``{field: {"before": x, "after": y}}``; when
        omitted and both ``before`` and ``after`` are given it is computed from them
        (every field whose value differs)."""
        if fields is None and before is not None and after is not None:
            fields = {
                name: {"before": before.get(name), "after": after.get(name)}
                for name in dict.fromkeys([*before, *after])
                if before.get(name) != after.get(name)
            }
        entry: dict[str, Any] = {"key": key, "action": action, "at": _iso(self._manager.now())}
        if fields is not None:
            entry["fields"] = fields
        if before is not None:
            entry["before"] = before
        if after is not None:
            entry["after"] = after
        self._record("change", None, self._manager.scrub(entry))

    def error(
        self,
        key: Any,
        reason: str,
        *,
        target_body: Any = None,
        payload: Mapping[str, Any] | None = None,
        fields: Iterable[str] | Mapping[str, Any] | None = None,
        kind: str = "rejected",
    ) -> None:
        """Record a record-level problem. ``kind`` is one of ERROR_KINDS (``rejected``,
        ``failed``, ``field_dropped``); another label is recorded as given rather than
        failing a sync over its audit trail. ``fields`` names the fields at fault, or
        maps them to messages (a 422's ``errors``)."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty label such as {', '.join(ERROR_KINDS)}; got {kind!r}")
        entry: dict[str, Any] = {"key": key, "kind": kind, "reason": reason, "at": _iso(self._manager.now())}
        if fields is not None:
            entry["fields"] = dict(fields) if isinstance(fields, Mapping) else list(fields)
        if target_body is not None:
            entry["target_body"] = _truncate(target_body)
        if payload is not None:
            entry["payload"] = payload
        self._record("error", self._errors, self._manager.scrub(entry))

    def finish(self, counts: Mapping[str, Any], status: str, extra: Mapping[str, Any] | None = None) -> RunFiles:
        """Write the changes file (always) and the errors file (when there were
        errors), atomically, and close the JSON-lines log. ``extra`` adds top-level
        fields to the changes file (e.g. ``duration_seconds``); it may not replace the
        standard ones. Returns the paths written."""
        with self._lock:
            if self._finished is not None:
                raise RuntimeError(f"sync log {self.name} is already finished")
            finished_at = self._manager.now()
            errors_path = self._dirs["errors"] / f"{self.name}.json" if self._errors else None
            document: dict[str, Any] = {
                "run_id": self._manager.run_id,
                "sync": self.sync,
                "status": status,
                "started_at": _iso(self.started_at),
                "finished_at": _iso(finished_at),
                "dry_run": self.dry_run,
                "counts": dict(counts),
                "errors_file": errors_path.name if errors_path else None,
            }
            clash = sorted(set(extra or {}) & (set(document) | {"changes"}))
            if clash:
                raise ValueError(f"extra field(s) {', '.join(clash)} would replace standard fields of the changes file")
            document.update(self._manager.scrub(dict(extra or {})))
            document["counts"] = self._manager.scrub(document["counts"])
            changes_path = self._dirs["changes"] / f"{self.name}.json"
            # "changes" last (the long part of the file), streamed from the log
            _write_atomic(changes_path, document, tail=("changes", self._logged_changes()))
            if errors_path is not None:
                _write_atomic(
                    errors_path,
                    {"run_id": self._manager.run_id, "sync": self.sync, "status": status, "errors": self._errors},
                )
            self._write_line({"type": "finish", "status": status, "finished_at": _iso(finished_at), "counts": document["counts"]})
            self._stream.close()
            self._finished = RunFiles(changes_path, errors_path, self._dirs["logs"] / f"{self.name}.jsonl")
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

    def _claim(self, stamp: str) -> tuple[str, IO[str]]:
        """Reserve ``<sync>-<stamp>[-n]`` by creating its .jsonl exclusively (also
        skipping names whose .json files exist, e.g. from a cleaned-up logs folder)."""
        n = 1
        while True:
            name = f"{self.sync}-{stamp}" if n == 1 else f"{self.sync}-{stamp}-{n}"
            n += 1
            if (self._dirs["changes"] / f"{name}.json").exists() or (self._dirs["errors"] / f"{name}.json").exists():
                continue
            try:
                # backslashreplace: a lone surrogate (valid in JSON, e.g. "\ud800" from an
                # API) is written as its JSON escape instead of failing the whole run.
                return name, open(self._dirs["logs"] / f"{name}.jsonl", "x", encoding="utf-8", errors="backslashreplace")
            except FileExistsError:
                continue

    def _record(self, kind: str, bucket: list[dict[str, Any]] | None, entry: dict[str, Any]) -> None:
        with self._lock:
            if self._finished is not None:
                raise RuntimeError(f"sync log {self.name} is finished; cannot add a {kind}")
            if bucket is not None:
                bucket.append(entry)
            self._write_line({"type": kind, **entry})

    def _logged_changes(self) -> Iterable[dict[str, Any]]:
        """The change entries of this run's .jsonl log, in order (caller holds the lock;
        every line was flushed when written)."""
        with open(self._dirs["logs"] / f"{self.name}.jsonl", encoding="utf-8") as log:
            for line in log:
                if line.startswith('{"type": "change"'):
                    entry = json.loads(line)
                    del entry["type"]
                    yield entry

    def _line(self, entry: Mapping[str, Any]) -> None:
        with self._lock:
            self._write_line(entry)

    def _write_line(self, entry: Mapping[str, Any]) -> None:
        # flush() hands the line to the OS: it survives the process being killed.
        # No fsync per line (thousands per run); the final files are fsynced.
        self._stream.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self._stream.flush()


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
