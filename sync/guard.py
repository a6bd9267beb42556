"""The deactivation guard, one path for every sync.

``guard_reason`` judges one batch of deactivations (pure): a read that returned nothing
while the target holds records is refused and never approvable; a batch larger than
DEACTIVATION_GUARD_PERCENT of the active records is refused until an operator approves
exactly it. ``judge`` takes a run's batches (the SafetyAmp syncs have one; rosters has
two, users and classes, approved as one) through the operator's held batches
(utils.control), trips the guard for each refusal that stands and says per batch whether
its deactivations may go out.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sync.engine import guard_allows

if TYPE_CHECKING:
    from sync.base import RunResult, SyncContext

log = logging.getLogger("sync")

Verdict = Literal["free", "approved", "refused"]
"""A batch's fate: no refusal; refused but approved by an operator; refused."""


@dataclass(frozen=True)
class Refusal:
    """Why the guard stops a batch, and whether an operator may let it through."""

    reason: str
    approvable: bool


def guard_reason(
    deactivations: int, active: int, percent: float, *, source_count: int, held: int, what: str = "records"
) -> Refusal | None:
    """The guard's refusal of ``deactivations`` out of ``active`` records, or None.

    ``held``: the records a read of ``source_count`` records puts at stake when it comes
    back empty (0: an empty read decides nothing, e.g. a delta)."""
    if source_count == 0 and held:
        return Refusal(f"the source returned no {what} while the target holds {held}", approvable=False)
    if deactivations and not guard_allows(deactivations, active, percent):
        return Refusal(
            f"{deactivations} deactivations exceed DEACTIVATION_GUARD_PERCENT={percent:g} of {active} active {what}",
            approvable=True,
        )
    return None


def judge(
    ctx: SyncContext, result: RunResult, sync: str, batches: Sequence[tuple[Refusal | None, Sequence[str]]]
) -> list[Verdict]:
    """Each batch's verdict. The approvable refusals of a run are one held batch (their
    keys together): approved, they all go through (``result.approval``); otherwise they
    are held for an operator (``result.held``). Every refusal that stands trips the guard;
    a run that held nothing clears an obsolete hold."""
    approvable = [(r, keys) for r, keys in batches if r is not None and r.approvable]
    note = ""
    approved = False
    if approvable:
        keys = [k for _, batch in approvable for k in batch]
        result.approval = approve_or_hold(ctx, sync, keys, "; ".join(r.reason for r, _ in approvable))
        approved = result.approval is not None
        if not approved:
            note = held_message(sync, ctx)
            result.held = sorted(keys)
    if not result.held:
        nothing_held(ctx, sync)
    verdicts: list[Verdict] = []
    for refusal, _keys in batches:
        if refusal is None:
            verdicts.append("free")
        elif approved and refusal.approvable:
            verdicts.append("approved")
        else:
            trip(ctx, result, sync, refusal.reason, note)
            note = ""
            verdicts.append("refused")
    return verdicts


def trip(ctx: SyncContext, result: RunResult, sync: str, reason: str, note: str = "") -> None:
    """Record a refusal that stands: the run fails, the metric counts it, the error says why."""
    result.guard_tripped = True
    counter = getattr(ctx.metrics, "deactivation_guard", None)
    if counter is not None:
        counter.labels(sync).inc()
    msg = f"deactivation guard tripped: {reason}; no record was deactivated{note}"
    result.error = msg if not result.error else f"{result.error}; {msg}"
    log.error(msg, extra={"sync": sync})


def approve_or_hold(ctx: SyncContext, sync: str, keys: Sequence[str], reason: str) -> dict[str, Any] | None:
    """The one path every sync takes when the deactivation guard refuses a batch because
    it is too large (never for an empty or incomplete read: that is not approvable).

    Returns the operator's approval of exactly this batch (utils.control), taken, so it
    is used once: the caller then deactivates the batch. Otherwise the batch is recorded
    as held, for an operator to review and approve, and None is returned. A dry run only
    looks (a preview shows an approved batch as it would go through); a one-record run
    neither takes nor holds anything (its batch is not the sync's batch)."""
    control = ctx.control
    if control is None or ctx.only_key is not None or not keys:
        return None
    from utils.control import digest

    try:
        if ctx.dry_run:
            approval = control.approval(sync)
            return approval if approval is not None and approval.get("digest") == digest(keys) else None
        approval = control.take_approval(sync, list(keys))
        run_id = str(getattr(ctx.events, "run_id", ""))
        if approval is not None:
            log.warning(
                "deactivation guard: %d deactivations go through, approved by %s at %s (digest %s)",
                len(keys),
                approval.get("by"),
                approval.get("at"),
                approval.get("digest"),
                extra={"sync": sync},
            )
            control.audit(
                actor=f"runner:{socket.gethostname()}:{os.getpid()}",
                role="system",
                action="approval_used",
                target=f"sync/{sync}",
                result="ok",
                detail={**approval, "run_id": run_id},
            )
            return approval
        control.hold(sync, list(keys), reason=reason, run_id=run_id)
    except Exception:  # operator state unavailable: the guard's refusal stands
        log.warning("could not look up or record the held deactivations", extra={"sync": sync}, exc_info=True)
    return None


def nothing_held(ctx: SyncContext, sync: str) -> None:
    """A whole run of ``sync`` got past the guard without holding a batch: a batch held
    by an earlier run is obsolete (the console must not offer to approve it)."""
    if ctx.control is None or ctx.only_key is not None or ctx.dry_run:
        return
    try:
        ctx.control.clear_hold(sync)
    except Exception:
        log.warning("could not clear the held deactivations", extra={"sync": sync}, exc_info=True)


def held_message(sync: str, ctx: SyncContext) -> str:
    """What a refused, approvable batch adds to the run's error: how to let it through."""
    if ctx.control is None or ctx.only_key is not None or ctx.dry_run:
        return ""
    return (
        f"; held for approval: `sync_batch.py holds` lists them with their digest, "
        f"`sync_batch.py approve {sync} DIGEST` (or the console) lets them through once"
    )


def held_refusal(ctx: SyncContext, sync: str, key: str) -> str | None:
    """Why a one-record run (the console's "sync this record now") must not deactivate
    ``key``: it is in the batch the guard holds for approval (or the held batches cannot
    be read, so it might be). None when it may go ahead. The batch goes through a run of
    the sync once approved, as a whole: one record at a time would go round the approval."""
    control = ctx.control
    if control is None:
        return None
    try:
        hold = control.held(sync)
        approval = control.approval(sync) if hold is not None else None
    except Exception:
        log.warning("could not read the held deactivations", extra={"sync": sync}, exc_info=True)
        return (
            f"{sync} {key} was not deactivated: the deactivations held for approval could not be read "
            f"(operator state unavailable), so it may be one of them; run {sync} instead"
        )
    if hold is None or str(key) not in {str(k) for k in hold.get("keys") or ()}:
        return None
    where = f"the console's held-deactivation page (/console/holds/{sync})"
    if approval is not None and approval.get("digest") == hold.get("digest"):
        return (
            f"{sync} {key} is one of the {hold.get('count')} deactivations held for approval, and the batch is "
            f"approved: run {sync} now (Run now on {where}) to deactivate them together; a one-record sync "
            "does not deactivate a record of a held batch"
        )
    return (
        f"{sync} {key} is one of the {hold.get('count')} deactivations held for approval "
        "(DEACTIVATION_GUARD_PERCENT): a one-record sync does not deactivate it. Review and approve the batch on "
        f"{where}, or `sync_batch.py holds` and `sync_batch.py approve {sync} DIGEST`, then run {sync}"
    )
