"""The daemon's ``/health`` verdict: one status word, its HTTP code, and the reasons.

``/live`` and ``/ready`` are the probes Kubernetes acts on; ``/health`` is the detail a
person or a monitor reads, so its status says what is true of the syncs, not only of
the process. It is the worst that applies:

=====================  ====  =================================================================
status                 HTTP  when
=====================  ====  =================================================================
configuration_error    503   the settings are invalid: nothing runs until they are fixed
starting               503   start-up (sandbox, Key Vault, clients) has not finished
stalled                503   the worker's heartbeat is stale (what ``/live`` reports)
failing                503   a sync's last run failed as a whole, a sync is quarantined, or
                             the source database does not answer (what ``/ready`` reports)
degraded               200   the syncs run, but a last run was partial (records failed and
                             were recorded), a circuit breaker is not closed, an operator
                             paused a sync, or Redis is unreachable (state is kept in memory
                             meanwhile)
ok                     200   none of the above
=====================  ====  =================================================================

Per sync (``sync_states``): ``ok``, ``partial``, ``failing`` (the last run failed),
``paused`` (by an operator: who, when, why; it wins over every other state, since no
run happens until it is resumed), ``quarantined`` (backing off: see the runbook),
``skipped`` (another runner held the lock; informational) or ``not_run_yet``, each
with the reason when there is one.

Pure: the daemon gathers the facts, this module judges them (unit-tested with literals).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HTTP_STATUS", "STATUSES", "Verdict", "assess"]

STATUSES = ("configuration_error", "starting", "stalled", "failing", "degraded", "ok")
"""Worst first."""
HTTP_STATUS = {"configuration_error": 503, "starting": 503, "stalled": 503, "failing": 503, "degraded": 200, "ok": 200}

_SYNC_SEVERITY = {"quarantined": "failing", "failing": "failing", "partial": "degraded", "paused": "degraded"}


@dataclass(frozen=True)
class Verdict:
    status: str
    problems: list[str] = field(default_factory=list)
    sync_states: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.status]


def sync_state(
    last: Mapping[str, Any] | None, quarantine: Mapping[str, Any] | None, now: float, paused: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The state of one sync from its last run, its quarantine entry and its pause."""
    if paused:
        reason = f"by {paused.get('by', '?')} at {paused.get('at', '?')}" + (
            f": {paused['reason']}" if paused.get("reason") else ""
        )
        return {"state": "paused", "reason": reason, "by": paused.get("by"), "since": paused.get("at")}
    if quarantine and float(quarantine.get("until") or 0) > now:
        return {
            "state": "quarantined",
            "reason": quarantine.get("reason"),
            "bad_runs": quarantine.get("bad_runs"),
            "next_try_in_seconds": int(float(quarantine["until"]) - now),
        }
    if not last:
        return {"state": "not_run_yet"}
    status = last.get("status")
    state = {"success": "ok", "partial": "partial", "failed": "failing", "skipped": "skipped"}.get(str(status), "failing")
    out: dict[str, Any] = {"state": state}
    if state == "partial":
        out["reason"] = f"{last.get('failed', 0)} record(s) failed and were recorded" + (
            f" in {last['errors_file']}" if last.get("errors_file") else ""
        )
    elif last.get("error"):
        out["reason"] = last["error"]
    return out


def assess(
    *,
    starting: bool,
    config_error: Sequence[str],
    live: bool,
    ready: bool,
    ready_reason: str,
    syncs: Sequence[str],
    last_runs: Mapping[str, Mapping[str, Any]],
    quarantine: Mapping[str, Mapping[str, Any] | None],
    breakers: Mapping[str, str],
    redis_degraded: bool,
    now: float,
    paused: Mapping[str, Mapping[str, Any]] | None = None,
) -> Verdict:
    """The worst status that applies, with one plain sentence per problem."""
    found: dict[str, list[str]] = {s: [] for s in STATUSES}
    if config_error:
        found["configuration_error"] += [f"configuration error: {p}" for p in config_error]
    if starting:
        found["starting"].append("start-up has not finished")
    if not live:
        found["stalled"].append("the worker's heartbeat is stale")
    if not ready and not starting and not config_error:
        found["failing"].append(f"not ready: {ready_reason}")
    states: dict[str, dict[str, Any]] = {}
    for sync in syncs:
        state = sync_state(last_runs.get(sync), quarantine.get(sync), now, (paused or {}).get(sync))
        states[sync] = state
        level = _SYNC_SEVERITY.get(state["state"])
        if level:
            found[level].append(f"{sync}: {state['state']}" + (f": {state['reason']}" if state.get("reason") else ""))
    for service, breaker_state in breakers.items():
        if breaker_state != "closed":
            found["degraded"].append(f"the {service} circuit breaker is {breaker_state}")
    if redis_degraded:
        found["degraded"].append("Redis is unreachable: failed records, breakers and quarantine are kept in memory")
    status = next((s for s in STATUSES if found[s]), "ok")
    problems = [p for s in STATUSES for p in found[s]]
    return Verdict(status, problems, states)
