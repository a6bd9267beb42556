"""Logging set-up: JSON lines for machines, one readable line for humans, never a secret.

``configure_logging`` installs exactly one handler on the root logger (calling it again
replaces it), so every library's records come out in the same format. A
:class:`SecretScrubber` filter on that handler rewrites each record before any
formatter sees it, and the formatters scrub their output once more (defence in depth:
a record may reach them by another path, or a secret may hide in an object's ``str``).

What is scrubbed, everywhere (message, ``%``-args, ``extra`` fields, exception and
stack text):

* every registered secret value (``configure_logging(secrets=...)`` with
  ``Settings.secret_values()``, then ``utils.scrub.add_secrets`` for values learnt later, such
  as an OAuth access token), plus its URL-encoded forms;
* anything shaped like a credential (URL userinfo, secret-named query parameters,
  ``Bearer`` tokens, ``Authorization`` headers, ``password=`` pairs...).

The rules and the registry live in :mod:`utils.scrub`, the one scrub every output
surface uses (files, Redis, endpoints, CLI output); this module only applies it to log
records. Its names are re-exported here for older imports.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, Literal, TypeVar

from pythonjsonlogger.json import JsonFormatter

from utils.data_validator import is_secret_field  # one definition of a secret field
from utils.scrub import MASK, Redactor, default_redactor  # the one scrub: utils/scrub.py

T = TypeVar("T")

__all__ = [
    "ContextAdapter",
    "JsonLineFormatter",
    "SecretScrubber",
    "TextLineFormatter",
    "bind",
    "configure_logging",
]

# --------------------------------------------------------------------------- records


def _standard_attrs() -> frozenset[str]:
    probe = logging.LogRecord("x", logging.INFO, __file__, 0, "", None, None)
    return frozenset(vars(probe)) | {"message", "asctime", "taskName"}


_STANDARD: frozenset[str] | None = None


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    global _STANDARD
    if _STANDARD is None:
        _STANDARD = _standard_attrs()
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class SecretScrubber(logging.Filter):
    """Handler filter that masks secrets in a record in place: the rendered message
    (``%``-args are merged first, then dropped), ``extra`` fields, exception text
    (rendered into ``exc_text``; ``exc_info`` is cleared so no formatter re-renders the
    raw traceback) and stack text. It never drops a record; if scrubbing itself fails,
    the record keeps only a fixed message rather than risk leaking."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or default_redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        r = self.redactor
        try:
            if isinstance(record.msg, Mapping):
                record.msg = r.value(record.msg)
                record.args = None
            else:
                try:
                    message = record.getMessage()
                except Exception:  # bad %-args: keep the evidence, masked
                    message = f"{record.msg} (unformattable args: {record.args!r})"
                record.msg = r.text(str(message))
                record.args = None
            for name, value in _extras(record).items():
                setattr(record, name, MASK if is_secret_field(name) and value not in (None, "") else r.value(value))
            if record.exc_info and record.exc_info[0] is not None:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                record.exc_info = None
            if record.exc_text:
                record.exc_text = r.text(record.exc_text)
            if record.stack_info:
                record.stack_info = r.text(record.stack_info)
        except Exception:  # fail closed: a broken scrubber must neither leak nor crash the caller
            record.msg = "log record withheld: secret scrubbing failed"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
            for name in _extras(record):
                setattr(record, name, MASK)
        return True


def _utc(created: float) -> datetime:
    return datetime.fromtimestamp(created, tz=UTC)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: ``timestamp`` (ISO 8601 UTC, ms), ``level``,
    ``logger``, ``message``, then every extra (``run_id``, ``sync``, ``key``,
    ``event``, ...), then ``exception``/``stack`` when present."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception", "stack_info": "stack"},
        )
        self.redactor = redactor or default_redactor()

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["timestamp"] = _utc(record.created).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        super().add_fields(log_data, record, message_dict)
        # exception/stack go last so the line reads naturally
        for name in ("exception", "stack"):
            if name in log_data:
                log_data[name] = log_data.pop(name)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        scrubbed: dict[str, Any] = self.redactor.value(log_data)
        return scrubbed


class TextLineFormatter(logging.Formatter):
    """``2026-11-22T01:02:03Z INFO sync=employees key=123 message k=v``.

    ``sync`` and ``key`` lead (what a human scans for); other extras follow the message
    as ``k=v``, except ``run_id``, which is constant within a run and lives in the JSON
    format and the run summary. Tracebacks follow on the next lines."""

    LEAD = ("sync", "key")
    HIDDEN = ("run_id",)

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or default_redactor()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        extras = _extras(record)
        lead = [f"{k}={_kv(extras[k])}" for k in self.LEAD if extras.get(k) is not None]
        tail = [f"{k}={_kv(v)}" for k, v in extras.items() if k not in self.LEAD and k not in self.HIDDEN]
        stamp = _utc(record.created).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = " ".join([stamp, record.levelname, *lead, message, *tail])
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return self.redactor.text(line)


