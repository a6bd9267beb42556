"""More properties of the pure planner (hypothesis), beyond tests/unit/test_plan.py.

The e2e fault suite proves the product converges after crashes and lost responses; the
planner-level reason is here: a plan applied in part (a run killed half way, writes that
failed) leaves exactly the rest to the next plan, whatever part was applied; plans do
not depend on input order; deactivation only ever comes from the explicit list; and
values a hostile source can hold (control characters, emoji, huge text) do not break
"apply, then replan = nothing".
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.engine import apply_to, guard_allows, normalize, plan

pytestmark = pytest.mark.unit

FIELDS = ["f1", "f2", "f3", "active"]
keys = st.text(alphabet="abcdef0123 ", min_size=1, max_size=4)
hostile_text = st.text(max_size=12)  # any code point hypothesis likes: controls, emoji, surrogates excluded
values = st.one_of(
    st.none(), st.integers(-5, 5), st.booleans(), hostile_text, st.floats(allow_nan=False, allow_infinity=False, width=32)
)
records = st.dictionaries(st.sampled_from(FIELDS[:3]), values, max_size=3)
DEACTIVATION = {"active": 0}


@st.composite
def scenarios(draw):
    desired = draw(st.dictionaries(keys, records, max_size=10))
    current_raw = draw(st.dictionaries(keys, records, max_size=10))
    current = {k: {**v, "id": i, "active": draw(st.sampled_from([0, 1]))} for i, (k, v) in enumerate(current_raw.items())}
    deactivate = draw(st.sets(keys, max_size=6))
    return desired, current, deactivate


def writes_of(actions):
    return sorted((a.kind, a.key) for a in actions if a.is_write)


@settings(max_examples=300)
@given(scenarios(), st.data())
def test_a_partly_applied_plan_leaves_exactly_the_rest(case, data) -> None:
    desired, current, deactivate = case
    actions = plan(desired, current, deactivate=deactivate, deactivation=DEACTIVATION)
    todo = [a for a in actions if a.is_write]
    done = data.draw(st.lists(st.sampled_from(todo), unique_by=lambda a: a.key) if todo else st.just([]))
    state = apply_to(current, done)
    again = plan(desired, state, deactivate=deactivate, deactivation=DEACTIVATION)
    done_keys = {a.key for a in done}
    assert writes_of(again) == sorted((a.kind, a.key) for a in todo if a.key not in done_keys)


@given(scenarios())
def test_plans_do_not_depend_on_input_order(case) -> None:
    desired, current, deactivate = case
    a = plan(desired, current, deactivate=deactivate, deactivation=DEACTIVATION)
    b = plan(dict(reversed(list(desired.items()))), dict(reversed(list(current.items()))),
             deactivate=sorted(deactivate, reverse=True), deactivation=DEACTIVATION)  # fmt: skip
    assert a == b


@given(scenarios())
def test_deactivation_only_from_the_explicit_list_and_never_of_a_desired_key(case) -> None:
    desired, current, deactivate = case
    for action in plan(desired, current, deactivate=deactivate, deactivation=DEACTIVATION):
        if action.kind == "deactivate":
            assert action.key in deactivate and action.key in current and action.key not in desired
            assert dict(action.payload) == DEACTIVATION
        if action.kind == "create":
            assert action.key in desired and action.key not in current
    assert [a for a in plan(desired, current, deactivation=DEACTIVATION) if a.kind == "deactivate"] == []


@given(scenarios(), st.sets(st.sampled_from(FIELDS[:3]), max_size=3))
def test_apply_then_replan_is_empty_with_a_compare_subset(case, compare) -> None:
    desired, current, deactivate = case
    actions = plan(desired, current, deactivate=deactivate, deactivation=DEACTIVATION, compare=compare)
    state = apply_to(current, actions)
    again = plan(desired, state, deactivate=deactivate, deactivation=DEACTIVATION, compare=compare)
    assert writes_of(again) == []
    for key, want in desired.items():
        for field in compare:
            if want.get(field) is not None:
                assert normalize(state[key].get(field)) == normalize(want[field])


@given(st.one_of(values, st.sampled_from(["¹", "²3", "--5", "-0", "-", "٣", "1" * 25, " 007 "])))
def test_normalize_is_idempotent_and_never_raises(value) -> None:
    assert normalize(normalize(value)) == normalize(value)


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.floats(0, 100))
def test_guard_is_monotonic_and_never_exceeds_its_percent(n, active, percent) -> None:
    if guard_allows(n, active, percent) and n > 0:
        assert guard_allows(n - 1, active, percent)
    if n > 3 and guard_allows(n, active, percent):
        assert n * 100.0 <= percent * active
