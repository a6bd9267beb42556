"""The browser tier's own machinery can fail: Chromium starts from Debian's package, a
page served by the real daemon renders, and a request to another origin is caught (and
never sent)."""

from __future__ import annotations

from typing import Any

from tests.browser.support import ConsoleDaemon, RequestLog


def test_chromium_renders_what_the_daemon_serves(context: tuple[Any, RequestLog], console: ConsoleDaemon) -> None:
    ctx, log = context
    page = ctx.new_page()
    response = page.goto("/health")
    assert response is not None and response.status in (200, 503)
    assert '"last_runs"' in page.content()
    assert page.viewport_size == {"width": 1366, "height": 768}
    assert log.requests and all(url.startswith(console.base) for _, url in log.requests), log.requests


def test_a_request_to_another_origin_is_logged_and_aborted(browser: Any, console: ConsoleDaemon) -> None:
    from tests.browser.support import new_context

    ctx, log = new_context(browser, console)
    try:
        page = ctx.new_page()
        failed: list[str] = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto("/live")
        # .invalid never resolves (RFC 2606), and the route aborts it before any lookup.
        page.evaluate("""() => new Promise(done => {
            const img = new Image(); img.onerror = img.onload = done; img.src = 'http://cdn.example.invalid/logo.png';
        })""")
        assert log.foreign() == [("GET", "http://cdn.example.invalid/logo.png")]
        assert failed == ["http://cdn.example.invalid/logo.png"]
    finally:
        ctx.close()
