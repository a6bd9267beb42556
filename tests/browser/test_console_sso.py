"""The console behind single sign-on, as the oauth2-proxy sidecar of
k8s/components/console-sso puts it in front of the daemon: CONSOLE_TRUSTED_PROXY=127.0.0.1/32,
no CONSOLE_TOKEN, and the proxy's X-Forwarded-User/-Email/-Groups headers. The browser
here connects from 127.0.0.1 and sends those headers itself, which is exactly what the
daemon sees from the sidecar. Viewers read; operators act; anyone else is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.support import (
    OPERATOR_GROUP,
    VIEWER_GROUP,
    ConsoleDaemon,
    RequestLog,
    accept_confirmations,
    new_context,
)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDaemon]:
    with ConsoleDaemon(
        tmp_path_factory.mktemp("sso"),
        size=20,
        console_token=None,
        CONSOLE_TRUSTED_PROXY="127.0.0.1/32",
        CONSOLE_OPERATOR_GROUPS=OPERATOR_GROUP,
        CONSOLE_VIEWER_GROUPS=f"{VIEWER_GROUP},00000000-0000-0000-0000-00000000aaaa",
    ).running() as daemon:
        yield daemon


def signed_in_as(browser: Any, console: ConsoleDaemon, user: str, groups: str) -> tuple[Any, RequestLog]:
    """A browser context whose every request carries what oauth2-proxy forwards for ``user``."""
    headers = {"X-Forwarded-User": user, "X-Forwarded-Email": f"{user}@example.com", "X-Forwarded-Groups": groups}
    return new_context(browser, console, extra_http_headers=headers)


def test_a_viewer_reads_everything_and_is_refused_every_action(browser: Any, console: ConsoleDaemon) -> None:
    ctx, log = signed_in_as(browser, console, "vera", f"staff,{VIEWER_GROUP}")
    try:
        page = ctx.new_page()
        page.goto("/console/")
        assert page.get_by_test_id("who").get_attribute("data-role") == "viewer"
        assert "vera@example.com" in page.get_by_test_id("who").inner_text()
        assert page.get_by_test_id("sync-row").count() == 6
        page.get_by_test_id("nav-actions").click()
        assert page.get_by_test_id("run-now").count() == 0 and page.get_by_test_id("pause").count() == 0, "no buttons"
        # Forced anyway, with a valid CSRF token of the viewer's own session: refused.
        token = page.locator("input[name=csrf_token]").first.get_attribute("value")
        status = page.evaluate(
            """async (token) => (await fetch('/console/actions/pause', {method: 'POST', credentials: 'same-origin',
                  body: new URLSearchParams({sync: 'jobs', csrf_token: token})})).status""",
            token,
        )
        assert status == 403, status
        assert not (console.health().get("paused") or {}).get("jobs")
        page.get_by_test_id("nav-audit").click()
        assert "refused" in page.get_by_role("main").inner_text(), "the refusal is in the audit log"
        assert not log.foreign()
    finally:
        ctx.close()


def test_an_operator_from_the_proxy_acts_under_their_own_name(browser: Any, console: ConsoleDaemon) -> None:
    ctx, log = signed_in_as(browser, console, "olga", OPERATOR_GROUP)
    try:
        page = ctx.new_page()
        accept_confirmations(page)
        page.goto("/console/actions")
        assert page.get_by_test_id("who").get_attribute("data-role") == "operator"
        page.locator("#pause-titles").click()
        assert page.locator("[data-testid=pause-row][data-sync=titles]").get_attribute("data-paused") == "yes"
        assert "olga" in str(console.health()["paused"]["titles"]["by"])
        page.locator("#resume-titles").click()
        assert page.locator("[data-testid=pause-row][data-sync=titles]").get_attribute("data-paused") == "no"
        page.get_by_test_id("nav-audit").click()
        assert "olga@example.com" in page.get_by_role("main").inner_text()
        assert not log.foreign()
    finally:
        ctx.close()


def test_someone_in_neither_group_sees_nothing(browser: Any, console: ConsoleDaemon) -> None:
    ctx, _ = signed_in_as(browser, console, "mallory", "staff")
    try:
        page = ctx.new_page()
        response = page.goto("/console/")
        assert response is not None and response.status == 403
        assert page.get_by_test_id("sync-row").count() == 0 and "employees" not in page.content()
    finally:
        ctx.close()


def test_sign_out_goes_on_to_the_proxys_sign_out(browser: Any, console: ConsoleDaemon) -> None:
    """Behind oauth2-proxy, Sign out must end the proxy's sign-in too: the browser lands
    on /oauth2/sign_out (served by the sidecar; here, with no proxy, the daemon's 404)."""
    ctx, _ = signed_in_as(browser, console, "sian", OPERATOR_GROUP)
    try:
        page = ctx.new_page()
        page.goto("/console/")
        page.get_by_test_id("sign-out").click()
        page.wait_for_url("**/oauth2/sign_out")
        assert page.url.endswith("/oauth2/sign_out")
    finally:
        ctx.close()
