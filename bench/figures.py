"""The figures: requests sent next to the minimum possible, and the goals of issue 7.

Minimum possible, per run (what physics allows with the APIs as they are):
- writes = records that changed in the target, counted independently of the product by
  comparing the target's state before and after the run (SafetyAmp: object content
  without ``updated_at``; SCIM: each resource's version);
- reads = for every collection the run needs, ceil(n / largest page the server accepts),
  and at least 1 (an empty collection still takes one request to prove it empty); n is
  the collection's size when the run starts (for OneRoster deltas: the records changed
  since the previous run). The site-cluster tree is one request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
SIGN_IN_SERVICES = ("entra",)  # Microsoft's login endpoints (the Graph emulator logs them apart)
SAFETYAMP_SYNCS = ("departments", "jobs", "titles", "employees", "vehicles")

# Collections each service must be read for, when every sync runs.
NEEDED = {
    "safetyamp": ("site_clusters", "sites", "user_titles", "roles", "users", "asset_types", "assets"),
    "samsara": ("vehicles", "drivers"),
    "graph": ("users",),
    "oneroster": ("users", "classes", "enrollments"),
    "scim": ("Users", "Groups"),
}
_PREFIXES = (
    "/api/",
    "/fleet/",
    "/v1.0/",
    "/ims/oneroster/rostering/v1p2/",
    "/ims/oneroster/rostering/v1p1/",
    "/ims/oneroster/v1p1/",
    "/v2/",
)


def classify(service: str, path: str) -> tuple[str, bool]:
    """(collection, is_item) of a logged path: ``/api/users`` -> ("users", False),
    ``/v2/Users/abc`` -> ("Users", True), ``/.../schools/x/enrollments`` -> ("enrollments", False)."""
    rest = path
    for prefix in _PREFIXES:
        if rest.startswith(prefix):
            rest = rest[len(prefix) :]
            break
    else:
        rest = rest.lstrip("/")
    parts = [p for p in rest.split("/") if p]
    if not parts:
        return "", False
    if service == "oneroster" and parts[0] == "schools" and len(parts) >= 3:
        return parts[2], False
    if service == "graph" and parts[:2] == ["users", "delta"]:
        return "users", False  # a page of a delta round (docs/emulated-apis.md "Graph delta")
    return parts[0], len(parts) > 1


def pages(n: int, page: int) -> int:
    return max(1, math.ceil(n / page)) if page > 0 else 1


def min_reads(
    counts: Mapping[str, Mapping[str, int]],
    caps: Mapping[str, int],
    services: Iterable[str],
) -> dict[str, dict[str, int]]:
    """Minimum list requests per service and collection (see module docstring)."""
    out: dict[str, dict[str, int]] = {}
    for service in services:
        per: dict[str, int] = {}
        for collection in NEEDED[service]:
            if service == "safetyamp" and collection == "site_clusters":
                per[collection] = 1  # one tree, no paging
            else:
                per[collection] = pages(counts.get(service, {}).get(collection, 0), caps[service])
        out[service] = per
    return out


def analyse(
    requests: list[dict[str, Any]],
    *,
    minimum: Mapping[str, Mapping[str, int]],
    changed: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    """Per service: requests by method, list pages by collection, per-record reads,
    writes sent, statuses; next to the minimum reads and the records changed."""
    services: dict[str, Any] = {}
    for req in requests:
        svc = services.setdefault(
            req["service"],
            {"methods": {}, "statuses": {}, "pages": {}, "item_reads": 0, "writes": 0, "write_methods": {}, "other_reads": 0},
        )
        method = req["method"]
        svc["methods"][method] = svc["methods"].get(method, 0) + 1
        svc["statuses"][str(req["status"])] = svc["statuses"].get(str(req["status"]), 0) + 1
        collection, is_item = classify(req["service"], req["path"])
        if req["service"] in SIGN_IN_SERVICES or collection == "token":
            svc["sign_in"] = svc.get("sign_in", 0) + 1  # tokens: not a read or write of data
        elif method in WRITE_METHODS:
            svc["writes"] += 1
            svc["write_methods"][method] = svc["write_methods"].get(method, 0) + 1
        elif method == "GET":
            if is_item:
                svc["item_reads"] += 1
            elif collection in NEEDED.get(req["service"], ()):
                svc["pages"][collection] = svc["pages"].get(collection, 0) + 1
            else:
                svc["other_reads"] += 1
    for name, svc in services.items():
        svc["min_reads"] = dict(minimum.get(name, {}))
        svc["reads"] = sum(svc["pages"].values())
        svc["min_reads_total"] = sum(svc["min_reads"].values())
        if name in changed:
            svc["changed"] = dict(changed[name])
    return services


def ratio(a: float, b: float) -> float | None:
    return None if not b else a / b


def rate_figures(requests: list[dict[str, Any]], per_minute: float, sync_seconds: float) -> dict[str, Any]:
    """Achieved request rate during the bulk writes, and wall time over N / rate.

    The bulk-write window runs from the first to the last write the target answered;
    every request it accepted in that window (reads too: they spend the same budget)
    counts. N is every request the target accepted in the run (429s are waste, not
    work). ``sync_seconds`` is the time the SafetyAmp syncs took, from the summary."""
    allowed = per_minute / 60.0
    sa = [r for r in requests if r["service"] == "safetyamp"]
    accepted = [r for r in sa if r["status"] != 429]
    throttled = len(sa) - len(accepted)
    writes = [r for r in accepted if r["method"] in WRITE_METHODS]
    out: dict[str, Any] = {
        "allowed_per_second": allowed,
        "requests_accepted": len(accepted),
        "requests_429": throttled,
        "writes": len(writes),
        "sync_seconds": sync_seconds,
    }
    if len(writes) >= 2:
        first, last = writes[0]["ts"], writes[-1]["ts"]
        window = [r for r in accepted if first <= r["ts"] <= last]
        achieved = (len(window) - 1) / (last - first) if last > first else 0.0
        out.update({
            "bulk_window_seconds": last - first,
            "bulk_requests": len(window),
            "achieved_per_second": achieved,
            "achieved_over_allowed": achieved / allowed,
        })  # fmt: skip
        # The same within each stretch of writes (a read or a sync boundary ends one):
        # the pace of the apply phase itself, without the reads between syncs.
        blocks: list[list[float]] = [[]]
        for r in accepted:
            if r["method"] in WRITE_METHODS:
                blocks[-1].append(r["ts"])
            elif blocks[-1]:
                blocks.append([])
        big = [b for b in blocks if len(b) >= 10]
        span = sum(b[-1] - b[0] for b in big)
        if span > 0:
            out["write_blocks"] = len(big)
            out["in_blocks_per_second"] = sum(len(b) - 1 for b in big) / span
            out["in_blocks_over_allowed"] = out["in_blocks_per_second"] / allowed
    ideal = len(accepted) / allowed
    out["ideal_seconds"] = ideal
    out["wall_over_ideal"] = ratio(sync_seconds, ideal)
    return out
