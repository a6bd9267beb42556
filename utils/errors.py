"""One error taxonomy for the whole product.

Every adapter translates its vendor's failures into these classes in one place
(``raise ... from exc``), so the engine decides what to do from the class alone::

    SyncError                      base of everything we raise on purpose
    +-- ConfigurationError         bad or missing settings: fail fast, exit code 2
    +-- RetriableError             429, 5xx, timeouts, dropped connections: retry with backoff
    |   +-- RateLimitedError       429 / throttled; carries ``retry_after`` seconds; never
    |   |                          counts against a record's budget or trips a breaker
    |   +-- AmbiguousWriteError    a write that may have reached the target (timeout or reset
    |                              after the request was sent): re-check by key, never resend blind
    +-- RecordError                this record is wrong (validation, 422, 409): record it, go on
    |   +-- ConflictError          uniqueness violation (duplicate e-mail, phone, userName)
    +-- FatalError                 the sync cannot continue (401/403, malformed response,
        |                          partial list read): fail the sync, not the process
        +-- SourceUnavailableError the system of record could not be read completely
        +-- ChangeLogError         the run's change log (OUTPUT_DIR) cannot be written: stop
                                   sending, since a write must never go out unrecorded
        +-- LockLostError          this runner's single-writer lock is no longer its own:
                                   stop writing at once (another runner may own the target)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SyncError(Exception):
    """Base class. ``service`` names the outside system involved, when there is one."""

    def __init__(self, message: str, *, service: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.service = service


class ConfigurationError(SyncError):
    """Settings are missing or malformed. ``problems`` lists every one of them."""

    def __init__(self, problems: list[str] | str) -> None:
        from utils.scrub import scrub  # here: utils.scrub imports a module that imports this one

        # A problem may quote the value it found (a URL setting with a token in it):
        # scrubbed once here, so no caller prints a credential while explaining it.
        self.problems = [scrub(p) for p in ([problems] if isinstance(problems, str) else list(problems))]
        super().__init__("configuration error: " + "; ".join(self.problems))


class RetriableError(SyncError):
    """A transient failure: the same request may succeed later."""

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, service=service)
        self.status = status
        self.retry_after = retry_after


class RateLimitedError(RetriableError):
    """HTTP 429 (or a vendor's throttling answer). ``retry_after`` in seconds, if given."""


class AmbiguousWriteError(RetriableError):
    """A create/update may or may not have been applied by the target.

    ``settled``: the target has finished with the request (it answered, e.g. HTTP 500),
    so a read by key now tells whether it was applied. Not settled (a timeout, a dropped
    connection, a gateway's 502/504): the request may still be on its way in and be
    applied after any read we make now, so a create not found by key must not be sent
    again in this run (``sync.base.create_once``)."""

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        settled: bool = False,
    ) -> None:
        super().__init__(message, service=service, status=status, retry_after=retry_after)
        self.settled = settled


class RecordError(SyncError):
    """One record was rejected: by our validator or by the target (422/409).

    ``field_errors`` maps a field name to its messages (Laravel-style 422 bodies map
    straight into it); ``body`` is the target's error body, already scrubbed.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        status: int | None = None,
        field_errors: Mapping[str, list[str]] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message, service=service)
        self.status = status
        self.field_errors: dict[str, list[str]] = {k: list(v) for k, v in (field_errors or {}).items()}
        self.body = body


class ConflictError(RecordError):
    """The target says a unique value (e-mail, phone, userName) is already taken."""


class FatalError(SyncError):
    """The sync cannot go on (authentication refused, malformed answer, partial read)."""

    def __init__(self, message: str, *, service: str | None = None, status: int | None = None) -> None:
        super().__init__(message, service=service)
        self.status = status


class SourceUnavailableError(FatalError):
    """The system of record could not be read completely; nothing may be deactivated."""


class ChangeLogError(FatalError):
    """The change log of a run could not be written (disk full, read-only or missing
    OUTPUT_DIR). Raised before a write is sent, so the sync stops instead of writing to a
    target without a record of it; the message starts with "cannot write the change log"."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot write the change log: {reason}")


class LockLostError(FatalError):
    """The single-writer lock a write needs is no longer this runner's (Redis restarted
    empty, the key expired and was taken, or Redis could not confirm it for too long):
    no further write may go out; the message starts with "lock lost"."""
