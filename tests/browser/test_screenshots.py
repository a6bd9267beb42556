"""docs/console.md shows a screenshot of every console page: each file the screenshot
script makes (tests/browser/screenshots.py PAGES) is committed in docs/console/, is a PNG
of 1366x768 (the console's target screen), and is shown in docs/console.md."""

from __future__ import annotations

import struct
from pathlib import Path

from tests.browser.screenshots import PAGES

ROOT = Path(__file__).resolve().parents[2]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_every_page_has_a_committed_screenshot_shown_in_the_docs() -> None:
    folder = ROOT / "docs" / "console"
    doc = (ROOT / "docs" / "console.md").read_text(encoding="utf-8")
    for name in PAGES:
        assert (folder / name).is_file(), f"docs/console/{name} is missing: python -m tests.browser.screenshots"
        assert png_size(folder / name) == (1366, 768), name
        assert f"(console/{name})" in doc, f"docs/console.md does not show {name}"
    extra = {p.name for p in folder.glob("*.png")} - set(PAGES)
    assert not extra, f"screenshots no page lists: {extra}"