def _kv(value: Any) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch in '"=' for ch in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


# --------------------------------------------------------------------------- set-up

_MARK = "_sync_daemon_handler"
_QUIET = {"azure.core.pipeline.policies.http_logging_policy": logging.WARNING}
"""Libraries that log every HTTP request at INFO; their lines drown the sync's own."""


def configure_logging(
    level: str | int = "INFO",
    fmt: Literal["json", "text"] | str = "json",
    stream: IO[str] | None = None,
    secrets: Iterable[Any] = (),
) -> logging.Handler:
    """Send every log record to ``stream`` (default: ``sys.stderr`` at call time, so
    stdout stays free for ``--json`` summaries) as JSON lines or text lines, scrubbed.

    Idempotent: the handler installed by an earlier call is removed first, so calling
    it twice (tests, a reload) never duplicates lines. ``secrets`` are added to the
    process-wide registry; registrations are never forgotten. Returns the handler.
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.strip().upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}")
        level = resolved
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}; use 'json' or 'text'")
    redactor = default_redactor()
    redactor.add(secrets)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _MARK, True)
    handler.addFilter(RunIdFilter())
    handler.addFilter(SecretScrubber(redactor))
    handler.setFormatter(JsonLineFormatter(redactor) if fmt == "json" else TextLineFormatter(redactor))
    root.addHandler(handler)
    root.setLevel(level)
    # A crash's traceback is printed by Python itself, past every handler: scrub it too.
    sys.excepthook = _scrubbed_excepthook
    threading.excepthook = _scrubbed_thread_excepthook
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, level))
    return handler


def _scrubbed_excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, header: str = "") -> None:
    """Python's uncaught-exception printout, with every secret masked."""
    try:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(header + default_redactor().text(text))
    except Exception:  # the hook must never raise; nothing unscrubbed is printed instead
        sys.stderr.write(f"{header}{exc_type.__name__} (traceback withheld: secret scrubbing failed)\n")


def _scrubbed_thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    _scrubbed_excepthook(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback, f"Exception in thread {name}:\n")


class ContextAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that adds fixed context (``run_id``, ``sync``, ``key``...) to every
    record, merged with any per-call ``extra`` (per-call values win)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        merged = dict(self.extra or {})
        merged.update(kwargs.get("extra") or {})
        kwargs["extra"] = merged
        return msg, kwargs

    def bind(self, **context: Any) -> ContextAdapter:
        """A new adapter with more context (``log.bind(key=emp_id)``)."""
        return ContextAdapter(self.logger, {**(self.extra or {}), **context})


def bind(logger: logging.Logger | ContextAdapter, **context: Any) -> ContextAdapter:
    """``bind(log, run_id=..., sync="employees")`` -> a logger adding that context."""
    if isinstance(logger, ContextAdapter):
        return logger.bind(**context)
    return ContextAdapter(logger, context)


_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)
_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)
_fallback_run_id: str | None = None
_per_context = False
"""Set once any tenant context is set: from then on a thread without context says
nothing rather than another tenant's run (see ``set_run_id``)."""


def set_run_id(run_id: str | None) -> None:
    """The run every log line of this thread (and of the threads it starts through
    ``utils.logger.in_context``) belongs to until the next call. Single-tenant, a
    thread started without the context (a lock's renewal) still gets the one run of
    the process; with tenants, where cycles run side by side, it gets none."""
    global _fallback_run_id
    _run_id.set(run_id)
    _fallback_run_id = run_id


def set_tenant(tenant: str | None) -> None:
    """The tenant every log line of this thread belongs to (with TENANTS_DIR)."""
    global _per_context
    _tenant.set(tenant)
    if tenant is not None:
        _per_context = True


def current_run_id() -> str | None:
    found = _run_id.get()
    if found is None and not _per_context:
        return _fallback_run_id
    return found


def current_tenant() -> str | None:
    return _tenant.get()


def in_context(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` to run on another thread with this thread's run and tenant (a thread pool
    or a new Thread does not inherit context variables by itself)."""
    context = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> T:
        return context.copy().run(fn, *args, **kwargs)

    return run


class RunIdFilter(logging.Filter):
    """Adds ``run_id`` (and ``tenant``) to records that do not carry one."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = current_run_id()
        if run_id is not None and not getattr(record, "run_id", None):
            record.run_id = run_id
        tenant = _tenant.get()
        if tenant is not None and not getattr(record, "tenant", None):
            record.tenant = tenant
        return True
