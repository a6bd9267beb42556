"""Approving a deactivation batch the guard held, in the browser: a third of the active
employees leave at once in Viewpoint (plain SQL, as an HR system would write it), the
employees run deactivates none of them (DEACTIVATION_GUARD_PERCENT, 10 %) and holds the
list; the operator reviews that exact list in the console, approves it once, runs the
sync, and exactly those people lose SafetyAmp access, nobody else."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.support import ConsoleDaemon, RequestLog, accept_confirmations, login, wait_for, wait_job_done
from tests.e2e.test_faults_oracle import target_state, terminate_employees


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDaemon]:
    with ConsoleDaemon(tmp_path_factory.mktemp("guard"), size=60).running() as daemon:
        yield daemon


def terminate(daemon: ConsoleDaemon, fraction: float, *, last: bool = False) -> list[str]:
    """Terminate ``fraction`` of the active employees in bPREH (the lowest numbers, or the
    highest with ``last``); their numbers."""
    return terminate_employees(daemon.sandbox_dir, fraction, last=last)


def active_users(daemon: ConsoleDaemon) -> set[str]:
    return {k for k, u in target_state(daemon.sandbox_dir)["users"].items() if u.get("system_access") == 1}


def test_approve_a_held_deactivation_and_exactly_those_records_are_deactivated(
    context: tuple[Any, RequestLog], console: ConsoleDaemon
) -> None:
    before = active_users(console)
    leavers = sorted(k for k in terminate(console, 0.3) if k in before)
    assert len(leavers) > 0.1 * len(before), "enough leavers to trip the 10 % guard"
    ctx, _ = context
    page = ctx.new_page()
    login(page)
    accept_confirmations(page)

    # 1. The run that meets the layoff deactivates nobody and holds the list.
    page.get_by_test_id("nav-actions").click()
    page.get_by_test_id("run-sync").select_option("employees")
    page.get_by_test_id("run-now").click()
    wait_job_done(page)
    held = wait_for(lambda: console.health()["last_runs"]["employees"].get("guard_tripped"), 30)
    assert held, console.health()["last_runs"]["employees"]
    assert active_users(console) == before, "the guard let nobody go"

    # 2. The console lists exactly the held records; the operator approves that list.
    page.get_by_test_id("nav-overview").click()
    page.get_by_test_id("hold-link").click()
    assert int(page.get_by_test_id("hold-count").inner_text()) == len(leavers)
    shown = sorted(page.get_by_test_id("hold-key").all_inner_texts())
    assert shown == leavers, f"held {shown} but {leavers} left"
    # The approval form comes before the list: on a 1366x768 screen it is in view without
    # scrolling, however long the list, and it works from the keyboard.
    page.goto("/console/holds/employees")
    box = page.get_by_test_id("approve").bounding_box()
    assert box is not None and box["y"] + box["height"] <= page.viewport_size["height"], f"below the fold: {box}"
    assert page.evaluate("window.scrollY") == 0
    assert page.get_by_label(re.compile("I checked this list")).count() == 1, "the box is labelled"
    page.get_by_test_id("approve-confirm").focus()
    page.keyboard.press("Space")
    assert page.get_by_test_id("approve-confirm").is_checked()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.testid") == "approve", "the button follows the box"
    page.keyboard.press("Enter")
    page.get_by_test_id("approval").wait_for()
    assert page.get_by_test_id("approval").is_visible()

    # 3. The next run deactivates exactly those, once.
    page.get_by_test_id("hold-run-now").click()
    wait_job_done(page)
    after = active_users(console)
    assert sorted(before - after) == leavers, "exactly the approved records were deactivated"
    assert after == before - set(leavers)
    run = console.health()["last_runs"]["employees"]
    assert run["status"] in ("success", "partial") and run.get("deactivated", len(leavers)) == len(leavers), run
    print(f"\n{len(leavers)} of {len(before)} active employees left at once: held, approved in the console, "
          f"then exactly those {len(before - after)} deactivated")  # fmt: skip
    page.goto("/console/holds/employees")
    assert page.get_by_test_id("no-hold").is_visible() and page.get_by_test_id("approval").count() == 0, "used once"
    page.get_by_test_id("nav-audit").click()
    audit = page.get_by_role("main").inner_text()
    assert re.search(r"operator\s+approve\s+sync/employees\s+ok", audit), audit[:2000]
