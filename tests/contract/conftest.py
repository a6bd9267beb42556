"""The contract suite: one set of checks per port (sync/ports.py, sync/roster_model.py),
run against the in-memory fake the unit tests use and against the real adapter talking
to the sandbox emulators, so a fake cannot drift from the adapter it stands for.

Each test module parametrises a fixture over ``["fake", "sandbox"]``; the sandbox side
is one in-process sandbox per worker (``start_sandbox``, fault-free), shared by the
contract modules. Tests that write use keys of their own (``unique``), so they do not
depend on order or on each other. When a check fails on the fake only, fix the fake:
the sandbox side is the reference (it is what tests/integration holds to the vendors'
documented behaviour).

The FailedRecords port already has its suite run over every backend (in memory, Redis,
Redis with fallback) in tests/integration/test_failed_sync_tracker.py.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest

from sandbox.server import RunningSandbox, start_sandbox


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with start_sandbox(tmp_path_factory.mktemp("contract-sandbox"), size=20, faults={}, seed=12) as sb:
        yield sb


_counter = itertools.count(1)


@pytest.fixture
def unique() -> str:
    """A short key of this test's own (records of other tests share the sandbox)."""
    return f"c{next(_counter)}{uuid.uuid4().hex[:6]}"
