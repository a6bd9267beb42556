"""A run's change and error files, read a page at a time.

A first sync of 50,000 employees writes a changes file of about 65 MB; the console shows
fifty changes of it, so it must never parse (or even read) the whole file. The files are
written by ``services.event_manager`` in one fixed layout: a small head (run id, counts,
``unconfirmed``...), then the long list as the document's *last* key, one item per
block, each item's first line exactly ``    {`` and last line ``    }`` or ``    },``
(the item's own nested lines are indented deeper, and JSON strings hold no raw line
breaks). So an item starts at a byte offset we can seek to, and a page is addressed by
the offset of its first item: "next" and "previous" read only the items they show (the
previous page is found by scanning backwards from the current offset, block by block).

An offset from a URL is checked before use (it must be the start of an item inside the
list): a made-up number gives an error, never a half item or another file's bytes.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ITEM_START = b"    {\n"
LIST_MARK = b'\n  "%s": ['
BLOCK = 64 * 1024
MAX_HEAD_BYTES = 8 * 1024 * 1024
"""The head before the list (counts, unconfirmed writes) is small; a file whose list does
not start within this is not one of ours."""
MAX_ITEM_BYTES = 4 * 1024 * 1024
"""One change or error is a few KB (target bodies are cut at 8000 characters)."""
RUN_FILE = re.compile(r"^(?P<sync>[a-z]+)-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.json$")
"""The names services.event_manager gives run files: nothing else is ever opened."""


class RunFileError(Exception):
    """The file is missing, not a run file, or the offset is not an item's start."""


class _CountingRaw(io.FileIO):
    """Counts the bytes really read from disk (tests hold the pager to what it shows)."""

    bytes_read = 0

    def readinto(self, buffer: Any) -> int | None:
        n = super().readinto(buffer)
        self.bytes_read += n or 0
        return n


@dataclass
class Page:
    items: list[dict[str, Any]]
    offset: int
    """Offset of the first item shown (what the URL of this page carries)."""
    next_offset: int | None
    prev_offset: int | None
    """None on the first page."""
    first: bool
    bytes_read: int = 0
    head: dict[str, Any] = field(default_factory=dict)


def run_file(folder: Path, name: str | None) -> Path | None:
    """``folder/name`` when ``name`` is a run file name (no path, no other file), else None."""
    if not name:
        return None
    name = os.path.basename(str(name))
    if RUN_FILE.match(name) is None:
        return None
    return folder / name


