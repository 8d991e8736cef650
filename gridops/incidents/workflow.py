"""The case workflow of GB/T 30428 as one state machine, free of the database and of Flask.

report (信息采集) → verify (核实) → file (立案) → dispatch (派遣) → handle (处置) → feedback
(反馈) → on-site check (核查) → close (结案), with the side paths: not filed / void (不予立案),
returned to the dispatcher (回退), extension (延期: requested, approved or refused), parked
(挂账) and resumed, rework (返工) when the check fails, and handling on the spot (自行处置) by
the inspector who found it.

The service layer calls ``next_state`` for every change and stores the event; the state of a
case is always ``fold`` of its events, which the tests check on random histories.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gridops.errors import Conflict, FieldError, GridopsError

STATES = (
    "reported",  # 上报: logged by an inspector, the hotline, the public or a referral
    "verified",  # 核实: the inspector confirmed it on site
    "filed",  # 立案
    "dispatched",  # 派遣: sent to a handling department
    "in_handling",  # 处置中
    "extension_requested",  # 延期申请
    "handled",  # 反馈: the department reports it done
    "checked",  # 核查通过
    "closed",  # 结案
    "returned",  # 回退: the department sent it back to the dispatcher
    "parked",  # 挂账: cannot be solved now; the clock stops
    "void",  # 不予立案 / 作废
)
FINAL_STATES = frozenset({"closed", "void"})
# States in which the handling clock does not run.
PAUSED_STATES = frozenset({"parked", "extension_requested"})

SUPERVISION = frozenset({"inspector", "community_manager", "town_manager", "district_manager"})
DISPATCH = frozenset({"community_manager", "town_manager", "district_manager"})
HANDLING = frozenset({"department_handler"})
EVERYONE = SUPERVISION | DISPATCH | HANDLING
OPEN_STATES = tuple(s for s in STATES if s not in FINAL_STATES)
# The event written on the original when another case is marked as its duplicate: it changes
# nothing but the history (and the version, so that readers see the record moved on).
DUPLICATE_LINKED = "duplicate_linked"
# A dispatcher gave the case to someone (cases.assign): the state stays, the version moves.
ASSIGN = "assign"


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[str]
    target: str  # "previous" for resume: back to where the case was parked from
    roles: frozenset[str]
    needs_note: bool = False  # a reason is mandatory (refusals, returns, rework …)
    not_the_handler: bool = False  # the on-site check is done by someone else


def _t(
    action: str, sources: Iterable[str], target: str, roles: frozenset[str], **kw: bool
) -> Transition:
    return Transition(action, frozenset(sources), target, roles, **kw)


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        _t("verify", ["reported"], "verified", SUPERVISION),
        _t("file", ["reported", "verified"], "filed", DISPATCH),
        _t("void", ["reported", "verified"], "void", DISPATCH, needs_note=True),
        _t("dispatch", ["filed", "returned"], "dispatched", DISPATCH),
        _t("accept", ["dispatched"], "in_handling", HANDLING),
        _t("return", ["dispatched", "in_handling"], "returned", HANDLING, needs_note=True),
        _t("request_extension", ["in_handling"], "extension_requested", HANDLING, needs_note=True),
        _t("approve_extension", ["extension_requested"], "in_handling", DISPATCH),
        _t("refuse_extension", ["extension_requested"], "in_handling", DISPATCH, needs_note=True),
        _t("report_handled", ["in_handling"], "handled", HANDLING),
        _t("handle_on_spot", ["reported", "verified"], "handled", frozenset({"inspector"})),
        _t("check_pass", ["handled"], "checked", SUPERVISION, not_the_handler=True),
        _t("rework", ["handled"], "in_handling", SUPERVISION, needs_note=True,
           not_the_handler=True),
        _t("close", ["checked"], "closed", DISPATCH),
        _t("park", ["filed", "dispatched", "in_handling"], "parked", DISPATCH, needs_note=True),
        _t("resume", ["parked"], "previous", DISPATCH),
        # 重复上报: closes the case as void, linked to the original (the service checks it).
        _t("mark_duplicate", OPEN_STATES, "void", DISPATCH),
    )
}  # fmt: skip


@dataclass
class IllegalTransition(Conflict):
    """409: the action does not apply in this state; ``detail`` names the ones that do."""

    type_slug: str = "illegal-transition"


@dataclass
class NotAllowed(GridopsError):
    status: int = 403
    title: str = "Forbidden"
    type_slug: str = "forbidden"


@dataclass(frozen=True)
class Event:
    """One step of a case's history, as stored in its append-only event log."""

    action: str
    from_state: str
    to_state: str
    actor_id: int
    note: str = ""


