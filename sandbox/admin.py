"""Outside edits on the emulated SafetyAmp: what an administrator does in SafetyAmp's own
screens, behind the sync's back (``python -m sandbox admin``).

``mutate`` changes the sources; this changes the target, so tests (and people trying the
product) can see what the sync does about drift it did not cause: a field edited by
hand, a record deleted, a record created by hand. The edits go straight into the
emulator's store (sandbox/store.py), the same SQLite file the running emulator serves,
with the emulator's own bookkeeping (``updated_at``, unique indexes), and are never
logged as API requests (the request ledger counts the sync's requests only).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox.safetyamp import SERVICE, now_text
from sandbox.store import Store, open_store

KEYS = {"users": "emp_id", "sites": "external_code", "site_clusters": "external_code", "assets": "code", "user_titles": "name"}
"""The business key of each collection the sync writes (docs/architecture.md, "Keys")."""


def _find(store: Store, collection: str, key: str) -> tuple[int, dict[str, Any]] | None:
    field = KEYS[collection]
    for row in store.all(SERVICE, collection):
        if row.get(field) is not None and str(row.get(field)).strip().casefold() == str(key).strip().casefold():
            return int(row["id"]), row
    return None


def edit(directory: str | Path, collection: str, key: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Change fields of the record whose business key is ``key`` (as an admin editing it
    in SafetyAmp); returns the record as stored. KeyError when there is none."""
    with open_store(directory) as store:
        found = _find(store, collection, key)
        if found is None:
            raise KeyError(f"no {collection} record with {KEYS[collection]}={key}")
        rid, row = found
        merged = {**row, **dict(values), "id": rid, "updated_at": now_text()}
        store.replace(SERVICE, collection, rid, merged)
        return merged


def delete(directory: str | Path, collection: str, key: str) -> dict[str, Any]:
    """Delete the record whose business key is ``key`` (SafetyAmp's API offers no delete
    to the sync; an admin can); returns what was deleted. KeyError when there is none."""
    with open_store(directory) as store:
        found = _find(store, collection, key)
        if found is None:
            raise KeyError(f"no {collection} record with {KEYS[collection]}={key}")
        rid, row = found
        store.delete(SERVICE, collection, rid)
        return row


def create(directory: str | Path, collection: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Create a record by hand (no validation beyond the unique fields); returns it."""
    with open_store(directory) as store, store.atomic():
        rid = store.next_rid(SERVICE, collection)
        stamp = now_text()
        record = {"id": rid, **dict(values), "created_at": stamp, "updated_at": stamp}
        store.insert(SERVICE, collection, record, rid=rid)
        return record


def get(directory: str | Path, collection: str, key: str) -> dict[str, Any] | None:
    """The record whose business key is ``key``, or None."""
    with open_store(directory) as store:
        found = _find(store, collection, key)
        return found[1] if found else None
