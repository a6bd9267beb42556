"""The functional core: a pure ``plan(desired, current)`` and the objects it returns.

No I/O, no clock, no settings: everything arrives as arguments, so the rules are unit
tested with literals (tests/unit/test_plan.py) and property tested with hypothesis.

Rules that the whole product relies on:
- A field whose desired value is ``None`` is not managed this time: it is never cleared
  in the target (a value that vanished from the source is more often a hiccup than an
  intent, and a cleared e-mail or phone cannot be undone by the next run).
- Only keys the caller lists in ``deactivate`` can be deactivated; the caller decides
  from an explicit source signal (terminated employee, closed job, vehicle gone from a
  complete read). ``plan`` never infers a deactivation from absence by itself.
- Plans are deterministic: actions come out sorted by kind order, then key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ActionKind = Literal["create", "update", "deactivate", "unchanged"]
KIND_ORDER: dict[str, int] = {"create": 0, "update": 1, "deactivate": 2, "unchanged": 3}


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field's value in the target (before) and what the source wants (after).

    Slots: a first run at 50,000 employees holds about a million of them (every field of
    every create) through its apply phase; without slots each carried a separate
    attribute store (104 bytes instead of 64)."""

    field: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a plan.

    ``payload``: for a create, every desired field; for an update or a deactivation,
    only the fields that change. ``target_id`` is the target's own id (None on create).
    """

    kind: ActionKind
    key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    target_id: Any = None
    changes: tuple[FieldChange, ...] = ()

    @property
    def is_write(self) -> bool:
        return self.kind != "unchanged"


def normalize(value: Any) -> Any:
    """Comparison form of a value: trims strings, treats "" as None, bools as ints,
    and integral strings/floats as ints (targets echo ids and flags as either)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
        digits = value[1:] if value.startswith("-") else value
        # isascii: str.isdigit() is also true for "²" or "¹", which int() refuses ("--5" too).
        if digits.isascii() and digits.isdigit() and len(value) < 19 and not (value.startswith("0") and len(value) > 1):
            return int(value)
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    return value


def diff(desired: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Fields of ``desired`` (None = unmanaged) whose value differs in ``current``."""
    changes = []
    for name in sorted(desired):
        want = desired[name]
        if want is None:
            continue
        have = current.get(name)
        # Equal as they are means equal once normalised (most fields of a no-op run).
        if want != have and normalize(want) != normalize(have):
            changes.append(FieldChange(name, have, want))
    return tuple(changes)


def plan(
    desired: Mapping[str, Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
    *,
    deactivate: Collection[str] = (),
    deactivation: Mapping[str, Any] | None = None,
    id_field: str = "id",
    compare: Collection[str] | None = None,
) -> list[Action]:
    """Actions that make ``current`` (target records by key) match ``desired``.

    - key only in desired: create with the desired fields (None fields left out);
    - key in both: update with the changed fields, or unchanged;
    - key in ``deactivate`` and in current (and not desired): deactivate with the
      fields of ``deactivation`` that differ; already inactive ones are unchanged.

    ``compare`` limits the fields an update may change (None: every desired field);
    fields outside it are sent on create only.
    """
    actions: list[Action] = []
    for key in desired:
        want = desired[key]
        have = current.get(key)
        if have is None:
            payload = {k: v for k, v in want.items() if v is not None}
            changes = tuple(FieldChange(k, None, v) for k, v in sorted(payload.items()))
            actions.append(Action("create", key, payload, None, changes))
            continue
        managed = want if compare is None else {k: v for k, v in want.items() if k in compare}
        changes = diff(managed, have)
        if changes:
            payload = {c.field: c.after for c in changes}
            actions.append(Action("update", key, payload, have.get(id_field), changes))
        else:
            actions.append(Action("unchanged", key, {}, have.get(id_field)))
    if deactivation:
        for key in deactivate:
            if key in desired or key not in current:
                continue
            have = current[key]
            changes = diff(deactivation, have)
            if changes:
                payload = {c.field: c.after for c in changes}
                actions.append(Action("deactivate", key, payload, have.get(id_field), changes))
            else:
                actions.append(Action("unchanged", key, {}, have.get(id_field)))
    actions.sort(key=lambda a: (KIND_ORDER[a.kind], a.key))
    return actions


def apply_to(current: Mapping[str, Mapping[str, Any]], actions: list[Action]) -> dict[str, dict[str, Any]]:
    """The state ``current`` reaches when every action succeeds (the property tests'
    oracle for ``plan``)."""
    state = {k: dict(v) for k, v in current.items()}
    for action in actions:
        if action.kind == "create":
            state[action.key] = dict(action.payload)
        elif action.kind in ("update", "deactivate"):
            state[action.key].update(action.payload)
    return state


def guard_allows(n_deactivations: int, n_active: int, percent: float, min_count: int = 3) -> bool:
    """The deactivation guard: at most ``percent`` % of the active target records may be
    deactivated in one run; ``min_count`` or fewer always pass, so one leaver in a
    five-person fleet does not stop the run."""
    if n_deactivations <= min_count:
        return True
    if n_active <= 0:
        return False
    return n_deactivations * 100.0 <= percent * n_active
