"""ISO 8601 timestamps in UTC, written and read the one way the product stores them.

Written with a ``Z`` (``2026-11-01T06:00:00.250Z``), never ``+00:00``; read back from either
form. The precision is the caller's (``timespec`` of ``datetime.isoformat``): the change
log keeps milliseconds, the tracker and the breaker whatever the moment holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso_z(moment: datetime | float, timespec: str = "auto") -> str:
    """``moment`` (an aware datetime, or seconds since the epoch) in UTC with a Z. A naive
    datetime is taken as local time, as ``datetime.astimezone`` does."""
    if isinstance(moment, datetime):
        at = moment.astimezone(UTC)
    else:
        at = datetime.fromtimestamp(moment, tz=UTC)
    return at.isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (``Z`` or an offset) as an aware datetime; a naive one is
    taken as UTC. None for a blank, a non-text or an unreadable value."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
