"""The runs chart: SVG drawn here, on the server (no chart library, no script).

Two panels over the same runs, oldest on the left: duration (one bar per run, coloured
by status) and records handled (stacked bars: created, updated, deactivated, failed).
Colours come from console.css classes (the Content-Security-Policy allows no inline
styles); every bar has a <title> for a mouse-over, and the runs table under the chart
holds the same figures as text for a screen reader or a keyboard user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

STACK = ("created", "updated", "deactivated", "failed")
WIDTH = 960
PANEL = 80
GAP = 34
LEFT = 64
RIGHT = 12
TOP = 22


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and number >= 0 else 0.0  # NaN and negatives draw nothing


def _nice(top: float) -> float:
    """A round axis maximum at or above ``top``."""
    if top <= 0:
        return 1.0
    scale = 10 ** (len(str(int(top))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if top <= step * scale:
            return step * scale
    return 10.0 * scale


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _panel(y0: float, label: str, top: float, unit: str) -> list[str]:
    """A panel's label, and its grid lines at 0, half and the top with their figures."""
    parts = [f'<text class="axis-label" x="{LEFT}" y="{y0 - 7:.0f}">{escape(label)}</text>']
    for fraction in (0.0, 0.5, 1.0):
        y = y0 + PANEL - PANEL * fraction
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(top * fraction)}{unit}</text>')
    return parts


def _run_bars(
    run: dict[str, Any], x: float, bar: float, *, y_duration: float, y_records: float, top_duration: float, top_records: float
) -> list[str]:
    """One run's duration bar and its stack of records handled."""
    status = str(run.get("status") or "unknown")
    status_class = status if status in ("success", "partial", "failed", "skipped") else "unknown"
    when = escape(str(run.get("started_at") or run.get("finished_at") or ""))
    seconds = _num(run.get("duration_seconds"))
    h = PANEL * seconds / top_duration
    parts = [
        f'<rect class="bar status-{status_class}" x="{x:.1f}" y="{y_duration + PANEL - h:.1f}" width="{bar:.1f}" '
        f'height="{max(h, 0.5):.1f}"><title>{when}: {escape(status)}, {seconds:.1f} s</title></rect>'
    ]
    y = float(y_records + PANEL)
    counts = run.get("counts") or {}
    for name in STACK:
        n = _num(counts.get(name))
        if n <= 0:
            continue
        h = PANEL * n / top_records
        y -= h
        parts.append(
            f'<rect class="bar count-{name}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}">'
            f"<title>{when}: {_fmt(n)} {name}</title></rect>"
        )
    return parts


def _footer(runs: Sequence[dict[str, Any]], height: float) -> list[str]:
    """The first and last run's times under the panels, and the two legends."""
    first = escape(str(runs[0].get("started") or runs[0].get("started_at") or ""))
    last = escape(str(runs[-1].get("started") or runs[-1].get("started_at") or ""))
    base = height - 8
    parts = [
        f'<text class="axis" x="{LEFT}" y="{base}">{first}</text>',
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{base}" text-anchor="end">{last}</text>',
    ]
    legend_x = LEFT + 240
    for j, name in enumerate(STACK):
        lx = legend_x + j * 100
        parts.append(f'<rect class="bar count-{name}" x="{lx}" y="{base - 9}" width="10" height="10"/>')
        parts.append(f'<text class="axis" x="{lx + 14}" y="{base}">{name}</text>')
    for j, name in enumerate(("success", "partial", "failed", "skipped")):
        lx = WIDTH - RIGHT - 330 + j * 85
        parts.append(f'<rect class="bar status-{name}" x="{lx}" y="{TOP - 16}" width="10" height="10"/>')
        parts.append(f'<text class="axis" x="{lx + 14}" y="{TOP - 7}">{name}</text>')
    return parts


def runs_chart(runs: Sequence[dict[str, Any]], *, title: str) -> Markup:
    """SVG of ``runs`` (newest first, as the history lists them). Empty markup for none."""
    runs = list(reversed(runs))
    if not runs:
        return Markup("")
    plot = WIDTH - LEFT - RIGHT
    slot = plot / len(runs)
    bar = max(1.0, min(24.0, slot * 0.7))
    height = TOP + PANEL + GAP + PANEL + 28
    top_duration = _nice(max(_num(r.get("duration_seconds")) for r in runs))
    top_records = _nice(max(sum(_num((r.get("counts") or {}).get(k)) for k in STACK) for r in runs))
    parts: list[str] = []
    out = parts.append
    out(
        f'<svg class="chart" id="runs-chart" data-testid="runs-chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        'aria-labelledby="runs-chart-title runs-chart-desc" xmlns="http://www.w3.org/2000/svg">'
    )
    out(f'<title id="runs-chart-title">{escape(title)}</title>')
    out(
        f'<desc id="runs-chart-desc">Duration and records handled of the {len(runs)} runs listed in the table below, '
        "oldest on the left.</desc>"
    )
    y_duration = TOP
    y_records = TOP + PANEL + GAP
    parts += _panel(y_duration, "Duration", top_duration, " s")
    parts += _panel(y_records, "Records handled (created, updated, deactivated, failed)", top_records, "")
    for i, run in enumerate(runs):
        x = LEFT + slot * i + (slot - bar) / 2
        parts += _run_bars(
            run, x, bar, y_duration=y_duration, y_records=y_records, top_duration=top_duration, top_records=top_records
        )
    parts += _footer(runs, height)
    out("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value from outside went through escape() above