@dataclass
class CaseState:
    state: str = "reported"
    parked_from: str | None = None
    handler_id: int | None = None  # who reported it handled (the checker must differ)
    rework_count: int = 0
    extensions: int = 0
    history: list[Event] = field(default_factory=list)


def allowed_actions(state: str, roles: Iterable[str] = EVERYONE) -> list[str]:
    """The actions possible from ``state`` for someone holding ``roles`` (sorted)."""
    held = set(roles)
    return sorted(t.action for t in TRANSITIONS.values() if state in t.sources and held & t.roles)


def next_state(
    case: CaseState, action: str, *, actor_id: int, roles: Iterable[str], note: str = ""
) -> Event:
    """Check ``action`` on ``case`` by this actor and return the event; raises IllegalTransition
    (409, naming the allowed actions), NotAllowed (403) or a note/different-person problem."""
    held = set(roles)
    transition = TRANSITIONS.get(action)
    if transition is None or case.state not in transition.sources:
        allowed = allowed_actions(case.state)
        raise IllegalTransition(
            f"'{action}' is not possible from {case.state}; allowed: "
            f"{', '.join(allowed) or 'none (the case is final)'}",
            [FieldError("action", f"one of {allowed}")],
        )
    if not held & transition.roles:
        raise NotAllowed(f"'{action}' needs one of the roles {', '.join(sorted(transition.roles))}")
    if transition.needs_note and not note.strip():
        raise IllegalTransition(
            f"'{action}' needs a note saying why", [FieldError("note", "required")]
        )
    if transition.not_the_handler and actor_id == case.handler_id:
        raise NotAllowed(
            "the on-site check must be done by someone other than the person who handled it"
        )
    target = case.parked_from if transition.target == "previous" else transition.target
    assert target is not None
    return Event(action, case.state, target, actor_id, note)


def apply(case: CaseState, event: Event) -> CaseState:
    """The case after ``event`` (which ``next_state`` made); pure bookkeeping, no checks."""
    after = CaseState(
        state=event.to_state,
        parked_from=case.parked_from,
        handler_id=case.handler_id,
        rework_count=case.rework_count,
        extensions=case.extensions,
        history=[*case.history, event],
    )
    if event.action == "park":
        after.parked_from = event.from_state
    elif event.action == "resume":
        after.parked_from = None
    elif event.action in ("report_handled", "handle_on_spot"):
        after.handler_id = event.actor_id
    elif event.action == "rework":
        after.rework_count += 1
    elif event.action == "approve_extension":
        after.extensions += 1
    return after


def linked_event(case: CaseState, *, actor_id: int, duplicate_id: int) -> Event:
    """The event on an original case when ``duplicate_id`` is marked as its duplicate."""
    return Event(DUPLICATE_LINKED, case.state, case.state, actor_id, f"duplicate: #{duplicate_id}")


def fold(events: Iterable[Event]) -> CaseState:
    """Replay a stored event log into the case's state."""
    case = CaseState()
    for event in events:
        if event.from_state != case.state:
            raise ValueError(f"event log broken: {event} does not start from {case.state}")
        case = apply(case, event)
    return case
