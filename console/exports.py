"""CSV exports: a run's changes, its rejected records, the failed-records queue.

Rows are produced one at a time from the run's file (never a list of every change) and
each cell passes the one scrub (``utils.scrub``): a streamed response is not scrubbed on
its way out as the daemon's other bodies are. A cell that a spreadsheet would run as a
formula (``=``, ``+``, ``-``, ``@``, tab, carriage return first) gets a leading ``'``,
the OWASP advice for CSV injection: the files are opened in Excel by the people who
asked for them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from utils.scrub import scrub

FORMULA_FIRST = ("=", "+", "-", "@", "\t", "\r")

CHANGE_COLUMNS = ("key", "action", "field", "before", "after", "at", "target", "target_id")
REJECTED_COLUMNS = ("key", "kind", "reason", "fields", "at", "target", "target_body", "payload")
FAILED_COLUMNS = (
    "sync",
    "key",
    "status",
    "reason",
    "attempts",
    "first_failed",
    "last_failed",
    "next_retry",
    "quarantined",
    "fields",
)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    else:
        text = str(value)
    text = scrub(text)
    if text.startswith(FORMULA_FIRST):
        text = "'" + text
    return text


def rows_to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """CSV text in chunks of about 64 KB (a header line first, RFC 4180 quoting)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(v) for v in row])
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def change_rows(changes: Iterable[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    """One row per changed field (a created record: one per field it was given)."""
    for change in changes:
        fields = change.get("fields")
        if not isinstance(fields, dict):
            after = change.get("after") if isinstance(change.get("after"), dict) else None
            fields = {name: {"before": None, "after": value} for name, value in after.items()} if after else None
        common = (change.get("at"), change.get("target"), change.get("id"))
        if not fields:
            yield (change.get("key"), change.get("action"), "", "", "", *common)
            continue
        for name, diff in fields.items():
            diff = diff if isinstance(diff, dict) else {"after": diff}
            yield (change.get("key"), change.get("action"), name, diff.get("before"), diff.get("after"), *common)


def rejected_rows(errors: Iterable[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    for error in errors:
        yield tuple(error.get(name) for name in REJECTED_COLUMNS)


def failed_rows(entries: Iterable[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    for entry in entries:
        yield tuple(entry.get(name) for name in FAILED_COLUMNS)
