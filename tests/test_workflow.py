"""The case state machine: every legal and illegal transition, roles, notes, four eyes, and
the state always equal to the fold of the event log."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridops.incidents.workflow import (
    EVERYONE,
    FINAL_STATES,
    STATES,
    TRANSITIONS,
    CaseState,
    IllegalTransition,
    NotAllowed,
    allowed_actions,
    apply,
    fold,
    next_state,
)

HANDLER, INSPECTOR, MANAGER = 1, 2, 3


def case_in(state: str, **kw) -> CaseState:
    return CaseState(state=state, parked_from=kw.get("parked_from"), handler_id=kw.get("handler"))


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", sorted(TRANSITIONS))
def test_every_state_and_action(state, action):
    transition = TRANSITIONS[action]
    case = case_in(state, parked_from="in_handling", handler=HANDLER)
    if state in transition.sources:
        event = next_state(case, action, actor_id=99, roles=transition.roles, note="why")
        expected = "in_handling" if transition.target == "previous" else transition.target
        assert (event.from_state, event.to_state) == (state, expected)
        assert apply(case, event).state == expected
    else:
        with pytest.raises(IllegalTransition) as caught:
            next_state(case, action, actor_id=99, roles=EVERYONE, note="why")
        assert caught.value.status == 409
        for allowed in allowed_actions(state):
            assert allowed in caught.value.detail


@pytest.mark.parametrize("action", sorted(TRANSITIONS))
def test_roles_outside_the_transition_are_refused(action):
    transition = TRANSITIONS[action]
    state = sorted(transition.sources)[0]
    others = EVERYONE - transition.roles
    if not others:
        pytest.fail(f"{action} is open to every role; the matrix needs a refused role")
    with pytest.raises(NotAllowed):
        next_state(case_in(state), action, actor_id=99, roles=others, note="why")


@pytest.mark.parametrize("action", [a for a, t in TRANSITIONS.items() if t.needs_note])
def test_refusals_and_returns_need_a_note(action):
    transition = TRANSITIONS[action]
    state = sorted(transition.sources)[0]
    with pytest.raises(IllegalTransition, match="needs a note"):
        next_state(case_in(state), action, actor_id=99, roles=transition.roles, note="  ")


@pytest.mark.parametrize("action", ["check_pass", "rework"])
def test_the_handler_cannot_check_their_own_work(action):
    handled = case_in("handled", handler=HANDLER)
    with pytest.raises(NotAllowed, match="someone other"):
        next_state(handled, action, actor_id=HANDLER, roles={"inspector"}, note="redo")
    event = next_state(handled, action, actor_id=INSPECTOR, roles={"inspector"}, note="redo")
    assert event.to_state in ("checked", "in_handling")


def test_the_main_path_and_a_park_resume_detour():
    case = CaseState()
    steps = [
        ("verify", INSPECTOR, {"inspector"}),
        ("file", MANAGER, {"community_manager"}),
        ("dispatch", MANAGER, {"community_manager"}),
        ("accept", HANDLER, {"department_handler"}),
        ("park", MANAGER, {"community_manager"}),
        ("resume", MANAGER, {"community_manager"}),
        ("report_handled", HANDLER, {"department_handler"}),
        ("rework", INSPECTOR, {"inspector"}),
        ("report_handled", HANDLER, {"department_handler"}),
        ("check_pass", INSPECTOR, {"inspector"}),
        ("close", MANAGER, {"community_manager"}),
    ]
    for action, actor, roles in steps:
        case = apply(case, next_state(case, action, actor_id=actor, roles=roles, note="n"))
    assert case.state == "closed" and case.rework_count == 1
    assert [e.to_state for e in case.history][4:6] == ["parked", "in_handling"]
    assert allowed_actions("closed") == [] and allowed_actions("void") == []


def test_fold_refuses_a_broken_log():
    event = next_state(case_in("filed"), "dispatch", actor_id=1, roles=EVERYONE)
    with pytest.raises(ValueError, match="event log broken"):
        fold([event])  # a log must start from "reported"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 4), st.booleans()), max_size=40))
def test_state_is_always_the_fold_of_the_event_log(choices):
    case = CaseState()
    for pick, actor, with_note in choices:
        actions = allowed_actions(case.state)
        if not actions:
            assert case.state in FINAL_STATES
            break
        action = actions[pick % len(actions)]
        try:
            event = next_state(
                case, action, actor_id=actor, roles=EVERYONE, note="n" if with_note else ""
            )
        except (IllegalTransition, NotAllowed):
            continue  # a missing note or the handler checking their own work: nothing changes
        case = apply(case, event)
        assert fold(case.history).state == case.state
        assert fold(case.history).parked_from == case.parked_from
    assert fold(case.history) == case
