"""main.Daemon.run_cycle: a cycle that cannot run is a failed run of every sync it covered."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from config.settings import load_settings
from main import Daemon
from sync.base import COUNT_KEYS
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics

pytestmark = pytest.mark.unit

SYNCS = ("departments", "jobs", "vehicles")


def test_a_cycle_that_cannot_start_counts_as_failed_runs_with_the_reason(tmp_path: Path) -> None:
    settings = load_settings({"OUTPUT_DIR": str(tmp_path)}, dotenv_path=None)
    metrics = Metrics()
    metrics.initialise(SYNCS, (), 3600, actions=COUNT_KEYS)
    # A runtime missing its SafetyAmp client: building the cycle's context fails, as any
    # bug or broken dependency between two syncs would, before a sync could report.
    runtime = SimpleNamespace(settings=settings, stop=threading.Event(), metrics=metrics, tracker=InMemoryTracker())
    daemon = Daemon(settings, SYNCS, runtime)

    results = daemon.run_cycle(SYNCS)

    assert [r.sync for r in results] == list(SYNCS)
    for sync in SYNCS:
        run = daemon.state.last_runs[sync]
        assert run["status"] == "failed"
        assert run["error"].startswith("the sync cycle could not run: AttributeError"), run
        assert metrics.registry.get_sample_value("sync_runs_total", {"sync": sync, "status": "failed"}) == 1
    assert daemon.state.running is None
