"""The working calendar's administration: a year as deadlines see it, single days set and
unset (stored deadlines follow), a whole year's notice replaced all or nothing, confirmation
clearing the warning, audit rows, and the same through ``gridops calendar``."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import text

from gridops.incidents.cases import transition
from gridops.incidents.clock import load_calendar
from tests.test_cases import build_world

NOTICE = "国务院办公厅通知 国办发明电〔2026〕X号"


@pytest.fixture
def world(session, tmp_path):
    return build_world(session, tmp_path)


def overrides(session, year: int | None = None) -> dict[str, tuple[str, str]]:
    rows = session.execute(
        text(
            "SELECT day, kind, note FROM work_calendar_override "
            "WHERE CAST(:y AS int) IS NULL OR extract(year FROM day) = :y ORDER BY day"
        ),
        {"y": year},
    ).all()
    return {r.day.isoformat(): (r.kind, r.note) for r in rows}


def audit_rows(engine, response, event: str) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT actor, actor_id, detail FROM audit_event "
                "WHERE request_id = :r AND event = :e"
            ),
            {"r": response.headers["X-Request-ID"], "e": event},
        ).all()


def dispatched(session, world) -> int:
    case, a = world["west"], world["actors"]
    for version, (action, who) in enumerate(
        [("verify", "insp.w"), ("file", "mgr.w"), ("dispatch", "mgr.w")], start=1
    ):
        transition(session, case, action, a[who], expected_version=version)
    session.commit()
    return case


def deadline(session, case: int):
    return session.execute(
        text("SELECT deadline_at FROM incident WHERE id = :id"), {"id": case}
    ).scalar_one()


# -- reading a year ------------------------------------------------------------------------


def test_a_year_as_deadlines_see_it(admin_client, session):
    response = admin_client.get("/api/v1/admin/calendar?year=2027")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["year"] == 2027 and body["confirmed"] is None
    days = {d["day"]: d for d in body["days"]}
    new_year = days["2027-01-01"]
    assert new_year["kind"] == "off" and new_year["override"] is None
    assert new_year["package"]["kind"] == "off" and new_year["package"]["name_zh"] == "元旦"
    # Only by rule until the package carries the 2027 notice.
    rule = "package-notice" if body["package_has_notice"] else "package-rule"
    assert new_year["source"] == rule and new_year["weekday"] == 5
    assert all(d.startswith("2027-") for d in days)
    assert any("2027" in w and "not confirmed" in w for w in body["warnings"])
    # Without a year: this year's calendar.
    assert admin_client.get("/api/v1/admin/calendar").status_code == 200
    for bad in ("1999", "2101", "next"):
        refused = admin_client.get(f"/api/v1/admin/calendar?year={bad}")
        assert refused.status_code == 422 and refused.get_json()["errors"][0]["field"] == "year"


def test_a_year_with_the_notice_lists_make_up_days(admin_client):
    body = admin_client.get("/api/v1/admin/calendar?year=2026").get_json()
    assert body["package_has_notice"] is True
    days = {d["day"]: d for d in body["days"]}
    assert days["2026-02-14"]["kind"] == "work"  # a Saturday worked for the Spring Festival
    assert days["2026-02-14"]["package"]["kind"] == "work"
    assert days["2026-02-14"]["source"] == "package-notice"


# -- single days ---------------------------------------------------------------------------


def test_set_and_unset_a_day(admin_client, session, engine):
    url = "/api/v1/admin/calendar/days/2027-02-20"  # a Saturday
    made = admin_client.put(url, json={"kind": "work", "note": "春节调休上班"})
    assert made.status_code == 200, made.get_json()
    assert made.get_json()["kind"] == "work" and "deadlines_refreshed" in made.get_json()
    assert overrides(session, 2027) == {"2027-02-20": ("work", "春节调休上班")}
    [row] = audit_rows(engine, made, "calendar_day_set")
    assert row.detail["day"] == "2027-02-20" and row.detail["changes"]["override"][0] is None
    assert row.actor_id is not None
    by = session.execute(
        text("SELECT updated_by FROM work_calendar_override WHERE day = '2027-02-20'")
    ).scalar()
    assert by == row.actor_id

    day = {
        d["day"]: d for d in admin_client.get("/api/v1/admin/calendar?year=2027").get_json()["days"]
    }
    assert day["2027-02-20"]["kind"] == "work" and day["2027-02-20"]["source"] == "override"
    assert day["2027-02-20"]["override"]["note"] == "春节调休上班"

    changed = admin_client.put(url, json={"kind": "off"})
    assert changed.status_code == 200
    assert overrides(session, 2027) == {"2027-02-20": ("off", "")}

    gone = admin_client.delete(url)
    assert gone.status_code == 200 and overrides(session, 2027) == {}
    assert audit_rows(engine, gone, "calendar_day_unset")[0].detail["changes"]["override"][0] == {
        "kind": "off",
        "note": "",
    }
    again = admin_client.delete(url)
    assert again.status_code == 404 and audit_rows(engine, again, "calendar_day_unset") == []


def test_bad_days_are_refused_and_nothing_written(admin_client, session, engine):
    for day, body, fields in (
        ("2027-02-30", {"kind": "off"}, {"day"}),
        ("tomorrow", {"kind": "off"}, {"day"}),
        ("20270101", {"kind": "off"}, {"day"}),
        ("1999-01-04", {"kind": "off"}, {"day"}),
        ("2027-03-01", {"kind": "holiday", "note": 5}, {"kind", "note"}),
        ("2027-03-01", {"note": "x" * 201}, {"kind", "note"}),
    ):
        response = admin_client.put(f"/api/v1/admin/calendar/days/{day}", json=body)
        assert response.status_code == 422, (day, body)
        assert {e["field"] for e in response.get_json()["errors"]} == fields, (day, body)
        assert audit_rows(engine, response, "calendar_day_set") == []
    assert admin_client.delete("/api/v1/admin/calendar/days/2027-13-01").status_code == 422
    assert overrides(session) == {}


def test_a_day_off_moves_the_stored_deadline_and_back(admin_client, session, world):
    case = dispatched(session, world)
    before = deadline(session, case)
    assert before is not None
    dispatched_at = session.execute(
        text("SELECT dispatched_at FROM incident WHERE id = :id"), {"id": case}
    ).scalar_one()
    first_day = load_calendar(session).next_working_moment(dispatched_at).date()
    url = f"/api/v1/admin/calendar/days/{first_day.isoformat()}"
    response = admin_client.put(url, json={"kind": "off", "note": "台风停工"})
    assert response.status_code == 200
    assert response.get_json()["deadlines_refreshed"] == 1
    assert deadline(session, case) > before

    assert admin_client.delete(url).status_code == 200
    assert deadline(session, case) == before


def test_a_make_up_day_moves_the_stored_deadline_earlier(admin_client, session, world):
    # A limit of weeks, so that the deadline surely runs over a weekend.
    session.execute(
        text(
            "UPDATE category SET time_limit_hours = 200 WHERE id = "
            "(SELECT category_id FROM incident WHERE id = :id)"
        ),
        {"id": world["west"]},
    )
    case = dispatched(session, world)
    before = deadline(session, case)
    calendar = load_calendar(session)
    dispatched_at = session.execute(
        text("SELECT dispatched_at FROM incident WHERE id = :id"), {"id": case}
    ).scalar_one()
    # The first day off after the clock started becomes a working day.
    day = calendar.next_working_moment(dispatched_at).date()
    while calendar.is_working_day(day):
        day += timedelta(days=1)
    assert day < before.date()
    response = admin_client.put(f"/api/v1/admin/calendar/days/{day}", json={"kind": "work"})
    assert response.status_code == 200
    assert deadline(session, case) < before


# -- a whole year ------------------------------------------------------------------------------

YEAR_2027 = [
    {"day": "2027-02-06", "kind": "off", "note": "春节"},
    {"day": "2027-02-11", "kind": "off", "note": "春节"},
    {"day": "2027-02-20", "kind": "work", "note": "春节调休上班"},
]


def test_replace_a_year_atomically(admin_client, session, engine):
    admin_client.put("/api/v1/admin/calendar/days/2027-05-06", json={"kind": "off"})
    admin_client.put("/api/v1/admin/calendar/days/2028-01-03", json={"kind": "off"})
    url = "/api/v1/admin/calendar/years/2027"
    response = admin_client.put(url, json={"days": YEAR_2027})
    assert response.status_code == 200, response.get_json()
    expected = {d["day"]: (d["kind"], d["note"]) for d in YEAR_2027}
    assert overrides(session, 2027) == expected  # 2027-05-06 replaced
    assert overrides(session, 2028) == {"2028-01-03": ("off", "")}  # another year untouched
    [row] = audit_rows(engine, response, "calendar_year_replaced")
    assert row.detail["changes"] == {"removed": 1, "written": 3}

    bad_rows = [
        YEAR_2027[0],
        {"day": "2027-10-08", "kind": "holiday"},
        {"day": "2028-01-01", "kind": "off"},
        {"day": "2027-02-06", "kind": "off"},
        {"day": "2027-02-31", "kind": "off"},
        "2027-03-01",
        {"day": "2027-03-02", "kind": "off", "colour": "red"},
    ]
    refused = admin_client.put(url, json={"days": bad_rows})
    assert refused.status_code == 422
    assert {e["field"] for e in refused.get_json()["errors"]} == {
        "days[1].kind",
        "days[2].day",
        "days[3].day",
        "days[4].day",
        "days[5]",
        "days[6]",
    }
    assert overrides(session, 2027) == expected  # the old overrides remain
    assert audit_rows(engine, refused, "calendar_year_replaced") == []
    for body in ({}, {"days": "2027-01-01"}, {"days": [], "colour": 1}):
        assert admin_client.put(url, json=body).status_code == 422, body
    assert overrides(session, 2027) == expected

    cleared = admin_client.put(url, json={"days": []})
    assert cleared.status_code == 200 and overrides(session, 2027) == {}


def test_replacing_a_year_moves_stored_deadlines(admin_client, session, world):
    case = dispatched(session, world)
    before = deadline(session, case)
    dispatched_at = session.execute(
        text("SELECT dispatched_at FROM incident WHERE id = :id"), {"id": case}
    ).scalar_one()
    first_day = load_calendar(session).next_working_moment(dispatched_at).date()
    response = admin_client.put(
        f"/api/v1/admin/calendar/years/{first_day.year}",
        json={"days": [{"day": first_day.isoformat(), "kind": "off", "note": "停工"}]},
    )
    assert response.status_code == 200 and response.get_json()["deadlines_refreshed"] == 1
    assert deadline(session, case) > before


# -- confirmation --------------------------------------------------------------------------


def test_confirming_a_year_clears_its_warning(admin_client, session, engine):
    url = "/api/v1/admin/calendar/years/2027/confirm"
    for body in ({}, {"source": "  "}, {"source": 7}):
        refused = admin_client.post(url, json=body)
        assert refused.status_code == 422 and refused.get_json()["errors"][0]["field"] == "source"
    assert session.execute(text("SELECT count(*) FROM work_calendar_year")).scalar() == 0
    assert (
        admin_client.post(
            "/api/v1/admin/calendar/years/1999/confirm", json={"source": NOTICE}
        ).status_code
        == 422
    )

    confirmed = admin_client.post(url, json={"source": NOTICE})
    assert confirmed.status_code == 200, confirmed.get_json()
    [row] = audit_rows(engine, confirmed, "calendar_year_confirmed")
    assert row.detail["source"] == NOTICE
    body = admin_client.get("/api/v1/admin/calendar?year=2027").get_json()
    assert body["confirmed"]["source"] == NOTICE
    assert body["confirmed"]["confirmed_by"] == row.actor
    assert not any("2027" in w for w in body["warnings"])


def test_a_year_replaced_with_its_source_is_confirmed(admin_client, session):
    response = admin_client.put(
        "/api/v1/admin/calendar/years/2027", json={"days": YEAR_2027, "source": NOTICE}
    )
    assert response.status_code == 200
    body = admin_client.get("/api/v1/admin/calendar?year=2027").get_json()
    assert body["confirmed"]["source"] == NOTICE
    assert not any("2027" in w for w in body["warnings"])
    refused = admin_client.put("/api/v1/admin/calendar/years/2028", json={"days": [], "source": ""})
    assert refused.status_code == 422
    assert (
        session.execute(text("SELECT count(*) FROM work_calendar_year WHERE year = 2028")).scalar()
        == 0
    )


def test_calendar_routes_refuse_other_roles(app, world, token_for, session):
    manager = app.test_client()
    manager.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {token_for(world['actors']['mgr.w'].user_id)}"
    )
    for method, url, body in (
        ("GET", "/api/v1/admin/calendar?year=2027", None),
        ("PUT", "/api/v1/admin/calendar/days/2027-03-01", {"kind": "off"}),
        ("DELETE", "/api/v1/admin/calendar/days/2027-03-01", None),
        ("POST", "/api/v1/admin/calendar/years/2027/confirm", {"source": NOTICE}),
        ("PUT", "/api/v1/admin/calendar/years/2027", {"days": []}),
    ):
        response = manager.open(url, method=method, json=body)
        assert response.status_code == 403, (method, url)
    assert overrides(session) == {}


# -- the commands --------------------------------------------------------------------------


def cli_confirmations(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM audit_event WHERE event = 'calendar_year_confirmed' "
                "AND actor = 'cli' AND detail ->> 'source' = :s"
            ),
            {"s": NOTICE},
        ).scalar_one()


def test_calendar_commands(runner, session, world, tmp_path, engine):
    case = dispatched(session, world)
    before = deadline(session, case)
    dispatched_at = session.execute(
        text("SELECT dispatched_at FROM incident WHERE id = :id"), {"id": case}
    ).scalar_one()
    first_day = load_calendar(session).next_working_moment(dispatched_at).date().isoformat()

    made = runner.invoke(args=["calendar", "set", first_day, "off", "--note", "台风停工"])
    assert made.exit_code == 0, made.output
    assert "1 deadlines recomputed" in made.output
    assert deadline(session, case) > before
    bad = runner.invoke(args=["calendar", "set", "2027-02-30", "off"])
    assert bad.exit_code == 1 and "day" in bad.output
    bad_kind = runner.invoke(args=["calendar", "set", "2027-03-01", "holiday"])
    assert bad_kind.exit_code == 2  # click refuses the choice
    unset = runner.invoke(args=["calendar", "unset", first_day])
    assert unset.exit_code == 0, unset.output
    assert deadline(session, case) == before
    assert runner.invoke(args=["calendar", "unset", first_day]).exit_code == 1

    shown = runner.invoke(args=["calendar", "show", "2027"])
    assert shown.exit_code == 0, shown.output
    assert "2027: not confirmed" in shown.output and "2027-01-01 off" in shown.output
    assert "Working calendar 2027 is not confirmed" in shown.output
    confirmations = cli_confirmations(engine)
    assert runner.invoke(args=["calendar", "confirm", "2027", "--source", " "]).exit_code == 1
    confirmed = runner.invoke(args=["calendar", "confirm", "2027", "--source", NOTICE])
    assert confirmed.exit_code == 0, confirmed.output
    shown = runner.invoke(args=["calendar", "show", "2027"])
    assert "confirmed by cli" in shown.output
    assert "Working calendar 2027 is not confirmed" not in shown.output
    assert cli_confirmations(engine) == confirmations + 1


def test_calendar_load(runner, session, tmp_path):
    good = tmp_path / "2027.csv"
    good.write_text(
        "day,kind,note\n2027-02-06,off,春节\n2027-02-20,work,春节调休上班\n2027-10-08,off,\n",
        encoding="utf-8",
    )
    loaded = runner.invoke(args=["calendar", "load", str(good), "--confirm-source", NOTICE])
    assert loaded.exit_code == 0, loaded.output
    assert "3 days written" in loaded.output
    expected = {
        "2027-02-06": ("off", "春节"),
        "2027-02-20": ("work", "春节调休上班"),
        "2027-10-08": ("off", ""),
    }
    assert overrides(session) == expected
    assert (
        session.execute(text("SELECT source FROM work_calendar_year WHERE year = 2027")).scalar()
        == NOTICE
    )

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "day,kind,note\n2027-01-02,off,x\n2027-01-09,weekend,x\n2028-01-01,off,x\n",
        encoding="utf-8",
    )
    refused = runner.invoke(args=["calendar", "load", str(bad)])
    assert refused.exit_code == 1
    assert "days[1].kind" in refused.output and "days[2].day" in refused.output
    assert overrides(session) == expected  # nothing of the bad file went in

    header = tmp_path / "header.csv"
    header.write_text("date,type\n2027-01-02,off\n", encoding="utf-8")
    wrong = runner.invoke(args=["calendar", "load", str(header)])
    assert wrong.exit_code == 1 and "day,kind,note" in wrong.output
    missing = runner.invoke(args=["calendar", "load", str(tmp_path / "none.csv")])
    assert missing.exit_code == 2
    assert overrides(session) == expected


def test_service_functions_work_without_flask(session):
    from gridops.incidents import admin

    change = admin.set_day(session, date(2027, 3, 1), "off", "测试")
    assert change.record == {"day": "2027-03-01", "kind": "off", "note": "测试"}
    year = admin.calendar_year(session, 2027, today=date(2027, 3, 1))
    [day] = [d for d in year["days"] if d["day"] == "2027-03-01"]
    assert day["kind"] == "off" and day["package"] is None and day["source"] == "override"
