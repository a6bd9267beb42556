"""Fixtures of the browser tier: one Chromium per test process, the daemons the
scenarios drive, and browser contexts whose every request is logged and held to the
daemon's origin (tests/browser/support.py says how each is made)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.support import ConsoleDaemon, RequestLog, chromium, chromium_problem, missing, new_context


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    problem = chromium_problem()
    if problem is not None:
        missing(problem)
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDaemon]:
    """The daemon with CONSOLE_TOKEN set, after its first complete cycle."""
    with ConsoleDaemon(tmp_path_factory.mktemp("console")).running() as daemon:
        yield daemon


@pytest.fixture
def context(browser: Any, console: ConsoleDaemon) -> Iterator[tuple[Any, RequestLog]]:
    """A fresh browser context on ``console``; after the test, no request may have gone
    to another origin (they are aborted before they leave, and fail the test here)."""
    ctx, log = new_context(browser, console)
    try:
        yield ctx, log
    finally:
        ctx.close()
    assert not log.foreign(), f"requests to other origins than {console.base}: {log.foreign()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/browser carries the ``browser`` marker (``-m browser`` runs the tier)."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