class ListFile:
    """The items of the last list (``changes`` or ``errors``) of one run file."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key

    def _open(self) -> tuple[_CountingRaw, io.BufferedReader]:
        try:
            raw = _CountingRaw(self.path, "r")
        except FileNotFoundError:
            raise RunFileError(f"{self.path.name} is no longer on disk (OUTPUT_RETENTION_DAYS / _RUNS removed it?)") from None
        except OSError as exc:
            raise RunFileError(f"{self.path.name} cannot be read: {exc.strerror}") from None
        return raw, io.BufferedReader(raw, buffer_size=BLOCK)

    def _head(self, stream: io.BufferedReader) -> tuple[dict[str, Any], int, bool]:
        """The document without its list, the offset of the first item, and whether the
        list is empty."""
        mark = LIST_MARK % self.key.encode()
        data = b""
        while True:
            chunk = stream.read(BLOCK)
            data += chunk
            at = data.find(mark)
            if at >= 0 and len(data) >= at + len(mark) + 2:
                break
            if not chunk or len(data) > MAX_HEAD_BYTES:
                raise RunFileError(f"{self.path.name} is not a run file this version can read")
        start = at + len(mark)
        try:
            head = json.loads(data[: at + 1].decode("utf-8", "replace").rstrip().rstrip(",") + "}")
        except ValueError:
            raise RunFileError(f"{self.path.name} is not a run file this version can read") from None
        empty = data[start : start + 1] == b"]"
        return head if isinstance(head, dict) else {}, start + 1, empty

    def page(self, *, offset: int | None = None, before: int | None = None, size: int = 50) -> Page:
        """``size`` items from ``offset`` (default: the first), or the ``size`` items just
        before ``before``. Raises RunFileError for an offset that is not an item's start."""
        raw, stream = self._open()
        with stream:
            head, first, empty = self._head(stream)
            if empty:
                return Page([], first, None, None, True, raw.bytes_read, head)
            if before is not None:
                self._check(stream, before, first)
                starts = self._starts_before(stream, before, first, size)
                offset = starts[0] if starts else first
            elif offset is None:
                offset = first
            else:
                self._check(stream, offset, first)
            items, next_offset = self._read(stream, offset, size)
            prev_offset = None
            if offset > first:
                prev = self._starts_before(stream, offset, first, size)
                prev_offset = prev[0] if prev else first
            return Page(items, offset, next_offset, prev_offset, offset == first, raw.bytes_read, head)

    def iter_items(self) -> Iterator[dict[str, Any]]:
        """Every item, one at a time (CSV exports stream them; never a list of all)."""
        _raw, stream = self._open()
        with stream:
            _head, first, empty = self._head(stream)
            if empty:
                return
            stream.seek(first)
            while True:
                item, more = self._item(stream)
                yield item
                if not more:
                    return

    # ---- internals -------------------------------------------------------------------
    def _check(self, stream: io.BufferedReader, offset: int, first: int) -> None:
        # Past the end (a hand-made ?at=10**14 made seek fail with EINVAL): the same message.
        if offset < first or offset >= os.fstat(stream.fileno()).st_size:
            raise RunFileError("that page does not exist in this run's file")
        if offset == first:
            return
        stream.seek(offset - 1)
        if stream.read(len(ITEM_START) + 1) != b"\n" + ITEM_START:
            raise RunFileError("that page does not exist in this run's file")

    def _item(self, stream: io.BufferedReader) -> tuple[dict[str, Any], bool]:
        """Read the item at the stream's position; True when another follows it."""
        lines = []
        size = 0
        while True:
            line = stream.readline(MAX_ITEM_BYTES)
            if not line:
                raise RunFileError(f"{self.path.name} ends in the middle of an item")
            lines.append(line)
            size += len(line)
            if size > MAX_ITEM_BYTES:
                raise RunFileError(f"{self.path.name} has an item over {MAX_ITEM_BYTES} bytes")
            if line.startswith(b"    }"):
                break
        more = line.rstrip().endswith(b",")
        text = b"".join(lines).rstrip().rstrip(b",")
        try:
            item = json.loads(text.decode("utf-8", "replace"))
        except ValueError:
            raise RunFileError(f"{self.path.name} holds an item that is not JSON") from None
        return (item if isinstance(item, dict) else {"value": item}), more

    def _read(self, stream: io.BufferedReader, offset: int, size: int) -> tuple[list[dict[str, Any]], int | None]:
        stream.seek(offset)
        items: list[dict[str, Any]] = []
        while len(items) < size:
            item, more = self._item(stream)
            items.append(item)
            if not more:
                return items, None
        return items, stream.tell()

    def _starts_before(self, stream: io.BufferedReader, offset: int, first: int, count: int) -> list[int]:
        """Offsets of the ``count`` items before ``offset`` (ascending), scanning backwards
        block by block. An item starts one byte after a "\n    {\n" marker; the marker of
        the first item is the line break after the list's "["."""
        marker = b"\n" + ITEM_START
        found: list[int] = []
        hi = offset - 1  # markers starting before this belong to earlier items
        while hi > first - 1 and len(found) < count:
            lo = max(first - 1, hi - BLOCK)
            stream.seek(lo)
            block = stream.read(hi - lo + len(marker) - 1)
            limit = len(block)
            while len(found) < count:
                pos = block.rfind(marker, 0, limit)
                if pos < 0:
                    break
                found.append(lo + pos + 1)
                limit = pos + len(marker) - 1
            hi = lo
        return sorted(found)
