#!/usr/bin/env python
"""Before/after table of two bench/run.py result files (Markdown, for docs/performance.md).

    python bench/compare.py BEFORE.json AFTER.json

Only figures both runs measured are shown (sizes and rate runs present in both).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _svc(res: dict[str, Any], label: str, service: str) -> dict[str, Any]:
    return res["runs"][label]["services"].get(service, {})


def _reads(res: dict[str, Any], label: str, service: str) -> str:
    s = _svc(res, label, service)
    if not s:
        return "-"
    return f"{s['reads'] + s['item_reads']} (min {s['min_reads_total']})"


def rows(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for size in sorted(set(before["sizes"]) & set(after["sizes"]), key=int):
        b, a = before["sizes"][size], after["sizes"][size]
        n = f"{int(size):,}"
        for label in ("first", "noop", "mutate"):
            for service in ("safetyamp", "oneroster", "scim"):
                if _svc(b, label, service) or _svc(a, label, service):
                    out.append((f"{n} {label}: {service} list requests", _reads(b, label, service), _reads(a, label, service)))
        for label in ("first", "noop"):
            out.append(
                (
                    f"{n} {label} run: sync time (s)",
                    f"{sum(b['runs'][label]['sync_seconds'].values()):.1f}",
                    f"{sum(a['runs'][label]['sync_seconds'].values()):.1f}",
                )
            )
        out.append((f"{n}: load + plan / bare read", f"{b['plan']['ratio']:.2f}", f"{a['plan']['ratio']:.2f}"))
        out.append(
            (
                f"{n}: peak RSS no-op / first run (MB)",
                f"{b['plan']['rss_noop_mb']:.0f} / {b['plan']['rss_first_mb']:.0f}",
                f"{a['plan']['rss_noop_mb']:.0f} / {a['plan']['rss_first_mb']:.0f}",
            )
        )
    before_rates = {r["rate_per_minute"]: r for r in before["rate"]}
    for ra in after["rate"]:
        rb = before_rates.get(ra["rate_per_minute"])
        if rb is None:
            continue
        tag = f"{ra['rate_per_minute']:g}/min, {ra['latency_ms']:g} ms"
        out.append(
            (
                f"{tag}: achieved / allowed rate",
                f"{rb.get('achieved_over_allowed', 0):.2f}",
                f"{ra.get('achieved_over_allowed', 0):.2f}",
            )
        )
        out.append((f"{tag}: sync time / (N / rate)", f"{rb['wall_over_ideal']:.2f}", f"{ra['wall_over_ideal']:.2f}"))
        out.append((f"{tag}: requests answered 429", str(rb["requests_429"]), str(ra["requests_429"])))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = (json.loads(Path(p).read_text()) for p in argv)
    print(f"Before: `{before['command']}` ({before['started_at']}); after: `{after['command']}` ({after['started_at']}).\n")
    print("| figure | before | after |")
    print("|---|---|---|")
    for name, b, a in rows(before, after):
        print(f"| {name} | {b} | {a} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
