"""The category list the tablets cache (tree, ETag, 304), admin edits of categories (every
field, every bad field named, nothing written on error, audited), city extension classes,
deactivation stopping intake, departments, and the same through ``gridops catalogue`` /
``gridops departments``."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.test_cases import build_world
from tests.test_intake import report

MINOR_KEYS = {
    "code",
    "kind",
    "major_code",
    "minor_code",
    "standard_ref",
    "name_zh",
    "name_en",
    "active",
    "updated_at",
    "urgency",
    "verify_limit_hours",
    "dispatch_limit_hours",
    "time_limit_hours",
    "check_limit_hours",
    "duplicate_radius_m",
    "department",
}


@pytest.fixture
def world(session, tmp_path):
    return build_world(session, tmp_path)


@pytest.fixture
def as_user(app, token_for):
    """A test client acting as ``user_id`` through a device token."""

    def make(user_id: int):
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        return client

    return make


@pytest.fixture
def inspector(world, as_user):
    return as_user(world["actors"]["insp.w"].user_id)


def category_row(session, code: str) -> dict:
    row = session.execute(
        text(
            "SELECT c.name_zh, c.name_en, c.urgency, c.verify_limit_hours, "
            "c.dispatch_limit_hours, c.time_limit_hours, c.check_limit_hours, "
            "c.department_id, c.duplicate_radius_m, c.active, c.updated_at "
            "FROM category c WHERE c.code = :c"
        ),
        {"c": code},
    ).one()
    return dict(row._mapping)


def audit_rows(engine, response, event: str) -> list:
    request_id = response.headers["X-Request-ID"]
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT actor, actor_id, detail FROM audit_event "
                "WHERE request_id = :r AND event = :e"
            ),
            {"r": request_id, "e": event},
        ).all()


def minor(tree: list, code: str) -> dict:
    found = [m for major in tree for m in major["minors"] if m["code"] == code]
    assert len(found) == 1, (code, found)
    return found[0]


# -- the public list -----------------------------------------------------------------------


def test_category_tree_shape(session, inspector):
    response = inspector.get("/api/v1/categories")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    tree = body["categories"]
    # Components first, then events; majors in code order, each with its minors.
    assert [m["code"] for m in tree][:2] == ["C01", "C02"]
    assert [m["kind"] for m in tree] == sorted((m["kind"] for m in tree), key="event".__eq__)
    street = next(m for m in tree if m["code"] == "E05")
    assert (street["name_zh"], street["kind"], street["major_code"]) == ("街面秩序", "event", "05")
    assert all(m["major_code"] == "05" and m["code"].startswith("E05") for m in street["minors"])
    vendor = minor(tree, "E0502")
    assert set(vendor) == MINOR_KEYS
    assert vendor["name_zh"] == "无照经营游商" and vendor["urgency"] == 2
    assert vendor["time_limit_hours"] == 24 and vendor["department"] is None
    assert (vendor["verify_limit_hours"], vendor["check_limit_hours"]) == (2.0, 4.0)
    assert vendor["duplicate_radius_m"] == 50.0
    active = session.execute(
        text("SELECT count(DISTINCT code) FROM category WHERE active AND minor_code IS NOT NULL")
    ).scalar()
    assert body["count"] == active == sum(len(m["minors"]) for m in tree)
    events = inspector.get("/api/v1/categories?kind=event").get_json()["categories"]
    assert events and {m["kind"] for m in events} == {"event"}
    assert inspector.get("/api/v1/categories?kind=parts").status_code == 422


def test_etag_304_and_a_change_gives_a_new_tag(admin_client, inspector):
    first = inspector.get("/api/v1/categories")
    etag = first.headers["ETag"]
    assert etag and "max-age" in first.headers["Cache-Control"]
    assert "private" in first.headers["Cache-Control"]
    cached = inspector.get("/api/v1/categories", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.get_data() == b""
    assert cached.headers["ETag"] == etag
    other = inspector.get("/api/v1/categories?kind=event", headers={"If-None-Match": etag})
    assert other.status_code == 200  # another variant, another tag

    assert (
        admin_client.patch("/api/v1/admin/categories/E0502", json={"urgency": 3}).status_code == 200
    )
    after = inspector.get("/api/v1/categories", headers={"If-None-Match": etag})
    assert after.status_code == 200 and after.headers["ETag"] != etag
    assert minor(after.get_json()["categories"], "E0502")["urgency"] == 3
    # A change that changes nothing keeps the tag.
    same = after.headers["ETag"]
    assert (
        admin_client.patch("/api/v1/admin/categories/E0502", json={"urgency": 3}).status_code == 200
    )
    assert inspector.get("/api/v1/categories", headers={"If-None-Match": same}).status_code == 304


def test_inactive_classes_only_for_admins(admin_client, inspector):
    assert (
        admin_client.patch("/api/v1/admin/categories/E0509", json={"active": False}).status_code
        == 200
    )
    listed = inspector.get("/api/v1/categories").get_json()["categories"]
    assert "E0509" not in {m["code"] for major in listed for m in major["minors"]}
    refused = inspector.get("/api/v1/categories?all=1")
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    everything = admin_client.get("/api/v1/categories?all=1")
    assert everything.status_code == 200
    assert minor(everything.get_json()["categories"], "E0509")["active"] is False
    assert everything.headers["ETag"] != inspector.get("/api/v1/categories").headers["ETag"]


# -- editing a category --------------------------------------------------------------------

# field: (a good value, what the API then shows, bad values)
FIELDS = {
    "name_zh": ("流动摊贩", "流动摊贩", ["", "   ", 7, "长" * 101]),
    "name_en": ("Street hawker", "Street hawker", ["", None, ["x"]]),
    "urgency": (4, 4, [0, 5, 2.5, True, "3"]),
    "verify_limit_hours": (1.5, 1.5, [0, -1, 2001, "2", None, True]),
    "dispatch_limit_hours": (0.5, 0.5, [0, 2000.5, "fast"]),
    "time_limit_hours": (48, 48, [0, 1.5, 2001, "48", None]),
    "check_limit_hours": (2000, 2000.0, [0, 2000.01, False]),
    "department": ("CG", "CG", ["NOPE", "", 5]),
    "duplicate_radius_m": (120, 120.0, [0, -5, 5000.1, "50", None]),
    "active": (False, False, ["no", 0, None]),
}


@pytest.mark.parametrize("field", FIELDS)
def test_patch_each_field(admin_client, session, world, engine, field):
    good, shown, bad_values = FIELDS[field]
    url = "/api/v1/admin/categories/E0502"
    before = category_row(session, "E0502")
    for bad in bad_values:
        response = admin_client.patch(url, json={field: bad})
        assert response.status_code == 422, (field, bad, response.get_json())
        assert response.mimetype == "application/problem+json"
        assert [e["field"] for e in response.get_json()["errors"]] == [field], bad
        assert category_row(session, "E0502") == before, f"{field}={bad!r} wrote something"
        assert audit_rows(engine, response, "category_updated") == []
    response = admin_client.patch(url, json={field: good})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body[field] == shown and body["changed"] == [field]
    after = category_row(session, "E0502")
    assert after["updated_at"] > before["updated_at"]
    changed = {k for k in after if after[k] != before[k]} - {"updated_at"}
    assert changed == {"department_id" if field == "department" else field}
    [row] = audit_rows(engine, response, "category_updated")
    assert row.detail["code"] == "E0502" and row.detail["changes"][field][1] == shown
    assert row.actor_id is not None


def test_every_bad_field_named_in_one_422_and_nothing_written(admin_client, session, world):
    before = category_row(session, "E0502")
    body = {
        "name_zh": "",
        "urgency": 9,
        "verify_limit_hours": 0,
        "time_limit_hours": 2.5,
        "department": "NOPE",
        "duplicate_radius_m": 9000,
        "active": "yes",
        "name_en": "Valid name",  # a good field does not go in alone either
        "code": "E0598",
        "colour": "red",
    }
    response = admin_client.patch("/api/v1/admin/categories/E0502", json=body)
    assert response.status_code == 422
    named = {e["field"] for e in response.get_json()["errors"]}
    assert named == set(body) - {"name_en"}
    assert category_row(session, "E0502") == before
    empty = admin_client.patch("/api/v1/admin/categories/E0502", json={})
    assert empty.status_code == 422 and empty.get_json()["errors"][0]["field"] == "body"
    assert admin_client.patch("/api/v1/admin/categories/E0502", data="x").status_code == 422
    assert (
        admin_client.patch("/api/v1/admin/categories/E0798", json={"urgency": 2}).status_code == 404
    )


def test_department_can_be_set_and_cleared(admin_client, session, world):
    url = "/api/v1/admin/categories/E0502"
    assert admin_client.patch(url, json={"department": "CG"}).get_json()["department"] == "CG"
    cleared = admin_client.patch(url, json={"department": None})
    assert cleared.status_code == 200 and cleared.get_json()["department"] is None
    assert category_row(session, "E0502")["department_id"] is None


def test_a_major_class_has_only_names(admin_client, session):
    url = "/api/v1/admin/categories/E05"
    response = admin_client.patch(url, json={"urgency": 3, "active": False})
    assert response.status_code == 422
    assert {e["field"] for e in response.get_json()["errors"]} == {"urgency", "active"}
    renamed = admin_client.patch(url, json={"name_zh": "街面秩序管理"})
    assert renamed.status_code == 200 and renamed.get_json()["name_zh"] == "街面秩序管理"


def test_admin_routes_refuse_other_roles(world, as_user, session):
    manager = as_user(world["actors"]["mgr.w"].user_id)
    for method, url, body in (
        ("PATCH", "/api/v1/admin/categories/E0502", {"urgency": 4}),
        ("POST", "/api/v1/admin/categories", {"code": "E0520"}),
        ("GET", "/api/v1/admin/departments", None),
        ("POST", "/api/v1/admin/departments", {"code": "X"}),
    ):
        response = manager.open(url, method=method, json=body)
        assert response.status_code == 403, (method, url)
        assert response.get_json()["type"] == "/problems/forbidden"
    assert category_row(session, "E0502")["urgency"] == 2


# -- city extension classes ----------------------------------------------------------------


def test_add_an_extension_class(admin_client, inspector, session, world, engine):
    body = {
        "code": "E0520",
        "name_zh": "共享单车乱停放",
        "name_en": "Badly parked shared bicycle",
        "time_limit_hours": 12,
        "department": "CG",
    }
    made = admin_client.post("/api/v1/admin/categories", json=body)
    assert made.status_code == 201, made.get_json()
    record = made.get_json()
    assert record["standard_ref"] == "local" and record["kind"] == "event"
    assert (record["major_code"], record["minor_code"]) == ("05", "20")
    # Defaults as for the national classes of the same urgency and major class.
    assert (record["urgency"], record["verify_limit_hours"], record["check_limit_hours"]) == (
        2,
        2.0,
        4.0,
    )
    assert record["duplicate_radius_m"] == 50.0 and record["department"] == "CG"
    [row] = audit_rows(engine, made, "category_created")
    assert row.detail["code"] == "E0520"
    tree = inspector.get("/api/v1/categories").get_json()["categories"]
    assert minor(tree, "E0520")["name_zh"] == "共享单车乱停放"
    # It is a class like any other: an inspector can report it.
    reported = inspector.post("/api/v1/incidents", json=report(category="E0520"))
    assert reported.status_code == 201, reported.get_json()

    again = admin_client.post("/api/v1/admin/categories", json=body)
    assert again.status_code == 409 and again.get_json()["errors"][0]["field"] == "code"
    national = admin_client.post("/api/v1/admin/categories", json={**body, "code": "E0502"})
    assert national.status_code == 409  # a national code, in another edition
    component = admin_client.post(
        "/api/v1/admin/categories",
        json={**body, "code": "c0150", "name_zh": "充电桩", "department": None},
    )
    assert component.status_code == 201
    assert component.get_json()["duplicate_radius_m"] == 20.0
    assert component.get_json()["code"] == "C0150"


def test_bad_extension_classes_are_refused_whole(admin_client, session):
    count = session.execute(text("SELECT count(*) FROM category")).scalar()
    for body, fields in (
        ({}, {"code", "name_zh", "name_en", "time_limit_hours"}),
        ({"code": "E9901", "name_zh": "x", "name_en": "x", "time_limit_hours": 8}, {"code"}),
        ({"code": "X0101", "name_zh": "x", "name_en": "x", "time_limit_hours": 8}, {"code"}),
        ({"code": "E0500", "name_zh": "x", "name_en": "x", "time_limit_hours": 8}, {"code"}),
        (
            {
                "code": "E0521",
                "name_zh": "x",
                "name_en": "x",
                "time_limit_hours": 8,
                "urgency": 7,
                "standard_ref": "",
                "department": "NOPE",
            },
            {"urgency", "standard_ref", "department"},
        ),
    ):
        response = admin_client.post("/api/v1/admin/categories", json=body)
        assert response.status_code == 422, body
        assert {e["field"] for e in response.get_json()["errors"]} == fields, body
    assert session.execute(text("SELECT count(*) FROM category")).scalar() == count


# -- deactivation --------------------------------------------------------------------------


def test_deactivating_a_class_with_open_cases_stops_intake_only(
    admin_client, inspector, session, world
):
    # The world's two open cases are of the first class with a time limit.
    code = session.execute(
        text(
            "SELECT c.code FROM incident i JOIN category c ON c.id = i.category_id WHERE i.id = :id"
        ),
        {"id": world["west"]},
    ).scalar_one()
    response = admin_client.patch(f"/api/v1/admin/categories/{code}", json={"active": False})
    assert response.status_code == 200 and response.get_json()["open_cases"] == 2
    case = admin_client.get(f"/api/v1/cases/{world['west']}")
    assert case.status_code == 200 and case.get_json()["status"] == "reported"

    assert inspector.post("/api/v1/incidents", json=report()).status_code == 201
    off = admin_client.patch("/api/v1/admin/categories/E0502", json={"active": False})
    assert off.status_code == 200 and off.get_json()["open_cases"] == 1
    refused = inspector.post("/api/v1/incidents", json=report())
    assert refused.status_code == 422
    assert [e["field"] for e in refused.get_json()["errors"]] == ["category"]
    assert (
        admin_client.patch("/api/v1/admin/categories/E0502", json={"active": True}).status_code
        == 200
    )
    assert inspector.post("/api/v1/incidents", json=report()).status_code == 201


# -- departments ---------------------------------------------------------------------------


def test_departments(admin_client, session, world, engine):
    listed = admin_client.get("/api/v1/admin/departments")
    assert listed.status_code == 200
    assert [d["code"] for d in listed.get_json()["departments"]] == ["CG"]
    body = {"code": "SW-604", "name": "水务局", "name_en": "Water Bureau", "area_code": "440604"}
    made = admin_client.post("/api/v1/admin/departments", json=body)
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["code"] == "SW-604"
    [row] = audit_rows(engine, made, "department_created")
    assert row.detail["code"] == "SW-604"
    dup = admin_client.post("/api/v1/admin/departments", json={**body, "name": "另一个"})
    assert dup.status_code == 409
    bad = admin_client.post(
        "/api/v1/admin/departments",
        json={"code": "has space", "name": "", "area_code": "449999", "extra": 1},
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.get_json()["errors"]} == {"code", "name", "area_code", "extra"}
    codes = [
        d["code"] for d in admin_client.get("/api/v1/admin/departments").get_json()["departments"]
    ]
    assert codes == ["CG", "SW-604"]
    # The new department can be a class's default.
    patched = admin_client.patch("/api/v1/admin/categories/E0502", json={"department": "SW-604"})
    assert patched.get_json()["department"] == "SW-604"
    listed = admin_client.get("/api/v1/admin/departments").get_json()["departments"]
    assert {d["code"]: d["default_for"] for d in listed} == {"CG": 0, "SW-604": 1}


# -- the commands --------------------------------------------------------------------------


def test_catalogue_commands(runner, session, world):
    listed = runner.invoke(args=["catalogue", "list", "--kind", "event"])
    assert listed.exit_code == 0, listed.output
    assert "E0502 无照经营游商" in listed.output and "C0101" not in listed.output

    ok = runner.invoke(
        args=["catalogue", "set", "E0502", "--urgency", "3", "--department", "CG",
              "--verify-limit-hours", "1.5", "--inactive"]
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "urgency: 2 -> 3" in ok.output and "department: None -> CG" in ok.output
    row = category_row(session, "E0502")
    assert (row["urgency"], row["verify_limit_hours"], row["active"]) == (3, 1.5, False)
    assert row["department_id"] is not None

    before = category_row(session, "E0502")
    bad = runner.invoke(
        args=["catalogue", "set", "E0502", "--urgency", "9", "--department", "NOPE",
              "--name-zh", "新名字"]
    )  # fmt: skip
    assert bad.exit_code == 1
    assert "urgency" in bad.output and "department" in bad.output
    assert category_row(session, "E0502") == before  # the good name did not go in alone
    missing = runner.invoke(args=["catalogue", "set", "E0798", "--urgency", "2"])
    assert missing.exit_code == 1 and "no category" in missing.output
    not_a_number = runner.invoke(args=["catalogue", "set", "E0502", "--urgency", "high"])
    assert not_a_number.exit_code == 2  # click's usage error

    cleared = runner.invoke(args=["catalogue", "set", "E0502", "--department", "none", "--active"])
    assert cleared.exit_code == 0, cleared.output
    assert category_row(session, "E0502")["department_id"] is None

    added = runner.invoke(
        args=["catalogue", "add", "E0521", "门前三包", "Shop-front duties",
              "--time-limit-hours", "24"]
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert (
        runner.invoke(
            args=["catalogue", "add", "E0521", "x", "y", "--time-limit-hours", "24"]
        ).exit_code
        == 1
    )
    everything = runner.invoke(args=["catalogue", "list", "--all"])
    assert "E0521 门前三包" in everything.output


def test_departments_commands(runner, session, world):
    made = runner.invoke(
        args=["departments", "add", "YL-604", "园林局", "--area", "440604", "--name-en", "Parks"]
    )
    assert made.exit_code == 0, made.output
    stored = session.execute(
        text("SELECT name, name_en, area_code FROM department WHERE code = 'YL-604'")
    ).one()
    assert tuple(stored) == ("园林局", "Parks", "440604")
    dup = runner.invoke(args=["departments", "add", "YL-604", "园林局", "--area", "440604"])
    assert dup.exit_code == 1 and "exists" in dup.output
    bad_area = runner.invoke(args=["departments", "add", "YL-605", "园林局", "--area", "449999"])
    assert bad_area.exit_code == 1 and "area_code" in bad_area.output
    assert session.execute(text("SELECT count(*) FROM department")).scalar() == 2
    listed = runner.invoke(args=["departments", "list"])
    assert "YL-604" in listed.output and "CG" in listed.output


def test_service_functions_work_without_flask(session, world):
    from gridops.incidents import admin

    change = admin.update_category(session, "e0502", {"urgency": 4})
    assert change.changes == {"urgency": [2, 4]} and change.record["urgency"] == 4
    tree = admin.category_tree(session, kind="component")
    assert {m["kind"] for m in tree} == {"component"}
