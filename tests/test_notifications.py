"""The in-app inbox (API: own notifications only, unread count, read, read-all, paging), the
dedupe key, who a case change notifies, and delivery through pluggable senders."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from gridops.config import ConfigError
from gridops.incidents.cases import transition
from gridops.notifications import senders as s
from gridops.notifications.service import (
    case_managers,
    department_handlers,
    managers_covering,
    notify,
    notify_case_change,
)
from tests.test_cases import build_world


def stored(session, user_id: int) -> list[Any]:
    return session.execute(
        text("SELECT * FROM notification WHERE user_id = :u ORDER BY id"), {"u": user_id}
    ).all()


def signed_in(app, token: str):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def two_users(app, session, make_user, token_for):
    (alice, _), (bob, _) = make_user(), make_user()  # any signed-in user has an inbox
    for n in range(3):
        notify(session, alice, kind="task", title=f"alice {n}", dedupe_key=f"t:{n}")
    notify(session, bob, kind="warning", title="bob's only", dedupe_key="t:0")
    session.commit()
    return {
        "alice": (alice, signed_in(app, token_for(alice))),
        "bob": (bob, signed_in(app, token_for(bob))),
    }


def test_notify_once_per_dedupe_key(session, make_user):
    user, _ = make_user()
    assert notify(session, user, kind="warning", title="due soon", dedupe_key="warning:1")
    assert not notify(session, user, kind="warning", title="again", dedupe_key="warning:1")
    assert notify(session, user, kind="overdue", title="other key", dedupe_key="overdue:1")
    assert [r.title for r in stored(session, user)] == ["due soon", "other key"]
    with pytest.raises(ValueError, match="kind"):
        notify(session, user, kind="gossip", title="x", dedupe_key="k")


def test_inbox_lists_own_notifications_newest_first_with_unread_count(two_users):
    _, client = two_users["alice"]
    body = client.get("/api/v1/inbox").get_json()
    assert [n["title"] for n in body["notifications"]] == ["alice 2", "alice 1", "alice 0"]
    assert body["unread_count"] == 3 and body["next_cursor"] is None
    assert all(n["read_at"] is None for n in body["notifications"])
    assert "bob's only" not in str(body)


def test_inbox_keyset_paging(two_users):
    _, client = two_users["alice"]
    first = client.get("/api/v1/inbox?limit=2").get_json()
    assert [n["title"] for n in first["notifications"]] == ["alice 2", "alice 1"]
    assert first["next"] and first["next_cursor"]
    second = client.get(f"/api/v1/inbox?limit=2&cursor={first['next_cursor']}").get_json()
    assert [n["title"] for n in second["notifications"]] == ["alice 0"]
    assert second["next_cursor"] is None and "next" not in second


def test_read_one_then_unread_filter_then_read_all(two_users, session):
    _, client = two_users["alice"]
    _, bob_client = two_users["bob"]
    listed = client.get("/api/v1/inbox").get_json()["notifications"]
    newest = listed[0]["id"]
    read = client.post(f"/api/v1/inbox/{newest}/read")
    assert read.status_code == 200
    assert read.get_json()["read_at"] and read.get_json()["unread_count"] == 2
    again = client.post(f"/api/v1/inbox/{newest}/read").get_json()  # idempotent
    assert again["read_at"] == read.get_json()["read_at"]
    unread = client.get("/api/v1/inbox?unread=true").get_json()
    assert [n["title"] for n in unread["notifications"]] == ["alice 1", "alice 0"]
    assert unread["unread_count"] == 2
    done = client.post("/api/v1/inbox/read-all")
    assert done.status_code == 200 and done.get_json() == {"marked": 2, "unread_count": 0}
    assert client.get("/api/v1/inbox?unread=true").get_json()["notifications"] == []
    # Bob's stayed unread: read-all is per user.
    assert bob_client.get("/api/v1/inbox").get_json()["unread_count"] == 1


def test_another_users_notification_is_not_found(two_users, session):
    _, client = two_users["alice"]
    bob, _ = two_users["bob"]
    [bobs] = stored(session, bob)
    response = client.post(f"/api/v1/inbox/{bobs.id}/read")
    assert response.status_code == 404
    assert response.get_json()["type"] == "/problems/not-found"
    assert client.post("/api/v1/inbox/999999999/read").status_code == 404
    [bobs] = stored(session, bob)
    assert bobs.read_at is None


@pytest.mark.parametrize(
    "query, field",
    [("limit=0", "limit"), ("limit=201", "limit"), ("limit=x", "limit"),
     ("unread=maybe", "unread"), ("cursor=not-a-cursor", "cursor")],
)  # fmt: skip
def test_bad_inbox_parameters_are_422_naming_the_field(two_users, query, field):
    _, client = two_users["alice"]
    response = client.get(f"/api/v1/inbox?{query}")
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == [field]


def test_inbox_needs_a_signed_in_user(app):
    assert app.test_client().get("/api/v1/inbox").status_code == 401


# -- who a case change tells ---------------------------------------------------------------


@pytest.fixture
def world(session, tmp_path):
    return build_world(session, tmp_path)


def ids(session, world, *names: str) -> list[int]:
    return [world["actors"][n].user_id for n in names]


def test_recipient_helpers_follow_areas_and_departments(session, world, make_user):
    town, _ = make_user("town_manager", area_code="440604001")
    west, east = world["west"], world["east"]
    [mgr_w, mgr_e, handler] = ids(session, world, "mgr.w", "mgr.e", "handler")
    assert case_managers(session, west) == [mgr_w]
    assert case_managers(session, east) == [mgr_e]
    assert case_managers(session, west, "town_manager") == [town]
    assert managers_covering(session, "440605001001001", "community_manager") == []
    department = session.execute(text("SELECT id FROM department WHERE code = 'CG'")).scalar()
    assert department_handlers(session, department) == [handler]
    session.execute(text("UPDATE app_user SET is_active = false WHERE id = :u"), {"u": mgr_w})
    assert case_managers(session, west) == []


def test_dispatch_and_return_notify_department_and_dispatchers(session, world):
    a, case = world["actors"], world["west"]
    [mgr_w, mgr_e, handler] = ids(session, world, "mgr.w", "mgr.e", "handler")
    for version, (action, who) in enumerate(
        [("verify", "insp.w"), ("file", "mgr.w"), ("dispatch", "mgr.w")], start=1
    ):
        extra = {"department": "CG"} if action == "dispatch" else {}
        transition(session, case, action, a[who], expected_version=version, **extra)
    [dispatched] = stored(session, handler)  # transition() notifies by itself
    assert (dispatched.kind, dispatched.incident_id) == ("assignment", case)
    assert stored(session, mgr_w) == []  # the actor is not told of their own action
    transition(session, case, "return", a["handler"], expected_version=4, note="not ours")
    assert notify_case_change(session, case, "return", handler) == 0  # same event: once
    [returned] = stored(session, mgr_w)
    assert returned.kind == "returned" and "not ours" in returned.body
    assert stored(session, mgr_e) == []  # the other community's dispatcher is not told
    assert len(stored(session, handler)) == 1


def test_a_new_assignment_notifies_the_assignee_once(session, world):
    case = world["west"]
    [inspector, mgr_w] = ids(session, world, "insp.w", "mgr.w")
    session.execute(
        text("UPDATE incident SET assignee_id = :u, assigned_at = now() WHERE id = :id"),
        {"u": inspector, "id": case},
    )
    assert notify_case_change(session, case, "assign", mgr_w) == 1
    assert notify_case_change(session, case, "verify", mgr_w) == 0  # same assignment
    [note] = stored(session, inspector)
    assert note.kind == "assignment" and note.incident_id == case
    # Assigning yourself tells nobody.
    session.execute(
        text("UPDATE incident SET assignee_id = :u, assigned_at = now() WHERE id = :id"),
        {"u": mgr_w, "id": case},
    )
    assert notify_case_change(session, case, "assign", mgr_w) == 0


# -- senders -------------------------------------------------------------------------------


class Recording:
    def __init__(self) -> None:
        self.got: list[int] = []

    def send(self, notification: s.Notification) -> None:
        self.got.append(notification.id)


class Failing:
    def __init__(self, broken_ids: set[int]) -> None:
        self.broken = broken_ids
        self.tried: list[int] = []

    def send(self, notification: s.Notification) -> None:
        self.tried.append(notification.id)
        if notification.id in self.broken:
            raise ConnectionError("gateway down")


@pytest.fixture
def pending(session, make_user) -> list[int]:
    session.execute(text("UPDATE notification SET sent_at = now() WHERE sent_at IS NULL"))
    user, _ = make_user()
    for n in range(5):
        notify(session, user, kind="task", title=f"task {n}", dedupe_key=f"task:{n}")
    session.commit()
    return [r.id for r in stored(session, user)]


def unsent(session, wanted: list[int]) -> list[int]:
    return list(
        session.execute(
            text("SELECT id FROM notification WHERE id = ANY(:ids) AND sent_at IS NULL"),
            {"ids": wanted},
        ).scalars()
    )


def test_delivered_once_to_every_sender(session, pending):
    first, second = Recording(), Recording()
    assert s.deliver_pending(session, [first, second], batch=2) == 5
    assert first.got == second.got == pending
    assert s.deliver_pending(session, [first, second]) == 0  # idempotent
    assert first.got == pending and unsent(session, pending) == []


def test_a_failing_sender_blocks_neither_other_senders_nor_other_notifications(session, pending):
    broken = {pending[1]}
    failing, recording = Failing(broken), Recording()
    assert s.deliver_pending(session, [failing, recording]) == 4
    assert recording.got == pending  # the notification the gateway refused too
    assert failing.tried == pending  # it was tried on every one
    assert unsent(session, pending) == [pending[1]]  # kept for the next run
    failing.broken.clear()  # the gateway is back
    assert s.deliver_pending(session, [failing, recording]) == 1
    assert recording.got == [*pending, pending[1]]  # at least once: offered again
    assert unsent(session, pending) == []


def test_a_notification_failing_for_too_long_is_given_up(session, pending):
    session.execute(
        text(
            "UPDATE notification SET created_at = now() - make_interval(hours => :h) WHERE id = :id"
        ),
        {"h": s.RETRY_HOURS + 1, "id": pending[0]},
    )
    failing = Failing({pending[0], pending[1]})
    assert s.deliver_pending(session, [failing]) == 4  # 0 given up, 1 kept for a retry
    assert unsent(session, pending) == [pending[1]]


def test_inbox_only_just_marks_them_sent(session, pending):
    assert s.load_senders("inbox") == []
    assert s.deliver_pending(session, []) == 5
    assert unsent(session, pending) == []


def test_senders_from_configuration(monkeypatch):
    loaded = s.load_senders("inbox, log, tests.test_notifications:Recording")
    assert [type(x).__name__ for x in loaded] == ["LogSender", "Recording"]
    monkeypatch.setenv("GRIDOPS_NOTIFY_SENDERS", "log")
    assert [type(x).__name__ for x in s.configured_senders()] == ["LogSender"]
    for bad in ("sms", "tests.test_notifications:Nope", "no.such.module:X", "json:dumps"):
        with pytest.raises(ConfigError, match="GRIDOPS_NOTIFY_SENDERS"):
            s.load_senders(bad)
