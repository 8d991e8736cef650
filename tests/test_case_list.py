"""The case list (GET /api/v1/cases): every filter on a world with known answers, keyset paging
while cases arrive, jurisdiction and the restricted view; the duplicate hint's radius, states
and categories, on its routes and in the intake response; marking a duplicate."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import h3
import pytest
from sqlalchemy import text

from gridops.auth import service as auth
from gridops.auth.actor import Scope
from gridops.errors import InvalidInput, NotFound
from gridops.incidents.listing import (
    CaseQuery,
    case_page,
    decode_cursor,
    encode_cursor,
    possible_duplicates,
)
from tests.test_cases import build_world

# name: category, status, lon, lat, received (days ago), reported_at (Foshan local time)
CASES = {
    "w_new": ("E0502", "reported", 113.0025, 23.005, 1, "2026-03-09 02:00"),
    "e_reported": ("E0502", "reported", 113.0225, 23.005, 1.5, "2026-03-08 22:00"),
    "w_verified": ("E0502", "verified", 113.0075, 23.005, 2, "2026-03-08 10:00"),
    "w_filed": ("E0501", "filed", 113.0075, 23.015, 3, "2026-03-07 10:00"),
    "w_dispatched": ("C0101", "dispatched", 113.0125, 23.005, 4, "2026-03-06 10:00"),
    "w_in_handling": ("E0502", "in_handling", 113.0125, 23.015, 5, "2026-03-05 10:00"),
    "w_handled": ("E0401", "handled", 113.0175, 23.005, 6, "2026-03-04 10:00"),
    "w_closed": ("E0502", "closed", 113.0175, 23.015, 7, "2026-03-03 10:00"),
    "w_void": ("E0502", "void", 113.0025, 23.015, 8, "2026-03-02 10:00"),
    "e_ext": ("E0502", "extension_requested", 113.0275, 23.005, 9, "2026-03-01 10:00"),
    "foreign": ("E0502", "reported", 113.05, 23.01, 0.5, "2026-03-09 12:00"),  # district 605
}
NEWEST_FIRST = [n for n in sorted(CASES, key=lambda n: CASES[n][4]) if n != "foreign"]
WEST = [n for n in NEWEST_FIRST if n.startswith("w_")]
EAST = ["e_reported", "e_ext"]
# Deadlines relative to now(), departments: the rest of each case's workflow columns.
DEADLINES = {
    "w_dispatched": "now() - interval '1 hour'",  # overdue
    "w_in_handling": "now() + interval '1 day'",
    "w_closed": "now() - interval '2 days'",  # past, but closed: not overdue
}
OF_DEPARTMENT = ("w_dispatched", "w_in_handling", "w_closed", "e_ext")


def add_case(db, category: str, status: str, lon: float, lat: float, **columns) -> int:
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    return db.execute(
        text(
            f"INSERT INTO incident (client_uuid, category_id, geom, reported_at, status"
            f"{', ' + names if names else ''}) VALUES (gen_random_uuid(), "
            "(SELECT id FROM category WHERE code = :category), "
            "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), now(), :status"
            f"{', ' + values if values else ''}) RETURNING id"
        ),
        {"category": category, "status": status, "lon": lon, "lat": lat, **columns},
    ).scalar_one()


@pytest.fixture
def world(session, tmp_path, app, make_user, token_for, monkeypatch):
    from argon2 import PasswordHasher

    from gridops.auth import passwords
    from gridops.grids.locate import assign_grids

    # Eight users: cheap hashing keeps the many small tests quick (hashing is tested apart).
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    world = build_world(session, tmp_path)
    # Its two plain cases are replaced by the ones below, whose answers are known.
    session.execute(
        text("DELETE FROM incident WHERE id IN (:w, :e)"), {"w": world["west"], "e": world["east"]}
    )
    department = session.execute(text("SELECT id FROM department WHERE code = 'CG'")).scalar()
    inspector = world["actors"]["insp.w"].user_id
    ids = {}
    for name, (category, status, lon, lat, days, reported) in CASES.items():
        ids[name] = add_case(session, category, status, lon, lat, reporter_name=f"Reporter-{name}")
        session.execute(
            text(
                "UPDATE incident SET received_at = now() - make_interval(secs => :days * 86400), "
                "reported_at = CAST(:reported AS timestamp) AT TIME ZONE 'Asia/Shanghai', "
                f"deadline_at = {DEADLINES.get(name, 'NULL')}, department_id = :department, "
                "handler_id = :handler WHERE id = :id"
            ),
            {
                "id": ids[name],
                "days": days,
                "reported": reported,
                "department": department if name in OF_DEPARTMENT else None,
                "handler": inspector if name == "w_handled" else None,  # handled on the spot
            },
        )
    assign_grids(session, "incident")
    session.commit()
    users = {name: actor.user_id for name, actor in world["actors"].items()}
    users["town"], _ = make_user("town_manager", area_code="440604001")
    users["planner"], _ = make_user("planner", area_code="440604")
    users["admin"], _ = make_user("admin")
    clients = {}
    for name, user_id in users.items():
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        clients[name] = client
    actors = {name: auth.load_actor(session, user_id) for name, user_id in users.items()}
    return {"ids": ids, "clients": clients, "actors": actors, "db": session}


def names(world, body) -> list[str]:
    by_id = {v: k for k, v in world["ids"].items()}
    return [by_id.get(f["id"], f"new:{f['id']}") for f in body["features"]]


def listed(world, who: str, query: str = "") -> list[str]:
    response = world["clients"][who].get(f"/api/v1/cases?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/geo+json"
    body = response.get_json(force=True)
    assert body["numberReturned"] == len(body["features"])
    return names(world, body)


# -- jurisdiction, order and the feature shape ----------------------------------------------


def test_each_role_lists_its_jurisdiction_newest_first(world):
    assert listed(world, "mgr.w") == WEST
    assert listed(world, "insp.w") == WEST
    assert listed(world, "mgr.e") == EAST
    for who in ("town", "planner", "handler"):
        assert listed(world, who) == NEWEST_FIRST, who
    assert listed(world, "admin") == ["foreign", *NEWEST_FIRST]


def test_a_foreign_case_is_never_listed(world):
    queries = ("", "status=reported", "category=E0502", "area=440604", "assigned=me",
               "bbox=113.04,23.0,113.08,23.02", "from=2026-03-09", "overdue=false")  # fmt: skip
    for who in ("mgr.w", "mgr.e", "insp.w", "town", "planner", "handler"):
        for query in queries:
            assert "foreign" not in listed(world, who, query), (who, query)
    # A foreign area is not told apart from a missing one (as /api/v1/areas/<code>).
    details = {}
    for code in ("440605", "440698"):
        response = world["clients"]["town"].get(f"/api/v1/cases?area={code}")
        assert response.status_code == 404
        details[code] = response.get_json()["detail"].replace(code, "CODE")
    assert details["440605"] == details["440698"]
    assert listed(world, "admin", "area=440605") == ["foreign"]


def test_full_readers_get_the_case_properties_and_point(world):
    response = world["clients"]["mgr.w"].get("/api/v1/cases?status=dispatched")
    [feature] = response.get_json(force=True)["features"]
    props = feature["properties"]
    assert feature["id"] == world["ids"]["w_dispatched"]
    assert feature["geometry"]["coordinates"] == pytest.approx([113.0125, 23.005])
    assert props["status"] == "dispatched" and props["version"] == 1
    assert props["category_code"] == "C0101" and props["category_name"] == "上水井盖"
    assert props["grid_code"] == "440604001001003"
    assert props["department"] == "CG" and props["department_name"] == "城管"
    assert props["overdue"] is True and props["reporter_name"] == "Reporter-w_dispatched"
    assert datetime.fromisoformat(props["deadline_at"]) < datetime.now(UTC)
    assert datetime.fromisoformat(props["received_at"]) < datetime.now(UTC)
    new = world["clients"]["mgr.w"].get("/api/v1/cases?status=reported").get_json(force=True)
    [props] = [f["properties"] for f in new["features"]]
    assert props["overdue"] is False and props["deadline_at"] is None
    assert props["department"] is None


@pytest.mark.parametrize("who", ["planner", "handler"])
def test_restricted_readers_get_no_reporter_and_no_point(world, who):
    response = world["clients"][who].get("/api/v1/cases")
    raw = response.get_data(as_text=True)
    features = response.get_json(force=True)["features"]
    assert len(features) == len(NEWEST_FIRST)
    for feature in features:
        assert feature["geometry"] is None
        assert not {"reporter_name", "reporter_phone", "device_id"} & set(feature["properties"])
        name = names(world, {"features": [feature]})[0]
        lon, lat = CASES[name][2:4]
        assert feature["properties"]["h3_cell"] == h3.latlng_to_cell(lat, lon, 9)
        assert feature["properties"]["status"] == CASES[name][1]
        assert "deadline_at" in feature["properties"] and "overdue" in feature["properties"]
    assert "Reporter-" not in raw
    for _, _, lon, lat, _, _ in CASES.values():
        assert str(lon) not in raw and str(lat) not in raw


# -- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "query", "expected"),
    [
        ("mgr.w", "status=reported", ["w_new"]),
        ("town", "status=reported", ["w_new", "e_reported"]),
        ("town", "status=closed,void", ["w_closed", "w_void"]),
        ("town", "status=open", [n for n in NEWEST_FIRST if n not in ("w_closed", "w_void")]),
        ("town", "status=open,closed", [n for n in NEWEST_FIRST if n != "w_void"]),
        ("mgr.w", "category=E0502", ["w_new", "w_verified", "w_in_handling", "w_closed", "w_void"]),
        ("mgr.w", "category=e0501", ["w_filed"]),
        ("mgr.w", "category=E05", [n for n in WEST if CASES[n][0].startswith("E05")]),
        ("mgr.w", "category=C01", ["w_dispatched"]),
        ("mgr.w", "category=E04", ["w_handled"]),
        ("mgr.w", "category=C02", []),
        ("town", "area=440604001002", EAST),
        ("town", "area=440604001001", WEST),
        ("mgr.w", "area=440604", WEST),  # an ancestor, visible as context: still only theirs
        ("mgr.w", "from=2026-03-04&to=2026-03-07", ["w_dispatched", "w_in_handling", "w_handled"]),
        # Dates are Foshan days: w_new, reported at 02:00 on the 9th, is 18:00 UTC on the 8th.
        ("mgr.w", "from=2026-03-09", ["w_new"]),
        ("mgr.w", "to=2026-03-09", WEST[1:]),
        # Datetimes: the start is inclusive, the end exclusive.
        ("town", "from=2026-03-08T22:00:00%2B08:00", ["w_new", "e_reported"]),
        ("town", "from=2026-03-08T14:00:00Z&to=2026-03-09T02:00:00", ["e_reported"]),
        ("town", "from=2026-03-08T22:00:00.000001%2B08:00", ["w_new"]),
        ("mgr.w", "overdue=true", ["w_dispatched"]),
        ("mgr.w", "overdue=false", [n for n in WEST if n != "w_dispatched"]),
        ("handler", "overdue=true", ["w_dispatched"]),
        # Waiting on me: per role.
        ("handler", "assigned=me", ["w_dispatched", "w_in_handling"]),
        ("insp.w", "assigned=me", ["w_new"]),  # not w_handled: they handled it themselves
        ("insp.w2", "assigned=me", ["w_new", "w_handled"]),
        ("mgr.w", "assigned=me", ["w_verified", "w_filed"]),
        ("mgr.e", "assigned=me", ["e_ext"]),
        ("town", "assigned=me", ["w_verified", "w_filed", "e_ext"]),
        ("planner", "assigned=me", []),
        ("mgr.w", "bbox=113.0,23.0,113.005,23.02", ["w_new", "w_void"]),
        ("mgr.w", "bbox=113.0,23.0,113.005,23.01", ["w_new"]),
        ("town", "bbox=113.02,23.0,113.04,23.02", EAST),
        ("planner", "bbox=113.02,23.0,113.04,23.02", EAST),
    ],
)
def test_filter(world, who, query, expected):
    assert listed(world, who, query) == expected


@pytest.mark.parametrize(
    ("who", "query", "expected"),
    [
        ("town", "status=open&category=E05&area=440604001001",
         ["w_new", "w_verified", "w_filed", "w_in_handling"]),
        ("town", "category=E0502&bbox=113.02,23.0,113.04,23.02&status=reported", ["e_reported"]),
        ("town", "status=open&overdue=false&from=2026-03-05&to=2026-03-09",
         ["e_reported", "w_verified", "w_filed", "w_in_handling"]),
        ("handler", "assigned=me&overdue=false", ["w_in_handling"]),
        ("mgr.w", "assigned=me&category=E0501&status=filed", ["w_filed"]),
        ("mgr.w", "area=440604001001&status=void&category=C01", []),
    ],
)  # fmt: skip
def test_combined_filters(world, who, query, expected):
    assert listed(world, who, query) == expected


def test_a_restricted_bbox_cannot_pinpoint_a_case(world):
    lon, lat = CASES["w_new"][2:4]
    beside = lon + 0.0002, lat  # about 20 m east, in the same H3 cell
    assert h3.latlng_to_cell(lat, beside[0], 9) == h3.latlng_to_cell(lat, lon, 9)
    boxes = [
        f"{x - 0.00001},{y - 0.00001},{x + 0.00001},{y + 0.00001}" for x, y in ((lon, lat), beside)
    ]
    for who in ("planner", "handler"):
        found = [listed(world, who, f"bbox={b}") for b in boxes]
        assert found[0] == found[1], who
    assert listed(world, "mgr.w", f"bbox={boxes[0]}") == ["w_new"]
    assert listed(world, "mgr.w", f"bbox={boxes[1]}") == []


# -- paging ----------------------------------------------------------------------------------


def test_keyset_pages_visit_every_case_once_while_cases_arrive(world):
    db, ids = world["db"], world["ids"]
    client = world["clients"]["town"]
    url = "/api/v1/cases?limit=3"
    seen: list[list[str]] = []
    arrivals = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        body = response.get_json(force=True)
        seen.append(names(world, body))
        nexts = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url = nexts[0] if nexts else None
        if url:
            assert response.headers["Link"] == f'<{url}>; rel="next"'
            assert parse_qs(urlsplit(url).query)["limit"] == ["3"]
        if len(seen) == 1:
            # Between pages: a new report (newest of all), a back-dated referral (oldest of
            # all), and a case ahead of the cursor changes state.
            arrivals.append(add_case(db, "E0502", "reported", 113.0030, 23.005))
            late = add_case(db, "E0502", "reported", 113.0230, 23.005)
            db.execute(
                text("UPDATE incident SET received_at = now() - interval '30 days' WHERE id = :i"),
                {"i": late},
            )
            arrivals.append(late)
            db.execute(
                text("UPDATE incident SET status = 'checked', updated_at = clock_timestamp() "
                     "WHERE id = :i"),
                {"i": ids["w_handled"]},
            )  # fmt: skip
            db.commit()
    flat = [n for page in seen for n in page]
    assert [len(p) for p in seen] == [3, 3, 3, 2]
    assert flat == [*NEWEST_FIRST, f"new:{arrivals[1]}"], "each case once, in order"
    assert len(flat) == len(set(flat))


def test_paging_keeps_the_filters_and_limits_are_clamped(world):
    client = world["clients"]["town"]
    first = client.get("/api/v1/cases?status=open&limit=2").get_json(force=True)
    [href] = [link["href"] for link in first["links"] if link["rel"] == "next"]
    assert parse_qs(urlsplit(href).query)["status"] == ["open"]
    second = client.get(href).get_json(force=True)
    expected = [n for n in NEWEST_FIRST if n not in ("w_closed", "w_void")]
    assert names(world, first) + names(world, second) == expected[:4]
    big = client.get("/api/v1/cases?limit=5000").get_json(force=True)
    assert big["numberReturned"] == len(NEWEST_FIRST)
    assert [link["rel"] for link in big["links"]] == ["self"]
    exact = client.get("/api/v1/cases?limit=10").get_json(force=True)
    assert exact["numberReturned"] == 10 and [x["rel"] for x in exact["links"]] == ["self"]


def test_cursor_round_trip_and_service_without_flask(world):
    when = datetime(2026, 3, 9, 1, 2, 3, 456789, tzinfo=UTC)
    assert decode_cursor(encode_cursor(when, 42)) == (when, 42)
    actor = world["actors"]["mgr.w"]
    page, cursor = case_page(world["db"], actor, CaseQuery(limit=4))
    assert [f["id"] for f in page] == [world["ids"][n] for n in WEST[:4]]
    rest, end = case_page(world["db"], actor, CaseQuery(limit=4, after=decode_cursor(cursor)))
    assert [f["id"] for f in rest] == [world["ids"][n] for n in WEST[4:]] and end is None
    with pytest.raises(NotFound):
        case_page(world["db"], actor, CaseQuery(area="440604001002"))


# -- bad parameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("status=open,,", "status"),
        ("category=E5", "category"),
        ("category=E9999", "category"),  # well formed, not in the catalogue
        ("category=", None),  # empty: no filter
        ("area=4406x4", "area"),
        ("area=4406041", "area"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("from=2026-03-09&to=2026-03-08", "to"),
        ("to=2026-03-08T10:00:00+08:00", "to"),  # an unencoded '+' arrives as a space
        ("overdue=yes", "overdue"),
        ("assigned=you", "assigned"),
        ("bbox=1,2,3", "bbox"),
        ("bbox=113.1,23,113.0,23.1", "bbox"),
        ("bbox=23,113,23.1,113.1", "bbox"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        (f"cursor={encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), 1)[:-2]}", "cursor"),
        ("stauts=reported", "stauts"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(world, query, field):
    response = world["clients"]["town"].get(f"/api/v1/cases?{query}")
    if field is None:
        assert response.status_code == 200
        return
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert [e["field"] for e in response.get_json()["errors"]] == [field]


def test_every_bad_parameter_is_named_at_once(world):
    response = world["clients"]["town"].get(
        "/api/v1/cases?status=x&category=E9&from=no&overdue=1&limit=0&bbox=1"
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert fields == {"status", "category", "from", "overdue", "limit", "bbox"}


def test_listing_needs_read_incidents(world, app):
    assert app.test_client().get("/api/v1/cases").status_code == 401


# -- the duplicate hint ----------------------------------------------------------------------


def near(db, name: str, metres: float, azimuth_deg: float = 60) -> tuple[float, float]:
    """The point ``metres`` from a world case, on the spheroid."""
    lon, lat = CASES[name][2:4]
    return tuple(
        db.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Project(ST_SetSRID(ST_MakePoint("
                ":lon, :lat), 4326)::geography, :m, radians(:az))::geometry AS p) s"
            ),
            {"lon": lon, "lat": lat, "m": metres, "az": azimuth_deg},
        ).one()
    )


@pytest.fixture
def around(world):
    """Cases around w_new (E0502): inside and outside the radius, closed, another category."""
    db = world["db"]
    radius = db.execute(
        text("SELECT duplicate_radius_m FROM category WHERE code = 'E0502'")
    ).scalar_one()
    made = {}
    for name, category, status, metres in (
        ("inside", "E0502", "reported", radius - 1),
        ("outside", "E0502", "reported", radius + 1),
        ("closed", "E0502", "closed", 10),
        ("void", "E0502", "void", 5),
        ("other_category", "C0101", "reported", 10),
        ("handling", "E0502", "in_handling", radius / 2),
    ):
        made[name] = add_case(db, category, status, *near(db, "w_new", metres))
    db.commit()
    category_id = db.execute(text("SELECT id FROM category WHERE code = 'E0502'")).scalar_one()
    return {**made, "radius": radius, "category_id": category_id}


def test_duplicate_radius_states_and_categories(world, around):
    db, ids = world["db"], world["ids"]
    lon, lat = CASES["w_new"][2:4]
    for who in ("mgr.w", "insp.w", "town", "admin"):
        found = possible_duplicates(
            db, world["actors"][who].scope(), category_id=around["category_id"], lon=lon, lat=lat
        )
        assert [d["id"] for d in found] == [ids["w_new"], around["handling"], around["inside"]]
        assert [d["distance_m"] for d in found] == pytest.approx(
            [0, around["radius"] / 2, around["radius"] - 1], abs=0.15
        )
        assert [d["status"] for d in found] == ["reported", "in_handling", "reported"]
        assert all(datetime.fromisoformat(d["received_at"]) for d in found)
    without_itself = possible_duplicates(
        db, Scope(everything=True), category_id=around["category_id"], lon=lon, lat=lat,
        exclude_id=ids["w_new"], limit=1,
    )  # fmt: skip
    assert [d["id"] for d in without_itself] == [around["handling"]]
    # Outside the jurisdiction, or seen only without points: nothing.
    for who in ("mgr.e", "planner", "handler"):
        scope = world["actors"][who].scope()
        assert (
            possible_duplicates(db, scope, category_id=around["category_id"], lon=lon, lat=lat)
            == []
        ), who
    with pytest.raises(InvalidInput):
        possible_duplicates(db, Scope(everything=True), category_id=around["category_id"],
                            lon=lat, lat=lon)  # fmt: skip


def test_duplicate_routes(world, around):
    ids, clients = world["ids"], world["clients"]
    response = clients["mgr.w"].get(f"/api/v1/cases/{ids['w_new']}/duplicates")
    assert response.status_code == 200
    body = response.get_json()
    assert body["case_id"] == ids["w_new"] and body["category"] == "E0502"
    assert body["radius_m"] == around["radius"]
    assert [d["id"] for d in body["possible_duplicates"]] == [around["handling"], around["inside"]]
    # Outside the jurisdiction: not found; the restricted roles may not use the hint at all.
    assert clients["mgr.e"].get(f"/api/v1/cases/{ids['w_new']}/duplicates").status_code == 404
    assert clients["mgr.w"].get(f"/api/v1/cases/{ids['foreign']}/duplicates").status_code == 404
    assert clients["mgr.w"].get("/api/v1/cases/999999999/duplicates").status_code == 404
    for who in ("planner", "handler"):
        assert clients[who].get(f"/api/v1/cases/{ids['w_new']}/duplicates").status_code == 403
        assert (
            clients[who].get("/api/v1/duplicates?category=E0502&lon=113&lat=23").status_code == 403
        )

    lon, lat = near(world["db"], "w_new", 3)
    before = clients["insp.w"].get(f"/api/v1/duplicates?category=e0502&lon={lon}&lat={lat}")
    assert before.status_code == 200
    hint = before.get_json()
    assert hint["category"] == "E0502" and hint["radius_m"] == around["radius"]
    assert [d["id"] for d in hint["possible_duplicates"]][:1] == [ids["w_new"]]
    assert around["inside"] in [d["id"] for d in hint["possible_duplicates"]]
    assert hint["possible_duplicates"][0]["distance_m"] == pytest.approx(3, abs=0.15)
    other = clients["mgr.e"].get(f"/api/v1/duplicates?category=E0502&lon={lon}&lat={lat}")
    assert other.status_code == 200 and other.get_json()["possible_duplicates"] == []


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("category=E0502&lon=113.0", {"lat"}),
        ("category=E0502&lon=x&lat=23", {"lon"}),
        ("category=E0502&lon=nan&lat=23", {"lon"}),
        ("category=E0502&lon=23&lat=113", {"lat"}),
        ("category=E9999&lon=113&lat=23", {"category"}),
        ("lon=113&lat=23", {"category"}),
        ("", {"category", "lon", "lat"}),
    ],
)
def test_duplicate_query_bad_parameters(world, query, fields):
    response = world["clients"]["insp.w"].get(f"/api/v1/duplicates?{query}")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert {e["field"] for e in response.get_json()["errors"]} == fields


def test_intake_response_carries_the_hint(world, around):
    lon, lat = near(world["db"], "w_new", 4)
    report = {
        "client_uuid": str(uuid.uuid4()),
        "category": "E0502",
        "lon": lon,
        "lat": lat,
        "captured_at": datetime.now(UTC).isoformat(),
        "description": "又一个游商",
    }
    client = world["clients"]["insp.w"]
    created = client.post("/api/v1/incidents", json=report)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    hint = [d["id"] for d in body["possible_duplicates"]]
    assert hint[0] == world["ids"]["w_new"] and around["inside"] in hint
    assert body["id"] not in hint and around["closed"] not in hint
    replay = client.post("/api/v1/incidents", json=report)
    assert (
        replay.status_code == 200
        and replay.get_json()["possible_duplicates"] == body["possible_duplicates"]
    )


def test_marking_a_duplicate_voids_it_and_the_hint_drops_it(world, around):
    db, ids = world["db"], world["ids"]
    manager = world["clients"]["mgr.w"]
    original, copy = ids["w_new"], around["inside"]
    response = manager.post(
        f"/api/v1/cases/{copy}/transitions",
        json={"action": "mark_duplicate", "duplicate_of": original, "note": "同一游商"},
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "void"
    row = db.execute(
        text("SELECT status, duplicate_of, version FROM incident WHERE id = :id"), {"id": copy}
    ).one()
    assert tuple(row) == ("void", original, 2)
    events = db.execute(
        text(
            "SELECT incident_id, action, to_state FROM case_event "
            "WHERE incident_id IN (:a, :b) ORDER BY incident_id, version"
        ),
        {"a": original, "b": copy},
    ).all()
    assert sorted(tuple(e) for e in events) == sorted(
        [(copy, "mark_duplicate", "void"), (original, "duplicate_linked", "reported")]
    )
    assert (
        db.execute(text("SELECT version FROM incident WHERE id = :id"), {"id": original}).scalar()
        == 2
    )
    hint = manager.get(f"/api/v1/cases/{original}/duplicates").get_json()
    assert [d["id"] for d in hint["possible_duplicates"]] == [around["handling"]]
    listed_void = listed(world, "mgr.w", "status=void")
    assert f"new:{copy}" in listed_void
    voided = manager.get("/api/v1/cases?status=void").get_json(force=True)["features"]
    feature = next(f for f in voided if f["id"] == copy)
    assert feature["properties"]["duplicate_of"] == original
